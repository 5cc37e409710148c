//! The coordinator's side of `wallaroo deploy`.

use std::sync::Arc;

use anyhow::Context as _;

use super::rpc::{answer, request};
use super::{Context, start_roles};
use crate::proto::{Msg, Refusal, RefusalKind};

/// The coordinator's side of `wallaroo deploy`: assigns key groups, hands every node its
/// share, and answers once the application runs everywhere.
pub(super) async fn deploy(
    ctx: &Arc<Context>,
    mut manifest: crate::manifest::Manifest,
) -> anyhow::Result<Msg> {
    if let Some(current) = ctx.assignment() {
        if let Some(change) = reconcile(&current.manifest, &manifest)? {
            return swap(ctx, change, manifest.drop_state).await;
        }
        let app = ctx
            .view
            .lock()
            .unwrap()
            .as_ref()
            .map(|v| v.app.clone())
            .unwrap_or_else(|| "(starting)".into());
        return Err(Refusal::new(
            RefusalKind::AlreadyDeployed,
            format!(
                "the cluster already runs application '{app}' (deployment {}); deploying over \
                 a running application is how a hot swap will start, which this version \
                 cannot do yet: stop it first with `wallaroo stop --nodes HOSTS`",
                current.manifest.deployment
            ),
        )
        .into());
    }
    if !manifest.drop_state.is_empty() {
        return Err(Refusal::new(
            RefusalKind::Invalid,
            format!(
                "--drop-state {}: the cluster runs no application whose state it could drop; \
                 deploy without --drop-state",
                manifest.drop_state.join(", ")
            ),
        )
        .into());
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
                Msg::Refused(why) => return Err(anyhow::Error::new(why).context(addr.clone())),
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
            Msg::Refused(why) => {
                return Err(anyhow::Error::new(why).context(format!("node {i} ({addr}) refused")));
            }
            other => anyhow::bail!("node {i} ({addr}): unexpected answer {}", other.name()),
        }
    }
    let assignment = ctx.assignment().context("assignment lost")?;
    let (deployed, started) = tokio::sync::oneshot::channel();
    start_roles(ctx, assignment, Some(deployed));
    started.await.context("the coordinator stopped")?
}

/// What a deploy onto a running deployment asks to change. Only the component can change
/// live today: anything else is refused, naming what differs.
fn reconcile(
    running: &crate::manifest::Manifest,
    asked: &crate::manifest::Manifest,
) -> anyhow::Result<Option<String>> {
    let refuse = |what: String| -> anyhow::Result<Option<String>> {
        Err(Refusal::new(
            RefusalKind::Invalid,
            format!(
                "the cluster runs deployment {} and {what}; only the component can change \
                 while it runs (a hot swap): deploy with the running hosts and options, or stop \
                 it first with `wallaroo stop --nodes HOSTS`",
                running.deployment
            ),
        )
        .into())
    };
    if asked.nodes != running.nodes {
        return refuse(format!(
            "the hosts differ ({} running, {} asked): growing or shrinking a running cluster is \
             not supported yet",
            running.nodes.join(", "),
            asked.nodes.join(", ")
        ));
    }
    let differing = differing_settings(&running.settings, &asked.settings);
    if !differing.is_empty() {
        return refuse(format!(
            "these options differ from the running ones: {}",
            differing.join(", ")
        ));
    }
    if asked.args != running.args {
        return refuse("the application's arguments differ".into());
    }
    Ok(Some(asked.component.clone()))
}

/// The command-line names of the settings that differ.
fn differing_settings(a: &crate::Settings, b: &crate::Settings) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(a), serde_json::to_value(b))
    else {
        return vec!["(settings that cannot be compared)".into()];
    };
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, _)| {
            let name = match k.as_str() {
                "tagged" => "sink_framing",
                "max_memory_mib" => "max_memory",
                "call_timeout_ms" => "call_timeout",
                "checkpoint_interval_ms" => "checkpoint_interval",
                other => other,
            };
            format!("--{}", name.replace('_', "-"))
        })
        .collect()
}

/// Hands a hot swap to the coordinator and waits for its answer.
async fn swap(
    ctx: &Arc<Context>,
    component: String,
    drop_state: Vec<String>,
) -> anyhow::Result<Msg> {
    let joins = ctx.joins.lock().unwrap().clone();
    let Some(joins) = joins else {
        return Err(Refusal::new(
            RefusalKind::NotCoordinator,
            "this node does not coordinate the running deployment; deploy to the first node in \
             hosts.txt",
        )
        .into());
    };
    let (reply, replied) = tokio::sync::oneshot::channel();
    let _ = joins.send(crate::coordinator::Joined::Swap {
        component,
        drop_state,
        reply,
    });
    match replied.await {
        Ok(Msg::Refused(why)) => Err(why.into()),
        Ok(answer) => Ok(answer),
        Err(_) => anyhow::bail!("the coordinator stopped before answering"),
    }
}
