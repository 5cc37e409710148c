"""State an earlier version of the application pickled, restored into a new version: what pickle
itself allows (the same module and class name, ``__setstate__``, a class alias) and the SDK's
``upgrade_state`` hook for a class that is gone or changed its shape."""

import pickle
import sys
import types

import pytest
from test_runtime import SimulatedHost, app_module

import wallaroo

# Every version of the application lives in one module, "counter_app", as a rebuilt component
# has the same module name; a test installs the version it runs.
MODULE = "counter_app"


@pytest.fixture(autouse=True)
def _no_leftover_module():
    yield
    sys.modules.pop(MODULE, None)


def version(state_class, counted, **more_classes):
    """Installs a version of "counter_app" whose stateful step "count" keeps ``state_class``
    per word and ``counted(state)`` gives the word's count after one more; returns its host.
    ``more_classes`` are the module's other names (an alias, an earlier class kept)."""
    module = types.ModuleType(MODULE)
    for cls in [state_class, *more_classes.values()]:
        if isinstance(cls, type) and cls.__module__ != MODULE:
            cls.__module__ = MODULE
    module.__dict__.update(more_classes)
    setattr(module, state_class.__name__, state_class)
    sys.modules[MODULE] = module

    @wallaroo.decoder(header_length=4, length_fmt=">I")
    def decode(data):
        return data.decode()

    @wallaroo.computation_multi(name="split")
    def split(text):
        return text.split()

    @wallaroo.key_extractor
    def word(w):
        return w

    @wallaroo.state_computation(name="count", state=state_class)
    def count(w, state):
        return f"{w} => {counted(state)}\n"

    @wallaroo.encoder
    def encode(line):
        return line.encode()

    def setup(args):
        in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
        out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
        lines = wallaroo.source("lines", wallaroo.TCPSourceConfig(in_host, in_port, decode))
        pipeline = (
            lines.to(split)
            .key_by(word)
            .to(count)
            .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode))
        )
        return wallaroo.build_application("counter", pipeline)

    return SimulatedHost(app_module(setup, MODULE))


class Total:
    """Version 1's state."""

    count = 0


def one_more(total):
    total.count += 1
    return total.count


def version_1_state():
    """Version 1 counts a, a, b: its state entries."""
    v1 = version(Total, one_more)
    v1.send([b"a a b"])
    assert v1.output() == b"a => 1\na => 2\nb => 1\n"
    return v1.runtime.snapshot_changed()


def counts_go_on(host):
    host.send([b"a b c"])
    assert host.output() == b"a => 3\nb => 2\nc => 1\n"


def test_a_class_of_the_same_module_and_name_unpickles_and_keeps_its_attributes():
    saved = version_1_state()

    class Total:  # version 2's, with a field added: a class attribute gives old states its value
        count = 0
        seen_last = ""

    def one_more_seen(total):
        total.count += 1
        return f"{total.count} {total.seen_last or '-'}"

    v2 = version(Total, one_more_seen)
    v2.runtime.restore(saved)
    v2.send([b"a"])
    assert v2.output() == b"a => 3 -\n"


def test_setstate_converts_the_old_attributes_of_a_class_that_kept_its_name():
    saved = version_1_state()

    class Total:  # version 2: "count" is now "n"
        def __init__(self):
            self.n = 0

        def __setstate__(self, state):
            self.n = state.get("n", state.get("count", 0))

    def one_more_n(total):
        total.n += 1
        return total.n

    v2 = version(Total, one_more_n)
    v2.runtime.restore(saved)
    counts_go_on(v2)


def test_an_alias_of_the_old_name_unpickles_a_renamed_class():
    saved = version_1_state()

    class Tally:
        count = 0

    v2 = version(Tally, one_more, Total=Tally)
    v2.runtime.restore(saved)
    counts_go_on(v2)


def test_without_the_old_class_the_restore_fails_naming_the_class():
    saved = version_1_state()

    class Tally:
        count = 0

    v2 = version(Tally, one_more)
    with pytest.raises(RuntimeError, match="for key b'a'.*Total"):
        v2.runtime.restore(saved)


class Stats:
    """Version 2's state: another class, another shape; version 1's class is gone."""

    def __init__(self, total=0, words=0):
        self.total, self.words = total, words

    @classmethod
    def upgrade_state(cls, old):
        assert isinstance(old, wallaroo.OldState), old
        assert (type(old).__module__, type(old).__name__) == (MODULE, "Total")
        return cls(total=old.count)


def stats_one_more(stats):
    stats.total += 1
    return stats.total


def test_upgrade_state_converts_state_of_a_class_that_is_gone_and_counts_go_on():
    saved = version_1_state()
    v2 = version(Stats, stats_one_more)
    v2.runtime.restore(saved)
    # Converted states are reported changed, so the host's copy becomes version 2's.
    converted = v2.runtime.snapshot_changed()
    assert {key: type(pickle.loads(value)).__name__ for _, key, value in converted} == {
        b"a": "Stats",
        b"b": "Stats",
    }
    counts_go_on(v2)
    # Version 2's own state is restored as it is: upgrade_state sees only older ones.
    again = v2.runtime.snapshot_changed()
    v2b = version(Stats, stats_one_more)
    v2b.runtime.restore(again)
    assert v2b.runtime.snapshot_changed() == []  # nothing converted: the host has these bytes
    v2b.send([b"a"])
    assert v2b.output() == b"a => 4\n"


def test_upgrade_state_receives_an_old_class_that_still_exists():
    saved = version_1_state()

    class Current:
        def __init__(self, n=0):
            self.n = n

        @classmethod
        def upgrade_state(cls, old):
            assert isinstance(old, Total)
            return cls(old.count)

    def one_more_n(state):
        state.n += 1
        return state.n

    v2 = version(Current, one_more_n, Total=Total)
    v2.runtime.restore(saved)
    counts_go_on(v2)


def test_an_upgrade_that_fails_or_returns_another_class_refuses_the_restore():
    saved = version_1_state()

    class Raising(Stats):
        @classmethod
        def upgrade_state(cls, old):
            raise ValueError("no count")

    with pytest.raises(RuntimeError, match="for key b'a'.*no count"):
        version(Raising, stats_one_more).runtime.restore(saved)

    class Wrong(Stats):
        @classmethod
        def upgrade_state(cls, old):
            return old

    with pytest.raises(RuntimeError, match="Wrong.upgrade_state returned a Total, not a Wrong"):
        version(Wrong, stats_one_more).runtime.restore(saved)
