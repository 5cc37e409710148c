package wallaroo

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
)

// The description and the batch interface, mirroring the WIT types of wit/wallaroo.wit. The
// component glue (abi_wasip1.go) only converts between these and the canonical ABI; everything
// else runs, and is tested, as plain Go.

// StepKind is the kind of a step, in the order of the WIT enum step-kind.
type StepKind uint8

const (
	KindDecoder StepKind = iota
	KindStateless
	KindStateful
	KindKeyBy
	KindEncoder
)

func (k StepKind) String() string {
	return [...]string{"decoder", "stateless", "stateful", "key-by", "encoder"}[k]
}

type StepSpec struct {
	Name string
	Kind StepKind
}

// SourceSpec is a source whose messages segment Segment decodes: the Kafka topic Kafka if it is
// set, else the framed TCP source at Host:Port.
type SourceSpec struct {
	Name       string
	Host, Port string
	Framing    Framing
	Kafka      *KafkaTopic
	Segment    uint32
	// EventTimeFromData is whether the source's event times come from the data (its config
	// has an event-time function, see SourceConfig.WithEventTime) rather than from when the
	// host received each message.
	EventTimeFromData bool
}

// SinkSpec is a sink: the Kafka topic Kafka if it is set, else the TCP sink to Host:Port.
type SinkSpec struct {
	Name       string
	Host, Port string
	Kafka      *KafkaTopic
}

type AppSpec struct {
	Name    string
	Sources []SourceSpec
	Sinks   []SinkSpec
	Steps   []StepSpec
}

// Message is one message of a batch; Key is empty in a source's segment. EventTime is in
// nanoseconds since the Unix epoch.
type Message struct {
	Key       []byte
	Payload   []byte
	EventTime uint64
}

// OutputKind is the case of an Output, in the order of the WIT variant output.
type OutputKind uint8

const (
	OutputRoute OutputKind = iota
	OutputEmit
	OutputFailed
	OutputLate
)

// Output is one result of a batch. Route: Key, Segment, EventTime, Payload. Emit: Sink,
// Payload. Failed: Input, Step, Key if HasKey, Error. Late: Input, Step (a message too late for
// its windows at a window step). In Advance's outputs, Input is NoInput.
type Output struct {
	Kind      OutputKind
	Key       string
	HasKey    bool
	Segment   uint32
	Sink      uint32
	Payload   []byte
	EventTime uint64
	Input     uint32
	Step      uint32
	Error     string
}

// NoInput (4294967295) is the Input of a failure in Advance's outputs, which come from no
// message.
const NoInput = math.MaxUint32

// StateEntry is the state of one key of a state step. In SnapshotChanged's entries, Removed
// says instead that the key's state was removed (it expired, see ExpireAfter): Value is then
// nil, and the host drops the key from its copy. Restore refuses Removed entries, and Take
// returns none.
type StateEntry struct {
	Step    uint32
	Key     []byte
	Value   []byte
	Removed bool
}

type StateKey struct {
	Step uint32
	Key  []byte
}

// stepFailed is user code failing at a step, with the text for the dead-letter report.
type stepFailed struct {
	step uint32
	text string
}

func (f *stepFailed) Error() string { return f.text }

// compiledStep is a step of the table while it is being built.
type compiledStep struct {
	name       string
	kind       StepKind
	successors []int
	sink       uint32
	source     *sourceStage
	step       *stepStage
	encoder    *encoderStage
}

// compiler numbers the steps of a pipeline graph upstream before downstream, sources and
// merged pipelines in the order the application wrote them, exactly like the Python SDK.
type compiler struct {
	steps   []*compiledStep
	sources []SourceSpec
	sinks   []SinkSpec
	exits   map[*node][]int
}

func (c *compiler) walk(n *node) []int {
	if exits, ok := c.exits[n]; ok {
		return exits
	}
	var inputs []int
	for _, parent := range n.parents {
		for _, id := range c.walk(parent) {
			if !containsInt(inputs, id) {
				inputs = append(inputs, id)
			}
		}
	}
	var exits []int
	switch stage := n.stage.(type) {
	case nil: // a merge: every input flows on
		exits = inputs
	case *sourceStage:
		id := c.add(&compiledStep{name: stage.decoder.name, kind: KindDecoder, source: stage})
		c.sources = append(c.sources, SourceSpec{
			Name: stage.name, Host: stage.host, Port: stage.port,
			Framing: stage.framing, Kafka: stage.kafka, Segment: uint32(id),
			EventTimeFromData: stage.decoder.eventTime != nil,
		})
		exits = []int{id}
	case *sinkStage:
		for _, config := range stage.configs {
			id := c.add(&compiledStep{
				name: config.encoder.name, kind: KindEncoder, encoder: config.encoder,
				sink: uint32(len(c.sinks)),
			})
			c.sinks = append(c.sinks, SinkSpec{
				Name: config.encoder.name, Host: config.host, Port: config.port, Kafka: config.kafka,
			})
			c.link(inputs, id)
		}
	case *stepStage:
		kind := map[string]StepKind{"stateless": KindStateless, "stateful": KindStateful, "key-by": KindKeyBy}[stage.kind]
		id := c.add(&compiledStep{name: stage.name, kind: kind, step: stage})
		c.link(inputs, id)
		exits = []int{id}
	}
	c.exits[n] = exits
	return exits
}

func containsInt(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func (c *compiler) add(s *compiledStep) int {
	c.steps = append(c.steps, s)
	return len(c.steps) - 1
}

func (c *compiler) link(inputs []int, id int) {
	for _, input := range inputs {
		c.steps[input].successors = append(c.steps[input].successors, id)
	}
}

// runner runs a step on a value in the context of the current message (Runtime.key/keyed).
type runner func(v any) error

// entry runs a segment's first step on a message's payload.
type entry struct {
	run    func(payload []byte) error
	routed bool // whether its messages arrive with a key
}

// slot is one key's state in one state step.
type slot struct {
	step    uint32
	key     string
	value   any
	changed bool
	live    bool
	// stored says that the host may hold a copy of the key's state: the slot was in a
	// snapshot or restored, or replaced an expired slot of its key before the host was told.
	stored bool
	// expired says that the state expired (live is false) and the host is still to be told:
	// the slot is its key's in store.gone and marked changed.
	expired bool
	// In a step with ExpireAfter (expiry.go): the key's last-seen time (unless stamped is
	// false: restored without one before the first Advance), and the deadline of its entry
	// in the step's heap, if inHeap.
	lastSeen uint64
	stamped  bool
	queued   uint64
	inHeap   bool
}

type store struct {
	stage *stepStage
	slots map[string]*slot
	// With ExpireAfter: the step's deadlines, and its expired slots whose removal the next
	// snapshot reports, by key.
	exp  *expiringStore
	gone map[string]*slot
}

// add creates the slot of key, which has none, holding value.
func (st *store) add(step uint32, key string, value any) *slot {
	sl := &slot{step: step, key: key, value: value, live: true}
	if old := st.gone[key]; old != nil {
		// The host still holds the expired state, which this one replaces; should this one
		// expire before a snapshot too, the host must still be told.
		old.expired = false
		delete(st.gone, key)
		sl.stored = true
	}
	st.slots[key] = sl
	return sl
}

// windowStore is a window step's store and the timers of its keys.
type windowStore struct {
	id     uint32
	st     *store
	w      windowing
	emit   func(any)
	timers timers
}

// Runtime is one instance's application: its step table, keyed state and change marks. The
// component exports call it; tests drive it directly.
type Runtime struct {
	setup   SetupFunc
	entries []*entry
	stores  map[uint32]*store
	changed []*slot
	windows []*windowStore
	// timed fires the window steps and expires the state of steps with ExpireAfter, in step
	// order: what Advance does
	timed []func()

	// How far event time has got: no message older is still to come. advanced says whether
	// Advance has been called.
	watermark uint64
	advanced  bool

	// The message being processed.
	key       []byte
	keyed     bool
	input     uint32 // its index in the batch, or NoInput for a window that Advance fires
	eventTime uint64 // what its routes carry on
	current   uint32 // the step whose user code runs, for panics
	downFail  error  // a failure downstream of an emit, reported when the user function returns
	out       []Output
	buf       []byte // route payloads of the batch
}

// NewRuntime returns a runtime for setup; Describe must be called before anything else.
func NewRuntime(setup SetupFunc) *Runtime {
	return &Runtime{setup: setup}
}

// Registered returns the setup function registered with Setup, or nil.
func Registered() SetupFunc {
	return registered
}

// Describe runs the setup with args, compiles its pipeline and returns its description. State
// starts empty.
func (r *Runtime) Describe(args []string) (AppSpec, error) {
	if r.setup == nil {
		return AppSpec{}, errors.New("no application: call wallaroo.Setup(applicationSetup) in an init function of package main")
	}
	app, err := r.setup(args)
	if err != nil {
		return AppSpec{}, err
	}
	if app == nil {
		return AppSpec{}, errors.New("the setup function returned no application")
	}
	c := &compiler{exits: map[*node][]int{}}
	for _, flow := range app.flows {
		c.walk(flow)
	}
	if len(c.sources) == 0 {
		return AppSpec{}, errors.New("the application has no source")
	}
	if err := checkWindows(c.steps); err != nil {
		return AppSpec{}, err
	}
	r.build(c.steps)
	spec := AppSpec{Name: app.name, Sources: c.sources, Sinks: c.sinks}
	for _, s := range c.steps {
		spec.Steps = append(spec.Steps, StepSpec{Name: s.name, Kind: s.kind})
	}
	return spec, nil
}

// build makes a runner per step, from the last back (successors have higher ids), and an entry
// per step where a segment starts.
func (r *Runtime) build(steps []*compiledStep) {
	runners := make([]runner, len(steps))
	r.stores = map[uint32]*store{}
	r.changed = nil
	r.windows, r.timed = nil, nil
	r.watermark, r.advanced = 0, false
	for id := len(steps) - 1; id >= 0; id-- {
		s := steps[id]
		switch s.kind {
		case KindEncoder:
			runners[id] = r.encoderRunner(uint32(id), s.encoder, s.sink)
		case KindKeyBy:
			runners[id] = r.keyByRunner(uint32(id), s.step, s.successors)
		case KindStateless:
			runners[id] = r.statelessRunner(uint32(id), s.step, r.downstream(s.successors, runners))
		case KindStateful:
			st := &store{stage: s.step, slots: map[string]*slot{}}
			r.stores[uint32(id)] = st
			emit := r.downstream(s.successors, runners)
			if s.step.window == nil {
				if s.step.expire != nil {
					es := &expiringStore{id: uint32(id), st: st, e: s.step.expire, emit: emit}
					st.exp, st.gone = es, map[string]*slot{}
					r.timed = append(r.timed, func() { r.expireKeys(es) })
				}
				runners[id] = r.statefulRunner(uint32(id), st, emit)
				break
			}
			ws := &windowStore{id: uint32(id), st: st, w: s.step.window, emit: emit,
				timers: timers{queued: map[string]int64{}}}
			r.windows = append(r.windows, ws)
			r.timed = append(r.timed, func() { r.fireWindows(ws) })
			runners[id] = r.windowRunner(ws)
		}
	}
	slices.Reverse(r.timed)
	r.entries = make([]*entry, len(steps))
	for id, s := range steps {
		switch s.kind {
		case KindDecoder:
			r.entries[id] = r.decoderEntry(uint32(id), s.source.decoder, r.downstream(s.successors, runners))
		case KindStateful:
			r.entries[id] = r.routedEntry(uint32(id), s.step.input, runners[id])
		case KindKeyBy:
			for _, succ := range s.successors {
				input := steps[succ].encoderOrStepInput()
				r.entries[succ] = r.routedEntry(uint32(succ), input, runners[succ])
			}
		}
	}
}

func (s *compiledStep) encoderOrStepInput() func([]byte) (any, error) {
	if s.encoder != nil {
		return s.encoder.input
	}
	return s.step.input
}

// downstream is the runner that feeds a step's output to all its successors; user functions
// see it as their emit function, so a failure downstream is kept until they return.
func (r *Runtime) downstream(successors []int, runners []runner) func(any) {
	targets := make([]runner, len(successors))
	for i, id := range successors {
		targets[i] = runners[id]
	}
	return func(v any) {
		if r.downFail != nil {
			return
		}
		caller := r.current
		for _, run := range targets {
			if err := run(v); err != nil {
				r.downFail = err
				return
			}
		}
		r.current = caller // a later panic in the caller is the caller's
	}
}

// userError is the failure of a user function that returned err: the failure downstream of
// its emits if there was one, else err.
func (r *Runtime) userError(step uint32, where string, err error) error {
	if r.downFail != nil {
		return r.downFail
	}
	if err == nil {
		return nil
	}
	return &stepFailed{step, errorText(err, where)}
}

func errorText(err error, where string) string {
	text := strings.ToValidUTF8(err.Error(), "\uFFFD")
	if where == "" {
		return text
	}
	return text + " (" + where + ")"
}

func (r *Runtime) statelessRunner(id uint32, s *stepStage, emit func(any)) runner {
	fn, where := s.stateless, s.where
	return func(v any) error {
		r.current = id
		err := fn(v, emit)
		return r.userError(id, where, err)
	}
}

func (r *Runtime) statefulRunner(id uint32, st *store, emit func(any)) runner {
	fn, where, newState, encodeIn := st.stage.stateful, st.stage.where, st.stage.newState, st.stage.encodeIn
	return func(v any) error {
		if !r.keyed {
			// Reached before any KeyBy: all unkeyed messages share the state of the empty key,
			// which lives wherever the host routes that key.
			r.current = id
			r.out = append(r.out, Output{Kind: OutputRoute, Segment: id, Payload: r.encode(encodeIn, v), EventTime: r.eventTime})
			return nil
		}
		r.current = id
		sl := st.slots[string(r.key)]
		if sl == nil {
			sl = st.add(id, string(r.key), newState())
		}
		if st.exp != nil {
			st.exp.seen(sl, r.eventTime)
		}
		r.markChanged(sl)
		err := fn(v, sl.value, emit)
		return r.userError(id, where, err)
	}
}

// windowRunner runs a window step: each value goes into its key's windows, and the windows
// that fire are Advance's (fireWindows).
func (r *Runtime) windowRunner(ws *windowStore) runner {
	id, st, w, emit, encodeIn := ws.id, ws.st, ws.w, ws.emit, ws.st.stage.encodeIn
	return func(v any) error {
		r.current = id
		if !r.keyed {
			// As for a state step: before any KeyBy, the windows of the empty key.
			r.out = append(r.out, Output{Kind: OutputRoute, Segment: id, Payload: r.encode(encodeIn, v), EventTime: r.eventTime})
			return nil
		}
		sl := st.slots[string(r.key)]
		if sl == nil {
			sl = st.add(id, string(r.key), st.stage.newState())
		}
		r.markChanged(sl)
		// Even if the aggregation panics: what it changed may have moved the next window.
		defer ws.timers.touch(w, sl.key, sl.value)
		out, has, late, err := w.apply(sl.value, v, r.eventTime, r.windowWatermark(), sl.key)
		if err != nil {
			return &stepFailed{id, errorText(err, "")}
		}
		if late {
			r.out = append(r.out, Output{Kind: OutputLate, Input: r.input, Step: id})
		}
		if has {
			emit(out)
		}
		return r.userError(id, "", nil)
	}
}

// windowWatermark is the watermark as window arithmetic takes it (see maxWatermark): the end
// of every stream stays past the end of every window.
func (r *Runtime) windowWatermark() int64 {
	return int64(min(r.watermark, maxWatermark))
}

// fireWindows outputs every window of ws due at the watermark, key by key in the order they
// are due. A window whose output fails (in the aggregation or downstream) is reported and
// dropped; the others fire.
func (r *Runtime) fireWindows(ws *windowStore) {
	wm := r.windowWatermark()
	state := func(key string) any {
		if sl := ws.st.slots[key]; sl != nil {
			return sl.value
		}
		return nil
	}
	for {
		key, value, ok := ws.timers.popDue(ws.w, wm, state)
		if !ok {
			return
		}
		r.markChanged(ws.st.slots[key])
		r.key = []byte(key)
		for {
			start, ok := ws.w.nextDue(value, wm)
			if !ok {
				break
			}
			mark := len(r.out)
			r.eventTime = uint64(ws.w.end(start) - 1)
			f := r.guard(func() error {
				r.current = ws.id
				if out, has := ws.w.output(value, start, key); has {
					ws.emit(out)
				}
				return r.downFail
			})
			if f != nil {
				clear(r.out[mark:])
				r.out = append(r.out[:mark], Output{Kind: OutputFailed, Input: NoInput, Step: f.step, Key: key, HasKey: true, Error: f.text})
			}
			ws.w.retire(value, start)
		}
		ws.timers.touch(ws.w, key, value)
	}
}

func (r *Runtime) markChanged(sl *slot) {
	if !sl.changed {
		sl.changed = true
		r.changed = append(r.changed, sl)
	}
}

// encode appends v's encoding to the batch's payload buffer and returns it as its own slice.
func (r *Runtime) encode(encodeIn func([]byte, any) []byte, v any) []byte {
	start := len(r.buf)
	r.buf = encodeIn(r.buf, v)
	end := len(r.buf)
	return r.buf[start:end:end]
}

func (r *Runtime) keyByRunner(id uint32, s *stepStage, successors []int) runner {
	key, encodeIn := s.key, s.encodeIn
	return func(v any) error {
		r.current = id
		k := key(v)
		payload := r.encode(encodeIn, v)
		for _, succ := range successors {
			r.out = append(r.out, Output{Kind: OutputRoute, Key: k, Segment: uint32(succ), Payload: payload, EventTime: r.eventTime})
		}
		return nil
	}
}

func (r *Runtime) encoderRunner(id uint32, e *encoderStage, sink uint32) runner {
	encode, where := e.encode, e.where
	return func(v any) error {
		r.current = id
		data, err := encode(v)
		if err != nil {
			return &stepFailed{id, errorText(err, where)}
		}
		r.out = append(r.out, Output{Kind: OutputEmit, Sink: sink, Payload: data})
		return nil
	}
}

func (r *Runtime) decoderEntry(id uint32, d *decoderStage, next func(any)) *entry {
	decode, where, eventTime, eventWhere := d.decode, d.where, d.eventTime, d.eventWhere
	return &entry{run: func(payload []byte) error {
		r.current = id
		v, err := decode(append([]byte(nil), payload...))
		if err != nil {
			return &stepFailed{id, errorText(err, where)}
		}
		if eventTime != nil {
			t, err := eventTime(v)
			if err != nil {
				return &stepFailed{id, "event time: " + errorText(err, eventWhere)}
			}
			r.eventTime = t
		}
		next(v)
		return r.downFail
	}}
}

func (r *Runtime) routedEntry(id uint32, input func([]byte) (any, error), run runner) *entry {
	return &entry{routed: true, run: func(payload []byte) error {
		r.current = id
		v, err := input(payload)
		if err != nil {
			return &stepFailed{id, "cannot decode the routed message: " + err.Error()}
		}
		return run(v)
	}}
}

// Process runs segment over batch and returns the outputs in input order. A message whose
// processing fails (an error returned or a panic in user code) yields one OutputFailed and
// nothing else; the other messages are unaffected. A route carries the event time of the
// message it came from (or the time its source's event-time function gave it).
func (r *Runtime) Process(segment uint32, batch []Message) ([]Output, error) {
	if r.entries == nil {
		return nil, errors.New("process called before describe")
	}
	if int(segment) >= len(r.entries) || r.entries[segment] == nil {
		return nil, fmt.Errorf("segment %d is not a step where a segment starts", segment)
	}
	e := r.entries[segment]
	r.out = make([]Output, 0, len(batch))
	r.buf = make([]byte, 0, 64*len(batch))
	r.keyed = e.routed
	for i, m := range batch {
		mark := len(r.out)
		r.key, r.eventTime, r.input = m.Key, m.EventTime, uint32(i)
		if f := r.guard(func() error { return e.run(m.Payload) }); f != nil {
			clear(r.out[mark:])
			r.out = r.out[:mark]
			failed := Output{Kind: OutputFailed, Input: uint32(i), Step: f.step, Error: f.text}
			if e.routed {
				failed.Key, failed.HasKey = string(m.Key), true
			}
			r.out = append(r.out, failed)
		}
	}
	out := r.out
	r.out, r.buf, r.key = nil, nil, nil
	return out, nil
}

// Advance moves the watermark to watermark (nanoseconds since the Unix epoch; it never goes
// back): no message with an event time before it is still to come. It fires every window it
// makes due and expires every key whose state it makes expire (see ExpireAfter), and returns
// their outputs as Process returns them: step by step in step order, within a step in the
// order the windows or keys are due. A window's outputs carry the event time of its last
// instant, an expiring key's the deadline it expired at; a window or key whose output fails
// gives one OutputFailed (Input NoInput, with its key) instead. Messages processed later are
// late if older than the watermark allows. The largest watermark (math.MaxUint64) ends every
// stream: every window fires and every expiring key expires.
func (r *Runtime) Advance(watermark uint64) ([]Output, error) {
	if r.entries == nil {
		return nil, errors.New("advance called before describe")
	}
	r.watermark = max(r.watermark, watermark)
	r.advanced = true
	r.out, r.buf = nil, nil
	r.keyed, r.input = true, NoInput
	for _, fire := range r.timed {
		fire()
	}
	out := r.out
	r.out, r.buf, r.key = nil, nil, nil
	return out, nil
}

// guard runs fn (user code and what it feeds), turning an error or a panic into the failure
// of the step that ran.
func (r *Runtime) guard(fn func() error) (failed *stepFailed) {
	r.downFail = nil
	defer func() {
		if p := recover(); p != nil {
			failed = &stepFailed{r.current, panicText(p)}
		}
	}()
	if err := fn(); err != nil {
		var f *stepFailed
		if errors.As(err, &f) {
			return f
		}
		return &stepFailed{r.current, errorText(err, "")}
	}
	return nil
}

// panicText is "panic: VALUE (file.go:LINE in function)", the place being the innermost frame
// outside the Go runtime where the panic started.
func panicText(p any) string {
	text := strings.ToValidUTF8(fmt.Sprint("panic: ", p), "\uFFFD")
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(1, pcs)])
	afterPanic := false
	for {
		frame, more := frames.Next()
		if frame.Function == "runtime.gopanic" {
			afterPanic = true
		} else if afterPanic && !strings.HasPrefix(frame.Function, "runtime.") {
			name := frame.Function
			if i := strings.LastIndex(name, "/"); i >= 0 {
				name = name[i+1:]
			}
			if i := strings.Index(name, "."); i >= 0 {
				name = name[i+1:]
			}
			return fmt.Sprintf("%s (%s:%d in %s)", text, filepath.Base(frame.File), frame.Line, name)
		}
		if !more {
			return text
		}
	}
}

// SnapshotChanged returns the state of at most max keys changed since their last snapshot, and
// forgets the change marks of those returned once every one of them is encoded. Fewer than max
// entries means no changed key is left.
//
// A key whose state expired since its last snapshot is a Removed entry (once), unless it has
// state again (then its entry is that state) or the host never had its state (then it has
// none).
func (r *Runtime) SnapshotChanged(max int) ([]StateEntry, error) {
	if r.stores == nil {
		return nil, errors.New("state requested before describe")
	}
	var entries []StateEntry
	n := 0
	for n < len(r.changed) && len(entries) < max {
		sl := r.changed[n]
		n++
		switch {
		case !sl.changed:
		case sl.live:
			value, err := r.encodeState(sl)
			if err != nil {
				return nil, err
			}
			entries = append(entries, StateEntry{Step: sl.step, Key: []byte(sl.key), Value: value})
		case sl.expired:
			entries = append(entries, StateEntry{Step: sl.step, Key: []byte(sl.key), Removed: true})
		}
	}
	for _, sl := range r.changed[:n] {
		switch {
		case !sl.changed:
		case sl.live:
			sl.stored = true
		case sl.expired:
			sl.expired = false
			delete(r.stores[sl.step].gone, sl.key)
		}
		sl.changed = false
	}
	if n == len(r.changed) {
		r.changed = nil
	} else {
		r.changed = r.changed[n:]
	}
	return entries, nil
}

func (r *Runtime) encodeState(sl *slot) (value []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("cannot encode the state of step %d for key %q: %v", sl.step, sl.key, p)
		}
	}()
	st := r.stores[sl.step]
	buf := make([]byte, 0, 32)
	if st.exp != nil && sl.stamped {
		buf = appendLastSeen(buf, sl.lastSeen)
	}
	return st.stage.encState(buf, sl.value), nil
}

// decodeState decodes a state the host restores into stage, with its last-seen time if it has
// one (see lastSeenMark), whether or not the step has ExpireAfter.
func decodeState(stage *stepStage, data []byte) (state any, lastSeen uint64, timed, converted bool, err error) {
	t, body, ok := cutLastSeen(data)
	if !ok {
		state, converted, err = stage.decState(data)
		return state, 0, false, converted, err
	}
	if state, converted, err = stage.decState(body); err == nil {
		return state, t, true, converted, nil
	}
	// Perhaps a state written without a header (by an SDK from before headers) that starts
	// like a time.
	if state, converted, err2 := stage.decState(data); err2 == nil {
		return state, 0, false, converted, nil
	}
	return nil, 0, false, false, err
}

// Restore replaces or creates the given states. Applies nothing if any entry is unusable.
//
// The host keeps the bytes it restores, so a restored state is not marked changed (a start
// would otherwise encode every key again for its first checkpoint); one converted from an
// earlier version's state is, so the host's copy becomes this version's.
//
// In a step with ExpireAfter, a state keeps the last-seen time it was written with. One
// written without (by a step without ExpireAfter) is converted: it gets the watermark as its
// last-seen time, or, before the instance's first Advance, that Advance's watermark.
func (r *Runtime) Restore(entries []StateEntry) error {
	if r.stores == nil {
		return errors.New("state requested before describe")
	}
	values := make([]any, len(entries))
	converted := make([]bool, len(entries))
	lastSeen := make([]uint64, len(entries))
	timed := make([]bool, len(entries))
	for i, e := range entries {
		st := r.stores[e.Step]
		if st == nil {
			return fmt.Errorf("cannot restore state into step %d: it keeps none", e.Step)
		}
		if e.Removed {
			return fmt.Errorf("cannot restore the state of step %d for key %q: the entry says it was removed, "+
				"which only snapshot-changed may say", e.Step, e.Key)
		}
		v, seen, hasTime, conv, err := decodeState(st.stage, e.Value)
		if err != nil {
			return fmt.Errorf("cannot restore the state of step %d for key %q: %v", e.Step, e.Key, err)
		}
		values[i], converted[i], lastSeen[i], timed[i] = v, conv, seen, hasTime
	}
	for i, e := range entries {
		st := r.stores[e.Step]
		sl := st.slots[string(e.Key)]
		if sl == nil {
			sl = st.add(e.Step, string(e.Key), nil)
		}
		sl.value, sl.stored = values[i], true
		if es := st.exp; es != nil {
			switch {
			case timed[i]:
				sl.lastSeen, sl.stamped = lastSeen[i], true
				es.queue(sl)
			case r.advanced:
				sl.lastSeen, sl.stamped = r.watermark, true
				es.queue(sl)
				converted[i] = true
			default:
				sl.stamped = false
				es.unstamped = append(es.unstamped, sl)
			}
		}
		if converted[i] {
			r.markChanged(sl)
		}
	}
	// The restored keys' windows fire on the watermarks to come, as if they had been here.
	for _, ws := range r.windows {
		for _, e := range entries {
			if e.Step == ws.id {
				ws.timers.touch(ws.w, string(e.Key), ws.st.slots[string(e.Key)].value)
			}
		}
	}
	return nil
}

// Take removes the states of the given keys that exist and returns them (an expired key's
// state exists no more).
func (r *Runtime) Take(keys []StateKey) ([]StateEntry, error) {
	if r.stores == nil {
		return nil, errors.New("state requested before describe")
	}
	var taken []StateEntry
	for _, k := range keys {
		st := r.stores[k.Step]
		if st == nil {
			continue
		}
		sl := st.slots[string(k.Key)]
		if sl == nil {
			continue
		}
		value, err := r.encodeState(sl)
		if err != nil {
			return nil, err
		}
		taken = append(taken, StateEntry{Step: k.Step, Key: []byte(sl.key), Value: value})
		delete(st.slots, sl.key)
		sl.live, sl.value = false, nil
	}
	return taken, nil
}
