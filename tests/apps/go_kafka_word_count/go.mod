module wallaroo.dev/tests/go_kafka_word_count

go 1.24

require wallaroo.dev/wallaroo v0.0.0

replace wallaroo.dev/wallaroo => ../../../guest-sdks/go
