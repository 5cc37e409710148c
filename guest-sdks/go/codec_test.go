package wallaroo

import (
	"reflect"
	"testing"
)

type tree struct {
	Name     string
	children []*tree
	weights  map[string]float64
	flags    [2]bool
	n        int8
	u        uint64
	blob     []byte
	empty    []byte
}

func roundTrip[T any](t *testing.T, v T) {
	t.Helper()
	c, err := newCodec[T]()
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.decode(c.appendValue(nil, &v))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, v) {
		t.Fatalf("got %#v, want %#v", got, v)
	}
}

func TestCodecRoundTrips(t *testing.T) {
	roundTrip(t, "caf\xc3\xa9")
	roundTrip(t, -12345)
	roundTrip(t, 3.25)
	roundTrip(t, []string{"a", "", "b"})
	roundTrip(t, &tree{
		Name:     "root",
		children: []*tree{{Name: "leaf", n: -3}, nil},
		weights:  map[string]float64{"x": 1.5},
		flags:    [2]bool{true, false},
		u:        1 << 60,
		blob:     []byte{0, 1, 2},
		empty:    []byte{},
	})
}

func TestCodecRejectsTruncatedData(t *testing.T) {
	c, _ := newCodec[tree]()
	v := tree{Name: "something long enough"}
	data := c.appendValue(nil, &v)
	if _, err := c.decode(data[:len(data)/2]); err == nil {
		t.Fatal("decoded a truncated value")
	}
}

func BenchmarkCodecString(b *testing.B) {
	c, _ := newCodec[string]()
	s := "a word"
	var buf []byte
	for i := 0; i < b.N; i++ {
		buf = c.appendValue(buf[:0], &s)
		if _, err := c.decode(buf); err != nil {
			b.Fatal(err)
		}
	}
}
