//! One generation of the application on one node: the engine with this node's key groups, its
//! sources and sinks, and the streams carrying routed batches to the other nodes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde_bytes::ByteBuf;
use tokio::sync::Notify;

use crate::proto::Rejoin;
use tokio::task::JoinSet;
use wallaroo_component::{AppSpec, CompileCache, Runtime, Sandbox, StepKind};
use wallaroo_connectors::{Edge, EdgePlan, Edges, SinkFraming, SourceAddress};
use wallaroo_engine::{
    Checkpoints, Level, Message, MetricsHandle, Node, Peers, Placement, RemoteInput,
};

use crate::daemon::Context;
use crate::manifest::Assignment;
use crate::proto::{Msg, Totals};

/// Batches queued for the network, over all peers, before this node's sources wait.
const CONGESTED_AT: usize = 256;

/// What a node's workers queue for another node, in order.
enum Outgoing {
    /// A routed batch: the segment it enters, the sending worker's epoch, and its messages.
    Batch(u32, u64, Vec<Message>),
    /// A worker's watermark levels, with its epoch (see `Peers::watermark`).
    Watermark {
        worker: usize,
        epoch: u64,
        levels: Vec<Level>,
    },
}

/// Routed batches for other nodes, queued per node; a task per node writes them to its stream.
pub(crate) struct NetPeers {
    queues: Vec<Option<flume::Sender<Outgoing>>>,
    /// This node's workers, whose watermarks make the node's.
    workers: usize,
    queued: AtomicUsize,
    /// Notified when `queued` falls back to [`CONGESTED_AT`].
    relieved: tokio::sync::Notify,
    pub(crate) messages: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

impl Peers for NetPeers {
    fn send(&self, node: usize, segment: u32, epoch: u64, messages: Vec<Message>) {
        let Some(Some(queue)) = self.queues.get(node) else {
            tracing::error!(node, "routed a batch to a node that is not in the cluster");
            return;
        };
        self.messages
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        self.queued.fetch_add(1, Ordering::SeqCst);
        if queue
            .send(Outgoing::Batch(segment, epoch, messages))
            .is_err()
            && self.queued.fetch_sub(1, Ordering::SeqCst) == CONGESTED_AT + 1
        {
            self.relieved.notify_waiters();
        }
    }

    fn watermark(&self, worker: usize, epoch: u64, levels: &[Level]) {
        for queue in self.queues.iter().flatten() {
            let _ = queue.send(Outgoing::Watermark {
                worker,
                epoch,
                levels: levels.to_vec(),
            });
        }
    }

    fn congested(&self) -> bool {
        self.queued.load(Ordering::SeqCst) > CONGESTED_AT
    }

    fn relieved(&self) -> &tokio::sync::Notify {
        &self.relieved
    }
}

/// A link of this generation to another node broke: the node must leave the cluster's
/// control stream so that the cluster rolls back, and say which link broke.
#[derive(Default)]
pub(crate) struct Trouble {
    notify: Notify,
    first: std::sync::Mutex<Option<Rejoin>>,
}

impl Trouble {
    fn report(&self, peer: usize, why: String) {
        self.first.lock().unwrap().get_or_insert(Rejoin {
            peer: Some(peer as u16),
            why,
        });
        self.notify.notify_one();
    }

    /// Resolves once a link broke, with which one and why.
    pub(crate) async fn broke(&self) -> Rejoin {
        self.notify.notified().await;
        self.first.lock().unwrap().clone().unwrap_or(Rejoin {
            peer: None,
            why: "a data stream broke".into(),
        })
    }
}

/// Where batches from other nodes go in, for one generation.
#[derive(Clone)]
pub(crate) struct Inbound {
    pub(crate) generation: u64,
    pub(crate) input: RemoteInput,
}

pub(crate) struct AppRun {
    pub(crate) app: String,
    pub(crate) generation: u64,
    node: Option<Node>,
    metrics: MetricsHandle,
    checkpoints: Option<Checkpoints>,
    peers: Arc<NetPeers>,
    edges: Edges,
    links: JoinSet<()>,
    pub(crate) source_addrs: Vec<String>,
    pub(crate) inbound: Inbound,
    pub(crate) workers: usize,
    /// The running component's SHA-256, and its spec.
    pub(crate) component: String,
    spec: AppSpec,
}

impl AppRun {
    /// Starts generation `generation` of the assigned application, rolled back to checkpoint
    /// `recover_to`. `trouble` is notified when a link to another node breaks: this
    /// generation can no longer be trusted and the cluster must roll back.
    pub(crate) async fn start(
        ctx: &Arc<Context>,
        assignment: &Assignment,
        component: &str,
        generation: u64,
        recover_to: u64,
        trouble: Arc<Trouble>,
    ) -> anyhow::Result<AppRun> {
        let m = &assignment.manifest;
        assignment.check()?;
        let me = assignment.index as usize;
        let workers = m.settings.workers_or(ctx.options.workers);
        let runtime = load_runtime(ctx, m, component).await?;

        let mut queues = Vec::new();
        let mut receivers = Vec::new();
        for n in 0..m.nodes.len() {
            if n == me {
                queues.push(None);
                receivers.push(None);
            } else {
                let (tx, rx) = flume::unbounded();
                queues.push(Some(tx));
                receivers.push(Some(rx));
            }
        }
        let peers = Arc::new(NetPeers {
            queues,
            workers,
            queued: AtomicUsize::new(0),
            relieved: tokio::sync::Notify::new(),
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        let mut config = m.settings.node_config(
            ctx.data.app(),
            m.args.clone(),
            workers,
            ctx.options.discard_corrupt_log,
        )?;
        // A version a hot swap let drop state drops it on every start, also from the swap's
        // checkpoint again after a crash.
        config.drop_state = ctx.data.dropped_state(component)?;
        config.placement = Some(Placement {
            node: me,
            table: Arc::new(m.table.clone()),
            peers: peers.clone(),
            recover_to,
        });

        let mut links = JoinSet::new();
        for (n, rx) in receivers.into_iter().enumerate() {
            // A removed node is sent nothing: it owns no key group.
            let Some(rx) = rx.filter(|_| !m.retired.contains(&(n as u16))) else {
                continue;
            };
            links.spawn(feed_peer(
                ctx.clone(),
                (n, m.nodes[n].clone()),
                me as u16,
                generation,
                rx,
                peers.clone(),
                trouble.clone(),
            ));
        }

        let (mut node, recovered) =
            tokio::task::spawn_blocking(move || Node::start(&runtime, config))
                .await
                .context("starting the engine")??;
        let spec = node.spec().clone();
        let running_spec = spec.clone();
        if let Some(c) = &recovered.discarded {
            tracing::warn!("generation {generation}: {}", c.dropped());
        }
        for (step, keys) in &recovered.dropped {
            tracing::warn!(
                "generation {generation}: dropped the state of stateful step '{step}' ({keys} \
                 keys), which this version lacks, as --drop-state asked"
            );
        }
        if recovered.checkpoint > 0 || recovered.replayed_messages > 0 {
            tracing::warn!("generation {generation}: {recovered}");
        }

        let edges = Edges::start(
            &mut node,
            &EdgePlan {
                sources: m.settings.source_options(),
                source_address: SourceAddress::Moved {
                    host: ctx.options.source_host.clone(),
                    port_offset: ctx.options.source_port_offset,
                },
                // Every node runs every TCP source; a generator would run once per node.
                generators: me == 0,
                tagged_stream: (m.settings.sink_framing == SinkFraming::Tagged)
                    .then(|| format!("/node{me}")),
                // Each node reads its share of a topic's partitions.
                kafka: m.settings.kafka_plan(
                    me as u32,
                    m.nodes.len() as u32,
                    format!(".node{me}"),
                    wallaroo_connectors::kafka::instance_for(
                        &spec,
                        m.settings.resilience == wallaroo_engine::Resilience::ExactlyOnce,
                        &ctx.data.app(),
                    )?,
                ),
            },
        )
        .await?;
        let source_addrs = edges
            .started
            .iter()
            .filter_map(|edge| match edge {
                Edge::Listening { source, addr } => Some(format!("{source} {addr}")),
                Edge::Generating { source } => Some(format!("{source} (generator)")),
                Edge::Reading { source, from } => Some(format!("{source} ({from})")),
                Edge::Writing { .. } => None,
            })
            .collect();
        let inbound = Inbound {
            generation,
            input: node.remote_input(),
        };
        Ok(AppRun {
            app: spec.name.clone(),
            generation,
            metrics: node.metrics(),
            checkpoints: node.checkpoints(),
            node: Some(node),
            peers,
            edges,
            links,
            source_addrs,
            inbound,
            workers,
            component: component.to_string(),
            spec: running_spec,
        })
    }

    /// Makes component `component` ready to take over: compiles it (into the cache, so its
    /// start does not wait for that) and checks that its spec keeps every stateful step of
    /// the running one, by name, but those of `drop_state`, whose state it is then let drop.
    pub(crate) async fn ready(
        &self,
        ctx: &Arc<Context>,
        assignment: &Assignment,
        component: &str,
        drop_state: &[String],
    ) -> anyhow::Result<()> {
        let m = &assignment.manifest;
        let runtime = load_runtime(ctx, m, component).await?;
        let args = m.args.clone();
        let (mut instance, spec) = tokio::task::spawn_blocking(move || {
            let mut instance = runtime.instantiate()?;
            let spec = instance
                .describe(&args)
                .map_err(|e| anyhow::anyhow!("application_setup failed: {e}"))?;
            anyhow::Ok((instance, spec))
        })
        .await
        .context("describing the new version")??;
        wallaroo_component::check_drop_state(&self.spec, &spec, drop_state)?;
        wallaroo_component::check_keeps_state(&self.spec, &spec, drop_state)?;
        // State the new code cannot take (a Python class that no longer unpickles) is found
        // now, on a sample of keys, rather than after the switch.
        let sample = match &self.node {
            Some(node) => node.sample_state(16, Duration::from_secs(10)).await,
            None => Vec::new(),
        };
        let positions: std::collections::HashMap<String, u32> = spec
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind == StepKind::Stateful)
            .map(|(i, s)| (s.name.clone(), i as u32))
            .collect();
        tokio::task::spawn_blocking(move || {
            for (step, key, value) in sample {
                let Some(&at) = positions.get(&step) else {
                    continue;
                };
                let entry = wallaroo_component::StateEntry {
                    step: at,
                    key: key.clone(),
                    value,
                };
                if let Err(e) = instance.restore(std::slice::from_ref(&entry)) {
                    anyhow::bail!(
                        "the new version cannot restore the state of stateful step '{step}' \
                         for key '{}': {e}",
                        String::from_utf8_lossy(&key)
                    );
                }
            }
            Ok(())
        })
        .await
        .context("restoring state into the new version")??;
        ctx.data.allow_dropped_state(component, drop_state)
    }

    pub(crate) fn checkpoints(&self) -> Option<Checkpoints> {
        self.checkpoints.clone()
    }

    /// Hands the state of the key groups this node owns and `next` gives to other nodes to
    /// them, as of committed checkpoint `checkpoint` (the cluster is drained at it, so the
    /// workers hold its state), and returns once each has logged it.
    pub(crate) async fn hand_over(
        &self,
        ctx: &Arc<Context>,
        assignment: &Assignment,
        checkpoint: u64,
        next: &crate::Manifest,
    ) -> anyhow::Result<()> {
        let me = assignment.index;
        let table = &assignment.manifest.table;
        if next.table.len() != table.len() {
            anyhow::bail!(
                "the new key-group table has {} groups, this node's {}",
                next.table.len(),
                table.len()
            );
        }
        let leaving = |g: u32| {
            let g = g as usize;
            table[g] == me && next.table[g] != me
        };
        let Some(node) = &self.node else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let state = node.state_of_groups(leaving, Duration::from_secs(60)).await;
        let taken_ms = started.elapsed().as_millis();
        let bytes: usize = state.iter().map(|(_, k, v)| k.len() + v.len()).sum();
        let groups = wallaroo_types::KeyGroups::try_new(next.settings.key_groups)?;
        let mut by_owner: std::collections::BTreeMap<u16, Vec<_>> = Default::default();
        for (step, key, value) in state {
            let owner = next.table[groups.of(&key).0 as usize];
            by_owner.entry(owner).or_default().push((step, key, value));
        }
        let keys: usize = by_owner.values().map(Vec::len).sum();
        for (owner, state) in by_owner {
            let addr = &next.nodes[owner as usize];
            let to = || format!("handing key state to node {owner} ({addr})");
            let handoff = wallaroo_engine::Handoff::of(state);
            let conn = ctx.connection(addr).await.with_context(to)?;
            // In parts well under a frame's limit.
            let mut entries = handoff.entries.into_iter().peekable();
            while entries.peek().is_some() {
                let mut bytes = 0;
                let mut part = Vec::new();
                while let Some(e) = entries.next_if(|_| bytes < HANDOFF_PART_BYTES) {
                    bytes += e.key.len() + e.value.len() + 16;
                    part.push((e.step, ByteBuf::from(e.key), ByteBuf::from(e.value)));
                }
                let msg = Msg::Handoff {
                    deployment: next.deployment.clone(),
                    checkpoint,
                    steps: handoff.steps.clone(),
                    entries: part,
                };
                match crate::daemon::request(&conn, &msg).await.with_context(to)? {
                    Msg::Ok => {}
                    Msg::Refused(why) => return Err(anyhow::Error::new(why).context(to())),
                    other => anyhow::bail!("{}: unexpected answer {}", to(), other.name()),
                }
            }
        }
        tracing::info!(
            "handed {keys} keys' state over at checkpoint {checkpoint} in {} ms \
             ({bytes} bytes of keys and state, taken from the workers in {taken_ms} ms)",
            started.elapsed().as_millis()
        );
        // A node the change removes will not be there to release its output again after a
        // crash: it answers once its sinks have written out what the checkpoint released.
        if next.retired.contains(&me) {
            self.written_out(checkpoint)
                .await
                .map_err(|e| anyhow::anyhow!("{e:#}; it keeps its key groups"))?;
        }
        Ok(())
    }

    /// Waits until the sinks have written out the output released up to `checkpoint` (with
    /// exactly-once output; otherwise at once), for at most 30 s.
    pub(crate) async fn written_out(&self, checkpoint: u64) -> anyhow::Result<()> {
        let exactly_once = self
            .node
            .as_ref()
            .is_some_and(|n| n.resilience() == wallaroo_engine::Resilience::ExactlyOnce);
        let Some(c) = self.checkpoints.clone().filter(|_| exactly_once) else {
            return Ok(());
        };
        let patience = Duration::from_secs(30);
        let deadline = std::time::Instant::now() + patience;
        let written = tokio::task::spawn_blocking(move || c.wait_written(checkpoint, deadline))
            .await
            .unwrap_or(false);
        if !written {
            anyhow::bail!(
                "its sinks did not write out the output of checkpoint {checkpoint} within {} s \
                 (is the receiver there?)",
                patience.as_secs()
            );
        }
        Ok(())
    }

    /// With the deployment asked to finish at the end: this node's view of its input.
    pub(crate) fn finish(&self) -> Option<wallaroo_engine::Finish> {
        self.node.as_ref().and_then(|n| n.finish())
    }

    pub(crate) fn next_checkpoint(&self) -> u64 {
        self.checkpoints.as_ref().map_or(1, |c| c.next_number())
    }

    /// Resolves once this node's engine cannot go on (see `Node::failed`), with why.
    pub(crate) async fn failed(&self) -> String {
        match &self.node {
            Some(node) => node.failed().await,
            None => std::future::pending().await,
        }
    }

    pub(crate) fn peers(&self) -> Arc<NetPeers> {
        self.peers.clone()
    }

    pub(crate) fn metrics(&self) -> &MetricsHandle {
        &self.metrics
    }

    pub(crate) fn remote(&self) -> (u64, u64) {
        (
            self.peers.messages.load(Ordering::Relaxed),
            self.peers.bytes.load(Ordering::Relaxed),
        )
    }

    /// Stops now: sources close, queued work is dropped (the log replays it), nothing more is
    /// written.
    pub(crate) async fn abort(mut self) {
        self.edges.abort_sources();
        // The sinks go first: a release blocked on a full sink queue (a slow receiver) would
        // otherwise hold the node's threads, which the abort waits for. What they did not
        // write stays in the log and is released again after the rollback.
        self.edges.abort_sinks();
        if let Some(node) = self.node.take() {
            node.abort().await;
        }
        self.links.abort_all();
    }

    /// Stops taking input; returns once every source has stopped.
    pub(crate) async fn stop_sources(&mut self) {
        self.edges.stop_sources().await;
        if let Some(node) = &self.node {
            node.stop_time();
        }
    }

    /// Queued work here, and routed batches sent to and taken from other nodes.
    pub(crate) fn drain_state(&self) -> (usize, u64, u64) {
        let (sent, received) = self.metrics.routed_between_nodes();
        (self.metrics.in_flight(), sent, received)
    }

    /// Everything is processed everywhere: stops the workers, flushes the sinks.
    pub(crate) async fn shutdown(mut self) -> Totals {
        let (remote_messages, remote_bytes) = self.remote();
        let totals = match self.node.take() {
            Some(node) => node.shutdown().await,
            None => return Totals::default(),
        };
        // The checkpoint coordinator holds the sinks' queues open: let them close.
        self.checkpoints = None;
        self.edges.finish_sinks().await;
        // Drained everywhere: nothing is queued for the other nodes any more.
        self.links.abort_all();
        Totals {
            received: totals.received,
            emitted: totals.emitted,
            dead_lettered: totals.dead_lettered,
            remote_messages,
            remote_bytes,
        }
    }
}

/// Writes this node's routed batches for node `to` (at `addr`) to a data stream, in order. If
/// the link breaks, batches may be lost in it: `trouble` tells the node to have the cluster
/// roll back, and which link broke.
async fn feed_peer(
    ctx: Arc<Context>,
    (to, addr): (usize, String),
    from: u16,
    generation: u64,
    queue: flume::Receiver<Outgoing>,
    peers: Arc<NetPeers>,
    trouble: Arc<Trouble>,
) {
    let mut warned = false;
    let mut watermark = NodeWatermark::new(peers.workers);
    let (conn, mut tx) = loop {
        let opened = async {
            let conn = ctx.connection(&addr).await?;
            let (mut tx, _rx) = conn.open::<Msg, Msg>().await?;
            tx.send(&Msg::Data { from, generation }).await?;
            anyhow::Ok((conn, tx))
        };
        match opened.await {
            Ok(link) => break link,
            Err(e) => {
                if !warned {
                    tracing::warn!("cannot open a data stream to {addr}: {e:#}; retrying");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let mut last_bytes = conn.bytes_sent();
    loop {
        let next = tokio::select! {
            next = queue.recv_async() => next,
            why = conn.closed() => {
                tracing::error!(
                    "the connection to {addr} closed ({why}); the cluster rolls back to its \
                     last checkpoint"
                );
                trouble.report(to, format!("the connection to {addr} closed ({why})"));
                return;
            }
        };
        let batch = match next {
            Err(_) => break,
            Ok(Outgoing::Batch(segment, epoch, messages)) => {
                let batch = Msg::Batch {
                    segment,
                    epoch,
                    messages: messages
                        .into_iter()
                        .map(|m| (ByteBuf::from(m.key), ByteBuf::from(m.payload), m.event_time))
                        .collect(),
                };
                if peers.queued.fetch_sub(1, Ordering::SeqCst) == CONGESTED_AT + 1 {
                    peers.relieved.notify_waiters();
                }
                batch
            }
            Ok(Outgoing::Watermark {
                worker,
                epoch,
                levels,
            }) => match watermark.heard(worker, epoch, levels) {
                Some((epoch, levels)) => Msg::Watermark { epoch, levels },
                None => continue,
            },
        };
        let sent = tx.send(&batch).await;
        if let Err(e) = sent {
            tracing::error!(
                "the data stream to {addr} broke ({e:#}); the cluster rolls back to its last \
                 checkpoint"
            );
            trouble.report(to, format!("the data stream to {addr} broke ({e:#})"));
            return;
        }
        let now = conn.bytes_sent();
        peers
            .bytes
            .fetch_add(now.saturating_sub(last_bytes), Ordering::Relaxed);
        last_bytes = now;
    }
    let _ = tx.finish().await;
}

/// A node's watermark for another node: the least of its workers' levels, once each has
/// spoken (before, the other node's own zeros stand for it).
struct NodeWatermark {
    workers: Vec<Option<Vec<Level>>>,
    epoch: u64,
    sent: Vec<Level>,
}

impl NodeWatermark {
    fn new(workers: usize) -> Self {
        Self {
            workers: vec![None; workers],
            epoch: 0,
            sent: Vec::new(),
        }
    }

    /// Worker `worker` sent `levels` in `epoch`: the node's levels and epoch to send on, when
    /// they moved.
    fn heard(
        &mut self,
        worker: usize,
        epoch: u64,
        levels: Vec<Level>,
    ) -> Option<(u64, Vec<Level>)> {
        *self.workers.get_mut(worker)? = Some(levels);
        self.epoch = self.epoch.max(epoch);
        let heard: Vec<&Vec<Level>> = self
            .workers
            .iter()
            .map(Option::as_ref)
            .collect::<Option<_>>()?;
        // Per level, the least time of the workers not idle there; idle where all are.
        let depth = heard.iter().map(|levels| levels.len()).min().unwrap_or(0);
        let least: Vec<Level> = (0..depth)
            .map(|k| Level::least(heard.iter().map(|levels| levels[k])))
            .collect();
        if least == self.sent {
            return None;
        }
        self.sent = least.clone();
        Some((self.epoch, least))
    }
}

/// Key state handed over in messages of about this many bytes.
const HANDOFF_PART_BYTES: usize = 8 << 20;

/// Has component `component` compiled (into the cache), for a node that runs nothing yet.
pub(crate) async fn compile(
    ctx: &Context,
    m: &crate::Manifest,
    component: &str,
) -> anyhow::Result<()> {
    load_runtime(ctx, m, component).await.map(drop)
}

/// Compiles (or takes from the cache) component `component` of deployment `m`, off the async
/// threads, which must keep answering the other nodes meanwhile.
async fn load_runtime(
    ctx: &Context,
    m: &crate::Manifest,
    component: &str,
) -> anyhow::Result<Runtime> {
    let wasm_path = ctx.data.component(component);
    let limits = m.settings.limits();
    let deployment = m.deployment.clone();
    let cache =
        CompileCache::at_or_default(ctx.options.cache_dir.as_deref()).on_compile(move || {
            // Seconds with nothing else to show: say why (a cache hit says nothing).
            tracing::info!(
                "compiling the component of deployment {deployment} (first run on this node; \
             cached afterwards)"
            );
        });
    let (runtime, _) = tokio::task::spawn_blocking(move || {
        let wasm = std::fs::read(&wasm_path)
            .with_context(|| format!("cannot read {}", wasm_path.display()))?;
        Runtime::new(&wasm, &cache, limits, Sandbox::default()).context("loading the component")
    })
    .await
    .context("loading the component")??;
    Ok(runtime)
}
