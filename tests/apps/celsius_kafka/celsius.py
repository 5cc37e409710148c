"""Celsius to Fahrenheit with Kafka, in the shape of Wallaroo 0.6's celsius-kafka example.

Input: records of a Kafka topic whose values are Celsius temperatures as ASCII text.
Output: one record per input on another topic, the Fahrenheit value as text with six decimals,
without a key. The topics and brokers come from the command line (--kafka_source_topic,
--kafka_source_brokers, --kafka_sink_topic, --kafka_sink_brokers).
"""

import wallaroo


def application_setup(args):
    values = wallaroo.source("convert", wallaroo.DefaultKafkaSourceCLIParser(decoder))

    pipeline = values.to(multiply).to(add).to_sink(wallaroo.DefaultKafkaSinkCLIParser(encoder))
    return wallaroo.build_application("Celsius to Fahrenheit with Kafka", pipeline)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(bs):
    try:
        return float(bs.decode("utf-8"))
    except ValueError:
        return 0.0


@wallaroo.computation(name="multiply by 1.8")
def multiply(data):
    return data * 1.8


@wallaroo.computation(name="add 32")
def add(data):
    return data + 32


@wallaroo.encoder
def encoder(data):
    # The value, no key, and no partition: the Kafka client spreads the records.
    return ("%.6f" % data, None, None)  # noqa: UP031 (as Wallaroo's example wrote it)
