"""Kafka in and out, side by side in one run: word count from a topic of 4 partitions to a topic,
with `--resilience none` and `--resilience exactly-once` (one transaction per checkpoint), and
the latency a record sees from its producer to a `read_committed` consumer in each mode.

    python3 benches/kafka.py [--lines N] [--workers N] [--rate N]

Uses the development broker (scripts/kafka start) on 127.0.0.1:9092 and the release build.

- Throughput: the input is produced into the topic first; the node then reads it from the
  start. Words per second are output records / (last record seen by a consumer of the output
  topic - the node saying it runs), so compiling the component is not included.
- Latency: the celsius example (componentize-py-examples/celsius_kafka) converts values that
  are the moment each was produced (milliseconds since the run began), at `--rate` records per
  second; the consumer turns each result back into that moment and takes it from when the
  record reached it. p50, p99 and the largest are reported per mode.

Appends its table to benches/RESULTS.md.
"""

import argparse
import datetime
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

import bench

ROOT = Path(__file__).resolve().parent.parent
WORD_COUNT = ROOT / "tests" / "apps" / "kafka_word_count" / "word_count.py"
CELSIUS = ROOT / "componentize-py-examples" / "celsius_kafka" / "celsius.py"
BROKERS = "127.0.0.1:9092"


def kafka(*args, **kw):
    return subprocess.run([bench.W, "kafka", *args, "--brokers", BROKERS], check=True, **kw)


def topic(prefix, partitions):
    name = f"{prefix}-{os.getpid()}-{time.time_ns() % 10**9}"
    kafka("create-topic", name, "--partitions", str(partitions), capture_output=True)
    return name


def node(wasm, work, mode, source, sink, workers, extra=()):
    data = Path(tempfile.mkdtemp(dir=work))
    args = [bench.W, "run", wasm, "--workers", str(workers), "--resilience", mode]
    args += ["--data-dir", data, *extra]
    args += ["--kafka_source_topic", source, "--kafka_source_brokers", BROKERS]
    args += ["--kafka_sink_topic", sink, "--kafka_sink_brokers", BROKERS]
    log = data / "node.log"
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    deadline = time.monotonic() + 120
    while b"running;" not in log.read_bytes():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"the node did not start:\n{log.read_text()}")
        time.sleep(0.01)
    return proc, time.monotonic()


def follow(path, until, timeout=300):
    """(time of the first line, time of the `until`-th line, lines) of a growing file."""
    first = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = path.read_bytes().count(b"\n") if path.exists() else 0
        now = time.monotonic()
        if n and first is None:
            first = now
        if n >= until:
            return first, now, n
        time.sleep(0.005)
    raise SystemExit(f"only {n} of {until} lines reached {path} in {timeout} s")


def throughput(wasm, work, mode, input_path, words, workers):
    source, sink = topic("bench-words", 4), topic("bench-counts", 4)
    kafka("produce", "--topic", source, input_path, capture_output=True)
    out = work / f"out-{mode}.txt"
    consumer = subprocess.Popen(
        [bench.W, "kafka", "consume", "--brokers", BROKERS, "--topic", sink, "-o", out],
        stderr=subprocess.DEVNULL,
    )
    proc, started = node(wasm, work, mode, source, sink, workers)
    try:
        _first, last, n = follow(out, words)
    finally:
        proc.terminate()
        proc.wait()
        consumer.terminate()
        consumer.wait()
    return n / (last - started)


def latency(wasm, work, mode, rate, seconds):
    source, sink = topic("bench-celsius", 1), topic("bench-fahrenheit", 1)
    out = work / f"lat-{mode}.txt"
    consumer = subprocess.Popen(
        [bench.W, "kafka", "consume", "--brokers", BROKERS, "--topic", sink, "-o", out],
        stderr=subprocess.DEVNULL,
    )
    proc, _ = node(wasm, work, mode, source, sink, 1, ["--checkpoint-interval", "200"])
    time.sleep(1)
    producer = subprocess.Popen(
        [bench.W, "kafka", "produce", "--brokers", BROKERS, "--topic", source],
        stdin=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    start = time.time()
    seen = {}
    records = rate * seconds
    offset = 0
    for i in range(records):
        time.sleep(max(0.0, start + i / rate - time.time()))
        producer.stdin.write(f"{(time.time() - start) * 1000:.3f}\n".encode())
        producer.stdin.flush()
        # Arrival times, read as they come.
        data = out.read_bytes() if out.exists() else b""
        now = time.time()
        for line in data[offset:].splitlines(keepends=True):
            if line.endswith(b"\n"):
                seen[len(seen)] = (float(line) - 32) / 1.8, (now - start) * 1000
                offset += len(line)
    producer.stdin.close()
    producer.wait()
    deadline = time.time() + 30
    while len(seen) < records and time.time() < deadline:
        data = out.read_bytes()
        now = time.time()
        for line in data[offset:].splitlines(keepends=True):
            if line.endswith(b"\n"):
                seen[len(seen)] = (float(line) - 32) / 1.8, (now - start) * 1000
                offset += len(line)
        time.sleep(0.002)
    proc.terminate()
    proc.wait()
    consumer.terminate()
    consumer.wait()
    lat = sorted(arrived - sent for sent, arrived in seen.values())
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    return len(lat), pick(0.5), pick(0.99), lat[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=40_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=15)
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "wallaroo"], check=True)
    subprocess.run([ROOT / "scripts" / "kafka", "start"], check=True, stdout=subprocess.DEVNULL)
    work = Path(tempfile.mkdtemp(prefix="wallaroo-kafka-bench-"))
    wc, celsius = work / "wc.wasm", work / "celsius.wasm"
    subprocess.run([bench.W, "build", WORD_COUNT, "-o", wc], check=True)
    subprocess.run([bench.W, "build", CELSIUS, "-o", celsius], check=True)
    rng = random.Random(7)
    input_path = work / "input.txt"
    words = 0
    with open(input_path, "w") as f:
        for _ in range(args.lines):
            line = [f"w{rng.randrange(1000)}" for _ in range(10)]
            words += len(line)
            f.write(" ".join(line) + "\n")
    rows = []
    for mode in ("none", "exactly-once"):
        rate = throughput(wc, work, mode, input_path, words, args.workers)
        n, p50, p99, top = latency(celsius, work, mode, args.rate, args.seconds)
        rows.append((mode, rate, n, p50, p99, top))
        print(f"{mode}: {rate:,.0f} words/s; latency p50 {p50:.1f} ms p99 {p99:.1f} ms", flush=True)
    load = os.getloadavg()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    lines = [
        "",
        "## Kafka in and out (benches/kafka.py)",
        "",
        f"- {datetime.date.today()}, commit {commit}, load average "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}",
        *bench.machine(),
        f"- word count, {args.lines:,} lines ({words:,} words) from a topic of 4 partitions to "
        f"a topic of 4, {args.workers} workers, one broker (Kafka 4.4, KRaft) on the same "
        "machine; throughput from the node running to the last output record seen",
        f"- latency: the celsius app, {args.rate} records/s for {args.seconds} s from one "
        "producer to one read_committed consumer, 1 worker, checkpoint interval 200 ms",
        "",
        "| resilience | words/s | latency p50 | p99 | max | records |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode, rate, n, p50, p99, top in rows:
        lines.append(f"| {mode} | {rate:,.0f} | {p50:.1f} ms | {p99:.1f} ms | {top:.1f} ms | {n} |")
    none, eo = rows[0], rows[1]
    lines += [
        "",
        f"Exactly-once runs at {eo[1] / none[1]:.2f}x the throughput of none and adds "
        f"{eo[3] - none[3]:.0f} ms at p50 ({eo[4] - none[4]:.0f} ms at p99): output waits for "
        "its checkpoint to commit, then for its transaction to commit.",
    ]
    with open(ROOT / "benches" / "RESULTS.md", "a") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
