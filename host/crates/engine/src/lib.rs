//! One node's dataflow: worker threads that each own an instance of the application, the routing
//! of keyed messages to the worker that owns their key group, dead letters, and draining on
//! shutdown. Sockets live in `wallaroo-connectors`; this crate only sees batches of frames in and
//! encoded bytes out.
//!
//! Flow: a source hands a batch of frames to one worker (the same worker for the life of a
//! connection, so a connection's order is kept). The worker runs the source's segment in its
//! guest and gets back routed messages, sink output and user failures. Routed messages go to the
//! worker owning the key's group; sink output goes to the sink's bounded queue, so a slow sink
//! blocks the workers feeding it and, through source credits, the sources.

mod checkpoint;
mod dead_letter;
mod local;
mod log;
mod metrics;
mod node;
mod recovery;
mod state_steps;
mod watermarks;
mod worker;

pub use checkpoint::{Handoff, import_offline};
pub use dead_letter::{
    DEFAULT_MAX_BYTES as DEFAULT_DEAD_LETTER_MAX_BYTES, DeadLetters, Entry as DeadLetterEntry,
    MAX_ERROR_TEXT as DEAD_LETTER_MAX_ERROR_TEXT, MIN_MAX_BYTES as MIN_DEAD_LETTER_MAX_BYTES,
};
pub use metrics::{NodeCounters, NodeTotals};
pub use node::{
    Checkpoints, Finish, InputEnd, MetricsHandle, Node, NodeConfig, NotAccepted, Peers, Placement,
    Recovered, RemoteInput, Resilience, STREAM_ENDED, SinkBatch, SinkQueue, SourceHandle,
    SourceHandles,
};
pub use wallaroo_component::Message;
pub use wallaroo_protocol::quiescence::Alignment;
pub use wallaroo_wal::{KeyState, Lsn};
pub use watermarks::Level;
