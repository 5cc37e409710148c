"""The public API behaves as Wallaroo 0.6's."""

import apps
import pytest
import wallaroo


def test_arity_errors_name_the_function():
    with pytest.raises(wallaroo.WallarooParameterError, match="computation 'split' must take 1"):

        @wallaroo.computation(name="split")
        def two(a, b):
            return a

    with pytest.raises(wallaroo.WallarooParameterError, match="'adder' must take 2 parameters"):

        @wallaroo.state_computation(name="adder", state=dict)
        def one(a):
            return a

    with pytest.raises(wallaroo.WallarooParameterError, match="key_extractor 'k'"):

        @wallaroo.key_extractor
        def k():
            return 1


def test_defaults_may_fill_parameters():
    @wallaroo.computation(name="ok")
    def f(a, b=1):
        return a + b

    assert f(1) == 2


def test_input_addresses_with_and_without_names():
    assert wallaroo.tcp_parse_input_addrs(["--in", "127.0.0.1:7010"]) == [("127.0.0.1", "7010")]
    assert wallaroo.tcp_parse_input_addrs(["x", "--in", "A@h:1,B@g:2"]) == [
        ("A", "h", "1"),
        ("B", "g", "2"),
    ]
    assert wallaroo.tcp_parse_output_addrs(["-o", "h:1,g:2", "--other"]) == [("h", "1"), ("g", "2")]
    with pytest.raises(wallaroo.WallarooParameterError, match="--out"):
        wallaroo.tcp_parse_output_addrs(["--in", "h:1"])


def test_source_config_takes_both_signatures():
    old = wallaroo.TCPSourceConfig("h", 7010, apps.text)
    new = wallaroo.TCPSourceConfig("name", "h", "7010", apps.text)
    assert (old.host, old.port, old.decoder) == ("h", "7010", apps.text)
    assert (new.name, new.host, new.port) == ("name", "h", "7010")
    with pytest.raises(wallaroo.WallarooParameterError, match="decoder"):
        wallaroo.TCPSourceConfig("h", 1, apps.pair)


def test_pipelines_are_immutable_and_must_be_closed():
    src = wallaroo.source("s", wallaroo.TCPSourceConfig("h", 1, apps.text))
    longer = src.to(apps.split)
    assert src._node.stages != longer._node.stages
    with pytest.raises(wallaroo.WallarooParameterError, match="must end with to_sink"):
        wallaroo.build_application("open", longer)
    closed = longer.to_sink(apps.sink())
    with pytest.raises(wallaroo.WallarooParameterError, match="nothing can follow"):
        closed.to(apps.split)


def test_wrong_things_in_the_wrong_place_are_named():
    src = wallaroo.source("s", wallaroo.TCPSourceConfig("h", 1, apps.text))
    with pytest.raises(wallaroo.WallarooParameterError, match="key_extractor"):
        src.key_by(apps.split)
    with pytest.raises(wallaroo.WallarooParameterError, match="computation"):
        src.to(apps.itself)


def test_time_units_are_nanoseconds():
    assert wallaroo.seconds(2) == 2_000_000_000
    assert wallaroo.minutes(1) == wallaroo.seconds(60)
    assert wallaroo.deserialize(wallaroo.serialize({"a": 1})) == {"a": 1}
