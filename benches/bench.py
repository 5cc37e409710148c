"""Word-count throughput, side by side, in one session on one machine.

    python3 benches/bench.py [--lines N] [--workers N]

Runs the same job, the same input, back to back:
- the Python word-count component on `wallaroo run` (release build), 1 and N workers;
- the Go word-count component, 1 and N workers;
- the same Python application on plain CPython through the SDK (no Wasm, no engine): the
  sandbox's and the engine's cost together;
- a plain CPython word count (the same splitting and output lines, no framework).
Throughput is input lines per second, from the first byte sent to the last output line
received. Writes benches/RESULTS.md.
"""

import argparse
import datetime
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
W = ROOT / "target" / "release" / "wallaroo"
WORDS_PER_LINE = 10


def make_input(path, lines):
    words = (ROOT / "componentize-py-examples/word_count/sample.txt").read_text().split()
    rng = random.Random(7)
    with open(path, "w") as f:
        for _ in range(lines):
            f.write(" ".join(rng.choice(words) for _ in range(WORDS_PER_LINE)) + "\n")


def peak_rss_mib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def engine(wasm, workers, input_path, lines, work):
    out = work / "out.txt"
    out.unlink(missing_ok=True)
    receiver = subprocess.Popen(
        [W, "receive", "--listen", "127.0.0.1:0", "--output", out],
        stderr=subprocess.PIPE,
        text=True,
    )
    sink = receiver.stderr.readline().split()[-1]
    node, source = start_node(wasm, sink, workers, work)
    expected = lines * WORDS_PER_LINE
    started = time.monotonic()
    subprocess.run(
        [W, "send", "--host", source, "--file", input_path, "--batch-size", "256"],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    while True:
        with open(out, "rb") as f:
            if f.read().count(b"\n") >= expected:
                break
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    rss = peak_rss_mib(node.pid)
    node.terminate()
    node.wait()
    receiver.terminate()
    receiver.wait()
    return lines / elapsed, rss


def start_node(wasm, sink, workers, work):
    """`wallaroo run` with its source on a free port; returns the process and that port's
    address once it listens."""
    node = subprocess.Popen(
        [
            W,
            "run",
            wasm,
            "--in",
            "127.0.0.1:0",
            "--out",
            sink,
            "--workers",
            str(workers),
            "--cache-dir",
            work / "cache",
            "--data-dir",
            work / "data",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in node.stderr:
        if "listening on" in line:
            return node, line.split()[-1]
    raise RuntimeError(f"wallaroo run {wasm} exited before its source listened")


def warm_cache(wasm, work):
    """Starts and stops a node once, so measured runs load native code instead of compiling
    (compiling a Python component takes seconds and hundreds of MiB)."""
    node, _ = start_node(wasm, "127.0.0.1:1", 1, work)
    node.terminate()
    node.wait()


def native_sdk(input_path):
    sys.path.insert(0, str(ROOT / "guest-sdks/python"))
    sys.path.insert(0, str(ROOT / "componentize-py-examples/word_count"))
    import word_count
    from wallaroo.testing import LocalRun

    frames = Path(input_path).read_bytes().rstrip(b"\n").split(b"\n")
    run = LocalRun(word_count, ["--in", "h:1", "--out", "h:2"])
    started = time.monotonic()
    run.feed("Split and Count", frames)
    return len(frames) / (time.monotonic() - started)


def native_plain(input_path):
    counts = {}
    lines = Path(input_path).read_text().splitlines()
    started = time.monotonic()
    out = []
    punctuation = " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
    for line in lines:
        for word in line.lower().strip(punctuation).split(" "):
            word = word.strip(punctuation)
            counts[word] = counts.get(word, 0) + 1
            out.append(f"{word} => {counts[word]}\n".encode())
    return len(lines) / (time.monotonic() - started)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--bin", "wallaroo"], cwd=ROOT, check=True
    )
    work = Path(tempfile.mkdtemp(prefix="wallaroo-bench-"))
    input_path = work / "lines.txt"
    make_input(input_path, args.lines)
    python_wasm, go_wasm = work / "wc_py.wasm", work / "wc_go.wasm"
    subprocess.run(
        [W, "build", ROOT / "componentize-py-examples/word_count/word_count.py", "-o", python_wasm],
        check=True,
    )
    subprocess.run(
        [W, "build", ROOT / "guest-sdks/go/examples/word_count", "-o", go_wasm],
        check=True,
        cwd=ROOT / "guest-sdks/go",
    )
    for wasm in (python_wasm, go_wasm):
        warm_cache(wasm, work)
    rows = []
    for name, wasm in (("Python component", python_wasm), ("Go component", go_wasm)):
        for workers in sorted({1, args.workers}):
            rate, rss = engine(wasm, workers, input_path, args.lines, work)
            rows.append((f"{name}, {workers} worker{'s' if workers > 1 else ''}", rate, rss))
            print(f"{rows[-1][0]}: {rate:,.0f} lines/s, peak RSS {rss} MiB", flush=True)
    rows.append(("Python app on native CPython via the SDK", native_sdk(input_path), None))
    rows.append(("plain native CPython word count", native_plain(input_path), None))
    for name, rate, _ in rows[-2:]:
        print(f"{name}: {rate:,.0f} lines/s")

    base = rows[0][1]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    lines = [
        "# Benchmark results",
        "",
        f"- date: {datetime.date.today().isoformat()}",
        f"- commit: {commit}",
        f"- machine: {cpu}, {os.cpu_count()} cores, Linux {platform.release()}",
        f"- job: word count, {args.lines:,} lines of {WORDS_PER_LINE} words, sent once with "
        "`wallaroo send --batch-size 256`; release build of the host",
        "- throughput: input lines per second, first byte sent to last output line received",
        "",
        "| run | lines/s | words/s | vs Python component, 1 worker | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, rate, rss in rows:
        lines.append(
            f"| {name} | {rate:,.0f} | {rate * WORDS_PER_LINE:,.0f} | "
            f"{rate / base:.2f}x | {rss if rss is not None else '-'} |"
        )
    lines += [
        "",
        "Not yet measured here (issue 5): Bytewax, latency percentiles at half load, a",
        "pass-through component for the engine's own per-message cost.",
        "",
    ]
    (ROOT / "benches/RESULTS.md").write_text("\n".join(lines))
    print("wrote benches/RESULTS.md")


if __name__ == "__main__":
    main()
