"""Wallaroo 0.1-0.5's ``ApplicationBuilder``, and class-based user objects made into steps.

Before 0.6, an application described its topology with ``ApplicationBuilder(name)``:
``new_pipeline(name, source_config)``, then ``to``/``to_parallel`` (stateless steps),
``to_stateful`` (one state for the step) and ``to_state_partition`` (one state per partition
key), ``to_sink`` or ``done``, once per pipeline, and ``build()``. Its steps were objects with
methods (``name()``, ``compute(data)``, ``compute(data, state)``, ``partition(data)``,
``decode(bs)``, ``encode(data)``...), given as instances or as classes, or (0.4/0.5) functions
marked with the decorators. This module turns all of them into the objects of the 0.6 API
(``Computation``, ``StateComputation``, ``KeyExtractor``, ``Decoder``, ``Encoder``) and the
builder's pipelines into one 0.6 pipeline graph, so ``wallaroo._runtime`` and the host see the
same kind of application whichever API wrote it.

A state computation given to the builder returns ``(result, state_changed)``; several steps
naming the same state (Wallaroo's market spread updates a symbol's state from one pipeline and
reads it from another) become one stateful step that runs the right computation for each
message (tagged with its pipeline on the way in) and passes each result on only to the rest of
its own pipeline.
"""

import functools
import inspect
import os
import struct
import sys

from wallaroo import (
    Application,
    Computation,
    Decoder,
    Encoder,
    GenSourceConfig,
    KafkaSinkConfig,
    KafkaSourceConfig,
    KeyExtractor,
    Partition,
    Pipeline,
    StateComputation,
    TCPSinkConfig,
    TCPSourceConfig,
    WallarooParameterError,
    _windows,
    source,
)

# ------------------------------------------------------------------------------------------------
# Where a user object is defined, for error messages


def where(obj):
    """`` (FILE:LINE)`` of a function, method or class (or an instance's class), or ""."""
    place = _place(obj)
    return f" ({place})" if place else ""


def _place(obj):
    if isinstance(obj, functools.partial):
        obj = obj.func
    code = getattr(obj, "__code__", None)
    if code is not None and hasattr(code, "co_filename"):
        return f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
    cls = obj if inspect.isclass(obj) else type(obj)
    module = sys.modules.get(getattr(cls, "__module__", None) or "")
    filename = getattr(module, "__file__", None)
    if not filename:
        return None
    line = getattr(cls, "__firstlineno__", None)  # Python 3.13 and later
    if line is None:
        line = _class_line(cls)
    name = os.path.basename(filename)
    return f"{name}:{line}" if line is not None else name


def _class_line(cls):
    """The line of ``class`` (or of its first decorator) before Python 3.13, which does not
    record it: the source is searched for the definition (only for messages and at set-up),
    or else the first method's line is taken."""
    try:
        return inspect.findsource(cls)[1] + 1
    except (OSError, TypeError, IndexError):
        lines = [
            member.__code__.co_firstlineno
            for member in vars(cls).values()
            if inspect.isfunction(member)
        ]
        return min(lines) if lines else None


def describe(obj):
    """``class Name`` for class-based objects, ``function name`` for functions."""
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return f"function {obj.__name__!r}"
    cls = obj if inspect.isclass(obj) else type(obj)
    return f"class {cls.__name__}"


def instance_of(cls, role):
    """An instance of ``cls``, given where Wallaroo took a class or an instance."""
    try:
        return cls()
    except Exception as error:
        raise WallarooParameterError(
            f"{role}: {describe(cls)}{where(cls)} was given as a class, and making an "
            f"instance of it failed ({type(error).__name__}: {error}); pass an instance instead"
        ) from None


def _method(obj, names, arity, role, expected):
    """``(name, bound method)`` for the first of ``names`` that ``obj`` has, with its arity
    checked; ``expected`` says in words what the method does, for the error message."""
    for name in names:
        method = getattr(obj, name, None)
        if callable(method):
            _check_method_arity(obj, name, method, arity, role)
            return name, method
    wanted = " or ".join(f"{name}()" for name in names)
    raise WallarooParameterError(
        f"{role}: {describe(obj)}{where(obj)} has no {wanted} method ({expected})"
    )


def method_of(obj, name, arity, role, expected):
    """``obj``'s bound method ``name``, checked to take ``arity`` arguments."""
    return _method(obj, [name], arity, role, expected)[1]


def _check_method_arity(obj, name, method, arity, role):
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*range(arity))
    except TypeError:
        from wallaroo import _required_parameters

        plural = "" if arity == 1 else "s"
        besides = " besides self" if inspect.ismethod(method) else ""
        raise WallarooParameterError(
            f"{role}: {describe(obj)}{where(method)}: {name}() must take {arity} "
            f"parameter{plural}{besides}, it takes {_required_parameters(signature)}"
        ) from None


def _name_of(obj, role):
    """The ``name()`` of a class-based step (a ``name`` string attribute will do)."""
    name = getattr(obj, "name", None)
    if callable(name):
        _check_method_arity(obj, "name", name, 0, role)
        name = name()
    if not isinstance(name, str):
        raise WallarooParameterError(
            f"{role}: {describe(obj)}{where(obj)} needs a name() method returning a string"
        )
    return name


def _resolved(obj, role):
    return instance_of(obj, role) if inspect.isclass(obj) else obj


def _plain(obj, cls):
    """Whether ``obj`` is already the SDK's own object (made by a decorator)."""
    return type(obj) is cls


# ------------------------------------------------------------------------------------------------
# Class-based objects made into the 0.6 API's objects


def as_decoder(obj, role, framed=True):
    """A ``Decoder`` for ``@decoder`` functions and class-based decoders; the frame format of
    a class-based one is read off its ``payload_length`` (see ``_length_format``). Without
    ``framed`` (a Kafka source: each record's value is a whole payload), a class-based decoder
    needs only ``decode(bs)``."""
    if _plain(obj, Decoder):
        return obj
    obj = _resolved(obj, role)
    if _plain(obj, Decoder):
        return obj
    if not hasattr(obj, "decode") or isinstance(obj, (str, bytes, int)):
        methods = "header_length(), payload_length(bs) and decode(bs)" if framed else "decode(bs)"
        raise WallarooParameterError(
            f"{role} needs a function decorated with @decoder(...) or a decoder object "
            f"with {methods}, got {obj!r}"
        )
    if not framed:
        _, decode = _method(obj, ["decode"], 1, role, "it turns a record's value into a message")
        decoder = Decoder(decode)
        decoder.name = type(obj).__name__
        return decoder
    expected = "a decoder has header_length(), payload_length(header) and decode(payload)"
    _, header_length = _method(obj, ["header_length"], 0, role, expected)
    _, payload_length = _method(obj, ["payload_length"], 1, role, expected)
    _, decode = _method(obj, ["decode"], 1, role, expected)
    size = header_length()
    fmt = _length_format(obj, size, payload_length)
    decoder = Decoder(decode, size, fmt)
    decoder.name = type(obj).__name__
    return decoder


# The integer codes a frame's length can be read with, by size.
_UNSIGNED = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _length_format(obj, header_length, payload_length):
    """The ``struct`` format (``>I`` and the like) that ``payload_length`` reads the length
    with. The host does the framing, so the length must be an integer at the start of the
    header; headers whose bytes are all below 0x80 tell the byte order and size apart (and
    signed from unsigned does not matter for them)."""

    def role():  # only for a message: finding a class's line may read its source
        return f"decoder {type(obj).__name__}{where(obj)}"

    if type(header_length) is not int or header_length < 1:
        raise WallarooParameterError(
            f"{role()}: header_length() must return a positive int, it returned {header_length!r}"
        )
    probes = [bytes(header_length)]
    probes += [bytes(header_length - 1 - i) + b"\x01" + bytes(i) for i in range(header_length)]
    probes.append(bytes((7 * i + 3) % 0x80 for i in range(header_length)))
    try:
        lengths = [payload_length(probe) for probe in probes]
    except Exception as error:
        raise WallarooParameterError(
            f"{role()}: payload_length(header) failed on a {header_length}-byte header "
            f"({type(error).__name__}: {error}); it must read the payload's length from the "
            "header alone"
        ) from None
    for size, code in _UNSIGNED.items():
        if size > header_length:
            continue
        for order in (">", "<"):
            fmt = order + code
            if all(
                length == struct.unpack(fmt, probe[:size])[0]
                for probe, length in zip(probes, lengths, strict=True)
            ):
                return fmt
    raise WallarooParameterError(
        f"{role()}: payload_length(header) must read the payload's length as a 1, 2, 4 or "
        "8-byte integer at the start of the header (as struct.unpack('>I', header) does): "
        f"for header {probes[-1].hex()} it returned {lengths[-1]!r}"
    )


def as_encoder(obj, role):
    """An ``Encoder`` for ``@encoder`` functions and objects with ``encode(data)``."""
    if _plain(obj, Encoder):
        return obj
    obj = _resolved(obj, role)
    if _plain(obj, Encoder):
        return obj
    if not hasattr(obj, "encode") or isinstance(obj, (str, bytes)):
        raise WallarooParameterError(
            f"{role} needs a function decorated with @encoder or an encoder object with "
            f"encode(data), got {obj!r}"
        )
    _, encode = _method(obj, ["encode"], 1, role, "it turns a message into bytes or a str")
    encoder = Encoder(encode)
    encoder.name = type(obj).__name__
    return encoder


def as_key_extractor(obj):
    """A ``KeyExtractor`` for ``@key_extractor`` functions and ``KeyExtractor`` subclasses
    (``extract_key(data)``)."""
    role = "key_by()"
    if _plain(obj, KeyExtractor):
        return obj
    if inspect.isclass(obj) and issubclass(obj, KeyExtractor):
        obj = instance_of(obj, role)
    if not isinstance(obj, KeyExtractor):
        raise WallarooParameterError(
            f"key_by() takes a function decorated with @key_extractor, got {obj!r}"
        )
    _, extract = _method(obj, ["extract_key"], 1, role, "it returns the message's key")
    extractor = KeyExtractor(extract)
    extractor.name = type(obj).__name__
    return extractor


def as_pipeline_step(obj):
    """What a 0.6 pipeline's ``to()`` takes: a decorated function, or an instance (or class)
    of a subclass of ``Computation``, ``ComputationMulti``, ``StateComputation`` or
    ``StateComputationMulti``."""
    if _plain(obj, Computation) or isinstance(obj, _windows.WindowStep):
        return obj
    if isinstance(obj, (_windows.RangeWindowsBuilder, _windows.CountWindowsBuilder)):
        raise WallarooParameterError(
            "to(): a window specification needs .over(AggregationClass) to be a step"
        )
    if _plain(obj, StateComputation):
        if obj.state_class is None:
            raise WallarooParameterError(
                f"to(): {obj.kind} {obj.name!r}{where(obj.fn)} has no state class: in a "
                f"pipeline use @{obj.kind}(name, state=StateClass); without state= it is a "
                "Wallaroo 0.4/0.5 computation for ApplicationBuilder.to_stateful or "
                "to_state_partition"
            )
        return obj
    if inspect.isclass(obj) and issubclass(obj, (Computation, StateComputation)):
        obj = instance_of(obj, "to()")
    if isinstance(obj, StateComputation):
        name, fn, multi = _compute(obj, 2, "to()")
        _, initial = _method(
            obj,
            ["initial_state", "build_initial_state"],
            0,
            "to()",
            "it returns a new state object",
        )
        return StateComputation(fn, name, initial, multi)
    if isinstance(obj, Computation):
        name, fn, multi = _compute(obj, 1, "to()")
        return Computation(fn, name, multi)
    raise WallarooParameterError(
        "to() takes a function decorated with @computation, @computation_multi, "
        "@state_computation or @state_computation_multi, or windows (range_windows(...)"
        f".over(...), count_windows(...).over(...)), got {obj!r}"
    )


def _compute(obj, arity, role):
    """``(name, compute method, multi)`` of a class-based computation."""
    name = _name_of(obj, role)
    args = "data" if arity == 1 else "data, state"
    method, fn = _method(
        obj,
        ["compute", "compute_multi"],
        arity,
        role,
        f"compute({args}) returns one output or None, compute_multi({args}) a list",
    )
    return name, fn, method == "compute_multi"


def as_stateless(obj, role):
    """A ``Computation`` for ``ApplicationBuilder.to``/``to_parallel``."""
    if _plain(obj, Computation):
        return obj
    if isinstance(obj, StateComputation):
        raise WallarooParameterError(
            f"{role}: {obj.kind} {obj.name!r}{where(obj.fn)} is a state computation: "
            "use to_stateful or to_state_partition"
        )
    _refuse_plain_function(obj, role, "computation", "compute(data)")
    obj = _resolved(obj, role)
    if _plain(obj, Computation):
        return obj
    name, fn, multi = _compute(obj, 1, role)
    return Computation(fn, name, multi)


def _refuse_plain_function(obj, role, decorator, compute):
    """A builder step must be named: an undecorated function has no name to give it."""
    if isinstance(obj, functools.partial) or inspect.isroutine(obj):
        name = getattr(obj, "__name__", None) or type(obj).__name__
        raise WallarooParameterError(
            f"{role}: function {name!r}{where(obj)} is a plain function: decorate it with "
            f"@wallaroo.{decorator}(name) (or @wallaroo.{decorator}_multi(name)), or give a "
            f"class with name() and {compute}"
        )


class _StateStep:
    """One step of a builder pipeline that uses a state."""

    def __init__(self, computation, role):
        """``computation`` is a ``@state_computation`` or a class-based state computation."""
        if _plain(computation, StateComputation):
            self.fn, self.name, self.multi = computation.fn, computation.name, computation.multi
            self.returns_changed = computation.returns_changed
            self.label = f"{computation.kind} {computation.name!r}{where(computation.fn)}"
        elif isinstance(computation, Computation):
            raise WallarooParameterError(
                f"{role}: {computation.kind} {computation.name!r}{where(computation.fn)} "
                "is stateless: use to or to_parallel, or @state_computation(name) for a "
                "step with state"
            )
        else:
            _refuse_plain_function(computation, role, "state_computation", "compute(data, state)")
            computation = _resolved(computation, role)
            self.name, self.fn, self.multi = _compute(computation, 2, role)
            self.returns_changed = True
            kind = "compute_multi" if self.multi else "compute"
            self.label = (
                f"state computation {self.name!r} ({describe(computation)}.{kind}, "
                f"{_place(self.fn)})"
            )

    def unpacked(self):
        """The step's function, returning its output alone."""
        if not self.returns_changed:
            return self.fn
        return functools.partial(_output_of, self.fn, self.label)


def _output_of(fn, label, data, state):
    """Calls a 0.1-0.5 state computation and returns the result of its ``(result,
    state_changed)``. The state is saved at every checkpoint whatever ``state_changed`` says
    (saving too often is only slower; trusting a wrong False would lose an update)."""
    answer = fn(data, state)
    if type(answer) is tuple and len(answer) == 2:
        if type(answer[1]) is bool or (type(answer[1]) is int and answer[1] in (0, 1)):
            # 0 and 1 too: Python 2 apps often wrote the flag as an int.
            return answer[0]
        # Most likely a tuple meant as the output, e.g. (word, count): reading its second
        # element as the flag would drop it silently.
        flag = answer[1]
        raise WallarooParameterError(
            f"{label} returned a tuple whose second element is {type(flag).__name__} "
            f"{_short_repr(flag)}, expected (result, state_changed) with state_changed True "
            "or False (or 1 or 0); to output a tuple, return (the_tuple, True)"
        )
    raise WallarooParameterError(
        f"{label} returned {type(answer).__name__}, expected a tuple (result, state_changed), "
        "e.g. return (output, True)"
    )


def _short_repr(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_state_builder(obj, role):
    """What makes a new state: a state class (0.4/0.5), an object with ``build()`` (0.1-0.3),
    or a function of no arguments.

    A class is a state class, as in Wallaroo, unless it cannot be one: a class whose only
    public methods are ``build()`` (and ``name()``) and whose instances have no attributes
    is a state builder given as a class, and its ``build()`` makes the states. Such a class
    with an ``__init__`` of its own could be either, and is refused."""
    if not inspect.isclass(obj):
        build = getattr(obj, "build", None)
        if callable(build):
            _check_method_arity(obj, "build", build, 0, role)
            return build
        if callable(obj):
            return obj
        raise WallarooParameterError(
            f"{role}: the state must be a state class or a state builder with build(), got {obj!r}"
        )
    methods = {
        name
        for name, member in vars(obj).items()
        if inspect.isfunction(member) and not name.startswith("_")
    }
    if "build" not in methods or not methods <= {"build", "name"}:
        check_state_class(obj, role)
        return obj
    probe = instance_of(obj, role)
    if _has_attributes(probe):
        return obj
    if obj.__init__ is not object.__init__:
        name = obj.__name__
        raise WallarooParameterError(
            f"{role}: {describe(obj)}{where(obj)} has __init__ and build() but its instances "
            "have no attributes, so it may be a state class or a state builder: pass an "
            f"instance, {name}(), if its build() makes the state, or set the state's "
            "attributes in __init__ if it is the state itself"
        )
    _check_method_arity(probe, "build", probe.build, 0, role)
    return probe.build


def _has_attributes(instance):
    if getattr(instance, "__dict__", None):
        return True
    slots = (
        slot
        for cls in type(instance).__mro__
        for slot in (
            [cls.__dict__["__slots__"]]
            if isinstance(cls.__dict__.get("__slots__"), str)
            else cls.__dict__.get("__slots__", ())
        )
    )
    return any(hasattr(instance, slot) for slot in slots if slot not in ("__dict__", "__weakref__"))


def check_state_class(cls, role):
    """Refuses a state class that cannot be made with no arguments, as every state is made."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return  # some builtins have no signature; nothing to check against
    required = [
        p.name
        for p in signature.parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if not required:
        return
    names = ", ".join(required)
    defaults = f"{names} a default" if len(required) == 1 else f"{names} defaults"
    raise WallarooParameterError(
        f"{role}: {describe(cls)}{where(cls)} is the state class, and a state class must be "
        f"constructible with no arguments: its __init__ takes {len(required)} ({names}); "
        f"give {defaults}, or pass a state builder whose build() makes the state"
    )


def as_partition(obj, role):
    """``(function, name)`` of a partition function: ``@partition``, an object with
    ``partition(data)`` (instance or class), or a plain function."""
    if _plain(obj, Partition) or _plain(obj, KeyExtractor):
        return obj.fn, obj.name
    if inspect.isfunction(obj):
        return obj, obj.__name__
    obj = _resolved(obj, role)
    _, fn = _method(obj, ["partition"], 1, role, "it returns the message's partition key")
    return fn, type(obj).__name__


# ------------------------------------------------------------------------------------------------
# The builder


class _Flow:
    """One ``new_pipeline`` of a builder: its source, steps and sinks."""

    def __init__(self, name, config):
        self.name = name
        self.config = config
        self.stages = []  # Computation, or ("state", state name, _StateStep, key extractor)
        self.sinks = None  # a list of sink configs once to_sink/to_sinks ended it


class _State:
    """A named state and the steps that use it."""

    def __init__(self, name, kind, builder, given):
        self.name = name
        self.kind = kind  # "stateful", "partition" or "partition_u64"
        self.builder = builder
        self.given = given  # what the application passed, to compare uses by
        self.keys = []  # initial keys, as key bytes, in order
        self.users = []  # (flow index, stage index)


def _same_state_source(a, b):
    if inspect.isclass(a) or inspect.isclass(b) or inspect.isfunction(a):
        return a is b
    return type(a) is type(b)


class ApplicationBuilder:
    """Wallaroo 0.1-0.5's way to describe an application: one or more pipelines, each a source,
    steps and (for at least one) a sink. ``build()`` returns what ``application_setup`` returns.

    Every method returns the builder, so calls can be chained as in Wallaroo.
    """

    def __init__(self, name):
        if not isinstance(name, str):
            raise WallarooParameterError(
                f"ApplicationBuilder(name): the name must be a string, not {name!r}"
            )
        self.name = name
        self._flows = []
        self._open = None  # the pipeline steps are added to, until to_sink or done
        self._states = {}

    def new_pipeline(self, name, source_config):
        """Starts a pipeline at a source (a ``TCPSourceConfig``, a Kafka source config or a
        ``GenSourceConfig``)."""
        if not isinstance(name, str):
            raise WallarooParameterError(f"new_pipeline(): the name must be a string, not {name!r}")
        if any(flow.name == name for flow in self._flows):
            raise WallarooParameterError(
                f"new_pipeline({name!r}): a pipeline of that name exists already; "
                "pipeline names must be unique"
            )
        if not isinstance(source_config, (TCPSourceConfig, KafkaSourceConfig, GenSourceConfig)):
            raise WallarooParameterError(
                f"new_pipeline({name!r}): expected a TCPSourceConfig, a Kafka source config "
                f"(KafkaSourceConfig, DefaultKafkaSourceCLIParser...) or GenSourceConfig, "
                f"got {source_config!r}"
            )
        self._open = _Flow(name, source_config)
        self._flows.append(self._open)
        return self

    def to(self, computation):
        """Appends a stateless step (``compute(data)`` or ``compute_multi(data)``)."""
        self._flow("to").stages.append(as_stateless(computation, "to()"))
        return self

    def to_parallel(self, computation):
        """Appends a stateless step; every step here runs in parallel anyway."""
        self._flow("to_parallel").stages.append(as_stateless(computation, "to_parallel()"))
        return self

    def to_stateful(self, computation, state, state_name):
        """Appends a step with one state for all its messages, made by ``state`` (a state
        class, or a builder with ``build()``) and shared by every step naming ``state_name``."""
        role = f"to_stateful(state_name={state_name!r})"
        self._add_state(computation, state, state_name, "stateful", None, [state_name], role)
        return self

    def to_state_partition(
        self, computation, state, state_name, partition_function, partition_keys=None
    ):
        """Appends a step with one state per partition key: ``partition_function`` gives the
        key of each message (a str, bytes or an int), the states of ``partition_keys`` exist
        from the start and any other key's state is made when its first message comes."""
        role = f"to_state_partition(state_name={state_name!r})"
        self._add_state(
            computation, state, state_name, "partition", partition_function, partition_keys, role
        )
        return self

    def to_state_partition_u64(
        self, computation, state, state_name, partition_function, partition_keys=None
    ):
        """Like ``to_state_partition``, with partition keys that are non-negative integers
        (Wallaroo 0.1-0.4)."""
        role = f"to_state_partition_u64(state_name={state_name!r})"
        self._add_state(
            computation,
            state,
            state_name,
            "partition_u64",
            partition_function,
            partition_keys,
            role,
        )
        return self

    def to_sink(self, sink_config):
        """Ends the pipeline in a sink."""
        return self.to_sinks([sink_config])

    def to_sinks(self, sink_configs):
        """Ends the pipeline in several sinks; each receives every message."""
        flow = self._flow("to_sink")
        configs = list(sink_configs)
        if not configs:
            raise WallarooParameterError("to_sinks() needs at least one sink config")
        for config in configs:
            if not isinstance(config, (TCPSinkConfig, KafkaSinkConfig)):
                raise WallarooParameterError(
                    f"pipeline {flow.name!r}: not a sink config: {config!r}"
                )
        flow.sinks = configs
        self._open = None
        return self

    def done(self):
        """Ends the pipeline; without a sink, its last step's output is dropped."""
        self._open = None
        return self

    def build(self):
        """The application, for ``application_setup`` to return."""
        if not any(flow.sinks for flow in self._flows):
            raise WallarooParameterError(
                f"ApplicationBuilder({self.name!r}): at least one pipeline must end with "
                "to_sink(...)"
            )
        compilation = _Compilation(self._flows, self._states)
        ends = tuple(compilation.end(index) for index in range(len(self._flows)))
        return Application(self.name, Pipeline(ends, None, closed=True))

    def _flow(self, method):
        if self._open is None:
            after = "after a sink or done() " if self._flows else ""
            raise WallarooParameterError(
                f"{method}(): no pipeline to add to {after}in application {self.name!r}: "
                "call new_pipeline(name, source_config) first"
            )
        return self._open

    def _add_state(self, computation, state, state_name, kind, partition_function, keys, role):
        flow = self._flow(role.split("(")[0])
        if not isinstance(state_name, str):
            raise WallarooParameterError(f"{role}: the state name must be a string")
        step = _StateStep(computation, role)
        builder = as_state_builder(state, role)
        known = self._states.get(state_name)
        if known is None:
            known = self._states[state_name] = _State(state_name, kind, builder, state)
        elif known.kind != kind:
            raise WallarooParameterError(
                f"{role}: state {state_name!r} is used by a {known.kind.replace('_', ' ')} "
                f"step already, and cannot also be used by a {kind.replace('_', ' ')} step"
            )
        elif not _same_state_source(known.given, state):
            raise WallarooParameterError(
                f"{role}: state {state_name!r} is made by {known.given!r} already, not by "
                f"{state!r}; steps sharing a state must give the same state class or builder"
            )
        flow_index = len(self._flows) - 1
        for index, position in known.users:
            if index == flow_index:
                # The steps naming a state become one step (see _Compilation), and steps only
                # feed later ones: this one would have to feed itself.
                earlier = flow.stages[position][2]
                raise WallarooParameterError(
                    f"{role}: pipeline {flow.name!r} uses state {state_name!r} already, at its "
                    f"step {position + 1} ({earlier.label}); a state's step can take part in a "
                    "pipeline only once, since the step would have to feed itself: give this "
                    "step a state name of its own, or do both computations in the one step"
                )
        if kind == "stateful":
            key = state_name.encode()

            def extract(data):
                return key

            key_fn = _named(extract, f"{state_name} (one state)")
        else:
            key_fn, key_name = as_partition(partition_function, role)
            if kind == "partition_u64":
                key_fn = functools.partial(_u64_key, key_fn, f"{role}: {key_name!r}")
            key_fn = _named(key_fn, key_name)
        for key in _initial_keys(keys, kind, role):
            if key not in known.keys:
                known.keys.append(key)
        known.users.append((flow_index, len(flow.stages)))
        flow.stages.append(("state", state_name, step, key_fn))


def _named(fn, name):
    """``fn`` as the key extractor of a key-by step named ``name``."""
    extractor = KeyExtractor(fn)
    extractor.name = name
    return extractor


def _u64_key(fn, label, data):
    key = fn(data)
    if type(key) is not int or key < 0:
        raise TypeError(f"{label} returned {key!r}, expected a non-negative int")
    return str(key)


def _initial_keys(keys, kind, role):
    """The declared partition keys as key bytes, the way messages' keys are made."""
    from wallaroo._runtime import _key_bytes

    if keys is None:
        return []
    if kind == "stateful":
        return [keys[0].encode()]
    if isinstance(keys, (str, bytes)) or not hasattr(keys, "__iter__"):
        raise WallarooParameterError(
            f"{role}: partition_keys must be a list of keys, got {type(keys).__name__}"
        )
    result = []
    for key in keys:
        try:
            if kind == "partition_u64":
                if type(key) is not int or key < 0:
                    raise TypeError(f"{key!r} is not a non-negative int")
                key = str(key)
            result.append(_key_bytes(key, "partition key"))
        except (TypeError, ValueError, OverflowError) as error:
            raise WallarooParameterError(f"{role}: partition key {key!r}: {error}") from None
    return result


# ------------------------------------------------------------------------------------------------
# From builder pipelines to one pipeline graph


def _tag(tag, value):
    return (tag, value)


def _untag(tag, tagged):
    return tagged[1] if tagged[0] == tag else None


def _tagged_key(fn, tagged):
    return fn(tagged[1])


def _shared(users, tagged, state):
    """Runs the computation of the message's own step on the shared state; its result goes on
    tagged, so that only that step's pipeline receives it."""
    tag, value = tagged
    result = users[tag](value, state)
    return None if result is None else (tag, result)


class _Compilation:
    """Builds the 0.6 pipeline for each builder pipeline, each state's step once."""

    def __init__(self, flows, states):
        self._flows = flows
        self._states = states
        self._before = {}  # (flow, stage) -> the pipeline flowing into that stage
        self._outputs = {}  # state name -> the pipeline ending at its step
        self._in_progress = set()

    def end(self, index):
        """The whole of builder pipeline ``index``."""
        flow = self._flows[index]
        end = self._flow_before(index, len(flow.stages))
        return end.to_sinks(flow.sinks) if flow.sinks else end

    def _flow_before(self, index, position):
        known = self._before.get((index, position))
        if known is not None:
            return known
        flow = self._flows[index]
        if position == 0:
            pipeline = source(flow.name, flow.config)
        else:
            stage = flow.stages[position - 1]
            if isinstance(stage, Computation):
                pipeline = self._flow_before(index, position - 1).to(stage)
            else:
                _, state_name, step, _ = stage
                state = self._states[state_name]
                pipeline = self._output(state_name)
                if len(state.users) > 1:
                    tag = state.users.index((index, position - 1))
                    pipeline = pipeline.to(
                        Computation(
                            functools.partial(_untag, tag),
                            f"{state_name} -> {step.name}",
                            step.multi,
                        )
                    )
        self._before[(index, position)] = pipeline
        return pipeline

    def _output(self, state_name):
        known = self._outputs.get(state_name)
        if known is not None:
            return known
        if state_name in self._in_progress:
            raise WallarooParameterError(
                f"state {state_name!r}: pipelines use it and another state in opposite "
                "orders, so each state's step would need the other's output first"
            )
        self._in_progress.add(state_name)
        state = self._states[state_name]
        inputs, steps = [], []
        shared = len(state.users) > 1
        for tag, (index, position) in enumerate(state.users):
            _, _, step, extractor = self._flows[index].stages[position]
            pipeline = self._flow_before(index, position)
            if shared:
                pipeline = pipeline.to(
                    Computation(functools.partial(_tag, tag), f"{step.name} -> {state_name}")
                )
                extractor = _named(functools.partial(_tagged_key, extractor.fn), extractor.name)
            inputs.append(pipeline.key_by(extractor))
            steps.append(step)
        if shared:
            users = tuple(step.unpacked() for step in steps)
            computation = StateComputation(
                functools.partial(_shared, users), state_name, state.builder, False
            )
            merged = Pipeline(tuple(inputs), None)
        else:
            computation = StateComputation(
                steps[0].unpacked(), steps[0].name, state.builder, steps[0].multi
            )
            merged = inputs[0]
        computation.initial_keys = tuple(state.keys)
        output = merged.to(computation)
        self._in_progress.discard(state_name)
        self._outputs[state_name] = output
        return output
