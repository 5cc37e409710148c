"""The examples' expected outputs are what the SDK computes from their samples."""

import examples
import pytest


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
