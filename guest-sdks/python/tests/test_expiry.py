"""State expiry (``state_computation(..., expire_after=, on_expire=)``) on plain CPython: when a
key's state expires, what ``on_expire`` sends on, the removals a snapshot reports, and the
clock kept across a restore."""

import struct
import types

import pytest

import wallaroo
from wallaroo import _wire
from wallaroo._expiry import HEADER
from wallaroo._runtime import Runtime

ARGS = ["--in", "127.0.0.1:7000", "--out", "127.0.0.1:7002"]
S = wallaroo.seconds(1)


class Usage:
    def __init__(self):
        self.total = 0


def _decode(bs):
    user, amount = bs.decode().split(",")
    return (user, int(amount))


def app(expire_after=10 * S, on_expire=None, multi=False, fail_on=None, rekey=False):
    """``user,amount`` lines keyed by user, summed per user in a state step that forgets a user
    after ``expire_after``; the sink gets ``user=total`` per message and what ``on_expire``
    returns (keyed again by its text with ``rekey``, so that it is routed)."""
    make = wallaroo.state_computation_multi if multi else wallaroo.state_computation

    @make(name="usage", state=Usage, expire_after=expire_after, on_expire=on_expire)
    def add(data, usage):
        if data[0] == fail_on:
            raise ValueError(f"no usage for {fail_on}")
        usage.total += data[1]
        text = f"{data[0]}={usage.total}"
        return [text] if multi else text

    def application_setup(args):
        (host, port), out = (
            wallaroo.tcp_parse_input_addrs(args)[0],
            wallaroo.tcp_parse_output_addrs(args)[0],
        )
        decoder = wallaroo.decoder(header_length=4, length_fmt=">I")(_decode)
        key = wallaroo.key_extractor(lambda data: data[0])
        encoder = wallaroo.encoder(lambda text: text + "\n")
        pipeline = (
            wallaroo.source("in", wallaroo.TCPSourceConfig(host, port, decoder)).key_by(key).to(add)
        )
        if rekey:
            pipeline = pipeline.key_by(wallaroo.key_extractor(lambda text: text))
        pipeline = pipeline.to_sink(wallaroo.TCPSinkConfig(*out, encoder))
        return wallaroo.build_application("usage", pipeline)

    module = types.ModuleType("usage_app")
    module.application_setup = application_setup
    return module


def quiet(key, usage):
    return f"{key} quiet at {usage.total}"


class Host:
    """Delivers routed messages at once (with their event times) through the buffers the
    component exchanges with the host, and collects the sink's lines and the failures."""

    def __init__(self, module):
        self.runtime = Runtime(module, flat=True)
        self.spec = self.runtime.describe(ARGS)
        self.step = next(i for i, s in enumerate(self.spec.steps) if s.kind == "stateful")
        self.failures = []
        self.times = []

    def send(self, user, amount, time):
        batch = _wire.encode_batch([(b"", f"{user},{amount}".encode(), time)])
        return self._take(self.runtime.process(0, _wire.messages(batch)))

    def advance(self, watermark):
        return self._take(self.runtime.advance(watermark))

    def _take(self, buf):
        out = []
        for item in _wire.decode_outputs(buf):
            if item[0] == "route":
                batch = _wire.encode_batch([(item[1], item[3], item[4])])
                out += self._take(self.runtime.process(item[2], _wire.messages(batch)))
            elif item[0] == "emit":
                out.append(item[2].decode().rstrip("\n"))
            else:
                self.failures.append(item)
        return out

    def snapshot(self):
        """What snapshot-changed reports, through its buffer: ``{key: value or None}``."""
        buf = bytes(_wire.encode_entries(self.runtime.snapshot_changed()))
        (count,) = _wire._COUNT.unpack_from(buf)
        heads = [struct.unpack_from("<III", buf, 4 + 12 * i) for i in range(count)]
        at, found = 4 + 12 * count, {}
        for step, key_len, value_len in heads:
            assert step == self.step
            key = buf[at : at + key_len]
            at += key_len
            if value_len == _wire.REMOVED:
                found[key] = None
                continue
            found[key] = buf[at : at + value_len]
            at += value_len
        assert at == len(buf)
        return found

    def keys(self):
        return set(self.runtime._stores[self.step][0])


def test_a_key_expires_once_its_time_passes_without_a_message_and_not_before():
    host = Host(app(on_expire=quiet))
    assert host.send("ann", 5, 1 * S) == ["ann=5"]
    assert host.send("bob", 1, 2 * S) == ["bob=1"]
    assert host.advance(11 * S - 1) == []
    assert host.advance(11 * S) == ["ann quiet at 5"]
    assert host.keys() == {b"bob"}
    assert host.advance(100 * S) == ["bob quiet at 1"]
    assert host.keys() == set()
    # A message after expiry starts from a new state.
    assert host.send("ann", 2, 101 * S) == ["ann=2"]


def test_a_message_moves_the_keys_clock_on_and_expiry_goes_in_deadline_order():
    host = Host(app(on_expire=quiet))
    host.send("ann", 1, 1 * S)
    host.send("bob", 1, 2 * S)
    host.send("ann", 1, 5 * S)  # ann now expires at 15 s, after bob at 12 s
    assert host.advance(14 * S) == ["bob quiet at 1"]
    assert host.advance(20 * S) == ["ann quiet at 2"]


def test_what_on_expire_returns_goes_on_with_the_expiry_time_as_its_event_time():
    seen = []

    def farewell(key, usage):
        seen.append((type(key), key))
        return None if key == "bob" else f"bye {key}"

    host = Host(app(on_expire=farewell, rekey=True))
    host.send("ann", 1, 1 * S)
    host.send("bob", 1, 1 * S)
    out = host.runtime.advance(11 * S)
    routed = [item for item in _wire.decode_outputs(out) if item[0] == "route"]
    assert [item[4] for item in routed] == [11 * S]
    assert seen == [(str, "ann"), (str, "bob")]


def test_without_on_expire_a_key_just_goes_and_multi_steps_send_lists():
    host = Host(app())
    host.send("ann", 1, 1 * S)
    assert host.advance(20 * S) == []
    assert host.keys() == set()
    host = Host(app(multi=True, on_expire=lambda key, usage: [f"{key}:a", f"{key}:b"]))
    host.send("ann", 1, 1 * S)
    assert host.advance(20 * S) == ["ann:a", "ann:b"]


def test_an_on_expire_that_fails_is_a_failure_of_the_step_with_the_key_and_no_input():
    def broken(key, usage):
        raise RuntimeError("cannot say goodbye")

    host = Host(app(on_expire=broken))
    host.send("ann", 1, 1 * S)
    assert host.advance(20 * S) == []
    [(kind, index, step, key, error)] = host.failures
    assert (kind, index, step, key) == ("failed", None, host.step, b"ann")
    assert "cannot say goodbye" in error
    assert host.keys() == set()  # expired all the same


def test_removals_are_reported_once_and_a_key_back_again_is_state_not_a_removal():
    host = Host(app())
    host.send("ann", 1, 1 * S)
    host.send("bob", 1, 1 * S)
    host.snapshot()
    host.advance(12 * S)
    assert host.snapshot() == {b"ann": None, b"bob": None}
    assert host.snapshot() == {}
    host.send("ann", 1, 13 * S)
    host.advance(30 * S)  # ann expires again: removed, not its new state
    host.send("bob", 1, 31 * S)  # bob is back: its state, not a removal
    found = host.snapshot()
    assert found[b"ann"] is None
    assert found[b"bob"].startswith(HEADER)


def test_removals_count_against_the_entries_a_snapshot_may_return():
    host = Host(app())
    for user in "abcde":
        host.send(user, 1, 1 * S)
    host.runtime.snapshot_changed()
    host.advance(12 * S)
    first = host.runtime.snapshot_changed(3)
    rest = host.runtime.snapshot_changed(3)
    assert len(first) == 3 and len(rest) == 2
    assert {e[1] for e in first + rest} == {b"a", b"b", b"c", b"d", b"e"}
    assert all(e[2] is None for e in first + rest)


def test_a_restored_key_keeps_its_clock():
    host = Host(app(on_expire=quiet))
    host.send("ann", 3, 4 * S)
    entries = host.runtime.snapshot_changed()
    fresh = Host(app(on_expire=quiet))
    fresh.runtime.restore(entries)
    assert fresh.advance(14 * S - 1) == []
    assert fresh.advance(14 * S) == ["ann quiet at 3"]


def test_a_moved_key_takes_its_clock_along_and_leaves_nothing_to_expire():
    host = Host(app(on_expire=quiet))
    host.send("ann", 3, 4 * S)
    taken = host.runtime.take([(host.step, b"ann")])
    assert host.advance(100 * S) == []
    other = Host(app(on_expire=quiet))
    other.runtime.restore(taken)
    assert other.advance(14 * S) == ["ann quiet at 3"]


def test_state_written_without_expiry_gets_a_full_period_from_the_next_watermark():
    plain = Host(app(expire_after=None))
    plain.send("ann", 3, 4 * S)
    entries = plain.runtime.snapshot_changed()
    assert not entries[0][2].startswith(HEADER)
    host = Host(app(on_expire=quiet))
    host.runtime.restore(entries)
    assert host.advance(50 * S) == []
    assert host.advance(60 * S - 1) == []
    assert host.advance(60 * S) == ["ann quiet at 3"]


def test_a_clock_given_at_the_first_watermark_is_saved_so_a_copy_keeps_it():
    plain = Host(app(expire_after=None))
    plain.send("ann", 3, 4 * S)
    host = Host(app(on_expire=quiet))
    host.runtime.restore(plain.runtime.snapshot_changed())
    assert host.advance(50 * S) == []
    # The clock (50 s) is saved: an instance made from the snapshot expires the key at 60 s.
    copy = Host(app(on_expire=quiet))
    copy.runtime.restore(host.runtime.snapshot_changed())
    assert copy.advance(55 * S) == []
    assert copy.advance(60 * S) == ["ann quiet at 3"]


def test_a_clockless_key_restored_at_the_end_of_time_expires_then():
    plain = Host(app(expire_after=None))
    plain.send("ann", 3, 4 * S)
    host = Host(app(on_expire=quiet))
    host.runtime.restore(plain.runtime.snapshot_changed())
    assert host.advance(2**64 - 1) == ["ann quiet at 3"]
    assert host.keys() == set()


def test_a_step_without_expiry_restores_state_written_with_it():
    host = Host(app(on_expire=quiet))
    host.send("ann", 3, 4 * S)
    entries = host.runtime.snapshot_changed()
    plain = Host(app(expire_after=None))
    plain.runtime.restore(entries)
    assert plain.send("ann", 1, 5 * S) == ["ann=4"]


def test_every_key_expires_when_every_stream_has_ended():
    host = Host(app(expire_after=wallaroo.hours(24), on_expire=quiet))
    host.send("ann", 3, 4 * S)
    assert host.advance(2**64 - 1) == ["ann quiet at 3"]


def test_a_failed_message_still_counts_as_a_message_for_the_keys_clock():
    host = Host(app(on_expire=quiet, fail_on="bob"))
    host.send("bob", 1, 1 * S)
    assert len(host.failures) == 1
    assert host.advance(11 * S) == ["bob quiet at 0"]


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"expire_after": 0}, "expire_after must be a positive duration"),
        ({"expire_after": 1.5}, "expire_after must be a positive duration"),
        ({"expire_after": True}, "expire_after must be a positive duration"),
        ({"on_expire": quiet}, "needs expire_after"),
        ({"expire_after": S, "on_expire": "quiet"}, "on_expire must be a function"),
    ],
)
def test_bad_expiry_settings_are_refused_naming_the_step(kwargs, error):
    with pytest.raises(wallaroo.WallarooParameterError, match=error) as raised:
        wallaroo.state_computation(name="usage", state=Usage, **kwargs)(lambda d, s: d)
    assert "'usage'" in str(raised.value)
