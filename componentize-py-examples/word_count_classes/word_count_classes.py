"""Word count written the way Wallaroo 0.1-0.3 applications were: classes with `name()` and
`compute()`, a state builder, a partition function object, a class-based decoder and encoder,
all put together with `ApplicationBuilder`.

Input and output are the word_count example's: framed lines of text in, `WORD => COUNT\\n` out
for every word, COUNT being how many times the word has been seen so far. The words are
partitioned by their first letter (`!` for anything else); each partition's state holds the
counts of its words.
"""

import string
import struct

import wallaroo

PUNCTUATION = " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0][-2:]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]

    word_partitions = list(string.ascii_lowercase)
    word_partitions.append("!")

    ab = wallaroo.ApplicationBuilder("Word Count Application")
    ab.new_pipeline("Split and Count", wallaroo.TCPSourceConfig(in_host, in_port, LineDecoder()))
    ab.to_parallel(Split)
    ab.to_state_partition(
        CountWord(), WordTotalsBuilder(), "word totals", FirstLetter(), word_partitions
    )
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, WordCountEncoder()))
    return ab.build()


class LineDecoder:
    def header_length(self):
        return 4

    def payload_length(self, bs):
        return struct.unpack(">I", bs)[0]

    def decode(self, bs):
        return bs.decode("utf-8")


class Split:
    def name(self):
        return "split into words"

    def compute_multi(self, text):
        words = []
        for line in text.split("\n"):
            for word in line.lower().strip(PUNCTUATION).split(" "):
                words.append(word.strip(PUNCTUATION))
        return words


class FirstLetter:
    def partition(self, word):
        first = word[:1]
        return first if "a" <= first <= "z" else "!"


class WordTotals:
    def __init__(self):
        self.counts = {}

    def add(self, word):
        self.counts[word] = self.counts.get(word, 0) + 1
        return WordCount(word, self.counts[word])


class WordTotalsBuilder:
    def build(self):
        return WordTotals()


class WordCount:
    def __init__(self, word, count):
        self.word = word
        self.count = count


class CountWord:
    def name(self):
        return "count word"

    def compute(self, word, totals):
        return (totals.add(word), True)


class WordCountEncoder:
    def encode(self, word_count):
        return f"{word_count.word} => {word_count.count}\n"
