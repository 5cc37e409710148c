//! The guest sees no file system, network, clock or randomness unless granted.

use std::time::Duration;

use wallaroo_tests::*;

fn probe(extra: &[&str]) -> String {
    let wasm = build_app("tests/apps/sandbox/probe.py");
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let mut node = Node::start(&wasm, &receiver.addr, dir.path(), extra);
    let input = dir.path().join("probes.txt");
    std::fs::write(&input, "file\nnet\nclock\nrandom\n").unwrap();
    send(&node.source, &input, &[]);
    let text = receiver.wait_lines(4, Duration::from_secs(60));
    assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
    text
}

fn line<'a>(text: &'a str, probe: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(probe))
        .unwrap_or_else(|| panic!("no {probe} line in {text}"))
}

#[test]
fn a_guest_gets_no_files_network_clock_or_randomness_by_default() {
    let first = probe(&["--workers", "1"]);
    assert!(line(&first, "file:").starts_with("file: denied"), "{first}");
    assert!(line(&first, "net:").starts_with("net: denied"), "{first}");
    assert_eq!(line(&first, "clock:"), "clock: 0", "{first}");
    // The random source is seeded the same way every run, so a replay computes the same.
    let second = probe(&["--workers", "1"]);
    assert_eq!(line(&first, "random:"), line(&second, "random:"));
}

#[test]
fn granted_clock_and_randomness_are_real() {
    let text = probe(&["--workers", "1", "--allow-clock", "--allow-random"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let seen: u64 = line(&text, "clock:")["clock: ".len()..].parse().unwrap();
    assert!(
        seen.abs_diff(now) < 600,
        "guest clock {seen}, host clock {now}"
    );
    let again = probe(&["--workers", "1", "--allow-random"]);
    assert_ne!(line(&text, "random:"), line(&again, "random:"));
}
