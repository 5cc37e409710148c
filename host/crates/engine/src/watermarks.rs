//! How far event time has got on one worker's inputs: its watermarks.
//!
//! A watermark `w` says that no message with an event time below `w` is still to come. A
//! worker's sources give it one directly: source input is stamped with the time it arrives,
//! and a tick queued behind it says that everything stamped earlier is ahead of it (see
//! `Shared::stamp`). Routed input comes from every worker of the cluster, itself included,
//! and each of them says in order with its batches how far its own output has got.
//!
//! Output carries the event time of the input it came from, so a worker's output has got as
//! far as its input. But a worker routes to itself and to workers that route back to it, so
//! one watermark per worker would wait on itself forever. Watermarks are kept per level
//! instead: level 0 is the worker's sources, and level `k + 1` is the least of every input
//! channel's level `k`, which is what a segment `k + 1` routing steps from a source can still
//! receive. Levels only depend on the level below, so they all move; the deepest one is what
//! the instance is advanced to, since a window may be in any segment.
//!
//! A window's output carries the time the window ended, which its watermark has passed by
//! then: windows fed by another window's output would see it as late. Until watermarks say
//! what each window step can still emit, such pipelines are not supported (the SDKs refuse
//! them).

use wallaroo_component::{StepKind, StepSpec};

use crate::node::Placement;

/// One level of a worker's watermark: how far event time has got there, and whether anything
/// feeds it at all. An idle level (sources that sent nothing for [`IDLE_AFTER`], or only such
/// sources upstream) holds nobody back: others take the least of the levels that are not
/// idle, and a level with no such input keeps its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Level {
    pub time: u64,
    pub idle: bool,
}

impl Level {
    const fn at(time: u64) -> Level {
        Level { time, idle: false }
    }

    /// The least time of `levels` that are not idle; idle (at the least time of all) when
    /// every one is, or there are none.
    pub fn least(levels: impl IntoIterator<Item = Level>) -> Level {
        let mut least = Level {
            time: u64::MAX,
            idle: true,
        };
        for level in levels {
            if level.idle == least.idle {
                least.time = least.time.min(level.time);
            } else if !level.idle {
                least = level;
            }
        }
        least
    }

    /// This level, moved on to `least`, the least of its inputs: never back in time, and
    /// keeping its time while idle.
    fn moved_to(self, least: Level) -> Level {
        Level {
            time: if least.idle {
                self.time
            } else {
                self.time.max(least.time)
            },
            idle: least.idle,
        }
    }
}

/// A source whose event times come from the data and that sent nothing for this long no longer
/// holds the watermark back: its next messages may be late.
pub(crate) const IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) struct Watermarks {
    /// Per level, this worker's watermark.
    levels: Vec<Level>,
    /// Per input channel (the node's workers, then the cluster's nodes by index): the levels
    /// it last sent, or None for a channel that is not an input (this node's own index, a
    /// node not in the cluster).
    channels: Vec<Option<Vec<Level>>>,
}

impl Watermarks {
    /// The watermarks of a worker of a node with `workers` workers, in the cluster `placement`
    /// describes (None: a node alone), running `steps`: as many levels as a message can take
    /// routing steps, all at 0.
    pub(crate) fn new(steps: &[StepSpec], workers: usize, placement: Option<&Placement>) -> Self {
        // Every key_by routes, and so may a stateful step reached before any key_by: a message
        // can take no more routing steps than there are of both.
        let routing = steps
            .iter()
            .filter(|s| matches!(s.kind, StepKind::KeyBy | StepKind::Stateful))
            .count();
        let depth = routing + 1;
        let unheard = vec![Level::default(); depth];
        let mut channels = vec![Some(unheard.clone()); workers];
        if let Some(p) = placement {
            let nodes = p.table.iter().map(|&n| n as usize).max().unwrap_or(0) + 1;
            let mut remote = vec![None; nodes.max(p.node + 1)];
            for &node in p.table.iter() {
                let node = node as usize;
                if node != p.node {
                    remote[node] = Some(unheard.clone());
                }
            }
            channels.extend(remote);
        }
        Self {
            levels: unheard,
            channels,
        }
    }

    /// A tick: the sources' watermark is the least of `ingest` (the tick's time, where the
    /// application has a source stamped by the host) and `data` (the latest event time seen
    /// from sources whose times come from the data, where they sent something lately), idle
    /// with neither. True when a level moved.
    pub(crate) fn tick(&mut self, ingest: Option<u64>, data: Option<u64>) -> bool {
        let old = self.levels[0];
        self.levels[0] = old.moved_to(Level::least(ingest.into_iter().chain(data).map(Level::at)));
        let moved = self.levels[0] != old;
        self.settle() || moved
    }

    /// Channel `channel` sent its levels. True when a level of this worker moved.
    pub(crate) fn heard(&mut self, channel: usize, levels: &[Level]) -> bool {
        let Some(Some(known)) = self.channels.get_mut(channel) else {
            return false;
        };
        for (known, heard) in known.iter_mut().zip(levels) {
            *known = Level {
                time: known.time.max(heard.time),
                idle: heard.idle,
            };
        }
        self.settle()
    }

    /// Recomputes the levels above 0 from the channels. True when one moved.
    fn settle(&mut self) -> bool {
        let mut moved = false;
        for level in 1..self.levels.len() {
            let below = self.levels[level - 1];
            let inputs = self.channels.iter().flatten().map(|c| c[level - 1]);
            let old = self.levels[level];
            let new = old.moved_to(Level::least(inputs.chain([below])));
            if new != old {
                self.levels[level] = new;
                moved = true;
            }
        }
        moved
    }

    pub(crate) fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// The watermark of the segments furthest from a source, what the instance can be
    /// advanced to; None while idle.
    pub(crate) fn deepest(&self) -> Option<u64> {
        let deepest = self.levels.last().expect("at least one level");
        (!deepest.idle).then_some(deepest.time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(kinds: &[StepKind]) -> Vec<StepSpec> {
        kinds
            .iter()
            .map(|&kind| StepSpec {
                name: format!("{kind:?}"),
                kind,
            })
            .collect()
    }

    fn word_count() -> Vec<StepSpec> {
        use StepKind::*;
        steps(&[Decoder, Stateless, KeyBy, Stateful, Encoder])
    }

    fn at(times: &[u64]) -> Vec<Level> {
        times.iter().map(|&time| Level::at(time)).collect()
    }

    #[test]
    fn the_least_level_is_that_of_the_inputs_not_idle_or_idle_when_all_are() {
        let idle = |time| Level { time, idle: true };
        assert_eq!(
            Level::least([idle(1), Level::at(7), Level::at(5)]),
            Level::at(5)
        );
        assert_eq!(Level::least([idle(9), idle(4)]), idle(4));
        assert!(Level::least([]).idle);
        // An idle level keeps its time; an active one never goes back.
        assert_eq!(Level::at(6).moved_to(idle(9)), idle(6));
        assert_eq!(Level::at(6).moved_to(Level::at(2)), Level::at(6));
    }

    fn times(w: &Watermarks) -> Vec<u64> {
        w.levels().iter().map(|l| l.time).collect()
    }

    #[test]
    fn a_lone_worker_advances_once_it_hears_its_own_levels() {
        let mut w = Watermarks::new(&word_count(), 1, None);
        assert_eq!(times(&w), [0, 0, 0]);
        assert!(w.tick(Some(10), None));
        // Its routed input may still hold anything until it says otherwise, to itself.
        assert_eq!(w.deepest(), Some(0));
        assert!(w.heard(0, &at(&[10, 0, 0])));
        assert_eq!(times(&w), [10, 10, 0]);
        assert!(w.heard(0, &at(&[10, 10, 0])));
        assert_eq!(w.deepest(), Some(10));
        assert!(
            !w.heard(0, &at(&[10, 10, 10])),
            "nothing above the deepest level"
        );
    }

    struct Nobody(tokio::sync::Notify);

    impl crate::node::Peers for Nobody {
        fn send(&self, _: usize, _: u32, _: u64, _: Vec<wallaroo_component::Message>) {}
        fn watermark(&self, _: usize, _: u64, _: &[Level]) {}
        fn congested(&self) -> bool {
            false
        }
        fn relieved(&self) -> &tokio::sync::Notify {
            &self.0
        }
    }

    #[test]
    fn a_level_is_the_least_of_every_worker_and_node() {
        let placement = Placement {
            node: 1,
            table: std::sync::Arc::new(vec![0, 1, 2, 0, 1, 2]),
            peers: std::sync::Arc::new(Nobody(Default::default())),
            recover_to: 0,
        };
        let mut w = Watermarks::new(&word_count(), 2, Some(&placement));
        w.tick(Some(50), None);
        for channel in [0, 1, 2, 4] {
            w.heard(channel, &at(&[40 + channel as u64, 0, 0]));
        }
        // Channel 3 is this node itself, which its own workers speak for.
        assert_eq!(times(&w)[1], 40);
        assert!(!w.heard(3, &at(&[1000, 1000, 1000])));
        assert!(!w.heard(9, &at(&[1000, 1000, 1000])), "not a channel");
        w.heard(0, &at(&[45, 0, 0]));
        assert_eq!(times(&w)[1], 41);
    }

    #[test]
    fn levels_never_go_back_and_a_level_never_passes_the_one_below() {
        let mut w = Watermarks::new(&word_count(), 1, None);
        w.tick(Some(10), None);
        w.heard(0, &at(&[100, 100, 100]));
        assert_eq!(times(&w), [10, 10, 10]);
        assert!(!w.tick(Some(5), None));
        assert!(!w.heard(0, &at(&[1, 1, 1])));
        assert_eq!(times(&w), [10, 10, 10]);
    }

    #[test]
    fn data_times_hold_the_watermark_back_until_their_source_is_idle() {
        let mut w = Watermarks::new(&word_count(), 2, None);
        // Worker 1 has no source sending data: idle, it holds nobody back.
        let idle = vec![
            Level {
                time: 0,
                idle: true
            };
            3
        ];
        w.heard(1, &idle);
        w.tick(None, Some(1_000));
        w.heard(0, w.levels().to_vec().as_slice());
        w.heard(0, w.levels().to_vec().as_slice());
        assert_eq!(w.deepest(), Some(1_000));
        // Data from 2019 is not overtaken by the clock where both kinds of source feed a worker.
        w.tick(Some(u64::MAX / 2), Some(1_500));
        assert_eq!(w.levels()[0].time, 1_500);
        // Everything idle: the watermark keeps its time and fires nothing more.
        w.tick(None, None);
        w.heard(0, w.levels().to_vec().as_slice());
        w.heard(0, w.levels().to_vec().as_slice());
        assert_eq!(w.deepest(), None);
        assert_eq!(w.levels()[2].time, 1_000);
    }
}
