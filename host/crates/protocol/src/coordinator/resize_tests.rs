//! Changes that add and remove members (grow and shrink): new members join first, the
//! sources stop and the cluster drains before the change's checkpoint, the state of the key
//! groups that move is handed over after it, and only then is the new version recorded.
//! Before that record a failure leaves the cluster as it was; from it on, as the change made
//! it. Uses the harness of `tests`.

use super::tests::*;
use super::*;

fn sent_to(actions: &[Action], command: Command) -> Vec<usize> {
    sends(actions)
        .into_iter()
        .filter_map(|(m, c)| (c == command).then_some(m))
        .collect()
}

fn resize(version: u64, members: usize, removed: Vec<usize>) -> Event {
    Event::Change(Change {
        version,
        members,
        removed,
        checkpoint_interval: Some(INTERVAL),
        moves: true,
    })
}

impl Cluster {
    /// Answers like healthy members until the coordinator is in `state`.
    fn drive_until(&mut self, state: &str) -> Vec<Action> {
        let mut actions = Vec::new();
        while self.c.state() != state {
            let more = self.drive_once();
            actions.extend(more.unwrap_or_else(|| panic!("never {state}: {:?}", self.c)));
        }
        actions
    }
}

/// A cluster of three growing to four, with node 3 joined and every member ready.
fn grown_to_ready() -> (Cluster, Vec<Action>) {
    let mut cluster = Cluster::running(3, Some(INTERVAL));
    let actions = cluster.handle(resize(1, 4, vec![]));
    assert!(sends(&actions).is_empty(), "{actions:?}");
    // While the new member joins, the cluster runs as before.
    assert!(cluster.c.running());
    let actions = cluster.join(3);
    assert_eq!(sends(&actions), to_all(4, Command::Ready { version: 1 }));
    (cluster, actions)
}

#[test]
fn a_grow_waits_for_the_new_member_drains_checkpoints_moves_and_records_then_starts_all() {
    let (mut cluster, _) = grown_to_ready();
    let actions = cluster.answer_ok();
    // The new member runs nothing yet: it is not asked to stop sources nor to checkpoint.
    assert_eq!(sent_to(&actions, Command::StopSources), [0, 1, 2]);
    let actions = cluster.answer_ok();
    assert_eq!(sent_to(&actions, Command::Drain), [0, 1, 2]);
    let mut actions = cluster.drive_until("changing: move");
    assert_eq!(
        sent_to(&actions, Command::Begin { checkpoint: 1 }),
        [0, 1, 2]
    );
    let moved = Command::Move {
        checkpoint: 1,
        version: 1,
    };
    assert_eq!(sent_to(&actions, moved), [0, 1, 2, 3]);
    assert!(
        records(&actions).iter().all(|r| r.version == 0),
        "{actions:?}"
    );
    actions.extend(cluster.drive());
    assert_eq!(
        records(&actions).last(),
        Some(&Record {
            generation: 2,
            committed: 1,
            version: 1
        })
    );
    let start = Command::Start {
        generation: 2,
        recover_to: 1,
        version: 1,
    };
    assert_eq!(sent_to(&actions, start), [0, 1, 2, 3]);
    assert_eq!(swapped(&actions), [&Ok(1)]);
    // The new member takes part in every checkpoint from now on.
    let actions = cluster.checkpoint();
    assert_eq!(
        sent_to(&actions, Command::Begin { checkpoint: 2 }),
        [0, 1, 2, 3]
    );
}

#[test]
fn a_new_member_that_never_joins_ends_the_change_naming_it_and_the_cluster_runs_on() {
    let mut cluster = Cluster::running(3, Some(INTERVAL));
    cluster
        .c
        .set_names((0..4).map(|i| format!("node {i} (h{i}:1)")).collect());
    cluster.handle(resize(1, 4, vec![]));
    // Checkpoints go on while the cluster waits for the new member, until it gives up.
    let mut checkpoints = 0;
    let why = loop {
        let actions = cluster.fire();
        if let [Err(why)] = swapped(&actions)[..] {
            break why.clone();
        }
        checkpoints += 1;
        cluster.drive();
    };
    assert!(
        checkpoints >= 59,
        "{checkpoints} checkpoints while it waited"
    );
    assert!(
        why.contains("node 3 (h3:1) did not join within 60 s"),
        "{why}"
    );
    assert!(cluster.c.running());
    cluster.drive();
    let actions = cluster.checkpoint();
    let begun: Vec<usize> = sends(&actions)
        .into_iter()
        .filter_map(|(m, c)| matches!(c, Command::Begin { .. }).then_some(m))
        .collect();
    assert_eq!(begun, [0, 1, 2]);
    // Joining late, it is refused: it is not of the deployment.
    let actions = cluster.join(3);
    assert!(
        matches!(actions[..], [Action::Refuse { member: 3, .. }]),
        "{actions:?}"
    );
}

#[test]
fn a_refused_ready_on_the_new_member_ends_the_change_and_tells_it_to_leave() {
    let (mut cluster, _) = grown_to_ready();
    let actions = cluster.answer(|m, c| match m {
        3 => Reply::Refused("cannot compile".into()),
        _ => ok(c),
    });
    assert!(
        matches!(swapped(&actions)[..], [Err(why)] if why.contains("node 3 cannot run")),
        "{actions:?}"
    );
    assert_eq!(sent_to(&actions, Command::Leave), [3]);
    assert!(cluster.c.running());
    assert!(cluster.c.record().version == 0);
}

#[test]
fn a_member_lost_during_the_move_rolls_back_to_the_old_members() {
    let (mut cluster, _) = grown_to_ready();
    cluster.drive_until("changing: move");
    let mut actions = cluster.lose(1);
    assert!(
        matches!(swapped(&actions)[..], [Err(why)] if why.contains("rolls back")),
        "{actions:?}"
    );
    assert_eq!(sent_to(&actions, Command::Leave), [3]);
    // Recovery waits for the three members there were, not the new one.
    actions = Vec::new();
    for m in 0..3 {
        actions.extend(cluster.join(m));
    }
    actions.extend(cluster.recover());
    let start = Command::Start {
        generation: 2,
        recover_to: 1,
        version: 0,
    };
    assert_eq!(sent_to(&actions, start), [0, 1, 2]);
}

#[test]
fn a_loss_after_the_record_recovers_with_the_new_members() {
    let (mut cluster, _) = grown_to_ready();
    cluster.drive_until("changing: record");
    cluster.handle(Event::Recorded(Ok(())));
    // Starting generation 2 when member 2 is lost: the new member is one now.
    let actions = cluster.lose(2);
    assert_eq!(disconnects(&actions), [0, 1, 2, 3]);
    let mut actions = Vec::new();
    for m in 0..3 {
        actions.extend(cluster.join(m));
    }
    assert_eq!(cluster.c.state(), "recovering");
    actions.extend(cluster.join(3));
    actions.extend(cluster.recover());
    let start = Command::Start {
        generation: 3,
        recover_to: 1,
        version: 1,
    };
    assert_eq!(sent_to(&actions, start), [0, 1, 2, 3]);
}

#[test]
fn a_shrink_moves_the_removed_members_groups_then_they_leave_and_take_part_in_nothing() {
    let mut cluster = Cluster::running(4, Some(INTERVAL));
    let actions = cluster.handle(resize(1, 4, vec![2, 3]));
    assert_eq!(sends(&actions), to_all(4, Command::Ready { version: 1 }));
    let mut actions = cluster.drive_until("changing: move");
    let moved = Command::Move {
        checkpoint: 1,
        version: 1,
    };
    assert_eq!(sent_to(&actions, moved), [0, 1, 2, 3]);
    actions.extend(cluster.drive());
    assert_eq!(sent_to(&actions, Command::Leave), [2, 3]);
    let start = Command::Start {
        generation: 2,
        recover_to: 1,
        version: 1,
    };
    assert_eq!(sent_to(&actions, start), [0, 1]);
    assert_eq!(swapped(&actions), [&Ok(1)]);
    let actions = cluster.checkpoint();
    assert_eq!(sent_to(&actions, Command::Begin { checkpoint: 2 }), [0, 1]);
    // A removed member's stream closing, or its answer, changes nothing.
    assert!(cluster.lose(3).is_empty());
    let actions = cluster.join(2);
    assert!(
        matches!(&actions[..], [Action::Refuse { member: 2, why }] if why.contains("removed")),
        "{actions:?}"
    );
    assert!(cluster.c.running());
}

#[test]
fn a_restarted_coordinator_waits_only_for_members_not_retired() {
    let mut config = config(4, Some(INTERVAL));
    config.retired = vec![1, 3];
    let record = Record {
        generation: 3,
        committed: 5,
        version: 2,
    };
    let (mut cluster, _) = Cluster::with(config, record, false);
    cluster.join(0);
    let actions = cluster.join(2);
    assert!(records(&actions).len() == 1 || cluster.c.state() == "recovering");
    let actions = cluster.recover();
    let start = Command::Start {
        generation: 4,
        recover_to: 5,
        version: 2,
    };
    assert_eq!(sent_to(&actions, start), [0, 2]);
}

#[test]
fn removing_the_coordinator_or_a_retired_member_is_refused_before_anything_changes() {
    let mut cluster = Cluster::running(3, Some(INTERVAL));
    let actions = cluster.handle(resize(1, 3, vec![0]));
    assert!(
        matches!(swapped(&actions)[..], [Err(why)] if why.contains("coordinates the cluster")),
        "{actions:?}"
    );
    let actions = cluster.handle(resize(1, 2, vec![]));
    assert!(matches!(swapped(&actions)[..], [Err(_)]), "{actions:?}");
    assert!(cluster.c.running());
    assert!(sends(&actions).is_empty());
}
