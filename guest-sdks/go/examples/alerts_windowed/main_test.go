package main

import (
	"bytes"
	"os"
	"slices"
	"testing"

	"wallaroo.dev/wallaroo/wallarootest"
)

func TestTheSampleAlertsForTheUsersPastTheThreshold(t *testing.T) {
	sample, err := os.ReadFile("transactions.txt")
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(sample, []byte("\n")), []byte("\n"))
	res, err := wallarootest.Run(applicationSetup, []string{"--in", "h:1", "--out", "h:2"}, lines)
	if err != nil || len(res.Failures) != 0 {
		t.Fatal(err, res.Failures)
	}
	var got []string
	for _, out := range res.Sinks[0] {
		got = append(got, string(out))
	}
	// wallarootest gives every message event time 0, which three 9 s windows sliding by 3 s
	// hold ([-6 s, 3 s), [-3 s, 6 s), [0, 9 s)): each alerts on the whole sample's totals.
	// The end of the stream fires a user's due windows together, users in the order of their
	// first window's end, then their keys.
	var want []string
	for _, line := range []string{"Withdrawal Alert for Fido: -5178\n", "Withdrawal Alert for Mountaineer: -3942\n"} {
		want = append(want, line, line, line)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("alerts %q, want %q", got, want)
	}
}

func TestALineThatIsNotATransactionIsDeadLettered(t *testing.T) {
	res, err := wallarootest.Run(applicationSetup, []string{"--in", "h:1", "--out", "h:2"},
		[][]byte{[]byte("Rex"), []byte("Rex,lots"), []byte("Rex,2001")})
	if err != nil || len(res.Failures) != 2 || len(res.Sinks[0]) != 3 {
		t.Fatal(err, res.Failures, res.Sinks)
	}
}
