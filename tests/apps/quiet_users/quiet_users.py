"""Running totals per user whose state expires after a quiet time, for the end-to-end tests of
state expiry.

Input lines are ``user,amount``. Each message outputs ``user total count`` (the user's running
total and message count); a user's state expires ``--expire-after-ms`` (default 1000) after its
last message, which outputs ``user expired total count``, and the user's next message starts
from nothing again.
"""

import argparse

import wallaroo


def application_setup(args):
    parser = argparse.ArgumentParser(prog="quiet_users", add_help=False)
    parser.add_argument("--expire-after-ms", type=int, default=1000)
    options, _ = parser.parse_known_args(args)
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0][-2:]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]

    @wallaroo.state_computation(
        name="running total",
        state=Total,
        expire_after=wallaroo.milliseconds(options.expire_after_ms),
        on_expire=farewell,
    )
    def running_total(data, total):
        total.total += data[1]
        total.count += 1
        return f"{data[0]} {total.total} {total.count}"

    pipeline = (
        wallaroo.source("Transactions", wallaroo.TCPSourceConfig(in_host, in_port, decode))
        .key_by(user)
        .to(running_total)
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode))
    )
    return wallaroo.build_application("Quiet users", pipeline)


class Total:
    def __init__(self):
        self.total = 0
        self.count = 0


def farewell(user, total):
    return f"{user} expired {total.total} {total.count}"


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(bs):
    user, amount = bs.decode().split(",")
    return (user, int(amount))


@wallaroo.key_extractor
def user(data):
    return data[0]


@wallaroo.encoder
def encode(line):
    return line + "\n"
