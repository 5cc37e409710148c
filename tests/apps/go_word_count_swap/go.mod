module wallaroo.dev/tests/go_word_count_swap

go 1.24

require wallaroo.dev/wallaroo v0.0.0

replace wallaroo.dev/wallaroo => ../../../guest-sdks/go
