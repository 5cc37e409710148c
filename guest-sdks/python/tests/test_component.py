"""The component adapter against bindings generated from the WIT, on plain CPython.

Skipped where componentize-py is not installed (it generates the bindings).
"""

import importlib
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_runtime import ARGS, WORD_COUNT, WordTotal, app_module

from wallaroo._wire import decode_entries, decode_outputs, encode_batch, encode_entries, encode_keys

WIT = Path(__file__).resolve().parents[3] / "wit"


@pytest.fixture(scope="module")
def bindings(tmp_path_factory):
    if shutil.which("componentize-py") is None:
        pytest.skip("componentize-py is not installed")
    out = tmp_path_factory.mktemp("bindings")
    subprocess.run(
        ["componentize-py", "-d", str(WIT), "-w", "app", "bindings", str(out)],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(out))
    try:
        component = importlib.import_module("wallaroo._component")
        types = importlib.import_module("wit_world.imports.types")
        err = importlib.import_module("componentize_py_types").Err
        yield component, types, err
    finally:
        sys.path.remove(str(out))
        for name in list(sys.modules):
            if name.split(".")[0] in ("wit_world", "componentize_py_types") or name == (
                "wallaroo._component"
            ):
                del sys.modules[name]


def test_describe_returns_the_wit_app_spec(bindings):
    component, types, _err = bindings
    component.install(WORD_COUNT)
    spec = component.Guest().describe(ARGS)
    assert spec.name == "word count"
    assert spec.sources == [
        types.SourceSpec(
            "lines",
            types.SourceConfig_Tcp(types.TcpSource("127.0.0.1", "7000", types.Framing(4, 4, True))),
            0,
            False,
        )
    ]
    assert spec.sinks == [
        types.SinkSpec("encode_count", types.SinkConfig_Tcp(types.TcpSink("127.0.0.1", "7002")))
    ]
    assert [step.kind for step in spec.steps] == [
        types.StepKind.DECODER,
        types.StepKind.STATELESS,
        types.StepKind.KEY_BY,
        types.StepKind.STATEFUL,
        types.StepKind.ENCODER,
    ]


def test_describe_gives_kafka_sources_and_sinks_with_their_client_properties(bindings):
    from test_kafka import KAFKA_ARGS, default_app

    component, types, _err = bindings
    component.install(default_app())
    spec = component.Guest().describe(KAFKA_ARGS)
    assert spec.sources[0].config == types.SourceConfig_Kafka(
        types.KafkaSource("in", "k1:9093,k2:9092", [("log_level", "4")])
    )
    assert spec.sinks == [
        types.SinkSpec(
            "encode_text",
            types.SinkConfig_Kafka(
                types.KafkaSink(
                    "out",
                    "k3:9094",
                    [("log_level", "4"), ("linger.ms", "0"), ("message.max.bytes", "100000")],
                )
            ),
        )
    ]


def test_process_and_state_speak_flat_buffers(bindings):
    component, _types, _err = bindings
    component.install(WORD_COUNT)
    guest = component.Guest()
    guest.describe(ARGS)
    out = guest.process(0, encode_batch([(b"", b"hi"), (b"", b"\xff")]))
    assert type(out) is bytes  # componentize-py lowers nothing else to a list<u8>
    route, failure = decode_outputs(out)
    assert route == ("route", b"hi", 3, b"", 0)  # the word is its own key
    assert failure[:4] == ("failed", 1, 0, None)
    assert failure[4].startswith("UnicodeDecodeError: ")
    out = guest.process(3, encode_batch([(b"hi", route[3])]))
    assert decode_outputs(out) == [("emit", 0, b"hi => 1\n")]
    snapshot = guest.snapshot_changed(4096)
    assert type(snapshot) is bytes
    [(step, key, value)] = decode_entries(snapshot)
    assert (step, key, pickle.loads(value).count) == (3, b"hi", 1)
    guest.restore(bytes(encode_entries([(3, b"yo", pickle.dumps(WordTotal()))])))
    taken = guest.take(encode_keys([(3, b"yo"), (3, b"none")]))
    assert type(taken) is bytes
    taken = decode_entries(taken)
    assert [(step, key) for step, key, _value in taken] == [(3, b"yo")]
    assert list(decode_entries(guest.snapshot_changed(4096))) == []


def test_errors_become_err_instead_of_trapping(bindings):
    component, _types, err = bindings

    def failing_setup(args):
        raise ValueError("bad arguments")

    component.install(app_module(failing_setup))
    guest = component.Guest()
    with pytest.raises(err) as raised:
        guest.describe(ARGS)
    assert raised.value.value.startswith("ValueError: bad arguments (test_component.py:")
    with pytest.raises(err, match="before describe"):
        guest.process(0, encode_batch([]))
    component.install(WORD_COUNT)
    guest.describe(ARGS)
    with pytest.raises(err) as raised:
        guest.process(7, encode_batch([]))
    assert raised.value.value == "RuntimeError: segment 7 is not a step where a segment starts"
    with pytest.raises(err) as raised:
        guest.process(0, b"\x01\x00\x00\x00")
    assert raised.value.value.startswith("MalformedBuffer: malformed batch buffer: ")
    with pytest.raises(err, match="MalformedBuffer: malformed state entries buffer"):
        guest.restore(b"\x01")
