// Running totals per user whose state expires after a quiet second, for the end-to-end tests
// of the Go SDK's state expiry: the Go twin of tests/apps/quiet_users. Input lines are
// `USER,AMOUNT`; each message outputs `USER TOTAL COUNT`, and a user's state expiring outputs
// `USER expired TOTAL COUNT`.
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
	totals := wallaroo.ToState(wallaroo.KeyBy(transactions, user), "running total", newTotal, add)
	totals = wallaroo.ExpireAfter(totals, time.Second, farewell)
	return wallaroo.BuildApplication("Quiet users",
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

func newTotal() *total { return &total{} }

func add(t transaction, s *total) (string, error) {
	s.Total += t.amount
	s.Count++
	return fmt.Sprintf("%s %d %d", t.user, s.Total, s.Count), nil
}

func farewell(user string, s *total) ([]string, error) {
	return []string{fmt.Sprintf("%s expired %d %d", user, s.Total, s.Count)}, nil
}

func encode(line string) ([]byte, error) { return []byte(line + "\n"), nil }
