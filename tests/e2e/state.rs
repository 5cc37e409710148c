//! Key state moves between host and guest in bounded calls: a frame that creates a million keys
//! is processed like any other.

use std::time::{Duration, Instant};

use wallaroo_tests::*;

/// Distinct words in the one large frame; `WALLAROO_TEST_KEYS` overrides.
const KEYS: usize = 1_000_000;

#[test]
fn a_frame_of_a_million_distinct_words_is_counted_without_losing_an_instance() {
    let keys: usize = std::env::var("WALLAROO_TEST_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(KEYS);
    let wasm = build_app("componentize-py-examples/word_count/word_count.py");
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    // A call limit well above what any one call here needs (the frame itself, about a second),
    // and well below what copying a million keys out of the guest in one call takes.
    let mut node = Node::start(
        &wasm,
        &receiver.addr,
        dir.path(),
        &["--workers", "2", "--call-timeout", "5000"],
    );

    let big = dir.path().join("big.txt");
    let words: Vec<String> = (0..keys).map(|i| format!("k{i}")).collect();
    std::fs::write(&big, words.join(" ") + "\n").unwrap();
    let started = Instant::now();
    send(&node.source, &big, &[]);
    receiver.wait_lines(keys, Duration::from_secs(600));
    eprintln!("{keys} distinct words counted in {:?}", started.elapsed());

    // The frames after it: every word of three small frames was counted once before.
    let small = dir.path().join("small.txt");
    std::fs::write(&small, "k0 k1 k2\nk0 k1\nk0\n").unwrap();
    let started = Instant::now();
    send(&node.source, &small, &[]);
    let text = receiver.wait_lines(keys + 6, Duration::from_secs(120));
    eprintln!("three frames after it in {:?}", started.elapsed());
    let counts = running_counts(&text);
    assert_eq!(counts.len(), keys);
    assert_eq!((counts["k0"], counts["k1"], counts["k2"]), (4, 3, 2));
    assert_eq!(counts.values().sum::<u64>(), keys as u64 + 6);

    assert_eq!(node.proc.stop(Duration::from_secs(120)), Some(0));
    let summary = node.proc.wait_line("stopped:", Duration::from_secs(1));
    assert!(
        summary.contains(" 0 dead-lettered, 0 instances replaced"),
        "{summary}"
    );
}
