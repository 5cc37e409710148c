//! Everything wasmtime: the engine configuration, the compile cache, the sandbox each guest runs
//! in, the bindings generated from `wit/` and the flat buffers the per-batch calls carry. This
//! is the only crate that calls `bindgen!`; the rest of the host sees plain Rust types and
//! [`GuestError`].

mod bindings;
mod cache;
mod runtime;
mod sandbox;
mod spec;
mod wire;

pub use bindings::types::{
    AppSpec, Framing, KafkaSink, KafkaSource, SinkConfig, SinkSpec, SourceConfig, SourceSpec,
    StepKind, StepSpec, TcpSink, TcpSource,
};
pub use cache::{CacheOutcome, CompileCache};
pub use runtime::{GuestError, Instance, Limits, Runtime, TrapKind};
pub use sandbox::Sandbox;
pub use spec::{DropStateError, DroppedState, check_drop_state, check_keeps_state};
pub use wire::{
    Emitted, Failure, Late, Malformed, Message, NO_INPUT, Output, Routed, StateChange, StateEntry,
    StateKey,
};

impl From<Framing> for wallaroo_types::Framing {
    fn from(f: Framing) -> Self {
        wallaroo_types::Framing {
            header_length: f.header_length,
            length_size: f.length_size,
            big_endian: f.big_endian,
        }
    }
}

/// wasmtime 48 has an error type of its own; the host's libraries speak `anyhow`.
pub(crate) fn host_error(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}
