//! The coordinator's record never goes back: answers to records asked by a state a loss
//! ended still count once durable.

use std::time::Duration;

use super::*;

fn config() -> Config {
    Config {
        deployment: "d".into(),
        members: 2,
        retired: Vec::new(),
        checkpoint_interval: Some(Duration::from_secs(1)),
        patience: Patience::default(),
    }
}

fn records(actions: &[Action]) -> Vec<Record> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Record(r) => Some(*r),
            _ => None,
        })
        .collect()
}

fn join(c: &mut Coordinator, now: Time, member: u16, rejoin: Option<Rejoin>) -> Vec<Action> {
    let deployment = "d".into();
    c.handle(
        now,
        Event::Join {
            member,
            deployment,
            rejoin,
        },
    )
}

fn answer_all(c: &mut Coordinator, now: Time, reply: Reply) -> Vec<Action> {
    (0..2)
        .flat_map(|member| {
            let reply = reply.clone();
            c.handle(now, Event::Reply { member, reply })
        })
        .collect()
}

/// Checkpoint 1 is being recorded when member 1's stream breaks: the cluster rolls back
/// before the record's answer comes, and the answer says it is durable.
#[test]
fn a_checkpoint_recorded_after_a_loss_is_not_undone_by_the_next_generations_record() {
    let t = Time::ZERO;
    let (mut c, _) = Coordinator::new(config(), Record::default(), true, t);
    join(&mut c, t, 0, None);
    join(&mut c, t, 1, None);
    c.handle(t, Event::Recorded(Ok(())));
    answer_all(&mut c, t, Reply::Started { next_checkpoint: 1 });
    assert!(c.running());
    let t = Time::from_secs(1);
    c.handle(t, Event::Timeout);
    answer_all(&mut c, t, Reply::Ok);
    let aligned = Reply::Aligned(Alignment {
        aligned: true,
        routed_in_flight: 0,
        sent: 0,
        received: 0,
    });
    answer_all(&mut c, t, aligned.clone());
    answer_all(&mut c, t, aligned);
    let actions = answer_all(&mut c, t, Reply::Prepared(true));
    let first = c.record();
    assert_eq!(
        records(&actions),
        [Record {
            generation: first.generation,
            committed: 1,
            version: 0,
        }]
    );
    let why = "its control stream broke".to_string();
    c.handle(t, Event::Lost { member: 1, why });
    let rejoin = Some(Rejoin {
        peer: None,
        why: "closed".into(),
    });
    join(&mut c, t, 0, rejoin.clone());
    let actions = join(&mut c, t, 1, rejoin);
    assert!(
        records(&actions).is_empty(),
        "the generation is recorded only after the checkpoint's answer: {actions:?}"
    );
    let actions = c.handle(t, Event::Recorded(Ok(())));
    assert_eq!(
        c.record().generation,
        first.generation,
        "not taken for the generation's"
    );
    assert_eq!(c.record().committed, 1, "durable, so it counts");
    assert_eq!(
        records(&actions),
        [Record {
            generation: first.generation + 1,
            committed: 1,
            version: 0,
        }]
    );
    let actions = c.handle(t, Event::Recorded(Ok(())));
    let starts: Vec<Command> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { command, .. } => Some(*command),
            _ => None,
        })
        .collect();
    let start = Command::Start {
        generation: first.generation + 1,
        recover_to: 1,
        version: 0,
    };
    assert_eq!(starts, [start, start]);
}

#[test]
fn a_failed_checkpoint_record_answered_after_a_loss_changes_nothing() {
    let t = Time::ZERO;
    let (mut c, _) = Coordinator::new(config(), Record::default(), true, t);
    join(&mut c, t, 0, None);
    join(&mut c, t, 1, None);
    c.handle(t, Event::Recorded(Ok(())));
    answer_all(&mut c, t, Reply::Started { next_checkpoint: 1 });
    let t = Time::from_secs(1);
    c.handle(t, Event::Timeout);
    answer_all(&mut c, t, Reply::Ok);
    let aligned = Reply::Aligned(Alignment {
        aligned: true,
        routed_in_flight: 0,
        sent: 0,
        received: 0,
    });
    answer_all(&mut c, t, aligned.clone());
    answer_all(&mut c, t, aligned);
    answer_all(&mut c, t, Reply::Prepared(true));
    let why = "its control stream broke".to_string();
    c.handle(t, Event::Lost { member: 0, why });
    join(&mut c, t, 0, None);
    join(&mut c, t, 1, None);
    let actions = c.handle(t, Event::Recorded(Err("disk full".into())));
    assert_eq!(c.record().committed, 0);
    assert_eq!(
        records(&actions),
        [Record {
            generation: c.record().generation + 1,
            committed: 0,
            version: 0,
        }]
    );
}
