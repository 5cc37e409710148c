//! Crashes: the node is killed with SIGKILL at random points while an acknowledged sender
//! streams a known text, and restarted on the same data directory each time.
//!
//! - exactly-once: the output reads as if nothing happened: every word's counts run 1, 2, 3...
//!   with no gap and no repeat, ending at the word's true total.
//! - at-least-once: nothing is lost (every count up to the true total appears, and the final
//!   state is exact) but output after the last checkpoint may repeat.
//! - none: the run completes, and the counts a crash lost are printed (there are always some).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng};
use wallaroo_tests::*;

const WORD_COUNT: &str = "componentize-py-examples/word_count/word_count.py";
const LINES: usize = 10_000;
const WORDS_PER_LINE: usize = 8;
const KILLS: usize = 5;

struct CrashRun {
    text: String,
    totals: BTreeMap<String, u64>,
    /// Every node's standard error, in order.
    logs: Vec<String>,
}

fn crash_run(resilience: &str) -> CrashRun {
    let mut rng = StdRng::seed_from_u64(test_seed(&format!("{resilience}: kill points")));
    let wasm = build_app(WORD_COUNT);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    let totals = random_words(&input, LINES, WORDS_PER_LINE, &mut rng);
    let receiver = Receiver::start(dir.path());
    let source = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "--workers",
        "2",
        "--resilience",
        resilience,
        "--checkpoint-interval",
        "200",
    ];
    if resilience == "exactly-once" {
        args.extend(["--sink-framing", "tagged"]);
    }
    let start = || Node::start_at(&wasm, &source, &receiver.addr, dir.path(), &args);
    let mut logs = Vec::new();
    let mut node = start();
    let mut sender = ack_sender(&source, &input, "7");
    // Kill points: random places in the middle of the stream, found by how much output the
    // receiver has (so every kill lands mid-stream, however fast the machine is).
    let words: u64 = totals.values().sum();
    let mut points: Vec<u64> = (0..KILLS)
        .map(|_| rng.random_range(words / 10..words * 8 / 10))
        .collect();
    points.sort();
    for point in points {
        // Without a log, a crash loses input the sender was told is safe, so the output may
        // never reach the point: stop killing once the sender is done.
        let reached = wait_until(Duration::from_secs(120), || {
            if receiver.text().lines().count() as u64 >= point {
                Some(true)
            } else if resilience == "none" && sender.has_exited() {
                Some(false)
            } else {
                None
            }
        });
        match reached {
            Some(true) => {}
            Some(false) => break,
            None => panic!(
                "output stalled before {point} lines; the node said:\n{}",
                node.proc.stderr()
            ),
        }
        node.proc.signal(libc::SIGKILL);
        node.proc.wait(Duration::from_secs(10));
        logs.push(node.proc.stderr());
        node = start();
    }
    let started = Instant::now();
    assert_eq!(
        sender.wait(Duration::from_secs(180)),
        Some(0),
        "the sender did not finish; it said:\n{}\nthe node said:\n{}",
        sender.stderr(),
        node.proc.stderr()
    );
    let resends = sender.stderr().matches("reconnecting").count();
    eprintln!(
        "{resilience}: every message acknowledged {:?} after the last restart; the sender \
         reconnected {resends} times",
        started.elapsed()
    );
    assert_eq!(
        node.proc.stop(Duration::from_secs(60)),
        Some(0),
        "{}",
        node.proc.stderr()
    );
    logs.push(node.proc.stderr());
    // The sink has flushed and closed; let the receiver write the last bytes.
    std::thread::sleep(Duration::from_millis(300));
    CrashRun {
        text: receiver.text(),
        totals,
        logs,
    }
}

/// Each restart said what it recovered.
fn assert_recovery_reported(run: &CrashRun) {
    for log in &run.logs[1..] {
        assert!(log.contains("recovered checkpoint"), "{log}");
    }
}

#[test]
fn exactly_once_survives_repeated_kills_with_exact_output() {
    let run = crash_run("exactly-once");
    assert_recovery_reported(&run);
    // No gap, no repeat, nothing extra: as if no crash happened.
    assert_eq!(running_counts(&run.text), run.totals);
    let words: u64 = run.totals.values().sum();
    assert_eq!(run.text.lines().count() as u64, words);
}

#[test]
fn at_least_once_survives_repeated_kills_without_loss() {
    let run = crash_run("at-least-once");
    assert_recovery_reported(&run);
    let mut seen: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for line in run.text.lines() {
        let (word, n) = line.rsplit_once(" => ").expect("a `WORD => N` line");
        seen.entry(word.to_string())
            .or_default()
            .insert(n.parse().expect("a count"));
    }
    for (word, total) in &run.totals {
        let counts = &seen[word];
        // Every count was emitted, none beyond the true total: state itself is exact.
        assert_eq!(
            counts,
            &(1..=*total).collect::<BTreeSet<_>>(),
            "counts of {word}"
        );
    }
    let repeats = run.text.lines().count() as u64 - run.totals.values().sum::<u64>();
    eprintln!("at-least-once: {repeats} output lines repeated after crashes");
}

#[test]
fn without_resilience_a_crash_loses_state_and_says_nothing_is_recovered() {
    let run = crash_run("none");
    for log in &run.logs {
        assert!(!log.contains("recovered checkpoint"), "{log}");
    }
    // Counts restart from 1 after each crash: the final counts fall short of the totals.
    let finals = final_values(&run.text);
    let short: u64 = run
        .totals
        .iter()
        .map(|(w, t)| t - finals.get(w).copied().unwrap_or(0).min(*t))
        .sum();
    let total: u64 = run.totals.values().sum();
    eprintln!("none: final counts fall short of the true totals by {short} of {total} words");
    assert!(
        short > 0,
        "a crash mid-stream without a log must lose counts"
    );
}

/// Version 2 of word count inserts a stateless step before its stateful one, so "count word"
/// sits one position later: run on version 1's data directory, it keeps counting where version
/// 1 stopped (the log keeps state by step name), with no gap or repeat.
#[test]
fn a_new_version_that_inserts_a_step_keeps_counting_on_the_old_data_directory() {
    let v1 = build_app(WORD_COUNT);
    let v2 = build_app("tests/apps/word_count_v2/word_count.py");
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let args = [
        "--resilience",
        "exactly-once",
        "--sink-framing",
        "tagged",
        "--checkpoint-interval",
        "200",
    ];
    let input = dir.path().join("input.txt");
    let run = |wasm: &Path, text: &str, lines: usize| {
        std::fs::write(&input, text).unwrap();
        let mut node = Node::start(wasm, &receiver.addr, dir.path(), &args);
        send(&node.source, &input, &[]);
        receiver.wait_lines(lines, Duration::from_secs(60));
        assert_eq!(
            node.proc.stop(Duration::from_secs(60)),
            Some(0),
            "{}",
            node.proc.stderr()
        );
        node.proc.stderr()
    };
    run(&v1, "a b c\na b\na\n", 6);
    let log = run(&v2, "a b c\n", 9);
    // The last checkpoint of version 1 (taken at its stop) holds every key.
    assert!(log.contains(": 3 keys, 0 messages replayed"), "{log}");
    let counts = running_counts(&receiver.text());
    let expected: BTreeMap<String, u64> = [("a", 4), ("b", 3), ("c", 2)]
        .map(|(k, n)| (k.to_string(), n))
        .into();
    assert_eq!(counts, expected);
}

/// `wallaroo run --resilience exactly-once` on `data_dir`; it is expected to fail at start.
fn run_expecting_refusal(data_dir: &Path) -> String {
    run_app_expecting_refusal(&build_app(WORD_COUNT), data_dir, &[])
}

/// As [`run_expecting_refusal`], for the application `wasm` with `extra` arguments.
fn run_app_expecting_refusal(wasm: &Path, data_dir: &Path, extra: &[&str]) -> String {
    let out = Command::new(wallaroo())
        .arg("run")
        .arg(wasm)
        .args(extra)
        .args(["--resilience", "exactly-once", "--data-dir"])
        .arg(data_dir)
        .arg("--cache-dir")
        .arg(scratch().join("cache"))
        .args(["--in", "127.0.0.1:0", "--out", "127.0.0.1:9"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "started anyway:\n{stderr}");
    stderr
}

#[test]
fn state_the_new_version_cannot_restore_is_refused_at_the_start_naming_step_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let input = dir.path().join("input.txt");
    std::fs::write(&input, "a b c\na b\na\n").unwrap();
    let args = [
        "--workers",
        "2",
        "--resilience",
        "exactly-once",
        "--sink-framing",
        "tagged",
    ];
    let mut node = Node::start(&build_app(WORD_COUNT), &receiver.addr, dir.path(), &args);
    send(&node.source, &input, &[]);
    receiver.wait_lines(6, Duration::from_secs(60));
    assert_eq!(
        node.proc.stop(Duration::from_secs(60)),
        Some(0),
        "{}",
        node.proc.stderr()
    );
    // Its state class has another name: the counts pickled by the first version do not
    // unpickle. Each worker restores on its own thread; the one that fails fails the start.
    let new_state = build_app("tests/apps/word_count_new_state/word_count.py");
    let stderr = run_app_expecting_refusal(&new_state, &node.data_dir, &["--workers", "2"]);
    assert!(
        stderr.contains("cannot restore the state of step 3 for key b'"),
        "{stderr}"
    );
    assert!(stderr.contains("WordTotal"), "{stderr}");
}

#[test]
fn a_data_directory_of_another_log_format_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("data/wal");
    std::fs::create_dir_all(&wal).unwrap();
    let segment = wal.join("00000000000000000001.wal");
    let mut foreign = b"WALLAROO".to_vec();
    foreign.extend_from_slice(&99u32.to_le_bytes());
    foreign.extend_from_slice(b"records of a future version");
    std::fs::write(&segment, &foreign).unwrap();
    let stderr = run_expecting_refusal(&dir.path().join("data"));
    assert!(stderr.contains("written by log format 99"), "{stderr}");
    assert!(stderr.contains("new data directory"), "{stderr}");
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        foreign,
        "the log was touched"
    );
}

#[test]
fn a_data_directory_that_is_a_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(&data, b"not a directory").unwrap();
    let stderr = run_expecting_refusal(&data);
    assert!(
        stderr.contains("opening the write-ahead log in"),
        "{stderr}"
    );
    assert!(stderr.contains(&data.display().to_string()), "{stderr}");
}

#[test]
fn a_full_disk_stops_input_instead_of_acknowledging_it_and_a_restart_loses_nothing() {
    let wasm = build_app(WORD_COUNT);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    let totals = random_words(
        &input,
        LINES,
        WORDS_PER_LINE,
        &mut StdRng::seed_from_u64(11),
    );
    let receiver = Receiver::start(dir.path());
    let source = format!("127.0.0.1:{}", free_port());
    let args = [
        "--workers",
        "2",
        "--resilience",
        "exactly-once",
        "--sink-framing",
        "tagged",
        "--checkpoint-interval",
        "200",
    ];
    // A file size limit stands in for a full disk: writes past it fail (SIGXFSZ ignored, so
    // the write returns an error as on a full disk instead of killing the process).
    let full_disk = ["sh", "-c", "trap '' XFSZ; ulimit -f 256; exec \"$@\"", "sh"];
    let mut node = Node::start_wrapped(
        &full_disk,
        &wasm,
        &source,
        &receiver.addr,
        dir.path(),
        &args,
    );
    let mut sender = ack_sender(&source, &input, "3");
    node.proc
        .wait_line("cannot write the write-ahead log", Duration::from_secs(120));
    // Nothing more is acknowledged: the sender still holds what the node could not store.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!sender.has_exited(), "{}", sender.stderr());
    assert!(
        !node.proc.has_exited(),
        "the node died: {}",
        node.proc.stderr()
    );
    assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(1));
    assert!(
        node.proc.stderr().contains("the write-ahead log failed"),
        "{}",
        node.proc.stderr()
    );

    // Room again: the node recovers and the sender resends what was not acknowledged.
    let mut node = Node::start_at(&wasm, &source, &receiver.addr, dir.path(), &args);
    assert_eq!(
        sender.wait(Duration::from_secs(120)),
        Some(0),
        "{}",
        sender.stderr()
    );
    assert_eq!(
        node.proc.stop(Duration::from_secs(60)),
        Some(0),
        "{}",
        node.proc.stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(running_counts(&receiver.text()), totals);
}

/// Every file under `dir` with its bytes.
fn tree(dir: &Path) -> BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(tree(&path));
        } else {
            let data = std::fs::read(&path).unwrap();
            files.insert(path, data);
        }
    }
    files
}

/// The offsets at which a log segment's records start (after its 12-byte header).
fn record_offsets(segment: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 12;
    while at + 8 <= segment.len() {
        offsets.push(at);
        let len = u32::from_le_bytes(segment[at..at + 4].try_into().unwrap()) as usize;
        at += 8 + len;
    }
    assert_eq!(at, segment.len(), "a clean segment ends with a record");
    offsets
}

#[test]
fn a_flipped_byte_in_a_committed_segment_is_refused_until_the_loss_is_accepted() {
    let wasm = build_app(WORD_COUNT);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    random_words(
        &input,
        2_000,
        WORDS_PER_LINE,
        &mut StdRng::seed_from_u64(12),
    );
    let receiver = Receiver::start(dir.path());
    let source = format!("127.0.0.1:{}", free_port());
    let args = [
        "--resilience",
        "exactly-once",
        "--sink-framing",
        "tagged",
        "--checkpoint-interval",
        "200",
    ];
    let mut node = Node::start_at(&wasm, &source, &receiver.addr, dir.path(), &args);
    let mut sender = ack_sender(&source, &input, "5");
    assert_eq!(
        sender.wait(Duration::from_secs(120)),
        Some(0),
        "{}",
        sender.stderr()
    );
    assert_eq!(
        node.proc.stop(Duration::from_secs(60)),
        Some(0),
        "{}",
        node.proc.stderr()
    );

    // One byte in the middle of the newest segment's input, which every acknowledgement has
    // synced.
    let wal = node.data_dir.join("wal");
    let segment = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .max()
        .expect("a log segment");
    let mut data = std::fs::read(&segment).unwrap();
    let offsets = record_offsets(&data);
    // Input records (kind 8, input with its event time) hold the sender's batches.
    let inputs: Vec<usize> = (0..offsets.len())
        .filter(|&i| data[offsets[i] + 8] == 8)
        .collect();
    assert!(inputs.len() > 4, "{} input records", inputs.len());
    let bad = inputs[inputs.len() / 2];
    let end = offsets.get(bad + 1).copied().unwrap_or(data.len());
    data[(offsets[bad] + end) / 2] ^= 0x40;
    std::fs::write(&segment, &data).unwrap();
    let records_after = offsets.len() - bad - 1;
    let bytes_after = data.len() - offsets[bad];

    let before = tree(&node.data_dir);
    // As `run_expecting_refusal`, but a node that starts anyway fails the test instead of
    // running on.
    let mut cmd = Command::new(wallaroo());
    cmd.arg("run")
        .arg(&wasm)
        .args(["--in", &source, "--out", &receiver.addr, "--data-dir"])
        .arg(&node.data_dir)
        .arg("--cache-dir")
        .arg(scratch().join("cache"))
        .args(args);
    let mut refused = Proc::spawn("run on a corrupt log", cmd);
    let code = refused.wait(Duration::from_secs(120));
    let stderr = refused.stderr();
    eprintln!("the refused start said:\n{stderr}");
    assert_eq!(code, Some(1), "{stderr}");
    let inputs_after = inputs.len() - inputs.len() / 2 - 1;
    for part in [
        format!("{} offset {}", segment.display(), offsets[bad]),
        format!("{records_after} intact records in {bytes_after} bytes"),
        format!("{inputs_after} input records"),
        "acknowledged: source 0 stream".to_string(),
        "--discard-corrupt-log".to_string(),
    ] {
        assert!(stderr.contains(&part), "{part:?} not in:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        tree(&node.data_dir),
        before,
        "the refused start touched the data"
    );

    // Accepting the loss: the node starts, and says exactly what it dropped.
    let mut with_flag = args.to_vec();
    with_flag.push("--discard-corrupt-log");
    let mut node = Node::start_at(&wasm, &source, &receiver.addr, dir.path(), &with_flag);
    let said = node
        .proc
        .wait_line("discarded the write-ahead log", Duration::from_secs(120));
    eprintln!("the start with --discard-corrupt-log said:\n{said}");
    for part in [
        format!("{} offset {}", segment.display(), offsets[bad]),
        format!("{records_after} intact records in {bytes_after} bytes"),
        format!("{inputs_after} input records"),
    ] {
        assert!(said.contains(&part), "{part:?} not in:\n{said}");
    }
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        offsets[bad] as u64,
        "cut at the bad record"
    );
    assert_eq!(
        node.proc.stop(Duration::from_secs(60)),
        Some(0),
        "{}",
        node.proc.stderr()
    );
}
