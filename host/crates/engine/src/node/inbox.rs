//! The workers' inboxes and the state every part of a node shares: the work items a worker
//! takes ([`Work`]) and hands back at a checkpoint ([`Part`]), and [`Shared`], which owns the
//! inboxes, the source credits, the in-flight counts that alignment and drain read, the
//! progress and checkpoint-nudge signals, and the node's failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wallaroo_component::Message;
use wallaroo_wal::{KeyState, StateSteps};

use super::{Peers, Resilience};
use crate::DeadLetters;
use crate::log::Log;
use crate::metrics::{Metrics, NodeCounters};

/// The watermark once every stream has ended: no event time is still to come.
pub(crate) const END_OF_TIME: u64 = u64::MAX;

pub(crate) enum Work {
    Batch {
        segment: u32,
        messages: Vec<Message>,
        /// Held until the batch is processed: how sources (and peers) feel backpressure.
        credit: Option<Arc<OwnedSemaphorePermit>>,
        /// Source input (logged, and cut by barriers), rather than a routed batch.
        from_source: bool,
        /// For a routed batch, how many snapshots the worker that made it had taken. A worker
        /// that has taken fewer takes its own snapshot first: the batch comes from input after
        /// the cut.
        epoch: u64,
    },
    /// A checkpoint's barrier: source input after it belongs to the next epoch.
    Barrier,
    /// Every source batch this worker will be handed from now on has an event time of at least
    /// `time` (see [`Shared::stamp`]): the worker's sources' watermark. Taken in order with
    /// source input.
    Tick {
        time: u64,
    },
    /// Input channel `channel` (a worker of this node, or [`Shared::inboxes`]`.len()` plus a
    /// node's index for another node) will send nothing more whose event time is below
    /// `levels[k]` into a segment `k + 1` routing steps from a source. Taken in order with the
    /// channel's routed batches, `epoch` being the sender's as for them.
    Watermark {
        channel: usize,
        epoch: u64,
        levels: Vec<crate::Level>,
    },
    /// Every worker is at the barrier and nothing routed is in flight: hand over the state
    /// changed since the last checkpoint (every key's, if `full`) and the output held.
    Snapshot {
        full: bool,
        reply: flume::Sender<Part>,
    },
    /// Hand over up to `per_step` keys' state of each stateful step (a new version's check
    /// that it can take the state over): (step position, key, state).
    Sample {
        per_step: usize,
        reply: flume::Sender<Vec<SampledState>>,
    },
    Stop,
}

/// One key's state in a sample: (step position, key, state).
pub(crate) type SampledState = (u32, Vec<u8>, Vec<u8>);

/// One worker's share of a checkpoint.
pub(crate) struct Part {
    pub(crate) worker: usize,
    /// The steps `entries` refer to.
    pub(crate) steps: StateSteps,
    pub(crate) entries: Vec<KeyState>,
    /// (step, key) of the keys whose state was removed (expired) since the last checkpoint,
    /// the step as `steps` says.
    pub(crate) removed: Vec<(u32, Vec<u8>)>,
    /// Per sink, the output held since the last checkpoint (exactly-once).
    pub(crate) held: Vec<Vec<Vec<u8>>>,
}

pub(crate) struct Shared {
    pub(crate) inboxes: Vec<flume::Sender<Work>>,
    pub(super) credits: Vec<Arc<Semaphore>>,
    /// Work items sent and not yet processed; zero with all sources stopped means drained.
    pub(super) in_flight: AtomicUsize,
    /// Routed batches sent and not yet processed.
    pub(crate) routed_in_flight: AtomicUsize,
    /// Workers waiting at the current checkpoint's barrier.
    pub(crate) aligned: AtomicUsize,
    /// A worker holds more output than it should: take the next checkpoint now.
    pub(crate) checkpoint_wanted: AtomicBool,
    pub(super) stopping: AtomicBool,
    /// Stop now, leaving queued work undone (a cluster rolling back to a checkpoint).
    pub(crate) aborting: AtomicBool,
    /// Why the node cannot go on (a worker that cannot make a guest instance), once it cannot:
    /// see [`Node::failed`](super::Node::failed).
    pub(super) failure: tokio::sync::watch::Sender<Option<String>>,
    pub(super) next_worker: AtomicUsize,
    /// Routed batches handed to other nodes, and received from them.
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) peers: Option<Arc<dyn Peers>>,
    pub(crate) counters: NodeCounters,
    pub(crate) metrics: Metrics,
    pub(crate) dead_letters: DeadLetters,
    pub(crate) log: Option<Arc<Log>>,
    pub(crate) resilience: Resilience,
    /// Signalled (coalesced) when work is done or a worker reaches a barrier: what alignment
    /// and drain wait on.
    pub(super) progress: (flume::Sender<()>, flume::Receiver<()>),
    /// Signalled when a worker asks for a checkpoint now.
    pub(super) nudge: (flume::Sender<()>, flume::Receiver<()>),
    /// The last event time a source batch or a tick was stamped with: see [`Shared::stamp`].
    pub(crate) source_clock: std::sync::Mutex<u64>,
    /// Which sources have ended.
    pub(crate) ends: std::sync::Mutex<super::ends::Ends>,
    /// The node is to finish once its input has ended (`NodeConfig::finish_at_end`).
    pub(crate) finish: bool,
    /// Workers whose watermark has reached the end of time.
    pub(crate) at_end: AtomicUsize,
    /// Every source's stream has ended (see [`Shared::sources_ended`]): ticks carry the end of
    /// time.
    pub(crate) end_of_input: AtomicBool,
    /// The sources stopped for good (a stop, a change): no more ticks, so event time stands
    /// still and nothing fires or expires past the checkpoint the node stops at.
    pub(crate) time_stopped: AtomicBool,
}

/// Nanoseconds since the Unix epoch, now.
pub(crate) fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64)
}

impl Shared {
    pub(crate) fn enqueue(&self, worker: usize, work: Work) {
        let (routed, n) = match &work {
            Work::Batch {
                from_source,
                messages,
                ..
            } => (!from_source, messages.len()),
            _ => (false, 0),
        };
        self.counters.backlog.inc_by(n as i64);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if routed {
            self.routed_in_flight.fetch_add(1, Ordering::SeqCst);
        }
        if self.inboxes[worker].send(work).is_err() {
            // Only after shutdown, when every source has stopped and nothing is in flight.
            self.done(!routed, n);
        }
    }

    pub(crate) fn done(&self, from_source: bool, messages: usize) {
        self.counters.backlog.dec_by(messages as i64);
        if !from_source {
            self.routed_in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.progressed();
    }

    /// Sources get no more credits, and a source waiting for the network is let go.
    pub(super) fn stop_taking_input(&self) {
        self.stop_time();
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(peers) = &self.peers {
            peers.relieved().notify_waiters();
        }
    }

    /// Wakes whoever waits for progress (alignment, drain).
    pub(crate) fn progressed(&self) {
        let _ = self.progress.0.try_send(());
    }

    /// Waits until some work is done or a worker reaches a barrier, or `timeout` passed.
    pub(crate) fn wait_progress(&self, timeout: Duration) {
        let _ = self.progress.1.recv_timeout(timeout);
    }

    /// A worker holds too much output: asks the coordinator for a checkpoint now.
    pub(crate) fn want_checkpoint(&self) {
        self.checkpoint_wanted.store(true, Ordering::SeqCst);
        let _ = self.nudge.0.try_send(());
    }

    pub(crate) fn in_flight(&self) -> usize {
        // A failed log commits nothing more, so output held back (and the source input a
        // worker holding too much output keeps waiting) can never go; a failed node's workers
        // take no more work: nothing to wait for.
        if self.log.as_ref().is_some_and(|l| l.failed()) || self.has_failed() {
            return 0;
        }
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until nothing is queued (see [`Shared::in_flight`]) or `deadline`.
    pub(crate) fn wait_idle(&self, deadline: Instant) {
        loop {
            let now = Instant::now();
            if self.in_flight() == 0 || now >= deadline {
                return;
            }
            self.wait_progress(deadline - now);
        }
    }

    /// The node cannot go on (`why`): its sources stop accepting, and its owner, waiting on
    /// [`Node::failed`](super::Node::failed), stops it. The first failure is the one kept.
    pub(crate) fn fail(&self, why: String) {
        self.failure.send_if_modified(|failure| {
            let first = failure.is_none();
            if first {
                *failure = Some(why);
            }
            first
        });
        self.stopping.store(true, Ordering::SeqCst);
        for credits in &self.credits {
            credits.close();
        }
    }

    pub(crate) fn has_failed(&self) -> bool {
        self.failure.borrow().is_some()
    }

    /// Barriers and snapshot requests: not work a drain waits for.
    pub(crate) fn control(&self, worker: usize, work: Work) {
        let _ = self.inboxes[worker].send(work);
    }

    pub(crate) fn stop_time(&self) {
        self.time_stopped.store(true, Ordering::SeqCst);
    }

    /// Where this node's input stands (None unless it is to finish at the end).
    pub(crate) fn input_end(&self) -> Option<super::ends::InputEnd> {
        if !self.finish {
            return None;
        }
        let ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        Some(ends.input(|source| match &self.log {
            Some(log) => log.streams_of(source),
            None => Vec::new(),
        }))
    }

    /// The input has ended, for a node asked to finish at the end: a node alone decides so
    /// itself, one in a cluster is told by the coordinator (which sees every node's input).
    pub(crate) fn sources_ended(&self) -> bool {
        if self.end_of_input.load(Ordering::SeqCst) {
            return true;
        }
        let over = self.peers.is_none() && self.input_end().is_some_and(|i| i.over());
        if over {
            self.end_of_input.store(true, Ordering::SeqCst);
        }
        over
    }

    /// Reads or records a change of a source's end.
    pub(crate) fn ends<T>(&self, change: impl FnOnce(&mut super::ends::Ends) -> T) -> T {
        change(&mut self.ends.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The event time of source input received now, never less than one stamped before.
    ///
    /// A source stamps its batch and hands it to a worker's inbox under the lock this takes
    /// `clock` from, and ticks are stamped and queued under it too: so a tick of time T comes
    /// after every batch stamped earlier than T in each inbox, and every batch after it is
    /// stamped T or later. That is what makes a tick a watermark.
    pub(crate) fn stamp(clock: &mut u64) -> u64 {
        *clock = (*clock).max(now_nanos());
        *clock
    }

    /// Queues a tick into every worker: the sources' watermark is now, or the end of time
    /// once every source has ended (with a node asked to finish). False once no worker takes
    /// work any more.
    pub(crate) fn tick(&self) -> bool {
        if self.time_stopped.load(Ordering::SeqCst) {
            return true;
        }
        let ended = self.sources_ended();
        let mut clock = self.source_clock.lock().unwrap_or_else(|p| p.into_inner());
        let time = if ended {
            END_OF_TIME
        } else {
            Self::stamp(&mut clock)
        };
        let mut open = false;
        for inbox in &self.inboxes {
            open |= inbox.send(Work::Tick { time }).is_ok();
        }
        open
    }
}
