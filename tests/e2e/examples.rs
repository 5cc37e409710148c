//! The examples give exactly their expected output.

use std::time::Duration;

use wallaroo_tests::*;

const WORD_COUNT: &str = "componentize-py-examples/word_count/word_count.py";
const ALPHABET: &str = "componentize-py-examples/alphabet/alphabet.py";
/// The same word count in the styles of Wallaroo's three Python API generations: 0.6, 0.1-0.3
/// classes with `ApplicationBuilder`, 0.4/0.5 decorators with `ApplicationBuilder`.
pub const WORD_COUNT_STYLES: [&str; 3] = [
    WORD_COUNT,
    "componentize-py-examples/word_count_classes/word_count_classes.py",
    "componentize-py-examples/word_count_decorators/word_count_decorators.py",
];

fn word_count_lines() -> usize {
    expected("componentize-py-examples/word_count/expected.txt")
        .values()
        .sum::<u64>() as usize
}

/// Runs `app`, a word count, on one node with `workers` over the word count sample; checks
/// every word's counts and returns the output.
fn run_word_count(app: &str, workers: &str) -> String {
    let wasm = build_app(app);
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let mut node = Node::start(&wasm, &receiver.addr, dir.path(), &["--workers", workers]);
    send(
        &node.source,
        &root().join("componentize-py-examples/word_count/sample.txt"),
        &["--batch-size", "3"],
    );
    let text = receiver.wait_lines(word_count_lines(), Duration::from_secs(60));
    assert_eq!(
        node.proc.stop(Duration::from_secs(30)),
        Some(0),
        "{app}: {}",
        node.proc.stderr()
    );
    // Every word's counts run 1, 2, 3... in order (no loss, no repeat, order per key kept) and
    // end at the expected totals.
    assert_eq!(
        running_counts(&text),
        expected("componentize-py-examples/word_count/expected.txt"),
        "{app}"
    );
    text
}

#[test]
fn word_count_gives_the_expected_counts() {
    run_word_count(WORD_COUNT, "1");
}

#[test]
fn word_count_with_several_workers_keeps_each_words_order() {
    run_word_count(WORD_COUNT, "3");
}

#[test]
fn alphabet_gives_the_expected_totals() {
    let wasm = build_app(ALPHABET);
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let mut node = Node::start(&wasm, &receiver.addr, dir.path(), &["--workers", "2"]);
    let votes = root().join("componentize-py-examples/alphabet/votes.msg");
    send(&node.source, &votes, &["--binary", "--batch-size", "50"]);
    let text = receiver.wait_lines(2000, Duration::from_secs(60));
    assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
    assert_eq!(
        final_values(&text),
        expected("componentize-py-examples/alphabet/expected.txt")
    );
}

/// Output lines in order of their bytes: workers interleave their keys' lines differently from
/// run to run, each key's own lines keep their order.
pub fn sorted_lines(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines.iter().map(|line| format!("{line}\n")).collect()
}

#[test]
fn the_word_counts_of_every_api_generation_give_the_same_output() {
    let outputs: Vec<String> = WORD_COUNT_STYLES
        .iter()
        .map(|app| sorted_lines(&run_word_count(app, "2")))
        .collect();
    assert_eq!(outputs[1], outputs[0], "{}", WORD_COUNT_STYLES[1]);
    assert_eq!(outputs[2], outputs[0], "{}", WORD_COUNT_STYLES[2]);
}

#[test]
fn the_builders_partitioned_and_single_states_give_the_alphabets_totals() {
    let votes = root().join("componentize-py-examples/alphabet/votes.msg");
    for app in [
        "componentize-py-examples/alphabet_partitioned/alphabet_partitioned.py",
        "componentize-py-examples/alphabet_one_state/alphabet_one_state.py",
    ] {
        let wasm = build_app(app);
        let dir = tempfile::tempdir().unwrap();
        let receiver = Receiver::start(dir.path());
        let mut node = Node::start(&wasm, &receiver.addr, dir.path(), &["--workers", "2"]);
        send(&node.source, &votes, &["--binary", "--batch-size", "50"]);
        let text = receiver.wait_lines(2000, Duration::from_secs(60));
        assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0), "{app}");
        assert_eq!(
            final_values(&text),
            expected("componentize-py-examples/alphabet/expected.txt"),
            "{app}"
        );
    }
}

#[test]
fn several_connections_at_once_are_all_counted() {
    let wasm = build_app(WORD_COUNT);
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let mut node = Node::start(&wasm, &receiver.addr, dir.path(), &["--workers", "2"]);
    let sample = root().join("componentize-py-examples/word_count/sample.txt");
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| send(&node.source, &sample, &["--batch-size", "2"]));
        }
    });
    let text = receiver.wait_lines(3 * word_count_lines(), Duration::from_secs(60));
    assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
    let tripled: std::collections::BTreeMap<String, u64> =
        expected("componentize-py-examples/word_count/expected.txt")
            .into_iter()
            .map(|(w, n)| (w, 3 * n))
            .collect();
    assert_eq!(running_counts(&text), tripled);
}

#[test]
fn sigterm_processes_what_was_accepted_and_flushes_the_sink() {
    let wasm = build_app(WORD_COUNT);
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let mut node = Node::start(&wasm, &receiver.addr, dir.path(), &["--workers", "2"]);
    let sample = root().join("componentize-py-examples/word_count/sample.txt");
    send(
        &node.source,
        &sample,
        &["--repeat", "--messages", "2000", "--batch-size", "100"],
    );
    receiver.wait_lines(1, Duration::from_secs(60));
    assert_eq!(node.proc.stop(Duration::from_secs(60)), Some(0));
    let summary = node.proc.wait_line("stopped:", Duration::from_secs(1));
    let emitted: usize = summary
        .split(", ")
        .find_map(|part| part.strip_suffix(" emitted"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no emitted count in {summary:?}"));
    // The receiver has every line the node emitted before exiting, and they are consistent.
    let text = wait_until(Duration::from_secs(10), || {
        let t = receiver.text();
        (t.lines().count() == emitted).then_some(t)
    })
    .unwrap_or_else(|| {
        panic!(
            "receiver has {} lines, node emitted {emitted}",
            receiver.text().lines().count()
        )
    });
    running_counts(&text);
    // Frames still in the socket when the signal came were never accepted; what was accepted
    // was processed.
    let received: u64 = summary
        .strip_prefix("stopped: ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no received count in {summary:?}"));
    assert!((1..=2000).contains(&received), "{summary}");
}

#[test]
fn second_start_loads_native_code_from_the_cache() {
    let wasm = build_app(WORD_COUNT);
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let receiver = Receiver::start(dir.path());
        let mut node = Node::start(&wasm, &receiver.addr, dir.path(), &["--workers", "1"]);
        assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
    }
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let node = Node::start(&wasm, &receiver.addr, dir.path(), &["--workers", "1"]);
    node.proc
        .wait_line("code loaded from cache", Duration::from_secs(5));
}

#[test]
fn a_node_whose_sink_is_absent_still_stops_on_sigterm() {
    let wasm = build_app(WORD_COUNT);
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: the sink never connects, and nothing is waiting to be written.
    let mut node = Node::start(&wasm, "127.0.0.1:1", dir.path(), &["--workers", "1"]);
    assert_eq!(
        node.proc.stop(Duration::from_secs(30)),
        Some(0),
        "{}",
        node.proc.stderr()
    );
}
