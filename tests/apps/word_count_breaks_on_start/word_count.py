"""A version of the word count example that takes over a sample of its state (what a hot swap
checks before the switch) and fails on the rest: it cannot start once recorded, and the
cluster goes back to the version before it.
"""

import wallaroo

PUNCTUATION = " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0][-2:]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]

    lines = wallaroo.source(
        "Split and Count", wallaroo.TCPSourceConfig(in_host, in_port, decode_lines)
    )
    pipeline = (
        lines.to(split)
        .key_by(extract_word)
        .to(count_word)
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_word_count))
    )
    return wallaroo.build_application("Word Count Application", pipeline)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode_lines(data):
    return data.decode("utf-8")


@wallaroo.computation_multi(name="split into words")
def split(text):
    words = []
    for line in text.split("\n"):
        for word in line.lower().strip(PUNCTUATION).split(" "):
            words.append(word.strip(PUNCTUATION))
    return words


@wallaroo.key_extractor
def extract_word(word):
    return word


# How many states this instance has restored.
RESTORED = [0]


class WordTotal:
    count = 0

    def __setstate__(self, fields):
        # Takes the few keys a check samples, and fails on the rest.
        RESTORED[0] += 1
        if RESTORED[0] > 20:
            raise ValueError(f"this version cannot restore more than 20 keys ({fields})")
        self.__dict__.update(fields)


class WordCount:
    def __init__(self, word, count):
        self.word = word
        self.count = count


@wallaroo.state_computation(name="count word", state=WordTotal)
def count_word(word, total):
    total.count += 1
    return WordCount(word, total.count)


@wallaroo.encoder
def encode_word_count(word_count):
    return f"{word_count.word} => {word_count.count}\n".encode()
