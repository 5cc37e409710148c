//! The protocol core: checkpoints, recovery, membership and stop/drain as state machines that
//! take events and return actions. Nothing in this crate opens a socket, starts a thread,
//! reads a clock or sleeps: time is passed in with every event, timers are deadlines the driver
//! asks for with `poll_timeout`, and every effect (a message, a log append, a sync, a release
//! of output) is an action the driver carries out and answers with an event. The same code
//! runs under the tokio drivers of `wallaroo run` and `wallaroo node`, and under the
//! deterministic simulator (`wallaroo-sim`).
//!
//! - [`gate`]: one worker's barrier: which input it may process now, which waits.
//! - [`quiescence`]: when a set of members has nothing in flight between them.
//! - [`recovery`]: which checkpoint a member's log restores, given what the cluster committed.
//! - [`participant`]: a member's side of a checkpoint (cut, snapshot, log, release, compact).
//! - [`coordinator`]: membership, generations, cluster-wide checkpoints, recovery and stop.

pub mod coordinator;
pub mod gate;
pub mod participant;
pub mod quiescence;
pub mod recovery;

/// Simulated or real time: how long since the driver started. Drivers pass
/// `Instant::elapsed` of their start; the simulator passes its own clock.
pub type Time = std::time::Duration;

/// A position in a member's write-ahead log (the WAL's record number).
pub type Lsn = u64;
