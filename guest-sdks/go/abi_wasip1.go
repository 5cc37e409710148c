//go:build wasip1

package wallaroo

// The component's exports: the canonical ABI of the `guest` interface of world
// `wallaroo:app/app` (wit/wallaroo.wit), lifted and lowered by hand. `wallaroo build` embeds
// the world's type information into the core module and wraps it, with the WASI preview1
// reactor adapter, into a component. The per-batch exports carry one flat byte buffer each way
// (wire.go).
//
// Memory: the host writes each call's arguments into memory it asks for with cabi_realloc,
// which bumps through a static arena (never the Go heap, whose collector knows nothing of what
// the host holds) and falls back to heap blocks kept reachable until the call is over.
// Everything a call's results point to is kept reachable until the next call begins, by which
// time the host has copied it. The preview1 adapter gets memory of its own from
// cabi_realloc_adapter.

import (
	"strings"
	"unsafe"
)

const (
	exportPrefix     = "wallaroo:app/guest@0.5.0#"
	argArenaSize     = 1 << 20
	adapterArenaSize = 256 << 10
)

var (
	argArena     [argArenaSize]byte
	argUsed      uintptr
	argSpill     [][]uint64 // arguments that did not fit the arena, until the call ends
	adapterArena [adapterArenaSize]byte
	adapterUsed  uintptr

	// retArea holds a call's result record; keep holds what it points to until the next call.
	retArea [16]uint32
	keep    []any

	guest *Runtime
)

// bump returns size bytes aligned to align from arena, or nil when they do not fit.
//
//go:nosplit
func bump(arena unsafe.Pointer, arenaSize uintptr, used *uintptr, align, size uint32) unsafe.Pointer {
	base := uintptr(arena)
	a := uintptr(align)
	if a == 0 {
		a = 1
	}
	start := (base + *used + a - 1) &^ (a - 1)
	end := start + uintptr(size)
	if end > base+arenaSize {
		return nil
	}
	*used = end - base
	return unsafe.Add(arena, start-base)
}

//go:wasmexport cabi_realloc
func cabiRealloc(old unsafe.Pointer, oldSize, align, newSize uint32) unsafe.Pointer {
	p := bump(unsafe.Pointer(&argArena), argArenaSize, &argUsed, align, newSize)
	if p == nil {
		p = spill(newSize)
	}
	if old != nil && oldSize > 0 {
		copy(unsafe.Slice((*byte)(p), newSize), unsafe.Slice((*byte)(old), min(oldSize, newSize)))
	}
	return p
}

// spill is cabi_realloc for arguments larger than the arena: a heap block (8-aligned), kept
// reachable until the call that uses it is over.
func spill(size uint32) unsafe.Pointer {
	block := make([]uint64, (uintptr(size)+7)/8+1)
	argSpill = append(argSpill, block)
	return unsafe.Pointer(&block[0])
}

//go:wasmexport cabi_realloc_adapter
//go:nosplit
func cabiReallocAdapter(old unsafe.Pointer, oldSize, align, newSize uint32) unsafe.Pointer {
	p := bump(unsafe.Pointer(&adapterArena), adapterArenaSize, &adapterUsed, align, newSize)
	if p == nil {
		return nil // the adapter traps: better than taking memory the Go runtime owns
	}
	if old != nil && oldSize > 0 {
		n := min(oldSize, newSize)
		for i := uint32(0); i < n; i++ {
			*(*byte)(unsafe.Add(p, i)) = *(*byte)(unsafe.Add(old, i))
		}
	}
	return p
}

// begin starts an export: the previous results are no longer needed.
func begin() {
	clear(keep)
	keep = keep[:0]
	if guest == nil {
		guest = NewRuntime(registered)
	}
}

// end releases the call's arguments; nothing may point into them afterwards.
func end() {
	argUsed = 0
	argSpill = nil
}

// Reading the arguments.

func ptrAt(addr uint32) unsafe.Pointer {
	return unsafe.Add(unsafe.Pointer(nil), uintptr(addr))
}

func u32At(p unsafe.Pointer, off uintptr) uint32 {
	return *(*uint32)(unsafe.Add(p, off))
}

// bytesAt is the list<u8> (or string) at p+off, in place.
func bytesAt(p unsafe.Pointer, off uintptr) []byte {
	ptr, n := u32At(p, off), u32At(p, off+4)
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(ptrAt(ptr)), n)
}

// Writing the results.

// record returns n*size zeroed bytes, 4-aligned, kept until the next call.
func record(n, size int) unsafe.Pointer {
	if n == 0 {
		return nil
	}
	words := make([]uint32, (n*size+3)/4)
	keep = append(keep, words)
	return unsafe.Pointer(&words[0])
}

func addr(p unsafe.Pointer) uint32 {
	return uint32(uintptr(p))
}

func putU32(p unsafe.Pointer, off uintptr, v uint32) {
	*(*uint32)(unsafe.Add(p, off)) = v
}

func putU8(p unsafe.Pointer, off uintptr, v uint8) {
	*(*uint8)(unsafe.Add(p, off)) = v
}

func putBytes(p unsafe.Pointer, off uintptr, b []byte) {
	if len(b) == 0 {
		putU32(p, off, 0)
		putU32(p, off+4, 0)
		return
	}
	putU32(p, off, addr(unsafe.Pointer(&b[0])))
	putU32(p, off+4, uint32(len(b)))
	keep = append(keep, b)
}

// putString writes a WIT string; the host checks that strings are UTF-8.
func putString(p unsafe.Pointer, off uintptr, s string) {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) == 0 {
		putU32(p, off, 0)
		putU32(p, off+4, 0)
		return
	}
	putU32(p, off, addr(unsafe.Pointer(unsafe.StringData(s))))
	putU32(p, off+4, uint32(len(s)))
	keep = append(keep, s)
}

// putKafka writes a kafka-source or kafka-sink record { topic: string @0, brokers: string @8,
// properties: list<tuple<string, string>> @16 } (24 bytes); each property is a tuple of two
// strings (key @0, value @8), 16 bytes, alignment 4.
func putKafka(p unsafe.Pointer, off uintptr, k *KafkaTopic) {
	putString(p, off, k.Topic)
	putString(p, off+8, k.Brokers)
	const propertySize = 16
	props := record(len(k.Properties), propertySize)
	for i, prop := range k.Properties {
		q := unsafe.Add(props, i*propertySize)
		putString(q, 0, prop.Key)
		putString(q, 8, prop.Value)
	}
	putU32(p, off+16, addr(props))
	putU32(p, off+20, uint32(len(k.Properties)))
}

func ret() unsafe.Pointer {
	clear(retArea[:])
	return unsafe.Pointer(&retArea)
}

// retErr returns result::err(text).
func retErr(text string) unsafe.Pointer {
	r := ret()
	putU8(r, 0, 1)
	putString(r, 4, text)
	return r
}

// guarded turns a panic in the SDK (or in user code outside a step, such as the setup) into
// an error result: a trap would cost the whole instance.
func guarded(p *unsafe.Pointer) {
	if v := recover(); v != nil {
		*p = retErr(panicText(v))
	}
}

//go:wasmexport wallaroo:app/guest@0.5.0#describe
func exportDescribe(argsPtr unsafe.Pointer, argsLen uint32) (result unsafe.Pointer) {
	begin()
	defer end()
	defer guarded(&result)
	args := make([]string, argsLen)
	for i := range args {
		args[i] = string(bytesAt(argsPtr, uintptr(i)*8))
	}
	spec, err := guest.Describe(args)
	if err != nil {
		return retErr(err.Error())
	}
	r := ret()
	putString(r, 4, spec.Name)

	// source-spec { name: string @0, config: source-config @8, segment: u32 @36,
	// event-time-from-data: bool @40 }, alignment 4, size 41 rounded up to 44. source-config
	// is a variant: its u8 case @8, its payload at the next multiple of its alignment (4), @12,
	// as large as its largest case (24 bytes, so the variant ends @36):
	// - case 0, tcp-source { host: string @12, port: string @20, framing @28 }, with framing
	//   { header-length: u32 @28, length-size: u8 @32, big-endian: bool @33 } (size 8);
	// - case 1, generator, has no payload (this SDK has no generator source);
	// - case 2, kafka-source { topic: string @12, brokers: string @20, properties @28 }, the
	//   properties a list (ptr @28, len @32).
	const sourceSpecSize = 44
	sources := record(len(spec.Sources), sourceSpecSize)
	for i, s := range spec.Sources {
		p := unsafe.Add(sources, i*sourceSpecSize)
		putString(p, 0, s.Name)
		if s.Kafka != nil {
			putU8(p, 8, 2) // source-config::kafka
			putKafka(p, 12, s.Kafka)
		} else {
			putU8(p, 8, 0) // source-config::tcp
			putString(p, 12, s.Host)
			putString(p, 20, s.Port)
			putU32(p, 28, s.Framing.HeaderLength)
			putU8(p, 32, s.Framing.LengthSize)
			if s.Framing.BigEndian {
				putU8(p, 33, 1)
			}
		}
		putU32(p, 36, s.Segment)
		if s.EventTimeFromData {
			putU8(p, 40, 1)
		}
	}
	putU32(r, 12, addr(sources))
	putU32(r, 16, uint32(len(spec.Sources)))

	// sink-spec { name: string @0, config: sink-config @8 }, alignment 4: sink-config's u8
	// case @8, its payload @12, as large as its largest case (kafka-sink: two strings and a
	// list, 24 bytes), so the record's size is 36. Case 0, tcp-sink { host: string @12,
	// port @20 }; case 1, kafka-sink, laid out as kafka-source is.
	const sinkSpecSize = 36
	sinks := record(len(spec.Sinks), sinkSpecSize)
	for i, s := range spec.Sinks {
		p := unsafe.Add(sinks, i*sinkSpecSize)
		putString(p, 0, s.Name)
		if s.Kafka != nil {
			putU8(p, 8, 1) // sink-config::kafka
			putKafka(p, 12, s.Kafka)
		} else {
			putU8(p, 8, 0) // sink-config::tcp
			putString(p, 12, s.Host)
			putString(p, 20, s.Port)
		}
	}
	putU32(r, 20, addr(sinks))
	putU32(r, 24, uint32(len(spec.Sinks)))

	steps := record(len(spec.Steps), 12)
	for i, s := range spec.Steps {
		p := unsafe.Add(steps, i*12)
		putString(p, 0, s.Name)
		putU8(p, 8, uint8(s.Kind))
	}
	putU32(r, 28, addr(steps))
	putU32(r, 32, uint32(len(spec.Steps)))
	return r
}

// retBytes returns result::ok(b) for a list<u8>; b must stay reachable until the next call.
func retBytes(b []byte) unsafe.Pointer {
	r := ret()
	if len(b) > 0 {
		putU32(r, 4, addr(unsafe.Pointer(&b[0])))
		putU32(r, 8, uint32(len(b)))
	}
	return r
}

// argBytes is a list<u8> argument, in place in the argument arena until the call ends.
func argBytes(ptr unsafe.Pointer, n uint32) []byte {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(ptr), n)
}

// results is the buffer every per-batch export writes its result into: the host copies it out
// before the next call, which then reuses it.
var results []byte

//go:wasmexport wallaroo:app/guest@0.5.0#process
func exportProcess(segment uint32, batchPtr unsafe.Pointer, batchLen uint32) (result unsafe.Pointer) {
	begin()
	defer end()
	defer guarded(&result)
	batch, err := decodeBatch(argBytes(batchPtr, batchLen))
	if err != nil {
		return retErr(err.Error())
	}
	out, err := guest.Process(segment, batch)
	if err != nil {
		return retErr(err.Error())
	}
	results = appendOutputs(results[:0], out)
	return retBytes(results)
}

//go:wasmexport wallaroo:app/guest@0.5.0#advance
func exportAdvance(watermark uint64) (result unsafe.Pointer) {
	begin()
	defer end()
	defer guarded(&result)
	out, err := guest.Advance(watermark)
	if err != nil {
		return retErr(err.Error())
	}
	results = appendOutputs(results[:0], out)
	return retBytes(results)
}

//go:wasmexport wallaroo:app/guest@0.5.0#snapshot-changed
func exportSnapshotChanged(maxEntries uint32) (result unsafe.Pointer) {
	begin()
	defer end()
	defer guarded(&result)
	entries, err := guest.SnapshotChanged(int(maxEntries))
	if err != nil {
		return retErr(err.Error())
	}
	results = appendEntries(results[:0], entries)
	return retBytes(results)
}

//go:wasmexport wallaroo:app/guest@0.5.0#restore
func exportRestore(entriesPtr unsafe.Pointer, entriesLen uint32) (result unsafe.Pointer) {
	begin()
	defer end()
	defer guarded(&result)
	// Restored state outlives the call: copy the buffer out of the argument arena first.
	buf := append([]byte(nil), argBytes(entriesPtr, entriesLen)...)
	entries, err := decodeEntries(buf)
	if err != nil {
		return retErr(err.Error())
	}
	if err := guest.Restore(entries); err != nil {
		return retErr(err.Error())
	}
	return ret()
}

//go:wasmexport wallaroo:app/guest@0.5.0#take
func exportTake(keysPtr unsafe.Pointer, keysLen uint32) (result unsafe.Pointer) {
	begin()
	defer end()
	defer guarded(&result)
	keys, err := decodeKeys(argBytes(keysPtr, keysLen))
	if err != nil {
		return retErr(err.Error())
	}
	entries, err := guest.Take(keys)
	if err != nil {
		return retErr(err.Error())
	}
	results = appendEntries(results[:0], entries)
	return retBytes(results)
}
