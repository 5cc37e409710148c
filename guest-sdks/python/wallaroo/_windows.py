"""Windows over an aggregation (Wallaroo 0.6's ``range_windows`` and ``count_windows``): the
window state of one key and the rules that fill and fire it, in plain Python.

A window step keeps one state object per key, like any state computation: it is pickled into
checkpoints, restored, moved with its key group and carried across a swap, so open windows and
their accumulators survive everything keyed state survives. What is due to fire follows from
that state and the step's watermark alone, so nothing else needs saving.

Times are integer nanoseconds since the Unix epoch. A watermark ``w`` says that no message with
an event time before ``w`` is still to come; a range window ``[start, start + range)`` fires once
the watermark reaches ``start + range + delay``.
"""

import heapq
import inspect
import math

from wallaroo import WallarooParameterError, _builder

# Wallaroo's late data policies, by the names its Python API gave them.
DROP = "drop"
FIRE_PER_MESSAGE = "fire-per-message"
PLACE_IN_OLDEST_WINDOW = "place-in-oldest-window"
_POLICIES = (DROP, FIRE_PER_MESSAGE, PLACE_IN_OLDEST_WINDOW)


class Aggregation:
    """What a window computes: a subclass defines ``initial_accumulator()``, ``update(data,
    accumulator)`` (which changes the accumulator in place, or returns the new one),
    ``combine(accumulator1, accumulator2)`` (a new accumulator holding both; sliding windows
    use it to join the slices they share) and ``output(key, accumulator)`` (the window's
    result, or None for no output). ``name()`` names the step; it defaults to the class name."""

    def name(self):
        return type(self).__name__


_METHODS = (
    ("initial_accumulator", 0),
    ("update", 2),
    ("combine", 2),
    ("output", 2),
    ("name", 0),
)
_EXPECTED = (
    "an aggregation has initial_accumulator(), update(data, accumulator), "
    "combine(accumulator1, accumulator2) and output(key, accumulator)"
)


def _aggregation(aggregation, where):
    """An aggregation instance from what ``over()`` was given (a class or an instance), with
    its methods checked."""
    if inspect.isclass(aggregation):
        aggregation = _builder.instance_of(aggregation, where)
    for method, arity in _METHODS:
        _builder.method_of(aggregation, method, arity, where, _EXPECTED)
    name = aggregation.name()
    if not isinstance(name, str):
        raise WallarooParameterError(f"{where}: name() returned {name!r}, expected a str")
    return aggregation


def _duration(value, what, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise WallarooParameterError(
                f"{what} must be a whole number of nanoseconds (use wallaroo.seconds(...) and "
                f"the like), got {value!r}"
            )
    if value < 0 or (value == 0 and not allow_zero):
        least = "0 or more" if allow_zero else "more than 0"
        raise WallarooParameterError(f"{what} must be {least} nanoseconds, got {value}")
    return value


class RangeWindowsBuilder:
    """``range_windows(range)``: windows of ``range`` nanoseconds of event time, tumbling unless
    ``with_slide`` makes them slide. Each ``with_`` method may be called once."""

    def __init__(self, window_range):
        self.range = _duration(window_range, "range_windows(range)")
        self.slide = None
        self.delay = None
        self.late_data_policy = None

    def with_slide(self, slide):
        """Windows start every ``slide`` nanoseconds (at most the range); they overlap when the
        slide is shorter than the range."""
        self._once("slide", "with_slide")
        slide = _duration(slide, "with_slide(slide)")
        if slide > self.range:
            raise WallarooParameterError(
                f"with_slide({slide}): the slide cannot be longer than the range ({self.range}); "
                "events between windows would belong to none"
            )
        self.slide = slide
        return self

    def with_delay(self, delay):
        """Each window fires ``delay`` nanoseconds of event time after its end, giving late
        messages that long to arrive."""
        self._once("delay", "with_delay")
        self.delay = _duration(delay, "with_delay(delay)", allow_zero=True)
        return self

    def with_late_data_policy(self, policy):
        """What happens to a message that arrives after every window it belongs to has fired:
        ``"drop"`` (the default), ``"fire-per-message"`` (it gets a window of its own, output at
        once) or ``"place-in-oldest-window"`` (it joins the oldest window still open)."""
        self._once("late_data_policy", "with_late_data_policy")
        self.late_data_policy = _policy(policy)
        return self

    def over(self, aggregation):
        """The window step, computing ``aggregation`` (a subclass of ``Aggregation``, or an
        instance of one) over each window."""
        slide = self.range if self.slide is None else self.slide
        delay = 0 if self.delay is None else self.delay
        policy = DROP if self.late_data_policy is None else self.late_data_policy
        return RangeWindows(self.range, slide, delay, policy, aggregation)

    def _once(self, field, method):
        if getattr(self, field) is not None:
            raise WallarooParameterError(f"call {method}() once per window specification")


def _policy(policy):
    text = policy if isinstance(policy, str) else getattr(policy, "value", policy)
    normal = text.replace("_", "-").lower() if isinstance(text, str) else None
    if normal not in _POLICIES:
        choices = ", ".join(repr(p) for p in _POLICIES)
        raise WallarooParameterError(f"unknown late data policy {policy!r}: use one of {choices}")
    return normal


class CountWindowsBuilder:
    """``count_windows(n)``: for each key, a window of every ``n`` messages."""

    def __init__(self, count):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise WallarooParameterError(
                f"count_windows(count) needs a whole number of 1 or more, got {count!r}"
            )
        self.count = count

    def over(self, aggregation):
        return CountWindows(self.count, aggregation)


class WindowStep:
    """What window steps have in common: the aggregation and the step's name."""

    kind = "windows"
    state_class = None
    multi = True
    returns_changed = False
    initial_keys = ()

    def __init__(self, aggregation, where):
        self.aggregation = _aggregation(aggregation, where)
        self.name = self.aggregation.name()

    def _output(self, key, accumulator):
        result = self.aggregation.output(_user_key(key), accumulator)
        return () if result is None else (result,)

    def _fresh(self, data):
        aggregation = self.aggregation
        accumulator = aggregation.initial_accumulator()
        return _updated(aggregation, data, accumulator)


def _updated(aggregation, data, accumulator):
    result = aggregation.update(data, accumulator)
    return accumulator if result is None else result


def _user_key(key):
    """A routing key as the aggregation's ``output`` sees it: text where it is UTF-8, as
    Wallaroo's keys were."""
    try:
        return key.decode()
    except UnicodeDecodeError:
        return key


class Failure:
    """A window that could not be computed: ``error`` is what combining or outputting it
    raised."""

    __slots__ = ("error",)

    def __init__(self, error):
        self.error = error


class RangeWindowState:
    """One key's open range windows: ``panes`` maps the start of each slice of event time that
    holds data to its accumulator, and ``fired`` is the start of the first window that has not
    fired (None before any has). A slice is ``gcd(range, slide)`` long, so each window is a
    whole number of slices and each message updates one."""

    __slots__ = ("panes", "fired")

    def __init__(self):
        self.panes = {}
        self.fired = None

    def __getstate__(self):
        return (self.panes, self.fired)

    def __setstate__(self, fields):
        self.panes, self.fired = fields

    def __repr__(self):
        return f"<windows {sorted(self.panes)} from {self.fired}>"


class RangeWindows(WindowStep):
    """A range window step: see ``RangeWindowsBuilder``."""

    def __init__(self, window_range, slide, delay, policy, aggregation):
        super().__init__(aggregation, "range_windows(...).over()")
        self.range = window_range
        self.slide = slide
        self.delay = delay
        self.policy = policy
        self.pane = math.gcd(window_range, slide)

    def new_state(self):
        return RangeWindowState()

    def _first_window(self, time):
        """The start of the first window holding ``time``."""
        return ((time - self.range) // self.slide + 1) * self.slide

    def _oldest_open(self, watermark):
        """The start of the oldest window that has not fired at ``watermark``."""
        return self._first_window(watermark - self.delay)

    def _next_window(self, state):
        """The start of the next window of ``state`` to fire (None without data): the first
        holding its oldest slice, unless that one fired already."""
        if not state.panes:
            return None
        start = self._first_window(min(state.panes))
        fired = state.fired
        return start if fired is None or start > fired else fired

    def due(self, state):
        """When ``state``'s next window fires (the watermark it waits for), or None."""
        start = self._next_window(state)
        return None if start is None else start + self.range + self.delay

    def apply(self, state, data, event_time, watermark, key):
        """Adds a message with ``event_time`` to the windows of ``state``, given the step's
        watermark. Returns ``(outputs, late)``: what fires at once (only a late message under
        ``fire-per-message``) and whether the message was late: too old for the first window
        it belongs to, which has fired (or is due) already."""
        first, fired = self._first_window(event_time), state.fired
        if first + self.range + self.delay > watermark and (fired is None or first >= fired):
            pane = event_time // self.pane * self.pane
            late = False
        elif self.policy == PLACE_IN_OLDEST_WINDOW:
            pane = self._oldest_open(watermark)
            if fired is not None and pane < fired:
                pane = fired
            late = True
        elif self.policy == FIRE_PER_MESSAGE:
            return self._output(key, self._fresh(data)), True
        else:
            return (), True
        panes = state.panes
        accumulator = panes.get(pane)
        if accumulator is None:
            panes[pane] = self._fresh(data)
        else:
            panes[pane] = _updated(self.aggregation, data, accumulator)
        return (), late

    def fire(self, state, watermark, key):
        """``(time, output)`` for every output of the windows of ``state`` that are due at
        ``watermark``, oldest first, with the slices no later window needs removed. ``time``
        is the window's last instant, the output's event time; a window that failed gives a
        ``Failure``."""
        panes = state.panes
        outputs = []
        aggregation = self.aggregation
        cutoff = watermark - self.delay - self.range  # windows starting at or before it fire
        while panes:
            start = self._next_window(state)
            if start > cutoff:
                break
            end = start + self.range
            inside = sorted(p for p in panes if p < end)
            try:
                accumulator = aggregation.initial_accumulator()
                for pane in inside:
                    accumulator = aggregation.combine(accumulator, panes[pane])
                for output in self._output(key, accumulator):
                    outputs.append((end - 1, output))
            except Exception as error:  # the window is gone; its failure is reported
                outputs.append((end - 1, Failure(error)))
            # Slices before the next window's start belong to no window left.
            following = state.fired = start + self.slide
            for pane in inside:
                if pane < following:
                    del panes[pane]
        return outputs


class CountWindowState:
    """One key's open count window: how many messages it holds and their accumulator."""

    __slots__ = ("count", "accumulator")

    def __init__(self):
        self.count = 0
        self.accumulator = None

    def __getstate__(self):
        return (self.count, self.accumulator)

    def __setstate__(self, fields):
        self.count, self.accumulator = fields


class CountWindows(WindowStep):
    """A count window step: see ``CountWindowsBuilder``."""

    def __init__(self, count, aggregation):
        super().__init__(aggregation, "count_windows(...).over()")
        self.count = count

    def new_state(self):
        return CountWindowState()

    def due(self, state):
        return None

    def apply(self, state, data, event_time, watermark, key):
        if state.count == 0:
            state.accumulator = self._fresh(data)
        else:
            state.accumulator = _updated(self.aggregation, data, state.accumulator)
        state.count += 1
        if state.count < self.count:
            return (), False
        accumulator = state.accumulator
        state.count, state.accumulator = 0, None
        return self._output(key, accumulator), False

    def fire(self, state, watermark, key):
        return []


class Timers:
    """The keys of one window step in the order their next windows fire: a heap of ``(due,
    key)``. Entries go stale when a key's windows change; ``pop_due`` checks each against the
    key's state, so nothing needs removing."""

    def __init__(self, step, states):
        self._step = step
        self._states = states
        self._heap = []
        self._queued = {}  # key -> the due time it is queued for

    def touch(self, key, state):
        """Queues ``key`` for its state's next window, unless it is queued for that time."""
        due = self._step.due(state)
        if due is not None and self._queued.get(key) != due:
            self._queued[key] = due
            heapq.heappush(self._heap, (due, key))

    def pop_due(self, watermark):
        """The keys with a window due at ``watermark``, in firing order, each once."""
        heap, queued, states, step = self._heap, self._queued, self._states, self._step
        while heap and heap[0][0] <= watermark:
            due, key = heapq.heappop(heap)
            if queued.get(key) != due:
                continue  # stale: the key was queued again for another time
            del queued[key]
            state = states.get(key)
            if state is not None and step.due(state) == due:
                yield key, state

    def rebuild(self):
        """Queues every key again (after a restore put states in)."""
        self._heap, self._queued = [], {}
        for key, state in self._states.items():
            self.touch(key, state)
