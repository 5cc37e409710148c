"""Reports what the sandbox lets a guest do: each input line names a probe, each output line
says what happened."""

import os
import random
import time

import wallaroo

SINK = {}


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0][-2:]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    SINK["addr"] = (out_host, int(out_port))
    probes = wallaroo.source("probes", wallaroo.TCPSourceConfig(in_host, in_port, decode))
    pipeline = probes.to(probe).to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode))
    return wallaroo.build_application("sandbox probe", pipeline)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(data):
    return data.decode()


@wallaroo.computation(name="probe")
def probe(what):
    if what == "file":
        try:
            with open("/etc/hostname") as f:
                return "file: read " + str(len(f.read()))
        except Exception as e:
            return "file: denied " + type(e).__name__
    if what == "net":
        try:
            import socket

            socket.create_connection(SINK["addr"], timeout=1).close()
            return "net: connected"
        except Exception as e:
            return "net: denied " + type(e).__name__
    if what == "clock":
        return "clock: " + str(int(time.time()))
    if what == "random":
        return "random: " + os.urandom(8).hex() + " " + str(random.random())
    return "unknown probe " + what


@wallaroo.encoder
def encode(text):
    return (text + "\n").encode()
