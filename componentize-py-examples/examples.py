"""Runs each example on plain CPython through the SDK and derives its expected final output.

    python3 componentize-py-examples/examples.py --bless   # rewrite every expected.txt

The end-to-end tests check that the same examples, compiled to components and run by the
engine, produce these values.
"""

import importlib
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "guest-sdks" / "python"))

from wallaroo.testing import LocalRun  # noqa: E402

ARGS = ["--in", "127.0.0.1:7010", "--out", "127.0.0.1:7002"]


def lines(path):
    """The messages `wallaroo send` makes of a text file: one per line, empty lines skipped."""
    return [
        line.removesuffix(b"\r")
        for line in path.read_bytes().split(b"\n")
        if line.removesuffix(b"\r")
    ]


def frames(path):
    data, out = path.read_bytes(), []
    while data:
        (n,) = struct.unpack(">I", data[:4])
        out.append(data[4 : 4 + n])
        data = data[4 + n :]
    return out


def word_count_sample(directory):
    return lines(directory.parent / "word_count" / "sample.txt")


def votes_sample(directory):
    return frames(directory.parent / "alphabet" / "votes.msg")


# example -> (its module, its source, its sample input as frame payloads). The word counts in
# the styles of Wallaroo's three API generations share word_count's sample, and the alphabets
# share alphabet's votes; each style must give the same output.
EXAMPLES = {
    "word_count": ("word_count", "Split and Count", word_count_sample),
    "word_count_classes": ("word_count_classes", "Split and Count", word_count_sample),
    "word_count_decorators": ("word_count_decorators", "Split and Count", word_count_sample),
    "alphabet": ("alphabet", "alphabet", votes_sample),
    "alphabet_partitioned": ("alphabet_partitioned", "alphabet", votes_sample),
    "alphabet_one_state": ("alphabet_one_state", "alphabet", votes_sample),
}


def output(example):
    """Everything the example's sink receives from its sample, on one runtime."""
    module_name, source, sample = EXAMPLES[example]
    directory = HERE / example
    sys.path.insert(0, str(directory))
    try:
        module = importlib.import_module(module_name)
    finally:
        sys.path.remove(str(directory))
    run = LocalRun(module, ARGS)
    run.feed(source, sample(directory))
    assert not run.failures, run.failures
    return run.output()


def final_values(example):
    """The last `KEY => N` line per key of the example's output, as sorted text."""
    last = {}
    for line in output(example).decode().splitlines():
        key, _, n = line.rpartition(" => ")
        last[key] = int(n)
    return "".join(f"{k} => {last[k]}\n" for k in sorted(last))


def main():
    if sys.argv[1:] != ["--bless"]:
        sys.exit(__doc__)
    for example in EXAMPLES:
        (HERE / example / "expected.txt").write_text(final_values(example))
        print(f"wrote {example}/expected.txt")


if __name__ == "__main__":
    main()
