//! The `wallaroo` command. Each subcommand is one small module that parses its arguments and
//! calls a library crate.

mod build;
mod cert;
mod cluster;
mod kafka;
mod options;
mod receive;
mod run;
mod send;
mod status;
mod watch;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wallaroo",
    version,
    about = "A WebAssembly-sandboxed stream engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a Python application (app.py) into a component (app.wasm).
    Build(build::Args),
    /// Run a component on this machine.
    Run(run::Args),
    /// Send a file's lines (or frames) to a framed TCP source.
    Send(send::Args),
    /// Listen where a TCP sink connects and write what arrives.
    Receive(receive::Args),
    /// Produce a file into a Kafka topic, read a topic out, make a topic.
    Kafka(kafka::Args),
    /// Manage the cluster's certificates (`wallaroo cert init`).
    Cert(cert::Args),
    /// Run a cluster node: it waits for `wallaroo deploy` and runs its share of the application.
    Node(cluster::NodeArgs),
    /// Ship a component to the nodes in a hosts file and start it across them.
    Deploy(cluster::DeployArgs),
    /// Show the cluster: the running version, every node's key groups, state, counts and last
    /// checkpoint, and the last changes.
    Status(cluster::StatusArgs),
    /// Stop a cluster's application after processing everything it accepted.
    Stop(cluster::NodesArgs),
}

/// What is logged unless `RUST_LOG` says otherwise: warnings and errors, and the cluster's
/// events an operator follows (a node listening, lost, waiting for others, a generation
/// running from a checkpoint), which `wallaroo_cluster` logs at `info`. Debug chatter stays
/// quiet.
const DEFAULT_LOG_FILTER: &str = "warn,wallaroo_cluster=info";

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse_from(run::hoist_host_flags(std::env::args().collect())).command {
        Command::Build(args) => build::main(args),
        Command::Run(args) => run::main(args),
        Command::Send(args) => send::main(args),
        Command::Receive(args) => receive::main(args),
        Command::Cert(args) => cert::main(args),
        Command::Kafka(args) => kafka::main(args),
        Command::Node(args) => cluster::node(args),
        Command::Deploy(args) => cluster::deploy(args),
        Command::Status(args) => cluster::status(args),
        Command::Stop(args) => cluster::stop(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            cluster::failure(&e)
        }
    }
}

impl Cli {
    #[cfg(test)]
    fn try_parse_from_args(argv: Vec<String>) -> Result<Self, clap::Error> {
        <Self as Parser>::try_parse_from(argv)
    }
}

/// The tokio runtime for I/O; guest code runs on worker threads of its own.
fn io_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("wallaroo-io")
        .enable_all()
        .build()?)
}

/// SIGINT and SIGTERM, caught from the moment this is made (before it, they would kill the
/// process on the spot).
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Must be called inside the tokio runtime.
    fn catch() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves at the next SIGINT or SIGTERM, with the exit status a process stopped by it
    /// conventionally has (128 + the signal's number: 130, 143).
    async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.interrupt.recv() => 128 + libc_signal::SIGINT,
            _ = self.terminate.recv() => 128 + libc_signal::SIGTERM,
        }
    }

    /// Runs `work` (blocking: compiling a component, replaying a log) off the async threads;
    /// a signal meanwhile ends the process at once, saying what was cut short. The work
    /// cannot be cancelled halfway, and what it writes is made to survive a crash (the compile
    /// cache renames finished entries into place, the log is replayed), so nothing is lost by
    /// not waiting for it.
    async fn unless_stopped<T: Send + 'static>(
        &mut self,
        what: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let work = tokio::task::spawn_blocking(work);
        tokio::select! {
            done = work => Ok(done?),
            code = self.next() => {
                eprintln!("stopped while {what}");
                std::process::exit(code);
            }
        }
    }
}

/// The numbers of the signals `wallaroo` stops on (the same on every Unix it runs on).
mod libc_signal {
    pub const SIGINT: i32 = 2;
    pub const SIGTERM: i32 = 15;
}
