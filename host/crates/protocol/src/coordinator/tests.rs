//! The coordinator's states, one event at a time: no network, no clock, no sleeps. The
//! harness plays every member (it answers the command each was last sent) and the disk (it
//! answers records), and checks after every event what must always hold: something awaited
//! with a deadline has a timeout, a handled timeout does not ask to be called again at once,
//! and the coordinator ends only once every stop asked was answered.

use std::time::Duration;

use super::*;

pub(super) const DEPLOYMENT: &str = "d1";

pub(super) fn settled(sent: u64, received: u64) -> Alignment {
    Alignment {
        aligned: true,
        routed_in_flight: 0,
        sent,
        received,
    }
}

/// The answer of a healthy member.
pub(super) fn ok(command: Command) -> Reply {
    match command {
        Command::Start { recover_to, .. } => Reply::Started {
            next_checkpoint: recover_to + 1,
        },
        Command::Begin { .. }
        | Command::Commit { .. }
        | Command::StopSources
        | Command::Flush { .. }
        | Command::Move { .. }
        | Command::Leave
        | Command::Ready { .. } => Reply::Ok,
        Command::Align => Reply::Aligned(settled(0, 0)),
        Command::Prepare => Reply::Prepared(true),
        Command::Drain => Reply::Drained {
            in_flight: 0,
            sent: 0,
            received: 0,
        },
        Command::Shutdown => Reply::Stopped,
    }
}

pub(super) fn config(members: usize, checkpoint_interval: Option<Duration>) -> Config {
    Config {
        deployment: DEPLOYMENT.into(),
        members,
        retired: Vec::new(),
        checkpoint_interval,
        patience: Patience::default(),
    }
}

pub(super) const INTERVAL: Duration = Duration::from_secs(1);

/// A coordinator and its members, with a clock the test advances.
pub(super) struct Cluster {
    pub(super) c: Coordinator,
    pub(super) now: Time,
    /// The command each member was last sent and has not answered.
    pub(super) asked: Vec<Option<Command>>,
    /// Records asked for and not answered.
    pub(super) records: usize,
    /// Stops asked and not answered.
    pub(super) stops: usize,
}

impl Cluster {
    /// A first deploy of `members` nodes.
    pub(super) fn deploy(members: usize, interval: Option<Duration>) -> (Self, Vec<Action>) {
        Self::with(config(members, interval), Record::default(), true)
    }

    /// A coordinator that restarted with `record` on disk.
    pub(super) fn restarted(members: usize, record: Record) -> (Self, Vec<Action>) {
        Self::with(config(members, Some(INTERVAL)), record, false)
    }

    pub(super) fn with(config: Config, record: Record, first_deploy: bool) -> (Self, Vec<Action>) {
        let members = config.members;
        let (c, actions) = Coordinator::new(config, record, first_deploy, Time::ZERO);
        let mut cluster = Cluster {
            c,
            now: Time::ZERO,
            asked: vec![None; members],
            records: 0,
            stops: 0,
        };
        cluster.note(&actions);
        cluster.check(false);
        (cluster, actions)
    }

    /// A first deploy of `members` nodes, running generation 1.
    pub(super) fn running(members: usize, interval: Option<Duration>) -> Self {
        let (mut cluster, _) = Self::deploy(members, interval);
        cluster.join_all();
        let actions = cluster.drive();
        assert!(actions.contains(&Action::Running {
            generation: 1,
            checkpoint: 0,
            first: true
        }));
        assert!(cluster.c.running());
        cluster
    }

    pub(super) fn members(&self) -> usize {
        self.asked.len()
    }

    pub(super) fn handle(&mut self, event: Event) -> Vec<Action> {
        let timeout = event == Event::Timeout;
        match &event {
            Event::Reply { member, .. } | Event::Lost { member, .. } => self.asked[*member] = None,
            Event::Recorded(_) => self.records -= 1,
            Event::Stop => self.stops += 1,
            _ => {}
        }
        let actions = self.c.handle(self.now, event);
        self.note(&actions);
        self.check(timeout);
        actions
    }

    pub(super) fn note(&mut self, actions: &[Action]) {
        for action in actions {
            match action {
                // A member leaving is not awaited.
                Action::Send {
                    member,
                    command: Command::Leave,
                } => {
                    if let Some(asked) = self.asked.get_mut(*member) {
                        *asked = None;
                    }
                }
                Action::Send { member, command } => {
                    if *member >= self.asked.len() {
                        self.asked.resize(member + 1, None);
                    }
                    self.asked[*member] = Some(*command)
                }
                Action::Disconnect { member } => self.asked[*member] = None,
                Action::Record(_) => self.records += 1,
                Action::AnswerStops(_) => self.stops = 0,
                Action::Done => {
                    assert_eq!(self.stops, 0, "done with a stop unanswered: {actions:?}");
                    self.asked.fill(None);
                }
                _ => {}
            }
        }
    }

    pub(super) fn check(&self, after_timeout: bool) {
        let timeout = self.c.poll_timeout();
        if self.c.done() {
            assert_eq!(timeout, None, "done, yet a timeout is asked for");
            return;
        }
        if self.asked.iter().any(Option::is_some) || self.c.state() == "recovering" {
            assert!(timeout.is_some(), "{:?} waits without a deadline", self.c);
        }
        if after_timeout && let Some(at) = timeout {
            assert!(
                at > self.now,
                "{:?} asks for a timeout at once again",
                self.c
            );
        }
    }

    pub(super) fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Advances the clock to the next timeout and handles it.
    pub(super) fn fire(&mut self) -> Vec<Action> {
        let at = self.c.poll_timeout().expect("a timeout to wait for");
        self.now = self.now.max(at);
        self.handle(Event::Timeout)
    }

    pub(super) fn join(&mut self, member: u16) -> Vec<Action> {
        self.rejoin(member, None)
    }

    pub(super) fn rejoin(&mut self, member: u16, rejoin: Option<Rejoin>) -> Vec<Action> {
        self.handle(Event::Join {
            member,
            deployment: DEPLOYMENT.into(),
            rejoin,
        })
    }

    pub(super) fn join_all(&mut self) -> Vec<Action> {
        (0..self.members() as u16)
            .flat_map(|m| self.join(m))
            .collect()
    }

    pub(super) fn lose(&mut self, member: usize) -> Vec<Action> {
        self.handle(Event::Lost {
            member,
            why: "connection reset".into(),
        })
    }

    /// Answers every member's last command with `reply(member, command)`, in member order.
    pub(super) fn answer(&mut self, mut reply: impl FnMut(usize, Command) -> Reply) -> Vec<Action> {
        let asked: Vec<(usize, Command)> = (0..self.members())
            .filter_map(|m| self.asked[m].map(|c| (m, c)))
            .collect();
        assert!(!asked.is_empty(), "no member was asked anything");
        let mut actions = Vec::new();
        for (member, command) in asked {
            let reply = reply(member, command);
            actions.extend(self.handle(Event::Reply { member, reply }));
        }
        actions
    }

    pub(super) fn answer_ok(&mut self) -> Vec<Action> {
        self.answer(|_, command| ok(command))
    }

    /// Answers like healthy members and a healthy disk until nothing is awaited.
    pub(super) fn drive(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        while let Some(more) = self.drive_once() {
            actions.extend(more);
        }
        actions
    }

    /// One step of [`Cluster::drive`]; None if nothing is awaited.
    pub(super) fn drive_once(&mut self) -> Option<Vec<Action>> {
        if self.records > 0 {
            Some(self.handle(Event::Recorded(Ok(()))))
        } else if self.asked.iter().any(Option::is_some) {
            Some(self.answer_ok())
        } else if matches!(self.c.state(), "stopping: drain" | "changing: drain") {
            Some(self.fire())
        } else {
            None
        }
    }

    /// From running, the next checkpoint, taken by healthy members.
    pub(super) fn checkpoint(&mut self) -> Vec<Action> {
        assert!(self.c.running());
        let mut actions = self.fire();
        assert!(matches!(
            sends(&actions)[..],
            [(0, Command::Begin { .. }), ..]
        ));
        actions.extend(self.drive());
        actions
    }

    /// A running cluster loses `member` and comes back, in a new generation.
    pub(super) fn lose_and_recover(&mut self, member: usize) -> Vec<Action> {
        let mut actions = self.lose(member);
        actions.extend(self.join_all());
        actions.extend(self.recover());
        actions
    }

    /// Every member has joined: waits out any back-off, then starts the generation (and
    /// carries out a stop that waited, if any).
    pub(super) fn recover(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        while self.c.state() == "recovering" {
            actions.extend(self.fire());
        }
        actions.extend(self.drive());
        assert!(self.c.running() || self.c.done(), "{:?}", self.c);
        actions
    }
}

/// The commands sent, to whom, in order.
pub(super) fn sends(actions: &[Action]) -> Vec<(usize, Command)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { member, command } => Some((*member, *command)),
            _ => None,
        })
        .collect()
}

/// `command` sent to every one of `members`, in member order.
pub(super) fn to_all(members: usize, command: Command) -> Vec<(usize, Command)> {
    (0..members).map(|m| (m, command)).collect()
}

/// The answers to changes.
pub(super) fn swapped(actions: &[Action]) -> Vec<&Result<u64, String>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Swapped(answer) => Some(answer),
            _ => None,
        })
        .collect()
}

pub(super) fn disconnects(actions: &[Action]) -> Vec<usize> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Disconnect { member } => Some(*member),
            _ => None,
        })
        .collect()
}

pub(super) fn records(actions: &[Action]) -> Vec<Record> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Record(r) => Some(*r),
            _ => None,
        })
        .collect()
}

pub(super) fn warnings(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Note { warn: true, text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

pub(super) fn deploy_failure(actions: &[Action]) -> Option<&str> {
    actions.iter().find_map(|a| match a {
        Action::DeployFailed(why) => Some(why.as_str()),
        _ => None,
    })
}

pub(super) fn answered_stops(actions: &[Action]) -> Vec<&Result<(), String>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::AnswerStops(answer) => Some(answer),
            _ => None,
        })
        .collect()
}

pub(super) fn start(generation: u64, recover_to: u64) -> Command {
    Command::Start {
        generation,
        recover_to,
        version: 0,
    }
}

// Recovering.

#[test]
fn a_first_deploy_waits_for_every_member_to_join_before_recording_its_generation() {
    let (mut cluster, actions) = Cluster::deploy(3, Some(INTERVAL));
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(cluster.c.state(), "recovering");
    assert_eq!(cluster.join(0), [Action::Accept { member: 0 }]);
    assert_eq!(cluster.join(2), [Action::Accept { member: 2 }]);
    assert_eq!(cluster.c.recovery().unwrap().missing, [1]);
    let actions = cluster.join(1);
    assert_eq!(
        actions,
        [
            Action::Accept { member: 1 },
            Action::Record(Record {
                generation: 1,
                committed: 0,
                version: 0,
            })
        ]
    );
    assert_eq!(cluster.c.state(), "recording generation");
    let actions = cluster.handle(Event::Recorded(Ok(())));
    assert_eq!(sends(&actions), to_all(3, start(1, 0)));
    assert_eq!(cluster.c.state(), "starting");
}

#[test]
fn recovery_says_whom_it_waits_for_every_so_often() {
    let (mut cluster, _) = Cluster::deploy(2, Some(INTERVAL));
    cluster.join(1);
    let actions = cluster.fire();
    assert_eq!(cluster.now, Patience::default().waiting_note);
    assert_eq!(
        actions,
        [Action::Note {
            warn: false,
            text: "waiting for node 0 to join".into()
        }]
    );
}

#[test]
fn a_strangers_join_is_refused_and_changes_nothing() {
    let (mut cluster, _) = Cluster::deploy(2, Some(INTERVAL));
    cluster.join(0);
    let other = cluster.handle(Event::Join {
        member: 1,
        deployment: "d0".into(),
        rejoin: None,
    });
    assert_eq!(
        other,
        [Action::Refuse {
            member: 1,
            why: "this cluster runs deployment d1, not d0 (node 1)".into()
        }]
    );
    let beyond = cluster.join(2);
    assert!(matches!(beyond[..], [Action::Refuse { member: 2, .. }]));
    assert_eq!(cluster.c.recovery().unwrap().missing, [1]);
    assert_eq!(cluster.c.state(), "recovering");

    // Nor does one make a running cluster roll back.
    let mut cluster = Cluster::running(2, Some(INTERVAL));
    let other = cluster.handle(Event::Join {
        member: 0,
        deployment: "d0".into(),
        rejoin: None,
    });
    assert!(matches!(other[..], [Action::Refuse { member: 0, .. }]));
    assert!(cluster.c.running());
}

#[test]
fn a_first_deploy_gives_up_after_the_first_join_patience_and_tells_joined_members_to_shut_down() {
    let (mut cluster, _) = Cluster::deploy(3, Some(INTERVAL));
    cluster.join(0);
    cluster.join(2);
    let mut actions = Vec::new();
    while deploy_failure(&actions).is_none() {
        actions = cluster.fire();
    }
    assert_eq!(cluster.now, Patience::default().first_join);
    assert_eq!(
        deploy_failure(&actions),
        Some("node 1 did not join within 60 s")
    );
    assert_eq!(
        sends(&actions),
        [(0, Command::Shutdown), (2, Command::Shutdown)]
    );
    assert_eq!(cluster.c.state(), "abandoning");
    assert!(!cluster.answer_ok().is_empty());
    assert!(cluster.c.done());
}

#[test]
fn members_that_do_not_answer_a_failed_deploy_are_given_up_on() {
    let (mut cluster, _) = Cluster::deploy(2, Some(INTERVAL));
    cluster.join(0);
    while deploy_failure(&cluster.fire()).is_none() {}
    let abandoned = cluster.now;
    assert_eq!(cluster.fire(), [Action::Done]);
    assert_eq!(cluster.now, abandoned + Patience::default().answer);
}

#[test]
fn the_next_generation_is_recorded_before_it_starts_from_the_committed_checkpoint() {
    let record = Record {
        generation: 4,
        committed: 7,
        version: 0,
    };
    let (mut cluster, actions) = Cluster::restarted(2, record);
    assert!(matches!(actions[..], [Action::Note { warn: false, .. }]));
    let actions = cluster.join_all();
    assert_eq!(
        records(&actions),
        [Record {
            generation: 5,
            committed: 7,
            version: 0,
        }]
    );
    assert!(sends(&actions).is_empty(), "started before recorded");
    assert_eq!(cluster.c.record(), record);
    let actions = cluster.handle(Event::Recorded(Ok(())));
    assert_eq!(sends(&actions), to_all(2, start(5, 7)));
    assert_eq!(cluster.c.record().generation, 5);
    let actions = cluster.answer_ok();
    assert_eq!(
        actions,
        [Action::Running {
            generation: 5,
            checkpoint: 7,
            first: false
        }]
    );
    assert_eq!(cluster.c.recovery(), None);
}

/// The time from the last member's join to the generation's record.
fn back_off(cluster: &mut Cluster, member: usize) -> Duration {
    cluster.lose(member);
    cluster.join_all();
    let joined = cluster.now;
    while cluster.records == 0 {
        cluster.fire();
    }
    let waited = cluster.now - joined;
    cluster.drive();
    assert!(cluster.c.running());
    waited
}

#[test]
fn rollbacks_in_a_row_back_off_and_a_generation_that_ran_long_starts_again_at_once() {
    let mut cluster = Cluster::running(3, None);
    let ms = Duration::from_millis;
    let waits: Vec<Duration> = (0..8).map(|i| back_off(&mut cluster, i % 3)).collect();
    assert_eq!(
        waits,
        [
            ms(0),
            ms(200),
            ms(400),
            ms(800),
            ms(1600),
            ms(3200),
            ms(5000),
            ms(5000)
        ]
    );
    cluster.advance(Duration::from_secs(31));
    assert_eq!(back_off(&mut cluster, 1), ms(0));
    assert_eq!(back_off(&mut cluster, 1), ms(200));
}

#[test]
fn a_committed_checkpoint_resets_the_back_off() {
    let mut cluster = Cluster::running(2, Some(INTERVAL));
    back_off(&mut cluster, 1);
    assert_eq!(back_off(&mut cluster, 1), Duration::from_millis(200));
    cluster.checkpoint();
    assert_eq!(back_off(&mut cluster, 1), Duration::ZERO);
}

#[test]
fn a_generation_record_that_cannot_be_written_is_tried_again() {
    let record = Record {
        generation: 2,
        committed: 3,
        version: 0,
    };
    let (mut cluster, _) = Cluster::restarted(2, record);
    cluster.join_all();
    let actions = cluster.handle(Event::Recorded(Err("disk full".into())));
    assert_eq!(
        warnings(&actions),
        ["cannot start the application: disk full; trying again"]
    );
    assert_eq!(disconnects(&actions), [0, 1]);
    assert!(sends(&actions).is_empty());
    assert_eq!(cluster.c.record(), record);
    let actions = cluster.join_all();
    assert!(records(&actions).is_empty(), "no back-off");
    let actions = cluster.fire();
    assert_eq!(
        records(&actions),
        [Record {
            generation: 3,
            committed: 3,
            version: 0,
        }]
    );
    let actions = cluster.handle(Event::Recorded(Ok(())));
    assert_eq!(sends(&actions), to_all(2, start(3, 3)));
}

#[test]
fn a_first_deploy_whose_generation_cannot_be_recorded_fails() {
    let (mut cluster, _) = Cluster::deploy(2, Some(INTERVAL));
    cluster.join_all();
    let actions = cluster.handle(Event::Recorded(Err("disk full".into())));
    assert_eq!(deploy_failure(&actions), Some("disk full"));
    assert_eq!(sends(&actions), to_all(2, Command::Shutdown));
    cluster.answer_ok();
    assert!(cluster.c.done());
}

#[test]
fn a_member_lost_while_recovering_is_waited_for_again() {
    let (mut cluster, _) = Cluster::restarted(2, Record::default());
    cluster.join(0);
    assert!(cluster.lose(0).is_empty());
    assert_eq!(cluster.c.recovery().unwrap().missing, [0, 1]);
    assert!(records(&cluster.join(1)).is_empty());
    assert_eq!(records(&cluster.join(0)).len(), 1);
}

// Starting.

#[test]
fn start_goes_to_every_member_and_the_deploy_is_answered_once() {
    let (mut cluster, _) = Cluster::deploy(3, Some(INTERVAL));
    cluster.join_all();
    let actions = cluster.handle(Event::Recorded(Ok(())));
    assert_eq!(sends(&actions), to_all(3, start(1, 0)));
    let next = [3, 9, 5];
    let actions = cluster.answer(|m, _| Reply::Started {
        next_checkpoint: next[m],
    });
    assert_eq!(
        actions,
        [Action::Running {
            generation: 1,
            checkpoint: 0,
            first: true
        }]
    );
    // The next checkpoint is above every member's answer.
    let actions = cluster.fire();
    assert_eq!(sends(&actions), to_all(3, Command::Begin { checkpoint: 9 }));
    cluster.drive();
    let actions = cluster.lose_and_recover(2);
    let running: Vec<&Action> = actions
        .iter()
        .filter(|a| matches!(a, Action::Running { .. }))
        .collect();
    assert_eq!(
        running,
        [&Action::Running {
            generation: 2,
            checkpoint: 9,
            first: false
        }]
    );
}

#[test]
fn a_refused_start_fails_a_first_deploy() {
    let (mut cluster, _) = Cluster::deploy(3, Some(INTERVAL));
    cluster.join_all();
    cluster.handle(Event::Recorded(Ok(())));
    let actions = cluster.answer(|m, c| {
        if m == 1 {
            Reply::Refused("no component at app.wasm".into())
        } else {
            ok(c)
        }
    });
    assert_eq!(deploy_failure(&actions), Some("no component at app.wasm"));
    assert_eq!(sends(&actions), to_all(3, Command::Shutdown));
    assert!(!actions.iter().any(|a| matches!(a, Action::Running { .. })));
    cluster.answer_ok();
    assert!(cluster.c.done());
}

#[test]
fn a_member_lost_while_a_first_deploy_starts_is_not_waited_for() {
    let (mut cluster, _) = Cluster::deploy(3, Some(INTERVAL));
    cluster.join_all();
    cluster.handle(Event::Recorded(Ok(())));
    let actions = cluster.lose(1);
    assert_eq!(
        deploy_failure(&actions),
        Some("node 1 lost while starting: connection reset")
    );
    assert_eq!(
        sends(&actions),
        [(0, Command::Shutdown), (2, Command::Shutdown)]
    );
    let actions = cluster.answer_ok();
    assert_eq!(actions, [Action::Done]);
}

#[test]
fn late_answers_to_a_failed_deploy_change_nothing() {
    let (mut cluster, _) = Cluster::deploy(2, Some(INTERVAL));
    cluster.join_all();
    cluster.handle(Event::Recorded(Ok(())));
    cluster.lose(1);
    // Member 0 answers Start, which was sent before the Shutdown, then Shutdown.
    let actions = cluster.handle(Event::Reply {
        member: 0,
        reply: ok(start(1, 0)),
    });
    assert_eq!(actions, [Action::Done]);
    let actions = cluster.handle(Event::Reply {
        member: 0,
        reply: Reply::Stopped,
    });
    assert!(actions.is_empty(), "{actions:?}");
    assert!(cluster.c.done());
    // Also while it still waits for other members.
    let (mut cluster, _) = Cluster::deploy(3, Some(INTERVAL));
    cluster.join_all();
    cluster.handle(Event::Recorded(Ok(())));
    cluster.lose(1);
    cluster.handle(Event::Reply {
        member: 0,
        reply: ok(start(1, 0)),
    });
    let actions = cluster.handle(Event::Reply {
        member: 0,
        reply: Reply::Stopped,
    });
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(cluster.c.state(), "abandoning");
}

#[test]
fn a_refused_start_later_rolls_back_and_tries_again() {
    let (mut cluster, _) = Cluster::restarted(3, Record::default());
    cluster.join_all();
    cluster.handle(Event::Recorded(Ok(())));
    let actions = cluster.answer(|m, c| {
        if m == 2 {
            Reply::Refused("disk full".into())
        } else {
            ok(c)
        }
    });
    assert_eq!(
        warnings(&actions),
        ["cannot start the application: node 2: disk full; trying again"]
    );
    assert_eq!(disconnects(&actions), [0, 1, 2]);
    assert_eq!(deploy_failure(&actions), None);
    let recovery = cluster.c.recovery().unwrap();
    assert_eq!(recovery.reason, "node 2 could not start: disk full");
    assert_eq!(recovery.missing, [0, 1, 2]);
    cluster.join_all();
    cluster.recover();
    assert_eq!(cluster.c.record().generation, 2);
}

// Running.

#[test]
fn no_checkpoint_begins_before_the_interval_and_every_member_is_asked_at_it() {
    let mut cluster = Cluster::running(3, Some(INTERVAL));
    let started = cluster.now;
    assert_eq!(cluster.c.poll_timeout(), Some(started + INTERVAL));
    cluster.advance(INTERVAL / 2);
    assert!(cluster.handle(Event::Timeout).is_empty());
    assert_eq!(cluster.c.state(), "running");
    let actions = cluster.fire();
    assert_eq!(cluster.now, started + INTERVAL);
    assert_eq!(sends(&actions), to_all(3, Command::Begin { checkpoint: 1 }));
    assert_eq!(cluster.c.state(), "checkpoint: begin");
}

#[test]
fn without_an_interval_no_checkpoint_is_taken() {
    let mut cluster = Cluster::running(2, None);
    assert_eq!(cluster.c.poll_timeout(), None);
    cluster.advance(Duration::from_secs(3600));
    assert!(cluster.handle(Event::Timeout).is_empty());
    assert_eq!(cluster.c.state(), "running");
}

// Checkpoint.

#[test]
fn a_checkpoint_goes_begin_align_prepare_record_commit() {
    let mut cluster = Cluster::running(2, Some(INTERVAL));
    let actions = cluster.fire();
    assert_eq!(sends(&actions), to_all(2, Command::Begin { checkpoint: 1 }));
    let actions = cluster.answer_ok();
    assert_eq!(sends(&actions), to_all(2, Command::Align));
    assert_eq!(cluster.c.state(), "checkpoint: align");
    let actions = cluster.answer_ok();
    assert_eq!(sends(&actions), to_all(2, Command::Align));
    let actions = cluster.answer_ok();
    assert_eq!(sends(&actions), to_all(2, Command::Prepare));
    assert_eq!(cluster.c.state(), "checkpoint: prepare");
    let actions = cluster.answer_ok();
    assert_eq!(
        actions,
        [Action::Record(Record {
            generation: 1,
            committed: 1,
            version: 0,
        })]
    );
    assert_eq!(cluster.c.state(), "checkpoint: record");
    assert_eq!(cluster.c.record().committed, 0, "committed before durable");
    let actions = cluster.handle(Event::Recorded(Ok(())));
    assert_eq!(cluster.c.record().committed, 1);
    assert_eq!(
        sends(&actions),
        to_all(2, Command::Commit { checkpoint: 1 })
    );
    assert_eq!(cluster.c.state(), "checkpoint: commit");
    assert!(cluster.answer_ok().is_empty());
    assert_eq!(cluster.c.state(), "running");
    assert_eq!(cluster.c.poll_timeout(), Some(cluster.now + INTERVAL));
    let actions = cluster.fire();
    assert_eq!(sends(&actions), to_all(2, Command::Begin { checkpoint: 2 }));
}

#[test]
fn alignment_takes_two_equal_settled_rounds() {
    let mut cluster = Cluster::running(2, Some(INTERVAL));
    cluster.fire();
    cluster.answer_ok();
    let busy = Alignment {
        aligned: false,
        routed_in_flight: 0,
        sent: 0,
        received: 0,
    };
    let queued = Alignment {
        routed_in_flight: 2,
        ..settled(0, 0)
    };
    let rounds = [
        [busy, settled(0, 0)],
        [queued, settled(0, 0)],
        [settled(0, 0), settled(0, 0)],
        // A batch moved between the rounds.
        [settled(1, 0), settled(0, 1)],
        // One on the wire.
        [settled(2, 0), settled(0, 1)],
        [settled(2, 0), settled(0, 2)],
    ];
    for round in rounds {
        let actions = cluster.answer(|m, _| Reply::Aligned(round[m]));
        assert_eq!(sends(&actions), to_all(2, Command::Align), "{round:?}");
    }
    let actions = cluster.answer(|m, _| Reply::Aligned([settled(2, 0), settled(0, 2)][m]));
    assert_eq!(sends(&actions), to_all(2, Command::Prepare));
}

#[test]
fn alignment_that_takes_long_says_what_holds_it_up() {
    let mut cluster = Cluster::running(2, Some(INTERVAL));
    cluster.fire();
    cluster.answer_ok();
    let queued = Alignment {
        routed_in_flight: 3,
        ..settled(0, 0)
    };
    assert!(
        warnings(&cluster.answer(|m, _| Reply::Aligned([settled(0, 0), queued][m]))).is_empty()
    );
    cluster.advance(Patience::default().align);
    let actions = cluster.answer(|m, _| Reply::Aligned([settled(0, 0), queued][m]));
    assert_eq!(
        warnings(&actions),
        ["checkpoint 1 still aligning after 10 s: waiting for node 1 (3 routed batches queued)"]
    );
}

/// What goes wrong in a checkpoint.
#[derive(Debug, Clone, Copy)]
enum Fault {
    BeginRefused,
    NotPrepared,
    RecordFails,
    CommitRefused,
}

/// Runs checkpoint 2 of a cluster of three that committed 1, with `fault` at member 1.
fn faulty_checkpoint(fault: Fault) -> (Cluster, Vec<Action>) {
    let mut cluster = Cluster::running(3, Some(INTERVAL));
    cluster.checkpoint();
    assert_eq!(cluster.c.record().committed, 1);
    cluster.fire();
    let mut actions = Vec::new();
    while actions.is_empty() || cluster.c.running() {
        actions = if cluster.records > 0 {
            let result = match fault {
                Fault::RecordFails => Err("disk full".into()),
                _ => Ok(()),
            };
            cluster.handle(Event::Recorded(result))
        } else {
            cluster.answer(|m, command| match (m, command, fault) {
                (1, Command::Begin { .. }, Fault::BeginRefused) => {
                    Reply::Refused("log failed".into())
                }
                (1, Command::Prepare, Fault::NotPrepared) => Reply::Prepared(false),
                (1, Command::Commit { .. }, Fault::CommitRefused) => {
                    Reply::Refused("sink failed".into())
                }
                _ => ok(command),
            })
        };
    }
    (cluster, actions)
}

#[test]
fn a_checkpoint_that_fails_before_its_record_rolls_back_to_the_last_committed() {
    let cases = [
        (
            Fault::BeginRefused,
            "node 1 lost (it cannot begin checkpoint 2: log failed): rolling the cluster back \
             to checkpoint 1",
        ),
        (
            Fault::NotPrepared,
            "node 1 lost (it could not log checkpoint 2): rolling the cluster back to \
             checkpoint 1",
        ),
        (
            Fault::RecordFails,
            "node 0 lost (cannot record checkpoint 2: disk full): rolling the cluster back to \
             checkpoint 1",
        ),
    ];
    for (fault, warning) in cases {
        let (mut cluster, actions) = faulty_checkpoint(fault);
        assert_eq!(warnings(&actions), [warning], "{fault:?}");
        assert_eq!(disconnects(&actions), [0, 1, 2], "{fault:?}");
        assert_eq!(cluster.c.record().committed, 1, "{fault:?}");
        assert_eq!(cluster.c.state(), "recovering");
        cluster.join_all();
        let actions = cluster.recover();
        assert_eq!(sends(&actions)[0], (0, start(2, 1)), "{fault:?}");
    }
}

#[test]
fn a_refused_commit_rolls_back_to_the_checkpoint_just_recorded() {
    let (mut cluster, actions) = faulty_checkpoint(Fault::CommitRefused);
    assert_eq!(
        warnings(&actions),
        [
            "node 1 lost (it cannot commit checkpoint 2: sink failed): rolling the cluster back \
             to checkpoint 2"
        ]
    );
    assert_eq!(disconnects(&actions), [0, 1, 2]);
    assert_eq!(cluster.c.record().committed, 2);
    cluster.join_all();
    let actions = cluster.recover();
    assert_eq!(sends(&actions)[0], (0, start(2, 2)));
}

/// A cluster of two that lost member 1 while checkpoint 1's record was being written.
fn lost_while_recording(back_off: bool) -> Cluster {
    let mut cluster = Cluster::running(2, Some(INTERVAL));
    if back_off {
        cluster.lose_and_recover(1);
    }
    cluster.fire();
    while cluster.records == 0 {
        cluster.answer_ok();
    }
    assert_eq!(cluster.c.state(), "checkpoint: record");
    let actions = cluster.lose(1);
    assert_eq!(disconnects(&actions), [0, 1]);
    cluster
}

#[test]
fn the_answer_to_a_checkpoints_record_is_not_taken_for_the_next_generations() {
    let mut cluster = lost_while_recording(false);
    let actions = cluster.join_all();
    let generation = cluster.c.record().generation + 1;
    // The generation's record waits for the checkpoint's answer: it may raise what counts.
    assert!(records(&actions).is_empty(), "{actions:?}");
    // The checkpoint's record is durable: every member prepared it, and it counts.
    let actions = cluster.handle(Event::Recorded(Ok(())));
    assert!(sends(&actions).is_empty(), "{actions:?}");
    assert_eq!(cluster.c.record().committed, 1);
    assert_eq!(
        records(&actions),
        [Record {
            generation,
            committed: 1,
            version: 0,
        }]
    );
    let actions = cluster.handle(Event::Recorded(Ok(())));
    assert_eq!(sends(&actions), to_all(2, start(generation, 1)));
}

#[test]
fn the_answer_to_a_checkpoints_record_does_not_cut_the_back_off_short() {
    let mut cluster = lost_while_recording(true);
    let generation = cluster.c.record().generation + 1;
    cluster.join_all();
    assert_eq!(cluster.c.state(), "recovering", "backs off");
    let actions = cluster.handle(Event::Recorded(Ok(())));
    assert!(actions.is_empty(), "{actions:?}");
    let actions = cluster.fire();
    assert_eq!(
        records(&actions),
        [Record {
            generation,
            committed: 1,
            version: 0,
        }]
    );
    let actions = cluster.handle(Event::Recorded(Ok(())));
    assert_eq!(sends(&actions), to_all(2, start(generation, 1)));
}

#[test]
fn a_member_that_rejoins_mid_checkpoint_rolls_back_naming_the_node_lost() {
    let mut cluster = Cluster::running(3, Some(INTERVAL));
    cluster.fire();
    cluster.answer_ok();
    let link = Rejoin {
        peer: Some(2),
        why: "the connection to 10.0.0.3:7100 closed".into(),
    };
    let actions = cluster.rejoin(0, Some(link));
    assert_eq!(actions[0], Action::Accept { member: 0 });
    assert_eq!(
        warnings(&actions),
        [
            "node 2 lost (node 0's data stream to it broke: the connection to 10.0.0.3:7100 \
             closed): rolling the cluster back to checkpoint 0"
        ]
    );
    assert_eq!(disconnects(&actions), [0, 1, 2]);
    assert_eq!(
        cluster.c.recovery().unwrap().reason,
        "node 2 lost: node 0's data stream to it broke: the connection to 10.0.0.3:7100 closed"
    );
}

#[test]
fn a_member_that_restarts_while_running_rolls_the_cluster_back() {
    let mut cluster = Cluster::running(2, None);
    let actions = cluster.join(1);
    assert_eq!(
        warnings(&actions),
        [
            "node 1 lost (it restarted and joined again): rolling the cluster back to \
             checkpoint 0"
        ]
    );
    assert_eq!(disconnects(&actions), [0, 1]);
    cluster.join_all();
    cluster.recover();
}

#[test]
fn a_reply_to_no_command_rolls_back() {
    let mut cluster = Cluster::running(2, Some(INTERVAL));
    let actions = cluster.handle(Event::Reply {
        member: 1,
        reply: Reply::Ok,
    });
    assert_eq!(
        warnings(&actions),
        ["node 1 lost (it answered Ok to no command): rolling the cluster back to checkpoint 0"]
    );
    assert_eq!(disconnects(&actions), [0, 1]);

    // A second answer to one command is an answer to no command.
    cluster.join_all();
    cluster.recover();
    cluster.fire();
    cluster.handle(Event::Reply {
        member: 0,
        reply: Reply::Ok,
    });
    let actions = cluster.handle(Event::Reply {
        member: 0,
        reply: Reply::Ok,
    });
    assert_eq!(disconnects(&actions), [0, 1]);
    assert_eq!(cluster.c.state(), "recovering");
}

#[test]
fn a_wrong_answer_to_align_rolls_back() {
    let mut cluster = Cluster::running(2, Some(INTERVAL));
    cluster.fire();
    cluster.answer_ok();
    let actions = cluster.answer(|_, _| Reply::Ok);
    assert_eq!(
        warnings(&actions),
        ["node 0 lost (it answered Align with Ok): rolling the cluster back to checkpoint 0"]
    );
}

// Answer patience.

#[test]
fn a_member_that_does_not_answer_in_time_is_lost() {
    let mut cluster = Cluster::running(3, Some(INTERVAL));
    cluster.fire();
    let asked = cluster.now;
    for member in [0, 2] {
        cluster.handle(Event::Reply {
            member,
            reply: Reply::Ok,
        });
    }
    assert_eq!(
        cluster.c.poll_timeout(),
        Some(asked + Patience::default().answer)
    );
    let actions = cluster.fire();
    assert_eq!(
        warnings(&actions),
        ["node 1 lost (no answer in 120 s): rolling the cluster back to checkpoint 0"]
    );
    assert_eq!(disconnects(&actions), [0, 1, 2]);
}

#[test]
fn a_member_that_does_not_answer_start_is_lost() {
    let (mut cluster, _) = Cluster::restarted(2, Record::default());
    cluster.join_all();
    cluster.handle(Event::Recorded(Ok(())));
    cluster.handle(Event::Reply {
        member: 1,
        reply: ok(start(1, 0)),
    });
    let actions = cluster.fire();
    assert_eq!(
        warnings(&actions),
        [
            "node 0 lost while starting (no answer in 120 s): rolling the cluster back to \
             checkpoint 0"
        ]
    );
}

// Stopping.

#[test]
fn a_stop_drains_takes_a_last_checkpoint_and_shuts_down() {
    let mut cluster = Cluster::running(2, Some(INTERVAL));
    let actions = cluster.handle(Event::Stop);
    assert_eq!(sends(&actions), to_all(2, Command::StopSources));
    assert_eq!(cluster.c.state(), "stopping: sources");
    let actions = cluster.answer_ok();
    assert_eq!(sends(&actions), to_all(2, Command::Drain));
    assert_eq!(cluster.c.state(), "stopping: drain");
    let drain_poll = Patience::default().drain_poll;
    // Busy rounds: the next report is asked for after the drain poll.
    let rounds = [
        [(1, 0, 0), (0, 0, 0)],
        [(0, 4, 1), (0, 1, 3)],
        [(0, 4, 1), (0, 1, 4)],
    ];
    for round in rounds {
        let actions = cluster.answer(|m, _| {
            let (in_flight, sent, received) = round[m];
            Reply::Drained {
                in_flight,
                sent,
                received,
            }
        });
        assert!(actions.is_empty(), "{round:?}: {actions:?}");
        assert_eq!(cluster.c.poll_timeout(), Some(cluster.now + drain_poll));
        let actions = cluster.fire();
        assert_eq!(sends(&actions), to_all(2, Command::Drain));
    }
    let actions = cluster.answer(|m, _| {
        let (in_flight, sent, received) = [(0, 4, 1), (0, 1, 4)][m];
        Reply::Drained {
            in_flight,
            sent,
            received,
        }
    });
    assert_eq!(sends(&actions), to_all(2, Command::Begin { checkpoint: 1 }));
    let mut actions = Vec::new();
    while !sends(&actions).contains(&(0, Command::Shutdown)) {
        actions = if cluster.records > 0 {
            cluster.handle(Event::Recorded(Ok(())))
        } else {
            cluster.answer_ok()
        };
    }
    assert_eq!(cluster.c.record().committed, 1);
    assert_eq!(sends(&actions), to_all(2, Command::Shutdown));
    assert_eq!(cluster.c.state(), "stopping: shutdown");
    let actions = cluster.answer_ok();
    assert_eq!(actions, [Action::AnswerStops(Ok(())), Action::Done]);
    assert!(cluster.c.done());
    assert_eq!(cluster.c.poll_timeout(), None);
}

#[test]
fn a_stop_without_checkpoints_shuts_down_after_the_drain() {
    let mut cluster = Cluster::running(2, None);
    cluster.handle(Event::Stop);
    cluster.answer_ok();
    cluster.answer_ok();
    let actions = cluster.fire();
    assert_eq!(sends(&actions), to_all(2, Command::Drain));
    let actions = cluster.answer_ok();
    assert_eq!(sends(&actions), to_all(2, Command::Shutdown));
    assert_eq!(
        cluster.answer_ok(),
        [Action::AnswerStops(Ok(())), Action::Done]
    );
}

#[test]
fn stops_asked_during_a_checkpoint_or_a_stop_are_answered_together_after_it() {
    let mut cluster = Cluster::running(2, Some(INTERVAL));
    cluster.fire();
    assert!(cluster.handle(Event::Stop).is_empty());
    cluster.answer_ok();
    let mut actions = Vec::new();
    while !sends(&actions).contains(&(0, Command::StopSources)) {
        actions = if cluster.records > 0 {
            cluster.handle(Event::Recorded(Ok(())))
        } else {
            cluster.answer_ok()
        };
    }
    assert_eq!(cluster.c.record().committed, 1);
    assert!(cluster.handle(Event::Stop).is_empty());
    let actions = cluster.drive();
    assert_eq!(answered_stops(&actions), [&Ok(())]);
    assert_eq!(cluster.c.record().committed, 2);
    assert!(cluster.c.done());
}

#[test]
fn a_stop_asked_while_recovering_waits_and_is_carried_out_once_running() {
    let mut cluster = Cluster::running(3, Some(INTERVAL));
    cluster.lose(1);
    cluster.join(0);
    let actions = cluster.handle(Event::Stop);
    assert_eq!(
        actions,
        [Action::Note {
            warn: false,
            text: "stop asked while node 1, node 2 rejoin: stopping once the cluster has \
                   recovered"
                .into()
        }]
    );
    cluster.advance(Duration::from_secs(20));
    cluster.join(1);
    let mut actions = cluster.join(2);
    assert_eq!(records(&actions).len(), 1);
    actions.extend(cluster.handle(Event::Recorded(Ok(()))));
    actions.extend(cluster.answer_ok());
    assert_eq!(sends(&actions)[3..], to_all(3, Command::StopSources));
    let actions = cluster.drive();
    assert_eq!(answered_stops(&actions), [&Ok(())]);
    assert!(cluster.c.done());
}

#[test]
fn a_stop_asked_while_recovering_is_refused_after_the_stop_patience_naming_the_missing_nodes() {
    let mut cluster = Cluster::running(3, Some(INTERVAL));
    cluster.lose(1);
    cluster.join(1);
    cluster.advance(Duration::from_secs(5));
    cluster.handle(Event::Stop);
    let asked = cluster.now;
    let mut actions = Vec::new();
    while answered_stops(&actions).is_empty() {
        actions = cluster.fire();
    }
    assert_eq!(cluster.now, asked + Patience::default().stop);
    assert_eq!(
        answered_stops(&actions),
        [&Err(
            "the cluster is recovering and node 0, node 2 did not join within 30 s; start \
               the missing nodes (their data directories hold the deployment) and stop again"
                .into()
        )]
    );
    // The cluster goes on recovering, and runs once they are back; no stop is left.
    cluster.join(0);
    cluster.join(2);
    cluster.recover();
    assert_eq!(cluster.c.state(), "running");
}

#[test]
fn a_stop_that_waited_before_a_rollback_waits_its_patience_again_from_the_rollback() {
    let mut cluster = Cluster::running(2, None);
    cluster.lose(1);
    cluster.handle(Event::Stop);
    cluster.advance(Duration::from_secs(25));
    cluster.join_all();
    cluster.handle(Event::Recorded(Ok(())));
    let actions = cluster.answer_ok();
    assert_eq!(sends(&actions), to_all(2, Command::StopSources));
    cluster.advance(Duration::from_secs(1));
    cluster.lose(0);
    let lost = cluster.now;
    let mut actions = Vec::new();
    while answered_stops(&actions).is_empty() {
        actions = cluster.fire();
    }
    assert_eq!(cluster.now, lost + Patience::default().stop);
}

#[test]
fn a_stop_asked_while_a_first_deploy_fails_is_answered() {
    let (mut cluster, _) = Cluster::deploy(2, Some(INTERVAL));
    cluster.join(0);
    // Less than the stop patience before the deploy gives up.
    cluster.advance(Duration::from_secs(45));
    cluster.handle(Event::Stop);
    let mut actions = Vec::new();
    while deploy_failure(&actions).is_none() {
        actions = cluster.fire();
    }
    assert_eq!(
        answered_stops(&actions),
        [&Err(
            "the deploy failed: node 1 did not join within 60 s".into()
        )]
    );
    cluster.answer_ok();
    assert!(cluster.c.done());
}

/// Stops a running cluster of healthy members up to the step named `step`.
fn stop_until(cluster: &mut Cluster, step: &str) -> Vec<Action> {
    let mut actions = cluster.handle(Event::Stop);
    while cluster.c.state() != step {
        actions.extend(cluster.drive_once().expect("the stop to go on"));
    }
    actions
}

#[test]
fn a_stop_waits_for_every_sink_to_write_out_the_last_checkpoint_before_shutdown() {
    let mut cluster = Cluster::running(2, Some(INTERVAL));
    let actions = stop_until(&mut cluster, "stopping: flush");
    assert_eq!(
        sends(&actions).last(),
        Some(&(1, Command::Flush { checkpoint: 1 }))
    );
    assert!(answered_stops(&actions).is_empty());
    let actions = cluster.answer_ok();
    assert_eq!(sends(&actions), to_all(2, Command::Shutdown));
    let actions = cluster.answer_ok();
    assert_eq!(answered_stops(&actions), [&Ok(())]);
    assert!(cluster.c.done());
}

#[test]
fn without_checkpoints_a_stop_shuts_down_once_drained() {
    let mut cluster = Cluster::running(2, None);
    let actions = stop_until(&mut cluster, "stopping: shutdown");
    assert!(
        !sends(&actions)
            .iter()
            .any(|(_, c)| matches!(c, Command::Flush { .. }))
    );
}

/// The schedule of simulator seed 7035820: in the last step of a stop, a partition breaks
/// node 1's data stream to node 2, which stopped already. Node 1 leaves, blames node 2, and
/// joins again: it is told to stop again, and the stop succeeds.
#[test]
fn a_member_that_leaves_in_the_last_step_of_a_stop_is_told_to_stop_again() {
    let mut cluster = Cluster::running(3, Some(INTERVAL));
    stop_until(&mut cluster, "stopping: shutdown");
    for member in [0, 2] {
        cluster.handle(Event::Reply {
            member,
            reply: Reply::Stopped,
        });
    }
    let why = "node 1's data stream to it broke: partitioned".to_string();
    assert!(answered_stops(&cluster.handle(Event::Lost { member: 2, why })).is_empty());
    let actions = cluster.lose(1);
    assert_eq!(
        warnings(&actions),
        ["node 1 left while stopping (connection reset): waiting for it to join again"]
    );
    let rejoin = Rejoin {
        peer: Some(2),
        why: "the data stream broke (partitioned)".into(),
    };
    let actions = cluster.rejoin(1, Some(rejoin));
    assert_eq!(actions[0], Action::Accept { member: 1 });
    assert_eq!(sends(&actions), [(1, Command::Shutdown)]);
    assert!(answered_stops(&actions).is_empty());
    let actions = cluster.answer_ok();
    assert_eq!(actions, [Action::AnswerStops(Ok(())), Action::Done]);
}

#[test]
fn a_member_that_stopped_and_restarts_in_the_last_step_of_a_stop_is_told_to_stop_again() {
    let mut cluster = Cluster::running(2, Some(INTERVAL));
    stop_until(&mut cluster, "stopping: shutdown");
    cluster.handle(Event::Reply {
        member: 0,
        reply: Reply::Stopped,
    });
    cluster.lose(0);
    // Late in the round: it has the whole patience again for its answer.
    cluster.advance(Patience::default().answer - Duration::from_secs(1));
    assert_eq!(sends(&cluster.join(0)), [(0, Command::Shutdown)]);
    let asked = cluster.now;
    assert_eq!(
        cluster.c.poll_timeout(),
        Some(asked + Patience::default().answer)
    );
    let actions = cluster.answer_ok();
    assert_eq!(actions, [Action::AnswerStops(Ok(())), Action::Done]);
}

#[test]
fn a_member_that_does_not_come_back_in_the_last_step_of_a_stop_fails_it_at_the_deadline() {
    let mut cluster = Cluster::running(3, None);
    stop_until(&mut cluster, "stopping: shutdown");
    let asked = cluster.now;
    cluster.handle(Event::Reply {
        member: 0,
        reply: Reply::Stopped,
    });
    assert!(answered_stops(&cluster.lose(2)).is_empty());
    cluster.handle(Event::Reply {
        member: 1,
        reply: Reply::Stopped,
    });
    let actions = cluster.fire();
    assert_eq!(
        actions,
        [
            Action::AnswerStops(Err(
                "node 2 lost while stopping: no answer in 120 s; restart it (its data directory \
                 holds the deployment) and stop again"
                    .into()
            )),
            Action::Done
        ]
    );
    assert_eq!(cluster.now, asked + Patience::default().answer);
}

#[test]
fn a_loss_while_sinks_write_out_rolls_back_and_the_stop_follows() {
    let mut cluster = Cluster::running(2, Some(INTERVAL));
    stop_until(&mut cluster, "stopping: flush");
    cluster.handle(Event::Reply {
        member: 0,
        reply: Reply::Ok,
    });
    let actions = cluster.lose(1);
    assert_eq!(
        warnings(&actions),
        ["node 1 lost while stopping (connection reset): rolling the cluster back to checkpoint 1"]
    );
    assert!(answered_stops(&actions).is_empty());
    cluster.join_all();
    let actions = cluster.recover();
    assert!(sends(&actions).contains(&(1, Command::Flush { checkpoint: 2 })));
    assert_eq!(answered_stops(&actions), [&Ok(())]);
    assert!(cluster.c.done());
}

#[test]
fn sinks_that_cannot_write_out_fail_the_stop_and_the_cluster_runs_on() {
    let mut cluster = Cluster::running(2, Some(INTERVAL));
    stop_until(&mut cluster, "stopping: flush");
    let actions = cluster.answer(|member, command| match member {
        1 => Reply::Refused("its sinks did not write out (is the receiver there?)".into()),
        _ => ok(command),
    });
    assert_eq!(
        answered_stops(&actions),
        [&Err(
            "node 1 cannot stop: its sinks did not write out (is the receiver there?)".into()
        )]
    );
    cluster.join_all();
    cluster.recover();
    assert!(cluster.c.running());
}

#[test]
fn a_member_that_closes_its_stream_after_it_stopped_does_not_fail_the_stop() {
    let mut cluster = Cluster::running(2, None);
    cluster.handle(Event::Stop);
    cluster.answer_ok();
    cluster.answer_ok();
    cluster.fire();
    cluster.answer_ok();
    assert_eq!(cluster.c.state(), "stopping: shutdown");
    cluster.handle(Event::Reply {
        member: 1,
        reply: Reply::Stopped,
    });
    assert!(cluster.lose(1).is_empty());
    let actions = cluster.handle(Event::Reply {
        member: 0,
        reply: Reply::Stopped,
    });
    assert_eq!(actions, [Action::AnswerStops(Ok(())), Action::Done]);
}

#[test]
fn a_loss_before_shutdown_rolls_back_and_the_stop_follows() {
    let mut cluster = Cluster::running(2, Some(INTERVAL));
    cluster.handle(Event::Stop);
    cluster.answer_ok();
    let actions = cluster.lose(1);
    assert_eq!(
        warnings(&actions),
        ["node 1 lost while stopping (connection reset): rolling the cluster back to checkpoint 0"]
    );
    assert!(actions.contains(&Action::Note {
        warn: false,
        text: "the stop follows once it runs again".into()
    }));
    assert_eq!(disconnects(&actions), [0, 1]);
    assert!(answered_stops(&actions).is_empty());
    cluster.join_all();
    let actions = cluster.recover();
    assert_eq!(sends(&actions)[2..4], to_all(2, Command::StopSources));
    assert_eq!(answered_stops(&actions), [&Ok(())]);
    assert!(cluster.c.done());
}

#[test]
fn a_stop_whose_shutdown_is_answered_wrongly_is_answered_with_an_error() {
    let mut cluster = Cluster::running(2, None);
    cluster.handle(Event::Stop);
    cluster.answer_ok();
    cluster.answer_ok();
    cluster.fire();
    cluster.answer_ok();
    assert_eq!(cluster.c.state(), "stopping: shutdown");
    let actions = cluster.answer(|m, c| {
        if m == 1 {
            Reply::Refused("sink failed".into())
        } else {
            ok(c)
        }
    });
    assert_eq!(
        actions,
        [
            Action::AnswerStops(Err(
                "node 1 answered Shutdown with Refused(\"sink failed\")".into()
            )),
            Action::Done
        ]
    );
}

#[test]
fn a_stop_asked_while_every_member_has_joined_waits_for_the_start() {
    let (mut cluster, _) = Cluster::restarted(2, Record::default());
    cluster.join_all();
    cluster.handle(Event::Recorded(Ok(())));
    assert_eq!(cluster.c.state(), "starting");
    cluster.handle(Event::Stop);
    // Starting takes longer than the stop patience (a long replay), but nobody is missing.
    cluster.advance(Patience::default().stop * 2);
    let actions = cluster.handle(Event::Timeout);
    assert!(actions.is_empty(), "{actions:?}");
    let actions = cluster.answer_ok();
    assert_eq!(sends(&actions), to_all(2, Command::StopSources));
    let actions = cluster.drive();
    assert_eq!(answered_stops(&actions), [&Ok(())]);
}

#[test]
fn a_loss_in_the_stops_last_checkpoint_rolls_back_and_the_stop_follows() {
    let mut cluster = Cluster::running(2, Some(INTERVAL));
    cluster.handle(Event::Stop);
    while cluster.c.state() != "checkpoint: prepare" {
        cluster.drive_once();
    }
    let actions = cluster.lose(0);
    assert_eq!(disconnects(&actions), [0, 1]);
    assert!(answered_stops(&actions).is_empty());
    assert_eq!(cluster.c.record().committed, 0);
    cluster.join_all();
    let actions = cluster.recover();
    assert_eq!(answered_stops(&actions), [&Ok(())]);
    // The stop's last checkpoint is taken in the new generation (numbered from the
    // members' answers to Start: the harness's members logged nothing).
    assert_eq!(cluster.c.record().committed, 1);
}

#[test]
fn a_stop_of_a_coordinator_that_is_done_is_refused() {
    let mut cluster = Cluster::running(1, None);
    cluster.handle(Event::Stop);
    cluster.drive();
    assert!(cluster.c.done());
    assert_eq!(
        cluster.handle(Event::Stop),
        [Action::AnswerStops(Err(
            "the application is not running".into()
        ))]
    );
}

// A cluster of one is the same protocol.

#[test]
fn a_cluster_of_one_checkpoints_recovers_and_stops() {
    let mut cluster = Cluster::running(1, Some(INTERVAL));
    cluster.checkpoint();
    cluster.checkpoint();
    assert_eq!(cluster.c.record().committed, 2);
    let actions = cluster.lose_and_recover(0);
    assert!(sends(&actions).contains(&(0, start(2, 2))));
    cluster.handle(Event::Stop);
    let actions = cluster.drive();
    assert_eq!(answered_stops(&actions), [&Ok(())]);
    assert_eq!(cluster.c.record().committed, 3);
}

// Rejoined.

#[test]
fn a_node_that_left_because_its_link_to_another_broke_names_the_other_as_lost() {
    let link = Rejoin {
        peer: Some(1),
        why: "the connection to 10.0.0.3:7100 closed (timed out)".into(),
    };
    assert_eq!(
        rejoined(0, Some(&link), 3),
        Lost {
            member: 1,
            why: "node 0's data stream to it broke: the connection to 10.0.0.3:7100 closed \
                  (timed out)"
                .into()
        }
    );
    let control = Rejoin {
        peer: None,
        why: "the coordinator closed the control stream".into(),
    };
    assert_eq!(rejoined(2, Some(&control), 3).member, 2);
    assert!(
        rejoined(2, Some(&control), 3)
            .why
            .starts_with("it left and joined again")
    );
    assert_eq!(
        rejoined(2, None, 3),
        Lost {
            member: 2,
            why: "it restarted and joined again".into()
        }
    );
    // A peer index out of range, or the node itself, names the node that joined.
    let odd = Rejoin {
        peer: Some(7),
        why: "x".into(),
    };
    assert_eq!(rejoined(2, Some(&odd), 3).member, 2);
    let itself = Rejoin {
        peer: Some(2),
        why: "x".into(),
    };
    assert_eq!(rejoined(2, Some(&itself), 3).member, 2);
}

#[test]
fn a_stop_asked_during_a_checkpoint_that_a_loss_ends_is_said_to_follow() {
    let mut cluster = Cluster::running(2, Some(INTERVAL));
    cluster.fire();
    assert_eq!(cluster.c.state(), "checkpoint: begin");
    assert!(cluster.handle(Event::Stop).is_empty());
    let actions = cluster.lose(1);
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::Note { text, .. } if text == "the stop follows once it runs again"
        )),
        "{actions:?}"
    );
}
