//! `wallaroo kafka`: produce a file's lines into a topic, read a topic out, make a topic. What
//! a demo or a test needs beside the broker, with the same client the nodes use.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: KafkaCommand,
}

#[derive(clap::Args, Debug, Clone)]
struct Client {
    /// Bootstrap brokers, `host:port` separated by commas.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// A client property (librdkafka's names); repeat for more.
    #[arg(long = "property", value_name = "KEY=VALUE", value_parser = crate::options::key_value)]
    properties: Vec<(String, String)>,
}

impl Client {
    fn config(&self) -> anyhow::Result<ClientConfig> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        Ok(config)
    }
}

#[derive(clap::Subcommand, Debug)]
enum KafkaCommand {
    /// Produce each line of a file (or of standard input) as one record.
    Produce {
        #[command(flatten)]
        client: Client,
        #[arg(long)]
        topic: String,
        /// The file; `-` or none reads standard input.
        file: Option<std::path::PathBuf>,
        /// Key each record by its line's first word (so one word's records share a partition).
        #[arg(long)]
        key_by_first_word: bool,
        /// Spread the records over time at about this many per second [default: as fast as
        /// the broker takes them].
        #[arg(long)]
        lines_per_second: Option<f64>,
    },
    /// Write a topic's records, one value per line, as a `read_committed` consumer sees them:
    /// every partition from its beginning.
    Consume {
        #[command(flatten)]
        client: Client,
        #[arg(long)]
        topic: String,
        /// Stop after this many records.
        #[arg(long)]
        count: Option<u64>,
        /// Stop once nothing new has come for this many seconds.
        #[arg(long)]
        idle: Option<f64>,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
        /// See records of transactions not (yet) committed too.
        #[arg(long)]
        read_uncommitted: bool,
    },
    /// Make a topic (nothing to do when it exists).
    CreateTopic {
        #[command(flatten)]
        client: Client,
        topic: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
    },
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    io.block_on(async move {
        match args.command {
            KafkaCommand::Produce {
                client,
                topic,
                file,
                key_by_first_word,
                lines_per_second,
            } => produce(&client, &topic, file, key_by_first_word, lines_per_second).await,
            KafkaCommand::Consume {
                client,
                topic,
                count,
                idle,
                output,
                read_uncommitted,
            } => consume(&client, &topic, count, idle, output, read_uncommitted).await,
            KafkaCommand::CreateTopic {
                client,
                topic,
                partitions,
            } => create_topic(&client, &topic, partitions).await,
        }
    })
}

async fn produce(
    client: &Client,
    topic: &str,
    file: Option<std::path::PathBuf>,
    key_by_first_word: bool,
    lines_per_second: Option<f64>,
) -> anyhow::Result<()> {
    let producer: FutureProducer = client
        .config()?
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .context("cannot make a Kafka producer")?;
    let input: Box<dyn BufRead> = match &file {
        Some(path) if path.as_os_str() != "-" => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
        _ => Box::new(std::io::stdin().lock()),
    };
    let mut pending = std::collections::VecDeque::new();
    let mut n = 0u64;
    let started = tokio::time::Instant::now();
    for line in input.lines() {
        let line = line.context("reading the input")?;
        if let Some(rate) = lines_per_second.filter(|r| *r > 0.0) {
            tokio::time::sleep_until(started + Duration::from_secs_f64(n as f64 / rate)).await;
        }
        let key =
            key_by_first_word.then(|| line.split_whitespace().next().unwrap_or("").to_string());
        let mut record = FutureRecord::to(topic).payload(line.as_bytes());
        if let Some(k) = &key {
            record = record.key(k.as_bytes());
        }
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| anyhow::anyhow!("producing to topic '{topic}': {e}"))?;
        pending.push_back(delivery);
        n += 1;
        // A bounded number in flight: a large file does not sit in memory.
        if pending.len() >= 10_000 {
            wait(pending.pop_front().expect("one"), topic).await?;
        }
    }
    for delivery in pending {
        wait(delivery, topic).await?;
    }
    producer
        .flush(Timeout::After(Duration::from_secs(30)))
        .with_context(|| format!("flushing to topic '{topic}' at {}", client.brokers))?;
    eprintln!(
        "produced {n} records to topic '{topic}' at {}",
        client.brokers
    );
    Ok(())
}

async fn wait(delivery: rdkafka::producer::DeliveryFuture, topic: &str) -> anyhow::Result<()> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => anyhow::bail!("a record to topic '{topic}' was not delivered: {e}"),
        Err(_) => anyhow::bail!("the producer went away before topic '{topic}' took a record"),
    }
}

async fn consume(
    client: &Client,
    topic: &str,
    count: Option<u64>,
    idle: Option<f64>,
    output: Option<std::path::PathBuf>,
    read_uncommitted: bool,
) -> anyhow::Result<()> {
    let config = client
        .config()?
        .set(
            "group.id",
            format!("wallaroo-kafka-consume-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set(
            "isolation.level",
            if read_uncommitted {
                "read_uncommitted"
            } else {
                "read_committed"
            },
        )
        .clone();
    let consumer: StreamConsumer = config.create().context("cannot make a Kafka consumer")?;
    let partitions = {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("cannot reach the brokers at {}", client.brokers))?;
        let t = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .with_context(|| {
                format!("the brokers at {} have no topic '{topic}'", client.brokers)
            })?;
        t.partitions().len() as i32
    };
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut out: Box<dyn Write> = match &output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut n = 0u64;
    while count.is_none_or(|c| n < c) {
        let next = consumer.recv();
        let message = match idle {
            Some(secs) => match tokio::time::timeout(Duration::from_secs_f64(secs), next).await {
                Ok(m) => m,
                Err(_) => break,
            },
            None => next.await,
        };
        let message = match message {
            Ok(m) => m,
            // The client reconnects by itself (a broker away, say): say so and read on.
            Err(e) => {
                eprintln!("reading topic '{topic}': {e}; retrying");
                continue;
            }
        };
        out.write_all(message.payload().unwrap_or_default())?;
        out.write_all(b"\n")?;
        n += 1;
        // Whole lines as they come, so whoever follows the file sees them.
        out.flush()?;
    }
    out.flush()?;
    eprintln!("read {n} records of topic '{topic}'");
    Ok(())
}

async fn create_topic(client: &Client, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client
        .config()?
        .create()
        .context("cannot make a Kafka admin client")?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .with_context(|| format!("cannot reach the brokers at {}", client.brokers))?;
    for result in results {
        match result {
            Ok(_) => eprintln!("created topic '{topic}' with {partitions} partitions"),
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                eprintln!("topic '{topic}' exists")
            }
            Err((_, e)) => anyhow::bail!("cannot create topic '{topic}': {e}"),
        }
    }
    Ok(())
}
