//! A worker: one thread, one guest instance, the key groups it owns.
//!
//! The worker keeps a copy of every key's state it owns, refreshed from the guest after each
//! batch that may change state. When the guest traps or runs past its time limit the instance is
//! gone; the worker starts a new one, restores that copy into it and runs the failed batch again
//! one message at a time, so only the message that kills the guest is dead-lettered and nothing
//! else is lost or repeated.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use wallaroo_component::{
    AppSpec, GuestError, Instance, Message, Output, Runtime, StateEntry, StepKind,
};
use wallaroo_types::KeyGroups;

use crate::dead_letter::{Entry, display_key};
use crate::node::{NodeConfig, Shared, SinkBatch, Work};

pub(crate) struct Worker {
    id: usize,
    runtime: Runtime,
    instance: Instance,
    args: Vec<String>,
    step_names: Vec<String>,
    has_state: bool,
    shared: Arc<Shared>,
    sinks: Vec<flume::Sender<SinkBatch>>,
    owners: Arc<Vec<usize>>,
    groups: KeyGroups,
    /// The last state the guest reported for each (step, key) this worker owns.
    state: HashMap<(u32, Vec<u8>), Vec<u8>>,
    /// Past this much linear memory the instance is swapped for a fresh one between batches.
    recycle_at: usize,
    max_memory: usize,
}

/// Outputs of one batch, grouped by where they go.
struct Outbox {
    /// Per worker: runs of messages for one segment, in output order.
    routed: Vec<Vec<(u32, Vec<Message>)>>,
    emitted: Vec<SinkBatch>,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: usize,
        runtime: Runtime,
        instance: Instance,
        config: &NodeConfig,
        spec: &AppSpec,
        shared: Arc<Shared>,
        sinks: Vec<flume::Sender<SinkBatch>>,
        owners: Arc<Vec<usize>>,
    ) -> Self {
        let max_memory = runtime.limits().max_memory;
        Self {
            id,
            runtime,
            instance,
            args: config.args.clone(),
            step_names: spec.steps.iter().map(|s| s.name.clone()).collect(),
            has_state: spec.steps.iter().any(|s| s.kind == StepKind::Stateful),
            shared,
            sinks,
            owners,
            groups: config.key_groups,
            state: HashMap::new(),
            recycle_at: 0,
            max_memory,
        }
        .with_recycle_mark()
    }

    /// Sets the memory mark for recycling halfway between what the instance holds now and its
    /// cap.
    fn with_recycle_mark(mut self) -> Self {
        self.set_recycle_mark();
        self
    }

    fn set_recycle_mark(&mut self) {
        let now = self.instance.memory_bytes();
        self.recycle_at = now + self.max_memory.saturating_sub(now) / 2;
    }

    pub(crate) fn run(mut self, inbox: flume::Receiver<Work>) {
        while let Ok(work) = inbox.recv() {
            match work {
                Work::Stop => break,
                Work::Batch {
                    segment,
                    messages,
                    credit,
                } => {
                    self.process(segment, &messages);
                    drop(credit);
                    self.recycle_if_grown();
                    self.shared.done();
                }
            }
        }
    }

    fn process(&mut self, segment: u32, messages: &[Message]) {
        match self.instance.process(segment, messages) {
            Ok(outputs) => {
                self.deliver(outputs, messages);
                self.save_state();
            }
            Err(GuestError::Refused(error)) => {
                for m in messages {
                    self.dead_letter(segment, &m.key, &error, &m.payload);
                }
            }
            Err(trap) => {
                tracing::warn!(
                    worker = self.id,
                    step = %self.step_name(segment),
                    batch = messages.len(),
                    "{trap}; replacing the instance and retrying the batch one message at a time"
                );
                self.replace_instance();
                self.retry_one_by_one(segment, messages);
            }
        }
    }

    fn retry_one_by_one(&mut self, segment: u32, messages: &[Message]) {
        for m in messages {
            let one = std::slice::from_ref(m);
            match self.instance.process(segment, one) {
                Ok(outputs) => {
                    self.deliver(outputs, one);
                    self.save_state();
                }
                Err(GuestError::Refused(error)) => {
                    self.dead_letter(segment, &m.key, &error, &m.payload)
                }
                Err(trap) => {
                    self.dead_letter(segment, &m.key, &trap.to_string(), &m.payload);
                    self.replace_instance();
                }
            }
        }
    }

    /// Sends routed messages to their owners and encoded output to the sinks; dead-letters the
    /// inputs the guest reported as failed.
    fn deliver(&mut self, outputs: Vec<Output>, inputs: &[Message]) {
        let mut out = Outbox {
            routed: vec![Vec::new(); self.shared.inboxes.len()],
            emitted: vec![Vec::new(); self.sinks.len()],
        };
        for output in outputs {
            match output {
                Output::Route(r) => {
                    let owner = self.owners[self.groups.of(&r.key).0 as usize];
                    let runs = &mut out.routed[owner];
                    let message = Message {
                        key: r.key,
                        payload: r.payload,
                    };
                    match runs.last_mut() {
                        Some((segment, batch)) if *segment == r.segment => batch.push(message),
                        _ => runs.push((r.segment, vec![message])),
                    }
                }
                Output::Emit(e) => match out.emitted.get_mut(e.sink as usize) {
                    Some(batch) => batch.push(e.payload),
                    None => tracing::error!(sink = e.sink, "guest emitted to an unknown sink"),
                },
                Output::Failed(f) => {
                    let payload = inputs
                        .get(f.input as usize)
                        .map(|m| m.payload.as_slice())
                        .unwrap_or_default();
                    let key = f.key.unwrap_or_default();
                    self.dead_letter(f.step, &key, &f.error, payload);
                }
            }
        }
        for (worker, runs) in out.routed.into_iter().enumerate() {
            for (segment, messages) in runs {
                self.shared.enqueue(
                    worker,
                    Work::Batch {
                        segment,
                        messages,
                        credit: None,
                    },
                );
            }
        }
        for (sink, batch) in out.emitted.into_iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let n = batch.len() as u64;
            // Blocks while the sink's queue is full: a slow sink slows its producers.
            if self.sinks[sink].send(batch).is_ok() {
                self.shared.counters.emitted.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Copies the state the last batch changed out of the guest.
    fn save_state(&mut self) {
        if !self.has_state {
            return;
        }
        match self.instance.snapshot_changed() {
            Ok(entries) => {
                for StateEntry { step, key, value } in entries {
                    self.state.insert((step, key), value);
                }
            }
            Err(e) => {
                tracing::error!(worker = self.id, "cannot read state from the guest: {e}");
                if e.is_trap() {
                    self.replace_instance();
                }
            }
        }
    }

    /// A guest's linear memory never shrinks, and some guests never free part of what they
    /// allocate (componentize-py does not free the argument buffers of an export call, so a
    /// Python instance grows by every batch's size). Before such an instance runs into its cap,
    /// swap it for a fresh one holding the same state.
    fn recycle_if_grown(&mut self) {
        if self.instance.memory_bytes() <= self.recycle_at {
            return;
        }
        tracing::debug!(
            worker = self.id,
            bytes = self.instance.memory_bytes(),
            keys = self.state.len(),
            "recycling the guest instance"
        );
        self.shared
            .counters
            .instances_recycled
            .fetch_add(1, Ordering::Relaxed);
        self.start_instance();
    }

    /// A new instance after a trap.
    fn replace_instance(&mut self) {
        self.shared
            .counters
            .instances_replaced
            .fetch_add(1, Ordering::Relaxed);
        self.start_instance();
    }

    /// A new instance holding the state of every key this worker owns.
    fn start_instance(&mut self) {
        let fresh = self.runtime.instantiate().and_then(|mut instance| {
            instance
                .describe(&self.args)
                .map_err(|e| anyhow::anyhow!("application_setup: {e}"))?;
            let entries: Vec<StateEntry> = self
                .state
                .iter()
                .map(|((step, key), value)| StateEntry {
                    step: *step,
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect();
            instance
                .restore(&entries)
                .map_err(|e| anyhow::anyhow!("restoring {} keys: {e}", entries.len()))?;
            Ok(instance)
        });
        match fresh {
            Ok(instance) => {
                self.instance = instance;
                self.set_recycle_mark();
            }
            Err(e) => {
                // Without an instance this worker's key groups cannot make progress, and no
                // other worker holds their state: stopping the node loudly beats losing data.
                tracing::error!(worker = self.id, "cannot replace the guest instance: {e:#}");
                std::process::exit(70);
            }
        }
    }

    fn dead_letter(&self, step: u32, key: &[u8], error: &str, payload: &[u8]) {
        let step = self.step_name(step);
        let key = (!key.is_empty()).then(|| display_key(key));
        match &key {
            Some(k) => tracing::warn!("error in step '{step}' for key '{k}': {error}"),
            None => tracing::warn!("error in step '{step}': {error}"),
        }
        self.shared
            .counters
            .dead_lettered
            .fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            at: step,
            key,
            error,
        };
        if let Err(e) = self.shared.dead_letters.write(&entry, payload) {
            tracing::error!("cannot write a dead letter: {e:#}");
        }
    }

    fn step_name(&self, step: u32) -> &str {
        self.step_names
            .get(step as usize)
            .map(String::as_str)
            .unwrap_or("<unknown step>")
    }
}
