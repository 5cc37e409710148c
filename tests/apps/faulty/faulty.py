"""A word count whose input can make it misbehave in every way a user's code can:
`raise` raises in a stateless step (`echo ...` too, with the whole line as its error), `loop`
never returns, `bomb` allocates without bound, `hoard` keeps 16 MiB for good (as a leaking
library would, so an instance fills up over several messages that are each harmless), a word
`boom` raises in the state step (with a key), and undecodable bytes fail the decoder."""

import wallaroo


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0][-2:]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    lines = wallaroo.source("lines", wallaroo.TCPSourceConfig(in_host, in_port, decode))
    pipeline = (
        lines.to(split)
        .key_by(word_key)
        .to(count)
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode))
    )
    return wallaroo.build_application("faulty", pipeline)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(data):
    return data.decode("utf-8")


_hoard = []


@wallaroo.computation_multi(name="split")
def split(line):
    if line == "hoard":
        _hoard.append(bytearray(16 << 20))
        return []
    if line == "raise":
        raise ValueError("asked to raise")
    if line.startswith("echo "):
        raise ValueError(line)
    if line == "loop":
        while True:
            pass
    if line == "bomb":
        hoard = []
        while True:
            hoard.append(bytearray(16 << 20))
    return line.split()


@wallaroo.key_extractor
def word_key(word):
    return word


class Total:
    def __init__(self):
        self.count = 0


@wallaroo.state_computation(name="count", state=Total)
def count(word, total):
    if word == "boom":
        raise RuntimeError("boom is not a word")
    total.count += 1
    return (word, total.count)


@wallaroo.encoder
def encode(pair):
    return f"{pair[0]} => {pair[1]}\n".encode()
