//! A node: the application's spec, its worker threads, and the handles sources and sinks use.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wallaroo_component::{AppSpec, GuestError, Message, Runtime, SourceConfig};
use wallaroo_types::KeyGroups;

use crate::DeadLetters;
use crate::worker::Worker;

/// Encoded output for one sink, in order.
pub type SinkBatch = Vec<Vec<u8>>;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub workers: usize,
    pub key_groups: KeyGroups,
    /// Where dead letters (and later the write-ahead log) live.
    pub data_dir: PathBuf,
    /// The arguments the guest's `application_setup(args)` receives.
    pub args: Vec<String>,
    /// Source batches that may wait for or be in a worker at once, per worker.
    pub source_credits: usize,
    /// Batches a sink may have queued before the workers feeding it block.
    pub sink_queue: usize,
}

impl NodeConfig {
    pub fn new(data_dir: impl Into<PathBuf>, args: Vec<String>) -> Self {
        Self {
            workers: 1,
            key_groups: KeyGroups::default(),
            data_dir: data_dir.into(),
            args,
            source_credits: 4,
            sink_queue: 16,
        }
    }
}

/// Totals since start, for status lines and tests.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Frames accepted from sources.
    pub received: AtomicU64,
    /// Encoded messages handed to sinks.
    pub emitted: AtomicU64,
    /// Messages sent to the dead letters.
    pub dead_lettered: AtomicU64,
    /// Guest instances replaced after a trap or a timeout.
    pub instances_replaced: AtomicU64,
    /// Guest instances swapped for fresh ones because their memory had grown.
    pub instances_recycled: AtomicU64,
}

/// A reading of [`NodeCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTotals {
    pub received: u64,
    pub emitted: u64,
    pub dead_lettered: u64,
    pub instances_replaced: u64,
    pub instances_recycled: u64,
}

impl NodeCounters {
    pub fn totals(&self) -> NodeTotals {
        NodeTotals {
            received: self.received.load(Ordering::Relaxed),
            emitted: self.emitted.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            instances_replaced: self.instances_replaced.load(Ordering::Relaxed),
            instances_recycled: self.instances_recycled.load(Ordering::Relaxed),
        }
    }
}

/// The node is shutting down and takes no more input.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the node is stopping")]
pub struct Stopped;

pub(crate) enum Work {
    Batch {
        segment: u32,
        messages: Vec<Message>,
        /// Held until the batch is processed: how sources feel backpressure.
        credit: Option<OwnedSemaphorePermit>,
    },
    Stop,
}

pub(crate) struct Shared {
    pub(crate) inboxes: Vec<flume::Sender<Work>>,
    credits: Vec<Arc<Semaphore>>,
    /// Work items sent and not yet processed; zero with all sources stopped means drained.
    in_flight: AtomicUsize,
    stopping: AtomicBool,
    next_worker: AtomicUsize,
    pub(crate) counters: NodeCounters,
    pub(crate) dead_letters: DeadLetters,
}

impl Shared {
    pub(crate) fn enqueue(&self, worker: usize, work: Work) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.inboxes[worker].send(work).is_err() {
            // Only after shutdown, when every source has stopped and nothing is in flight.
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    pub(crate) fn done(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct Node {
    spec: AppSpec,
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
    sinks: Vec<Option<flume::Receiver<SinkBatch>>>,
}

impl Node {
    /// Starts `config.workers` instances of the application, each on its own thread.
    pub fn start(runtime: &Runtime, config: NodeConfig) -> anyhow::Result<Node> {
        anyhow::ensure!(config.workers > 0, "a node needs at least one worker");
        let mut instances = Vec::with_capacity(config.workers);
        let mut spec = None;
        for _ in 0..config.workers {
            let mut instance = runtime.instantiate()?;
            let described = instance.describe(&config.args).map_err(|e| match e {
                GuestError::Refused(msg) => anyhow::anyhow!("application_setup failed: {msg}"),
                trap => anyhow::anyhow!("the application crashed in application_setup: {trap}"),
            })?;
            spec.get_or_insert(described);
            instances.push(instance);
        }
        let spec = spec.expect("at least one worker");
        validate(&spec)?;

        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..config.workers).map(|_| flume::unbounded()).unzip();
        let (sink_tx, sink_rx): (Vec<_>, Vec<_>) = spec
            .sinks
            .iter()
            .map(|_| flume::bounded(config.sink_queue))
            .unzip();
        let shared = Arc::new(Shared {
            inboxes: senders,
            credits: (0..config.workers)
                .map(|_| Arc::new(Semaphore::new(config.source_credits)))
                .collect(),
            in_flight: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            next_worker: AtomicUsize::new(0),
            counters: NodeCounters::default(),
            dead_letters: DeadLetters::new(&config.data_dir),
        });
        let owners: Arc<Vec<usize>> = Arc::new(
            (0..config.key_groups.count())
                .map(|g| g as usize % config.workers)
                .collect(),
        );
        let mut threads = Vec::new();
        for (id, (instance, inbox)) in instances.into_iter().zip(receivers).enumerate() {
            let worker = Worker::new(
                id,
                runtime.clone(),
                instance,
                &config,
                &spec,
                shared.clone(),
                sink_tx.clone(),
                owners.clone(),
            );
            threads.push(
                std::thread::Builder::new()
                    .name(format!("wallaroo-worker-{id}"))
                    .spawn(move || worker.run(inbox))
                    .context("spawning a worker thread")?,
            );
        }
        Ok(Node {
            spec,
            shared,
            threads,
            sinks: sink_rx.into_iter().map(Some).collect(),
        })
    }

    pub fn spec(&self) -> &AppSpec {
        &self.spec
    }

    pub fn counters(&self) -> &NodeCounters {
        &self.shared.counters
    }

    pub fn dead_letters(&self) -> &DeadLetters {
        &self.shared.dead_letters
    }

    /// Hands out [`SourceHandle`]s for source `source` (by index in the spec).
    pub fn source(&self, source: usize) -> SourceHandles {
        SourceHandles {
            shared: self.shared.clone(),
            segment: self.spec.sources[source].segment,
        }
    }

    /// The queue of sink `sink`'s output. Each sink's queue can be taken once.
    pub fn take_sink(&mut self, sink: usize) -> flume::Receiver<SinkBatch> {
        self.sinks[sink].take().expect("sink queue taken twice")
    }

    /// Waits until everything accepted so far has been processed, then stops the workers. Call
    /// it after every source has stopped; sinks see their queues close once the workers exit.
    /// Returns the node's final totals.
    pub async fn shutdown(self) -> NodeTotals {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for credits in &self.shared.credits {
            credits.close();
        }
        while self.shared.in_flight.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for inbox in &self.shared.inboxes {
            let _ = inbox.send(Work::Stop);
        }
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        self.shared.counters.totals()
    }
}

/// Makes a [`SourceHandle`] per connection (or generator) of one source.
#[derive(Clone)]
pub struct SourceHandles {
    shared: Arc<Shared>,
    segment: u32,
}

impl SourceHandles {
    /// A handle feeding one worker, chosen round robin. A connection keeps its handle, so the
    /// order of its messages is kept.
    pub fn next(&self) -> SourceHandle {
        let workers = self.shared.inboxes.len();
        SourceHandle {
            shared: self.shared.clone(),
            segment: self.segment,
            worker: self.shared.next_worker.fetch_add(1, Ordering::Relaxed) % workers,
        }
    }
}

/// Feeds one worker with batches of one source's frames.
#[derive(Clone)]
pub struct SourceHandle {
    shared: Arc<Shared>,
    segment: u32,
    worker: usize,
}

impl SourceHandle {
    /// Hands a batch of frame payloads to the worker, waiting for a credit first.
    pub async fn send(&self, frames: Vec<Vec<u8>>) -> Result<(), Stopped> {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Err(Stopped);
        }
        let credit = self.shared.credits[self.worker]
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Stopped)?;
        self.shared
            .counters
            .received
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        let messages = frames
            .into_iter()
            .map(|payload| Message {
                key: Vec::new(),
                payload,
            })
            .collect();
        self.shared.enqueue(
            self.worker,
            Work::Batch {
                segment: self.segment,
                messages,
                credit: Some(credit),
            },
        );
        Ok(())
    }

    pub fn dead_letters(&self) -> &DeadLetters {
        &self.shared.dead_letters
    }

    pub fn counters(&self) -> &NodeCounters {
        &self.shared.counters
    }
}

fn validate(spec: &AppSpec) -> anyhow::Result<()> {
    if spec.sources.is_empty() {
        bail!("application '{}' declares no source", spec.name);
    }
    for source in &spec.sources {
        if source.segment as usize >= spec.steps.len() {
            bail!("source '{}' starts at an unknown step", source.name);
        }
        if let SourceConfig::Tcp(tcp) = &source.config {
            wallaroo_types::Framing::from(tcp.framing)
                .validate()
                .with_context(|| format!("source '{}' has an unusable decoder", source.name))?;
        }
    }
    Ok(())
}
