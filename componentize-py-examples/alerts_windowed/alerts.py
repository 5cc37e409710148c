"""Alerts over sliding windows: a generator makes deposits and withdrawals for five users, and
every 3 s each user's total over the last 9 s is checked against a threshold of 2000 either
way. The shape of Wallaroo 0.6's `alerts_windowed` example, written against the same API.

Output: one line per alert, `Deposit Alert for USER: TOTAL` or `Withdrawal Alert for USER:
TOTAL`, for each window whose total passes the threshold. Windows are over ingest time, so
which windows alert depends on how fast the generator runs; every alert names a window whose
total passed the threshold.
"""

import wallaroo

THRESHOLD = 2000


def application_setup(args):
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    transactions = wallaroo.source(
        "Alerts (windowed)", wallaroo.GenSourceConfig(TransactionsGenerator())
    )
    pipeline = (
        transactions.key_by(extract_user)
        .to(
            wallaroo.range_windows(wallaroo.seconds(9))
            .with_slide(wallaroo.seconds(3))
            .over(TotalAggregation())
        )
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_alert))
    )
    return wallaroo.build_application("Alerts (windowed)", pipeline)


class Transaction:
    def __init__(self, user, amount):
        self.user = user
        self.amount = amount


class TransactionTotal:
    def __init__(self):
        self.total = 0


class Alert:
    def __init__(self, kind, user, amount):
        self.kind = kind
        self.user = user
        self.amount = amount

    def __str__(self):
        return f"{self.kind} Alert for {self.user}: {self.amount}"


@wallaroo.key_extractor
def extract_user(transaction):
    return transaction.user


class TotalAggregation(wallaroo.Aggregation):
    def initial_accumulator(self):
        return TransactionTotal()

    def update(self, transaction, total):
        total.total += transaction.amount

    def combine(self, first, second):
        both = TransactionTotal()
        both.total = first.total + second.total
        return both

    def output(self, user, total):
        if total.total > THRESHOLD:
            return Alert("Deposit", user, total.total)
        if total.total < -THRESHOLD:
            return Alert("Withdrawal", user, total.total)
        return None


@wallaroo.encoder
def encode_alert(alert):
    return (str(alert) + "\n").encode()


class TransactionsGenerator:
    """Amounts from a fixed sequence, turning a user's running balance back once it passes
    5000 either way, so that every user's windows go over the threshold now and then."""

    def __init__(self):
        self.user_index = 0
        self.balances = [1, 0, 0, 0, 0]
        self.users = ["Fido", "Rex", "Dr. Whiskers", "Feathers", "Mountaineer"]

    def initial_value(self):
        return Transaction("Fido", 1)

    def apply(self, previous):
        amount = ((previous.amount * 2305843009213693951) + 7) % 2500 - 1250
        self.user_index = (self.user_index + 1) % len(self.users)
        balance = self.balances[self.user_index]
        if balance > 5000:
            amount = -6000
        elif balance < -5000:
            amount = 6000
        self.balances[self.user_index] = balance + amount
        return Transaction(self.users[self.user_index], amount)
