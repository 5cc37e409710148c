//! The routing table: which node of a cluster owns each key group ([`Placement`], built into
//! the per-group [`Owner`] table the workers route by), where messages for other nodes go
//! ([`Peers`]), and where messages other nodes route here come in ([`RemoteInput`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::OwnedSemaphorePermit;
use wallaroo_component::Message;
use wallaroo_types::KeyGroups;

use super::inbox::{Shared, Work};

/// Where routed messages for key groups owned by other nodes go (a cluster's transport).
pub trait Peers: Send + Sync {
    /// Hands a batch of routed messages for node `node` to the network, with the epoch of the
    /// worker that made it (see [`RemoteInput::deliver`]). Must not block: a worker calls it,
    /// and a worker blocked on the network could deadlock the cluster.
    fn send(&self, node: usize, segment: u32, epoch: u64, messages: Vec<Message>);
    /// Tells every other node, after the batches `worker` sent it before, how far event time
    /// has got on that worker (its watermark levels; see `Work::Watermark`), with its epoch.
    /// Must not block, like `send`.
    fn watermark(&self, worker: usize, epoch: u64, levels: &[crate::Level]);
    /// Too much is queued for the network: sources wait until it drains.
    fn congested(&self) -> bool;
    /// Notified (all waiters) when the network is no longer congested, and when the node
    /// stops.
    fn relieved(&self) -> &tokio::sync::Notify;
}

/// This node's place in a cluster: which node owns each key group.
#[derive(Clone)]
pub struct Placement {
    /// This node's index in the cluster.
    pub node: usize,
    /// The node owning each key group.
    pub table: Arc<Vec<u16>>,
    pub peers: Arc<dyn Peers>,
    /// Roll back to this checkpoint, the last the whole cluster committed, even if this node's
    /// log has a later one.
    pub recover_to: u64,
}

impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placement")
            .field("node", &self.node)
            .field("key_groups", &self.table.len())
            .field("recover_to", &self.recover_to)
            .finish()
    }
}

/// Who processes a key group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Worker(usize),
    Node(usize),
}

/// The owner of each key group: the node `placement` gives it to, if another, else the worker
/// the group number modulo `workers` gives.
pub(super) fn owners(
    key_groups: KeyGroups,
    workers: usize,
    placement: Option<&Placement>,
) -> Vec<Owner> {
    (0..key_groups.count() as usize)
        .map(|g| match placement {
            Some(p) if p.table.get(g).is_some_and(|&n| n as usize != p.node) => {
                Owner::Node(p.table[g] as usize)
            }
            _ => Owner::Worker(g % workers),
        })
        .collect()
}

/// Takes batches other nodes routed to key groups this node owns.
#[derive(Clone)]
pub struct RemoteInput {
    pub(super) shared: Arc<Shared>,
    pub(super) key_groups: KeyGroups,
    /// The owner of each key group, as the workers route.
    pub(super) owners: Arc<Vec<Owner>>,
}

impl RemoteInput {
    /// Queues a batch to the workers owning its keys. `epoch` is the sending worker's (from
    /// [`Peers::send`]). `credit` is held until every part of the batch has been processed: how
    /// a peer feels this node's backpressure.
    pub fn deliver(
        &self,
        segment: u32,
        epoch: u64,
        messages: Vec<Message>,
        credit: Option<OwnedSemaphorePermit>,
    ) {
        let credit = credit.map(Arc::new);
        let workers = self.shared.inboxes.len();
        let mut per_worker: Vec<Vec<Message>> = vec![Vec::new(); workers];
        for m in messages {
            let group = self.key_groups.of(&m.key).0 as usize;
            let worker = match self.owners[group] {
                Owner::Worker(w) => w,
                // Another node's group (a peer with another table): processed here, on the
                // worker that would own it.
                Owner::Node(_) => group % workers,
            };
            per_worker[worker].push(m);
        }
        for (worker, messages) in per_worker.into_iter().enumerate() {
            if messages.is_empty() {
                continue;
            }
            self.shared.enqueue(
                worker,
                Work::Batch {
                    segment,
                    messages,
                    credit: credit.clone(),
                    from_source: false,
                    epoch,
                },
            );
        }
        self.shared.received.fetch_add(1, Ordering::SeqCst);
    }

    /// Node `node` sent its watermark levels (see [`Peers::watermark`]): every worker hears
    /// it after the batches that node sent before.
    pub fn watermark(&self, node: usize, epoch: u64, levels: Vec<crate::Level>) {
        let workers = self.shared.inboxes.len();
        for worker in 0..workers {
            self.shared.control(
                worker,
                Work::Watermark {
                    channel: workers + node,
                    epoch,
                    levels: levels.clone(),
                },
            );
        }
    }
}
