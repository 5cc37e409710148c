//! Stopping (`wallaroo stop`): stop the sources, drain until nothing is queued anywhere and
//! nothing is on the wire, take a last checkpoint (which releases what is held), wait until
//! every member's sinks wrote out what it released, then shut the application down on every
//! member and answer every stop asked.
//!
//! Until Shutdown no member has forgotten anything, so a member lost before it rolls the
//! cluster back and the stop follows. In Shutdown some members may be gone for good, but
//! none holds anything unwritten: one that leaves or restarts then is only told to stop again.

use super::checkpoint::Then;
use super::{
    Action, Command, Coordinator, Lost, Phase, Reply, Round, all_ok, ask, drained, refusal,
};
use crate::Time;
use crate::quiescence::{Quiescence, Round as Quiet};

#[derive(Debug)]
pub(super) enum Step {
    StopSources,
    Drain {
        quiescence: Quiescence,
        /// The next drain report is asked for then.
        next: Option<Time>,
    },
    /// After the last checkpoint (exactly-once): until every sink wrote out its output.
    Flush,
    Shutdown,
}

#[derive(Debug)]
pub(super) struct Stopping {
    pub(super) step: Step,
    pub(super) round: Option<Round>,
}

impl Stopping {
    pub(super) fn name(&self) -> &'static str {
        match self.step {
            Step::StopSources => "stopping: sources",
            Step::Drain { .. } => "stopping: drain",
            Step::Flush => "stopping: flush",
            Step::Shutdown => "stopping: shutdown",
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
    pub(super) fn begin_stop(&mut self, now: Time, actions: &mut Vec<Action>) {
        if self.join_deadline().is_some() {
            // A change still waiting for new members to join does not happen.
            self.fail_change("the application is stopping".into(), actions);
        }
        let round = self.ask_all(now, Command::StopSources, actions);
        self.phase = Phase::Stopping(Stopping {
            step: Step::StopSources,
            round: Some(round),
        });
    }

    pub(super) fn begin_drain(&mut self, now: Time, actions: &mut Vec<Action>) {
        let round = self.ask_all(now, Command::Drain, actions);
        self.phase = Phase::Stopping(Stopping {
            step: Step::Drain {
                quiescence: Quiescence::default(),
                next: None,
            },
            round: Some(round),
        });
    }

    /// A member asked for a checkpoint while the stop drains: it holds too much output to
    /// take more input, so the drain cannot end without one.
    pub(super) fn checkpoint_while_draining(&mut self, now: Time, actions: &mut Vec<Action>) {
        if let Phase::Stopping(Stopping {
            step: Step::Drain { .. },
            round: None,
        }) = self.phase
            && self.config.checkpoint_interval.is_some()
        {
            self.begin_checkpoint(now, Then::Drain, actions);
        }
    }

    pub(super) fn begin_flush(&mut self, now: Time, actions: &mut Vec<Action>) {
        let checkpoint = self.record.committed;
        let round = self.ask_all(now, Command::Flush { checkpoint }, actions);
        self.phase = Phase::Stopping(Stopping {
            step: Step::Flush,
            round: Some(round),
        });
    }

    pub(super) fn begin_shutdown(&mut self, now: Time, actions: &mut Vec<Action>) {
        let round = self.ask_all(now, Command::Shutdown, actions);
        self.phase = Phase::Stopping(Stopping {
            step: Step::Shutdown,
            round: Some(round),
        });
    }

    /// Member `member` joined again in the last step of a stop: it stops again, and has the
    /// whole patience for its answer.
    pub(super) fn shutdown_again(&mut self, now: Time, member: usize, actions: &mut Vec<Action>) {
        let patience = self.config.patience.answer;
        let Phase::Stopping(Stopping {
            round: Some(round), ..
        }) = &mut self.phase
        else {
            return;
        };
        round.replies[member] = None;
        round.deadline = round.deadline.max(now + patience);
        actions.push(Action::Send {
            member,
            command: Command::Shutdown,
        });
    }

    /// In the last step of a stop: some members may have stopped already.
    pub(super) fn shutting_down(&self) -> bool {
        matches!(
            self.phase,
            Phase::Stopping(Stopping {
                step: Step::Shutdown,
                ..
            })
        )
    }

    pub(super) fn stopping_replies(&mut self, now: Time, actions: &mut Vec<Action>) {
        let checkpoints = self.config.checkpoint_interval.is_some();
        let drain_poll = self.config.patience.drain_poll;
        let Phase::Stopping(s) = &mut self.phase else {
            return;
        };
        let replies = s.round.take().map(|mut r| r.take()).unwrap_or_default();
        match &mut s.step {
            Step::StopSources => {
                if let Err(lost) = all_ok(&replies, "StopSources") {
                    return self.lose(now, lost, actions);
                }
                self.begin_drain(now, actions);
            }
            Step::Flush => {
                if let Some((member, why)) = refusal(&replies) {
                    // Its receiver may be away: the stop fails, and the cluster runs on from
                    // the checkpoint (its log holds what is unwritten).
                    let why = format!("node {member} cannot stop: {why}");
                    self.answer_stops(Err(why.clone()), actions);
                    return self.lose(now, Lost { member, why }, actions);
                }
                if let Err(lost) = all_ok(&replies, "Flush") {
                    return self.lose(now, lost, actions);
                }
                self.begin_shutdown(now, actions);
            }
            Step::Drain { quiescence, next } => {
                let round = match drained(quiescence, replies) {
                    Ok(round) => round,
                    Err(lost) => return self.lose(now, lost, actions),
                };
                match round {
                    Quiet::Quiescent if checkpoints => {
                        self.begin_checkpoint(now, Then::Shutdown, actions)
                    }
                    Quiet::Quiescent => self.begin_shutdown(now, actions),
                    Quiet::Busy { .. } => *next = Some(now + drain_poll),
                }
            }
            Step::Shutdown => {
                let answer = match replies.iter().position(|r| *r != Reply::Stopped) {
                    Some(member) => Err(format!(
                        "node {member} answered Shutdown with {:?}",
                        replies[member]
                    )),
                    None => Ok(()),
                };
                self.answer_stops(answer, actions);
                self.phase = Phase::Done;
                actions.push(Action::Done);
            }
        }
    }

    pub(super) fn stopping_timeout(&mut self, now: Time, actions: &mut Vec<Action>) {
        let Phase::Stopping(s) = &mut self.phase else {
            return;
        };
        if let Step::Drain { next, .. } = &mut s.step
            && next.is_some_and(|at| now >= at)
        {
            *next = None;
            s.round = Some(ask(&self.config, &self.roles, now, Command::Drain, actions));
        }
    }
}
