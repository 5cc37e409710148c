//! A node: its configuration, its start (recovering from the log, spawning the workers, building
//! the routing table and the checkpointing), its stop (drain or abort), and the handles to a
//! running node's checkpoints and metrics. The workers' shared inbox state is in [`inbox`],
//! the routing table in [`routing`], the handles sources and sinks use in [`sources`] and
//! [`sinks`].

mod ends;
mod inbox;
mod routing;
mod sinks;
mod sources;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::sync::Semaphore;
use wallaroo_component::{AppSpec, GuestError, Message, Runtime, SourceConfig};
use wallaroo_types::KeyGroups;
use wallaroo_wal::{Wal, WalOptions};

use crate::DeadLetters;
use crate::checkpoint::{Handoff, Member};
use crate::local::{Ask, Local};
use crate::log::Log;
use crate::metrics::{Metrics, NodeCounters, NodeTotals};
use crate::recovery::{Recovery, StateMap};
use crate::state_steps::StatefulSteps;
use crate::worker::Worker;
use wallaroo_protocol::participant::{Event as MemberEvent, Reply as MemberReply, Resume};
use wallaroo_protocol::quiescence::Alignment;

pub use ends::{InputEnd, STREAM_ENDED};

/// A node asked to finish once its input has ended: where its input stands and whether it is
/// at the end, for the cluster's coordinator, which tells it when the whole cluster's input
/// has ended.
#[derive(Clone)]
pub struct Finish(Arc<Shared>);

impl Finish {
    pub fn input(&self) -> InputEnd {
        self.0.input_end().unwrap_or_default()
    }

    /// Every node's input has ended: event time moves to its end here.
    pub fn end_input(&self) {
        self.0.end_of_input.store(true, Ordering::SeqCst);
    }

    /// The input has ended, every worker has seen event time reach its end (so every window
    /// fired) and nothing is queued here.
    pub fn at_end(&self) -> bool {
        let shared = &self.0;
        shared.sources_ended()
            && shared.at_end.load(Ordering::SeqCst) == shared.inboxes.len()
            && shared.in_flight.load(Ordering::SeqCst) == 0
    }
}
pub(crate) use inbox::{END_OF_TIME, Part, Shared, Work};
pub(crate) use routing::Owner;
pub use routing::{Peers, Placement, RemoteInput};
pub use sinks::{SinkBatch, SinkQueue};
pub use sources::{NotAccepted, SourceHandle, SourceHandles};

/// What a crash may cost. Named on the command line and in a deployment's manifest as
/// `none`, `at-least-once`, `exactly-once`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resilience {
    /// Nothing is logged: a crash loses state and in-flight input. The fastest.
    #[default]
    None,
    /// Input is logged before it is processed and state is checkpointed: a crash loses
    /// nothing, but output produced after the last checkpoint is produced again.
    AtLeastOnce,
    /// As at-least-once, and output is released only once its checkpoint has committed, tagged
    /// so a receiver drops what it has already seen.
    ExactlyOnce,
}

impl Resilience {
    pub const ALL: [Resilience; 3] = [Self::None, Self::AtLeastOnce, Self::ExactlyOnce];

    /// The name the command line and a manifest use.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::AtLeastOnce => "at-least-once",
            Self::ExactlyOnce => "exactly-once",
        }
    }
}

impl std::fmt::Display for Resilience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub workers: usize,
    pub key_groups: KeyGroups,
    /// Where dead letters (and later the write-ahead log) live.
    pub data_dir: PathBuf,
    /// Disk the dead-letter files may take, all together (see [`DeadLetters`]).
    pub dead_letter_max_bytes: u64,
    /// The arguments the guest's `application_setup(args)` receives.
    pub args: Vec<String>,
    /// Source batches that may wait for or be in a worker at once, per worker.
    pub source_credits: usize,
    /// Batches a sink may have queued before the workers feeding it block.
    pub sink_queue: usize,
    pub resilience: Resilience,
    /// Time between checkpoints (with a resilience other than none).
    pub checkpoint_interval: Duration,
    /// Output bytes a worker may hold for the next checkpoint (exactly-once) before it asks
    /// for that checkpoint early and stops taking source input until it is taken.
    pub held_output_limit: usize,
    /// In a cluster: the key groups other nodes own, and checkpoints driven by the cluster's
    /// coordinator (through [`Node::checkpoints`]) rather than by this node's own timer.
    pub placement: Option<Placement>,
    /// Start even if the write-ahead log is corrupt (not merely torn at its end), dropping it
    /// from the bad record on; [`Recovered::discarded`] says what was dropped. Off, such a log
    /// makes [`Node::start`] fail and stays as it is.
    pub discard_corrupt_log: bool,
    /// Stateful steps whose state in the log is dropped if this application has no stateful
    /// step of that name (a new version without them, `--drop-state`); [`Recovered::dropped`]
    /// says what was dropped. Other state of steps the application lacks is refused.
    pub drop_state: Vec<String>,
    /// A copy of every message that reaches a window step after every window it belongs to
    /// has fired goes to the dead letters (late messages are counted either way).
    pub dead_letter_late: bool,
    /// The node is to finish once every source's stream has ended (see [`Node::at_end`]):
    /// then event time moves to its end (every window fires, every expiring key expires).
    pub finish_at_end: bool,
}

impl NodeConfig {
    pub fn new(data_dir: impl Into<PathBuf>, args: Vec<String>) -> Self {
        Self {
            workers: 1,
            key_groups: KeyGroups::default(),
            data_dir: data_dir.into(),
            dead_letter_max_bytes: crate::DEFAULT_DEAD_LETTER_MAX_BYTES,
            args,
            source_credits: 4,
            sink_queue: 16,
            resilience: Resilience::None,
            checkpoint_interval: Duration::from_secs(1),
            held_output_limit: 64 << 20,
            placement: None,
            discard_corrupt_log: false,
            drop_state: Vec::new(),
            dead_letter_late: false,
            finish_at_end: false,
        }
    }
}

pub struct Node {
    spec: AppSpec,
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
    sinks: Vec<Option<SinkQueue>>,
    checkpointing: Checkpointing,
    key_groups: KeyGroups,
    owners: Arc<Vec<Owner>>,
}

enum Checkpointing {
    /// A cluster node without a log: no checkpoints.
    Off,
    /// This node is a cluster of one: its coordinator runs on a thread of its own.
    Local(std::thread::JoinHandle<()>, flume::Sender<Ask>),
    /// A cluster's coordinator drives them through [`Checkpoints`].
    Driven(Checkpoints),
}

/// A cluster coordinator's hold on one node's checkpoints. The calls block (on workers and on
/// the disk); make them from a blocking thread.
#[derive(Clone)]
pub struct Checkpoints(Arc<std::sync::Mutex<Member>>);

impl Checkpoints {
    fn lock(&self) -> std::sync::MutexGuard<'_, Member> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The number above every checkpoint this node's log has seen.
    pub fn next_number(&self) -> u64 {
        self.lock().next_number()
    }

    /// The last checkpoint committed here.
    pub fn last_committed(&self) -> u64 {
        self.lock().last_committed()
    }

    /// Puts checkpoint `checkpoint`'s barrier into every worker. Err if the log has failed
    /// or the checkpoint cannot begin here.
    pub fn begin(&self, checkpoint: u64) -> Result<(), String> {
        self.expect(MemberEvent::Begin { checkpoint }, MemberReply::Began)
    }

    /// How far the workers are with the barrier, once settled or after a short wait.
    pub fn alignment(&self) -> Alignment {
        let deadline = Instant::now() + crate::checkpoint::ALIGN_WAIT;
        self.lock().wait_alignment(deadline)
    }

    /// Logs the aligned workers' state and held output with a commit record and waits for the
    /// disk. False if the log has failed or the node is stopping.
    pub fn prepare(&self) -> bool {
        self.expect(MemberEvent::Prepare, MemberReply::Prepared)
            .is_ok()
    }

    /// Every node prepared `checkpoint` and the coordinator logged it: release its output.
    pub fn commit(&self, checkpoint: u64) -> Result<(), String> {
        self.expect(MemberEvent::Commit { checkpoint }, MemberReply::Committed)
    }

    fn expect(&self, event: MemberEvent, want: MemberReply) -> Result<(), String> {
        self.lock().expect(event, want)
    }

    /// Waits until every sink has written out the output of every epoch up to `epoch` (with
    /// exactly-once output, released at commits), at most until `deadline`. True once it has.
    pub fn wait_written(&self, epoch: u64, deadline: Instant) -> bool {
        loop {
            if self.lock().written() >= epoch {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Logs key state handed to this node with the key groups that move to it, as of the
    /// last committed checkpoint `checkpoint`, and waits for the disk.
    pub fn import(&self, checkpoint: u64, state: Handoff) -> Result<(), String> {
        let mut member = self.lock();
        if member.last_committed() != checkpoint {
            return Err(format!(
                "state handed over at checkpoint {checkpoint}, but this node's last committed \
                 checkpoint is {}",
                member.last_committed()
            ));
        }
        member.import(checkpoint, state)
    }
}

/// What a start found in the data directory, for the operator.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// The checkpoint state was restored from (0: none).
    pub checkpoint: u64,
    pub keys: usize,
    pub replayed_messages: usize,
    /// Committed output written out again (a tagged receiver drops what it already has).
    pub rereleased_epochs: usize,
    pub took: Duration,
    /// What a corrupt log lost when `discard_corrupt_log` let the node start anyway.
    pub discarded: Option<wallaroo_wal::Corruption>,
    /// State dropped as [`NodeConfig::drop_state`] asked: keys per stateful step.
    pub dropped: Vec<(String, usize)>,
}

impl std::fmt::Display for Recovered {
    /// `recovered checkpoint N: K keys, M messages replayed, E epochs of output released
    /// again, in T ms`, each count with its noun in the right number.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn noun(n: usize, one: &str, many: &str) -> String {
            format!("{n} {}", if n == 1 { one } else { many })
        }
        write!(
            f,
            "recovered checkpoint {}: {}, {} replayed, {} of output released again, in {} ms",
            self.checkpoint,
            noun(self.keys, "key", "keys"),
            noun(self.replayed_messages, "message", "messages"),
            noun(self.rereleased_epochs, "epoch", "epochs"),
            self.took.as_millis()
        )
    }
}

#[cfg(test)]
mod recovered_tests {
    use super::Recovered;

    #[test]
    fn the_recovery_line_says_one_epoch_and_many_messages() {
        let one = Recovered {
            checkpoint: 3,
            keys: 1,
            replayed_messages: 1,
            rereleased_epochs: 1,
            ..Recovered::default()
        };
        assert_eq!(
            one.to_string(),
            "recovered checkpoint 3: 1 key, 1 message replayed, 1 epoch of output released \
             again, in 0 ms"
        );
        let many = Recovered {
            keys: 2,
            replayed_messages: 3520,
            ..Recovered::default()
        };
        assert_eq!(
            many.to_string(),
            "recovered checkpoint 0: 2 keys, 3520 messages replayed, 0 epochs of output \
             released again, in 0 ms"
        );
    }
}

impl Node {
    /// Starts `config.workers` instances of the application, each on its own thread. With a
    /// resilience other than none, first recovers what the data directory's log holds.
    pub fn start(runtime: &Runtime, config: NodeConfig) -> anyhow::Result<(Node, Recovered)> {
        anyhow::ensure!(config.workers > 0, "a node needs at least one worker");
        anyhow::ensure!(
            config.dead_letter_max_bytes >= crate::MIN_DEAD_LETTER_MAX_BYTES,
            "--dead-letter-max-bytes {} is too small to keep one dead letter: give at least {} \
             bytes (each of the two generations of files must hold a whole entry)",
            config.dead_letter_max_bytes,
            crate::MIN_DEAD_LETTER_MAX_BYTES
        );
        let started = Instant::now();
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
        let instantiated = started.elapsed();

        let mut discarded = None;
        let mut log_records = 0;
        let mut log_read = Duration::ZERO;
        let (log, recovery) = match config.resilience {
            Resilience::None => (None, Recovery::default()),
            _ => {
                let dir = config.data_dir.join("wal");
                let options = WalOptions {
                    discard_corrupt: config.discard_corrupt_log,
                    ..WalOptions::default()
                };
                let (mut wal, found) = Wal::open(&dir, options)
                    .with_context(|| format!("opening the write-ahead log in {}", dir.display()))?;
                discarded = found.discarded;
                log_records = found.records.len();
                log_read = started.elapsed();
                let upto = config.placement.as_ref().map(|p| p.recover_to);
                let steps = StatefulSteps::of(&spec.steps).dropping(&config.drop_state);
                let recovery = Recovery::from_log(found.records, spec.sinks.len(), upto, &steps)
                    .with_context(|| format!("recovering from the log in {}", dir.display()))?;
                if let (Some(to), true) = (upto, recovery.rolls_back) {
                    // Checkpoints this node committed above `to` are void from here on, also
                    // for a later recovery to a checkpoint above them. Logged before anything
                    // new, so durable before any later commit.
                    wal.append(&wallaroo_wal::Record::Rollback { to })
                        .and_then(|_| wal.sync())
                        .with_context(|| format!("writing to the log in {}", dir.display()))?;
                }
                let streams = recovery.streams.clone();
                (Some(Log::start(wal, streams)), recovery)
            }
        };

        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..config.workers).map(|_| flume::unbounded()).unzip();
        let (sink_tx, sink_rx): (Vec<_>, Vec<_>) = spec
            .sinks
            .iter()
            .map(|_| flume::bounded(config.sink_queue))
            .unzip();
        let written: Vec<Arc<AtomicU64>> = spec
            .sinks
            .iter()
            .map(|_| Arc::new(AtomicU64::new(recovery.released)))
            .collect();
        let counters = NodeCounters::default();
        let step_names: Vec<String> = spec.steps.iter().map(|s| s.name.clone()).collect();
        let shared = Arc::new(Shared {
            inboxes: senders,
            credits: (0..config.workers)
                .map(|_| Arc::new(Semaphore::new(config.source_credits)))
                .collect(),
            in_flight: AtomicUsize::new(0),
            routed_in_flight: AtomicUsize::new(0),
            aligned: AtomicUsize::new(0),
            checkpoint_wanted: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            aborting: AtomicBool::new(false),
            failure: tokio::sync::watch::channel(None).0,
            next_worker: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            peers: config.placement.as_ref().map(|p| p.peers.clone()),
            metrics: Metrics::new(&spec.name, &step_names, &counters),
            dead_letters: DeadLetters::new(
                &config.data_dir,
                config.dead_letter_max_bytes,
                counters.dead_letters_unwritten.clone(),
            ),
            counters,
            log: log.clone(),
            resilience: config.resilience,
            progress: flume::bounded(1),
            nudge: flume::bounded(1),
            source_clock: std::sync::Mutex::new(0),
            ends: std::sync::Mutex::new(ends::Ends::new(spec.sources.len())),
            finish: config.finish_at_end,
            at_end: AtomicUsize::new(0),
            end_of_input: AtomicBool::new(false),
            time_stopped: AtomicBool::new(false),
        });
        let owners: Arc<Vec<Owner>> = Arc::new(routing::owners(
            config.key_groups,
            config.workers,
            config.placement.as_ref(),
        ));
        let mut recovered = Recovered {
            checkpoint: recovery.checkpoint,
            keys: recovery.state.len(),
            replayed_messages: recovery.replayed_messages(),
            rereleased_epochs: recovery.unreleased.len(),
            took: Duration::ZERO,
            discarded,
            dropped: recovery.dropped.clone().into_iter().collect(),
        };
        let recovered_at = started.elapsed();
        let mut elsewhere = 0;
        let owner = |key: &[u8]| &owners[config.key_groups.of(key).0 as usize];
        let states: Vec<StateMap> = if config.workers == 1 {
            // The one worker takes the recovered map as it is, no key hashed into another.
            let mut state = recovery.state;
            state.retain(|(_, key), _| {
                let here = matches!(owner(key), Owner::Worker(_));
                elsewhere += usize::from(!here);
                here
            });
            vec![state]
        } else {
            let share = recovery.state.len() / config.workers;
            let mut states: Vec<StateMap> = (0..config.workers)
                .map(|_| HashMap::with_capacity(share + share / 8))
                .collect();
            for ((step, key), value) in recovery.state {
                match owner(&key) {
                    Owner::Worker(w) => {
                        states[*w].insert((step, key), value);
                    }
                    Owner::Node(_) => elsewhere += 1,
                }
            }
            states
        };
        if elsewhere > 0 {
            // Key groups this node handed to another: gone from the log at its next full
            // checkpoint.
            tracing::debug!(
                keys = elsewhere,
                "the log holds state of keys other nodes own"
            );
            recovered.keys -= elsewhere;
        }
        // Each worker restores its keys on its own thread, all at once; a restore that fails
        // fails the start.
        let mut threads = Vec::new();
        let (restored_tx, restored) = flume::unbounded();
        let mut failed = None;
        for (id, ((instance, inbox), state)) in
            instances.into_iter().zip(receivers).zip(states).enumerate()
        {
            let mut worker = Worker::new(
                id,
                runtime.clone(),
                instance,
                &config,
                &spec,
                shared.clone(),
                sink_tx.clone(),
                owners.clone(),
                state,
            );
            let restored_tx = restored_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("wallaroo-worker-{id}"))
                .spawn(move || {
                    let result = worker.restore_state();
                    let ok = result.is_ok();
                    let _ = restored_tx.send(result);
                    // Gone before the run: a worker that panics while restoring ends the wait.
                    drop(restored_tx);
                    if ok {
                        worker.run(inbox);
                    }
                })
                .context("spawning a worker thread");
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(restored_tx);
        for _ in 0..threads.len() {
            match restored.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failed.get_or_insert(e);
                }
                Err(_) => {
                    failed.get_or_insert_with(|| anyhow::anyhow!("a worker ended while restoring"));
                    break;
                }
            }
        }
        if let Some(e) = failed {
            for inbox in &shared.inboxes {
                let _ = inbox.send(Work::Stop);
            }
            for thread in threads {
                let _ = thread.join();
            }
            if let Some(log) = &log {
                log.stop();
            }
            return Err(e);
        }
        // Where a start's time goes (the pause of a hot swap is mostly this).
        tracing::debug!(
            "node start: {} instances in {} ms, log of {log_records} records read by {} ms, \
             state of {} keys found by {} ms, restored into the workers by {} ms",
            config.workers,
            instantiated.as_millis(),
            log_read.as_millis(),
            recovered.keys,
            recovered_at.as_millis(),
            started.elapsed().as_millis()
        );
        // Logged input after the checkpoint runs again before anything new, each stream on
        // one worker so its order is kept.
        for replay in recovery.replay {
            let Some(source) = spec.sources.get(replay.source as usize) else {
                continue;
            };
            if replay.frames.is_empty() {
                // A frame skipped at the source: it only moved the stream's position.
                continue;
            }
            shared.enqueue(
                (replay.stream % config.workers as u64) as usize,
                Work::Batch {
                    segment: source.segment,
                    messages: replay
                        .frames
                        .into_iter()
                        .map(|payload| Message {
                            key: Vec::new(),
                            payload,
                            event_time: replay.time,
                        })
                        .collect(),
                    credit: None,
                    from_source: true,
                    epoch: 0,
                },
            );
        }
        // Ticks start after the replay is queued: every replayed batch comes before the first.
        spawn_ticker(Arc::downgrade(&shared))?;
        let member = log.map(|log| {
            let resume = Resume {
                committed: recovery.checkpoint,
                highest_seen: recovery.highest_seen,
                released: recovery.released,
                unreleased: recovery
                    .unreleased
                    .iter()
                    .map(|(epoch, (lsn, _))| (*epoch, *lsn))
                    .collect(),
            };
            Member::new(
                shared.clone(),
                log,
                config.resilience == Resilience::ExactlyOnce,
                sink_tx,
                written.clone(),
                resume,
                recovery.unreleased,
            )
        });
        let checkpointing = match (member, &config.placement) {
            (Some(member), Some(_)) => {
                Checkpointing::Driven(Checkpoints(Arc::new(std::sync::Mutex::new(member))))
            }
            (None, Some(_)) => Checkpointing::Off,
            (member, None) => {
                let local = Local::new(member, shared.clone(), config.checkpoint_interval);
                let (asks, asked) = flume::unbounded();
                let nudges = shared.nudge.1.clone();
                let thread = std::thread::Builder::new()
                    .name("wallaroo-coordinator".into())
                    .spawn(move || local.run(asked, nudges))
                    .context("spawning the coordinator thread")?;
                Checkpointing::Local(thread, asks)
            }
        };
        recovered.took = started.elapsed();
        let sinks = sink_rx
            .into_iter()
            .zip(written)
            .map(|(batches, written)| Some(SinkQueue { batches, written }))
            .collect();
        let node = Node {
            spec,
            shared,
            threads,
            sinks,
            checkpointing,
            key_groups: config.key_groups,
            owners,
        };
        Ok((node, recovered))
    }

    /// In a cluster with a log: the handle the cluster's coordinator takes checkpoints with.
    pub fn checkpoints(&self) -> Option<Checkpoints> {
        match &self.checkpointing {
            Checkpointing::Driven(c) => Some(c.clone()),
            _ => None,
        }
    }

    /// Where batches routed here by other nodes of a cluster go in.
    pub fn remote_input(&self) -> RemoteInput {
        RemoteInput {
            shared: self.shared.clone(),
            key_groups: self.key_groups,
            owners: self.owners.clone(),
        }
    }

    /// The sources have stopped for good (in a cluster, for a stop or a change): event time
    /// stands still from now on, so that no window fires and no key expires after the
    /// checkpoint the node stops at (whose state a change hands over).
    pub fn stop_time(&self) {
        self.shared.stop_time();
    }

    /// Stops sources and asks no more of the workers than their current batch: queued work
    /// is left undone and nothing is checkpointed. A cluster rolling back to its last committed
    /// checkpoint stops its nodes so; what was left undone is replayed from the log.
    pub async fn abort(self) {
        self.shared.stop_taking_input();
        self.shared.aborting.store(true, Ordering::SeqCst);
        for credits in &self.shared.credits {
            credits.close();
        }
        stop_threads(self.shared.clone(), self.threads, self.checkpointing).await;
    }

    /// Takes a checkpoint, then stops as [`Node::abort`] does: what was accepted after the
    /// checkpoint's cut is left undone, and a node started on the same data directory
    /// recovers from that checkpoint and replays it from the log. Stop the sources first.
    /// Returns the checkpoint's number, or why none was taken (the node is stopped anyway,
    /// and recovers from its last committed checkpoint).
    pub async fn abort_at_checkpoint(self) -> Result<u64, String> {
        let asked = match &self.checkpointing {
            Checkpointing::Local(_, asks) => {
                let (reply, answer) = flume::bounded(1);
                match asks.send(Ask::Checkpoint(reply)) {
                    Ok(()) => answer
                        .recv_async()
                        .await
                        .unwrap_or_else(|_| Err("the coordinator stopped".into())),
                    Err(_) => Err("the coordinator stopped".into()),
                }
            }
            _ => Err("a cluster's coordinator takes this node's checkpoints".into()),
        };
        self.abort().await;
        asked
    }

    pub fn spec(&self) -> &AppSpec {
        &self.spec
    }

    /// Up to `per_step` keys' state of each stateful step from every worker, by step name:
    /// (step, key, state), for a new version to show it can restore them. Blocks until every
    /// worker has answered (behind the work queued for it), at most `patience`.
    pub async fn sample_state(
        &self,
        per_step: usize,
        patience: Duration,
    ) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        self.state_where(per_step, patience, |_| true).await
    }

    /// The state of every key in key groups `groups` (`wanted(group)`), by step name, from
    /// every worker: for key groups that move to another node. Call it with the node drained
    /// at a checkpoint, when the workers hold that checkpoint's state.
    pub async fn state_of_groups(
        &self,
        wanted: impl Fn(u32) -> bool,
        patience: Duration,
    ) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        let groups = self.key_groups;
        self.state_where(usize::MAX, patience, |key| wanted(groups.of(key).0))
            .await
    }

    async fn state_where(
        &self,
        per_step: usize,
        patience: Duration,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        let (reply, sampled) = flume::unbounded();
        for w in 0..self.shared.inboxes.len() {
            self.shared.control(
                w,
                Work::Sample {
                    per_step,
                    reply: reply.clone(),
                },
            );
        }
        drop(reply);
        let deadline = tokio::time::Instant::now() + patience;
        let mut out = Vec::new();
        while let Ok(Ok(part)) = tokio::time::timeout_at(deadline, sampled.recv_async()).await {
            for (step, key, value) in part {
                if !keep(&key) {
                    continue;
                }
                if let Some(s) = self.spec.steps.get(step as usize) {
                    out.push((s.name.clone(), key, value));
                }
            }
        }
        out
    }

    pub fn counters(&self) -> &NodeCounters {
        &self.shared.counters
    }

    pub fn dead_letters(&self) -> &DeadLetters {
        &self.shared.dead_letters
    }

    /// A handle that reads the node's metrics while it runs.
    pub fn metrics(&self) -> MetricsHandle {
        MetricsHandle(self.shared.clone())
    }

    /// Resolves once the node cannot go on, with why (e.g. a worker could not make a new
    /// guest instance after a trap). Its sources have stopped accepting by then, and nothing
    /// has been checkpointed since; what was acknowledged is in the log. The owner stops the
    /// node ([`Node::abort`]) and reports the failure.
    pub async fn failed(&self) -> String {
        let mut failure = self.shared.failure.subscribe();
        let why = failure
            .wait_for(Option::is_some)
            .await
            .map(|why| why.clone());
        match why {
            Ok(why) => why.unwrap_or_default(),
            // The sender lives in `self.shared`: not while `self` does.
            Err(_) => std::future::pending().await,
        }
    }

    /// The write-ahead log could not store something: nothing has committed since.
    pub fn log_failed(&self) -> bool {
        self.shared.log.as_ref().is_some_and(|l| l.failed())
    }

    pub fn resilience(&self) -> Resilience {
        self.shared.resilience
    }

    /// Resolves once the node has nothing more to do (asked to finish at the end): every
    /// source's stream has ended, every worker has seen event time reach its end (so every
    /// window fired), and nothing is queued here. Never without `finish_at_end`.
    pub async fn at_end(&self) {
        let finish = Finish(self.shared.clone());
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if finish.at_end() {
                return;
            }
        }
    }

    /// What a cluster's coordinator asks and tells a node asked to finish at the end (None
    /// for any other).
    pub fn finish(&self) -> Option<Finish> {
        self.shared.finish.then(|| Finish(self.shared.clone()))
    }

    /// Hands out [`SourceHandle`]s for source `source` (by index in the spec).
    pub fn source(&self, source: usize) -> SourceHandles {
        SourceHandles {
            shared: self.shared.clone(),
            source: source as u32,
            segment: self.spec.sources[source].segment,
        }
    }

    /// The queue of sink `sink`'s output. Each sink's queue can be taken once.
    pub fn take_sink(&mut self, sink: usize) -> SinkQueue {
        self.sinks[sink].take().expect("sink queue taken twice")
    }

    /// Waits until everything accepted so far has been processed (and, with a log, a last
    /// checkpoint has committed and released its output), then stops the workers. Call it
    /// after every source has stopped; sinks see their queues close once the workers exit.
    /// Returns the node's final totals.
    pub async fn shutdown(self) -> NodeTotals {
        self.shared.stop_taking_input();
        for credits in &self.shared.credits {
            credits.close();
        }
        let shared = self.shared.clone();
        let checkpointing = self.checkpointing;
        let checkpointing = tokio::task::spawn_blocking(move || {
            match &checkpointing {
                // The coordinator drains, takes a last checkpoint and stops.
                Checkpointing::Local(_, asks) => {
                    let (reply, stopped) = flume::bounded(1);
                    if asks.send(Ask::Stop(reply)).is_ok() {
                        let _ = stopped.recv();
                    }
                }
                // A cluster's coordinator drained the node already.
                _ => shared.wait_idle(Instant::now() + Duration::from_secs(3600)),
            }
            checkpointing
        })
        .await
        .expect("the stop's thread panicked");
        stop_threads(self.shared.clone(), self.threads, checkpointing).await;
        NodeTotals {
            log_failed: self.shared.log.as_ref().is_some_and(|l| l.failed()),
            ..self.shared.counters.totals()
        }
    }
}

/// How often each worker hears that its sources' event time moved on (a [`Work::Tick`]): how
/// late after its end plus delay a window fires, at most, on a node whose other inputs are
/// up to date.
const TICK_EVERY: Duration = Duration::from_millis(50);

/// A thread ticking the node's workers until the node is gone.
fn spawn_ticker(shared: std::sync::Weak<Shared>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("wallaroo-ticker".into())
        .spawn(move || {
            loop {
                std::thread::sleep(TICK_EVERY);
                let Some(shared) = shared.upgrade() else {
                    break;
                };
                if shared.aborting.load(Ordering::Relaxed) || !shared.tick() {
                    break;
                }
            }
        })
        .context("spawning the ticker thread")?;
    Ok(())
}

/// Stops the checkpoint timer (which takes a last checkpoint), then the workers once they
/// reach the end of their inboxes (or at once, when aborting), then the log.
async fn stop_threads(
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
    checkpointing: Checkpointing,
) {
    let _ = tokio::task::spawn_blocking(move || {
        if let Checkpointing::Local(thread, asks) = checkpointing {
            // Closing the channel ends the coordinator (at once, when aborting).
            drop(asks);
            let _ = thread.join();
        }
        for inbox in &shared.inboxes {
            let _ = inbox.send(Work::Stop);
        }
        for t in threads {
            let _ = t.join();
        }
        if let Some(log) = &shared.log {
            log.stop();
        }
    })
    .await;
}

/// Reads a running node's figures (for an HTTP endpoint or a status line).
#[derive(Clone)]
pub struct MetricsHandle(Arc<Shared>);

impl MetricsHandle {
    /// The Prometheus (OpenMetrics) text exposition of every metric.
    pub fn encode(&self) -> String {
        self.0.metrics.encode()
    }

    pub fn totals(&self) -> NodeTotals {
        self.0.counters.totals()
    }

    /// Messages into each segment so far, by the segment's first step.
    pub fn step_counts(&self) -> Vec<(String, u64)> {
        self.0.metrics.step_counts()
    }

    /// Messages too late for their windows so far, by window step (steps with none left out).
    pub fn late_counts(&self) -> Vec<(String, u64)> {
        self.0.metrics.late_counts()
    }

    /// Keys whose state the workers hold, and the bytes of those keys and states (running
    /// totals: cheap to read).
    pub fn state_size(&self) -> (u64, u64) {
        let c = &self.0.counters;
        (
            c.state_keys.get().max(0) as u64,
            c.state_bytes.get().max(0) as u64,
        )
    }

    /// Work items queued and not yet processed (zero with every source stopped: drained).
    pub fn in_flight(&self) -> usize {
        self.0.in_flight()
    }

    /// Routed batches sent to other nodes and received from them.
    pub fn routed_between_nodes(&self) -> (u64, u64) {
        (
            self.0.sent.load(Ordering::SeqCst),
            self.0.received.load(Ordering::SeqCst),
        )
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
