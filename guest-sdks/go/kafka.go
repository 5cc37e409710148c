package wallaroo

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

// KafkaTopic is where a Kafka source reads or a Kafka sink writes: a topic, the bootstrap
// brokers (`host:port` entries joined by commas) and client properties.
type KafkaTopic struct {
	Topic      string
	Brokers    string
	Properties []KafkaProperty
}

// KafkaProperty is a client property of a Kafka source or sink, which the host passes to the
// Kafka client (librdkafka) as it is: `security.protocol`, `sasl.mechanisms`, `linger.ms`,
// ... Properties given to the node on its command line are applied after these.
type KafkaProperty struct {
	Key, Value string
}

// withProperties is a copy of t with props set, each replacing a property of its key.
func (t *KafkaTopic) withProperties(props []KafkaProperty) *KafkaTopic {
	c := *t
	c.Properties = slices.Clone(t.Properties)
	for _, p := range props {
		i := slices.IndexFunc(c.Properties, func(q KafkaProperty) bool { return q.Key == p.Key })
		if i >= 0 {
			c.Properties[i].Value = p.Value
		} else {
			c.Properties = append(c.Properties, p)
		}
	}
	return &c
}

// KafkaSource is a source that reads the records of a Kafka topic from the given bootstrap
// brokers (`host:port` entries joined by commas; see KafkaSourceOptions for reading them from
// the command line). Each record's value is one message, which decode decodes; the record's
// key is not passed on. The host spreads the topic's partitions over the workers that run the
// application, each partition's records in order. decode may not keep data after it returns.
func KafkaSource[T any](topic, brokers string, decode func(data []byte) (T, error)) SourceConfig[T] {
	return SourceConfig[T]{
		kafka:   &KafkaTopic{Topic: topic, Brokers: brokers},
		decoder: newDecoder(decode),
	}
}

// WithProperty returns the config of a Kafka source with the client property key set to value
// (replacing an earlier value of key). A TCP source has no properties: BuildApplication
// reports the call.
func (c SourceConfig[T]) WithProperty(key, value string) SourceConfig[T] {
	return c.WithProperties(KafkaProperty{key, value})
}

// WithProperties is WithProperty for each of props in turn, such as the Properties of
// KafkaSourceOptions.
func (c SourceConfig[T]) WithProperties(props ...KafkaProperty) SourceConfig[T] {
	if c.kafka == nil {
		c.err = cmp.Or(c.err, fmt.Errorf("WithProperty: only a Kafka source has client properties, not the TCP source at %s:%s", c.host, c.port))
		return c
	}
	c.kafka = c.kafka.withProperties(props)
	return c
}

// KafkaRecord is one record for a Kafka sink (see KafkaKeyedSink).
type KafkaRecord struct {
	// Key is the record's key: nil for a record without a key (an empty, non-nil Key is an
	// empty key).
	Key []byte
	// Value is the record's value.
	Value []byte
	// Partition is the partition of the topic the record goes to; nil lets the client choose
	// (by the key's hash, or spread over the partitions when there is no key).
	Partition *int32
}

// KafkaSink is a sink that writes to a Kafka topic through the given bootstrap brokers (see
// KafkaSource; KafkaSinkOptions reads them from the command line): encode's bytes become the
// value of one record without a key, in a partition the client chooses. With exactly-once
// resilience, each checkpoint's records go out in one Kafka transaction.
func KafkaSink[T any](topic, brokers string, encode func(T) ([]byte, error)) SinkConfig[T] {
	e := newEncoder(encode, func(v T) ([]byte, error) {
		value, err := encode(v)
		if err != nil {
			return nil, err
		}
		return appendKafkaRecord(nil, KafkaRecord{Value: value})
	})
	return SinkConfig[T]{kafka: &KafkaTopic{Topic: topic, Brokers: brokers}, encoder: e}
}

// KafkaKeyedSink is KafkaSink for records with a key, or a partition, of their own: encode
// makes each value into a whole record. A negative Partition is an error of the encoder.
func KafkaKeyedSink[T any](topic, brokers string, encode func(T) (KafkaRecord, error)) SinkConfig[T] {
	e := newEncoder(encode, func(v T) ([]byte, error) {
		rec, err := encode(v)
		if err != nil {
			return nil, err
		}
		return appendKafkaRecord(nil, rec)
	})
	return SinkConfig[T]{kafka: &KafkaTopic{Topic: topic, Brokers: brokers}, encoder: e}
}

// WithProperty returns the config of a Kafka sink with the client property key set to value
// (replacing an earlier value of key). A TCP sink has no properties: BuildApplication reports
// the call.
func (c SinkConfig[T]) WithProperty(key, value string) SinkConfig[T] {
	return c.WithProperties(KafkaProperty{key, value})
}

// WithProperties is WithProperty for each of props in turn, such as the Properties of
// KafkaSinkOptions.
func (c SinkConfig[T]) WithProperties(props ...KafkaProperty) SinkConfig[T] {
	if c.kafka == nil {
		c.err = cmp.Or(c.err, fmt.Errorf("WithProperty: only a Kafka sink has client properties, not the TCP sink to %s:%s", c.host, c.port))
		return c
	}
	c.kafka = c.kafka.withProperties(props)
	return c
}

// noneU32 is a Kafka record's key length when it has no key, and its partition when the
// client chooses.
const noneU32 = math.MaxUint32

// appendKafkaRecord appends rec as a Kafka sink's emitted payload (see outputs in
// wit/wallaroo.wit): key-len u32 (noneU32 for no key, then no key bytes), key, partition u32
// (noneU32: the client chooses), then the value.
func appendKafkaRecord(buf []byte, rec KafkaRecord) ([]byte, error) {
	partition := uint32(noneU32)
	if rec.Partition != nil {
		if *rec.Partition < 0 {
			return nil, fmt.Errorf("the Kafka record's partition is %d; a partition is 0 or more (nil lets the client choose)", *rec.Partition)
		}
		partition = uint32(*rec.Partition)
	}
	if uint64(len(rec.Key)) >= noneU32 {
		return nil, fmt.Errorf("the Kafka record's key is %d bytes, too long", len(rec.Key))
	}
	buf = slices.Grow(buf, 8+len(rec.Key)+len(rec.Value))
	if rec.Key == nil {
		buf = binary.LittleEndian.AppendUint32(buf, noneU32)
	} else {
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(rec.Key)))
		buf = append(buf, rec.Key...)
	}
	buf = binary.LittleEndian.AppendUint32(buf, partition)
	return append(buf, rec.Value...), nil
}
