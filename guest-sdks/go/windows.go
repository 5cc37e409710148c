package wallaroo

// Windows over an aggregation (Wallaroo 0.6's range_windows and count_windows), with the
// semantics of the Python SDK's wallaroo/_windows.py: the window state of one key and the rules
// that fill and fire it.
//
// A window step keeps one state value per key, like a state step: it is encoded into
// checkpoints, restored, moved with its key group and carried across a swap, so open windows
// and their accumulators survive everything keyed state survives. What is due to fire follows
// from that state and the instance's watermark alone, so nothing else needs saving.
//
// Times are nanoseconds since the Unix epoch. A watermark w says that no message with an event
// time before w is still to come; a range window [start, start+range) fires once the watermark
// reaches start + range + delay.

import (
	"container/heap"
	"fmt"
	"math"
	"slices"
	"time"
)

// Aggregation is what a window computes from the values of type In that fall into it.
//
// InitialAccumulator makes an empty accumulator. Update adds a value to an accumulator and
// returns the result: it may change acc in place and return it (acc being a pointer, say) or
// return a new value. Combine returns an accumulator holding both a and b, without changing
// either: sliding windows share slices of time, and a window is the combination of its slices.
// Output is the window's result for key, or false for no output.
//
// Accumulators are part of the step's state: Acc must be encodable by the SDK's codec (see
// KeyBy). A panic in Update costs the message being added (the host dead-letters it); a panic
// in Combine or Output costs the window, which is reported as a failure and dropped.
type Aggregation[In, Acc, Out any] interface {
	InitialAccumulator() Acc
	Update(in In, acc Acc) Acc
	Combine(a, b Acc) Acc
	Output(key string, acc Acc) (Out, bool)
}

// LateDataPolicy is what a range window step does with a message that arrives after every
// window it belongs to has fired (or is due to).
type LateDataPolicy uint8

const (
	// Drop discards the message; the default.
	Drop LateDataPolicy = iota
	// FirePerMessage gives the message a window of its own, output at once.
	FirePerMessage
	// PlaceInOldestWindow adds the message to the oldest window still open.
	PlaceInOldestWindow
)

func (p LateDataPolicy) String() string {
	switch p {
	case Drop:
		return "drop"
	case FirePerMessage:
		return "fire-per-message"
	case PlaceInOldestWindow:
		return "place-in-oldest-window"
	}
	return fmt.Sprintf("LateDataPolicy(%d)", uint8(p))
}

// Windows is a window specification, RangeWindows or CountWindows, for ToWindows.
type Windows interface {
	spec() windowSpec
}

type windowSpec struct {
	count             int // count windows when more than 0
	rng, slide, delay int64
	policy            LateDataPolicy
	err               error
}

// The limits that keep window arithmetic within int64: event times at window steps up to
// maxEventTime (the year 2116), ranges plus delays up to maxSpan (36 years), and watermarks cut
// down to maxWatermark, which is past the end of every window of such events and such spans.
const (
	maxEventTime = math.MaxInt64 / 2
	maxSpan      = math.MaxInt64 / 8
	maxWatermark = math.MaxInt64 / 4 * 3
)

// RangeWindowSpec is windows of a range of event time; see RangeWindows.
type RangeWindowSpec struct {
	s windowSpec
}

// RangeWindows is windows of rng of event time, starting at multiples of rng since the Unix
// epoch: tumbling unless WithSlide makes them slide. Each window outputs once the watermark
// passes its end (plus its delay), with the event time of its last instant.
func RangeWindows(rng time.Duration) RangeWindowSpec {
	s := windowSpec{rng: int64(rng), slide: int64(rng)}
	if rng <= 0 {
		s.err = fmt.Errorf("RangeWindows(%v): the range must be more than 0", rng)
	}
	return RangeWindowSpec{s}.checkSpan()
}

// WithSlide returns the windows starting every slide (at most the range); they overlap when the
// slide is shorter than the range.
func (w RangeWindowSpec) WithSlide(slide time.Duration) RangeWindowSpec {
	switch {
	case w.s.err != nil:
	case slide <= 0:
		w.s.err = fmt.Errorf("WithSlide(%v): the slide must be more than 0", slide)
	case int64(slide) > w.s.rng:
		w.s.err = fmt.Errorf("WithSlide(%v): the slide cannot be longer than the range (%v); events "+
			"between windows would belong to none", slide, time.Duration(w.s.rng))
	default:
		w.s.slide = int64(slide)
	}
	return w
}

// WithDelay returns the windows each firing delay of event time after its end, which gives late
// messages that long to arrive.
func (w RangeWindowSpec) WithDelay(delay time.Duration) RangeWindowSpec {
	if w.s.err == nil && delay < 0 {
		w.s.err = fmt.Errorf("WithDelay(%v): the delay must be 0 or more", delay)
	}
	w.s.delay = int64(delay)
	return w.checkSpan()
}

// WithLateDataPolicy returns the windows with another policy for late messages (Drop by
// default).
func (w RangeWindowSpec) WithLateDataPolicy(policy LateDataPolicy) RangeWindowSpec {
	if w.s.err == nil && policy > PlaceInOldestWindow {
		w.s.err = fmt.Errorf("WithLateDataPolicy: unknown late data policy %v: use wallaroo.Drop, "+
			"wallaroo.FirePerMessage or wallaroo.PlaceInOldestWindow", policy)
	}
	w.s.policy = policy
	return w
}

func (w RangeWindowSpec) checkSpan() RangeWindowSpec {
	if w.s.err == nil && (w.s.rng > maxSpan || w.s.delay > maxSpan-w.s.rng) {
		w.s.err = fmt.Errorf("RangeWindows: a range of %v with a delay of %v is longer than windows can be (%v)",
			time.Duration(w.s.rng), time.Duration(w.s.delay), time.Duration(maxSpan))
	}
	return w
}

func (w RangeWindowSpec) spec() windowSpec { return w.s }

// CountWindowSpec is windows of a number of messages; see CountWindows.
type CountWindowSpec struct {
	s windowSpec
}

// CountWindows is, for each key, a window of every n messages, output when its n-th message
// arrives (a window that is not full never outputs).
func CountWindows(n int) CountWindowSpec {
	s := windowSpec{count: n}
	if n < 1 {
		s.err = fmt.Errorf("CountWindows(%d): the count must be 1 or more", n)
	}
	return CountWindowSpec{s}
}

func (w CountWindowSpec) spec() windowSpec { return w.s }

// ToWindows computes aggregation over the windows of each key and passes on their outputs.
// Values that reach a window step before any KeyBy all share the windows of the empty key.
//
// Range windows are over event time: a message belongs to the windows its event time falls
// into, and a window fires when Advance's watermark reaches its end plus its delay. A message
// too late for its windows goes as the late data policy says, and is reported to the host as
// late. Range windows cannot take the output of another window step: those outputs carry their
// window's end, which the watermark has passed by then, so all of them would be late.
func ToWindows[In, Acc, Out any](p Pipeline[In], name string, windows Windows, aggregation Aggregation[In, Acc, Out]) Pipeline[Out] {
	var spec windowSpec
	if windows != nil {
		spec = windows.spec()
	}
	var n *node
	var w windowing
	if spec.count > 0 || spec.rng == 0 {
		c := &countWindows[In, Acc, Out]{agg: aggregation, n: spec.count}
		n = stateStep(p, name, func() *countState[Acc] { return &countState[Acc]{} }, "", nil)
		w = c
	} else {
		rw := &rangeWindows[In, Acc, Out]{
			agg: aggregation, rng: spec.rng, slide: spec.slide, delay: spec.delay,
			pane: gcd(spec.rng, spec.slide), policy: spec.policy,
		}
		n = stateStep(p, name, func() *rangeState[Acc] { return &rangeState[Acc]{} }, "", nil)
		w = rw
	}
	n.stage.(*stepStage).window = w
	switch {
	case n.err != nil:
	case windows == nil:
		n.err = fmt.Errorf("windows %q: no window specification: use wallaroo.RangeWindows or wallaroo.CountWindows", name)
	case aggregation == nil:
		n.err = fmt.Errorf("windows %q: no aggregation", name)
	case spec.err != nil:
		n.err = fmt.Errorf("windows %q: %w", name, spec.err)
	}
	return Pipeline[Out]{n}
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// floorDiv is a/b rounded down (b > 0): window starts before the epoch are negative.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// windowing is a window step's rules over its states, whatever their types; the runtime runs
// it (runtime.go: windowRunner, fireWindows). States are the step's own pointers.
type windowing interface {
	// apply adds v, of event time t, to state at watermark w; it returns what to output at once
	// and whether v was late.
	apply(state, v any, t uint64, w int64, key string) (out any, has, late bool, err error)
	// due is the watermark state's next window waits for, if it has one.
	due(state any) (int64, bool)
	// nextDue is the start of state's next window if it is due at watermark w.
	nextDue(state any, w int64) (int64, bool)
	// output computes the window starting at start.
	output(state any, start int64, key string) (any, bool)
	// retire forgets the window starting at start, once it has fired (or failed).
	retire(state any, start int64)
	// end is the end of the window starting at start: its output's event time is end - 1.
	end(start int64) int64
	ranged() bool
}

// windowPane is the accumulator of the slice of event time from Start: a slice is
// gcd(range, slide) long, so each window is a whole number of slices and each message updates
// one.
type windowPane[Acc any] struct {
	Start int64
	Acc   Acc
}

// rangeState is one key's open range windows: its slices that hold data, by start, and the
// start of its first window that has not fired (if one has). The frontier outlives the slices:
// it keeps a window from firing twice when late data comes for it, even after a restore.
type rangeState[Acc any] struct {
	Panes    []windowPane[Acc]
	Fired    int64
	HasFired bool
}

type rangeWindows[In, Acc, Out any] struct {
	agg                     Aggregation[In, Acc, Out]
	rng, slide, delay, pane int64
	policy                  LateDataPolicy
}

// firstWindow is the start of the first window holding t.
func (w *rangeWindows[In, Acc, Out]) firstWindow(t int64) int64 {
	return (floorDiv(t-w.rng, w.slide) + 1) * w.slide
}

func (w *rangeWindows[In, Acc, Out]) fresh(v In) Acc {
	return w.agg.Update(v, w.agg.InitialAccumulator())
}

func (w *rangeWindows[In, Acc, Out]) apply(state, v any, t uint64, wm int64, key string) (any, bool, bool, error) {
	s := state.(*rangeState[Acc])
	if t > maxEventTime {
		return nil, false, false, fmt.Errorf("event time %d is too far ahead for windows (after %v)", t,
			time.Unix(0, maxEventTime).UTC().Format(time.RFC3339))
	}
	et := int64(t)
	first := w.firstWindow(et)
	var pane int64
	late := false
	switch {
	case first+w.rng+w.delay > wm && (!s.HasFired || first >= s.Fired):
		pane = et / w.pane * w.pane
	case w.policy == PlaceInOldestWindow:
		pane = w.firstWindow(wm - w.delay)
		if s.HasFired && pane < s.Fired {
			pane = s.Fired
		}
		late = true
	case w.policy == FirePerMessage:
		out, ok := w.agg.Output(key, w.fresh(v.(In)))
		return out, ok, true, nil
	default:
		return nil, false, true, nil
	}
	i, found := slices.BinarySearchFunc(s.Panes, pane, func(p windowPane[Acc], start int64) int {
		return cmpInt64(p.Start, start)
	})
	if found {
		s.Panes[i].Acc = w.agg.Update(v.(In), s.Panes[i].Acc)
	} else {
		s.Panes = slices.Insert(s.Panes, i, windowPane[Acc]{pane, w.fresh(v.(In))})
	}
	return nil, false, late, nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// next is the start of state's next window to fire: the first holding its oldest slice,
// unless that one fired already.
func (w *rangeWindows[In, Acc, Out]) next(s *rangeState[Acc]) (int64, bool) {
	if len(s.Panes) == 0 {
		return 0, false
	}
	start := w.firstWindow(s.Panes[0].Start)
	if s.HasFired && start <= s.Fired {
		start = s.Fired
	}
	return start, true
}

func (w *rangeWindows[In, Acc, Out]) due(state any) (int64, bool) {
	start, ok := w.next(state.(*rangeState[Acc]))
	return start + w.rng + w.delay, ok
}

func (w *rangeWindows[In, Acc, Out]) nextDue(state any, wm int64) (int64, bool) {
	start, ok := w.next(state.(*rangeState[Acc]))
	if !ok || start > wm-w.delay-w.rng {
		return 0, false
	}
	return start, true
}

func (w *rangeWindows[In, Acc, Out]) output(state any, start int64, key string) (any, bool) {
	s := state.(*rangeState[Acc])
	end := start + w.rng
	acc := w.agg.InitialAccumulator()
	for _, p := range s.Panes {
		if p.Start >= end {
			break
		}
		acc = w.agg.Combine(acc, p.Acc)
	}
	return w.agg.Output(key, acc)
}

func (w *rangeWindows[In, Acc, Out]) retire(state any, start int64) {
	s := state.(*rangeState[Acc])
	// Slices before the next window's start belong to no window left.
	s.Fired, s.HasFired = start+w.slide, true
	i := 0
	for i < len(s.Panes) && s.Panes[i].Start < s.Fired {
		i++
	}
	clear(s.Panes[:i])
	s.Panes = s.Panes[i:]
}

func (w *rangeWindows[In, Acc, Out]) end(start int64) int64 { return start + w.rng }

func (w *rangeWindows[In, Acc, Out]) ranged() bool { return true }

// countState is one key's open count window: how many messages it holds and their
// accumulator.
type countState[Acc any] struct {
	Count int
	Acc   Acc
}

type countWindows[In, Acc, Out any] struct {
	agg Aggregation[In, Acc, Out]
	n   int
}

func (w *countWindows[In, Acc, Out]) apply(state, v any, t uint64, wm int64, key string) (any, bool, bool, error) {
	s := state.(*countState[Acc])
	if s.Count == 0 {
		s.Acc = w.agg.InitialAccumulator()
	}
	s.Acc = w.agg.Update(v.(In), s.Acc)
	s.Count++
	if s.Count < w.n {
		return nil, false, false, nil
	}
	acc := s.Acc
	var empty Acc
	s.Count, s.Acc = 0, empty
	out, ok := w.agg.Output(key, acc)
	return out, ok, false, nil
}

func (w *countWindows[In, Acc, Out]) due(any) (int64, bool)                 { return 0, false }
func (w *countWindows[In, Acc, Out]) nextDue(any, int64) (int64, bool)      { return 0, false }
func (w *countWindows[In, Acc, Out]) output(any, int64, string) (any, bool) { return nil, false }
func (w *countWindows[In, Acc, Out]) retire(any, int64)                     {}
func (w *countWindows[In, Acc, Out]) end(start int64) int64                 { return start }
func (w *countWindows[In, Acc, Out]) ranged() bool                          { return false }

// timers is the keys of one window step in the order their next windows fire: a heap of
// (due, key). Entries go stale when a key's windows change; popping checks each against the
// key's state, so nothing needs removing.
type timers struct {
	heap   timerHeap
	queued map[string]int64 // key -> the due time it is queued for
}

type timer struct {
	due int64
	key string
}

type timerHeap []timer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	return h[i].due < h[j].due || h[i].due == h[j].due && h[i].key < h[j].key
}
func (h timerHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)   { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}

// touch queues key for its state's next window, unless it is queued for that time.
func (t *timers) touch(w windowing, key string, state any) {
	due, ok := w.due(state)
	if !ok {
		return
	}
	if queued, ok := t.queued[key]; ok && queued == due {
		return
	}
	t.queued[key] = due
	heap.Push(&t.heap, timer{due, key})
}

// popDue returns the next key with a window due at watermark wm, in firing order, each once,
// or false when none is left; state returns a key's state (nil if it has none).
func (t *timers) popDue(w windowing, wm int64, state func(key string) any) (string, any, bool) {
	for len(t.heap) > 0 && t.heap[0].due <= wm {
		next := heap.Pop(&t.heap).(timer)
		if queued, ok := t.queued[next.key]; !ok || queued != next.due {
			continue // stale: the key was queued again for another time
		}
		delete(t.queued, next.key)
		s := state(next.key)
		if s == nil {
			continue
		}
		if due, ok := w.due(s); ok && due == next.due {
			return next.key, s, true
		}
	}
	return "", nil, false
}

// checkWindows refuses range windows fed by another window step's output (see ToWindows).
func checkWindows(steps []*compiledStep) error {
	for _, s := range steps {
		if s.step == nil || s.step.window == nil {
			continue
		}
		seen := map[int]bool{}
		todo := slices.Clone(s.successors)
		for len(todo) > 0 {
			later := todo[len(todo)-1]
			todo = todo[:len(todo)-1]
			if seen[later] {
				continue
			}
			seen[later] = true
			if l := steps[later].step; l != nil && l.window != nil && l.window.ranged() {
				return fmt.Errorf("range windows %q take the output of windows %q: range windows after windows are not supported yet",
					steps[later].name, s.name)
			}
			todo = append(todo, steps[later].successors...)
		}
	}
	return nil
}

// eventTimeNanos is an event-time function's result as nanoseconds since the Unix epoch.
func eventTimeNanos(t time.Time) (uint64, error) {
	if t.Before(time.Unix(0, 0)) {
		return 0, fmt.Errorf("%v is before 1970", t)
	}
	if t.After(time.Unix(0, math.MaxInt64)) {
		return 0, fmt.Errorf("%v is too far ahead", t)
	}
	return uint64(t.UnixNano()), nil
}
