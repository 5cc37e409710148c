"""The cost of windows: per-user totals over sliding windows of 10 s every 1 s of event time
(``--mode windows``), or the same totals kept as plain state and output on every message
(``--mode state``). Input lines are ``user,amount,seconds``; the seconds are the event time."""

import argparse

import wallaroo


def application_setup(args):
    parser = argparse.ArgumentParser(prog="windows_app", add_help=False)
    parser.add_argument("--mode", choices=["windows", "state"], default="windows")
    options, _ = parser.parse_known_args(args)
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0][-2:]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    transactions = wallaroo.source(
        "Transactions", wallaroo.TCPSourceConfig(in_host, in_port, decode), event_time=event_time
    )
    keyed = transactions.key_by(user)
    if options.mode == "windows":
        windows = wallaroo.range_windows(wallaroo.seconds(10)).with_slide(wallaroo.seconds(1))
        totals = keyed.to(windows.over(Totals))
    else:
        totals = keyed.to(add)
    pipeline = totals.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode))
    return wallaroo.build_application("Windows cost", pipeline)


class Total:
    def __init__(self):
        self.total = 0


class Totals(wallaroo.Aggregation):
    def initial_accumulator(self):
        return Total()

    def update(self, data, acc):
        acc.total += data[1]

    def combine(self, a, b):
        both = Total()
        both.total = a.total + b.total
        return both

    def output(self, key, acc):
        return f"{key} {acc.total}"


@wallaroo.state_computation(name="add", state=Total)
def add(data, total):
    total.total += data[1]
    return f"{data[0]} {total.total}"


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(bs):
    name, amount, seconds = bs.split(b",")
    return (name.decode(), int(amount), float(seconds))


def event_time(data):
    return data[2]


@wallaroo.key_extractor
def user(data):
    return data[0]


@wallaroo.encoder
def encode(line):
    return line + "\n"
