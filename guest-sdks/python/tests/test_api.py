"""The public API: what Wallaroo 0.6 applications call while they set up."""

import pickle

import pytest

import wallaroo
from wallaroo import WallarooParameterError


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(data):
    return data


@wallaroo.encoder
def encode(data):
    return data


@wallaroo.computation(name="identity")
def identity(data):
    return data


@wallaroo.state_computation(name="remember", state=dict)
def remember(data, state):
    state["last"] = data
    return data


@wallaroo.key_extractor
def first_char(data):
    return data[:1]


# ------------------------------------------------------------------------------------------------
# Decorators


def one_parameter(a):
    return a


def two_parameters(a, b):
    return a


def defaults_beyond(a, b=1, *, c=2):
    return a


@pytest.mark.parametrize(
    ("decorate", "kind"),
    [
        (wallaroo.computation("c"), "computation"),
        (wallaroo.computation_multi("c"), "computation_multi"),
        (wallaroo.key_extractor, "key_extractor"),
        (wallaroo.decoder(4, ">I"), "decoder"),
        (wallaroo.encoder, "encoder"),
    ],
)
def test_one_parameter_steps_check_their_arity(decorate, kind):
    decorate(one_parameter)
    decorate(defaults_beyond)
    with pytest.raises(WallarooParameterError) as raised:
        decorate(two_parameters)
    line = two_parameters.__code__.co_firstlineno
    assert str(raised.value) == (
        f"{kind} 'two_parameters' (test_api.py:{line}): must take 1 parameter, it takes 2"
    )


@pytest.mark.parametrize(
    ("decorate", "kind"),
    [
        (wallaroo.state_computation("s", dict), "state_computation"),
        (wallaroo.state_computation_multi("s", dict), "state_computation_multi"),
    ],
)
def test_state_steps_take_data_and_state(decorate, kind):
    decorate(two_parameters)
    with pytest.raises(WallarooParameterError) as raised:
        decorate(one_parameter)
    line = one_parameter.__code__.co_firstlineno
    assert str(raised.value) == (
        f"{kind} 'one_parameter' (test_api.py:{line}): must take 2 parameters, it takes 1"
    )


def test_decorating_a_non_callable_fails():
    with pytest.raises(WallarooParameterError, match="computation must decorate a function"):
        wallaroo.computation("c")(42)
    with pytest.raises(WallarooParameterError, match="encoder must decorate a function"):
        wallaroo.encoder("text")


def test_a_bare_named_decorator_is_reported():
    with pytest.raises(WallarooParameterError, match=r"use @computation\(name=...\)"):
        wallaroo.computation(one_parameter)


def test_state_must_be_callable():
    with pytest.raises(WallarooParameterError, match="state must be a class"):
        wallaroo.state_computation("s", state=42)(two_parameters)


def test_decorated_steps_keep_their_function_and_name():
    assert identity.fn.__name__ == "identity"
    assert (identity.name, identity.kind, identity.multi) == ("identity", "computation", False)
    assert remember.state_class is dict
    assert (first_char.name, first_char.kind) == ("first_char", "key_extractor")
    assert (decode.header_length, decode.length_fmt) == (4, ">I")
    assert identity("x") == "x"  # still callable, for the application's own tests


def test_decorated_steps_pickle_by_reference():
    for step in (identity, remember, first_char, decode, encode):
        assert pickle.loads(pickle.dumps(step)) is step


# ------------------------------------------------------------------------------------------------
# Sources and sinks


def test_tcp_source_config_takes_the_0_6_signature():
    config = wallaroo.TCPSourceConfig("localhost", "7000", decode)
    assert (config.name, config.host, config.port, config.decoder) == (
        None,
        "localhost",
        "7000",
        decode,
    )
    config = wallaroo.TCPSourceConfig("localhost", "7000", decode, parallelism=4)
    assert config.decoder is decode


def test_tcp_source_config_takes_the_named_signature():
    config = wallaroo.TCPSourceConfig("in", "localhost", "7000", decode, valid=None, extra=1)
    assert (config.name, config.host, config.port, config.decoder) == (
        "in",
        "localhost",
        "7000",
        decode,
    )
    config = wallaroo.TCPSourceConfig(name="in", host="h", port="1", decoder=decode)
    assert config.name == "in"


def test_tcp_source_config_needs_a_decoder():
    with pytest.raises(WallarooParameterError, match="@decoder"):
        wallaroo.TCPSourceConfig("localhost", "7000", one_parameter)
    with pytest.raises(WallarooParameterError, match="missing a required argument"):
        wallaroo.TCPSourceConfig("localhost", "7000")


def test_sink_and_generator_configs_check_their_arguments():
    with pytest.raises(WallarooParameterError, match="@encoder"):
        wallaroo.TCPSinkConfig("h", "1", one_parameter)
    with pytest.raises(WallarooParameterError, match="no initial_value"):
        wallaroo.GenSourceConfig(object())


# ------------------------------------------------------------------------------------------------
# Pipelines


def new_source():
    return wallaroo.source("in", wallaroo.TCPSourceConfig("h", "1", decode))


SINK = wallaroo.TCPSinkConfig("h", "2", encode)


def test_pipelines_are_immutable():
    start = new_source()
    longer = start.to(identity)
    assert longer is not start
    assert start._stage is not longer._stage and longer._parents == (start,)
    closed = start.to_sink(SINK)
    start.key_by(first_char)  # the source is still open after to_sink returned a new pipeline
    assert closed._parents == (start,)


def test_a_closed_pipeline_takes_no_more_stages():
    closed = new_source().to_sinks([SINK, SINK])
    for extend in (
        lambda: closed.to(identity),
        lambda: closed.key_by(first_char),
        lambda: closed.to_sink(SINK),
        lambda: closed.merge(new_source()),
        lambda: new_source().merge(closed),
    ):
        with pytest.raises(WallarooParameterError, match="to_sink"):
            extend()


def test_stages_must_be_decorated():
    with pytest.raises(WallarooParameterError, match="@computation"):
        new_source().to(one_parameter)
    with pytest.raises(WallarooParameterError, match="@key_extractor"):
        new_source().key_by(one_parameter)
    with pytest.raises(WallarooParameterError, match="at least one sink"):
        new_source().to_sinks([])


def test_build_application_needs_a_closed_pipeline():
    with pytest.raises(WallarooParameterError, match="must end with to_sink/to_sinks"):
        wallaroo.build_application("open", new_source().to(identity))
    app = wallaroo.build_application("closed", new_source().to_sink(SINK))
    assert app.name == "closed"


# ------------------------------------------------------------------------------------------------
# Command line and helpers


def test_input_addresses_in_both_forms():
    args = ["prog", "--name", "x", "-i", "localhost:7000,in2@10.0.0.1:7001", "-o", "h:1"]
    assert wallaroo.tcp_parse_input_addrs(args) == [
        ("localhost", "7000"),
        ("in2", "10.0.0.1", "7001"),
    ]
    assert wallaroo.tcp_parse_input_addrs(["--in", "a@h:1"]) == [("a", "h", "1")]


def test_output_addresses():
    assert wallaroo.tcp_parse_output_addrs(["--out", "h:1,k:2", "-i", "x:3"]) == [
        ("h", "1"),
        ("k", "2"),
    ]


def test_missing_or_malformed_addresses_name_the_flag():
    with pytest.raises(WallarooParameterError, match="-i/--in"):
        wallaroo.tcp_parse_input_addrs(["-o", "h:1"])
    with pytest.raises(WallarooParameterError, match="-o/--out"):
        wallaroo.tcp_parse_output_addrs(["-i", "h:1"])
    with pytest.raises(WallarooParameterError, match="--in: 'nohost' is not"):
        wallaroo.tcp_parse_input_addrs(["-i", "nohost"])
    with pytest.raises(WallarooParameterError, match="expected one argument"):
        wallaroo.tcp_parse_input_addrs(["-i"])


def test_time_units_are_integer_nanoseconds():
    assert wallaroo.nanoseconds(5) == 5
    assert wallaroo.microseconds(2) == 2_000
    assert wallaroo.milliseconds(1.5) == 1_500_000
    assert wallaroo.seconds(0.3) == 300_000_000
    assert wallaroo.minutes(1) == 60 * 10**9
    assert wallaroo.hours(1) == 3600 * 10**9
    assert isinstance(wallaroo.seconds(0.3), int)


def test_serialize_round_trips():
    assert wallaroo.deserialize(wallaroo.serialize({"a": [1, 2]})) == {"a": [1, 2]}
