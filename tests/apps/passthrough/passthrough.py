"""Every frame out as it came in, newline-terminated: no user work, no state, no routing."""

import wallaroo


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0][-2:]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    frames = wallaroo.source("frames", wallaroo.TCPSourceConfig(in_host, in_port, decode))
    pipeline = frames.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode))
    return wallaroo.build_application("passthrough", pipeline)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(data):
    return data


@wallaroo.encoder
def encode(data):
    return data + b"\n"
