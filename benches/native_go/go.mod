module wallaroo.dev/benches/native_go

go 1.24
