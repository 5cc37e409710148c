//! `wallaroo send` sends what a text file means: one message per line, empty lines skipped (as
//! Wallaroo's sender did) unless asked for, and an address it cannot use is refused at once.

use std::process::Command;
use std::time::Duration;

use wallaroo_tests::*;

const WORD_COUNT: &str = "componentize-py-examples/word_count/word_count.py";
const EXPECTED: &str = "componentize-py-examples/word_count/expected.txt";

/// The word-count sample with empty lines around and between its lines (some with `\r\n`
/// endings), and how many empty lines that is.
fn sample_with_blank_lines() -> (Vec<u8>, u64) {
    let sample =
        std::fs::read_to_string(root().join("componentize-py-examples/word_count/sample.txt"))
            .unwrap();
    let mut text = b"\n\r\n".to_vec();
    let mut blank = 2;
    for line in sample.lines() {
        text.extend_from_slice(line.as_bytes());
        if line.is_empty() {
            blank += 1;
            text.extend_from_slice(b"\n");
        } else {
            text.extend_from_slice(b"\n\n\r\n");
            blank += 2;
        }
    }
    (text, blank)
}

/// Runs the word count on `input` sent with `extra`, waits for `lines` output lines, stops the
/// node and returns all the receiver got.
fn word_count(input: &[u8], extra: &[&str], lines: usize) -> String {
    let wasm = build_app(WORD_COUNT);
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let mut node = Node::start(&wasm, &receiver.addr, dir.path(), &["--workers", "2"]);
    let file = dir.path().join("input.txt");
    std::fs::write(&file, input).unwrap();
    let mut args = vec!["--batch-size", "4"];
    args.extend_from_slice(extra);
    send(&node.source, &file, &args);
    receiver.wait_lines(lines, Duration::from_secs(60));
    assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
    let summary = node.proc.wait_line("stopped:", Duration::from_secs(1));
    assert!(summary.contains(", 0 dead-lettered"), "{summary}");
    receiver.text()
}

#[test]
fn blank_lines_are_not_sent_so_word_count_gives_exactly_the_expected_output() {
    let (input, _) = sample_with_blank_lines();
    let expected = expected(EXPECTED);
    let words = expected.values().sum::<u64>() as usize;
    let text = word_count(&input, &[], words);
    // The node has stopped and flushed its sink: nothing more will come.
    assert_eq!(text.lines().count(), words, "{text}");
    assert_eq!(running_counts(&text), expected);
}

#[test]
fn keep_blank_lines_sends_them_as_empty_messages() {
    let (input, blank) = sample_with_blank_lines();
    let mut expected = expected(EXPECTED);
    // The word count makes one empty word of each empty message.
    expected.insert(String::new(), blank);
    let words = expected.values().sum::<u64>() as usize;
    let text = word_count(&input, &["--keep-blank-lines"], words);
    assert_eq!(text.lines().count(), words, "{text}");
    assert_eq!(running_counts(&text), expected);
}

#[test]
fn an_address_without_a_port_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("input.txt");
    std::fs::write(&file, "apple\n").unwrap();
    for (host, says) in [
        ("127.0.0.1", "'127.0.0.1' has no port"),
        ("127.0.0.1:http", "'http' is not a port number"),
    ] {
        // Plain and acknowledged senders alike; before, each retried for 30 s or 2 minutes.
        for ack in [false, true] {
            let mut cmd = Command::new(wallaroo());
            cmd.args(["send", "--host", host, "--file"]).arg(&file);
            if ack {
                cmd.arg("--ack");
            }
            let out = cmd.output().unwrap();
            assert!(!out.status.success(), "{host} was accepted");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(says), "{host}: {err}");
            assert!(err.contains("expected HOST:PORT"), "{host}: {err}");
        }
    }
}

#[test]
fn port_0_and_a_host_name_that_does_not_exist_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("input.txt");
    std::fs::write(&file, "apple\n").unwrap();
    for (host, says) in [
        ("127.0.0.1:0", "port 0 cannot be connected to"),
        (
            "nonexistent.invalid:17010",
            "cannot resolve the host name 'nonexistent.invalid'",
        ),
    ] {
        // Before, each retried for 30 s (plain) or 2 minutes (acknowledged), then failed.
        for ack in [false, true] {
            let mut cmd = Command::new(wallaroo());
            cmd.args(["send", "--host", host, "--file"]).arg(&file);
            if ack {
                cmd.arg("--ack");
            }
            let out = cmd.output().unwrap();
            assert!(!out.status.success(), "{host} was accepted");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(says), "{host}: {err}");
            assert!(!err.contains("retrying"), "{host}: {err}");
        }
    }
}
