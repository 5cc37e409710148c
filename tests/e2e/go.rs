//! Go applications: the Go examples give exactly the Python examples' output, Go and Python
//! apps run on the same engine build, and bad input costs a Go app only that input.

use std::time::Duration;

use wallaroo_tests::*;

const GO_WORD_COUNT: &str = "guest-sdks/go/examples/word_count";
const GO_ALPHABET: &str = "guest-sdks/go/examples/alphabet";
const PY_WORD_COUNT: &str = "componentize-py-examples/word_count/word_count.py";
const WORD_COUNT_SAMPLE: &str = "componentize-py-examples/word_count/sample.txt";
const WORD_COUNT_EXPECTED: &str = "componentize-py-examples/word_count/expected.txt";

fn word_count_lines() -> usize {
    expected(WORD_COUNT_EXPECTED).values().sum::<u64>() as usize
}

/// Runs `wasm` on one node with `workers`, sends it the word-count sample and returns what the
/// sink received once `lines` lines are in.
fn run_text(wasm: &std::path::Path, workers: &str, lines: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let mut node = Node::start(wasm, &receiver.addr, dir.path(), &["--workers", workers]);
    send(
        &node.source,
        &root().join(WORD_COUNT_SAMPLE),
        &["--batch-size", "3"],
    );
    let text = receiver.wait_lines(lines, Duration::from_secs(60));
    assert_eq!(
        node.proc.stop(Duration::from_secs(30)),
        Some(0),
        "{}",
        node.proc.stderr()
    );
    text
}

#[test]
fn go_word_count_gives_the_expected_counts() {
    let wasm = build_go_app(GO_WORD_COUNT);
    let text = run_text(&wasm, "3", word_count_lines());
    assert_eq!(running_counts(&text), expected(WORD_COUNT_EXPECTED));
}

#[test]
fn go_alphabet_gives_the_expected_totals() {
    let wasm = build_go_app(GO_ALPHABET);
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

#[test]
fn go_and_python_word_count_write_the_same_bytes() {
    let go = run_text(&build_go_app(GO_WORD_COUNT), "1", word_count_lines());
    let python = run_text(&build_app(PY_WORD_COUNT), "1", word_count_lines());
    assert_eq!(go, python);
}

#[test]
fn python_and_go_apps_run_side_by_side_on_one_engine_build() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for (name, wasm) in [
        ("go", build_go_app(GO_WORD_COUNT)),
        ("python", build_app(PY_WORD_COUNT)),
    ] {
        let dir = dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let receiver = Receiver::start(&dir);
        let node = Node::start(&wasm, &receiver.addr, &dir, &["--workers", "2"]);
        nodes.push((receiver, node));
    }
    std::thread::scope(|s| {
        for (_, node) in &nodes {
            s.spawn(|| {
                send(
                    &node.source,
                    &root().join(WORD_COUNT_SAMPLE),
                    &["--batch-size", "2"],
                )
            });
        }
    });
    for (receiver, mut node) in nodes {
        let text = receiver.wait_lines(word_count_lines(), Duration::from_secs(60));
        assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
        assert_eq!(running_counts(&text), expected(WORD_COUNT_EXPECTED));
    }
}

#[test]
fn every_kind_of_bad_message_costs_a_go_app_only_itself() {
    let wasm = build_go_app("guest-sdks/go/examples-internal/faulty");
    let run = run_faulty(
        &wasm,
        &[],
        &[
            &b"apple banana"[..],
            b"panic",
            b"apple",
            b"error",
            b"loop",
            b"banana apple",
            b"caf\xff\xfe",
            b"bomb",
            b"apple boom",
            b"cherry apple",
        ],
    );
    let (node, summary) = (&run.node, &run.summary);

    let dead = node.dead_letters();
    let errors: Vec<String> = dead
        .iter()
        .map(|d| format!("{} | {} | {}", d["at"], d["key"], d["error"]))
        .collect();
    assert_eq!(dead.len(), 12, "{summary}\n{errors:#?}");
    let has = |at: &str, error: &str| {
        let n = dead
            .iter()
            .filter(|d| d["at"] == at && d["error"].as_str().unwrap().contains(error))
            .count();
        assert_eq!(
            n, 2,
            "expected two dead letters at {at} with {error:?}: {errors:#?}"
        );
    };
    has("split", "panic: runtime error: index out of range");
    has("split", "asked to fail (main.go:");
    has("decode", "the line is not UTF-8");
    has("decode", "time limit");
    let boom: Vec<_> = dead.iter().filter(|d| d["key"] == "boom").collect();
    assert_eq!(boom.len(), 2, "{errors:#?}");
    assert_eq!(boom[0]["at"], "count");
    assert!(
        boom[0]["error"]
            .as_str()
            .unwrap()
            .contains("boom is not a word (main.go:"),
        "{errors:#?}"
    );
    // The memory bomb cost its instance and only itself.
    let bombs = dead
        .iter()
        .filter(|d| {
            d["at"] != "split"
                && d["at"] != "count"
                && !d["error"].as_str().unwrap().contains("time limit")
                && !d["error"].as_str().unwrap().contains("UTF-8")
        })
        .count();
    assert_eq!(bombs, 2, "{errors:#?}");

    let log = node.proc.stderr();
    assert!(
        log.contains("error in step 'count' for key 'boom': boom is not a word"),
        "{log}"
    );
}
