// Package wallarootest runs a Wallaroo Go application natively, without Wasm or a host: the
// same step table, routing, state and failure handling as in a component, driven the way one
// worker of the host drives it. For the application's own tests and the SDK's.
package wallarootest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"wallaroo.dev/wallaroo"
)

// Result is what a run produced.
type Result struct {
	// Sinks holds each sink's encoded messages, in order.
	Sinks [][][]byte
	// Failures holds the failed outputs, in order.
	Failures []wallaroo.Output
	// Late holds the late records of window steps, in order.
	Late []wallaroo.Output
}

// Run describes the application with args and feeds payloads to its first source, one message
// per batch; every routed message is processed at once, depth first, as one worker would, with
// the event time its route carries. The source's messages have event time 0 (unless its
// config takes them from the data). After the last payload every stream ends: the watermark
// goes to its largest value, every window fires and every expiring state expires (see
// wallaroo.ExpireAfter).
func Run(setup wallaroo.SetupFunc, args []string, payloads [][]byte) (Result, error) {
	rt := wallaroo.NewRuntime(setup)
	spec, err := rt.Describe(args)
	if err != nil {
		return Result{}, err
	}
	res := Result{Sinks: make([][][]byte, len(spec.Sinks))}
	var take func(outs []wallaroo.Output) error
	feed := func(segment uint32, m wallaroo.Message) error {
		outs, err := rt.Process(segment, []wallaroo.Message{m})
		if err != nil {
			return err
		}
		return take(outs)
	}
	take = func(outs []wallaroo.Output) error {
		for _, o := range outs {
			switch o.Kind {
			case wallaroo.OutputRoute:
				if err := feed(o.Segment, wallaroo.Message{Key: []byte(o.Key), Payload: o.Payload, EventTime: o.EventTime}); err != nil {
					return err
				}
			case wallaroo.OutputEmit:
				res.Sinks[o.Sink] = append(res.Sinks[o.Sink], o.Payload)
			case wallaroo.OutputFailed:
				res.Failures = append(res.Failures, o)
			case wallaroo.OutputLate:
				res.Late = append(res.Late, o)
			default:
				return fmt.Errorf("unknown output kind %d", o.Kind)
			}
		}
		return nil
	}
	for _, p := range payloads {
		if err := feed(spec.Sources[0].Segment, wallaroo.Message{Payload: p}); err != nil {
			return res, err
		}
	}
	outs, err := rt.Advance(math.MaxUint64)
	if err != nil {
		return res, err
	}
	return res, take(outs)
}

// KafkaRecord reads what a Kafka sink (wallaroo.KafkaSink or KafkaKeyedSink) emitted, one of
// Result.Sinks' messages, as the host does: key-len u32 little-endian (4294967295 for no key,
// then no key bytes), the key, partition u32 (4294967295 when the client chooses), then the
// value. Key and Value point into payload.
func KafkaRecord(payload []byte) (wallaroo.KafkaRecord, error) {
	var rec wallaroo.KafkaRecord
	short := errors.New("a Kafka record cut short")
	if len(payload) < 4 {
		return rec, short
	}
	keyLen, rest := binary.LittleEndian.Uint32(payload), payload[4:]
	if keyLen != math.MaxUint32 {
		if uint64(keyLen) > uint64(len(rest)) {
			return rec, short
		}
		rec.Key, rest = rest[:keyLen:keyLen], rest[keyLen:]
	}
	if len(rest) < 4 {
		return rec, short
	}
	if p := binary.LittleEndian.Uint32(rest); p != math.MaxUint32 {
		if p > math.MaxInt32 {
			return rec, fmt.Errorf("a Kafka record for partition %d, more than Kafka has", p)
		}
		partition := int32(p)
		rec.Partition = &partition
	}
	rec.Value = rest[4:]
	return rec, nil
}
