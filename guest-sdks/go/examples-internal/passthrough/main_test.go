package main

import (
	"testing"

	"wallaroo.dev/wallaroo/wallarootest"
)

func TestFramesComeOutUnchangedWithANewline(t *testing.T) {
	in := [][]byte{[]byte("t123 hello"), {}, {0, 1, 2}}
	res, err := wallarootest.Run(applicationSetup, []string{"--in", "h:1", "--out", "h:2"}, in)
	if err != nil || len(res.Failures) != 0 {
		t.Fatal(err, res.Failures)
	}
	if len(res.Sinks[0]) != len(in) {
		t.Fatalf("%d messages out, want %d", len(res.Sinks[0]), len(in))
	}
	for i, out := range res.Sinks[0] {
		if want := string(in[i]) + "\n"; string(out) != want {
			t.Errorf("message %d: %q, want %q", i, out, want)
		}
	}
}
