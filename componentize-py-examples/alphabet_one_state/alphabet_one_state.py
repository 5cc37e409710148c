"""Alphabet with one state for the whole step (`ApplicationBuilder.to_stateful`), written the
way Wallaroo 0.4/0.5 applications were: a single `AllVotes` object counts the votes of every
letter, so every vote passes through one place.

Input: the alphabet example's votes, frames of `>sI` (one letter, a 4-byte big-endian vote
count). Output: `LETTER => TOTAL\\n` after every vote, TOTAL being the letter's total so far.
"""

import struct

import wallaroo


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0][-2:]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]

    ab = wallaroo.ApplicationBuilder("alphabet")
    ab.new_pipeline("alphabet", wallaroo.TCPSourceConfig(in_host, in_port, decode_votes))
    ab.to_stateful(add_votes, AllVotes, "all votes")
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_votes))
    return ab.build()


class Votes:
    def __init__(self, letter, votes):
        self.letter = letter
        self.votes = votes


class AllVotes:
    def __init__(self):
        self.by_letter = {}

    def add(self, votes):
        total = self.by_letter.get(votes.letter, 0) + votes.votes
        self.by_letter[votes.letter] = total
        return Votes(votes.letter, total)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode_votes(bs):
    letter, votes = struct.unpack(">sI", bs)
    return Votes(letter.decode("utf-8"), votes)


@wallaroo.state_computation(name="add votes")
def add_votes(votes, all_votes):
    return (all_votes.add(votes), True)


@wallaroo.encoder
def encode_votes(votes):
    return f"{votes.letter} => {votes.votes}\n".encode()
