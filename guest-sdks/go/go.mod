module wallaroo.dev/wallaroo

go 1.24
