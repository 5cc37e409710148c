"""The cost of windows, side by side in one run: the same per-user totals over sliding windows
of 10 s every 1 s of event time, and kept as plain state (one output per message).

    python3 benches/windows.py [--lines N] [--users N] [--workers N]

Both run on `wallaroo run` (release build, `--resilience none`) from one TCP connection, on the
same input: `user,amount,seconds` lines whose event times advance 1 s every `--users` lines
(about one message per user per second of event time, so each window holds about ten of a
user's messages and each message is in ten windows), ending with one far-ahead record that
fires every window left. Throughput is input lines / (last output line received - first byte
sent), as in benches/bench.py; start-up is not included. Appends its table to
benches/RESULTS.md.
"""

import argparse
import datetime
import os
import random
import subprocess
import tempfile
from pathlib import Path

import bench

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "benches" / "windows_app" / "windows_app.py"


def make_input(path, lines, users):
    """Writes the input; returns how many windows (of any user) hold a message."""
    rng = random.Random(11)
    windows = set()
    start = 1_550_000_000
    with open(path, "w") as f:
        for i in range(lines - 1):
            user = f"u{rng.randrange(users)}"
            seconds = start + i / users
            f.write(f"{user},{rng.randrange(-500, 500)},{seconds:.3f}\n")
            second = int(seconds)
            windows.update((user, s) for s in range(second - 9, second + 1))
        f.write(f"last,0,{start + 10**7}\n")
    return len(windows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "wallaroo"], check=True)
    work = Path(tempfile.mkdtemp(prefix="wallaroo-windows-bench-"))
    wasm = work / "windows_app.wasm"
    subprocess.run([bench.W, "build", APP, "-o", wasm], check=True)
    input_path = work / "input.txt"
    windows = make_input(input_path, args.lines, args.users)
    results = {}
    for mode, outputs in (("state", args.lines), ("windows", windows)):

        def start(sink, mode=mode):
            extra = ["--resilience", "none", "--mode", mode]
            return bench.Node(wasm, sink, args.workers, work, extra)

        # The input file sent once (its lines as messages), waiting for every output line.
        report = bench.measure(
            start, input_path, args.lines, 1, work, timeout=900, expected=outputs
        )
        results[mode] = report
        print(f"{mode}: {report['rate']:,.0f} input lines/s, peak RSS {report['rss']} MiB")
    ratio = results["windows"]["rate"] / results["state"]["rate"]
    load = os.getloadavg()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    lines = [
        "",
        "## The cost of windows (benches/windows.py)",
        "",
        *bench.machine(),
        f"- {datetime.date.today()}, commit {commit}, load average before the run "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}",
        f"- {args.lines:,} lines of {args.users} users, one connection, {args.workers} workers, "
        "`--resilience none`; event times from the data, 1 s per "
        f"{args.users} lines; {windows:,} windows fire",
        "",
        "| app | input lines/s | peak RSS |",
        "|---|---:|---:|",
        f"| per-user totals as plain state, output per message | "
        f"{results['state']['rate']:,.0f} | {results['state']['rss']} MiB |",
        f"| per-user totals over sliding windows 10 s / 1 s | "
        f"{results['windows']['rate']:,.0f} | {results['windows']['rss']} MiB |",
        "",
        f"Windows run at {ratio:.2f}x the plain state's throughput.",
    ]
    with open(ROOT / "benches" / "RESULTS.md", "a") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
