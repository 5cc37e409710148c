//! Checkpoints: aligned barriers, the commit, the release of exactly-once output, compaction.
//!
//! One checkpoint, on the coordinator's thread:
//! 1. Under the log's lock, note the cut (the next LSN) and the acknowledged streams'
//!    positions, and put a barrier in every worker's inbox. Sources log and enqueue under the
//!    same lock, so each worker sees exactly the input logged before the cut ahead of its
//!    barrier.
//! 2. A worker at its barrier keeps processing routed batches (the tail of pre-cut input) but
//!    holds back source batches. Once every worker is at the barrier and no routed batch is in
//!    flight, the workers' state is the effect of precisely the input before the cut.
//! 3. Each worker hands over the state changed since the last checkpoint and the output it
//!    held; the coordinator logs them and a commit record, waits for the disk, then releases
//!    the output to the sinks. Workers go on with the next epoch while the disk syncs.
//!
//! Recovery restores the last committed checkpoint and replays input logged after its cut; an
//! epoch's output is released only after its commit, numbered by (epoch, position) so a
//! receiver drops what a release after a crash repeats.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wallaroo_wal::{Lsn, Record};

use crate::log::Log;
use crate::node::{NodeConfig, Part, Resilience, Shared, SinkBatch, Work};
use crate::recovery::{EpochOutput, Unreleased};

/// Every this many checkpoints one writes every key, so older log segments can go.
const FULL_EVERY: u32 = 20;

pub(crate) struct Coordinator {
    shared: Arc<Shared>,
    log: Arc<Log>,
    interval: Duration,
    hold_output: bool,
    sinks: Vec<flume::Sender<SinkBatch>>,
    /// How far each sink has written.
    written: Vec<Arc<AtomicU64>>,
    next: u64,
    /// Epochs released to the sinks and not yet known written, with their output's first LSN.
    unreleased: BTreeMap<u64, Lsn>,
    /// Committed output found in the log at start, to write out again first.
    rerelease: Unreleased,
    released_logged: u64,
    since_full: u32,
    last_full_cut: Option<Lsn>,
    /// The checkpoint begun and not yet prepared or committed.
    current: Option<Begun>,
    /// Acknowledged streams' positions at the current checkpoint's cut.
    streams: Vec<wallaroo_wal::StreamPosition>,
    pub(crate) last_committed: u64,
    /// Prepared (logged and durable here), waiting for the commit: its output to release.
    prepared: Option<Prepared>,
}

struct Begun {
    checkpoint: u64,
    full: bool,
    cut: Lsn,
    started: Instant,
}

struct Prepared {
    checkpoint: u64,
    full: bool,
    cut: Lsn,
    held: EpochOutput,
    started: Instant,
    keys: usize,
}

/// How far a node is with a checkpoint's alignment, for a cluster's coordinator: the cluster
/// is aligned once every node is aligned with nothing routed in flight, and the routed batches
/// sent between nodes all arrived (the sums of `sent` and `received` agree, twice running).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Alignment {
    /// Every worker is at the barrier.
    pub aligned: bool,
    /// Routed batches queued in this node and not yet processed.
    pub routed_in_flight: usize,
    /// Routed batches handed to other nodes since start.
    pub sent: u64,
    /// Routed batches taken from other nodes since start.
    pub received: u64,
}

impl Coordinator {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shared: Arc<Shared>,
        log: Arc<Log>,
        config: &NodeConfig,
        sinks: Vec<flume::Sender<SinkBatch>>,
        written: Vec<Arc<AtomicU64>>,
        next: u64,
        rerelease: Unreleased,
        released: u64,
    ) -> Self {
        Self {
            shared,
            log,
            interval: config.checkpoint_interval,
            hold_output: config.resilience == Resilience::ExactlyOnce,
            sinks,
            written,
            next,
            unreleased: BTreeMap::new(),
            rerelease,
            released_logged: released,
            // The first checkpoint after a start is full, so what came before can be dropped.
            since_full: FULL_EVERY,
            last_full_cut: None,
            current: None,
            streams: Vec::new(),
            last_committed: 0,
            prepared: None,
        }
    }

    /// The number the next checkpoint would get here: above any this node's log has seen.
    pub(crate) fn next_number(&self) -> u64 {
        self.next
    }

    /// Writes out again committed output the log held at start.
    fn rerelease(&mut self) {
        for (epoch, (lsn, per_sink)) in std::mem::take(&mut self.rerelease) {
            self.unreleased.insert(epoch, lsn);
            self.release(epoch, per_sink);
        }
    }

    pub(crate) fn run(mut self, stop: flume::Receiver<()>) {
        self.rerelease();
        let mut last = Instant::now();
        loop {
            let wanted = self.shared.checkpoint_wanted.swap(false, Ordering::SeqCst);
            if !wanted && last.elapsed() < self.interval {
                match stop.recv_timeout(Duration::from_millis(10)) {
                    Err(flume::RecvTimeoutError::Timeout) => continue,
                    // Stopping: a last checkpoint releases what is held.
                    _ => {
                        self.checkpoint();
                        return;
                    }
                }
            }
            last = Instant::now();
            if !self.checkpoint() {
                // The log has failed: nothing can commit again in this process.
                let _ = stop.recv();
                return;
            }
        }
    }

    /// Takes one checkpoint; false if the log has failed.
    fn checkpoint(&mut self) -> bool {
        let checkpoint = self.next;
        if !self.begin(checkpoint) {
            return false;
        }
        loop {
            let a = self.alignment();
            if a.aligned && a.routed_in_flight == 0 {
                break;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        self.prepare() && self.commit(checkpoint)
    }

    /// Starts checkpoint `checkpoint`: under the log's lock, notes the cut and puts a barrier
    /// in every worker's inbox. False if the log has failed.
    pub(crate) fn begin(&mut self, checkpoint: u64) -> bool {
        self.rerelease();
        if self.log.failed() {
            return false;
        }
        let started = Instant::now();
        self.next = self.next.max(checkpoint + 1);
        let full = self.since_full >= FULL_EVERY;
        let workers = self.shared.inboxes.len();
        let cut = {
            let inner = self.log.lock();
            let cut = inner.wal.next_lsn();
            self.streams = Log::stream_positions(&inner);
            for w in 0..workers {
                self.shared.control(w, Work::Barrier);
            }
            cut
        };
        self.current = Some(Begun {
            checkpoint,
            full,
            cut,
            started,
        });
        true
    }

    /// How far the workers are with the current checkpoint's barrier.
    pub(crate) fn alignment(&self) -> Alignment {
        // Routed batches before the counters of work done: a batch taken from a peer is
        // enqueued before it is counted received.
        let received = self.shared.received.load(Ordering::SeqCst);
        let routed_in_flight = self.shared.routed_in_flight.load(Ordering::SeqCst);
        Alignment {
            aligned: self.current.is_some()
                && self.shared.aligned.load(Ordering::SeqCst) >= self.shared.inboxes.len(),
            routed_in_flight,
            sent: self.shared.sent.load(Ordering::SeqCst),
            received,
        }
    }

    /// Once aligned: takes every worker's state and held output, logs them with a commit
    /// record and waits for the disk. False if the log has failed.
    pub(crate) fn prepare(&mut self) -> bool {
        let Some(Begun {
            checkpoint,
            full,
            cut,
            started,
        }) = self.current.take()
        else {
            return false;
        };
        let workers = self.shared.inboxes.len();
        self.shared.aligned.store(0, Ordering::SeqCst);
        let aligned = started.elapsed();
        let (reply, parts) = flume::unbounded();
        for w in 0..workers {
            self.shared.control(
                w,
                Work::Snapshot {
                    full,
                    reply: reply.clone(),
                },
            );
        }
        drop(reply);
        let mut parts: Vec<Part> = parts.iter().take(workers).collect();
        if parts.len() < workers {
            // Workers stopped (the node is aborting).
            return false;
        }
        parts.sort_by_key(|p| p.worker);

        let mut held: EpochOutput = vec![Vec::new(); self.sinks.len()];
        let mut keys = 0;
        let streams = std::mem::take(&mut self.streams);
        let commit = {
            let mut inner = self.log.lock();
            let mut ok = true;
            for part in parts {
                keys += part.entries.len();
                if !part.entries.is_empty() {
                    ok &= self
                        .log
                        .append(
                            &mut inner,
                            &Record::State {
                                checkpoint,
                                steps: part.steps,
                                entries: part.entries,
                            },
                        )
                        .is_some();
                }
                for (sink, out) in part.held.into_iter().enumerate() {
                    held[sink].extend(out);
                }
            }
            let mut first_output = None;
            if self.hold_output {
                for (sink, payloads) in held.iter().enumerate() {
                    if payloads.is_empty() {
                        continue;
                    }
                    let lsn = self.log.append(
                        &mut inner,
                        &Record::Output {
                            epoch: checkpoint,
                            sink: sink as u32,
                            payloads: payloads.clone(),
                        },
                    );
                    ok &= lsn.is_some();
                    first_output = first_output.or(lsn);
                }
            }
            let released = self.released();
            if released > self.released_logged {
                self.released_logged = released;
                ok &= self
                    .log
                    .append(&mut inner, &Record::Released { epoch: released })
                    .is_some();
            }
            let commit = self.log.append(
                &mut inner,
                &Record::Commit {
                    checkpoint,
                    cut,
                    full,
                    streams,
                },
            );
            if let (true, Some(lsn)) = (self.hold_output, first_output.or(commit)) {
                self.unreleased.insert(checkpoint, lsn);
            }
            commit.filter(|_| ok)
        };
        let Some(commit) = commit else {
            return false;
        };
        if !self.log.wait_durable(commit) {
            return false;
        }
        tracing::trace!(
            checkpoint,
            aligned_us = aligned.as_micros() as u64,
            "checkpoint prepared"
        );
        self.prepared = Some(Prepared {
            checkpoint,
            full,
            cut,
            held,
            started,
            keys,
        });
        true
    }

    /// The prepared checkpoint is committed (here, or by every node of a cluster): releases its
    /// output and drops log segments nothing needs any more.
    pub(crate) fn commit(&mut self, checkpoint: u64) -> bool {
        let Some(prepared) = self.prepared.take_if(|p| p.checkpoint == checkpoint) else {
            tracing::warn!(checkpoint, "asked to commit a checkpoint not prepared here");
            return false;
        };
        let Prepared {
            full,
            cut,
            held,
            started,
            keys,
            ..
        } = prepared;
        if full {
            self.since_full = 0;
            self.last_full_cut = Some(cut);
        } else {
            self.since_full += 1;
        }
        if self.hold_output {
            self.release(checkpoint, held);
        }
        self.compact();
        self.shared.counters.checkpoints.inc();
        self.shared
            .metrics
            .checkpoint_seconds
            .observe(started.elapsed().as_secs_f64());
        self.last_committed = checkpoint;
        tracing::debug!(
            checkpoint,
            keys,
            full,
            took_us = started.elapsed().as_micros() as u64,
            "checkpoint committed"
        );
        true
    }

    pub(crate) fn last_committed(&self) -> u64 {
        self.last_committed
    }

    /// Hands one committed epoch's output to the sinks (an empty batch too, so each sink
    /// reports the epoch written).
    fn release(&self, epoch: u64, per_sink: EpochOutput) {
        for (sink, frames) in per_sink.into_iter().enumerate() {
            // Blocks while the sink's queue is full: a slow sink slows checkpoints, and held
            // output then pauses the sources.
            let _ = self.sinks[sink].send(SinkBatch { epoch, frames });
        }
    }

    /// Every epoch up to the returned one has been written by every sink.
    fn released(&self) -> u64 {
        self.written
            .iter()
            .map(|w| w.load(Ordering::SeqCst))
            .min()
            .unwrap_or(u64::MAX)
            .min(self.next - 1)
    }

    /// Drops log segments nothing needs: everything before the last full checkpoint's cut,
    /// except output of epochs not yet written out.
    fn compact(&mut self) {
        let released = self.released();
        self.unreleased = self.unreleased.split_off(&(released + 1));
        let Some(mut keep_from) = self.last_full_cut else {
            return;
        };
        if let Some(&lsn) = self.unreleased.values().min() {
            keep_from = keep_from.min(lsn);
        }
        let mut inner = self.log.lock();
        match inner.wal.compact_before(keep_from) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(segments = n, "compacted the write-ahead log"),
            Err(e) => tracing::warn!("cannot compact the write-ahead log: {e}"),
        }
    }
}
