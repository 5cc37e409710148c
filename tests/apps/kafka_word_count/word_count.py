"""Word count over Kafka: lines of text from one topic, running counts per word to another.

Input: records whose values are lines of UTF-8 text.
Output: one record per word seen, valued `WORD COUNT` and keyed by the word, so that every
count of a word lands in one partition, in order. The topics and brokers come from the command
line (--kafka_source_topic, --kafka_source_brokers, --kafka_sink_topic, --kafka_sink_brokers).
"""

import wallaroo

PUNCTUATION = " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"


def application_setup(args):
    lines = wallaroo.source("lines", wallaroo.DefaultKafkaSourceCLIParser(decode_line))
    pipeline = (
        lines.to(split)
        .key_by(extract_word)
        .to(count_word)
        .to_sink(wallaroo.DefaultKafkaSinkCLIParser(encode_word_count))
    )
    return wallaroo.build_application("Kafka Word Count", pipeline)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode_line(data):
    return data.decode("utf-8")


@wallaroo.computation_multi(name="split into words")
def split(text):
    words = (word.strip(PUNCTUATION) for word in text.lower().split())
    return [word for word in words if word]


@wallaroo.key_extractor
def extract_word(word):
    return word


class WordTotal:
    count = 0


@wallaroo.state_computation(name="count word", state=WordTotal)
def count_word(word, total):
    total.count += 1
    return (word, total.count)


@wallaroo.encoder
def encode_word_count(word_count):
    word, count = word_count
    return (f"{word} {count}", word)
