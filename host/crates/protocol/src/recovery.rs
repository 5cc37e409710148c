//! Which checkpoint a member's log restores.
//!
//! A member's log holds its own commit record of every checkpoint it prepared. A cluster's
//! checkpoint counts only once the coordinator recorded it committed, so a member may hold a
//! commit of its own the cluster never made: it rolls back past it to the checkpoint the
//! coordinator names (`upto`), and logs a rollback record so that its own commit stays void
//! for every later recovery too, even one to a higher checkpoint.

use std::collections::{BTreeMap, BTreeSet};

use crate::Lsn;

/// What recovery needs of one log record, in log order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// The member committed `checkpoint`, its input cut at `cut`; `full`: it wrote every
    /// key's state.
    Commit {
        checkpoint: u64,
        cut: Lsn,
        full: bool,
    },
    /// Checkpoints above `to` committed before this record are void.
    Rollback { to: u64 },
    /// State or output of epoch/checkpoint `epoch` (numbers above it are new).
    Seen { epoch: u64 },
    /// Output of every epoch up to `epoch` was written out by every sink.
    Released { epoch: u64 },
}

/// Where a member resumes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Point {
    /// The checkpoint restored (0: none).
    pub checkpoint: u64,
    /// Input logged at or after this position is replayed.
    pub cut: Lsn,
    /// Every checkpoint whose state and output count, the restored one included.
    pub committed: BTreeSet<u64>,
    /// The last of them that wrote every key (0: none): state of earlier checkpoints is
    /// superseded by it.
    pub last_full: u64,
    /// The log holds commits above `upto`: the member must log a rollback to `upto` before it
    /// commits anything again.
    pub rolls_back: bool,
    /// The highest checkpoint or epoch number the log mentions: new ones start above it.
    pub highest_seen: u64,
    /// Output of every epoch up to this one was written out.
    pub released: u64,
}

/// The resume point of a log with these marks, rolled back to `upto` if given (a cluster
/// member: the last checkpoint the whole cluster committed).
pub fn point(marks: impl IntoIterator<Item = Mark>, upto: Option<u64>) -> Point {
    let mut commits: BTreeMap<u64, (Lsn, bool)> = BTreeMap::new();
    let (mut highest_seen, mut released) = (0, 0);
    for mark in marks {
        match mark {
            Mark::Commit {
                checkpoint,
                cut,
                full,
            } => {
                highest_seen = highest_seen.max(checkpoint);
                commits.insert(checkpoint, (cut, full));
            }
            Mark::Rollback { to } => {
                commits.split_off(&(to + 1));
            }
            Mark::Seen { epoch } => highest_seen = highest_seen.max(epoch),
            Mark::Released { epoch } => released = released.max(epoch),
        }
    }
    let rolls_back = upto.is_some_and(|upto| commits.range(upto + 1..).next().is_some());
    if let Some(upto) = upto {
        commits.split_off(&(upto + 1));
    }
    let (checkpoint, cut) = commits
        .last_key_value()
        .map_or((0, 1), |(c, (cut, _))| (*c, *cut));
    let last_full = commits
        .iter()
        .rev()
        .find(|(_, (_, full))| *full)
        .map_or(0, |(c, _)| *c);
    Point {
        checkpoint,
        cut,
        last_full,
        committed: commits.into_keys().collect(),
        rolls_back,
        highest_seen,
        released,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(checkpoint: u64, cut: Lsn) -> Mark {
        Mark::Commit {
            checkpoint,
            cut,
            full: false,
        }
    }

    fn full(checkpoint: u64, cut: Lsn) -> Mark {
        Mark::Commit {
            checkpoint,
            cut,
            full: true,
        }
    }

    #[test]
    fn state_before_the_last_full_checkpoint_kept_is_superseded() {
        let p = point([full(1, 2), commit(2, 5), full(3, 9), commit(4, 12)], None);
        assert_eq!(p.last_full, 3);
        // Rolled back below the second full checkpoint: the first is the base again.
        let p = point([full(1, 2), commit(2, 5), full(3, 9)], Some(2));
        assert_eq!(p.last_full, 1);
        // A full checkpoint voided by a rollback is no base.
        let p = point(
            [
                full(1, 2),
                full(2, 5),
                Mark::Rollback { to: 1 },
                commit(3, 9),
            ],
            None,
        );
        assert_eq!(p.last_full, 1);
    }

    #[test]
    fn a_single_node_resumes_from_its_last_commit() {
        let p = point([commit(1, 5), Mark::Seen { epoch: 3 }, commit(2, 9)], None);
        assert_eq!((p.checkpoint, p.cut, p.highest_seen), (2, 9, 3));
        assert_eq!(p.committed, BTreeSet::from([1, 2]));
        assert!(!p.rolls_back);
    }

    #[test]
    fn an_empty_log_replays_everything() {
        let p = point([], None);
        assert_eq!((p.checkpoint, p.cut), (0, 1));
    }

    #[test]
    fn a_member_rolls_back_past_a_commit_the_cluster_never_made() {
        let p = point([commit(1, 5), commit(2, 9)], Some(1));
        assert_eq!((p.checkpoint, p.cut), (1, 5));
        assert_eq!(p.committed, BTreeSet::from([1]));
        assert!(p.rolls_back);
    }

    #[test]
    fn a_rolled_back_commit_stays_void_when_the_cluster_later_passes_its_number() {
        // Committed 2 alone, rolled back to 1, then the cluster committed 3.
        let marks = [
            commit(1, 5),
            commit(2, 9),
            Mark::Rollback { to: 1 },
            commit(3, 20),
        ];
        let p = point(marks, Some(3));
        assert_eq!(p.checkpoint, 3);
        assert_eq!(p.committed, BTreeSet::from([1, 3]));
        assert!(!p.rolls_back);
    }

    #[test]
    fn released_is_the_highest_mark() {
        let p = point(
            [Mark::Released { epoch: 4 }, Mark::Released { epoch: 2 }],
            None,
        );
        assert_eq!(p.released, 4);
    }
}
