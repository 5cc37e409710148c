"""The Wallaroo Python API, for applications that Wallaroo-RS runs as WebAssembly components.

An application module defines ``application_setup(args)``. In Wallaroo 0.6's API it builds a
pipeline with ``source(...)``, ``.to(...)``, ``.key_by(...)``, ``.merge(...)`` and
``.to_sink(...)``, and returns ``build_application(name, pipeline)``; the steps are plain
functions marked with the decorators below. Applications written for Wallaroo 0.1-0.5 use
``ApplicationBuilder`` instead (``wallaroo._builder``), with decorated functions or with objects
that have ``name()``/``compute()``-style methods; the builder turns them into the same pipeline.
The names and signatures match Wallaroo's, so applications written for it run unchanged; the
engine side lives in ``wallaroo._runtime``.
"""

import argparse
import functools
import inspect
import pickle

__all__ = [
    "Aggregation",
    "ApplicationBuilder",
    "Computation",
    "ComputationMulti",
    "CustomKafkaSinkCLIParser",
    "CustomKafkaSourceCLIParser",
    "Decoder",
    "DefaultKafkaSinkCLIParser",
    "DefaultKafkaSourceCLIParser",
    "Encoder",
    "GenSourceConfig",
    "KafkaSinkConfig",
    "KafkaSourceConfig",
    "KeyExtractor",
    "OctetDecoder",
    "OctetEncoder",
    "OldState",
    "StateComputation",
    "StateComputationMulti",
    "TCPSinkConfig",
    "TCPSourceConfig",
    "WallarooParameterError",
    "build_application",
    "computation",
    "computation_multi",
    "count_windows",
    "decoder",
    "deserialize",
    "encoder",
    "hours",
    "kafka_parse_sink_options",
    "kafka_parse_source_options",
    "key_extractor",
    "microseconds",
    "milliseconds",
    "minutes",
    "nanoseconds",
    "partition",
    "range_windows",
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


class OldState:
    """A restored state, or an object in one, whose class the running version no longer has.

    Only a state class with ``upgrade_state`` sees these: when the new version restores state
    an earlier version pickled, a class that cannot be found under its pickled module and name
    is made an ``OldState`` subclass of that module and name, with the pickled attributes, and
    ``upgrade_state`` receives it (``type(old).__name__`` is the old class's name)."""

    def __init__(self, *args, **kwargs):
        # Objects pickled by construction (``__reduce__``) keep their arguments.
        self.args, self.kwargs = args, kwargs

    def __repr__(self):
        cls = type(self)
        return f"<old state {cls.__module__}.{cls.__qualname__} {vars(self)!r}>"


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
#
# The classes below are what the decorators make, and what the pipeline and the runtime work
# with. Applications written for Wallaroo 0.6 may also subclass them (``class Split(
# wallaroo.ComputationMulti)`` with ``name()`` and ``compute_multi(data)``); such an instance is
# turned into the plain object when it is put into a pipeline (``wallaroo._builder``).


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
        name = getattr(self, "name", None)
        if not isinstance(name, str):  # an application's subclass, with its own name()
            return object.__repr__(self)
        return f"<wallaroo {self.kind} {name!r}>"


class Computation(UserFunction):
    """A stateless step: ``fn(data)`` returns the output, a list of outputs (multi) or None.

    Subclass it (or ``ComputationMulti``) with ``name()`` and ``compute(data)`` (or
    ``compute_multi(data)``) to write a step as a class, as Wallaroo 0.6 allowed."""

    def __init__(self, fn=None, name=None, multi=False):
        if fn is None:  # an application's subclass: its methods are read when it is used
            return
        super().__init__("computation_multi" if multi else "computation", fn, name, 1)
        self.multi = multi


class ComputationMulti(Computation):
    """The base class of a class-based step whose ``compute_multi(data)`` returns a list."""


class StateComputation(UserFunction):
    """A stateful step: ``fn(data, state)``, with one ``state_class()`` per key.

    Made by ``@state_computation(name, state)`` (0.6: ``fn`` returns the output) or by
    ``@state_computation(name)`` without ``state`` (0.4/0.5: ``fn`` returns ``(output,
    state_changed)`` and the state comes from ``ApplicationBuilder``); ``returns_changed`` says
    which. ``initial_keys`` are the keys whose state exists before their first message (an
    ``ApplicationBuilder`` partition's declared keys). ``expire_after`` (nanoseconds, or None)
    and ``on_expire`` are ``state_computation``'s."""

    expire_after = None
    on_expire = None

    def __init__(
        self,
        fn=None,
        name=None,
        state_class=None,
        multi=False,
        returns_changed=False,
        expire_after=None,
        on_expire=None,
    ):
        if fn is None:  # an application's subclass
            return
        kind = "state_computation_multi" if multi else "state_computation"
        super().__init__(kind, fn, name, 2)
        if state_class is not None and not callable(state_class):
            raise WallarooParameterError(
                f"{kind} {name!r}: state must be a class, got {type(state_class).__name__}"
            )
        if inspect.isclass(state_class):
            _builder.check_state_class(state_class, f"{kind} {name!r}")
        self.state_class = state_class
        self.multi = multi
        self.returns_changed = returns_changed
        self.initial_keys = ()
        if expire_after is not None and (
            isinstance(expire_after, bool) or not isinstance(expire_after, int) or expire_after <= 0
        ):
            raise WallarooParameterError(
                f"{kind} {name!r}: expire_after must be a positive duration in nanoseconds "
                f"(e.g. wallaroo.minutes(10)), got {expire_after!r}"
            )
        if on_expire is not None and expire_after is None:
            raise WallarooParameterError(
                f"{kind} {name!r}: on_expire is called as a key's state expires, so it needs "
                "expire_after"
            )
        if on_expire is not None and not callable(on_expire):
            raise WallarooParameterError(
                f"{kind} {name!r}: on_expire must be a function (key, state), got "
                f"{type(on_expire).__name__}"
            )
        self.expire_after = expire_after
        self.on_expire = on_expire


class StateComputationMulti(StateComputation):
    """The base class of a class-based state step whose ``compute_multi(data, state)`` returns
    a list."""


class KeyExtractor(UserFunction):
    """Returns the routing key (str, bytes or int) of a message. A subclass defines
    ``extract_key(data)``."""

    def __init__(self, fn=None):
        if fn is None:  # an application's subclass
            return
        super().__init__("key_extractor", fn, _function_name(fn), 1)


class Partition(UserFunction):
    """A partition function (Wallaroo 0.1-0.5): returns the partition key of a message, for
    ``ApplicationBuilder.to_state_partition``. A subclass defines ``partition(data)``."""

    def __init__(self, fn=None):
        if fn is None:  # an application's subclass
            return
        super().__init__("partition", fn, _function_name(fn), 1)


class Decoder(UserFunction):
    """Turns a frame's payload into a message; ``length_fmt`` describes the frame header.

    A subclass defines ``header_length()``, ``payload_length(header_bytes)`` and
    ``decode(payload_bytes)``, as Wallaroo's class-based decoders did."""

    def __init__(self, fn=None, header_length=None, length_fmt=None):
        if fn is None:  # an application's subclass
            return
        super().__init__("decoder", fn, _function_name(fn), 1)
        self.header_length = header_length
        self.length_fmt = length_fmt


class Encoder(UserFunction):
    """Turns a message into the bytes a sink writes (a str is written as UTF-8). A subclass
    defines ``encode(data)``."""

    def __init__(self, fn=None):
        if fn is None:  # an application's subclass
            return
        super().__init__("encoder", fn, _function_name(fn), 1)


class OctetDecoder(Decoder):
    """Wallaroo 0.6's name for the base class of length-framed decoders."""


class OctetEncoder(Encoder):
    """Wallaroo 0.6's name for the base class of encoders of bytes."""


def computation(name):
    """Marks ``fn(data)`` as a stateless step whose result (None: nothing) goes downstream."""
    _check_name("computation", name)
    return lambda fn: Computation(fn, name, multi=False)


def computation_multi(name):
    """Like ``computation``, but ``fn`` returns a list whose items go downstream one by one."""
    _check_name("computation_multi", name)
    return lambda fn: Computation(fn, name, multi=True)


def state_computation(name, state=None, expire_after=None, on_expire=None):
    """Marks ``fn(data, state)`` as a stateful step.

    With ``state`` (Wallaroo 0.6), the class of per-key state; ``fn`` returns the output.
    Without (Wallaroo 0.4/0.5), ``ApplicationBuilder.to_stateful`` or ``to_state_partition``
    gives the state, and ``fn`` returns ``(output, state_changed)``.

    With ``expire_after`` (a duration such as ``wallaroo.minutes(10)``), a key's state is
    forgotten once that long has passed without a message for the key: in event time, which
    is when the source received the message unless the source has an ``event_time``
    function, so by default after that long in real time. It leaves the instance's memory
    and the next checkpoint; a later message for the key starts from a new state.
    ``on_expire(key, state)``, if given, is called with the state as it expires, and what
    it returns goes downstream as ``fn``'s results do (None: nothing; a list with
    ``state_computation_multi``), with the expiry time as event time. Expiry follows the
    watermark, so it is exactly-once like everything else; when every stream has ended,
    every key expires.

    States are pickled for checkpoints, and a new version of the application (a hot swap, or a
    start on an older version's log) unpickles the old version's. Pickle finds a class by its
    module and name and sets its attributes without calling ``__init__``: keep both names (an
    alias such as ``OldName = NewName`` serves a renamed class), give added attributes a class
    attribute default, or convert the old attributes in ``__setstate__``. A state class with a
    classmethod ``upgrade_state(cls, old)`` converts any restored state that is not an instance
    of it: ``old`` is the old class's instance, or an ``OldState`` of the old module and name
    when the class is gone; it returns an instance of the state class."""
    _check_name("state_computation", name)
    return lambda fn: StateComputation(
        fn, name, state, False, state is None, expire_after, on_expire
    )


def state_computation_multi(name, state=None, expire_after=None, on_expire=None):
    """Like ``state_computation``, but the output is a list of outputs."""
    _check_name("state_computation_multi", name)
    return lambda fn: StateComputation(
        fn, name, state, True, state is None, expire_after, on_expire
    )


def key_extractor(fn):
    """Marks ``fn(data)`` as the function ``key_by`` partitions messages with."""
    return KeyExtractor(fn)


def partition(fn):
    """Marks ``fn(data)`` as a partition function for ``ApplicationBuilder.to_state_partition``
    (Wallaroo 0.4/0.5)."""
    return Partition(fn)


def decoder(header_length, length_fmt):
    """Marks ``fn(payload_bytes)`` as a source's decoder.

    On TCP, frames are ``header_length`` bytes of header that start with the payload's length
    packed as ``struct`` format ``length_fmt``, then the payload. The host does the framing;
    the format is checked when the application is described. A Kafka source ignores the
    framing: each record's value is a payload.
    """
    return lambda fn: Decoder(fn, header_length, length_fmt)


def encoder(fn):
    """Marks ``fn(data)`` as a sink's encoder; it returns bytes (or a str, sent as UTF-8), or
    for a Kafka sink also ``(value, key)`` or ``(value, key, partition)`` (``KafkaSinkConfig``)."""
    return Encoder(fn)


def _check_name(kind, name):
    # A decorator used bare (@computation instead of @computation(name=...)) receives the
    # function as its name; without this check the mistake would surface much later.
    if not isinstance(name, str):
        raise WallarooParameterError(f"{kind} needs a name: use @{kind}(name=...)")


def _function_name(fn):
    return getattr(fn, "__name__", type(fn).__name__)


def _required_parameters(signature):
    return sum(
        1
        for p in signature.parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    )


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
        plural = "" if arity == 1 else "s"
        where = _builder.where(fn)
        raise WallarooParameterError(
            f"{kind} {_function_name(fn)!r}{where}: must take {arity} parameter{plural}, "
            f"it takes {_required_parameters(signature)}"
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
    argument being a port (a str or int) tells them apart. Parallelism and the later options
    are the host's business and are ignored here. The decoder is a function decorated with
    ``@decoder(...)`` or a class-based decoder (``header_length()``, ``payload_length(bs)``,
    ``decode(bs)``), given as an instance or as a class.
    """

    def __init__(self, *args, **kwargs):
        if len(args) >= 3:
            named = isinstance(args[2], (str, int))
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
        self.decoder = _builder.as_decoder(bound["decoder"], "TCPSourceConfig")


class GenSourceConfig:
    """A source inside the guest: ``initial_value()`` and then ``apply(previous)`` produce the
    messages, until either returns None.

    Accepts Wallaroo 0.6's ``GenSourceConfig(generator)`` and the later ``GenSourceConfig(name,
    generator)``; the generator is an instance or a class."""

    def __init__(self, *args):
        if len(args) == 2 and isinstance(args[0], str):
            self.name, gen_instance = args
        elif len(args) == 1:
            self.name, gen_instance = None, args[0]
        else:
            raise WallarooParameterError(
                "GenSourceConfig takes (generator) or (name, generator), "
                f"got {len(args)} argument{'' if len(args) == 1 else 's'}"
            )
        if inspect.isclass(gen_instance):
            gen_instance = _builder.instance_of(gen_instance, "GenSourceConfig")
        # The runtime calls initial_value() and then apply(previous): a wrong arity would fail
        # on every message the source asks for, so it is refused here.
        expected = "a generator has initial_value() and apply(previous)"
        for method, arity in (("initial_value", 0), ("apply", 1)):
            _builder.method_of(gen_instance, method, arity, "GenSourceConfig", expected)
        self.generator = gen_instance


class TCPSinkConfig:
    """A sink the host connects to over TCP and writes the encoder's bytes to. The encoder is
    a function decorated with ``@encoder`` or a class-based encoder (``encode(data)``)."""

    def __init__(self, host, port, encoder):
        self.host = host
        self.port = port
        self.encoder = _builder.as_encoder(encoder, "TCPSinkConfig")


# Kafka. librdkafka's log_level is a syslog level; Wallaroo's names map onto it.
_KAFKA_LOG_LEVELS = {"Fine": "7", "Info": "6", "Warn": "4", "Error": "3"}
_KAFKA_PORT = "9092"
# The ranges librdkafka accepts for linger.ms and message.max.bytes.
_LINGER_MS = range(0, 900_001)
_MESSAGE_MAX_BYTES = range(1000, 1_000_000_001)

_KAFKA_SOURCE_OLD = inspect.Signature(
    [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for name in ("topic", "brokers", "log_level", "decoder")
    ]
)
_KAFKA_SOURCE_NAMED = inspect.Signature(
    [inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + list(_KAFKA_SOURCE_OLD.parameters.values())
)


class KafkaSourceConfig:
    """A Kafka topic the host reads: each record's value is one message's payload, given to
    the decoder whole (a ``@decoder``'s framing is ignored; a decoder object needs only
    ``decode(bs)``).

    Accepts Wallaroo 0.1-0.4's ``KafkaSourceConfig(topic, brokers, log_level, decoder)`` and
    0.6's documented ``KafkaSourceConfig(name, topic, brokers, log_level, decoder)``.
    ``brokers`` is a list of ``(host, port)`` pairs or a ``"host[:port],..."`` string (the port
    defaults to 9092); ``log_level`` is ``"Fine"``, ``"Info"``, ``"Warn"`` or ``"Error"``."""

    def __init__(self, *args, **kwargs):
        named = len(args) + len(kwargs) == 5 or "name" in kwargs
        form = _KAFKA_SOURCE_NAMED if named else _KAFKA_SOURCE_OLD
        try:
            bound = form.bind(*args, **kwargs).arguments
        except TypeError as error:
            raise WallarooParameterError(f"KafkaSourceConfig{form}: {error}") from None
        role = "KafkaSourceConfig"
        self.name = bound.get("name")
        self.topic = _kafka_topic(bound["topic"], role, "a topic")
        self.brokers = _kafka_broker_list(bound["brokers"], role, "brokers")
        self.log_level = _kafka_log_level(bound["log_level"], role)
        self.decoder = _builder.as_decoder(bound["decoder"], role, framed=False)

    def _spec(self, args):
        """``("kafka", topic, brokers, properties)`` for the host."""
        properties = (("log_level", _KAFKA_LOG_LEVELS[self.log_level]),)
        return ("kafka", self.topic, _kafka_joined(self.brokers), properties)


class CustomKafkaSourceCLIParser(KafkaSourceConfig):
    """A Kafka source configured by ``--kafka_source_topic``, ``--kafka_source_brokers``,
    ``--kafka_source_log_level`` and ``--kafka_source_name`` in ``args`` (see
    ``kafka_parse_source_options``)."""

    def __init__(self, args, decoder):
        role = "CustomKafkaSourceCLIParser"
        self.name, self.topic, self.brokers, self.log_level = kafka_parse_source_options(args)
        _kafka_topic(self.topic, role, "--kafka_source_topic")
        _kafka_broker_list(self.brokers, role, "--kafka_source_brokers")
        self.decoder = _builder.as_decoder(decoder, role, framed=False)


class DefaultKafkaSourceCLIParser(KafkaSourceConfig):
    """A Kafka source configured by the application's command line when it is described:
    ``--NAME_topic``, ``--NAME_brokers`` (``host[:port]`` entries joined by commas) and
    ``--NAME_log_level``, with NAME ``kafka_source`` unless given, as Wallaroo's were."""

    def __init__(self, decoder, name="kafka_source"):
        if not isinstance(name, str) or not name:
            raise WallarooParameterError(
                f"DefaultKafkaSourceCLIParser: the name must be a non-empty string, not {name!r}"
            )
        self.name = name
        self.decoder = _builder.as_decoder(decoder, "DefaultKafkaSourceCLIParser", framed=False)

    def _spec(self, args):
        options = _kafka_options(args, self.name)
        role = f"Kafka source {self.name!r}"
        self.topic = _kafka_topic(options.topic, role, f"--{self.name}_topic")
        self.brokers = _kafka_broker_list(options.brokers, role, f"--{self.name}_brokers")
        self.log_level = options.log_level
        return super()._spec(args)


class KafkaSinkConfig:
    """A Kafka topic the host writes one record to per message, as Wallaroo 0.1-0.4's (and
    0.6's documented) ``KafkaSinkConfig(topic, brokers, log_level, max_produce_buffer_ms,
    max_message_size, encoder)``: ``max_produce_buffer_ms`` becomes the client's ``linger.ms`` and
    ``max_message_size`` its ``message.max.bytes``.

    The encoder returns the record's value (bytes, or a str sent as UTF-8), or ``(value,
    key)`` or ``(value, key, partition)``, with a key of None, bytes or a str, and a partition
    of None (the client chooses, by the key) or an int from 0."""

    def __init__(self, topic, brokers, log_level, max_produce_buffer_ms, max_message_size, encoder):
        role = "KafkaSinkConfig"
        self.topic = _kafka_topic(topic, role, "a topic")
        self.brokers = _kafka_broker_list(brokers, role, "brokers")
        self.log_level = _kafka_log_level(log_level, role)
        self.max_produce_buffer_ms = _kafka_int(
            max_produce_buffer_ms, _LINGER_MS, role, "max_produce_buffer_ms"
        )
        self.max_message_size = _kafka_int(
            max_message_size, _MESSAGE_MAX_BYTES, role, "max_message_size"
        )
        self.encoder = _builder.as_encoder(encoder, role)

    def _spec(self, args):
        """``("kafka", topic, brokers, properties)`` for the host."""
        properties = (
            ("log_level", _KAFKA_LOG_LEVELS[self.log_level]),
            ("linger.ms", str(self.max_produce_buffer_ms)),
            ("message.max.bytes", str(self.max_message_size)),
        )
        return ("kafka", self.topic, _kafka_joined(self.brokers), properties)


class CustomKafkaSinkCLIParser(KafkaSinkConfig):
    """A Kafka sink configured by ``--kafka_sink_topic``, ``--kafka_sink_brokers``,
    ``--kafka_sink_log_level``, ``--kafka_sink_max_produce_buffer_ms`` and
    ``--kafka_sink_max_message_size`` in ``args`` (see ``kafka_parse_sink_options``)."""

    def __init__(self, args, encoder):
        (
            self.name,
            self.topic,
            self.brokers,
            self.log_level,
            self.max_produce_buffer_ms,
            self.max_message_size,
        ) = kafka_parse_sink_options(args)
        _check_kafka_sink(self, "CustomKafkaSinkCLIParser", "kafka_sink")
        self.encoder = _builder.as_encoder(encoder, "CustomKafkaSinkCLIParser")


class DefaultKafkaSinkCLIParser(KafkaSinkConfig):
    """A Kafka sink configured by the application's command line when it is described:
    ``--NAME_topic``, ``--NAME_brokers``, ``--NAME_log_level``,
    ``--NAME_max_produce_buffer_ms`` (default 0) and ``--NAME_max_message_size`` (default
    100000), with NAME ``kafka_sink`` unless given, as Wallaroo's were."""

    def __init__(self, encoder, name="kafka_sink"):
        if not isinstance(name, str) or not name:
            raise WallarooParameterError(
                f"DefaultKafkaSinkCLIParser: the name must be a non-empty string, not {name!r}"
            )
        self.name = name
        self.encoder = _builder.as_encoder(encoder, "DefaultKafkaSinkCLIParser")

    def _spec(self, args):
        options = _kafka_options(args, self.name, sink=True)
        self.topic, self.brokers, self.log_level = options.topic, options.brokers, options.log_level
        self.max_produce_buffer_ms = options.max_produce_buffer_ms
        self.max_message_size = options.max_message_size
        _check_kafka_sink(self, f"Kafka sink {self.name!r}", self.name)
        return super()._spec(args)


def _check_kafka_sink(config, role, prefix):
    """Checks the settings a sink took from the command line, naming the options."""
    _kafka_topic(config.topic, role, f"--{prefix}_topic")
    _kafka_broker_list(config.brokers, role, f"--{prefix}_brokers")
    buffer_ms, size = config.max_produce_buffer_ms, config.max_message_size
    _kafka_int(buffer_ms, _LINGER_MS, role, f"--{prefix}_max_produce_buffer_ms")
    _kafka_int(size, _MESSAGE_MAX_BYTES, role, f"--{prefix}_max_message_size")


def _kafka_topic(topic, role, what):
    if not isinstance(topic, str) or not topic:
        got = "" if topic in ("", None) else f", got {topic!r}"
        raise WallarooParameterError(f"{role} needs {what}{got}")
    return topic


def _kafka_broker_list(brokers, role, what):
    """``brokers`` as a list of ``(host, port)`` pairs with string ports: from such a list
    (ports may be ints) or from a ``"host[:port],..."`` string."""
    if isinstance(brokers, str):
        brokers = _kafka_brokers(brokers, what)
    elif isinstance(brokers, (list, tuple)):
        brokers = [_kafka_pair(entry, role, what) for entry in brokers]
    else:
        raise WallarooParameterError(
            f"{role}: {what} must be a list of (host, port) pairs, got {brokers!r}"
        )
    if not brokers:
        raise WallarooParameterError(
            f"{role} needs {what} (the Kafka brokers, e.g. 127.0.0.1:9092)"
        )
    return brokers


def _kafka_pair(entry, role, what):
    if isinstance(entry, (list, tuple)) and len(entry) == 2:
        host, port = entry
        if isinstance(host, str) and host and isinstance(port, (str, int)):
            port = str(port)
            if port.isdigit():
                return (host, port)
    raise WallarooParameterError(f"{role}: {what}: {entry!r} is not a (host, port) pair")


def _kafka_log_level(level, role):
    if level not in _KAFKA_LOG_LEVELS:
        raise WallarooParameterError(
            f"{role}: log_level must be one of {', '.join(_KAFKA_LOG_LEVELS)}, got {level!r}"
        )
    return level


def _kafka_int(value, allowed, role, what):
    if type(value) is not int or value not in allowed:
        raise WallarooParameterError(
            f"{role}: {what} must be an int from {allowed.start} to {allowed.stop - 1} "
            f"(the Kafka client's limits), got {value!r}"
        )
    return value


def _kafka_joined(brokers):
    """Brokers as the host takes them: ``host:port`` entries joined by commas."""
    return ",".join(f"{host}:{port}" for host, port in brokers)


# ------------------------------------------------------------------------------------------------
# Pipelines


class SourceStage:
    """The start of a pipeline: a named source, and the function that gives its messages' event
    times (None: when the source received them)."""

    def __init__(self, name, config, event_time=None):
        self.name = name
        self.config = config
        self.event_time = event_time


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
        """Appends a ``@computation``/``@state_computation`` (or ``_multi``) step, an
        instance of a subclass of ``Computation``/``StateComputation`` (or ``_Multi``), or
        windows (``range_windows(...).over(...)``, ``count_windows(...).over(...)``)."""
        return self._then(_builder.as_pipeline_step(step), "to")

    def key_by(self, extractor):
        """Partitions the flow by the key ``extractor`` returns; keyed state follows the key."""
        return self._then(_builder.as_key_extractor(extractor), "key_by")

    def collect(self):
        """Sends every message to one place: the steps after it see the whole flow (one
        state for a state computation), as Wallaroo 0.6's ``collect()`` did."""
        return self._then(_COLLECT, "collect")

    def clone(self):
        """The same pipeline. Kept for Wallaroo 0.6 applications; pipelines never change once
        made, so a clone and its original can be extended independently anyway."""
        return self

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
            if not isinstance(config, (TCPSinkConfig, KafkaSinkConfig)):
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


def _collect_key(data):
    return b""


_COLLECT = KeyExtractor(_collect_key)
_COLLECT.name = "collect"


def source(name, config, event_time=None):
    """Starts a pipeline at a TCP, Kafka or generator source.

    A message's event time (what windows go by) is when the source received it, unless
    ``event_time`` is given: a function of the decoded message returning its time, as seconds
    since the Unix epoch (an int or float) or a ``datetime`` (one without a time zone is UTC).
    """
    if not isinstance(name, str):
        raise WallarooParameterError(f"source(): the name must be a string, not {name!r}")
    if not isinstance(config, (TCPSourceConfig, KafkaSourceConfig, GenSourceConfig)):
        raise WallarooParameterError(
            f"source {name!r}: expected a TCPSourceConfig, a Kafka source config "
            f"(DefaultKafkaSourceCLIParser and the like) or GenSourceConfig, got {config!r}"
        )
    if event_time is not None:
        _check_arity(f"source {name!r}: event_time", event_time, 1)
    return Pipeline((), SourceStage(name, config, event_time))


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


def kafka_parse_source_options(args):
    """``(name, topic, brokers, log_level)`` from ``--kafka_source_name``,
    ``--kafka_source_topic``, ``--kafka_source_brokers`` (``host[:port]`` entries joined by
    commas, as ``(host, port)`` tuples with the port a string, 9092 unless given) and
    ``--kafka_source_log_level`` (Fine, Info, Warn or Error; default Warn). A missing topic is
    ``""``, missing brokers ``[]``, a missing name None. This is Wallaroo 0.6's tuple; 0.1-0.5
    returned it without the name."""
    options = _kafka_options(args, "kafka_source", named=True)
    return (options.name, options.topic, options.brokers, options.log_level)


def kafka_parse_sink_options(args):
    """``(name, topic, brokers, log_level, max_produce_buffer_ms, max_message_size)`` from
    ``--kafka_sink_topic``, ``--kafka_sink_brokers``, ``--kafka_sink_log_level``,
    ``--kafka_sink_max_produce_buffer_ms`` (default 0) and ``--kafka_sink_max_message_size``
    (default 100000), as ``kafka_parse_source_options`` reads its options. The name is ``""``:
    Wallaroo's sinks had none (and 0.1-0.5 returned the tuple without it)."""
    options = _kafka_options(args, "kafka_sink", sink=True)
    return (
        "",
        options.topic,
        options.brokers,
        options.log_level,
        options.max_produce_buffer_ms,
        options.max_message_size,
    )


def _kafka_options(args, prefix, named=False, sink=False):
    """The ``--PREFIX_...`` Kafka options in ``args``, other arguments ignored."""
    parser = _ArgumentParser(prog="wallaroo", add_help=False, allow_abbrev=False)
    if named:
        parser.add_argument(f"--{prefix}_name", dest="name")
    parser.add_argument(f"--{prefix}_topic", dest="topic", default="")
    parser.add_argument(f"--{prefix}_brokers", dest="brokers", default="")
    parser.add_argument(
        f"--{prefix}_log_level", dest="log_level", default="Warn", choices=list(_KAFKA_LOG_LEVELS)
    )
    if sink:
        parser.add_argument(
            f"--{prefix}_max_produce_buffer_ms", dest="max_produce_buffer_ms", type=int, default=0
        )
        parser.add_argument(
            f"--{prefix}_max_message_size", dest="max_message_size", type=int, default=100000
        )
    options = parser.parse_known_args(args)[0]
    options.brokers = _kafka_brokers(options.brokers, f"--{prefix}_brokers")
    return options


def _kafka_brokers(value, what):
    """``"host[:port],..."`` as ``(host, port)`` tuples; an empty string gives none."""
    brokers = []
    for entry in value.split(",") if value.strip() else []:
        host, colon, port = entry.strip().rpartition(":")
        if not colon:
            host, port = port, _KAFKA_PORT
        if not host or not port.isdigit():
            raise WallarooParameterError(f"{what}: {entry!r} is not HOST[:PORT]")
        brokers.append((host, port))
    return brokers


# ------------------------------------------------------------------------------------------------
# Windows (wallaroo._windows)


def range_windows(window_range):
    """Windows of ``window_range`` nanoseconds of event time, for ``.to()`` once finished with
    ``.over(AggregationClass)``: tumbling, or sliding with ``.with_slide(slide)``; each fires
    when the watermark passes its end plus ``.with_delay(delay)``; a message too late for its
    windows follows ``.with_late_data_policy(policy)``. Use them after ``key_by`` for windows
    per key, or before it for windows over the whole flow."""
    return _windows.RangeWindowsBuilder(window_range)


def count_windows(count):
    """A window of every ``count`` messages per key: ``count_windows(n).over(Aggregation)``
    outputs once per ``n`` messages of a key."""
    return _windows.CountWindowsBuilder(count)


# The ApplicationBuilder (Wallaroo 0.1-0.5) and the conversion of class-based user objects, and
# windows; they use the classes above, so they are imported last.
from wallaroo import _builder, _windows  # noqa: E402
from wallaroo._builder import ApplicationBuilder  # noqa: E402
from wallaroo._windows import Aggregation  # noqa: E402
