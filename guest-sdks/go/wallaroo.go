// Package wallaroo builds Wallaroo stream applications in Go.
//
// An application is a Go main package that registers its setup function in init and has an
// empty main; `wallaroo build ./path/to/app` compiles it to a WebAssembly component that
// `wallaroo run` runs:
//
//	func init() { wallaroo.Setup(applicationSetup) }
//
//	func main() {}
//
//	func applicationSetup(args []string) (*wallaroo.Application, error) {
//		in, err := wallaroo.TCPParseInputAddrs(args)
//		if err != nil {
//			return nil, err
//		}
//		out, err := wallaroo.TCPParseOutputAddrs(args)
//		if err != nil {
//			return nil, err
//		}
//		lines := wallaroo.Source("Split and Count", wallaroo.TCPSource(in[0].Host, in[0].Port, decodeLines))
//		words := wallaroo.ToMulti(lines, "split into words", split)
//		counts := wallaroo.ToState(wallaroo.KeyBy(words, extractWord), "count word", newWordTotal, countWord)
//		return wallaroo.BuildApplication("Word Count Application",
//			wallaroo.ToSink(counts, wallaroo.TCPSink(out[0].Host, out[0].Port, encodeWordCount)))
//	}
//
// The pipeline is the one Wallaroo's Python API builds: steps run in order, KeyBy sends each
// message to the owner of its key, and a state step keeps one state value per key, created by
// its constructor the first time the key is seen. An error returned by a user function, or a
// panic in one, costs only the message being processed: the host logs it with the step and key
// and dead-letters the message.
//
// Values that leave a segment (at a KeyBy) are encoded with the SDK's own codec (see the
// types it accepts in KeyBy); state values are encoded the same way for snapshots.
//
// # Kafka
//
// KafkaSource reads a Kafka topic, each record's value one message, and KafkaSink writes one
// record per value to a topic: without a key, or with the key and partition KafkaKeyedSink's
// encoder gives in a KafkaRecord. WithProperty passes client properties (librdkafka's) to the
// host's Kafka client, and KafkaSourceOptions and KafkaSinkOptions read the topics, brokers
// and settings from the command line under the names Wallaroo used:
//
//	in, err := wallaroo.KafkaSourceOptions(args) // --kafka_source_topic, --kafka_source_brokers, ...
//	...
//	lines := wallaroo.Source("lines", wallaroo.KafkaSource(in.Topic, in.Brokers, decodeLines).WithProperties(in.Properties...))
//	...
//	wallaroo.ToSink(counts, wallaroo.KafkaKeyedSink(out.Topic, out.Brokers, func(c wordCount) (wallaroo.KafkaRecord, error) {
//		return wallaroo.KafkaRecord{Key: []byte(c.word), Value: []byte(c.word + " " + strconv.Itoa(c.count))}, nil
//	}))
//
// # Windows
//
// ToWindows computes an Aggregation over windows of each key's values, as Wallaroo 0.6's
// range_windows and count_windows did: RangeWindows of event time, tumbling or sliding, which
// fire when the host's watermark (Runtime.Advance) passes their end plus their delay, with a
// LateDataPolicy for what comes after that; or CountWindows of every n messages. A message's
// event time is when the host received it, unless its source's config takes it from the data
// (SourceConfig.WithEventTime). Open windows are keyed state: checkpoints, restores and moves
// carry them, and no window fires twice.
//
//	sums := wallaroo.ToWindows(wallaroo.KeyBy(transactions, user), "total",
//		wallaroo.RangeWindows(9*time.Second).WithSlide(3*time.Second), totalAggregation{})
//
// # Expiring state
//
// ExpireAfter makes a state step forget a key that has had no message for a while: once the
// watermark reaches the event time of the key's last message plus the given time, an optional
// function gets the key and its state, whatever it returns goes downstream like the step's own
// outputs (with that deadline as event time), and the state is removed from the instance and
// from the next checkpoint. With the default event times (when the host received each
// message) that is a time without messages on the clock; the end of every stream expires every
// key. A key's last-seen time is kept with its state, so it survives recoveries, moves and
// swaps; a state from a version without ExpireAfter gets the full time from when it is
// restored.
//
//	sessions := wallaroo.ToState(wallaroo.KeyBy(clicks, user), "session", newSession, addClick)
//	sessions = wallaroo.ExpireAfter(sessions, 30*time.Minute, func(user string, s *session) ([]summary, error) {
//		return []summary{s.summary(user)}, nil
//	})
//
// # Changing state between versions
//
// A hot swap (or a start on an earlier version's log) restores each key's state into the new
// version's state step of the same name. The codec writes a struct's fields in order, without
// their names, after a header that records the layout of the state type (its field types in
// order, nested): a new version whose state type has the same layout (fields renamed, the type
// renamed) reads the old state as it is. A new layout (a field added, removed or of another
// type) needs a conversion: keep the old type under any name and register it with
// UpgradeState, which decodes each old state as that type and converts it:
//
//	type wordTotal struct{ Count int }               // version 1's state, kept for the upgrade
//	type wordStats struct{ Total int64; Longest int } // version 2's
//
//	counts := wallaroo.ToState(keyed, "count word", newWordStats, countWord)
//	counts = wallaroo.UpgradeState(counts, func(old *wordTotal) (*wordStats, error) {
//		return &wordStats{Total: int64(old.Count)}, nil
//	})
//
// A state of a layout neither the step's type nor an UpgradeState knows is refused, naming
// UpgradeState; the host then refuses the swap before anything changes. A type that
// implements encoding.BinaryMarshaler versions its own bytes instead.
package wallaroo

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"time"
)

// Application is a built pipeline graph, returned by the setup function.
type Application struct {
	name  string
	flows []*node
}

// Flow is a pipeline that ends in sinks; BuildApplication takes one or more.
type Flow struct {
	n *node
}

// Pipeline is a stream of values of type T.
type Pipeline[T any] struct {
	n *node
}

// node is one stage of the graph as the application built it; merges have no stage.
type node struct {
	parents []*node
	stage   any // *sourceStage, *stepStage, *sinkStage or nil for a merge
	err     error
}

// A setup error found while the graph is built is kept in the node and reported by
// BuildApplication, so that building code reads as a chain without error checks.
func (n *node) firstError() error {
	if n.err != nil {
		return n.err
	}
	for _, p := range n.parents {
		if err := p.firstError(); err != nil {
			return err
		}
	}
	return nil
}

// SourceConfig says where a source's messages come from and how to decode them.
type SourceConfig[T any] struct {
	host, port string
	framing    Framing
	kafka      *KafkaTopic // a Kafka source's topic; nil for TCP
	decoder    *decoderStage
	err        error // a setup error, reported by BuildApplication
}

// Framing is how a TCP source cuts its byte stream into messages: each frame is HeaderLength
// bytes of header holding the payload's length as an unsigned integer of LengthSize bytes at
// its start (big endian or not), followed by the payload.
type Framing struct {
	HeaderLength uint32
	LengthSize   uint8
	BigEndian    bool
}

// TCPSource is a framed TCP source (4-byte big-endian length, then payload) whose payloads
// decode decodes. The host listens on host:port. decode may not keep data after it returns.
func TCPSource[T any](host, port string, decode func(data []byte) (T, error)) SourceConfig[T] {
	return SourceConfig[T]{
		host:    host,
		port:    port,
		framing: Framing{HeaderLength: 4, LengthSize: 4, BigEndian: true},
		decoder: newDecoder(decode),
	}
}

// newDecoder is the decoder step of a source config, named after decode.
func newDecoder[T any](decode func(data []byte) (T, error)) *decoderStage {
	return &decoderStage{
		name:  funcName(decode),
		where: definitionSite(decode),
		decode: func(data []byte) (any, error) {
			return decode(data)
		},
	}
}

// WithFraming returns the config with another framing. A Kafka source has none (each
// record's value is one message): BuildApplication reports the call.
func (c SourceConfig[T]) WithFraming(f Framing) SourceConfig[T] {
	if c.kafka != nil {
		c.err = cmp.Or(c.err, fmt.Errorf("WithFraming: the Kafka source of topic %q has no framing "+
			"(each record's value is one message)", c.kafka.Topic))
		return c
	}
	c.framing = f
	return c
}

// WithName returns the config with its decoder step named name instead of after the function.
func (c SourceConfig[T]) WithName(name string) SourceConfig[T] {
	d := *c.decoder
	d.name = name
	c.decoder = &d
	return c
}

// WithEventTime returns the config with each message's event time taken from the data: what
// eventTime returns for the decoded value, instead of when the host received the message. The
// host then knows how far event time has got from the data too. A time before 1970 or after
// 2262, an error or a panic costs the message (the host dead-letters it, naming the decoder
// step); nil leaves event times to the host.
func (c SourceConfig[T]) WithEventTime(eventTime func(T) (time.Time, error)) SourceConfig[T] {
	d := *c.decoder
	d.eventTime, d.eventWhere = nil, ""
	if eventTime != nil {
		d.eventWhere = definitionSite(eventTime)
		d.eventTime = func(v any) (uint64, error) {
			t, err := eventTime(v.(T))
			if err != nil {
				return 0, err
			}
			return eventTimeNanos(t)
		}
	}
	c.decoder = &d
	return c
}

// SinkConfig says where a sink's messages go and how to encode them.
type SinkConfig[T any] struct {
	host, port string
	kafka      *KafkaTopic // a Kafka sink's topic; nil for TCP
	encoder    *encoderStage
	err        error // a setup error, reported by BuildApplication
}

// TCPSink is a TCP sink: the host connects to host:port and writes encode's bytes as they are.
func TCPSink[T any](host, port string, encode func(T) ([]byte, error)) SinkConfig[T] {
	return SinkConfig[T]{host: host, port: port, encoder: newEncoder(encode, encode)}
}

// newEncoder is the encoder step of a sink config running encode, named after the user's
// function fn (which encode calls, or is).
func newEncoder[T any](fn any, encode func(T) ([]byte, error)) *encoderStage {
	return &encoderStage{
		name:  funcName(fn),
		where: definitionSite(fn),
		encode: func(v any) ([]byte, error) {
			return encode(v.(T))
		},
	}
}

// WithName returns the config with its encoder step named name instead of after the function.
func (c SinkConfig[T]) WithName(name string) SinkConfig[T] {
	e := *c.encoder
	e.name = name
	c.encoder = &e
	return c
}

type sourceStage struct {
	name       string
	host, port string
	framing    Framing
	kafka      *KafkaTopic
	decoder    *decoderStage
}

type decoderStage struct {
	name, where string
	decode      func([]byte) (any, error)
	// eventTime, if set, is the event time of a decoded value (see WithEventTime)
	eventTime  func(v any) (uint64, error)
	eventWhere string
}

type encoderStage struct {
	name, where string
	encode      func(any) ([]byte, error)
	// decodes the payload when the encoder's input arrives routed (directly after a KeyBy)
	input func([]byte) (any, error)
}

type sinkConfig struct {
	host, port string
	kafka      *KafkaTopic
	encoder    *encoderStage
}

type sinkStage struct {
	configs []sinkConfig
}

type stepStage struct {
	name  string
	kind  string // "stateless", "stateful" or "key-by"
	where string
	// stateless: fn(value, emit) runs the user function and passes on its results.
	stateless func(v any, emit func(any)) error
	// stateful: fn(value, state, emit); newState creates a key's state; state codec below.
	stateful func(v any, state any, emit func(any)) error
	newState func() any
	encState func(buf []byte, state any) []byte
	// decState also says whether the state was converted: written by an earlier version
	// (an UpgradeState's type, or an SDK from before headers) rather than as encState writes it.
	decState func(data []byte) (state any, converted bool, err error)
	// stateType is S; upgrades decode states an earlier version wrote (see UpgradeState)
	stateType reflect.Type
	upgrades  []stateUpgrade
	// key-by: the key (the value is encoded for the route with encodeIn)
	key func(v any) string
	// decode and encode the step's input when it arrives routed, or leaves to be routed (a
	// state step reached without a key)
	input    func([]byte) (any, error)
	encodeIn func(buf []byte, v any) []byte
	// window makes a stateful step a window step (see ToWindows), whose state newState makes
	window windowing
	// expire makes a key's state expire after a time without messages (see ExpireAfter)
	expire *expiry
}

// expiry is how a state step's keys expire: after `after` nanoseconds of event time without
// a message, calling onExpire (if set) with the key, its state and the step's emit function.
type expiry struct {
	after    uint64
	onExpire func(key string, state any, emit func(any)) error
	where    string
}

// Source starts a pipeline with the messages of one source.
func Source[T any](name string, config SourceConfig[T]) Pipeline[T] {
	n := &node{stage: &sourceStage{
		name:    name,
		host:    config.host,
		port:    config.port,
		framing: config.framing,
		kafka:   config.kafka,
		decoder: config.decoder,
	}}
	if config.err != nil {
		n.err = fmt.Errorf("source %q: %w", name, config.err)
	}
	return Pipeline[T]{n}
}

// inputCodec decodes a routed payload into a T (as any) and encodes a T for a route.
func inputCodec[T any]() (func([]byte) (any, error), func([]byte, any) []byte, error) {
	c, err := newCodec[T]()
	if err != nil {
		return nil, nil, err
	}
	return func(data []byte) (any, error) {
			return c.decode(data)
		}, func(buf []byte, v any) []byte {
			t := v.(T)
			return c.appendValue(buf, &t)
		}, nil
}

func addStep[In any](p Pipeline[In], s *stepStage) *node {
	n := &node{parents: []*node{p.n}, stage: s}
	input, encodeIn, err := inputCodec[In]()
	if err != nil {
		n.err = fmt.Errorf("step %q: %w", s.name, err)
	}
	s.input, s.encodeIn = input, encodeIn
	return n
}

// To runs fn on every value: one value in, one value out.
func To[In, Out any](p Pipeline[In], name string, fn func(In) (Out, error)) Pipeline[Out] {
	return Pipeline[Out]{addStep(p, &stepStage{
		name:  name,
		kind:  "stateless",
		where: definitionSite(fn),
		stateless: func(v any, emit func(any)) error {
			out, err := fn(v.(In))
			if err != nil {
				return err
			}
			emit(out)
			return nil
		},
	})}
}

// ToMulti runs fn on every value and passes on each value of its result (none for nil).
func ToMulti[In, Out any](p Pipeline[In], name string, fn func(In) ([]Out, error)) Pipeline[Out] {
	return Pipeline[Out]{addStep(p, &stepStage{
		name:  name,
		kind:  "stateless",
		where: definitionSite(fn),
		stateless: func(v any, emit func(any)) error {
			outs, err := fn(v.(In))
			if err != nil {
				return err
			}
			for _, out := range outs {
				emit(out)
			}
			return nil
		},
	})}
}

// KeyBy sends every value to the owner of key(value), where the following steps run with that
// key. T must be encodable by the SDK's codec: booleans, integers, floats, strings, and slices,
// arrays, maps, structs (all fields, exported or not) and pointers of those; or a type that
// implements encoding.BinaryMarshaler and whose pointer implements encoding.BinaryUnmarshaler.
func KeyBy[T any](p Pipeline[T], key func(T) string) Pipeline[T] {
	return KeyByNamed(p, funcName(key), key)
}

// KeyByNamed is KeyBy with the step named name instead of after the function.
func KeyByNamed[T any](p Pipeline[T], name string, key func(T) string) Pipeline[T] {
	s := &stepStage{
		name:  name,
		kind:  "key-by",
		where: definitionSite(key),
		key:   func(v any) string { return key(v.(T)) },
	}
	return Pipeline[T]{addStep(p, s)}
}

func stateStep[In, S any](p Pipeline[In], name string, newState func() *S, where string,
	run func(In, *S, func(any)) error) *node {
	s := &stepStage{
		name:     name,
		kind:     "stateful",
		where:    where,
		newState: func() any { return newState() },
		stateful: func(v any, state any, emit func(any)) error {
			return run(v.(In), state.(*S), emit)
		},
	}
	n := addStep(p, s)
	c, err := newCodec[S]()
	if err != nil {
		n.err = fmt.Errorf("state of step %q: %w", name, err)
		return n
	}
	s.stateType = reflect.TypeFor[S]()
	header := stateHeader(s.stateType)
	s.encState = func(buf []byte, state any) []byte {
		return c.appendValue(append(buf, header...), state.(*S))
	}
	decode := func(data []byte) (any, error) {
		v, err := c.decode(data)
		if err != nil {
			return nil, err
		}
		return &v, nil
	}
	s.decState = func(data []byte) (any, bool, error) {
		if body, ok := bytes.CutPrefix(data, header); ok {
			v, err := decode(body)
			return v, false, err
		}
		for _, u := range s.upgrades {
			if body, ok := bytes.CutPrefix(data, u.header); ok {
				v, err := u.decode(body)
				return v, true, err
			}
		}
		// Written without a header, by an SDK from before headers: as an S.
		v, err := decode(data)
		if err != nil && len(data) >= len(header) && data[0] == header[0] {
			return nil, false, fmt.Errorf("the state was written for another state type than %s (its "+
				"layout %x); convert it with wallaroo.UpgradeState from that type", s.stateType, data[1:len(header)])
		}
		return v, true, err
	}
	return n
}

// stateUpgrade decodes a state of an earlier version's state type and makes the step's of it.
type stateUpgrade struct {
	header []byte
	decode func(data []byte) (any, error)
}

// UpgradeState lets the state step p comes out of (a ToState or ToStateMulti) take over the
// state an earlier version of the application wrote with state type Old: on a restore (a hot
// swap, or a start on that version's log) such a state is decoded as an Old and upgrade makes
// the step's state of it. Old is the earlier version's type as it was (same field types in
// the same order; names may differ): a state records the layout of its type, not its name,
// so a state whose type's layout did not change is restored as it is, and one whose layout
// matches neither the step's type nor an UpgradeState's is refused, naming it. Call it once
// per earlier type; an error from upgrade refuses the restore, naming the step and key.
func UpgradeState[Out, Old, S any](p Pipeline[Out], upgrade func(*Old) (*S, error)) Pipeline[Out] {
	n := p.n
	s := stateStepOf[S](n, "UpgradeState", "whose state the SDK lays out itself", "makes")
	if s == nil {
		return p
	}
	c, err := newCodec[Old]()
	if err != nil {
		n.err = fmt.Errorf("UpgradeState for step %q: the old state: %w", s.name, err)
		return p
	}
	header := stateHeader(reflect.TypeFor[Old]())
	if bytes.Equal(header, stateHeader(s.stateType)) {
		n.err = fmt.Errorf("UpgradeState for step %q: %s is encoded as %s is, so such state is restored as it is; drop the UpgradeState", s.name, reflect.TypeFor[Old](), s.stateType)
		return p
	}
	s.upgrades = append(s.upgrades, stateUpgrade{
		header: header,
		decode: func(data []byte) (any, error) {
			old, err := c.decode(data)
			if err != nil {
				return nil, fmt.Errorf("as the earlier state type %s: %w", reflect.TypeFor[Old](), err)
			}
			state, err := upgrade(&old)
			if err != nil {
				return nil, fmt.Errorf("upgrading its %s: %w", reflect.TypeFor[Old](), err)
			}
			if state == nil {
				return nil, fmt.Errorf("upgrading its %s gave no state", reflect.TypeFor[Old]())
			}
			return state, nil
		},
	})
	return p
}

// stateStepOf is the state step (ToState or ToStateMulti, not a window step) whose state type
// is S that n comes out of, for the function named fn that modifies it; nil when there is
// none, with n.err saying why (naming the step, why a window step will not do, and with
// `given` what fn's S is to the step). Nil too when n has an error already.
func stateStepOf[S any](n *node, fn, window, given string) *stepStage {
	s, ok := n.stage.(*stepStage)
	switch {
	case n.err != nil:
		return nil
	case !ok || s.kind != "stateful":
		n.err = fmt.Errorf("%s: the pipeline does not come out of a state step (ToState or ToStateMulti)", fn)
		return nil
	case s.window != nil:
		n.err = fmt.Errorf("%s: step %q is a window step, %s", fn, s.name, window)
		return nil
	case reflect.TypeFor[S]() != s.stateType:
		n.err = fmt.Errorf("%s for step %q %s a %s, but the step's state is a %s", fn, s.name, given, reflect.TypeFor[S](), s.stateType)
		return nil
	}
	return s
}

// ExpireAfter makes the state of a key of the state step p comes out of (a ToState or
// ToStateMulti) expire once `after` has passed in event time without a message for that key:
// when the watermark (Runtime.Advance) reaches the key's last message's event time plus after,
// onExpire (which may be nil) is called with the key and its state, its results go downstream
// as the step's own outputs do (with that deadline as their event time), and the key's state
// is removed, from the instance and from the next checkpoint. A later message for the key
// starts it again from newState. With sources whose event time is when the host received the
// message (the default), this is `after` of wall time without a message.
//
// A key's last-seen time is part of its state, so a restore (recovery, a key's move, a hot
// swap) keeps its clock. A state written without ExpireAfter (by a version of the application
// without it) gets a full `after` from the instance's watermark when it is restored (from its
// first watermark if it is restored before any); a step without ExpireAfter reads a state
// written with it, ignoring the time. It works together with
// UpgradeState. An error from onExpire, or a panic in it, is reported as a failure of the
// step for that key (the state is removed all the same). Call it at most once per step; S is
// the step's state type, which a nil onExpire leaves to be named: ExpireAfter[Out, S](p,
// after, nil).
func ExpireAfter[Out, S any](p Pipeline[Out], after time.Duration, onExpire func(key string, state *S) ([]Out, error)) Pipeline[Out] {
	n := p.n
	s := stateStepOf[S](n, "ExpireAfter", "whose windows end as they fire", "is given")
	switch {
	case s == nil:
		return p
	case after <= 0:
		n.err = fmt.Errorf("ExpireAfter for step %q: the time must be more than 0, not %v", s.name, after)
		return p
	case s.expire != nil:
		n.err = fmt.Errorf("ExpireAfter for step %q: its state expires already (call ExpireAfter once per step)", s.name)
		return p
	}
	e := &expiry{after: uint64(after)}
	if onExpire != nil {
		e.where = definitionSite(onExpire)
		e.onExpire = func(key string, state any, emit func(any)) error {
			outs, err := onExpire(key, state.(*S))
			if err != nil {
				return err
			}
			for _, out := range outs {
				emit(out)
			}
			return nil
		}
	}
	s.expire = e
	return p
}

// ToState runs fn on every value with the state of the value's key (created with newState the
// first time the key is seen); fn may change the state. Values that reach a state step before
// any KeyBy all share the state of the empty key. The state type S is encoded for snapshots
// with the SDK's codec (see KeyBy).
func ToState[In, Out, S any](p Pipeline[In], name string, newState func() *S, fn func(In, *S) (Out, error)) Pipeline[Out] {
	return Pipeline[Out]{stateStep(p, name, newState, definitionSite(fn), func(v In, s *S, emit func(any)) error {
		out, err := fn(v, s)
		if err != nil {
			return err
		}
		emit(out)
		return nil
	})}
}

// ToStateMulti is ToState for a function with zero or more results.
func ToStateMulti[In, Out, S any](p Pipeline[In], name string, newState func() *S, fn func(In, *S) ([]Out, error)) Pipeline[Out] {
	return Pipeline[Out]{stateStep(p, name, newState, definitionSite(fn), func(v In, s *S, emit func(any)) error {
		outs, err := fn(v, s)
		if err != nil {
			return err
		}
		for _, out := range outs {
			emit(out)
		}
		return nil
	})}
}

// Merge joins pipelines of the same type into one.
func Merge[T any](pipelines ...Pipeline[T]) Pipeline[T] {
	n := &node{}
	for _, p := range pipelines {
		n.parents = append(n.parents, p.n)
	}
	return Pipeline[T]{n}
}

// ToSink ends a pipeline in one or more sinks; every value goes to each of them.
func ToSink[T any](p Pipeline[T], configs ...SinkConfig[T]) Flow {
	n := &node{parents: []*node{p.n}}
	stage := &sinkStage{}
	input, _, err := inputCodec[T]()
	if err != nil {
		n.err = fmt.Errorf("sink: %w", err)
	}
	if len(configs) == 0 {
		n.err = errors.New("ToSink needs at least one sink config")
	}
	for _, c := range configs {
		if c.err != nil && n.err == nil {
			n.err = fmt.Errorf("sink %q: %w", c.encoder.name, c.err)
		}
		e := *c.encoder
		e.input = input
		stage.configs = append(stage.configs, sinkConfig{host: c.host, port: c.port, kafka: c.kafka, encoder: &e})
	}
	n.stage = stage
	return Flow{n}
}

// BuildApplication names the application made of the given flows.
func BuildApplication(name string, flows ...Flow) (*Application, error) {
	if len(flows) == 0 {
		return nil, errors.New("BuildApplication needs at least one flow ending in a sink")
	}
	app := &Application{name: name}
	for _, f := range flows {
		if f.n == nil {
			return nil, errors.New("BuildApplication: an empty Flow")
		}
		if err := f.n.firstError(); err != nil {
			return nil, err
		}
		app.flows = append(app.flows, f.n)
	}
	return app, nil
}

// SetupFunc builds the application from the node's arguments (those after APP.wasm on the
// `wallaroo run` command line).
type SetupFunc func(args []string) (*Application, error)

var registered SetupFunc

// Setup registers the application's setup function; call it from an init function of the
// main package.
func Setup(setup SetupFunc) {
	registered = setup
}

// funcName is the unqualified name of a function, e.g. "decodeLines" for main.decodeLines.
func funcName(fn any) string {
	f := runtime.FuncForPC(reflect.ValueOf(fn).Pointer())
	if f == nil {
		return "step"
	}
	name := f.Name()
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:]
	}
	if i := strings.Index(name, "."); i >= 0 {
		name = name[i+1:]
	}
	return name
}

// definitionSite is "file.go:LINE in name" for a function.
func definitionSite(fn any) string {
	f := runtime.FuncForPC(reflect.ValueOf(fn).Pointer())
	if f == nil {
		return ""
	}
	file, line := f.FileLine(f.Entry())
	return fmt.Sprintf("%s:%d in %s", filepath.Base(file), line, funcName(fn))
}
