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
        return match reconcile(&current.manifest, &manifest)? {
            Some(next) => swap(ctx, next).await,
            None => {
                let app = ctx.view.lock().unwrap().as_ref().map(|v| v.app.clone());
                Ok(Msg::Changed {
                    app: app.unwrap_or_else(|| "(starting)".into()),
                    what: format!(
                        "the cluster already runs component {} on these nodes with these \
                         options: nothing to change",
                        &current.manifest.component[..current.manifest.component.len().min(12)]
                    ),
                })
            }
        };
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

/// What a deploy onto a running deployment asks to change: the deployment as it will be
/// (the component asked, the members the hosts file names, a key-group table that gives each
/// a fair share, the options asked), or None when that is what runs. What cannot change
/// while the application runs is refused, naming it.
pub(crate) fn reconcile(
    running: &crate::manifest::Manifest,
    asked: &crate::manifest::Manifest,
) -> anyhow::Result<Option<crate::manifest::Manifest>> {
    let refuse = |what: String| -> anyhow::Result<Option<crate::manifest::Manifest>> {
        Err(Refusal::new(
            RefusalKind::Invalid,
            format!(
                "the cluster runs deployment {} and {what}; deploy with that as it runs, or \
                 stop the application first with `wallaroo stop --nodes HOSTS`",
                running.deployment
            ),
        )
        .into())
    };
    let fixed: Vec<String> = differing_settings(&running.settings, &asked.settings)
        .into_iter()
        .filter(|o| o == "--key-groups" || o == "--resilience")
        .collect();
    if !fixed.is_empty() {
        return refuse(format!(
            "{} cannot change while it runs (state is kept by key group, and durability \
             by that mode)",
            fixed.join(" and ")
        ));
    }
    if asked.args != running.args {
        return refuse("the application's arguments differ".into());
    }
    let coordinator = &running.nodes[0];
    if asked.nodes.first() != Some(coordinator) {
        return refuse(format!(
            "{coordinator} coordinates it: it stays, first in the hosts file"
        ));
    }
    let mut next = crate::manifest::Manifest {
        component: asked.component.clone(),
        settings: asked.settings.clone(),
        drop_state: Vec::new(),
        ..running.clone()
    };
    let members: Vec<&String> = running.members().map(|(_, a)| a).collect();
    for (i, addr) in running.members() {
        if !asked.nodes.contains(addr) {
            next.retired.push(i as u16);
        }
    }
    for addr in &asked.nodes {
        if !members.contains(&addr) {
            next.nodes.push(addr.clone());
        }
    }
    let kept: Vec<u16> = next.members().map(|(i, _)| i as u16).collect();
    next.table = crate::manifest::rebalance(&running.table, &kept);
    if next == *running {
        return Ok(None);
    }
    next.drop_state = asked.drop_state.clone();
    Ok(Some(next))
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

/// Hands a change to the coordinator and waits for its answer. Nodes the change adds are
/// assigned the deployment first, so that they join the coordinator.
async fn swap(ctx: &Arc<Context>, next: crate::manifest::Manifest) -> anyhow::Result<Msg> {
    let joins = ctx.joins.lock().unwrap().clone();
    let Some(joins) = joins else {
        return Err(Refusal::new(
            RefusalKind::NotCoordinator,
            "this node does not coordinate the running deployment; deploy to the first node in \
             hosts.txt",
        )
        .into());
    };
    let known = ctx.assignment().map_or(0, |a| a.manifest.nodes.len());
    for (i, addr) in next.nodes.iter().enumerate().skip(known) {
        let assign = Msg::Assign {
            manifest: next.clone(),
            index: i as u16,
        };
        let conn = ctx
            .connection(addr)
            .await
            .with_context(|| format!("node {i} ({addr}), added by this deploy"))?;
        match request(&conn, &assign).await? {
            Msg::Ok => {}
            Msg::Refused(why) => {
                return Err(anyhow::Error::new(why).context(format!("node {i} ({addr}) refused")));
            }
            other => anyhow::bail!("node {i} ({addr}): unexpected answer {}", other.name()),
        }
    }
    let (reply, replied) = tokio::sync::oneshot::channel();
    let _ = joins.send(crate::coordinator::Joined::Swap {
        manifest: Box::new(next),
        reply,
    });
    match replied.await {
        Ok(Msg::Refused(why)) => Err(why.into()),
        Ok(answer) => Ok(answer),
        Err(_) => anyhow::bail!("the coordinator stopped before answering"),
    }
}
