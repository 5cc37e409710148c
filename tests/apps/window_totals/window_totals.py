"""Totals per user over windows of ingest time, for the end-to-end tests of windows.

Input lines are ``user,amount`` or ``user,amount,seconds``. By default each user's amounts are
summed over sliding windows of 2 s every 1 s, so every message is in exactly two windows
whatever its ingest time; with ``--event-time`` the windows are over the seconds in the data
instead; with ``--count-windows N`` over windows of every N messages of a user. Each window
outputs ``user total count`` (count: how many messages it held).
"""

import argparse

import wallaroo


def application_setup(args):
    parser = argparse.ArgumentParser(prog="window_totals", add_help=False)
    parser.add_argument("--count-windows", type=int)
    parser.add_argument("--event-time", action="store_true")
    options, _ = parser.parse_known_args(args)
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0][-2:]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    if options.count_windows:
        windows = wallaroo.count_windows(options.count_windows)
    else:
        windows = wallaroo.range_windows(wallaroo.seconds(2)).with_slide(wallaroo.seconds(1))
    pipeline = (
        wallaroo.source(
            "Transactions",
            wallaroo.TCPSourceConfig(in_host, in_port, decode),
            event_time=data_time if options.event_time else None,
        )
        .key_by(user)
        .to(windows.over(Totals))
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode))
    )
    return wallaroo.build_application("Window totals", pipeline)


class Total:
    def __init__(self):
        self.total = 0
        self.count = 0


class Totals(wallaroo.Aggregation):
    def initial_accumulator(self):
        return Total()

    def update(self, data, acc):
        acc.total += data[1]
        acc.count += 1

    def combine(self, a, b):
        both = Total()
        both.total = a.total + b.total
        both.count = a.count + b.count
        return both

    def output(self, key, acc):
        return f"{key} {acc.total} {acc.count}"


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(bs):
    user, amount, *time = bs.decode().split(",")
    return (user, int(amount), *map(float, time))


def data_time(data):
    return data[2]


@wallaroo.key_extractor
def user(data):
    return data[0]


@wallaroo.encoder
def encode(line):
    return line + "\n"
