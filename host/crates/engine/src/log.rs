//! The node's write-ahead log as the engine uses it: appends from sources and the checkpoint
//! coordinator under one lock (so the log's order is the order batches and barriers reach the
//! workers), and a group-commit thread that makes appended records durable in the background.
//!
//! A failed write or sync (a full disk, a vanished directory) is sticky: the log stops, its
//! durable position stops advancing, and sources stop accepting input rather than
//! acknowledging what cannot be stored. The operator frees the disk and restarts the node,
//! which recovers from the last committed checkpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use wallaroo_wal::{Lsn, Record, StreamPosition, Wal, WalError};

pub(crate) struct Log {
    inner: Mutex<Inner>,
    /// Signalled when records are appended (wakes the sync thread) and when they become
    /// durable (wakes blocking waiters).
    changed: Condvar,
    durable_tx: tokio::sync::watch::Sender<Lsn>,
    failed: AtomicBool,
    stopping: AtomicBool,
}

pub(crate) struct Inner {
    pub(crate) wal: Wal,
    /// Next frame position of every acknowledged stream, as logged.
    pub(crate) streams: HashMap<(u32, u64), u64>,
    durable: Lsn,
    /// The last record appended.
    appended: Lsn,
}

impl Log {
    pub(crate) fn start(wal: Wal, streams: HashMap<(u32, u64), u64>) -> Arc<Log> {
        let durable = wal.next_lsn() - 1;
        let log = Arc::new(Log {
            inner: Mutex::new(Inner {
                wal,
                streams,
                durable,
                appended: durable,
            }),
            changed: Condvar::new(),
            durable_tx: tokio::sync::watch::channel(durable).0,
            failed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        });
        let syncer = log.clone();
        std::thread::Builder::new()
            .name("wallaroo-log".into())
            .spawn(move || syncer.sync_loop())
            .expect("spawning the log thread");
        log
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends records under a held lock. On failure the log is failed and `None` returned.
    pub(crate) fn append(&self, inner: &mut Inner, record: &Record) -> Option<Lsn> {
        if self.failed() {
            return None;
        }
        match inner.wal.append(record) {
            Ok(lsn) => {
                inner.appended = lsn;
                self.changed.notify_all();
                Some(lsn)
            }
            Err(e) => {
                self.fail(&e);
                None
            }
        }
    }

    /// Logs a source batch received at `time` and, under the same lock, hands it on
    /// (`enqueue`), so no barrier can fall between the two. A batch of no frames only moves
    /// its stream's position past a frame the source dead-lettered (see
    /// [`crate::SourceHandle::skip`]).
    pub(crate) fn append_input(
        &self,
        source: u32,
        stream: Option<(u64, u64)>,
        time: u64,
        frames: Vec<Vec<u8>>,
        enqueue: impl FnOnce(Vec<Vec<u8>>),
    ) -> Option<Lsn> {
        let mut inner = self.lock();
        let (id, seq) = stream.unwrap_or((0, 0));
        let n = frames.len() as u64;
        let record = Record::Input {
            source,
            stream: id,
            seq,
            time,
            frames,
        };
        let lsn = self.append(&mut inner, &record)?;
        if stream.is_some() {
            inner.streams.insert((source, id), seq + n);
        }
        let Record::Input { frames, .. } = record else {
            unreachable!("built above")
        };
        enqueue(frames);
        Some(lsn)
    }

    pub(crate) fn stream_positions(inner: &Inner) -> Vec<StreamPosition> {
        let mut positions: Vec<StreamPosition> = inner
            .streams
            .iter()
            .map(|(&(source, stream), &next_seq)| StreamPosition {
                source,
                stream,
                next_seq,
            })
            .collect();
        positions.sort_by_key(|p| (p.source, p.stream));
        positions
    }

    /// The positions of source `source`'s acknowledged streams: `(stream, next position)`.
    pub(crate) fn streams_of(&self, source: u32) -> Vec<(u64, u64)> {
        self.lock()
            .streams
            .iter()
            .filter(|((s, _), _)| *s == source)
            .map(|(&(_, stream), &at)| (stream, at))
            .collect()
    }

    pub(crate) fn stream_position(&self, source: u32, stream: u64) -> u64 {
        self.lock()
            .streams
            .get(&(source, stream))
            .copied()
            .unwrap_or(0)
    }

    /// Blocks until `lsn` is durable; false if the log failed first.
    pub(crate) fn wait_durable(&self, lsn: Lsn) -> bool {
        let mut inner = self.lock();
        while inner.durable < lsn {
            if self.failed() {
                return false;
            }
            inner = self
                .changed
                .wait_timeout(inner, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// The durable position, for tasks that acknowledge input.
    pub(crate) fn durable(&self) -> tokio::sync::watch::Receiver<Lsn> {
        self.durable_tx.subscribe()
    }

    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    fn fail(&self, e: &WalError) {
        if !self.failed.swap(true, Ordering::SeqCst) {
            tracing::error!(
                "cannot write the write-ahead log: {e}; the node stops accepting input. Free \
                 the disk (or fix the data directory) and restart the node: it recovers from its \
                 last checkpoint"
            );
        }
        self.changed.notify_all();
    }

    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// Group commit: whatever was appended while the last sync ran goes to disk in the next.
    fn sync_loop(&self) {
        loop {
            let pending = {
                let mut inner = self.lock();
                while inner.appended <= inner.durable && !self.stopping.load(Ordering::SeqCst) {
                    inner = self
                        .changed
                        .wait_timeout(inner, Duration::from_millis(100))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                if inner.appended <= inner.durable || self.failed() {
                    return;
                }
                match inner.wal.flush() {
                    Ok(pending) => pending,
                    Err(e) => {
                        self.fail(&e);
                        return;
                    }
                }
            };
            match pending.sync() {
                Ok(through) => {
                    let mut inner = self.lock();
                    inner.durable = inner.durable.max(through);
                    let _ = self.durable_tx.send(inner.durable);
                    self.changed.notify_all();
                }
                Err(e) => {
                    self.fail(&e);
                    return;
                }
            }
        }
    }
}
