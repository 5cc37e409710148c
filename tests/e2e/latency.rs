//! Latency measurement: `wallaroo send --rate --stamp` stamps every message with its intended
//! send time, the stamps come through a pass-through and a word count (key_by and state), and
//! `wallaroo receive --latency` counts the lines and reports percentiles of the stamped ones.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use wallaroo_tests::*;

const GO_PASSTHROUGH: &str = "guest-sdks/go/examples-internal/passthrough";
const GO_WORD_COUNT: &str = "guest-sdks/go/examples/word_count";

/// `wallaroo receive --latency` that stops by itself after `lines` lines.
fn latency_receiver(dir: &Path, lines: u64) -> (Proc, String) {
    let mut cmd = Command::new(wallaroo());
    cmd.args(["receive", "--listen", "127.0.0.1:0", "--output"])
        .arg(dir.join("received.txt"))
        .arg("--latency")
        .arg(dir.join("latency.json"))
        .args(["--expect-lines", &lines.to_string()]);
    let proc = Proc::spawn("receive", cmd);
    let addr = proc.listening_addr("listening on");
    (proc, addr)
}

/// Runs `wasm` on a 2-worker node, sends `messages` stamped messages cycling through `input` at
/// 2000/s, waits for the receiver to stop by itself after `lines` lines; returns what it wrote
/// and its report.
fn run_stamped(wasm: &Path, input: &str, messages: u64, lines: u64) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let (mut receiver, sink) = latency_receiver(dir.path(), lines);
    let mut node = Node::start(wasm, &sink, dir.path(), &["--workers", "2"]);
    let file = dir.path().join("input.txt");
    std::fs::write(&file, input).unwrap();
    let messages = messages.to_string();
    send(
        &node.source,
        &file,
        &[
            "--rate",
            "2000",
            "--stamp",
            "--repeat",
            "--messages",
            &messages,
        ],
    );
    assert_eq!(
        receiver.wait(Duration::from_secs(120)),
        Some(0),
        "{}",
        receiver.stderr()
    );
    assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
    let text = std::fs::read_to_string(dir.path().join("received.txt")).unwrap();
    let report = std::fs::read_to_string(dir.path().join("latency.json")).unwrap();
    (
        text,
        serde_json::from_str(&report).expect("the report is JSON"),
    )
}

fn stamp_of(line: &str) -> u64 {
    let token = line.split(' ').next().unwrap();
    token
        .strip_prefix('t')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no stamp in {line:?}"))
}

fn assert_percentiles_ordered(report: &serde_json::Value) {
    let l = &report["latency_us"];
    let mut last = 0.0;
    for name in ["min", "p50", "p95", "p99", "p99.9", "p99.99", "max"] {
        let v = l[name]
            .as_f64()
            .unwrap_or_else(|| panic!("no {name} in {l}"));
        assert!(v > 0.0 && v >= last, "{name} = {v} after {last}: {l}");
        last = v;
    }
}

#[test]
fn stamped_messages_pass_through_in_order_and_every_one_is_measured() {
    let wasm = build_go_app(GO_PASSTHROUGH);
    let (text, report) = run_stamped(&wasm, "hello world\nsecond line\n", 300, 300);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 300);
    for (i, line) in lines.iter().enumerate() {
        let want = if i % 2 == 0 {
            "hello world"
        } else {
            "second line"
        };
        assert_eq!(line.split_once(' ').unwrap().1, want, "line {i}");
    }
    // One connection's messages keep their order; stamps are intended send times, one
    // 1/2000 s apart, so each is later than the one before.
    let stamps: Vec<u64> = lines.iter().map(|l| stamp_of(l)).collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    assert_eq!(report["lines"], 300);
    assert_eq!(report["stamped"], 300);
    assert_percentiles_ordered(&report);
}

#[test]
fn a_stamp_comes_through_a_word_count_as_a_word_of_its_own() {
    let wasm = build_go_app(GO_WORD_COUNT);
    let (text, report) = run_stamped(&wasm, "apple banana\n", 100, 300);
    let counts = running_counts(&text);
    assert_eq!(counts["apple"], 100);
    assert_eq!(counts["banana"], 100);
    let stamps: Vec<_> = counts.iter().filter(|(w, _)| w.starts_with('t')).collect();
    assert_eq!(stamps.len(), 100, "each stamp is a new word");
    assert!(stamps.iter().all(|(_, n)| **n == 1));
    assert_eq!(report["lines"], 300);
    assert_eq!(report["stamped"], 100);
    assert_percentiles_ordered(&report);
}

#[test]
fn stamps_need_a_rate_and_an_expected_count_needs_latency() {
    for args in [
        &["send", "--host", "127.0.0.1:1", "--file", "f", "--stamp"][..],
        &["receive", "--listen", "127.0.0.1:0", "--expect-lines", "5"],
    ] {
        let out = Command::new(wallaroo()).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--rate") || err.contains("--latency"), "{err}");
    }
}
