//! A worker: one thread, one guest instance, the key groups it owns.
//!
//! The worker keeps a copy of every key's state it owns, refreshed from the guest at most every
//! [`COPY_EVERY`] (copying after every batch would cost more than the batch at low load), and
//! the batches processed since the last copy. When the guest traps or runs past its time limit
//! the instance is gone; the worker starts a new one, restores the copy into it, runs the
//! batches since the copy again with their output discarded (it went out already; guests are
//! deterministic in the sandbox), and runs the failed batch again one message at a time, so only
//! the message that kills the guest is dead-lettered and nothing else is lost or repeated.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wallaroo_component::{
    AppSpec, GuestError, Instance, Message, Output, Runtime, StateChange, StateEntry, StateKey,
    StepKind,
};

use crate::watermarks::{IDLE_AFTER, Watermarks};
use wallaroo_protocol::gate::{Admit, Gate, Input};
use wallaroo_types::KeyGroups;
use wallaroo_wal::KeyState;

use crate::dead_letter::{Entry, bounded_error, display_key};
use crate::node::{END_OF_TIME, NodeConfig, Owner, Part, Resilience, Shared, SinkBatch, Work};
use crate::recovery::StateMap;
use crate::state_steps::StatefulSteps;

pub(crate) struct Worker {
    id: usize,
    runtime: Runtime,
    instance: Instance,
    args: Vec<String>,
    step_names: Vec<String>,
    stateful: StatefulSteps,
    has_state: bool,
    shared: Arc<Shared>,
    sinks: Vec<flume::Sender<SinkBatch>>,
    owners: Arc<Vec<Owner>>,
    groups: KeyGroups,
    /// The last state the guest reported for each (step, key) this worker owns.
    state: StateMap,
    /// Batches processed (and watermarks advanced to) since the state was last copied, to
    /// replay after a trap.
    unsaved: Vec<Unsaved>,
    unsaved_messages: usize,
    copied_at: Instant,
    /// Keys changed since the last checkpoint (with a log).
    dirty: Option<HashSet<(u32, Vec<u8>)>>,
    /// Per sink, output held until the next checkpoint commits (exactly-once).
    held: Option<Vec<Vec<Vec<u8>>>>,
    held_bytes: usize,
    held_limit: usize,
    /// The checkpoint barrier (see [`Gate`]): source input it holds waits in `stash`, routed
    /// input from a later epoch in `ahead`.
    gate: Gate,
    stash: VecDeque<Work>,
    ahead: VecDeque<Work>,
    /// Past this much linear memory the instance is swapped for a fresh one between batches.
    recycle_at: usize,
    max_memory: usize,
    /// Most input bytes in one `process` call (a single larger message goes alone).
    call_bytes: usize,
    /// How far event time has got on this worker's inputs.
    watermarks: Watermarks,
    /// The watermark the instance was last advanced to, and the one it had when the state was
    /// last copied (where an instance holding that copy starts).
    advanced: u64,
    copied_watermark: u64,
    /// This worker's watermark reached the end of time (counted in `Shared::at_end`).
    at_end: bool,
    /// Each source's segment, by source index.
    source_segments: Vec<u32>,
    /// Whether the application has a source the host stamps event times on (ticks speak for
    /// those), and the segments of sources whose event times come from the data, with the
    /// latest such time this worker has seen and when.
    ingest_sources: bool,
    data_segments: Vec<u32>,
    data_seen: Option<(u64, Instant)>,
    /// Late messages are dead-lettered too.
    dead_letter_late: bool,
}

/// What the instance did since the state was last copied.
enum Unsaved {
    Batch(u32, Vec<Message>),
    Advance(u64),
}

/// How stale the worker's copy of its keys' state may get before it is refreshed.
const COPY_EVERY: Duration = Duration::from_millis(50);
/// Most messages kept for replay before the copy is refreshed regardless of time.
const COPY_AFTER_MESSAGES: usize = 8192;

/// One `process` call takes at most this share of the memory cap in input bytes, and at
/// least [`MIN_CALL_BYTES`]. A Python guest on 64 KiB frames of words needs about 14 times a
/// call's input while the call runs and keeps about 3.5 times it (the outputs buffer, which
/// componentize-py never frees); 1/256 of the cap keeps one call to a few percent of it.
const CALL_SHARE_OF_MEMORY: usize = 256;
const MIN_CALL_BYTES: usize = 64 << 10;

fn call_bytes(max_memory: usize) -> usize {
    (max_memory / CALL_SHARE_OF_MEMORY).max(MIN_CALL_BYTES)
}

/// `messages` cut, in order, into runs of at most `max_bytes` of keys and payloads each (a
/// message larger than that makes a run of its own).
fn chunks(messages: Vec<Message>, max_bytes: usize) -> Vec<Vec<Message>> {
    let size = |m: &Message| m.key.len() + m.payload.len() + 8;
    if messages.iter().map(size).sum::<usize>() <= max_bytes {
        return vec![messages];
    }
    let mut runs = Vec::new();
    let mut run = Vec::new();
    let mut bytes = 0;
    for m in messages {
        let n = size(&m);
        if !run.is_empty() && bytes + n > max_bytes {
            runs.push(std::mem::take(&mut run));
            bytes = 0;
        }
        bytes += n;
        run.push(m);
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// Outputs of one batch, grouped by where they go.
struct Outbox {
    /// Per worker: runs of messages for one segment, in output order.
    routed: Vec<Vec<(u32, Vec<Message>)>>,
    /// The same per other node of a cluster.
    remote: Vec<Vec<(u32, Vec<Message>)>>,
    emitted: Vec<Vec<Vec<u8>>>,
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
        owners: Arc<Vec<Owner>>,
        state: StateMap,
    ) -> Self {
        let max_memory = runtime.limits().max_memory;
        let sinks_len = sinks.len();
        let durable = config.resilience != Resilience::None;
        let hold = config.resilience == Resilience::ExactlyOnce;
        let worker = Self {
            id,
            runtime,
            instance,
            args: config.args.clone(),
            step_names: spec.steps.iter().map(|s| s.name.clone()).collect(),
            stateful: StatefulSteps::of(&spec.steps),
            has_state: spec.steps.iter().any(|s| s.kind == StepKind::Stateful),
            shared,
            owners,
            groups: config.key_groups,
            held: hold.then(|| vec![Vec::new(); sinks_len]),
            sinks,
            state,
            dirty: durable.then(HashSet::new),
            unsaved: Vec::new(),
            unsaved_messages: 0,
            copied_at: Instant::now(),
            held_bytes: 0,
            held_limit: config.held_output_limit,
            gate: Gate::default(),
            stash: VecDeque::new(),
            ahead: VecDeque::new(),
            recycle_at: 0,
            max_memory,
            call_bytes: call_bytes(max_memory),
            watermarks: Watermarks::new(&spec.steps, config.workers, config.placement.as_ref()),
            advanced: 0,
            at_end: false,
            source_segments: spec.sources.iter().map(|s| s.segment).collect(),
            copied_watermark: 0,
            ingest_sources: spec.sources.iter().any(|s| !s.event_time_from_data),
            data_segments: spec
                .sources
                .iter()
                .filter(|s| s.event_time_from_data)
                .map(|s| s.segment)
                .collect(),
            data_seen: None,
            dead_letter_late: config.dead_letter_late,
        };
        worker.with_recycle_mark()
    }

    /// Sets the memory mark for recycling halfway between what the instance holds now and its
    /// cap.
    fn with_recycle_mark(mut self) -> Self {
        self.set_recycle_mark();
        self
    }

    /// Puts the state this worker starts with into its instance. Called on the worker's own
    /// thread before [`Worker::run`], so a node's workers restore at once.
    pub(crate) fn restore_state(&mut self) -> anyhow::Result<()> {
        if !self.state.is_empty() {
            restore(&mut self.instance, &self.state).map_err(|e| {
                anyhow::anyhow!(
                    "worker {}: restoring {} keys: {e}",
                    self.id,
                    self.state.len()
                )
            })?;
        }
        let counters = &self.shared.counters;
        counters.state_keys.inc_by(self.state.len() as i64);
        counters.state_bytes.inc_by(
            self.state
                .iter()
                .map(|((_, k), v)| (k.len() + v.len()) as i64)
                .sum(),
        );
        self.set_recycle_mark();
        Ok(())
    }

    /// Source input waits: at a barrier, or while holding too much output.
    fn paused(&self) -> bool {
        self.gate.at_barrier() || self.held_bytes > self.held_limit
    }

    fn set_recycle_mark(&mut self) {
        let now = self.instance.memory_bytes();
        self.recycle_at = now + self.max_memory.saturating_sub(now) / 2;
    }

    pub(crate) fn run(mut self, inbox: flume::Receiver<Work>) {
        loop {
            // A failed worker answers no snapshot: no checkpoint commits without it.
            if self.shared.aborting.load(Ordering::Relaxed) || self.shared.has_failed() {
                break;
            }
            let work = match self.stash.pop_front() {
                Some(work) if !self.paused() => work,
                stashed => {
                    if let Some(work) = stashed {
                        self.stash.push_front(work);
                    }
                    match inbox.recv() {
                        Ok(work) => work,
                        Err(_) => break,
                    }
                }
            };
            match work {
                Work::Stop => break,
                Work::Batch {
                    from_source, epoch, ..
                } => {
                    let input = match from_source {
                        true => Input::Source,
                        false => Input::Routed { epoch },
                    };
                    match self.gate.admit(input) {
                        // Source input also waits while this worker holds too much output.
                        Admit::Process if from_source && self.paused() => {
                            self.stash.push_back(work)
                        }
                        Admit::Process => self.take_batch(work),
                        Admit::Hold => self.stash.push_back(work),
                        Admit::Ahead => self.ahead.push_back(work),
                    }
                }
                // Ticks are source input: they wait where source batches wait, keeping their
                // order.
                Work::Tick { .. } => match self.gate.admit(Input::Source) {
                    Admit::Process if !self.paused() => self.take_batch(work),
                    _ => self.stash.push_back(work),
                },
                Work::Watermark { epoch, .. } => match self.gate.admit(Input::Routed { epoch }) {
                    Admit::Ahead => self.ahead.push_back(work),
                    _ => self.take_batch(work),
                },
                Work::Barrier => {
                    if self.gate.barrier() {
                        self.shared.aligned.fetch_add(1, Ordering::SeqCst);
                        self.shared.progressed();
                    }
                }
                Work::Sample { per_step, reply } => {
                    let mut taken: std::collections::HashMap<u32, usize> = Default::default();
                    let sample = self
                        .state
                        .iter()
                        .filter(|((step, _), _)| {
                            let n = taken.entry(*step).or_default();
                            *n += 1;
                            *n <= per_step
                        })
                        .map(|((step, key), value)| (*step, key.clone(), value.clone()))
                        .collect();
                    let _ = reply.send(sample);
                }
                Work::Snapshot { full, reply } => {
                    let _ = reply.send(self.take_part(full));
                    self.gate.snapshot();
                    // Made after other workers' snapshots, before anything that came later.
                    while let Some(work) = self.ahead.pop_front() {
                        self.take_batch(work);
                    }
                }
            }
        }
    }

    /// Takes a batch, tick or watermark the gate let through.
    fn take_batch(&mut self, work: Work) {
        match work {
            Work::Batch {
                segment,
                messages,
                credit,
                from_source,
                ..
            } => {
                let n = messages.len();
                self.process(segment, messages);
                drop(credit);
                self.shared.done(from_source, n);
            }
            Work::Tick { time } => {
                let data = self
                    .data_seen
                    .filter(|(_, at)| at.elapsed() < IDLE_AFTER)
                    .map(|(time, _)| time);
                let ingest = self.ingest_sources.then_some(time);
                // Every source has ended: nothing is still to come, whatever its times.
                let (ingest, data) = match time {
                    END_OF_TIME => (Some(END_OF_TIME), None),
                    _ => (ingest, data),
                };
                if self.watermarks.tick(ingest, data) {
                    self.watermark_moved();
                }
            }
            Work::Watermark {
                channel, levels, ..
            } if self.watermarks.heard(channel, &levels) => self.watermark_moved(),
            _ => {}
        }
    }

    /// This worker's watermarks moved: the instance fires what that makes due, then every
    /// worker this one routes to hears of it, after the batches sent before it.
    fn watermark_moved(&mut self) {
        if let Some(deepest) = self.watermarks.deepest()
            && deepest > self.advanced
        {
            self.advance(deepest);
        }
        if self.advanced == END_OF_TIME && !std::mem::replace(&mut self.at_end, true) {
            self.shared.at_end.fetch_add(1, Ordering::SeqCst);
        }
        let levels = self.watermarks.levels().to_vec();
        let epoch = self.gate.epoch();
        for worker in 0..self.shared.inboxes.len() {
            self.shared.control(
                worker,
                Work::Watermark {
                    channel: self.id,
                    epoch,
                    levels: levels.clone(),
                },
            );
        }
        if let Some(peers) = &self.shared.peers {
            peers.watermark(self.id, epoch, &levels);
        }
    }

    /// A source whose event times come from the data produced `outputs`: its watermark is the
    /// latest time among them (later messages may be older, by up to a window's delay).
    fn saw_data_times(&mut self, outputs: &[Output]) {
        let latest = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Route(r) => Some(r.event_time),
                _ => None,
            })
            .max();
        if let Some(latest) = latest {
            let before = self.data_seen.map_or(0, |(time, _)| time);
            self.data_seen = Some((latest.max(before), Instant::now()));
        }
    }

    /// Moves the instance's watermark to `watermark`, delivering what fires.
    fn advance(&mut self, watermark: u64) {
        if !self.has_state {
            // Windows are keyed state: without a stateful step nothing can fire.
            self.advanced = watermark;
            return;
        }
        if self.shared.has_failed() {
            return;
        }
        let mut result = self.instance.advance(watermark);
        if let Err(trap) = &result
            && trap.is_trap()
        {
            tracing::warn!(
                worker = self.id,
                "{trap} while firing windows; replacing the instance and trying once more"
            );
            self.recover_instance();
            result = self.instance.advance(watermark);
        }
        match result {
            Ok(outputs) => self.deliver(outputs, &[]),
            Err(e) => {
                tracing::error!(
                    worker = self.id,
                    "the windows due at watermark {watermark} could not fire: {e}"
                );
                if e.is_trap() {
                    self.replace_instance();
                }
            }
        }
        self.advanced = watermark;
        self.remember(Unsaved::Advance(watermark));
    }

    /// This worker's share of a checkpoint: the state of keys changed since the last one (or of
    /// every key) and the output held since.
    fn take_part(&mut self, full: bool) -> Part {
        self.save_state();
        let dirty = self.dirty.as_mut().map(std::mem::take).unwrap_or_default();
        let changed: Vec<_> = if full {
            self.state.iter().collect()
        } else {
            dirty
                .iter()
                .filter_map(|k| self.state.get_key_value(k))
                .collect()
        };
        // Keys whose state was removed since the last checkpoint: a full one leaves them out
        // anyway, as it needs nothing logged before it.
        let removed: Vec<(u32, Vec<u8>)> = if full {
            Vec::new()
        } else {
            dirty
                .into_iter()
                .filter(|k| !self.state.contains_key(k))
                .filter_map(|(step, key)| Some((self.stateful.slot(step)?, key)))
                .collect()
        };
        // The log names each entry's step by its index in the table of stateful steps.
        let reported = changed.len();
        let entries: Vec<KeyState> = changed
            .into_iter()
            .filter_map(|((step, key), value)| {
                Some(KeyState {
                    step: self.stateful.slot(*step)?,
                    key: key.clone(),
                    value: value.clone(),
                })
            })
            .collect();
        if entries.len() < reported {
            tracing::error!(
                worker = self.id,
                keys = reported - entries.len(),
                "the guest reported state of steps that are not stateful; it is not checkpointed"
            );
        }
        let held = match &mut self.held {
            Some(held) => held.iter_mut().map(std::mem::take).collect(),
            None => Vec::new(),
        };
        self.held_bytes = 0;
        Part {
            worker: self.id,
            steps: self.stateful.table(),
            entries,
            removed,
            held,
        }
    }

    /// Runs a batch in calls of at most [`Worker::call_bytes`] of input each. What a call costs
    /// the guest's memory grows with its input (a Python guest holds several times the batch
    /// in objects while it runs, and keeps the buffer it returns), so one call may not need
    /// more than the instance has left; the instance is recycled before a call when it has
    /// grown past its mark.
    fn process(&mut self, segment: u32, messages: Vec<Message>) {
        for chunk in chunks(messages, self.call_bytes) {
            self.recycle_if_grown();
            if self.shared.has_failed() {
                return;
            }
            self.process_call(segment, chunk);
        }
    }

    fn process_call(&mut self, segment: u32, messages: Vec<Message>) {
        let started = Instant::now();
        let result = self.instance.process(segment, &messages);
        self.shared
            .metrics
            .segment_call(segment, messages.len(), started.elapsed().as_secs_f64());
        match result {
            Ok(outputs) => {
                if self.data_segments.contains(&segment) {
                    self.saw_data_times(&outputs);
                }
                self.deliver(outputs, &messages);
                self.remember(Unsaved::Batch(segment, messages));
            }
            Err(GuestError::Refused(error)) => {
                for m in &messages {
                    self.dead_letter(segment, &m.key, &error, &m.payload);
                }
                self.remember(Unsaved::Batch(segment, messages));
            }
            Err(trap) => {
                tracing::warn!(
                    worker = self.id,
                    step = %self.step_name(segment),
                    batch = messages.len(),
                    "{trap}; replacing the instance and retrying the batch one message at a time"
                );
                self.recover_instance();
                self.retry_one_by_one(segment, &messages);
            }
        }
    }

    /// Keeps a processed batch (or an advance) for replay until the next copy of the state,
    /// and takes that copy when it is due.
    fn remember(&mut self, done: Unsaved) {
        if !self.has_state {
            return;
        }
        self.unsaved_messages += match &done {
            Unsaved::Batch(_, messages) => messages.len(),
            Unsaved::Advance(_) => 1,
        };
        self.unsaved.push(done);
        if self.unsaved_messages >= COPY_AFTER_MESSAGES || self.copied_at.elapsed() >= COPY_EVERY {
            self.save_state();
        }
    }

    /// A new instance after a trap, brought to where the lost one was: the copied state, then
    /// the batches (and advances) since the copy run again with their output discarded.
    fn recover_instance(&mut self) {
        self.replace_instance();
        for done in std::mem::take(&mut self.unsaved) {
            if self.shared.has_failed() {
                return;
            }
            if self.instance.memory_bytes() > self.recycle_at {
                // The copy taken here holds what the batches replayed so far did.
                self.save_state();
                self.recycle_instance();
            }
            let (replayed, result) = match &done {
                Unsaved::Batch(segment, messages) => (
                    format!(
                        "{} messages into step '{}'",
                        messages.len(),
                        self.step_name(*segment)
                    ),
                    self.instance.process(*segment, messages).map(drop),
                ),
                Unsaved::Advance(watermark) => (
                    format!("the windows due at watermark {watermark}"),
                    self.instance.advance(*watermark).map(drop),
                ),
            };
            if let Err(e) = result
                && e.is_trap()
            {
                // A guest that does not repeat itself (given a real clock or randomness): what
                // these messages did to its state is lost.
                tracing::error!(
                    worker = self.id,
                    "{e} again while replaying {replayed} after a trap; their effect on state \
                     is lost",
                );
                self.replace_instance();
            }
        }
        self.unsaved_messages = 0;
        self.save_state();
    }

    /// Runs each message of a failed batch alone. A message that runs the instance out of
    /// memory is the instance's fault unless it does so alone in a fresh instance: it gets one
    /// more try in a fresh one before it is dead-lettered.
    fn retry_one_by_one(&mut self, segment: u32, messages: &[Message]) {
        for m in messages {
            if self.shared.has_failed() {
                return;
            }
            let one = std::slice::from_ref(m);
            let fresh = self.instance.is_fresh();
            let mut result = self.instance.process(segment, one);
            if let Err(e) = &result
                && e.is_out_of_memory()
                && !fresh
            {
                tracing::debug!(
                    worker = self.id,
                    "{e}; retrying the message in a fresh instance"
                );
                self.recycle_instance();
                result = self.instance.process(segment, one);
            }
            match result {
                Ok(outputs) => {
                    self.deliver(outputs, one);
                    self.save_state();
                }
                Err(GuestError::Refused(error)) => {
                    self.dead_letter(segment, &m.key, &error, &m.payload)
                }
                Err(trap) if trap.is_out_of_memory() => {
                    let error = format!(
                        "{trap}, with this message alone in a fresh instance (raise \
                         --max-memory if it needs more)"
                    );
                    self.dead_letter(segment, &m.key, &error, &m.payload);
                    self.replace_instance();
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
            remote: Vec::new(),
            emitted: vec![Vec::new(); self.sinks.len()],
        };
        for output in outputs {
            match output {
                Output::Route(r) => {
                    let runs = match self.owners[self.groups.of(&r.key).0 as usize] {
                        Owner::Worker(w) => &mut out.routed[w],
                        Owner::Node(n) => {
                            if out.remote.len() <= n {
                                out.remote.resize_with(n + 1, Vec::new);
                            }
                            &mut out.remote[n]
                        }
                    };
                    let message = Message {
                        key: r.key,
                        payload: r.payload,
                        event_time: r.event_time,
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
                Output::Late(late) => {
                    self.shared.metrics.step_late(late.step);
                    if self.dead_letter_late
                        && let Some(m) = inputs.get(late.input as usize)
                    {
                        let error = "late: it arrived after every window it belongs to had fired \
                                     (the step's late data policy applied as well)";
                        self.dead_letter(late.step, &m.key, error, &m.payload);
                    }
                }
                Output::Ended(segment) => {
                    match self.source_segments.iter().position(|&s| s == segment) {
                        Some(source) => self.shared.ends(|e| e.generator_ended(source as u32)),
                        None => tracing::error!(segment, "guest ended a segment that is no source"),
                    }
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
                        from_source: false,
                        epoch: self.gate.epoch(),
                    },
                );
            }
        }
        if let Some(peers) = &self.shared.peers {
            for (node, runs) in out.remote.into_iter().enumerate() {
                for (segment, messages) in runs {
                    self.shared.sent.fetch_add(1, Ordering::SeqCst);
                    peers.send(node, segment, self.gate.epoch(), messages);
                }
            }
        }
        for (sink, frames) in out.emitted.into_iter().enumerate() {
            if frames.is_empty() {
                continue;
            }
            let n = frames.len() as u64;
            if let Some(held) = &mut self.held {
                // Released once the next checkpoint commits.
                self.held_bytes += frames.iter().map(Vec::len).sum::<usize>();
                held[sink].extend(frames);
                self.shared.counters.emitted.inc_by(n);
                if self.held_bytes > self.held_limit {
                    self.shared.want_checkpoint();
                }
                continue;
            }
            // Blocks while the sink's queue is full: a slow sink slows its producers.
            if self.sinks[sink]
                .send(SinkBatch { epoch: 0, frames })
                .is_ok()
            {
                self.shared.counters.emitted.inc_by(n);
            }
        }
    }

    /// Copies the state changed since the last copy out of the guest; the batches kept for
    /// replay are no longer needed.
    fn save_state(&mut self) {
        if !self.has_state || self.shared.has_failed() {
            return;
        }
        match self.instance.snapshot_changed() {
            Ok(changes) => {
                let counters = &self.shared.counters;
                for change in changes {
                    let (step, key, value) = match change {
                        StateChange::Set(StateEntry { step, key, value }) => {
                            (step, key, Some(value))
                        }
                        StateChange::Removed(StateKey { step, key }) => (step, key, None),
                    };
                    if let Some(dirty) = &mut self.dirty {
                        dirty.insert((step, key.clone()));
                    }
                    let key_len = key.len() as i64;
                    match value {
                        Some(value) => {
                            let value_len = value.len() as i64;
                            match self.state.insert((step, key), value) {
                                Some(old) => {
                                    counters.state_bytes.inc_by(value_len - old.len() as i64);
                                }
                                None => {
                                    counters.state_keys.inc();
                                    counters.state_bytes.inc_by(key_len + value_len);
                                }
                            }
                        }
                        None => {
                            if let Some(old) = self.state.remove(&(step, key)) {
                                counters.state_keys.dec();
                                counters.state_bytes.dec_by(key_len + old.len() as i64);
                            }
                        }
                    }
                }
                self.unsaved.clear();
                self.unsaved_messages = 0;
                self.copied_at = Instant::now();
                self.copied_watermark = self.advanced;
            }
            Err(e) => {
                tracing::error!(worker = self.id, "cannot read state from the guest: {e}");
                if e.is_trap() && !self.unsaved.is_empty() {
                    self.recover_instance();
                } else if e.is_trap() {
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
        self.save_state();
        self.recycle_instance();
    }

    /// A fresh instance in place of one that is alive but has used up its memory, holding the
    /// state last copied.
    fn recycle_instance(&mut self) {
        self.shared.counters.instances_recycled.inc();
        self.start_instance();
    }

    /// A new instance after a trap.
    fn replace_instance(&mut self) {
        self.shared.counters.instances_replaced.inc();
        self.start_instance();
    }

    /// A new instance holding the state of every key this worker owns.
    fn start_instance(&mut self) {
        let fresh = self.runtime.instantiate().and_then(|mut instance| {
            instance
                .describe(&self.args)
                .map_err(|e| anyhow::anyhow!("application_setup: {e}"))?;
            restore(&mut instance, &self.state)
                .map_err(|e| anyhow::anyhow!("restoring {} keys: {e}", self.state.len()))?;
            // Where the copy was taken: everything due there had fired, so nothing fires now.
            if self.copied_watermark > 0 {
                instance
                    .advance(self.copied_watermark)
                    .map_err(|e| anyhow::anyhow!("advancing to the copy's watermark: {e}"))?;
            }
            Ok(instance)
        });
        match fresh {
            Ok(instance) => {
                self.instance = instance;
                self.set_recycle_mark();
            }
            Err(e) => {
                // Without an instance this worker's key groups cannot make progress, and no
                // other worker holds their state: the node stops (its owner sees why) rather
                // than lose data. What was acknowledged is logged, and replayed on restart.
                let why = format!(
                    "worker {}: cannot replace the guest instance: {e:#}",
                    self.id
                );
                tracing::error!(worker = self.id, "{why}");
                self.shared.fail(why);
            }
        }
    }

    fn dead_letter(&self, step: u32, key: &[u8], error: &str, payload: &[u8]) {
        self.shared.metrics.step_error(step);
        let step = self.step_name(step);
        let key = (!key.is_empty()).then(|| display_key(key));
        let shown = bounded_error(error);
        match &key {
            Some(k) => tracing::warn!("error in step '{step}' for key '{k}': {shown}"),
            None => tracing::warn!("error in step '{step}': {shown}"),
        }
        self.shared.counters.dead_lettered.inc();
        let entry = Entry {
            at: step,
            key,
            error,
        };
        self.shared.dead_letters.write(&entry, payload);
    }

    fn step_name(&self, step: u32) -> &str {
        self.step_names
            .get(step as usize)
            .map(String::as_str)
            .unwrap_or("<unknown step>")
    }
}

/// Puts every key's state into an instance.
fn restore(instance: &mut Instance, state: &StateMap) -> Result<(), GuestError> {
    let entries: Vec<StateEntry> = state
        .iter()
        .map(|((step, key), value)| StateEntry {
            step: *step,
            key: key.clone(),
            value: value.clone(),
        })
        .collect();
    instance.restore(&entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload_len: usize) -> Message {
        Message {
            key: vec![],
            payload: vec![b'x'; payload_len],
            event_time: 0,
        }
    }

    fn sizes(runs: &[Vec<Message>]) -> Vec<Vec<usize>> {
        runs.iter()
            .map(|run| run.iter().map(|m| m.payload.len()).collect())
            .collect()
    }

    #[test]
    fn a_batch_within_the_bound_is_one_call() {
        let runs = chunks(vec![message(10), message(20)], 100);
        assert_eq!(sizes(&runs), [vec![10, 20]]);
    }

    #[test]
    fn a_batch_is_cut_in_order_at_the_bound_counting_each_message_table_entry() {
        // Each message counts its 8 bytes in the batch's table of lengths too.
        let batch = vec![message(42), message(42), message(42), message(10)];
        assert_eq!(sizes(&chunks(batch, 100)), [vec![42, 42], vec![42, 10]]);
    }

    #[test]
    fn a_message_larger_than_the_bound_goes_alone() {
        let batch = vec![message(10), message(500), message(10)];
        assert_eq!(sizes(&chunks(batch, 100)), [vec![10], vec![500], vec![10]]);
    }

    #[test]
    fn a_call_takes_a_share_of_the_cap_and_never_less_than_the_minimum() {
        assert_eq!(call_bytes(64 << 20), 256 << 10);
        assert_eq!(call_bytes(512 << 20), 2 << 20);
        assert_eq!(call_bytes(1 << 20), MIN_CALL_BYTES);
    }
}
