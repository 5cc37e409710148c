package wallaroo_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"wallaroo.dev/wallaroo"
	"wallaroo.dev/wallaroo/wallarootest"
)

func TestAKafkaSourceAndSinkAreDescribedWithTheirTopicsAndProperties(t *testing.T) {
	source := wallaroo.KafkaSource("lines", "k1:9092,k2:9093", decodeLine).
		WithProperty("security.protocol", "ssl").
		WithProperty("log_level", "6").
		WithProperty("security.protocol", "sasl_ssl"). // replaces the first
		WithName("read line").
		WithEventTime(func(string) (time.Time, error) { return time.Unix(1, 0), nil })
	plain := source.WithProperties() // a copy: what follows changes neither
	_ = source.WithProperty("log_level", "7")
	sink := wallaroo.KafkaSink("out", "k3:9092", func(s string) ([]byte, error) { return []byte(s), nil }).
		WithProperties(wallaroo.KafkaProperty{Key: "linger.ms", Value: "5"})
	spec, err := wallaroo.NewRuntime(func([]string) (*wallaroo.Application, error) {
		lines := wallaroo.Source("kafka lines", plain)
		return wallaroo.BuildApplication("k", wallaroo.ToSink(lines, sink, wallaroo.TCPSink("h", "2", func(s string) ([]byte, error) {
			return []byte(s), nil
		})))
	}).Describe(nil)
	if err != nil {
		t.Fatal(err)
	}
	src := spec.Sources[0]
	wantSource := &wallaroo.KafkaTopic{Topic: "lines", Brokers: "k1:9092,k2:9093", Properties: []wallaroo.KafkaProperty{
		{Key: "security.protocol", Value: "sasl_ssl"}, {Key: "log_level", Value: "6"},
	}}
	if src.Name != "kafka lines" || !reflect.DeepEqual(src.Kafka, wantSource) || !src.EventTimeFromData ||
		src.Host != "" || src.Port != "" || src.Framing != (wallaroo.Framing{}) {
		t.Fatalf("source %+v, kafka %+v", src, src.Kafka)
	}
	if spec.Steps[0].Name != "read line" {
		t.Fatalf("steps %+v", spec.Steps)
	}
	wantSink := &wallaroo.KafkaTopic{Topic: "out", Brokers: "k3:9092", Properties: []wallaroo.KafkaProperty{{Key: "linger.ms", Value: "5"}}}
	if !reflect.DeepEqual(spec.Sinks[0].Kafka, wantSink) || spec.Sinks[0].Host != "" {
		t.Fatalf("sink %+v, kafka %+v", spec.Sinks[0], spec.Sinks[0].Kafka)
	}
	if spec.Sinks[1].Kafka != nil || spec.Sinks[1].Host != "h" {
		t.Fatalf("tcp sink %+v", spec.Sinks[1])
	}
}

func TestKafkaOnlySettingsOnTCPConfigsAndFramingOnKafkaFailTheBuild(t *testing.T) {
	encode := func(s string) ([]byte, error) { return []byte(s), nil }
	tcpSink := wallaroo.TCPSink("h", "2", encode).WithName("encode")
	cases := []struct {
		source wallaroo.SourceConfig[string]
		sink   wallaroo.SinkConfig[string]
		want   string
	}{
		{wallaroo.TCPSource("h", "1", decodeLine).WithProperty("a", "b"), tcpSink,
			`source "s": WithProperty: only a Kafka source has client properties, not the TCP source at h:1`},
		{wallaroo.TCPSource("h", "1", decodeLine), tcpSink.WithProperty("a", "b"),
			`sink "encode": WithProperty: only a Kafka sink has client properties, not the TCP sink to h:2`},
		{wallaroo.KafkaSource("t", "k:9092", decodeLine).WithFraming(wallaroo.Framing{HeaderLength: 2, LengthSize: 2}),
			tcpSink, `source "s": WithFraming: the Kafka source of topic "t" has no framing`},
	}
	for _, c := range cases {
		_, err := wallaroo.NewRuntime(func([]string) (*wallaroo.Application, error) {
			return wallaroo.BuildApplication("x", wallaroo.ToSink(wallaroo.Source("s", c.source), c.sink))
		}).Describe(nil)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("got %v, want %s", err, c.want)
		}
	}
}

func kafkaApp(sink wallaroo.SinkConfig[string]) wallaroo.SetupFunc {
	return func([]string) (*wallaroo.Application, error) {
		lines := wallaroo.Source("lines", wallaroo.KafkaSource("in", "k:9092", decodeLine))
		return wallaroo.BuildApplication("k", wallaroo.ToSink(lines, sink))
	}
}

func TestAKafkaSinkEmitsRecordsInTheHostsLayout(t *testing.T) {
	unkeyed := wallaroo.KafkaSink("out", "k:9092", func(s string) ([]byte, error) { return []byte(s), nil })
	res, err := wallarootest.Run(kafkaApp(unkeyed), nil, [][]byte{[]byte("hello"), nil})
	if err != nil || len(res.Failures) != 0 {
		t.Fatal(err, res.Failures)
	}
	want := [][]byte{
		[]byte("\xff\xff\xff\xff\xff\xff\xff\xffhello"),
		[]byte("\xff\xff\xff\xff\xff\xff\xff\xff"),
	}
	if !reflect.DeepEqual(res.Sinks[0], want) {
		t.Fatalf("payloads %q, want %q", res.Sinks[0], want)
	}

	three := int32(3)
	keyed := wallaroo.KafkaKeyedSink("out", "k:9092", func(s string) (wallaroo.KafkaRecord, error) {
		switch s {
		case "no key":
			return wallaroo.KafkaRecord{Value: []byte(s)}, nil
		case "empty key":
			return wallaroo.KafkaRecord{Key: []byte{}, Value: []byte(s)}, nil
		case "partition":
			return wallaroo.KafkaRecord{Key: []byte("k"), Value: []byte(s), Partition: &three}, nil
		}
		return wallaroo.KafkaRecord{Key: []byte(s), Value: []byte(s + "!")}, nil
	})
	res, err = wallarootest.Run(kafkaApp(keyed), nil, [][]byte{
		[]byte("word"), []byte("no key"), []byte("empty key"), []byte("partition"),
	})
	if err != nil || len(res.Failures) != 0 {
		t.Fatal(err, res.Failures)
	}
	want = [][]byte{
		[]byte("\x04\x00\x00\x00word\xff\xff\xff\xffword!"),
		[]byte("\xff\xff\xff\xff\xff\xff\xff\xffno key"),
		[]byte("\x00\x00\x00\x00\xff\xff\xff\xffempty key"),
		[]byte("\x01\x00\x00\x00k\x03\x00\x00\x00partition"),
	}
	if !reflect.DeepEqual(res.Sinks[0], want) {
		t.Fatalf("payloads %q, want %q", res.Sinks[0], want)
	}
	// As the host reads them back.
	wantRecords := []wallaroo.KafkaRecord{
		{Key: []byte("word"), Value: []byte("word!")},
		{Value: []byte("no key")},
		{Key: []byte{}, Value: []byte("empty key")},
		{Key: []byte("k"), Value: []byte("partition"), Partition: &three},
	}
	for i, p := range res.Sinks[0] {
		rec, err := wallarootest.KafkaRecord(p)
		if err != nil || !reflect.DeepEqual(rec, wantRecords[i]) {
			t.Errorf("record %d: %v %+v, want %+v", i, err, rec, wantRecords[i])
		}
	}
}

func TestAKafkaSinksEncoderErrorsAndBadPartitionsAreTheEncodersFailures(t *testing.T) {
	minus := int32(-1)
	keyed := wallaroo.KafkaKeyedSink("out", "k:9092", func(s string) (wallaroo.KafkaRecord, error) {
		if s == "bad" {
			return wallaroo.KafkaRecord{}, errors.New("cannot encode bad")
		}
		return wallaroo.KafkaRecord{Value: []byte(s), Partition: &minus}, nil
	}).WithName("encode record")
	rt := wallaroo.NewRuntime(kafkaApp(keyed))
	spec, err := rt.Describe(nil)
	if err != nil || spec.Steps[1].Name != "encode record" {
		t.Fatal(err, spec.Steps)
	}
	out, err := rt.Process(0, []wallaroo.Message{{Payload: []byte("bad")}, {Payload: []byte("ok")}})
	if err != nil || len(out) != 2 {
		t.Fatal(err, out)
	}
	if out[0].Kind != wallaroo.OutputFailed || out[0].Step != 1 || !strings.HasPrefix(out[0].Error, "cannot encode bad (kafka_test.go:") {
		t.Errorf("failure %+v", out[0])
	}
	if out[1].Kind != wallaroo.OutputFailed || out[1].Step != 1 ||
		!strings.HasPrefix(out[1].Error, "the Kafka record's partition is -1; a partition is 0 or more (nil lets the client choose) (kafka_test.go:") {
		t.Errorf("failure %+v", out[1])
	}
	unkeyed := wallaroo.KafkaSink("out", "k:9092", func(s string) ([]byte, error) { return nil, errors.New("no") })
	res, err := wallarootest.Run(kafkaApp(unkeyed), nil, [][]byte{[]byte("x")})
	if err != nil || len(res.Failures) != 1 || !strings.HasPrefix(res.Failures[0].Error, "no (kafka_test.go:") {
		t.Fatal(err, res.Failures)
	}
}

func TestKafkaRecordRefusesCutShortPayloads(t *testing.T) {
	for _, p := range []string{"", "\xff\xff\xff", "\x05\x00\x00\x00abc", "\x01\x00\x00\x00k\x00", "\xff\xff\xff\xff\x00\x00\x00\x80"} {
		if rec, err := wallarootest.KafkaRecord([]byte(p)); err == nil {
			t.Errorf("%q read as %+v", p, rec)
		}
	}
}
