"""Kafka sources and sinks: Wallaroo's command-line parsers and configs, the spec the runtime
describes for them, and a Kafka sink's records made from what its encoder returns."""

import importlib.util
import pickle
import re
from pathlib import Path

import pytest
from test_runtime import TwinRuntime, WordTotal, app_module

import wallaroo
from wallaroo import WallarooParameterError, _wire
from wallaroo._runtime import SinkSpec, SourceSpec
from wallaroo.testing import LocalRun

APPS = Path(__file__).resolve().parents[3] / "tests" / "apps"
EXAMPLES = Path(__file__).resolve().parents[3] / "componentize-py-examples"

KAFKA_ARGS = [
    "--kafka_source_topic",
    "in",
    "--kafka_source_brokers",
    "k1:9093,k2",
    "--kafka_sink_topic",
    "out",
    "--kafka_sink_brokers",
    "k3:9094",
]
SOURCE_SPEC = ("kafka", "in", "k1:9093,k2:9092", (("log_level", "4"),))
SINK_SPEC = (
    "kafka",
    "out",
    "k3:9094",
    (("log_level", "4"), ("linger.ms", "0"), ("message.max.bytes", "100000")),
)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode_text(data):
    return data.decode()


@wallaroo.encoder
def encode_text(text):
    return text


@wallaroo.computation(name="upper")
def upper(text):
    return text.upper()


def kafka_app(source_config, sink_config, name="kafka"):
    """An application from a Kafka source through ``upper`` to a Kafka sink; the configs are
    made from ``args`` by the given functions."""

    def setup(args):
        source = wallaroo.source("lines", source_config(args))
        pipeline = source.to(upper).to_sink(sink_config(args))
        return wallaroo.build_application(name, pipeline)

    return app_module(setup)


def default_app(encoder=encode_text, source_name=None, sink_name=None):
    def source(args):
        if source_name is None:
            return wallaroo.DefaultKafkaSourceCLIParser(decode_text)
        return wallaroo.DefaultKafkaSourceCLIParser(decode_text, name=source_name)

    def sink(args):
        if sink_name is None:
            return wallaroo.DefaultKafkaSinkCLIParser(encoder)
        return wallaroo.DefaultKafkaSinkCLIParser(encoder, name=sink_name)

    return kafka_app(source, sink)


def described(module, args):
    runtime = TwinRuntime(module)
    return runtime, runtime.describe(args)


# ------------------------------------------------------------------------------------------------
# kafka_parse_source_options and kafka_parse_sink_options


def test_source_options_default_to_nothing_but_the_warn_log_level():
    assert wallaroo.kafka_parse_source_options([]) == (None, "", [], "Warn")


def test_source_options_are_read_with_brokers_as_host_port_pairs():
    args = ["--kafka_source_name", "n", "--kafka_source_topic", "t"]
    args += ["--kafka_source_brokers", "h1:1, h2", "--kafka_source_log_level", "Fine"]
    assert wallaroo.kafka_parse_source_options(args) == (
        "n",
        "t",
        [("h1", "1"), ("h2", "9092")],
        "Fine",
    )


def test_sink_options_default_as_wallaroos_did_and_have_no_name():
    assert wallaroo.kafka_parse_sink_options([]) == ("", "", [], "Warn", 0, 100000)


def test_sink_options_are_read_and_the_numbers_are_ints():
    args = ["--kafka_sink_topic", "t", "--kafka_sink_brokers", "h:7", "--kafka_sink_log_level"]
    args += ["Error", "--kafka_sink_max_produce_buffer_ms", "10"]
    args += ["--kafka_sink_max_message_size", "2000"]
    assert wallaroo.kafka_parse_sink_options(args) == ("", "t", [("h", "7")], "Error", 10, 2000)


def test_other_arguments_are_ignored():
    args = ["--in", "h:1", "--kafka_source_topic", "t", "extra", "--kafka_sink_topic", "u"]
    assert wallaroo.kafka_parse_source_options(args)[1] == "t"
    assert wallaroo.kafka_parse_sink_options(args)[1] == "u"


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--kafka_source_brokers", "h:x"], "--kafka_source_brokers: 'h:x' is not HOST[:PORT]"),
        (["--kafka_source_brokers", "h:1,"], "--kafka_source_brokers: '' is not HOST[:PORT]"),
        (["--kafka_source_brokers", ":1"], "--kafka_source_brokers: ':1' is not HOST[:PORT]"),
        (["--kafka_source_log_level", "Debug"], "--kafka_source_log_level: invalid choice"),
        (["--kafka_source_topic"], "--kafka_source_topic: expected one argument"),
    ],
)
def test_bad_source_options_are_refused_naming_the_option(args, complaint):
    with pytest.raises(WallarooParameterError, match=re.escape(complaint)):
        wallaroo.kafka_parse_source_options(args)


def test_a_sink_number_that_is_not_an_int_is_refused_naming_the_option():
    with pytest.raises(WallarooParameterError, match="--kafka_sink_max_message_size: invalid int"):
        wallaroo.kafka_parse_sink_options(["--kafka_sink_max_message_size", "big"])


# ------------------------------------------------------------------------------------------------
# The Default parsers: settings from the command line, when the application is described


def test_default_parsers_describe_kafka_sources_and_sinks_from_the_command_line():
    _runtime, spec = described(default_app(), KAFKA_ARGS + ["--in", "ignored:1"])
    assert spec.sources == [SourceSpec("lines", SOURCE_SPEC, 0)]
    assert spec.sinks == [SinkSpec("encode_text", SINK_SPEC)]
    assert [step.kind for step in spec.steps] == ["decoder", "stateless", "encoder"]


def test_log_levels_max_produce_buffer_and_max_message_size_become_client_properties():
    args = KAFKA_ARGS + ["--kafka_source_log_level", "Fine", "--kafka_sink_log_level", "Error"]
    args += ["--kafka_sink_max_produce_buffer_ms", "25", "--kafka_sink_max_message_size", "1000"]
    _runtime, spec = described(default_app(), args)
    assert spec.sources[0].config[3] == (("log_level", "7"),)
    assert spec.sinks[0].config[3] == (
        ("log_level", "3"),
        ("linger.ms", "25"),
        ("message.max.bytes", "1000"),
    )
    args = KAFKA_ARGS + ["--kafka_source_log_level", "Info"]
    assert described(default_app(), args)[1].sources[0].config[3] == (("log_level", "6"),)


def test_a_default_parsers_name_is_the_prefix_of_its_options():
    args = ["--temps_topic", "t", "--temps_brokers", "a:1", "--out_topic", "o"]
    args += ["--out_brokers", "b", "--out_max_message_size", "5000"]
    _runtime, spec = described(default_app(source_name="temps", sink_name="out"), args)
    assert spec.sources[0].config[:3] == ("kafka", "t", "a:1")
    assert spec.sinks[0].config[:3] == ("kafka", "o", "b:9092")
    assert spec.sinks[0].config[3][2] == ("message.max.bytes", "5000")


@pytest.mark.parametrize(
    ("drop", "complaint"),
    [
        ("--kafka_source_topic", "Kafka source 'kafka_source' needs --kafka_source_topic"),
        ("--kafka_source_brokers", "Kafka source 'kafka_source' needs --kafka_source_brokers"),
        ("--kafka_sink_topic", "Kafka sink 'kafka_sink' needs --kafka_sink_topic"),
        ("--kafka_sink_brokers", "Kafka sink 'kafka_sink' needs --kafka_sink_brokers"),
    ],
)
def test_a_missing_or_empty_topic_or_brokers_is_a_describe_error_naming_the_option(drop, complaint):
    at = KAFKA_ARGS.index(drop)
    missing = KAFKA_ARGS[:at] + KAFKA_ARGS[at + 2 :]
    empty = KAFKA_ARGS[: at + 1] + [""] + KAFKA_ARGS[at + 2 :]
    for args in (missing, empty):
        with pytest.raises(WallarooParameterError, match=re.escape(complaint)):
            TwinRuntime(default_app()).describe(args)


@pytest.mark.parametrize(
    ("option", "value", "limits"),
    [
        ("--kafka_sink_max_message_size", "999", "from 1000 to 1000000000"),
        ("--kafka_sink_max_produce_buffer_ms", "-1", "from 0 to 900000"),
    ],
)
def test_sink_numbers_outside_the_clients_limits_are_refused_naming_the_option(
    option, value, limits
):
    with pytest.raises(WallarooParameterError) as raised:
        TwinRuntime(default_app()).describe(KAFKA_ARGS + [option, value])
    assert str(raised.value) == (
        f"Kafka sink 'kafka_sink': {option} must be an int {limits} (the Kafka client's "
        f"limits), got {value}"
    )


def test_default_parsers_take_their_decoder_and_encoder_when_made():
    with pytest.raises(WallarooParameterError, match="DefaultKafkaSourceCLIParser needs a func"):
        wallaroo.DefaultKafkaSourceCLIParser(lambda bs: bs)
    with pytest.raises(WallarooParameterError, match="DefaultKafkaSinkCLIParser needs a func"):
        wallaroo.DefaultKafkaSinkCLIParser("not an encoder")
    with pytest.raises(WallarooParameterError, match="the name must be a non-empty string"):
        wallaroo.DefaultKafkaSinkCLIParser(encode_text, name="")


# ------------------------------------------------------------------------------------------------
# The Custom parsers and the configs: settings given when they are made


def test_custom_parsers_read_the_args_they_are_given():
    args = KAFKA_ARGS + ["--kafka_source_name", "readings", "--kafka_sink_max_produce_buffer_ms"]
    args.append("5")
    source = wallaroo.CustomKafkaSourceCLIParser(args, decode_text)
    assert (source.name, source.topic, source.log_level) == ("readings", "in", "Warn")
    assert source.brokers == [("k1", "9093"), ("k2", "9092")]
    sink = wallaroo.CustomKafkaSinkCLIParser(args, encode_text)
    assert (sink.topic, sink.brokers, sink.max_produce_buffer_ms) == ("out", [("k3", "9094")], 5)
    assert (sink.log_level, sink.max_message_size) == ("Warn", 100000)
    # The application's own args, not the ones describe is given, are what they read.
    module = kafka_app(
        lambda args: wallaroo.CustomKafkaSourceCLIParser(KAFKA_ARGS, decode_text),
        lambda args: wallaroo.CustomKafkaSinkCLIParser(KAFKA_ARGS, encode_text),
    )
    _runtime, spec = described(module, [])
    assert (spec.sources[0].config, spec.sinks[0].config) == (SOURCE_SPEC, SINK_SPEC)


def test_custom_parsers_refuse_missing_settings_naming_the_option():
    with pytest.raises(WallarooParameterError, match="needs --kafka_source_topic$"):
        wallaroo.CustomKafkaSourceCLIParser([], decode_text)
    with pytest.raises(WallarooParameterError, match="needs --kafka_sink_brokers"):
        wallaroo.CustomKafkaSinkCLIParser(["--kafka_sink_topic", "t"], encode_text)


def test_kafka_configs_take_wallaroos_signatures():
    old = wallaroo.KafkaSourceConfig("in", [("k1", 9093), ("k2", "9092")], "Warn", decode_text)
    named = wallaroo.KafkaSourceConfig("readings", "in", "k1:9093,k2", "Warn", decode_text)
    assert (old.name, named.name) == (None, "readings")
    assert old.brokers == named.brokers == [("k1", "9093"), ("k2", "9092")]
    sink = wallaroo.KafkaSinkConfig("out", [("k3", "9094")], "Warn", 0, 100000, encode_text)
    module = kafka_app(lambda args: named, lambda args: sink)
    _runtime, spec = described(module, [])
    assert (spec.sources[0].config, spec.sinks[0].config) == (SOURCE_SPEC, SINK_SPEC)


@pytest.mark.parametrize(
    ("make", "complaint"),
    [
        (
            lambda: wallaroo.KafkaSourceConfig("", [("h", "1")], "Warn", decode_text),
            "KafkaSourceConfig needs a topic",
        ),
        (
            lambda: wallaroo.KafkaSourceConfig("t", [], "Warn", decode_text),
            "KafkaSourceConfig needs brokers",
        ),
        (
            lambda: wallaroo.KafkaSourceConfig("t", [("h", "x")], "Warn", decode_text),
            "KafkaSourceConfig: brokers: ('h', 'x') is not a (host, port) pair",
        ),
        (
            lambda: wallaroo.KafkaSourceConfig("t", "h", "Loud", decode_text),
            "KafkaSourceConfig: log_level must be one of Fine, Info, Warn, Error, got 'Loud'",
        ),
        (
            lambda: wallaroo.KafkaSourceConfig("t", "h", decode_text),
            "KafkaSourceConfig(topic, brokers, log_level, decoder): missing a required argument",
        ),
        (
            lambda: wallaroo.KafkaSinkConfig("t", "h", "Warn", 0, 10, encode_text),
            "KafkaSinkConfig: max_message_size must be an int from 1000 to 1000000000",
        ),
        (
            lambda: wallaroo.KafkaSinkConfig("t", "h", "Warn", 1.5, 1000, encode_text),
            "KafkaSinkConfig: max_produce_buffer_ms must be an int from 0 to 900000",
        ),
    ],
)
def test_kafka_configs_refuse_bad_settings_naming_them(make, complaint):
    with pytest.raises(WallarooParameterError, match=re.escape(complaint)):
        make()


# ------------------------------------------------------------------------------------------------
# Decoders: a record's value is a whole payload


class ValueDecoder:
    def decode(self, bs):
        return bs.decode()


@wallaroo.decoder(header_length=3, length_fmt=">I")
def unframable(data):
    return data.decode()


@pytest.mark.parametrize("decoder", [decode_text, ValueDecoder, ValueDecoder(), unframable])
def test_a_kafka_decoder_gets_each_value_whole_and_its_framing_is_not_used(decoder):
    config = wallaroo.KafkaSourceConfig("in", "h", "Warn", decoder)
    sink = wallaroo.KafkaSinkConfig("out", "h", "Warn", 0, 1000, encode_text)
    runtime, spec = described(kafka_app(lambda args: config, lambda args: sink), [])
    assert spec.steps[0].name in ("decode_text", "ValueDecoder", "unframable")
    out = runtime.process(0, [(b"", b"\x00\x00\x00\x02hi")])
    assert out == [("emit", 0, _wire.kafka_record("\x00\x00\x00\x02HI", "e"))]


# ------------------------------------------------------------------------------------------------
# Encoders: what they return becomes a record


@wallaroo.encoder
def encode_shapes(text):
    shapes = {
        "VALUE": b"value",
        "STR": "\u00e9t\u00e9",
        "PAIR": ("value", "key"),
        "NO KEY": ("value", None),
        "TRIPLE": (b"value", b"key", 3),
        "CELSIUS": (f"{1.5:.6f}", None, None),
        "FOUR": ("v", "k", 1, 2),
        "MINUS": ("v", "k", -1),
        "FLOAT": ("v", "k", 1.0),
        "KEY": ("v", 7),
        "NONE": (None, "k"),
    }
    return shapes[text]


@pytest.mark.parametrize(
    ("text", "record"),
    [
        ("value", b"\xff\xff\xff\xff\xff\xff\xff\xffvalue"),
        ("str", b"\xff\xff\xff\xff\xff\xff\xff\xff" + "\u00e9t\u00e9".encode()),
        ("pair", b"\x03\x00\x00\x00key\xff\xff\xff\xffvalue"),
        ("no key", b"\xff\xff\xff\xff\xff\xff\xff\xffvalue"),
        ("triple", b"\x03\x00\x00\x00key\x03\x00\x00\x00value"),
        ("celsius", b"\xff\xff\xff\xff\xff\xff\xff\xff1.500000"),
    ],
)
def test_what_a_kafka_encoder_returns_becomes_the_record_layout(text, record):
    runtime, _spec = described(default_app(encode_shapes), KAFKA_ARGS)
    assert runtime.process(0, [(b"", text.encode())]) == [("emit", 0, record)]


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("four", "TypeError: encoder 'encode_shapes' returned a tuple of 4 items; a Kafka sink"),
        ("minus", "ValueError: encoder 'encode_shapes' returned the partition -1, expected None"),
        ("float", "TypeError: encoder 'encode_shapes' returned the partition 1.0, expected"),
        ("key", "TypeError: encoder 'encode_shapes' returned a key of type int, expected bytes"),
        ("none", "TypeError: encoder 'encode_shapes' returned a value of type NoneType"),
    ],
)
def test_a_wrong_shape_fails_the_message_at_the_encoder_naming_what_was_wrong(text, complaint):
    runtime, _spec = described(default_app(encode_shapes), KAFKA_ARGS)
    ok, (tag, index, step, key, error) = runtime.process(0, [(b"", b"value"), (b"", text.encode())])
    assert ok[0] == "emit"
    assert (tag, index, step, key) == ("failed", 1, 2, None)
    assert error.startswith(complaint)
    assert re.search(r"\(test_kafka\.py:\d+ in encode_shapes\)$", error)


def test_an_encoders_own_exception_is_reported_as_for_any_sink():
    runtime, _spec = described(default_app(encode_shapes), KAFKA_ARGS)
    [(_tag, _index, step, _key, error)] = runtime.process(0, [(b"", b"unknown")])
    assert step == 2
    assert error.startswith("KeyError: 'UNKNOWN' (test_kafka.py:")


@wallaroo.state_computation(name="count", state=WordTotal)
def count(word, total):
    total.count += 1
    return (word, total.count)


@wallaroo.key_extractor
def itself(word):
    return word


@wallaroo.encoder
def encode_count(pair):
    word, n = pair
    if n > 2:
        return (f"{word} {n}", word, -1)
    return (f"{word} {n}", word)


def test_an_encoder_right_after_a_state_step_makes_records_too():
    # The component runs such an encoder inside the state step's loop.
    def setup(args):
        source = wallaroo.source("words", wallaroo.DefaultKafkaSourceCLIParser(decode_text))
        sink = wallaroo.DefaultKafkaSinkCLIParser(encode_count)
        pipeline = source.key_by(itself).to(count).to_sink(sink)
        return wallaroo.build_application("counts", pipeline)

    runtime, _spec = described(app_module(setup), KAFKA_ARGS)
    [route] = runtime.process(0, [(b"", b"a")])
    out = runtime.process(route[2], [(b"a", route[3])] * 3)
    assert out[:2] == [
        ("emit", 0, b"\x01\x00\x00\x00a\xff\xff\xff\xffa 1"),
        ("emit", 0, b"\x01\x00\x00\x00a\xff\xff\xff\xffa 2"),
    ]
    assert out[2][:4] == ("failed", 2, 3, b"a")
    assert "returned the partition -1" in out[2][4]
    states = {key: pickle.loads(value).count for _, key, value in runtime.snapshot_changed()}
    assert states == {b"a": 3}


def test_kafka_and_tcp_sinks_mix():
    def setup(args):
        source = wallaroo.source("in", wallaroo.TCPSourceConfig("h", "1", decode_text))
        sinks = [
            wallaroo.TCPSinkConfig("h", "2", encode_text),
            wallaroo.DefaultKafkaSinkCLIParser(encode_text),
        ]
        return wallaroo.build_application("mixed", source.to_sinks(sinks))

    runtime, spec = described(app_module(setup), KAFKA_ARGS)
    assert [sink.config[0] for sink in spec.sinks] == ["tcp", "kafka"]
    assert runtime.process(0, [(b"", b"x")]) == [
        ("emit", 0, b"x"),
        ("emit", 1, b"\xff\xff\xff\xff\xff\xff\xff\xffx"),
    ]


# ------------------------------------------------------------------------------------------------
# Wallaroo 0.2-0.5: ApplicationBuilder pipelines from and to Kafka


def test_an_application_builder_pipeline_reads_and_writes_kafka():
    def setup(args):
        ab = wallaroo.ApplicationBuilder("Celsius to Fahrenheit with Kafka")
        ab.new_pipeline("convert", wallaroo.DefaultKafkaSourceCLIParser(decode_text))
        ab.to(upper)
        ab.to_sink(wallaroo.DefaultKafkaSinkCLIParser(encode_text))
        return ab.build()

    runtime, spec = described(app_module(setup), KAFKA_ARGS)
    assert (spec.sources[0].config, spec.sinks[0].config) == (SOURCE_SPEC, SINK_SPEC)
    assert runtime.process(0, [(b"", b"x")]) == [("emit", 0, b"\xff" * 8 + b"X")]


# ------------------------------------------------------------------------------------------------
# The test applications (tests/apps), as the end-to-end tests build them


def load_app(path):
    spec = importlib.util.spec_from_file_location(f"kafka_app_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_celsius_kafka_converts_each_value_into_a_record_without_key():
    run = LocalRun(load_app(EXAMPLES / "celsius_kafka" / "celsius.py"), KAFKA_ARGS)
    assert run.spec.sources[0].config == SOURCE_SPEC
    assert run.spec.sinks[0].config == SINK_SPEC
    run.feed("convert", [b"100", b"-40", b"36.6", b"not a number"])
    assert not run.failures
    records = [_wire.decode_kafka_record(payload) for payload in run.outputs[0]]
    assert records == [
        (b"212.000000", None, None),
        (b"-40.000000", None, None),
        (b"97.880000", None, None),
        (b"32.000000", None, None),
    ]


def test_kafka_word_count_keys_each_count_by_its_word():
    run = LocalRun(load_app(APPS / "kafka_word_count" / "word_count.py"), KAFKA_ARGS)
    assert [step.kind for step in run.spec.steps] == [
        "decoder",
        "stateless",
        "key-by",
        "stateful",
        "encoder",
    ]
    run.feed("lines", [b"The cat, the hat.", "  \u00e9t\u00e9 the END ".encode()])
    assert not run.failures
    records = [_wire.decode_kafka_record(payload) for payload in run.outputs[0]]
    assert records == [
        (value.encode(), value.split()[0].encode(), None)
        for value in ("the 1", "cat 1", "the 2", "hat 1", "\u00e9t\u00e9 1", "the 3", "end 1")
    ]
