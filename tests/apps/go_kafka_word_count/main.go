// Word count from a Kafka topic to a Kafka topic: the Go twin of tests/apps/kafka_word_count.
// Each record of the source topic is a line of UTF-8 text; each word seen becomes one record
// of the sink topic, keyed by the word, whose value is `WORD COUNT` (COUNT being how many
// times the word has been seen so far), byte for byte what the Python app writes. Words are
// split as the word count example splits them.
//
// Options: --kafka_source_topic, --kafka_source_brokers, --kafka_sink_topic,
// --kafka_sink_brokers and the other options of wallaroo.KafkaSourceOptions and
// wallaroo.KafkaSinkOptions.
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
	in, err := wallaroo.KafkaSourceOptions(args)
	if err != nil {
		return nil, err
	}
	out, err := wallaroo.KafkaSinkOptions(args)
	if err != nil {
		return nil, err
	}
	lines := wallaroo.Source("Split and Count",
		wallaroo.KafkaSource(in.Topic, in.Brokers, decodeLines).WithProperties(in.Properties...))
	words := wallaroo.ToMulti(lines, "split into words", split)
	counts := wallaroo.ToState(wallaroo.KeyBy(words, extractWord), "count word", newWordTotal, countWord)
	return wallaroo.BuildApplication("Kafka Word Count Application",
		wallaroo.ToSink(counts, wallaroo.KafkaKeyedSink(out.Topic, out.Brokers, encodeWordCount).WithProperties(out.Properties...)))
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

func encodeWordCount(wc wordCount) (wallaroo.KafkaRecord, error) {
	return wallaroo.KafkaRecord{
		Key:   []byte(wc.word),
		Value: []byte(wc.word + " " + strconv.Itoa(wc.count)),
	}, nil
}
