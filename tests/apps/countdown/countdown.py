"""A generator that runs out, for the end-to-end tests of streams that end.

The generator counts down from ``--from N`` (default 1000) to 1 and then ends; each number is
keyed by its parity, and a state step keeps a running count and sum per parity, written as
``parity count sum``.
"""

import argparse

import wallaroo


def application_setup(args):
    parser = argparse.ArgumentParser(prog="countdown", add_help=False)
    parser.add_argument("--from", dest="start", type=int, default=1000)
    options, _ = parser.parse_known_args(args)
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    pipeline = (
        wallaroo.source("countdown", wallaroo.GenSourceConfig(Countdown(options.start)))
        .key_by(parity)
        .to(running_sum)
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode))
    )
    return wallaroo.build_application("Countdown", pipeline)


class Countdown:
    def __init__(self, start):
        self.start = start

    def initial_value(self):
        return self.start

    def apply(self, previous):
        return previous - 1 if previous > 1 else None


class Sum:
    def __init__(self):
        self.count = 0
        self.sum = 0


@wallaroo.key_extractor
def parity(number):
    return "odd" if number % 2 else "even"


@wallaroo.state_computation(name="running sum", state=Sum)
def running_sum(number, total):
    total.count += 1
    total.sum += number
    return f"{parity(number)} {total.count} {total.sum}"


@wallaroo.encoder
def encode(line):
    return line + "\n"
