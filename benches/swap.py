"""The stream's pause during a hot swap, as a receiver sees it, at 10k and 1M keys of state.

    python3 benches/swap.py [--keys 10000,1000000] [--systems cluster,watch]

For each key count and each system, in one run:
- the application is benches/swap_app/keyed_count.py (key = the whole line, a running count per
  key, one output line per message); its version 2 is the same file with `VERSION = 2`, whose
  lines read `KEY := COUNT` instead of `KEY => COUNT`;
- systems: `cluster` is three `wallaroo node`s on 127.0.0.1 with one worker each, deployed with
  `wallaroo deploy`, swapped with `wallaroo deploy` of version 2; `watch` is one `wallaroo run
  --watch` with two workers, swapped by replacing its .wasm file. Both run exactly-once with
  tagged sinks (`--resilience exactly-once --sink-framing tagged`), checkpoints every 1 s;
- prefill: every key once (and at 10k keys the keys again, to 200k messages) sent as fast as
  `wallaroo send --ack --batch-size 256` goes; the time until the receiver has every output
  line gives the maximum rate, and the steady load offered next is half of it;
- steady load: a paced sender of this script (acknowledged mode, so it rides the swap's source
  restart: it reconnects every 20 ms and resends from where the node says) offers that rate on
  a fixed schedule (message i is due at t0 + i/rate; a sender held up catches up at once),
  cycling over the keys in order; the swap is asked after a few seconds of it;
- the receiver (a thread of this script) keeps each tagged frame once and the time its bytes
  arrived. From those: the median and largest interval between consecutive output lines at
  steady state (exactly-once output leaves in a burst at each checkpoint's commit, so the
  largest steady interval is about the checkpoint interval), the largest interval around the
  swap, and each line's latency from its message's scheduled send time. Every key's counts are
  checked to run 1..n with nothing lost or repeated, switching version once;
- the node's own figures: `wallaroo status --json` (the coordinator's paused_ms and took_ms,
  the state held) for the cluster, the `swapped ... in N ms` line and the metrics for `watch`;
  where the pause goes comes from the nodes' logs (timestamps, RUST_LOG=debug).

The section it writes replaces the one in benches/RESULTS.md after the `<!-- swap.py -->`
line (bench.py and cluster.py keep it). Every run saves its figures as results.json in its work
directory; `--compare JSON` sets an earlier run's beside this one's in the section.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench import ROOT, W, free_port, machine

MARKER = "<!-- swap.py -->"
APP = ROOT / "benches/swap_app/keyed_count.py"
NODES = 3
ACK_HELLO = b"\0wallaroo-ack\x01"
RESUME_AT_LAST_ACK = 2**64 - 1
TAGGED_HELLO = b"\0wallaroo-tagged\x01"
TAG_HEADER = 20
EXACTLY_ONCE = ["--resilience", "exactly-once", "--sink-framing", "tagged"]
PREFILL_AT_LEAST = 200_000


def log_time(line):
    """The Unix time in seconds of a log line's RFC 3339 timestamp (tracing's format)."""
    found = re.match(r"\s*(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
    if not found:
        return None
    stamp = datetime.datetime.fromisoformat(found.group(1) + "+00:00")
    return stamp.timestamp()


class Receiver:
    """Listens where the sinks connect; keeps every tagged frame once (per sink identity, as
    `wallaroo receive` does) with the CLOCK_MONOTONIC time its last byte arrived."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.addr = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.lock = threading.Lock()
        self.chunks = []  # (arrival ns, lines kept so far), one per read that kept lines
        self.data = bytearray()
        self.count = 0
        self.repeated = 0
        self.last = {}
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self.read, args=(conn,), daemon=True).start()

    def read(self, conn):
        pending = b""
        identity = None
        with conn:
            while True:
                try:
                    got = conn.recv(1 << 16)
                except OSError:
                    return
                if not got:
                    return
                now = time.monotonic_ns()
                pending += got
                if identity is None:
                    if len(pending) < len(TAGGED_HELLO) + 4:
                        continue
                    if not pending.startswith(TAGGED_HELLO):
                        raise RuntimeError("the sink is not tagged (--sink-framing tagged)")
                    at = len(TAGGED_HELLO)
                    (n,) = struct.unpack_from(">I", pending, at)
                    if len(pending) < at + 4 + n:
                        continue
                    identity = pending[at + 4 : at + 4 + n].decode()
                    pending = pending[at + 4 + n :]
                pending = self.take(identity, pending, now)

    def take(self, identity, pending, now):
        at, end = 0, len(pending)
        kept = []
        with self.lock:
            last = self.last.get(identity, (0, 0))
            while at + TAG_HEADER <= end:
                epoch, seq, n = struct.unpack_from(">QQI", pending, at)
                if at + TAG_HEADER + n > end:
                    break
                if (epoch, seq) > last:
                    last = (epoch, seq)
                    kept.append(pending[at + TAG_HEADER : at + TAG_HEADER + n])
                else:
                    self.repeated += 1
                at += TAG_HEADER + n
            self.last[identity] = last
            if kept:
                self.data += b"".join(kept)
                self.count += len(kept)
                self.chunks.append((now, self.count))
        return pending[at:]

    def wait(self, lines, timeout):
        deadline = time.monotonic() + timeout
        while self.count < lines:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.count} of {lines} output lines within {timeout} s")
            time.sleep(0.05)

    def lines(self):
        """[(arrival ns, line)] in arrival order."""
        with self.lock:
            text = bytes(self.data).decode().split("\n")
            chunks = list(self.chunks)
        out, start = [], 0
        for t, upto in chunks:
            out.extend((t, line) for line in text[start:upto])
            start = upto
        return out

    def close(self):
        self.server.close()


# The paced sender, run as a process of its own (`--send`) so the receiver's work does not
# delay its schedule.


def paced_sender(host, keys_path, rate, stream_id):
    """Offers `rate` messages/s on a schedule in acknowledged mode until SIGTERM, then waits
    for every message to be acknowledged and prints how many it sent."""
    keys = Path(keys_path).read_bytes().split(b"\n")[:-1]
    frames = [struct.pack(">I", len(k)) + k for k in keys]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    acked = [0]
    t0 = time.monotonic_ns()
    print(f"start {t0}", flush=True)
    limit = None
    reconnects = 0

    def due():
        """Messages due by now; from the stop on, all that were due then."""
        nonlocal limit
        now = time.monotonic_ns()
        if limit is None and stop.is_set():
            limit = (int((now - t0) * rate / 1e9), now + 60_000_000_000)
        if limit is None:
            return int((now - t0) * rate / 1e9) + 1
        if now > limit[1]:
            sys.exit(f"sender: {acked[0]} of {limit[0]} acknowledged 60 s after the stop")
        return limit[0]

    while True:
        due()
        try:
            conn = socket.create_connection(host.rsplit(":", 1), timeout=5)
        except OSError:
            time.sleep(0.02)
            continue
        # A node that holds its sources back (a long checkpoint) blocks the writes: no timeout.
        conn.settimeout(None)
        try:
            hello = ACK_HELLO + struct.pack(">Q", stream_id)
            conn.sendall(struct.pack(">I", len(hello)) + hello)
            resume = b""
            while len(resume) < 8:
                got = conn.recv(8 - len(resume))
                if not got:
                    raise OSError("closed before the resume position")
                resume += got
            (resume,) = struct.unpack(">Q", resume)
            base = acked[0] if resume == RESUME_AT_LAST_ACK else resume
            acked[0] = max(acked[0], base)
            broken = threading.Event()

            def acks(conn=conn, base=base, broken=broken):
                buf = b""
                try:
                    while True:
                        got = conn.recv(4096)
                        if not got:
                            break
                        buf += got
                        while len(buf) >= 8:
                            (n,) = struct.unpack_from(">Q", buf)
                            buf = buf[8:]
                            acked[0] = max(acked[0], base + n)
                except OSError:
                    pass
                broken.set()

            threading.Thread(target=acks, daemon=True).start()
            at = base
            while not broken.is_set():
                upto = due()
                if limit is not None and at >= limit[0] and acked[0] >= limit[0]:
                    print(f"sent {limit[0]} reconnects {reconnects}", flush=True)
                    conn.close()
                    return
                if at < upto:
                    conn.sendall(b"".join(frames[i % len(frames)] for i in range(at, upto)))
                    at = upto
                time.sleep(0.002)
        except OSError:
            pass
        conn.close()
        reconnects += 1
        time.sleep(0.02)


class Cluster:
    name = "3 nodes, 1 worker each"

    def __init__(self, wasm, sink, work, interval):
        base = work / "cluster"
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir()
        self.certs = base / "certs"
        subprocess.run([W, "cert", "init", self.certs], check=True, stdout=subprocess.DEVNULL)
        self.hosts = base / "hosts.txt"
        addrs = [f"127.0.0.1:{free_port()}" for _ in range(NODES)]
        self.hosts.write_text("\n".join(addrs) + "\n")
        env = dict(os.environ, RUST_LOG="warn,wallaroo_cluster=debug,wallaroo_engine=debug")
        self.logs = [base / f"node{i}.log" for i in range(NODES)]
        self.nodes = []
        app_port = 1024
        for i, addr in enumerate(addrs):
            offset = free_port() - app_port
            log = open(self.logs[i], "w")
            self.nodes.append(
                subprocess.Popen(
                    [W, "node", "--listen", addr, "--data-dir", base / f"node{i}"]
                    + ["--certs", self.certs, "--source-port-offset", str(offset)]
                    + ["--cache-dir", work / "cache"],
                    stderr=log,
                    env=env,
                )
            )
            log.close()
        self.deploy_args = ["--workers", "1", *EXACTLY_ONCE, "--checkpoint-interval", interval]
        self.tail = ["--in", f"127.0.0.1:{app_port}", "--out", sink]
        out = self.deploy(wasm)
        self.source = re.search(r"source node 0: .* (\S+)$", out, re.M).group(1)

    def deploy(self, wasm):
        for _ in range(100):
            done = subprocess.run(
                [W, "deploy", "--nodes", self.hosts, "--certs", self.certs, *self.deploy_args]
                + [wasm, *self.tail],
                capture_output=True,
                text=True,
            )
            if done.returncode == 0:
                return done.stdout + done.stderr
            if "unreachable" not in done.stderr and "cannot reach" not in done.stderr:
                raise RuntimeError(f"deploy failed: {done.stderr}")
            time.sleep(0.1)
        raise RuntimeError(f"deploy failed: {done.stderr}")

    def swap(self, wasm):
        said = self.deploy(wasm)
        return next((x for x in said.splitlines() if "swapped" in x), said.strip())

    def status(self):
        out = subprocess.run(
            [W, "status", "--json", "--nodes", self.hosts, "--certs", self.certs],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return json.loads(out)

    def state(self):
        nodes = self.status()["nodes"]
        return sum(n["state_keys"] for n in nodes), sum(n["state_bytes"] for n in nodes)

    def stop(self):
        subprocess.run(
            [W, "stop", "--nodes", self.hosts, "--certs", self.certs],
            capture_output=True,
        )
        for node in self.nodes:
            node.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node.wait(60)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()


class Watch:
    name = "1 node, `run --watch`, 2 workers"

    def __init__(self, wasm, sink, work, interval):
        base = work / "watch"
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir()
        self.wasm = base / "keyed_count.wasm"
        shutil.copy(wasm, self.wasm)
        self.log = base / "node.log"
        self.metrics = f"127.0.0.1:{free_port()}"
        # A fixed port: the source listens again on the same one after the swap.
        source = f"127.0.0.1:{free_port()}"
        env = dict(os.environ, RUST_LOG="warn,wallaroo_engine=debug")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [W, "run", "--watch", self.wasm, "--workers", "2", *EXACTLY_ONCE]
                + ["--checkpoint-interval", interval, "--metrics", self.metrics]
                + ["--cache-dir", work / "cache", "--data-dir", base / "data"]
                + ["--in", source, "--out", sink],
                stderr=log,
                env=env,
            )
        line = self.wait_line(r"listening on (\S+)", 120)
        self.source = re.search(r"listening on (\S+)", line).group(1)

    def wait_line(self, pattern, timeout, after=0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.log.read_text().splitlines()[after:]
            hit = next((x for x in lines if re.search(pattern, x)), None)
            if hit:
                return hit
            if self.proc.poll() is not None:
                raise RuntimeError(f"wallaroo run exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)
        raise RuntimeError(f"no line like {pattern!r} in {timeout} s")

    def swap(self, wasm):
        seen = len(self.log.read_text().splitlines())
        staged = self.wasm.with_suffix(".new")
        shutil.copy(wasm, staged)
        os.replace(staged, self.wasm)
        return self.wait_line(r"swapped to|refused|could not start", 600, seen)

    def state(self):
        text = urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=10).read()
        found = dict(
            re.findall(r"^wallaroo_(state_keys|state_bytes)\S* (\d+)", text.decode(), re.M)
        )
        return int(found.get("state_keys", 0)), int(found.get("state_bytes", 0))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def measure(system_cls, keys, work, wasm, args):
    """One system at one key count: prefill, steady load, swap, and what the receiver saw."""
    keys_path = work / f"keys{keys}.txt"
    if not keys_path.exists():
        keys_path.write_text("".join(f"k{i:07d}\n" for i in range(keys)))
    reps = -(-PREFILL_AT_LEAST // keys)
    prefill = reps * keys
    receiver = Receiver()
    system = system_cls(wasm[1], receiver.addr, work, str(args.checkpoint_interval))
    r = {"system": system.name, "keys": keys, "prefill": prefill}
    r["interval_ns"] = args.checkpoint_interval * 1_000_000
    try:
        started = time.monotonic_ns()
        subprocess.run(
            [W, "send", "--host", system.source, "--file", keys_path, "--ack"]
            + ["--batch-size", "256", "--repeat", "--messages", str(prefill)],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        receiver.wait(prefill, 600)
        r["max_rate"] = prefill / ((receiver.chunks[-1][0] - started) / 1e9)
        rate = r["rate"] = int(r["max_rate"] / 2)
        r["state_before"] = system.state()
        sender = subprocess.Popen(
            [sys.executable, __file__, "--send", system.source, keys_path, str(rate)]
            + [str(int.from_bytes(os.urandom(7), "big") + 1)],
            stdout=subprocess.PIPE,
            text=True,
        )
        t0 = int(sender.stdout.readline().split()[1])
        time.sleep(args.before)
        r["swap_asked"] = time.monotonic_ns()
        r["said"] = system.swap(wasm[2])
        r["swap_answered"] = time.monotonic_ns()
        time.sleep(args.after)
        sender.send_signal(signal.SIGTERM)
        out = sender.communicate(timeout=300)[0]
        found = re.search(r"sent (\d+) reconnects (\d+)", out)
        r["sent"], r["reconnects"] = int(found.group(1)), int(found.group(2))
        receiver.wait(prefill + r["sent"], 300)
        r["state_after"] = system.state()
        r["status"] = system.status() if isinstance(system, Cluster) else None
    finally:
        system.stop()
        receiver.close()
    r["repeated_frames"] = receiver.repeated
    r["logs"] = [p.read_text() for p in getattr(system, "logs", [getattr(system, "log", None)])]
    analyse(r, receiver.lines(), t0, reps)
    return r


def analyse(r, lines, t0, reps):
    keys, rate = r["keys"], r["rate"]
    counts, errors, switched = {}, 0, 0
    steady = []  # (arrival ns, latency ns, version)
    for t, line in lines:
        key, sep, count = line.split(" ")
        count = int(count)
        last = counts.get(key, (0, "=>"))
        if count != last[0] + 1 or (last[1] == ":=" and sep == "=>"):
            errors += 1
        if sep != last[1]:
            switched += 1
        counts[key] = (count, sep)
        if count > reps:
            i = (count - reps - 1) * keys + int(key[1:])
            steady.append((t, t - (t0 + i * 1_000_000_000 // rate), sep))
    r["keys_seen"] = len(counts)
    r["order_errors"] = errors
    r["keys_switched"] = switched
    r["keys_on_v2"] = sum(1 for _, sep in counts.values() if sep == ":=")
    times = [t for t, _, _ in steady]
    first_v2 = next((t for t, _, sep in steady if sep == ":="), None)
    r["first_v2"] = first_v2
    # Steady state: from a second into the load until the swap was asked.
    before = [
        (a, b)
        for a, b in zip(times, times[1:], strict=False)
        if t0 + 1e9 <= a and b <= r["swap_asked"]
    ]
    gaps = [b - a for a, b in before]
    r["steady_median_gap"] = statistics.median(gaps) if gaps else None
    r["steady_max_gap"] = max(gaps, default=None)
    lat = [x for t, x, _ in steady if t0 + 1e9 <= t <= r["swap_asked"]]
    r["steady_latency"] = {str(p): percentile(lat, p) for p in (50, 99, 100)}
    # Around the swap: every interval that ends between the swap's request and two checkpoint
    # intervals after the first line of version 2.
    until = (first_v2 or r["swap_answered"]) + 2 * r["interval_ns"]
    around = [
        (b - a, a, b)
        for a, b in zip(times, times[1:], strict=False)
        if r["swap_asked"] <= b <= until
    ]
    gap = max(around, default=(None, None, None))
    r["swap_gap"], r["swap_gap_from"], r["swap_gap_to"] = gap
    r["swap_latency_max"] = max(
        (x for t, x, _ in steady if r["swap_asked"] <= t <= until), default=None
    )


START = re.compile(
    r"node start: (\d+) instances in (\d+) ms, log of (\d+) records read by (\d+) ms, "
    r"state of (\d+) keys found by (\d+) ms, restored into the workers by (\d+) ms"
)
COMMITTED = re.compile(r"checkpoint committed checkpoint=(\d+) keys=(\d+) took_us=(\d+)")


def profile(logs):
    """Where the swap's pause went, from the nodes' logs: the swap's checkpoint (the last one
    committed before the new version's start), then on each node the time until its engine
    began to start, and the engine's start in its phases (instances, reading the log, finding
    the state, restoring it into the workers). Milliseconds; None if the logs lack a line."""
    nodes = []
    commit = None
    for text in logs:
        lines = text.splitlines()
        starts = [(i, START.search(x)) for i, x in enumerate(lines) if START.search(x)]
        if len(starts) < 2:
            return None
        at, m = starts[-1]
        inst, records, read, keys, found, total = (int(m.group(g)) for g in (2, 3, 4, 5, 6, 7))
        end = log_time(lines[at])
        began = end - total / 1000
        commits = [
            (log_time(x), COMMITTED.search(x))
            for x in lines[:at]
            if COMMITTED.search(x) and log_time(x) <= began
        ]
        if commits and (commit is None or commits[-1][0] > commit[0]):
            commit = commits[-1]
        nodes.append(
            {
                "began": began,
                "end": end,
                "instances": inst,
                "records": records,
                "read": read - inst,
                "found": found - read,
                "restore": total - found,
                "keys": keys,
                "total": total,
            }
        )
    if commit is None:
        return None
    first = logs[0].splitlines()
    at = max(i for i, x in enumerate(first) if START.search(x))
    after = next((COMMITTED.search(x) for x in first[at:] if COMMITTED.search(x)), None)
    committed_at, m = commit
    for n in nodes:
        n["to_start"] = (n["began"] - committed_at) * 1000
    return {
        "checkpoint_ms": int(m.group(3)) / 1000,
        "checkpoint_keys": int(m.group(2)),
        "committed_at": committed_at,
        "nodes": nodes,
        "last_engine_ready": max(n["end"] for n in nodes),
        "after": after and (int(after.group(2)), int(after.group(3)) / 1000),
    }


def describe_commit():
    return subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()


def write(args, results, load_before, load_after, earlier=None, commit=None):
    commit = commit or describe_commit()
    lines = [
        MARKER,
        "## Hot swap: the stream's pause at a steady load",
        "",
        "Written by `python3 benches/swap.py` from one run (see its docstring for how each"
        " figure is taken).",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}",
        f"- commit: {commit}",
        *machine(),
        "- load average (1, 5, 15 min) before the run: "
        + ", ".join(f"{x:.2f}" for x in load_before)
        + "; after: "
        + ", ".join(f"{x:.2f}" for x in load_after),
        "- application: benches/swap_app/keyed_count.py (Python; key = the whole line, a running"
        " count per key, one output line per message), swapped to its version 2 (another"
        " output format, same stateful step); `--resilience exactly-once --sink-framing"
        f" tagged`, `--checkpoint-interval {args.checkpoint_interval}`, release build; nodes,"
        " senders and the receiver share this machine's cores over loopback",
        "- prefill: every key (at 10k keys, the keys again up to 200k messages) as fast as"
        " `wallaroo send --ack --batch-size 256` goes: the maximum rate. Steady load: half of it,"
        " on a fixed schedule, acknowledged (the sender reconnects every 20 ms while the"
        f" sources restart), {args.before:g} s before the swap is asked and {args.after:g} s"
        " after it is done",
        "- gaps: intervals between consecutive output lines as the receiver got them."
        " Exactly-once output leaves at each checkpoint's commit, in one burst: at steady state"
        " the median interval is within a burst and the largest is about the checkpoint"
        " interval; the swap's gap is the largest interval ending between the swap's request"
        " and two checkpoint intervals after the first line of version 2. Latency: receipt"
        " minus the message's scheduled send time",
        "",
        "| system | keys | state after (keys, bytes) | max rate /s | offered /s |"
        " steady gap: median / largest | swap: largest gap | steady latency p50 / p99 |"
        " swap: largest latency | paused (node's figure) | swap took | exactly-once |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        keys, nbytes = r["state_after"]
        paused, took = node_figures(r)
        lat = r["steady_latency"]
        ok = (
            "yes"
            if r["order_errors"] == 0 and r["keys_switched"] == r["keys_on_v2"] > 0
            else f"no: {r['order_errors']} counts out of order or back on v1"
        )
        lines.append(
            f"| {r['system']} | {r['keys']:,} | {keys:,}, {nbytes / 2**20:.1f} MiB |"
            f" {r['max_rate']:,.0f} | {r['rate']:,} |"
            f" {r['steady_median_gap'] / 1e3:,.0f} us / {ms(r['steady_max_gap'])} ms |"
            f" {ms(r['swap_gap'])} ms | {ms(lat['50'])} / {ms(lat['99'])} ms |"
            f" {ms(r['swap_latency_max'])} ms | {paused} | {took} | {ok} |"
        )
    lines += [
        "",
        "`paused`: for the cluster, the coordinator's `paused_ms` (`wallaroo status --json`:"
        " from every node having committed the swap's checkpoint until every node runs the new"
        " version) and `swap took` its `took_ms` (from the deploy's arrival); for `run --watch`,"
        " the node's `swapped ... in N ms` (from the sources' stop until they listen again)."
        " Each key's counts ran 1..n with nothing lost or repeated and switched version once"
        " where the last column says yes.",
        "",
        "### Where the pause goes",
        "",
        "From the nodes' logs (`RUST_LOG=...,wallaroo_engine=debug`: each checkpoint's commit,"
        " and the engine's start in its phases). Per node: time from the swap's checkpoint"
        " committing to the new engine beginning to start (recording the new version, telling"
        " the nodes, stopping the old version's instances), then the start: instantiating,"
        " reading the log, finding each key's last state, restoring the state into the new"
        " instances. The first checkpoint after the swap is listed too: output is held until"
        " it commits.",
        "",
    ]
    for r in results:
        lines += profile_lines(r)
    lines += limits(results)
    if earlier:
        lines += comparison(earlier, results, load_before)
    lines.append("")
    path = ROOT / "benches/RESULTS.md"
    text = path.read_text() if path.exists() else ""
    # Sections after this one (benches/grow.py's), each from its own marker line, are kept.
    later = text.split(MARKER, 1)[1] if MARKER in text else ""
    found = re.search(r"^<!-- \S+ -->$", later, re.M)
    text = text.split(MARKER)[0].rstrip("\n") + "\n\n" + "\n".join(lines)
    if found:
        text += "\n" + later[found.start() :]
    path.write_text(text)
    print("wrote the swap section of benches/RESULTS.md")


def node_figures(r):
    if r["status"]:
        swap = next((c for c in r["status"]["changes"] if c["kind"] == "swap"), None)
        if swap:
            return f"{swap['paused_ms']:,} ms", f"{swap['took_ms']:,} ms"
        return "-", "-"
    found = re.search(r"in (\d+) ms", r["said"])
    return (f"{int(found.group(1)):,} ms" if found else "-"), "-"


def profile_lines(r):
    p = profile(r["logs"])
    head = f"- {r['system']}, {r['keys']:,} keys:"
    if p is None:
        return [f"{head} the logs lack the lines (see the work directory)"]
    out = [
        f"{head} the swap's checkpoint {p['checkpoint_ms']:,.0f} ms"
        f" ({p['checkpoint_keys']:,} keys written by the coordinator's node)"
    ]
    for i, n in enumerate(p["nodes"]):
        who = f"node {i}" if len(p["nodes"]) > 1 else "the node"
        out.append(
            f"  - {who}: {n['to_start']:,.0f} ms until the new engine began; its start"
            f" {n['total']:,} ms = instances {n['instances']:,} + log read"
            f" {n['read']:,} ({n['records']:,} records) + state found {n['found']:,}"
            f" + restore of {n['keys']:,} keys {n['restore']:,}"
        )
    if p.get("after"):
        keys, took = p["after"]
        out.append(
            f"  - first checkpoint after the swap: {keys:,} keys written"
            f" (on the first node), {took:,.0f} ms"
        )
    return out


def comparison(earlier, results, load_before):
    """This run's figures beside those of an earlier saved run (``--compare``)."""
    then = {(r["system"], r["keys"]): r for r in earlier["results"]}
    load_then = earlier["load_before"][0]
    out = [
        "",
        f"### Against the run at commit {earlier.get('commit', '(unknown)')}",
        "",
        f"The same script at that commit, its JSON given with `--compare` (1-minute load"
        f" average before it {load_then:.2f}, before this one {load_before[0]:.2f}): earlier"
        " -> this run. `start` and `restore` are the slowest node's, from the logs.",
        "",
        "| system | keys | paused (node's figure) | swap: largest gap | start | restore |"
        " first checkpoint after the swap |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def phases(r):
        p = profile(r["logs"])
        if p is None:
            return None, None, None
        slowest = max(p["nodes"], key=lambda n: n["to_start"] + n["total"])
        after = p["after"][1] if p.get("after") else None
        return slowest["total"], slowest["restore"], after

    def pair(a, b, fmt=lambda x: f"{x:,.0f} ms"):
        return " -> ".join("-" if x is None else fmt(x) for x in (a, b))

    for r in results:
        e = then.get((r["system"], r["keys"]))
        if e is None:
            continue
        start_e, restore_e, after_e = phases(e)
        start_r, restore_r, after_r = phases(r)
        out.append(
            f"| {r['system']} | {r['keys']:,} | {node_figures(e)[0]} -> {node_figures(r)[0]} |"
            f" {pair(e['swap_gap'], r['swap_gap'], lambda x: ms(x) + ' ms')} |"
            f" {pair(start_e, start_r)} | {pair(restore_e, restore_r)} |"
            f" {pair(after_e, after_r)} |"
        )
    return out


def limits(results):
    """What limits the pause and the gap, in this run's figures."""
    out = ["", "### What limits it", ""]
    for r in results:
        p = profile(r["logs"])
        paused, _ = node_figures(r)
        if p is None or r["swap_gap"] is None:
            continue
        slowest = max(p["nodes"], key=lambda n: n["to_start"] + n["total"])
        restore = slowest["restore"]
        before = slowest["to_start"]
        after = p["after"][1] if p.get("after") else 0
        extra = (r["swap_gap"] - r["steady_max_gap"]) / 1e6
        out.append(
            f"- {r['system']}, {r['keys']:,} keys: pause {paused}; on the slowest node"
            f" {before:,.0f} ms before its engine began, then a start of"
            f" {slowest['total']:,} ms of which {restore:,} ms restoring"
            f" {slowest['keys']:,} keys ({restore * 1000 / max(1, slowest['keys']):.1f} us a"
            f" key) and {slowest['read'] + slowest['found']:,} ms reading the log and finding"
            " each key's state. The"
            f" receiver's gap was {extra:,.0f} ms longer than the steady state's largest; the"
            f" first checkpoint after the swap, which holds the output back, took"
            f" {after:,.0f} ms"
        )
    out += [
        "",
        "At 10k keys the pause is the swap's machinery rather than state: recording the new"
        " version, stopping the old instances, starting the engine and the sources again. In"
        " the start, reading the log (every record since the last full checkpoint, each logged"
        " input frame decoded into its own buffer although only those after the last cut are"
        " replayed) and finding each key's state cost more than the restore, on the node that"
        " holds the sources' input. At 1M keys the restore dominates: every key's state is"
        " unpickled into the new version's instances (the Python SDK's `restore`, 4096 keys a"
        " call). Each worker restores its own keys on its own thread, so two workers restore on"
        " two cores when the machine has them free. A restored key is not reported changed, so"
        " the first checkpoint after the swap (full: every key, so the log can be compacted)"
        " writes the host's copy instead of the guest pickling every key again. Everything"
        " shares two cores with the senders, the receiver and (for the cluster) three nodes"
        " restoring at once, so other work on the machine stretches the 1M-key figures (see the"
        " load average above). A steady p99 latency near the checkpoint interval says the node"
        " kept up with the offered load.",
    ]
    return out


def build(work):
    """Versions 1 and 2 of the app, compiled into the cache once."""
    wasm = {}
    for version in (1, 2):
        src = work / f"v{version}" / APP.name
        src.parent.mkdir()
        text = APP.read_text()
        src.write_text(text.replace("\nVERSION = 1\n", f"\nVERSION = {version}\n"))
        wasm[version] = work / f"v{version}" / "keyed_count.wasm"
        subprocess.run([W, "build", src, "-o", wasm[version]], check=True, capture_output=True)
        precompile(wasm[version], work)
    return wasm


def precompile(wasm, work):
    proc = subprocess.Popen(
        [W, "run", wasm, "--cache-dir", work / "cache", "--workers", "1"]
        + ["--data-dir", work / "precompile", "--in", "127.0.0.1:0", "--out", "127.0.0.1:1"],
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stderr:
        if "listening on" in line:
            break
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    proc.stderr.close()
    shutil.rmtree(work / "precompile", ignore_errors=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", default="10000,1000000")
    parser.add_argument("--systems", default="cluster,watch")
    parser.add_argument("--checkpoint-interval", type=int, default=1000)
    parser.add_argument("--before", type=float, default=6, help="seconds of load before the swap")
    parser.add_argument("--after", type=float, default=5, help="seconds of load after it")
    parser.add_argument("--send", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    parser.add_argument("--rewrite", metavar="JSON", help="write RESULTS.md from a saved run")
    parser.add_argument(
        "--compare", metavar="JSON", help="a saved earlier run to set this one's figures beside"
    )
    args = parser.parse_args()
    earlier = json.loads(Path(args.compare).read_text()) if args.compare else None
    if args.rewrite:
        saved = json.loads(Path(args.rewrite).read_text())
        loads = saved["load_before"], saved["load_after"]
        run_args = argparse.Namespace(**saved["args"])
        write(run_args, saved["results"], *loads, earlier, saved.get("commit"))
        return
    if args.send:
        host, path, rate, stream = args.send
        paced_sender(host, path, int(rate), int(stream))
        return
    load_before = os.getloadavg()
    begun = time.monotonic()
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--bin", "wallaroo"], cwd=ROOT, check=True
    )
    work = Path(tempfile.mkdtemp(prefix="wallaroo-swap-bench-"))
    wasm = build(work)
    systems = {"cluster": Cluster, "watch": Watch}
    results = []
    for keys in (int(k) for k in args.keys.split(",")):
        for name in args.systems.split(","):
            r = measure(systems[name], keys, work, wasm, args)
            results.append(r)
            print(summary(r), flush=True)
    print(f"took {time.monotonic() - begun:.0f} s; work in {work}")
    load_after = os.getloadavg()
    saved = {"args": vars(args), "results": results, "commit": describe_commit()}
    saved.update(load_before=load_before, load_after=load_after)
    (work / "results.json").write_text(json.dumps(saved))
    if not args.no_write:
        write(args, results, load_before, load_after, earlier)


def ms(ns):
    return "-" if ns is None else f"{ns / 1e6:,.0f}"


def summary(r):
    return (
        f"{r['system']}, {r['keys']:,} keys: max {r['max_rate']:,.0f}/s, offered {r['rate']:,}/s;"
        f" steady gap median {ms(r['steady_median_gap'])} ms max {ms(r['steady_max_gap'])} ms;"
        f" swap gap {ms(r['swap_gap'])} ms, latency max {ms(r['swap_latency_max'])} ms;"
        f" said: {r['said']}; order errors {r['order_errors']}, switched {r['keys_switched']}"
    )


if __name__ == "__main__":
    main()
