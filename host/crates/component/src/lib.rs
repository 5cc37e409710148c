//! Everything wasmtime: the engine configuration, the compile cache, the sandbox each guest runs
//! in, and the bindings generated from `wit/`. This is the only crate that calls `bindgen!`; the
//! rest of the host sees plain Rust types and [`GuestError`].

mod bindings;
mod cache;
mod runtime;
mod sandbox;

pub use bindings::types::{
    AppSpec, Emitted, Failure, Framing, Message, Output, Routed, SinkConfig, SinkSpec,
    SourceConfig, SourceSpec, StateEntry, StateKey, StepKind, StepSpec, TcpSink, TcpSource,
};
pub use cache::{CacheOutcome, CompileCache};
pub use runtime::{GuestError, Instance, Limits, Runtime, TrapKind};
pub use sandbox::Sandbox;

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
