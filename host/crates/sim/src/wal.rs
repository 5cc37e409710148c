//! A member's simulated write-ahead log: records with LSNs, a durable prefix, compaction, and
//! the torn suffix of a crash. What a start restores from it goes through the core's
//! [`wallaroo_protocol::recovery::point`], as the engine does.

use std::collections::{BTreeMap, BTreeSet};

use wallaroo_protocol::Lsn;
use wallaroo_protocol::recovery::{Mark, Point, point};

use crate::rng::Rng;

/// A key of the model workload: a keyed counter.
pub type Key = u32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rec {
    /// Frame `seq` of acknowledged stream `stream`.
    Input {
        stream: u32,
        seq: u64,
        keys: Vec<Key>,
    },
    /// Counters of one worker at a checkpoint (changed ones, or all for a full checkpoint).
    State {
        checkpoint: u64,
        entries: Vec<(Key, u64)>,
    },
    /// Output held for epoch `epoch`: (key, count, version of the application that made
    /// it) in the order it was made.
    Output {
        epoch: u64,
        payloads: Vec<(Key, u64, u64)>,
    },
    Released {
        epoch: u64,
    },
    /// This member committed `checkpoint`; acknowledged streams stood at `streams` at the cut.
    Commit {
        checkpoint: u64,
        cut: Lsn,
        streams: BTreeMap<u32, u64>,
    },
    Rollback {
        to: u64,
    },
}

#[derive(Debug, Clone)]
pub struct Wal {
    /// Every record that survived crashes, in LSN order, compacted ones too: the model's
    /// ground truth. A start reads only the live part.
    records: Vec<(Lsn, Rec)>,
    live_from: Lsn,
    durable: Lsn,
    next: Lsn,
    failed: bool,
    /// The disk is full: the next append fails the log.
    pub full: bool,
    /// The next sync fails (an fsync error): the log fails.
    pub fail_next_sync: bool,
}

impl Default for Wal {
    fn default() -> Self {
        Wal {
            records: Vec::new(),
            live_from: 0,
            durable: 0,
            next: 1,
            failed: false,
            full: false,
            fail_next_sync: false,
        }
    }
}

/// Why a torn crash dropped what it dropped, for the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Torn {
    pub kept: usize,
    pub dropped: usize,
}

impl Wal {
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The LSN the next append gets.
    pub fn next_lsn(&self) -> Lsn {
        self.next
    }

    pub fn end(&self) -> Lsn {
        self.next - 1
    }

    pub fn durable(&self) -> Lsn {
        self.durable
    }

    pub fn append(&mut self, rec: Rec) -> Option<Lsn> {
        if self.failed {
            return None;
        }
        if self.full {
            self.failed = true;
            return None;
        }
        let lsn = self.next;
        self.next += 1;
        self.records.push((lsn, rec));
        Some(lsn)
    }

    /// A group commit up to `lsn` completes. False: the sync failed and so has the log.
    pub fn sync_to(&mut self, lsn: Lsn) -> bool {
        if self.failed {
            return false;
        }
        if std::mem::take(&mut self.fail_next_sync) {
            self.failed = true;
            return false;
        }
        self.durable = self.durable.max(lsn.min(self.end()));
        true
    }

    /// A crash (or reopening a failed log): what was not durable is dropped, or a prefix of
    /// it is kept, as a torn write leaves it. Everything left is durable afterwards.
    pub fn tear(&mut self, rng: &mut Rng) -> Torn {
        let suffix = self
            .records
            .iter()
            .filter(|(l, _)| *l > self.durable)
            .count();
        let kept = if suffix > 0 && rng.chance(0.5) {
            rng.below(suffix + 1)
        } else {
            0
        };
        let cut_at = self.records.len() - suffix + kept;
        self.records.truncate(cut_at);
        self.next = self.records.last().map_or(1, |(l, _)| l + 1);
        self.durable = self.end();
        self.failed = false;
        Torn {
            kept,
            dropped: suffix - kept,
        }
    }

    /// Opening the log at a start: everything read back is durable.
    pub fn reopen(&mut self, rng: &mut Rng) -> Option<Torn> {
        if self.failed {
            return Some(self.tear(rng));
        }
        self.durable = self.end();
        None
    }

    pub fn compact(&mut self, keep_from: Lsn) {
        self.live_from = self.live_from.max(keep_from);
    }

    /// Records a start reads.
    pub fn live(&self) -> std::slice::Iter<'_, (Lsn, Rec)> {
        let from = self.records.partition_point(|(l, _)| *l < self.live_from);
        self.records[from..].iter()
    }

    /// Every record, compacted ones too (ground truth for the checks).
    pub fn all(&self) -> &[(Lsn, Rec)] {
        &self.records
    }

    /// The LSN of this member's commit record of `checkpoint`, if it has one.
    pub fn commit_of(&self, checkpoint: u64) -> Option<(Lsn, Lsn)> {
        self.live().rev().find_map(|(l, r)| match r {
            Rec::Commit {
                checkpoint: c, cut, ..
            } if *c == checkpoint => Some((*l, *cut)),
            _ => None,
        })
    }

    /// Epoch `epoch`'s output in log order.
    pub fn output(&self, epoch: u64) -> Vec<(Key, u64, u64)> {
        self.live()
            .filter_map(|(_, r)| match r {
                Rec::Output { epoch: e, payloads } if *e == epoch => Some(payloads.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

/// What a start restores from a log.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    pub point: Point,
    pub state: BTreeMap<Key, u64>,
    pub positions: BTreeMap<u32, u64>,
    /// Input after the cut, to run again: (stream, seq, keys).
    pub replay: Vec<(u32, u64, Vec<Key>)>,
    /// Committed epochs not known written, with their output's first LSN.
    pub unreleased: Vec<(u64, Lsn)>,
}

pub fn marks(wal: &Wal) -> Vec<Mark> {
    wal.live()
        .filter_map(|(_, r)| match r {
            Rec::Commit {
                checkpoint, cut, ..
            } => Some(Mark::Commit {
                checkpoint: *checkpoint,
                cut: *cut,
                full: false,
            }),
            Rec::Rollback { to } => Some(Mark::Rollback { to: *to }),
            Rec::State { checkpoint, .. } => Some(Mark::Seen { epoch: *checkpoint }),
            Rec::Output { epoch, .. } => Some(Mark::Seen { epoch: *epoch }),
            Rec::Released { epoch } => Some(Mark::Released { epoch: *epoch }),
            Rec::Input { .. } => None,
        })
        .collect()
}

/// The start of a member rolled back to the cluster's checkpoint `upto`.
pub fn restore(wal: &Wal, upto: u64) -> Restored {
    let point = point(marks(wal), Some(upto));
    let mut restored = Restored::default();
    let mut outputs: BTreeMap<u64, Lsn> = BTreeMap::new();
    // The streams' positions at the restored cut, then moved on by the input after it (some
    // of which is logged before the commit record).
    for (_, rec) in wal.live() {
        if let Rec::Commit {
            checkpoint,
            streams,
            ..
        } = rec
            && *checkpoint == point.checkpoint
        {
            restored.positions = streams.clone();
        }
    }
    for (lsn, rec) in wal.live() {
        match rec {
            Rec::State {
                checkpoint,
                entries,
            } if point.committed.contains(checkpoint) => {
                restored.state.extend(entries.iter().copied());
            }
            Rec::Input { stream, seq, keys } if *lsn >= point.cut => {
                restored.positions.insert(*stream, seq + 1);
                restored.replay.push((*stream, *seq, keys.clone()));
            }
            Rec::Output { epoch, .. }
                if *epoch > point.released && point.committed.contains(epoch) =>
            {
                outputs.entry(*epoch).or_insert(*lsn);
            }
            _ => {}
        }
    }
    restored.unreleased = outputs.into_iter().collect();
    restored.point = point;
    restored
}

/// Ground truth: how many distinct frames logged before `cut` hold each key.
pub fn counted_before(wal: &Wal, cut: Lsn, into: &mut BTreeMap<Key, u64>) {
    let mut seen = BTreeSet::new();
    for (lsn, rec) in wal.all() {
        if let Rec::Input { stream, seq, keys } = rec
            && *lsn < cut
            && seen.insert((*stream, *seq))
        {
            for k in keys {
                *into.entry(*k).or_default() += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(seq: u64, keys: &[Key]) -> Rec {
        Rec::Input {
            stream: 0,
            seq,
            keys: keys.to_vec(),
        }
    }

    #[test]
    fn a_crash_keeps_the_durable_prefix_and_at_most_a_prefix_of_the_rest() {
        for seed in 0..50 {
            let mut wal = Wal::default();
            for s in 0..6 {
                wal.append(input(s, &[1]));
            }
            assert!(wal.sync_to(3));
            let torn = wal.tear(&mut Rng::new(seed));
            assert_eq!(torn.kept + torn.dropped, 3);
            assert_eq!(wal.end(), 3 + torn.kept as u64);
            assert_eq!(wal.durable(), wal.end());
            let lsns: Vec<Lsn> = wal.all().iter().map(|(l, _)| *l).collect();
            assert_eq!(lsns, (1..=wal.end()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_failed_sync_fails_the_log_until_it_is_reopened() {
        let mut wal = Wal::default();
        wal.append(input(0, &[1]));
        wal.fail_next_sync = true;
        assert!(!wal.sync_to(1));
        assert!(wal.failed());
        assert_eq!(wal.append(input(1, &[1])), None);
        wal.reopen(&mut Rng::new(1));
        assert!(!wal.failed());
        assert!(wal.append(input(1, &[1])).is_some());
    }

    #[test]
    fn a_full_disk_fails_the_append() {
        let mut wal = Wal {
            full: true,
            ..Wal::default()
        };
        assert_eq!(wal.append(input(0, &[1])), None);
        assert!(wal.failed());
    }

    #[test]
    fn restore_takes_committed_state_and_replays_input_after_the_cut() {
        let mut wal = Wal::default();
        wal.append(input(0, &[1, 2]));
        let cut = wal.next_lsn();
        wal.append(input(1, &[1]));
        wal.append(Rec::State {
            checkpoint: 1,
            entries: vec![(1, 1), (2, 1)],
        });
        wal.append(Rec::Output {
            epoch: 1,
            payloads: vec![(1, 1, 0), (2, 1, 0)],
        });
        wal.append(Rec::Commit {
            checkpoint: 1,
            cut,
            streams: BTreeMap::from([(0, 1)]),
        });
        let r = restore(&wal, 1);
        // Frame 1 was logged after the cut, before the commit record: the position passes it.
        assert_eq!(r.point.checkpoint, 1);
        assert_eq!(r.state, BTreeMap::from([(1, 1), (2, 1)]));
        assert_eq!(r.replay, vec![(0, 1, vec![1])]);
        assert_eq!(r.positions, BTreeMap::from([(0, 2)]));
        assert_eq!(r.unreleased, vec![(1, 4)]);
        assert_eq!(wal.output(1), vec![(1, 1, 0), (2, 1, 0)]);
        // The cluster never committed 1: everything replays.
        let r = restore(&wal, 0);
        assert_eq!((r.point.checkpoint, r.replay.len()), (0, 2));
        assert!(r.point.rolls_back);
        let mut counts = BTreeMap::new();
        counted_before(&wal, cut, &mut counts);
        assert_eq!(counts, BTreeMap::from([(1, 1), (2, 1)]));
    }
}
