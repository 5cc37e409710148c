//! `wallaroo node`: the daemon on every host. It holds no application until one is deployed;
//! then it runs its share (the key groups the coordinator gave it), takes routed batches from
//! the other nodes, and answers the coordinator's commands. A node that restarts finds its
//! assignment in its data directory and rejoins the cluster.
//!
//! This module owns the node's shared [`Context`] and its start; the rest is split by role:
//! - [`rpc`]: the streams a node accepts, and its answers to client requests (`wallaroo
//!   status`, `deploy`, `stop`, component shipping, the coordinator's `Assign`);
//! - [`deploy`]: the coordinator's side of `wallaroo deploy`;
//! - [`intake`]: what arrives from other nodes: control streams handed to the coordinator,
//!   routed batches handed to the running application;
//! - [`agent`]: the node's side of the cluster, joining the coordinator and obeying it.

mod agent;
mod deploy;
mod intake;
mod rpc;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::sync::watch;
use wallaroo_engine::{Checkpoints, MetricsHandle};
use wallaroo_transport::{ClusterTls, Connection, Endpoint, FrameReceiver, FrameSender};

use crate::app::Inbound;
use crate::coordinator::{Coordinator, Joined};
use crate::manifest::{Assignment, DataDir};
use crate::proto::{Change, Msg, Recovery};

pub(crate) use rpc::request;

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
    /// Why this node cannot go on, once it cannot (its engine failed): the node stops.
    failure: watch::Sender<Option<String>>,
    /// The last generation a restarted coordinator announced (see [`Msg::Restarted`]).
    coordinator_restarted: watch::Sender<u64>,
    /// On the coordinator, while the cluster recovers: since when, and what it waits for.
    pub(crate) recovery: Mutex<Option<(std::time::Instant, Recovery)>>,
    /// On the coordinator: the application's last changes, oldest first.
    pub(crate) changes: Mutex<Vec<Change>>,
    /// The application's last run here (generation, name, last committed checkpoint), for
    /// `wallaroo status` while it does not run.
    last_run: Mutex<Option<(u64, String, u64)>>,
    /// Held while key state handed to this node is logged (see [`Msg::Handoff`]).
    handoffs: Mutex<()>,
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
    component: String,
    /// With the deployment asked to finish at the end.
    finish: Option<wallaroo_engine::Finish>,
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
    if let Some(a) = &assignment {
        // The node's own file, but written from what another process sent: the agent and
        // the coordinator index the deployment's nodes by it.
        a.check().with_context(|| {
            format!(
                "{}: the deployment kept here cannot be run; move the data directory aside",
                data.app().join("assignment.json").display()
            )
        })?;
    }
    let ctx = Arc::new(Context {
        data,
        endpoint,
        connections: Default::default(),
        inbound: watch::channel(None).0,
        view: Mutex::new(None),
        assignment: Mutex::new(assignment.clone()),
        joins: Mutex::new(None),
        coordinator_restarted: watch::channel(0).0,
        failure: watch::channel(None).0,
        recovery: Mutex::new(None),
        changes: Mutex::new(Vec::new()),
        handoffs: Mutex::new(()),
        last_run: Mutex::new(None),
        options,
    });
    tracing::info!(
        "node listening on {} (QUIC, mutual TLS), data in {}",
        ctx.endpoint.local_addr()?,
        ctx.options.data_dir.display()
    );
    match &assignment {
        Some(a) => {
            tracing::info!(
                "rejoining deployment {} as node {} of {}",
                a.manifest.deployment,
                a.index,
                a.manifest.nodes.len()
            );
            start_roles(&ctx, a.clone(), None);
        }
        None => tracing::info!("no application deployed; waiting for `wallaroo deploy`"),
    }
    let accept = {
        let ctx = ctx.clone();
        async move {
            while let Some(conn) = ctx.endpoint.accept().await {
                tokio::spawn(rpc::serve_connection(ctx.clone(), conn));
            }
        }
    };
    let mut failure = ctx.failure.subscribe();
    let failed = async move {
        let why = failure
            .wait_for(Option::is_some)
            .await
            .map(|why| why.clone());
        match why {
            Ok(why) => why.unwrap_or_default(),
            Err(_) => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        _ = accept => Ok(()),
        _ = stop => {
            tracing::info!("node stopping");
            Ok(())
        }
        why = failed => Err(anyhow::anyhow!(
            "{why}; the node stopped: restart it on the same data directory to rejoin (its \
             input since the last checkpoint is in its log)"
        )),
    };
    ctx.endpoint.close();
    result
}

/// The agent (every node) and, on the first node, the coordinator.
fn start_roles(
    ctx: &Arc<Context>,
    assignment: Assignment,
    deployed: Option<tokio::sync::oneshot::Sender<anyhow::Result<Msg>>>,
) {
    if assignment.index == 0 {
        let (tx, rx) = flume::unbounded();
        let ours = tx.clone();
        *ctx.joins.lock().unwrap() = Some(tx);
        let record = ctx.data.cluster_record().unwrap_or_default();
        let coordinator = Coordinator::new(ctx.clone(), assignment.manifest.clone(), record, rx);
        let own = ctx.clone();
        tokio::spawn(async move {
            coordinator.run(deployed).await;
            // Joins go nowhere now (unless a later deploy made a coordinator of its own).
            let mut joins = own.joins.lock().unwrap();
            if joins.as_ref().is_some_and(|j| j.same_channel(&ours)) {
                *joins = None;
            }
        });
    }
    tokio::spawn(agent::agent(ctx.clone(), assignment));
}
