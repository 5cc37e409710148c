"""Runs an application on plain CPython, without Wasm or a node, for tests.

One runtime holds every key, and routed messages are delivered at once, depth first, so the
output for each key comes in the order a node produces it. Sources are fed frame payloads (the
bytes after the length header).
"""

from wallaroo._runtime import Message, Runtime


class LocalRun:
    def __init__(self, module, args):
        self.runtime = Runtime(module)
        self.spec = self.runtime.describe(args)
        self.outputs = {i: [] for i in range(len(self.spec.sinks))}
        self.failures = []

    def feed(self, source, payloads):
        """Processes each payload as a frame of the source named ``source``."""
        segment = next(s.segment for s in self.spec.sources if s.name == source)
        for payload in payloads:
            self._deliver(segment, Message(b"", payload))

    def _deliver(self, segment, message):
        for item in self.runtime.process(segment, [message]):
            if item[0] == "route":
                self._deliver(item[2], Message(item[1], item[3], item[4]))
            elif item[0] == "emit":
                self.outputs[item[1]].append(item[2])
            else:
                self.failures.append(item)

    def output(self, sink=0):
        """Everything sink ``sink`` received, concatenated."""
        return b"".join(self.outputs[sink])
