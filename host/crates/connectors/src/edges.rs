//! A node's edges as its application declares them: a framed TCP source or a generator per
//! source, a TCP sink per sink. `wallaroo run` and a cluster node start them here, and stop them
//! in the same order: sources first (they hand over what they accepted), sinks once the node has
//! drained (the node closing their queues ends them).

use std::fmt;
use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinSet;
use wallaroo_component::{SinkConfig, SourceConfig};
use wallaroo_engine::Node;

use crate::kafka::{self, KafkaPlan, KafkaSink, KafkaSource};
use crate::{SourceOptions, TcpSource, run_generator, run_tcp_sink};

/// Where a node's TCP sources listen.
#[derive(Debug, Clone)]
pub enum SourceAddress {
    /// On the host and port the application names.
    AsNamed,
    /// On `host`, at the application's port plus `port_offset` (a cluster node, whose sources
    /// listen on its own address; several nodes may share one host).
    Moved { host: String, port_offset: u16 },
}

/// How a node's edges are started.
#[derive(Debug, Clone)]
pub struct EdgePlan {
    pub sources: SourceOptions,
    pub source_address: SourceAddress,
    /// Whether generator sources run here (in a cluster, on one node only).
    pub generators: bool,
    /// With tagged sink framing: what follows `APP/SINK` in each sink's tagged stream identity
    /// (empty for a single node, `/nodeN` in a cluster). None: frames go out plain.
    pub tagged_stream: Option<String>,
    /// How Kafka sources and sinks run here.
    pub kafka: KafkaPlan,
}

/// One edge that was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edge {
    Listening { source: String, addr: SocketAddr },
    Generating { source: String },
    Reading { source: String, from: String },
    Writing { sink: String, addr: String },
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Edge::Listening { source, addr } => write!(f, "source '{source}' listening on {addr}"),
            Edge::Generating { source } => write!(f, "source '{source}' generating"),
            Edge::Reading { source, from } => write!(f, "source '{source}' reading {from}"),
            Edge::Writing { sink, addr } => write!(f, "sink '{sink}' writing to {addr}"),
        }
    }
}

/// The running edges of a node.
pub struct Edges {
    /// What was started, sources first, in the application's order.
    pub started: Vec<Edge>,
    stop: watch::Sender<bool>,
    sources: JoinSet<()>,
    sinks: JoinSet<anyhow::Result<()>>,
}

impl Edges {
    /// Binds every TCP source, starts the generators `plan` allows and a writer per sink. A
    /// source that cannot bind stops the start; what was already started is dropped with the
    /// error.
    pub async fn start(node: &mut Node, plan: &EdgePlan) -> anyhow::Result<Edges> {
        let spec = node.spec().clone();
        let (stop, stop_rx) = watch::channel(false);
        let mut started = Vec::new();
        let mut sources = JoinSet::new();
        // Every source is known before any runs: a generator that runs out at once must not
        // make the input look over while a TCP source is still to listen.
        for (i, source) in spec.sources.iter().enumerate() {
            match &source.config {
                SourceConfig::Tcp(_) => node.source(i).listening(),
                SourceConfig::Generator if plan.generators => node.source(i).generating(),
                SourceConfig::Generator => {}
                SourceConfig::Kafka(_) => node.source(i).listening(),
            }
        }
        for (i, source) in spec.sources.iter().enumerate() {
            let handles = node.source(i);
            match &source.config {
                SourceConfig::Tcp(tcp) => {
                    let (host, port) = match &plan.source_address {
                        SourceAddress::AsNamed => (tcp.host.clone(), tcp.port.clone()),
                        SourceAddress::Moved { host, port_offset } => {
                            let port: u16 = tcp.port.parse().with_context(|| {
                                format!("source '{}' has port '{}'", source.name, tcp.port)
                            })?;
                            let port = port
                                .checked_add(*port_offset)
                                .context("source port plus --source-port-offset is over 65535")?;
                            (host.clone(), port.to_string())
                        }
                    };
                    let listener = TcpSource::bind(
                        &source.name,
                        &host,
                        &port,
                        tcp.framing.into(),
                        plan.sources.clone(),
                    )
                    .await?;
                    started.push(Edge::Listening {
                        source: source.name.clone(),
                        addr: listener.local_addr()?,
                    });
                    sources.spawn(listener.run(move || handles.next(), stop_rx.clone()));
                }
                SourceConfig::Generator if plan.generators => {
                    started.push(Edge::Generating {
                        source: source.name.clone(),
                    });
                    sources.spawn(run_generator(
                        handles.next(),
                        plan.sources.batch_size,
                        stop_rx.clone(),
                    ));
                }
                SourceConfig::Generator => {}
                SourceConfig::Kafka(config) => {
                    let reader = KafkaSource::new(
                        &spec.name,
                        &source.name,
                        config,
                        &plan.kafka,
                        plan.sources.batch_size,
                    )?;
                    started.push(Edge::Reading {
                        source: source.name.clone(),
                        from: kafka::describe(&config.topic, &config.brokers),
                    });
                    sources.spawn(reader.run(handles, stop_rx.clone()));
                }
            }
        }
        let mut sinks = JoinSet::new();
        for (i, sink) in spec.sinks.iter().enumerate() {
            let tcp = match &sink.config {
                SinkConfig::Tcp(tcp) => tcp,
                SinkConfig::Kafka(config) => {
                    let writer = KafkaSink::new(&spec.name, &sink.name, config, &plan.kafka)?;
                    started.push(Edge::Writing {
                        sink: sink.name.clone(),
                        addr: kafka::describe(&config.topic, &config.brokers),
                    });
                    sinks.spawn(writer.run(node.take_sink(i)));
                    continue;
                }
            };
            let addr = format!("{}:{}", tcp.host, tcp.port);
            let identity = plan
                .tagged_stream
                .as_ref()
                .map(|suffix| format!("{}/{}{suffix}", spec.name, sink.name));
            started.push(Edge::Writing {
                sink: sink.name.clone(),
                addr: addr.clone(),
            });
            sinks.spawn(run_tcp_sink(
                sink.name.clone(),
                addr,
                node.take_sink(i),
                identity,
            ));
        }
        Ok(Edges {
            started,
            stop,
            sources,
            sinks,
        })
    }

    /// Stops taking input; returns once every source has handed over what it accepted.
    pub async fn stop_sources(&mut self) {
        let _ = self.stop.send(true);
        while self.sources.join_next().await.is_some() {}
    }

    /// Stops the sources now, dropping what they hold (a log replays it).
    pub fn abort_sources(&mut self) {
        let _ = self.stop.send(true);
        self.sources.abort_all();
    }

    /// Stops the sources now, as [`Edges::abort_sources`], and returns once they are gone:
    /// their ports are free to bind again.
    pub async fn abort_sources_and_wait(&mut self) {
        self.abort_sources();
        while self.sources.join_next().await.is_some() {}
    }

    /// Stops the sinks now: nothing more is written.
    pub fn abort_sinks(&mut self) {
        self.sinks.abort_all();
    }

    /// Waits until every sink has written and flushed its queue, which ends once the node has
    /// shut down; logs a sink that failed.
    pub async fn finish_sinks(&mut self) {
        while let Some(done) = self.sinks.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::error!("{e:#}");
            }
        }
    }
}
