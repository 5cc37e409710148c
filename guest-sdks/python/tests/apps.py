"""Small applications the SDK tests run. Module level, so pickle finds their classes."""

import struct

import wallaroo

ARGS = ["--in", "127.0.0.1:7010", "--out", "127.0.0.1:7002"]


@wallaroo.decoder(header_length=4, length_fmt=">I")
def text(data):
    return data.decode()


@wallaroo.computation_multi(name="split")
def split(line):
    return line.split()


@wallaroo.key_extractor
def itself(word):
    return word


class Count:
    def __init__(self):
        self.n = 0


@wallaroo.state_computation(name="count", state=Count)
def count(word, total):
    if word == "fail":
        raise ValueError("no failing")
    total.n += 1
    return (word, total.n)


@wallaroo.encoder
def pair(p):
    return f"{p[0]} => {p[1]}\n".encode()


def sink():
    return wallaroo.TCPSinkConfig("127.0.0.1", "7002", pair)


class WordCount:
    @staticmethod
    def application_setup(args):
        host, port = wallaroo.tcp_parse_input_addrs(args)[0]
        lines = wallaroo.source("lines", wallaroo.TCPSourceConfig(host, port, text))
        return wallaroo.build_application(
            "wc", lines.to(split).key_by(itself).to(count).to_sink(sink())
        )


class Votes:
    def __init__(self, letter, votes):
        self.letter, self.votes = letter, votes


class AllVotes:
    def __init__(self):
        self.by_letter = {}


@wallaroo.decoder(header_length=4, length_fmt=">I")
def votes(data):
    letter, n = struct.unpack(">sI", data)
    return Votes(letter.decode(), n)


@wallaroo.key_extractor
def letter(v):
    return v.letter


@wallaroo.state_computation(name="add", state=AllVotes)
def add(v, state):
    state.by_letter[v.letter] = state.by_letter.get(v.letter, 0) + v.votes
    return (v.letter, state.by_letter[v.letter])


class Alphabet:
    @staticmethod
    def application_setup(args):
        host, port = wallaroo.tcp_parse_input_addrs(args)[0]
        src = wallaroo.source("votes", wallaroo.TCPSourceConfig(host, port, votes))
        return wallaroo.build_application("abc", src.key_by(letter).to(add).to_sink(sink()))


@wallaroo.computation(name="total")
def unkeyed_total(word):
    return word


class Running:
    def __init__(self):
        self.n = 0


@wallaroo.state_computation(name="running", state=Running)
def running(word, state):
    state.n += 1
    return ("all", state.n)


class Unkeyed:
    @staticmethod
    def application_setup(args):
        src = wallaroo.source("lines", wallaroo.TCPSourceConfig("h", "1", text))
        return wallaroo.build_application("u", src.to(split).to(running).to_sink(sink()))


@wallaroo.decoder(header_length=2, length_fmt="<H")
def short(data):
    return data.decode()


@wallaroo.encoder
def upper(s):
    return s.upper().encode()


@wallaroo.encoder
def lower(s):
    return s.lower().encode()


class Merged:
    @staticmethod
    def application_setup(args):
        a = wallaroo.source("a", wallaroo.TCPSourceConfig("h", "1", text))
        b = wallaroo.source("b", wallaroo.TCPSourceConfig("a-name", "h", "2", short))
        sinks = [wallaroo.TCPSinkConfig("h", "3", upper), wallaroo.TCPSinkConfig("h", "4", lower)]
        return wallaroo.build_application("m", a.merge(b).to_sinks(sinks))


class Countdown:
    def initial_value(self):
        return 3

    def apply(self, previous):
        return previous - 1 if previous > 1 else None


@wallaroo.computation(name="show")
def show(n):
    return f"{n}\n"


@wallaroo.encoder
def as_bytes(s):
    return s.encode()


class Generated:
    @staticmethod
    def application_setup(args):
        src = wallaroo.source("gen", wallaroo.GenSourceConfig(Countdown()))
        return wallaroo.build_application(
            "g", src.to(show).to_sink(wallaroo.TCPSinkConfig("h", "1", as_bytes))
        )


@wallaroo.encoder
def wrong_type(s):
    return s


class StrEncoder:
    @staticmethod
    def application_setup(args):
        src = wallaroo.source("lines", wallaroo.TCPSourceConfig("h", "1", text))
        return wallaroo.build_application(
            "s", src.to_sink(wallaroo.TCPSinkConfig("h", "2", wrong_type))
        )
