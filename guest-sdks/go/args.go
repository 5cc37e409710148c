package wallaroo

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Addr is one address from the command line: `NAME@HOST:PORT` gives a Name, `HOST:PORT` none.
// Ports stay strings, as in Wallaroo.
type Addr struct {
	Name string
	Host string
	Port string
}

// TCPParseInputAddrs reads the `-i/--in` option (`--in X`, `--in=X`, `-i X`): a comma-separated
// list of `HOST:PORT` or `NAME@HOST:PORT`. Like Wallaroo's tcp_parse_input_addrs, the last
// occurrence counts and other arguments are ignored.
func TCPParseInputAddrs(args []string) ([]Addr, error) {
	return parseAddrs(args, "-i", "--in", "the input addresses", true)
}

// TCPParseOutputAddrs reads the `-o/--out` option the same way; a `NAME@` prefix is dropped.
func TCPParseOutputAddrs(args []string) ([]Addr, error) {
	return parseAddrs(args, "-o", "--out", "the output addresses", false)
}

func parseAddrs(args []string, short, long, what string, keepName bool) ([]Addr, error) {
	value, found, err := optionValue(args, short, long)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("missing %s/%s (%s, e.g. %s host:port)", short, long, what, long)
	}
	var addrs []Addr
	for _, entry := range strings.Split(value, ",") {
		a, err := parseAddr(entry, long)
		if err != nil {
			return nil, err
		}
		if !keepName {
			a.Name = ""
		}
		addrs = append(addrs, a)
	}
	return addrs, nil
}

func parseAddr(entry, flag string) (Addr, error) {
	var a Addr
	address := entry
	at := strings.LastIndex(entry, "@")
	if at >= 0 {
		a.Name, address = entry[:at], entry[at+1:]
	}
	colon := strings.LastIndex(address, ":")
	if colon >= 0 {
		a.Host, a.Port = address[:colon], address[colon+1:]
	}
	if colon < 0 || a.Host == "" || a.Port == "" || (at >= 0 && a.Name == "") {
		return Addr{}, fmt.Errorf("%s: %q is not [NAME@]HOST:PORT", flag, entry)
	}
	return a, nil
}

// optionValue is the value of the last occurrence of option long (`--long X`, `--long=X`) or,
// unless short is "", short (`-s X`, `-sX`, `-s=X`) before any `--`.
func optionValue(args []string, short, long string) (value string, found bool, err error) {
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			break
		}
		if arg == long || (short != "" && arg == short) {
			if i+1 >= len(args) || (strings.HasPrefix(args[i+1], "-") && len(args[i+1]) > 1) {
				return "", false, fmt.Errorf("%s: expected one argument", strings.TrimPrefix(short+"/"+long, "/"))
			}
			i++
			value, found = args[i], true
		} else if v, ok := strings.CutPrefix(arg, long+"="); ok {
			value, found = v, true
		} else if v, ok := strings.CutPrefix(arg, short); short != "" && ok && v != "" && !strings.HasPrefix(arg, "--") {
			value, found = strings.TrimPrefix(v, "="), true
		}
	}
	return value, found, nil
}

// KafkaOptions are a Kafka source's or sink's options from the command line, for KafkaSource
// or KafkaSink:
//
//	o, err := wallaroo.KafkaSourceOptions(args)
//	...
//	wallaroo.KafkaSource(o.Topic, o.Brokers, decode).WithProperties(o.Properties...)
type KafkaOptions struct {
	Topic string
	// Brokers are the bootstrap brokers, `host:port` entries joined by commas, port 9092
	// where the option gave none.
	Brokers string
	// Properties are the client properties the options set.
	Properties []KafkaProperty
}

// KafkaSourceOptions reads the options of a Kafka source, named as in Wallaroo:
// `--kafka_source_topic` and `--kafka_source_brokers` (a comma-separated list of HOST[:PORT],
// the port 9092 by default) are required; `--kafka_source_log_level` (Fine, Info, Warn or
// Error) sets the client's `log_level` (7, 6, 4 or 3). The last occurrence of an option
// counts and other arguments are ignored.
func KafkaSourceOptions(args []string) (KafkaOptions, error) {
	return kafkaOptions(args, "--kafka_source_")
}

// KafkaSinkOptions reads the options of a Kafka sink as KafkaSourceOptions reads a source's,
// from `--kafka_sink_topic`, `--kafka_sink_brokers` and `--kafka_sink_log_level`, and also
// `--kafka_sink_max_produce_buffer_ms` (the client's `linger.ms`, if given) and
// `--kafka_sink_max_message_size` (its `message.max.bytes`: 100000 unless given, at least
// 1000).
func KafkaSinkOptions(args []string) (KafkaOptions, error) {
	o, err := kafkaOptions(args, "--kafka_sink_")
	if err != nil {
		return KafkaOptions{}, err
	}
	linger, found, err := intOption(args, "--kafka_sink_max_produce_buffer_ms", 0, math.MaxInt32)
	if err != nil {
		return KafkaOptions{}, err
	}
	if found {
		o.Properties = append(o.Properties, KafkaProperty{"linger.ms", linger})
	}
	size, found, err := intOption(args, "--kafka_sink_max_message_size", 1000, 1000000000)
	if err != nil {
		return KafkaOptions{}, err
	}
	if !found {
		size = "100000"
	}
	o.Properties = append(o.Properties, KafkaProperty{"message.max.bytes", size})
	return o, nil
}

func kafkaOptions(args []string, prefix string) (KafkaOptions, error) {
	var o KafkaOptions
	topic, found, err := optionValue(args, "", prefix+"topic")
	if err != nil {
		return o, err
	}
	if !found || topic == "" {
		return o, fmt.Errorf("missing %stopic (the Kafka topic)", prefix)
	}
	o.Topic = topic
	brokers, found, err := optionValue(args, "", prefix+"brokers")
	if err != nil {
		return o, err
	}
	if !found || brokers == "" {
		return o, fmt.Errorf("missing %sbrokers (the Kafka brokers, e.g. %sbrokers host:9092,host2:9092)", prefix, prefix)
	}
	var entries []string
	for _, entry := range strings.Split(brokers, ",") {
		host, port, hasPort := strings.Cut(entry, ":")
		if !hasPort {
			port = "9092"
		}
		if n, err := strconv.Atoi(port); host == "" || err != nil || n < 1 || n > 65535 {
			return o, fmt.Errorf("%sbrokers: %q is not HOST[:PORT]", prefix, entry)
		}
		entries = append(entries, host+":"+port)
	}
	o.Brokers = strings.Join(entries, ",")
	level, found, err := optionValue(args, "", prefix+"log_level")
	if err != nil {
		return o, err
	}
	if found {
		levels := map[string]string{"fine": "7", "info": "6", "warn": "4", "error": "3"}
		n, ok := levels[strings.ToLower(level)]
		if !ok {
			return o, fmt.Errorf("%slog_level: %q is not Fine, Info, Warn or Error", prefix, level)
		}
		o.Properties = append(o.Properties, KafkaProperty{"log_level", n})
	}
	return o, nil
}

// intOption is the value of option long, checked to be a whole number from least to most.
func intOption(args []string, long string, least, most int) (string, bool, error) {
	value, found, err := optionValue(args, "", long)
	if err != nil || !found {
		return "", false, err
	}
	n, err := strconv.Atoi(value)
	if err != nil || n < least || n > most {
		return "", false, fmt.Errorf("%s: %q is not a whole number from %d to %d", long, value, least, most)
	}
	return strconv.Itoa(n), true, nil
}
