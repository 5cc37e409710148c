"""A version of word count whose state class has another name (WordTally): the running state,
pickled as word_count.WordTotal, does not unpickle into it, so a hot swap to it is refused.

Input: framed lines of text (4-byte big-endian length, then UTF-8 text).
Output: one line per word seen, `WORD => COUNT\\n`, where COUNT is how many times the word has
been seen so far; the last line for a word carries its final count.
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


class WordTally:
    count = 0


class WordCount:
    def __init__(self, word, count):
        self.word = word
        self.count = count


@wallaroo.state_computation(name="count word", state=WordTally)
def count_word(word, total):
    total.count += 1
    return WordCount(word, total.count)


@wallaroo.encoder
def encode_word_count(word_count):
    return f"{word_count.word} => {word_count.count}\n".encode()
