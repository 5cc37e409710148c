// Pass-through: every frame out as it came in, newline-terminated. No user work, no state, no
// routing, so a benchmark of it measures the engine's own cost per message (the Go twin of
// tests/apps/passthrough/passthrough.py).
package main

import "wallaroo.dev/wallaroo"

func init() { wallaroo.Setup(applicationSetup) }

func main() {}

func applicationSetup(args []string) (*wallaroo.Application, error) {
	in, err := wallaroo.TCPParseInputAddrs(args)
	if err != nil {
		return nil, err
	}
	out, err := wallaroo.TCPParseOutputAddrs(args)
	if err != nil {
		return nil, err
	}
	frames := wallaroo.Source("frames", wallaroo.TCPSource(in[0].Host, in[0].Port, decode))
	return wallaroo.BuildApplication("passthrough",
		wallaroo.ToSink(frames, wallaroo.TCPSink(out[0].Host, out[0].Port, encode)))
}

func decode(data []byte) ([]byte, error) { return data, nil }

func encode(data []byte) ([]byte, error) {
	out := make([]byte, len(data)+1)
	copy(out, data)
	out[len(data)] = '\n'
	return out, nil
}
