//! What arrives from other nodes: a node's control stream, handed to the coordinator (on
//! the first node), and routed batches, handed to this node's run of the application.

use std::sync::Arc;

use tokio::sync::Semaphore;
use wallaroo_engine::Message;
use wallaroo_transport::{FrameReceiver, FrameSender};

use super::Context;
use crate::coordinator::Joined;
use crate::proto::{Msg, Refusal, RefusalKind, Rejoin};

/// Batches from one peer that may wait in this node unprocessed before the peer's stream is
/// no longer read (and QUIC's flow control holds the peer back).
const DATA_CREDITS: usize = 64;

/// Takes routed batches from node `from` for generation `generation`, once this node runs it.
pub(super) async fn take_data(
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
        let (segment, epoch, messages) = match msg {
            Msg::Batch {
                segment,
                epoch,
                messages,
            } => (segment, epoch, messages),
            Msg::Watermark { epoch, levels } => {
                if current
                    .borrow()
                    .as_ref()
                    .is_some_and(|i| i.generation == generation)
                {
                    inbound.input.watermark(from as usize, epoch, levels);
                }
                continue;
            }
            msg => anyhow::bail!("node {from} sent {} on a data stream", msg.name()),
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
            .map(|(key, payload, event_time)| Message {
                key: key.into_vec(),
                payload: payload.into_vec(),
                event_time,
            })
            .collect();
        inbound
            .input
            .deliver(segment, epoch, messages, Some(credit));
    }
}

/// A node's control stream (its first frame was `Join`): the coordinator takes it from here.
pub(super) async fn join(
    ctx: &Context,
    index: u16,
    deployment: String,
    rejoin: Option<Rejoin>,
    mut tx: FrameSender<Msg>,
    rx: FrameReceiver<Msg>,
) -> anyhow::Result<()> {
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
            tx.send(&Msg::Refused(Refusal::new(
                RefusalKind::NotCoordinator,
                "this node does not coordinate a deployment",
            )))
            .await?
        }
    }
    Ok(())
}
