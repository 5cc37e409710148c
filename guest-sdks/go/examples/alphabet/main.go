// Alphabet: takes votes for letters and keeps a running total per letter.
//
// Input: frames of `>IsI`: a 4-byte big-endian length (5), one letter, a 4-byte big-endian vote
// count. Output: `LETTER => TOTAL\n` after every vote, TOTAL being the letter's total so far.
// The same application as componentize-py-examples/alphabet/alphabet.py, byte for byte.
package main

import (
	"encoding/binary"
	"fmt"
	"strconv"
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
	votes := wallaroo.Source("alphabet", wallaroo.TCPSource(in[0].Host, in[0].Port, decodeVotes))
	totals := wallaroo.ToState(wallaroo.KeyBy(votes, extractLetter), "add votes", newTotalVotes, addVotes)
	return wallaroo.BuildApplication("alphabet",
		wallaroo.ToSink(totals, wallaroo.TCPSink(out[0].Host, out[0].Port, encodeVotes)))
}

type votes struct {
	letter string
	votes  uint64
}

type totalVotes struct{ votes uint64 }

func newTotalVotes() *totalVotes { return &totalVotes{} }

func decodeVotes(data []byte) (votes, error) {
	if len(data) != 5 {
		return votes{}, fmt.Errorf("a vote is 5 bytes (>sI), got %d", len(data))
	}
	if !utf8.Valid(data[:1]) {
		return votes{}, fmt.Errorf("the letter %q is not UTF-8", data[:1])
	}
	return votes{string(data[:1]), uint64(binary.BigEndian.Uint32(data[1:]))}, nil
}

func extractLetter(v votes) string { return v.letter }

func addVotes(v votes, total *totalVotes) (votes, error) {
	total.votes += v.votes
	return votes{v.letter, total.votes}, nil
}

func encodeVotes(v votes) ([]byte, error) {
	return []byte(v.letter + " => " + strconv.FormatUint(v.votes, 10) + "\n"), nil
}
