//! A loaded application and its instances.
//!
//! [`Runtime`] holds the compiled component, pre-linked against WASI, and starts instances
//! cheaply (about half a millisecond each). An [`Instance`] is one sandboxed copy of the guest
//! with its own memory and state; a worker thread owns one. Every call runs under an epoch
//! deadline and a memory cap: a guest that loops forever or traps returns
//! [`GuestError::Trap`] and the instance is dead, a user error comes back as a value.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::types::AppSpec;
use crate::bindings::{App, AppPre};
use crate::wire::{self, Message, Output, StateChange, StateEntry, StateKey};
use crate::{CacheOutcome, CompileCache, Sandbox};

/// How often the engine's epoch advances; call deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Resource limits for each instance.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory an instance may grow to, in bytes.
    pub max_memory: usize,
    /// Wall time one call into the guest may take before it is interrupted.
    pub call_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory: 512 << 20,
            call_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The guest answered with an error value: it is alive and its state intact.
    #[error("{0}")]
    Refused(String),
    /// The call did not finish: the instance is dead and must be replaced.
    #[error("{kind}: {detail}")]
    Trap { kind: TrapKind, detail: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapKind {
    Timeout,
    Trap,
    /// The store refused to grow the guest's memory past its cap during the call. Whatever the
    /// guest answered (a trap, an error, a `MemoryError` reported as a failed message), the
    /// fault is the instance's: it is full, and the call must be retried in a fresh one.
    OutOfMemory,
}

impl std::fmt::Display for TrapKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TrapKind::Timeout => "guest call exceeded its time limit",
            TrapKind::Trap => "guest trapped",
            TrapKind::OutOfMemory => "guest ran out of memory at its cap",
        })
    }
}

impl GuestError {
    pub fn is_trap(&self) -> bool {
        matches!(self, GuestError::Trap { .. })
    }

    pub fn is_out_of_memory(&self) -> bool {
        matches!(
            self,
            GuestError::Trap {
                kind: TrapKind::OutOfMemory,
                ..
            }
        )
    }

    fn from_wasmtime(e: wasmtime::Error) -> Self {
        let (kind, detail) = match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => (TrapKind::Timeout, Trap::Interrupt.to_string()),
            Some(trap) => (TrapKind::Trap, trap.to_string()),
            // Not a wasm trap (a host call failed): its own message is the useful part, the
            // guest backtrace wasmtime adds as context is not.
            None => (TrapKind::Trap, e.root_cause().to_string()),
        };
        GuestError::Trap { kind, detail }
    }
}

pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: MemoryWatch,
}

/// The store's limits, remembering how large the guest's memories have grown (a linear memory
/// never shrinks, so this is also what the instance holds) and whether a growth was refused.
struct MemoryWatch {
    limits: StoreLimits,
    bytes: usize,
    refused: bool,
}

impl ResourceLimiter for MemoryWatch {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.bytes += desired - current;
        } else {
            self.refused = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A compiled application, ready to instantiate from any thread.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    pre: AppPre<HostState>,
    limits: Limits,
    sandbox: Sandbox,
    _ticker: Arc<EpochTicker>,
}

impl Runtime {
    /// The engine every component of this process is compiled with.
    pub fn engine() -> anyhow::Result<Engine> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        Engine::new(&config).map_err(crate::host_error)
    }

    /// Compiles (or loads from `cache`) the component in `wasm` and links it against WASI.
    pub fn new(
        wasm: &[u8],
        cache: &CompileCache,
        limits: Limits,
        sandbox: Sandbox,
    ) -> anyhow::Result<(Self, CacheOutcome)> {
        let engine = Self::engine()?;
        let (component, outcome) = cache.load(&engine, wasm)?;
        Ok((Self::link(engine, component, limits, sandbox)?, outcome))
    }

    fn link(
        engine: Engine,
        component: Component,
        limits: Limits,
        sandbox: Sandbox,
    ) -> anyhow::Result<Self> {
        check_contract(&engine, &component)?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(crate::host_error)?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(crate::host_error)
            .context(
                "the component does not fit the wallaroo:app world or imports more than WASI",
            )?;
        let pre = AppPre::new(pre).map_err(crate::host_error)?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Self {
            engine,
            pre,
            limits,
            sandbox,
            _ticker: ticker,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A fresh instance. Call [`Instance::describe`] on it before anything else.
    pub fn instantiate(&self) -> anyhow::Result<Instance> {
        let state = HostState {
            wasi: self.sandbox.wasi_ctx()?,
            table: ResourceTable::new(),
            limits: MemoryWatch {
                limits: StoreLimitsBuilder::new()
                    .memory_size(self.limits.max_memory)
                    .trap_on_grow_failure(false)
                    .build(),
                bytes: 0,
                refused: false,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(u64::MAX / 2);
        store.epoch_deadline_trap();
        let app = self
            .pre
            .instantiate(&mut store)
            .map_err(crate::host_error)
            .context("instantiating the component")?;
        let deadline_ticks = (self.limits.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1);
        Ok(Instance {
            store,
            app,
            deadline_ticks: deadline_ticks as u64,
            max_memory: self.limits.max_memory,
            processed: 0,
        })
    }
}

/// The version of the `wallaroo:app` package in `wit/` that this host implements.
const CONTRACT_VERSION: &str = "0.5.0";

/// Refuses, with what to do about it, a component built against another version of the
/// `wallaroo:app` contract (an older SDK): linking would only say an export is missing.
fn check_contract(engine: &Engine, component: &Component) -> anyhow::Result<()> {
    let ty = component.component_type();
    let guest = format!("wallaroo:app/guest@{CONTRACT_VERSION}");
    if ty.get_export(engine, &guest).is_some() {
        return Ok(());
    }
    let theirs = ty
        .exports(engine)
        .find_map(|(name, _)| name.strip_prefix("wallaroo:app/guest@"));
    if let Some(theirs) = theirs {
        anyhow::bail!(
            "the component was built for wallaroo:app@{theirs}, this host runs \
             wallaroo:app@{CONTRACT_VERSION}: build it again with this version's `wallaroo build`"
        );
    }
    Ok(())
}

/// One sandboxed copy of the guest.
pub struct Instance {
    store: Store<HostState>,
    app: App,
    deadline_ticks: u64,
    max_memory: usize,
    /// `process` calls made on this instance.
    processed: u64,
}

impl Instance {
    /// Runs one call into the guest. A call during which the store refused to grow the guest's
    /// memory fails with [`TrapKind::OutOfMemory`] whatever the guest answered: a guest that
    /// could not allocate reports it as it can (Python raises `MemoryError`, which may end up
    /// as a failed message, an error, or a trap), and none of those is the input's fault.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&App, &mut Store<HostState>) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<R, GuestError> {
        self.call_explained(f, |_| "the guest answered nonetheless".to_string())
    }

    /// [`Instance::call`], with `explain` saying what an answer that came back despite a
    /// refused growth held.
    fn call_explained<R>(
        &mut self,
        f: impl FnOnce(&App, &mut Store<HostState>) -> wasmtime::Result<Result<R, String>>,
        explain: impl FnOnce(&R) -> String,
    ) -> Result<R, GuestError> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        self.store.data_mut().limits.refused = false;
        let result = f(&self.app, &mut self.store);
        if self.store.data().limits.refused {
            let answer = match result {
                Ok(Ok(r)) => explain(&r),
                Ok(Err(refusal)) => refusal,
                Err(e) => GuestError::from_wasmtime(e).to_string(),
            };
            return Err(GuestError::Trap {
                kind: TrapKind::OutOfMemory,
                detail: format!(
                    "{} MiB reached ({answer})",
                    self.max_memory.div_ceil(1 << 20)
                ),
            });
        }
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(refusal)) => Err(GuestError::Refused(refusal)),
            Err(e) => Err(GuestError::from_wasmtime(e)),
        }
    }

    /// True until the first `process` call: nothing but setup and restored state is in its
    /// memory.
    pub fn is_fresh(&self) -> bool {
        self.processed == 0
    }

    /// Bytes of linear memory the instance holds.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limits.bytes
    }

    pub fn describe(&mut self, args: &[String]) -> Result<AppSpec, GuestError> {
        self.call(|app, store| app.wallaroo_app_guest().call_describe(store, args))
    }

    // The per-batch calls carry flat buffers (layouts in wit/wallaroo.wit, codec in `wire`). A
    // buffer the guest gets wrong is refused like any other answer the host cannot use: the
    // instance is alive, the call's result is lost.

    pub fn process(&mut self, segment: u32, batch: &[Message]) -> Result<Vec<Output>, GuestError> {
        let batch = wire::encode_batch(batch).map_err(refused)?;
        self.processed += 1;
        let outputs = self.call_explained(
            |app, store| {
                app.wallaroo_app_guest()
                    .call_process(store, segment, &batch)
            },
            |outputs| {
                let failure = wire::decode_outputs(outputs).ok().and_then(|outputs| {
                    outputs.into_iter().find_map(|o| match o {
                        Output::Failed(f) => Some(f.error),
                        _ => None,
                    })
                });
                failure.unwrap_or_else(|| "the guest answered nonetheless".to_string())
            },
        )?;
        wire::decode_outputs(&outputs).map_err(refused)
    }

    /// Tells the instance that no message older than `watermark` (nanoseconds since the Unix
    /// epoch) is still to come; returns what that makes due (windows firing), as `process`
    /// does. The outputs' failures have no input ([`wire::NO_INPUT`]).
    pub fn advance(&mut self, watermark: u64) -> Result<Vec<Output>, GuestError> {
        let outputs =
            self.call(|app, store| app.wallaroo_app_guest().call_advance(store, watermark))?;
        wire::decode_outputs(&outputs).map_err(refused)
    }

    /// The state of every key changed since the last snapshot, and the keys whose state was
    /// removed, read [`STATE_CHUNK`] entries per call.
    pub fn snapshot_changed(&mut self) -> Result<Vec<StateChange>, GuestError> {
        drain(STATE_CHUNK, |max| {
            let entries =
                self.call(|app, store| app.wallaroo_app_guest().call_snapshot_changed(store, max))?;
            wire::decode_changes(&entries).map_err(refused)
        })
    }

    /// Puts the given keys' state into the instance, [`STATE_CHUNK`] entries per call.
    pub fn restore(&mut self, entries: &[StateEntry]) -> Result<(), GuestError> {
        for chunk in entries.chunks(STATE_CHUNK as usize) {
            let chunk = wire::encode_entries(chunk).map_err(refused)?;
            self.call(|app, store| app.wallaroo_app_guest().call_restore(store, &chunk))?;
        }
        Ok(())
    }

    /// Takes the given keys' state out of the instance, [`STATE_CHUNK`] keys per call.
    pub fn take(&mut self, keys: &[StateKey]) -> Result<Vec<StateEntry>, GuestError> {
        let mut taken = Vec::new();
        for chunk in keys.chunks(STATE_CHUNK as usize) {
            let chunk = wire::encode_keys(chunk).map_err(refused)?;
            let entries =
                self.call(|app, store| app.wallaroo_app_guest().call_take(store, &chunk))?;
            taken.extend(wire::decode_entries(&entries).map_err(refused)?);
        }
        Ok(taken)
    }
}

/// Most state entries (or keys) one call moves: a Python guest pickles about 200,000 small
/// states a second, so a call stays in the tens of milliseconds however many keys it holds.
pub const STATE_CHUNK: u32 = 4096;

/// Calls `next(max)` until it returns fewer than `max` entries, and returns them all in order.
fn drain<T, E>(max: u32, mut next: impl FnMut(u32) -> Result<Vec<T>, E>) -> Result<Vec<T>, E> {
    let mut all = Vec::new();
    loop {
        let chunk = next(max)?;
        let done = chunk.len() < max as usize;
        all.extend(chunk);
        if done {
            return Ok(all);
        }
    }
}

fn refused(e: impl std::fmt::Display) -> GuestError {
    GuestError::Refused(e.to_string())
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the last runtime using it is dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Arc<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("wallaroo-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        Arc::new(Self { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_guest_interface_is_the_wit_package_version() {
        let wit = include_str!("../../../../wit/wallaroo.wit");
        let package = format!("package wallaroo:app@{};", super::CONTRACT_VERSION);
        assert!(
            wit.contains(&package),
            "wit/wallaroo.wit does not declare {package}"
        );
    }

    fn entries(from: usize, n: usize) -> Vec<super::StateEntry> {
        (from..from + n)
            .map(|i| super::StateEntry {
                step: 1,
                key: i.to_string().into_bytes(),
                value: vec![],
            })
            .collect()
    }

    #[test]
    fn draining_asks_again_until_a_call_returns_fewer_than_asked() {
        // A guest holding 10 changed keys, handing out at most `max` per call.
        let mut left = 10;
        let mut calls = Vec::new();
        let all = super::drain(4, |max| {
            calls.push(max);
            let n = left.min(max as usize);
            let chunk = entries(10 - left, n);
            left -= n;
            Ok::<_, ()>(chunk)
        })
        .unwrap();
        assert_eq!(calls, [4, 4, 4]);
        assert_eq!(all, entries(0, 10));
    }

    #[test]
    fn draining_a_multiple_of_the_chunk_ends_with_an_empty_call() {
        let mut chunks = vec![entries(4, 0), entries(4, 4), entries(0, 4)];
        let all = super::drain(4, |_| Ok::<_, ()>(chunks.pop().unwrap())).unwrap();
        assert_eq!(all, entries(0, 8));
        assert!(chunks.is_empty());
    }

    #[test]
    fn draining_stops_at_the_first_error() {
        let mut calls = 0;
        let r = super::drain(4, |_| {
            calls += 1;
            if calls == 2 {
                Err("broken")
            } else {
                Ok(entries(0, 4))
            }
        });
        assert_eq!(r, Err("broken"));
        assert_eq!(calls, 2);
    }

    #[test]
    fn a_component_built_for_another_contract_version_is_refused_naming_both() {
        let old = r#"(component
            (instance $guest)
            (export "wallaroo:app/guest@0.3.0" (instance $guest)))"#;
        let Err(e) = super::Runtime::new(
            old.as_bytes(),
            &crate::CompileCache::disabled(),
            super::Limits::default(),
            crate::Sandbox::default(),
        ) else {
            panic!("a 0.3.0 component was accepted");
        };
        assert_eq!(
            e.to_string(),
            format!(
                "the component was built for wallaroo:app@0.3.0, this host runs \
                 wallaroo:app@{}: build it again with this version's `wallaroo build`",
                super::CONTRACT_VERSION
            )
        );
    }
}
