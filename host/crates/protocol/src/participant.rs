//! A member's side of a checkpoint.
//!
//! 1. `Begin N`: the driver, in one step under its log's lock, notes the cut (the next LSN)
//!    and puts N's barrier into every worker's inbox ([`Action::CutAndBarrier`]). Sources log
//!    and enqueue under the same lock, so each worker sees exactly the input logged before the
//!    cut ahead of its barrier.
//! 2. The coordinator asks for alignment until the cluster is quiescent
//!    ([`crate::quiescence`]); the driver answers that from its workers' counters.
//! 3. `Prepare`: every worker hands over its changed state and held output; the driver logs
//!    them with this member's commit record ([`Action::Snapshot`]); once that is durable the
//!    member is prepared.
//! 4. `Commit N` (the coordinator recorded N committed): N's output is released, and log
//!    segments nothing needs any more are dropped.
//!
//! Output is released only on `Commit`: a member that prepared N and then lost the cluster
//! rolls back past its own commit of N, and N's output must not have left it.

use std::collections::BTreeMap;

use crate::Lsn;

/// Every this many checkpoints one writes every key, so older log segments can go.
pub const FULL_EVERY: u32 = 20;

/// What a member's log held at start, for the participant.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// The last checkpoint the log committed (after any rollback).
    pub committed: u64,
    /// The highest checkpoint number the log mentions.
    pub highest_seen: u64,
    /// Output of every epoch up to this one was written out.
    pub released: u64,
    /// Committed epochs whose output was not known written, with their output's first LSN:
    /// released again at start (a tagged receiver drops what it has).
    pub unreleased: Vec<(u64, Lsn)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The coordinator begins checkpoint `checkpoint`.
    Begin { checkpoint: u64 },
    /// The driver carried out [`Action::CutAndBarrier`]: the cut, or None if the log has
    /// failed.
    Cut { cut: Option<Lsn> },
    /// The cluster is aligned: log the checkpoint.
    Prepare,
    /// The driver carried out [`Action::Snapshot`]: the commit record's LSN and the first
    /// output record's, or None if the log has failed.
    Logged {
        commit: Option<Lsn>,
        first_output: Option<Lsn>,
    },
    /// The log is durable up to `lsn`.
    Durable { lsn: Lsn },
    /// The coordinator recorded `checkpoint` committed.
    Commit { checkpoint: u64 },
    /// Every sink has written out every epoch up to `epoch`.
    Written { epoch: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Under the log's lock: note the cut and the acknowledged streams' positions, and put a
    /// barrier into every worker's inbox. Answer with [`Event::Cut`].
    CutAndBarrier { checkpoint: u64 },
    /// Take every worker's part (state changed since the last checkpoint, every key's if
    /// `full`, and held output), and append: state records, output records (`hold_output`),
    /// a released mark up to `released` if given, and the commit record with `cut`. Answer
    /// with [`Event::Logged`].
    Snapshot {
        checkpoint: u64,
        full: bool,
        cut: Lsn,
        released: Option<u64>,
    },
    /// Answer with [`Event::Durable`] once the log is durable up to `lsn`.
    AwaitDurable { lsn: Lsn },
    /// Hand epoch `epoch`'s held output to the sinks.
    Release { epoch: u64 },
    /// Drop log segments wholly before `keep_from`.
    Compact { keep_from: Lsn },
    /// Answer the coordinator's command.
    Reply(Reply),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Began,
    Prepared,
    Committed,
    Refused(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Cutting { checkpoint: u64 },
    Aligning(Step),
    Logging(Step),
    Syncing { step: Step, commit: Lsn },
    Prepared(Step),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    checkpoint: u64,
    full: bool,
    cut: Lsn,
}

#[derive(Debug, Clone)]
pub struct Participant {
    hold_output: bool,
    phase: Phase,
    /// Above every checkpoint number seen.
    next: u64,
    last_committed: u64,
    since_full: u32,
    last_full_cut: Option<Lsn>,
    /// Epochs released to the sinks and not yet known written, with their output's first LSN.
    unreleased: BTreeMap<u64, Lsn>,
    /// Epochs to release again at start.
    rerelease: Vec<u64>,
    written: u64,
    released_logged: u64,
    durable: Lsn,
}

impl Participant {
    /// `hold_output`: exactly-once (output waits for its checkpoint's commit).
    pub fn new(resume: Resume, hold_output: bool) -> Self {
        Participant {
            hold_output,
            phase: Phase::Idle,
            next: resume.highest_seen + 1,
            last_committed: resume.committed,
            // The first checkpoint after a start is full, so what came before can go.
            since_full: FULL_EVERY,
            last_full_cut: None,
            rerelease: resume.unreleased.iter().map(|(e, _)| *e).collect(),
            unreleased: resume.unreleased.into_iter().collect(),
            written: resume.released,
            released_logged: resume.released,
            durable: 0,
        }
    }

    /// The actions of a start: committed output the log held, released again.
    pub fn start(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.rerelease)
            .into_iter()
            .map(|epoch| Action::Release { epoch })
            .collect()
    }

    /// The number a new checkpoint must exceed here.
    pub fn next_number(&self) -> u64 {
        self.next
    }

    /// Every sink has written out the output of every epoch up to this one.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn last_committed(&self) -> u64 {
        self.last_committed
    }

    /// A checkpoint has begun and not yet been prepared: workers are at (or on the way to)
    /// its barrier.
    pub fn aligning(&self) -> bool {
        matches!(self.phase, Phase::Aligning(_))
    }

    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let refuse = |why: String| vec![Action::Reply(Reply::Refused(why))];
        match (self.phase, event) {
            (_, Event::Written { epoch }) => {
                self.written = self.written.max(epoch);
                Vec::new()
            }
            (_, Event::Durable { lsn }) => {
                self.durable = self.durable.max(lsn);
                self.synced()
            }
            (Phase::Idle, Event::Begin { checkpoint }) => {
                if checkpoint < self.next {
                    return refuse(format!(
                        "checkpoint {checkpoint} is not above {} already seen here",
                        self.next - 1
                    ));
                }
                self.next = checkpoint + 1;
                self.phase = Phase::Cutting { checkpoint };
                vec![Action::CutAndBarrier { checkpoint }]
            }
            (_, Event::Begin { checkpoint }) => refuse(format!(
                "checkpoint {checkpoint} begun while {} is not done",
                self.current().unwrap_or_default()
            )),
            (Phase::Cutting { checkpoint }, Event::Cut { cut }) => {
                let Some(cut) = cut else {
                    self.phase = Phase::Idle;
                    return refuse("the write-ahead log has failed".into());
                };
                let full = self.since_full >= FULL_EVERY;
                self.phase = Phase::Aligning(Step {
                    checkpoint,
                    full,
                    cut,
                });
                vec![Action::Reply(Reply::Began)]
            }
            (Phase::Aligning(step), Event::Prepare) => {
                self.phase = Phase::Logging(step);
                let released = self.released();
                let released = (released > self.released_logged).then(|| {
                    self.released_logged = released;
                    released
                });
                vec![Action::Snapshot {
                    checkpoint: step.checkpoint,
                    full: step.full,
                    cut: step.cut,
                    released,
                }]
            }
            (_, Event::Prepare) => refuse("nothing to prepare: no checkpoint has begun".into()),
            (
                Phase::Logging(step),
                Event::Logged {
                    commit,
                    first_output,
                },
            ) => {
                let Some(commit) = commit else {
                    self.phase = Phase::Idle;
                    return refuse(format!("cannot log checkpoint {}", step.checkpoint));
                };
                if self.hold_output {
                    self.unreleased
                        .insert(step.checkpoint, first_output.unwrap_or(commit));
                }
                self.phase = Phase::Syncing { step, commit };
                let mut actions = vec![Action::AwaitDurable { lsn: commit }];
                actions.extend(self.synced());
                actions
            }
            (Phase::Prepared(step), Event::Commit { checkpoint })
                if step.checkpoint == checkpoint =>
            {
                self.phase = Phase::Idle;
                self.commit(step)
            }
            (_, Event::Commit { checkpoint }) => {
                refuse(format!("checkpoint {checkpoint} was not prepared here"))
            }
            (_, event @ (Event::Cut { .. } | Event::Logged { .. })) => {
                refuse(format!("{event:?} out of turn"))
            }
        }
    }

    fn current(&self) -> Option<u64> {
        match self.phase {
            Phase::Idle => None,
            Phase::Cutting { checkpoint } => Some(checkpoint),
            Phase::Aligning(s) | Phase::Logging(s) | Phase::Prepared(s) => Some(s.checkpoint),
            Phase::Syncing { step, .. } => Some(step.checkpoint),
        }
    }

    fn synced(&mut self) -> Vec<Action> {
        match self.phase {
            Phase::Syncing { step, commit } if self.durable >= commit => {
                self.phase = Phase::Prepared(step);
                vec![Action::Reply(Reply::Prepared)]
            }
            _ => Vec::new(),
        }
    }

    fn commit(&mut self, step: Step) -> Vec<Action> {
        if step.full {
            self.since_full = 0;
            self.last_full_cut = Some(step.cut);
        } else {
            self.since_full += 1;
        }
        self.last_committed = step.checkpoint;
        let mut actions = Vec::new();
        if self.hold_output {
            actions.push(Action::Release {
                epoch: step.checkpoint,
            });
        }
        // Compaction: everything before the last full checkpoint's cut can go, except output
        // of epochs not yet written out.
        let released = self.released();
        self.unreleased = self.unreleased.split_off(&(released + 1));
        if let Some(mut keep_from) = self.last_full_cut {
            if let Some(&lsn) = self.unreleased.values().min() {
                keep_from = keep_from.min(lsn);
            }
            actions.push(Action::Compact { keep_from });
        }
        actions.push(Action::Reply(Reply::Committed));
        actions
    }

    /// Every epoch up to the returned one has been written by every sink.
    fn released(&self) -> u64 {
        self.written.min(self.next - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exactly_once() -> Participant {
        Participant::new(Resume::default(), true)
    }

    /// Drives `p` through checkpoint `n` up to prepared, with the commit record at `commit`.
    fn prepare(p: &mut Participant, n: u64, cut: Lsn, commit: Lsn) -> Vec<Action> {
        assert_eq!(
            p.handle(Event::Begin { checkpoint: n }),
            [Action::CutAndBarrier { checkpoint: n }]
        );
        assert_eq!(
            p.handle(Event::Cut { cut: Some(cut) }),
            [Action::Reply(Reply::Began)]
        );
        assert!(p.aligning());
        let snap = p.handle(Event::Prepare);
        assert!(matches!(snap[..], [Action::Snapshot { checkpoint, .. }] if checkpoint == n));
        let mut actions = p.handle(Event::Logged {
            commit: Some(commit),
            first_output: Some(commit - 1),
        });
        assert_eq!(actions.remove(0), Action::AwaitDurable { lsn: commit });
        actions.extend(p.handle(Event::Durable { lsn: commit }));
        actions
    }

    #[test]
    fn a_checkpoint_is_prepared_once_its_commit_record_is_durable() {
        let mut p = exactly_once();
        assert_eq!(prepare(&mut p, 1, 10, 20), [Action::Reply(Reply::Prepared)]);
    }

    #[test]
    fn output_is_released_only_at_the_commit() {
        let mut p = exactly_once();
        let prepared = prepare(&mut p, 1, 10, 20);
        assert!(!prepared.iter().any(|a| matches!(a, Action::Release { .. })));
        let committed = p.handle(Event::Commit { checkpoint: 1 });
        assert_eq!(committed[0], Action::Release { epoch: 1 });
        assert_eq!(committed.last(), Some(&Action::Reply(Reply::Committed)));
        assert_eq!(p.last_committed(), 1);
    }

    #[test]
    fn at_least_once_releases_nothing_itself() {
        let mut p = Participant::new(Resume::default(), false);
        prepare(&mut p, 1, 10, 20);
        let committed = p.handle(Event::Commit { checkpoint: 1 });
        assert!(
            !committed
                .iter()
                .any(|a| matches!(a, Action::Release { .. }))
        );
    }

    #[test]
    fn a_durable_mark_that_arrives_first_still_prepares() {
        let mut p = exactly_once();
        p.handle(Event::Begin { checkpoint: 1 });
        p.handle(Event::Cut { cut: Some(3) });
        p.handle(Event::Prepare);
        assert!(p.handle(Event::Durable { lsn: 50 }).is_empty());
        let actions = p.handle(Event::Logged {
            commit: Some(40),
            first_output: None,
        });
        assert_eq!(
            actions,
            [
                Action::AwaitDurable { lsn: 40 },
                Action::Reply(Reply::Prepared)
            ]
        );
    }

    #[test]
    fn a_commit_of_another_checkpoint_is_refused_and_changes_nothing() {
        let mut p = exactly_once();
        prepare(&mut p, 2, 10, 20);
        assert!(matches!(
            p.handle(Event::Commit { checkpoint: 1 })[..],
            [Action::Reply(Reply::Refused(_))]
        ));
        assert!(matches!(
            p.handle(Event::Commit { checkpoint: 2 })[..],
            [Action::Release { epoch: 2 }, ..]
        ));
    }

    #[test]
    fn a_begin_while_another_checkpoint_runs_or_below_one_seen_is_refused() {
        let mut p = Participant::new(
            Resume {
                highest_seen: 7,
                ..Resume::default()
            },
            true,
        );
        assert!(matches!(
            p.handle(Event::Begin { checkpoint: 7 })[..],
            [Action::Reply(Reply::Refused(_))]
        ));
        p.handle(Event::Begin { checkpoint: 8 });
        assert!(matches!(
            p.handle(Event::Begin { checkpoint: 9 })[..],
            [Action::Reply(Reply::Refused(_))]
        ));
    }

    #[test]
    fn a_failed_log_refuses_the_begin_and_the_prepare() {
        let mut p = exactly_once();
        p.handle(Event::Begin { checkpoint: 1 });
        assert!(matches!(
            p.handle(Event::Cut { cut: None })[..],
            [Action::Reply(Reply::Refused(_))]
        ));
        p.handle(Event::Begin { checkpoint: 2 });
        p.handle(Event::Cut { cut: Some(1) });
        p.handle(Event::Prepare);
        assert!(matches!(
            p.handle(Event::Logged {
                commit: None,
                first_output: None
            })[..],
            [Action::Reply(Reply::Refused(_))]
        ));
    }

    #[test]
    fn the_first_checkpoint_is_full_and_compaction_keeps_unwritten_output() {
        let mut p = exactly_once();
        prepare(&mut p, 1, 10, 20);
        let committed = p.handle(Event::Commit { checkpoint: 1 });
        // Epoch 1's output (from LSN 19) is not written yet: compaction keeps it.
        assert!(committed.contains(&Action::Compact { keep_from: 10 }));
        p.handle(Event::Written { epoch: 1 });
        let step = prepare(&mut p, 2, 30, 40);
        assert_eq!(step, [Action::Reply(Reply::Prepared)]);
        let committed = p.handle(Event::Commit { checkpoint: 2 });
        assert!(committed.contains(&Action::Compact { keep_from: 10 }));
    }

    #[test]
    fn a_released_mark_is_logged_once_sinks_have_written() {
        let mut p = exactly_once();
        prepare(&mut p, 1, 10, 20);
        p.handle(Event::Commit { checkpoint: 1 });
        p.handle(Event::Written { epoch: 1 });
        p.handle(Event::Begin { checkpoint: 2 });
        p.handle(Event::Cut { cut: Some(21) });
        assert_eq!(
            p.handle(Event::Prepare),
            [Action::Snapshot {
                checkpoint: 2,
                full: false,
                cut: 21,
                released: Some(1)
            }]
        );
    }

    #[test]
    fn a_start_releases_committed_output_the_log_held_again() {
        let mut p = Participant::new(
            Resume {
                committed: 4,
                highest_seen: 5,
                released: 2,
                unreleased: vec![(3, 100), (4, 120)],
            },
            true,
        );
        assert_eq!(
            p.start(),
            [Action::Release { epoch: 3 }, Action::Release { epoch: 4 }]
        );
        assert!(p.start().is_empty());
        assert_eq!(p.next_number(), 6);
    }
}
