package wallaroo

import (
	"testing"
	"time"
)

// The cost of expiry: a message pushes a heap entry only when its key has none, and an expired
// key leaves nothing behind once the host has been told.

func expiringCounts(t *testing.T) (*Runtime, *expiringStore) {
	t.Helper()
	rt := NewRuntime(func([]string) (*Application, error) {
		lines := Source("lines", TCPSource("h", "1", func(b []byte) (string, error) { return string(b), nil }))
		keyed := KeyBy(lines, func(w string) string { return w })
		counts := ToState(keyed, "count", func() *int { return new(int) }, func(w string, n *int) (string, error) {
			*n++
			return w, nil
		})
		counts = ExpireAfter[string, int](counts, time.Second, nil)
		return BuildApplication("counts", ToSink(counts, TCPSink("h", "2", func(w string) ([]byte, error) { return []byte(w), nil })))
	})
	if _, err := rt.Describe(nil); err != nil {
		t.Fatal(err)
	}
	return rt, rt.stores[2].exp
}

func TestMessagesToAKeyDoNotGrowTheHeap(t *testing.T) {
	rt, es := expiringCounts(t)
	for i := range 1000 {
		for _, key := range []string{"a", "b", "c"} {
			out, err := rt.Process(0, []Message{{Payload: []byte(key), EventTime: uint64(i)}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := rt.Process(2, []Message{{Key: []byte(key), Payload: out[0].Payload, EventTime: uint64(i) * uint64(time.Millisecond)}}); err != nil {
				t.Fatal(err)
			}
		}
		if i%100 == 99 {
			// Each entry popped before its key is due goes back once, at its key's deadline.
			if _, err := rt.Advance(uint64(i) * uint64(time.Millisecond)); err != nil {
				t.Fatal(err)
			}
		}
		if len(es.heap) > 3 {
			t.Fatalf("after %d messages a key: %d heap entries", i+1, len(es.heap))
		}
	}
}

func TestAnExpiredKeyLeavesNothingBehind(t *testing.T) {
	rt, es := expiringCounts(t)
	out, _ := rt.Process(0, []Message{{Payload: []byte("a")}})
	rt.Process(2, []Message{{Key: []byte("a"), Payload: out[0].Payload}})
	if _, err := rt.SnapshotChanged(10); err != nil {
		t.Fatal(err)
	}
	sl := es.st.slots["a"]
	if _, err := rt.Advance(uint64(time.Second)); err != nil {
		t.Fatal(err)
	}
	if len(es.st.slots) != 0 || sl.value != nil || len(es.heap) != 0 || es.st.gone["a"] != sl {
		t.Fatalf("slots %v, value %v, heap %d, gone %v", es.st.slots, sl.value, len(es.heap), es.st.gone)
	}
	entries, err := rt.SnapshotChanged(10)
	if err != nil || len(entries) != 1 || !entries[0].Removed || string(entries[0].Key) != "a" {
		t.Fatalf("%v %+v", err, entries)
	}
	if len(es.st.gone) != 0 || len(rt.changed) != 0 {
		t.Fatalf("gone %v, changed %d", es.st.gone, len(rt.changed))
	}
}
