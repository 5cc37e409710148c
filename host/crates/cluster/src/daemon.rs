//! `wallaroo node`: the daemon on every host. It holds no application until one is deployed;
//! then it runs its share (the key groups the coordinator gave it), takes routed batches from
//! the other nodes, and answers the coordinator's commands. A node that restarts finds its
//! assignment in its data directory and rejoins the cluster.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{Semaphore, watch};
use wallaroo_engine::{Checkpoints, Message, MetricsHandle};
use wallaroo_transport::{ClusterTls, Connection, Endpoint, FrameReceiver, FrameSender};

use crate::app::{AppRun, Inbound, Trouble};
use crate::coordinator::{Coordinator, Joined};
use crate::manifest::{Assignment, DataDir};
use crate::proto::{Msg, NodeStatus, Recovery, Rejoin, group_ranges};

/// Batches from one peer that may wait in this node unprocessed before the peer's stream is
/// no longer read (and QUIC's flow control holds the peer back).
const DATA_CREDITS: usize = 64;

#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub certs: PathBuf,
    /// Where this node's sources listen (the host part); their ports are the application's
    /// plus `source_port_offset`.
    pub source_host: String,
    pub source_port_offset: u16,
    /// Workers unless the deployment says.
    pub workers: Option<usize>,
    pub cache_dir: Option<PathBuf>,
    /// Start even if the node's write-ahead log is corrupt, dropping it from the bad record on.
    pub discard_corrupt_log: bool,
}

pub(crate) type Stream = (FrameSender<Msg>, FrameReceiver<Msg>);

pub(crate) struct Context {
    pub(crate) options: NodeOptions,
    pub(crate) data: DataDir,
    endpoint: Endpoint,
    /// One slot per address, so that connecting to a node that is down holds up nothing else.
    connections: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Connection>>>>>,
    /// The application's current generation here, for data streams.
    inbound: watch::Sender<Option<Inbound>>,
    /// What `wallaroo status` reads.
    view: Mutex<Option<View>>,
    assignment: Mutex<Option<Assignment>>,
    /// The coordinator (on the first node) takes control streams from here.
    joins: Mutex<Option<flume::Sender<Joined>>>,
    /// The last generation a restarted coordinator announced (see [`Msg::Restarted`]).
    coordinator_restarted: watch::Sender<u64>,
    /// On the coordinator, while the cluster recovers: since when, and what it waits for.
    pub(crate) recovery: Mutex<Option<(std::time::Instant, Recovery)>>,
    /// The application's last run here (generation, name, last committed checkpoint), for
    /// `wallaroo status` while it does not run.
    last_run: Mutex<Option<(u64, String, u64)>>,
}

#[derive(Clone)]
struct View {
    generation: u64,
    app: String,
    metrics: MetricsHandle,
    checkpoints: Option<Checkpoints>,
    sources: Vec<String>,
    workers: usize,
    peers: Arc<crate::app::NetPeers>,
}

impl Context {
    /// A connection to another node (or this one), reused while it lives.
    pub(crate) async fn connection(&self, addr: &str) -> anyhow::Result<Connection> {
        let slot = self
            .connections
            .lock()
            .unwrap()
            .entry(addr.to_string())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let resolved = resolve(addr).await?;
        let conn = self.endpoint.connect(resolved).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the connection to `addr`: the next [`Context::connection`] makes a new one.
    /// (Who holds the old one keeps it.)
    fn forget_connection(&self, addr: &str) {
        self.connections.lock().unwrap().remove(addr);
    }

    pub(crate) fn assignment(&self) -> Option<Assignment> {
        self.assignment.lock().unwrap().clone()
    }
}

pub(crate) async fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("cannot resolve {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))
}

/// Runs the node until `stop` resolves.
pub async fn run_node(
    options: NodeOptions,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let tls = ClusterTls::load(&options.certs)?;
    let endpoint = Endpoint::bind(options.listen, &tls)
        .with_context(|| format!("cannot listen on {} (UDP)", options.listen))?;
    std::fs::create_dir_all(&options.data_dir)
        .with_context(|| format!("cannot create {}", options.data_dir.display()))?;
    let data = DataDir(options.data_dir.clone());
    let assignment = data.assignment()?;
    let ctx = Arc::new(Context {
        data,
        endpoint,
        connections: Default::default(),
        inbound: watch::channel(None).0,
        view: Mutex::new(None),
        assignment: Mutex::new(assignment.clone()),
        joins: Mutex::new(None),
        coordinator_restarted: watch::channel(0).0,
        recovery: Mutex::new(None),
        last_run: Mutex::new(None),
        options,
    });
    eprintln!(
        "node listening on {} (QUIC, mutual TLS), data in {}",
        ctx.endpoint.local_addr()?,
        ctx.options.data_dir.display()
    );
    match &assignment {
        Some(a) => {
            eprintln!(
                "rejoining deployment {} as node {} of {}",
                a.manifest.deployment,
                a.index,
                a.manifest.nodes.len()
            );
            start_roles(&ctx, a.clone(), None);
        }
        None => eprintln!("no application deployed; waiting for `wallaroo deploy`"),
    }
    let accept = {
        let ctx = ctx.clone();
        async move {
            while let Some(conn) = ctx.endpoint.accept().await {
                tokio::spawn(serve_connection(ctx.clone(), conn));
            }
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = stop => eprintln!("node stopping"),
    }
    ctx.endpoint.close();
    Ok(())
}

/// The agent (every node) and, on the first node, the coordinator.
fn start_roles(
    ctx: &Arc<Context>,
    assignment: Assignment,
    deployed: Option<tokio::sync::oneshot::Sender<anyhow::Result<Msg>>>,
) {
    if assignment.index == 0 {
        let (tx, rx) = flume::unbounded();
        *ctx.joins.lock().unwrap() = Some(tx);
        let record = ctx.data.cluster_record().unwrap_or_default();
        let coordinator = Coordinator::new(ctx.clone(), assignment.manifest.clone(), record, rx);
        tokio::spawn(coordinator.run(deployed));
    }
    tokio::spawn(agent(ctx.clone(), assignment));
}

async fn serve_connection(ctx: Arc<Context>, conn: Connection) {
    loop {
        let (tx, mut rx) = match conn.accept::<Msg, Msg>().await {
            Ok(Some(stream)) => stream,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("connection from {}: {e:#}", conn.remote_address());
                return;
            }
        };
        let ctx = ctx.clone();
        let peer = conn.remote_address();
        tokio::spawn(async move {
            let first = match rx.recv().await {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!("stream from {peer}: {e:#}");
                    return;
                }
            };
            if let Err(e) = serve_stream(ctx, first, tx, rx).await {
                tracing::debug!("stream from {peer}: {e:#}");
            }
        });
    }
}

async fn serve_stream(
    ctx: Arc<Context>,
    first: Msg,
    mut tx: FrameSender<Msg>,
    mut rx: FrameReceiver<Msg>,
) -> anyhow::Result<()> {
    match first {
        Msg::Data { from, generation } => take_data(ctx, from, generation, rx).await,
        Msg::Join {
            index,
            deployment,
            rejoin,
        } => {
            let joins = ctx.joins.lock().unwrap().clone();
            match joins {
                Some(joins) => {
                    let _ = joins.send(Joined::Node {
                        index,
                        deployment,
                        rejoin,
                        stream: Box::new((tx, rx)),
                    });
                }
                None => {
                    tx.send(&Msg::Refused(
                        "this node does not coordinate a deployment".into(),
                    ))
                    .await?
                }
            }
            Ok(())
        }
        mut request => loop {
            let reply = answer(&ctx, request).await;
            tx.send(&reply).await?;
            request = match rx.recv().await? {
                Some(m) => m,
                None => return Ok(()),
            };
        },
    }
}

/// Answers one client request.
async fn answer(ctx: &Arc<Context>, request: Msg) -> Msg {
    let refused = |e: anyhow::Error| Msg::Refused(format!("{e:#}"));
    match request {
        Msg::HasComponent { hash } => Msg::Have(ctx.data.has_component(&hash)),
        Msg::PutComponent { hash, bytes } => {
            let data = ctx.data.clone();
            match tokio::task::spawn_blocking(move || data.put_component(&hash, &bytes)).await {
                Ok(Ok(())) => Msg::Ok,
                Ok(Err(e)) => refused(e),
                Err(e) => refused(e.into()),
            }
        }
        Msg::Assign { manifest, index } => {
            if let Some(current) = ctx.assignment() {
                if current.manifest.deployment == manifest.deployment && current.index == index {
                    return Msg::Ok;
                }
                return Msg::Refused(format!(
                    "node already runs deployment {}",
                    current.manifest.deployment
                ));
            }
            if !ctx.data.has_component(&manifest.component) {
                return Msg::Refused(format!(
                    "component {} was not shipped here",
                    manifest.component
                ));
            }
            let assignment = Assignment { manifest, index };
            if let Err(e) = ctx.data.assign(&assignment) {
                return refused(e);
            }
            *ctx.assignment.lock().unwrap() = Some(assignment.clone());
            if index != 0 {
                start_roles(ctx, assignment, None);
            }
            Msg::Ok
        }
        Msg::Restarted {
            deployment,
            generation,
        } => {
            if ctx
                .assignment()
                .is_some_and(|a| a.manifest.deployment == deployment)
            {
                ctx.coordinator_restarted.send_replace(generation);
            }
            Msg::Ok
        }
        Msg::Deploy { manifest } => match deploy(ctx, manifest).await {
            Ok(reply) => reply,
            Err(e) => refused(e),
        },
        Msg::Status => Msg::NodeStatus(Box::new(status(ctx))),
        Msg::Stop => {
            let joins = ctx.joins.lock().unwrap().clone();
            match (ctx.assignment(), joins) {
                (Some(a), Some(joins)) if a.index == 0 => {
                    let (reply, replied) = tokio::sync::oneshot::channel();
                    let _ = joins.send(Joined::Stop(reply));
                    replied.await.unwrap_or_else(|_| {
                        Msg::Refused("the coordinator stopped before answering".into())
                    })
                }
                (Some(_), _) => Msg::Refused(
                    "this node does not coordinate; send stop to the first node in hosts.txt"
                        .into(),
                ),
                (None, _) => Msg::Refused("no application is deployed".into()),
            }
        }
        other => Msg::Refused(format!("unexpected request {}", other.name())),
    }
}

/// The coordinator's side of `wallaroo deploy`: assigns key groups, hands every node its
/// share, and answers once the application runs everywhere.
async fn deploy(
    ctx: &Arc<Context>,
    mut manifest: crate::manifest::Manifest,
) -> anyhow::Result<Msg> {
    if let Some(current) = ctx.assignment() {
        let app = ctx
            .view
            .lock()
            .unwrap()
            .as_ref()
            .map(|v| v.app.clone())
            .unwrap_or_else(|| "(starting)".into());
        anyhow::bail!(
            "the cluster already runs application '{app}' (deployment {}); deploying over a \
             running application is how a hot swap will start, which this version cannot do \
             yet: stop it first with `wallaroo stop --nodes HOSTS`",
            current.manifest.deployment
        );
    }
    manifest.table =
        crate::manifest::assign_key_groups(manifest.settings.key_groups, manifest.nodes.len());
    for (i, addr) in manifest.nodes.iter().enumerate() {
        let assign = Msg::Assign {
            manifest: manifest.clone(),
            index: i as u16,
        };
        if i == 0 {
            match Box::pin(answer(ctx, assign)).await {
                Msg::Ok => {}
                Msg::Refused(why) => anyhow::bail!("{addr}: {why}"),
                other => anyhow::bail!("{addr}: unexpected answer {}", other.name()),
            }
            continue;
        }
        let conn = ctx
            .connection(addr)
            .await
            .with_context(|| format!("node {i} ({addr})"))?;
        match request(&conn, &assign).await? {
            Msg::Ok => {}
            Msg::Refused(why) => anyhow::bail!("node {i} ({addr}) refused: {why}"),
            other => anyhow::bail!("node {i} ({addr}): unexpected answer {}", other.name()),
        }
    }
    let assignment = ctx.assignment().context("assignment lost")?;
    let (deployed, started) = tokio::sync::oneshot::channel();
    start_roles(ctx, assignment, Some(deployed));
    started.await.context("the coordinator stopped")?
}

/// One request on a new stream, and its answer.
pub(crate) async fn request(conn: &Connection, msg: &Msg) -> anyhow::Result<Msg> {
    let (mut tx, mut rx) = conn.open::<Msg, Msg>().await?;
    tx.send(msg).await?;
    let reply = rx
        .recv()
        .await?
        .with_context(|| format!("{} closed the stream", conn.remote_address()))?;
    let _ = tx.finish().await;
    Ok(reply)
}

fn status(ctx: &Arc<Context>) -> NodeStatus {
    let assignment = ctx.assignment();
    let mut s = NodeStatus {
        address: ctx.options.listen.to_string(),
        app: "-".into(),
        state: "no application".into(),
        ..NodeStatus::default()
    };
    let Some(a) = assignment else { return s };
    s.index = a.index;
    s.key_groups = group_ranges(&a.manifest.table, a.index);
    s.state = "recovering".into();
    if let Some((generation, app, checkpoint)) = ctx.last_run.lock().unwrap().clone() {
        s.generation = generation;
        s.app = app;
        s.last_checkpoint = checkpoint;
    }
    s.recovery = ctx
        .recovery
        .lock()
        .unwrap()
        .clone()
        .map(|(since, recovery)| Recovery {
            waited_ms: since.elapsed().as_millis() as u64,
            ..recovery
        });
    let view = ctx.view.lock().unwrap().clone();
    if let Some(v) = view {
        let totals = v.metrics.totals();
        s.app = v.app;
        s.state = "running".into();
        s.generation = v.generation;
        s.workers = v.workers;
        s.received = totals.received;
        s.emitted = totals.emitted;
        s.dead_lettered = totals.dead_lettered;
        s.backlog = totals.backlog;
        s.steps = v.metrics.step_counts();
        s.last_checkpoint = v.checkpoints.map_or(0, |c| c.last_committed());
        s.remote_messages = v.peers.messages.load(std::sync::atomic::Ordering::Relaxed);
        s.remote_bytes = v.peers.bytes.load(std::sync::atomic::Ordering::Relaxed);
        s.sources = v.sources;
    }
    s
}

/// Takes routed batches from node `from` for generation `generation`, once this node runs it.
async fn take_data(
    ctx: Arc<Context>,
    from: u16,
    generation: u64,
    mut rx: FrameReceiver<Msg>,
) -> anyhow::Result<()> {
    let mut current = ctx.inbound.subscribe();
    let inbound = loop {
        match &*current.borrow_and_update() {
            Some(i) if i.generation == generation => break i.clone(),
            Some(i) if i.generation > generation => return Ok(()),
            _ => {}
        }
        current.changed().await?;
    };
    let credits = Arc::new(Semaphore::new(DATA_CREDITS));
    loop {
        let credit = credits.clone().acquire_owned().await?;
        let Some(msg) = rx.recv().await? else {
            return Ok(());
        };
        let Msg::Batch {
            segment,
            epoch,
            messages,
        } = msg
        else {
            anyhow::bail!("node {from} sent {} on a data stream", msg.name());
        };
        if current
            .borrow()
            .as_ref()
            .is_none_or(|i| i.generation != generation)
        {
            // This generation was stopped: what it still carries is replayed from the logs.
            return Ok(());
        }
        let messages = messages
            .into_iter()
            .map(|(key, payload)| Message {
                key: key.into_vec(),
                payload: payload.into_vec(),
            })
            .collect();
        inbound
            .input
            .deliver(segment, epoch, messages, Some(credit));
    }
}

/// The node's side of the cluster: joins the coordinator and carries out its commands. When
/// the coordinator goes away, stops the application and joins again.
async fn agent(ctx: Arc<Context>, assignment: Assignment) {
    let coordinator = assignment.manifest.nodes[0].clone();
    let mut trouble = Arc::new(Trouble::default());
    let mut run: Option<AppRun> = None;
    let mut warned = false;
    // Why this node left its last control stream: the coordinator is told when it joins again.
    let mut left: Option<Rejoin> = None;
    let mut restarted = ctx.coordinator_restarted.subscribe();
    loop {
        // A restart announced before this join is one this join already follows.
        restarted.borrow_and_update();
        let joined = async {
            let conn = ctx.connection(&coordinator).await?;
            let (mut tx, rx) = conn.open::<Msg, Msg>().await?;
            tx.send(&Msg::Join {
                index: assignment.index,
                deployment: assignment.manifest.deployment.clone(),
                rejoin: left.clone(),
            })
            .await?;
            anyhow::Ok((tx, rx))
        };
        let (mut tx, mut rx) = match joined.await {
            Ok(stream) => stream,
            Err(e) => {
                if !warned {
                    tracing::warn!("cannot join the coordinator at {coordinator}: {e:#}; retrying");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        warned = false;
        left = None;
        let ended = loop {
            let command = tokio::select! {
                c = rx.recv() => c,
                link = trouble.broke() => {
                    let ended = match link.peer {
                        Some(peer) => format!("node {peer}: {}", link.why),
                        None => link.why.clone(),
                    };
                    left = Some(link);
                    break ended;
                }
                Ok(()) = restarted.changed() => {
                    let announced = *restarted.borrow_and_update();
                    // Not running, or running what the coordinator's previous life started:
                    // this control stream leads to a coordinator that is gone.
                    if run.as_ref().is_none_or(|r| r.generation <= announced) {
                        break "the coordinator restarted".to_string();
                    }
                    continue;
                }
            };
            let command = match command {
                Ok(Some(c)) => c,
                Ok(None) => break "the coordinator closed the control stream".into(),
                Err(e) => break format!("{e:#}"),
            };
            if let Msg::Refused(why) = &command {
                // Also when this node's agent started a moment before the coordinator.
                tracing::debug!("the coordinator refused this node: {why}");
                break String::new();
            }
            let shutdown = matches!(command, Msg::Shutdown);
            let reply = obey(&ctx, &assignment, &mut run, command, &mut trouble).await;
            if let Err(e) = tx.send(&reply).await {
                break format!("{e:#}");
            }
            if shutdown {
                let _ = tx.finish().await;
                return;
            }
        };
        if left.is_none() && !ended.is_empty() {
            left = Some(Rejoin {
                peer: None,
                why: ended.clone(),
            });
        }
        // The connection may be to the coordinator's previous life, not yet timed out.
        ctx.forget_connection(&coordinator);
        if let Some(app) = run.take() {
            tracing::warn!("{ended}: stopping the application until the cluster recovers");
            stop_run(&ctx, app).await;
        } else if !ended.is_empty() {
            tracing::warn!("{ended}; joining again");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stop_run(ctx: &Context, app: AppRun) {
    ctx.inbound.send_replace(None);
    let view = ctx.view.lock().unwrap().take();
    if let Some(v) = view {
        let checkpoint = v.checkpoints.map_or(0, |c| c.last_committed());
        *ctx.last_run.lock().unwrap() = Some((v.generation, v.app, checkpoint));
    }
    app.abort().await;
}

/// Carries out one coordinator command.
async fn obey(
    ctx: &Arc<Context>,
    assignment: &Assignment,
    run: &mut Option<AppRun>,
    command: Msg,
    trouble: &mut Arc<Trouble>,
) -> Msg {
    let refused = |e: anyhow::Error| Msg::Refused(format!("{e:#}"));
    match command {
        Msg::Start {
            generation,
            recover_to,
        } => {
            if let Some(app) = run.take() {
                stop_run(ctx, app).await;
            }
            // A peer may have restarted since: its old connection would swallow data until
            // it timed out. Each generation's data streams go over new connections.
            ctx.connections.lock().unwrap().clear();
            // A link of an earlier generation that broke says nothing about this one.
            *trouble = Arc::new(Trouble::default());
            match AppRun::start(ctx, assignment, generation, recover_to, trouble.clone()).await {
                Ok(app) => {
                    let started = Msg::Started {
                        app: app.app.clone(),
                        next_checkpoint: app.next_checkpoint(),
                        sources: app.source_addrs.clone(),
                    };
                    *ctx.view.lock().unwrap() = Some(View {
                        generation,
                        app: app.app.clone(),
                        metrics: app.metrics().clone(),
                        checkpoints: app.checkpoints(),
                        sources: app.source_addrs.clone(),
                        workers: app.workers,
                        peers: app.peers(),
                    });
                    ctx.inbound.send_replace(Some(app.inbound.clone()));
                    *run = Some(app);
                    started
                }
                Err(e) => {
                    let e = e.context(format!("node {} cannot start", assignment.index));
                    // Said here too: what stops the start (a corrupt log) is this node's to fix.
                    tracing::error!("{e:#}");
                    refused(e)
                }
            }
        }
        Msg::Shutdown => {
            let totals = match run.take() {
                Some(app) => {
                    ctx.inbound.send_replace(None);
                    *ctx.view.lock().unwrap() = None;
                    app.shutdown().await
                }
                None => Default::default(),
            };
            *ctx.assignment.lock().unwrap() = None;
            *ctx.joins.lock().unwrap() = None;
            if let Err(e) = ctx.data.retire() {
                tracing::warn!("{e:#}");
            }
            eprintln!("deployment {} stopped", assignment.manifest.deployment);
            Msg::Stopped(totals)
        }
        other => {
            let Some(app) = run.as_mut() else {
                return Msg::Refused("the application is not running here".into());
            };
            on_run(app, other).await
        }
    }
}

async fn on_run(app: &mut AppRun, command: Msg) -> Msg {
    let checkpoints = app.checkpoints();
    let blocking = |f: Box<dyn FnOnce(&Checkpoints) -> Msg + Send>| async move {
        let Some(c) = checkpoints else {
            return Msg::Refused("this application keeps no log".into());
        };
        tokio::task::spawn_blocking(move || f(&c))
            .await
            .unwrap_or_else(|e| Msg::Refused(format!("{e}")))
    };
    match command {
        Msg::Begin { checkpoint } => {
            blocking(Box::new(move |c| match c.begin(checkpoint) {
                Ok(()) => Msg::Ok,
                Err(why) => Msg::Refused(why),
            }))
            .await
        }
        Msg::Align => {
            // Answered once aligned, or after a short wait on the workers' signals.
            blocking(Box::new(|c| Msg::Aligned(c.alignment()))).await
        }
        Msg::Prepare => blocking(Box::new(|c| Msg::Prepared(c.prepare()))).await,
        Msg::Commit { checkpoint } => {
            blocking(Box::new(move |c| match c.commit(checkpoint) {
                Ok(()) => Msg::Ok,
                Err(why) => Msg::Refused(why),
            }))
            .await
        }
        Msg::StopSources => {
            app.stop_sources().await;
            Msg::Ok
        }
        Msg::Drain => {
            let (in_flight, sent, received) = app.drain_state();
            Msg::Drained {
                in_flight,
                sent,
                received,
            }
        }
        other => Msg::Refused(format!("unexpected command {}", other.name())),
    }
}
