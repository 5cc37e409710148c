"""Growing and shrinking a running cluster: how long moving key groups with their state takes,
and the output rate before, during and after a grow from 2 to 3 nodes.

    python3 benches/grow.py [--keys 100000,300000] [--checkpoint-interval 1000]

In one run, all nodes on 127.0.0.1 with one worker each, `--resilience exactly-once
--sink-framing tagged`, release build, the application benches/swap_app/keyed_count.py (key =
the whole line, a running count per key, one output line per message):

- move, for each key count: three `wallaroo node`s are started and two of them deployed (the
  hosts file names two); every key is sent (at 100k keys twice, to 200k messages) as fast as
  `wallaroo send --ack --batch-size 256` goes into node 0's source, which gives the maximum
  rate of 2 nodes; then a paced sender (benches/swap.py's, acknowledged, reconnecting while
  the sources restart) offers half of it, cycling over the keys, and the cluster is grown to
  3 nodes (the third host added to the hosts file, `wallaroo deploy` again) and later shrunk
  back to 2. For each change: the deploy's own time (asked to answered), the coordinator's
  `took_ms` and `paused_ms` (`wallaroo status --json`), the hand-over on each node from its
  log (`handed N keys' state over at checkpoint C in T ms (B bytes ...)`), and where the time
  went, from the nodes' logs at debug level (the coordinator's `change under way: STEP`
  lines, each checkpoint's commit, each engine's start);
- full load, at the first key count: a fresh cluster of 2, the same prefill, then one
  `wallaroo send --ack --batch-size 256` as fast as it goes into node 0's source, grown to 3
  nodes a few seconds in. The maximum rates of 2 and 3 nodes are taken before and after it
  (150k messages as fast as they go, three rounds of each input in turn), with the input
  into node 0's source and with one sender into every node's source at once;
- the receiver (a thread of this script, as in swap.py) keeps each tagged frame once with the
  time it arrived. Exactly-once output leaves at each checkpoint's commit in one burst, so the
  output rate per second spreads each burst's lines evenly over the time since the burst
  before, leaving out the time the sources were stopped for a change (from the logs): the
  rate at which the cluster processed the input, to about a checkpoint interval. Before /
  during / after / later: the rate over the seconds before the deploy was asked, from the
  ask until the deploy answered, over the seconds after that, and from then until the load
  ended. Every key's counts are checked to run 1..n with nothing lost or repeated.

The section it writes replaces the one in benches/RESULTS.md after the `<!-- grow.py -->`
line; the other sections are kept.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import ROOT, W, free_port, machine
from swap import (
    APP,
    COMMITTED,
    EXACTLY_ONCE,
    START,
    Receiver,
    log_time,
    paced_sender,
    precompile,
)

MARKER = "<!-- grow.py -->"
PREFILL_AT_LEAST = 200_000
MAX_RATE_MESSAGES = 150_000
MAX_RATE_ROUNDS = 3
HANDED = re.compile(
    r"handed (\d+) keys' state over at checkpoint (\d+) in (\d+) ms "
    r"\((\d+) bytes of keys and state, taken from the workers in (\d+) ms\)"
)
LOGGED = re.compile(r"logged (\d+) keys' state handed over at checkpoint (\d+) in (\d+) ms")
STEP = re.compile(r"change under way: (.+)$")
CHANGED = re.compile(r"\(version (\d+)\) in (\d+) ms(?:, the stream paused (\d+) ms)?")


class Cluster:
    """`nodes` `wallaroo node`s on 127.0.0.1, the first `members` of them deployed."""

    def __init__(self, wasm, sink, base, cache, interval, nodes=3, members=2):
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        self.wasm, self.sink = wasm, sink
        self.certs = base / "certs"
        subprocess.run([W, "cert", "init", self.certs], check=True, stdout=subprocess.DEVNULL)
        self.hosts = base / "hosts.txt"
        self.addrs = [f"127.0.0.1:{free_port()}" for _ in range(nodes)]
        env = dict(os.environ, RUST_LOG="warn,wallaroo_cluster=debug,wallaroo_engine=debug")
        self.logs = [base / f"node{i}.log" for i in range(nodes)]
        self.nodes = []
        app_port = 1024
        for i, addr in enumerate(self.addrs):
            offset = free_port() - app_port
            with open(self.logs[i], "w") as log:
                self.nodes.append(
                    subprocess.Popen(
                        [W, "node", "--listen", addr, "--data-dir", base / f"node{i}"]
                        + ["--certs", self.certs, "--source-port-offset", str(offset)]
                        + ["--cache-dir", cache],
                        stderr=log,
                        env=env,
                    )
                )
        self.args = ["--workers", "1", *EXACTLY_ONCE, "--checkpoint-interval", interval]
        self.tail = ["--in", f"127.0.0.1:{app_port}", "--out", sink]
        self.members = members
        self.deploy(members)

    def deploy(self, members):
        """Deploys onto the first `members` nodes: (what it said, asked and answered as
        (monotonic ns, Unix time))."""
        self.hosts.write_text("\n".join(self.addrs[:members]) + "\n")
        for _ in range(100):
            asked = time.monotonic_ns(), time.time()
            done = subprocess.run(
                [W, "deploy", "--nodes", self.hosts, "--certs", self.certs, *self.args]
                + [self.wasm, *self.tail],
                capture_output=True,
                text=True,
            )
            answered = time.monotonic_ns(), time.time()
            if done.returncode == 0:
                self.members = members
                said = (done.stdout + done.stderr).strip().splitlines()
                said = next((x for x in said if "moved" in x), said[-1])
                return said, asked, answered
            if "unreachable" not in done.stderr and "cannot reach" not in done.stderr:
                raise RuntimeError(f"deploy failed: {done.stderr}")
            time.sleep(0.1)
        raise RuntimeError(f"deploy failed: {done.stderr}")

    def status(self):
        out = subprocess.run(
            [W, "status", "--json", "--nodes", self.hosts, "--certs", self.certs],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return json.loads(out)

    def sources(self):
        """Each member's source address, in order."""
        return [n["sources"][0].split()[-1] for n in self.status()["nodes"]]

    def state(self):
        """Per member: (key groups, keys held, bytes of keys and state)."""
        return [
            (n["key_groups"], n["state_keys"], n["state_bytes"]) for n in self.status()["nodes"]
        ]

    def stop(self):
        subprocess.run(
            [W, "stop", "--nodes", self.hosts, "--certs", self.certs], capture_output=True
        )
        for node in self.nodes:
            node.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node.wait(60)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()


def send_all(sources, keys_path, messages):
    """Sends `messages` messages, split evenly, into each of `sources` at once, as fast as
    `wallaroo send --ack` goes; returns when every one is acknowledged."""
    each = messages // len(sources)
    senders = [
        subprocess.Popen(
            [W, "send", "--host", s, "--file", keys_path, "--ack", "--batch-size", "256"]
            + ["--repeat", "--messages", str(each)],
            stderr=subprocess.DEVNULL,
        )
        for s in sources
    ]
    for s in senders:
        if s.wait() != 0:
            raise RuntimeError("wallaroo send failed")
    return each * len(sources)


def max_rate(receiver, sources, keys_path, messages, expected):
    """`messages` sent as fast as they go into `sources` (`expected`: lines received before):
    (messages sent, per second from the first byte sent to the last line received, per
    second until the last one was acknowledged). Exactly-once output waits for a checkpoint,
    so the first figure is low by up to a checkpoint interval's share."""
    started = time.monotonic_ns()
    sent = send_all(sources, keys_path, messages)
    acked = time.monotonic_ns()
    receiver.wait(expected + sent, 600)
    out = sent / ((receiver.chunks[-1][0] - started) / 1e9)
    return sent, out, sent / ((acked - started) / 1e9)


def max_rates(r, nodes, receiver, sources, keys_path, expected):
    """Rounds of `max_rate` into node 0's source and into every node's, in turn, kept in
    r["max"]; returns the lines expected after them."""
    for _ in range(MAX_RATE_ROUNDS):
        for name, into in (("node 0", sources[:1]), ("each node", sources)):
            sent, out, acked = max_rate(receiver, into, keys_path, MAX_RATE_MESSAGES, expected)
            r["max"].setdefault(f"{nodes} nodes, into {name}", []).append((out, acked))
            expected += sent
            print(f"  {nodes} nodes, into {name}: {out:,.0f}/s out, {acked:,.0f}/s acknowledged")
    return expected


def keys_file(work, keys):
    path = work / f"keys{keys}.txt"
    if not path.exists():
        path.write_text("".join(f"k{i:07d}\n" for i in range(keys)))
    return path


def paced(source, keys_path, rate):
    sender = subprocess.Popen(
        [sys.executable, __file__, "--send", source, keys_path, str(rate)]
        + [str(int.from_bytes(os.urandom(7), "big") + 1)],
        stdout=subprocess.PIPE,
        text=True,
    )
    int(sender.stdout.readline().split()[1])
    return sender


def stop_paced(sender):
    sender.send_signal(signal.SIGTERM)
    out = sender.communicate(timeout=300)[0]
    found = re.search(r"sent (\d+) reconnects (\d+)", out)
    return int(found.group(1)), int(found.group(2))


def change(cluster, members, what):
    """One grow or shrink: the deploy's words and times, and the state before and after."""
    before = cluster.state()
    said, asked, answered = cluster.deploy(members)
    print(f"  {what}: {said}", flush=True)
    return {
        "what": what,
        "said": said,
        "asked": asked,
        "answered": answered,
        "state_before": before,
        "state_after": cluster.state(),
    }


def measure_move(keys, work, wasm, args):
    """A cluster of 2 with `keys` keys' state at half its maximum rate, grown to 3, shrunk
    to 2."""
    keys_path = keys_file(work, keys)
    reps = -(-PREFILL_AT_LEAST // keys)
    receiver = Receiver()
    interval = str(args.checkpoint_interval)
    cluster = Cluster(wasm, receiver.addr, work / f"move{keys}", work / "cache", interval)
    r = {"run": "move", "keys": keys, "prefill": reps * keys}
    try:
        source = cluster.sources()[0]
        _, r["max_rate_2"], _ = max_rate(receiver, [source], keys_path, reps * keys, 0)
        r["rate"] = int(r["max_rate_2"] / 2)
        print(f"{keys:,} keys: 2 nodes {r['max_rate_2']:,.0f}/s; offering {r['rate']:,}/s")
        sender = paced(source, keys_path, r["rate"])
        r["load_from"] = time.monotonic_ns()
        time.sleep(args.before)
        r["changes"] = [change(cluster, 3, "grow 2 -> 3")]
        time.sleep(args.after)
        r["changes"].append(change(cluster, 2, "shrink 3 -> 2"))
        time.sleep(args.after)
        r["load_to"] = time.monotonic_ns()
        r["sent"], r["reconnects"] = stop_paced(sender)
        receiver.wait(r["prefill"] + r["sent"], 300)
        r["status"] = cluster.status()
    finally:
        cluster.stop()
        receiver.close()
    r["logs"] = [p.read_text() for p in cluster.logs]
    analyse(r, receiver, args)
    return r


def measure_full(keys, work, wasm, args):
    """A cluster of 2 with `keys` keys' state at full load, grown to 3; the maximum rates
    of 2 and 3 nodes around it, into one source and into every node's."""
    keys_path = keys_file(work, keys)
    reps = -(-PREFILL_AT_LEAST // keys)
    receiver = Receiver()
    interval = str(args.checkpoint_interval)
    cluster = Cluster(wasm, receiver.addr, work / f"full{keys}", work / "cache", interval)
    r = {"run": "full", "keys": keys, "prefill": reps * keys}
    try:
        sources = cluster.sources()
        expected = r["prefill"]
        send_all(sources[:1], keys_path, expected)
        receiver.wait(expected, 600)
        r["max"] = {}
        expected = max_rates(r, 2, receiver, sources, keys_path, expected)
        # Enough for the seconds before and after the change and the change itself, at the
        # highest rate 2 nodes took input at, and half as much again for a third node.
        two = max(acked for _, acked in r["max"]["2 nodes, into node 0"])
        messages = int(1.5 * two * (args.before + args.after + 4))
        sender = subprocess.Popen(
            [W, "send", "--host", sources[0], "--file", keys_path, "--ack"]
            + ["--batch-size", "256", "--repeat", "--messages", str(messages)],
            stderr=subprocess.DEVNULL,
        )
        r["load_from"] = time.monotonic_ns()
        time.sleep(args.before)
        r["changes"] = [change(cluster, 3, "grow 2 -> 3")]
        if sender.wait() != 0:
            raise RuntimeError("wallaroo send failed")
        r["load_to"] = time.monotonic_ns()
        expected += messages
        r["sent"] = messages
        receiver.wait(expected, 300)
        expected = max_rates(r, 3, receiver, cluster.sources(), keys_path, expected)
        r["sent"] = expected - r["prefill"]
        r["status"] = cluster.status()
    finally:
        cluster.stop()
        receiver.close()
    r["logs"] = [p.read_text() for p in cluster.logs]
    analyse(r, receiver, args)
    return r


def analyse(r, receiver, args):
    """Exactly-once, the output rate series and each change's figures, from what the receiver
    got and the logs."""
    counts, errors = {}, 0
    for _, line in receiver.lines():
        key, _, count = line.split(" ")
        count = int(count)
        if count != counts.get(key, 0) + 1:
            errors += 1
        counts[key] = count
    r["order_errors"] = errors
    r["repeated_frames"] = receiver.repeated
    r["lines"] = receiver.count
    r["expected_lines"] = r["prefill"] + r["sent"]
    interval = args.checkpoint_interval * 1_000_000
    # The logs' Unix times on this script's monotonic clock, and the stream's pauses.
    pauses = []
    for c in r["changes"]:
        c["profile"] = profile(r["logs"], c["asked"][1], c["answered"][1])
        c["offset"] = c["asked"][0] - c["asked"][1] * 1e9
        first = first_steps(c["profile"])
        stopped, running = first.get("changing: stop sources"), first.get("running")
        if stopped and running:
            pauses.append((stopped * 1e9 + c["offset"], running * 1e9 + c["offset"]))
    curve = processed_curve(receiver.chunks, interval, pauses)
    arrivals = [t for t, _ in receiver.chunks]
    second = 1_000_000_000
    for i, c in enumerate(r["changes"]):
        asked, answered = c["asked"][0], c["answered"][0]
        later = r["changes"][i + 1]["asked"][0] if i + 1 < len(r["changes"]) else r["load_to"]
        c["before"] = rate_between(curve, asked - int(args.before * second) + second, asked)
        c["during"] = rate_between(curve, asked, answered)
        c["after"] = rate_between(curve, answered, min(later, answered + int(args.after * second)))
        c["later"] = rate_between(curve, answered + int(args.after * second), later)
        c["series"] = [
            rate_between(curve, asked + s * second, asked + (s + 1) * second)
            for s in range(-int(args.before), int((later - asked) / second))
        ]
        first_out = next((t for t in arrivals if t > answered), answered)
        c["first_output_after"] = first_out - answered
        until = first_out + 2 * interval
        c["gap"] = max(
            (b - a for a, b in zip(arrivals, arrivals[1:], strict=False) if asked <= b <= until),
            default=None,
        )
        c["steady_gap"] = max(
            (
                b - a
                for a, b in zip(arrivals, arrivals[1:], strict=False)
                if asked - args.before * second + second <= a and b <= asked
            ),
            default=None,
        )
    kinds = [x for x in r["status"]["changes"] if x["kind"] in ("grow", "shrink")]
    for c, x in zip(r["changes"], kinds[-len(r["changes"]) :], strict=False):
        c["change"] = x
    r["key_groups"] = sum(n["key_groups"] for n in r["status"]["nodes"])


def processed_curve(chunks, interval, pauses):
    """[(t ns, lines processed by t)]: each burst of output (lines arriving within 50 ms of
    each other; with exactly-once, one checkpoint's output) spread evenly over the time since
    the burst before (the first over one checkpoint interval), leaving out the times `pauses`
    ([(from ns, to ns)]) when the sources were stopped."""
    bursts = []
    for t, upto in chunks:
        if bursts and t - bursts[-1][1] <= 50_000_000:
            bursts[-1][1:] = [t, upto]
        else:
            bursts.append([t, t, upto])
    curve = []
    done, since = 0, bursts[0][0] - interval if bursts else 0
    for first, _, upto in bursts:
        spans = [(since, first)]
        for a, b in pauses:
            spans = [p for x, y in spans for p in ((x, min(y, a)), (max(x, b), y)) if p[1] > p[0]]
        total = sum(y - x for x, y in spans)
        n = done
        curve.append((since, done))
        for x, y in spans:
            curve.append((x, n))
            n += (upto - done) * (y - x) / total
            curve.append((y, n))
        curve.append((first, upto))
        done, since = upto, first
    return curve


def first_steps(p):
    """The Unix time each of the coordinator's steps first began at."""
    first = {}
    for name, t in p["steps"]:
        first.setdefault(name, t)
    return first


def lines_at(curve, t):
    if not curve or t <= curve[0][0]:
        return 0
    for (a, na), (b, nb) in zip(curve, curve[1:], strict=False):
        if a <= t <= b:
            return na + (nb - na) * (t - a) / (b - a) if b > a else nb
    return curve[-1][1]


def rate_between(curve, a, b):
    if b <= a:
        return None
    return (lines_at(curve, b) - lines_at(curve, a)) / ((b - a) / 1e9)


def profile(logs, asked, answered):
    """Where a change's time went, from the nodes' logs (Unix times between the deploy's ask
    and its answer): the coordinator's steps, each node's hand-over, and each engine's start."""

    def within(text, after=0.5):
        for line in text.splitlines():
            t = log_time(line)
            if t is not None and asked - 0.5 <= t <= answered + after:
                yield t, line

    steps = []
    for t, line in within(logs[0]):
        m = STEP.search(line)
        if m:
            steps.append((m.group(1), t))
    coordinator = next(
        (CHANGED.search(line) for _, line in within(logs[0]) if CHANGED.search(line)), None
    )
    # The first checkpoint after the change: a few seconds after its answer.
    nodes = []
    for i, text in enumerate(logs):
        n = {"node": i}
        for t, line in within(text, 4.5):
            if t > answered + 0.5 and not COMMITTED.search(line):
                continue
            if m := HANDED.search(line):
                n["handed"] = {
                    "at": t,
                    "keys": int(m.group(1)),
                    "checkpoint": int(m.group(2)),
                    "ms": int(m.group(3)),
                    "bytes": int(m.group(4)),
                    "taken_ms": int(m.group(5)),
                }
            elif m := LOGGED.search(line):
                got = n.setdefault("logged", {"keys": 0, "ms": 0, "parts": 0})
                got["keys"] += int(m.group(1))
                got["ms"] += int(m.group(3))
                got["parts"] += 1
            elif m := COMMITTED.search(line):
                n.setdefault("commits", []).append(
                    {
                        "at": t,
                        "number": int(m.group(1)),
                        "keys": int(m.group(2)),
                        "ms": int(m.group(3)) / 1000,
                    }
                )
            elif m := START.search(line):
                inst, records, read, keys, found, total = (
                    int(m.group(g)) for g in (2, 3, 4, 5, 6, 7)
                )
                n["start"] = {
                    "end": t,
                    "began": t - total / 1000,
                    "instances": inst,
                    "records": records,
                    "read": read - inst,
                    "found": found - read,
                    "restore": total - found,
                    "keys": keys,
                    "total": total,
                }
        nodes.append(n)
    return {
        "steps": steps,
        "took_ms": coordinator and int(coordinator.group(2)),
        "paused_ms": coordinator and coordinator.group(3) and int(coordinator.group(3)),
        "nodes": nodes,
    }


def step_times(p, asked):
    """The coordinator's steps as (name, ms from the ask, ms it lasted)."""
    steps = p["steps"]
    out = []
    for (name, t), (_, u) in zip(steps, steps[1:], strict=False):
        out.append((name, (t - asked) * 1000, (u - t) * 1000))
    return out


def phases(p, asked):
    """The change's phases in ms: ready (join + make the version ready), drain (stop the
    sources, drain), checkpoint, move, record, start (until the coordinator says running)."""
    first = first_steps(p)
    arrived = p["steps"][0][1] if p["steps"] else None
    marks = [
        ("deploy", asked),
        ("ready", arrived),
        ("drain", first.get("changing: stop sources")),
        ("checkpoint", first.get("checkpoint: begin")),
        ("move", first.get("changing: move")),
        ("record", first.get("changing: record")),
        ("start", first.get("starting")),
        ("end", first.get("running")),
    ]
    out = {}
    for (name, t), (_, u) in zip(marks, marks[1:], strict=False):
        out[name] = None if t is None or u is None else (u - t) * 1000
    stopped, running = first.get("changing: stop sources"), first.get("running")
    out["sources stopped"] = (
        None if stopped is None or running is None else (running - stopped) * 1000
    )
    return out


def write(args, results, load_before, load_after, took):
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    lines = [
        MARKER,
        "## Grow and shrink: moving key groups' state, and throughput around a grow",
        "",
        "Written by `python3 benches/grow.py` from one run (see its docstring for how each"
        f" figure is taken; the run took {took:.0f} s).",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}",
        f"- commit: {commit}",
        *machine(),
        "- load average (1, 5, 15 min) before the run: "
        + ", ".join(f"{x:.2f}" for x in load_before)
        + "; after: "
        + ", ".join(f"{x:.2f}" for x in load_after),
        "- application: benches/swap_app/keyed_count.py (Python; key = the whole line, a"
        " running count per key, one output line per message); three `wallaroo node`s on this"
        " machine over loopback (QUIC between nodes), one worker each, the first two deployed;"
        " `--resilience exactly-once --sink-framing tagged`, `--checkpoint-interval"
        f" {args.checkpoint_interval}`, {results[0]['key_groups']:,} key groups (the default),"
        " release build. Nodes,"
        " senders and the receiver share the machine's cores",
        "- input: into node 0's source (one connection), routed by key to the owning node,"
        " unless a row says `into each node` (one sender per node's source, the messages split"
        " evenly)",
        "",
        "### Moving state: grow 2 -> 3 and shrink 3 -> 2 at half the maximum rate",
        "",
        "| keys | change | keys moved | bytes moved | deploy took | coordinator took |"
        " paused (status) | sources stopped (logs) | receiver's largest gap: around it |"
        " before it | hand-over (slowest node) | exactly-once |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in (x for x in results if x["run"] == "move"):
        for c in r["changes"]:
            lines.append(move_row(r, c))
    lines += [
        "",
        "`deploy took`: the `wallaroo deploy` command, run to exit. `coordinator took`:"
        " `took_ms`, from the change's arrival at the coordinator to every node running the"
        " new table. `paused (status)`: `paused_ms`, from the coordinator recording the new"
        " table to every node running it. `sources stopped (logs)`: from the coordinator"
        " asking the sources to stop (before the drain) until every node runs again: the"
        " stream's real pause, which `paused_ms` leaves out the drain, checkpoint and"
        " hand-over of. `receiver's largest gap`: the longest time without output after the"
        " deploy was asked until two checkpoint intervals after it answered, and over the"
        " seconds before it (with exactly-once, output leaves only at each checkpoint's"
        f" commit, every {args.checkpoint_interval} ms). Keys and bytes moved:"
        " the sum of the nodes' `handed N keys' state` lines (bytes of keys and state).",
        "",
        "### Where a change's time goes",
        "",
        "From the nodes' logs (`RUST_LOG=...,wallaroo_cluster=debug,wallaroo_engine=debug`):"
        " the coordinator's steps (deploy: from the command's start until the coordinator"
        " takes the change up: the client ships the component to every node and assigns the"
        " deployment to the new ones; ready: the new nodes join and every node has the version"
        " ready, or a checkpoint under way ends first; drain: the sources stop and the"
        " cluster drains; the change's checkpoint;"
        " move: every node hands the state of the groups that leave it to their new owners,"
        " which log it before answering; record: the coordinator records the new table; start:"
        " every node restarts from the checkpoint with the new table), then per node the"
        " hand-over (taking the state from the workers, then sending and the receiver's"
        " logging) and the engine's start (instances, reading the log, finding each key's"
        " state, restoring it into the workers). Only drain to start pause the stream.",
        "",
    ]
    for r in results:
        for c in r["changes"]:
            lines += profile_lines(r, c)
    full = [x for x in results if x["run"] == "full"]
    moves = [x for x in results if x["run"] == "move"]
    lines += ["", "### Output rate around a grow 2 -> 3", ""]
    lines += rate_lines(moves[:1], full, args)
    lines += limits(results, args)
    lines.append("")
    path = ROOT / "benches/RESULTS.md"
    text = path.read_text() if path.exists() else ""
    lines_text = "\n".join(lines)
    if MARKER in text:
        head, rest = text.split(MARKER, 1)
        # The sections after this one, each from its own marker line, are kept.
        later = re.search(r"^<!-- \S+ -->$", rest, re.M)
        tail = rest[later.start() :] if later else ""
        text = head.rstrip("\n") + "\n\n" + lines_text + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + lines_text
    path.write_text(text)
    print("wrote the grow section of benches/RESULTS.md")


def ms(v):
    return "-" if v is None else f"{v:,.0f} ms"


def spread(values):
    return f"{statistics.median(values):,.0f} ({min(values):,.0f} - {max(values):,.0f})"


def rate(v):
    return "-" if v is None else f"{v:,.0f}"


def moved(c):
    nodes = c["profile"]["nodes"]
    keys = sum(n["handed"]["keys"] for n in nodes if "handed" in n)
    nbytes = sum(n["handed"]["bytes"] for n in nodes if "handed" in n)
    slowest = max((n["handed"]["ms"] for n in nodes if "handed" in n), default=None)
    return keys, nbytes, slowest


def exactly_once(r):
    if r["order_errors"] == 0 and r["lines"] == r["expected_lines"]:
        return "yes"
    return (
        f"no: {r['order_errors']} counts out of order, {r['lines']:,} of"
        f" {r['expected_lines']:,} lines"
    )


def move_row(r, c):
    keys, nbytes, slowest = moved(c)
    took = (c["answered"][0] - c["asked"][0]) / 1e6
    x = c.get("change") or {}
    ph = phases(c["profile"], c["asked"][1])
    return (
        f"| {r['keys']:,} | {c['what']} | {keys:,} | {nbytes / 2**20:.1f} MiB | {took:,.0f} ms |"
        f" {ms(x.get('took_ms'))} | {ms(x.get('paused_ms'))} | {ms(ph['sources stopped'])} |"
        f" {ms(c['gap'] and c['gap'] / 1e6)} | {ms(c['steady_gap'] and c['steady_gap'] / 1e6)} |"
        f" {ms(slowest)} | {exactly_once(r)} |"
    )


def profile_lines(r, c):
    p = c["profile"]
    ph = phases(p, c["asked"][1])
    load = "half load" if r["run"] == "move" else "full load"
    head = f"- {r['keys']:,} keys, {c['what']}, {load}:"
    if not p["steps"]:
        return [f"{head} the coordinator's log lacks the `change under way` lines"]
    order = ("deploy", "ready", "drain", "checkpoint", "move", "record", "start")
    held = " -> ".join(
        "/".join(f"{keys:,}" for _, keys, _ in state)
        for state in (c["state_before"], c["state_after"])
    )
    out = [
        head + " " + ", ".join(f"{name} {ms(ph[name])}" for name in order),
        f"  - keys held per node before -> after: {held}",
    ]
    first = first_steps(p)
    begun, moving = first.get("checkpoint: begin"), first.get("changing: move")
    running = first.get("running")
    for n in p["nodes"]:
        parts = []
        commits = n.get("commits", [])
        ck = next((x for x in commits if begun and moving and begun <= x["at"] <= moving), None)
        if ck:
            parts.append(
                f"the change's checkpoint {ck['number']}: {ck['keys']:,} keys written in"
                f" {ck['ms']:,.0f} ms"
            )
        ck = next((x for x in commits if running and x["at"] > running), None)
        if ck:
            parts.append(
                f"the first checkpoint after it: {ck['keys']:,} keys written in {ck['ms']:,.0f} ms"
            )
        if n.get("handed", {}).get("keys"):
            h = n["handed"]
            parts.append(
                f"handed {h['keys']:,} keys ({h['bytes'] / 2**20:.1f} MiB) over in {h['ms']:,} ms"
                f" ({h['taken_ms']:,} taking them from the worker)"
            )
        if "logged" in n:
            g = n["logged"]
            parts.append(
                f"logged {g['keys']:,} keys handed to it in {g['ms']:,} ms ({g['parts']} parts)"
            )
        if "start" in n:
            s = n["start"]
            starting = first.get("starting")
            if starting:
                parts.append(
                    f"its engine began {(s['began'] - starting) * 1000:,.0f} ms after the"
                    " coordinator's start (the old run stopping)"
                )
            parts.append(
                f"start {s['total']:,} ms = instances {s['instances']:,} + log read"
                f" {s['read']:,} ({s['records']:,} records) + state found {s['found']:,}"
                f" + restore of {s['keys']:,} keys {s['restore']:,}"
            )
        if parts:
            out.append(f"  - node {n['node']}: " + "; ".join(parts))
    first = c["first_output_after"]
    if first is not None:
        out.append(f"  - first output after the deploy answered: {first / 1e6:,.0f} ms later")
    return out


def rate_lines(moves, full, args):
    out = []
    runs = [(f"half load ({m['rate']:,}/s offered), {m['keys']:,} keys", m) for m in moves]
    runs += [(f"full load (`send --ack`), {f['keys']:,} keys", f) for f in full]
    if not runs:
        return out
    out += [
        "Output lines per second (the rate the cluster processed input at, see the docstring):"
        " before = the seconds before the deploy was asked (from one second into them),"
        " during = from the ask until the deploy answered, after = the seconds after that"
        f" ({args.after:g} s, including the catch-up on what queued during the pause), later ="
        " from then until the load ended (half load: until the shrink was asked).",
        "",
        "| load | before | during | after | later | deploy took | largest gap | exactly-once |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in runs:
        c = r["changes"][0]
        took = (c["answered"][0] - c["asked"][0]) / 1e6
        out.append(
            f"| {name} | {rate(c['before'])} | {rate(c['during'])} | {rate(c['after'])} |"
            f" {rate(c.get('later'))} |"
            f" {took:,.0f} ms | {ms(c['gap'] and c['gap'] / 1e6)} | {exactly_once(r)} |"
        )
    out += [
        "",
        "Per second, from the deploy's ask (t = 0; `*`: the change was under way for some of"
        " that second):",
        "",
        "| t (s) | " + " | ".join(name for name, _ in runs) + " |",
        "|---:|" + "---:|" * len(runs),
    ]
    longest = max(len(r["changes"][0]["series"]) for _, r in runs)
    for i in range(longest):
        t = i - int(args.before)
        cells = []
        for _, r in runs:
            c = r["changes"][0]
            v = c["series"][i] if i < len(c["series"]) else None
            busy = v is not None and 0 <= t * 1e9 < c["answered"][0] - c["asked"][0]
            cells.append(rate(v) + (" *" if busy else ""))
        out.append(f"| {t} | " + " | ".join(cells) + " |")
    for f in full:
        out += [
            "",
            f"Maximum rate: {MAX_RATE_MESSAGES:,} messages as fast as `wallaroo send --ack"
            f" --batch-size 256` goes, {f['keys']:,} keys held; {MAX_RATE_ROUNDS} rounds of"
            " each input in turn before the grow (2 nodes) and after it (3 nodes): median"
            " (lowest - highest), messages per second.",
            "",
            "| input | until | 2 nodes | 3 nodes | 3 / 2 (medians) |",
            "|---|---|---:|---:|---:|",
        ]
        for into in ("node 0", "each node"):
            for i, until in enumerate(("the last line out", "all acknowledged")):
                two = sorted(x[i] for x in f["max"][f"2 nodes, into {into}"])
                three = sorted(x[i] for x in f["max"][f"3 nodes, into {into}"])
                out.append(
                    f"| into {into} | {until} | {spread(two)} | {spread(three)} |"
                    f" {statistics.median(three) / statistics.median(two):.2f}x |"
                )
        out += [
            "",
            "`the last line out` waits for the last checkpoint's commit (up to one interval"
            " of latency on a few seconds' run); `all acknowledged` is the rate the nodes"
            " took the input in and logged it, which their bounded queues hold to the rate"
            " they process it at.",
        ]
    return out


def limits(results, args):
    """What limits the pause and the move, in this run's figures."""
    out = ["", "### What limits it", ""]
    for r in results:
        for c in r["changes"]:
            p = c["profile"]
            if not p["steps"]:
                continue
            ph = phases(p, c["asked"][1])
            keys, nbytes, slowest = moved(c)
            known = {
                k: v
                for k, v in ph.items()
                if k in ("drain", "checkpoint", "move", "record", "start") and v is not None
            }
            if not known:
                continue
            top = max(known, key=known.get)
            starts = [n["start"] for n in p["nodes"] if "start" in n]
            restore = max(starts, key=lambda s: s["total"]) if starts else None
            load = "half" if r["run"] == "move" else "full"
            line = (
                f"- {r['keys']:,} keys, {c['what']}, {load} load: the sources were stopped"
                f" {ms(ph['sources stopped'])}, longest in {top} ({ms(known[top])});"
                f" {keys:,} keys ({nbytes / 2**20:.1f} MiB) handed over in {ms(slowest)}"
            )
            if keys and slowest:
                line += f" ({slowest * 1000 / keys:.1f} us a key)"
            if restore:
                line += (
                    f"; the slowest engine start {restore['total']:,} ms, of which restoring"
                    f" {restore['keys']:,} keys {restore['restore']:,} ms and reading the log"
                    f" and finding each key's state {restore['read'] + restore['found']:,} ms"
                )
            after = [
                x
                for n in p["nodes"]
                for x in n.get("commits", [])
                if first_steps(p).get("running") and x["at"] > first_steps(p)["running"]
            ]
            if after:
                line += (
                    "; the first checkpoint after it, which holds the output back, took up to"
                    f" {max(x['ms'] for x in after):,.0f} ms"
                    f" ({max(x['keys'] for x in after):,} keys on one node)"
                )
            out.append(line)
    per_key = [
        moved(c)[2] * 1000 / moved(c)[0]
        for r in results
        for c in r["changes"]
        if moved(c)[0] and moved(c)[2]
    ]
    quiet = [
        ph["drain"] + ph["checkpoint"]
        for r in results
        for c in r["changes"]
        if (ph := phases(c["profile"], c["asked"][1]))["drain"] is not None
        and ph["checkpoint"] is not None
    ]
    out += [
        "",
        "A grow or shrink moves little: the hand-over of the groups that leave a node (taking"
        " their state from the workers, sending it over QUIC in parts of 8 MiB, the new owner"
        " logging it durably) took"
        f" {min(per_key, default=0):.1f} to {max(per_key, default=0):.1f} us a key. The pause"
        " is the restart: at the"
        " change's checkpoint every node stops its engine and starts a new one with the new"
        " table (`Node::start`, as after a recovery), which reads its log since the last full"
        " checkpoint, finds each key's last state and restores every key it owns into fresh"
        " instances (the Python SDK unpickles each one), not only the keys that moved, although"
        " the nodes that keep a key already hold its state. So the pause is set by the state"
        " each node holds after the change, not by the state moved. Before each"
        " engine begins, the old run stops (the gap between the coordinator's start and the"
        " engine's). The drain and the change's checkpoint together took"
        f" {min(quiet, default=0):,.0f} to {max(quiet, default=0):,.0f} ms. With exactly-once"
        " output the receiver's gap adds the first checkpoint after"
        " the start, which is full (every key the node holds, so the log can be compacted) and"
        " holds the output back until it commits. The coordinator's `paused_ms` starts at its"
        " record of the new table, so it leaves out the drain, the checkpoint and the"
        " hand-over, during which the sources are already stopped. The ready step (shipping"
        " the component to the new node, which here loads its native code from the cache the"
        " nodes share; a fresh host compiles a Python component first, about 3 s) does not"
        " pause the stream. Three nodes share two cores with the senders, the receiver and"
        " other work on the machine (see the load average), so a third node adds no cores.",
    ]
    return out


def build(work):
    src = work / "v1" / APP.name
    src.parent.mkdir()
    shutil.copy(APP, src)
    wasm = work / "v1" / "keyed_count.wasm"
    subprocess.run([W, "build", src, "-o", wasm], check=True, capture_output=True)
    precompile(wasm, work)
    return wasm


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", default="100000,300000", help="key counts of the move runs")
    parser.add_argument("--checkpoint-interval", type=int, default=1000)
    parser.add_argument("--before", type=float, default=5, help="seconds of load before a change")
    parser.add_argument("--after", type=float, default=5, help="seconds of load after one")
    parser.add_argument("--no-full", action="store_true", help="skip the full-load run")
    parser.add_argument("--send", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    parser.add_argument("--rewrite", metavar="JSON", help="write RESULTS.md from a saved run")
    args = parser.parse_args()
    if args.send:
        host, path, offered, stream = args.send
        paced_sender(host, path, int(offered), int(stream))
        return
    if args.rewrite:
        saved = json.loads(Path(args.rewrite).read_text())
        write(
            argparse.Namespace(**saved["args"]),
            saved["results"],
            saved["load_before"],
            saved["load_after"],
            saved["took"],
        )
        return
    load_before = os.getloadavg()
    begun = time.monotonic()
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--bin", "wallaroo"], cwd=ROOT, check=True
    )
    work = Path(tempfile.mkdtemp(prefix="wallaroo-grow-bench-"))
    wasm = build(work)
    keys = [int(k) for k in args.keys.split(",")]
    results = []
    for k in keys:
        results.append(measure_move(k, work, wasm, args))
    if not args.no_full:
        results.append(measure_full(keys[0], work, wasm, args))
    took = time.monotonic() - begun
    print(f"took {took:.0f} s; work in {work}")
    load_after = os.getloadavg()
    saved = {"args": vars(args), "results": results, "took": took}
    saved.update(load_before=load_before, load_after=load_after)
    (work / "results.json").write_text(json.dumps(saved))
    for r in results:
        for c in r["changes"]:
            print(move_row(r, c))
    if not args.no_write:
        write(args, results, load_before, load_after, took)


if __name__ == "__main__":
    main()
