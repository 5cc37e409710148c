//! Changing the application to another version (`wallaroo deploy` onto a running cluster of
//! another component, other hosts or other options); a hot swap is the simplest change:
//! 1. Join: members the new version adds (new nodes) join, while the cluster runs on (and
//!    checkpoints). One that does not join in time ends the change; nothing changed.
//! 2. Ready: every member, and every joining one, makes the new version ready (compiled, and
//!    checked against the running version's state). A refusal ends the change; nothing
//!    changed.
//! 3. Only when key groups move: the sources stop and the cluster drains, so that the state
//!    at the next checkpoint is the state the members hold.
//! 4. A checkpoint N, as any other.
//! 5. Only when key groups move: Move: every member hands the state its groups had at N to
//!    their new owners, which log it durably before the member answers.
//! 6. Record: the coordinator records the next generation running the new version from N,
//!    durably. Before this record the cluster runs the old version after any failure; from
//!    it on, the new one: never a mix. Joining members become members, removed ones leave.
//! 7. Start: every member starts the new generation with the new version, from N.
//!
//! Input after N's cut that the old version processed is processed again by the new one
//! (replayed from the log), and its held output is dropped, so output stays exactly-once.

use super::checkpoint::Then;
use super::{
    Action, Change, Command, Coordinator, Lost, Phase, Record, Reply, Role, Round, all_ok, ask,
    drained,
};
use crate::Time;
use crate::quiescence::{Quiescence, Round as Quiet};
use std::time::Duration;

/// A change asked of the coordinator and not yet answered.
#[derive(Debug, Clone)]
pub(super) struct Asked {
    pub(super) change: Change,
    /// The record of the new version is durable: the change happens, whatever follows.
    pub(super) recorded: bool,
    /// Waiting for the current checkpoint to end before it starts.
    pub(super) waiting: bool,
    /// Member slots before the change, to go back to if it fails before its record.
    pub(super) members_before: usize,
    /// Waiting for the members the change adds to join, until then.
    pub(super) join_deadline: Option<Time>,
    /// The version and time between checkpoints before the change.
    pub(super) version_before: u64,
    pub(super) interval_before: Option<Duration>,
    /// A change back to the version before a change whose version could not start: why,
    /// the answer to the deploy once it runs.
    pub(super) back_from: Option<String>,
}

#[derive(Debug)]
pub(super) enum Step {
    Ready,
    StopSources,
    Drain {
        quiescence: Quiescence,
        next: Option<Time>,
    },
    Move,
    Record,
}

#[derive(Debug)]
pub(super) struct Swapping {
    pub(super) version: u64,
    pub(super) step: Step,
    pub(super) round: Option<Round>,
}

impl Swapping {
    pub(super) fn name(&self) -> &'static str {
        match self.step {
            Step::Ready => "changing: ready",
            Step::StopSources => "changing: stop sources",
            Step::Drain { .. } => "changing: drain",
            Step::Move => "changing: move",
            Step::Record => "changing: record",
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Time> {
        match (&self.round, &self.step) {
            (Some(r), _) => Some(r.deadline),
            (None, Step::Drain { next, .. }) => *next,
            _ => None,
        }
    }
}

impl Coordinator {
    pub(super) fn swap_asked(&mut self, now: Time, change: Change, actions: &mut Vec<Action>) {
        let refuse =
            |why: String, actions: &mut Vec<Action>| actions.push(Action::Swapped(Err(why)));
        if self.swap.is_some() {
            return refuse(
                "another change of the application is under way; try again once it is done".into(),
                actions,
            );
        }
        if change.version <= self.record.version {
            return refuse(
                format!(
                    "version {} is not above the running version {}",
                    change.version, self.record.version
                ),
                actions,
            );
        }
        if change.members < self.config.members {
            return refuse(
                format!(
                    "a change keeps every member slot ({} asked, {} there are)",
                    change.members, self.config.members
                ),
                actions,
            );
        }
        if change.removed.contains(&0) {
            return refuse(
                format!(
                    "{} coordinates the cluster and cannot be removed from it",
                    self.name(0)
                ),
                actions,
            );
        }
        if let Some(&m) = change
            .removed
            .iter()
            .find(|&&m| self.roles.get(m) != Some(&Role::Member))
        {
            return refuse(
                format!("node {m} is not a member and cannot be removed"),
                actions,
            );
        }
        if self.stops > 0 || matches!(self.phase, Phase::Stopping(_)) {
            // Also in the stop's last checkpoint, after which nothing would begin it.
            return refuse(
                "the application is stopping; deploy it again once it stopped".into(),
                actions,
            );
        }
        if self.config.checkpoint_interval.is_none() {
            return refuse(
                "a live change carries state over at a checkpoint, and this deployment takes \
                 none (resilience none): stop it and deploy the new version"
                    .into(),
                actions,
            );
        }
        let waiting = match self.phase {
            Phase::Running(_) => false,
            // Begins once the checkpoint under way has committed.
            Phase::Checkpoint(_) => true,
            _ => {
                return refuse(
                    format!(
                        "the cluster is {}: deploy again once it runs (`wallaroo status` says \
                         what it waits for)",
                        self.state()
                    ),
                    actions,
                );
            }
        };
        self.swap = Some(Asked {
            change,
            recorded: false,
            waiting,
            members_before: self.config.members,
            join_deadline: None,
            version_before: self.record.version,
            interval_before: self.config.checkpoint_interval,
            back_from: None,
        });
        if !waiting {
            self.begin_swap(now, actions);
        }
    }

    /// A change that waited for a checkpoint begins (called when the cluster runs again).
    pub(super) fn swap_waiting(&mut self, now: Time, actions: &mut Vec<Action>) -> bool {
        match &mut self.swap {
            Some(swap) if swap.waiting => {
                swap.waiting = false;
                self.begin_swap(now, actions);
                true
            }
            _ => false,
        }
    }

    fn asked(&self) -> Option<&Change> {
        self.swap.as_ref().map(|s| &s.change)
    }

    /// Adds the slots the change makes, and waits for them to join (or makes the new version
    /// ready at once when there are none).
    fn begin_swap(&mut self, now: Time, actions: &mut Vec<Action>) {
        let Some(change) = self.asked().cloned() else {
            return;
        };
        while self.config.members < change.members {
            self.config.members += 1;
            self.roles.push(Role::Joining);
            self.joined.push(false);
        }
        if !self.joining_missing().is_empty() {
            let deadline = now + self.config.patience.first_join;
            if let Some(asked) = self.swap.as_mut() {
                asked.join_deadline.get_or_insert(deadline);
            }
            return;
        }
        if let Some(asked) = self.swap.as_mut() {
            asked.join_deadline = None;
        }
        let command = Command::Ready {
            version: change.version,
        };
        let round = self.ask_all(now, command, actions);
        self.phase = Phase::Swapping(Swapping {
            version: change.version,
            step: Step::Ready,
            round: Some(round),
        });
    }

    /// While the members a change adds join: when the change gives up on them.
    pub(super) fn join_deadline(&self) -> Option<Time> {
        self.swap.as_ref().and_then(|s| s.join_deadline)
    }

    /// The members a change adds did not all join in time: the change fails, and the
    /// cluster, running all along, runs on.
    pub(super) fn join_timeout(&mut self, now: Time, actions: &mut Vec<Action>) {
        if self.join_deadline().is_none_or(|at| now < at) {
            return;
        }
        let missing: Vec<String> = self
            .joining_missing()
            .iter()
            .map(|&m| self.name(m))
            .collect();
        let why = format!(
            "{} did not join within {} s: start each with `wallaroo node` at its address and \
             deploy again",
            missing.join(", "),
            self.config.patience.first_join.as_secs()
        );
        self.fail_change(why, actions);
    }

    fn joining_missing(&self) -> Vec<usize> {
        (0..self.config.members)
            .filter(|&m| self.roles[m] == Role::Joining && !self.joined[m])
            .collect()
    }

    /// A slot joining for the change joined (`again`: it had joined before, and restarted).
    pub(super) fn joining_joined(
        &mut self,
        now: Time,
        member: usize,
        again: bool,
        actions: &mut Vec<Action>,
    ) {
        let joining = self.join_deadline().is_some();
        if again && !joining {
            let why = format!("{} restarted during the change", self.name(member));
            return self.joining_lost(now, member, why, actions);
        }
        if !joining || !self.joining_missing().is_empty() {
            return;
        }
        match self.phase {
            Phase::Running(_) => self.begin_swap(now, actions),
            // Begins once the checkpoint under way has committed.
            _ => {
                if let Some(asked) = self.swap.as_mut() {
                    asked.waiting = true;
                }
            }
        }
    }

    /// A slot joining for the change is lost before the change is recorded: the change fails.
    pub(super) fn joining_lost(
        &mut self,
        now: Time,
        member: usize,
        why: String,
        actions: &mut Vec<Action>,
    ) {
        self.joined[member] = false;
        let why = format!("{} was lost during the change: {why}", self.name(member));
        if self.join_deadline().is_some() {
            // Still joining: the cluster runs on as it was.
            return self.fail_change(why, actions);
        }
        match &self.phase {
            // Before the sources stopped: the cluster runs on as it was.
            Phase::Swapping(Swapping {
                step: Step::Ready, ..
            }) => {
                self.fail_change(why, actions);
                self.run_until_next_checkpoint(now, actions);
            }
            // The sources stopped: the cluster recovers from its last checkpoint, as it was.
            _ => self.lose(now, Lost { member, why }, actions),
        }
    }

    /// The change fails before its record: the slots it added go (the new nodes that joined
    /// are told to forget the deployment), and the deploy is answered.
    pub(super) fn fail_change(&mut self, why: String, actions: &mut Vec<Action>) {
        let Some(asked) = self.swap.take() else {
            return;
        };
        for member in asked.members_before..self.config.members {
            if std::mem::take(&mut self.joined[member]) {
                actions.push(Action::Send {
                    member,
                    command: Command::Leave,
                });
            }
        }
        self.config.members = asked.members_before;
        self.roles.truncate(asked.members_before);
        self.joined.truncate(asked.members_before);
        actions.push(Action::Swapped(Err(why)));
    }

    pub(super) fn swapping_replies(&mut self, now: Time, actions: &mut Vec<Action>) {
        let drain_poll = self.config.patience.drain_poll;
        let moves = self.asked().is_some_and(|c| c.moves);
        let Phase::Swapping(s) = &mut self.phase else {
            return;
        };
        let replies = s.round.take().map(|mut r| r.take()).unwrap_or_default();
        let version = s.version;
        match &mut s.step {
            Step::Record => {}
            Step::Ready => {
                for (member, reply) in replies.into_iter().enumerate() {
                    match reply {
                        Reply::Ok => {}
                        Reply::Refused(why) => {
                            // Nothing changed: the old version runs on.
                            let why =
                                format!("{} cannot run the new version: {why}", self.name(member));
                            self.fail_change(why, actions);
                            return self.run_until_next_checkpoint(now, actions);
                        }
                        other => {
                            let why = format!("it answered Ready with {other:?}");
                            return self.lose(now, Lost { member, why }, actions);
                        }
                    }
                }
                if moves {
                    let round = self.ask_all(now, Command::StopSources, actions);
                    self.phase = Phase::Swapping(Swapping {
                        version,
                        step: Step::StopSources,
                        round: Some(round),
                    });
                } else {
                    self.begin_checkpoint(now, Then::Swap(version), actions);
                }
            }
            Step::StopSources => {
                if let Err(lost) = all_ok(&replies, "StopSources") {
                    return self.lose(now, lost, actions);
                }
                s.step = Step::Drain {
                    quiescence: Quiescence::default(),
                    next: None,
                };
                s.round = Some(ask(&self.config, &self.roles, now, Command::Drain, actions));
            }
            Step::Drain { quiescence, next } => {
                let round = match drained(quiescence, replies) {
                    Ok(round) => round,
                    Err(lost) => return self.lose(now, lost, actions),
                };
                match round {
                    Quiet::Quiescent => self.begin_checkpoint(now, Then::Swap(version), actions),
                    Quiet::Busy { .. } => *next = Some(now + drain_poll),
                }
            }
            Step::Move => {
                for (member, reply) in replies.into_iter().enumerate() {
                    match reply {
                        Reply::Ok => {}
                        Reply::Refused(why) => {
                            // The sources stopped: the cluster recovers as it was.
                            let why = format!(
                                "{} could not hand its key groups over: {why}",
                                self.name(member)
                            );
                            return self.lose(now, Lost { member, why }, actions);
                        }
                        other => {
                            let why = format!("it answered Move with {other:?}");
                            return self.lose(now, Lost { member, why }, actions);
                        }
                    }
                }
                self.record_swap(version, actions);
            }
        }
    }

    pub(super) fn swapping_timeout(&mut self, now: Time, actions: &mut Vec<Action>) {
        let Phase::Swapping(s) = &mut self.phase else {
            return;
        };
        match &mut s.step {
            Step::Drain { next, .. } if next.is_some_and(|at| now >= at) => {
                *next = None;
                s.round = Some(ask(&self.config, &self.roles, now, Command::Drain, actions));
            }
            _ => {}
        }
    }

    /// The change's checkpoint committed: hand over the groups that move, or record the new
    /// version's generation.
    pub(super) fn swap_checkpointed(&mut self, now: Time, version: u64, actions: &mut Vec<Action>) {
        if !self.asked().is_some_and(|c| c.moves) {
            return self.record_swap(version, actions);
        }
        let command = Command::Move {
            checkpoint: self.record.committed,
            version,
        };
        let round = self.ask_all(now, command, actions);
        self.phase = Phase::Swapping(Swapping {
            version,
            step: Step::Move,
            round: Some(round),
        });
    }

    fn record_swap(&mut self, version: u64, actions: &mut Vec<Action>) {
        let record = Record {
            generation: self.record.generation + 1,
            committed: self.record.committed,
            version,
        };
        self.records_unanswered.push_back(record);
        actions.push(Action::Record(record));
        self.phase = Phase::Swapping(Swapping {
            version,
            step: Step::Record,
            round: None,
        });
    }

    pub(super) fn swap_recorded(
        &mut self,
        now: Time,
        result: Result<(), String>,
        actions: &mut Vec<Action>,
    ) {
        match result {
            Ok(()) => {
                self.record.generation += 1;
                self.start_generation(now, actions);
            }
            Err(e) => {
                let why = format!("cannot record the new version: {e}");
                self.lose(now, Lost { member: 0, why }, actions);
            }
        }
    }

    /// The change's record is durable: its members are the cluster's from now on. Removed
    /// members leave.
    pub(super) fn apply_change(&mut self, actions: &mut Vec<Action>) {
        let Some(asked) = self.swap.as_mut() else {
            return;
        };
        asked.recorded = true;
        let change = asked.change.clone();
        for role in &mut self.roles {
            if *role == Role::Joining {
                *role = Role::Member;
            }
        }
        for &member in &change.removed {
            self.roles[member] = Role::Retired;
            if std::mem::take(&mut self.joined[member]) {
                actions.push(Action::Send {
                    member,
                    command: Command::Leave,
                });
            }
        }
        self.config.checkpoint_interval = change.checkpoint_interval;
    }

    /// A loss during a change: if its record is not durable, the change failed and the
    /// cluster recovers as it was. If that record is being written, the write's answer
    /// decides: once durable it holds, and the cluster recovers with the new version.
    pub(super) fn swap_lost(&mut self, why: &str, actions: &mut Vec<Action>) {
        let writing = |s: &Asked| {
            self.records_unanswered
                .iter()
                .any(|r| r.version == s.change.version)
        };
        if self.swap.as_ref().is_some_and(writing) {
            return;
        }
        // A change back not recorded yet: the version it goes back from is durable and runs
        // after the recovery, and fails to start again; the change back follows then.
        if self.swap.as_ref().is_some_and(|s| s.back_from.is_some()) {
            return;
        }
        if let Some(swap) = self.swap.as_ref().filter(|s| !s.recorded) {
            let waited = if swap.waiting { " before it began" } else { "" };
            let why = format!(
                "the cluster lost a node{waited} ({why}) and rolls back to the version it ran"
            );
            self.fail_change(why, actions);
        }
    }

    /// A change's record that a loss left unanswered could not be written: the change
    /// failed, and the cluster recovers as it was. (A durable one makes the change happen:
    /// see [`Coordinator::recorded`].)
    pub(super) fn swap_record_failed(
        &mut self,
        asked: &Record,
        e: &str,
        actions: &mut Vec<Action>,
    ) {
        if matches!(self.phase, Phase::Swapping(_)) {
            // The change's own step takes the answer.
            return;
        }
        if self.swap.as_ref().is_some_and(|s| {
            s.change.version == asked.version && !s.recorded && s.back_from.is_none()
        }) {
            let why = format!(
                "the cluster lost a node while the new version was being recorded, and the \
                 record could not be written ({e}): it rolls back to the version it ran"
            );
            self.fail_change(why, actions);
        }
    }

    /// The cluster runs: a recorded change is done.
    pub(super) fn swap_done(&mut self, actions: &mut Vec<Action>) {
        // A change back not yet recorded, and the version it goes back from started after
        // all: that change happened.
        if let Some(swap) = self.swap.take_if(|s| !s.recorded && s.back_from.is_some()) {
            actions.push(Action::Swapped(Ok(swap.version_before)));
            return;
        }
        if let Some(swap) = self.swap.take_if(|s| s.recorded) {
            actions.push(Action::Swapped(match swap.back_from {
                None => Ok(swap.change.version),
                Some(why) => Err(why),
            }));
        }
    }

    /// Member `member` cannot start the version a change has just recorded (its code traps on
    /// restoring the state, say): the cluster changes back to the version before, recorded as
    /// the next version, from the same checkpoint, rather than trying the one that fails
    /// again. Not for a change that removed members (they have left), nor for a change back.
    /// Called once every member answered the Start. False if it does not apply.
    pub(super) fn change_back(
        &mut self,
        member: usize,
        why: &str,
        actions: &mut Vec<Action>,
    ) -> bool {
        let Some(asked) = self.swap.as_ref() else {
            return false;
        };
        if !asked.recorded && asked.back_from.is_some() {
            // A change back whose record a loss cut short: recorded again.
            let version = asked.change.version;
            self.record_swap(version, actions);
            return true;
        }
        if !asked.recorded || asked.back_from.is_some() || !asked.change.removed.is_empty() {
            return false;
        }
        let from = asked.change.version;
        let version = self.record.version + 1;
        let why = format!(
            "{} cannot start version {from}: {why}; the cluster went back to what ran before it \
             (recorded as version {version})",
            self.name(member)
        );
        actions.push(Action::Note {
            warn: true,
            text: why.clone(),
        });
        let change = Change {
            version,
            members: self.config.members,
            // The members the failed change added leave again.
            removed: (asked.members_before..self.config.members).collect(),
            checkpoint_interval: asked.interval_before,
            // Every member's log holds its groups of before at the change's checkpoint.
            moves: false,
        };
        actions.push(Action::ChangingBack {
            version,
            from,
            like: asked.version_before,
        });
        self.swap = Some(Asked {
            change,
            recorded: false,
            waiting: false,
            members_before: self.config.members,
            join_deadline: None,
            version_before: from,
            interval_before: self.config.checkpoint_interval,
            back_from: Some(why),
        });
        self.record_swap(version, actions);
        true
    }
}
