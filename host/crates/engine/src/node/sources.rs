//! Sources' side of a node: the handles a source feeds workers through (one per connection,
//! so a connection's order is kept), with credits for backpressure, logging of input before it
//! is processed, and waiting for a congested network; and why a batch was not taken.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use wallaroo_component::Message;
use wallaroo_wal::Lsn;

use super::inbox::{Shared, Work};
use crate::DeadLetters;
use crate::metrics::NodeCounters;

/// Why a source's batch was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAccepted {
    #[error("the node is stopping")]
    Stopping,
    /// The write-ahead log cannot store input (a full disk): the source must stop reading
    /// rather than accept what it cannot keep.
    #[error("the node's write-ahead log cannot store input")]
    LogFailed,
}

/// Makes a [`SourceHandle`] per connection (or generator) of one source.
#[derive(Clone)]
pub struct SourceHandles {
    pub(super) shared: Arc<Shared>,
    pub(super) source: u32,
    pub(super) segment: u32,
}

impl SourceHandles {
    /// This node listens for the source's connections (the source ends once its streams
    /// have).
    pub fn listening(&self) {
        self.shared.ends(|e| e.listening(self.source));
    }

    /// This node runs the source's generator (which ends when it runs out).
    pub fn generating(&self) {
        self.shared.ends(|e| e.generating(self.source));
    }

    /// A handle feeding one worker, chosen round robin. A connection keeps its handle, so the
    /// order of its messages is kept.
    pub fn next(&self) -> SourceHandle {
        let workers = self.shared.inboxes.len();
        SourceHandle {
            shared: self.shared.clone(),
            source: self.source,
            segment: self.segment,
            worker: self.shared.next_worker.fetch_add(1, Ordering::Relaxed) % workers,
        }
    }
}

/// Feeds one worker with batches of one source's frames.
#[derive(Clone)]
pub struct SourceHandle {
    shared: Arc<Shared>,
    source: u32,
    segment: u32,
    worker: usize,
}

impl SourceHandle {
    /// Hands a batch of frame payloads to the worker, waiting for a credit first. With a log,
    /// the batch is logged first and its LSN returned: it is durable once
    /// [`SourceHandle::durable`] reaches it. `stream` is an acknowledged client stream's id and
    /// the position of the batch's first frame in it.
    pub async fn send(
        &self,
        frames: Vec<Vec<u8>>,
        stream: Option<(u64, u64)>,
    ) -> Result<Option<Lsn>, NotAccepted> {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Err(NotAccepted::Stopping);
        }
        if self.shared.log.as_ref().is_some_and(|l| l.failed()) {
            return Err(NotAccepted::LogFailed);
        }
        // The network to other nodes is behind: wait rather than queue more for it.
        if let Some(peers) = &self.shared.peers {
            loop {
                let relieved = peers.relieved().notified();
                tokio::pin!(relieved);
                // Registered before the test, so a relief between the two is not missed.
                relieved.as_mut().enable();
                if self.shared.stopping.load(Ordering::SeqCst) {
                    return Err(NotAccepted::Stopping);
                }
                if !peers.congested() {
                    break;
                }
                relieved.await;
            }
        }
        let credit = self.shared.credits[self.worker]
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| NotAccepted::Stopping)?;
        let n = frames.len() as u64;
        // Stamped, logged and queued under the source clock's lock: see `Shared::stamp`.
        let mut clock = self
            .shared
            .source_clock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let time = Shared::stamp(&mut clock);
        let enqueue = |frames: Vec<Vec<u8>>, credit| {
            let messages = frames
                .into_iter()
                .map(|payload| Message {
                    key: Vec::new(),
                    payload,
                    event_time: time,
                })
                .collect();
            self.shared.enqueue(
                self.worker,
                Work::Batch {
                    segment: self.segment,
                    messages,
                    credit: Some(Arc::new(credit)),
                    from_source: true,
                    epoch: 0,
                },
            );
        };
        let lsn = match &self.shared.log {
            None => {
                enqueue(frames, credit);
                None
            }
            Some(log) => {
                let lsn = log.append_input(self.source, stream, time, frames, |frames| {
                    enqueue(frames, credit)
                });
                Some(lsn.ok_or(NotAccepted::LogFailed)?)
            }
        };
        drop(clock);
        self.shared.counters.received.inc_by(n);
        Ok(lsn)
    }

    /// Passes the frame at `stream`'s position (an acknowledged stream's id and the frame's
    /// position) without handing it on: it was dead-lettered at the source. With a log, the
    /// new position is logged and its LSN returned, so a restart resumes after the frame.
    pub fn skip(&self, stream: (u64, u64)) -> Result<Option<Lsn>, NotAccepted> {
        let (id, seq) = stream;
        self.log_position(id, seq + 1)
    }

    /// Logs that acknowledged stream `id` is now at `position`, as a batch of no frames whose
    /// first would stand there; its LSN, or None without a log.
    fn log_position(&self, id: u64, position: u64) -> Result<Option<Lsn>, NotAccepted> {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Err(NotAccepted::Stopping);
        }
        let Some(log) = &self.shared.log else {
            return Ok(None);
        };
        if log.failed() {
            return Err(NotAccepted::LogFailed);
        }
        log.append_input(self.source, Some((id, position)), 0, Vec::new(), |_| {})
            .map(Some)
            .ok_or(NotAccepted::LogFailed)
    }

    /// Ends acknowledged stream `stream` (its id and the position of its end): nothing more
    /// comes from it. With a log, the end is logged as the stream's position
    /// ([`crate::STREAM_ENDED`]) and its LSN returned, so a restart knows it.
    pub fn end_stream(&self, stream: (u64, u64)) -> Result<Option<Lsn>, NotAccepted> {
        let lsn = self.log_position(stream.0, crate::STREAM_ENDED)?;
        self.shared.ends(|e| e.stream_ended(self.source, stream.0));
        tracing::info!(
            source = self.source,
            stream = stream.0,
            frames = stream.1,
            "stream ended"
        );
        Ok(lsn)
    }

    /// A connection opened (`true`) or closed.
    pub fn connection(&self, open: bool) {
        self.shared.ends(|e| match open {
            true => e.opened(self.source),
            false => e.closed(self.source),
        });
    }

    /// An acknowledged stream said hello, resuming at `at`.
    pub fn stream_hello(&self, stream: u64, at: u64) {
        self.shared.ends(|e| e.stream(self.source, stream, at));
    }

    /// Whether the source's generator has run out.
    pub fn generator_done(&self) -> bool {
        self.shared.ends(|e| e.generator_has_ended(self.source))
    }

    /// The log's durable position; None without a log.
    pub fn durable(&self) -> Option<tokio::sync::watch::Receiver<Lsn>> {
        self.shared.log.as_ref().map(|l| l.durable())
    }

    /// Where an acknowledged stream resumes: the position of the first frame this node has not
    /// logged. None without a log (nothing is remembered across a restart).
    pub fn stream_position(&self, stream: u64) -> Option<u64> {
        self.shared
            .log
            .as_ref()
            .map(|l| l.stream_position(self.source, stream))
    }

    pub fn dead_letters(&self) -> &DeadLetters {
        &self.shared.dead_letters
    }

    pub fn counters(&self) -> &NodeCounters {
        &self.shared.counters
    }
}
