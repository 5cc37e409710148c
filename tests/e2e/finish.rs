//! Streams that end: `wallaroo send --ack --end` ends a stream, a generator runs out, and a
//! node run with `--finish` then moves event time to its end (every window fires, every
//! expiring key expires), commits the output and exits 0 by itself.

use std::path::Path;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use wallaroo_tests::*;

use crate::windows::{event_time_input, windows};

pub(crate) fn send_ended(source: &str, input: &Path, stream: &str) {
    send(
        source,
        input,
        &[
            "--ack",
            "--stream-id",
            stream,
            "--end",
            "--batch-size",
            "100",
        ],
    );
}

#[test]
fn a_node_asked_to_finish_fires_every_window_when_its_streams_end_and_exits_0() {
    let mut rng = StdRng::seed_from_u64(test_seed("finish input"));
    let wasm = build_app(crate::windows::APP);
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first.txt"), dir.path().join("second.txt"));
    let expected = event_time_input(&first, 1500, &mut rng);
    std::fs::write(&second, "late,1,1.5\n").unwrap();
    let receiver = Receiver::start(dir.path());
    let args = [
        "--workers",
        "2",
        "--event-time",
        "--finish",
        "--resilience",
        "exactly-once",
        "--sink-framing",
        "tagged",
    ];
    let mut node = Node::start(&wasm, &receiver.addr, dir.path(), &args);
    // Two streams: the node goes on until both have ended.
    send(&node.source, &second, &["--ack", "--stream-id", "2"]);
    send_ended(&node.source, &first, "1");
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        !node.proc.has_exited(),
        "it finished with stream 2 not ended"
    );
    send_ended(&node.source, &second, "2");
    assert_eq!(
        node.proc.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        node.proc.stderr()
    );
    assert!(
        node.proc
            .stderr()
            .contains("every source's stream has ended"),
        "{}",
        node.proc.stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut got = windows(&receiver.text());
    // The second stream's record, from 1970, was in two windows, which fired once the first
    // stream's times passed them.
    assert_eq!(got.remove("late"), Some(vec![(1, 1), (1, 1)]));
    assert_eq!(got, expected);
}

#[test]
fn an_ended_stream_stays_ended_across_a_kill_and_the_restarted_node_finishes() {
    let mut rng = StdRng::seed_from_u64(test_seed("finish kill input"));
    let wasm = build_app(crate::windows::APP);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    let expected = event_time_input(&input, 1500, &mut rng);
    let receiver = Receiver::start(dir.path());
    let source = format!("127.0.0.1:{}", free_port());
    let args = [
        "--event-time",
        "--resilience",
        "exactly-once",
        "--sink-framing",
        "tagged",
    ];
    // Not asked to finish: the stream ends, and the node waits on.
    let mut node = Node::start_at(&wasm, &source, &receiver.addr, dir.path(), &args);
    send_ended(&source, &input, "7");
    node.proc.signal(libc::SIGKILL);
    node.proc.wait(Duration::from_secs(10));
    // After a restart the node knows the stream ended: sending on it again is refused, naming
    // the stream, and sending with --end again sends nothing.
    let mut node = Node::start_at(&wasm, &source, &receiver.addr, dir.path(), &args);
    let send_again = |end: bool| {
        let mut cmd = std::process::Command::new(wallaroo());
        cmd.args(["send", "--host", &source, "--file"])
            .arg(&input)
            .args(["--ack", "--stream-id", "7"]);
        if end {
            cmd.arg("--end");
        }
        cmd.output().unwrap()
    };
    let refused = send_again(false);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("stream 7 of"),
        "{said}"
    );
    assert!(said.contains("has ended"), "{said}");
    assert!(send_again(true).status.success());
    node.proc.signal(libc::SIGKILL);
    node.proc.wait(Duration::from_secs(10));
    // Asked to finish, it does so at once: the stream ended before it started.
    let mut finishing = args.to_vec();
    finishing.push("--finish");
    let mut node = Node::start_at(&wasm, &source, &receiver.addr, dir.path(), &finishing);
    assert_eq!(
        node.proc.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        node.proc.stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(windows(&receiver.text()), expected);
}

#[test]
fn a_generator_that_runs_out_ends_its_source_and_the_node_finishes() {
    let wasm = build_app("tests/apps/countdown/countdown.py");
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let extra = ["--workers", "2", "--finish", "--from", "1000"];
    let mut node = run_generating("countdown", &wasm, &receiver.addr, dir.path(), &extra);
    assert_eq!(
        node.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        node.stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    let text = receiver.text();
    let last = |parity: &str| {
        text.lines()
            .rfind(|l| l.starts_with(parity))
            .map(str::to_string)
    };
    // 1000 down to 1: 500 even numbers summing to 250500, 500 odd ones to 250000.
    assert_eq!(last("even "), Some("even 500 250500".to_string()), "{text}");
    assert_eq!(last("odd "), Some("odd 500 250000".to_string()), "{text}");
    assert_eq!(text.lines().count(), 1000);
}
