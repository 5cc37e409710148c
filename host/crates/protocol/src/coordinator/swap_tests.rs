//! Swapping the application for another version: Ready everywhere, a checkpoint, the new
//! version's record, its start. Before the record is durable a failure leaves the old version
//! running; from it on, the new one. Uses the harness of `tests`.

use super::tests::*;
use super::*;

fn starts(actions: &[Action]) -> Vec<Command> {
    sends(actions)
        .into_iter()
        .filter_map(|(_, c)| matches!(c, Command::Start { .. }).then_some(c))
        .collect()
}

fn start_v(generation: u64, recover_to: u64, version: u64) -> Command {
    Command::Start {
        generation,
        recover_to,
        version,
    }
}

impl Cluster {
    fn swap(&mut self, version: u64) -> Vec<Action> {
        let members = self.members();
        self.handle(Event::Change(Change::swap(
            version,
            members,
            Some(INTERVAL),
        )))
    }

    /// Answers like healthy members and disk until the coordinator is in `state`.
    fn drive_to(&mut self, state: &str) -> Vec<Action> {
        let mut actions = Vec::new();
        while self.c.state() != state {
            let more = self.drive_once();
            let more = more.unwrap_or_else(|| panic!("never {state}: {:?}", self.c));
            actions.extend(more);
        }
        actions
    }
}

/// A running cluster of three, swapping to version 1.
fn swapping() -> (Cluster, Vec<Action>) {
    let mut cluster = Cluster::running(3, Some(INTERVAL));
    let actions = cluster.swap(1);
    (cluster, actions)
}

#[test]
fn a_swap_readies_every_member_checkpoints_records_the_new_version_and_starts_it() {
    let (mut cluster, actions) = swapping();
    assert_eq!(sends(&actions), to_all(3, Command::Ready { version: 1 }));
    assert_eq!(cluster.c.state(), "changing: ready");
    let actions = cluster.answer_ok();
    assert_eq!(sends(&actions), to_all(3, Command::Begin { checkpoint: 1 }));
    let mut actions = cluster.drive_to("changing: record");
    actions.extend(cluster.handle(Event::Recorded(Ok(()))));
    let written = records(&actions);
    assert_eq!(
        written,
        [
            Record {
                generation: 1,
                committed: 1,
                version: 0
            },
            Record {
                generation: 2,
                committed: 1,
                version: 1
            },
        ]
    );
    assert_eq!(
        sends(&actions[actions.len() - 3..]),
        to_all(3, start_v(2, 1, 1))
    );
    assert!(swapped(&actions).is_empty(), "{actions:?}");
    // Answered once every member started, not before.
    for member in 0..2 {
        let reply = Reply::Started { next_checkpoint: 2 };
        let actions = cluster.handle(Event::Reply { member, reply });
        assert!(swapped(&actions).is_empty(), "{actions:?}");
    }
    let reply = Reply::Started { next_checkpoint: 2 };
    let actions = cluster.handle(Event::Reply { member: 2, reply });
    assert!(actions.contains(&Action::Running {
        generation: 2,
        checkpoint: 1,
        first: false
    }));
    assert_eq!(swapped(&actions), [&Ok(1)]);
    assert!(cluster.c.running());
    assert_eq!(cluster.c.record().version, 1);
    // It checkpoints on with the new version.
    let actions = cluster.checkpoint();
    assert_eq!(
        records(&actions),
        [Record {
            generation: 2,
            committed: 2,
            version: 1
        }]
    );
}

#[test]
fn a_refused_ready_answers_err_naming_the_node_and_the_old_version_runs_on() {
    let (mut cluster, _) = swapping();
    let actions = cluster.answer(|member, command| match member {
        1 => Reply::Refused("step counts cannot restore key 7".into()),
        _ => ok(command),
    });
    let answers = swapped(&actions);
    let [Err(why)] = &answers[..] else {
        panic!("{actions:?}")
    };
    assert!(why.contains("node 1"), "{why}");
    assert!(why.contains("cannot restore key 7"), "{why}");
    assert!(sends(&actions).is_empty(), "{actions:?}");
    assert!(
        disconnects(&actions).is_empty(),
        "nothing rolls back: {actions:?}"
    );
    assert_eq!(cluster.c.state(), "running");
    let actions = cluster.checkpoint();
    assert_eq!(
        records(&actions),
        [Record {
            generation: 1,
            committed: 1,
            version: 0
        }]
    );
    // And it can be asked again.
    let actions = cluster.swap(2);
    assert_eq!(sends(&actions), to_all(3, Command::Ready { version: 2 }));
}

#[test]
fn a_swap_asked_during_a_checkpoint_waits_for_it_then_begins() {
    let mut cluster = Cluster::running(3, Some(INTERVAL));
    let actions = cluster.fire();
    assert_eq!(sends(&actions), to_all(3, Command::Begin { checkpoint: 1 }));
    let actions = cluster.swap(1);
    assert!(actions.is_empty(), "{actions:?}");
    let mut actions = Vec::new();
    while !sends(&actions).contains(&(0, Command::Ready { version: 1 })) {
        actions.extend(cluster.drive_once().expect("the swap to begin"));
    }
    // Checkpoint 1 as asked before the swap, then the swap's own checkpoint 2.
    assert_eq!(
        records(&actions),
        [Record {
            generation: 1,
            committed: 1,
            version: 0
        }]
    );
    let actions = cluster.drive();
    assert!(sends(&actions).contains(&(0, Command::Begin { checkpoint: 2 })));
    assert_eq!(starts(&actions), [start_v(2, 2, 1); 3]);
    assert_eq!(swapped(&actions), [&Ok(1)]);
}

#[test]
fn a_second_swap_while_one_runs_is_refused_and_the_first_goes_on() {
    let (mut cluster, _) = swapping();
    let actions = cluster.swap(2);
    let answers = swapped(&actions);
    let [Err(why)] = &answers[..] else {
        panic!("{actions:?}")
    };
    assert!(why.contains("another change"), "{why}");
    assert!(sends(&actions).is_empty());
    cluster.answer_ok();
    cluster.drive_to("changing: record");
    let actions = cluster.swap(2);
    assert!(matches!(swapped(&actions)[..], [Err(_)]), "{actions:?}");
    let actions = cluster.drive();
    assert_eq!(swapped(&actions), [&Ok(1)]);
    assert_eq!(cluster.c.record().version, 1);
}

#[test]
fn a_swap_without_checkpoints_is_refused() {
    let mut cluster = Cluster::running(2, None);
    let actions = cluster.swap(1);
    let answers = swapped(&actions);
    let [Err(why)] = &answers[..] else {
        panic!("{actions:?}")
    };
    assert!(why.contains("resilience none"), "{why}");
    assert!(sends(&actions).is_empty());
    assert_eq!(cluster.c.state(), "running");
}

#[test]
fn a_version_not_above_the_running_one_is_refused() {
    let (mut cluster, _) = swapping();
    cluster.drive();
    assert_eq!(cluster.c.record().version, 1);
    for version in [0, 1] {
        let actions = cluster.swap(version);
        let answers = swapped(&actions);
        let [Err(why)] = &answers[..] else {
            panic!("{actions:?}")
        };
        assert!(why.contains("not above the running version 1"), "{why}");
        assert!(sends(&actions).is_empty());
    }
    assert_eq!(cluster.c.state(), "running");
}

/// A swap to version 1 that loses member 1 once the coordinator is in `state`: the answer,
/// and the recovery's Start.
fn lost_in(state: &str) -> (Vec<Action>, Cluster) {
    let (mut cluster, _) = swapping();
    if state != "changing: ready" {
        cluster.answer_ok();
        cluster.drive_to(state);
    }
    let actions = cluster.lose(1);
    (actions, cluster)
}

fn assert_rolled_back_to_the_old_version(mut actions: Vec<Action>, mut cluster: Cluster) {
    assert_eq!(disconnects(&actions), [0, 1, 2]);
    actions.extend(cluster.join_all());
    actions.extend(cluster.recover());
    let answers = swapped(&actions);
    let [Err(why)] = &answers[..] else {
        panic!("{actions:?}")
    };
    assert!(why.contains("rolls back to the version it ran"), "{why}");
    let starts = starts(&actions);
    assert!(!starts.is_empty());
    for start in starts {
        let Command::Start { version, .. } = start else {
            unreachable!()
        };
        assert_eq!(version, 0, "{actions:?}");
    }
    assert_eq!(cluster.c.record().version, 0);
    assert!(cluster.c.running());
    // The swap can be asked again.
    let actions = cluster.swap(1);
    assert_eq!(sends(&actions), to_all(3, Command::Ready { version: 1 }));
}

#[test]
fn a_loss_during_ready_fails_the_swap_and_recovers_the_old_version() {
    let (actions, cluster) = lost_in("changing: ready");
    assert!(matches!(swapped(&actions)[..], [Err(_)]), "{actions:?}");
    assert_rolled_back_to_the_old_version(actions, cluster);
}

#[test]
fn a_loss_during_the_swaps_checkpoint_fails_the_swap_and_recovers_the_old_version() {
    for state in [
        "checkpoint: align",
        "checkpoint: prepare",
        "checkpoint: commit",
    ] {
        let (actions, cluster) = lost_in(state);
        assert!(
            matches!(swapped(&actions)[..], [Err(_)]),
            "{state}: {actions:?}"
        );
        assert_rolled_back_to_the_old_version(actions, cluster);
    }
}

#[test]
fn a_swap_whose_record_cannot_be_written_fails_and_recovers_the_old_version() {
    let (mut cluster, _) = swapping();
    cluster.answer_ok();
    cluster.drive_to("changing: record");
    let actions = cluster.handle(Event::Recorded(Err("disk full".into())));
    assert_eq!(disconnects(&actions), [0, 1, 2]);
    let mut actions = actions;
    actions.extend(cluster.join_all());
    actions.extend(cluster.recover());
    assert!(matches!(swapped(&actions)[..], [Err(_)]), "{actions:?}");
    assert_eq!(starts(&actions), [start_v(2, 1, 0); 3]);
}

#[test]
fn a_loss_after_the_record_is_durable_recovers_the_new_version_and_answers_ok_once_running() {
    let (mut cluster, _) = swapping();
    cluster.answer_ok();
    cluster.drive_to("changing: record");
    let actions = cluster.handle(Event::Recorded(Ok(())));
    assert_eq!(starts(&actions), [start_v(2, 1, 1); 3]);
    let mut actions = cluster.lose(2);
    assert!(swapped(&actions).is_empty(), "{actions:?}");
    actions.extend(cluster.join_all());
    actions.extend(cluster.recover());
    assert_eq!(starts(&actions), [start_v(3, 1, 1); 3]);
    assert_eq!(swapped(&actions), [&Ok(1)]);
    let at = |a: &Action| actions.iter().position(|b| b == a).unwrap();
    let running = Action::Running {
        generation: 3,
        checkpoint: 1,
        first: false,
    };
    assert!(at(&running) < at(&Action::Swapped(Ok(1))));
}

#[test]
fn a_stop_asked_during_a_swap_is_carried_out_after_it() {
    let (mut cluster, _) = swapping();
    let actions = cluster.handle(Event::Stop);
    assert!(answered_stops(&actions).is_empty(), "{actions:?}");
    let actions = cluster.drive();
    let at = |a: &Action| actions.iter().position(|b| b == a);
    let swapped_at = at(&Action::Swapped(Ok(1))).expect("the swap answered");
    let stopped_at = at(&Action::AnswerStops(Ok(()))).expect("the stop answered");
    assert!(swapped_at < stopped_at, "{actions:?}");
    assert!(sends(&actions).contains(&(0, start_v(2, 1, 1))));
    assert!(cluster.c.done());
}

#[test]
fn a_coordinator_restarted_from_a_record_of_version_2_starts_version_2() {
    let record = Record {
        generation: 3,
        committed: 5,
        version: 2,
    };
    let (mut cluster, _) = Cluster::restarted(2, record);
    let mut actions = cluster.join_all();
    actions.extend(cluster.recover());
    assert_eq!(
        records(&actions),
        [Record {
            generation: 4,
            committed: 5,
            version: 2
        }]
    );
    assert_eq!(starts(&actions), [start_v(4, 5, 2); 2]);
    let actions = cluster.swap(2);
    assert!(matches!(swapped(&actions)[..], [Err(_)]), "{actions:?}");
    let actions = cluster.swap(3);
    assert_eq!(sends(&actions), to_all(2, Command::Ready { version: 3 }));
}
/// A loss while the new version's record is being written: whether the swap happened is the
/// record's answer, and the swap's answer waits for it.
#[test]
fn a_loss_while_the_record_is_written_then_a_failed_write_recovers_the_old_version() {
    let (actions, mut cluster) = lost_in("changing: record");
    assert!(
        swapped(&actions).is_empty(),
        "answered before the record's answer: {actions:?}"
    );
    let actions = cluster.handle(Event::Recorded(Err("disk full".into())));
    assert!(matches!(swapped(&actions)[..], [Err(_)]), "{actions:?}");
    let mut actions = cluster.join_all();
    actions.extend(cluster.recover());
    assert!(swapped(&actions).is_empty(), "{actions:?}");
    assert_eq!(starts(&actions), [start_v(2, 1, 0); 3]);
    assert_eq!(cluster.c.record().version, 0);
}

#[test]
fn a_loss_while_the_record_is_written_then_a_durable_record_recovers_the_new_version() {
    let (actions, mut cluster) = lost_in("changing: record");
    assert!(
        swapped(&actions).is_empty(),
        "answered before the record's answer: {actions:?}"
    );
    let mut actions = cluster.handle(Event::Recorded(Ok(())));
    actions.extend(cluster.join_all());
    actions.extend(cluster.recover());
    // The record of version 1 is durable: it runs, never version 0 again.
    let starts = starts(&actions);
    assert!(!starts.is_empty());
    for start in &starts {
        assert!(
            matches!(start, Command::Start { version: 1, .. }),
            "{actions:?}"
        );
    }
    assert_eq!(swapped(&actions), [&Ok(1)]);
    assert_eq!(cluster.c.record().version, 1);
}
#[test]
fn a_swap_asked_while_a_stop_is_under_way_is_refused() {
    let mut cluster = Cluster::running(2, Some(INTERVAL));
    cluster.handle(Event::Stop);
    // In each step of the stop, its last checkpoint included.
    let mut asked = 0;
    while !cluster.c.done() {
        let actions = cluster.swap(1);
        let answers = swapped(&actions);
        let [Err(why)] = &answers[..] else {
            panic!("{}: {actions:?}", cluster.c.state())
        };
        assert!(why.contains("stop"), "{why}");
        asked += 1;
        cluster.drive_once().expect("the stop to go on");
    }
    assert!(asked > 5);
}

#[test]
fn a_recorded_version_that_cannot_start_is_changed_back_from_and_the_deploy_told_why() {
    let (mut cluster, _) = swapping();
    cluster.drive_to("changing: record");
    let actions = cluster.handle(Event::Recorded(Ok(())));
    assert_eq!(starts(&actions), vec![start_v(2, 1, 1); 3]);
    // Node 1's instance of version 1 traps restoring its state.
    let actions = cluster.answer(|member, command| match member {
        1 => Reply::Refused("restoring key 'w7' trapped".into()),
        _ => ok(command),
    });
    assert!(
        actions.contains(&Action::ChangingBack {
            version: 2,
            from: 1,
            like: 0
        }),
        "{actions:?}"
    );
    assert_eq!(
        records(&actions),
        [Record {
            generation: 3,
            committed: 1,
            version: 2
        }]
    );
    let actions = cluster.handle(Event::Recorded(Ok(())));
    assert_eq!(starts(&actions), vec![start_v(3, 1, 2); 3]);
    let actions = cluster.answer_ok();
    let answer = swapped(&actions);
    let [Err(why)] = answer[..] else {
        panic!("{actions:?}")
    };
    assert!(
        why.contains("node 1 cannot start version 1: restoring key 'w7' trapped"),
        "{why}"
    );
    assert!(why.contains("went back"), "{why}");
    assert!(cluster.c.running());
    assert_eq!(cluster.c.record().version, 2);
}

#[test]
fn a_change_back_cut_short_by_a_loss_is_made_once_the_version_fails_again() {
    let (mut cluster, _) = swapping();
    cluster.drive_to("changing: record");
    cluster.handle(Event::Recorded(Ok(())));
    cluster.answer(|member, command| match member {
        1 => Reply::Refused("trapped".into()),
        _ => ok(command),
    });
    // The change back's record fails: the cluster recovers with version 1 recorded.
    let actions = cluster.handle(Event::Recorded(Err("disk full".into())));
    assert!(swapped(&actions).is_empty(), "{actions:?}");
    cluster.join_all();
    while cluster.c.state() == "recovering" {
        cluster.fire();
    }
    cluster.handle(Event::Recorded(Ok(())));
    let actions = cluster.answer(|member, command| match member {
        1 => Reply::Refused("trapped".into()),
        _ => ok(command),
    });
    assert_eq!(
        records(&actions).last().map(|r| r.version),
        Some(2),
        "{actions:?}"
    );
    let mut actions = cluster.handle(Event::Recorded(Ok(())));
    actions.extend(cluster.answer_ok());
    assert!(
        matches!(swapped(&actions)[..], [Err(why)] if why.contains("went back")),
        "{actions:?}"
    );
    assert_eq!(cluster.c.record().version, 2);
}
