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
    // The runaway loop costs its instance twice per send: once in its batch, once alone. The
    // bomb fills its instance in its batch, then alone in a fresh one, and only then is
    // dead-lettered: two or three instances a send, depending on what shared its batch.
    assert!(summary.contains(" 12 dead-lettered, "), "{summary}");
    let replaced: u32 = summary
        .split(" dead-lettered, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no replaced count in {summary}"));
    assert!((6..=12).contains(&replaced), "{summary}");

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
    // Out of memory alone in a fresh instance: dead-lettered at the segment it entered, the
    // guest's own report (naming the step's line) in the error.
    has("decode", "MemoryError (faulty.py:");
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

#[test]
fn a_message_that_finds_its_instance_full_is_retried_in_a_fresh_one_not_dead_lettered() {
    // Each `hoard` keeps 16 MiB: with the cap at 128 MiB a batch of eight fills the instance
    // part way through, which is no message's fault.
    let wasm = build_app("tests/apps/faulty/faulty.py");
    let mut lines: Vec<&[u8]> = vec![b"apple banana"];
    lines.extend([&b"hoard"[..]; 8]);
    lines.extend([&b"apple"[..], b"banana apple", b"cherry apple", b"apple"]);
    let run = run_faulty(&wasm, &[], &lines);
    assert!(run.summary.contains(" 0 dead-lettered"), "{}", run.summary);
    assert!(run.node.dead_letters().is_empty());
}

/// Frames of 64 KiB, each one line of words from a vocabulary of 1,000.
fn word_frames(path: &std::path::Path, frames: usize) -> usize {
    let seed = std::env::var("WALLAROO_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    eprintln!("64 KiB frames from seed {seed} (WALLAROO_TEST_SEED overrides)");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let mut text = String::new();
    let mut words = 0;
    for _ in 0..frames {
        let mut line = String::new();
        loop {
            let word = format!("w{}", rand::RngExt::random_range(&mut rng, 0..1000u32));
            if line.len() + word.len() + 1 > 64 << 10 {
                break;
            }
            line.push_str(&word);
            line.push(' ');
            words += 1;
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
    words
}

#[test]
fn word_count_within_a_64_mib_cap_counts_every_word_of_64_kib_frames() {
    let wasm = build_app("componentize-py-examples/word_count/word_count.py");
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let mut node = Node::start(
        &wasm,
        &receiver.addr,
        dir.path(),
        &["--workers", "2", "--max-memory", "64"],
    );
    let input = dir.path().join("frames.txt");
    let words = word_frames(&input, 40);
    // All 40 frames in one write, so the node takes them as one batch.
    send(&node.source, &input, &["--batch-size", "40"]);
    let text = receiver.wait_lines(words, std::time::Duration::from_secs(300));
    let counts = running_counts(&text);
    assert_eq!(counts.values().sum::<u64>(), words as u64);
    assert_eq!(node.proc.stop(std::time::Duration::from_secs(60)), Some(0));
    let summary = node
        .proc
        .wait_line("stopped:", std::time::Duration::from_secs(1));
    assert!(
        summary.contains(" 0 dead-lettered, 0 instances replaced"),
        "{summary}"
    );
    assert!(node.dead_letters().is_empty());
}
