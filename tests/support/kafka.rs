//! A real Kafka broker for the tests (`scripts/kafka`): one shared by the tests of a run, started
//! on first use and left running (`scripts/test` stops it), or one of a test's own, on free ports
//! and a directory of its own, for a test that stops its broker. Topics are made and read with
//! `wallaroo kafka`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Proc, free_port, root, wallaroo};

pub struct Broker {
    pub bootstrap: String,
    /// Environment for `scripts/kafka` naming this broker (empty for the shared one).
    env: Vec<(String, String)>,
}

impl Broker {
    /// The run's shared broker, on `WALLAROO_KAFKA_PORT` (9092): started if it is not running.
    pub fn shared() -> &'static Broker {
        static SHARED: OnceLock<Broker> = OnceLock::new();
        SHARED.get_or_init(|| {
            let mut broker = Broker {
                bootstrap: String::new(),
                env: Vec::new(),
            };
            broker.bootstrap = broker.start();
            broker
        })
    }

    /// A broker of the test's own, its data in `dir`, on free ports.
    pub fn own(dir: &Path) -> Broker {
        let env = vec![
            ("WALLAROO_KAFKA_DIR".into(), dir.display().to_string()),
            ("WALLAROO_KAFKA_PORT".into(), free_port().to_string()),
            (
                "WALLAROO_KAFKA_CONTROLLER_PORT".into(),
                free_port().to_string(),
            ),
        ];
        let mut broker = Broker {
            bootstrap: String::new(),
            env,
        };
        broker.bootstrap = broker.start();
        broker
    }

    fn script(&self, args: &[&str]) -> std::process::Output {
        Command::new(root().join("scripts/kafka"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running scripts/kafka")
    }

    /// Starts the broker (nothing to do when it runs); its bootstrap address.
    pub fn start(&self) -> String {
        let out = self.script(&["start"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "scripts/kafka start failed:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("kafka: bootstrap "))
            .expect("scripts/kafka start prints the bootstrap address")
            .trim()
            .to_string()
    }

    pub fn stop(&self) {
        let out = self.script(&["stop"]);
        assert!(out.status.success(), "scripts/kafka stop failed");
    }

    /// A topic of `partitions` partitions whose name no other test of this run (or an earlier
    /// run on the same broker) has: `prefix` and a unique suffix.
    pub fn topic(&self, prefix: &str, partitions: u32) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                % 100_000_000,
            N.fetch_add(1, Ordering::SeqCst)
        );
        let out = self
            .kafka(&[
                "create-topic",
                &name,
                "--partitions",
                &partitions.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "creating topic {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        name
    }

    /// `wallaroo kafka SUBCOMMAND ARGS --brokers THIS`.
    pub fn kafka(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(wallaroo());
        cmd.arg("kafka")
            .args(args)
            .args(["--brokers", &self.bootstrap]);
        cmd
    }

    /// Produces `file`'s lines into `topic`, keyed by their first word, at about `rate` lines a
    /// second (as fast as it goes with None), as a running process.
    pub fn producer(&self, topic: &str, file: &Path, rate: Option<u32>) -> Proc {
        let mut cmd = self.kafka(&["produce", "--topic", topic]);
        cmd.arg(file);
        if let Some(rate) = rate {
            cmd.args(["--lines-per-second", &rate.to_string()]);
        }
        Proc::spawn(&format!("produce {topic}"), cmd)
    }

    /// A `read_committed` consumer of `topic` writing each value as a line to `out`, running
    /// until stopped.
    pub fn consumer(&self, topic: &str, out: &Path) -> Proc {
        let out = out.display().to_string();
        let cmd = self.kafka(&["consume", "--topic", topic, "--output", &out]);
        Proc::spawn(&format!("consume {topic}"), cmd)
    }

    /// The application arguments of the Kafka test apps: read `input`, write `output`.
    pub fn app_args(&self, input: &str, output: &str) -> Vec<String> {
        [
            "--kafka_source_topic",
            input,
            "--kafka_source_brokers",
            &self.bootstrap,
            "--kafka_sink_topic",
            output,
            "--kafka_sink_brokers",
            &self.bootstrap,
        ]
        .map(String::from)
        .to_vec()
    }
}

impl Drop for Broker {
    /// A test's own broker stops with the test, however the test ends.
    fn drop(&mut self) {
        if !self.env.is_empty() {
            let _ = self.script(&["stop"]);
        }
    }
}

/// Lines of a file that is being written (whole lines only).
pub fn lines_of(path: &PathBuf) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(String::from).collect()
}
