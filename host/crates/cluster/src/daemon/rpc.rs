//! The streams a node accepts, by their first frame, and its answers to client requests.

use std::sync::Arc;

use anyhow::Context as _;
use wallaroo_transport::{Connection, FrameReceiver, FrameSender};

use super::{Context, start_roles};
use crate::coordinator::Joined;
use crate::manifest::Assignment;
use crate::proto::{Msg, NodeStatus, Recovery, Refusal, RefusalKind, Retry, group_ranges};

pub(super) async fn serve_connection(ctx: Arc<Context>, conn: Connection) {
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
        Msg::Data { from, generation } => super::intake::take_data(ctx, from, generation, rx).await,
        Msg::Join {
            index,
            deployment,
            rejoin,
        } => super::intake::join(&ctx, index, deployment, rejoin, tx, rx).await,
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
pub(super) async fn answer(ctx: &Arc<Context>, request: Msg) -> Msg {
    let refused = |e: anyhow::Error| Msg::Refused(Refusal::from_error(RefusalKind::Failed, &e));
    match request {
        Msg::HasComponent { hash } => Msg::Have(ctx.data.has_component(&hash)),
        Msg::PutComponent {
            hash,
            bytes,
            modified_ms,
        } => {
            let data = ctx.data.clone();
            let put = move || data.put_component(&hash, &bytes, modified_ms);
            match tokio::task::spawn_blocking(put).await {
                Ok(Ok(())) => Msg::Ok,
                Ok(Err(e)) => refused(e),
                Err(e) => refused(e.into()),
            }
        }
        Msg::Handoff {
            deployment,
            checkpoint,
            steps,
            entries,
        } => match ctx.assignment() {
            Some(a) if a.manifest.deployment == deployment => {
                let handoff = wallaroo_engine::Handoff {
                    steps,
                    entries: entries
                        .into_iter()
                        .map(|(step, key, value)| wallaroo_engine::KeyState {
                            step,
                            key: key.into_vec(),
                            value: value.into_vec(),
                        })
                        .collect(),
                };
                let checkpoints = ctx
                    .view
                    .lock()
                    .unwrap()
                    .as_ref()
                    .and_then(|v| v.checkpoints.clone());
                let ctx = ctx.clone();
                let import = move || {
                    let _one_at_a_time = ctx.handoffs.lock().unwrap();
                    let started = std::time::Instant::now();
                    let keys = handoff.entries.len();
                    let imported = match checkpoints {
                        Some(c) => c.import(checkpoint, handoff).map_err(anyhow::Error::msg),
                        None => wallaroo_engine::import_offline(
                            &ctx.data.app().join("wal"),
                            checkpoint,
                            handoff,
                        ),
                    };
                    tracing::debug!(
                        "logged {keys} keys' state handed over at checkpoint {checkpoint} in {} ms",
                        started.elapsed().as_millis()
                    );
                    imported
                };
                match tokio::task::spawn_blocking(import).await {
                    Ok(Ok(())) => Msg::Ok,
                    Ok(Err(e)) => refused(e),
                    Err(e) => refused(e.into()),
                }
            }
            _ => Msg::Refused(Refusal::new(
                RefusalKind::WrongDeployment,
                format!(
                    "key state of deployment {deployment} handed to a node that does not run it"
                ),
            )),
        },
        Msg::Assign { manifest, index } => {
            if let Some(current) = ctx.assignment() {
                if current.manifest.deployment == manifest.deployment && current.index == index {
                    return Msg::Ok;
                }
                return Msg::Refused(Refusal::new(
                    RefusalKind::AlreadyDeployed,
                    format!(
                        "node already runs deployment {}",
                        current.manifest.deployment
                    ),
                ));
            }
            if !ctx.data.has_component(&manifest.component) {
                return Msg::Refused(Refusal::new(
                    RefusalKind::NotFound,
                    format!("component {} was not shipped here", manifest.component),
                ));
            }
            let assignment = Assignment { manifest, index };
            if let Err(e) = assignment.check() {
                return Msg::Refused(Refusal::from_error(RefusalKind::Invalid, &e));
            }
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
        Msg::Deploy { manifest } => match super::deploy::deploy(ctx, manifest).await {
            Ok(reply) => reply,
            Err(e) => refused(e),
        },
        Msg::Status => Msg::NodeStatus(Box::new(status(ctx))),
        Msg::EndInput => match ctx
            .view
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|v| v.finish.clone())
        {
            Some(finish) => {
                finish.end_input();
                Msg::Ok
            }
            None => Msg::Refused(Refusal::new(
                RefusalKind::NotRunning,
                "no application asked to finish at the end runs here",
            )),
        },
        Msg::Stop => {
            let joins = ctx.joins.lock().unwrap().clone();
            match (ctx.assignment(), joins) {
                (Some(a), Some(joins)) if a.index == 0 => {
                    let (reply, replied) = tokio::sync::oneshot::channel();
                    let _ = joins.send(Joined::Stop(reply));
                    replied.await.unwrap_or_else(|_| {
                        Msg::Refused(
                            Refusal::new(
                                RefusalKind::Failed,
                                "the coordinator stopped before answering",
                            )
                            .with_retry(Retry::After { ms: 1000 }),
                        )
                    })
                }
                (Some(_), _) => Msg::Refused(Refusal::new(
                    RefusalKind::NotCoordinator,
                    "this node does not coordinate; send stop to the first node in hosts.txt",
                )),
                (None, _) => Msg::Refused(Refusal::new(
                    RefusalKind::NotFound,
                    "no application is deployed",
                )),
            }
        }
        other => Msg::Refused(Refusal::new(
            RefusalKind::Invalid,
            format!("unexpected request {}", other.name()),
        )),
    }
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
    // Only a coordinator keeps changes; they outlive the application (how it ended).
    s.changes = ctx.changes.lock().unwrap().clone();
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
        (s.state_keys, s.state_bytes) = v.metrics.state_size();
        s.component_built_ms = ctx.data.component_built_ms(&v.component);
        s.app = v.app;
        s.state = "running".into();
        s.generation = v.generation;
        s.component = v.component;
        s.workers = v.workers;
        s.received = totals.received;
        s.emitted = totals.emitted;
        s.dead_lettered = totals.dead_lettered;
        s.backlog = totals.backlog;
        s.steps = v.metrics.step_counts();
        s.late = v.metrics.late_counts();
        s.last_checkpoint = v.checkpoints.map_or(0, |c| c.last_committed());
        s.remote_messages = v.peers.messages.load(std::sync::atomic::Ordering::Relaxed);
        s.remote_bytes = v.peers.bytes.load(std::sync::atomic::Ordering::Relaxed);
        s.sources = v.sources;
        if let Some(f) = &v.finish {
            s.input = Some(f.input());
            s.at_end = f.at_end();
        }
    }
    s
}
