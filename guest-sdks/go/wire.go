package wallaroo

// The flat byte buffers of the per-batch exports, as wit/wallaroo.wit lays them out (types
// batch, outputs, state-entries and state-keys): all integers unsigned little-endian with no
// padding. The component glue (abi_wasip1.go) passes the buffers through these functions; they
// build for every target so that plain `go test` covers them.

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// Tags of the records in an outputs buffer.
const (
	tagRoute  = 0
	tagEmit   = 1
	tagFailed = 2
	tagLate   = 3
)

// table reads the count at the start of buf and the table of fields u32 per item after it; it
// returns the table and where the items' bytes begin.
func table(buf []byte, fields int, what string) ([]byte, int, error) {
	if len(buf) < 4 {
		return nil, 0, fmt.Errorf("malformed %s buffer: %d bytes cannot hold its count", what, len(buf))
	}
	count := uint64(binary.LittleEndian.Uint32(buf))
	end := 4 + 4*uint64(fields)*count
	if end > uint64(len(buf)) {
		return nil, 0, fmt.Errorf("malformed %s buffer: %d items need a table of %d bytes, the buffer has %d after its count",
			what, count, end-4, len(buf)-4)
	}
	return buf[4:end], int(end), nil
}

// field returns the n bytes of buf at *at, in place, and moves *at past them.
func field(buf []byte, at *int, n uint32, what string) ([]byte, error) {
	if uint64(n) > uint64(len(buf)-*at) {
		return nil, fmt.Errorf("malformed %s buffer: its lengths run past its %d bytes", what, len(buf))
	}
	b := buf[*at : *at+int(n) : *at+int(n)]
	*at += int(n)
	return b, nil
}

func noLeftover(buf []byte, at int, what string) error {
	if at != len(buf) {
		return fmt.Errorf("malformed %s buffer: %d bytes are left over after its last item", what, len(buf)-at)
	}
	return nil
}

// decodeBatch reads a batch buffer. Keys and payloads point into buf.
func decodeBatch(buf []byte) ([]Message, error) {
	const what = "batch"
	heads, at, err := table(buf, 2, what)
	if err != nil {
		return nil, err
	}
	batch := make([]Message, len(heads)/8)
	timesLen := 8 * uint64(len(batch))
	if timesLen > uint64(len(buf)-at) {
		return nil, fmt.Errorf("malformed %s buffer: %d items need %d bytes of event times, the buffer has %d after its table",
			what, len(batch), timesLen, len(buf)-at)
	}
	times := buf[at : at+int(timesLen)]
	at += int(timesLen)
	for i := range batch {
		h := heads[8*i:]
		m := &batch[i]
		m.EventTime = binary.LittleEndian.Uint64(times[8*i:])
		if m.Key, err = field(buf, &at, binary.LittleEndian.Uint32(h), what); err != nil {
			return nil, err
		}
		if m.Payload, err = field(buf, &at, binary.LittleEndian.Uint32(h[4:]), what); err != nil {
			return nil, err
		}
	}
	return batch, noLeftover(buf, at, what)
}

// removedLen is the value-len of a state entry that says its key's state was removed (it
// expired): no value bytes follow, and it counts as 0 in the buffer's total size. Only
// snapshot-changed returns such entries; a restore buffer holding one is malformed.
const removedLen = 1<<32 - 1

// decodeEntries reads a state-entries buffer as restore receives it. Keys and values point
// into buf.
func decodeEntries(buf []byte) ([]StateEntry, error) {
	return decodeEntryTable(buf, false)
}

// decodeEntryTable reads a state-entries buffer, with entries of removed keys (Removed, no
// Value) if removedOK, else refusing them.
func decodeEntryTable(buf []byte, removedOK bool) ([]StateEntry, error) {
	const what = "state entries"
	heads, at, err := table(buf, 3, what)
	if err != nil {
		return nil, err
	}
	entries := make([]StateEntry, len(heads)/12)
	for i := range entries {
		h := heads[12*i:]
		e := &entries[i]
		e.Step = binary.LittleEndian.Uint32(h)
		if e.Key, err = field(buf, &at, binary.LittleEndian.Uint32(h[4:]), what); err != nil {
			return nil, err
		}
		valueLen := binary.LittleEndian.Uint32(h[8:])
		if valueLen == removedLen {
			if !removedOK {
				return nil, fmt.Errorf("malformed %s buffer: entry %d says its key's state was removed, "+
					"which only snapshot-changed may say", what, i)
			}
			e.Removed = true
			continue
		}
		if e.Value, err = field(buf, &at, valueLen, what); err != nil {
			return nil, err
		}
	}
	return entries, noLeftover(buf, at, what)
}

// decodeKeys reads a state-keys buffer. Keys point into buf.
func decodeKeys(buf []byte) ([]StateKey, error) {
	const what = "state keys"
	heads, at, err := table(buf, 2, what)
	if err != nil {
		return nil, err
	}
	keys := make([]StateKey, len(heads)/8)
	for i := range keys {
		h := heads[8*i:]
		keys[i].Step = binary.LittleEndian.Uint32(h)
		if keys[i].Key, err = field(buf, &at, binary.LittleEndian.Uint32(h[4:]), what); err != nil {
			return nil, err
		}
	}
	return keys, noLeftover(buf, at, what)
}

func appendU32(buf []byte, v uint32) []byte {
	return binary.LittleEndian.AppendUint32(buf, v)
}

func appendU64(buf []byte, v uint64) []byte {
	return binary.LittleEndian.AppendUint64(buf, v)
}

// appendOutputs appends the outputs buffer of out to buf.
func appendOutputs(buf []byte, out []Output) []byte {
	for i := range out {
		o := &out[i]
		switch o.Kind {
		case OutputRoute:
			buf = append(buf, tagRoute)
			buf = appendU32(buf, o.Segment)
			buf = appendU32(buf, uint32(len(o.Key)))
			buf = appendU32(buf, uint32(len(o.Payload)))
			buf = appendU64(buf, o.EventTime)
			buf = append(buf, o.Key...)
			buf = append(buf, o.Payload...)
		case OutputEmit:
			buf = append(buf, tagEmit)
			buf = appendU32(buf, o.Sink)
			buf = appendU32(buf, uint32(len(o.Payload)))
			buf = append(buf, o.Payload...)
		case OutputFailed:
			text := strings.ToValidUTF8(o.Error, "\uFFFD")
			buf = append(buf, tagFailed)
			buf = appendU32(buf, o.Input)
			buf = appendU32(buf, o.Step)
			key := ""
			if o.HasKey {
				buf = append(buf, 1)
				key = o.Key
			} else {
				buf = append(buf, 0)
			}
			buf = appendU32(buf, uint32(len(key)))
			buf = appendU32(buf, uint32(len(text)))
			buf = append(buf, key...)
			buf = append(buf, text...)
		case OutputLate:
			buf = append(buf, tagLate)
			buf = appendU32(buf, o.Input)
			buf = appendU32(buf, o.Step)
		}
	}
	return buf
}

// appendEntries appends the state-entries buffer of entries to buf; an entry that is Removed
// has the value-len removedLen and no value bytes.
func appendEntries(buf []byte, entries []StateEntry) []byte {
	buf = appendU32(buf, uint32(len(entries)))
	for _, e := range entries {
		buf = appendU32(buf, e.Step)
		buf = appendU32(buf, uint32(len(e.Key)))
		if e.Removed {
			buf = appendU32(buf, removedLen)
		} else {
			buf = appendU32(buf, uint32(len(e.Value)))
		}
	}
	for _, e := range entries {
		buf = append(buf, e.Key...)
		if !e.Removed {
			buf = append(buf, e.Value...)
		}
	}
	return buf
}
