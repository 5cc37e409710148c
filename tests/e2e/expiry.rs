//! State expiry: a state step's keys expire after a quiet time (in ingest time here, so real
//! time), say so through `on_expire`, and leave the node's state; across kills, each key's
//! history stays one history: running totals over its messages in order, reset exactly where a
//! farewell says the state expired, with nothing repeated or lost.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng};
use wallaroo_tests::*;

use crate::metrics::get;
use crate::windows::transactions;

pub(crate) const APP: &str = "tests/apps/quiet_users/quiet_users.py";

/// What one user's outputs say.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct History {
    /// Messages the outputs account for.
    pub(crate) messages: usize,
    pub(crate) expiries: usize,
    /// The last output was a farewell (or there was none).
    pub(crate) ended_expired: bool,
}

/// Checks the receiver's `text` against each user's amounts in order: every message output
/// its user's running total and count since the user's state was last new, and every farewell
/// (`user expired total count`) closed a run with that run's total and count. Panics naming
/// the first line that does not fit.
pub(crate) fn histories(
    text: &str,
    amounts: &BTreeMap<String, Vec<i64>>,
) -> BTreeMap<String, History> {
    // (next message, run total, run count, expiries) per user
    let mut runs: BTreeMap<&str, (usize, i64, u64, usize)> = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (user, expired, total, count) = match fields[..] {
            [user, "expired", total, count] => (user, true, total, count),
            [user, total, count] => (user, false, total, count),
            _ => panic!("not an output of the app: {line:?}"),
        };
        let (total, count): (i64, u64) = (total.parse().unwrap(), count.parse().unwrap());
        let user_amounts = amounts
            .get(user)
            .unwrap_or_else(|| panic!("an output for an unknown user: {line:?}"));
        let run = runs.entry(user).or_default();
        if expired {
            assert!(
                run.2 > 0 && (total, count) == (run.1, run.2),
                "{line:?} does not close {user}'s run (total {}, count {})",
                run.1,
                run.2
            );
            *run = (run.0, 0, 0, run.3 + 1);
        } else {
            let amount = *user_amounts.get(run.0).unwrap_or_else(|| {
                panic!("{line:?}: {user} sent only {} messages", user_amounts.len())
            });
            assert_eq!(
                (total, count),
                (run.1 + amount, run.2 + 1),
                "{line:?} is not {user}'s message {} ({amount}) after a run of {} at {}",
                run.0,
                run.2,
                run.1
            );
            *run = (run.0 + 1, total, count, run.3);
        }
    }
    runs.into_iter()
        .map(|(user, (messages, _, count, expiries))| {
            let history = History {
                messages,
                expiries,
                ended_expired: count == 0,
            };
            (user.to_string(), history)
        })
        .collect()
}

/// Waits up to `secs` until every user's outputs account for all its messages and end with a
/// farewell; returns the histories.
fn wait_for_all_expired(
    receiver: &Receiver,
    amounts: &BTreeMap<String, Vec<i64>>,
    secs: u64,
    logs: impl Fn() -> String,
) -> BTreeMap<String, History> {
    let done = |h: &BTreeMap<String, History>| {
        h.len() == amounts.len()
            && amounts
                .iter()
                .all(|(user, a)| h[user].messages == a.len() && h[user].ended_expired)
    };
    wait_until(Duration::from_secs(secs), || {
        let h = histories(&receiver.text(), amounts);
        done(&h).then_some(h)
    })
    .unwrap_or_else(|| {
        panic!(
            "not every user's state expired after all its messages: {:?}; the node said:\n{}",
            histories(&receiver.text(), amounts),
            logs()
        )
    })
}

fn metrics_addr(node: &mut Node) -> String {
    let line = node
        .proc
        .wait_line("metrics at http://", Duration::from_secs(10));
    let rest = line.split("http://").nth(1).unwrap();
    rest.strip_suffix("/metrics").unwrap().to_string()
}

/// Sends `wasm` (an app like `APP`, expiring after 1 s) a burst of input: every user's state
/// expires once, and the node holds no key after; a user back again starts afresh.
fn quiet_users_expire_once_and_come_back_afresh(wasm: &Path, seed: &str, args: &[&str]) {
    let mut rng = StdRng::seed_from_u64(test_seed(seed));
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    let mut amounts = transactions(&input, 1000, &mut rng);
    let receiver = Receiver::start(dir.path());
    let mut all_args = vec!["--workers", "2", "--metrics", "127.0.0.1:0"];
    all_args.extend_from_slice(args);
    let mut node = Node::start(wasm, &receiver.addr, dir.path(), &all_args);
    let metrics = metrics_addr(&mut node);
    send(&node.source, &input, &[]);
    let histories = wait_for_all_expired(&receiver, &amounts, 30, || node.proc.stderr());
    assert!(histories.values().all(|h| h.expiries == 1), "{histories:?}");
    // The node learns of a removal at its next copy of the state, soon after.
    wait_until(Duration::from_secs(10), || {
        get(&metrics, "/metrics")
            .contains("wallaroo_state_keys 0\n")
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "keys left after every one expired:\n{}",
            get(&metrics, "/metrics")
        )
    });
    // A user back again starts from nothing, and is forgotten again.
    let again = dir.path().join("again.txt");
    std::fs::write(&again, "u3,7\n").unwrap();
    send(&node.source, &again, &[]);
    amounts.get_mut("u3").unwrap().push(7);
    let histories = wait_for_all_expired(&receiver, &amounts, 30, || node.proc.stderr());
    assert_eq!(histories["u3"].expiries, 2);
    assert!(receiver.text().contains("\nu3 7 1\n"));
    assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
}

#[test]
fn a_users_state_expires_after_a_quiet_second_says_so_once_and_leaves_the_node() {
    quiet_users_expire_once_and_come_back_afresh(&build_app(APP), "quiet users", &[]);
}

#[test]
fn a_go_users_state_expires_after_a_quiet_second_says_so_once_and_leaves_the_node() {
    let wasm = build_go_app("tests/apps/go_quiet_users");
    quiet_users_expire_once_and_come_back_afresh(&wasm, "go quiet users", &[]);
}

#[test]
fn expiry_survives_kills_and_every_users_history_stays_exactly_once() {
    let mut rng = StdRng::seed_from_u64(test_seed("expiry kill points"));
    let wasm = build_app(APP);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    // Users take turns in groups, 400 lines each: a group is quiet for seven other groups'
    // turns (about a second at the sender's pace), long past its 300 ms expiry.
    let lines = 20_000;
    let mut amounts: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut text = String::new();
    for line in 0..lines {
        let user = format!("g{}u{}", line / 400 % 8, rng.random_range(0..4));
        let amount = rng.random_range(-500..500i64);
        text.push_str(&format!("{user},{amount}\n"));
        amounts.entry(user).or_default().push(amount);
    }
    std::fs::write(&input, text).unwrap();
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
        "--expire-after-ms",
        "300",
    ];
    let start = || Node::start_at(&wasm, &source, &receiver.addr, dir.path(), &args);
    let mut node = start();
    let mut sender = slow_ack_sender(&source, &input, "9", lines, 8);
    let mut points: Vec<u64> = (0..3)
        .map(|_| rng.random_range(lines as u64 / 10..lines as u64 / 2))
        .collect();
    points.sort();
    let progress = || {
        let h = histories(&receiver.text(), &amounts);
        h.values().map(|h| h.messages as u64).sum()
    };
    kill_at(&mut node, &points, progress, start);
    assert_eq!(
        sender.wait(Duration::from_secs(180)),
        Some(0),
        "the sender did not finish: {}",
        sender.stderr()
    );
    let histories = wait_for_all_expired(&receiver, &amounts, 30, || node.proc.stderr());
    assert_eq!(node.proc.stop(Duration::from_secs(60)), Some(0));
    // Each group went quiet between its turns: users expired more than once.
    let expiries: usize = histories.values().map(|h| h.expiries).sum();
    assert!(expiries > 2 * amounts.len(), "{histories:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(histories, self::histories(&receiver.text(), &amounts));
}
