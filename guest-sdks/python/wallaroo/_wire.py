"""The flat byte buffers of the per-batch exports, as ``wit/wallaroo.wit`` lays them out.

``process`` takes a ``batch`` buffer and returns an ``outputs`` buffer; ``snapshot-changed``,
``restore`` and ``take`` carry ``state-entries`` and ``state-keys`` buffers. All integers are
unsigned little-endian with no padding. A buffer from the host is read with one ``unpack_from``
for its table of lengths and one for all its fields; outputs are appended, as the steps produce
them, to one list of parts that is joined once.

Nothing here imports the generated bindings: it runs, and is tested, on plain CPython.
"""

import struct
from itertools import repeat

_COUNT = struct.Struct("<I")
# The fixed part of each output record, packed; the variable parts follow it.
ROUTE_HEAD = struct.Struct("<BIIIQ").pack  # tag 0, segment, key length, payload length, time
# A route's head without its event time, which follows it (TIME): for heads made in advance.
ROUTE_LENGTHS = struct.Struct("<BIII").pack
TIME = struct.Struct("<Q").pack
EMIT_HEAD = struct.Struct("<BII").pack  # tag 1, sink, payload length
# tag 2, input, step, has-key, key length, error length
_FAILED_HEAD = struct.Struct("<BIIBII").pack
_LATE_HEAD = struct.Struct("<BII").pack  # tag 3, input, step
_ENTRY = struct.Struct("<III").pack  # step, key length, value length
_KEY = struct.Struct("<II").pack  # step, key length

ROUTE, EMIT, FAILED, LATE, ENDED = 0, 1, 2, 3, 4
_ENDED_HEAD = struct.Struct("<BI").pack  # tag 4, segment
# The input index of a failure that no input message caused (a window fired by a watermark).
NO_INPUT = 2**32 - 1


class MalformedBuffer(ValueError):
    """A buffer that does not follow its layout."""


# ------------------------------------------------------------------------------------------------
# Reading what the host sends


def _table(buf, fields, what):
    """The item count at the start of ``buf``, the table of ``fields`` u32 per item after it,
    and the offset where the table ends and the items' bytes begin."""
    size = len(buf)
    if size < 4:
        raise MalformedBuffer(f"malformed {what} buffer: {size} bytes cannot hold its count")
    (count,) = _COUNT.unpack_from(buf)
    table_end = 4 + 4 * fields * count
    if table_end > size:
        raise MalformedBuffer(
            f"malformed {what} buffer: {count} items need a table of {table_end - 4} bytes, "
            f"the buffer has {size - 4} after its count"
        )
    table = struct.unpack_from(f"<{fields * count}I", buf, 4)
    return count, table, table_end


def _fields(buf, lengths, start, what):
    """``buf`` cut into consecutive fields of ``lengths`` from ``start``, which must end exactly
    at the end of ``buf``.

    One struct of ``Ns`` codes cuts them all in C: in a Wasm guest that costs about half of
    slicing each field in a Python loop. (Struct objects made here bypass struct's cache of
    compiled formats, which every batch's format would otherwise crowd.)"""
    fields = struct.Struct("<" + ("%ds" * len(lengths)) % tuple(lengths))
    if start + fields.size != len(buf):
        raise MalformedBuffer(
            f"malformed {what} buffer: its lengths add up to {start + fields.size} bytes, "
            f"the buffer has {len(buf)}"
        )
    return fields.unpack_from(buf, start)


def messages(buf):
    """The ``(key, payload, event_time)`` triples of a ``batch`` buffer, key and payload as
    bytes."""
    count, table, table_end = _table(buf, 2, "batch")
    data = table_end + 8 * count
    if data > len(buf):
        raise MalformedBuffer(
            f"malformed batch buffer: {count} messages need {8 * count} bytes of event times "
            f"after their table, the buffer has {len(buf) - table_end}"
        )
    times = struct.unpack_from(f"<{count}Q", buf, table_end)
    # Where every key or every payload is empty (a source's frames; words routed by
    # themselves), only the other half of the fields is cut.
    if not any(table[0::2]):
        payloads = _fields(buf, table[1::2], data, "batch")
        return zip(repeat(b"", count), payloads, times, strict=True)
    if not any(table[1::2]):
        keys = _fields(buf, table[0::2], data, "batch")
        return zip(keys, repeat(b"", count), times, strict=True)
    fields = _fields(buf, table, data, "batch")
    return zip(fields[0::2], fields[1::2], times, strict=True)


def decode_entries(buf):
    """The ``(step, key, value)`` triples of a ``state-entries`` buffer."""
    count, table, table_end = _table(buf, 3, "state entries")
    if REMOVED in table[2::3]:
        raise MalformedBuffer(
            f"malformed state entries buffer: entry {table[2::3].index(REMOVED)} says its key's "
            "state was removed, which only snapshot-changed may say"
        )
    lengths = [0] * (2 * count)
    lengths[0::2] = table[1::3]
    lengths[1::2] = table[2::3]
    fields = _fields(buf, lengths, table_end, "state entries")
    return zip(table[0::3], fields[0::2], fields[1::2], strict=True)


def decode_keys(buf):
    """The ``(step, key)`` pairs of a ``state-keys`` buffer."""
    _count, table, table_end = _table(buf, 2, "state keys")
    keys = _fields(buf, table[1::2], table_end, "state keys")
    return zip(table[0::2], keys, strict=True)


# ------------------------------------------------------------------------------------------------
# Writing what the host receives


# ``out`` is a list of the buffer's parts, joined once at the end of the call: appending to a
# list costs a Wasm guest less than growing a bytearray.


def route(out, key, segment, payload, event_time):
    out.append(ROUTE_HEAD(ROUTE, segment, len(key), len(payload), event_time))
    out.append(key)
    out.append(payload)


def late(out, index, step):
    out.append(_LATE_HEAD(LATE, index, step))


def ended(out, segment):
    out.append(_ENDED_HEAD(ENDED, segment))


def emit(out, sink, payload):
    out.append(EMIT_HEAD(EMIT, sink, len(payload)))
    out.append(payload)


def failed(out, index, step, key, error):
    text = error.encode("utf-8", "replace")
    if key is None:
        out.append(_FAILED_HEAD(FAILED, index, step, 0, 0, len(text)))
    else:
        out.append(_FAILED_HEAD(FAILED, index, step, 1, len(key), len(text)))
        out.append(key)
    out.append(text)


# A Kafka record's key length for no key, and its partition for the client's choice.
NO_KEY = NO_PARTITION = 0xFFFFFFFF
_U32 = _COUNT.pack


def kafka_record(result, label):
    """The payload of a Kafka sink's record (``key-len``, key, ``partition``, value) for what
    its encoder returned: the value, ``(value, key)`` or ``(value, key, partition)``. Values
    and keys are bytes or str (sent as UTF-8), a key may be None, a partition None or an int
    from 0. ``label`` names the encoder in errors."""
    key = partition = None
    if type(result) is tuple:
        if not 2 <= len(result) <= 3:
            raise TypeError(
                f"{label} returned a tuple of {len(result)} items; a Kafka sink takes the "
                "value, (value, key) or (value, key, partition)"
            )
        value, key, partition = result if len(result) == 3 else (*result, None)
    else:
        value = result
    value = _record_bytes(value, label, "value")
    if key is None:
        head = _U32(NO_KEY)
    else:
        key = _record_bytes(key, label, "key")
        head = _U32(len(key)) + key
    if partition is None:
        partition = NO_PARTITION
    elif type(partition) is not int or not 0 <= partition < NO_PARTITION:
        raise (TypeError if type(partition) is not int else ValueError)(
            f"{label} returned the partition {partition!r}, expected None or an int from 0 "
            f"to {NO_PARTITION - 1}"
        )
    return b"".join((head, _U32(partition), value))


def _record_bytes(data, label, what):
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):
        return data.encode()
    none = " (None is for the key)" if data is None and what == "value" else ""
    raise TypeError(
        f"{label} returned a {what} of type {type(data).__name__}{none}, expected bytes or str"
    )


# The value length of an entry that says its key's state was removed (it expired).
REMOVED = 0xFFFFFFFF


def encode_entries(entries):
    """A ``state-entries`` buffer of ``(step, key, value)`` triples; a value of None says the
    key's state was removed."""
    buf = bytearray(4)
    data = []
    for step, key, value in entries:
        if value is None:
            buf += _ENTRY(step, len(key), REMOVED)
            data.append(key)
            data.append(b"")
            continue
        buf += _ENTRY(step, len(key), len(value))
        data.append(key)
        data.append(value)
    _COUNT.pack_into(buf, 0, len(data) // 2)
    buf += b"".join(data)
    return buf


# ------------------------------------------------------------------------------------------------
# The host's side, for tests


def encode_batch(messages):
    """A ``batch`` buffer of ``(key, payload)`` pairs (event time 0) or ``(key, payload,
    event_time)`` triples."""
    messages = [m if len(m) == 3 else (m[0], m[1], 0) for m in messages]
    buf = bytearray(_COUNT.pack(len(messages)))
    for key, payload, _time in messages:
        buf += struct.pack("<II", len(key), len(payload))
    for _key, _payload, time in messages:
        buf += TIME(time)
    for key, payload, _time in messages:
        buf += key
        buf += payload
    return bytes(buf)


def encode_keys(keys):
    """A ``state-keys`` buffer of ``(step, key)`` pairs."""
    keys = list(keys)
    buf = bytearray(_COUNT.pack(len(keys)))
    for step, key in keys:
        buf += _KEY(step, len(key))
    for _step, key in keys:
        buf += key
    return bytes(buf)


def decode_outputs(buf):
    """The records of an ``outputs`` buffer as the tuples ``wallaroo._runtime.Runtime`` returns
    without ``flat``: ``("route", key, segment, payload, event_time)``, ``("emit", sink,
    payload)``, ``("failed", index or None, step, key or None, error)``, ``("late", index,
    step)`` and ``("ended", segment)``."""
    buf = bytes(buf)
    at, records = 0, []
    try:
        while at < len(buf):
            tag = buf[at]
            if tag == ROUTE:
                segment, key_len, payload_len, time = struct.unpack_from("<IIIQ", buf, at + 1)
                at += 21
                key, at = buf[at : at + key_len], at + key_len
                payload, at = buf[at : at + payload_len], at + payload_len
                records.append(("route", key, segment, payload, time))
            elif tag == EMIT:
                sink, payload_len = struct.unpack_from("<II", buf, at + 1)
                at += 9
                payload, at = buf[at : at + payload_len], at + payload_len
                records.append(("emit", sink, payload))
            elif tag == FAILED:
                index, step, has_key, key_len, error_len = struct.unpack_from("<IIBII", buf, at + 1)
                at += 18
                key, at = buf[at : at + key_len], at + key_len
                error, at = buf[at : at + error_len], at + error_len
                index = None if index == NO_INPUT else index
                records.append(("failed", index, step, key if has_key else None, error.decode()))
            elif tag == LATE:
                index, step = struct.unpack_from("<II", buf, at + 1)
                at += 9
                records.append(("late", index, step))
            elif tag == ENDED:
                (segment,) = struct.unpack_from("<I", buf, at + 1)
                at += 5
                records.append(("ended", segment))
            else:
                raise MalformedBuffer(f"unknown output tag {tag} at byte {at}")
    except struct.error as error:
        raise MalformedBuffer(f"output record cut short at byte {at}: {error}") from None
    if at != len(buf):
        raise MalformedBuffer(f"the last output record runs {at - len(buf)} bytes past the end")
    return records


def decode_kafka_record(payload):
    """``(value, key, partition)`` of a Kafka sink's record, with None for no key and for the
    client's choice of partition."""
    (key_len,) = struct.unpack_from("<I", payload)
    at = 4 if key_len == NO_KEY else 4 + key_len
    key = None if key_len == NO_KEY else payload[4:at]
    (partition,) = struct.unpack_from("<I", payload, at)
    return payload[at + 4 :], key, None if partition == NO_PARTITION else partition
