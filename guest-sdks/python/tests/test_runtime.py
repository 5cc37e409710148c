"""The pipeline runtime: routing, state, failures, as the host drives it."""

import pickle
import struct

import apps
import pytest
import wallaroo
from wallaroo._runtime import Message, Runtime, framing
from wallaroo.testing import LocalRun


def test_word_count_counts_across_batches_through_the_host_round_trip():
    rt = Runtime(apps.WordCount)
    spec = rt.describe(apps.ARGS)
    [source] = spec.sources
    assert source.config == ("tcp", "127.0.0.1", "7010", 4, 4, True)
    assert [s.kind for s in spec.steps] == ["decoder", "stateless", "key-by", "stateful", "encoder"]
    emitted = []
    for batch in ([b"a b a"], [b"b", b"a"]):
        routed = rt.process(source.segment, [Message(b"", p) for p in batch])
        assert all(r[0] == "route" for r in routed)
        for _, key, segment, payload in routed:
            for item in rt.process(segment, [Message(key, payload)]):
                assert item[0] == "emit" and item[1] == 0
                emitted.append(item[2])
    assert emitted == [b"a => 1\n", b"b => 1\n", b"a => 2\n", b"b => 2\n", b"a => 3\n"]


def test_alphabet_sums_votes_per_letter():
    run = LocalRun(apps.Alphabet, apps.ARGS)
    run.feed("votes", [struct.pack(">sI", b"a", 2), struct.pack(">sI", b"b", 1)] * 2)
    assert run.output() == b"a => 2\nb => 1\na => 4\nb => 2\n"


def test_a_failure_drops_only_its_own_message_and_names_step_key_and_line():
    rt = Runtime(apps.WordCount)
    rt.describe(apps.ARGS)
    counting = 3
    batch = [Message(w, pickle.dumps(w.decode())) for w in (b"x", b"fail", b"x", b"y")]
    out = rt.process(counting, batch)
    assert [o[0] for o in out] == ["emit", "failed", "emit", "emit"]
    _, index, step, key, error = out[1]
    assert (index, step, key) == (1, counting, b"fail")
    assert error.startswith("ValueError: no failing (apps.py:")
    assert "in count)" in error


def test_a_failing_source_message_keeps_nothing_it_produced():
    run = LocalRun(apps.WordCount, apps.ARGS)
    run.feed("lines", [b"ok", b"\xff"])
    assert run.output() == b"ok => 1\n"
    [(_, index, step, key, error)] = run.failures
    assert (index, key) == (0, None) and error.startswith("UnicodeDecodeError")


def test_unkeyed_state_is_routed_under_the_empty_key():
    rt = Runtime(apps.Unkeyed)
    spec = rt.describe([])
    out = rt.process(spec.sources[0].segment, [Message(b"", b"p q")])
    assert [(o[0], o[1], o[2]) for o in out] == [("route", b"", 2), ("route", b"", 2)]
    run = LocalRun(apps.Unkeyed, [])
    run.feed("lines", [b"p q", b"r"])
    assert run.output() == b"all => 1\nall => 2\nall => 3\n"


def test_merge_feeds_both_sources_into_every_sink():
    run = LocalRun(apps.Merged, [])
    assert [s.config[:3] for s in run.spec.sources] == [("tcp", "h", "1"), ("tcp", "h", "2")]
    assert run.spec.sources[1].config[3:] == (2, 2, False)
    run.feed("a", [b"Hi"])
    run.feed("b", [b"Yo"])
    assert run.output(0) == b"HIYO" and run.output(1) == b"hiyo"


def test_generator_source_runs_until_none():
    run = LocalRun(apps.Generated, [])
    assert run.spec.sources[0].config == ("generator",)
    run.feed("gen", [b""] * 6)
    assert run.output() == b"3\n2\n1\n"


def test_encoder_returning_str_is_a_failure():
    run = LocalRun(apps.StrEncoder, [])
    run.feed("lines", [b"x"])
    assert run.output() == b""
    assert "encoder 'wrong_type' returned str, expected bytes" in run.failures[0][4]


@pytest.mark.parametrize(
    ("key", "expected"), [("w", b"w"), (b"\x00b", b"\x00b"), (97, b"a"), (bytearray(b"z"), b"z")]
)
def test_keys_become_bytes(key, expected):
    rt = Runtime(apps.WordCount)
    rt.describe(apps.ARGS)
    step = rt._steps[2]
    assert rt._key_bytes(step, key) == expected
    with pytest.raises(TypeError, match="key extractor 'itself' returned float"):
        rt._key_bytes(step, 1.5)


def test_state_survives_snapshot_and_restore_into_a_fresh_runtime():
    first = Runtime(apps.WordCount)
    first.describe(apps.ARGS)
    first.process(3, [Message(b"k", pickle.dumps("k"))] * 2)
    entries = first.snapshot_changed()
    assert [(s, k) for s, k, _ in entries] == [(3, b"k")]
    assert first.snapshot_changed() == []
    second = Runtime(apps.WordCount)
    second.describe(apps.ARGS)
    second.restore(entries)
    assert second.process(3, [Message(b"k", pickle.dumps("k"))])[0][2] == b"k => 3\n"
    taken = second.take([(3, b"k"), (3, b"absent")])
    assert [(s, k) for s, k, _ in taken] == [(3, b"k")]
    assert second.process(3, [Message(b"k", pickle.dumps("k"))])[0][2] == b"k => 1\n"


def test_process_before_describe_or_unknown_segment_is_an_error():
    rt = Runtime(apps.WordCount)
    with pytest.raises(RuntimeError, match="before describe"):
        rt.process(0, [])
    rt.describe(apps.ARGS)
    with pytest.raises(RuntimeError, match="unknown segment 9"):
        rt.process(9, [])


def test_a_module_without_application_setup_is_refused():
    class NoSetup:
        __name__ = "nosetup"
        __file__ = "/x/nosetup.py"

    with pytest.raises(wallaroo.WallarooParameterError, match="nosetup.py: no application_setup"):
        Runtime(NoSetup)


@pytest.mark.parametrize(
    ("header", "fmt", "expected"),
    [
        (4, ">I", (4, 4, True)),
        (2, "<H", (2, 2, False)),
        (8, "!Q", (8, 8, True)),
        (6, "I", (6, 4, False)),
    ],
)
def test_length_formats_map_to_framing(header, fmt, expected):
    @wallaroo.decoder(header_length=header, length_fmt=fmt)
    def d(data):
        return data

    assert framing(d) == expected


@pytest.mark.parametrize(("header", "fmt"), [(4, ">f"), (2, ">I"), (4, ">II")])
def test_unusable_length_formats_are_refused(header, fmt):
    @wallaroo.decoder(header_length=header, length_fmt=fmt)
    def bad(data):
        return data

    with pytest.raises(wallaroo.WallarooParameterError, match="decoder 'bad'"):
        framing(bad)
