"""Alphabet, partitioned, written the way Wallaroo 0.1-0.3 applications were: votes for letters
kept per letter in a state partition whose keys (a to z) are declared up front.

Input: the alphabet example's votes, frames of `>sI` (one letter, a 4-byte big-endian vote
count). Output: `LETTER => TOTAL\\n` after every vote, TOTAL being the letter's total so far.
The classes are given partly as classes and partly as instances, as Wallaroo allowed.
"""

import string
import struct

import wallaroo


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0][-2:]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]

    letters = list(string.ascii_lowercase)
    ab = wallaroo.ApplicationBuilder("alphabet")
    ab.new_pipeline("alphabet", wallaroo.TCPSourceConfig(in_host, in_port, VotesDecoder))
    ab.to_state_partition(AddVotes, TotalVotesBuilder(), "letter state", ByLetter, letters)
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, VotesEncoder()))
    ab.done()
    return ab.build()


class Votes:
    def __init__(self, letter, votes):
        self.letter = letter
        self.votes = votes


class TotalVotes:
    def __init__(self):
        self.votes = 0


class TotalVotesBuilder:
    def build(self):
        return TotalVotes()


class VotesDecoder:
    def header_length(self):
        return 4

    def payload_length(self, bs):
        return struct.unpack(">I", bs)[0]

    def decode(self, bs):
        letter, votes = struct.unpack(">sI", bs)
        return Votes(letter.decode("utf-8"), votes)


class ByLetter:
    def partition(self, votes):
        return votes.letter


class AddVotes:
    def name(self):
        return "add votes"

    def compute(self, votes, total):
        total.votes += votes.votes
        return (Votes(votes.letter, total.votes), True)


class VotesEncoder:
    def encode(self, votes):
        return f"{votes.letter} => {votes.votes}\n"
