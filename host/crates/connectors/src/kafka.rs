//! Kafka sources and sinks (librdkafka, through `rdkafka`).
//!
//! A source reads the partitions of its topic that fall to this node (partition `p` goes to
//! member `p % members`), each through a handle of its own, so each partition keeps its order on
//! one worker. A partition is an acknowledged stream of the source, its id the partition number
//! plus one (stream 0 is no stream) and its positions Kafka offsets: the engine logs each batch with the offset of its first
//! record, so a restart replays what the log holds and resumes reading where the log ends.
//! Without a log (resilience none) the consumer group's committed offsets are where it resumes;
//! with one they are written for monitoring only.
//!
//! A sink produces one record per payload (key, partition and value as the contract lays them
//! out). With exactly-once resilience it writes each checkpoint's output, which the engine
//! releases only once the checkpoint has committed, in one Kafka transaction, and commits with
//! it a marker: the epoch, as the offset of partition 0 of the sink's topic in a consumer group
//! of the sink's own. A restart (with the same transactional id, which fences the old producer
//! and aborts its open transaction) reads the marker back and skips the epochs Kafka already
//! holds, so a `read_committed` consumer sees every output once. Otherwise the producer is
//! idempotent and retries until the broker takes each record: at-least-once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::watch;
use wallaroo_engine::{NotAccepted, SinkBatch, SinkQueue, SourceHandles};

/// How this node takes part in its application's Kafka edges.
#[derive(Debug, Clone, Default)]
pub struct KafkaPlan {
    /// Client properties for every Kafka client of the node, applied after the application's.
    pub properties: Vec<(String, String)>,
    /// This node's place among the nodes that run the application, and their number: it reads
    /// the partitions `p` with `p % members == member`.
    pub member: u32,
    pub members: u32,
    /// Sinks write in transactions, one per checkpoint (exactly-once resilience).
    pub transactional: bool,
    /// What tells this node's sinks apart from other nodes' in transactional ids and markers
    /// (empty for a single node, `.nodeN` in a cluster).
    pub identity_suffix: String,
    /// Names this node's log: a marker written by another log (one since deleted) is not
    /// taken for this one's.
    pub instance: String,
}

/// The name of this node's log for Kafka markers: read from `dir`, or made there the first
/// time. A fresh data directory gets a fresh name.
pub fn instance_id(dir: &Path) -> std::io::Result<String> {
    let path = dir.join("kafka-instance");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(dir)?;
    let id = format!("{:016x}", rand::random::<u64>());
    std::fs::write(&path, &id)?;
    Ok(id)
}

/// [`instance_id`] of `dir` when `spec` has a Kafka sink that writes transactions (empty
/// otherwise: nothing is written to `dir`).
pub fn instance_for(
    spec: &wallaroo_component::AppSpec,
    transactional: bool,
    dir: &Path,
) -> anyhow::Result<String> {
    let kafka_sink = spec
        .sinks
        .iter()
        .any(|s| matches!(s.config, wallaroo_component::SinkConfig::Kafka(_)));
    if !(transactional && kafka_sink) {
        return Ok(String::new());
    }
    instance_id(dir)
        .with_context(|| format!("cannot keep a Kafka instance id in {}", dir.display()))
}

/// Where a Kafka edge reads or writes, for messages: `topic 'T' at BROKERS`.
pub fn describe(topic: &str, brokers: &str) -> String {
    format!("Kafka topic '{topic}' at {brokers}")
}

fn client_config(
    brokers: &str,
    app: &[(String, String)],
    node: &[(String, String)],
    ours: &[(&str, &str)],
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (k, v) in ours {
        config.set(*k, *v);
    }
    for (k, v) in app.iter().chain(node) {
        config.set(k, v);
    }
    config
}

/// How long between attempts while the broker is away, and between warnings about it.
const RETRY_EVERY: Duration = Duration::from_secs(1);
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Says what keeps failing at most every [`WARN_EVERY`], and when it works again.
struct Trouble {
    what: String,
    since: Option<Instant>,
    warned: Option<Instant>,
}

impl Trouble {
    fn new(what: String) -> Self {
        Self {
            what,
            since: None,
            warned: None,
        }
    }

    fn failed(&mut self, e: impl std::fmt::Display) {
        let now = Instant::now();
        self.since.get_or_insert(now);
        if self.warned.is_none_or(|w| now - w >= WARN_EVERY) {
            tracing::warn!("{}: {e}; retrying", self.what);
            self.warned = Some(now);
        }
    }

    fn ok(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::warn!(
                "{}: working again after {} ms",
                self.what,
                since.elapsed().as_millis()
            );
        }
        self.warned = None;
    }
}

/// A Kafka source, made (so its properties are checked) before it runs.
pub struct KafkaSource {
    what: String,
    topic: String,
    config: ClientConfig,
    consumer: StreamConsumer<Quiet>,
    plan: KafkaPlan,
    batch_size: usize,
}

impl KafkaSource {
    pub fn new(
        app: &str,
        name: &str,
        config: &wallaroo_component::KafkaSource,
        plan: &KafkaPlan,
        batch_size: usize,
    ) -> anyhow::Result<Self> {
        let what = format!(
            "source '{name}' ({})",
            describe(&config.topic, &config.brokers)
        );
        let group = format!("wallaroo.{app}.{name}");
        let client = client_config(
            &config.brokers,
            &config.properties,
            &plan.properties,
            &[
                ("group.id", &group),
                ("auto.offset.reset", "earliest"),
                ("isolation.level", "read_committed"),
                ("enable.partition.eof", "false"),
            ],
        );
        let consumer = client
            .create_with_context::<_, StreamConsumer<Quiet>>(Quiet)
            .with_context(|| format!("{what}: cannot make a Kafka consumer"))?;
        Ok(Self {
            what,
            topic: config.topic.clone(),
            config: client,
            consumer,
            plan: plan.clone(),
            batch_size: batch_size.max(1),
        })
    }

    /// Reads until `stop` turns true. Every batch handed over is logged (with a log) before
    /// the next is read.
    pub async fn run(self, handles: SourceHandles, mut stop: watch::Receiver<bool>) {
        let mut trouble = Trouble::new(self.what.clone());
        // The partitions, once the broker tells how many the topic has.
        let partitions = loop {
            match self.partition_count().await {
                Ok(n) => break n,
                Err(e) => trouble.failed(format!("{e:#}")),
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(RETRY_EVERY) => {}
            }
        };
        trouble.ok();
        let members = self.plan.members.max(1);
        let mine: Vec<i32> = (0..partitions)
            .filter(|p| (*p as u32) % members == self.plan.member)
            .collect();
        if mine.is_empty() {
            tracing::info!(
                "{}: {partitions} partitions, none of them for this node",
                self.what
            );
            return;
        }
        let mut feeds = HashMap::new();
        let mut assignment = TopicPartitionList::new();
        for &p in &mine {
            let handle = handles.next();
            // With a log, where it ends; without one, where the consumer group got to.
            let offset = match handle.stream_position(stream_of(p)) {
                Some(next) => Offset::Offset(next as i64),
                None => Offset::Stored,
            };
            if let Err(e) = assignment.add_partition_offset(&self.topic, p, offset) {
                tracing::error!("{}: cannot assign partition {p}: {e}", self.what);
                return;
            }
            feeds.insert(p, handle);
        }
        if let Err(e) = self.consumer.assign(&assignment) {
            tracing::error!("{}: cannot assign its partitions: {e}", self.what);
            return;
        }
        tracing::info!("{}: reading partitions {mine:?} of {partitions}", self.what);
        // Open for as long as it reads: a Kafka topic never ends.
        let any = feeds.values().next().expect("a partition").clone();
        any.connection(true);
        let mut records: Vec<(i32, i64, Vec<u8>)> = Vec::with_capacity(self.batch_size);
        'read: loop {
            records.clear();
            let first = tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                r = self.consumer.recv() => r.map(|m| {
                    (m.partition(), m.offset(), m.payload().unwrap_or_default().to_vec())
                }),
            };
            match first {
                Ok(r) => records.push(r),
                Err(e) => {
                    trouble.failed(e);
                    continue;
                }
            }
            trouble.ok();
            // Whatever else is ready, without waiting.
            while records.len() < self.batch_size {
                match tokio::time::timeout(Duration::ZERO, self.consumer.recv()).await {
                    Ok(Ok(m)) => records.push((
                        m.partition(),
                        m.offset(),
                        m.payload().unwrap_or_default().to_vec(),
                    )),
                    _ => break,
                }
            }
            for run in contiguous_runs(&mut records) {
                let Some(handle) = feeds.get(&run.partition) else {
                    continue;
                };
                let partition = run.partition;
                loop {
                    match handle
                        .send(
                            run.values.clone(),
                            Some((stream_of(partition), run.first as u64)),
                        )
                        .await
                    {
                        Ok(_) => break,
                        Err(NotAccepted::Stopping) => break 'read,
                        // The log cannot keep it (a full disk): hold on to it and try again.
                        Err(e @ NotAccepted::LogFailed) => {
                            trouble.failed(format!("partition {partition}: {e}"));
                            tokio::select! {
                                _ = stop.wait_for(|s| *s) => break 'read,
                                _ = tokio::time::sleep(RETRY_EVERY) => {}
                            }
                        }
                    }
                }
            }
        }
        any.connection(false);
    }

    async fn partition_count(&self) -> anyhow::Result<i32> {
        let config = self.config.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || partition_count(&config, &topic)).await?
    }
}

/// The acknowledged stream partition `p` is to the engine (stream 0 means none).
fn stream_of(partition: i32) -> u64 {
    partition as u64 + 1
}

/// The partitions of `topic`, as its broker says; a missing topic is an error naming it.
fn partition_count(config: &ClientConfig, topic: &str) -> anyhow::Result<i32> {
    let client: BaseConsumer<Quiet> = config.create_with_context(Quiet)?;
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| anyhow::anyhow!("cannot reach the brokers: {e}"))?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        anyhow::bail!("the brokers do not know topic '{topic}'");
    };
    if let Some(e) = t.error() {
        let code = RDKafkaErrorCode::from(e);
        anyhow::bail!("topic '{topic}': {code}");
    }
    if t.partitions().is_empty() {
        anyhow::bail!("topic '{topic}' has no partitions");
    }
    Ok(t.partitions().len() as i32)
}

/// Records of one partition at consecutive offsets.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    partition: i32,
    first: i64,
    values: Vec<Vec<u8>>,
}

/// `records` (partition, offset, value) cut into runs of one partition at consecutive offsets,
/// in order: each becomes one batch whose position is its first offset, so the engine's next
/// position for the partition (first + count) is the offset after the run's last record.
fn contiguous_runs(records: &mut Vec<(i32, i64, Vec<u8>)>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let mut next: HashMap<i32, (usize, i64)> = HashMap::new();
    for (partition, offset, value) in records.drain(..) {
        match next.get_mut(&partition) {
            Some((run, expected)) if *expected == offset => {
                runs[*run].values.push(value);
                *expected = offset + 1;
            }
            _ => {
                next.insert(partition, (runs.len(), offset + 1));
                runs.push(Run {
                    partition,
                    first: offset,
                    values: vec![value],
                });
            }
        }
    }
    runs
}

/// One record of a Kafka sink, as the contract lays it out in an emitted payload.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub key: Option<&'a [u8]>,
    pub partition: Option<i32>,
    pub value: &'a [u8],
}

const NONE: u32 = u32::MAX;

/// Takes a Kafka sink's payload apart: `key-len u32, key, partition u32, value`.
pub fn parse_record(payload: &[u8]) -> Result<Record<'_>, String> {
    let u32_at = |at: usize| -> Option<u32> {
        payload
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let key_len = u32_at(0).ok_or("shorter than its key length")?;
    let (key, at) = match key_len {
        NONE => (None, 4),
        n => {
            let end = 4usize
                .checked_add(n as usize)
                .filter(|&end| end <= payload.len())
                .ok_or_else(|| format!("key of {n} bytes is longer than the payload"))?;
            (Some(&payload[4..end]), end)
        }
    };
    let partition = u32_at(at).ok_or("ends before its partition")?;
    let partition = match partition {
        NONE => None,
        p => Some(i32::try_from(p).map_err(|_| format!("partition {p} is out of range"))?),
    };
    Ok(Record {
        key,
        partition,
        value: &payload[at + 4..],
    })
}

/// Lays a record out as a Kafka sink's payload (the SDKs' side of [`parse_record`]).
pub fn encode_record(key: Option<&[u8]>, partition: Option<i32>, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + key.map_or(0, <[u8]>::len) + value.len());
    match key {
        Some(k) => {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
        }
        None => out.extend_from_slice(&NONE.to_le_bytes()),
    }
    out.extend_from_slice(&partition.map_or(NONE, |p| p as u32).to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// Counts deliveries that failed for good (the producer retries until then).
struct Deliveries {
    what: String,
    failed: AtomicU64,
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        Quiet.log(level, fac, message)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        Quiet.error(error, reason)
    }
}

/// librdkafka's own logs and errors at debug level: a broker away makes it log every failed
/// connection of every client, and the edges say once every 10 s what fails and for how long.
struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(?level, "librdkafka {fac}: {message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!("librdkafka: {error}: {reason}");
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            let n = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(
                "{}: a record was not delivered ({n} so far): {e}",
                self.what
            );
        }
    }
}

type Writer = ThreadedProducer<Deliveries>;

/// A Kafka sink's settings, for the thread that writes it.
pub struct KafkaSink {
    what: String,
    topic: String,
    brokers: String,
    app_properties: Vec<(String, String)>,
    plan: KafkaPlan,
    /// The transactional id and the marker's consumer group.
    identity: String,
}

impl KafkaSink {
    /// Checks that a producer can be made of the sink's properties.
    pub fn new(
        app: &str,
        name: &str,
        config: &wallaroo_component::KafkaSink,
        plan: &KafkaPlan,
    ) -> anyhow::Result<Self> {
        let sink = Self {
            what: format!(
                "sink '{name}' ({})",
                describe(&config.topic, &config.brokers)
            ),
            topic: config.topic.clone(),
            brokers: config.brokers.clone(),
            app_properties: config.properties.clone(),
            plan: plan.clone(),
            identity: format!("wallaroo.{app}.{name}{}", plan.identity_suffix),
        };
        drop(sink.producer()?);
        Ok(sink)
    }

    fn producer(&self) -> anyhow::Result<Writer> {
        let mut ours = vec![
            ("enable.idempotence", "true"),
            // Retry until the broker takes it: nothing accepted is dropped.
            ("message.timeout.ms", "0"),
            ("linger.ms", "5"),
        ];
        if self.plan.transactional {
            ours.push(("transactional.id", &self.identity));
            ours.push(("transaction.timeout.ms", "60000"));
        }
        client_config(
            &self.brokers,
            &self.app_properties,
            &self.plan.properties,
            &ours,
        )
        .create_with_context(Deliveries {
            what: self.what.clone(),
            failed: AtomicU64::new(0),
        })
        .with_context(|| format!("{}: cannot make a Kafka producer", self.what))
    }

    /// Writes every batch of `queue` until it closes (the node has drained), then waits until
    /// the broker has everything. Runs on a thread of its own (the Kafka calls block); dropping
    /// the returned future stops it at the next record.
    pub async fn run(self, queue: SinkQueue) -> anyhow::Result<()> {
        let cancel = Arc::new(AtomicBool::new(false));
        struct CancelOnDrop(Arc<AtomicBool>);
        impl Drop for CancelOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _guard = CancelOnDrop(cancel.clone());
        tokio::task::spawn_blocking(move || match self.plan.transactional {
            true => self.write_transactions(&queue, &cancel),
            false => self.write_plain(&queue, &cancel),
        })
        .await?
    }

    fn write_plain(&self, queue: &SinkQueue, cancel: &AtomicBool) -> anyhow::Result<()> {
        let producer = self.producer()?;
        let mut trouble = Trouble::new(self.what.clone());
        while let Some(batch) = next_batch(queue, cancel) {
            if !self.produce_all(&producer, &batch.frames, cancel, &mut trouble) {
                return Ok(());
            }
            if batch.epoch > 0 {
                self.flush(&producer, cancel, &mut trouble);
                queue.written(batch.epoch);
            }
        }
        self.flush(&producer, cancel, &mut trouble);
        Ok(())
    }

    /// Hands every payload to the producer in order, as [`KafkaSink::produce`] does one.
    fn produce_all(
        &self,
        producer: &Writer,
        payloads: &[Vec<u8>],
        cancel: &AtomicBool,
        trouble: &mut Trouble,
    ) -> bool {
        payloads
            .iter()
            .all(|payload| self.produce(producer, payload, cancel, trouble))
    }

    /// Hands one payload to the producer, waiting while its queue is full. False once cancelled.
    fn produce(
        &self,
        producer: &Writer,
        payload: &[u8],
        cancel: &AtomicBool,
        trouble: &mut Trouble,
    ) -> bool {
        let record = match parse_record(payload) {
            Ok(r) => r,
            Err(e) => {
                // Not from an SDK of this contract: written as a value without a key rather
                // than dropped.
                tracing::error!(
                    "{}: a payload is not a Kafka record ({e}); written as the value",
                    self.what
                );
                Record {
                    key: None,
                    partition: None,
                    value: payload,
                }
            }
        };
        let mut base = BaseRecord::to(&self.topic).payload(record.value);
        if let Some(k) = record.key {
            base = base.key(k);
        }
        if let Some(p) = record.partition {
            base = base.partition(p);
        }
        loop {
            match producer.send(base) {
                Ok(()) => return true,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    base = back;
                    if cancel.load(Ordering::SeqCst) {
                        return false;
                    }
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, back)) => {
                    trouble.failed(format!("producing a record failed: {e}"));
                    base = back;
                    if cancel.load(Ordering::SeqCst) {
                        return false;
                    }
                    std::thread::sleep(RETRY_EVERY);
                }
            }
        }
    }

    /// Waits until the broker has taken everything produced, saying so while it waits.
    fn flush(&self, producer: &Writer, cancel: &AtomicBool, trouble: &mut Trouble) {
        while !cancel.load(Ordering::SeqCst) {
            match producer.flush(Duration::from_secs(1)) {
                Ok(()) => {
                    trouble.ok();
                    return;
                }
                Err(e) => trouble.failed(format!(
                    "{} records not yet taken by the broker ({e})",
                    producer.in_flight_count()
                )),
            }
        }
    }

    fn write_transactions(&self, queue: &SinkQueue, cancel: &AtomicBool) -> anyhow::Result<()> {
        let mut trouble = Trouble::new(self.what.clone());
        let Some(mut txn) = self.begin(cancel, &mut trouble) else {
            return Ok(());
        };
        while let Some(batch) = next_batch(queue, cancel) {
            if batch.epoch == 0 {
                // Output not held for a checkpoint (a dead-letter or a tool): no transaction.
                if !self.produce_all(&txn.producer, &batch.frames, cancel, &mut trouble) {
                    return Ok(());
                }
                continue;
            }
            loop {
                if batch.epoch <= txn.committed || batch.frames.is_empty() {
                    break;
                }
                match self.commit_epoch(&txn, &batch, cancel, &mut trouble) {
                    Ok(()) => {
                        trouble.ok();
                        txn.committed = batch.epoch;
                        break;
                    }
                    Err(e) if cancel.load(Ordering::SeqCst) => {
                        tracing::debug!("{}: stopped in epoch {}: {e}", self.what, batch.epoch);
                        return Ok(());
                    }
                    Err(e) => {
                        trouble.failed(format!(
                            "the transaction of checkpoint {} failed: {e}",
                            batch.epoch
                        ));
                        if e.txn_requires_abort() {
                            let _ = txn.producer.abort_transaction(Duration::from_secs(30));
                        } else {
                            // Fatal, or not known to have failed: start afresh; the marker
                            // says whether the commit got through.
                            drop(txn);
                            std::thread::sleep(RETRY_EVERY);
                            txn = match self.begin(cancel, &mut trouble) {
                                Some(t) => t,
                                None => return Ok(()),
                            };
                        }
                    }
                }
            }
            queue.written(batch.epoch);
        }
        Ok(())
    }

    /// A transactional producer (fencing any earlier one of this sink) and the marker it left.
    fn begin(&self, cancel: &AtomicBool, trouble: &mut Trouble) -> Option<Transactions> {
        while !cancel.load(Ordering::SeqCst) {
            match self.try_begin() {
                Ok(t) => {
                    tracing::info!(
                        "{}: transactional id '{}', checkpoint {} already written",
                        self.what,
                        self.identity,
                        t.committed
                    );
                    return Some(t);
                }
                Err(e) => {
                    trouble.failed(format!("{e:#}"));
                    std::thread::sleep(RETRY_EVERY);
                }
            }
        }
        None
    }

    fn try_begin(&self) -> anyhow::Result<Transactions> {
        let producer = self.producer()?;
        producer
            .init_transactions(Duration::from_secs(30))
            .context("starting transactions")?;
        let marker: BaseConsumer<Quiet> = client_config(
            &self.brokers,
            &self.app_properties,
            &self.plan.properties,
            &[
                ("group.id", &self.identity),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
            ],
        )
        .create_with_context(Quiet)
        .context("making the marker's consumer")?;
        let group = marker
            .group_metadata()
            .context("the marker's consumer has no group")?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, 0);
        let read = marker
            .committed_offsets(tpl, Duration::from_secs(30))
            .context("reading the marker")?;
        let committed = read
            .find_partition(&self.topic, 0)
            .and_then(|e| match (e.offset(), e.metadata()) {
                (Offset::Offset(n), m) if m == self.plan.instance => Some(n.max(0) as u64),
                (Offset::Offset(n), m) => {
                    tracing::info!(
                        "{}: the marker (checkpoint {n}) was left by another log ('{m}'); \
                         this log ('{}') starts afresh",
                        self.what,
                        self.plan.instance
                    );
                    None
                }
                _ => None,
            })
            .unwrap_or(0);
        Ok(Transactions {
            producer,
            group,
            committed,
        })
    }

    /// One checkpoint's output and its marker, in one transaction.
    fn commit_epoch(
        &self,
        txn: &Transactions,
        batch: &SinkBatch,
        cancel: &AtomicBool,
        trouble: &mut Trouble,
    ) -> Result<(), TxnError> {
        txn.producer.begin_transaction()?;
        if !self.produce_all(&txn.producer, &batch.frames, cancel, trouble) {
            return Err(TxnError::Cancelled);
        }
        let mut marker = TopicPartitionList::new();
        marker
            .add_partition_offset(&self.topic, 0, Offset::Offset(batch.epoch as i64))
            .map_err(TxnError::Kafka)?;
        if let Some(mut e) = marker.find_partition(&self.topic, 0) {
            e.set_metadata(self.plan.instance.clone());
        }
        txn.producer
            .send_offsets_to_transaction(&marker, &txn.group, Duration::from_secs(30))?;
        // A commit that times out may be tried again; anything else is answered by the caller.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match txn.producer.commit_transaction(Duration::from_secs(30)) {
                Ok(()) => return Ok(()),
                Err(KafkaError::Transaction(e))
                    if e.is_retriable() && Instant::now() < deadline =>
                {
                    if cancel.load(Ordering::SeqCst) {
                        return Err(TxnError::Cancelled);
                    }
                    trouble.failed(format!("committing checkpoint {}: {e}", batch.epoch));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

struct Transactions {
    producer: Writer,
    group: ConsumerGroupMetadata,
    /// The last checkpoint whose output Kafka holds.
    committed: u64,
}

#[derive(Debug, thiserror::Error)]
enum TxnError {
    #[error("{0}")]
    Kafka(#[from] KafkaError),
    #[error("stopped")]
    Cancelled,
}

impl TxnError {
    fn txn_requires_abort(&self) -> bool {
        match self {
            TxnError::Kafka(KafkaError::Transaction(e)) => e.txn_requires_abort(),
            _ => false,
        }
    }
}

/// The queue's next batch; None once it has closed or the sink is cancelled.
fn next_batch(queue: &SinkQueue, cancel: &AtomicBool) -> Option<SinkBatch> {
    loop {
        if cancel.load(Ordering::SeqCst) {
            return None;
        }
        match queue.batches.recv_timeout(Duration::from_millis(200)) {
            Ok(batch) => return Some(batch),
            Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_laid_out_as_the_contract_says_and_taken_apart_again() {
        let keyed = encode_record(Some(b"word"), None, b"word 3");
        assert_eq!(&keyed[..4], &4u32.to_le_bytes());
        assert_eq!(
            parse_record(&keyed).unwrap(),
            Record {
                key: Some(b"word"),
                partition: None,
                value: b"word 3"
            }
        );
        let plain = encode_record(None, Some(2), b"");
        assert_eq!(plain.len(), 8);
        assert_eq!(
            parse_record(&plain).unwrap(),
            Record {
                key: None,
                partition: Some(2),
                value: b""
            }
        );
        let empty_key = encode_record(Some(b""), None, b"v");
        assert_eq!(parse_record(&empty_key).unwrap().key, Some(&b""[..]));
    }

    #[test]
    fn a_payload_that_is_not_a_record_says_what_is_wrong() {
        assert!(parse_record(b"ab").unwrap_err().contains("key length"));
        let mut long_key = 100u32.to_le_bytes().to_vec();
        long_key.extend_from_slice(b"short");
        assert!(parse_record(&long_key).unwrap_err().contains("100 bytes"));
        let no_partition = u32::MAX.to_le_bytes();
        assert!(
            parse_record(&no_partition)
                .unwrap_err()
                .contains("partition")
        );
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(&(i32::MAX as u32 + 1).to_le_bytes());
        assert!(parse_record(&huge).unwrap_err().contains("out of range"));
    }

    #[test]
    fn runs_break_where_offsets_jump_and_keep_each_partitions_order() {
        let mut records = vec![
            (0, 5, b"a".to_vec()),
            (1, 9, b"b".to_vec()),
            (0, 6, b"c".to_vec()),
            // A transaction marker took offset 7.
            (0, 8, b"d".to_vec()),
            (1, 10, b"e".to_vec()),
        ];
        let runs = contiguous_runs(&mut records);
        assert_eq!(
            runs,
            [
                (0, 5, vec![b"a".to_vec(), b"c".to_vec()]),
                (1, 9, vec![b"b".to_vec(), b"e".to_vec()]),
                (0, 8, vec![b"d".to_vec()]),
            ]
            .map(|(partition, first, values)| Run {
                partition,
                first,
                values
            })
        );
    }

    #[test]
    fn an_instance_id_is_made_once_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let a = instance_id(dir.path()).unwrap();
        assert_eq!(instance_id(dir.path()).unwrap(), a);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(instance_id(other.path()).unwrap(), a);
    }
}
