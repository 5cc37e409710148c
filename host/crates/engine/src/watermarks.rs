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

pub(crate) struct Watermarks {
    /// Per level, this worker's watermark.
    levels: Vec<u64>,
    /// Per input channel (the node's workers, then the cluster's nodes by index): the levels
    /// it last sent, or None for a channel that is not an input (this node's own index, a
    /// node not in the cluster).
    channels: Vec<Option<Vec<u64>>>,
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
        let mut channels = vec![Some(vec![0; depth]); workers];
        if let Some(p) = placement {
            let nodes = p.table.iter().map(|&n| n as usize).max().unwrap_or(0) + 1;
            let mut remote = vec![None; nodes.max(p.node + 1)];
            for &node in p.table.iter() {
                let node = node as usize;
                if node != p.node {
                    remote[node] = Some(vec![0; depth]);
                }
            }
            channels.extend(remote);
        }
        Self {
            levels: vec![0; depth],
            channels,
        }
    }

    /// The sources' watermark moved to `time`. True when a level moved.
    pub(crate) fn tick(&mut self, time: u64) -> bool {
        if time <= self.levels[0] {
            return false;
        }
        self.levels[0] = time;
        self.settle();
        true
    }

    /// Channel `channel` sent its levels. True when a level of this worker moved.
    pub(crate) fn heard(&mut self, channel: usize, levels: &[u64]) -> bool {
        let Some(Some(known)) = self.channels.get_mut(channel) else {
            return false;
        };
        for (known, &heard) in known.iter_mut().zip(levels) {
            *known = (*known).max(heard);
        }
        self.settle()
    }

    /// Recomputes the levels above 0 from the channels. True when one moved.
    fn settle(&mut self) -> bool {
        let mut moved = false;
        for level in 1..self.levels.len() {
            let least = self
                .channels
                .iter()
                .flatten()
                .map(|c| c[level - 1])
                .min()
                .unwrap_or(u64::MAX)
                .min(self.levels[level - 1]);
            if least > self.levels[level] {
                self.levels[level] = least;
                moved = true;
            }
        }
        moved
    }

    pub(crate) fn levels(&self) -> &[u64] {
        &self.levels
    }

    /// The watermark of the segments furthest from a source: what the instance can be
    /// advanced to.
    pub(crate) fn deepest(&self) -> u64 {
        *self.levels.last().expect("at least one level")
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

    #[test]
    fn a_lone_worker_advances_once_it_hears_its_own_levels() {
        let mut w = Watermarks::new(&word_count(), 1, None);
        assert_eq!(w.levels(), [0, 0, 0]);
        assert!(w.tick(10));
        // Its routed input may still hold anything until it says otherwise, to itself.
        assert_eq!(w.deepest(), 0);
        assert!(w.heard(0, &[10, 0, 0]));
        assert_eq!(w.levels(), [10, 10, 0]);
        assert!(w.heard(0, &[10, 10, 0]));
        assert_eq!(w.deepest(), 10);
        assert!(
            !w.heard(0, &[10, 10, 10]),
            "nothing above the deepest level"
        );
    }

    struct Nobody(tokio::sync::Notify);

    impl crate::node::Peers for Nobody {
        fn send(&self, _: usize, _: u32, _: u64, _: Vec<wallaroo_component::Message>) {}
        fn watermark(&self, _: usize, _: u64, _: &[u64]) {}
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
        w.tick(50);
        for channel in [0, 1, 2, 4] {
            w.heard(channel, &[40 + channel as u64, 0, 0]);
        }
        // Channel 3 is this node itself, which its own workers speak for.
        assert_eq!(w.levels()[1], 40);
        assert!(!w.heard(3, &[1000, 1000, 1000]));
        assert!(!w.heard(9, &[1000, 1000, 1000]), "not a channel");
        w.heard(0, &[45, 0, 0]);
        assert_eq!(w.levels()[1], 41);
    }

    #[test]
    fn levels_never_go_back_and_a_level_never_passes_the_one_below() {
        let mut w = Watermarks::new(&word_count(), 1, None);
        w.tick(10);
        w.heard(0, &[100, 100, 100]);
        assert_eq!(w.levels(), [10, 10, 10]);
        assert!(!w.tick(5));
        assert!(!w.heard(0, &[1, 1, 1]));
        assert_eq!(w.levels(), [10, 10, 10]);
    }
}
