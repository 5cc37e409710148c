package wallaroo

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// The host's side of the layouts, written independently of wire.go, for round trips.

func hostBatch(batch []Message) []byte {
	buf := binary.LittleEndian.AppendUint32(nil, uint32(len(batch)))
	for _, m := range batch {
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(m.Key)))
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(m.Payload)))
	}
	for _, m := range batch {
		buf = binary.LittleEndian.AppendUint64(buf, m.EventTime)
	}
	for _, m := range batch {
		buf = append(append(buf, m.Key...), m.Payload...)
	}
	return buf
}

func hostKeys(keys []StateKey) []byte {
	buf := binary.LittleEndian.AppendUint32(nil, uint32(len(keys)))
	for _, k := range keys {
		buf = binary.LittleEndian.AppendUint32(buf, k.Step)
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(k.Key)))
	}
	for _, k := range keys {
		buf = append(buf, k.Key...)
	}
	return buf
}

// hostChanges reads a snapshot-changed buffer the way the host does: an entry whose value-len
// is 4294967295 says its key's state was removed and has no value bytes. It checks the total
// size rule (4 + 12n + the lengths, a removed value counting 0).
func hostChanges(t *testing.T, buf []byte) []StateEntry {
	t.Helper()
	if len(buf) < 4 {
		t.Fatalf("state entries cut short")
	}
	n := int(binary.LittleEndian.Uint32(buf))
	if len(buf) < 4+12*n {
		t.Fatalf("state entries table cut short")
	}
	size := 4 + 12*n
	entries := make([]StateEntry, n)
	for i := range entries {
		h := buf[4+12*i:]
		entries[i].Step = binary.LittleEndian.Uint32(h)
		keyLen, valueLen := binary.LittleEndian.Uint32(h[4:]), binary.LittleEndian.Uint32(h[8:])
		size += int(keyLen)
		if valueLen == 1<<32-1 {
			entries[i].Removed = true
			valueLen = 0
		}
		size += int(valueLen)
		entries[i].Value = make([]byte, valueLen) // filled below
		entries[i].Key = make([]byte, keyLen)
	}
	if size != len(buf) {
		t.Fatalf("state entries of %d bytes, the lengths say %d", len(buf), size)
	}
	at := 4 + 12*n
	for i := range entries {
		e := &entries[i]
		at += copy(e.Key, buf[at:])
		if e.Removed {
			e.Value = nil
			continue
		}
		at += copy(e.Value, buf[at:])
	}
	return entries
}

// hostOutputs reads an outputs buffer the way the host does, failing on anything malformed.
func hostOutputs(t *testing.T, buf []byte) []Output {
	t.Helper()
	var out []Output
	u32 := func() uint32 {
		if len(buf) < 4 {
			t.Fatalf("outputs cut short")
		}
		v := binary.LittleEndian.Uint32(buf)
		buf = buf[4:]
		return v
	}
	u64 := func() uint64 {
		if len(buf) < 8 {
			t.Fatalf("outputs cut short")
		}
		v := binary.LittleEndian.Uint64(buf)
		buf = buf[8:]
		return v
	}
	take := func(n uint32) []byte {
		if uint32(len(buf)) < n {
			t.Fatalf("outputs cut short")
		}
		b := buf[:n]
		buf = buf[n:]
		return b
	}
	for len(buf) > 0 {
		tag := take(1)[0]
		switch tag {
		case tagRoute:
			o := Output{Kind: OutputRoute, Segment: u32()}
			keyLen, payloadLen := u32(), u32()
			o.EventTime = u64()
			o.Key, o.Payload = string(take(keyLen)), take(payloadLen)
			out = append(out, o)
		case tagEmit:
			o := Output{Kind: OutputEmit, Sink: u32()}
			o.Payload = take(u32())
			out = append(out, o)
		case tagFailed:
			o := Output{Kind: OutputFailed, Input: u32(), Step: u32()}
			o.HasKey = take(1)[0] == 1
			keyLen, errorLen := u32(), u32()
			o.Key, o.Error = string(take(keyLen)), string(take(errorLen))
			out = append(out, o)
		case tagLate:
			out = append(out, Output{Kind: OutputLate, Input: u32(), Step: u32()})
		default:
			t.Fatalf("unknown tag %d", tag)
		}
	}
	return out
}

func le(vs ...uint32) []byte {
	var buf []byte
	for _, v := range vs {
		buf = binary.LittleEndian.AppendUint32(buf, v)
	}
	return buf
}

func le64(vs ...uint64) []byte {
	var buf []byte
	for _, v := range vs {
		buf = binary.LittleEndian.AppendUint64(buf, v)
	}
	return buf
}

// A time whose bytes all differ, so that a wrong width or byte order shows.
const oddTime = 0x0102030405060708

var oddTimeBytes = []byte{8, 7, 6, 5, 4, 3, 2, 1}

func cat(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}

func TestBatchLayoutIsCountTableTimesThenBytes(t *testing.T) {
	buf := cat(le(2, 0, 3, 1, 0), oddTimeBytes, le64(1<<64-1), []byte("abc"), []byte("k"))
	got, err := decodeBatch(buf)
	if err != nil {
		t.Fatal(err)
	}
	want := []Message{
		{Key: []byte{}, Payload: []byte("abc"), EventTime: oddTime},
		{Key: []byte("k"), Payload: []byte{}, EventTime: 1<<64 - 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if !bytes.Equal(hostBatch(want), buf) {
		t.Fatal("the host's encoding differs")
	}
}

func TestOutputsLayoutIsTaggedRecordsBackToBack(t *testing.T) {
	out := []Output{
		{Kind: OutputRoute, Key: "key", Segment: 3, Payload: []byte("pay"), EventTime: oddTime},
		{Kind: OutputEmit, Sink: 1, Payload: []byte("line\n")},
		{Kind: OutputFailed, Input: 7, Step: 2, HasKey: true, Key: "k", Error: "oops"},
		{Kind: OutputFailed, Input: 8, Error: ""},
		{Kind: OutputLate, Input: 9, Step: 4},
	}
	want := cat(
		[]byte{0}, le(3, 3, 3), oddTimeBytes, []byte("keypay"),
		[]byte{1}, le(1, 5), []byte("line\n"),
		[]byte{2}, le(7, 2), []byte{1}, le(1, 4), []byte("koops"),
		[]byte{2}, le(8, 0), []byte{0}, le(0, 0),
		[]byte{3}, le(9, 4),
	)
	got := appendOutputs(nil, out)
	if !bytes.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	back := hostOutputs(t, got)
	out[3].Payload, back[3].Payload = nil, nil
	if len(back) != len(out) {
		t.Fatalf("%d records back, want %d", len(back), len(out))
	}
	for i := range out {
		if fmt.Sprint(back[i]) != fmt.Sprint(out[i]) {
			t.Fatalf("record %d: got %+v, want %+v", i, back[i], out[i])
		}
	}
}

func TestAnInvalidUTF8ErrorTextIsReplaced(t *testing.T) {
	got := hostOutputs(t, appendOutputs(nil, []Output{{Kind: OutputFailed, Error: "a\xffb"}}))
	if got[0].Error != "a\uFFFDb" {
		t.Fatalf("got %q", got[0].Error)
	}
}

func TestStateEntriesRoundTrip(t *testing.T) {
	entries := []StateEntry{
		{Step: 3, Key: []byte("hi"), Value: []byte("value")},
		{Step: 4, Key: []byte{}, Value: []byte{}},
		{Step: 1<<32 - 1, Key: bytes.Repeat([]byte("k"), 300), Value: bytes.Repeat([]byte("v"), 70000)},
	}
	buf := appendEntries(nil, entries)
	if !bytes.Equal(buf[:16], le(3, 3, 2, 5)) {
		t.Fatalf("table starts %v", buf[:16])
	}
	got, err := decodeEntries(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, entries) {
		t.Fatal("entries differ after a round trip")
	}
	if got, err := decodeEntries(appendEntries(nil, nil)); err != nil || len(got) != 0 {
		t.Fatalf("no entries: %v, %v", got, err)
	}
}

func TestARemovedKeysEntryHasTheLargestValueLenAndNoValueBytes(t *testing.T) {
	entries := []StateEntry{
		{Step: 3, Key: []byte("gone"), Removed: true},
		{Step: 3, Key: []byte("kept"), Value: []byte("v")},
		{Step: 5, Key: []byte{}, Removed: true},
	}
	buf := appendEntries(nil, entries)
	want := cat(le(3, 3, 4, 1<<32-1, 3, 4, 1, 5, 0, 1<<32-1), []byte("gonekeptv"))
	if !bytes.Equal(buf, want) {
		t.Fatalf("got %v, want %v", buf, want)
	}
	if got := hostChanges(t, buf); !reflect.DeepEqual(got, entries) {
		t.Fatalf("the host reads %+v", got)
	}
	if got, err := decodeEntryTable(buf, true); err != nil || !reflect.DeepEqual(got, entries) {
		t.Fatalf("read back %+v, %v", got, err)
	}
	// Never in a restore.
	_, err := decodeEntries(buf)
	if err == nil || !strings.Contains(err.Error(), "malformed state entries buffer: entry 0 says its key's state was removed") {
		t.Fatalf("%v", err)
	}
}

func TestStateKeysDecode(t *testing.T) {
	keys := []StateKey{{Step: 3, Key: []byte("hi")}, {Step: 1, Key: []byte{}}}
	got, err := decodeKeys(hostKeys(keys))
	if err != nil || !reflect.DeepEqual(got, keys) {
		t.Fatalf("got %v, %v", got, err)
	}
}

func TestMalformedBuffersAreRefusedNamingWhatIsWrong(t *testing.T) {
	batch := hostBatch([]Message{{Key: []byte("k"), Payload: []byte("payload"), EventTime: oddTime}})
	cases := []struct {
		buf       []byte
		complaint string
	}{
		{nil, "malformed batch buffer: 0 bytes cannot hold its count"},
		{[]byte{1, 0, 0}, "3 bytes cannot hold its count"},
		{le(1, 0), "1 items need a table of 8 bytes, the buffer has 4"},
		{le(1<<32 - 1), "4294967295 items need a table"},
		// A table that fits, but leaves too little for the event times it promises.
		{le(1, 0, 0), "1 items need 8 bytes of event times, the buffer has 0 after its table"},
		{le(2, 0, 0, 0, 0, 0, 0), "2 items need 16 bytes of event times, the buffer has 8 after its table"},
		{batch[:len(batch)-1], "its lengths run past its 27 bytes"},
		{append(batch[:len(batch):len(batch)], '!'), "1 bytes are left over"},
	}
	for _, c := range cases {
		_, err := decodeBatch(c.buf)
		if err == nil || !strings.Contains(err.Error(), c.complaint) {
			t.Errorf("decodeBatch(%q): %v, want %q", c.buf, err, c.complaint)
		}
	}
	entries := appendEntries(nil, []StateEntry{{Step: 3, Key: []byte("key"), Value: []byte("value")}})
	for cut := range entries {
		if _, err := decodeEntries(entries[:cut]); err == nil || !strings.HasPrefix(err.Error(), "malformed state entries buffer") {
			t.Errorf("entries cut at %d: %v", cut, err)
		}
	}
	keys := hostKeys([]StateKey{{Step: 3, Key: []byte("key")}})
	for cut := range keys {
		if _, err := decodeKeys(keys[:cut]); err == nil || !strings.HasPrefix(err.Error(), "malformed state keys buffer") {
			t.Errorf("keys cut at %d: %v", cut, err)
		}
	}
}

func TestARuntimesOutputsSurviveTheBuffer(t *testing.T) {
	rt := NewRuntime(func(args []string) (*Application, error) {
		lines := Source("lines", TCPSource("h", "1", func(b []byte) (string, error) { return string(b), nil }))
		words := ToMulti(lines, "split", func(line string) ([]string, error) { return strings.Fields(line), nil })
		keyed := KeyBy(words, func(w string) string { return w })
		return BuildApplication("wc", ToSink(keyed, TCPSink("h", "2", func(w string) ([]byte, error) { return []byte(w), nil })))
	})
	if _, err := rt.Describe(nil); err != nil {
		t.Fatal(err)
	}
	batch, err := decodeBatch(hostBatch([]Message{{Payload: []byte("a b"), EventTime: 7}, {Payload: []byte("c"), EventTime: oddTime}}))
	if err != nil {
		t.Fatal(err)
	}
	out, err := rt.Process(0, batch)
	if err != nil {
		t.Fatal(err)
	}
	got := hostOutputs(t, appendOutputs(nil, out))
	var routes []string
	for _, o := range got {
		routes = append(routes, fmt.Sprintf("%s@%d", o.Key, o.EventTime))
	}
	if want := fmt.Sprintf("a@7,b@7,c@%d", uint64(oddTime)); strings.Join(routes, ",") != want || got[1].Segment != 3 {
		t.Fatalf("routed %+v, want %s", got, want)
	}
}
