//! Swapping the application for another version (`wallaroo deploy` of a new component onto a
//! running cluster):
//! 1. Ready: every member makes the new version ready (compiled, and checked against the
//!    running version's state). A refusal ends the swap; nothing changed.
//! 2. A checkpoint N, as any other.
//! 3. Record: the coordinator records the next generation running the new version from N,
//!    durably. Before this record the cluster runs the old version after any failure; from
//!    it on, the new one: never a mix.
//! 4. Start: every member starts the new generation with the new version, from N.
//!
//! Input after N's cut that the old version processed is processed again by the new one
//! (replayed from the log), and its held output is dropped, so output stays exactly-once.

use super::checkpoint::Then;
use super::{Action, Command, Coordinator, Lost, Phase, Record, Reply, Round};
use crate::Time;

/// A swap asked of the coordinator and not yet answered.
#[derive(Debug, Clone, Copy)]
pub(super) struct Asked {
    pub(super) version: u64,
    /// The record of the new version is durable: the swap happens, whatever follows.
    pub(super) recorded: bool,
    /// Waiting for the current checkpoint to end before it starts.
    pub(super) waiting: bool,
}

#[derive(Debug)]
pub(super) enum Step {
    Ready,
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
            Step::Ready => "swapping: ready",
            Step::Record => "swapping: record",
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Time> {
        self.round.as_ref().map(|r| r.deadline)
    }
}

impl Coordinator {
    pub(super) fn swap_asked(&mut self, now: Time, version: u64, actions: &mut Vec<Action>) {
        if self.swap.is_some() {
            actions.push(Action::Swapped(Err(
                "another change of the application is under way; try again once it is done".into(),
            )));
            return;
        }
        if version <= self.record.version {
            actions.push(Action::Swapped(Err(format!(
                "version {version} is not above the running version {}",
                self.record.version
            ))));
            return;
        }
        if self.stops > 0 || matches!(self.phase, Phase::Stopping(_)) {
            // Also in the stop's last checkpoint, after which nothing would begin it.
            actions.push(Action::Swapped(Err(
                "the application is stopping; deploy it again once it stopped".into(),
            )));
            return;
        }
        if self.config.checkpoint_interval.is_none() {
            actions.push(Action::Swapped(Err(
                "a live swap carries state over at a checkpoint, and this deployment takes none \
                 (resilience none): stop it and deploy the new version"
                    .into(),
            )));
            return;
        }
        match self.phase {
            Phase::Running(_) => {
                self.swap = Some(Asked {
                    version,
                    recorded: false,
                    waiting: false,
                });
                self.begin_swap(now, version, actions);
            }
            // Begins once the checkpoint under way has committed.
            Phase::Checkpoint(_) => {
                self.swap = Some(Asked {
                    version,
                    recorded: false,
                    waiting: true,
                });
            }
            _ => actions.push(Action::Swapped(Err(format!(
                "the cluster is {}: deploy again once it runs (`wallaroo status` says what it \
                 waits for)",
                self.state()
            )))),
        }
    }

    /// A swap that waited for a checkpoint begins (called when the cluster runs again).
    pub(super) fn swap_waiting(&mut self, now: Time, actions: &mut Vec<Action>) -> bool {
        match &mut self.swap {
            Some(swap) if swap.waiting => {
                swap.waiting = false;
                let version = swap.version;
                self.begin_swap(now, version, actions);
                true
            }
            _ => false,
        }
    }

    fn begin_swap(&mut self, now: Time, version: u64, actions: &mut Vec<Action>) {
        let round = self.ask_all(now, Command::Ready { version }, actions);
        self.phase = Phase::Swapping(Swapping {
            version,
            step: Step::Ready,
            round: Some(round),
        });
    }

    pub(super) fn swapping_replies(&mut self, now: Time, actions: &mut Vec<Action>) {
        let Phase::Swapping(s) = &mut self.phase else {
            return;
        };
        let replies = s.round.take().map(|mut r| r.take()).unwrap_or_default();
        let version = s.version;
        for (member, reply) in replies.into_iter().enumerate() {
            match reply {
                Reply::Ok => {}
                Reply::Refused(why) => {
                    // Nothing changed: the old version runs on.
                    self.swap = None;
                    actions.push(Action::Swapped(Err(format!(
                        "{} cannot run the new version: {why}",
                        self.name(member)
                    ))));
                    return self.run_until_next_checkpoint(now, actions);
                }
                other => {
                    let why = format!("it answered Ready with {other:?}");
                    return self.lose(now, Lost { member, why }, actions);
                }
            }
        }
        self.begin_checkpoint(now, Then::Swap(version), actions);
    }

    /// The swap's checkpoint committed: record the new version's generation.
    pub(super) fn record_swap(&mut self, version: u64, actions: &mut Vec<Action>) {
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

    /// A loss during a swap: if its record is not durable, the swap failed and the cluster
    /// recovers with the old version. If that record is being written, the write's answer
    /// decides: once durable it holds, and the
    /// cluster recovers with the new version.
    pub(super) fn swap_lost(&mut self, why: &str, actions: &mut Vec<Action>) {
        let writing = |s: &Asked| {
            self.records_unanswered
                .iter()
                .any(|r| r.version == s.version)
        };
        if self.swap.as_ref().is_some_and(writing) {
            return;
        }
        if let Some(swap) = self.swap.take_if(|s| !s.recorded) {
            let waited = if swap.waiting { " before it began" } else { "" };
            actions.push(Action::Swapped(Err(format!(
                "the cluster lost a node{waited} ({why}) and rolls back to the version it ran"
            ))));
        }
    }

    /// A swap's record that a loss left unanswered could not be written: the swap failed,
    /// and the cluster recovers with the old version. (A durable one makes the swap happen:
    /// see [`Coordinator::recorded`].)
    pub(super) fn swap_record_failed(
        &mut self,
        asked: &Record,
        e: &str,
        actions: &mut Vec<Action>,
    ) {
        if matches!(self.phase, Phase::Swapping(_)) {
            // The swap's own step takes the answer.
            return;
        }
        if self
            .swap
            .take_if(|s| s.version == asked.version && !s.recorded)
            .is_some()
        {
            actions.push(Action::Swapped(Err(format!(
                "the cluster lost a node while the new version was being recorded, and the \
                 record could not be written ({e}): it rolls back to the version it ran"
            ))));
        }
    }

    /// The cluster runs: a recorded swap is done.
    pub(super) fn swap_done(&mut self, actions: &mut Vec<Action>) {
        if let Some(swap) = self.swap.take_if(|s| s.recorded) {
            actions.push(Action::Swapped(Ok(swap.version)));
        }
    }
}
