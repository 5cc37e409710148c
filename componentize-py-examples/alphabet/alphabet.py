"""Alphabet: takes votes for letters and keeps a running total per letter.

Input: frames of `>IsI`: a 4-byte big-endian length (5), one letter, a 4-byte big-endian vote
count. Output: `LETTER => TOTAL\\n` after every vote, TOTAL being the letter's total so far.
"""

import struct

import wallaroo


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0][-2:]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]

    votes = wallaroo.source("alphabet", wallaroo.TCPSourceConfig(in_host, in_port, decode_votes))
    pipeline = (
        votes.key_by(extract_letter)
        .to(add_votes)
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_votes))
    )
    return wallaroo.build_application("alphabet", pipeline)


class Votes:
    def __init__(self, letter, votes):
        self.letter = letter
        self.votes = votes


class TotalVotes:
    def __init__(self):
        self.votes = 0


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode_votes(data):
    letter, votes = struct.unpack(">sI", data)
    return Votes(letter.decode("utf-8"), votes)


@wallaroo.key_extractor
def extract_letter(votes):
    return votes.letter


@wallaroo.state_computation(name="add votes", state=TotalVotes)
def add_votes(votes, total):
    total.votes += votes.votes
    return Votes(votes.letter, total.votes)


@wallaroo.encoder
def encode_votes(votes):
    return f"{votes.letter} => {votes.votes}\n".encode()
