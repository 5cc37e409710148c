//! The host options more than one command takes, declared once: [`HostOptions`] (how a node
//! runs the application: `run` and `deploy`) and [`LocalOptions`] (what one machine keeps:
//! `run` and `node`). They become [`Settings`] here and nowhere else.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use wallaroo_connectors::{Settings, SinkFraming};
use wallaroo_engine::Resilience;

#[derive(clap::Args, Debug, Clone)]
pub struct HostOptions {
    /// Worker threads, each with its own instance of the application [default: CPU cores].
    #[arg(long)]
    pub workers: Option<usize>,
    /// What a crash may cost: none (fastest; state and in-flight input are lost),
    /// at-least-once (input logged, state checkpointed; output after the last checkpoint is
    /// repeated), exactly-once (output released only after its checkpoint commits).
    #[arg(long, default_value_t = Resilience::None,
          value_parser = one_of(&Resilience::ALL, Resilience::name))]
    pub resilience: Resilience,
    /// Time between checkpoints, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub checkpoint_interval: u64,
    /// How sinks frame output: plain (the encoder's bytes as they are) or tagged (each frame
    /// with its (epoch, sequence), so `wallaroo receive` drops repeats: exactly-once output).
    #[arg(long, default_value_t = SinkFraming::Plain,
          value_parser = one_of(&SinkFraming::ALL, SinkFraming::name))]
    pub sink_framing: SinkFraming,
    /// Memory each instance may use, in MiB.
    #[arg(long, default_value_t = 512)]
    pub max_memory: usize,
    /// Time one call into the application may take, in milliseconds, before the instance is
    /// stopped and replaced.
    #[arg(long, default_value_t = 10_000)]
    pub call_timeout: u64,
    /// Largest frame a source accepts, in bytes; of a larger frame the first 64 KiB go to the
    /// dead letters and the rest is dropped.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_frame_size: u64,
    /// Disk the dead letters may take, in bytes, all files together; past half of it the
    /// files rotate and the oldest entries go.
    #[arg(long, default_value_t = wallaroo_engine::DEFAULT_DEAD_LETTER_MAX_BYTES)]
    pub dead_letter_max_bytes: u64,
    /// Also write a copy of every late message (one that reached a window step after every
    /// window it belongs to had fired) to the dead letters; they are counted either way.
    #[arg(long)]
    pub dead_letter_late: bool,
    /// Finish once every source's stream has ended (each acknowledged sender ended its stream,
    /// `wallaroo send --ack --end`, and no connection is open; each generator ran out): event
    /// time moves to its end, every window fires, every expiring key expires, the output is
    /// written out and committed, and the node (or the cluster) stops and exits 0.
    #[arg(long)]
    pub finish: bool,
    /// Most messages handed to the application in one call.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Key groups keys are hashed to (fixed for the life of the application's state).
    #[arg(long, default_value_t = wallaroo_types::DEFAULT_KEY_GROUPS,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub key_groups: u32,
    /// A Kafka client property (librdkafka's names: security.protocol, ssl.ca.location,
    /// sasl.username, linger.ms, ...) for every Kafka source and sink, applied after the
    /// application's own; repeat for more.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = key_value)]
    pub kafka_properties: Vec<(String, String)>,
}

/// A `KEY=VALUE` argument.
pub(crate) fn key_value(given: &str) -> Result<(String, String), String> {
    match given.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("'{given}' is not KEY=VALUE")),
    }
}

impl HostOptions {
    pub fn settings(&self) -> Settings {
        Settings {
            key_groups: self.key_groups,
            workers: self.workers,
            resilience: self.resilience,
            checkpoint_interval_ms: self.checkpoint_interval,
            sink_framing: self.sink_framing,
            max_memory_mib: self.max_memory,
            call_timeout_ms: self.call_timeout,
            batch_size: self.batch_size,
            dead_letter_max_bytes: self.dead_letter_max_bytes,
            max_frame_size: self.max_frame_size,
            dead_letter_late: self.dead_letter_late,
            finish: self.finish,
            kafka_properties: self.kafka_properties.clone(),
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct LocalOptions {
    /// Where compiled native code is cached [default: $WALLAROO_CACHE_DIR, else
    /// $XDG_CACHE_HOME/wallaroo, else ~/.cache/wallaroo].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Start even if the write-ahead log is corrupt (not merely torn at its end by a crash):
    /// drop it from the bad record on, and say what was dropped. Without it such a log stops
    /// the start and is left as it is.
    #[arg(long)]
    pub discard_corrupt_log: bool,
}

/// A value that is one of `all`, by name: clap lists the names in the help and in the error
/// for any other value.
fn one_of<T: Copy + Send + Sync + 'static>(
    all: &'static [T],
    name: fn(T) -> &'static str,
) -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(all.iter().map(|&t| name(t))).try_map(move |given| {
        all.iter()
            .copied()
            .find(|&t| name(t) == given)
            .ok_or("not one of the possible values")
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::{Cli, Command};

    fn parse(line: &str) -> Result<Command, clap::Error> {
        let argv = line.split_whitespace().map(String::from).collect();
        Cli::try_parse_from(crate::run::hoist_host_flags(argv)).map(|cli| cli.command)
    }

    fn deployed(line: &str) -> Settings {
        match parse(line).unwrap() {
            Command::Deploy(args) => args.host.settings(),
            _ => panic!("not deploy"),
        }
    }

    fn run(line: &str) -> Settings {
        match parse(line).unwrap() {
            Command::Run(args) => args.host.settings(),
            _ => panic!("not run"),
        }
    }

    #[test]
    fn the_defaults_of_run_and_deploy_are_the_settings_defaults() {
        assert_eq!(run("wallaroo run app.wasm"), Settings::default());
        assert_eq!(
            deployed("wallaroo deploy --nodes hosts.txt app.wasm"),
            Settings::default()
        );
    }

    #[test]
    fn run_and_deploy_take_the_same_typed_host_options() {
        let options = "--workers 2 --resilience exactly-once --sink-framing tagged \
                       --checkpoint-interval 200 --max-memory 64 --call-timeout 500 \
                       --max-frame-size 4096 --dead-letter-max-bytes 1048576 --batch-size 8 \
                       --key-groups 16 --dead-letter-late --finish --kafka-property linger.ms=1";
        let expected = Settings {
            key_groups: 16,
            workers: Some(2),
            resilience: Resilience::ExactlyOnce,
            checkpoint_interval_ms: 200,
            sink_framing: SinkFraming::Tagged,
            max_memory_mib: 64,
            call_timeout_ms: 500,
            batch_size: 8,
            dead_letter_max_bytes: 1 << 20,
            max_frame_size: 4096,
            dead_letter_late: true,
            finish: true,
            kafka_properties: vec![("linger.ms".into(), "1".into())],
        };
        assert_eq!(run(&format!("wallaroo run {options} app.wasm")), expected);
        assert_eq!(run(&format!("wallaroo run app.wasm {options}")), expected);
        assert_eq!(
            deployed(&format!("wallaroo deploy --nodes h {options} app.wasm")),
            expected
        );
        assert_eq!(
            deployed(&format!(
                "wallaroo deploy app.wasm --in h:1 {options} --nodes h"
            )),
            expected
        );
        assert_eq!(
            deployed("wallaroo deploy --nodes h --resilience at-least-once app.wasm").resilience,
            Resilience::AtLeastOnce
        );
    }

    #[test]
    fn an_unknown_resilience_or_framing_is_refused_listing_the_possible_values() {
        for command in ["deploy --nodes h", "run"] {
            let err = parse(&format!("wallaroo {command} --resilience bogus app.wasm"))
                .err()
                .unwrap();
            assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
            let said = err.to_string();
            assert!(said.contains("invalid value 'bogus'"), "{said}");
            assert!(
                said.contains("[possible values: none, at-least-once, exactly-once]"),
                "{said}"
            );
            let err = parse(&format!(
                "wallaroo {command} --sink-framing framed app.wasm"
            ))
            .err()
            .unwrap()
            .to_string();
            assert!(err.contains("[possible values: plain, tagged]"), "{err}");
        }
    }

    #[test]
    fn a_node_takes_only_the_options_of_its_machine() {
        let node = "wallaroo node --listen 127.0.0.1:7100";
        let Command::Node(args) =
            parse(&format!("{node} --discard-corrupt-log --cache-dir c")).unwrap()
        else {
            panic!("not node")
        };
        assert!(args.local.discard_corrupt_log);
        assert_eq!(args.local.cache_dir, Some(PathBuf::from("c")));
        // How the application runs is the deployment's to say, not one node's.
        for option in ["--resilience none", "--batch-size 1", "--key-groups 8"] {
            let err = parse(&format!("{node} {option}")).err().unwrap();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::UnknownArgument,
                "{option}"
            );
        }
    }
}
