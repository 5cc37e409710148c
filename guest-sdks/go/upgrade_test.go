package wallaroo_test

import (
	"errors"
	"strings"
	"testing"

	"wallaroo.dev/wallaroo"
)

// Version 2 of wordCount's state: the count under another name, and the word's length.
type wordStats struct {
	Total  int64
	Length int
}

// wordCountV2 is wordCount whose state is a wordStats, converted from version 1's wordTotal
// by upgrade (none: no conversion).
func wordCountV2(upgrade func(*wordTotal) (*wordStats, error)) wallaroo.SetupFunc {
	return func(args []string) (*wallaroo.Application, error) {
		lines := wallaroo.Source("lines", wallaroo.TCPSource("h", "1", decodeLine))
		words := wallaroo.ToMulti(lines, "split", func(line string) ([]string, error) {
			return strings.Fields(line), nil
		})
		keyed := wallaroo.KeyByNamed(words, "word", func(w string) string { return w })
		counts := wallaroo.ToState(keyed, "count", func() *wordStats { return &wordStats{} },
			func(w string, s *wordStats) (counted, error) {
				s.Total++
				s.Length = len(w)
				return counted{w, int(s.Total)}, nil
			})
		if upgrade != nil {
			counts = wallaroo.UpgradeState(counts, upgrade)
		}
		return wallaroo.BuildApplication("wc", wallaroo.ToSink(counts, wallaroo.TCPSink("h", "2", encodeCounted)))
	}
}

// countWords runs words through rt (wordCount's step numbers) and returns the sink's lines.
func countWords(t *testing.T, rt *wallaroo.Runtime, words ...string) []string {
	t.Helper()
	var got []string
	for _, w := range words {
		out, err := rt.Process(0, []wallaroo.Message{{Payload: []byte(w)}})
		if err != nil {
			t.Fatal(err)
		}
		out, err = rt.Process(3, []wallaroo.Message{{Key: []byte(out[0].Key), Payload: out[0].Payload}})
		if err != nil || len(out) != 1 || out[0].Kind != wallaroo.OutputEmit {
			t.Fatalf("%v %+v", err, out)
		}
		got = append(got, string(out[0].Payload))
	}
	return got
}

func described(t *testing.T, setup wallaroo.SetupFunc) *wallaroo.Runtime {
	t.Helper()
	rt := wallaroo.NewRuntime(setup)
	if _, err := rt.Describe(nil); err != nil {
		t.Fatal(err)
	}
	return rt
}

// Version 1's state of words a (2) and b (1).
func version1State(t *testing.T) []wallaroo.StateEntry {
	t.Helper()
	v1 := described(t, wordCount(noFailure))
	countWords(t, v1, "a", "a", "b")
	snap, err := v1.SnapshotChanged(16)
	if err != nil || len(snap) != 2 {
		t.Fatalf("%v %+v", err, snap)
	}
	return snap
}

func TestUpgradeStateConvertsAnEarlierVersionsStateAndCountsGoOn(t *testing.T) {
	snap := version1State(t)
	v2 := described(t, wordCountV2(func(old *wordTotal) (*wordStats, error) {
		return &wordStats{Total: int64(old.count)}, nil
	}))
	if err := v2.Restore(snap); err != nil {
		t.Fatal(err)
	}
	// Converted states are reported changed, so the host's copy becomes version 2's.
	if converted, err := v2.SnapshotChanged(16); err != nil || len(converted) != 2 {
		t.Fatalf("converted states not reported: %v %+v", err, converted)
	}
	if got := countWords(t, v2, "a", "b", "c"); strings.Join(got, "") != "a => 3\nb => 2\nc => 1\n" {
		t.Fatalf("%q", got)
	}
	// Version 2's own state, snapshotted and restored, is its own again: no upgrade.
	again, err := v2.SnapshotChanged(16)
	if err != nil {
		t.Fatal(err)
	}
	v2b := described(t, wordCountV2(func(*wordTotal) (*wordStats, error) {
		return nil, errors.New("must not be called")
	}))
	if err := v2b.Restore(again); err != nil {
		t.Fatal(err)
	}
	if unchanged, _ := v2b.SnapshotChanged(16); len(unchanged) != 0 {
		t.Fatalf("state restored as it is reported changed: %+v", unchanged)
	}
	if got := countWords(t, v2b, "a"); got[0] != "a => 4\n" {
		t.Fatalf("%q", got)
	}
}

func TestStateOfAnotherTypeWithoutUpgradeStateIsRefusedNamingTheWayOut(t *testing.T) {
	snap := version1State(t)
	err := described(t, wordCountV2(nil)).Restore(snap)
	if err == nil || !strings.Contains(err.Error(), "another state type than wallaroo_test.wordStats") ||
		!strings.Contains(err.Error(), "wallaroo.UpgradeState") {
		t.Fatalf("%v", err)
	}
	// An upgrade that fails refuses the restore, saying why.
	err = described(t, wordCountV2(func(*wordTotal) (*wordStats, error) {
		return nil, errors.New("no such count")
	})).Restore(snap)
	if err == nil || !strings.Contains(err.Error(), `for key "a"`) || !strings.Contains(err.Error(), "no such count") {
		t.Fatalf("%v", err)
	}
}

// A state type renamed, fields and all, with the same layout, reads the earlier state as it is.
type renamedTotal struct{ n int }

func TestAStateTypeOfTheSameLayoutIsRestoredAsItIs(t *testing.T) {
	snap := version1State(t)
	setup := func(args []string) (*wallaroo.Application, error) {
		lines := wallaroo.Source("lines", wallaroo.TCPSource("h", "1", decodeLine))
		words := wallaroo.ToMulti(lines, "split", func(line string) ([]string, error) {
			return strings.Fields(line), nil
		})
		keyed := wallaroo.KeyByNamed(words, "word", func(w string) string { return w })
		counts := wallaroo.ToState(keyed, "count", func() *renamedTotal { return &renamedTotal{} },
			func(w string, s *renamedTotal) (counted, error) {
				s.n++
				return counted{w, s.n}, nil
			})
		return wallaroo.BuildApplication("wc", wallaroo.ToSink(counts, wallaroo.TCPSink("h", "2", encodeCounted)))
	}
	rt := described(t, setup)
	if err := rt.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if got := countWords(t, rt, "a"); got[0] != "a => 3\n" {
		t.Fatalf("%q", got)
	}
	// An UpgradeState from a type of the step's own layout would never run: refused.
	bad := func(args []string) (*wallaroo.Application, error) {
		lines := wallaroo.Source("lines", wallaroo.TCPSource("h", "1", decodeLine))
		keyed := wallaroo.KeyByNamed(lines, "word", func(w string) string { return w })
		counts := wallaroo.ToState(keyed, "count", func() *renamedTotal { return &renamedTotal{} },
			func(w string, s *renamedTotal) (counted, error) { return counted{w, s.n}, nil })
		counts = wallaroo.UpgradeState(counts, func(old *wordTotal) (*renamedTotal, error) {
			return &renamedTotal{old.count}, nil
		})
		return wallaroo.BuildApplication("wc", wallaroo.ToSink(counts, wallaroo.TCPSink("h", "2", encodeCounted)))
	}
	if _, err := wallaroo.NewRuntime(bad).Describe(nil); err == nil || !strings.Contains(err.Error(), "restored as it is") {
		t.Fatalf("%v", err)
	}
}

func TestUpgradeStateNeedsAStateStepOfItsType(t *testing.T) {
	setup := func(args []string) (*wallaroo.Application, error) {
		lines := wallaroo.Source("lines", wallaroo.TCPSource("h", "1", decodeLine))
		keyed := wallaroo.KeyByNamed(lines, "word", func(w string) string { return w })
		counts := wallaroo.ToState(keyed, "count", newWordTotal,
			func(w string, s *wordTotal) (counted, error) { return counted{w, s.count}, nil })
		counts = wallaroo.UpgradeState(counts, func(old *wordStats) (*wordStats, error) { return old, nil })
		return wallaroo.BuildApplication("wc", wallaroo.ToSink(counts, wallaroo.TCPSink("h", "2", encodeCounted)))
	}
	_, err := wallaroo.NewRuntime(setup).Describe(nil)
	if err == nil || !strings.Contains(err.Error(), `UpgradeState for step "count" makes a wallaroo_test.wordStats, but the step's state is a wallaroo_test.wordTotal`) {
		t.Fatalf("%v", err)
	}
}
