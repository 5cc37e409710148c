//! This node's side of checkpoints: the protocol core's [`Participant`] and the engine work
//! its actions stand for.
//!
//! - Cut and barrier: under the log's lock, note the cut (the next LSN) and the acknowledged
//!   streams' positions, and put a barrier in every worker's inbox. Sources log and enqueue
//!   under the same lock, so each worker sees exactly the input logged before the cut ahead of
//!   its barrier.
//! - Snapshot: every worker hands over the state changed since the last checkpoint and the
//!   output it held; they are logged with a commit record. Workers go on with the next epoch
//!   while the disk syncs.
//! - Release: a committed epoch's output goes to the sinks, numbered by (epoch, position) so a
//!   receiver drops what a release after a crash repeats.
//!
//! Who decides when is the coordinator's business ([`crate::local`] for `wallaroo run`, the
//! cluster's coordinator for a node); in what order, the participant's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wallaroo_protocol::participant::{Action, Event, Participant, Reply, Resume};
use wallaroo_protocol::quiescence::Alignment;
use wallaroo_wal::Record;

use crate::log::Log;
use crate::node::{Part, Shared, SinkBatch, Work};
use crate::recovery::{EpochOutput, Unreleased};

pub(crate) struct Member {
    shared: Arc<Shared>,
    log: Arc<Log>,
    participant: Participant,
    hold_output: bool,
    sinks: Vec<flume::Sender<SinkBatch>>,
    /// How far each sink has written.
    written: Vec<Arc<AtomicU64>>,
    /// Output to release per epoch: committed output found in the log at start, and the
    /// prepared checkpoint's.
    output: BTreeMap<u64, EpochOutput>,
    /// Acknowledged streams' positions at the current checkpoint's cut.
    streams: Vec<wallaroo_wal::StreamPosition>,
    started: Instant,
    keys: usize,
}

impl Member {
    pub(crate) fn new(
        shared: Arc<Shared>,
        log: Arc<Log>,
        hold_output: bool,
        sinks: Vec<flume::Sender<SinkBatch>>,
        written: Vec<Arc<AtomicU64>>,
        resume: Resume,
        rerelease: Unreleased,
    ) -> Self {
        let mut member = Member {
            shared,
            log,
            participant: Participant::new(resume, hold_output),
            hold_output,
            sinks,
            written,
            output: rerelease
                .into_iter()
                .map(|(epoch, (_, out))| (epoch, out))
                .collect(),
            streams: Vec::new(),
            started: Instant::now(),
            keys: 0,
        };
        let actions = member.participant.start();
        member.carry_out(actions);
        member
    }

    pub(crate) fn next_number(&self) -> u64 {
        self.participant.next_number()
    }

    pub(crate) fn last_committed(&self) -> u64 {
        self.participant.last_committed()
    }

    /// Logs key state handed to this node at committed checkpoint `checkpoint` (key groups
    /// that move here), and waits for the disk: a recovery to that checkpoint restores it.
    pub(crate) fn import(&mut self, checkpoint: u64, state: Handoff) -> Result<(), String> {
        let record = state.record(checkpoint);
        let lsn = {
            let mut inner = self.log.lock();
            self.log.append(&mut inner, &record)
        };
        match lsn {
            Some(lsn) if self.log.wait_durable(lsn) => Ok(()),
            _ => Err("the write-ahead log has failed".into()),
        }
    }

    /// Feeds the participant one event as [`Member::handle`] does, and turns its answer into
    /// Ok if it is `want`, else why not.
    pub(crate) fn expect(&mut self, event: Event, want: Reply) -> Result<(), String> {
        match self.handle(event) {
            Some(r) if r == want => Ok(()),
            Some(Reply::Refused(why)) => Err(why),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Feeds the participant one event and carries out what follows, until it answers.
    pub(crate) fn handle(&mut self, event: Event) -> Option<Reply> {
        let written = self.written();
        let mut actions = self.participant.handle(Event::Written { epoch: written });
        actions.extend(self.participant.handle(event));
        self.carry_out(actions)
    }

    fn carry_out(&mut self, actions: Vec<Action>) -> Option<Reply> {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        let mut reply = None;
        while let Some(action) = queue.pop_front() {
            let event = match action {
                Action::CutAndBarrier { .. } => Event::Cut { cut: self.cut() },
                Action::Snapshot {
                    checkpoint,
                    full,
                    cut,
                    released,
                } => self.snapshot(checkpoint, full, cut, released),
                Action::AwaitDurable { lsn } => {
                    if !self.log.wait_durable(lsn) {
                        // The log failed: nothing can commit again in this process.
                        reply = Some(Reply::Refused("the write-ahead log has failed".into()));
                        continue;
                    }
                    Event::Durable { lsn }
                }
                Action::Release { epoch } => {
                    self.release(epoch);
                    continue;
                }
                Action::Compact { keep_from } => {
                    self.compact(keep_from);
                    continue;
                }
                Action::Reply(r) => {
                    if r == Reply::Committed {
                        self.committed();
                    }
                    reply = Some(r);
                    continue;
                }
            };
            queue.extend(self.participant.handle(event));
        }
        reply
    }

    /// Under the log's lock, notes the cut and puts a barrier in every worker's inbox. None if
    /// the log has failed.
    fn cut(&mut self) -> Option<u64> {
        if self.log.failed() {
            return None;
        }
        self.started = Instant::now();
        let inner = self.log.lock();
        let cut = inner.wal.next_lsn();
        self.streams = Log::stream_positions(&inner);
        for w in 0..self.shared.inboxes.len() {
            self.shared.control(w, Work::Barrier);
        }
        Some(cut)
    }

    /// How far the workers are with the current checkpoint's barrier.
    pub(crate) fn alignment(&self) -> Alignment {
        // Routed batches before the counters of work done: a batch taken from a peer is
        // enqueued before it is counted received.
        let received = self.shared.received.load(Ordering::SeqCst);
        let routed_in_flight = self.shared.routed_in_flight.load(Ordering::SeqCst);
        Alignment {
            aligned: self.participant.aligning()
                && self.shared.aligned.load(Ordering::SeqCst) >= self.shared.inboxes.len(),
            routed_in_flight,
            sent: self.shared.sent.load(Ordering::SeqCst),
            received,
        }
    }

    /// The alignment once this node is settled, or as it is at `deadline`. Waits for the
    /// workers' signals, not by polling.
    pub(crate) fn wait_alignment(&self, deadline: Instant) -> Alignment {
        loop {
            let a = self.alignment();
            let now = Instant::now();
            if a.settled() || now >= deadline {
                return a;
            }
            self.shared.wait_progress(deadline - now);
        }
    }

    /// Takes every worker's part and logs it with the commit record.
    fn snapshot(&mut self, checkpoint: u64, full: bool, cut: u64, released: Option<u64>) -> Event {
        let failed = Event::Logged {
            commit: None,
            first_output: None,
        };
        let workers = self.shared.inboxes.len();
        self.shared.aligned.store(0, Ordering::SeqCst);
        tracing::trace!(
            checkpoint,
            aligned_us = self.started.elapsed().as_micros() as u64,
            "checkpoint aligned"
        );
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
            return failed;
        }
        parts.sort_by_key(|p| p.worker);

        let mut held: EpochOutput = vec![Vec::new(); self.sinks.len()];
        self.keys = 0;
        let streams = std::mem::take(&mut self.streams);
        let mut inner = self.log.lock();
        let mut ok = true;
        for part in parts {
            self.keys += part.entries.len();
            if !part.removed.is_empty() {
                let record = Record::Removed {
                    checkpoint,
                    steps: part.steps.clone(),
                    keys: part.removed,
                };
                ok &= self.log.append(&mut inner, &record).is_some();
            }
            if !part.entries.is_empty() {
                let record = Record::State {
                    checkpoint,
                    steps: part.steps,
                    entries: part.entries,
                };
                ok &= self.log.append(&mut inner, &record).is_some();
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
                let record = Record::Output {
                    epoch: checkpoint,
                    sink: sink as u32,
                    payloads: payloads.clone(),
                };
                let lsn = self.log.append(&mut inner, &record);
                ok &= lsn.is_some();
                first_output = first_output.or(lsn);
            }
            self.output.insert(checkpoint, held);
        }
        if let Some(epoch) = released {
            ok &= self
                .log
                .append(&mut inner, &Record::Released { epoch })
                .is_some();
        }
        let commit = Record::Commit {
            checkpoint,
            cut,
            full,
            streams,
        };
        let commit = self.log.append(&mut inner, &commit).filter(|_| ok);
        Event::Logged {
            commit,
            first_output,
        }
    }

    /// Hands one committed epoch's output to the sinks (an empty batch too, so each sink
    /// reports the epoch written).
    fn release(&mut self, epoch: u64) {
        let per_sink = self
            .output
            .remove(&epoch)
            .unwrap_or_else(|| vec![Vec::new(); self.sinks.len()]);
        for (sink, frames) in per_sink.into_iter().enumerate() {
            // Blocks while the sink's queue is full: a slow sink slows checkpoints, and held
            // output then pauses the sources.
            let _ = self.sinks[sink].send(SinkBatch { epoch, frames });
        }
    }

    fn committed(&mut self) {
        self.shared.counters.checkpoints.inc();
        let took = self.started.elapsed();
        self.shared
            .metrics
            .checkpoint_seconds
            .observe(took.as_secs_f64());
        tracing::debug!(
            checkpoint = self.participant.last_committed(),
            keys = self.keys,
            took_us = took.as_micros() as u64,
            "checkpoint committed"
        );
    }

    /// Every epoch up to the returned one has been written by every sink.
    pub(crate) fn written(&self) -> u64 {
        self.written
            .iter()
            .map(|w| w.load(Ordering::SeqCst))
            .min()
            .unwrap_or(u64::MAX)
    }

    fn compact(&self, keep_from: u64) {
        let mut inner = self.log.lock();
        match inner.wal.compact_before(keep_from) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(segments = n, "compacted the write-ahead log"),
            Err(e) => tracing::warn!("cannot compact the write-ahead log: {e}"),
        }
    }
}

/// How long a member waits for alignment before answering with how far it is.
pub(crate) const ALIGN_WAIT: Duration = Duration::from_millis(20);

/// Key state that moves from one node to another with its key groups: entries name their
/// stateful step by its index in `steps`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handoff {
    pub steps: Vec<String>,
    pub entries: Vec<wallaroo_wal::KeyState>,
}

impl Handoff {
    fn record(self, checkpoint: u64) -> wallaroo_wal::Record {
        wallaroo_wal::Record::State {
            checkpoint,
            steps: wallaroo_wal::StateSteps::Named(self.steps),
            entries: self.entries,
        }
    }

    /// Gathers state as `(step name, key, value)`.
    pub fn of(state: Vec<(String, Vec<u8>, Vec<u8>)>) -> Self {
        let mut handoff = Handoff::default();
        for (step, key, value) in state {
            let index = match handoff.steps.iter().position(|s| *s == step) {
                Some(i) => i,
                None => {
                    handoff.steps.push(step);
                    handoff.steps.len() - 1
                }
            };
            handoff.entries.push(wallaroo_wal::KeyState {
                step: index as u32,
                key,
                value,
            });
        }
        handoff
    }
}

/// Logs key state handed to a node that does not run the application yet (it joins the
/// cluster in the change that moves key groups to it) as committed at `checkpoint`, in the
/// log in `dir`, and syncs it: the node recovers it when it starts from that checkpoint.
pub fn import_offline(
    dir: &std::path::Path,
    checkpoint: u64,
    state: Handoff,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let (mut wal, _) = wallaroo_wal::Wal::open(dir, wallaroo_wal::WalOptions::default())
        .with_context(|| format!("opening the write-ahead log in {}", dir.display()))?;
    let write = |wal: &mut wallaroo_wal::Wal| -> Result<(), wallaroo_wal::WalError> {
        wal.append(&state.record(checkpoint))?;
        let cut = wal.next_lsn();
        wal.append(&wallaroo_wal::Record::Commit {
            checkpoint,
            cut,
            full: false,
            streams: Vec::new(),
        })?;
        wal.sync()
    };
    write(&mut wal).with_context(|| format!("writing to the log in {}", dir.display()))
}
