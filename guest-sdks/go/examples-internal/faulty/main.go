// A word count whose input can make it misbehave in every way a user's Go code can, for the
// end-to-end tests: `panic` panics in a stateless step, `error` returns an error there, `loop`
// never returns, `bomb` allocates without bound, the word `boom` fails in the state step (with
// a key), and bytes that are not UTF-8 fail the decoder.
package main

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"

	"wallaroo.dev/wallaroo"
)

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
	lines := wallaroo.Source("lines", wallaroo.TCPSource(in[0].Host, in[0].Port, decode).WithName("decode"))
	words := wallaroo.ToMulti(lines, "split", split)
	counts := wallaroo.ToState(wallaroo.KeyBy(words, wordKey), "count", newTotal, count)
	return wallaroo.BuildApplication("faulty", wallaroo.ToSink(counts, wallaroo.TCPSink(out[0].Host, out[0].Port, encode)))
}

func decode(data []byte) (string, error) {
	if !utf8.Valid(data) {
		return "", errors.New("the line is not UTF-8")
	}
	return string(data), nil
}

var hoard [][]byte

func split(line string) ([]string, error) {
	switch line {
	case "panic":
		var words []string
		return []string{words[3]}, nil // index out of range
	case "error":
		return nil, errors.New("asked to fail")
	case "loop":
		for {
		}
	case "bomb":
		for {
			hoard = append(hoard, make([]byte, 16<<20))
		}
	}
	return strings.Fields(line), nil
}

func wordKey(word string) string { return word }

type total struct{ count int }

func newTotal() *total { return &total{} }

type wordCount struct {
	word  string
	count int
}

func count(word string, t *total) (wordCount, error) {
	if word == "boom" {
		return wordCount{}, errors.New("boom is not a word")
	}
	t.count++
	return wordCount{word, t.count}, nil
}

func encode(wc wordCount) ([]byte, error) {
	return []byte(wc.word + " => " + strconv.Itoa(wc.count) + "\n"), nil
}
