"""Word count on one node and on a cluster of three, on this machine, side by side.

    python3 benches/cluster.py [--lines 100000]

Every run is one `wallaroo send` of the same input into one source, a `wallaroo receive`
counting output lines, and the throughput from the first byte sent to the last line out:
- one node: `wallaroo run --workers 1`, and `--workers 3`;
- three nodes: `wallaroo node` x3 on 127.0.0.1 (distinct ports), one worker each, deployed
  with `wallaroo deploy`; input goes to node 0, so about two thirds of the words cross to
  another node. Bytes on the wire per routed message come from `wallaroo status`;
each with `--resilience none` and `exactly-once`. The six configurations run in turn, for
`--rounds` rounds (3 by default), and each reports its median rate and the range: on a shared
machine one run of a few seconds varies by a third. The section it writes replaces the one in
benches/RESULTS.md after the `<!-- cluster.py -->` line (bench.py keeps it).
"""

import argparse
import datetime
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench import ROOT, Node, W, free_port, machine, make_input, measure, reap

MARKER = "<!-- cluster.py -->"
SWAP_MARKER = "<!-- swap.py -->"
NODES = 3


class ClusterRun:
    """Three `wallaroo node`s with word count deployed on them; `source` is node 0's."""

    def __init__(self, wasm, sink, work, extra=()):
        shutil.rmtree(work / "cluster", ignore_errors=True)
        base = work / "cluster"
        base.mkdir()
        certs = base / "certs"
        subprocess.run([W, "cert", "init", certs], check=True, stdout=subprocess.DEVNULL)
        self.hosts = base / "hosts.txt"
        addrs = [f"127.0.0.1:{free_port()}" for _ in range(NODES)]
        self.hosts.write_text("\n".join(addrs) + "\n")
        self.certs = certs
        self.nodes = []
        app_port = 1024
        for i, addr in enumerate(addrs):
            offset = free_port() - app_port
            node = subprocess.Popen(
                [W, "node", "--listen", addr, "--data-dir", base / f"node{i}"]
                + ["--certs", certs, "--source-port-offset", str(offset)]
                + ["--cache-dir", work / "cache"],
                stderr=subprocess.PIPE,
                text=True,
            )
            node.stderr.readline()
            self.nodes.append(node)
        out = subprocess.run(
            [W, "deploy", "--nodes", self.hosts, "--certs", certs, "--workers", "1", *extra]
            + [wasm, "--in", f"127.0.0.1:{app_port}", "--out", sink],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        self.source = re.search(r"source node 0: .* (\S+)$", out, re.M).group(1)
        self.status = ""

    def stop(self):
        self.status = subprocess.run(
            [W, "status", "--nodes", self.hosts, "--certs", self.certs],
            capture_output=True,
            text=True,
        ).stdout
        subprocess.run(
            [W, "stop", "--nodes", self.hosts, "--certs", self.certs],
            check=True,
            capture_output=True,
        )
        rss = []
        for node in self.nodes:
            node.send_signal(signal.SIGTERM)
            rss.append(reap(node, 60))
            node.stderr.close()
        return None if None in rss else sum(rss)

    def wire(self):
        """(routed messages, bytes on the wire) summed over the nodes."""
        found = re.findall(r"to other nodes: (\d+) messages, (\d+) bytes", self.status)
        return sum(int(m) for m, _ in found), sum(int(b) for _, b in found)


class Start:
    """Starts one system under test for `measure` and remembers it."""

    def __init__(self, name, wasm, work, extra):
        self.name, self.wasm, self.work, self.extra = name, wasm, work, extra
        self.system = None

    def start(self, sink):
        if self.name.startswith("3 nodes"):
            self.system = ClusterRun(self.wasm, sink, self.work, self.extra)
        else:
            workers = int(self.name.split(", ")[1].split()[0])
            self.system = Node(self.wasm, sink, workers, self.work, self.extra)
        return self.system

    def wire(self):
        return self.system.wire() if isinstance(self.system, ClusterRun) else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load_before = time.time(), __import__("os").getloadavg()
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--bin", "wallaroo"], cwd=ROOT, check=True
    )
    work = Path(tempfile.mkdtemp(prefix="wallaroo-cluster-bench-"))
    input_path = work / "lines.txt"
    make_input(input_path, args.lines)
    wasm = work / "word_count.wasm"
    subprocess.run(
        [W, "build", ROOT / "componentize-py-examples/word_count/word_count.py", "-o", wasm],
        check=True,
        capture_output=True,
    )
    configs = [
        (mode, name)
        for mode in ("none", "exactly-once")
        for name in ("1 node, 1 worker", "1 node, 3 workers", "3 nodes, 1 worker each")
    ]
    runs = {config: [] for config in configs}
    for round_ in range(1, args.rounds + 1):
        for mode, name in configs:
            extra = ["--resilience", mode]
            if mode == "exactly-once":
                extra += ["--sink-framing", "tagged"]
            system = Start(name, wasm, work, extra)
            report = measure(system.start, input_path, args.lines, 10, work)
            runs[(mode, name)].append((report["rate"], report["rss"], system.wire()))
            print(
                f"round {round_}: {mode:13} {name:24} {report['rate']:>9,.0f} lines/s",
                flush=True,
            )
    rows = []
    for (mode, name), results in runs.items():
        rates = sorted(rate for rate, _, _ in results)
        rss = [r for _, r, _ in results if r is not None]
        rows.append(
            (mode, name, statistics.median(rates), rates, max(rss, default=None), results[-1][2])
        )
    write(args, rows, load_before)


def write(args, rows, load_before):
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    lines = [
        MARKER,
        "## Cluster: word count on 1 node vs 3 nodes",
        "",
        f"Written by `python3 benches/cluster.py`: {args.rounds} rounds of the six runs in turn;"
        " the median rate of each, with the lowest and highest.",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}",
        f"- commit: {commit}",
        *machine(),
        f"- load average before the run: {load_before[1][0]:.2f}",
        f"- input: {args.lines:,} lines of 10 words into one source (node 0's for the cluster);"
        " all nodes on this one machine over loopback, release build",
        "",
        "| resilience | system | lines/s (median) | lowest – highest | vs 1 node, 1 worker |"
        " peak RSS, all processes |",
        "|---|---|---:|---:|---:|---:|",
    ]
    base = {mode: rate for mode, name, rate, *_ in rows if name == "1 node, 1 worker"}
    for mode, name, rate, rates, rss, _ in rows:
        lines.append(
            f"| {mode} | {name} | {rate:,.0f} | {rates[0]:,.0f} – {rates[-1]:,.0f} | "
            f"{rate / base[mode]:.2f}x | {rss if rss is not None else '?'} MiB |"
        )
    lines += ["", "Bytes on the wire between nodes (QUIC with TLS, UDP payload bytes):", ""]
    for mode, *_, wire in rows:
        if wire and wire[0]:
            lines.append(
                f"- {mode}: {wire[0]:,} messages routed to other nodes in {wire[1]:,} bytes: "
                f"{wire[1] / wire[0]:.1f} bytes per message (a word of a few bytes as its key)"
            )
    lines.append("")
    path = ROOT / "benches/RESULTS.md"
    text = path.read_text() if path.exists() else ""
    # benches/swap.py writes its section after this one, from its own marker line: kept.
    later = text.split(MARKER)[1] if MARKER in text else ""
    kept = later[later.index(SWAP_MARKER) :] if SWAP_MARKER in later else ""
    text = text.split(MARKER)[0].rstrip("\n") + "\n\n" + "\n".join(lines)
    if kept:
        text += "\n" + kept
    path.write_text(text)
    print("wrote the cluster section of benches/RESULTS.md")


if __name__ == "__main__":
    main()
