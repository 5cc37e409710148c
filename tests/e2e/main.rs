//! End-to-end tests: examples built with `wallaroo build`, run with `wallaroo run`, fed with
//! `wallaroo send`, read back with `wallaroo receive`.

mod backpressure;
mod bad_input;
mod build;
mod cluster;
mod durability;
mod examples;
mod expiry;
mod finish;
mod go;
mod kafka;
mod latency;
mod metrics;
mod sandbox;
mod send;
mod startup;
mod state;
mod swap;
mod windows;
