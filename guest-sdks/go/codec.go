package wallaroo

import (
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"reflect"
	"strings"
	"sync"
	"unsafe"
)

// The SDK's codec for values that cross between segments (at a KeyBy, or on the way to a state
// step reached without a key) and for state snapshots.
//
// Encoders and decoders are compiled once per type into closures over unsafe pointers, so that
// encoding a value uses no reflection: a string is a varint length and its bytes, an integer a
// varint, a struct its fields in order (exported or not), a slice or map its length and elements,
// a pointer a presence byte and its target. A type that implements encoding.BinaryMarshaler
// (and whose pointer implements encoding.BinaryUnmarshaler) encodes itself. Interfaces,
// channels, functions and complex numbers are refused when the pipeline is built.
//
// Both ends of a route run the same build of the same application, so the format carries no
// type information and need not be stable across versions.

type encodeFunc func(buf []byte, p unsafe.Pointer) []byte

// decodeFunc reads one value from data into *p and returns the rest of data.
type decodeFunc func(data []byte, p unsafe.Pointer) ([]byte, error)

type typeCodec struct {
	enc encodeFunc
	dec decodeFunc
}

var (
	errShort             = errors.New("truncated value")
	binaryMarshalerType  = reflect.TypeFor[encoding.BinaryMarshaler]()
	binaryUnmarshalType  = reflect.TypeFor[encoding.BinaryUnmarshaler]()
	codecCache           sync.Map // reflect.Type -> *typeCodec
	codecCompileMu       sync.Mutex
	errTrailingCodecData = errors.New("trailing bytes after the value")
)

// codec is the typed face of a compiled typeCodec.
type codec[T any] struct {
	c *typeCodec
}

func newCodec[T any]() (codec[T], error) {
	c, err := codecFor(reflect.TypeFor[T]())
	return codec[T]{c}, err
}

func (c codec[T]) appendValue(buf []byte, v *T) []byte {
	return c.c.enc(buf, unsafe.Pointer(v))
}

func (c codec[T]) decode(data []byte) (T, error) {
	var v T
	rest, err := c.c.dec(data, unsafe.Pointer(&v))
	if err == nil && len(rest) != 0 {
		err = errTrailingCodecData
	}
	return v, err
}

func codecFor(t reflect.Type) (*typeCodec, error) {
	if c, ok := codecCache.Load(t); ok {
		return c.(*typeCodec), nil
	}
	codecCompileMu.Lock()
	defer codecCompileMu.Unlock()
	inProgress := map[reflect.Type]*typeCodec{}
	c, err := compile(t, inProgress)
	if err != nil {
		return nil, err
	}
	for t, c := range inProgress {
		codecCache.Store(t, c)
	}
	return c, nil
}

// compile builds the codec of t. Recursive types find their own, still empty, entry in
// inProgress and call through it once it is filled.
func compile(t reflect.Type, inProgress map[reflect.Type]*typeCodec) (*typeCodec, error) {
	if c, ok := codecCache.Load(t); ok {
		return c.(*typeCodec), nil
	}
	if c, ok := inProgress[t]; ok {
		return c, nil
	}
	c := &typeCodec{}
	inProgress[t] = c
	enc, dec, err := compileKind(t, inProgress)
	if err != nil {
		delete(inProgress, t)
		return nil, err
	}
	c.enc, c.dec = enc, dec
	return c, nil
}

func compileKind(t reflect.Type, inProgress map[reflect.Type]*typeCodec) (encodeFunc, decodeFunc, error) {
	if reflect.PointerTo(t).Implements(binaryMarshalerType) && reflect.PointerTo(t).Implements(binaryUnmarshalType) {
		return marshalerCodec(t)
	}
	switch t.Kind() {
	case reflect.Bool:
		return func(buf []byte, p unsafe.Pointer) []byte {
				if *(*bool)(p) {
					return append(buf, 1)
				}
				return append(buf, 0)
			}, func(data []byte, p unsafe.Pointer) ([]byte, error) {
				if len(data) < 1 {
					return nil, errShort
				}
				*(*bool)(p) = data[0] != 0
				return data[1:], nil
			}, nil
	case reflect.Int:
		return intCodec(func(p unsafe.Pointer) int64 { return int64(*(*int)(p)) }, func(p unsafe.Pointer, v int64) { *(*int)(p) = int(v) })
	case reflect.Int8:
		return intCodec(func(p unsafe.Pointer) int64 { return int64(*(*int8)(p)) }, func(p unsafe.Pointer, v int64) { *(*int8)(p) = int8(v) })
	case reflect.Int16:
		return intCodec(func(p unsafe.Pointer) int64 { return int64(*(*int16)(p)) }, func(p unsafe.Pointer, v int64) { *(*int16)(p) = int16(v) })
	case reflect.Int32:
		return intCodec(func(p unsafe.Pointer) int64 { return int64(*(*int32)(p)) }, func(p unsafe.Pointer, v int64) { *(*int32)(p) = int32(v) })
	case reflect.Int64:
		return intCodec(func(p unsafe.Pointer) int64 { return *(*int64)(p) }, func(p unsafe.Pointer, v int64) { *(*int64)(p) = v })
	case reflect.Uint:
		return uintCodec(func(p unsafe.Pointer) uint64 { return uint64(*(*uint)(p)) }, func(p unsafe.Pointer, v uint64) { *(*uint)(p) = uint(v) })
	case reflect.Uint8:
		return uintCodec(func(p unsafe.Pointer) uint64 { return uint64(*(*uint8)(p)) }, func(p unsafe.Pointer, v uint64) { *(*uint8)(p) = uint8(v) })
	case reflect.Uint16:
		return uintCodec(func(p unsafe.Pointer) uint64 { return uint64(*(*uint16)(p)) }, func(p unsafe.Pointer, v uint64) { *(*uint16)(p) = uint16(v) })
	case reflect.Uint32:
		return uintCodec(func(p unsafe.Pointer) uint64 { return uint64(*(*uint32)(p)) }, func(p unsafe.Pointer, v uint64) { *(*uint32)(p) = uint32(v) })
	case reflect.Uint64:
		return uintCodec(func(p unsafe.Pointer) uint64 { return *(*uint64)(p) }, func(p unsafe.Pointer, v uint64) { *(*uint64)(p) = v })
	case reflect.Uintptr:
		return uintCodec(func(p unsafe.Pointer) uint64 { return uint64(*(*uintptr)(p)) }, func(p unsafe.Pointer, v uint64) { *(*uintptr)(p) = uintptr(v) })
	case reflect.Float32:
		return uintCodec(func(p unsafe.Pointer) uint64 { return uint64(math.Float32bits(*(*float32)(p))) }, func(p unsafe.Pointer, v uint64) { *(*float32)(p) = math.Float32frombits(uint32(v)) })
	case reflect.Float64:
		return uintCodec(func(p unsafe.Pointer) uint64 { return math.Float64bits(*(*float64)(p)) }, func(p unsafe.Pointer, v uint64) { *(*float64)(p) = math.Float64frombits(v) })
	case reflect.String:
		return encodeString, decodeString, nil
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 && !reflect.PointerTo(t.Elem()).Implements(binaryMarshalerType) {
			return encodeBytes, decodeBytes, nil
		}
		return sliceCodec(t, inProgress)
	case reflect.Array:
		return arrayCodec(t, inProgress)
	case reflect.Struct:
		return structCodec(t, inProgress)
	case reflect.Pointer:
		return pointerCodec(t, inProgress)
	case reflect.Map:
		return mapCodec(t, inProgress)
	}
	return nil, nil, fmt.Errorf("the SDK's codec cannot encode %s values (kind %s); implement encoding.BinaryMarshaler and encoding.BinaryUnmarshaler", t, t.Kind())
}

func readUvarint(data []byte) (uint64, []byte, error) {
	v, n := binary.Uvarint(data)
	if n <= 0 {
		return 0, nil, errShort
	}
	return v, data[n:], nil
}

func intCodec(get func(unsafe.Pointer) int64, set func(unsafe.Pointer, int64)) (encodeFunc, decodeFunc, error) {
	return func(buf []byte, p unsafe.Pointer) []byte {
			return binary.AppendVarint(buf, get(p))
		}, func(data []byte, p unsafe.Pointer) ([]byte, error) {
			v, n := binary.Varint(data)
			if n <= 0 {
				return nil, errShort
			}
			set(p, v)
			return data[n:], nil
		}, nil
}

func uintCodec(get func(unsafe.Pointer) uint64, set func(unsafe.Pointer, uint64)) (encodeFunc, decodeFunc, error) {
	return func(buf []byte, p unsafe.Pointer) []byte {
			return binary.AppendUvarint(buf, get(p))
		}, func(data []byte, p unsafe.Pointer) ([]byte, error) {
			v, rest, err := readUvarint(data)
			if err != nil {
				return nil, err
			}
			set(p, v)
			return rest, nil
		}, nil
}

func encodeString(buf []byte, p unsafe.Pointer) []byte {
	s := *(*string)(p)
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

func decodeString(data []byte, p unsafe.Pointer) ([]byte, error) {
	n, rest, err := readUvarint(data)
	if err != nil || uint64(len(rest)) < n {
		return nil, errShort
	}
	*(*string)(p) = string(rest[:n])
	return rest[n:], nil
}

// Byte slices keep nil apart from empty: length+1, or 0 for nil.
func encodeBytes(buf []byte, p unsafe.Pointer) []byte {
	b := *(*[]byte)(p)
	if b == nil {
		return append(buf, 0)
	}
	buf = binary.AppendUvarint(buf, uint64(len(b))+1)
	return append(buf, b...)
}

func decodeBytes(data []byte, p unsafe.Pointer) ([]byte, error) {
	n, rest, err := readUvarint(data)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		*(*[]byte)(p) = nil
		return rest, nil
	}
	n--
	if uint64(len(rest)) < n {
		return nil, errShort
	}
	*(*[]byte)(p) = append(make([]byte, 0, n), rest[:n]...)
	return rest[n:], nil
}

func marshalerCodec(t reflect.Type) (encodeFunc, decodeFunc, error) {
	return func(buf []byte, p unsafe.Pointer) []byte {
			data, err := reflect.NewAt(t, p).Interface().(encoding.BinaryMarshaler).MarshalBinary()
			if err != nil {
				panic(fmt.Errorf("%s.MarshalBinary: %w", t, err))
			}
			buf = binary.AppendUvarint(buf, uint64(len(data)))
			return append(buf, data...)
		}, func(data []byte, p unsafe.Pointer) ([]byte, error) {
			n, rest, err := readUvarint(data)
			if err != nil || uint64(len(rest)) < n {
				return nil, errShort
			}
			if err := reflect.NewAt(t, p).Interface().(encoding.BinaryUnmarshaler).UnmarshalBinary(rest[:n]); err != nil {
				return nil, err
			}
			return rest[n:], nil
		}, nil
}

func sliceCodec(t reflect.Type, inProgress map[reflect.Type]*typeCodec) (encodeFunc, decodeFunc, error) {
	elem, err := compile(t.Elem(), inProgress)
	if err != nil {
		return nil, nil, err
	}
	size := t.Elem().Size()
	return func(buf []byte, p unsafe.Pointer) []byte {
			v := reflect.NewAt(t, p).Elem()
			if v.IsNil() {
				return append(buf, 0)
			}
			n := v.Len()
			buf = binary.AppendUvarint(buf, uint64(n)+1)
			base := v.UnsafePointer()
			for i := 0; i < n; i++ {
				buf = elem.enc(buf, unsafe.Add(base, uintptr(i)*size))
			}
			return buf
		}, func(data []byte, p unsafe.Pointer) ([]byte, error) {
			n, rest, err := readUvarint(data)
			if err != nil {
				return nil, err
			}
			v := reflect.NewAt(t, p).Elem()
			if n == 0 {
				v.SetZero()
				return rest, nil
			}
			n--
			if n > uint64(len(rest)) { // every element takes at least one byte
				return nil, errShort
			}
			s := reflect.MakeSlice(t, int(n), int(n))
			base := s.UnsafePointer()
			for i := 0; i < int(n); i++ {
				if rest, err = elem.dec(rest, unsafe.Add(base, uintptr(i)*size)); err != nil {
					return nil, err
				}
			}
			v.Set(s)
			return rest, nil
		}, nil
}

func arrayCodec(t reflect.Type, inProgress map[reflect.Type]*typeCodec) (encodeFunc, decodeFunc, error) {
	elem, err := compile(t.Elem(), inProgress)
	if err != nil {
		return nil, nil, err
	}
	n, size := t.Len(), t.Elem().Size()
	return func(buf []byte, p unsafe.Pointer) []byte {
			for i := 0; i < n; i++ {
				buf = elem.enc(buf, unsafe.Add(p, uintptr(i)*size))
			}
			return buf
		}, func(data []byte, p unsafe.Pointer) ([]byte, error) {
			var err error
			for i := 0; i < n; i++ {
				if data, err = elem.dec(data, unsafe.Add(p, uintptr(i)*size)); err != nil {
					return nil, err
				}
			}
			return data, nil
		}, nil
}

func structCodec(t reflect.Type, inProgress map[reflect.Type]*typeCodec) (encodeFunc, decodeFunc, error) {
	type field struct {
		offset uintptr
		c      *typeCodec
	}
	var fields []field
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Name == "_" || f.Type.Size() == 0 {
			continue
		}
		c, err := compile(f.Type, inProgress)
		if err != nil {
			return nil, nil, fmt.Errorf("field %s of %s: %w", f.Name, t, err)
		}
		fields = append(fields, field{f.Offset, c})
	}
	return func(buf []byte, p unsafe.Pointer) []byte {
			for _, f := range fields {
				buf = f.c.enc(buf, unsafe.Add(p, f.offset))
			}
			return buf
		}, func(data []byte, p unsafe.Pointer) ([]byte, error) {
			var err error
			for _, f := range fields {
				if data, err = f.c.dec(data, unsafe.Add(p, f.offset)); err != nil {
					return nil, err
				}
			}
			return data, nil
		}, nil
}

func pointerCodec(t reflect.Type, inProgress map[reflect.Type]*typeCodec) (encodeFunc, decodeFunc, error) {
	elem, err := compile(t.Elem(), inProgress)
	if err != nil {
		return nil, nil, err
	}
	return func(buf []byte, p unsafe.Pointer) []byte {
			target := *(*unsafe.Pointer)(p)
			if target == nil {
				return append(buf, 0)
			}
			return elem.enc(append(buf, 1), target)
		}, func(data []byte, p unsafe.Pointer) ([]byte, error) {
			if len(data) < 1 {
				return nil, errShort
			}
			if data[0] == 0 {
				reflect.NewAt(t, p).Elem().SetZero()
				return data[1:], nil
			}
			target := reflect.New(t.Elem())
			rest, err := elem.dec(data[1:], target.UnsafePointer())
			if err != nil {
				return nil, err
			}
			reflect.NewAt(t, p).Elem().Set(target)
			return rest, nil
		}, nil
}

func mapCodec(t reflect.Type, inProgress map[reflect.Type]*typeCodec) (encodeFunc, decodeFunc, error) {
	key, err := compile(t.Key(), inProgress)
	if err != nil {
		return nil, nil, err
	}
	elem, err := compile(t.Elem(), inProgress)
	if err != nil {
		return nil, nil, err
	}
	return func(buf []byte, p unsafe.Pointer) []byte {
			m := reflect.NewAt(t, p).Elem()
			if m.IsNil() {
				return append(buf, 0)
			}
			buf = binary.AppendUvarint(buf, uint64(m.Len())+1)
			k := reflect.New(t.Key()).Elem()
			v := reflect.New(t.Elem()).Elem()
			for it := m.MapRange(); it.Next(); {
				k.SetIterKey(it)
				v.SetIterValue(it)
				buf = key.enc(buf, k.Addr().UnsafePointer())
				buf = elem.enc(buf, v.Addr().UnsafePointer())
			}
			return buf
		}, func(data []byte, p unsafe.Pointer) ([]byte, error) {
			n, rest, err := readUvarint(data)
			if err != nil {
				return nil, err
			}
			m := reflect.NewAt(t, p).Elem()
			if n == 0 {
				m.SetZero()
				return rest, nil
			}
			n--
			if n > uint64(len(rest)) {
				return nil, errShort
			}
			made := reflect.MakeMapWithSize(t, int(n))
			for i := uint64(0); i < n; i++ {
				k := reflect.New(t.Key())
				v := reflect.New(t.Elem())
				if rest, err = key.dec(rest, k.UnsafePointer()); err != nil {
					return nil, err
				}
				if rest, err = elem.dec(rest, v.UnsafePointer()); err != nil {
					return nil, err
				}
				made.SetMapIndex(k.Elem(), v.Elem())
			}
			m.Set(made)
			return rest, nil
		}, nil
}

// stateMark starts every state value the SDK writes, before the layout of its type: a restore
// tells a state of an earlier version's type (see UpgradeState) from one of the step's own.
const stateMark = 0xf7

// lastSeenMark starts the state of a key of a state step with ExpireAfter: it is followed by
// the key's last-seen time (nanoseconds since the Unix epoch, u64 little-endian), then by the
// state as a step without ExpireAfter writes it (stateMark, layout, value). A restore tells
// the two apart by the marks: a state without a last-seen time gets one, and a step without
// ExpireAfter skips it.
const lastSeenMark = 0xf8

// lastSeenLen is the length of lastSeenMark and the time after it.
const lastSeenLen = 9

// appendLastSeen appends lastSeenMark and t to buf.
func appendLastSeen(buf []byte, t uint64) []byte {
	return binary.LittleEndian.AppendUint64(append(buf, lastSeenMark), t)
}

// cutLastSeen returns the last-seen time at the start of data and the state after it, if
// data starts with them (see lastSeenMark).
func cutLastSeen(data []byte) (uint64, []byte, bool) {
	if len(data) <= lastSeenLen || data[0] != lastSeenMark || data[lastSeenLen] != stateMark {
		return 0, data, false
	}
	return binary.LittleEndian.Uint64(data[1:]), data[lastSeenLen:], true
}

// stateHeader is stateMark and the FNV-1a hash of t's layout (see layout).
func stateHeader(t reflect.Type) []byte {
	h := fnv.New64a()
	h.Write([]byte(layout(t, map[reflect.Type]bool{})))
	return h.Sum([]byte{stateMark})
}

// layout describes how the codec encodes t: two types of the same layout read each other's
// encodings. Field names and type names do not count.
func layout(t reflect.Type, seen map[reflect.Type]bool) string {
	if reflect.PointerTo(t).Implements(binaryMarshalerType) && reflect.PointerTo(t).Implements(binaryUnmarshalType) {
		// Its own bytes, which it may version itself.
		return "m"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "i"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "u"
	case reflect.Float32:
		return "f32"
	case reflect.Float64:
		return "f64"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 && !reflect.PointerTo(t.Elem()).Implements(binaryMarshalerType) {
			return "y"
		}
		return "[" + layout(t.Elem(), seen) + "]"
	case reflect.Array:
		return fmt.Sprintf("[%d]%s", t.Len(), layout(t.Elem(), seen))
	case reflect.Map:
		return "map[" + layout(t.Key(), seen) + "]" + layout(t.Elem(), seen)
	case reflect.Pointer:
		return "*" + layout(t.Elem(), seen)
	case reflect.Struct:
		if seen[t] {
			// A recursive type: named where it recurs.
			return "@" + t.String()
		}
		seen[t] = true
		defer delete(seen, t)
		fields := make([]string, t.NumField())
		for i := range fields {
			fields[i] = layout(t.Field(i).Type, seen)
		}
		return "{" + strings.Join(fields, ",") + "}"
	}
	return t.Kind().String()
}
