#!/usr/bin/env bash
# The development Kafka broker (scripts/kafka) end to end with Kafka's own tools: start it, make a
# topic of 4 partitions, write keyed records with the console producer and read every one back
# with the console consumer, then copy partition 0 into a second topic in transactions (some
# aborted on purpose) and read the copy read_committed: exactly the committed records, in order.
# Stops the broker again unless it was running before (then it only deletes its topics). Works
# from any directory; a failure keeps the test's files and says where.
set -euo pipefail
cd "$(dirname "$0")/.."
kafka=scripts/kafka
work=$(mktemp -d)
topics=()
was_running=1
"$kafka" status >/dev/null || was_running=0

cleanup() {
    local status=$? topic
    if [ "$was_running" = 1 ]; then
        for topic in "${topics[@]}"; do "$kafka" topic delete "$topic" >/dev/null 2>&1 || true; done
    else
        "$kafka" stop >/dev/null || true
    fi
    if [ "$status" = 0 ]; then rm -rf "$work"; else echo "kafka smoke: its files are in $work" >&2; fi
}
trap cleanup EXIT

step() { printf 'kafka smoke: %s\n' "$*" >&2; }
fail() {
    printf 'kafka smoke: FAIL: %s\n' "$1" >&2
    [ $# -lt 2 ] || { echo "--- $2" >&2; tail -n 30 "$2" >&2; }
    exit 1
}

start=$("$kafka" start)
bootstrap=${start##* }
step "broker up at $bootstrap"

input=smoke-in-$$
copy=smoke-tx-$$
topics+=("$input" "$copy")
"$kafka" topic create "$input" 4 >/dev/null
"$kafka" topic create "$copy" 1 >/dev/null

# 40 keyed records: the default partitioner spreads them over all 4 partitions.
records=40
for i in $(seq 1 "$records"); do printf 'key-%d\tvalue-%d\n' "$i" "$i"; done >"$work/sent"
"$kafka" tool org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$bootstrap" \
    --topic "$input" --reader-property parse.key=true --command-property acks=all \
    <"$work/sent" 2>"$work/producer.log" || fail "console producer" "$work/producer.log"

consume() { # topic, options...
    local topic=$1
    shift
    "$kafka" tool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$bootstrap" \
        --topic "$topic" --formatter-property print.key=true \
        --formatter-property print.partition=true "$@"
}
# as a member of a consumer group (the KIP-848 protocol), so the group coordinator works too
consume "$input" --from-beginning --command-property group.protocol=consumer \
    --max-messages "$records" --timeout-ms 30000 >"$work/got" 2>"$work/consumer.log" ||
    fail "console consumer" "$work/consumer.log"
cut -f2- "$work/got" | sort >"$work/got.sorted"
sort "$work/sent" >"$work/sent.sorted"
cmp -s "$work/sent.sorted" "$work/got.sorted" ||
    fail "read back $(wc -l <"$work/got") records, not the $records sent" "$work/got"
partitions=$(cut -f1 "$work/got" | sort -u | wc -l)
[ "$partitions" -eq 4 ] || fail "the records landed in $partitions partitions, not 4" "$work/got"
step "$records records produced and consumed back over 4 partitions"

# Transactions: Kafka's transactional copier reads partition 0 and writes it to the copy topic,
# three records a transaction, committing its consumer offsets in each transaction and aborting
# some at random (then copying those records again).
awk -F'\t' '$1 == "Partition:0"' "$work/got" | cut -f2- >"$work/p0"
p0=$(wc -l <"$work/p0")
"$kafka" tool org.apache.kafka.tools.TransactionalMessageCopier --broker-list "$bootstrap" \
    --input-topic "$input" --input-partition 0 --output-topic "$copy" \
    --transactional-id "smoke-copier-$$" --consumer-group "smoke-copier-$$" \
    --transaction-size 3 --enable-random-aborts --use-group-metadata \
    >"$work/copier.out" 2>"$work/copier.log" || fail "transactional copier" "$work/copier.log"
grep -q '"ShutdownComplete"' "$work/copier.out" ||
    fail "the transactional copier did not finish" "$work/copier.out"
# Everything in the copy, aborted records too: read until nothing came for 1.5 s.
consume "$copy" --partition 0 --offset earliest --max-messages 100000 --timeout-ms 1500 \
    >"$work/all" 2>"$work/all.log" || fail "read_uncommitted consumer" "$work/all.log"
consume "$copy" --partition 0 --offset earliest --isolation-level read_committed \
    --max-messages "$p0" --timeout-ms 30000 >"$work/committed" 2>"$work/committed.log" ||
    fail "read_committed consumer" "$work/committed.log"
cut -f2- "$work/committed" >"$work/committed.records"
# Aborted records sit in the log before their copies: any that leaked would show up here.
cmp -s "$work/p0" "$work/committed.records" ||
    fail "read_committed gave other records than partition 0's $p0" "$work/committed"
aborted=$(($(wc -l <"$work/all") - p0))
step "$p0 records copied in transactions and read back read_committed, $aborted aborted ones skipped"

echo "kafka_smoke: 2 passed, 0 failed"
