//! A cluster: `wallaroo node` daemons that each run a share of one application's key groups,
//! `wallaroo deploy` to ship a component to them and start it, `wallaroo status` and
//! `wallaroo stop`. Nodes talk QUIC with mutual TLS (`wallaroo-transport`); every node holds
//! the key-group table and sends a routed message straight to the node owning its key.
//! The first node in hosts.txt coordinates: it assigns key groups, numbers generations and
//! checkpoints, drives cluster-wide checkpoints and rolls the whole cluster back to the last
//! committed one when a node is lost or restarts.

mod app;
mod client;
mod coordinator;
mod daemon;
pub mod manifest;
pub mod proto;
pub mod report;

pub use client::{DeployOptions, deploy, status, stop};
pub use daemon::{NodeOptions, run_node};
pub use manifest::{Manifest, Settings, read_hosts};
