"""The word count example's next version with another state: the first version's state class
(WordTotal, with `count`) is gone, and each word's state is a WordStats (`total`, and the
number of characters counted), which converts the first version's state in `upgrade_state`.
Output: `WORD := COUNT\\n`, another format than the first version's.

The module keeps the first version's name and the stateful step its name ("count word"), so
the running state finds its step; its pickles name `word_count.WordTotal`, a class this module
no longer has, which the SDK hands to `upgrade_state` as a `wallaroo.OldState`.
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


class WordStats:
    def __init__(self, total=0, characters=0):
        self.total = total
        self.characters = characters

    @classmethod
    def upgrade_state(cls, old):
        # The first version kept only the count; the characters are those of the key's word,
        # which the state does not know: counted from here on.
        return cls(total=old.count)


class WordCount:
    def __init__(self, word, count):
        self.word = word
        self.count = count


@wallaroo.state_computation(name="count word", state=WordStats)
def count_word(word, stats):
    stats.total += 1
    stats.characters += len(word)
    return WordCount(word, stats.total)


@wallaroo.encoder
def encode_word_count(word_count):
    return f"{word_count.word} := {word_count.count}\n".encode()
