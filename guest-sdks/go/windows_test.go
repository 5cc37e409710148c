package wallaroo_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"wallaroo.dev/wallaroo"
	"wallaroo.dev/wallaroo/wallarootest"
)

// Windows on plain Go, after the Python SDK's tests/test_windows.py: what each window holds,
// when it fires, late data, and windows as checkpointed key state.

const sec = uint64(time.Second)

type txn struct {
	User   string
	Amount int
}

func decodeTxn(data []byte) (txn, error) {
	user, amount, ok := strings.Cut(string(data), ",")
	if !ok {
		return txn{}, errors.New("not user,amount")
	}
	n, err := strconv.Atoi(amount)
	return txn{user, n}, err
}

// total keeps what it summed, so that a test sees which messages a window held.
type total struct {
	Total  int
	Values []int
}

// sumAggregation counts its Combine calls, to show that sliding windows use it; failOn makes
// Output panic for that total.
type sumAggregation struct {
	combined *int
	failOn   int
}

func (sumAggregation) InitialAccumulator() *total { return &total{} }

func (sumAggregation) Update(t txn, acc *total) *total {
	acc.Total += t.Amount
	acc.Values = append(acc.Values, t.Amount)
	return acc
}

func (a sumAggregation) Combine(x, y *total) *total {
	if a.combined != nil {
		*a.combined++
	}
	return &total{x.Total + y.Total, append(slices.Clone(x.Values), y.Values...)}
}

func (a sumAggregation) Output(key string, acc *total) (string, bool) {
	if a.failOn != 0 && acc.Total == a.failOn {
		panic("unlucky")
	}
	values := slices.Clone(acc.Values)
	slices.Sort(values)
	return fmt.Sprintf("%s:%d:%v", key, acc.Total, values), true
}

// countAggregation has an immutable accumulator: Update returns the new one.
type countAggregation struct{}

func (countAggregation) InitialAccumulator() int { return 0 }
func (countAggregation) Update(_ txn, n int) int { return n + 1 }
func (countAggregation) Combine(a, b int) int    { return a + b }
func (countAggregation) Output(key string, n int) (string, bool) {
	return key + "=" + strconv.Itoa(n), true
}

func encodeLine(s string) ([]byte, error) { return []byte(s + "\n"), nil }

// windowsApp: decode(0) -> key by user(1) (unless not keyed) -> windows -> encode.
func windowsApp[Acc any](windows wallaroo.Windows, agg wallaroo.Aggregation[txn, Acc, string], keyed bool) wallaroo.SetupFunc {
	return func([]string) (*wallaroo.Application, error) {
		p := wallaroo.Source("in", wallaroo.TCPSource("h", "1", decodeTxn))
		if keyed {
			p = wallaroo.KeyByNamed(p, "user", func(t txn) string { return t.User })
		}
		out := wallaroo.ToWindows(p, "sum", windows, agg)
		return wallaroo.BuildApplication("windows", wallaroo.ToSink(out, wallaroo.TCPSink("h", "2", encodeLine)))
	}
}

func sumApp(windows wallaroo.Windows) wallaroo.SetupFunc {
	return windowsApp[*total](windows, sumAggregation{}, true)
}

// host delivers routed messages at once, keeping each message's event time, and collects what
// the sink receives, what fails and what is late. Every batch goes through the buffers the
// component exchanges with the host.
type host struct {
	t        *testing.T
	rt       *wallaroo.Runtime
	spec     wallaroo.AppSpec
	out      []string
	failures []wallaroo.Output
	late     []wallaroo.Output
}

func newHost(t *testing.T, setup wallaroo.SetupFunc) *host {
	t.Helper()
	h := &host{t: t, rt: wallaroo.NewRuntime(setup)}
	spec, err := h.rt.Describe(nil)
	if err != nil {
		t.Fatal(err)
	}
	h.spec = spec
	return h
}

func (h *host) windowStep() uint32 {
	for i, s := range h.spec.Steps {
		if s.Kind == wallaroo.KindStateful {
			return uint32(i)
		}
	}
	h.t.Fatal("no window step")
	return 0
}

func (h *host) send(user string, amount int, eventTime uint64) {
	h.t.Helper()
	h.process(0, wallaroo.Message{Payload: []byte(user + "," + strconv.Itoa(amount)), EventTime: eventTime})
}

func (h *host) process(segment uint32, m wallaroo.Message) {
	h.t.Helper()
	out, err := h.rt.Process(segment, wallaroo.WireBatch(h.t, []wallaroo.Message{m}))
	if err != nil {
		h.t.Fatal(err)
	}
	h.take(wallaroo.WireOutputs(h.t, out))
}

func (h *host) advance(watermark uint64) []string {
	h.t.Helper()
	out, err := h.rt.Advance(watermark)
	if err != nil {
		h.t.Fatal(err)
	}
	h.take(wallaroo.WireOutputs(h.t, out))
	return h.drain()
}

func (h *host) drain() []string {
	out := h.out
	h.out = nil
	return out
}

func (h *host) take(outs []wallaroo.Output) {
	h.t.Helper()
	for _, o := range outs {
		switch o.Kind {
		case wallaroo.OutputRoute:
			h.process(o.Segment, wallaroo.Message{Key: []byte(o.Key), Payload: o.Payload, EventTime: o.EventTime})
		case wallaroo.OutputEmit:
			h.out = append(h.out, strings.TrimSuffix(string(o.Payload), "\n"))
		case wallaroo.OutputFailed:
			h.failures = append(h.failures, o)
		case wallaroo.OutputLate:
			h.late = append(h.late, o)
		}
	}
}

func rangeWindows(rng, slide, delay time.Duration, policy wallaroo.LateDataPolicy) wallaroo.RangeWindowSpec {
	w := wallaroo.RangeWindows(rng)
	if slide != 0 {
		w = w.WithSlide(slide)
	}
	return w.WithDelay(delay).WithLateDataPolicy(policy)
}

func equal(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) && (len(got) != 0 || len(want) != 0) {
		t.Fatalf("%s: got %q, want %q", what, got, want)
	}
}

// Tumbling and sliding windows

func TestTumblingWindowsHoldTheMessagesOfTheirRangeAndFireAtTheirEnd(t *testing.T) {
	h := newHost(t, sumApp(wallaroo.RangeWindows(3*time.Second)))
	for _, m := range []struct {
		amount int
		ms     uint64
	}{{1, 4043}, {2, 1022}, {3, 6000}, {4, 5655}} {
		h.send("fido", m.amount, m.ms*uint64(time.Millisecond))
	}
	equal(t, "before the first end", h.advance(3*sec-1), nil)
	equal(t, "at the first end", h.advance(3*sec), []string{"fido:2:[2]"})
	equal(t, "later", h.advance(9*sec), []string{"fido:5:[1 4]", "fido:3:[3]"})
	equal(t, "each window fires once", h.advance(100*sec), nil)
}

func TestSlidingWindowsHoldEveryMessageOfTheirRangeCombiningTheirSlices(t *testing.T) {
	// Wallaroo's documented example: range 6 s, slide 3 s.
	combined := 0
	h := newHost(t, windowsApp[*total](wallaroo.RangeWindows(6*time.Second).WithSlide(3*time.Second),
		sumAggregation{combined: &combined}, true))
	for _, m := range []struct {
		amount int
		ms     uint64
	}{{1, 4043}, {2, 1022}, {3, 6000}, {4, 5655}} {
		h.send("rex", m.amount, m.ms*uint64(time.Millisecond))
	}
	// [-3, 3) [0, 6) [3, 9) [6, 12)
	equal(t, "windows", h.advance(12*sec), []string{"rex:2:[2]", "rex:7:[1 2 4]", "rex:8:[1 3 4]", "rex:3:[3]"})
	if combined < 6 {
		t.Fatalf("combined %d times: windows are joined from their slices", combined)
	}
}

func TestAWindowWaitsForItsDelayAfterItsEnd(t *testing.T) {
	h := newHost(t, sumApp(wallaroo.RangeWindows(3*time.Second).WithDelay(2*time.Second)))
	h.send("a", 5, 1*sec)
	equal(t, "at its end", h.advance(4*sec), nil)
	equal(t, "just before its delay", h.advance(5*sec-1), nil)
	equal(t, "after its delay", h.advance(5*sec), []string{"a:5:[5]"})
}

func TestWindowsFireForIdleKeysInTheOrderTheyEnd(t *testing.T) {
	h := newHost(t, sumApp(wallaroo.RangeWindows(2*time.Second)))
	h.send("b", 1, 3*sec)
	h.send("a", 1, 1*sec)
	h.send("c", 1, 5*sec)
	// Each key got one message; a watermark alone fires them all, earliest window first.
	equal(t, "windows", h.advance(10*sec), []string{"a:1:[1]", "b:1:[1]", "c:1:[1]"})
}

func TestAWindowsOutputCarriesTheEventTimeOfItsLastInstant(t *testing.T) {
	setup := func([]string) (*wallaroo.Application, error) {
		p := wallaroo.KeyByNamed(wallaroo.Source("in", wallaroo.TCPSource("h", "1", decodeTxn)), "user",
			func(t txn) string { return t.User })
		sums := wallaroo.ToWindows(p, "sum", wallaroo.RangeWindows(2*time.Second), sumAggregation{})
		again := wallaroo.KeyByNamed(sums, "again", func(string) string { return "k" })
		return wallaroo.BuildApplication("x", wallaroo.ToSink(again, wallaroo.TCPSink("h", "2", encodeLine)))
	}
	rt := described(t, setup)
	out, _ := rt.Process(0, []wallaroo.Message{{Payload: []byte("a,1"), EventTime: 3 * sec}})
	if _, err := rt.Process(2, []wallaroo.Message{{Key: []byte("a"), Payload: out[0].Payload, EventTime: 3 * sec}}); err != nil {
		t.Fatal(err)
	}
	fired, err := rt.Advance(10 * sec)
	if err != nil || len(fired) != 1 || fired[0].Kind != wallaroo.OutputRoute || fired[0].Key != "k" || fired[0].EventTime != 4*sec-1 {
		t.Fatalf("%v %+v", err, fired)
	}
}

func TestAnImmutableAccumulatorIsTheValueUpdateReturns(t *testing.T) {
	h := newHost(t, windowsApp[int](wallaroo.RangeWindows(10*time.Second).WithSlide(5*time.Second), countAggregation{}, true))
	for _, s := range []uint64{1, 2, 7} {
		h.send("k", 0, s*sec)
	}
	equal(t, "windows", h.advance(20*sec), []string{"k=2", "k=3", "k=1"})
}

func TestUnkeyedWindowsSeeTheWholeFlow(t *testing.T) {
	h := newHost(t, windowsApp[*total](wallaroo.RangeWindows(5*time.Second), sumAggregation{}, false))
	h.send("a", 1, 1*sec)
	h.send("b", 2, 2*sec)
	equal(t, "windows", h.advance(5*sec), []string{":3:[1 2]"})
	out, _ := h.rt.Process(0, []wallaroo.Message{{Payload: []byte("a,1"), EventTime: 9}})
	if len(out) != 1 || out[0].Kind != wallaroo.OutputRoute || out[0].Key != "" || out[0].Segment != 1 || out[0].EventTime != 9 {
		t.Fatalf("before any KeyBy: %+v", out)
	}
}

type event struct {
	time   int64 // seconds
	amount int
}

// expectedWindows is every non-empty window's output, computed directly from the events.
func expectedWindows(user string, events []event, window, slide int64) []string {
	if len(events) == 0 {
		return nil
	}
	first, last := events[0].time, events[0].time
	for _, e := range events {
		first, last = min(first, e.time), max(last, e.time)
	}
	var want []string
	for start := (first - window) / slide * slide; start <= last; start += slide {
		var inside []int
		sum := 0
		for _, e := range events {
			if start <= e.time && e.time < start+window {
				inside = append(inside, e.amount)
				sum += e.amount
			}
		}
		if len(inside) > 0 {
			slices.Sort(inside)
			want = append(want, fmt.Sprintf("%s:%d:%v", user, sum, inside))
		}
	}
	return want
}

// testSeed is WALLAROO_TEST_SEED if set, else a new seed, printed so that a failure can be
// replayed.
func testSeed(t *testing.T) uint64 {
	seed := rand.Uint64()
	if s := os.Getenv("WALLAROO_TEST_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("WALLAROO_TEST_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (WALLAROO_TEST_SEED=%d replays it)", seed, seed)
	return seed
}

func TestSlidingWindowsMatchSumsComputedDirectlyOverRandomInput(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	users := []string{"u1", "u2", "u3"}
	for round := 0; round < 20; round++ {
		ws := [][2]int64{{9, 3}, {10, 4}, {6, 6}, {5, 1}, {7, 2}}[rng.IntN(5)]
		window, slide := ws[0], ws[1]
		h := newHost(t, sumApp(wallaroo.RangeWindows(time.Duration(window)*time.Second).WithSlide(time.Duration(slide)*time.Second)))
		events := map[string][]event{}
		outputs := map[string][]string{}
		collect := func(lines []string) {
			for _, line := range lines {
				user, _, _ := strings.Cut(line, ":")
				outputs[user] = append(outputs[user], line)
			}
		}
		watermark := uint64(0)
		for range 1 + rng.IntN(59) {
			user := users[rng.IntN(len(users))]
			// Never late: event times at or after what the watermark lets through.
			at := int64(watermark/sec) + rng.Int64N(30)
			amount := rng.IntN(100) - 50
			h.send(user, amount, uint64(at)*sec)
			events[user] = append(events[user], event{at, amount})
			if rng.Float64() < 0.3 {
				watermark = (watermark/sec + rng.Uint64N(10)) * sec
				collect(h.advance(watermark))
			}
		}
		collect(h.advance(math.MaxUint64))
		for _, user := range users {
			if want := expectedWindows(user, events[user], window, slide); !reflect.DeepEqual(outputs[user], want) {
				t.Fatalf("seed %d round %d, windows %d/%d, %s: got %q, want %q", seed, round, window, slide, user, outputs[user], want)
			}
		}
	}
}

// Late data

func TestLateDataIsDroppedByDefaultAndReportedLate(t *testing.T) {
	h := newHost(t, sumApp(wallaroo.RangeWindows(3*time.Second)))
	h.send("a", 1, 1*sec)
	equal(t, "first window", h.advance(4*sec), []string{"a:1:[1]"})
	h.send("a", 2, 2*sec) // its window [0, 3) fired
	h.send("a", 3, 4*sec) // on time
	equal(t, "second window", h.advance(6*sec), []string{"a:3:[3]"})
	step := h.windowStep()
	if want := []wallaroo.Output{{Kind: wallaroo.OutputLate, Input: 0, Step: step}}; !reflect.DeepEqual(h.late, want) {
		t.Fatalf("late %+v, want %+v", h.late, want)
	}
}

func TestTheLateRecordNamesTheMessageOfItsBatch(t *testing.T) {
	rt := described(t, sumApp(wallaroo.RangeWindows(3*time.Second)))
	route := func(user string, amount int, at uint64) wallaroo.Message {
		out, _ := rt.Process(0, []wallaroo.Message{{Payload: []byte(user + "," + strconv.Itoa(amount)), EventTime: at}})
		return wallaroo.Message{Key: []byte(out[0].Key), Payload: out[0].Payload, EventTime: at}
	}
	if _, err := rt.Advance(4 * sec); err != nil {
		t.Fatal(err)
	}
	out, err := rt.Process(2, []wallaroo.Message{route("a", 1, 5*sec), route("b", 1, 1*sec), route("a", 1, 2*sec)})
	if err != nil {
		t.Fatal(err)
	}
	want := []wallaroo.Output{{Kind: wallaroo.OutputLate, Input: 1, Step: 2}, {Kind: wallaroo.OutputLate, Input: 2, Step: 2}}
	if !reflect.DeepEqual(out, want) {
		t.Fatalf("outputs %+v, want %+v", out, want)
	}
}

func TestLateDataFiresAWindowOfItsOwnWithFirePerMessage(t *testing.T) {
	h := newHost(t, sumApp(wallaroo.RangeWindows(3*time.Second).WithLateDataPolicy(wallaroo.FirePerMessage)))
	h.send("a", 1, 1*sec)
	equal(t, "first window", h.advance(4*sec), []string{"a:1:[1]"})
	h.send("a", 2, 2*sec)
	equal(t, "at once", h.drain(), []string{"a:2:[2]"})
	if len(h.late) != 1 {
		t.Fatalf("late %+v", h.late)
	}
}

func TestLateDataJoinsTheOldestOpenWindowWithPlaceInOldestWindow(t *testing.T) {
	h := newHost(t, sumApp(wallaroo.RangeWindows(3*time.Second).WithLateDataPolicy(wallaroo.PlaceInOldestWindow)))
	h.send("a", 1, 1*sec)
	h.send("a", 5, 7*sec)
	equal(t, "first window", h.advance(4*sec), []string{"a:1:[1]"})
	h.send("a", 2, 2*sec) // [0, 3) fired: into [3, 6), the oldest window still open
	equal(t, "at once", h.drain(), nil)
	equal(t, "later", h.advance(20*sec), []string{"a:2:[2]", "a:5:[5]"})
	if len(h.late) != 1 {
		t.Fatalf("late %+v", h.late)
	}
}

func TestLateIsJudgedByTheKeysFiredWindowsToo(t *testing.T) {
	// A restore onto a new instance starts at watermark 0: the key's fired frontier still
	// knows [0, 3) fired, so a message for it is late and fires nothing twice.
	for _, policy := range []wallaroo.LateDataPolicy{wallaroo.Drop, wallaroo.PlaceInOldestWindow} {
		h := newHost(t, sumApp(wallaroo.RangeWindows(3*time.Second).WithLateDataPolicy(policy)))
		h.send("a", 1, 1*sec)
		equal(t, "first window", h.advance(4*sec), []string{"a:1:[1]"})
		saved, err := h.rt.SnapshotChanged(100)
		if err != nil {
			t.Fatal(err)
		}
		h2 := newHost(t, sumApp(wallaroo.RangeWindows(3*time.Second).WithLateDataPolicy(policy)))
		if err := h2.rt.Restore(saved); err != nil {
			t.Fatal(err)
		}
		h2.send("a", 2, 2*sec)
		want := []string(nil)
		if policy == wallaroo.PlaceInOldestWindow {
			want = []string{"a:2:[2]"} // in [3, 6), the key's oldest window that has not fired
		}
		equal(t, policy.String(), h2.advance(100*sec), want)
		if len(h2.late) != 1 {
			t.Fatalf("%v: late %+v", policy, h2.late)
		}
	}
}

// Count windows

func TestCountWindowsOutputEveryNMessagesPerKey(t *testing.T) {
	h := newHost(t, sumApp(wallaroo.CountWindows(3)))
	for amount := 1; amount < 8; amount++ {
		h.send("a", amount, 0)
		h.send("b", amount*10, 0)
	}
	equal(t, "windows", h.drain(), []string{"a:6:[1 2 3]", "b:60:[10 20 30]", "a:15:[4 5 6]", "b:150:[40 50 60]"})
	equal(t, "a window of one is not full", h.advance(math.MaxUint64), nil)
}

// Windows are state

func TestOpenWindowsSurviveACheckpointAndRestoreAndNoneFiresTwice(t *testing.T) {
	windows := wallaroo.RangeWindows(6 * time.Second).WithSlide(2 * time.Second)
	type msg struct {
		user   string
		amount int
		at     uint64
	}
	var events []msg
	for i := 1; i < 40; i++ {
		events = append(events, msg{"a", i, uint64(i) * sec / 2})
	}
	events = append(events, msg{"b", 7, 3 * sec})
	run := func(crashAt int) []string {
		h := newHost(t, sumApp(windows))
		var out []string
		watermark := uint64(0)
		for n, m := range events {
			if n == crashAt {
				saved, err := h.rt.SnapshotChanged(1 << 20)
				if err != nil {
					t.Fatal(err)
				}
				h = newHost(t, sumApp(windows))
				if err := h.rt.Restore(saved); err != nil {
					t.Fatal(err)
				}
				out = append(out, h.advance(watermark)...)
			}
			h.send(m.user, m.amount, m.at)
			if n%5 == 4 {
				watermark = m.at
				out = append(out, h.advance(watermark)...)
			}
		}
		return append(out, h.advance(math.MaxUint64)...)
	}
	uninterrupted := run(-1)
	if len(uninterrupted) <= 10 {
		t.Fatalf("only %q", uninterrupted)
	}
	for _, crashAt := range []int{3, 17, 30} {
		equal(t, fmt.Sprintf("restored at %d", crashAt), run(crashAt), uninterrupted)
	}
}

func TestTakenWindowsFireWhereTheyAreRestored(t *testing.T) {
	h := newHost(t, sumApp(wallaroo.RangeWindows(3*time.Second)))
	h.send("a", 1, 1*sec)
	h.send("b", 2, 1*sec)
	step := h.windowStep()
	taken, err := h.rt.Take([]wallaroo.StateKey{{Step: step, Key: []byte("a")}})
	if err != nil || len(taken) != 1 {
		t.Fatalf("%v %+v", err, taken)
	}
	equal(t, "what stayed", h.advance(10*sec), []string{"b:2:[2]"})
	other := newHost(t, sumApp(wallaroo.RangeWindows(3*time.Second)))
	if err := other.rt.Restore(taken); err != nil {
		t.Fatal(err)
	}
	equal(t, "what moved", other.advance(10*sec), []string{"a:1:[1]"})
}

func TestAWindowWhoseOutputFailsIsReportedAndTheOthersFire(t *testing.T) {
	h := newHost(t, windowsApp[*total](wallaroo.RangeWindows(2*time.Second), sumAggregation{failOn: 13}, true))
	h.send("a", 13, 1*sec)
	h.send("a", 1, 3*sec)
	equal(t, "windows", h.advance(10*sec), []string{"a:1:[1]"})
	if len(h.failures) != 1 {
		t.Fatalf("failures %+v", h.failures)
	}
	f := h.failures[0]
	if f.Input != 4294967295 || f.Step != h.windowStep() || !f.HasKey || f.Key != "a" ||
		!strings.HasPrefix(f.Error, "panic: unlucky (windows_test.go:") {
		t.Fatalf("failure %+v", f)
	}
	equal(t, "the failed window is gone", h.advance(math.MaxUint64), nil)
}

func TestAWindowWhoseOutputFailsDownstreamDropsItsOutputs(t *testing.T) {
	setup := func([]string) (*wallaroo.Application, error) {
		p := wallaroo.KeyByNamed(wallaroo.Source("in", wallaroo.TCPSource("h", "1", decodeTxn)), "user",
			func(t txn) string { return t.User })
		sums := wallaroo.ToWindows(p, "sum", wallaroo.RangeWindows(2*time.Second), sumAggregation{})
		return wallaroo.BuildApplication("x", wallaroo.ToSink(sums,
			wallaroo.TCPSink("h", "2", encodeLine),
			wallaroo.TCPSink("h", "3", func(s string) ([]byte, error) {
				if strings.HasPrefix(s, "b:") {
					return nil, errors.New("no b")
				}
				return []byte(s), nil
			})))
	}
	h := newHost(t, setup)
	h.send("a", 1, 1*sec)
	h.send("b", 1, 1*sec)
	equal(t, "windows", h.advance(10*sec), []string{"a:1:[1]", "a:1:[1]"})
	if len(h.failures) != 1 || h.failures[0].Step != 4 || h.failures[0].Key != "b" || h.failures[0].Input != wallaroo.NoInput {
		t.Fatalf("failures %+v", h.failures)
	}
}

func TestAnEventTimeTooFarAheadForWindowsCostsTheMessage(t *testing.T) {
	h := newHost(t, sumApp(wallaroo.RangeWindows(time.Second)))
	h.send("a", 1, 1<<63)
	h.send("a", 2, 1*sec)
	equal(t, "windows", h.advance(math.MaxUint64), []string{"a:2:[2]"})
	if len(h.failures) != 1 || !h.failures[0].HasKey || !strings.Contains(h.failures[0].Error, "too far ahead for windows") {
		t.Fatalf("failures %+v", h.failures)
	}
}

func TestAPanicInUpdateCostsTheMessage(t *testing.T) {
	h := newHost(t, windowsApp[int](wallaroo.CountWindows(2), panicky{}, true))
	h.send("a", 1, 0)
	h.send("a", 13, 0)
	h.send("a", 2, 0)
	equal(t, "windows", h.drain(), []string{"a=3"})
	if len(h.failures) != 1 || h.failures[0].Input != 0 || !strings.HasPrefix(h.failures[0].Error, "panic: 13 (windows_test.go:") {
		t.Fatalf("failures %+v", h.failures)
	}
}

type panicky struct{ countAggregation }

func (panicky) Update(t txn, n int) int {
	if t.Amount == 13 {
		panic(13)
	}
	return n + t.Amount
}

// Mistakes are named

func TestAWindowSpecificationThatCannotWorkIsRefused(t *testing.T) {
	for _, c := range []struct {
		windows wallaroo.Windows
		message string
	}{
		{wallaroo.RangeWindows(0), "the range must be more than 0"},
		{wallaroo.RangeWindows(time.Second).WithSlide(2 * time.Second), "cannot be longer than the range"},
		{wallaroo.RangeWindows(time.Second).WithSlide(-1), "the slide must be more than 0"},
		{wallaroo.RangeWindows(time.Second).WithDelay(-1), "the delay must be 0 or more"},
		{wallaroo.RangeWindows(time.Second).WithDelay(math.MaxInt64), "longer than windows can be"},
		{wallaroo.RangeWindows(time.Second).WithLateDataPolicy(7), "unknown late data policy"},
		{wallaroo.CountWindows(0), "the count must be 1 or more"},
		{nil, "no window specification"},
	} {
		_, err := wallaroo.NewRuntime(sumApp(c.windows)).Describe(nil)
		if err == nil || !strings.Contains(err.Error(), c.message) || !strings.Contains(err.Error(), `windows "sum"`) {
			t.Errorf("%+v: error %v, want %q", c.windows, err, c.message)
		}
	}
}

func TestRangeWindowsOverTheOutputOfWindowsAreRefusedNamingBoth(t *testing.T) {
	setup := func([]string) (*wallaroo.Application, error) {
		byUser := func(t txn) string { return t.User }
		p := wallaroo.KeyByNamed(wallaroo.Source("in", wallaroo.TCPSource("h", "1", decodeTxn)), "user", byUser)
		counts := wallaroo.ToWindows(p, "count", wallaroo.CountWindows(2), countThenTxn{})
		again := wallaroo.KeyByNamed(counts, "again", byUser)
		sums := wallaroo.ToWindows(again, "sum", wallaroo.RangeWindows(time.Second), sumAggregation{})
		return wallaroo.BuildApplication("chained", wallaroo.ToSink(sums, wallaroo.TCPSink("h", "2", encodeLine)))
	}
	_, err := wallaroo.NewRuntime(setup).Describe(nil)
	if err == nil || !strings.Contains(err.Error(), `range windows "sum" take the output of windows "count"`) {
		t.Fatalf("error %v", err)
	}
}

type countThenTxn struct{ countAggregation }

func (countThenTxn) Output(key string, n int) (txn, bool) { return txn{key, n}, true }

func TestWindowStateIsNotUpgraded(t *testing.T) {
	_, err := wallaroo.NewRuntime(func([]string) (*wallaroo.Application, error) {
		p := wallaroo.KeyByNamed(wallaroo.Source("in", wallaroo.TCPSource("h", "1", decodeTxn)), "user",
			func(t txn) string { return t.User })
		sums := wallaroo.ToWindows(p, "sum", wallaroo.CountWindows(2), sumAggregation{})
		sums = wallaroo.UpgradeState(sums, func(*wordTotal) (*wordStats, error) { return nil, nil })
		return wallaroo.BuildApplication("x", wallaroo.ToSink(sums, wallaroo.TCPSink("h", "2", encodeLine)))
	}).Describe(nil)
	if err == nil || !strings.Contains(err.Error(), "is a window step") {
		t.Fatalf("error %v", err)
	}
}

// Event time from the data

func timedApp(eventTime func(txn) (time.Time, error)) wallaroo.SetupFunc {
	return func([]string) (*wallaroo.Application, error) {
		p := wallaroo.Source("in", wallaroo.TCPSource("h", "1", decodeTxn).WithEventTime(eventTime))
		keyed := wallaroo.KeyByNamed(p, "user", func(t txn) string { return t.User })
		return wallaroo.BuildApplication("timed", wallaroo.ToSink(wallaroo.ToWindows(keyed, "count", wallaroo.CountWindows(1), countAggregation{}),
			wallaroo.TCPSink("h", "2", encodeLine)))
	}
}

func TestASourceTakesEventTimesFromTheDataWhenAsked(t *testing.T) {
	rt := described(t, timedApp(func(t txn) (time.Time, error) {
		switch t.Amount {
		case 13:
			return time.Time{}, errors.New("unlucky")
		case 14:
			panic("very unlucky")
		case 15:
			return time.Unix(-1, 0), nil
		}
		return time.Unix(int64(t.Amount), 500), nil
	}))
	spec, _ := rt.Describe(nil)
	if !spec.Sources[0].EventTimeFromData {
		t.Fatalf("source %+v", spec.Sources[0])
	}
	var batch []wallaroo.Message
	for _, p := range []string{"a,1", "b,1551441600", "c,13", "d,14", "e,15"} {
		batch = append(batch, wallaroo.Message{Payload: []byte(p), EventTime: 7})
	}
	out, err := rt.Process(0, batch)
	if err != nil {
		t.Fatal(err)
	}
	out = wallaroo.WireOutputs(t, out)
	var routes, failures []string
	for _, o := range out {
		switch o.Kind {
		case wallaroo.OutputRoute:
			routes = append(routes, fmt.Sprintf("%s@%d", o.Key, o.EventTime))
		case wallaroo.OutputFailed:
			failures = append(failures, fmt.Sprintf("%d@%d: %s", o.Input, o.Step, o.Error))
		}
	}
	equal(t, "routes", routes, []string{"a@1000000500", "b@1551441600000000500"})
	if len(failures) != 3 || !strings.HasPrefix(failures[0], "2@0: event time: unlucky (windows_test.go:") ||
		!strings.HasPrefix(failures[1], "3@0: panic: very unlucky (windows_test.go:") ||
		!strings.Contains(failures[2], "4@0: event time: ") || !strings.Contains(failures[2], "before 1970") {
		t.Fatalf("failures %q", failures)
	}
}

func TestWithoutAnEventTimeFunctionMessagesKeepTheirIngestTime(t *testing.T) {
	rt := wallaroo.NewRuntime(timedApp(nil))
	spec, err := rt.Describe(nil)
	if err != nil || spec.Sources[0].EventTimeFromData {
		t.Fatalf("%v %+v", err, spec.Sources)
	}
	out, _ := rt.Process(0, []wallaroo.Message{{Payload: []byte("a,1"), EventTime: 42}})
	if len(out) != 1 || out[0].EventTime != 42 {
		t.Fatalf("outputs %+v", out)
	}
}

func TestWallarootestFiresEveryWindowAtTheEnd(t *testing.T) {
	res, err := wallarootest.Run(sumApp(wallaroo.RangeWindows(time.Second)), nil, [][]byte{[]byte("a,1"), []byte("a,2"), []byte("b,3")})
	if err != nil || len(res.Failures) != 0 {
		t.Fatal(err, res.Failures)
	}
	var got []string
	for _, line := range res.Sinks[0] {
		got = append(got, string(line))
	}
	equal(t, "windows", got, []string{"a:3:[1 2]\n", "b:3:[3]\n"})
}
