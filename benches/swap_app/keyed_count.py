"""A keyed counter for the hot swap benchmark (benches/swap.py): each message is one key (the
whole line), and every message gets out one line with that key's running count.

Version 1 writes `KEY => COUNT\\n`. The benchmark makes version 2 from this file by setting
`VERSION = 2` (same module, same stateful step and state class, so the state carries over),
which writes `KEY := COUNT\\n`: a receiver sees where each key switched version.
"""

import wallaroo

VERSION = 1


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0][-2:]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    lines = wallaroo.source("keys", wallaroo.TCPSourceConfig(in_host, in_port, decode))
    pipeline = (
        lines.key_by(whole_line)
        .to(count_key)
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode))
    )
    return wallaroo.build_application("Keyed Count", pipeline)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(data):
    return data.decode("utf-8")


@wallaroo.key_extractor
def whole_line(line):
    return line


class Total:
    count = 0


@wallaroo.state_computation(name="count key", state=Total)
def count_key(line, total):
    total.count += 1
    return (line, total.count)


@wallaroo.encoder
def encode(counted):
    line, count = counted
    return f"{line} {'=>' if VERSION == 1 else ':='} {count}\n".encode()
