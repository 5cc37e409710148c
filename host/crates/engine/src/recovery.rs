//! What a node's log holds on start: the last committed checkpoint's key state, the input logged
//! after its cut (to replay), output of committed epochs not yet written out (to release
//! again), and where each acknowledged stream stands.

use std::collections::{BTreeMap, HashMap};

use wallaroo_protocol::recovery::{self, Mark};
use wallaroo_wal::{KeyState, Lsn, Record};

use crate::state_steps::{Attach, StatefulSteps, UnknownStateSteps};

pub(crate) type StateMap = HashMap<(u32, Vec<u8>), Vec<u8>>;

/// Per sink, one epoch's output in order.
pub(crate) type EpochOutput = Vec<Vec<Vec<u8>>>;

/// Committed epochs' output by epoch, with the LSN of its first record.
pub(crate) type Unreleased = BTreeMap<u64, (Lsn, EpochOutput)>;

/// One logged source batch to run again.
pub(crate) struct Replay {
    pub(crate) source: u32,
    pub(crate) stream: u64,
    /// The event time the frames were received with.
    pub(crate) time: u64,
    pub(crate) frames: Vec<Vec<u8>>,
}

#[derive(Default)]
pub(crate) struct Recovery {
    /// The last committed checkpoint (0: none).
    pub(crate) checkpoint: u64,
    /// The highest checkpoint number the log mentions, committed or not: new checkpoints are
    /// numbered above it so a half-written one is never mistaken for a later commit.
    pub(crate) highest_seen: u64,
    pub(crate) state: StateMap,
    pub(crate) replay: Vec<Replay>,
    pub(crate) streams: HashMap<(u32, u64), u64>,
    /// Output of committed epochs after the last released one: epoch -> sink -> (lsn, payloads).
    pub(crate) unreleased: Unreleased,
    pub(crate) released: u64,
    /// The log holds a commit above `upto` that was not voided: this node rolls back past
    /// it, and must log a [`Record::Rollback`] before it commits anything again.
    pub(crate) rolls_back: bool,
    /// State dropped as asked (see [`StatefulSteps::dropping`]): keys per step name.
    pub(crate) dropped: BTreeMap<String, usize>,
}

impl Recovery {
    /// Reads a node's log. With `upto`, checkpoints above it count as not committed: a cluster
    /// rolls every node back to the last checkpoint all of them committed.
    ///
    /// State goes to the stateful step of `steps` its record names; state of a step `steps`
    /// lacks is refused (or dropped, if `steps` drops it), and a stateful step the log does
    /// not name starts empty.
    pub(crate) fn from_log(
        records: Vec<(Lsn, Record)>,
        sinks: usize,
        upto: Option<u64>,
        steps: &StatefulSteps,
    ) -> Result<Recovery, UnknownStateSteps> {
        // Which checkpoint to restore, and which commits count: the protocol core's.
        let mut positions = HashMap::new();
        let marks: Vec<Mark> = records
            .iter()
            .filter_map(|(_, record)| match record {
                Record::Commit {
                    checkpoint,
                    cut,
                    full,
                    streams,
                } => {
                    positions.insert(*checkpoint, streams.clone());
                    Some(Mark::Commit {
                        checkpoint: *checkpoint,
                        cut: *cut,
                        full: *full,
                    })
                }
                Record::Rollback { to } => Some(Mark::Rollback { to: *to }),
                Record::State { checkpoint, .. } | Record::Removed { checkpoint, .. } => {
                    Some(Mark::Seen { epoch: *checkpoint })
                }
                Record::Output { epoch, .. } => Some(Mark::Seen { epoch: *epoch }),
                Record::Released { epoch } => Some(Mark::Released { epoch: *epoch }),
                Record::Input { .. } => None,
            })
            .collect();
        let point = recovery::point(marks, upto);
        // A full checkpoint wrote every key: the state before it is superseded (and a log of
        // format 1 or 2 needs its steps' positions only until the first full checkpoint after).
        let (base, cut, committed, released) =
            (point.last_full, point.cut, point.committed, point.released);
        let streams = positions.remove(&point.checkpoint).unwrap_or_default();
        let mut recovery = Recovery {
            checkpoint: point.checkpoint,
            highest_seen: point.highest_seen,
            released,
            rolls_back: point.rolls_back,
            streams: streams
                .iter()
                .map(|s| ((s.source, s.stream), s.next_seq))
                .collect(),
            ..Recovery::default()
        };
        let mut attach = Attach::new(steps);
        for (lsn, record) in records {
            match record {
                Record::State {
                    checkpoint,
                    steps,
                    entries,
                } if checkpoint >= base && committed.contains(&checkpoint) => {
                    let at = attach
                        .positions(&steps, entries.iter().map(|e| (e.step, e.key.as_slice())));
                    for (KeyState { key, value, .. }, at) in entries.into_iter().zip(at) {
                        if let Some(step) = at {
                            recovery.state.insert((step, key), value);
                        }
                    }
                }
                Record::Removed {
                    checkpoint,
                    steps,
                    keys,
                } if checkpoint >= base && committed.contains(&checkpoint) => {
                    let at = attach.positions(&steps, keys.iter().map(|(s, k)| (*s, k.as_slice())));
                    for ((_, key), at) in keys.into_iter().zip(at) {
                        if let Some(step) = at {
                            recovery.state.remove(&(step, key));
                        }
                    }
                }
                Record::Input {
                    source,
                    stream,
                    seq,
                    time,
                    frames,
                } if lsn >= cut => {
                    if stream != 0 {
                        recovery
                            .streams
                            .insert((source, stream), seq + frames.len() as u64);
                    }
                    recovery.replay.push(Replay {
                        source,
                        stream,
                        time,
                        frames,
                    });
                }
                Record::Output {
                    epoch,
                    sink,
                    payloads,
                } if committed.contains(&epoch) && epoch > released => {
                    let (_, per_sink) = recovery
                        .unreleased
                        .entry(epoch)
                        .or_insert_with(|| (lsn, vec![Vec::new(); sinks]));
                    if let Some(out) = per_sink.get_mut(sink as usize) {
                        out.extend(payloads);
                    }
                }
                _ => {}
            }
        }
        let by_position = attach.by_position;
        recovery.dropped = attach.finish()?;
        if by_position > 0 {
            tracing::warn!(
                entries = by_position,
                "the log holds state written by log format 1 or 2, which gave each step's \
                 position in the app spec rather than its name: it goes to the stateful steps at \
                 those positions in this application, as in the version that wrote it (run that \
                 version if another one wrote this log)"
            );
        }
        Ok(recovery)
    }

    pub(crate) fn replayed_messages(&self) -> usize {
        self.replay.iter().map(|r| r.frames.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wallaroo_component::{StepKind, StepSpec};
    use wallaroo_wal::{StateSteps, StreamPosition};

    fn spec(steps: &[(&str, StepKind)]) -> StatefulSteps {
        let steps: Vec<StepSpec> = steps
            .iter()
            .map(|(name, kind)| StepSpec {
                name: name.to_string(),
                kind: *kind,
            })
            .collect();
        StatefulSteps::of(&steps)
    }

    /// The application most tests run: a decoder, then the stateful step "count" at
    /// position 1.
    fn counter() -> StatefulSteps {
        spec(&[("decode", StepKind::Decoder), ("count", StepKind::Stateful)])
    }

    fn read(log: Vec<Record>, sinks: usize, upto: Option<u64>) -> Recovery {
        Recovery::from_log(numbered(log), sinks, upto, &counter()).unwrap()
    }

    /// Records with their LSNs, from 1.
    fn numbered(log: Vec<Record>) -> Vec<(Lsn, Record)> {
        (1..).zip(log).collect()
    }

    /// State of "count", as the counter application logs it.
    fn state(checkpoint: u64, key: &str, value: u8) -> Record {
        Record::State {
            checkpoint,
            steps: StateSteps::Named(vec!["count".into()]),
            entries: vec![KeyState {
                step: 0,
                key: key.into(),
                value: vec![value],
            }],
        }
    }

    fn input(stream: u64, seq: u64, frames: &[&str]) -> Record {
        Record::Input {
            source: 0,
            stream,
            seq,
            time: seq,
            frames: frames.iter().map(|f| f.as_bytes().to_vec()).collect(),
        }
    }

    fn commit(checkpoint: u64, cut: Lsn, next_seq: u64) -> Record {
        Record::Commit {
            checkpoint,
            cut,
            full: false,
            streams: vec![StreamPosition {
                source: 0,
                stream: 9,
                next_seq,
            }],
        }
    }

    #[test]
    fn the_last_commit_wins_and_half_written_checkpoints_are_ignored() {
        let log = vec![
            input(9, 0, &["a", "b"]), // 1
            state(1, "a", 1),         // 2 (checkpoint 1, cut 2)
            commit(1, 2, 2),          // 3
            input(9, 2, &["c"]),      // 4
            input(0, 0, &["plain"]),  // 5
            state(2, "a", 2),         // 6 (checkpoint 2, cut 6)
            state(2, "c", 1),         // 7
            commit(2, 6, 3),          // 8
            input(9, 3, &["d", "e"]), // 9
            state(3, "a", 9),         // 10: checkpoint 3 never committed
            Record::Output {
                epoch: 3,
                sink: 0,
                payloads: vec![b"lost".to_vec()],
            },
        ];
        let r = read(log, 1, None);
        assert_eq!(r.checkpoint, 2);
        assert_eq!(r.highest_seen, 3);
        assert_eq!(r.state[&(1, b"a".to_vec())], vec![2]);
        assert_eq!(r.state[&(1, b"c".to_vec())], vec![1]);
        assert_eq!(r.replay.len(), 1);
        assert_eq!(r.replayed_messages(), 2);
        assert_eq!(r.streams[&(0, 9)], 5);
        assert!(r.unreleased.is_empty(), "epoch 3 never committed");
    }

    #[test]
    fn committed_output_after_the_last_release_is_kept_in_order() {
        let out = |epoch, p: &str| Record::Output {
            epoch,
            sink: 1,
            payloads: vec![p.as_bytes().to_vec()],
        };
        let log = vec![
            out(1, "one"),
            commit(1, 1, 0),
            Record::Released { epoch: 1 },
            out(2, "two"),
            commit(2, 3, 0),
            out(3, "three"),
            commit(3, 6, 0),
        ];
        let r = read(log, 2, None);
        assert_eq!(r.released, 1);
        let epochs: Vec<_> = r.unreleased.keys().copied().collect();
        assert_eq!(epochs, vec![2, 3]);
        assert_eq!(r.unreleased[&2].1[1], vec![b"two".to_vec()]);
        assert!(r.unreleased[&2].1[0].is_empty());
        assert!(r.replay.is_empty());
    }

    #[test]
    fn a_cluster_rolls_back_past_a_commit_only_this_node_made() {
        let out = |epoch, p: &str| Record::Output {
            epoch,
            sink: 0,
            payloads: vec![p.as_bytes().to_vec()],
        };
        let log = vec![
            input(9, 0, &["a"]), // 1
            state(1, "a", 1),    // 2
            out(1, "a 1"),       // 3
            commit(1, 2, 1),     // 4: committed by the whole cluster
            input(9, 1, &["a"]), // 5
            state(2, "a", 2),    // 6
            out(2, "a 2"),       // 7
            commit(2, 6, 2),     // 8: prepared here, never committed everywhere
        ];
        let r = read(log, 1, Some(1));
        assert_eq!(r.checkpoint, 1);
        assert_eq!(r.highest_seen, 2, "new checkpoints are numbered above 2");
        assert_eq!(r.state[&(1, b"a".to_vec())], vec![1]);
        assert_eq!(
            r.replayed_messages(),
            1,
            "the input after checkpoint 1 runs again"
        );
        assert_eq!(r.streams[&(0, 9)], 2);
        let epochs: Vec<_> = r.unreleased.keys().copied().collect();
        assert_eq!(
            epochs,
            vec![1],
            "epoch 2's output is made again by the replay"
        );
    }

    /// A node rolled back past its own commit of 2, logged the rollback, and committed 3 with
    /// the cluster: at the next recovery, checkpoint 2's state must not come back.
    #[test]
    fn a_checkpoint_voided_by_a_rollback_stays_void_after_later_commits() {
        let log = vec![
            input(9, 0, &["a"]), // 1
            state(1, "a", 1),    // 2
            commit(1, 2, 1),     // 3: the cluster's
            input(9, 1, &["b"]), // 4
            state(2, "a", 7),    // 5: prepared here only
            state(2, "b", 7),    // 6
            commit(2, 5, 2),     // 7
            Record::Rollback { to: 1 },
            state(3, "c", 1), // 9: checkpoint 3, after the replay of 4
            commit(3, 9, 2),  // 10: the cluster's
        ];
        let before = read(log[..7].to_vec(), 0, Some(1));
        assert!(before.rolls_back, "a commit above 1 is not yet voided");
        let r = read(log.clone(), 0, Some(3));
        assert_eq!(r.checkpoint, 3);
        assert!(!r.rolls_back);
        assert_eq!(
            r.state[&(1, b"a".to_vec())],
            vec![1],
            "not checkpoint 2's 7"
        );
        assert!(
            !r.state.contains_key(&(1, b"b".to_vec())),
            "checkpoint 2 is void"
        );
        assert_eq!(r.highest_seen, 3);
        // Without the rollback record, checkpoint 2 would count again.
        let mut unmarked = log;
        unmarked.remove(7);
        let wrong = read(unmarked, 0, Some(3));
        assert_eq!(wrong.state[&(1, b"a".to_vec())], vec![7]);
    }

    #[test]
    fn without_a_commit_everything_is_replayed() {
        let log = vec![input(0, 0, &["x"]), state(1, "x", 1), input(0, 0, &["y"])];
        let r = read(log, 0, None);
        assert_eq!(r.checkpoint, 0);
        assert!(r.state.is_empty());
        assert_eq!(r.replayed_messages(), 2);
    }

    fn key_state(step: u32, key: &str, value: u8) -> KeyState {
        KeyState {
            step,
            key: key.into(),
            value: vec![value],
        }
    }

    /// Checkpoint 1 of "count" (keys a = 3, b = 1) and of "sum" (key a = 7), as version 1 of
    /// an application (decode, count, sum) logs it, then its commit.
    fn version_1_log() -> Vec<Record> {
        vec![
            Record::State {
                checkpoint: 1,
                steps: StateSteps::Named(vec!["count".into(), "sum".into()]),
                entries: vec![
                    key_state(0, "a", 3),
                    key_state(0, "b", 1),
                    key_state(1, "a", 7),
                ],
            },
            commit(1, 2, 0),
        ]
    }

    #[test]
    fn keys_removed_in_a_committed_checkpoint_are_not_restored_and_may_come_back_later() {
        let removed = |checkpoint, keys: &[(u32, &str)]| Record::Removed {
            checkpoint,
            steps: StateSteps::Named(vec!["count".into(), "sum".into()]),
            keys: keys
                .iter()
                .map(|(s, k)| (*s, k.as_bytes().to_vec()))
                .collect(),
        };
        let mut log = version_1_log();
        log.push(removed(2, &[(0, "a"), (1, "a")]));
        log.push(commit(2, 4, 0));
        // Key b expires in checkpoint 3, which never committed: it stays.
        log.push(removed(3, &[(0, "b")]));
        let v1 = spec(&[
            ("decode", StepKind::Decoder),
            ("count", StepKind::Stateful),
            ("sum", StepKind::Stateful),
        ]);
        let r = Recovery::from_log(numbered(log.clone()), 0, None, &v1).unwrap();
        assert_eq!(r.checkpoint, 2);
        assert_eq!(r.state, [((1, b"b".to_vec()), vec![1])].into());
        // Key a gets state again in checkpoint 4.
        log.push(Record::State {
            checkpoint: 4,
            steps: StateSteps::Named(vec!["count".into()]),
            entries: vec![key_state(0, "a", 9)],
        });
        log.push(commit(4, 7, 0));
        let r = Recovery::from_log(numbered(log), 0, None, &v1).unwrap();
        let expected: StateMap =
            [((1, b"a".to_vec()), vec![9]), ((1, b"b".to_vec()), vec![1])].into();
        assert_eq!(r.state, expected);
    }

    #[test]
    fn state_goes_to_its_step_by_name_when_a_new_version_inserts_a_step_before_it() {
        let v2 = spec(&[
            ("decode", StepKind::Decoder),
            ("clean", StepKind::Stateless),
            ("count", StepKind::Stateful),
            ("sum", StepKind::Stateful),
            ("average", StepKind::Stateful),
        ]);
        let r = Recovery::from_log(numbered(version_1_log()), 0, None, &v2).unwrap();
        let expected: StateMap = [
            ((2, b"a".to_vec()), vec![3]),
            ((2, b"b".to_vec()), vec![1]),
            ((3, b"a".to_vec()), vec![7]),
        ]
        .into();
        // Not at positions 1 and 2 ("clean", and "count" with "sum"'s state); "average",
        // which the log does not know, starts empty.
        assert_eq!(r.state, expected);
    }

    #[test]
    fn state_of_a_step_the_new_version_lacks_is_refused_with_the_steps_name() {
        let v2 = spec(&[
            ("decode", StepKind::Decoder),
            ("count", StepKind::Stateful),
            ("total", StepKind::Stateful),
        ]);
        let err = Recovery::from_log(numbered(version_1_log()), 0, None, &v2)
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(text.contains("stateful step 'sum' (1 key)"), "{text}");
        assert!(!text.contains("'count'"), "{text}");
        // A step of that name that is no longer stateful does not take the state either.
        let stateless = spec(&[("count", StepKind::Stateful), ("sum", StepKind::Stateless)]);
        let err = Recovery::from_log(numbered(version_1_log()), 0, None, &stateless)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("'sum'"), "{err}");
    }

    #[test]
    fn state_of_a_step_the_new_version_lacks_is_dropped_when_asked_and_counted() {
        let v2 = spec(&[("decode", StepKind::Decoder), ("count", StepKind::Stateful)])
            .dropping(&["sum".into(), "count".into()]);
        let r = Recovery::from_log(numbered(version_1_log()), 0, None, &v2).unwrap();
        // "sum" is gone with its key; "count", which this version has, keeps its state.
        assert_eq!(r.dropped, [("sum".to_string(), 1)].into());
        let expected: StateMap =
            [((1, b"a".to_vec()), vec![3]), ((1, b"b".to_vec()), vec![1])].into();
        assert_eq!(r.state, expected);
    }

    #[test]
    fn of_two_stateful_steps_sharing_a_name_the_one_a_new_version_lacks_is_named_by_its_order() {
        let log = vec![
            Record::State {
                checkpoint: 1,
                steps: StateSteps::Named(vec!["count".into(), "count".into()]),
                entries: vec![key_state(0, "a", 1), key_state(1, "a", 2)],
            },
            commit(1, 2, 0),
        ];
        let both = spec(&[
            ("count", StepKind::Stateful),
            ("split", StepKind::Stateless),
            ("count", StepKind::Stateful),
        ]);
        let r = Recovery::from_log(numbered(log.clone()), 0, None, &both).unwrap();
        assert_eq!(r.state[&(0, b"a".to_vec())], vec![1]);
        assert_eq!(r.state[&(2, b"a".to_vec())], vec![2]);
        let err = Recovery::from_log(numbered(log), 0, None, &counter())
            .err()
            .expect("refused");
        assert!(err.to_string().contains("step 'count' #2 (1 key)"), "{err}");
    }

    #[test]
    fn state_of_an_unknown_step_in_a_checkpoint_never_committed_is_no_obstacle() {
        let mut log = version_1_log();
        log.push(Record::State {
            checkpoint: 2,
            steps: StateSteps::Named(vec!["gone".into()]),
            entries: vec![key_state(0, "x", 1)],
        });
        let v1 = spec(&[
            ("decode", StepKind::Decoder),
            ("count", StepKind::Stateful),
            ("sum", StepKind::Stateful),
        ]);
        let r = Recovery::from_log(numbered(log), 0, None, &v1).unwrap();
        assert_eq!(r.state.len(), 3, "checkpoint 1's keys");
    }

    #[test]
    fn state_logged_by_position_goes_to_the_step_at_that_position() {
        // Log formats 1 and 2: the step's position in the app spec that wrote it.
        let log = vec![
            Record::State {
                checkpoint: 1,
                steps: StateSteps::Positions,
                entries: vec![key_state(1, "a", 3)],
            },
            commit(1, 2, 0),
        ];
        let r = Recovery::from_log(numbered(log.clone()), 0, None, &counter()).unwrap();
        assert_eq!(r.state[&(1, b"a".to_vec())], vec![3]);
        // A position that is not a stateful step in this version is refused, not attached.
        let moved = spec(&[
            ("decode", StepKind::Decoder),
            ("clean", StepKind::Stateless),
            ("count", StepKind::Stateful),
        ]);
        let err = Recovery::from_log(numbered(log), 0, None, &moved)
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(text.contains("position 1"), "{text}");
        assert!(text.contains("now 'clean', not stateful"), "{text}");
    }

    /// A format-2 log continued by this build: its first checkpoint after the start is full and
    /// names every key's step, so a later version with other positions reads the log.
    #[test]
    fn state_before_the_last_full_checkpoint_is_superseded_positions_and_all() {
        let log = vec![
            Record::State {
                checkpoint: 1,
                steps: StateSteps::Positions,
                entries: vec![key_state(1, "a", 3)],
            },
            commit(1, 2, 0),
            state(2, "a", 4),
            Record::Commit {
                checkpoint: 2,
                cut: 4,
                full: true,
                streams: Vec::new(),
            },
            state(3, "b", 1),
            commit(3, 6, 0),
        ];
        let moved = spec(&[
            ("decode", StepKind::Decoder),
            ("clean", StepKind::Stateless),
            ("count", StepKind::Stateful),
        ]);
        let r = Recovery::from_log(numbered(log.clone()), 0, None, &moved).unwrap();
        let expected: StateMap =
            [((2, b"a".to_vec()), vec![4]), ((2, b"b".to_vec()), vec![1])].into();
        assert_eq!(r.state, expected);
        // Rolled back below the full checkpoint, the positions count again.
        let err = Recovery::from_log(numbered(log), 0, Some(1), &moved)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("position 1"), "{err}");
    }
}
