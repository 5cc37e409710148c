"""The flat buffers of the per-batch exports: layouts byte for byte, round trips, malformed
buffers, and a runtime writing the ``outputs`` buffer exactly as it writes tuples."""

import pickle

import pytest
from test_runtime import ARGS, WORD_COUNT, SimulatedHost, app_module

import wallaroo
from wallaroo import _wire
from wallaroo._runtime import Runtime

# ------------------------------------------------------------------------------------------------
# Layouts, as wit/wallaroo.wit documents them


def test_a_batch_is_a_count_a_table_of_lengths_the_event_times_then_the_bytes():
    buf = _wire.encode_batch([(b"", b"abc", 5), (b"k", b"", 2**63)])
    assert (
        buf
        == b"\x02\x00\x00\x00"
        + b"\x00\x00\x00\x00\x03\x00\x00\x00"
        + (b"\x01\x00\x00\x00\x00\x00\x00\x00")
        + b"\x05\x00\x00\x00\x00\x00\x00\x00"
        + b"\x00\x00\x00\x00\x00\x00\x00\x80"
        + b"abc"
        + b"k"
    )
    assert list(_wire.messages(buf)) == [(b"", b"abc", 5), (b"k", b"", 2**63)]


@pytest.mark.parametrize(
    "pairs",
    [
        [],
        [(b"", b"line one"), (b"", b""), (b"", b"line three")],
        [(b"w1", b""), (b"", b""), (b"word", b"")],
        [(b"k", b""), (b"", b"p"), (b"key", b"payload")],
    ],
)
def test_batches_with_empty_keys_or_payloads_read_back(pairs):
    assert list(_wire.messages(_wire.encode_batch(pairs))) == [(k, p, 0) for k, p in pairs]


def test_outputs_are_tagged_records_back_to_back():
    out = []
    _wire.route(out, b"key", 3, b"pay", 2**40 + 1)
    _wire.emit(out, 1, b"line\n")
    _wire.failed(out, 7, 2, b"k", "oops")
    _wire.failed(out, 8, 0, None, "")
    _wire.late(out, 9, 4)
    _wire.failed(out, _wire.NO_INPUT, 4, b"w", "x")
    out = b"".join(out)
    assert out == (
        b"\x00" + b"\x03\x00\x00\x00" + b"\x03\x00\x00\x00" + b"\x03\x00\x00\x00"
        b"\x01\x00\x00\x00\x00\x01\x00\x00" + b"keypay"
        b"\x01" + b"\x01\x00\x00\x00" + b"\x05\x00\x00\x00" + b"line\n"
        b"\x02" + b"\x07\x00\x00\x00" + b"\x02\x00\x00\x00" + b"\x01"
        b"\x01\x00\x00\x00" + b"\x04\x00\x00\x00" + b"k" + b"oops"
        b"\x02" + b"\x08\x00\x00\x00" + b"\x00\x00\x00\x00" + b"\x00"
        b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
        b"\x03" + b"\x09\x00\x00\x00" + b"\x04\x00\x00\x00"
        b"\x02" + b"\xff\xff\xff\xff" + b"\x04\x00\x00\x00" + b"\x01"
        b"\x01\x00\x00\x00" + b"\x01\x00\x00\x00" + b"w" + b"x"
    )
    assert _wire.decode_outputs(out) == [
        ("route", b"key", 3, b"pay", 2**40 + 1),
        ("emit", 1, b"line\n"),
        ("failed", 7, 2, b"k", "oops"),
        ("failed", 8, 0, None, ""),
        ("late", 9, 4),
        ("failed", None, 4, b"w", "x"),
    ]


def test_state_entries_are_a_count_a_table_then_keys_and_values():
    entries = [(3, b"hi", b"\x80\x05v"), (4, b"", b""), (2**32 - 1, b"x" * 300, b"y" * 70_000)]
    buf = _wire.encode_entries(entries)
    assert bytes(buf[:16]) == b"\x03\x00\x00\x00" + b"\x03\x00\x00\x00" + (
        b"\x02\x00\x00\x00\x03\x00\x00\x00"
    )
    assert bytes(buf[40:45]) == b"hi\x80\x05v"
    assert list(_wire.decode_entries(bytes(buf))) == entries
    assert list(_wire.decode_entries(bytes(_wire.encode_entries([])))) == []


def test_state_keys_are_a_count_a_table_then_the_keys():
    buf = _wire.encode_keys([(3, b"hi"), (1, b"")])
    assert buf == b"\x02\x00\x00\x00\x03\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00" + (
        b"\x00\x00\x00\x00hi"
    )
    assert list(_wire.decode_keys(buf)) == [(3, b"hi"), (1, b"")]


def test_a_kafka_record_is_key_length_key_partition_then_the_value():
    record = _wire.kafka_record
    assert record(b"v", "e") == b"\xff\xff\xff\xff" + b"\xff\xff\xff\xff" + b"v"
    assert record(("v", "k\u00e9"), "e") == b"\x03\x00\x00\x00k\xc3\xa9\xff\xff\xff\xffv"
    assert record((b"", b"", 7), "e") == b"\x00\x00\x00\x00" + b"\x07\x00\x00\x00"
    assert record((bytearray(b"v"), None, 0), "e") == b"\xff" * 4 + bytes(4) + b"v"
    decode = _wire.decode_kafka_record
    assert decode(record("v", "e")) == (b"v", None, None)
    assert decode(record(("v", "k"), "e")) == (b"v", b"k", None)
    assert decode(record((b"", b"", 3), "e")) == (b"", b"", 3)
    assert decode(record((memoryview(b"x"), None, 0), "e")) == (b"x", None, 0)


@pytest.mark.parametrize(
    ("result", "error", "complaint"),
    [
        (("v", None, None, None), TypeError, "returned a tuple of 4 items"),
        (("v",), TypeError, "returned a tuple of 1 items"),
        (("v", None, -1), ValueError, "the partition -1, expected None or an int from 0"),
        (("v", None, 2**32 - 1), ValueError, "the partition 4294967295"),
        (("v", None, 1.0), TypeError, "the partition 1.0"),
        (("v", None, True), TypeError, "the partition True"),
        (("v", 5), TypeError, "a key of type int, expected bytes or str"),
        (None, TypeError, "a value of type NoneType (None is for the key), expected bytes"),
        ((3.5, "k"), TypeError, "a value of type float"),
        ([b"v", b"k"], TypeError, "a value of type list"),
    ],
)
def test_a_wrong_kafka_record_shape_is_refused_naming_what_is_wrong(result, error, complaint):
    with pytest.raises(error) as raised:
        _wire.kafka_record(result, "encoder 'e'")
    assert str(raised.value).startswith("encoder 'e' returned ")
    assert complaint in str(raised.value)


def test_an_error_text_that_is_not_utf8_encodable_is_replaced():
    out = []
    _wire.failed(out, 0, 1, None, "bad \udc80 surrogate")
    assert _wire.decode_outputs(b"".join(out)) == [("failed", 0, 1, None, "bad ? surrogate")]


# ------------------------------------------------------------------------------------------------
# Malformed buffers from the host


@pytest.mark.parametrize(
    "buf, complaint",
    [
        (b"", "0 bytes cannot hold its count"),
        (b"\x01\x00\x00", "3 bytes cannot hold its count"),
        (b"\x01\x00\x00\x00\x00\x00\x00\x00", "1 items need a table of 8 bytes"),
        (b"\xff\xff\xff\xff", "4294967295 items need a table"),
        (b"\x01\x00\x00\x00" + bytes(12), "1 messages need 8 bytes of event times"),
        (_wire.encode_batch([(b"k", b"payload")])[:-1], "lengths add up to 28 bytes"),
        (_wire.encode_batch([(b"k", b"payload")]) + b"!", "lengths add up to 28 bytes"),
        (_wire.encode_batch([(b"", b"payload")])[:-1], "lengths add up to 27 bytes"),
        (_wire.encode_batch([(b"key", b"")]) + b"!", "lengths add up to 23 bytes"),
    ],
)
def test_a_malformed_batch_is_refused_naming_what_is_wrong(buf, complaint):
    with pytest.raises(_wire.MalformedBuffer, match="malformed batch buffer: ") as raised:
        _wire.messages(buf)
    assert complaint in str(raised.value)


def test_every_truncation_of_state_entries_or_keys_is_refused():
    entries = bytes(_wire.encode_entries([(3, b"key", b"value"), (4, b"k2", b"v2")]))
    for cut in range(len(entries)):
        with pytest.raises(_wire.MalformedBuffer, match="malformed state entries buffer"):
            _wire.decode_entries(entries[:cut])
    keys = _wire.encode_keys([(3, b"key"), (4, b"k2")])
    for cut in range(len(keys)):
        with pytest.raises(_wire.MalformedBuffer, match="malformed state keys buffer"):
            _wire.decode_keys(keys[:cut])


# ------------------------------------------------------------------------------------------------
# The runtime writing flat outputs


def test_flat_outputs_decode_to_the_tuples_a_tuple_runtime_returns():
    @wallaroo.computation(name="fail on x")
    def fail_on_x(word):
        if word == "x":
            raise ValueError("no x")
        return word

    @wallaroo.decoder(header_length=4, length_fmt=">I")
    def decode(data):
        return data.decode()

    @wallaroo.computation_multi(name="split")
    def split(text):
        return text.split()

    @wallaroo.key_extractor
    def key(word):
        return word

    @wallaroo.state_computation(name="count", state=dict)
    def count(word, state):
        state["n"] = state.get("n", 0) + 1
        if word == "boom":
            raise KeyError(word)
        return f"{word}={state['n']}"

    @wallaroo.encoder
    def encode(text):
        return text.encode()

    def setup(args):
        lines = wallaroo.source("lines", wallaroo.TCPSourceConfig("h", "1", decode))
        pipeline = (
            lines.to(split)
            .to(fail_on_x)
            .key_by(key)
            .to(count)
            .to_sink(wallaroo.TCPSinkConfig("h", "2", encode))
        )
        return wallaroo.build_application("app", pipeline)

    tuples, flat = Runtime(app_module(setup)), Runtime(app_module(setup), flat=True)
    tuples.describe(ARGS)
    flat.describe(ARGS)
    lines = [(b"", b"a b a"), (b"", b"\xff"), (b"", b"c x d"), (b"", b"")]
    expected = tuples.process(0, lines)
    out = flat.process(0, _wire.messages(_wire.encode_batch(lines)))
    assert type(out) is bytes
    assert _wire.decode_outputs(out) == expected
    assert [item[0] for item in expected] == ["route"] * 3 + ["failed"] * 2

    words = [(key, payload) for _tag, key, _segment, payload, _time in expected[:3]] + [
        (b"boom", pickle.dumps("boom")),
        (b"bad", b"not a pickle"),
    ]
    expected = tuples.process(4, words)
    out = flat.process(4, _wire.messages(_wire.encode_batch(words)))
    assert _wire.decode_outputs(out) == expected
    assert [item[0] for item in expected] == ["emit"] * 3 + ["failed"] * 2
    assert expected[3][3] == b"boom"
    assert _wire.decode_entries(bytes(_wire.encode_entries(flat.snapshot_changed())))


def test_word_count_through_flat_buffers_counts_like_the_simulated_host():
    host = SimulatedHost(WORD_COUNT)
    host.send([b"the cat the", b"dog the"])
    runtime = Runtime(WORD_COUNT, flat=True)
    runtime.describe(ARGS)
    routed = _wire.decode_outputs(
        runtime.process(
            0, _wire.messages(_wire.encode_batch([(b"", b"the cat the"), (b"", b"dog the")]))
        )
    )
    out = runtime.process(
        3, _wire.messages(_wire.encode_batch([(key, p, t) for _, key, _s, p, t in routed]))
    )
    assert b"".join(payload for _t, _sink, payload in _wire.decode_outputs(out)) == host.output()
    entries = _wire.decode_entries(bytes(_wire.encode_entries(runtime.snapshot_changed())))
    assert {key: pickle.loads(value).count for _step, key, value in entries} == {
        b"the": 3,
        b"cat": 1,
        b"dog": 1,
    }
