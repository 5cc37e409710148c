package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"wallaroo.dev/wallaroo/wallarootest"
)

func TestSampleGivesTheExpectedCounts(t *testing.T) {
	sample, err := os.ReadFile("../../../../componentize-py-examples/word_count/sample.txt")
	if err != nil {
		t.Fatal(err)
	}
	expected, err := os.ReadFile("../../../../componentize-py-examples/word_count/expected.txt")
	if err != nil {
		t.Fatal(err)
	}
	// Fed as `wallaroo send` feeds it: blank lines are skipped.
	var lines [][]byte
	for _, line := range bytes.Split(bytes.TrimSuffix(sample, []byte("\n")), []byte("\n")) {
		if len(line) > 0 {
			lines = append(lines, line)
		}
	}
	res, err := wallarootest.Run(applicationSetup, []string{"--in", "h:1", "--out", "h:2"}, lines)
	if err != nil || len(res.Failures) != 0 {
		t.Fatal(err, res.Failures)
	}
	final := map[string]string{}
	for _, out := range res.Sinks[0] {
		word, count, _ := strings.Cut(strings.TrimSuffix(string(out), "\n"), " => ")
		final[word] = count
	}
	want := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(string(expected), "\n"), "\n") {
		word, count, _ := strings.Cut(line, " => ")
		want[word] = count
	}
	if len(final) != len(want) {
		t.Fatalf("%d words, want %d", len(final), len(want))
	}
	for w, c := range want {
		if final[w] != c {
			t.Errorf("%q => %s, want %s", w, final[w], c)
		}
	}
}
