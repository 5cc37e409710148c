"""State expiry: a state step declared with ``expire_after`` forgets a key's state once that
long has passed, in event time, without a message for the key.

A key's clock is the latest event time of its messages at the step; it expires when the
watermark reaches that time plus ``expire_after``. With the default ingest-time sources the
watermark follows the wall clock, so state then expires after that long in real time; with
``event_time=`` it follows the data.

The time is part of the key's durable state: the pickled state of an expiring step is
prefixed with ``HEADER`` and the time (u64, little endian), so a restore (recovery, a move, a
hot swap) carries the clock on. A state written without it (by a version without
``expire_after``) gets the watermark of the first ``advance`` after its restore as its clock.
"""

import heapq
import struct

HEADER = b"\0wallaroo-seen\x01"
_TIME = struct.Struct("<Q")
_PREFIX = len(HEADER) + _TIME.size
# The clock of a restored key whose state carried none: set at the next advance.
_UNKNOWN = -1
# The watermark once every stream has ended: every key expires.
_END = 2**64 - 1


def stamped(seen, pickled):
    """The durable form of an expiring key's state: ``HEADER``, its clock, its pickle (the
    pickle alone while its clock is unknown)."""
    if seen is None or seen < 0:
        return pickled
    return HEADER + _TIME.pack(seen) + pickled


def unstamped(value):
    """``(clock or None, pickle)`` of a state value, with or without a clock."""
    if value[: len(HEADER)] == HEADER and len(value) >= _PREFIX:
        return _TIME.unpack_from(value, len(HEADER))[0], value[_PREFIX:]
    return None, value


class Expiry:
    """The clocks of one expiring step's keys, and a heap of ``(deadline, key)`` in the order
    they may expire. Heap entries go stale when a message moves a key's clock on; ``due``
    checks each against the key's clock and queues it again for its real deadline, so a
    message costs a dict update and at most one push."""

    def __init__(self, after, states, changed):
        self.after = after
        self._states = states
        self._changed = changed
        self.seen = {}  # key -> its clock
        self._heap = []
        self._queued = set()  # keys with an entry in the heap
        self.removed = {}  # keys whose state expired since the last snapshot (ordered)

    def touch(self, key, now):
        """A message for ``key`` at event time ``now``."""
        seen = self.seen
        if now > seen.get(key, _UNKNOWN):
            seen[key] = now
        if key not in self._queued:
            self._queued.add(key)
            heapq.heappush(self._heap, (now + self.after, key))
        if self.removed:
            self.removed.pop(key, None)

    def restored(self, key, seen):
        """``key``'s state was restored, with clock ``seen`` (None: unknown)."""
        self.removed.pop(key, None)
        self.seen[key] = _UNKNOWN if seen is None else seen
        if key not in self._queued:
            self._queued.add(key)
            heapq.heappush(self._heap, (0 if seen is None else seen + self.after, key))

    def forget(self, key):
        """``key``'s state left the instance (taken for a move): nothing to expire."""
        self.seen.pop(key, None)

    def due(self, watermark):
        """Removes and yields ``(deadline, key, state)`` of every key whose deadline the
        watermark reached, in deadline order (then key order)."""
        heap, queued, seen, after = self._heap, self._queued, self.seen, self.after
        states, changed, removed = self._states, self._changed, self.removed
        while heap and heap[0][0] <= watermark:
            _, key = heapq.heappop(heap)
            clock = seen.get(key)
            if clock is None or key not in states:
                queued.discard(key)
                continue
            if clock == _UNKNOWN:
                # The clock is part of the state: the host's copy must get it.
                seen[key] = clock = watermark
                changed[key] = None
            deadline = min(clock + after, _END)
            if deadline > watermark:
                heapq.heappush(heap, (deadline, key))
                continue
            queued.discard(key)
            del seen[key]
            changed.pop(key, None)
            removed[key] = None
            yield deadline, key, states.pop(key)
