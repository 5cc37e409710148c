"""The runtime: step tables, fused execution, routing, failures and state, driven as the host
drives a component."""

import pickle
import re
import struct
import types

import pytest

import wallaroo
from wallaroo import _wire
from wallaroo._runtime import AppSpec, Runtime, SinkSpec, SourceSpec, StepSpec

# ------------------------------------------------------------------------------------------------
# A stand-in for the Rust host, used by this module's tests and test_component.py

# Arguments as a node passes them to application_setup.
ARGS = ["--in", "127.0.0.1:7000", "--out", "127.0.0.1:7002"]


def app_module(setup, name="test_app"):
    """A module object whose application_setup is ``setup``."""
    module = types.ModuleType(name)
    module.application_setup = setup
    return module


class TwinRuntime:
    """The runtime twice in lockstep, one returning tuples and one the flat buffers the
    component returns (fed through the buffers too): every answer must agree, so each test
    written against tuples also checks the component's path. Answers are the tuples'."""

    def __init__(self, module):
        self.tuples = Runtime(module)
        self.flat = Runtime(module, flat=True)

    @staticmethod
    def _both(tuples_call, flat_call):
        try:
            expected = tuples_call()
        except Exception as error:
            with pytest.raises(type(error)) as raised:
                flat_call()
            assert str(raised.value) == str(error)
            raise
        return expected, flat_call()

    def describe(self, args):
        spec, flat_spec = self._both(
            lambda: self.tuples.describe(args), lambda: self.flat.describe(args)
        )
        assert flat_spec == spec
        return spec

    def process(self, segment, batch):
        batch = list(batch)
        out, flat = self._both(
            lambda: self.tuples.process(segment, batch),
            lambda: self.flat.process(segment, _wire.messages(_wire.encode_batch(batch))),
        )
        assert type(flat) is bytes
        assert _wire.decode_outputs(flat) == out
        return out

    def snapshot_changed(self, max_entries=None):
        entries, flat = self._both(
            lambda: self.tuples.snapshot_changed(max_entries),
            lambda: self.flat.snapshot_changed(max_entries),
        )
        assert list(_wire.decode_entries(bytes(_wire.encode_entries(flat)))) == entries
        return entries

    def restore(self, entries):
        entries = list(entries)
        buf = bytes(_wire.encode_entries(entries))
        self._both(
            lambda: self.tuples.restore(entries),
            lambda: self.flat.restore(_wire.decode_entries(buf)),
        )

    def take(self, keys):
        keys = list(keys)
        taken, flat = self._both(
            lambda: self.tuples.take(keys),
            lambda: self.flat.take(_wire.decode_keys(_wire.encode_keys(keys))),
        )
        assert flat == taken
        return taken


class SimulatedHost:
    """One node with one instance: routed messages are delivered in the order they were
    produced, consecutive messages for the same segment in one batch, as the host does."""

    def __init__(self, module):
        self.runtime = TwinRuntime(module)
        self.spec = self.runtime.describe(ARGS)
        self.emitted = [[] for _ in self.spec.sinks]
        self.failures = []
        self.ended = []  # segments whose generator said it ran out
        self.batches = []  # (segment, batch) of every process call, for inspection

    def source_segment(self, name):
        return next(source.segment for source in self.spec.sources if source.name == name)

    def send(self, payloads, source=None):
        """Feeds one batch of frame payloads to a source (the first one by default) and
        delivers everything it leads to."""
        segment = self.spec.sources[0].segment if source is None else self.source_segment(source)
        pending = [(segment, [(b"", payload) for payload in payloads])]
        while pending:
            segment, batch = pending.pop(0)
            self.batches.append((segment, batch))
            for item in self.runtime.process(segment, batch):
                if item[0] == "route":
                    _tag, key, target, payload, time = item
                    if pending and pending[-1][0] == target:
                        pending[-1][1].append((key, payload, time))
                    else:
                        pending.append((target, [(key, payload, time)]))
                elif item[0] == "emit":
                    self.emitted[item[1]].append(item[2])
                elif item[0] == "ended":
                    self.ended.append(item[1])
                else:
                    self.failures.append(item)

    def output(self, sink=0):
        return b"".join(self.emitted[sink])


# ------------------------------------------------------------------------------------------------
# Word count: split (multi) -> key_by -> count (state) -> encoder


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode_text(data):
    return data.decode("utf-8")


@wallaroo.computation_multi(name="split")
def split(text):
    return text.split()


@wallaroo.key_extractor
def word_key(word):
    return word


class WordTotal:
    def __init__(self):
        self.count = 0


@wallaroo.state_computation(name="count", state=WordTotal)
def count_word(word, total):
    total.count += 1
    return (word, total.count)


@wallaroo.encoder
def encode_count(pair):
    return f"{pair[0]} => {pair[1]}\n".encode()


def word_count_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    lines = wallaroo.source("lines", wallaroo.TCPSourceConfig(in_host, in_port, decode_text))
    pipeline = (
        lines.to(split)
        .key_by(word_key)
        .to(count_word)
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_count))
    )
    return wallaroo.build_application("word count", pipeline)


WORD_COUNT = app_module(word_count_setup)


def test_word_count_describes_its_step_table():
    spec = TwinRuntime(WORD_COUNT).describe(ARGS)
    assert spec == AppSpec(
        name="word count",
        sources=[SourceSpec("lines", ("tcp", "127.0.0.1", "7000", 4, 4, True), 0)],
        sinks=[SinkSpec("encode_count", ("tcp", "127.0.0.1", "7002"))],
        steps=[
            StepSpec("decode_text", "decoder"),
            StepSpec("split", "stateless"),
            StepSpec("word_key", "key-by"),
            StepSpec("count", "stateful"),
            StepSpec("encode_count", "encoder"),
        ],
    )


def test_word_count_fuses_to_the_key_by_and_routes_each_word_as_its_key():
    runtime = TwinRuntime(WORD_COUNT)
    runtime.describe(ARGS)
    out = runtime.process(0, [(b"", b"a b"), (b"", b"c")])
    assert [(tag, key, segment) for tag, key, segment, _, _ in out] == [
        ("route", b"a", 3),
        ("route", b"b", 3),
        ("route", b"c", 3),
    ]
    # Each word is routed by itself: the key carries it, the payload is empty.
    assert out[1][3] == b""
    assert runtime.process(3, [(b"b", out[1][3])]) == [("emit", 0, b"b => 1\n")]
    assert runtime.process(3, [(b"b", pickle.dumps("b"))]) == [("emit", 0, b"b => 2\n")]


def test_word_count_counts_across_batches():
    host = SimulatedHost(WORD_COUNT)
    host.send([b"the cat", b"the dog"])
    host.send([b"the end"])
    assert host.output() == b"the => 1\ncat => 1\nthe => 2\ndog => 1\nthe => 3\nend => 1\n"
    assert host.failures == []
    # Each source batch led to one batch of keyed words for the count step.
    assert [(segment, [m[0] for m in batch]) for segment, batch in host.batches] == [
        (0, [b"", b""]),
        (3, [b"the", b"cat", b"the", b"dog"]),
        (0, [b""]),
        (3, [b"the", b"end"]),
    ]


# ------------------------------------------------------------------------------------------------
# Alphabet: struct decoder, one vote total per letter


class Votes:
    def __init__(self, letter, votes):
        self.letter = letter
        self.votes = votes


class AllVotes:
    def __init__(self):
        self.letter = None
        self.votes = 0


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode_votes(data):
    letter, votes = struct.unpack(">sI", data)
    return Votes(letter.decode(), votes)


@wallaroo.key_extractor
def letter_key(votes):
    return votes.letter


@wallaroo.state_computation(name="add votes", state=AllVotes)
def add_votes(votes, total):
    total.letter = votes.letter
    total.votes += votes.votes
    return Votes(total.letter, total.votes)


@wallaroo.encoder
def encode_votes(votes):
    return f"{votes.letter} => {votes.votes}\n".encode()


def alphabet_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    votes = wallaroo.source("alphabet", wallaroo.TCPSourceConfig(in_host, in_port, decode_votes))
    pipeline = (
        votes.key_by(letter_key)
        .to(add_votes)
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_votes))
    )
    return wallaroo.build_application("alphabet", pipeline)


def test_alphabet_keeps_one_total_per_letter():
    host = SimulatedHost(app_module(alphabet_setup))
    host.send([struct.pack(">sI", b"a", 3), struct.pack(">sI", b"b", 1)])
    host.send([struct.pack(">sI", b"a", 2)])
    assert host.output() == b"a => 3\nb => 1\na => 5\n"
    states = {key: pickle.loads(value) for _, key, value in host.runtime.snapshot_changed()}
    assert {key: (s.letter, s.votes) for key, s in states.items()} == {
        b"a": ("a", 5),
        b"b": ("b", 1),
    }


# ------------------------------------------------------------------------------------------------
# Small pipelines, built per test


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode_utf8(data):
    return data.decode()


@wallaroo.encoder
def encode_text(value):
    return f"{value}\n".encode()


def linear_app(*steps, sinks=1):
    """An app: source -> steps (a KeyExtractor means key_by) -> ``sinks`` text sinks."""

    def setup(args):
        pipeline = wallaroo.source("in", wallaroo.TCPSourceConfig("h", "1", decode_utf8))
        for step in steps:
            if isinstance(step, wallaroo.KeyExtractor):
                pipeline = pipeline.key_by(step)
            else:
                pipeline = pipeline.to(step)
        configs = [wallaroo.TCPSinkConfig("h", str(2 + n), encode_text) for n in range(sinks)]
        return wallaroo.build_application("test", pipeline.to_sinks(configs))

    return app_module(setup)


@wallaroo.computation(name="drop odd")
def drop_odd(text):
    return None if int(text) % 2 else text


@wallaroo.computation_multi(name="repeat")
def repeat(text):
    return None if text == "none" else [text, None, text.upper()]


@wallaroo.computation_multi(name="as tuple")
def as_tuple(text):
    return (text, text)


def test_none_from_a_computation_emits_nothing():
    host = SimulatedHost(linear_app(drop_odd))
    host.send([b"1", b"2", b"3", b"4"])
    assert host.output() == b"2\n4\n"


def test_multi_emits_each_non_none_item_and_a_none_list_emits_nothing():
    host = SimulatedHost(linear_app(repeat))
    host.send([b"a", b"none", b"b"])
    assert host.output() == b"a\nA\nb\nB\n"


def test_multi_accepts_tuples():
    host = SimulatedHost(linear_app(as_tuple))
    host.send([b"x"])
    assert host.output() == b"x\nx\n"


@wallaroo.computation_multi(name="not a list")
def not_a_list(text):
    return 7


def test_multi_returning_a_non_list_fails_the_message():
    host = SimulatedHost(linear_app(not_a_list))
    host.send([b"x"])
    [(_tag, index, step, key, error)] = host.failures
    assert (index, step, key) == (0, 1, None)
    assert error.startswith("TypeError: computation_multi 'not a list' returned int")


@wallaroo.key_extractor
def key_as_given(text):
    kind, _, value = text.partition(":")
    if kind == "str":
        return value
    if kind == "bytes":
        return value.encode()
    if kind == "int":
        return int(value)
    return 1.5


@wallaroo.state_computation(name="show key", state=WordTotal)
def show_key(text, total):
    total.count += 1
    return text


def test_key_types_become_bytes():
    runtime = TwinRuntime(linear_app(key_as_given, show_key))
    runtime.describe(ARGS)
    out = runtime.process(0, [(b"", b"str:caf\xc3\xa9"), (b"", b"bytes:k"), (b"", b"int:65")])
    assert [item[1] for item in out] == ["café".encode(), b"k", b"A"]


def test_a_key_of_another_type_fails_naming_the_extractor():
    runtime = TwinRuntime(linear_app(key_as_given, show_key))
    runtime.describe(ARGS)
    [(_tag, index, step, key, error)] = runtime.process(0, [(b"", b"float:")])
    assert (index, step, key) == (0, 1, None)
    assert "TypeError: key_extractor 'key_as_given' returned float" in error


@wallaroo.state_computation(name="running total", state=WordTotal)
def running_total(text, total):
    total.count += int(text)
    return total.count


def test_a_state_step_before_any_key_by_routes_to_itself_with_the_empty_key():
    host = SimulatedHost(linear_app(running_total))
    runtime = host.runtime
    out = runtime.process(0, [(b"", b"5")])
    assert [item[:3] for item in out] == [("route", b"", 1)]
    assert pickle.loads(out[0][3]) == "5"
    host.send([b"1", b"2", b"3"])
    assert host.output() == b"1\n3\n6\n"
    assert [(step, key) for step, key, _ in runtime.snapshot_changed()] == [(1, b"")]


def test_to_sinks_fans_out_to_every_encoder():
    host = SimulatedHost(linear_app(drop_odd, sinks=2))
    assert [sink.config for sink in host.spec.sinks] == [("tcp", "h", "2"), ("tcp", "h", "3")]
    assert [step.kind for step in host.spec.steps] == ["decoder", "stateless", "encoder", "encoder"]
    host.send([b"2", b"3"])
    assert host.emitted == [[b"2\n"], [b"2\n"]]


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode_upper(data):
    return data.decode().upper()


@wallaroo.computation(name="tag")
def tag(text):
    return "<" + text + ">"


def merge_setup(args):
    lower = wallaroo.source("lower", wallaroo.TCPSourceConfig("h", "1", decode_utf8))
    upper = wallaroo.source("upper", wallaroo.TCPSourceConfig("h", "2", decode_upper))
    pipeline = (
        lower.merge(upper.to(tag))
        .key_by(word_key)
        .to(count_word)
        .to_sink(wallaroo.TCPSinkConfig("h", "3", encode_count))
    )
    return wallaroo.build_application("merged", pipeline)


def test_merge_feeds_both_sources_into_the_later_stages():
    host = SimulatedHost(app_module(merge_setup))
    assert [(s.name, s.segment) for s in host.spec.sources] == [("lower", 0), ("upper", 1)]
    assert [s.name for s in host.spec.steps] == [
        "decode_utf8",
        "decode_upper",
        "tag",
        "word_key",
        "count",
        "encode_count",
    ]
    host.send([b"x"], source="lower")
    host.send([b"x"], source="upper")
    host.send([b"x"], source="lower")
    assert host.output() == b"x => 1\n<X> => 1\nx => 2\n"


# ------------------------------------------------------------------------------------------------
# Failures


@wallaroo.computation(name="invert")
def invert(text):
    return str(1 // int(text))  # FAILS HERE


@wallaroo.state_computation(name="fragile count", state=WordTotal)
def fragile_count(word, total):
    total.count += 1
    if word == "boom":
        raise RuntimeError("boom is not a word")  # STATE FAILS HERE
    return (word, total.count)


def _line_of(marker):
    with open(__file__) as source:
        return next(n for n, line in enumerate(source, 1) if line.endswith(f"# {marker}\n"))


def test_a_failing_message_loses_only_its_own_outputs():
    runtime = TwinRuntime(linear_app(invert, sinks=2))
    runtime.describe(ARGS)
    out = runtime.process(0, [(b"", b"1"), (b"", b"0"), (b"", b"-1"), (b"", b"1")])
    assert out[:2] == [("emit", 0, b"1\n"), ("emit", 1, b"1\n")]
    assert out[3:] == [
        ("emit", 0, b"-1\n"),
        ("emit", 1, b"-1\n"),
        ("emit", 0, b"1\n"),
        ("emit", 1, b"1\n"),
    ]
    _tag, index, step, key, error = out[2]
    assert (_tag, index, step, key) == ("failed", 1, 1, None)
    assert error == (
        "ZeroDivisionError: integer division or modulo by zero "
        f"(test_runtime.py:{_line_of('FAILS HERE')} in invert)"
    )


def test_a_failure_downstream_of_a_multi_discards_the_items_already_emitted():
    runtime = TwinRuntime(linear_app(repeat, invert))
    runtime.describe(ARGS)
    out = runtime.process(0, [(b"", b"1"), (b"", b"0")])
    # "1" -> ["1", "1"] -> both inverted; "0" fails on its first item.
    assert out == [("emit", 0, b"1\n"), ("emit", 0, b"1\n"), out[2]]
    assert out[2][:3] == ("failed", 1, 2)


def test_a_failure_in_a_keyed_step_reports_the_key_and_keeps_state_changes():
    runtime = TwinRuntime(linear_app(word_key, fragile_count))
    runtime.describe(ARGS)
    batch = [(word, pickle.dumps(word.decode())) for word in (b"a", b"boom", b"a", b"b")]
    out = runtime.process(2, batch)
    assert out[0] == ("emit", 0, b"('a', 1)\n")
    assert out[2:] == [("emit", 0, b"('a', 2)\n"), ("emit", 0, b"('b', 1)\n")]
    _tag, index, step, key, error = out[1]
    assert (_tag, index, step, key) == ("failed", 1, 2, b"boom")
    assert error == (
        "RuntimeError: boom is not a word "
        f"(test_runtime.py:{_line_of('STATE FAILS HERE')} in fragile_count)"
    )
    changed = {key: pickle.loads(value).count for _, key, value in runtime.snapshot_changed()}
    assert changed == {b"a": 2, b"boom": 1, b"b": 1}


@wallaroo.encoder
def encode_as_str(value):
    return str(value)


@wallaroo.encoder
def encode_as_int(value):
    return len(value)


def _encoder_app(encoder):
    def setup(args):
        source = wallaroo.source("in", wallaroo.TCPSourceConfig("h", "1", decode_utf8))
        sink = wallaroo.TCPSinkConfig("h", "2", encoder)
        return wallaroo.build_application("encoder", source.to_sink(sink))

    return app_module(setup)


def test_an_encoder_returning_str_writes_it_as_utf8():
    runtime = TwinRuntime(_encoder_app(encode_as_str))
    runtime.describe(ARGS)
    assert runtime.process(0, [(b"", "é".encode())]) == [("emit", 0, "é".encode())]


def test_an_encoder_returning_neither_bytes_nor_str_fails_naming_the_encoder_and_the_type():
    runtime = TwinRuntime(_encoder_app(encode_as_int))
    runtime.describe(ARGS)
    [(_tag, index, step, key, error)] = runtime.process(0, [(b"", b"x")])
    assert (index, step, key) == (0, 1, None)
    assert error.startswith("TypeError: encoder 'encode_as_int' returned int, expected bytes")
    assert re.search(r"\(test_runtime\.py:\d+ in encode_as_int\)$", error)


@wallaroo.state_computation(name="count or nothing", state=WordTotal)
def count_or_nothing(word, total):
    total.count += 1
    return None if word == "quiet" else (word, total.count)


@wallaroo.encoder
def fragile_encoder(pair):
    if pair[0] == "bad":
        raise ValueError("cannot encode bad")
    return f"{pair[0]}={pair[1]}\n".encode()


def test_an_encoder_after_a_state_step_fails_alone_and_the_state_change_stays():
    def setup(args):
        source = wallaroo.source("in", wallaroo.TCPSourceConfig("h", "1", decode_utf8))
        sink = wallaroo.TCPSinkConfig("h", "2", fragile_encoder)
        pipeline = source.key_by(word_key).to(count_or_nothing).to_sink(sink)
        return wallaroo.build_application("state then encoder", pipeline)

    runtime = TwinRuntime(app_module(setup))
    runtime.describe(ARGS)
    words = ("a", "bad", "quiet", "a", "\u00e9t\u00e9")
    out = runtime.process(2, [(word.encode(), b"") for word in words])
    assert out[0] == ("emit", 0, b"a=1\n")
    assert out[1][:4] == ("failed", 1, 3, b"bad")
    assert out[1][4].startswith("ValueError: cannot encode bad (test_runtime.py:")
    assert out[2:] == [("emit", 0, b"a=2\n"), ("emit", 0, "\u00e9t\u00e9=1\n".encode())]
    changed = {key: pickle.loads(value).count for _, key, value in runtime.snapshot_changed()}
    assert changed == {b"a": 2, b"bad": 1, b"quiet": 1, "\u00e9t\u00e9".encode(): 1}


def test_a_decoder_error_names_the_decoder_step():
    runtime = TwinRuntime(WORD_COUNT)
    runtime.describe(ARGS)
    [(_tag, index, step, key, error)] = runtime.process(0, [(b"", b"caf\xff")])
    assert (index, step, key) == (0, 0, None)
    assert error.startswith("UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff")
    assert error.endswith("in decode_text)")


def test_broken_calls_raise():
    runtime = TwinRuntime(WORD_COUNT)
    with pytest.raises(RuntimeError, match="before describe"):
        runtime.process(0, [])
    with pytest.raises(RuntimeError, match="before describe"):
        runtime.snapshot_changed()
    runtime.describe(ARGS)
    for segment in (1, 2, 99):  # mid-segment steps and no step at all
        with pytest.raises(RuntimeError, match=f"segment {segment} is not"):
            runtime.process(segment, [])
    with pytest.raises(RuntimeError, match="step 1.*keeps none"):
        runtime.restore([(1, b"k", pickle.dumps(WordTotal()))])


def test_a_module_without_application_setup_is_named():
    module = app_module(None, name="no_setup")
    module.__file__ = "/apps/no_setup.py"
    with pytest.raises(wallaroo.WallarooParameterError) as raised:
        TwinRuntime(module)
    assert str(raised.value) == "no_setup.py: no application_setup(args) function"


def test_setup_must_return_an_application():
    with pytest.raises(wallaroo.WallarooParameterError, match="build_application"):
        TwinRuntime(app_module(lambda args: None)).describe(ARGS)


# ------------------------------------------------------------------------------------------------
# Framing


@pytest.mark.parametrize(
    ("header_length", "length_fmt", "framing"),
    [
        (4, ">I", (4, 4, True)),
        (4, "!i", (4, 4, True)),
        (2, "<H", (2, 2, False)),
        (8, "=Q", (8, 8, False)),
        (1, "B", (1, 1, False)),
        (4, "@L", (4, 4, False)),
        (6, ">h", (6, 2, True)),
    ],
)
def test_length_fmt_becomes_framing(header_length, length_fmt, framing):
    spec = TwinRuntime(framed_app(header_length, length_fmt)).describe(ARGS)
    assert spec.sources[0].config == ("tcp", "h", "1", *framing)


@pytest.mark.parametrize(
    ("header_length", "length_fmt"),
    [(4, ">f"), (4, ">II"), (4, "2I"), (4, ""), (4, None), (4, ">x"), (2, ">I"), ("4", ">I")],
)
def test_unusable_framing_names_the_decoder_and_format(header_length, length_fmt):
    with pytest.raises(wallaroo.WallarooParameterError) as raised:
        TwinRuntime(framed_app(header_length, length_fmt)).describe(ARGS)
    assert "decoder 'framed'" in str(raised.value)
    assert repr(length_fmt) in str(raised.value)


def framed_app(header_length, length_fmt):
    @wallaroo.decoder(header_length=header_length, length_fmt=length_fmt)
    def framed(data):
        return data

    def setup(args):
        source = wallaroo.source("framed", wallaroo.TCPSourceConfig("h", 1, framed))
        return wallaroo.build_application(
            "framed", source.to_sink(wallaroo.TCPSinkConfig("h", 2, encode_text))
        )

    return app_module(setup)


# ------------------------------------------------------------------------------------------------
# Generators


@wallaroo.computation(name="bracket")
def bracket(number):
    return f"<{number}>"


class Countdown:
    def initial_value(self):
        return 3

    def apply(self, previous):
        return previous - 1 if previous > 1 else None


def generator_setup(args):
    source = wallaroo.source("countdown", wallaroo.GenSourceConfig(Countdown()))
    sink = wallaroo.TCPSinkConfig("h", "2", encode_text)
    return wallaroo.build_application("countdown", source.to(bracket).to_sink(sink))


def test_a_generator_produces_one_value_per_message_until_none():
    host = SimulatedHost(app_module(generator_setup))
    assert host.spec.sources == [SourceSpec("countdown", ("generator",), 0)]
    assert host.spec.steps[0] == StepSpec("Countdown", "decoder")
    host.send([b"", b""])
    assert host.ended == []
    host.send([b"ignored", b"", b""])
    assert host.output() == b"<3>\n<2>\n<1>\n"
    assert host.ended == [0]  # said once, by the message that found it had run out
    host.send([b""])
    assert host.output() == b"<3>\n<2>\n<1>\n"
    assert host.ended == [0]
    assert host.failures == []


# ------------------------------------------------------------------------------------------------
# State


def test_snapshot_reports_changed_states_once():
    host = SimulatedHost(WORD_COUNT)
    host.send([b"a b a"])
    entries = host.runtime.snapshot_changed()
    assert [(step, key, pickle.loads(value).count) for step, key, value in entries] == [
        (3, b"a", 2),
        (3, b"b", 1),
    ]
    assert host.runtime.snapshot_changed() == []
    host.send([b"b"])
    assert [key for _, key, _ in host.runtime.snapshot_changed()] == [b"b"]


def test_a_bounded_snapshot_returns_at_most_that_many_and_keeps_the_other_marks():
    host = SimulatedHost(WORD_COUNT)
    host.send([b"a b c d e"])
    runtime = host.runtime
    first = runtime.snapshot_changed(2)
    assert [key for _, key, _ in first] == [b"a", b"b"]
    host.send([b"a"])  # marked again after its snapshot: comes again, after the others
    second = runtime.snapshot_changed(2)
    assert [key for _, key, _ in second] == [b"c", b"d"]
    last = runtime.snapshot_changed(2)
    assert [(key, pickle.loads(value).count) for _, key, value in last] == [(b"e", 1), (b"a", 2)]
    assert runtime.snapshot_changed(2) == []


def test_a_bounded_snapshot_spans_stateful_steps():
    runtime = Runtime(types.SimpleNamespace(application_setup=lambda args: None))
    runtime._stores = {
        1: ({b"x": 1, b"y": 2}, {b"x": None, b"y": None}),
        4: ({b"z": 3}, {b"z": None}),
    }
    assert [(step, key) for step, key, _ in runtime.snapshot_changed(2)] == [(1, b"x"), (1, b"y")]
    assert [(step, key) for step, key, _ in runtime.snapshot_changed(2)] == [(4, b"z")]
    assert runtime.snapshot_changed(2) == []


def test_state_survives_into_a_fresh_runtime():
    first = SimulatedHost(WORD_COUNT)
    first.send([b"a b a"])
    saved = first.runtime.snapshot_changed()

    second = SimulatedHost(WORD_COUNT)
    second.runtime.restore(saved)
    second.send([b"a"])
    assert second.output() == b"a => 3\n"


def test_restored_state_is_not_reported_changed_until_it_changes():
    first = SimulatedHost(WORD_COUNT)
    first.send([b"a b a"])
    saved = first.runtime.snapshot_changed()

    # The host holds the bytes it restores: nothing to report back.
    second = SimulatedHost(WORD_COUNT)
    second.runtime.restore(saved)
    assert second.runtime.snapshot_changed() == []
    second.send([b"a"])
    changed = second.runtime.snapshot_changed()
    assert [(step, key, pickle.loads(value).count) for step, key, value in changed] == [
        (3, b"a", 3)
    ]


def test_take_removes_and_returns_existing_states():
    host = SimulatedHost(WORD_COUNT)
    host.send([b"a b"])
    taken = host.runtime.take([(3, b"a"), (3, b"zzz"), (0, b"a")])
    assert [(step, key, pickle.loads(value).count) for step, key, value in taken] == [(3, b"a", 1)]
    assert [key for _, key, _ in host.runtime.snapshot_changed()] == [b"b"]
    assert host.runtime.take([(3, b"a")]) == []

    other = SimulatedHost(WORD_COUNT)
    other.runtime.restore(taken)
    other.send([b"a"])
    assert other.output() == b"a => 2\n"
    host.send([b"a"])
    assert host.output() == b"a => 1\nb => 1\na => 1\n"


def test_restore_with_an_unreadable_state_applies_nothing():
    host = SimulatedHost(WORD_COUNT)
    good = (3, b"a", pickle.dumps(WordTotal()))
    with pytest.raises(RuntimeError, match="step 3 for key b'b'"):
        host.runtime.restore([good, (3, b"b", b"not a pickle")])
    assert host.runtime.snapshot_changed() == []


# ------------------------------------------------------------------------------------------------
# Routed payloads: every kind of value, by itself or by another key, to one or more successors


@wallaroo.computation_multi(name="values")
def values_of(text):
    long = "x" * 300
    return [text, None, long, "caf\u00e9", "lone \udc80", b"raw", 42, ("a", 1), ""]


@wallaroo.key_extractor
def itself(value):
    """The value, where it can be a key."""
    if isinstance(value, str) and "\udc80" not in value or isinstance(value, bytes):
        return value
    return repr(value)


@wallaroo.key_extractor
def first_char(value):
    return repr(value)[:2]


@wallaroo.encoder
def encode_repr(value):
    return f"{value!r}\n".encode("utf-8", "backslashreplace")


def routed_values_app(extractor, sinks):
    def setup(args):
        pipeline = wallaroo.source("in", wallaroo.TCPSourceConfig("h", "1", decode_utf8))
        pipeline = pipeline.to(values_of).key_by(extractor)
        configs = [wallaroo.TCPSinkConfig("h", str(2 + n), encode_repr) for n in range(sinks)]
        return wallaroo.build_application("test", pipeline.to_sinks(configs))

    return app_module(setup)


@pytest.mark.parametrize("extractor", [itself, first_char])
@pytest.mark.parametrize("sinks", [1, 2])
def test_routed_values_of_every_kind_arrive_intact(extractor, sinks):
    host = SimulatedHost(routed_values_app(extractor, sinks))
    host.send([b"word"])
    expected = b"".join(
        f"{value!r}\n".encode("utf-8", "backslashreplace")
        for value in ["word", "x" * 300, "caf\u00e9", "lone \udc80", b"raw", 42, ("a", 1), ""]
    )
    assert host.failures == []
    assert [host.output(sink) for sink in range(sinks)] == [expected] * sinks


def test_routed_payloads_are_pickles_or_empty_for_a_str_routed_by_itself():
    runtime = Runtime(routed_values_app(first_char, 1))
    runtime.describe(ARGS)
    routed = [item for item in runtime.process(0, [(b"", b"word")]) if item[0] == "route"]
    values = [pickle.loads(payload) for _tag, _key, _segment, payload, _time in routed]
    assert values == ["word", "x" * 300, "caf\u00e9", "lone \udc80", b"raw", 42, ("a", 1), ""]
    # A str of under 256 UTF-8 bytes takes the short form; pickle.dumps never writes it.
    assert routed[0][3] == b"\x80\x05\x8cword."[:3] + bytes([4]) + b"word."
    assert pickle.dumps("word", 5)[2] != 0x8C
    runtime = Runtime(routed_values_app(itself, 1))
    runtime.describe(ARGS)
    routed = [item for item in runtime.process(0, [(b"", b"word")]) if item[0] == "route"]
    assert [payload for _tag, _key, _segment, payload, _time in routed[:3]] == [b"", b"", b""]
    assert pickle.loads(routed[3][3]) == "lone \udc80"
    assert pickle.loads(routed[4][3]) == b"raw"
