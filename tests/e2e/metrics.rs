//! `wallaroo run --metrics HOST:PORT` serves Prometheus metrics while the node runs.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use wallaroo_tests::*;

pub(crate) fn get(addr: &str, path: &str) -> String {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(conn, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn the_metrics_endpoint_counts_messages_per_step_and_times_guest_calls() {
    let wasm = build_app("componentize-py-examples/word_count/word_count.py");
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let mut node = Node::start(
        &wasm,
        &receiver.addr,
        dir.path(),
        &["--workers", "2", "--metrics", "127.0.0.1:0"],
    );
    let line = node
        .proc
        .wait_line("metrics at http://", Duration::from_secs(10));
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap()
        .to_string();
    let words: u64 = expected("componentize-py-examples/word_count/expected.txt")
        .values()
        .sum();
    send(
        &node.source,
        &root().join("componentize-py-examples/word_count/sample.txt"),
        &[],
    );
    receiver.wait_lines(words as usize, Duration::from_secs(60));

    let response = get(&addr, "/metrics");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    // The sample's ten lines, less the empty one the sender skips.
    for needle in [
        "wallaroo_received_messages_total 9\n".to_string(),
        format!("wallaroo_emitted_messages_total {words}\n"),
        "wallaroo_step_messages_total{step=\"decode_lines\"} 9\n".to_string(),
        format!("wallaroo_step_messages_total{{step=\"count word\"}} {words}\n"),
        "wallaroo_step_call_seconds_count{step=\"count word\"}".to_string(),
        "wallaroo_backlog_messages 0\n".to_string(),
        "wallaroo_app{app=\"Word Count Application\"} 1\n".to_string(),
        "# EOF".to_string(),
    ] {
        assert!(response.contains(&needle), "no {needle:?} in:\n{response}");
    }
    assert!(get(&addr, "/other").starts_with("HTTP/1.1 404"));
    assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
}
