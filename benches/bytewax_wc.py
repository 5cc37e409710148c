"""Word count on Bytewax, fed and read exactly like the Wallaroo components in the benchmark.

    python -m bytewax.run "bytewax_wc:flow('127.0.0.1:7010', '127.0.0.1:7002')" -w N

Input: framed lines on TCP (4-byte big-endian length, then the line), from `wallaroo send`.
Bytewax ships no TCP source, so this is the one a user would write from its documented custom
source API: one partition that listens on IN_ADDR, accepts one connection and reads frames
without blocking (`next_batch` must not block; with nothing to read Bytewax calls again after
1 ms). The flow ends when the sender closes its connection.
Work: the same splitting, key_by word, running count per word and output lines
(`WORD => COUNT\\n`) as componentize-py-examples/word_count.
Output: every worker writes its lines to OUT_ADDR (`wallaroo receive`) over a TCP connection.
"""

import socket
import struct

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

PUNCTUATION = " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
HEADER = struct.Struct(">I")


def _address(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


class _FramedPartition(StatefulSourcePartition):
    def __init__(self, addr):
        self._listener = socket.create_server(_address(addr))
        self._listener.setblocking(False)
        self._conn = None
        self._buf = bytearray()

    def next_batch(self):
        if self._conn is None:
            try:
                self._conn, _ = self._listener.accept()
            except BlockingIOError:
                return []
            self._conn.setblocking(False)
        try:
            chunk = self._conn.recv(256 * 1024)
        except BlockingIOError:
            return []
        if not chunk:
            raise StopIteration()
        buf = self._buf
        buf += chunk
        lines = []
        at = 0
        while len(buf) - at >= 4:
            (n,) = HEADER.unpack_from(buf, at)
            if len(buf) - at - 4 < n:
                break
            lines.append(buf[at + 4 : at + 4 + n].decode("utf-8"))
            at += 4 + n
        del buf[:at]
        return lines

    def snapshot(self):
        return None

    def close(self):
        if self._conn is not None:
            self._conn.close()
        self._listener.close()


class FramedTcpSource(FixedPartitionedSource):
    """Frames from one TCP connection accepted on `addr`."""

    def __init__(self, addr):
        self._addr = addr

    def list_parts(self):
        return ["tcp"]

    def build_part(self, step_id, for_part, resume_state):
        return _FramedPartition(self._addr)


class _TcpSinkPartition(StatelessSinkPartition):
    def __init__(self, addr):
        self._sock = socket.create_connection(_address(addr))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write_batch(self, items):
        self._sock.sendall(b"".join(items))

    def close(self):
        self._sock.close()


class TcpSink(DynamicSink):
    """Every worker writes its items (bytes) to `addr` over a connection of its own."""

    def __init__(self, addr):
        self._addr = addr

    def build(self, step_id, worker_index, worker_count):
        return _TcpSinkPartition(self._addr)


def split(text):
    words = []
    for line in text.split("\n"):
        for word in line.lower().strip(PUNCTUATION).split(" "):
            words.append(word.strip(PUNCTUATION))
    return words


def count_word(total, word):
    total = (total or 0) + 1
    return total, f"{word} => {total}\n".encode()


def flow(in_addr, out_addr):
    df = Dataflow("word_count")
    lines = op.input("lines", df, FramedTcpSource(in_addr))
    words = op.flat_map("split", lines, split)
    keyed = op.key_on("word", words, lambda word: word)
    counts = op.stateful_map("count", keyed, count_word)
    encoded = op.map("encode", counts, lambda word_line: word_line[1])
    op.output("out", encoded, TcpSink(out_addr))
    return df
