// Alerts over sliding windows: deposits and withdrawals arrive as `USER,AMOUNT` lines, and
// every 3 s each user's total over the last 9 s is checked against a threshold of 2000 either
// way. The shape of componentize-py-examples/alerts_windowed/alerts.py (and of Wallaroo 0.6's
// `alerts_windowed`), with a TCP source instead of a generator, which the Go SDK does not have.
//
// Input: framed lines `USER,AMOUNT` (4-byte big-endian length, then UTF-8 text; AMOUNT a whole
// number, negative for a withdrawal). Output: one line per alert, `Deposit Alert for USER:
// TOTAL` or `Withdrawal Alert for USER: TOTAL`, for each window whose total passes the
// threshold. Windows are over ingest time (when the host received each line).
package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"wallaroo.dev/wallaroo"
)

const threshold = 2000

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
	transactions := wallaroo.Source("Alerts (windowed)", wallaroo.TCPSource(in[0].Host, in[0].Port, decodeTransaction))
	alerts := wallaroo.ToWindows(wallaroo.KeyBy(transactions, extractUser), "total over 9 s",
		wallaroo.RangeWindows(9*time.Second).WithSlide(3*time.Second), totalAggregation{})
	return wallaroo.BuildApplication("Alerts (windowed)",
		wallaroo.ToSink(alerts, wallaroo.TCPSink(out[0].Host, out[0].Port, encodeAlert)))
}

type transaction struct {
	user   string
	amount int64
}

func decodeTransaction(data []byte) (transaction, error) {
	user, amount, ok := strings.Cut(string(data), ",")
	if !ok || user == "" {
		return transaction{}, errors.New("expected USER,AMOUNT")
	}
	n, err := strconv.ParseInt(strings.TrimSpace(amount), 10, 64)
	if err != nil {
		return transaction{}, fmt.Errorf("the amount: %w", err)
	}
	return transaction{user, n}, nil
}

func extractUser(t transaction) string { return t.user }

// transactionTotal is a window's accumulator, kept in the step's state: the codec encodes its
// unexported field like an exported one.
type transactionTotal struct{ total int64 }

type alert struct {
	kind   string
	user   string
	amount int64
}

// totalAggregation sums a user's transactions over each window and alerts on windows past the
// threshold.
type totalAggregation struct{}

func (totalAggregation) InitialAccumulator() *transactionTotal { return &transactionTotal{} }

func (totalAggregation) Update(t transaction, total *transactionTotal) *transactionTotal {
	total.total += t.amount
	return total
}

func (totalAggregation) Combine(first, second *transactionTotal) *transactionTotal {
	return &transactionTotal{first.total + second.total}
}

func (totalAggregation) Output(user string, total *transactionTotal) (alert, bool) {
	switch {
	case total.total > threshold:
		return alert{"Deposit", user, total.total}, true
	case total.total < -threshold:
		return alert{"Withdrawal", user, total.total}, true
	}
	return alert{}, false
}

func encodeAlert(a alert) ([]byte, error) {
	return fmt.Appendf(nil, "%s Alert for %s: %d\n", a.kind, a.user, a.amount), nil
}
