"""Windows (Wallaroo 0.6's range_windows and count_windows over an Aggregation) on plain CPython:
what each window holds, when it fires, late data, and windows as checkpointed key state."""

import os
import pickle
import random
import types

import pytest

import wallaroo
from wallaroo import _wire
from wallaroo._runtime import Runtime

ARGS = ["--in", "127.0.0.1:7000", "--out", "127.0.0.1:7002"]
S = wallaroo.seconds(1)


class Total:
    def __init__(self):
        self.total = 0
        self.values = []


class SumAggregation(wallaroo.Aggregation):
    """Sums amounts, keeping what it summed so a test can see which messages a window held;
    ``combine`` is counted, to show sliding windows use it."""

    combined = 0

    def initial_accumulator(self):
        return Total()

    def update(self, data, acc):
        acc.total += data[1]
        acc.values.append(data[1])

    def combine(self, a, b):
        SumAggregation.combined += 1
        new = Total()
        new.total = a.total + b.total
        new.values = a.values + b.values
        return new

    def output(self, key, acc):
        return f"{key}:{acc.total}:{sorted(acc.values)}"


class CountAggregation(wallaroo.Aggregation):
    """An immutable accumulator: ``update`` returns the new one."""

    def initial_accumulator(self):
        return 0

    def update(self, data, acc):
        return acc + 1

    def combine(self, a, b):
        return a + b

    def output(self, key, acc):
        return f"{key}={acc}"


def _decode(bs):
    user, amount = bs.decode().split(",")
    return (user, int(amount))


def app(window, keyed=True):
    """An application whose TCP source decodes ``user,amount`` lines, keys them by user (unless
    not ``keyed``) and runs ``window``."""

    def application_setup(args):
        (host, port), out = (
            wallaroo.tcp_parse_input_addrs(args)[0],
            wallaroo.tcp_parse_output_addrs(args)[0],
        )
        decoder = wallaroo.decoder(header_length=4, length_fmt=">I")(_decode)
        key = wallaroo.key_extractor(lambda data: data[0])
        pipeline = wallaroo.source("in", wallaroo.TCPSourceConfig(host, port, decoder))
        if keyed:
            pipeline = pipeline.key_by(key)
        encoder = wallaroo.encoder(lambda text: text + "\n")
        pipeline = pipeline.to(window).to_sink(wallaroo.TCPSinkConfig(*out, encoder))
        return wallaroo.build_application("windows", pipeline)

    module = types.ModuleType("windows_app")
    module.application_setup = application_setup
    return module


class Host:
    """Delivers routed messages at once, keeping each message's event time, and collects what
    the sink receives and what fails. With ``flat``, every call goes through the buffers the
    component exchanges with the host."""

    def __init__(self, module, flat=False):
        self.flat = flat
        self.runtime = Runtime(module, flat=flat)
        self.spec = self.runtime.describe(ARGS)
        self.window_step = next(
            i for i, step in enumerate(self.spec.steps) if step.kind == "stateful"
        )
        self.out = []
        self.failures = []
        self.late = []

    def send(self, user, amount, time):
        """One message from the source, with its event time."""
        self._take(self._process(0, [(b"", f"{user},{amount}".encode(), time)]))

    def _process(self, segment, batch):
        if not self.flat:
            return self.runtime.process(segment, batch)
        out = self.runtime.process(segment, _wire.messages(_wire.encode_batch(batch)))
        return _wire.decode_outputs(out)

    def advance(self, watermark):
        out = self.runtime.advance(watermark)
        self._take(_wire.decode_outputs(out) if self.flat else out)
        return self.drain()

    def drain(self):
        out, self.out = self.out, []
        return out

    def _take(self, items):
        for item in items:
            if item[0] == "route":
                self._take(self._process(item[2], [(item[1], item[3], item[4])]))
            elif item[0] == "emit":
                self.out.append(item[2].decode().rstrip("\n"))
            elif item[0] == "late":
                self.late.append(item)
            else:
                self.failures.append(item)


def sliding(seconds, slide=None, delay=None, policy=None, aggregation=SumAggregation):
    windows = wallaroo.range_windows(wallaroo.seconds(seconds))
    if slide is not None:
        windows = windows.with_slide(wallaroo.seconds(slide))
    if delay is not None:
        windows = windows.with_delay(wallaroo.seconds(delay))
    if policy is not None:
        windows = windows.with_late_data_policy(policy)
    return windows.over(aggregation)


# ------------------------------------------------------------------------------------------------
# Tumbling and sliding windows


def test_tumbling_windows_hold_the_messages_of_their_range_and_fire_at_their_end():
    host = Host(app(sliding(3)))
    for amount, time in [(1, 4.043), (2, 1.022), (3, 6.0), (4, 5.655)]:
        host.send("fido", amount, round(time * S))
    assert host.advance(3 * S - 1) == []
    assert host.advance(3 * S) == ["fido:2:[2]"]
    assert host.advance(9 * S) == ["fido:5:[1, 4]", "fido:3:[3]"]
    assert host.advance(100 * S) == []  # each window fires once


def test_sliding_windows_hold_every_message_of_their_range():
    # Wallaroo's documented example: range 6 s, slide 3 s.
    host = Host(app(sliding(6, slide=3)))
    for amount, time in [(1, 4.043), (2, 1.022), (3, 6.0), (4, 5.655)]:
        host.send("rex", amount, round(time * S))
    SumAggregation.combined = 0
    # [-3, 3) [0, 6) [3, 9) [6, 12)
    assert host.advance(12 * S) == [
        "rex:2:[2]",
        "rex:7:[1, 2, 4]",
        "rex:8:[1, 3, 4]",
        "rex:3:[3]",
    ]
    assert SumAggregation.combined >= 6  # windows are joined from their slices


def test_a_window_waits_for_its_delay_after_its_end():
    host = Host(app(sliding(3, delay=2)))
    host.send("a", 5, 1 * S)
    assert host.advance(4 * S) == []
    assert host.advance(5 * S - 1) == []
    assert host.advance(5 * S) == ["a:5:[5]"]


def test_windows_fire_for_keys_that_receive_nothing_more_in_the_order_they_end():
    host = Host(app(sliding(2)))
    host.send("b", 1, 3 * S)
    host.send("a", 1, 1 * S)
    host.send("c", 1, 5 * S)
    # Each key got one message; a watermark alone fires them all, earliest window first.
    assert host.advance(10 * S) == ["a:1:[1]", "b:1:[1]", "c:1:[1]"]


def test_an_immutable_accumulator_is_the_value_update_returns():
    host = Host(app(sliding(10, slide=5, aggregation=CountAggregation)))
    for time in (1, 2, 7):
        host.send("k", 0, time * S)
    assert host.advance(20 * S) == ["k=2", "k=3", "k=1"]


def test_unkeyed_windows_see_the_whole_flow():
    host = Host(app(sliding(5), keyed=False))
    host.send("a", 1, 1 * S)
    host.send("b", 2, 2 * S)
    assert host.advance(5 * S) == [":3:[1, 2]"]


def _expected_windows(events, window, slide):
    """Every non-empty window's (start, total, values), computed directly from the events."""
    expected = []
    if not events:
        return expected
    first = (min(t for t, _ in events) - window) // slide * slide
    last = max(t for t, _ in events)
    start = first
    while start <= last:
        inside = sorted(v for t, v in events if start <= t < start + window)
        if inside:
            expected.append((start, sum(inside), inside))
        start += slide
    return expected


@pytest.mark.parametrize("flat", [False, True])
def test_sliding_windows_match_sums_computed_directly_over_random_input(flat):
    seed = int(os.environ.get("WALLAROO_TEST_SEED", random.randrange(2**32)))
    print(f"seed {seed} (WALLAROO_TEST_SEED={seed} replays it)")
    rng = random.Random(seed)
    for _round in range(20):
        window, slide = rng.choice([(9, 3), (10, 4), (6, 6), (5, 1), (7, 2)])
        host = Host(app(sliding(window, slide=slide)), flat=flat)
        events = {user: [] for user in ("u1", "u2", "u3")}
        outputs = {user: [] for user in events}
        watermark = 0
        for _ in range(rng.randrange(1, 60)):
            user = rng.choice(sorted(events))
            # Never late: event times at or after what the watermark lets through.
            time = watermark // S + rng.randrange(0, 30)
            amount = rng.randrange(-50, 50)
            host.send(user, amount, time * S)
            events[user].append((time, amount))
            if rng.random() < 0.3:
                watermark = (watermark // S + rng.randrange(0, 10)) * S
                for line in host.advance(watermark):
                    user, total, _values = line.split(":")
                    outputs[user].append(line)
        for line in host.advance(10**6 * S):
            outputs[line.split(":")[0]].append(line)
        for user, user_events in events.items():
            expected = [
                f"{user}:{total}:{values}"
                for _start, total, values in _expected_windows(user_events, window, slide)
            ]
            assert outputs[user] == expected, (seed, window, slide, user)


# ------------------------------------------------------------------------------------------------
# Late data


@pytest.mark.parametrize("flat", [False, True])
def test_late_data_is_dropped_by_default_counted_and_reported(flat):
    host = Host(app(sliding(3)), flat=flat)
    host.send("a", 1, 1 * S)
    assert host.advance(4 * S) == ["a:1:[1]"]
    host.send("a", 2, 2 * S)  # its window [0, 3) fired
    host.send("a", 3, 4 * S)  # on time
    assert host.advance(6 * S) == ["a:3:[3]"]
    assert host.runtime.late == {host.window_step: 1}
    assert host.late == [("late", 0, host.window_step)]


def test_late_data_fires_a_window_of_its_own_with_fire_per_message():
    host = Host(app(sliding(3, policy="fire-per-message")))
    host.send("a", 1, 1 * S)
    assert host.advance(4 * S) == ["a:1:[1]"]
    host.send("a", 2, 2 * S)
    assert host.drain() == ["a:2:[2]"]
    assert host.runtime.late == {host.window_step: 1}


def test_late_data_joins_the_oldest_open_window_with_place_in_oldest_window():
    host = Host(app(sliding(3, policy="place-in-oldest-window")))
    host.send("a", 1, 1 * S)
    host.send("a", 5, 7 * S)
    assert host.advance(4 * S) == ["a:1:[1]"]
    host.send("a", 2, 2 * S)  # [0, 3) fired: into [3, 6), the oldest window still open
    assert host.drain() == []
    assert host.advance(20 * S) == ["a:2:[2]", "a:5:[5]"]


def test_a_policy_may_be_written_as_wallaroo_wrote_it():
    for policy in ("drop", "fire_per_message", "PLACE_IN_OLDEST_WINDOW"):
        wallaroo.range_windows(S).with_late_data_policy(policy).over(SumAggregation)


# ------------------------------------------------------------------------------------------------
# Count windows


def test_count_windows_output_every_n_messages_per_key():
    host = Host(app(wallaroo.count_windows(3).over(SumAggregation)))
    for amount in range(1, 8):
        host.send("a", amount, 0)
        host.send("b", amount * 10, 0)
    assert host.drain() == [
        "a:6:[1, 2, 3]",
        "b:60:[10, 20, 30]",
        "a:15:[4, 5, 6]",
        "b:150:[40, 50, 60]",
    ]
    assert host.advance(10**6 * S) == []  # a window of one is not full


# ------------------------------------------------------------------------------------------------
# Windows are state


def test_open_windows_survive_a_checkpoint_and_restore_and_none_fires_twice():
    def run(crash_at):
        host = Host(app(sliding(6, slide=2)))
        out = []
        events = [("a", i, i * S // 2) for i in range(1, 40)] + [("b", 7, 3 * S)]
        for n, (user, amount, time) in enumerate(events):
            if n == crash_at:
                saved = host.runtime.snapshot_changed()
                watermark = host.runtime._clock.watermark
                host = Host(app(sliding(6, slide=2)))
                host.runtime.restore(saved)
                out += host.advance(watermark)
            host.send(user, amount, time)
            if n % 5 == 4:
                out += host.advance(time)
        return out + host.advance(10**6 * S)

    uninterrupted = run(None)
    assert len(uninterrupted) > 10
    for crash_at in (3, 17, 30):
        assert run(crash_at) == uninterrupted


@pytest.mark.parametrize("flat", [False, True])
def test_a_window_whose_output_raises_is_reported_and_the_others_fire(flat):
    class Picky(SumAggregation):
        def output(self, key, acc):
            if acc.total == 13:
                raise ValueError("unlucky")
            return super().output(key, acc)

    host = Host(app(sliding(2, aggregation=Picky)), flat=flat)
    host.send("a", 13, 1 * S)
    host.send("a", 1, 3 * S)
    assert host.advance(10 * S) == ["a:1:[1]"]
    [(tag, index, step, key, error)] = host.failures
    assert (tag, index, step, key) == ("failed", None, host.window_step, b"a")
    assert "ValueError: unlucky" in error


def test_window_state_pickles_with_its_accumulators():
    host = Host(app(sliding(4, slide=2)))
    host.send("a", 3, 1 * S)
    [(step, key, value)] = host.runtime.snapshot_changed()
    state = pickle.loads(value)
    assert (step, key) == (host.window_step, b"a")
    assert [acc.total for acc in state.panes.values()] == [3]


# ------------------------------------------------------------------------------------------------
# Mistakes are named


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: wallaroo.range_windows(0), "more than 0"),
        (lambda: wallaroo.range_windows(1.5), "whole number of nanoseconds"),
        (lambda: wallaroo.range_windows(S).with_slide(2 * S), "cannot be longer than the range"),
        (lambda: wallaroo.range_windows(S).with_delay(1).with_delay(2), "once per window"),
        (lambda: wallaroo.range_windows(S).with_late_data_policy("keep"), "unknown late data"),
        (lambda: wallaroo.count_windows(0), "1 or more"),
        (lambda: wallaroo.range_windows(S).over(object), r"has no initial_accumulator\(\) method"),
    ],
)
def test_a_window_specification_that_cannot_work_is_refused(make, message):
    with pytest.raises(wallaroo.WallarooParameterError, match=message):
        make()


def test_a_window_without_its_aggregation_is_refused_by_to():
    with pytest.raises(wallaroo.WallarooParameterError, match=r"needs \.over"):
        Host(app(wallaroo.range_windows(S)))


def test_an_aggregation_method_with_the_wrong_arity_is_named():
    class Bad(SumAggregation):
        def update(self, data):
            pass

    with pytest.raises(
        wallaroo.WallarooParameterError, match=r"class Bad.*: update\(\) must take 2 parameters"
    ):
        wallaroo.count_windows(2).over(Bad)


def test_range_windows_over_the_output_of_windows_are_refused_naming_both():
    def application_setup(args):
        decoder = wallaroo.decoder(header_length=4, length_fmt=">I")(_decode)
        key = wallaroo.key_extractor(lambda data: data[0])
        encoder = wallaroo.encoder(lambda text: text + "\n")
        pipeline = (
            wallaroo.source("in", wallaroo.TCPSourceConfig("h", "1", decoder))
            .key_by(key)
            .to(wallaroo.count_windows(2).over(CountAggregation))
            .key_by(key)
            .to(sliding(3, aggregation=SumAggregation))
            .to_sink(wallaroo.TCPSinkConfig("h", "2", encoder))
        )
        return wallaroo.build_application("chained", pipeline)

    module = types.ModuleType("chained")
    module.application_setup = application_setup
    with pytest.raises(wallaroo.WallarooParameterError, match="'SumAggregation' take the output"):
        Runtime(module).describe(ARGS)


# ------------------------------------------------------------------------------------------------
# Event time from the data


def _timed_app(event_time):
    def application_setup(args):
        decoder = wallaroo.decoder(header_length=4, length_fmt=">I")(
            lambda bs: bs.decode().split(",")
        )
        key = wallaroo.key_extractor(lambda data: data[0])
        encoder = wallaroo.encoder(lambda text: text + "\n")
        pipeline = (
            wallaroo.source(
                "in", wallaroo.TCPSourceConfig("h", "1", decoder), event_time=event_time
            )
            .key_by(key)
            .to(wallaroo.count_windows(1).over(CountAggregation))
            .to_sink(wallaroo.TCPSinkConfig("h", "2", encoder))
        )
        return wallaroo.build_application("timed", pipeline)

    module = types.ModuleType("timed")
    module.application_setup = application_setup
    return module


@pytest.mark.parametrize("flat", [False, True])
def test_a_source_takes_event_times_from_the_data_when_asked(flat):
    import datetime

    def event_time(data):
        if data[1] == "date":
            return datetime.datetime(2019, 3, 1, 12, 0, 0, 500)
        return float(data[1])

    runtime = Runtime(_timed_app(event_time), flat=flat)
    spec = runtime.describe(ARGS)
    assert spec.sources[0].event_time_from_data
    batch = [(b"", b"a,1.5", 7), (b"", b"b,date", 7), (b"", b"c,x", 7), (b"", b"d,-1", 7)]
    if flat:
        out = _wire.decode_outputs(runtime.process(0, _wire.messages(_wire.encode_batch(batch))))
    else:
        out = runtime.process(0, batch)
    assert [(item[1], item[4]) for item in out if item[0] == "route"] == [
        (b"a", 1_500_000_000),
        (b"b", 1_551_441_600_000_500_000),
    ]
    failures = [item for item in out if item[0] == "failed"]
    assert [f[1] for f in failures] == [2, 3]
    assert "event_time: ValueError" in failures[0][4]
    assert "before 1970" in failures[1][4]


def test_an_event_time_function_must_take_the_message():
    with pytest.raises(wallaroo.WallarooParameterError, match="event_time"):
        Runtime(_timed_app(lambda: 0)).describe(ARGS)


def test_without_an_event_time_function_messages_keep_their_ingest_time():
    runtime = Runtime(app(sliding(3)))
    assert not runtime.describe(ARGS).sources[0].event_time_from_data
    [route] = runtime.process(0, [(b"", b"a,1", 42)])
    assert route[4] == 42
