//! Bad input costs only itself: user exceptions, undecodable and oversized frames, a runaway
//! guest and a memory bomb are each logged, dead-lettered, and the stream goes on with every
//! other message processed exactly once.
use std::io::Write as _;
use std::time::Duration;

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
    let seed = test_seed("64 KiB frames");
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
    let text = receiver.wait_lines(words, Duration::from_secs(300));
    let counts = running_counts(&text);
    assert_eq!(counts.values().sum::<u64>(), words as u64);
    assert_eq!(node.proc.stop(Duration::from_secs(60)), Some(0));
    let summary = node.proc.wait_line("stopped:", Duration::from_secs(1));
    assert!(
        summary.contains(" 0 dead-lettered, 0 instances replaced"),
        "{summary}"
    );
    assert!(node.dead_letters().is_empty());
}

const WORD_COUNT: &str = "componentize-py-examples/word_count/word_count.py";

/// `payload` in the default framing (4-byte big-endian length).
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// `n` frames of `apple banana`, as one buffer.
fn apples(n: usize) -> Vec<u8> {
    (0..n).flat_map(|_| frame(b"apple banana")).collect()
}

/// Writes `bytes` to the source on one connection and closes it.
fn write_and_close(source: &str, bytes: &[u8]) {
    let mut conn = std::net::TcpStream::connect(source).unwrap();
    conn.write_all(bytes).unwrap();
}

/// Bytes in `dir` and below.
fn disk_use(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => disk_use(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Waits for `apple` and `banana` to be counted `n` times each, and checks nothing else was.
fn expect_apples(receiver: &Receiver, n: u64) {
    let text = receiver.wait_lines(2 * n as usize, Duration::from_secs(120));
    let counts = running_counts(&text);
    assert_eq!(counts.len(), 2, "{text}");
    assert_eq!((counts["apple"], counts["banana"]), (n, n), "{text}");
}

#[test]
fn an_oversized_frame_keeps_a_bounded_prefix_and_the_frames_after_it_are_counted() {
    let wasm = build_app(WORD_COUNT);
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let mut node = Node::start(&wasm, &receiver.addr, dir.path(), &["--workers", "2"]);
    // A 50 MB frame between valid ones, on one connection, written as it goes.
    const HUGE: usize = 50_000_000;
    let mut conn = std::net::TcpStream::connect(&node.source).unwrap();
    conn.write_all(&apples(10)).unwrap();
    conn.write_all(&(HUGE as u32).to_be_bytes()).unwrap();
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let mut left = HUGE;
    while left > 0 {
        let n = left.min(chunk.len());
        conn.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    conn.write_all(&apples(100)).unwrap();
    drop(conn);
    expect_apples(&receiver, 110);
    assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
    let summary = node.proc.wait_line("stopped:", Duration::from_secs(1));
    assert!(
        summary.contains("stopped: 110 messages received") && summary.contains(" 1 dead-lettered"),
        "{summary}"
    );

    let dead = node.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["message_len"], HUGE as u64);
    assert_eq!(dead[0]["len"], 64 << 10);
    let error = dead[0]["error"].as_str().unwrap();
    assert!(
        error.contains("frame 11 from") && error.contains("50000000 bytes"),
        "{error}"
    );
    let bin = std::fs::read(node.data_dir.join("dead-letter.bin")).unwrap();
    assert_eq!(bin, chunk[..64 << 10]);
    let used = disk_use(&node.data_dir);
    assert!(used <= 1 << 20, "the data directory holds {used} bytes");
    assert!(
        !node.proc.stderr().contains("inside frame"),
        "{}",
        node.proc.stderr()
    );
}

#[test]
fn dead_letters_rotate_within_their_cap() {
    let wasm = build_app(WORD_COUNT);
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let max = 70_000u64;
    let mut node = Node::start(
        &wasm,
        &receiver.addr,
        dir.path(),
        &[
            "--workers",
            "1",
            "--max-frame-size",
            "100",
            "--dead-letter-max-bytes",
            &max.to_string(),
        ],
    );
    // 30 oversized frames of 3000 bytes, each followed by a valid one: 90 KB of dead letters
    // offered to a cap of 70 KB.
    let mut input = Vec::new();
    for i in 0..30u8 {
        input.extend(frame(&[i; 3000]));
        input.extend(apples(1));
    }
    write_and_close(&node.source, &input);
    expect_apples(&receiver, 30);
    assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
    let summary = node.proc.wait_line("stopped:", Duration::from_secs(1));
    assert!(summary.contains(" 30 dead-lettered"), "{summary}");

    let used = disk_use(&node.data_dir);
    assert!(used <= max, "dead letters take {used} bytes, over {max}");
    let previous = node.data_dir.join("dead-letter.1.log");
    assert!(previous.exists(), "no rotation");
    // The newest entries are the ones kept, each with its own bytes.
    let dead = node.dead_letters();
    let last = dead.last().unwrap();
    assert!(
        last["error"].as_str().unwrap().starts_with("frame 59 from"),
        "{last}"
    );
    let bin = std::fs::read(node.data_dir.join("dead-letter.bin")).unwrap();
    let off = last["offset"].as_u64().unwrap() as usize;
    assert_eq!(bin[off..off + 3000], [29u8; 3000]);
}

#[test]
fn a_dead_letter_that_cannot_be_written_is_logged_once_and_the_stream_goes_on() {
    let wasm = build_app(WORD_COUNT);
    // A full disk (/dev/full fails every write with ENOSPC), and a directory where the file
    // should be.
    for (case, reason) in [
        ("full", "No space left on device"),
        ("directory", "Is a directory"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let bin = data.join("dead-letter.bin");
        match case {
            "full" => std::os::unix::fs::symlink("/dev/full", &bin).unwrap(),
            _ => std::fs::create_dir(&bin).unwrap(),
        }
        let receiver = Receiver::start(dir.path());
        let mut node = Node::start(
            &wasm,
            &receiver.addr,
            dir.path(),
            &["--workers", "2", "--max-frame-size", "100"],
        );
        let mut input = Vec::new();
        for _ in 0..20 {
            input.extend(frame(&[b'x'; 500]));
            input.extend(apples(5));
        }
        write_and_close(&node.source, &input);
        expect_apples(&receiver, 100);
        assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0), "{case}");
        let stderr = node.proc.stderr();
        let failures: Vec<_> = stderr
            .lines()
            .filter(|l| l.contains("cannot keep a dead letter"))
            .collect();
        assert_eq!(failures.len(), 1, "{case}: {stderr}");
        assert!(failures[0].contains(reason), "{case}: {}", failures[0]);
        assert!(
            failures[0].contains(&bin.display().to_string()),
            "{case}: {}",
            failures[0]
        );
        assert!(
            stderr.contains("dead letters: none written; 20 dead letters could not be written"),
            "{case}: {stderr}"
        );
        assert!(
            !stderr.contains(&format!("dead letters: {}", dir.path().display())),
            "{case}: {stderr}"
        );
    }
}

#[test]
fn a_close_between_frames_is_quiet_and_one_inside_a_frame_says_what_was_lost() {
    let wasm = build_app(WORD_COUNT);
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let mut node = Node::start(&wasm, &receiver.addr, dir.path(), &["--workers", "1"]);
    write_and_close(&node.source, &apples(3));
    let file = dir.path().join("input.txt");
    std::fs::write(&file, "apple banana\napple banana\n").unwrap();
    send(&node.source, &file, &[]);
    expect_apples(&receiver, 5);
    assert!(
        !node.proc.stderr().contains("WARN"),
        "{}",
        node.proc.stderr()
    );

    // A payload cut short, a header cut short, and an oversized frame cut short while its
    // rest is being dropped.
    let mut torn = apples(1);
    torn.extend_from_slice(&100u32.to_be_bytes());
    torn.extend_from_slice(&[b'a'; 30]);
    write_and_close(&node.source, &torn);
    node.proc.wait_line(
        "inside frame 2: 34 of its 104 bytes came, the other 70 are lost",
        Duration::from_secs(30),
    );
    write_and_close(&node.source, &[0, 0]);
    node.proc.wait_line(
        "inside the header of frame 1: 2 of its 4 header bytes came",
        Duration::from_secs(30),
    );
    let mut huge = u32::MAX.to_be_bytes().to_vec();
    huge.extend(vec![0u8; 100_000]);
    write_and_close(&node.source, &huge);
    node.proc.wait_line(
        "inside frame 1: 100004 of its 4294967299 bytes came",
        Duration::from_secs(30),
    );
    expect_apples(&receiver, 6);
    assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
    // Its entry claims no bytes that never came.
    let dead = node.dead_letters();
    let error = dead.last().unwrap()["error"].as_str().unwrap();
    assert!(
        error.ends_with("only its first bytes are kept, the rest dropped"),
        "{error}"
    );
}

/// `w0 x`..`w4 x`, one 20 MiB frame, `v0 y`..`v4 y` as a `--binary` file for `wallaroo send`.
fn words_around_an_oversized_frame(path: &std::path::Path) {
    let mut data = Vec::new();
    for i in 0..5 {
        data.extend(frame(format!("w{i} x").as_bytes()));
    }
    data.extend(frame(&vec![b'z'; 20 << 20]));
    for i in 0..5 {
        data.extend(frame(format!("v{i} y").as_bytes()));
    }
    std::fs::write(path, data).unwrap();
}

/// Each word of [`words_around_an_oversized_frame`] counted exactly once (x and y five times),
/// nothing else; the oversized frame dead-lettered once, as the 6th frame.
fn expect_words_around_an_oversized_frame(text: &str, node: &Node) {
    let counts = running_counts(text);
    let mut expected: std::collections::BTreeMap<String, u64> = (0..5)
        .flat_map(|i| [(format!("w{i}"), 1), (format!("v{i}"), 1)])
        .collect();
    expected.insert("x".into(), 5);
    expected.insert("y".into(), 5);
    assert_eq!(counts, expected, "{text}");
    let dead = node.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:#?}");
    let error = dead[0]["error"].as_str().unwrap();
    assert!(error.contains("frame 6 from"), "{error}");
}

const ACKED_RUN: &[&str] = &[
    "--workers",
    "1",
    "--resilience",
    "exactly-once",
    "--checkpoint-interval",
    "200",
    "--sink-framing",
    "tagged",
    "--max-frame-size",
    "1048576",
];

fn binary_ack_sender(source: &str, input: &std::path::Path, stream_id: &str) -> Proc {
    let mut cmd = std::process::Command::new(wallaroo());
    cmd.args(["send", "--host", source, "--binary", "--file"])
        .arg(input)
        .args(["--ack", "--stream-id", stream_id]);
    Proc::spawn(&format!("send {stream_id}"), cmd)
}

#[test]
fn an_oversized_frame_on_an_acknowledged_stream_is_acknowledged() {
    let wasm = build_app(WORD_COUNT);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.bin");
    words_around_an_oversized_frame(&input);
    let receiver = Receiver::start(dir.path());
    let mut node = Node::start(&wasm, &receiver.addr, dir.path(), ACKED_RUN);
    let mut sender = binary_ack_sender(&node.source, &input, "4");
    assert_eq!(
        sender.wait(Duration::from_secs(120)),
        Some(0),
        "the sender did not finish; it said:\n{}\nthe node said:\n{}",
        sender.stderr(),
        node.proc.stderr()
    );
    receiver.wait_lines(20, Duration::from_secs(60));
    assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
    std::thread::sleep(Duration::from_millis(300));
    expect_words_around_an_oversized_frame(&receiver.text(), &node);
}

#[test]
fn an_oversized_frame_on_an_acknowledged_stream_is_not_resent_after_a_crash() {
    let wasm = build_app(WORD_COUNT);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.bin");
    words_around_an_oversized_frame(&input);
    let receiver = Receiver::start(dir.path());
    let source = format!("127.0.0.1:{}", free_port());
    let start = || Node::start_at(&wasm, &source, &receiver.addr, dir.path(), ACKED_RUN);
    let mut node = start();
    let mut sender = binary_ack_sender(&source, &input, "4");
    // Every frame counted, so the skip and the frames after it are logged: kill the node.
    receiver.wait_lines(20, Duration::from_secs(120));
    node.proc.signal(libc::SIGKILL);
    node.proc.wait(Duration::from_secs(10));
    let mut node = start();
    assert_eq!(
        sender.wait(Duration::from_secs(180)),
        Some(0),
        "the sender did not finish; it said:\n{}\nthe node said:\n{}",
        sender.stderr(),
        node.proc.stderr()
    );
    // A sender of the same stream starting over is told it is all there.
    let mut again = binary_ack_sender(&source, &input, "4");
    assert_eq!(
        again.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        again.stderr()
    );
    assert_eq!(
        node.proc.stop(Duration::from_secs(60)),
        Some(0),
        "{}",
        node.proc.stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    expect_words_around_an_oversized_frame(&receiver.text(), &node);
}

#[test]
fn an_error_text_as_long_as_its_message_is_cut_and_the_dead_letters_keep_their_cap() {
    let wasm = build_app("tests/apps/faulty/faulty.py");
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let max = 1u64 << 20;
    let mut node = Node::start(
        &wasm,
        &receiver.addr,
        dir.path(),
        &[
            "--workers",
            "1",
            "--max-frame-size",
            "8388608",
            "--dead-letter-max-bytes",
            &max.to_string(),
        ],
    );
    // Three 3 MB lines whose error is the line itself, then words to count.
    let mut input = Vec::new();
    for i in 0..3u8 {
        let mut line = b"echo ".to_vec();
        line.extend(std::iter::repeat_n(b'a' + i, 3_000_000));
        input.extend(frame(&line));
    }
    input.extend(apples(5));
    write_and_close(&node.source, &input);
    expect_apples(&receiver, 5);
    assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
    let stderr = node.proc.stderr();
    let summary = node.proc.wait_line("stopped:", Duration::from_secs(1));
    assert!(summary.contains(" 3 dead-lettered"), "{summary}");

    let used = disk_use(&node.data_dir);
    assert!(
        used <= max,
        "the data directory holds {used} bytes, over {max}"
    );
    let dead = node.dead_letters();
    let last = dead.last().unwrap();
    let error = last["error"].as_str().unwrap();
    assert!(
        error.len() <= 4096 + 100,
        "{} bytes of error text",
        error.len()
    );
    assert!(error.contains("ValueError"), "{}", &error[..200]);
    assert!(
        error.contains("[error text cut to its first 4096 of "),
        "{}",
        &error[error.len() - 200..]
    );
    assert!(
        stderr.len() < 100_000,
        "the node logged {} bytes",
        stderr.len()
    );
}

#[test]
fn a_dead_letter_cap_too_small_for_one_entry_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(wallaroo());
    cmd.arg("run")
        .arg(build_app(WORD_COUNT))
        .args(["--dead-letter-max-bytes", "1000", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--cache-dir")
        .arg(scratch().join("cache"))
        .args(["--in", "127.0.0.1:0", "--out", "127.0.0.1:9"]);
    let mut run = Proc::spawn("run", cmd);
    let code = run.wait(Duration::from_secs(120));
    let stderr = run.stderr();
    assert!(code.is_some_and(|c| c != 0), "started anyway:\n{stderr}");
    assert!(
        stderr.contains("--dead-letter-max-bytes 1000 is too small")
            && stderr.contains("at least 65536 bytes"),
        "{stderr}"
    );
}
