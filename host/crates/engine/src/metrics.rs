//! A node's figures as Prometheus metrics: totals (also read for the status line and the
//! closing summary), per-step counts and guest-call latency, backlog, checkpoints.
//!
//! Steps run fused in segments (one guest call runs every step up to the next key_by), so
//! message counts and call latency are per segment, labelled with the segment's first step;
//! errors carry the exact step the guest reports.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Totals since start.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Frames accepted from sources.
    pub received: Counter,
    /// Encoded messages handed to sinks (or held for them, exactly-once).
    pub emitted: Counter,
    /// Messages sent to the dead letters.
    pub dead_lettered: Counter,
    /// Dead letters that could not be written (a full disk): counted, not kept.
    pub dead_letters_unwritten: Counter,
    /// Guest instances replaced after a trap or a timeout.
    pub instances_replaced: Counter,
    /// Guest instances swapped for fresh ones because their memory had grown.
    pub instances_recycled: Counter,
    /// Messages queued for workers and not yet processed.
    pub backlog: Gauge,
    pub checkpoints: Counter,
    /// Keys whose state the workers hold a copy of (see [`crate::worker`]), and the bytes of
    /// those keys and states: running totals kept as the workers copy state, so reading them
    /// costs nothing however many keys there are.
    pub state_keys: Gauge,
    pub state_bytes: Gauge,
}

/// A reading of [`NodeCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTotals {
    pub received: u64,
    pub emitted: u64,
    pub dead_lettered: u64,
    pub dead_letters_unwritten: u64,
    pub instances_replaced: u64,
    pub instances_recycled: u64,
    pub backlog: i64,
    pub checkpoints: u64,
    /// The write-ahead log failed: nothing committed after that.
    pub log_failed: bool,
}

impl NodeCounters {
    pub fn totals(&self) -> NodeTotals {
        NodeTotals {
            received: self.received.get(),
            emitted: self.emitted.get(),
            dead_lettered: self.dead_lettered.get(),
            dead_letters_unwritten: self.dead_letters_unwritten.get(),
            instances_replaced: self.instances_replaced.get(),
            instances_recycled: self.instances_recycled.get(),
            backlog: self.backlog.get(),
            checkpoints: self.checkpoints.get(),
            log_failed: false,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    step: String,
}

pub(crate) struct Metrics {
    registry: Registry,
    step_messages: Family<StepLabel, Counter>,
    step_seconds: Family<StepLabel, Histogram>,
    /// Per step index, once a segment starts there: messages into it, and the seconds of one
    /// guest call over a batch of it.
    segments: Vec<std::sync::OnceLock<(Counter, Histogram)>>,
    step_errors: Family<StepLabel, Counter>,
    step_late: Family<StepLabel, Counter>,
    /// The same per step index, for `status`.
    late: Vec<std::sync::atomic::AtomicU64>,
    step_names: Vec<String>,
    pub(crate) checkpoint_seconds: Histogram,
}

impl Metrics {
    pub(crate) fn new(app: &str, step_names: &[String], counters: &NodeCounters) -> Metrics {
        let mut registry = Registry::with_prefix("wallaroo");
        let c = counters;
        registry.register(
            "received_messages",
            "Frames accepted from sources",
            c.received.clone(),
        );
        registry.register(
            "emitted_messages",
            "Encoded messages produced for sinks",
            c.emitted.clone(),
        );
        registry.register(
            "dead_letters",
            "Messages sent to the dead letters",
            c.dead_lettered.clone(),
        );
        registry.register(
            "dead_letters_unwritten",
            "Dead letters that could not be written (counted, not kept)",
            c.dead_letters_unwritten.clone(),
        );
        registry.register(
            "instances_replaced",
            "Guest instances replaced after a trap or a timeout",
            c.instances_replaced.clone(),
        );
        registry.register(
            "instances_recycled",
            "Guest instances swapped for fresh ones after their memory grew",
            c.instances_recycled.clone(),
        );
        registry.register(
            "backlog_messages",
            "Messages queued for workers",
            c.backlog.clone(),
        );
        registry.register(
            "checkpoints",
            "Checkpoints committed",
            c.checkpoints.clone(),
        );
        registry.register(
            "state_keys",
            "Keys whose state the workers hold",
            c.state_keys.clone(),
        );
        registry.register(
            "state_bytes",
            "Bytes of the keys and states the workers hold",
            c.state_bytes.clone(),
        );

        let step_messages = Family::<StepLabel, Counter>::default();
        let step_seconds = Family::<StepLabel, Histogram>::new_with_constructor(|| {
            // 10 us .. ~20 s
            Histogram::new(exponential_buckets(1e-5, 2.0, 22))
        });
        registry.register(
            "step_messages",
            "Messages into the fused segment that starts at this step",
            step_messages.clone(),
        );
        registry.register(
            "step_call_seconds",
            "Time of one guest call over a batch of the segment that starts at this step",
            step_seconds.clone(),
        );
        let step_errors = Family::<StepLabel, Counter>::default();
        registry.register(
            "step_errors",
            "User errors (dead-lettered messages) by the step that raised them",
            step_errors.clone(),
        );
        let step_late = Family::<StepLabel, Counter>::default();
        registry.register(
            "step_late_messages",
            "Messages that reached a window step after every window they belong to had fired \
             (its late-data policy decided what became of them), by step",
            step_late.clone(),
        );
        let checkpoint_seconds = Histogram::new(exponential_buckets(1e-4, 2.0, 18));
        registry.register(
            "checkpoint_seconds",
            "Time from a checkpoint's barriers to its commit being durable",
            checkpoint_seconds.clone(),
        );
        let info = Family::<Vec<(String, String)>, Gauge>::default();
        info.get_or_create(&vec![("app".to_string(), app.to_string())])
            .set(1);
        registry.register("app", "The application this node runs", info);
        Metrics {
            registry,
            step_messages,
            step_seconds,
            segments: step_names.iter().map(|_| Default::default()).collect(),
            step_errors,
            step_late,
            late: step_names.iter().map(|_| Default::default()).collect(),
            step_names: step_names.to_vec(),
            checkpoint_seconds,
        }
    }

    /// Counts a batch into the segment starting at `step` and the guest call's time.
    pub(crate) fn segment_call(&self, step: u32, messages: usize, seconds: f64) {
        let Some(cell) = self.segments.get(step as usize) else {
            return;
        };
        let (count, time) = cell.get_or_init(|| {
            let label = StepLabel {
                step: self.step_names[step as usize].clone(),
            };
            (
                self.step_messages.get_or_create(&label).clone(),
                self.step_seconds.get_or_create(&label).clone(),
            )
        });
        count.inc_by(messages as u64);
        time.observe(seconds);
    }

    /// Messages into each segment so far, by the segment's first step (segments that have run).
    pub(crate) fn step_counts(&self) -> Vec<(String, u64)> {
        self.segments
            .iter()
            .zip(&self.step_names)
            .filter_map(|(cell, name)| cell.get().map(|(count, _)| (name.clone(), count.get())))
            .collect()
    }

    /// The label of the step at `step`.
    fn label(&self, step: u32) -> StepLabel {
        let step = self
            .step_names
            .get(step as usize)
            .cloned()
            .unwrap_or_else(|| "<unknown step>".into());
        StepLabel { step }
    }

    pub(crate) fn step_error(&self, step: u32) {
        self.step_errors.get_or_create(&self.label(step)).inc();
    }

    /// Late messages so far, by window step, for the steps that had any.
    pub(crate) fn late_counts(&self) -> Vec<(String, u64)> {
        self.late
            .iter()
            .zip(&self.step_names)
            .map(|(n, name)| (name.clone(), n.load(std::sync::atomic::Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Counts a message that came too late for step `step`'s windows.
    pub(crate) fn step_late(&self, step: u32) {
        if let Some(n) = self.late.get(step as usize) {
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.step_late.get_or_create(&self.label(step)).inc();
    }

    /// The OpenMetrics text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
