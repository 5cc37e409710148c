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
