"""The Wallaroo 0.6 Python API, for applications that Wallaroo-RS runs as WebAssembly components.

An application module defines ``application_setup(args)``: it builds a pipeline with
``source(...)``, ``.to(...)``, ``.key_by(...)``, ``.merge(...)`` and ``.to_sink(...)``, and
returns ``build_application(name, pipeline)``. The steps are plain functions marked with the
decorators below. The names and signatures match Wallaroo 0.6, so applications written for it
run unchanged; the engine side lives in ``wallaroo._runtime``.
"""

import argparse
import functools
import inspect
import pickle

__all__ = [
    "GenSourceConfig",
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
    """The application uses the API in a way that cannot run (raised while it is set up)."""


def serialize(obj):
    """Pickles ``obj``; kept because Wallaroo applications call it for their own data."""
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def deserialize(data):
    """Unpickles what ``serialize`` produced."""
    return pickle.loads(data)


# Time units, as integer nanoseconds, for applications that use Wallaroo's helpers.


def nanoseconds(n):
    return round(n)


def microseconds(n):
    return round(n * 1_000)


def milliseconds(n):
    return round(n * 1_000_000)


def seconds(n):
    return round(n * 1_000_000_000)


def minutes(n):
    return seconds(n * 60)


def hours(n):
    return seconds(n * 3600)


# ------------------------------------------------------------------------------------------------
# Decorated functions


class UserFunction:
    """A user function marked by one of the decorators.

    Its arity is checked when the decorator runs, so a mistake shows up while the application
    is set up (or built) rather than on the first message. The object takes the function's
    place in the module, under the function's name, and pickles by that name.
    """

    def __init__(self, kind, fn, name, arity):
        _check_arity(kind, fn, arity)
        functools.update_wrapper(self, fn)
        self.kind = kind
        self.fn = fn
        self.name = name

    def __call__(self, *args, **kwargs):
        """Calls the function itself, so applications can unit-test their steps directly."""
        return self.fn(*args, **kwargs)

    def __reduce__(self):
        # The decorated object replaced the function in its module, so pickling the function
        # by reference would find this object instead: pickle this object by reference.
        return self.__qualname__

    def __repr__(self):
        return f"<wallaroo {self.kind} {self.name!r}>"


class Computation(UserFunction):
    """A stateless step: ``fn(data)`` returns the output, a list of outputs (multi) or None."""

    def __init__(self, fn, name, multi):
        super().__init__("computation_multi" if multi else "computation", fn, name, 1)
        self.multi = multi


class StateComputation(UserFunction):
    """A stateful step: ``fn(data, state)``, with one ``state_class()`` per key."""

    def __init__(self, fn, name, state_class, multi):
        kind = "state_computation_multi" if multi else "state_computation"
        super().__init__(kind, fn, name, 2)
        if not callable(state_class):
            raise WallarooParameterError(
                f"{kind} {name!r}: state must be a class, got {type(state_class).__name__}"
            )
        self.state_class = state_class
        self.multi = multi


class KeyExtractor(UserFunction):
    """Returns the routing key (str, bytes or int) of a message."""

    def __init__(self, fn):
        super().__init__("key_extractor", fn, _function_name(fn), 1)


class Decoder(UserFunction):
    """Turns a frame's payload into a message; ``length_fmt`` describes the frame header."""

    def __init__(self, fn, header_length, length_fmt):
        super().__init__("decoder", fn, _function_name(fn), 1)
        self.header_length = header_length
        self.length_fmt = length_fmt


class Encoder(UserFunction):
    """Turns a message into the bytes a sink writes."""

    def __init__(self, fn):
        super().__init__("encoder", fn, _function_name(fn), 1)


def computation(name):
    """Marks ``fn(data)`` as a stateless step whose result (None: nothing) goes downstream."""
    _check_name("computation", name)
    return lambda fn: Computation(fn, name, multi=False)


def computation_multi(name):
    """Like ``computation``, but ``fn`` returns a list whose items go downstream one by one."""
    _check_name("computation_multi", name)
    return lambda fn: Computation(fn, name, multi=True)


def state_computation(name, state):
    """Marks ``fn(data, state)`` as a stateful step; ``state`` is the class of per-key state."""
    _check_name("state_computation", name)
    return lambda fn: StateComputation(fn, name, state, multi=False)


def state_computation_multi(name, state):
    """Like ``state_computation``, but ``fn`` returns a list of outputs."""
    _check_name("state_computation_multi", name)
    return lambda fn: StateComputation(fn, name, state, multi=True)


def key_extractor(fn):
    """Marks ``fn(data)`` as the function ``key_by`` partitions messages with."""
    return KeyExtractor(fn)


def decoder(header_length, length_fmt):
    """Marks ``fn(payload_bytes)`` as a TCP source's decoder.

    Frames are ``header_length`` bytes of header that start with the payload's length packed
    as ``struct`` format ``length_fmt``, then the payload. The host does the framing; the
    format is checked when the application is described.
    """
    return lambda fn: Decoder(fn, header_length, length_fmt)


def encoder(fn):
    """Marks ``fn(data)`` as a TCP sink's encoder; it must return bytes."""
    return Encoder(fn)


def _check_name(kind, name):
    # A decorator used bare (@computation instead of @computation(name=...)) receives the
    # function as its name; without this check the mistake would surface much later.
    if not isinstance(name, str):
        raise WallarooParameterError(f"{kind} needs a name: use @{kind}(name=...)")


def _function_name(fn):
    return getattr(fn, "__name__", type(fn).__name__)


def _check_arity(kind, fn, arity):
    if not callable(fn):
        raise WallarooParameterError(f"{kind} must decorate a function, not {type(fn).__name__}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # some builtins have no signature; nothing to check against
    try:
        signature.bind(*range(arity))
    except TypeError:
        required = sum(
            1
            for p in signature.parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )
        plural = "" if arity == 1 else "s"
        raise WallarooParameterError(
            f"{kind} {_function_name(fn)!r} must take {arity} parameter{plural}, "
            f"it takes {required}"
        ) from None


# ------------------------------------------------------------------------------------------------
# Sources and sinks

_TCP_SOURCE_06 = inspect.Signature(
    [
        inspect.Parameter("host", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("port", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("decoder", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("parallelism", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=10),
    ]
)
_TCP_SOURCE_NAMED = inspect.Signature(
    [
        inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("host", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("port", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("decoder", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("options", inspect.Parameter.VAR_KEYWORD),
    ]
)


class TCPSourceConfig:
    """A source of length-framed messages that the host receives over TCP.

    Accepts Wallaroo 0.6's ``TCPSourceConfig(host, port, decoder, parallelism=10)`` and the
    later ``TCPSourceConfig(name, host, port, decoder, **options)``; the third positional
    argument being a decoder tells them apart. Parallelism and the later options are the host's
    business and are ignored here.
    """

    def __init__(self, *args, **kwargs):
        if len(args) >= 3:
            # A port is never callable: an undecorated function here is a 0.6-style mistake.
            named = not isinstance(args[2], Decoder) and not callable(args[2])
        else:
            named = "name" in kwargs
        form = _TCP_SOURCE_NAMED if named else _TCP_SOURCE_06
        try:
            bound = form.bind(*args, **kwargs).arguments
        except TypeError as error:
            raise WallarooParameterError(f"TCPSourceConfig{form}: {error}") from None
        self.name = bound.get("name")
        self.host = bound["host"]
        self.port = bound["port"]
        self.decoder = bound["decoder"]
        if not isinstance(self.decoder, Decoder):
            raise WallarooParameterError(
                "TCPSourceConfig needs a function decorated with @decoder(...), "
                f"got {self.decoder!r}"
            )


class GenSourceConfig:
    """A source inside the guest: ``initial_value()`` and then ``apply(previous)`` produce the
    messages, until either returns None."""

    def __init__(self, gen_instance):
        for method in ("initial_value", "apply"):
            if not callable(getattr(gen_instance, method, None)):
                raise WallarooParameterError(
                    f"GenSourceConfig: {type(gen_instance).__name__} has no {method}() method"
                )
        self.generator = gen_instance


class TCPSinkConfig:
    """A sink the host connects to over TCP and writes the encoder's bytes to."""

    def __init__(self, host, port, encoder):
        if not isinstance(encoder, Encoder):
            raise WallarooParameterError(
                f"TCPSinkConfig needs a function decorated with @encoder, got {encoder!r}"
            )
        self.host = host
        self.port = port
        self.encoder = encoder


# ------------------------------------------------------------------------------------------------
# Pipelines


class SourceStage:
    """The start of a pipeline: a named source."""

    def __init__(self, name, config):
        self.name = name
        self.config = config


class SinkStage:
    """The end of a pipeline: one or more sinks, each receiving every message."""

    def __init__(self, configs):
        self.configs = configs


class Pipeline:
    """A flow of messages under construction.

    Every method returns a new pipeline and leaves the receiver as it was, so a pipeline can be
    extended in several ways. Internally a pipeline is the last stage plus the pipelines that
    feed it (two after ``merge``, none for a source); ``wallaroo._runtime`` walks this graph.
    """

    def __init__(self, parents, stage, closed=False):
        self._parents = parents
        self._stage = stage
        self._closed = closed

    def to(self, step):
        """Appends a ``@computation``/``@state_computation`` (or ``_multi``) step."""
        if not isinstance(step, (Computation, StateComputation)):
            raise WallarooParameterError(
                "to() takes a function decorated with @computation, @computation_multi, "
                f"@state_computation or @state_computation_multi, got {step!r}"
            )
        return self._then(step, "to")

    def key_by(self, extractor):
        """Partitions the flow by the key ``extractor`` returns; keyed state follows the key."""
        if not isinstance(extractor, KeyExtractor):
            raise WallarooParameterError(
                f"key_by() takes a function decorated with @key_extractor, got {extractor!r}"
            )
        return self._then(extractor, "key_by")

    def merge(self, other):
        """Joins ``other``'s flow into this one: later stages receive both."""
        if not isinstance(other, Pipeline):
            raise WallarooParameterError(f"merge() takes a pipeline, got {other!r}")
        if other._closed:
            raise WallarooParameterError(
                "merge(): the other pipeline already ends with to_sink/to_sinks"
            )
        self._check_open("merge")
        return Pipeline((self, other), None)

    def to_sink(self, sink_config):
        """Ends the pipeline in one sink."""
        return self.to_sinks([sink_config])

    def to_sinks(self, sink_configs):
        """Ends the pipeline in several sinks; each receives every message."""
        configs = tuple(sink_configs)
        if not configs:
            raise WallarooParameterError("to_sinks() needs at least one sink config")
        for config in configs:
            if not isinstance(config, TCPSinkConfig):
                raise WallarooParameterError(f"not a sink config: {config!r}")
        self._check_open("to_sink")
        return Pipeline((self,), SinkStage(configs), closed=True)

    def _then(self, stage, method):
        self._check_open(method)
        return Pipeline((self,), stage)

    def _check_open(self, method):
        if self._closed:
            raise WallarooParameterError(
                f"{method}(): the pipeline already ends with to_sink/to_sinks"
            )


def source(name, config):
    """Starts a pipeline at a TCP or generator source."""
    if not isinstance(name, str):
        raise WallarooParameterError(f"source(): the name must be a string, not {name!r}")
    if not isinstance(config, (TCPSourceConfig, GenSourceConfig)):
        raise WallarooParameterError(
            f"source {name!r}: expected a TCPSourceConfig or GenSourceConfig, got {config!r}"
        )
    return Pipeline((), SourceStage(name, config))


class Application:
    """What ``application_setup`` returns: a named, closed pipeline."""

    def __init__(self, name, pipeline):
        self.name = name
        self.pipeline = pipeline


def build_application(app_name, pipeline):
    """Wraps a finished pipeline for the engine."""
    if not isinstance(pipeline, Pipeline) or not pipeline._closed:
        raise WallarooParameterError(
            f"build_application({app_name!r}): the pipeline must end with to_sink/to_sinks"
        )
    return Application(app_name, pipeline)


# ------------------------------------------------------------------------------------------------
# Command line


class _ArgumentParser(argparse.ArgumentParser):
    """An argparse parser that raises instead of printing usage and exiting the instance."""

    def error(self, message):
        raise WallarooParameterError(message)


def _addresses(args, short, long, what):
    # prog is given because argparse otherwise reads sys.argv[0], which a component lacks.
    parser = _ArgumentParser(prog="wallaroo", add_help=False, allow_abbrev=False)
    parser.add_argument(short, long, dest="addresses")
    value = parser.parse_known_args(args)[0].addresses
    if value is None:
        raise WallarooParameterError(f"missing {short}/{long} ({what}, e.g. {long} host:port)")
    return [_address(entry, long) for entry in value.split(",")]


def _address(entry, flag):
    named, at, address = entry.rpartition("@")
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port or (at and not named):
        raise WallarooParameterError(f"{flag}: {entry!r} is not [NAME@]HOST:PORT")
    return (named, host, port) if at else (host, port)


def tcp_parse_input_addrs(args):
    """The ``-i/--in`` addresses: ``(host, port)`` per ``HOST:PORT`` entry and
    ``(name, host, port)`` per ``NAME@HOST:PORT`` entry. Ports stay strings."""
    return _addresses(args, "-i", "--in", "the input addresses")


def tcp_parse_output_addrs(args):
    """The ``-o/--out`` addresses, as ``(host, port)`` tuples (a ``NAME@`` prefix is dropped).
    Ports stay strings."""
    return [
        entry if len(entry) == 2 else entry[1:]
        for entry in _addresses(args, "-o", "--out", "the output addresses")
    ]
