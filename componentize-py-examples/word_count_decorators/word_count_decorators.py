"""Word count written the way Wallaroo 0.4/0.5 applications were: decorated functions
(`@wallaroo.state_computation` without `state=`, `@wallaroo.partition`) put together with
`ApplicationBuilder`; every word is its own partition key, none declared up front (Wallaroo's
dynamic keys).

Input and output are the word_count example's: framed lines of text in, `WORD => COUNT\\n` out
for every word, COUNT being how many times the word has been seen so far.
"""

import wallaroo

PUNCTUATION = " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0][-2:]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]

    ab = wallaroo.ApplicationBuilder("Word Count Application")
    ab.new_pipeline("Split and Count", wallaroo.TCPSourceConfig(in_host, in_port, decode_lines))
    ab.to_parallel(split)
    ab.to_state_partition(count_word, WordTotal, "word totals", each_word)
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_word_count))
    return ab.build()


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode_lines(bs):
    return bs.decode("utf-8")


@wallaroo.computation_multi(name="split into words")
def split(text):
    words = []
    for line in text.split("\n"):
        for word in line.lower().strip(PUNCTUATION).split(" "):
            words.append(word.strip(PUNCTUATION))
    return words


@wallaroo.partition
def each_word(word):
    return word


class WordTotal:
    def __init__(self):
        self.count = 0


class WordCount:
    def __init__(self, word, count):
        self.word = word
        self.count = count


@wallaroo.state_computation(name="count word")
def count_word(word, total):
    total.count += 1
    return (WordCount(word, total.count), True)


@wallaroo.encoder
def encode_word_count(word_count):
    return f"{word_count.word} => {word_count.count}\n".encode()
