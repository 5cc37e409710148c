"""The examples' expected outputs are what the SDK computes from their samples."""

import examples
import pytest


@pytest.mark.parametrize("example", sorted(examples.EXAMPLES))
def test_expected_output_is_current(example):
    expected = (examples.HERE / example / "expected.txt").read_text()
    assert examples.final_values(example) == expected, (
        f"{example}/expected.txt is stale: run python3 componentize-py-examples/examples.py --bless"
    )
