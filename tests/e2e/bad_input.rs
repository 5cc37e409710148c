//! Bad input costs only itself: user exceptions, undecodable and oversized frames, a runaway
//! guest and a memory bomb are each logged, dead-lettered, and the stream goes on with every
//! other message processed exactly once.
use wallaroo_tests::*;

#[test]
fn every_kind_of_bad_message_is_dead_lettered_and_the_rest_is_counted_once() {
    let wasm = build_app("tests/apps/faulty/faulty.py");
    let run = run_faulty(
        &wasm,
        &["--max-frame-size", "100"],
        &[
            &b"apple banana"[..],
            b"raise",
            b"apple",
            b"loop",
            b"banana apple",
            b"caf\xff\xfe",
            b"bomb",
            b"apple boom",
            &[b'x'; 300],
            b"cherry apple",
        ],
    );
    let (node, summary) = (&run.node, &run.summary);
    // The runaway loop cost its instance twice per send: once in its batch, once alone.
    assert!(
        summary.contains("12 dead-lettered, 4 instances replaced"),
        "{summary}"
    );

    let dead = node.dead_letters();
    let errors: Vec<String> = dead
        .iter()
        .map(|d| format!("{} | {} | {}", d["at"], d["key"], d["error"]))
        .collect();
    assert_eq!(dead.len(), 12, "{errors:#?}");
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
    has("split", "ValueError: asked to raise");
    has("decode", "UnicodeDecodeError");
    has("decode", "time limit");
    has("split", "MemoryError");
    has("lines", "exceeds the maximum frame size");
    let boom: Vec<_> = dead.iter().filter(|d| d["key"] == "boom").collect();
    assert_eq!(boom.len(), 2, "{errors:#?}");
    assert!(
        boom[0]["error"]
            .as_str()
            .unwrap()
            .contains("RuntimeError: boom is not a word")
    );
    assert!(
        boom[0]["error"].as_str().unwrap().contains("faulty.py:"),
        "{errors:#?}"
    );
    assert_eq!(boom[0]["at"], "count");

    // The dead-lettered bytes are the messages' own.
    let bin = std::fs::read(node.data_dir.join("dead-letter.bin")).unwrap();
    let raised = dead
        .iter()
        .find(|d| d["error"].as_str().unwrap().contains("asked"))
        .unwrap();
    let (off, len) = (
        raised["offset"].as_u64().unwrap() as usize,
        raised["len"].as_u64().unwrap() as usize,
    );
    assert_eq!(&bin[off..off + len], b"raise");

    // Each failure was logged once, naming the step (and key where there is one).
    let log = node.proc.stderr();
    assert!(
        log.contains("error in step 'count' for key 'boom': RuntimeError"),
        "{log}"
    );
    assert!(
        log.contains("error in step 'split': ValueError: asked to raise"),
        "{log}"
    );
}
