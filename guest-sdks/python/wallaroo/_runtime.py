"""Compiles an application's pipeline into a table of steps and runs batches through it.

The host calls ``process(segment, batch)`` with a step index to start at. Values flow from step to
step inside this call; they leave it only at a ``key_by`` (as a routed message the host delivers
to the key's owner), at an encoder (bytes for a sink), or as a failure of one input. Nothing here
knows about WIT: ``_component`` adapts it, and tests drive it on plain CPython.
"""

import os
import pickle
import traceback
from collections import namedtuple
from dataclasses import dataclass, field

import wallaroo
from wallaroo import Decoder, GenSourceConfig, WallarooParameterError

Message = namedtuple("Message", "key payload")

PICKLE = pickle.HIGHEST_PROTOCOL

# Byte-order characters of struct formats; wasm32 is little endian, so native means little.
_BIG_ENDIAN = {">": True, "!": True, "<": False, "=": False, "@": False}
_LENGTH_SIZES = {"B": 1, "b": 1, "H": 2, "h": 2, "I": 4, "i": 4, "L": 4, "l": 4, "Q": 8, "q": 8}


@dataclass
class StepSpec:
    name: str
    kind: str


@dataclass
class SourceSpec:
    name: str
    config: tuple
    segment: int


@dataclass
class SinkSpec:
    name: str
    config: tuple


@dataclass
class AppSpec:
    name: str
    sources: list = field(default_factory=list)
    sinks: list = field(default_factory=list)
    steps: list = field(default_factory=list)


def framing(decoder):
    """The WIT framing (header length, length size, big endian) of a decoder's length_fmt."""
    fmt = decoder.length_fmt
    order, code = (fmt[0], fmt[1:]) if fmt[:1] in _BIG_ENDIAN else ("@", fmt)
    size = _LENGTH_SIZES.get(code)
    header = decoder.header_length
    if size is None or not isinstance(header, int) or header < size:
        raise WallarooParameterError(
            f"decoder {decoder.name!r}: length_fmt {fmt!r} with header_length {header!r} is not "
            f"supported; use a byte order (>, <, !, =) and one of B H I L Q, in a header at "
            f"least that long"
        )
    return (header, size, _BIG_ENDIAN[order])


def describe_error(exc):
    """``Type: message (file.py:line in function)`` for the innermost frame of ``exc``."""
    text = f"{type(exc).__name__}: {exc}"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" ({os.path.basename(last.filename)}:{last.lineno} in {last.name})"
    return text


class _Step:
    __slots__ = ("index", "name", "kind", "fn", "multi", "state_class", "sink", "next", "gen")

    def __init__(self, index, name, kind, fn=None, multi=False, state_class=None):
        self.index = index
        self.name = name
        self.kind = kind
        self.fn = fn
        self.multi = multi
        self.state_class = state_class
        self.sink = None
        self.next = []
        self.gen = None


class _Generator:
    """A GenSourceConfig's generator: initial_value() first, then apply(previous)."""

    def __init__(self, instance):
        self.instance = instance
        self.started = False
        self.previous = None
        self.done = False

    def next(self):
        if self.done:
            return None
        value = (
            self.instance.apply(self.previous) if self.started else self.instance.initial_value()
        )
        self.started = True
        self.previous = value
        if value is None:
            self.done = True
        return value


def _tuple_route(key, segment, payload):
    return ("route", key, segment, payload)


def _tuple_emit(sink, payload):
    return ("emit", sink, payload)


def _tuple_failed(index, step, key, error):
    return ("failed", index, step, key, error)


class Runtime:
    """An application module's pipeline, compiled, with the state of the keys it holds.

    ``route``, ``emit`` and ``failed`` build the output items; the defaults build tuples
    ``("route", key, segment, payload)``, ``("emit", sink, payload)`` and
    ``("failed", input, step, key, error)``.
    """

    def __init__(self, module, route=_tuple_route, emit=_tuple_emit, failed=_tuple_failed):
        setup = getattr(module, "application_setup", None)
        if not callable(setup):
            where = os.path.basename(getattr(module, "__file__", None) or module.__name__)
            raise WallarooParameterError(
                f"{where}: no application_setup(args) function; a Wallaroo application defines "
                f"one and returns wallaroo.build_application(...) from it"
            )
        self._setup = setup
        self._route, self._emit, self._failed = route, emit, failed
        self._steps = None
        self._states = {}
        self._dirty = set()
        # Where the message being processed is, for failure reports.
        self._at = 0
        self._key = None

    # -- describe ---------------------------------------------------------------------------

    def describe(self, args):
        app = self._setup(list(args))
        if not isinstance(app, wallaroo.Application):
            raise WallarooParameterError(
                "application_setup(args) must return wallaroo.build_application(...), "
                f"it returned {app!r}"
            )
        self._steps = []
        spec = AppSpec(app.name)
        self._compile(app.pipeline._node, spec)
        spec.steps = [StepSpec(s.name, s.kind) for s in self._steps]
        return spec

    def _new_step(self, name, kind, **kwargs):
        step = _Step(len(self._steps), name, kind, **kwargs)
        self._steps.append(step)
        return step

    def _compile(self, node, spec):
        """Adds the steps of ``node`` (children first); returns the steps whose output flows
        onward from it."""
        tails = []
        for child in node.children:
            tails.extend(self._compile(child, spec))
        for stage in node.stages:
            if stage[0] == "source":
                tails = [self._source_step(stage[1], stage[2], spec)]
                continue
            if stage[0] == "sinks":
                for config in stage[1]:
                    step = self._new_step(config.encoder.name, "encoder", fn=config.encoder.fn)
                    step.sink = len(spec.sinks)
                    spec.sinks.append(
                        SinkSpec(f"{config.encoder.name}", ("tcp", config.host, config.port))
                    )
                    for tail in tails:
                        tail.next.append(step.index)
                tails = []
                continue
            user = stage[1]
            step = self._new_step(
                user.name, user.kind, fn=user.fn, multi=user.multi, state_class=user.state_class
            )
            for tail in tails:
                tail.next.append(step.index)
            tails = [step]
        return tails

    def _source_step(self, name, config, spec):
        if isinstance(config, GenSourceConfig):
            step = self._new_step(type(config.generator).__name__, "decoder")
            step.gen = _Generator(config.generator)
            spec.sources.append(SourceSpec(name, ("generator",), step.index))
            return step
        decoder = config.decoder
        if not isinstance(decoder, Decoder):
            raise WallarooParameterError(f"source {name!r} has no decoder")
        header, size, big = framing(decoder)
        step = self._new_step(decoder.name, "decoder", fn=decoder.fn)
        spec.sources.append(
            SourceSpec(name, ("tcp", config.host, config.port, header, size, big), step.index)
        )
        return step

    # -- process ----------------------------------------------------------------------------

    def process(self, segment, batch):
        steps = self._steps
        if steps is None:
            raise RuntimeError("process called before describe")
        if not 0 <= segment < len(steps):
            raise RuntimeError(
                f"unknown segment {segment} (the application has {len(steps)} steps)"
            )
        start = steps[segment]
        out = []
        for i, message in enumerate(batch):
            mark = len(out)
            self._at = segment
            try:
                if start.kind == "decoder":
                    self._key = None
                    value = start.gen.next() if start.gen else start.fn(message.payload)
                    if value is not None:
                        self._forward(start, value, None, out)
                else:
                    key = bytes(message.key)
                    self._key = key
                    self._run(start, pickle.loads(message.payload), key, out)
            except Exception as exc:  # noqa: BLE001 - any user error fails only this message
                del out[mark:]
                key = self._key
                out.append(self._failed(i, self._at, key, describe_error(exc)))
        return out

    def _forward(self, step, value, key, out):
        steps = self._steps
        for n in step.next:
            self._run(steps[n], value, key, out)

    def _results(self, step, result, key, out):
        if result is None:
            return
        if step.multi:
            for value in result:
                if value is not None:
                    self._forward(step, value, key, out)
        else:
            self._forward(step, result, key, out)

    def _run(self, step, value, key, out):
        self._at = step.index
        kind = step.kind
        if kind == "stateless":
            self._results(step, step.fn(value), key, out)
        elif kind == "stateful":
            if key is None:
                # Unkeyed state lives under the empty key, on the one worker that owns it.
                out.append(self._route(b"", step.index, pickle.dumps(value, PICKLE)))
                return
            slot = (step.index, key)
            state = self._states.get(slot)
            if state is None:
                state = self._states[slot] = step.state_class()
            self._dirty.add(slot)
            self._results(step, step.fn(value, state), key, out)
        elif kind == "key-by":
            new_key = self._key_bytes(step, step.fn(value))
            payload = pickle.dumps(value, PICKLE)
            for n in step.next:
                out.append(self._route(new_key, n, payload))
        elif kind == "encoder":
            data = step.fn(value)
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(
                    f"encoder {step.name!r} returned {type(data).__name__}, expected bytes"
                )
            out.append(self._emit(step.sink, bytes(data)))
        else:
            self._forward(step, value, key, out)

    def _key_bytes(self, step, key):
        if isinstance(key, str):
            return key.encode("utf-8")
        if isinstance(key, (bytes, bytearray)):
            return bytes(key)
        if isinstance(key, int) and not isinstance(key, bool):
            return chr(key).encode("utf-8")
        raise TypeError(
            f"key extractor {step.name!r} returned {type(key).__name__}, expected str or bytes"
        )

    # -- state ------------------------------------------------------------------------------

    def snapshot_changed(self):
        states = self._states
        entries = [
            (step, key, pickle.dumps(states[(step, key)], PICKLE))
            for (step, key) in self._dirty
            if (step, key) in states
        ]
        self._dirty.clear()
        return entries

    def restore(self, entries):
        for step, key, value in entries:
            self._states[(step, bytes(key))] = pickle.loads(value)

    def take(self, keys):
        taken = []
        for step, key in keys:
            state = self._states.pop((step, bytes(key)), None)
            self._dirty.discard((step, bytes(key)))
            if state is not None:
                taken.append((step, bytes(key), pickle.dumps(state, PICKLE)))
        return taken
