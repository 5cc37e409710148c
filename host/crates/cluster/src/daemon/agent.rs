//! The node's side of the cluster: its control stream to the coordinator, and the commands
//! it carries out on this node's run of the application.

use std::sync::Arc;
use std::time::Duration;

use wallaroo_engine::Checkpoints;

use super::{Context, View};
use crate::app::{AppRun, Trouble};
use crate::manifest::Assignment;
use crate::proto::{Msg, Refusal, RefusalKind, Rejoin};

/// The node's side of the cluster: joins the coordinator and carries out its commands. When
/// the coordinator goes away, stops the application and joins again.
pub(super) async fn agent(ctx: Arc<Context>, mut assignment: Assignment) {
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
                why = async {
                    match run.as_ref() {
                        Some(app) => app.failed().await,
                        None => std::future::pending().await,
                    }
                } => {
                    // This node cannot run its share: it stops, and says why to whoever
                    // started it (the cluster rolls back to the last checkpoint without it,
                    // and takes it back once it is restarted).
                    if let Some(app) = run.take() {
                        stop_run(&ctx, app).await;
                    }
                    ctx.failure.send_replace(Some(why));
                    return;
                }
                link = trouble.broke() => {
                    let ended = match link.peer {
                        Some(peer) => format!("node {peer}: {}", link.why),
                        None => link.why.clone(),
                    };
                    // Said on the way out, so that the coordinator, which sees this stream
                    // close first, names the node whose link broke rather than this one.
                    let _ = tx.send(&Msg::Leaving(link.clone())).await;
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
                if why.kind == RefusalKind::Removed {
                    leave(&ctx, &assignment, run.take()).await;
                    return;
                }
                // Also when this node's agent started a moment before the coordinator.
                tracing::debug!("the coordinator refused this node: {why}");
                break String::new();
            }
            if matches!(command, Msg::Leave) {
                let _ = tx.send(&Msg::Ok).await;
                let _ = tx.finish().await;
                leave(&ctx, &assignment, run.take()).await;
                return;
            }
            let shutdown = matches!(command, Msg::Shutdown);
            let reply = obey(&ctx, &mut assignment, &mut run, command, &mut trouble).await;
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

/// This node is no longer a member of the deployment (a change removed it, or a change
/// that would have added it failed): it stops the application and keeps its data aside.
async fn leave(ctx: &Context, assignment: &Assignment, run: Option<AppRun>) {
    if let Some(app) = run {
        // Drained at the change's checkpoint, as at a stop's end: what its sinks still
        // hold is written out.
        ctx.inbound.send_replace(None);
        *ctx.view.lock().unwrap() = None;
        let _ = app.shutdown().await;
    }
    *ctx.assignment.lock().unwrap() = None;
    *ctx.joins.lock().unwrap() = None;
    if let Err(e) = ctx.data.retire() {
        tracing::warn!("{e:#}");
    }
    tracing::info!(
        "this node is no longer a member of deployment {} (node {}): it stopped the \
         application; its data directory was kept under stopped/",
        assignment.manifest.deployment,
        assignment.index
    );
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
    assignment: &mut Assignment,
    run: &mut Option<AppRun>,
    command: Msg,
    trouble: &mut Arc<Trouble>,
) -> Msg {
    let refused = |e: anyhow::Error| Msg::Refused(Refusal::from_error(RefusalKind::Failed, &e));
    match command {
        Msg::Start {
            generation,
            recover_to,
            component,
            manifest,
        } => {
            if let Some(app) = run.take() {
                stop_run(ctx, app).await;
            }
            if let Some(m) = manifest.filter(|m| **m != assignment.manifest) {
                // A change made the deployment another (nodes, table, options): this node
                // keeps it as its own, and keeps its number.
                let next = Assignment {
                    manifest: *m,
                    index: assignment.index,
                };
                if let Err(e) = next
                    .check()
                    .and_then(|()| ctx.data.update_assignment(&next))
                {
                    return refused(e.context("taking the deployment as changed"));
                }
                *ctx.assignment.lock().unwrap() = Some(next.clone());
                *assignment = next;
            }
            // A peer may have restarted since: its old connection would swallow data until
            // it timed out. Each generation's data streams go over new connections.
            ctx.connections.lock().unwrap().clear();
            // A link of an earlier generation that broke says nothing about this one.
            *trouble = Arc::new(Trouble::default());
            let started = AppRun::start(
                ctx,
                assignment,
                &component,
                generation,
                recover_to,
                trouble.clone(),
            )
            .await;
            match started {
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
                        component: app.component.clone(),
                        finish: app.finish(),
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
            // On the coordinator's node, the coordinator lets joins go once it is done: the
            // other nodes' answers to Shutdown (and their joins, if they left) still come.
            if let Err(e) = ctx.data.retire() {
                tracing::warn!("{e:#}");
            }
            tracing::info!("deployment {} stopped", assignment.manifest.deployment);
            Msg::Stopped(totals)
        }
        Msg::Ready {
            component,
            drop_state,
        } => {
            let ready = match run.as_ref() {
                Some(app) => app.ready(ctx, assignment, &component, &drop_state).await,
                // A node a change adds: nothing runs here yet, so there is no state to check.
                None => crate::app::compile(ctx, &assignment.manifest, &component).await,
            };
            match ready {
                Ok(()) => Msg::Ok,
                Err(e) => Msg::Refused(Refusal::from_error(RefusalKind::Invalid, &e)),
            }
        }
        Msg::Move {
            checkpoint,
            manifest,
        } => match run.as_ref() {
            Some(app) => match app.hand_over(ctx, assignment, checkpoint, &manifest).await {
                Ok(()) => Msg::Ok,
                Err(e) => refused(e.context(format!(
                    "node {} cannot hand its key groups over",
                    assignment.index
                ))),
            },
            // A node the change adds (it was handed this very deployment) holds nothing to
            // hand over; any other must run the application to hand its key groups over.
            None if assignment.manifest.table == manifest.table
                && assignment.manifest.nodes == manifest.nodes =>
            {
                Msg::Ok
            }
            None => Msg::Refused(Refusal::new(
                RefusalKind::NotRunning,
                "the application is not running here, so its key groups cannot be handed over",
            )),
        },
        other => {
            let Some(app) = run.as_mut() else {
                return Msg::Refused(Refusal::new(
                    RefusalKind::NotRunning,
                    "the application is not running here",
                ));
            };
            on_run(app, other).await
        }
    }
}

async fn on_run(app: &mut AppRun, command: Msg) -> Msg {
    let checkpoints = app.checkpoints();
    let blocking = |f: Box<dyn FnOnce(&Checkpoints) -> Msg + Send>| async move {
        let Some(c) = checkpoints else {
            return Msg::Refused(Refusal::new(
                RefusalKind::Invalid,
                "this application keeps no log",
            ));
        };
        tokio::task::spawn_blocking(move || f(&c))
            .await
            .unwrap_or_else(|e| Msg::Refused(Refusal::new(RefusalKind::Failed, e.to_string())))
    };
    match command {
        Msg::Begin { checkpoint } => {
            blocking(Box::new(move |c| match c.begin(checkpoint) {
                Ok(()) => Msg::Ok,
                Err(why) => Msg::Refused(Refusal::new(RefusalKind::LogFailed, why)),
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
                Err(why) => Msg::Refused(Refusal::new(RefusalKind::Invalid, why)),
            }))
            .await
        }
        Msg::StopSources => {
            app.stop_sources().await;
            Msg::Ok
        }
        Msg::Flush { checkpoint } => match app.written_out(checkpoint).await {
            Ok(()) => Msg::Ok,
            Err(e) => Msg::Refused(Refusal::from_error(RefusalKind::Failed, &e)),
        },
        Msg::Drain => {
            let (in_flight, sent, received) = app.drain_state();
            Msg::Drained {
                in_flight,
                sent,
                received,
            }
        }
        other => Msg::Refused(Refusal::new(
            RefusalKind::Invalid,
            format!("unexpected command {}", other.name()),
        )),
    }
}
