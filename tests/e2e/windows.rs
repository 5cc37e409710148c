//! Windows over event time (ingest time here) and over counts, run by a node.
//!
//! Ingest times depend on when messages arrive, so the range-window checks hold whatever they
//! are: with sliding windows of 2 s every 1 s, each message is in exactly two windows, so each
//! user's window totals add up to twice the user's amounts, and the windows fire for users
//! who receive nothing more, by the watermark alone.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng};
use wallaroo_tests::*;

pub(crate) const APP: &str = "tests/apps/window_totals/window_totals.py";

/// Writes `lines` random `user,amount` lines; returns each user's amounts in order.
pub(crate) fn transactions(
    path: &Path,
    lines: usize,
    rng: &mut StdRng,
) -> BTreeMap<String, Vec<i64>> {
    let mut amounts: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut text = String::new();
    for _ in 0..lines {
        let user = format!("u{}", rng.random_range(0..20));
        let amount = rng.random_range(-500..500i64);
        text.push_str(&format!("{user},{amount}\n"));
        amounts.entry(user).or_default().push(amount);
    }
    std::fs::write(path, text).unwrap();
    amounts
}

/// Each user's windows as `(total, count)`, in output order.
pub(crate) fn windows(text: &str) -> BTreeMap<String, Vec<(i64, u64)>> {
    let mut out: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let [user, total, count] = fields[..] else {
            panic!("not a window's output: {line:?}");
        };
        out.entry(user.to_string())
            .or_default()
            .push((total.parse().unwrap(), count.parse().unwrap()));
    }
    out
}

/// Writes `lines` `user,amount,seconds` lines with event times from 2019, a few per second,
/// and returns each user's windows of 2 s every 1 s as `(total, count)`, oldest first, the
/// empty ones left out. Nothing is far ahead: the last windows fire only at the end of time.
pub(crate) fn event_time_input(
    path: &Path,
    lines: usize,
    rng: &mut StdRng,
) -> BTreeMap<String, Vec<(i64, u64)>> {
    let mut events: BTreeMap<String, Vec<(u64, i64)>> = BTreeMap::new();
    let mut text = String::new();
    let mut time = 1_550_000_000_000u64;
    for _ in 0..lines {
        time += rng.random_range(0..400u64);
        let user = format!("u{}", rng.random_range(0..10));
        let amount = rng.random_range(-500..500i64);
        text.push_str(&format!(
            "{user},{amount},{}.{:03}\n",
            time / 1000,
            time % 1000
        ));
        events.entry(user).or_default().push((time, amount));
    }
    std::fs::write(path, text).unwrap();
    let mut expected: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    for (user, events) in &events {
        let mut window = events[0].0 / 1000 * 1000 - 1000;
        while window <= events.last().unwrap().0 {
            let inside: Vec<i64> = events
                .iter()
                .filter(|(t, _)| (window..window + 2000).contains(t))
                .map(|(_, a)| *a)
                .collect();
            if !inside.is_empty() {
                let entry = (inside.iter().sum(), inside.len() as u64);
                expected.entry(user.clone()).or_default().push(entry);
            }
            window += 1000;
        }
    }
    expected
}

pub(crate) fn messages_in(text: &str) -> u64 {
    windows(text)
        .values()
        .flatten()
        .map(|(_, count)| count)
        .sum()
}

/// The receiver's text once its windows hold `messages` messages in all, waiting up to
/// `secs`; panics with what the windows hold and `logs()` (the nodes' output) after that.
pub(crate) fn wait_for_windows(
    receiver: &Receiver,
    messages: u64,
    secs: u64,
    logs: impl Fn() -> String,
) -> String {
    wait_until(Duration::from_secs(secs), || {
        let text = receiver.text();
        (messages_in(&text) >= messages).then_some(text)
    })
    .unwrap_or_else(|| {
        panic!(
            "the windows held {} of {messages} messages; the nodes said:\n{}",
            messages_in(&receiver.text()),
            logs()
        )
    })
}

/// Every user's sliding windows hold each of its messages exactly twice.
pub(crate) fn assert_each_message_in_two_windows(text: &str, amounts: &BTreeMap<String, Vec<i64>>) {
    let got = windows(text);
    for (user, amounts) in amounts {
        let windows = got
            .get(user)
            .unwrap_or_else(|| panic!("no window for {user}"));
        let total: i64 = windows.iter().map(|w| w.0).sum();
        let count: u64 = windows.iter().map(|w| w.1).sum();
        assert_eq!(
            (total, count),
            (2 * amounts.iter().sum::<i64>(), 2 * amounts.len() as u64),
            "{user}'s windows: {windows:?}"
        );
    }
    assert_eq!(got.len(), amounts.len(), "windows of unknown users");
}

/// Runs `wasm` (window totals over sliding windows of 2 s every 1 s of ingest time) on a node
/// with 2 workers and sends it input once: nothing more arrives, so the last windows (up to 2 s
/// after the last message) fire on the watermark alone, and every message is in two of them.
fn sliding_windows_hold_every_message_twice(wasm: &Path, seed: &str) {
    let mut rng = StdRng::seed_from_u64(test_seed(seed));
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    let amounts = transactions(&input, 3000, &mut rng);
    let receiver = Receiver::start(dir.path());
    let mut node = Node::start(
        wasm,
        &receiver.addr,
        dir.path(),
        &["--workers", "2", "--resilience", "none"],
    );
    send(&node.source, &input, &[]);
    let all = 2 * 3000;
    let text = wait_for_windows(&receiver, all, 30, || node.proc.stderr());
    assert_each_message_in_two_windows(&text, &amounts);
    // And no window fires twice.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(receiver.text(), text);
    assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
}

#[test]
fn sliding_windows_fire_by_the_watermark_alone_and_hold_every_message_twice() {
    sliding_windows_hold_every_message_twice(&build_app(APP), "window input");
}

#[test]
fn count_windows_give_each_users_messages_in_threes_in_order() {
    let mut rng = StdRng::seed_from_u64(test_seed("count window input"));
    let wasm = build_app(APP);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    let amounts = transactions(&input, 2000, &mut rng);
    let receiver = Receiver::start(dir.path());
    let mut node = Node::start(
        &wasm,
        &receiver.addr,
        dir.path(),
        &["--workers", "2", "--count-windows", "3"],
    );
    send(&node.source, &input, &[]);
    let full: u64 = amounts.values().map(|a| (a.len() / 3 * 3) as u64).sum();
    let text = wait_for_windows(&receiver, full, 30, || node.proc.stderr());
    let got = windows(&text);
    for (user, amounts) in &amounts {
        let expected: Vec<(i64, u64)> = amounts
            .chunks_exact(3)
            .map(|three| (three.iter().sum(), 3))
            .collect();
        assert_eq!(
            got.get(user).cloned().unwrap_or_default(),
            expected,
            "{user}"
        );
    }
    assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
}

#[test]
fn windows_survive_kills_and_each_result_is_output_exactly_once() {
    let mut rng = StdRng::seed_from_u64(test_seed("window kill points"));
    let wasm = build_app(APP);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    let lines = 20_000;
    let amounts = transactions(&input, lines, &mut rng);
    let receiver = Receiver::start(dir.path());
    let source = format!("127.0.0.1:{}", free_port());
    let args = [
        "--workers",
        "2",
        "--resilience",
        "exactly-once",
        "--checkpoint-interval",
        "200",
        "--sink-framing",
        "tagged",
    ];
    let start = || Node::start_at(&wasm, &source, &receiver.addr, dir.path(), &args);
    let mut node = start();
    // A slow sender, so that windows keep opening and firing while the node is killed.
    let mut sender = slow_ack_sender(&source, &input, "9", lines, 8);
    let all = 2 * lines as u64;
    let mut points: Vec<u64> = (0..3)
        .map(|_| rng.random_range(all / 10..all / 2))
        .collect();
    points.sort();
    kill_at(&mut node, &points, || messages_in(&receiver.text()), start);
    assert_eq!(
        sender.wait(Duration::from_secs(180)),
        Some(0),
        "the sender did not finish: {}",
        sender.stderr()
    );
    let text = wait_for_windows(&receiver, all, 30, || node.proc.stderr());
    assert_eq!(node.proc.stop(Duration::from_secs(60)), Some(0));
    std::thread::sleep(Duration::from_millis(300));
    assert_each_message_in_two_windows(&receiver.text(), &amounts);
    assert_eq!(messages_in(&text), all);
}

#[test]
fn the_alerts_example_over_a_generator_sends_only_alerts_past_the_threshold() {
    let wasm = build_app("componentize-py-examples/alerts_windowed/alerts.py");
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let extra = ["--resilience", "none"];
    let mut node = run_generating("alerts", &wasm, &receiver.addr, dir.path(), &extra);
    // The first windows end 9 s after the generator starts; alerts come every 3 s after.
    let text = wait_until(Duration::from_secs(40), || {
        let text = receiver.text();
        (text.lines().count() >= 8).then_some(text)
    })
    .unwrap_or_else(|| panic!("too few alerts; the node said:\n{}", node.stderr()));
    for line in text.lines() {
        let (kind, rest) = line.split_once(" Alert for ").expect(line);
        let (user, total) = rest.rsplit_once(": ").expect(line);
        let total: i64 = total.parse().expect(line);
        assert!(
            ["Fido", "Rex", "Dr. Whiskers", "Feathers", "Mountaineer"].contains(&user),
            "{line}"
        );
        match kind {
            "Deposit" => assert!(total > 2000, "{line}"),
            "Withdrawal" => assert!(total < -2000, "{line}"),
            _ => panic!("not an alert: {line}"),
        }
    }
    assert_eq!(
        node.stop(Duration::from_secs(30)),
        Some(0),
        "{}",
        node.stderr()
    );
}

#[test]
fn event_time_windows_give_the_sums_computed_from_the_data_and_a_late_record_fires_them_all() {
    let mut rng = StdRng::seed_from_u64(test_seed("event time input"));
    let wasm = build_app(APP);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    // Times from 2019, in order, a few per second; then one far ahead for another user,
    // which moves the watermark past every window of every other user.
    let expected = event_time_input(&input, 2000, &mut rng);
    let mut text = std::fs::read_to_string(&input).unwrap();
    text.push_str(&format!("last,0,{}\n", 1_550_000_000u64 + 10_000_000));
    std::fs::write(&input, text).unwrap();
    let receiver = Receiver::start(dir.path());
    let mut node = Node::start(
        &wasm,
        &receiver.addr,
        dir.path(),
        &["--workers", "2", "--event-time"],
    );
    send(&node.source, &input, &[]);
    let all: u64 = 2 * 2000;
    let text = wait_for_windows(&receiver, all, 30, || node.proc.stderr());
    assert_eq!(windows(&text), expected);
    assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
}

#[test]
fn a_late_message_is_dead_lettered_when_asked_and_the_windows_go_on() {
    let wasm = build_app(APP);
    let dir = tempfile::tempdir().unwrap();
    let on_time = dir.path().join("on_time.txt");
    let late = dir.path().join("late.txt");
    std::fs::write(&on_time, "u1,5,1000.5\nu2,7,1001.5\nlast,0,900000\n").unwrap();
    std::fs::write(&late, "u1,3,1000.7\n").unwrap();
    let receiver = Receiver::start(dir.path());
    let mut node = Node::start(
        &wasm,
        &receiver.addr,
        dir.path(),
        &["--event-time", "--dead-letter-late"],
    );
    send(&node.source, &on_time, &[]);
    // The far-ahead record fires both users' windows: after that, u1's record is late.
    let fired = wait_until(Duration::from_secs(30), || {
        let text = receiver.text();
        (messages_in(&text) == 4).then_some(text)
    })
    .unwrap_or_else(|| {
        panic!(
            "the windows did not fire; the node said:\n{}",
            node.proc.stderr()
        )
    });
    send(&node.source, &late, &[]);
    let dead = wait_until(Duration::from_secs(30), || {
        let dead = node.dead_letters();
        (!dead.is_empty()).then_some(dead)
    })
    .unwrap_or_else(|| {
        panic!(
            "nothing dead-lettered; the node said:\n{}",
            node.proc.stderr()
        )
    });
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["at"], "Totals", "{dead:?}");
    assert_eq!(dead[0]["key"], "u1", "{dead:?}");
    assert!(
        dead[0]["error"].as_str().unwrap().starts_with("late: "),
        "{dead:?}"
    );
    // Dropped by the default policy: no window holds it.
    assert_eq!(receiver.text(), fired);
    assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
}

#[test]
fn a_go_apps_sliding_windows_fire_by_the_watermark_and_hold_every_message_twice() {
    let wasm = build_go_app("tests/apps/go_window_totals");
    sliding_windows_hold_every_message_twice(&wasm, "go window input");
}
