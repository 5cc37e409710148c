package wallaroo_test

import (
	"reflect"
	"strings"
	"testing"

	"wallaroo.dev/wallaroo"
)

func TestKafkaOptionsAreReadFromTheCommandLine(t *testing.T) {
	args := strings.Fields("--in h:1 --kafka_source_topic words --kafka_source_brokers k1,k2:9093 " +
		"--kafka_source_log_level Fine --kafka_sink_topic=counts --kafka_sink_brokers 127.0.0.1:19092 " +
		"--kafka_sink_max_produce_buffer_ms 20 --kafka_sink_max_message_size=2000")
	src, err := wallaroo.KafkaSourceOptions(args)
	if err != nil {
		t.Fatal(err)
	}
	want := wallaroo.KafkaOptions{Topic: "words", Brokers: "k1:9092,k2:9093",
		Properties: []wallaroo.KafkaProperty{{Key: "log_level", Value: "7"}}}
	if !reflect.DeepEqual(src, want) {
		t.Fatalf("source options %+v, want %+v", src, want)
	}
	sink, err := wallaroo.KafkaSinkOptions(args)
	if err != nil {
		t.Fatal(err)
	}
	want = wallaroo.KafkaOptions{Topic: "counts", Brokers: "127.0.0.1:19092", Properties: []wallaroo.KafkaProperty{
		{Key: "linger.ms", Value: "20"}, {Key: "message.max.bytes", Value: "2000"}}}
	if !reflect.DeepEqual(sink, want) {
		t.Fatalf("sink options %+v, want %+v", sink, want)
	}
	// Without the optional ones: no log level, no linger.ms, Wallaroo's largest message.
	sink, err = wallaroo.KafkaSinkOptions([]string{"--kafka_sink_topic", "t", "--kafka_sink_brokers", "k"})
	want = wallaroo.KafkaOptions{Topic: "t", Brokers: "k:9092", Properties: []wallaroo.KafkaProperty{{Key: "message.max.bytes", Value: "100000"}}}
	if err != nil || !reflect.DeepEqual(sink, want) {
		t.Fatalf("%v %+v", err, sink)
	}
	for level, n := range map[string]string{"Info": "6", "Warn": "4", "error": "3"} {
		o, err := wallaroo.KafkaSourceOptions([]string{"--kafka_source_topic", "t", "--kafka_source_brokers", "k", "--kafka_source_log_level", level})
		if err != nil || o.Properties[0] != (wallaroo.KafkaProperty{Key: "log_level", Value: n}) {
			t.Errorf("%s: %v %+v", level, err, o)
		}
	}
}

func TestKafkaOptionsNameWhatIsMissingOrWrong(t *testing.T) {
	source := func(s string) []string { return strings.Fields("--kafka_source_topic t --kafka_source_brokers k " + s) }
	sink := func(s string) []string { return strings.Fields("--kafka_sink_topic t --kafka_sink_brokers k " + s) }
	cases := []struct {
		sink bool
		args []string
		want string
	}{
		{false, []string{"--kafka_source_brokers", "k"}, "missing --kafka_source_topic"},
		{false, []string{"--kafka_source_topic", "t"}, "missing --kafka_source_brokers"},
		{true, []string{"--kafka_sink_topic", "t", "--kafka_source_brokers", "k"}, "missing --kafka_sink_brokers"},
		{true, []string{"--kafka_sink_brokers", "k"}, "missing --kafka_sink_topic"},
		{false, []string{"--kafka_source_topic"}, "--kafka_source_topic: expected one argument"},
		{false, source("--kafka_source_brokers k,"), `--kafka_source_brokers: "" is not HOST[:PORT]`},
		{false, source("--kafka_source_brokers :9092"), `--kafka_source_brokers: ":9092" is not HOST[:PORT]`},
		{false, source("--kafka_source_brokers k:port"), `--kafka_source_brokers: "k:port" is not HOST[:PORT]`},
		{false, source("--kafka_source_log_level Debug"), `--kafka_source_log_level: "Debug" is not Fine, Info, Warn or Error`},
		{true, sink("--kafka_sink_max_message_size 999"), `--kafka_sink_max_message_size: "999" is not a whole number from 1000 to 1000000000`},
		{true, sink("--kafka_sink_max_produce_buffer_ms=soon"), `--kafka_sink_max_produce_buffer_ms: "soon" is not a whole number from 0 to`},
	}
	for _, c := range cases {
		read := wallaroo.KafkaSourceOptions
		if c.sink {
			read = wallaroo.KafkaSinkOptions
		}
		if _, err := read(c.args); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %s", c.args, err, c.want)
		}
	}
}

func TestTCPOptionsTakeTheirShortFormsToo(t *testing.T) {
	for _, args := range [][]string{{"-i", "h:1"}, {"-ih:1"}, {"-i=h:1"}, {"--kafka_source_topic", "t", "--in=h:1"}} {
		in, err := wallaroo.TCPParseInputAddrs(args)
		if err != nil || !reflect.DeepEqual(in, []wallaroo.Addr{{Host: "h", Port: "1"}}) {
			t.Errorf("%q: %v %+v", args, err, in)
		}
	}
	if _, err := wallaroo.TCPParseOutputAddrs([]string{"-o"}); err == nil || err.Error() != "-o/--out: expected one argument" {
		t.Errorf("got %v", err)
	}
}
