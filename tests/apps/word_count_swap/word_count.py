"""The word count example's next version, for a hot swap: a stateless step before the key_by
("strip line") and another output format, `WORD := COUNT\\n`.

The module keeps the first version's name and the stateful step its name ("count word"): the
state is pickled, and names its class by module.
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
        lines.to(strip_line)
        .to(split)
        .key_by(extract_word)
        .to(count_word)
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_word_count))
    )
    return wallaroo.build_application("Word Count Application", pipeline)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode_lines(data):
    return data.decode("utf-8")


@wallaroo.computation(name="strip line")
def strip_line(text):
    return text.strip()


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


class WordTotal:
    count = 0


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
    return f"{word_count.word} := {word_count.count}\n".encode()
