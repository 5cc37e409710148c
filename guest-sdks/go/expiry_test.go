package wallaroo_test

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"wallaroo.dev/wallaroo"
	"wallaroo.dev/wallaroo/wallarootest"
)

// State that expires (ExpireAfter): when keys expire, what their expiry outputs, and expiry
// across snapshots, restores and versions.

// session is the state of a user's messages: how many and their sum.
type session struct {
	Count int
	Sum   int
}

func newSession() *session { return &session{} }

func addToSession(t txn, s *session) (string, error) {
	s.Count++
	s.Sum += t.Amount
	return fmt.Sprintf("%s:%d:%d", t.User, s.Count, s.Sum), nil
}

func sessionEnded(user string, s *session) ([]string, error) {
	return []string{fmt.Sprintf("ended %s:%d:%d", user, s.Count, s.Sum)}, nil
}

// sessionsApp: decode(0) -> user(1) -> session(2) -> encodeLine(3); the session step's state
// expires after `after` (with onExpire) if expire.
func sessionsApp(expire bool, after time.Duration, onExpire func(string, *session) ([]string, error)) wallaroo.SetupFunc {
	return func([]string) (*wallaroo.Application, error) {
		p := wallaroo.KeyByNamed(wallaroo.Source("in", wallaroo.TCPSource("h", "1", decodeTxn)), "user",
			func(t txn) string { return t.User })
		sessions := wallaroo.ToState(p, "session", newSession, addToSession)
		if expire {
			sessions = wallaroo.ExpireAfter(sessions, after, onExpire)
		}
		return wallaroo.BuildApplication("sessions", wallaroo.ToSink(sessions, wallaroo.TCPSink("h", "2", encodeLine)))
	}
}

// sessions5s is sessionsApp whose sessions end after 5 s, saying so.
func sessions5s() wallaroo.SetupFunc { return sessionsApp(true, 5*time.Second, sessionEnded) }

const sessionStep = 2

func (h *host) snapshot(max int) []wallaroo.StateEntry {
	h.t.Helper()
	entries, err := h.rt.SnapshotChanged(max)
	if err != nil {
		h.t.Fatal(err)
	}
	return wallaroo.WireChanges(h.t, entries)
}

func (h *host) restore(entries []wallaroo.StateEntry) {
	h.t.Helper()
	if err := h.rt.Restore(entries); err != nil {
		h.t.Fatal(err)
	}
}

// changes is entries as "key" for a state and "-key" for a removed one.
func changes(entries []wallaroo.StateEntry) []string {
	var got []string
	for _, e := range entries {
		if e.Removed {
			if e.Value != nil {
				got = append(got, "-"+string(e.Key)+" with a value")
				continue
			}
			got = append(got, "-"+string(e.Key))
		} else {
			got = append(got, string(e.Key))
		}
	}
	return got
}

func TestAKeysStateExpiresAfterTheTimeWithoutMessagesAndNotBefore(t *testing.T) {
	h := newHost(t, sessions5s())
	h.send("a", 1, 1*sec)
	h.send("a", 2, 1*sec)
	h.send("b", 5, 2*sec)
	equal(t, "outputs", h.drain(), []string{"a:1:1", "a:2:3", "b:1:5"})
	equal(t, "just before a's deadline", h.advance(6*sec-1), nil)
	equal(t, "at a's deadline", h.advance(6*sec), []string{"ended a:2:3"})
	equal(t, "just before b's", h.advance(7*sec-1), nil)
	equal(t, "at b's", h.advance(7*sec), []string{"ended b:1:5"})
	equal(t, "each key expires once", h.advance(100*sec), nil)
	// Its state is gone: a new message starts a new one.
	h.send("a", 7, 101*sec)
	equal(t, "after expiry", h.drain(), []string{"a:1:7"})
	equal(t, "the new state expires too", h.advance(106*sec), []string{"ended a:1:7"})
	if len(h.failures) != 0 {
		t.Fatalf("failures %+v", h.failures)
	}
}

func TestAMessageResetsTheClockAndAnOlderOneDoesNot(t *testing.T) {
	h := newHost(t, sessions5s())
	h.send("a", 1, 1*sec)
	h.drain()
	equal(t, "before", h.advance(5*sec), nil)
	h.send("a", 1, 4*sec) // deadline 9 s
	h.send("a", 1, 2*sec) // older: the last seen stays 4 s
	equal(t, "counted", h.drain(), []string{"a:2:2", "a:3:3"})
	equal(t, "at the first deadline", h.advance(6*sec), nil)
	equal(t, "just before the moved one", h.advance(9*sec-1), nil)
	equal(t, "at the moved one", h.advance(9*sec), []string{"ended a:3:3"})
}

func TestKeysExpireInTheOrderOfTheirDeadlinesThenKeys(t *testing.T) {
	h := newHost(t, sessions5s())
	h.send("c", 1, 1*sec)
	h.send("a", 2, 2*sec)
	h.send("b", 3, 1*sec)
	h.send("d", 4, 1*sec)
	h.send("d", 4, 3*sec) // moved after a
	h.drain()
	equal(t, "expired", h.advance(20*sec), []string{"ended b:1:3", "ended c:1:1", "ended a:1:2", "ended d:2:8"})
}

func TestAnExpirysOutputsGoDownstreamWithTheDeadlineAsEventTime(t *testing.T) {
	setup := func([]string) (*wallaroo.Application, error) {
		p := wallaroo.KeyByNamed(wallaroo.Source("in", wallaroo.TCPSource("h", "1", decodeTxn)), "user",
			func(t txn) string { return t.User })
		sessions := wallaroo.ToState(p, "session", newSession, addToSession)
		sessions = wallaroo.ExpireAfter(sessions, 5*time.Second, func(user string, s *session) ([]string, error) {
			return []string{"ended " + user, "really ended " + user}, nil
		})
		again := wallaroo.KeyByNamed(sessions, "again", func(string) string { return "k" })
		return wallaroo.BuildApplication("x", wallaroo.ToSink(again, wallaroo.TCPSink("h", "2", encodeLine)))
	}
	rt := described(t, setup)
	out, _ := rt.Process(0, []wallaroo.Message{{Payload: []byte("a,1"), EventTime: 3 * sec}})
	if _, err := rt.Process(2, []wallaroo.Message{{Key: []byte("a"), Payload: out[0].Payload, EventTime: 3 * sec}}); err != nil {
		t.Fatal(err)
	}
	expired, err := rt.Advance(10 * sec)
	if err != nil {
		t.Fatal(err)
	}
	expired = wallaroo.WireOutputs(t, expired)
	if len(expired) != 2 {
		t.Fatalf("outputs %+v", expired)
	}
	for _, o := range expired {
		if o.Kind != wallaroo.OutputRoute || o.Key != "k" || o.Segment != 4 || o.EventTime != 8*sec {
			t.Fatalf("output %+v, want a route at the deadline, 8 s", o)
		}
	}
}

func TestWithoutOnExpireTheStateIsRemovedQuietly(t *testing.T) {
	h := newHost(t, sessionsApp(true, 5*time.Second, nil))
	h.send("a", 1, 1*sec)
	h.send("a", 1, 1*sec)
	h.drain()
	equal(t, "expired", h.advance(10*sec), nil)
	h.send("a", 5, 11*sec)
	equal(t, "a new state", h.drain(), []string{"a:1:5"})
}

func TestAFailingOnExpireIsAFailureOfTheStepForTheKeyAndTheStateGoesAllTheSame(t *testing.T) {
	h := newHost(t, sessionsApp(true, 5*time.Second, func(user string, s *session) ([]string, error) {
		switch user {
		case "bad":
			return []string{"never seen"}, errors.New("bad session")
		case "panicky":
			panic("no session for " + user)
		}
		return sessionEnded(user, s)
	}))
	for _, user := range []string{"a", "bad", "panicky", "z"} {
		h.send(user, 1, 1*sec)
	}
	h.drain()
	equal(t, "the others' outputs", h.advance(10*sec), []string{"ended a:1:1", "ended z:1:1"})
	if len(h.failures) != 2 {
		t.Fatalf("failures %+v", h.failures)
	}
	bad, panicky := h.failures[0], h.failures[1]
	if bad.Input != wallaroo.NoInput || bad.Step != sessionStep || !bad.HasKey || bad.Key != "bad" ||
		!strings.HasPrefix(bad.Error, "bad session (expiry_test.go:") {
		t.Errorf("error %+v", bad)
	}
	if panicky.Input != wallaroo.NoInput || panicky.Step != sessionStep || !panicky.HasKey || panicky.Key != "panicky" ||
		!strings.HasPrefix(panicky.Error, "panic: no session for panicky (expiry_test.go:") {
		t.Errorf("panic %+v", panicky)
	}
	h.send("bad", 9, 11*sec)
	equal(t, "the failed key's state is gone", h.drain(), []string{"bad:1:9"})
}

func TestAnExpiryFailingDownstreamIsAFailureOfThatStep(t *testing.T) {
	setup := func([]string) (*wallaroo.Application, error) {
		p := wallaroo.KeyByNamed(wallaroo.Source("in", wallaroo.TCPSource("h", "1", decodeTxn)), "user",
			func(t txn) string { return t.User })
		sessions := wallaroo.ExpireAfter(wallaroo.ToState(p, "session", newSession, addToSession), time.Second, sessionEnded)
		return wallaroo.BuildApplication("x", wallaroo.ToSink(sessions, wallaroo.TCPSink("h", "2", func(s string) ([]byte, error) {
			if s == "ended b:1:1" {
				return nil, errors.New("no b")
			}
			return []byte(s + "\n"), nil
		})))
	}
	h := newHost(t, setup)
	h.send("a", 1, 1*sec)
	h.send("b", 1, 1*sec)
	h.drain()
	equal(t, "expired", h.advance(10*sec), []string{"ended a:1:1"})
	if len(h.failures) != 1 || h.failures[0].Step != 3 || h.failures[0].Key != "b" || h.failures[0].Input != wallaroo.NoInput {
		t.Fatalf("failures %+v", h.failures)
	}
}

func TestExpiredKeysAreRemovedFromTheSnapshotOnce(t *testing.T) {
	h := newHost(t, sessions5s())
	h.send("a", 1, 1*sec)
	h.send("b", 1, 1*sec)
	equal(t, "first snapshot", changes(h.snapshot(100)), []string{"a", "b"})
	h.send("c", 1, 1*sec) // never in a snapshot: the host has nothing to drop
	h.send("d", 1, 8*sec)
	h.drain()
	equal(t, "expired", h.advance(10*sec), []string{"ended a:1:1", "ended b:1:1", "ended c:1:1"})
	equal(t, "removed", changes(h.snapshot(100)), []string{"d", "-a", "-b"})
	equal(t, "once", changes(h.snapshot(100)), nil)
	h.advance(20 * sec)
	equal(t, "d", changes(h.snapshot(100)), []string{"-d"})

	// A key that expired and got a message again has its new state in the snapshot.
	h.send("a", 1, 30*sec)
	equal(t, "a", changes(h.snapshot(100)), []string{"a"})
	h.advance(40 * sec)
	h.send("a", 2, 41*sec)
	equal(t, "expired and set again", changes(h.snapshot(100)), []string{"a"})
	h.drain()
	// One that expired, got state and expired again is removed, once.
	h.advance(50 * sec)
	h.send("a", 3, 51*sec)
	h.advance(60 * sec)
	equal(t, "expired twice", changes(h.snapshot(100)), []string{"-a"})
	equal(t, "nothing left", changes(h.snapshot(100)), nil)

	// A removed key counts against max-entries like the others.
	for _, user := range []string{"p", "q", "r"} {
		h.send(user, 1, 70*sec)
	}
	equal(t, "new keys", changes(h.snapshot(100)), []string{"p", "q", "r"})
	h.advance(80 * sec)
	equal(t, "two", changes(h.snapshot(2)), []string{"-p", "-q"})
	equal(t, "the last", changes(h.snapshot(2)), []string{"-r"})
	equal(t, "none", changes(h.snapshot(2)), nil)
}

// kept is entries without the removed keys: what a host restores of a snapshot that was its
// copy's first.
func kept(entries []wallaroo.StateEntry) []wallaroo.StateEntry {
	return slices.DeleteFunc(slices.Clone(entries), func(e wallaroo.StateEntry) bool { return e.Removed })
}

func TestExpiringStateCarriesItsLastSeenTimeThroughARestoreAndATake(t *testing.T) {
	h := newHost(t, sessions5s())
	h.send("a", 1, 1*sec)
	h.send("b", 2, 3*sec)
	h.drain()
	saved := h.snapshot(100)
	restored := newHost(t, sessions5s())
	restored.restore(saved)
	equal(t, "restored, unchanged", changes(restored.snapshot(100)), nil)
	equal(t, "before a's deadline", restored.advance(6*sec-1), nil)
	equal(t, "at a's deadline", restored.advance(6*sec), []string{"ended a:1:1"})
	// A message that moves the clock is carried as well.
	restored.send("b", 1, 7*sec)
	restored.drain()
	again := newHost(t, sessions5s())
	snap := restored.snapshot(100)
	equal(t, "a removed, b changed", changes(snap), []string{"-a", "b"})
	again.restore(kept(snap))
	equal(t, "at b's first deadline", again.advance(8*sec), nil)
	equal(t, "at b's moved deadline", again.advance(12*sec), []string{"ended b:2:3"})

	// A taken key keeps its clock where it goes; the key expired here is not taken.
	h.advance(6 * sec)
	taken, err := h.rt.Take([]wallaroo.StateKey{{Step: sessionStep, Key: []byte("a")}, {Step: sessionStep, Key: []byte("b")}})
	if err != nil || len(taken) != 1 || string(taken[0].Key) != "b" {
		t.Fatalf("%v %+v", err, taken)
	}
	equal(t, "nothing stayed", h.advance(100*sec), nil)
	other := newHost(t, sessions5s())
	other.restore(taken)
	equal(t, "before b's deadline", other.advance(8*sec-1), nil)
	equal(t, "at b's deadline", other.advance(8*sec), []string{"ended b:1:2"})
}

func TestARestoreOfAnOlderStateMovesTheDeadlineBack(t *testing.T) {
	h := newHost(t, sessions5s())
	h.send("a", 1, 1*sec)
	saved := h.snapshot(100)
	h.send("a", 1, 10*sec)
	h.drain()
	equal(t, "moved to 15 s", h.advance(7*sec), nil)
	h.restore(saved) // back to 6 s
	equal(t, "the restored deadline", h.advance(8*sec), []string{"ended a:1:1"})
}

func TestAStateWrittenWithoutExpiryGetsTheWatermarkAsItsLastSeenTime(t *testing.T) {
	old := newHost(t, sessionsApp(false, 0, nil))
	old.send("a", 1, 1*sec)
	old.send("b", 2, 1*sec)
	old.drain()
	saved := old.snapshot(100)

	// Restored after the watermark came: a full 5 s from it.
	h := newHost(t, sessions5s())
	equal(t, "", h.advance(100*sec), nil)
	h.restore(saved)
	// Converted: the host's copy gets the time.
	written := h.snapshot(100)
	equal(t, "converted", changes(written), []string{"a", "b"})
	equal(t, "just before", h.advance(105*sec-1), nil)
	equal(t, "at the watermark's deadline", h.advance(105*sec), []string{"ended a:1:1", "ended b:1:2"})
	timed := newHost(t, sessions5s())
	timed.restore(written)
	equal(t, "the time written", timed.advance(105*sec), []string{"ended a:1:1", "ended b:1:2"})

	// Restored into a new instance, before its first watermark: a full 5 s from that one.
	fresh := newHost(t, sessions5s())
	fresh.restore(saved)
	equal(t, "before any watermark, as it is", changes(fresh.snapshot(100)), nil)
	equal(t, "the first watermark", fresh.advance(200*sec), nil)
	written = fresh.snapshot(100)
	equal(t, "stamped with it", changes(written), []string{"a", "b"})
	equal(t, "at its deadline", fresh.advance(205*sec), []string{"ended a:1:1", "ended b:1:2"})
	timed = newHost(t, sessions5s())
	timed.restore(written)
	equal(t, "before the time written", timed.advance(205*sec-1), nil)
	equal(t, "at it", timed.advance(205*sec), []string{"ended a:1:1", "ended b:1:2"})

	// A message before the first watermark gives the key its own time.
	msg := newHost(t, sessions5s())
	msg.restore(saved)
	msg.send("a", 1, 300*sec)
	equal(t, "counted on", msg.drain(), []string{"a:2:2"})
	equal(t, "b from the watermark", msg.advance(302*sec), nil)
	equal(t, "a from its message", msg.advance(305*sec), []string{"ended a:2:2"})
	equal(t, "b", msg.advance(307*sec), []string{"ended b:1:2"})
}

func TestAStepWithoutExpiryRestoresAStateWrittenWithIt(t *testing.T) {
	h := newHost(t, sessions5s())
	h.send("a", 1, 1*sec)
	h.send("a", 2, 1*sec)
	h.drain()
	without := newHost(t, sessionsApp(false, 0, nil))
	without.restore(h.snapshot(100))
	equal(t, "restored as it is", changes(without.snapshot(100)), nil)
	equal(t, "no expiry", without.advance(math.MaxUint64), nil)
	without.send("a", 3, 2*sec)
	equal(t, "counted on", without.drain(), []string{"a:3:6"})
	// And its own state, without a time, back into a step with expiry.
	with := newHost(t, sessions5s())
	with.advance(10 * sec)
	with.restore(without.snapshot(100))
	equal(t, "from the watermark", with.advance(15*sec), []string{"ended a:3:6"})
}

// sessionV2 is a version 2 of session, converted by upgradeSession.
type sessionV2 struct {
	Messages int64
	Total    int64
	Note     string
}

func upgradeSession(old *session) (*sessionV2, error) {
	return &sessionV2{Messages: int64(old.Count), Total: int64(old.Sum), Note: "upgraded"}, nil
}

func sessionsV2(expire bool) wallaroo.SetupFunc {
	return func([]string) (*wallaroo.Application, error) {
		p := wallaroo.KeyByNamed(wallaroo.Source("in", wallaroo.TCPSource("h", "1", decodeTxn)), "user",
			func(t txn) string { return t.User })
		sessions := wallaroo.ToState(p, "session", func() *sessionV2 { return &sessionV2{} },
			func(t txn, s *sessionV2) (string, error) {
				s.Messages++
				s.Total += int64(t.Amount)
				return fmt.Sprintf("%s:%d:%d:%s", t.User, s.Messages, s.Total, s.Note), nil
			})
		sessions = wallaroo.UpgradeState(sessions, upgradeSession)
		if expire {
			sessions = wallaroo.ExpireAfter(sessions, 5*time.Second, func(user string, s *sessionV2) ([]string, error) {
				return []string{fmt.Sprintf("ended %s:%d:%d:%s", user, s.Messages, s.Total, s.Note)}, nil
			})
		}
		return wallaroo.BuildApplication("sessions", wallaroo.ToSink(sessions, wallaroo.TCPSink("h", "2", encodeLine)))
	}
}

func TestUpgradeStateAndExpireAfterWorkTogether(t *testing.T) {
	// Version 1 with expiry, into version 2 with expiry: upgraded, the clock kept.
	v1 := newHost(t, sessions5s())
	v1.send("a", 4, 1*sec)
	v1.drain()
	v2 := newHost(t, sessionsV2(true))
	v2.restore(v1.snapshot(100))
	written := v2.snapshot(100)
	equal(t, "converted", changes(written), []string{"a"})
	equal(t, "at version 1's deadline", v2.advance(6*sec), []string{"ended a:1:4:upgraded"})
	// Version 2's own state, with its time, restores as it is.
	v2b := newHost(t, sessionsV2(true))
	v2b.restore(written)
	equal(t, "as it is", changes(v2b.snapshot(100)), nil)
	equal(t, "the same deadline", v2b.advance(6*sec), []string{"ended a:1:4:upgraded"})

	// Version 1 without expiry, into version 2 with expiry: upgraded, the clock from the
	// watermark.
	old := newHost(t, sessionsApp(false, 0, nil))
	old.send("b", 2, 1*sec)
	old.drain()
	v2c := newHost(t, sessionsV2(true))
	v2c.advance(50 * sec)
	v2c.restore(old.snapshot(100))
	equal(t, "from the watermark", v2c.advance(55*sec), []string{"ended b:1:2:upgraded"})

	// Version 1 with expiry, into version 2 without: upgraded, the time ignored.
	v2d := newHost(t, sessionsV2(false))
	v1.send("c", 1, 1*sec)
	v1.drain()
	v2d.restore(v1.snapshot(100))
	v2d.send("c", 1, 2*sec)
	equal(t, "counted on", v2d.drain(), []string{"c:2:2:upgraded"})
}

func TestTheLargestWatermarkExpiresEveryKey(t *testing.T) {
	h := newHost(t, sessionsApp(true, 1000*time.Hour, sessionEnded))
	h.send("a", 1, 1*sec)
	h.send("b", 1, 0)
	h.send("c", 1, math.MaxUint64-1) // its deadline is the end of every stream
	h.drain()
	equal(t, "before", h.advance(1000*sec), nil)
	equal(t, "at the end", h.advance(math.MaxUint64), []string{"ended b:1:1", "ended a:1:1", "ended c:1:1"})

	res, err := wallarootest.Run(sessions5s(), nil, [][]byte{[]byte("a,1"), []byte("b,2"), []byte("a,3")})
	if err != nil || len(res.Failures) != 0 {
		t.Fatal(err, res.Failures)
	}
	var got []string
	for _, line := range res.Sinks[0] {
		got = append(got, strings.TrimSuffix(string(line), "\n"))
	}
	equal(t, "wallarootest", got, []string{"a:1:1", "b:1:2", "a:2:4", "ended a:2:4", "ended b:1:2"})
}

func TestExpireAfterMistakesAreNamed(t *testing.T) {
	keyed := func() wallaroo.Pipeline[txn] {
		return wallaroo.KeyByNamed(wallaroo.Source("in", wallaroo.TCPSource("h", "1", decodeTxn)), "user",
			func(t txn) string { return t.User })
	}
	build := func(p wallaroo.Pipeline[string]) error {
		_, err := wallaroo.NewRuntime(func([]string) (*wallaroo.Application, error) {
			return wallaroo.BuildApplication("x", wallaroo.ToSink(p, wallaroo.TCPSink("h", "2", encodeLine)))
		}).Describe(nil)
		return err
	}
	sessions := func() wallaroo.Pipeline[string] {
		return wallaroo.ToState(keyed(), "session", newSession, addToSession)
	}
	for _, c := range []struct {
		what    string
		p       wallaroo.Pipeline[string]
		message string
	}{
		{"a stateless step", wallaroo.ExpireAfter(wallaroo.To(keyed(), "name", func(t txn) (string, error) { return t.User, nil }),
			time.Second, sessionEnded), "ExpireAfter: the pipeline does not come out of a state step"},
		{"a merge", wallaroo.ExpireAfter(wallaroo.Merge(sessions(), sessions()), time.Second, sessionEnded),
			"does not come out of a state step"},
		{"a window step", wallaroo.ExpireAfter(wallaroo.ToWindows(keyed(), "sum", wallaroo.CountWindows(2), sumAggregation{}),
			time.Second, func(string, *total) ([]string, error) { return nil, nil }), `ExpireAfter: step "sum" is a window step`},
		{"another state type", wallaroo.ExpireAfter(sessions(), time.Second, func(string, *sessionV2) ([]string, error) { return nil, nil }),
			`ExpireAfter for step "session" is given a wallaroo_test.sessionV2, but the step's state is a wallaroo_test.session`},
		{"no time", wallaroo.ExpireAfter(sessions(), 0, sessionEnded), `ExpireAfter for step "session": the time must be more than 0, not 0s`},
		{"a negative time", wallaroo.ExpireAfter[string, session](sessions(), -time.Second, nil), "the time must be more than 0, not -1s"},
		{"twice", wallaroo.ExpireAfter(wallaroo.ExpireAfter(sessions(), time.Second, sessionEnded), 2*time.Second, sessionEnded),
			`ExpireAfter for step "session": its state expires already`},
	} {
		if err := build(c.p); err == nil || !strings.Contains(err.Error(), c.message) {
			t.Errorf("%s: error %v, want %q", c.what, err, c.message)
		}
	}
}

// expiryModel is what the session step's expiry does, computed directly: each key's last-seen
// time and count, and the keys that expire at a watermark, in order.
type expiryModel struct {
	after    uint64
	lastSeen map[string]uint64
	count    map[string]int
}

func (m *expiryModel) send(user string, at uint64) string {
	if _, ok := m.count[user]; !ok {
		m.lastSeen[user] = at
	}
	m.lastSeen[user] = max(m.lastSeen[user], at)
	m.count[user]++
	return user + ":" + strconv.Itoa(m.count[user])
}

func (m *expiryModel) advance(wm uint64) []string {
	type due struct {
		at   uint64
		user string
	}
	var dues []due
	for user, seen := range m.lastSeen {
		if seen+m.after <= wm {
			dues = append(dues, due{seen + m.after, user})
		}
	}
	slices.SortFunc(dues, func(a, b due) int {
		return cmp.Or(cmp.Compare(a.at, b.at), strings.Compare(a.user, b.user))
	})
	var out []string
	for _, d := range dues {
		out = append(out, fmt.Sprintf("ended %s:%d", d.user, m.count[d.user]))
		delete(m.lastSeen, d.user)
		delete(m.count, d.user)
	}
	return out
}

func TestExpiryMatchesAModelOverRandomMessagesAdvancesAndRestores(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	countsApp := func() wallaroo.SetupFunc {
		return func([]string) (*wallaroo.Application, error) {
			p := wallaroo.KeyByNamed(wallaroo.Source("in", wallaroo.TCPSource("h", "1", decodeTxn)), "user",
				func(t txn) string { return t.User })
			counts := wallaroo.ToState(p, "count", newWordTotal, func(t txn, c *wordTotal) (string, error) {
				c.count++
				return t.User + ":" + strconv.Itoa(c.count), nil
			})
			counts = wallaroo.ExpireAfter(counts, 7*time.Second, func(user string, c *wordTotal) ([]string, error) {
				return []string{fmt.Sprintf("ended %s:%d", user, c.count)}, nil
			})
			return wallaroo.BuildApplication("counts", wallaroo.ToSink(counts, wallaroo.TCPSink("h", "2", encodeLine)))
		}
	}
	users := []string{"u1", "u2", "u3", "u4", "u5"}
	for round := 0; round < 30; round++ {
		h := newHost(t, countsApp())
		m := &expiryModel{after: 7 * sec, lastSeen: map[string]uint64{}, count: map[string]int{}}
		// The host's copy of the state, kept up to date from the snapshots.
		copyOf := map[string][]byte{}
		watermark := uint64(0)
		for step := 0; step < 200; step++ {
			switch r := rng.Float64(); {
			case r < 0.6:
				user := users[rng.IntN(len(users))]
				// Not older than the watermark lets through.
				at := (watermark/sec + rng.Uint64N(5)) * sec
				h.send(user, 0, at)
				equal(t, fmt.Sprintf("seed %d round %d step %d: message", seed, round, step), h.drain(), []string{m.send(user, at)})
			case r < 0.9:
				watermark = (watermark/sec + rng.Uint64N(6)) * sec
				equal(t, fmt.Sprintf("seed %d round %d step %d: advance to %d s", seed, round, step, watermark/sec),
					h.advance(watermark), m.advance(watermark))
			default:
				// A checkpoint, then a crash: a new instance restores the host's copy.
				for _, e := range h.snapshot(1 + rng.IntN(3)) {
					if e.Removed {
						delete(copyOf, string(e.Key))
					} else {
						copyOf[string(e.Key)] = e.Value
					}
				}
				for more := true; more; {
					entries := h.snapshot(2)
					more = len(entries) == 2
					for _, e := range entries {
						if e.Removed {
							delete(copyOf, string(e.Key))
						} else {
							copyOf[string(e.Key)] = e.Value
						}
					}
				}
				var saved []wallaroo.StateEntry
				for key, value := range copyOf {
					saved = append(saved, wallaroo.StateEntry{Step: 2, Key: []byte(key), Value: value})
				}
				if keys := slices.Sorted(maps.Keys(m.count)); !reflect.DeepEqual(keys, slices.Sorted(maps.Keys(copyOf))) {
					t.Fatalf("seed %d round %d step %d: the host holds %v, the model %v", seed, round, step,
						slices.Sorted(maps.Keys(copyOf)), keys)
				}
				h = newHost(t, countsApp())
				h.restore(saved)
				equal(t, fmt.Sprintf("seed %d round %d step %d: after the restore", seed, round, step),
					h.advance(watermark), m.advance(watermark))
			}
		}
		equal(t, fmt.Sprintf("seed %d round %d: the end", seed, round), h.advance(math.MaxUint64), m.advance(1<<62))
	}
}
