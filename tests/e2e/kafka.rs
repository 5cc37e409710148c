//! Kafka in and out against a real broker (`scripts/kafka`): word count from a topic of four
//! partitions to a topic, read back as a `read_committed` consumer sees it.
//!
//! - exactly-once: SIGKILL three times mid-stream; every word's counts run 1, 2, 3... exactly,
//!   to the word's true total, in Python and in Go.
//! - at-least-once: a kill loses nothing (every count up to the total appears).
//! - the broker stopped for 10 s mid-stream and started again: nothing lost, nothing repeated.
//! - the original Wallaroo's celsius-kafka shape: every value converted, in order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use wallaroo_tests::kafka::{Broker, lines_of};
use wallaroo_tests::*;

const WORD_COUNT: &str = "tests/apps/kafka_word_count/word_count.py";
const GO_WORD_COUNT: &str = "tests/apps/go_kafka_word_count";
const CELSIUS: &str = "componentize-py-examples/celsius_kafka/celsius.py";
const EXACTLY_ONCE: &[&str] = &[
    "--resilience",
    "exactly-once",
    "--checkpoint-interval",
    "200",
];

/// `wallaroo run WASM` with `host` options, its data in `dir`, the app reading `input` and
/// writing `output` on `broker`.
fn run_kafka_app(
    broker: &Broker,
    wasm: &Path,
    dir: &Path,
    host: &[&str],
    input: &str,
    output: &str,
) -> Proc {
    let mut cmd = Command::new(wallaroo());
    cmd.arg("run")
        .arg(wasm)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--cache-dir")
        .arg(scratch().join("cache"))
        .args(host)
        .args(broker.app_args(input, output));
    let proc = Proc::spawn("run", cmd);
    proc.wait_line("reading Kafka topic", Duration::from_secs(120));
    proc
}

/// `WORD N` lines; checks each word's counts run 1, 2, 3... with no gap or repeat and returns
/// the last count per word.
fn exact_counts(lines: &[String]) -> BTreeMap<String, u64> {
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for line in lines {
        let (word, n) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a `WORD N` line: {line:?}"));
        let n: u64 = n
            .parse()
            .unwrap_or_else(|_| panic!("bad count in {line:?}"));
        let prev = last.insert(word.to_string(), n).unwrap_or(0);
        assert_eq!(n, prev + 1, "the count of {word:?} went from {prev} to {n}");
    }
    last
}

/// Waits until `out` holds `total` lines (or stalls for 120 s), then a moment more, so that a
/// repeat after the last expected line would show.
fn wait_for_lines(out: &PathBuf, total: usize, logs: &dyn Fn() -> String) -> Vec<String> {
    let mut seen = 0;
    let mut since = std::time::Instant::now();
    loop {
        let n = lines_of(out).len();
        if n >= total {
            break;
        }
        if n > seen {
            seen = n;
            since = std::time::Instant::now();
        }
        assert!(
            since.elapsed() < Duration::from_secs(120),
            "output stalled at {n} of {total} lines; the node said:\n{}",
            tail(&logs(), 40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    lines_of(out)
}

struct WordCountRun {
    broker: &'static Broker,
    dir: tempfile::TempDir,
    wasm: PathBuf,
    input: String,
    output: String,
    file: PathBuf,
    totals: BTreeMap<String, u64>,
    words: usize,
    out: PathBuf,
    consumer: Proc,
}

/// Topics of four partitions, a random text of `lines` lines, and a consumer of the output.
fn word_count_run(app: &str, go: bool, lines: usize) -> WordCountRun {
    let broker = Broker::shared();
    let wasm = if go {
        build_go_app(app)
    } else {
        build_app(app)
    };
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(test_seed(&format!("{app}: words")));
    let file = dir.path().join("input.txt");
    let totals = random_words(&file, lines, 5, &mut rng);
    let words = totals.values().sum::<u64>() as usize;
    let input = broker.topic("words", 4);
    let output = broker.topic("counts", 4);
    let out = dir.path().join("out.txt");
    let consumer = broker.consumer(&output, &out);
    WordCountRun {
        broker,
        dir,
        wasm,
        input,
        output,
        file,
        totals,
        words,
        out,
        consumer,
    }
}

impl WordCountRun {
    fn run(&self, host: &[&str]) -> Proc {
        run_kafka_app(
            self.broker,
            &self.wasm,
            self.dir.path(),
            host,
            &self.input,
            &self.output,
        )
    }

    /// Kills the node with SIGKILL at each of `points` (lines of output) and starts it again.
    fn kill_at(&self, node: &mut Proc, points: &[usize], host: &[&str]) {
        for &point in points {
            wait_until(Duration::from_secs(120), || {
                (lines_of(&self.out).len() >= point).then_some(())
            })
            .unwrap_or_else(|| panic!("output stalled before {point}:\n{}", node.stderr()));
            node.signal(libc::SIGKILL);
            node.wait(Duration::from_secs(10));
            *node = self.run(host);
        }
    }
}

fn exactly_once_through_kills(app: &str, go: bool) {
    let run = word_count_run(app, go, 6000);
    let host = [&["--workers", "2"], EXACTLY_ONCE].concat();
    let mut node = run.run(&host);
    let mut producer = run.broker.producer(&run.input, &run.file, Some(800));
    let points = [run.words / 5, run.words * 2 / 5, run.words * 3 / 5];
    run.kill_at(&mut node, &points, &host);
    assert_eq!(
        producer.wait(Duration::from_secs(120)),
        Some(0),
        "{}",
        producer.stderr()
    );
    let lines = wait_for_lines(&run.out, run.words, &|| node.stderr());
    let counts = exact_counts(&lines);
    assert_eq!(counts, run.totals, "final counts");
    assert_eq!(lines.len(), run.words, "every word counted once");
    let log = node.stderr();
    assert!(log.contains("recovered checkpoint"), "{log}");
    drop(run.consumer);
}

#[test]
fn exactly_once_kafka_word_count_survives_three_kills_with_exact_output() {
    exactly_once_through_kills(WORD_COUNT, false);
}

#[test]
fn go_kafka_word_count_survives_three_kills_with_exact_output() {
    exactly_once_through_kills(GO_WORD_COUNT, true);
}

#[test]
fn at_least_once_kafka_word_count_loses_nothing_through_a_kill() {
    let run = word_count_run(WORD_COUNT, false, 4000);
    let host = [
        "--workers",
        "2",
        "--resilience",
        "at-least-once",
        "--checkpoint-interval",
        "200",
    ];
    let mut node = run.run(&host);
    let mut producer = run.broker.producer(&run.input, &run.file, Some(1000));
    run.kill_at(&mut node, &[run.words / 2], &host);
    assert_eq!(producer.wait(Duration::from_secs(120)), Some(0));
    // Every count of every word, 1 up to its total, appears at least once.
    let done = wait_until(Duration::from_secs(120), || {
        let lines = lines_of(&run.out);
        let mut seen: BTreeMap<String, std::collections::BTreeSet<u64>> = BTreeMap::new();
        for line in &lines {
            let (word, n) = line.rsplit_once(' ').expect("`WORD N`");
            seen.entry(word.into())
                .or_default()
                .insert(n.parse().unwrap());
        }
        let complete = run.totals.iter().all(|(w, &total)| {
            seen.get(w)
                .is_some_and(|s| (1..=total).all(|n| s.contains(&n)) && s.len() as u64 == total)
        });
        complete.then_some(lines.len())
    });
    let lines = done.unwrap_or_else(|| panic!("counts were lost:\n{}", tail(&node.stderr(), 30)));
    assert!(lines >= run.words, "{lines} lines for {} words", run.words);
    eprintln!("at-least-once: {} lines for {} words", lines, run.words);
}

#[test]
fn a_broker_away_for_ten_seconds_mid_stream_costs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::own(&dir.path().join("kafka"));
    let wasm = build_app(WORD_COUNT);
    let mut rng = StdRng::seed_from_u64(test_seed("broker away: words"));
    let file = dir.path().join("input.txt");
    let totals = random_words(&file, 5000, 5, &mut rng);
    let words = totals.values().sum::<u64>() as usize;
    let input = broker.topic("words", 4);
    let output = broker.topic("counts", 4);
    let out = dir.path().join("out.txt");
    let _consumer = broker.consumer(&output, &out);
    let node = run_kafka_app(
        &broker,
        &wasm,
        dir.path(),
        &[&["--workers", "2"], EXACTLY_ONCE].concat(),
        &input,
        &output,
    );
    let mut producer = broker.producer(&input, &file, Some(1000));
    wait_until(Duration::from_secs(120), || {
        (lines_of(&out).len() >= words / 4).then_some(())
    })
    .expect("output before the broker stops");
    broker.stop();
    std::thread::sleep(Duration::from_secs(10));
    broker.start();
    assert_eq!(
        producer.wait(Duration::from_secs(300)),
        Some(0),
        "{}",
        producer.stderr()
    );
    let lines = wait_for_lines(&out, words, &|| node.stderr());
    assert_eq!(exact_counts(&lines), totals);
    assert_eq!(lines.len(), words, "every word counted once");
    let log = node.stderr();
    assert!(
        log.contains("retrying"),
        "the node said nothing of the broker:\n{log}"
    );
    broker.stop();
}

#[test]
fn celsius_kafka_converts_every_value_in_order() {
    let broker = Broker::shared();
    let wasm = build_app(CELSIUS);
    let dir = tempfile::tempdir().unwrap();
    // One partition in, so one order to check.
    let input = broker.topic("celsius", 1);
    let output = broker.topic("fahrenheit", 1);
    let values: Vec<i32> = (-40..=100).collect();
    let file = dir.path().join("input.txt");
    let text: String = values.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("out.txt");
    let consumer = broker.consumer(&output, &out);
    let node = run_kafka_app(broker, &wasm, dir.path(), &[], &input, &output);
    let mut producer = broker.producer(&input, &file, None);
    assert_eq!(producer.wait(Duration::from_secs(60)), Some(0));
    let lines = wait_for_lines(&out, values.len(), &|| {
        format!("{}\n--- consumer:\n{}", node.stderr(), consumer.stderr())
    });
    let expected: Vec<String> = values
        .iter()
        .map(|c| format!("{:.6}", *c as f64 * 1.8 + 32.0))
        .collect();
    assert_eq!(lines, expected);
}
