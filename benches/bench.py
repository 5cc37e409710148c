"""Throughput, latency and memory of Wallaroo-RS beside its peers, in one session on one machine.

    python3 benches/bench.py [--lines N] [--workers N] [--passthrough-messages N] [--seconds S]

One command runs every peer back to back on the same input and writes benches/RESULTS.md:

- word count as a Python component and as a Go component on `wallaroo run` (release build),
  with 1 and N workers;
- the same job on Bytewax (a venv under target/ with the pinned Bytewax, made once), with its
  own runner at 1 and N workers per process and as N processes, fed and read over TCP exactly
  like the engine (benches/bytewax_wc.py);
- the same job as plain native CPython and plain native Go programs (benches/native_go), and
  the Python application on plain CPython through the SDK (no Wasm, no engine);
- a pass-through component in Python and in Go (no user work): the engine's own cost.

Each TCP run has two passes, each on a fresh node: a throughput pass (the input sent as fast as
`wallaroo send` writes, throughput = input messages / (last output line received - first byte
sent)), then a latency pass at a fixed offered load of half that throughput for --seconds
(`wallaroo send --rate --stamp`: every message carries its intended send time; `wallaroo
receive --latency` records send-to-receive time of each in an HdrHistogram). Peak RSS is the
node's (all its processes') high-water mark over the throughput pass, from wait4().
"""

import argparse
import datetime
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
W = ROOT / "target" / "release" / "wallaroo"
VENV = ROOT / "target" / "bench-venv"
BYTEWAX = "bytewax==0.21.1"
WORDS_PER_LINE = 10
GOAL = 1_000_000
PERCENTILES = ("p50", "p95", "p99", "p99.9", "p99.99", "max")


def make_input(path, lines):
    words = (ROOT / "componentize-py-examples/word_count/sample.txt").read_text().split()
    rng = random.Random(7)
    with open(path, "w") as f:
        for _ in range(lines):
            f.write(" ".join(rng.choice(words) for _ in range(WORDS_PER_LINE)) + "\n")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reap(proc, timeout):
    """Waits for `proc` with wait4(); returns its peak RSS in MiB (None if it did not exit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_maxrss // 1024
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    return None


class Node:
    """`wallaroo run WASM` with its source on a free port. A fresh data directory unless
    `recover` (a restart on the last node's log)."""

    def __init__(self, wasm, sink, workers, work, extra=(), recover=False):
        if not recover:
            shutil.rmtree(work / "data", ignore_errors=True)
        self.proc = subprocess.Popen(
            [W, "run", wasm, "--in", "127.0.0.1:0", "--out", sink, "--workers", str(workers)]
            + ["--cache-dir", work / "cache", "--data-dir", work / "data", *extra],
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = []
        for line in self.proc.stderr:
            self.log.append(line)
            if "listening on" in line:
                self.source = line.split()[-1]
                return
        raise RuntimeError(f"wallaroo run {wasm} exited before its source listened")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rss = reap(self.proc, 120)
        self.proc.stderr.close()
        return rss


class BytewaxRun:
    """`python -m bytewax.run` on benches/bytewax_wc.py: one process with `workers` workers, or
    `processes` processes of one worker each (-i/-a)."""

    def __init__(self, python, sink, workers=1, processes=1):
        self.source = f"127.0.0.1:{free_port()}"
        flow = f"bytewax_wc:flow({self.source!r}, {sink!r})"
        addrs = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
        self.procs = []
        for i in range(processes):
            cluster = ["-i", str(i), "-a", addrs] if processes > 1 else []
            self.procs.append(
                subprocess.Popen(
                    [python, "-m", "bytewax.run", flow, "-w", str(workers)] + cluster,
                    cwd=ROOT / "benches",
                )
            )

    def stop(self):
        """The flow ends when the sender closes; the sum of its processes' peak RSS."""
        rss = [reap(p, 120) for p in self.procs]
        return None if None in rss else sum(rss)


def measure(
    start, input_path, messages, lines_per_message, work, rate=None, timeout=600, expected=None
):
    """One pass: a receiver, the system under test (`start(sink)`), `wallaroo send`. Returns
    the receiver's report plus `rate` (input messages per second) and `rss`. The receiver waits
    for `messages * lines_per_message` lines, or `expected` where given."""
    report_path = work / "latency.json"
    report_path.unlink(missing_ok=True)
    if expected is None:
        expected = messages * lines_per_message
    receiver = subprocess.Popen(
        [W, "receive", "--listen", "127.0.0.1:0", "--output", os.devnull]
        + ["--latency", report_path, "--expect-lines", str(expected)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sink = receiver.stderr.readline().split()[-1]
        system = start(sink)
        send = [W, "send", "--host", system.source, "--file", input_path, "--repeat"]
        send += ["--messages", str(messages)]
        send += ["--batch-size", "256"] if rate is None else ["--rate", str(rate), "--stamp"]
        started = time.monotonic()
        try:
            subprocess.run(send, check=True, stderr=subprocess.DEVNULL, timeout=timeout)
            receiver.wait(timeout=timeout)
        finally:
            if receiver.poll() is None:
                receiver.send_signal(signal.SIGTERM)
                receiver.wait()
            rss = system.stop()
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    report = json.loads(report_path.read_text())
    if report["lines"] < expected:
        raise RuntimeError(f"{report['lines']} of {expected} output lines within {timeout} s")
    report["rate"] = messages / (report["last_ns"] / 1e9 - started)
    report["rss"] = rss
    return report


def run_peer(name, how, start, input_path, messages, lines_per_message, args, work, rows):
    """Throughput pass, then latency pass at half the throughput; appends one row."""
    row = {"name": name, "how": how, "rate": None, "latency": None, "rss": None}
    rows.append(row)
    try:
        full = measure(start, input_path, messages, lines_per_message, work)
        row.update(rate=full["rate"], rss=full["rss"])
        offered = max(1, int(full["rate"] / 2))
        lat = measure(
            start,
            input_path,
            offered * args.seconds,
            lines_per_message + (1 if lines_per_message > 1 else 0),
            work,
            rate=offered,
            timeout=args.seconds * 10 + 120,
        )
        row.update(offered=offered, achieved=lat["rate"], latency=lat["latency_us"])
    except (RuntimeError, subprocess.SubprocessError, OSError, KeyError, ValueError) as e:
        row["error"] = str(e)
    print(summary(row), flush=True)


def summary(row):
    if row["rate"] is None:
        return f"{row['name']}: failed: {row.get('error')}"
    text = f"{row['name']}: {row['rate']:,.0f} msg/s, peak RSS {row['rss']} MiB"
    if row["latency"]:
        lat = row["latency"]
        text += f"; at {row['offered']:,}/s p50 {lat['p50']:.0f} us p99 {lat['p99']:.0f} us"
    elif row.get("error"):
        text += f"; latency pass failed: {row['error']}"
    return text


def peer_process(argv, rows, name, how):
    """A native peer run as its own process; it prints JSON with `lines_per_s`."""
    row = {"name": name, "how": how, "rate": None, "latency": None, "rss": None}
    rows.append(row)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    rss = reap(proc, 600)
    try:
        row.update(rate=json.loads(out)["lines_per_s"], rss=rss)
    except (ValueError, KeyError) as e:
        row["error"] = f"{argv[0]} printed {out!r}: {e}"
    print(summary(row), flush=True)


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


def ensure_bytewax():
    """The bench venv's python with Bytewax, made once; (python, None) or (None, why not)."""
    python = VENV / "bin" / "python"
    want = BYTEWAX.split("==")[1]
    check = "import importlib.metadata as m; print(m.version('bytewax'))"
    if python.exists():
        got = subprocess.run([python, "-c", check], capture_output=True, text=True)
        if got.stdout.strip() == want:
            return python, None
    print(f"installing {BYTEWAX} into {VENV.relative_to(ROOT)}", flush=True)
    steps = [
        [sys.executable, "-m", "venv", VENV],
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", BYTEWAX],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return None, f"`{' '.join(map(str, step[-3:]))}` failed: {' / '.join(tail)}"
    return python, None


def build_native_go(work):
    go = "go"
    for candidate in ("go", "/usr/local/go/bin/go"):
        if subprocess.run(["which", candidate], capture_output=True).returncode == 0:
            go = candidate
            break
    exe = work / "native_go"
    done = subprocess.run(
        [go, "build", "-o", exe, "."], cwd=ROOT / "benches/native_go", capture_output=True
    )
    return exe if done.returncode == 0 else None


def machine():
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))

    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.split("\n")[0]
        except OSError:
            return "absent"

    return [
        f"- machine: {cpu}, {os.cpu_count()} cores, {int(mem) // 1024 // 1024} GiB, "
        f"Linux {platform.release()}",
        f"- {version(['rustc', '--version'])}; {version(['go', 'version'])}; "
        f"Python {platform.python_version()}",
    ]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000, help="word-count input lines")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--passthrough-messages", type=int, default=2_000_000)
    parser.add_argument("--seconds", type=int, default=10, help="length of a latency pass")
    parser.add_argument("--recovery-keys", type=int, default=100_000)
    parser.add_argument("--peer", nargs=2, metavar=("KIND", "INPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        kind, input_path = args.peer
        rate = native_plain(input_path) if kind == "plain" else native_sdk(input_path)
        print(json.dumps({"lines_per_s": rate}))
        return
    os.environ["PATH"] += os.pathsep + "/usr/local/go/bin"
    args.load_before = os.getloadavg()
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--bin", "wallaroo"], cwd=ROOT, check=True
    )
    work = Path(tempfile.mkdtemp(prefix="wallaroo-bench-"))
    input_path = work / "lines.txt"
    make_input(input_path, args.lines)
    wasm = {
        "wc_py": ROOT / "componentize-py-examples/word_count/word_count.py",
        "wc_go": ROOT / "guest-sdks/go/examples/word_count",
        "pt_py": ROOT / "tests/apps/passthrough/passthrough.py",
        "pt_go": ROOT / "guest-sdks/go/examples-internal/passthrough",
    }
    for name, source in wasm.items():
        wasm[name] = work / f"{name}.wasm"
        subprocess.run(
            [W, "build", source, "-o", wasm[name]], check=True, cwd=ROOT / "guest-sdks/go"
        )
        node = Node(wasm[name], "127.0.0.1:1", 1, work)  # compiles into the cache once
        node.stop()
    bytewax, bytewax_missing = ensure_bytewax()
    native_go = build_native_go(work)
    n = args.workers
    many = f"{n} workers"

    def components(kind, py, go, messages, lines_per_message):
        """The Python and Go components `py` and `go` with 1 and N workers; their rows."""
        rows = []
        for lang, key in (("Python", py), ("Go", go)):
            for workers in sorted({1, n}):
                run_peer(
                    f"{lang} {kind}, {workers} worker{'s' if workers > 1 else ''}",
                    f"`wallaroo run {key}.wasm --workers {workers}`",
                    lambda sink, k=key, w=workers: Node(wasm[k], sink, w, work),
                    input_path,
                    messages,
                    lines_per_message,
                    args,
                    work,
                    rows,
                )
        return rows

    wc = components("component", "wc_py", "wc_go", args.lines, WORDS_PER_LINE)
    if bytewax:
        for label, how, kw in (
            ("Bytewax, 1 worker", "`-w 1`", {"workers": 1}),
            (f"Bytewax, {many}", f"`-w {n}` (threads of one process)", {"workers": n}),
            (f"Bytewax, {n} processes", f"`-i I -a ...` x{n}, `-w 1`", {"processes": n}),
        ):
            run_peer(
                label,
                f"`python -m bytewax.run bytewax_wc:flow(...)` {how}",
                lambda sink, kw=kw: BytewaxRun(bytewax, sink, **kw),
                input_path,
                args.lines,
                WORDS_PER_LINE,
                args,
                work,
                wc,
            )
    me = [sys.executable, __file__, "--peer"]
    peer_process(me + ["plain", input_path], wc, "plain native CPython", "lines in memory")
    sdk = "`wallaroo.testing.LocalRun`"
    peer_process(me + ["sdk", input_path], wc, "Python app on native CPython via the SDK", sdk)
    if native_go:
        peer_process([native_go, input_path], wc, "plain native Go", "benches/native_go")

    pt = components("pass-through", "pt_py", "pt_go", args.passthrough_messages, 1)

    durable = []
    modes = (
        ("none", []),
        ("at-least-once", ["--resilience", "at-least-once"]),
        ("exactly-once", ["--resilience", "exactly-once", "--sink-framing", "tagged"]),
    )
    for lang, key in (("Go", "wc_go"), ("Python", "wc_py")):
        for mode, extra in modes:
            run_peer(
                f"{lang} word count, {many}, {mode}",
                f"`wallaroo run {key}.wasm --workers {n} {' '.join(extra)}`",
                lambda sink, k=key, e=extra: Node(wasm[k], sink, n, work, e),
                input_path,
                args.lines,
                WORDS_PER_LINE,
                args,
                work,
                durable,
            )
    recovered = recovery(wasm["wc_py"], n, args.recovery_keys, work)
    print(f"recovery: {recovered}", flush=True)

    args.load_after = os.getloadavg()
    write_results(args, wc, pt, durable, recovered, bytewax, bytewax_missing, native_go)


def recovery(wasm, workers, keys, work):
    """Word count with `keys` distinct words under exactly-once, killed with SIGKILL once every
    word's output is out (so a committed checkpoint holds every key), then restarted on the
    same log: the node's own report of what it recovered, and the time from exec to listening."""
    path = work / "keys.txt"
    with open(path, "w") as f:
        for line in range(keys // WORDS_PER_LINE):
            words = (f"k{line * WORDS_PER_LINE + i:07d}" for i in range(WORDS_PER_LINE))
            f.write(" ".join(words) + "\n")
    extra = ["--resilience", "exactly-once", "--sink-framing", "tagged"]
    report = work / "recovery.json"
    receiver = subprocess.Popen(
        [W, "receive", "--listen", "127.0.0.1:0", "--output", os.devnull]
        + ["--latency", report, "--expect-lines", str(keys)],
        stderr=subprocess.PIPE,
        text=True,
    )
    sink = receiver.stderr.readline().split()[-1]
    node = Node(wasm, sink, workers, work, extra)
    subprocess.run(
        [W, "send", "--host", node.source, "--file", path, "--ack", "--batch-size", "256"],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    receiver.wait(timeout=600)
    node.proc.send_signal(signal.SIGKILL)
    reap(node.proc, 60)
    started = time.monotonic()
    again = Node(wasm, "127.0.0.1:1", workers, work, extra, recover=True)
    listening = time.monotonic() - started
    again.stop()
    line = next((x.strip() for x in again.log if "recovered checkpoint" in x), "")
    found = re.search(r"(\d+) keys?.* in (\d+) ms", line)
    return {
        "keys": int(found.group(1)) if found else None,
        "ms": int(found.group(2)) if found else None,
        "listening_s": listening,
        "line": line,
    }


def ms(us):
    return f"{us / 1000:.2f}" if us is not None else "-"


def table(rows, base_name, per_message):
    base = next((r["rate"] for r in rows if r["name"] == base_name), None)
    head = [
        f"| run | {per_message}/s | vs {base_name} | peak RSS (MiB) | offered/s (achieved) | "
        + " | ".join(PERCENTILES)
        + " |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(PERCENTILES),
    ]
    for r in rows:
        rate = f"{r['rate']:,.0f}" if r["rate"] else f"failed: {r.get('error', '')}"
        ratio = f"{r['rate'] / base:.2f}x" if r["rate"] and base else "-"
        lat = r["latency"] or {}
        offered = "-"
        if r.get("offered"):
            offered = f"{r['offered']:,} ({r['achieved']:,.0f})"
        cells = [ms(lat.get(p)) for p in PERCENTILES]
        rss = r["rss"] if r["rss"] is not None else "-"
        head.append(
            f"| {r['name']} | {rate} | {ratio} | {rss} | {offered} | " + " | ".join(cells) + " |"
        )
    return head


def ratio(rows, a, b, what="throughput"):
    ra = next((r for r in rows if r["name"] == a), None)
    rb = next((r for r in rows if r["name"] == b), None)
    if not ra or not rb or not ra["rate"] or not rb["rate"]:
        return None
    line = f"- {a} / {b}: {what} {ra['rate'] / rb['rate']:.2f}x"
    if ra["latency"] and rb["latency"]:
        la, lb = ra["latency"], rb["latency"]
        line += f"; p50 {la['p50'] / lb['p50']:.2f}x, p99 {la['p99'] / lb['p99']:.2f}x"
        line += " (latency: lower is better)"
    return line


def write_results(args, wc, pt, durable, recovered, bytewax, bytewax_missing, native_go):
    n = args.workers
    many = f"{n} workers"
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    bw_version = (
        subprocess.run(
            [bytewax, "-c", "import importlib.metadata as m; print(m.version('bytewax'))"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if bytewax
        else None
    )
    lines = [
        "# Benchmark results",
        "",
        "Written by `python3 benches/bench.py` from one run; every figure below comes from it.",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}",
        f"- commit: {commit}",
        *machine(),
        f"- Bytewax: {bw_version or 'not run'}",
        "- load average (1, 5, 15 min) before the run: "
        + ", ".join(f"{x:.2f}" for x in args.load_before)
        + "; after: "
        + ", ".join(f"{x:.2f}" for x in args.load_after)
        + " (above 0 before the run: other work shared the cores)",
        f"- options: --lines {args.lines} --workers {n} "
        f"--passthrough-messages {args.passthrough_messages} --seconds {args.seconds}",
        "",
        "## How each peer was run",
        "",
        f"- Input: {args.lines:,} lines of {WORDS_PER_LINE} words drawn (seeded) from the word "
        "count example's sample, about 70 bytes a line. Every TCP peer gets it from `wallaroo "
        "send` as framed messages (4-byte big-endian length, one line a frame) on one "
        "connection and writes `WORD => COUNT` lines to one `wallaroo receive` (output "
        "discarded, lines counted); sender, system under test and receiver share the machine's "
        "cores.",
        "- Throughput pass: `wallaroo send --batch-size 256 --repeat --messages M` as fast as "
        "it can write; figure = input messages / (last output line received - first byte "
        "sent). A fresh node per pass, its code already compiled into the cache.",
        f"- Latency pass: a fresh node, `wallaroo send --rate R --stamp` for {args.seconds} s "
        "with R = half the throughput pass's figure. Each message starts with its intended "
        "send time (`t<ns> `, CLOCK_MONOTONIC), so a sender held up by the node still charges "
        "the delay (no coordinated omission); `wallaroo receive --latency` takes the stamp "
        "from the first word of each output line (a pass-through echoes it; a word count "
        "emits it as a word of its own, so a word-count latency line has 11 words) and "
        "records receive - intended time in an HdrHistogram (3 significant digits). "
        "Percentiles in milliseconds; achieved = stamped messages / (last output line - first "
        "byte sent), below the offered load when the node fell behind.",
        "- Peak RSS: wait4() high-water mark of the node's process over the throughput pass "
        "(Bytewax with N processes: their sum; native peers: their own process).",
        "- Wallaroo components: `wallaroo run APP.wasm --workers N` (release build, default "
        "`--batch-size 256`; `--resilience none`, no write-ahead log, unless a row says "
        "otherwise). Word count: "
        "componentize-py-examples/word_count (Python) and guest-sdks/go/examples/word_count "
        "(Go): split, key_by word, running count per word. Pass-through: "
        "tests/apps/passthrough (Python) and guest-sdks/go/examples-internal/passthrough (Go): "
        "decoder returns the frame, encoder appends a newline; no user work, no state, no "
        "key_by.",
        '- Bytewax: `python -m bytewax.run "bytewax_wc:flow(IN, OUT)"` (benches/bytewax_wc.py) '
        f"in a venv with `pip install {BYTEWAX}`, as `-w 1`, `-w {n}` (worker threads in one "
        f"process) and {n} processes of one worker (`-i I -a ADDRS`, Bytewax 0.21's way to run "
        "processes). Same splitting and output lines, `key_on` + `stateful_map` for the "
        "count. Bytewax has no TCP source; the flow's source is the one a user would write "
        "with its custom-source API (one partition: accept, non-blocking reads, decode the "
        "same frames; one worker reads the input, as with our one connection), and every "
        "worker writes its lines to the receiver on a connection of its own.",
        "- plain native CPython: the same splitting, counting and output lines (collected in a "
        "list) over the lines already in memory, no framework; plain native Go "
        "(benches/native_go, `go build`, standard library only): the same, output into a "
        "buffer. Python app via the SDK: the word count module through "
        "`wallaroo.testing.LocalRun` on CPython (no Wasm, no engine, no sockets). Native peers "
        "have no latency figures: they are not streams.",
        "",
        f"## Word count ({args.lines:,} lines, {args.lines * WORDS_PER_LINE:,} words)",
        "",
        "Throughput in input lines/s (x10 for words/s). Latency at the offered load "
        "shown (lines/s).",
        "",
        *table(wc, "Python component, 1 worker", "lines"),
        "",
        f"## Pass-through ({args.passthrough_messages:,} messages)",
        "",
        f"The engine's own cost per message; goal: {GOAL:,} messages/s per worker.",
        "",
        *table(pt, "Python pass-through, 1 worker", "msgs"),
        "",
        f"## Durability: word count with {many} per resilience mode",
        "",
        "The same input and passes as above. `at-least-once` logs every source batch to the "
        "node's write-ahead log before processing it and checkpoints key state every second; "
        "`exactly-once` also holds output until its checkpoint commits, logs it, and releases "
        "it tagged with (epoch, sequence) (`--sink-framing tagged`; `wallaroo receive` drops "
        "repeats), so its latency includes the wait for the next checkpoint (1 s interval). "
        "The sender is a plain `wallaroo send` in every mode.",
        "",
        *table(durable, f"Go word count, {many}, none", "lines"),
        "",
        f"Recovery: Python word count with {args.recovery_keys:,} distinct keys under "
        "exactly-once, killed with SIGKILL once all output was out, restarted on the same "
        "data directory: "
        + (
            f"{recovered['keys']:,} keys restored (the node's own figure: "
            f"{recovered['ms']:,} ms from start to ready, including reading the log and "
            f"restoring into fresh instances); process start to source listening "
            f"{recovered['listening_s'] * 1000:,.0f} ms. The node said: `{recovered['line']}`"
            if recovered.get("keys") is not None
            else f"not measured ({recovered})"
        ),
        "",
        "## Ratios",
        "",
    ]
    pairs = [
        ("Python component, 1 worker", "Bytewax, 1 worker"),
        (f"Python component, {many}", f"Bytewax, {many}"),
        (f"Python component, {many}", f"Bytewax, {n} processes"),
        ("Go component, 1 worker", "Bytewax, 1 worker"),
        (f"Go component, {many}", f"Bytewax, {many}"),
        ("Python component, 1 worker", "plain native CPython"),
        ("Python component, 1 worker", "Python app on native CPython via the SDK"),
        ("Go component, 1 worker", "plain native Go"),
        ("Go component, 1 worker", "Python component, 1 worker"),
        (f"Python component, {many}", "Python component, 1 worker"),
        (f"Go component, {many}", "Go component, 1 worker"),
        ("Bytewax, 1 worker", "plain native CPython"),
    ]
    lines += [line for a, b in pairs if (line := ratio(wc, a, b))]
    for lang in ("Go", "Python"):
        for mode in ("at-least-once", "exactly-once"):
            base = f"{lang} word count, {many}, none"
            line = ratio(durable, f"{lang} word count, {many}, {mode}", base)
            if line:
                lines.append(line)
    for r in pt:
        if r["rate"]:
            lines.append(f"- {r['name']} / goal of {GOAL:,} msgs/s: {r['rate'] / GOAL:.2f}x")
    lines += ["", "## Not measured", ""]
    missing = [f"- {r['name']}: {r['error']}" for r in wc + pt + durable if r.get("error")]
    if bytewax_missing:
        missing.append(f"- Bytewax: cannot be installed here: {bytewax_missing}")
    if not native_go:
        missing.append("- plain native Go: `go build` in benches/native_go failed")
    lines += missing or ["- nothing: every run above finished."]
    lines.append("")
    # benches/cluster.py writes its own section after a marker line; keep it.
    path = ROOT / "benches/RESULTS.md"
    old = path.read_text() if path.exists() else ""
    kept = old[old.index("<!-- cluster.py -->") :] if "<!-- cluster.py -->" in old else ""
    path.write_text("\n".join(lines) + ("\n" + kept if kept else ""))
    print("wrote benches/RESULTS.md")


if __name__ == "__main__":
    main()
