package main

import (
	"reflect"
	"strings"
	"testing"

	"wallaroo.dev/wallaroo"
	"wallaroo.dev/wallaroo/wallarootest"
)

var args = strings.Fields("--kafka_source_topic lines --kafka_source_brokers k1 " +
	"--kafka_sink_topic counts --kafka_sink_brokers k2:9093")

func TestEachWordIsARecordKeyedByTheWord(t *testing.T) {
	res, err := wallarootest.Run(applicationSetup, args, [][]byte{[]byte("The cat, the hat."), []byte("Cat")})
	if err != nil || len(res.Failures) != 0 {
		t.Fatal(err, res.Failures)
	}
	want := []string{"the=the 1", "cat=cat 1", "the=the 2", "hat=hat 1", "cat=cat 2"}
	var got []string
	for _, p := range res.Sinks[0] {
		rec, err := wallarootest.KafkaRecord(p)
		if err != nil || rec.Partition != nil || rec.Key == nil {
			t.Fatalf("%v %+v", err, rec)
		}
		got = append(got, string(rec.Key)+"="+string(rec.Value))
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("records %q, want %q", got, want)
	}
}

func TestTheTopicsComeFromTheOptions(t *testing.T) {
	spec, err := wallaroo.NewRuntime(applicationSetup).Describe(args)
	if err != nil {
		t.Fatal(err)
	}
	src, sink := spec.Sources[0].Kafka, spec.Sinks[0].Kafka
	if src == nil || src.Topic != "lines" || src.Brokers != "k1:9092" || len(src.Properties) != 0 {
		t.Fatalf("source %+v", src)
	}
	if sink == nil || sink.Topic != "counts" || sink.Brokers != "k2:9093" ||
		!reflect.DeepEqual(sink.Properties, []wallaroo.KafkaProperty{{Key: "message.max.bytes", Value: "100000"}}) {
		t.Fatalf("sink %+v", sink)
	}
	if _, err := wallaroo.NewRuntime(applicationSetup).Describe(nil); err == nil ||
		!strings.Contains(err.Error(), "--kafka_source_topic") {
		t.Fatalf("described without options: %v", err)
	}
}
