package wallaroo_test

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"wallaroo.dev/wallaroo"
	"wallaroo.dev/wallaroo/wallarootest"
)

type wordTotal struct{ count int }

func newWordTotal() *wordTotal { return &wordTotal{} }

type counted struct {
	Word  string
	Count int
}

func decodeLine(data []byte) (string, error) { return string(data), nil }

func encodeCounted(c counted) ([]byte, error) {
	return []byte(c.Word + " => " + strconv.Itoa(c.Count) + "\n"), nil
}

// wordCount: decode(0) -> split(1) -> key(2) -> count(3) -> encode(4).
func wordCount(fail func(word string) error) wallaroo.SetupFunc {
	return func(args []string) (*wallaroo.Application, error) {
		lines := wallaroo.Source("lines", wallaroo.TCPSource("h", "1", decodeLine))
		words := wallaroo.ToMulti(lines, "split", func(line string) ([]string, error) {
			if line == "panic" {
				panic("asked to panic")
			}
			if line == "error" {
				return nil, errors.New("asked to fail")
			}
			return strings.Fields(line), nil
		})
		keyed := wallaroo.KeyByNamed(words, "word", func(w string) string { return w })
		counts := wallaroo.ToState(keyed, "count", newWordTotal, func(w string, t *wordTotal) (counted, error) {
			if err := fail(w); err != nil {
				return counted{}, err
			}
			t.count++
			return counted{w, t.count}, nil
		})
		return wallaroo.BuildApplication("wc", wallaroo.ToSink(counts, wallaroo.TCPSink("h", "2", encodeCounted)))
	}
}

func noFailure(string) error { return nil }

func TestDescribeNumbersStepsLikeThePythonSDK(t *testing.T) {
	spec, err := wallaroo.NewRuntime(wordCount(noFailure)).Describe(nil)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, s := range spec.Steps {
		kinds = append(kinds, s.Name+":"+s.Kind.String())
	}
	want := []string{"decodeLine:decoder", "split:stateless", "word:key-by", "count:stateful", "encodeCounted:encoder"}
	if !reflect.DeepEqual(kinds, want) {
		t.Fatalf("steps %v, want %v", kinds, want)
	}
	if spec.Sources[0].Segment != 0 || spec.Sources[0].Framing != (wallaroo.Framing{HeaderLength: 4, LengthSize: 4, BigEndian: true}) ||
		spec.Sources[0].EventTimeFromData {
		t.Fatalf("source %+v", spec.Sources[0])
	}
	if spec.Sinks[0] != (wallaroo.SinkSpec{Name: "encodeCounted", Host: "h", Port: "2"}) {
		t.Fatalf("sink %+v", spec.Sinks[0])
	}
}

func TestKeyByRoutesToTheNextStepAndStateIsPerKey(t *testing.T) {
	rt := wallaroo.NewRuntime(wordCount(noFailure))
	if _, err := rt.Describe(nil); err != nil {
		t.Fatal(err)
	}
	out, err := rt.Process(0, []wallaroo.Message{{Payload: []byte("a b a")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 3 || out[0].Kind != wallaroo.OutputRoute || out[0].Key != "a" || out[0].Segment != 3 || out[1].Key != "b" {
		t.Fatalf("routes %+v", out)
	}
	var batch []wallaroo.Message
	for _, o := range out {
		batch = append(batch, wallaroo.Message{Key: []byte(o.Key), Payload: o.Payload, EventTime: o.EventTime})
	}
	emitted, err := rt.Process(3, batch)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range emitted {
		if o.Kind != wallaroo.OutputEmit || o.Sink != 0 {
			t.Fatalf("output %+v", o)
		}
		got = append(got, string(o.Payload))
	}
	if want := []string{"a => 1\n", "b => 1\n", "a => 2\n"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestRoutesCarryTheEventTimeOfTheirInput(t *testing.T) {
	rt := wallaroo.NewRuntime(wordCount(noFailure))
	if _, err := rt.Describe(nil); err != nil {
		t.Fatal(err)
	}
	out, err := rt.Process(0, []wallaroo.Message{
		{Payload: []byte("a b"), EventTime: 5},
		{Payload: []byte("panic"), EventTime: 6},
		{Payload: []byte("c"), EventTime: 1<<64 - 1}, // the whole width survives
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range out {
		if o.Kind == wallaroo.OutputFailed {
			got = append(got, "failed")
			continue
		}
		got = append(got, fmt.Sprintf("%s@%d", o.Key, o.EventTime))
	}
	want := []string{"a@5", "b@5", "failed", "c@18446744073709551615"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("outputs %q, want %q", got, want)
	}
}

func TestAdvanceHasNothingToFireWithoutWindows(t *testing.T) {
	rt := wallaroo.NewRuntime(wordCount(noFailure))
	if _, err := rt.Advance(0); err == nil {
		t.Fatal("advanced before describe")
	}
	if _, err := rt.Describe(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Process(0, []wallaroo.Message{{Payload: []byte("a"), EventTime: 5}}); err != nil {
		t.Fatal(err)
	}
	// The largest watermark is the end of every stream: anything pending would fire now.
	for _, watermark := range []uint64{10, 1<<64 - 1} {
		if out, err := rt.Advance(watermark); err != nil || len(out) != 0 {
			t.Fatalf("advance to %d: %v %+v", watermark, err, out)
		}
	}
}

func TestFailuresDropOnlyTheirInputsOutputs(t *testing.T) {
	res, err := wallarootest.Run(wordCount(func(w string) error {
		if w == "boom" {
			return errors.New("boom is not a word")
		}
		return nil
	}), nil, [][]byte{[]byte("x"), []byte("panic"), []byte("error"), []byte("boom"), []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(res.Sinks[0]); got != 2 || string(res.Sinks[0][1]) != "x => 2\n" {
		t.Fatalf("sink %q", res.Sinks[0])
	}
	if len(res.Failures) != 3 {
		t.Fatalf("failures %+v", res.Failures)
	}
	p, e, b := res.Failures[0], res.Failures[1], res.Failures[2]
	if p.Step != 1 || p.HasKey || !strings.HasPrefix(p.Error, "panic: asked to panic (wallaroo_test.go:") {
		t.Errorf("panic failure %+v", p)
	}
	if e.Step != 1 || !strings.HasPrefix(e.Error, "asked to fail (wallaroo_test.go:") {
		t.Errorf("error failure %+v", e)
	}
	if b.Step != 3 || !b.HasKey || b.Key != "boom" || !strings.HasPrefix(b.Error, "boom is not a word") {
		t.Errorf("state failure %+v", b)
	}
}

func TestAFailureDownstreamDropsTheMessagesEarlierOutputs(t *testing.T) {
	setup := func([]string) (*wallaroo.Application, error) {
		lines := wallaroo.Source("lines", wallaroo.TCPSource("h", "1", decodeLine))
		words := wallaroo.ToMulti(lines, "split", func(l string) ([]string, error) { return strings.Fields(l), nil })
		return wallaroo.BuildApplication("x", wallaroo.ToSink(words, wallaroo.TCPSink("h", "2", func(w string) ([]byte, error) {
			if w == "bad" {
				return nil, errors.New("cannot encode bad")
			}
			return []byte(w), nil
		})))
	}
	rt := wallaroo.NewRuntime(setup)
	if _, err := rt.Describe(nil); err != nil {
		t.Fatal(err)
	}
	out, err := rt.Process(0, []wallaroo.Message{{Payload: []byte("ok bad ok")}, {Payload: []byte("fine")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].Kind != wallaroo.OutputFailed || out[0].Step != 2 || out[0].Input != 0 ||
		out[1].Kind != wallaroo.OutputEmit || string(out[1].Payload) != "fine" {
		t.Fatalf("outputs %+v", out)
	}
}

func TestAStateStepBeforeAnyKeyByRoutesUnderTheEmptyKey(t *testing.T) {
	setup := func([]string) (*wallaroo.Application, error) {
		lines := wallaroo.Source("lines", wallaroo.TCPSource("h", "1", decodeLine))
		counts := wallaroo.ToState(lines, "count", newWordTotal, func(w string, t *wordTotal) (counted, error) {
			t.count++
			return counted{w, t.count}, nil
		})
		return wallaroo.BuildApplication("x", wallaroo.ToSink(counts, wallaroo.TCPSink("h", "2", encodeCounted)))
	}
	rt := wallaroo.NewRuntime(setup)
	if _, err := rt.Describe(nil); err != nil {
		t.Fatal(err)
	}
	out, _ := rt.Process(0, []wallaroo.Message{{Payload: []byte("a"), EventTime: 9}})
	if len(out) != 1 || out[0].Kind != wallaroo.OutputRoute || out[0].Key != "" || out[0].Segment != 1 || out[0].EventTime != 9 {
		t.Fatalf("outputs %+v", out)
	}
	res, err := wallarootest.Run(setup, nil, [][]byte{[]byte("a"), []byte("b")})
	if err != nil || string(res.Sinks[0][1]) != "b => 2\n" {
		t.Fatalf("%v %q", err, res.Sinks)
	}
}

func TestSnapshotRestoreAndTakeCarryState(t *testing.T) {
	rt := wallaroo.NewRuntime(wordCount(noFailure))
	if _, err := rt.Describe(nil); err != nil {
		t.Fatal(err)
	}
	route := func(words ...string) []string {
		var batch []wallaroo.Message
		for _, w := range words {
			out, _ := rt.Process(0, []wallaroo.Message{{Payload: []byte(w)}})
			batch = append(batch, wallaroo.Message{Key: []byte(out[0].Key), Payload: out[0].Payload})
		}
		out, _ := rt.Process(3, batch)
		var got []string
		for _, o := range out {
			got = append(got, string(o.Payload))
		}
		return got
	}
	route("a", "a", "b")
	snap, err := rt.SnapshotChanged(4096)
	if err != nil || len(snap) != 2 || string(snap[0].Key) != "a" || snap[0].Step != 3 {
		t.Fatalf("%v %+v", err, snap)
	}
	if again, _ := rt.SnapshotChanged(4096); len(again) != 0 {
		t.Fatalf("marks kept: %+v", again)
	}
	taken, err := rt.Take([]wallaroo.StateKey{{Step: 3, Key: []byte("a")}, {Step: 3, Key: []byte("zz")}})
	if err != nil || len(taken) != 1 {
		t.Fatalf("%v %+v", err, taken)
	}
	if got := route("a"); got[0] != "a => 1\n" {
		t.Fatalf("after take: %q", got)
	}
	other := wallaroo.NewRuntime(wordCount(noFailure))
	if _, err := other.Describe(nil); err != nil {
		t.Fatal(err)
	}
	if err := other.Restore(taken); err != nil {
		t.Fatal(err)
	}
	// The host holds the bytes it restored: nothing to report back until the state changes.
	if again, _ := other.SnapshotChanged(4096); len(again) != 0 {
		t.Fatalf("restored state reported changed: %+v", again)
	}
	rt = other
	if got := route("a"); got[0] != "a => 3\n" {
		t.Fatalf("after restore: %q", got)
	}
	if changed, _ := other.SnapshotChanged(4096); len(changed) != 1 || string(changed[0].Key) != "a" {
		t.Fatalf("restored then updated: %+v", changed)
	}
	if err := other.Restore([]wallaroo.StateEntry{{Step: 1, Key: []byte("a")}}); err == nil {
		t.Fatal("restored into a stateless step")
	}
	if err := other.Restore([]wallaroo.StateEntry{{Step: 3, Key: []byte("a"), Removed: true}}); err == nil ||
		!strings.Contains(err.Error(), "says it was removed") {
		t.Fatalf("restored a removed key: %v", err)
	}
}

func TestABoundedSnapshotReturnsAtMostThatManyAndKeepsTheOtherMarks(t *testing.T) {
	rt := wallaroo.NewRuntime(wordCount(noFailure))
	if _, err := rt.Describe(nil); err != nil {
		t.Fatal(err)
	}
	count := func(words ...string) {
		var batch []wallaroo.Message
		for _, w := range words {
			out, _ := rt.Process(0, []wallaroo.Message{{Payload: []byte(w)}})
			batch = append(batch, wallaroo.Message{Key: []byte(out[0].Key), Payload: out[0].Payload})
		}
		if _, err := rt.Process(3, batch); err != nil {
			t.Fatal(err)
		}
	}
	keys := func(entries []wallaroo.StateEntry) string {
		var ks []string
		for _, e := range entries {
			ks = append(ks, string(e.Key))
		}
		return strings.Join(ks, " ")
	}
	count("a", "b", "c", "d", "e")
	first, err := rt.SnapshotChanged(2)
	if err != nil || keys(first) != "a b" {
		t.Fatalf("%v %q", err, keys(first))
	}
	count("a") // marked again after its snapshot: comes again, after the others
	if second, _ := rt.SnapshotChanged(2); keys(second) != "c d" {
		t.Fatalf("%q", keys(second))
	}
	if last, _ := rt.SnapshotChanged(2); keys(last) != "e a" {
		t.Fatalf("%q", keys(last))
	}
	if none, _ := rt.SnapshotChanged(2); len(none) != 0 {
		t.Fatalf("%q", keys(none))
	}
}

func TestAnUnencodableTypeFailsTheBuild(t *testing.T) {
	_, err := wallaroo.NewRuntime(func([]string) (*wallaroo.Application, error) {
		lines := wallaroo.Source("lines", wallaroo.TCPSource("h", "1", func(b []byte) (chan int, error) { return nil, nil }))
		keyed := wallaroo.KeyBy(lines, func(chan int) string { return "" })
		return wallaroo.BuildApplication("x", wallaroo.ToSink(keyed, wallaroo.TCPSink("h", "2", func(chan int) ([]byte, error) { return nil, nil })))
	}).Describe(nil)
	if err == nil || !strings.Contains(err.Error(), "cannot encode chan int") {
		t.Fatalf("error %v", err)
	}
}

func TestArgumentsParseLikeWallaroos(t *testing.T) {
	in, err := wallaroo.TCPParseInputAddrs([]string{"--workers", "2", "--in", "name@host:1,h2:7", "--out=o:3"})
	if err != nil || !reflect.DeepEqual(in, []wallaroo.Addr{{Name: "name", Host: "host", Port: "1"}, {Host: "h2", Port: "7"}}) {
		t.Fatalf("%v %+v", err, in)
	}
	out, err := wallaroo.TCPParseOutputAddrs([]string{"--out=n@o:3"})
	if err != nil || !reflect.DeepEqual(out, []wallaroo.Addr{{Host: "o", Port: "3"}}) {
		t.Fatalf("%v %+v", err, out)
	}
	for _, bad := range [][]string{{}, {"--in"}, {"--in", "nohost"}, {"--in", ":1"}, {"--in", "@h:1"}} {
		if _, err := wallaroo.TCPParseInputAddrs(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
