"""Runs a Wallaroo application behind the WIT ``guest`` interface, in plain Python.

``describe`` compiles the application's pipeline into a table of steps, numbered the same way on
every instance, and precomputes for every step a closure that runs it and hands its output
straight to the next step's closure. ``process`` then only calls closures: segments are fused,
and a message leaves the guest only at a ``key_by``, at a keyed step reached without a key, or at
a sink. Outputs go straight into the format the caller chose: tuples for tests, or the flat
``outputs`` buffer of the WIT contract (``wallaroo._wire``) for the component. Nothing here imports
the generated bindings, so it runs (and is tested) on plain CPython; ``wallaroo._component``
adapts it to the WIT exports.
"""

import datetime
import inspect
import io
import os
import pickle
from dataclasses import dataclass
from itertools import islice
from typing import NamedTuple

from wallaroo import (
    Application,
    Computation,
    GenSourceConfig,
    KafkaSinkConfig,
    KafkaSourceConfig,
    KeyExtractor,
    OldState,
    SinkStage,
    SourceStage,
    StateComputation,
    WallarooParameterError,
    _windows,
    _wire,
)
from wallaroo._expiry import Expiry, stamped, unstamped
from wallaroo._windows import CountWindows, Failure, RangeWindows, Timers, _user_key

_SDK_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_dumps = pickle.dumps
_loads = pickle.loads


# ------------------------------------------------------------------------------------------------
# The description, mirroring the WIT records


class Message(NamedTuple):
    """One message of a batch (any ``(key, payload)`` pair or ``(key, payload, event_time)``
    triple will do). The key is empty in a source's segment; elsewhere it is the routing key
    the message was sent with. The event time is in nanoseconds since the Unix epoch."""

    key: bytes
    payload: bytes
    event_time: int = 0


@dataclass(frozen=True)
class StepSpec:
    name: str
    kind: str  # "decoder", "stateless", "stateful", "key-by" or "encoder"


@dataclass(frozen=True)
class SourceSpec:
    name: str
    # ("tcp", host, port, header_length, length_size, big_endian), ("generator",) or
    # ("kafka", topic, brokers, ((property, value), ...))
    config: tuple
    segment: int
    # Whether the source's event times come from its event_time function.
    event_time_from_data: bool = False


@dataclass(frozen=True)
class SinkSpec:
    name: str
    config: tuple  # ("tcp", host, port) or ("kafka", topic, brokers, ((property, value), ...))


@dataclass(frozen=True)
class AppSpec:
    name: str
    sources: list
    sinks: list
    steps: list


# ------------------------------------------------------------------------------------------------
# Errors


class StepFailed(Exception):
    """User code failed at ``step``; ``text`` is ready for the dead-letter report.

    Step closures raise it so that the batch loop learns which step failed without tracking the
    current step on every call.
    """

    def __init__(self, step, text):
        super().__init__(text)
        self.step = step
        self.text = text


def error_text(error, where=None):
    """One line saying what went wrong and where, e.g.
    ``ZeroDivisionError: division by zero (word_count.py:42 in count_word)``.

    The place is the innermost frame outside this SDK, which is the user's code whenever user
    code raised; otherwise ``where`` (the definition of the step's function, for results of the
    wrong type).
    """
    try:
        message = str(error)
    except Exception:  # a user exception whose __str__ itself fails
        message = "<unprintable message>"
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    location = _user_location(error.__traceback__) or where
    return f"{text} ({location})" if location else text


def _user_location(tb):
    location = None
    while tb is not None:
        code = tb.tb_frame.f_code
        if not code.co_filename.startswith(_SDK_DIR):
            location = f"{os.path.basename(code.co_filename)}:{tb.tb_lineno} in {code.co_name}"
        tb = tb.tb_next
    return location


def _definition_site(fn):
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    return f"{os.path.basename(code.co_filename)}:{code.co_firstlineno} in {code.co_name}"


# ------------------------------------------------------------------------------------------------
# Compiling the pipeline into a step table

_STEP_KINDS = {
    Computation: "stateless",
    StateComputation: "stateful",
    KeyExtractor: "key-by",
    RangeWindows: "stateful",
    CountWindows: "stateful",
}

# struct byte-order characters: big endian or not. Native order ('@', or none) is little endian
# because the guest is wasm32.
_BYTE_ORDERS = {">": True, "!": True, "<": False, "=": False, "@": False}
# struct integer codes and their standard sizes.
_LENGTH_SIZES = {"B": 1, "b": 1, "H": 2, "h": 2, "I": 4, "i": 4, "L": 4, "l": 4, "Q": 8, "q": 8}


class _Step:
    """A step while the table is being built."""

    def __init__(self, name, kind, stage):
        self.name = name
        self.kind = kind
        self.stage = stage  # the decorated function, or the GenSourceConfig of a generator
        self.successors = []  # ids of the steps that receive this step's output
        self.sink = None  # for encoders, the sink id
        self.kafka = False  # for encoders, whether the sink is a Kafka topic
        self.event_time = None  # for a source's decoder, the source's event-time function


class _Compiler:
    """Numbers the steps of a pipeline graph: upstream before downstream, sources and merged
    pipelines in the order the application wrote them, so the same setup gives the same table.
    ``args`` are the application's, for the sources and sinks that read their settings there."""

    def __init__(self, args):
        self.args = args
        self.steps = []
        self.sources = []
        self.sinks = []
        self._exits = {}  # pipeline -> ids of the steps whose output flows out of it

    def walk(self, pipeline):
        """Adds ``pipeline``'s steps (upstream first, each pipeline once) and returns the ids of
        the steps whose output leaves it."""
        exits = self._exits.get(pipeline)
        if exits is not None:
            return exits
        inputs = []
        for parent in pipeline._parents:
            for step_id in self.walk(parent):
                if step_id not in inputs:
                    inputs.append(step_id)
        stage = pipeline._stage
        if stage is None:  # a merge: both flows continue
            exits = inputs
        elif isinstance(stage, SourceStage):
            exits = [self._add_source(stage)]
        elif isinstance(stage, SinkStage):
            for config in stage.configs:
                self._link(inputs, self._add_sink(config))
            exits = []
        else:
            step_id = self._add(stage.name, _STEP_KINDS[type(stage)], stage)
            self._link(inputs, step_id)
            exits = [step_id]
        self._exits[pipeline] = exits
        return exits

    def _add(self, name, kind, stage):
        self.steps.append(_Step(name, kind, stage))
        return len(self.steps) - 1

    def _link(self, inputs, step_id):
        for input_id in inputs:
            self.steps[input_id].successors.append(step_id)

    def _add_source(self, stage):
        config = stage.config
        if isinstance(config, GenSourceConfig):
            step_id = self._add(type(config.generator).__name__, "decoder", config)
            spec = ("generator",)
        elif isinstance(config, KafkaSourceConfig):
            step_id = self._add(config.decoder.name, "decoder", config.decoder)
            spec = config._spec(self.args)
        else:
            step_id = self._add(config.decoder.name, "decoder", config.decoder)
            spec = ("tcp", str(config.host), str(config.port), *_framing(config.decoder))
        self.steps[step_id].event_time = stage.event_time
        self.sources.append(SourceSpec(stage.name, spec, step_id, stage.event_time is not None))
        return step_id

    def _add_sink(self, config):
        encoder = config.encoder
        step_id = self._add(encoder.name, "encoder", encoder)
        self.steps[step_id].sink = len(self.sinks)
        if isinstance(config, KafkaSinkConfig):
            self.steps[step_id].kafka = True
            spec = config._spec(self.args)
        else:
            spec = ("tcp", str(config.host), str(config.port))
        self.sinks.append(SinkSpec(encoder.name, spec))
        return step_id


def _framing(decoder):
    """``(header_length, length_size, big_endian)`` for the host, from the decoder's struct
    format: an optional byte-order character and one integer code."""
    fmt, header_length = decoder.length_fmt, decoder.header_length
    code = fmt[1:] if isinstance(fmt, str) and fmt[:1] in _BYTE_ORDERS else fmt
    if not isinstance(code, str) or code not in _LENGTH_SIZES:
        raise WallarooParameterError(
            f"decoder {decoder.name!r}: length_fmt {fmt!r} must be a byte order (>, !, <, =, @ "
            "or none) followed by one integer code (B, b, H, h, I, i, L, l, Q or q)"
        )
    length_size = _LENGTH_SIZES[code]
    if type(header_length) is not int or not length_size <= header_length < 2**32:
        raise WallarooParameterError(
            f"decoder {decoder.name!r}: header_length {header_length!r} cannot hold the "
            f"{length_size}-byte length of length_fmt {fmt!r}"
        )
    return header_length, length_size, _BYTE_ORDERS.get(fmt[0], False)


# ------------------------------------------------------------------------------------------------
# Step closures
#
# A runner takes (value, key, out): ``key`` is the routing key in context (None when no key is
# known yet, i.e. in a source's segment) and ``out`` the batch's outputs: a list of tuples, or
# with ``flat`` the parts of the WIT ``outputs`` buffer. The try blocks wrap user code only,
# so a downstream StepFailed passes through untouched.


def _downstream(successors, runners):
    """The runner that feeds a step's output to all its successors."""
    if len(successors) == 1:
        return runners[successors[0]]
    targets = [runners[step_id] for step_id in successors]

    def fan_out(value, key, out):
        for run in targets:
            run(value, key, out)

    return fan_out


def _results(result, label):
    """A multi step's result as a sequence (lists are checked for by the caller)."""
    if isinstance(result, (list, tuple)):
        return result
    raise TypeError(f"{label} returned {type(result).__name__}, expected a list")


def _forwarder(multi, nxt):
    """Passes a step's result on: each non-None element of a _multi step's list, or the
    result itself. A runner that can take a whole list at once has it as its ``many``
    attribute."""
    if not multi:
        return nxt
    many = getattr(nxt, "many", None)
    if many is not None:  # the successor takes the whole list
        return many

    def forward(result, key, out):
        for item in result:
            if item is not None:
                nxt(item, key, out)

    return forward


def _stateless(step_id, computation, nxt):
    fn, multi = computation.fn, computation.multi
    forward = _forwarder(multi, nxt)
    label, where = f"{computation.kind} {computation.name!r}", _definition_site(fn)

    def run(value, key, out):
        try:
            result = fn(value)
            if multi and result is not None and type(result) is not list:
                result = _results(result, label)
        except Exception as error:
            raise StepFailed(step_id, error_text(error, where)) from None
        if result is not None:
            forward(result, key, out)

    return run


def _stateful(step_id, computation, nxt, states, changed, route, clock, expiry):
    fn, multi, new_state = computation.fn, computation.multi, computation.state_class
    forward = _forwarder(multi, nxt)
    label, where = f"{computation.kind} {computation.name!r}", _definition_site(fn)
    touch = None if expiry is None else expiry.touch

    def run(value, key, out):
        if key is None:
            # Reached before any key_by: all unkeyed messages share the state of key b"",
            # which lives wherever the host routes that key.
            route(out, b"", step_id, _pickled(value, step_id))
            return
        try:
            state = states.get(key)
            if state is None:
                state = states[key] = new_state()
            changed[key] = None
            if touch is not None:
                touch(key, clock.now)
            result = fn(value, state)
            if multi and result is not None and type(result) is not list:
                result = _results(result, label)
        except Exception as error:
            raise StepFailed(step_id, error_text(error, where)) from None
        if result is not None:
            forward(result, key, out)

    # A sink's encoder right after this step (the commonest end of a pipeline) runs inline in
    # the routed loop below, in the component.
    encoder = None if multi else getattr(nxt, "inline", None)
    if encoder is not None:
        enc_step, encode, enc_label, enc_where, sink, heads = encoder
        emit_head = _wire.EMIT_HEAD

    def run_routed(batch, out, failed):
        # A batch routed to this step, with run's work and _unpickled inlined in one loop: the
        # component's hot path, with no call per message but the user's. Routed messages always
        # have a key.
        for clock.index, (key, payload, clock.now) in enumerate(batch):
            mark = len(out)
            try:
                try:
                    if not payload:
                        value = key.decode()
                    elif payload[2] == _SHORT_STR_OPCODE:
                        value = payload[4:-1].decode()
                    else:
                        value = _loads(payload)
                except Exception as error:
                    raise StepFailed(
                        step_id, f"cannot unpickle the message: {error_text(error)}"
                    ) from None
                try:
                    state = states.get(key)
                    if state is None:
                        state = states[key] = new_state()
                    changed[key] = None
                    if touch is not None:
                        touch(key, clock.now)
                    result = fn(value, state)
                    if multi and result is not None and type(result) is not list:
                        result = _results(result, label)
                except Exception as error:
                    raise StepFailed(step_id, error_text(error, where)) from None
                if result is None:
                    continue
                if encoder is None:
                    forward(result, key, out)
                    continue
                try:
                    data = encode(result)
                    if type(data) is not bytes:
                        data = _encoded(data, enc_label)
                except Exception as error:
                    raise StepFailed(enc_step, error_text(error, enc_where)) from None
                n = len(data)
                out.append(heads[n] if n < 256 else emit_head(_wire.EMIT, sink, n))
                out.append(data)
            except StepFailed as failure:
                del out[mark:]
                failed(out, clock.index, failure.step, key, failure.text)

    return run, run_routed


def _expirer(step_id, computation, nxt, expiry, clock):
    """``expire(watermark, out, failed)`` of an expiring state step: removes the state of
    every key whose deadline the watermark reached and outputs what ``on_expire`` makes of it,
    with the deadline as event time."""
    on_expire = computation.on_expire
    forward = _forwarder(computation.multi, nxt)
    label = f"on_expire of {computation.kind} {computation.name!r}"
    where = _definition_site(on_expire) if on_expire is not None else ""

    def expire(watermark, out, failed):
        for deadline, key, state in expiry.due(watermark):
            if on_expire is None:
                continue
            clock.now = deadline
            mark = len(out)
            try:
                try:
                    result = on_expire(_user_key(key), state)
                    if computation.multi and result is not None and type(result) is not list:
                        result = _results(result, label)
                except Exception as error:
                    raise StepFailed(step_id, error_text(error, where)) from None
                if result is not None:
                    forward(result, key, out)
            except StepFailed as failure:
                del out[mark:]
                failed(out, None, failure.step, key, failure.text)

    return expire


def _key_bytes(key, label):
    """A key extractor's result as bytes, the way Wallaroo converted keys."""
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, (bytes, bytearray)):
        return bytes(key)
    if isinstance(key, int):
        return chr(key).encode()
    raise TypeError(f"{label} returned {type(key).__name__}, expected str, bytes or int")


# Payloads between segments are pickles. A str, the value most often routed by key, is written
# and read without a Pickler: pickle.dumps and pickle.loads build a pickler object per call and
# look up optional attributes by raising and clearing AttributeError. In a Wasm guest that
# costs about 13,000 and 7,000 instructions for a short str, against about 3,000 each way
# here: more than the rest of a message's way through the SDK. The bytes written are still a pickle
# (PROTO 5, SHORT_BINUNICODE, STOP; no frame or memo, both optional) that pickle.loads reads as
# the same str. pickle.dumps never writes SHORT_BINUNICODE right after PROTO (it frames
# anything of 4 bytes or more), so that opcode at byte 2 marks the short form for the reader.
_SHORT_STR = tuple(b"\x80\x05\x8c" + bytes([n]) for n in range(256))
_SHORT_STR_OPCODE = _SHORT_STR[0][2]
_STOP = b"."
_LONG = bytes(256)  # stands for a str that does not take the short form


def _pickled(value, step_id):
    if type(value) is str:
        try:
            data = value.encode()
        except UnicodeEncodeError:  # lone surrogates: pickle writes them
            data = _LONG
        if len(data) < 256:
            return _SHORT_STR[len(data)] + data + _STOP
    try:
        return _dumps(value, _PROTOCOL)
    except Exception as error:
        raise StepFailed(step_id, f"cannot pickle the message: {error_text(error)}") from None


# A str routed by itself (its key extractor returned the very value) travels as its key alone,
# with an empty payload, which no pickle is.
_ITSELF = b""


def _unpickled(payload, key):
    """The value of a routed message whose payload ``_pickled`` wrote, or ``_ITSELF``."""
    if not payload:
        return key.decode()
    if payload[2] == _SHORT_STR_OPCODE:
        return payload[4:-1].decode()
    return _loads(payload)


def _key_by(step_id, extractor, successors, flat, clock):
    fn = extractor.fn
    label, where = f"key_extractor {extractor.name!r}", _definition_site(fn)
    route_head, join = _wire.ROUTE_HEAD, b"".join

    if not flat:

        def run(value, key, out):
            try:
                extracted = fn(value)
                if type(extracted) is str:
                    new_key = extracted.encode()
                elif type(extracted) is bytes:
                    new_key = extracted
                else:
                    new_key = _key_bytes(extracted, label)
            except Exception as error:
                raise StepFailed(step_id, error_text(error, where)) from None
            if extracted is value and type(value) is str:
                payload = _ITSELF
            else:
                payload = _pickled(value, step_id)
            for successor in successors:
                out.append(("route", new_key, successor, payload, clock.now))

        return run

    # The component's hot path: the key extractor, the str shortcut of _pickled and the route
    # records written in place, with no further call. It takes a whole list of values (a multi
    # step's result, None items skipped): one call per list instead of one per value.
    only = successors[0] if len(successors) == 1 else None
    # Route heads, up to their event time, for a str routed by itself with a key of n < 256
    # bytes and no payload.
    lengths = _wire.ROUTE_LENGTHS
    own_heads = (
        tuple(lengths(_wire.ROUTE, only, n, 0) for n in range(256)) if only is not None else None
    )
    route_tag = _wire.ROUTE
    # A batch's messages mostly share one event time (a source stamps a whole read): its packed
    # form is kept for the next value.
    pack_time = _wire.TIME
    packed = [None, b""]

    def run_many_flat(values, key, out):
        append = out.append
        now = clock.now
        if packed[0] != now:
            packed[0], packed[1] = now, pack_time(now)
        time = packed[1]
        for value in values:
            if value is None:
                continue
            try:
                extracted = fn(value)
                if type(extracted) is str:
                    new_key = extracted.encode()
                elif type(extracted) is bytes:
                    new_key = extracted
                else:
                    new_key = _key_bytes(extracted, label)
            except Exception as error:
                raise StepFailed(step_id, error_text(error, where)) from None
            if type(value) is str:
                if extracted is value:
                    n = len(new_key)
                    if n < 256 and own_heads is not None:
                        append(own_heads[n] + time + new_key)
                    else:
                        for successor in successors:
                            append(route_head(route_tag, successor, n, 0, now) + new_key)
                    continue
                try:
                    data = value.encode()
                except UnicodeEncodeError:  # lone surrogates: pickle writes them
                    data = _LONG
                n = len(data)
                if n < 256:
                    for successor in successors:
                        head = route_head(route_tag, successor, len(new_key), n + 5, now)
                        append(join((head, new_key, _SHORT_STR[n], data, _STOP)))
                    continue
            payload = _pickled(value, step_id)
            for successor in successors:
                append(route_head(route_tag, successor, len(new_key), len(payload), now))
                append(new_key)
                append(payload)

    def run_flat(value, key, out):
        run_many_flat((value,), key, out)

    run_flat.many = run_many_flat
    return run_flat


def _windowed(step_id, window, nxt, states, changed, route, clock, late, late_record):
    """The runner of a window step (``wallaroo._windows``) and its ``fire(watermark, out,
    failed)``, which outputs every window due at the watermark. ``late`` counts the step's late
    messages, each of which ``late_record`` also reports in the outputs."""
    forward = _forwarder(True, nxt)
    apply, new_state = window.apply, window.new_state
    timers = Timers(window, states)

    def run(value, key, out):
        if key is None:  # before any key_by: one state for the whole flow, as for state steps
            route(out, b"", step_id, _pickled(value, step_id))
            return
        state = states.get(key)
        if state is None:
            state = states[key] = new_state()
        changed[key] = None
        try:
            result, is_late = apply(state, value, clock.now, clock.watermark, key)
        except Exception as error:
            raise StepFailed(step_id, error_text(error)) from None
        finally:
            timers.touch(key, state)
        if is_late:
            late[step_id] = late.get(step_id, 0) + 1
            late_record(out, clock.index, step_id)
        if result:
            forward(list(result), key, out)

    def fire(watermark, out, failed):
        for key, state in timers.pop_due(watermark):
            changed[key] = None
            for time, output in window.fire(state, watermark, key):
                clock.now = time
                mark = len(out)
                try:
                    if type(output) is Failure:
                        raise StepFailed(step_id, error_text(output.error))
                    forward([output], key, out)
                except StepFailed as failure:
                    del out[mark:]
                    failed(out, None, failure.step, key, failure.text)
            timers.touch(key, state)

    return run, fire, timers


def _encoded(data, label):
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):  # Wallaroo's Python 2 encoders returned str
        return data.encode()
    raise TypeError(
        f"{label} returned {type(data).__name__}, expected bytes, bytearray, memoryview or str"
    )


def _encoder(step_id, encoder, sink, flat, kafka):
    fn = encoder.fn
    label, where = f"encoder {encoder.name!r}", _definition_site(fn)
    if kafka:  # the encoder's result made into a record (wallaroo._wire.kafka_record)
        encode, record = fn, _wire.kafka_record

        def fn(value):
            return record(encode(value), label)

    emit_head = _wire.EMIT_HEAD
    heads = tuple(emit_head(_wire.EMIT, sink, n) for n in range(256))  # for short outputs

    if not flat:

        def run(value, key, out):
            try:
                data = fn(value)
                if type(data) is not bytes:
                    data = _encoded(data, label)
            except Exception as error:
                raise StepFailed(step_id, error_text(error, where)) from None
            out.append(("emit", sink, data))

        return run

    def run_flat(value, key, out):
        try:
            data = fn(value)
            if type(data) is not bytes:
                data = _encoded(data, label)
        except Exception as error:
            raise StepFailed(step_id, error_text(error, where)) from None
        n = len(data)
        out.append(heads[n] if n < 256 else emit_head(_wire.EMIT, sink, n))
        out.append(data)

    # What a state step's routed loop needs to run this encoder inline (see _stateful).
    run_flat.inline = (step_id, fn, label, where, sink, heads)
    return run_flat


# Entries take (payload, key, out) for one message of a batch.


def _decoder_entry(step_id, decoder, nxt):
    fn, where = decoder.fn, _definition_site(decoder.fn)

    def entry(payload, key, out):
        try:
            value = fn(payload)
        except Exception as error:
            raise StepFailed(step_id, error_text(error, where)) from None
        if value is not None:
            nxt(value, None, out)

    return entry


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def event_time_nanos(time):
    """An event-time function's result as nanoseconds since the Unix epoch."""
    if isinstance(time, datetime.datetime):
        if time.tzinfo is None:
            time = time.replace(tzinfo=datetime.UTC)
        nanos = (time - _EPOCH) // datetime.timedelta(microseconds=1) * 1000
    elif isinstance(time, (int, float)) and not isinstance(time, bool):
        if time != time or time in (float("inf"), float("-inf")):
            raise ValueError(f"event time {time!r} is not a time")
        nanos = round(time * 1_000_000_000)
    else:
        raise TypeError(
            f"event_time returned {type(time).__name__}, expected seconds since the Unix epoch "
            "(int or float) or a datetime"
        )
    if not 0 <= nanos < 2**64 - 1:
        raise ValueError(f"event time {time!r} is before 1970 or too far ahead")
    return nanos


def _timed(step_id, fn, nxt, clock):
    """Runs a source's event-time function on each decoded message, which then goes on with
    that time."""
    where = _definition_site(fn)

    def run(value, key, out):
        try:
            clock.now = event_time_nanos(fn(value))
        except Exception as error:
            raise StepFailed(step_id, f"event_time: {error_text(error, where)}") from None
        nxt(value, key, out)

    return run


_NOT_STARTED = object()
_EXHAUSTED = object()


def _generator_entry(step_id, config, nxt, ended_record):
    """Each message asks for the next value: ``initial_value()``, then ``apply(previous)``.
    A None ends the generator, which says so once (``ended_record``). After an exception the
    generator stays where it was."""
    generator = config.generator
    previous = _NOT_STARTED

    def entry(payload, key, out):
        nonlocal previous
        if previous is _EXHAUSTED:
            return
        try:
            if previous is _NOT_STARTED:
                value = generator.initial_value()
            else:
                value = generator.apply(previous)
        except Exception as error:
            raise StepFailed(step_id, error_text(error)) from None
        if value is None:
            previous = _EXHAUSTED
            ended_record(out, step_id)
            return
        previous = value
        nxt(value, None, out)

    return entry


def _batch_runner(entry, routed, clock):
    """Runs ``entry`` on every message of a batch: ``run_batch(batch, out, failed)``. A message
    whose processing fails leaves one failure in ``out`` and nothing else."""

    def run_batch(batch, out, failed):
        for clock.index, (key, payload, clock.now) in enumerate(batch):
            mark = len(out)
            try:
                entry(payload, key, out)
            except StepFailed as failure:
                del out[mark:]
                failed(out, clock.index, failure.step, key if routed else None, failure.text)

    return run_batch


def _routed_entry(step_id, run):
    """Entry for a message the host routed here: the payload is the pickled value."""

    def entry(payload, key, out):
        try:
            value = _unpickled(payload, key)
        except Exception as error:
            raise StepFailed(step_id, f"cannot unpickle the message: {error_text(error)}") from None
        run(value, key, out)

    return entry


def _check_windows(steps):
    """Refuses windows fed by another window step's output: a window's output carries the time
    its window ended, which the watermark has passed by then, so the next window step would
    take all of it for late data."""
    for step in steps:
        if not isinstance(step.stage, _windows.WindowStep):
            continue
        seen, todo = set(), list(step.successors)
        while todo:
            later = todo.pop()
            if later in seen:
                continue
            seen.add(later)
            if isinstance(steps[later].stage, _windows.RangeWindows):
                raise WallarooParameterError(
                    f"range windows {steps[later].name!r} take the output of windows "
                    f"{step.name!r}: range windows after windows are not supported yet"
                )
            todo.extend(steps[later].successors)


class _Clock:
    """The event time of the message being processed (what routes and window outputs carry
    on) and its index in the batch (None for a window a watermark fired), and the instance's
    watermark: no message older than it is still to come."""

    __slots__ = ("now", "index", "watermark")

    def __init__(self):
        self.now = 0
        self.index = None
        self.watermark = 0


class _Built(NamedTuple):
    """A step table's closures: ``entries`` maps each segment to its batch runner, ``stores``
    each stateful step to its ``(states by key, keys changed since snapshot)``, ``windows``
    each window step to its ``(fire, timers)``, ``expiring`` each state step declared with
    ``expire_after`` to its ``(expire, Expiry)``."""

    entries: dict
    stores: dict
    windows: dict
    expiring: dict


def _build(steps, flat, clock, late):
    """The closures of a step table (a ``_Built``). ``late`` receives window steps' counts of
    late messages.

    Successors always have higher ids than their inputs, so building from the last step back
    finds every successor's runner ready.
    """
    runners = [None] * len(steps)
    routed = {}  # step id -> batch runner for messages routed to it, where the step has its own
    stores = {}
    windows = {}
    expiring = {}
    if flat:

        def route(out, key, segment, payload):
            _wire.route(out, key, segment, payload, clock.now)

        late_record = _wire.late
        ended_record = _wire.ended
    else:

        def route(out, key, segment, payload):
            out.append(("route", key, segment, payload, clock.now))

        def late_record(out, index, step):
            out.append(("late", index, step))

        def ended_record(out, segment):
            out.append(("ended", segment))

    for step_id in reversed(range(len(steps))):
        step = steps[step_id]
        if step.kind == "encoder":
            runners[step_id] = _encoder(step_id, step.stage, step.sink, flat, step.kafka)
        elif step.kind == "key-by":
            runners[step_id] = _key_by(step_id, step.stage, step.successors, flat, clock)
        elif step.kind == "stateless":
            nxt = _downstream(step.successors, runners)
            runners[step_id] = _stateless(step_id, step.stage, nxt)
        elif isinstance(step.stage, _windows.WindowStep):
            states, changed = stores[step_id] = ({}, {})
            nxt = _downstream(step.successors, runners)
            runners[step_id], fire, timers = _windowed(
                step_id, step.stage, nxt, states, changed, route, clock, late, late_record
            )
            windows[step_id] = (fire, timers)
        elif step.kind == "stateful":
            # Keys declared to an ApplicationBuilder partition have their state from the start.
            initial = {key: step.stage.state_class() for key in step.stage.initial_keys}
            states, changed = stores[step_id] = (initial, {})
            nxt = _downstream(step.successors, runners)
            after = getattr(step.stage, "expire_after", None)
            expiry = None if after is None else Expiry(after, states, changed)
            runners[step_id], routed[step_id] = _stateful(
                step_id, step.stage, nxt, states, changed, route, clock, expiry
            )
            if expiry is not None:
                for key in initial:
                    expiry.restored(key, None)
                expire = _expirer(step_id, step.stage, nxt, expiry, clock)
                expiring[step_id] = (expire, expiry)

    entries = {}
    for step_id, step in enumerate(steps):
        if step.kind == "decoder":
            nxt = _downstream(step.successors, runners)
            if step.event_time is not None:
                nxt = _timed(step_id, step.event_time, nxt, clock)
            if isinstance(step.stage, GenSourceConfig):
                entry = _generator_entry(step_id, step.stage, nxt, ended_record)
            else:
                entry = _decoder_entry(step_id, step.stage, nxt)
            entries[step_id] = _batch_runner(entry, False, clock)
        elif step.kind == "stateful":
            # A stateful step reached before any key_by routes its input to itself.
            entries[step_id] = routed.get(step_id) or _batch_runner(
                _routed_entry(step_id, runners[step_id]), True, clock
            )
        if step.kind == "key-by":
            for successor in step.successors:
                entries[successor] = routed.get(successor) or _batch_runner(
                    _routed_entry(successor, runners[successor]), True, clock
                )
    return _Built(entries, stores, windows, expiring)


# ------------------------------------------------------------------------------------------------
# State of an earlier version


def _upgrades(steps):
    """``{step id: (state class, upgrade_state)}`` of the stateful steps whose state class
    converts state of earlier versions."""
    found = {}
    for step_id, step in enumerate(steps):
        cls = getattr(step.stage, "state_class", None) if step.kind == "stateful" else None
        upgrade = getattr(cls, "upgrade_state", None) if inspect.isclass(cls) else None
        if upgrade is not None:
            found[step_id] = (cls, upgrade)
    return found


class _OldStateUnpickler(pickle.Unpickler):
    """Unpickles a state an earlier version wrote: a class that is gone (its module, or its name
    in the module) becomes an ``OldState`` subclass of the same module and name."""

    _standins = {}

    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            known = self._standins.get((module, name))
            if known is None:
                known = type(name, (OldState,), {"__module__": module, "__qualname__": name})
                self._standins[module, name] = known
            return known


def _upgraded(value, cls, upgrade):
    """``(state, converted)``: the state pickled as ``value``, given to ``upgrade`` (the state
    class's ``upgrade_state``) unless it is an instance of ``cls`` already; what it returns must
    be."""
    state = _OldStateUnpickler(io.BytesIO(value)).load()
    if isinstance(state, cls):
        return state, False
    new = upgrade(state)
    if not isinstance(new, cls):
        raise TypeError(
            f"{cls.__name__}.upgrade_state returned a {type(new).__name__}, not a {cls.__name__}"
        )
    return new, True


# ------------------------------------------------------------------------------------------------
# The runtime


def _failed_tuple(out, index, step, key, error):
    out.append(("failed", index, step, key, error))


def _failed_flat(out, index, step, key, error):
    _wire.failed(out, _wire.NO_INPUT if index is None else index, step, key, error)


class Runtime:
    """One instance's application: its step table, keyed state and change marks.

    ``process`` returns a list of tuples (``("route", key, segment, payload, event_time)``,
    ``("emit", sink, payload)``, ``("failed", index, step, key, error)`` and ``("late", index,
    step)``), or with ``flat`` the
    ``outputs`` buffer of the WIT contract (``wallaroo._wire``) as bytes, as the component does.
    ``advance`` returns the same for the windows that a watermark fires; a failure there has
    no input message, and its index is None.
    """

    def __init__(self, app_module, flat=False):
        if not callable(getattr(app_module, "application_setup", None)):
            where = getattr(app_module, "__file__", None) or app_module.__name__
            raise WallarooParameterError(
                f"{os.path.basename(where)}: no application_setup(args) function"
            )
        self._app = app_module
        self._flat = flat
        self._entries = None  # segment -> its batch runner
        self._stores = None  # stateful step id -> (states by key, keys changed since snapshot)
        self._windows = {}  # window step id -> (its fire, its Timers)
        self._expiring = {}  # expiring state step id -> (its expire, its Expiry)
        self._upgrades = {}  # stateful step id -> (its state class, the class's upgrade_state)
        self._clock = _Clock()
        self.late = {}  # window step id -> how many late messages it has seen

    def describe(self, args):
        """Runs ``application_setup(args)``, compiles its pipeline and returns the AppSpec.
        Starts from empty state."""
        application = self._app.application_setup(args)
        if not isinstance(application, Application):
            raise WallarooParameterError(
                "application_setup(args) must return build_application(...), "
                f"not {type(application).__name__}"
            )
        compiler = _Compiler(args)
        compiler.walk(application.pipeline)
        _check_windows(compiler.steps)
        self._clock, self.late = _Clock(), {}
        built = _build(compiler.steps, self._flat, self._clock, self.late)
        self._entries, self._stores, self._windows, self._expiring = built
        self._upgrades = _upgrades(compiler.steps)
        return AppSpec(
            name=application.name,
            sources=compiler.sources,
            sinks=compiler.sinks,
            steps=[StepSpec(step.name, step.kind) for step in compiler.steps],
        )

    def process(self, segment, batch):
        """Runs ``segment`` over ``batch``, a sequence of ``(key, payload)`` pairs or ``(key,
        payload, event_time)`` triples such as ``Message`` (with ``flat``, triples); returns the
        outputs in input order. A message whose processing fails yields one failure item and
        nothing else; the others are unaffected."""
        if self._entries is None:
            raise RuntimeError("process called before describe")
        try:
            run_batch = self._entries[segment]
        except KeyError:
            raise RuntimeError(f"segment {segment} is not a step where a segment starts") from None
        out = []
        if self._flat:
            run_batch(batch, out, _wire.failed)
            return b"".join(out)
        batch = [m if len(m) == 3 else (m[0], m[1], 0) for m in batch]
        run_batch(batch, out, _failed_tuple)
        return out

    def advance(self, watermark):
        """Moves the instance's watermark to ``watermark`` (nanoseconds since the Unix epoch;
        it never goes back) and returns the outputs of every window it makes due, as
        ``process`` returns them: per window step in step order, per step in the order the
        windows end; then, per expiring state step, what ``on_expire`` makes of the keys whose
        state expires, in deadline order. Messages processed later are late if older than the
        watermark allows."""
        if self._entries is None:
            raise RuntimeError("advance called before describe")
        clock = self._clock
        clock.index = None
        if watermark > clock.watermark:
            clock.watermark = watermark
        out = []
        if self._flat:
            failed = _failed_flat
        else:
            failed = _failed_tuple
        for fire, _timers in self._windows.values():
            fire(clock.watermark, out, failed)
        for expire, _expiry in self._expiring.values():
            expire(clock.watermark, out, failed)
        return b"".join(out) if self._flat else out

    def snapshot_changed(self, max_entries=None):
        """``[(step, key, pickled state)]`` for at most ``max_entries`` (default: all) of the
        states touched since their last snapshot, and ``(step, key, None)`` for keys whose
        state expired since; forgets the marks of those returned once every one of them is
        pickled. Fewer than ``max_entries`` means none is left."""
        entries = []
        taken = []  # (marks, keys) whose marks go once every state is pickled
        left = max_entries

        def marked(marks):
            nonlocal left
            keys = list(marks if left is None else islice(marks, max(left, 0)))
            taken.append((marks, keys))
            if left is not None:
                left -= len(keys)
            return keys

        for step_id, (states, changed) in self._described_stores().items():
            expiry = self._expiring.get(step_id, (None, None))[1]
            for key in marked(changed):
                value = self._pickle_state(step_id, key, states[key])
                if expiry is not None:
                    value = stamped(expiry.seen[key], value)
                entries.append((step_id, key, value))
            if expiry is not None:
                entries.extend((step_id, key, None) for key in marked(expiry.removed))
        for changed, keys in taken:
            if len(keys) == len(changed):
                changed.clear()
            else:
                for key in keys:
                    del changed[key]
        return entries

    def restore(self, entries):
        """Replaces or creates the given ``(step, key, pickled state)``. Applies nothing if any
        entry is unusable.

        The host keeps the bytes it restores, so a restored state is not marked changed (a start
        would otherwise pickle every key again for its first checkpoint); one converted from an
        earlier version's state is, so the host's copy becomes this version's."""
        stores = self._described_stores()
        decoded = []
        for step_id, key, value in entries:
            store = stores.get(step_id)
            if store is None:
                raise RuntimeError(f"cannot restore state into step {step_id}: it keeps none")
            seen, value = unstamped(value)
            try:
                upgrade = self._upgrades.get(step_id)
                if upgrade is None:
                    state, converted = _loads(value), False
                else:
                    state, converted = _upgraded(value, *upgrade)
            except Exception as error:
                raise RuntimeError(
                    f"cannot restore the state of step {step_id} for key {key!r}: "
                    f"{error_text(error)}"
                ) from None
            decoded.append((step_id, store, key, state, converted, seen))
        windows, expiring = self._windows, self._expiring
        for step_id, (states, changed), key, state, converted, seen in decoded:
            states[key] = state
            if converted:
                changed[key] = None
            if step_id in windows:
                windows[step_id][1].touch(key, state)
            if step_id in expiring:
                expiring[step_id][1].restored(key, seen)

    def take(self, keys):
        """Removes the states of the given ``(step, key)`` pairs that exist and returns them as
        ``(step, key, pickled state)``."""
        stores = self._described_stores()
        taken = []
        for step_id, key in keys:
            states, changed = stores.get(step_id, ({}, {}))
            if key in states:
                value = self._pickle_state(step_id, key, states[key])
                expiry = self._expiring.get(step_id, (None, None))[1]
                if expiry is not None:
                    value = stamped(expiry.seen.get(key), value)
                    expiry.forget(key)
                taken.append((step_id, key, value))
                del states[key]
                changed.pop(key, None)
        return taken

    def _described_stores(self):
        if self._stores is None:
            raise RuntimeError("state requested before describe")
        return self._stores

    @staticmethod
    def _pickle_state(step_id, key, state):
        try:
            return _dumps(state, _PROTOCOL)
        except Exception as error:
            raise RuntimeError(
                f"cannot pickle the state of step {step_id} for key {key!r}: {error_text(error)}"
            ) from None
