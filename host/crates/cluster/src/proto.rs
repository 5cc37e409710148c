//! What nodes, the coordinator and the command-line clients say to each other. Every stream
//! carries [`Msg`] frames (see `wallaroo-transport` for the framing): a request, then its reply.
//!
//! Streams by their first frame:
//! - a client's request (`HasComponent`, `PutComponent`, `Deploy`, `Status`, `Stop`) or the
//!   coordinator's `Assign`: answered on the same stream;
//! - `Join`: a node's control stream to the coordinator, which then sends commands on it and
//!   the node answers each;
//! - `Data`: routed batches from one node to another for one generation of the application.
//!
//! A request or command that cannot be carried out is answered with [`Msg::Refused`]: a
//! [`Refusal`] says what kind of refusal it is, whether asking again can help, and the text
//! for the operator. The message set is versioned by the transport's ALPN
//! (`wallaroo_transport::tls::ALPN`): a change to it that an older node would misread bumps
//! that version (`wallaroo/2` made `Refused` typed).

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use wallaroo_engine::Alignment;

use crate::manifest::Manifest;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Msg {
    // Client requests.
    HasComponent {
        hash: String,
    },
    PutComponent {
        hash: String,
        bytes: ByteBuf,
        /// When the component file was last written where `wallaroo deploy` read it (unix
        /// ms; normally by `wallaroo build`): the node gives its copy that time, which
        /// `wallaroo status` reports as the build time.
        #[serde(default)]
        modified_ms: Option<u64>,
    },
    Deploy {
        manifest: Manifest,
    },
    Status,
    Stop,

    /// A restarted coordinator to every node: a node running generation `generation` or an
    /// earlier one follows the coordinator's previous life, and joins again at once (rather
    /// than after its control connection times out).
    Restarted {
        deployment: String,
        generation: u64,
    },

    // Coordinator to node: the application and this node's index in it.
    Assign {
        manifest: Manifest,
        index: u16,
    },

    // Control stream, node to coordinator first, then commands and their answers.
    Join {
        index: u16,
        deployment: String,
        /// Why the node joins again, if it left a control stream of this deployment in this
        /// process (None: the node has just started, e.g. after a restart).
        rejoin: Option<Rejoin>,
    },
    /// Start the application at `generation`, rolled back to checkpoint `recover_to`.
    Start {
        generation: u64,
        recover_to: u64,
        /// SHA-256 of the component to run (the deployment's, or the one a swap put in).
        component: String,
        /// The deployment as the running version has it (nodes, key-group table, options), once
        /// a change made it differ from the node's assignment: the node keeps it as its own.
        #[serde(default)]
        manifest: Option<Box<Manifest>>,
    },
    /// The cluster is drained at committed checkpoint `checkpoint`: hand the state of the
    /// key groups `manifest` gives to other nodes to them ([`Msg::Handoff`]), then answer.
    Move {
        checkpoint: u64,
        manifest: Box<Manifest>,
    },
    /// Node to node: the state of key groups that move to the receiver at committed
    /// checkpoint `checkpoint`; answered once logged durably there.
    Handoff {
        deployment: String,
        checkpoint: u64,
        steps: Vec<String>,
        /// (index into `steps`, key, state).
        entries: Vec<(u32, ByteBuf, ByteBuf)>,
    },
    /// This node is no longer a member of the deployment: it stops the application and keeps
    /// its data aside.
    Leave,
    /// Make component `component` ready to take over the running application: compile it
    /// and check that its spec keeps every stateful step of the running one but those of
    /// `drop_state`, whose state it drops. Answered Ok or Refused.
    Ready {
        component: String,
        #[serde(default)]
        drop_state: Vec<String>,
    },
    /// A node to the coordinator as it leaves its control stream: why (e.g. its data stream
    /// to another node broke, and which).
    Leaving(Rejoin),
    /// To `Deploy` onto a running application: what changed (or that nothing needed to).
    Changed {
        app: String,
        what: String,
    },
    Begin {
        checkpoint: u64,
    },
    /// Answer once every worker is at the barrier with nothing routed in flight here (or soon,
    /// with how far it is).
    Align,
    Prepare,
    Commit {
        checkpoint: u64,
    },
    /// Stop taking input; answer with `Drained` once the sources have stopped.
    StopSources,
    /// How much is still queued here.
    Drain,
    /// Drained everywhere: stop the application, flush the sinks, forget the deployment.
    Shutdown,

    // Data stream, node to node.
    Data {
        from: u16,
        generation: u64,
    },
    Batch {
        segment: u32,
        /// Snapshots the sending worker had taken (see `RemoteInput::deliver`).
        epoch: u64,
        /// (key, payload, event time) triples.
        messages: Vec<(ByteBuf, ByteBuf, u64)>,
    },

    // Answers.
    Ok,
    Refused(Refusal),
    Have(bool),
    Deployed {
        app: String,
        sources: Vec<String>,
    },
    Started {
        app: String,
        next_checkpoint: u64,
        sources: Vec<String>,
    },
    Aligned(Alignment),
    Prepared(bool),
    Drained {
        in_flight: usize,
        sent: u64,
        received: u64,
    },
    Stopped(Totals),
    NodeStatus(Box<NodeStatus>),

    // Data stream, node to node (added after the answers, keeping their positions).
    /// The sending node will send nothing more whose event time is below `levels[k]` into a
    /// segment `k + 1` routing steps from a source (the least over its workers; see
    /// `Work::Watermark`). `epoch` is the latest of theirs.
    Watermark {
        epoch: u64,
        levels: Vec<wallaroo_engine::Level>,
    },
    /// Coordinator to node, after a stop's last checkpoint `checkpoint` committed: answer Ok
    /// once the sinks wrote out everything it released (Shutdown then forgets the log).
    Flush {
        checkpoint: u64,
    },
    /// Coordinator to node (on a request stream), with the deployment asked to finish at the
    /// end: every node's input has ended, so event time moves to its end here.
    EndInput,
}

impl Msg {
    /// The message's kind, for errors (never its content: a component is megabytes).
    pub fn name(&self) -> &'static str {
        match self {
            Msg::HasComponent { .. } => "HasComponent",
            Msg::PutComponent { .. } => "PutComponent",
            Msg::Deploy { .. } => "Deploy",
            Msg::Status => "Status",
            Msg::Stop => "Stop",
            Msg::Restarted { .. } => "Restarted",
            Msg::Assign { .. } => "Assign",
            Msg::Join { .. } => "Join",
            Msg::Start { .. } => "Start",
            Msg::Ready { .. } => "Ready",
            Msg::Move { .. } => "Move",
            Msg::Handoff { .. } => "Handoff",
            Msg::Leave => "Leave",
            Msg::Leaving(_) => "Leaving",
            Msg::Changed { .. } => "Changed",
            Msg::Begin { .. } => "Begin",
            Msg::Align => "Align",
            Msg::Prepare => "Prepare",
            Msg::Commit { .. } => "Commit",
            Msg::StopSources => "StopSources",
            Msg::Drain => "Drain",
            Msg::Shutdown => "Shutdown",
            Msg::Data { .. } => "Data",
            Msg::Batch { .. } => "Batch",
            Msg::Ok => "Ok",
            Msg::Refused(_) => "Refused",
            Msg::Have(_) => "Have",
            Msg::Deployed { .. } => "Deployed",
            Msg::Started { .. } => "Started",
            Msg::Aligned(_) => "Aligned",
            Msg::Prepared(_) => "Prepared",
            Msg::Drained { .. } => "Drained",
            Msg::Stopped(_) => "Stopped",
            Msg::NodeStatus(_) => "NodeStatus",
            Msg::Watermark { .. } => "Watermark",
            Msg::Flush { .. } => "Flush",
            Msg::EndInput => "EndInput",
        }
    }
}

pub use wallaroo_protocol::coordinator::Rejoin;
/// Why a node refused a request or a command.
///
/// Its `Display` is the message alone, the text a person reads; `kind` and `retry` are for
/// the program that asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: RefusalKind,
    pub retry: Retry,
    pub message: String,
}

/// What kind of refusal: what the asker would have to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalKind {
    /// Asked of a node that does not coordinate: ask the first node in hosts.txt.
    NotCoordinator,
    /// What the request names is not here: a component not shipped, no application deployed.
    NotFound,
    /// The node or cluster already runs a deployment: stop it first.
    AlreadyDeployed,
    /// A node of another deployment (one a failed stop left behind) joined this cluster.
    WrongDeployment,
    /// The cluster is recovering from a lost node and cannot do it now.
    Recovering,
    /// The application does not run on this node now (it is between generations).
    NotRunning,
    /// This node's write-ahead log has failed (e.g. a full disk): the node's operator acts.
    LogFailed,
    /// This node was removed from the deployment by a change (a shrink).
    Removed,
    /// The request does not fit the protocol or the node's state: an unexpected message, a
    /// checkpoint that was not prepared, a command for a log the application does not keep.
    Invalid,
    /// The node tried and could not: its disk, the application's start, a task that died.
    Failed,
}

/// Whether the same request may succeed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Retry {
    /// It will be refused again until something changes; the message says what.
    Never,
    /// Ask again after this many milliseconds.
    After { ms: u64 },
    /// Ask again once the cluster has recovered (`wallaroo status` says what it waits for).
    OnceRecovered,
}

impl RefusalKind {
    /// The retry hint a refusal of this kind carries unless its site knows better.
    pub fn retry(self) -> Retry {
        match self {
            RefusalKind::Recovering | RefusalKind::NotRunning => Retry::OnceRecovered,
            _ => Retry::Never,
        }
    }
}

impl Refusal {
    /// A refusal with its kind's retry hint.
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            retry: kind.retry(),
            message: message.into(),
        }
    }

    pub fn with_retry(self, retry: Retry) -> Refusal {
        Refusal { retry, ..self }
    }

    /// A refusal saying `error` with its causes. If one of them is a refusal (e.g. another
    /// node's, passed on), its kind and hint are kept; otherwise it is of kind `kind`.
    pub fn from_error(kind: RefusalKind, error: &anyhow::Error) -> Refusal {
        let message = format!("{error:#}");
        match error.chain().find_map(|e| e.downcast_ref::<Refusal>()) {
            Some(cause) => Refusal {
                message,
                ..cause.clone()
            },
            None => Refusal::new(kind, message),
        }
    }

    /// The refusal `error` carries, if it or one of its causes is one.
    pub fn find(error: &anyhow::Error) -> Option<&Refusal> {
        error.chain().find_map(|e| e.downcast_ref::<Refusal>())
    }
}

/// What a recovering cluster waits for, as its coordinator sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    /// How long the cluster has been recovering, in milliseconds.
    pub waited_ms: u64,
    /// The nodes that have not joined yet, e.g. "node 1 (10.0.0.2:7100)".
    pub missing: Vec<String>,
    /// The last checkpoint the whole cluster committed: where it resumes from.
    pub checkpoint: u64,
    /// Why it recovers (the node lost, and why it counts as lost).
    pub reason: String,
}

/// One node's figures for `wallaroo status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    pub index: u16,
    pub address: String,
    /// The application and its state: "running", "recovering", "no application".
    pub app: String,
    pub state: String,
    pub generation: u64,
    /// SHA-256 of the component running here (empty: none).
    #[serde(default)]
    pub component: String,
    pub key_groups: Vec<(u32, u32)>,
    pub workers: usize,
    pub received: u64,
    pub emitted: u64,
    pub dead_lettered: u64,
    pub backlog: i64,
    pub steps: Vec<(String, u64)>,
    pub last_checkpoint: u64,
    /// Routed messages sent to other nodes, and the bytes the network carried for them.
    pub remote_messages: u64,
    pub remote_bytes: u64,
    pub sources: Vec<String>,
    /// On the coordinator, while the cluster recovers: what it waits for.
    pub recovery: Option<Recovery>,
    /// When the component running here was built (unix ms): the modification time of its
    /// file in the node's data directory, which `wallaroo deploy` sets to that of the file it
    /// shipped (None: unknown).
    #[serde(default)]
    pub component_built_ms: Option<u64>,
    /// Keys whose state the workers here hold, and the bytes of those keys and states.
    #[serde(default)]
    pub state_keys: u64,
    #[serde(default)]
    pub state_bytes: u64,
    /// On the coordinator: the last changes of the running application, oldest first.
    #[serde(default)]
    pub changes: Vec<Change>,
    /// Messages too late for their windows, by window step.
    #[serde(default)]
    pub late: Vec<(String, u64)>,
    /// With the deployment asked to finish at the end: where this node's input stands, and
    /// whether it is at the end (event time there, nothing queued).
    #[serde(default)]
    pub input: Option<wallaroo_engine::InputEnd>,
    #[serde(default)]
    pub at_end: bool,
}

/// A change of the running application, as its coordinator saw it. Kept in memory by the
/// coordinator (the last [`Change::KEPT`]), so a restarted coordinator starts a new list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// "deploy", "swap" or "recovery".
    pub kind: String,
    /// When it was done (unix ms): the application ran again everywhere, or a swap failed.
    pub at_ms: u64,
    /// The generation running after it.
    pub generation: u64,
    /// SHA-256 of the component before (a swap) and after it.
    pub from: String,
    pub to: String,
    /// A recovery: why the cluster rolled back (the node lost, and why). A swap that did not
    /// happen: why (the old version runs on).
    pub reason: String,
    /// A swap that did not happen (the cluster runs the version before).
    #[serde(default)]
    pub failed: bool,
    /// How long the stream paused, in milliseconds, as the coordinator measures it:
    /// - a swap: from every node having committed the swap's checkpoint until every node
    ///   answered Started on the new version. The old version runs on through the recording
    ///   of the new generation, but what it does after that checkpoint is dropped and done
    ///   again by the new version, so this is the time the stream makes no progress that
    ///   counts (the stop of the old instances and the start of the new ones are in it);
    /// - a recovery: from the loss until every node answered Started again;
    /// - a deploy, or a swap that did not happen: None.
    pub paused_ms: Option<u64>,
    /// From when it was asked (the deploy, the swap, the loss) until it was done.
    pub took_ms: u64,
}

impl Change {
    /// How many changes the coordinator keeps.
    pub const KEPT: usize = 10;
}

/// What a node did, reported when the application stops.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Totals {
    pub received: u64,
    pub emitted: u64,
    pub dead_lettered: u64,
    pub remote_messages: u64,
    pub remote_bytes: u64,
}

/// Runs of key groups, e.g. [(0, 341), (1023, 1023)], for a status line.
pub fn group_ranges(table: &[u16], node: u16) -> Vec<(u32, u32)> {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for (g, &owner) in table.iter().enumerate() {
        if owner != node {
            continue;
        }
        let g = g as u32;
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == g => *end = g,
            _ => ranges.push((g, g)),
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(msg: &Msg) -> Msg {
        let bytes = rmp_serde::to_vec(msg).unwrap();
        rmp_serde::from_slice(&bytes).unwrap()
    }

    #[test]
    fn a_deployment_crosses_the_wire_whichever_of_its_lists_are_empty() {
        // The encoding is positional: a field left out when empty would shift the next.
        let base = Manifest {
            deployment: "d".into(),
            component: "c".into(),
            args: vec!["--in".into()],
            nodes: vec!["a:1".into(), "b:1".into()],
            table: vec![0, 1],
            settings: crate::Settings::default(),
            retired: Vec::new(),
            drop_state: Vec::new(),
        };
        let variants = [
            base.clone(),
            Manifest {
                drop_state: vec!["count".into()],
                ..base.clone()
            },
            Manifest {
                retired: vec![1],
                ..base.clone()
            },
        ];
        for manifest in variants {
            match round_trip(&Msg::Deploy {
                manifest: manifest.clone(),
            }) {
                Msg::Deploy { manifest: back } => assert_eq!(back, manifest),
                other => panic!("{}", other.name()),
            }
        }
    }

    #[test]
    fn a_refusal_crosses_the_wire_with_its_kind_hint_and_text() {
        let refusals = [
            Refusal::new(RefusalKind::NotFound, "no application is deployed"),
            Refusal::new(RefusalKind::Recovering, "the cluster is recovering"),
            Refusal::new(
                RefusalKind::Failed,
                "the coordinator stopped before answering",
            )
            .with_retry(Retry::After { ms: 1000 }),
        ];
        for refusal in refusals {
            match round_trip(&Msg::Refused(refusal.clone())) {
                Msg::Refused(back) => assert_eq!(back, refusal),
                other => panic!("{}", other.name()),
            }
        }
    }

    #[test]
    fn a_refusal_reads_as_its_message_alone() {
        let r = Refusal::new(
            RefusalKind::AlreadyDeployed,
            "node already runs deployment d-1",
        );
        assert_eq!(r.to_string(), "node already runs deployment d-1");
        assert_eq!(r.retry, Retry::Never);
        let e = anyhow::Error::new(r).context("node 1 (10.0.0.2:7100) refused");
        assert_eq!(
            format!("{e:#}"),
            "node 1 (10.0.0.2:7100) refused: node already runs deployment d-1"
        );
    }

    #[test]
    fn a_refusal_passed_on_keeps_its_kind_and_hint_and_gains_the_context() {
        let cause = Refusal::new(RefusalKind::Recovering, "node 2 did not join");
        let e = anyhow::Error::new(cause).context("stop");
        let passed = Refusal::from_error(RefusalKind::Failed, &e);
        assert_eq!(passed.kind, RefusalKind::Recovering);
        assert_eq!(passed.retry, Retry::OnceRecovered);
        assert_eq!(passed.message, "stop: node 2 did not join");
        let plain = Refusal::from_error(RefusalKind::Failed, &anyhow::anyhow!("disk full"));
        assert_eq!(plain.kind, RefusalKind::Failed);
        assert_eq!(plain.to_string(), "disk full");
    }
}
