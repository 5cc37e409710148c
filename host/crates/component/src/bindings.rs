//! Host bindings for the `wallaroo:app` world in `wit/`.

wasmtime::component::bindgen!({
    path: "../../../wit",
    world: "app",
});

pub use wallaroo::app::types;
