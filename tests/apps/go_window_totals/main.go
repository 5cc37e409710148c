// Totals per user over sliding windows of 2 s every 1 s of ingest time, for the end-to-end
// tests of the Go SDK's windows: the Go twin of tests/apps/window_totals. Input lines are
// `USER,AMOUNT`; each window outputs `USER TOTAL COUNT` (COUNT: how many messages it held).
package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"wallaroo.dev/wallaroo"
)

func init() { wallaroo.Setup(applicationSetup) }

func main() {}

func applicationSetup(args []string) (*wallaroo.Application, error) {
	in, err := wallaroo.TCPParseInputAddrs(args)
	if err != nil {
		return nil, err
	}
	out, err := wallaroo.TCPParseOutputAddrs(args)
	if err != nil {
		return nil, err
	}
	transactions := wallaroo.Source("Transactions", wallaroo.TCPSource(in[0].Host, in[0].Port, decode))
	totals := wallaroo.ToWindows(wallaroo.KeyBy(transactions, user), "Totals",
		wallaroo.RangeWindows(2*time.Second).WithSlide(time.Second), totalsAggregation{})
	return wallaroo.BuildApplication("Window totals",
		wallaroo.ToSink(totals, wallaroo.TCPSink(out[0].Host, out[0].Port, encode)))
}

type transaction struct {
	user   string
	amount int64
}

func decode(data []byte) (transaction, error) {
	name, amount, ok := strings.Cut(string(data), ",")
	if !ok {
		return transaction{}, errors.New("expected USER,AMOUNT")
	}
	n, err := strconv.ParseInt(amount, 10, 64)
	return transaction{name, n}, err
}

func user(t transaction) string { return t.user }

type total struct {
	Total int64
	Count int64
}

type totalsAggregation struct{}

func (totalsAggregation) InitialAccumulator() total { return total{} }

func (totalsAggregation) Update(t transaction, acc total) total {
	return total{acc.Total + t.amount, acc.Count + 1}
}

func (totalsAggregation) Combine(a, b total) total {
	return total{a.Total + b.Total, a.Count + b.Count}
}

func (totalsAggregation) Output(user string, acc total) (string, bool) {
	return fmt.Sprintf("%s %d %d", user, acc.Total, acc.Count), true
}

func encode(line string) ([]byte, error) { return []byte(line + "\n"), nil }
