//! A cluster-wide checkpoint N:
//! 1. Begin: every member cuts its log and puts N's barrier into its workers.
//! 2. Align: rounds of alignment reports until the cluster is quiescent
//!    ([`crate::quiescence`]).
//! 3. Prepare: every member logs its state and held output with its own commit record and
//!    waits for its disk.
//! 4. Record: the coordinator records N committed, durably. From here N counts everywhere,
//!    also for a member that restarts before it hears of it.
//! 5. Commit: members release N's output.
//!
//! A member lost before step 4 rolls back past its own commit of N.

use super::{
    Action, Command, Coordinator, Lost, Phase, Record, Reply, Round, ask, refusal, reports,
};
use crate::Time;
use crate::quiescence::{Quiescence, Round as Quiet};

#[derive(Debug)]
pub(super) enum Step {
    Begin,
    Align {
        quiescence: Quiescence,
        began: Time,
        told: Time,
    },
    Prepare,
    Record,
    Commit,
}

#[derive(Debug)]
pub(super) struct Checkpoint {
    pub(super) checkpoint: u64,
    pub(super) step: Step,
    pub(super) round: Option<Round>,
    pub(super) then: Then,
}

/// What follows a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Then {
    Run,
    /// Taken while a stop drains (a member held too much output to drain): drain on.
    Drain,
    /// The last checkpoint of a stop.
    Shutdown,
    /// The checkpoint a swap to this version starts from.
    Swap(u64),
}

impl Checkpoint {
    pub(super) fn name(&self) -> &'static str {
        match self.step {
            Step::Begin => "checkpoint: begin",
            Step::Align { .. } => "checkpoint: align",
            Step::Prepare => "checkpoint: prepare",
            Step::Record => "checkpoint: record",
            Step::Commit => "checkpoint: commit",
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Time> {
        self.round.as_ref().map(|r| r.deadline)
    }
}

impl Coordinator {
    pub(super) fn begin_checkpoint(&mut self, now: Time, then: Then, actions: &mut Vec<Action>) {
        let checkpoint = self.next_checkpoint;
        self.next_checkpoint += 1;
        let round = self.ask_all(now, Command::Begin { checkpoint }, actions);
        self.phase = Phase::Checkpoint(Checkpoint {
            checkpoint,
            step: Step::Begin,
            round: Some(round),
            then,
        });
    }

    pub(super) fn checkpoint_replies(&mut self, now: Time, actions: &mut Vec<Action>) {
        let Phase::Checkpoint(c) = &mut self.phase else {
            return;
        };
        let n = c.checkpoint;
        let replies = c.round.take().map(|mut r| r.take()).unwrap_or_default();
        match &mut c.step {
            Step::Begin => {
                // A member that cannot take part (its log failed: a full disk) holds the
                // cluster back like a lost one: the cluster rolls back and tries again, and
                // loses nothing.
                if let Some((member, why)) = refusal(&replies) {
                    let why = format!("it cannot begin checkpoint {n}: {why}");
                    return self.lose(now, Lost { member, why }, actions);
                }
                c.step = Step::Align {
                    quiescence: Quiescence::default(),
                    began: now,
                    told: now,
                };
                c.round = Some(ask(&self.config, &self.roles, now, Command::Align, actions));
            }
            Step::Align {
                quiescence,
                began,
                told,
            } => {
                let reports = match reports(replies) {
                    Ok(r) => r,
                    Err((member, reply)) => {
                        let why = format!("it answered Align with {reply:?}");
                        return self.lose(now, Lost { member, why }, actions);
                    }
                };
                match quiescence.round(&reports) {
                    Quiet::Quiescent => {
                        c.step = Step::Prepare;
                        c.round = Some(ask(
                            &self.config,
                            &self.roles,
                            now,
                            Command::Prepare,
                            actions,
                        ));
                    }
                    Quiet::Busy {
                        members,
                        on_the_wire,
                    } => {
                        // Alignment waits for the work queued before the barrier; say what it
                        // waits for when that takes long (a slow guest, a slow link).
                        if now >= *told + self.config.patience.align {
                            *told = now;
                            let mut behind: Vec<String> = members
                                .iter()
                                .map(|&m| {
                                    let a = &reports[m];
                                    format!(
                                        "node {m} ({} routed batches queued{})",
                                        a.routed_in_flight,
                                        if a.aligned {
                                            ""
                                        } else {
                                            ", workers not at the barrier"
                                        }
                                    )
                                })
                                .collect();
                            if behind.is_empty() {
                                behind.push(format!("{on_the_wire} routed batches on the wire"));
                            }
                            actions.push(Action::Note {
                                warn: true,
                                text: format!(
                                    "checkpoint {n} still aligning after {} s: waiting for {}",
                                    now.saturating_sub(*began).as_secs(),
                                    behind.join(", ")
                                ),
                            });
                        }
                        c.round =
                            Some(ask(&self.config, &self.roles, now, Command::Align, actions));
                    }
                }
            }
            Step::Prepare => {
                if let Some(member) = replies.iter().position(|r| *r != Reply::Prepared(true)) {
                    let why = format!("it could not log checkpoint {n}");
                    return self.lose(now, Lost { member, why }, actions);
                }
                c.step = Step::Record;
                let record = Record {
                    generation: self.record.generation,
                    committed: n,
                    version: self.record.version,
                };
                self.records_unanswered.push_back(record);
                actions.push(Action::Record(record));
            }
            Step::Record => {}
            Step::Commit => {
                // A member that cannot release what the cluster committed recovers it from
                // its log: its commit of N is there and N counts.
                if let Some((member, why)) = refusal(&replies) {
                    let why = format!("it cannot commit checkpoint {n}: {why}");
                    return self.lose(now, Lost { member, why }, actions);
                }
                self.rollbacks_in_a_row = 0;
                match c.then {
                    Then::Run => self.run_until_next_checkpoint(now, actions),
                    Then::Drain => self.begin_drain(now, actions),
                    Then::Shutdown => self.begin_flush(now, actions),
                    Then::Swap(version) => self.swap_checkpointed(now, version, actions),
                }
            }
        }
    }

    pub(super) fn checkpoint_recorded(
        &mut self,
        now: Time,
        result: Result<(), String>,
        actions: &mut Vec<Action>,
    ) {
        let Phase::Checkpoint(c) = &mut self.phase else {
            return;
        };
        if !matches!(c.step, Step::Record) {
            return;
        }
        let n = c.checkpoint;
        match result {
            Ok(()) => {
                self.record.committed = n;
                c.step = Step::Commit;
                c.round = Some(ask(
                    &self.config,
                    &self.roles,
                    now,
                    Command::Commit { checkpoint: n },
                    actions,
                ));
            }
            Err(e) => {
                let why = format!("cannot record checkpoint {n}: {e}");
                self.lose(now, Lost { member: 0, why }, actions);
            }
        }
    }

    pub(super) fn checkpoint_timeout(&mut self, _now: Time, _actions: &mut [Action]) {}
}
