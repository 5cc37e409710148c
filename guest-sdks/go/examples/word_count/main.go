// Word count: splits lines of text into words and keeps a running count per word.
//
// Input: framed lines of text (4-byte big-endian length, then UTF-8 text). Output: one line per
// word seen, `WORD => COUNT\n`, COUNT being how many times the word has been seen so far. The
// same application as componentize-py-examples/word_count/word_count.py, byte for byte.
package main

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"

	"wallaroo.dev/wallaroo"
)

const punctuation = " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"

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
	lines := wallaroo.Source("Split and Count", wallaroo.TCPSource(in[0].Host, in[0].Port, decodeLines))
	words := wallaroo.ToMulti(lines, "split into words", split)
	counts := wallaroo.ToState(wallaroo.KeyBy(words, extractWord), "count word", newWordTotal, countWord)
	return wallaroo.BuildApplication("Word Count Application",
		wallaroo.ToSink(counts, wallaroo.TCPSink(out[0].Host, out[0].Port, encodeWordCount)))
}

func decodeLines(data []byte) (string, error) {
	if !utf8.Valid(data) {
		return "", errors.New("the line is not UTF-8")
	}
	return string(data), nil
}

func split(text string) ([]string, error) {
	var words []string
	for _, line := range strings.Split(text, "\n") {
		for _, word := range strings.Split(strings.Trim(strings.ToLower(line), punctuation), " ") {
			words = append(words, strings.Trim(word, punctuation))
		}
	}
	return words, nil
}

func extractWord(word string) string { return word }

type wordTotal struct{ count int }

func newWordTotal() *wordTotal { return &wordTotal{} }

type wordCount struct {
	word  string
	count int
}

func countWord(word string, total *wordTotal) (wordCount, error) {
	total.count++
	return wordCount{word, total.count}, nil
}

func encodeWordCount(wc wordCount) ([]byte, error) {
	return []byte(wc.word + " => " + strconv.Itoa(wc.count) + "\n"), nil
}
