"""The examples' expected outputs are what the SDK computes from their samples."""

import importlib
import sys

import examples
import pytest
from wallaroo import _wire
from wallaroo.testing import LocalRun


@pytest.mark.parametrize("example", sorted(examples.EXAMPLES))
def test_expected_output_is_current(example):
    expected = (examples.HERE / example / "expected.txt").read_text()
    assert examples.final_values(example) == expected, (
        f"{example}/expected.txt is stale: run python3 componentize-py-examples/examples.py --bless"
    )


@pytest.mark.parametrize(
    ("example", "twins"),
    [
        ("word_count", ["word_count_classes", "word_count_decorators"]),
        ("alphabet", ["alphabet_partitioned", "alphabet_one_state"]),
    ],
)
def test_every_api_style_gives_the_same_output_byte_for_byte(example, twins):
    # One runtime delivers every message at once, depth first, so the outputs come in the
    # same order and can be compared whole.
    for twin in twins:
        assert examples.output(twin) == examples.output(example), twin


def test_celsius_kafka_converts_its_sample():
    directory = examples.HERE / "celsius_kafka"
    sys.path.insert(0, str(directory))
    try:
        celsius = importlib.import_module("celsius")
    finally:
        sys.path.remove(str(directory))
    args = ["--kafka_source_topic", "celsius-in", "--kafka_source_brokers", "127.0.0.1:9092"]
    args += ["--kafka_sink_topic", "celsius-out", "--kafka_sink_brokers", "127.0.0.1:9092"]
    run = LocalRun(celsius, args)
    run.feed("convert", examples.lines(directory / "celsius.txt"))
    assert not run.failures, run.failures
    values = [_wire.decode_kafka_record(payload) for payload in run.outputs[0]]
    assert values == [
        (value, None, None)
        for value in (b"32.000000", b"212.000000", b"-40.000000", b"97.880000", b"70.700000")
    ]
