// The Go word count example's next version, for a hot swap: a stateless step before the KeyBy
// ("strip line"), another output format (`WORD := COUNT\n`), and another state type, which
// converts the first version's state with wallaroo.UpgradeState.
//
// The stateful step keeps its name ("count word"), so the running state finds its step; the
// first version's state type is kept here (as wordTotal) only to read its states.
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
	stripped := wallaroo.To(lines, "strip line", stripLine)
	words := wallaroo.ToMulti(stripped, "split into words", split)
	counts := wallaroo.ToState(wallaroo.KeyBy(words, extractWord), "count word", newWordStats, countWord)
	counts = wallaroo.UpgradeState(counts, upgradeWordTotal)
	return wallaroo.BuildApplication("Word Count Application",
		wallaroo.ToSink(counts, wallaroo.TCPSink(out[0].Host, out[0].Port, encodeWordCount)))
}

func decodeLines(data []byte) (string, error) {
	if !utf8.Valid(data) {
		return "", errors.New("the line is not UTF-8")
	}
	return string(data), nil
}

func stripLine(text string) (string, error) { return strings.TrimSpace(text), nil }

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

// wordTotal is the first version's state, as it was.
type wordTotal struct{ count int }

// wordStats is this version's state: the count, and the characters counted since the swap.
type wordStats struct {
	total      int64
	characters int
}

func newWordStats() *wordStats { return &wordStats{} }

func upgradeWordTotal(old *wordTotal) (*wordStats, error) {
	return &wordStats{total: int64(old.count)}, nil
}

type wordCount struct {
	word  string
	count int64
}

func countWord(word string, stats *wordStats) (wordCount, error) {
	stats.total++
	stats.characters += len(word)
	return wordCount{word, stats.total}, nil
}

func encodeWordCount(wc wordCount) ([]byte, error) {
	return []byte(wc.word + " := " + strconv.FormatInt(wc.count, 10) + "\n"), nil
}
