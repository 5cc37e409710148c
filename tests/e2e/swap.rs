//! `wallaroo run --watch`: rebuilding the component swaps the new version in while input
//! streams, state kept and output exactly-once; a version that would lose state is refused
//! and the running one goes on.

use std::path::Path;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use wallaroo_tests::*;

const WORD_COUNT: &str = "componentize-py-examples/word_count/word_count.py";

/// Puts `component` at `watched` as a build would, whole at once: a copy beside it, renamed
/// over it.
fn replace(component: &Path, watched: &Path) {
    let next = watched.with_extension("wasm.next");
    std::fs::copy(component, &next).unwrap();
    std::fs::rename(&next, watched).unwrap();
}

/// Word count v1 runs with `--watch`, exactly-once and tagged sinks, while an acknowledged
/// sender streams. First a version that renames the stateful step replaces the file: it is
/// refused, naming the step, and v1 counts on what is sent next. Then v2 (another output format, a stateless
/// step before the key_by): it is swapped in, and more input follows. Every word's counts run
/// 1..n with no gap or repeat and switch format exactly once.
#[test]
fn a_rebuilt_component_is_swapped_in_with_every_count_exactly_once() {
    swapped_with_every_count_exactly_once(
        "run --watch",
        &build_app(WORD_COUNT),
        &build_app(WORD_COUNT_SWAP),
        Some(&build_app(WORD_COUNT_RENAMED)),
    );
}

/// v2's state is another class of another shape (see tests/apps/word_count_stats), which
/// converts v1's in `upgrade_state`: every word's counts go on from v1's, exactly once.
#[test]
fn a_version_with_another_state_class_converts_the_running_state_and_counts_go_on() {
    swapped_with_every_count_exactly_once(
        "run --watch, state converted",
        &build_app(WORD_COUNT),
        &build_app("tests/apps/word_count_stats/word_count.py"),
        None,
    );
}

/// The Go word count example swapped for a version with another output format, a stateless
/// step before the KeyBy and another state type converted with `wallaroo.UpgradeState` (see
/// tests/apps/go_word_count_swap).
#[test]
fn a_go_app_is_swapped_in_with_every_count_exactly_once() {
    swapped_with_every_count_exactly_once(
        "run --watch, Go",
        &build_go_app("guest-sdks/go/examples/word_count"),
        &build_go_app("tests/apps/go_word_count_swap"),
        None,
    );
}

/// `v1` runs with `--watch` while an acknowledged sender streams; `refused` (if any), a
/// version that renames the stateful step, replaces the file first and is refused, and v1
/// counts on; then `v2` is swapped in, and more input follows. Every word's counts run 1..n,
/// from v1's `WORD => N` to v2's `WORD := N` exactly once.
fn swapped_with_every_count_exactly_once(seed: &str, v1: &Path, v2: &Path, refused: Option<&Path>) {
    let mut rng = StdRng::seed_from_u64(test_seed(seed));
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("app.wasm");
    std::fs::copy(v1, &watched).unwrap();
    let a = dir.path().join("a.txt");
    let mut totals = random_words(&a, 3000, 8, &mut rng);
    let receiver = Receiver::start(dir.path());
    let source = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut node = Node::start_at(
        &watched,
        &source,
        &receiver.addr,
        dir.path(),
        &[
            "--watch",
            "--workers",
            "2",
            "--resilience",
            "exactly-once",
            "--checkpoint-interval",
            "200",
            "--sink-framing",
            "tagged",
            "--metrics",
            &metrics,
        ],
    );
    node.proc.wait_line("watching", Duration::from_secs(10));
    let mut sender = slow_ack_sender(&source, &a, "1", 3000, 30);
    receiver.wait_lines(2000, Duration::from_secs(120));

    if let Some(renamed) = refused {
        replace(renamed, &watched);
        let refused = node
            .proc
            .wait_line("refused the new version", Duration::from_secs(120));
        assert!(
            refused.contains("no stateful step 'count word'"),
            "{refused}"
        );
        assert!(refused.contains("--drop-state 'count word'"), "{refused}");
        assert!(refused.contains("runs on"), "{refused}");
        // v1 counts on: input sent now (the slow sender may be done on a slow machine) comes
        // out, in its format.
        let seen = receiver.text().lines().count();
        let c = dir.path().join("c.txt");
        for (word, n) in random_words(&c, 200, 8, &mut rng) {
            *totals.entry(word).or_insert(0) += n;
        }
        let mut more = ack_sender(&source, &c, "3");
        assert_eq!(
            more.wait(Duration::from_secs(180)),
            Some(0),
            "{}\n{}",
            more.stderr(),
            node.proc.stderr()
        );
        receiver.wait_lines(seen + 100, Duration::from_secs(120));
        assert!(!receiver.text().contains(" := "), "{}", node.proc.stderr());
    }

    replace(v2, &watched);
    let swapped = node.proc.wait_line("swapped to", Duration::from_secs(120));
    eprintln!(
        "{swapped} (the sender was {})",
        if sender.has_exited() {
            "done"
        } else {
            "still streaming"
        }
    );
    let prefix = {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(std::fs::read(v2).unwrap());
        digest
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert!(
        swapped.contains(&format!("(component {prefix}")),
        "{swapped}\n{}",
        node.proc.stderr()
    );

    // More input after the swap, so every word is counted by the new version too.
    let b = dir.path().join("b.txt");
    for (word, n) in random_words(&b, 2000, 8, &mut rng) {
        *totals.entry(word).or_insert(0) += n;
    }
    let mut after = ack_sender(&source, &b, "2");
    for s in [&mut sender, &mut after] {
        assert_eq!(
            s.wait(Duration::from_secs(180)),
            Some(0),
            "the sender did not finish; it said:\n{}\nthe node said:\n{}",
            s.stderr(),
            node.proc.stderr()
        );
    }
    assert_eq!(
        node.proc.stop(Duration::from_secs(60)),
        Some(0),
        "{}",
        node.proc.stderr()
    );
    // The metrics are served on after the swap, on the same address.
    assert!(
        !node.proc.stderr().contains("metrics are not served"),
        "{}",
        node.proc.stderr()
    );
    // The sink has flushed and closed; let the receiver write the last bytes.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        counts_across_a_swap(&receiver.text()),
        totals,
        "{}",
        node.proc.stderr()
    );
}

/// `run --watch --drop-state 'count word'`: a rebuilt version without that step is swapped in
/// rather than refused, says it dropped the step's state, and counts every word from 1 again.
/// A `--drop-state` naming no stateful step is refused at the start, naming it.
#[test]
fn with_drop_state_a_version_without_the_stateful_step_is_swapped_in_and_counts_afresh() {
    let mut rng = StdRng::seed_from_u64(test_seed("run --watch --drop-state"));
    let v1 = build_app(WORD_COUNT);
    let renamed = build_app(WORD_COUNT_RENAMED);
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("app.wasm");
    std::fs::copy(&v1, &watched).unwrap();
    let receiver = Receiver::start(dir.path());
    let source = format!("127.0.0.1:{}", free_port());
    let options = [
        "--watch",
        "--resilience",
        "exactly-once",
        "--checkpoint-interval",
        "200",
        "--sink-framing",
        "tagged",
        "--drop-state",
    ];
    let unknown = std::process::Command::new(wallaroo())
        .arg("run")
        .arg(&watched)
        .args(options)
        .args([
            "count words",
            "--in",
            &source,
            "--out",
            &receiver.addr,
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--cache-dir")
        .arg(scratch().join("cache"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "--drop-state 'count words': Word Count Application has no stateful step 'count \
             words' and its log holds no state of one"
        ),
        "{err}"
    );

    let mut node = Node::start_at(
        &watched,
        &source,
        &receiver.addr,
        dir.path(),
        &[&options[..], &["count word"]].concat(),
    );
    node.proc.wait_line("watching", Duration::from_secs(10));
    let a = dir.path().join("a.txt");
    let first = random_words(&a, 300, 8, &mut rng);
    let mut sender = ack_sender(&source, &a, "1");
    assert_eq!(
        sender.wait(Duration::from_secs(120)),
        Some(0),
        "{}",
        sender.stderr()
    );
    let words: u64 = first.values().sum();
    receiver.wait_lines(words as usize, Duration::from_secs(120));

    replace(&renamed, &watched);
    node.proc.wait_line("swapped to", Duration::from_secs(120));
    // Said right after the swap's line.
    let dropped = format!(
        "dropped the state of stateful step 'count word' ({} keys)",
        first.len()
    );
    node.proc.wait_line(&dropped, Duration::from_secs(10));
    let said = node.proc.stderr();
    assert!(
        said.contains("has no stateful step 'count word': its state is dropped (--drop-state)"),
        "{said}"
    );
    let b = dir.path().join("b.txt");
    let again = random_words(&b, 300, 8, &mut rng);
    let mut sender = ack_sender(&source, &b, "2");
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
    let text = receiver.text();
    let lines: Vec<&str> = text.lines().collect();
    let (before, after) = lines.split_at(words as usize);
    assert_eq!(final_values(&before.join("\n")), first);
    assert_eq!(
        final_values(&after.join("\n")),
        again,
        "{}",
        node.proc.stderr()
    );
}

/// Without a log a swap would lose the state: `--watch` is refused at the start.
#[test]
fn watch_without_resilience_is_refused_at_the_start() {
    let wasm = build_app(WORD_COUNT);
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(wallaroo())
        .arg("run")
        .arg(&wasm)
        .args([
            "--watch",
            "--in",
            "127.0.0.1:0",
            "--out",
            "127.0.0.1:9",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--watch needs --resilience at-least-once or exactly-once"),
        "{err}"
    );
}
