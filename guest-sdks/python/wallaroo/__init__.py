"""Wallaroo's Python API (0.6), for applications compiled to Wallaroo-RS components.

An application module defines ``application_setup(args)``, which builds a pipeline with
``source(...).to(...).key_by(...).to(...).to_sink(...)`` and returns
``build_application(name, pipeline)``. Steps are plain functions wrapped by the decorators
below. Applications written for the original Wallaroo 0.6 run unchanged.
"""

import argparse
import inspect
import pickle

__all__ = [
    "GenSourceConfig",
    "Pipeline",
    "TCPSinkConfig",
    "TCPSourceConfig",
    "WallarooParameterError",
    "build_application",
    "computation",
    "computation_multi",
    "decoder",
    "deserialize",
    "encoder",
    "hours",
    "key_extractor",
    "microseconds",
    "milliseconds",
    "minutes",
    "nanoseconds",
    "seconds",
    "serialize",
    "source",
    "state_computation",
    "state_computation_multi",
    "tcp_parse_input_addrs",
    "tcp_parse_output_addrs",
]


class WallarooParameterError(Exception):
    """The API was used in a way that cannot work (wrong arity, unclosed pipeline, ...)."""


def serialize(obj):
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def deserialize(data):
    return pickle.loads(data)


# ---------------------------------------------------------------------------------------------
# Steps


class Step:
    """A user function wrapped by one of the decorators, with what the engine needs to know."""

    def __init__(self, kind, name, fn, multi=False, state_class=None):
        self.kind = kind
        self.name = name
        self.fn = fn
        self.multi = multi
        self.state_class = state_class

    def __call__(self, *args):
        return self.fn(*args)

    def __repr__(self):
        return f"<wallaroo {self.kind} {self.name!r}>"


class Decoder(Step):
    def __init__(self, fn, header_length, length_fmt):
        super().__init__("decoder", fn.__name__, fn)
        self.header_length = header_length
        self.length_fmt = length_fmt


def _check_arity(what, name, fn, arity):
    if not callable(fn):
        raise WallarooParameterError(f"{what} {name!r} must be a function, got {fn!r}")
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    if len(required) <= arity and (varargs or arity <= len(positional)):
        return
    noun = "parameter" if arity == 1 else "parameters"
    raise WallarooParameterError(
        f"{what} {name!r} must take {arity} {noun}, it takes {len(positional)}"
    )


def computation(name):
    def wrap(fn):
        _check_arity("computation", name, fn, 1)
        return Step("stateless", name, fn)

    return wrap


def computation_multi(name):
    def wrap(fn):
        _check_arity("computation_multi", name, fn, 1)
        return Step("stateless", name, fn, multi=True)

    return wrap


def state_computation(name, state):
    def wrap(fn):
        _check_arity("state_computation", name, fn, 2)
        return Step("stateful", name, fn, state_class=state)

    return wrap


def state_computation_multi(name, state):
    def wrap(fn):
        _check_arity("state_computation_multi", name, fn, 2)
        return Step("stateful", name, fn, multi=True, state_class=state)

    return wrap


def key_extractor(fn):
    _check_arity("key_extractor", getattr(fn, "__name__", repr(fn)), fn, 1)
    return Step("key-by", fn.__name__, fn)


def decoder(header_length, length_fmt):
    def wrap(fn):
        _check_arity("decoder", getattr(fn, "__name__", repr(fn)), fn, 1)
        return Decoder(fn, header_length, length_fmt)

    return wrap


def encoder(fn):
    _check_arity("encoder", getattr(fn, "__name__", repr(fn)), fn, 1)
    return Step("encoder", fn.__name__, fn)


# ---------------------------------------------------------------------------------------------
# Sources and sinks


class TCPSourceConfig:
    """A framed TCP source the node listens on.

    Both signatures Wallaroo had are accepted: ``TCPSourceConfig(host, port, decoder)`` (0.6)
    and ``TCPSourceConfig(name, host, port, decoder, ...)`` (later releases).
    """

    def __init__(self, *args, **kwargs):
        if len(args) >= 3 and isinstance(args[2], Decoder):
            self.name = None
            self.host, self.port, self.decoder = args[:3]
        elif len(args) >= 4:
            self.name, self.host, self.port, self.decoder = args[:4]
        else:
            host = kwargs.get("host", args[0] if args else None)
            port = kwargs.get("port", args[1] if len(args) > 1 else None)
            self.name = kwargs.get("name")
            self.host, self.port = host, port
            self.decoder = kwargs.get("decoder")
        if not isinstance(self.decoder, Decoder):
            raise WallarooParameterError(
                f"TCPSourceConfig needs a function decorated with @wallaroo.decoder, "
                f"got {self.decoder!r}"
            )
        self.host, self.port = str(self.host), str(self.port)


class GenSourceConfig:
    """A source inside the application: ``initial_value()`` gives the first message and
    ``apply(previous)`` each next one; None from either ends it."""

    def __init__(self, gen_instance):
        self.generator = gen_instance


class TCPSinkConfig:
    """A TCP sink: the node connects to host:port and writes the encoder's bytes as they are."""

    def __init__(self, host, port, encoder):
        if not isinstance(encoder, Step) or encoder.kind != "encoder":
            raise WallarooParameterError(
                f"TCPSinkConfig needs a function decorated with @wallaroo.encoder, got {encoder!r}"
            )
        self.host, self.port, self.encoder = str(host), str(port), encoder


# ---------------------------------------------------------------------------------------------
# Pipelines


class _Node:
    """One branch of a pipeline: its stages, fed by its children's flows (after a merge) or by
    its own source stage."""

    __slots__ = ("stages", "children")

    def __init__(self, stages, children=()):
        self.stages = tuple(stages)
        self.children = tuple(children)


class Pipeline:
    """An immutable pipeline: every method returns a new one."""

    def __init__(self, node, closed=False):
        self._node = node
        self._closed = closed

    def _add(self, stage, closes=False):
        if self._closed:
            raise WallarooParameterError("nothing can follow to_sink/to_sinks in a pipeline")
        node = _Node(self._node.stages + (stage,), self._node.children)
        return Pipeline(node, closes)

    def to(self, step):
        if not isinstance(step, Step) or step.kind not in ("stateless", "stateful"):
            raise WallarooParameterError(
                f".to() takes a @computation or @state_computation, got {step!r}"
            )
        return self._add(("step", step))

    def key_by(self, extractor):
        if not isinstance(extractor, Step) or extractor.kind != "key-by":
            raise WallarooParameterError(
                f".key_by() takes a @key_extractor function, got {extractor!r}"
            )
        return self._add(("key_by", extractor))

    def to_sink(self, sink_config):
        return self.to_sinks([sink_config])

    def to_sinks(self, sink_configs):
        configs = list(sink_configs)
        if not configs or not all(isinstance(c, TCPSinkConfig) for c in configs):
            raise WallarooParameterError(f"to_sink/to_sinks take TCPSinkConfig, got {configs!r}")
        return self._add(("sinks", tuple(configs)), closes=True)

    def merge(self, other):
        if self._closed or other._closed:
            raise WallarooParameterError("a pipeline ending in a sink cannot be merged")
        return Pipeline(_Node((), (self._node, other._node)))


def source(name, source_config):
    if not isinstance(source_config, (TCPSourceConfig, GenSourceConfig)):
        raise WallarooParameterError(
            f"source {name!r} needs a TCPSourceConfig or GenSourceConfig, got {source_config!r}"
        )
    return Pipeline(_Node((("source", name, source_config),)))


class Application:
    def __init__(self, name, pipeline):
        self.name = name
        self.pipeline = pipeline


def build_application(app_name, pipeline):
    if not isinstance(pipeline, Pipeline):
        raise WallarooParameterError(f"build_application needs a pipeline, got {pipeline!r}")
    if not pipeline._closed:
        raise WallarooParameterError(
            f"application {app_name!r}: a pipeline must end with to_sink or to_sinks"
        )
    return Application(app_name, pipeline)


# ---------------------------------------------------------------------------------------------
# Command line


def _addresses(args, short, long, with_names):
    parser = argparse.ArgumentParser(prog="wallaroo", add_help=False)
    parser.add_argument(short, long, dest="addrs")
    value = parser.parse_known_args(list(args))[0].addrs
    if not value:
        raise WallarooParameterError(f"{long} HOST:PORT is missing from the arguments")
    result = []
    for entry in value.split(","):
        name, at, address = entry.rpartition("@")
        host, _, port = address.rpartition(":")
        if not host or not port:
            raise WallarooParameterError(f"{long}: {entry!r} is not HOST:PORT")
        result.append((name, host, port) if with_names and at else (host, port))
    return result


def tcp_parse_input_addrs(args):
    """``--in`` as a list: ``(host, port)`` per entry, or ``(name, host, port)`` for
    ``NAME@HOST:PORT`` entries."""
    return _addresses(args, "-i", "--in", with_names=True)


def tcp_parse_output_addrs(args):
    """``--out`` as a list of ``(host, port)``."""
    return _addresses(args, "-o", "--out", with_names=False)


# ---------------------------------------------------------------------------------------------
# Time units (nanoseconds), kept for Wallaroo compatibility.


def nanoseconds(x):
    return x


def microseconds(x):
    return x * 1000


def milliseconds(x):
    return x * 1_000_000


def seconds(x):
    return x * 1_000_000_000


def minutes(x):
    return seconds(x) * 60


def hours(x):
    return minutes(x) * 60
