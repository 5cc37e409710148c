//! `wallaroo node`, `wallaroo deploy`, `wallaroo status`, `wallaroo stop`: a cluster.

use std::net::SocketAddr;
use std::path::PathBuf;

use wallaroo_cluster::proto::{Refusal, Retry};
use wallaroo_cluster::{DeployOptions, NodeOptions};

use crate::options::{HostOptions, LocalOptions};

/// Where `wallaroo cert init` puts a cluster's certificates unless told otherwise.
const CERTS: &str = "wallaroo-certs";

#[derive(clap::Args)]
pub struct NodeArgs {
    /// Where the node listens for other nodes and clients (UDP, QUIC with mutual TLS).
    #[arg(long, value_name = "HOST:PORT")]
    listen: SocketAddr,
    /// The node's data directory: shipped components, the deployment, its log.
    #[arg(long, default_value = "wallaroo-data")]
    data_dir: PathBuf,
    /// The cluster's certificates (from `wallaroo cert init`).
    #[arg(long, default_value = CERTS)]
    certs: PathBuf,
    /// The address this node's sources listen on [default: the host of --listen].
    #[arg(long)]
    source_host: Option<String>,
    /// Added to every source port on this node (for several nodes on one address).
    #[arg(long, default_value_t = 0)]
    source_port_offset: u16,
    /// Worker threads, unless the deployment says [default: CPU cores].
    #[arg(long)]
    workers: Option<usize>,
    #[command(flatten)]
    pub(crate) local: LocalOptions,
}

/// The shared host options, said of a cluster: per node, checkpoints cluster-wide.
#[derive(clap::Args)]
#[command(
    mut_arg("workers", |a| a.help("Worker threads per node [default: each node's cores]")),
    mut_arg("checkpoint_interval", |a| {
        a.help("Time between cluster-wide checkpoints, in milliseconds")
    }),
    mut_arg("dead_letter_max_bytes", |a| {
        a.help("Disk the dead letters may take on each node, in bytes, as for `wallaroo run`")
    })
)]
pub struct DeployArgs {
    /// hosts.txt: one node address (HOST:PORT) per line; the first coordinates.
    #[arg(long, value_name = "HOSTS")]
    nodes: PathBuf,
    #[arg(long, default_value = CERTS)]
    certs: PathBuf,
    #[command(flatten)]
    pub(crate) host: HostOptions,
    /// Let the new version of a hot swap lack stateful step STEP of the running one, whose
    /// state is then dropped (repeatable).
    #[arg(long, value_name = "STEP")]
    drop_state: Vec<String>,
    /// The application component.
    app: PathBuf,
    /// Arguments for the application, as for `wallaroo run`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    app_args: Vec<String>,
}

#[derive(clap::Args)]
pub struct NodesArgs {
    /// hosts.txt: one node address (HOST:PORT) per line.
    #[arg(long, value_name = "HOSTS")]
    nodes: PathBuf,
    #[arg(long, default_value = CERTS)]
    certs: PathBuf,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    nodes: NodesArgs,
    /// Print one JSON object (the cluster, its nodes, its last changes) instead of text.
    #[arg(long)]
    json: bool,
}

pub fn node(args: NodeArgs) -> anyhow::Result<()> {
    let options = NodeOptions {
        listen: args.listen,
        source_host: args
            .source_host
            .unwrap_or_else(|| args.listen.ip().to_string()),
        data_dir: args.data_dir,
        certs: args.certs,
        source_port_offset: args.source_port_offset,
        workers: args.workers,
        cache_dir: args.local.cache_dir,
        discard_corrupt_log: args.local.discard_corrupt_log,
    };
    let io = crate::io_runtime()?;
    let result = io.block_on(async move {
        let mut signals = crate::Signals::catch()?;
        wallaroo_cluster::run_node(options, async move {
            signals.next().await;
        })
        .await
    });
    // Blocking work still under way (compiling a component takes seconds) is not waited for
    // past a moment: it is cut short as a crash would cut it, which the compile cache and the
    // log are made to survive.
    io.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

pub fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let settings = args.host.settings();
    settings.check()?;
    let options = DeployOptions {
        app: args.app,
        hosts: args.nodes,
        certs: args.certs,
        // What asks the host to drop state is no argument of the application's: the same
        // deploy without it has the same arguments.
        args: without_option(args.app_args, "--drop-state"),
        settings,
        drop_state: args.drop_state,
    };
    crate::io_runtime()?.block_on(wallaroo_cluster::deploy(options))
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let StatusArgs { nodes, json } = args;
    crate::io_runtime()?.block_on(wallaroo_cluster::status(&nodes.nodes, &nodes.certs, json))
}

pub fn stop(args: NodesArgs) -> anyhow::Result<()> {
    crate::io_runtime()?.block_on(wallaroo_cluster::stop(&args.nodes, &args.certs))
}

/// What a command exits with when it failed: 75 (EX_TEMPFAIL) when a node refused it and said
/// that asking again later can succeed (the cluster recovers, the coordinator was stopping),
/// with a line saying when; 1 otherwise.
pub fn failure(e: &anyhow::Error) -> std::process::ExitCode {
    const TRY_AGAIN: u8 = 75;
    match Refusal::find(e).map(|r| r.retry) {
        Some(Retry::OnceRecovered) => {
            eprintln!(
                "the cluster is recovering: `wallaroo status` shows what it waits for; try \
                 again once it runs"
            );
            std::process::ExitCode::from(TRY_AGAIN)
        }
        Some(Retry::After { ms }) => {
            eprintln!("try again in {:.1} s", ms as f64 / 1000.0);
            std::process::ExitCode::from(TRY_AGAIN)
        }
        Some(Retry::Never) | None => std::process::ExitCode::FAILURE,
    }
}

/// `args` without option `name` and its value (`NAME VALUE` or `NAME=VALUE`).
fn without_option(args: Vec<String>, name: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == name {
            args.next();
        } else if !arg.starts_with(&format!("{name}=")) {
            out.push(arg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wallaroo_cluster::proto::RefusalKind;

    #[test]
    fn drop_state_after_the_component_is_no_argument_of_the_application() {
        let args = [
            "--in",
            "a:1",
            "--drop-state",
            "count",
            "--drop-state=sum",
            "--out",
            "b:2",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            without_option(args, "--drop-state"),
            ["--in", "a:1", "--out", "b:2"].map(String::from).to_vec()
        );
    }

    #[test]
    fn a_refusal_that_may_succeed_later_exits_75_and_others_1() {
        let recovering = anyhow::Error::new(Refusal::new(RefusalKind::Recovering, "node 2"))
            .context("node 0 (10.0.0.1:7100)");
        assert_eq!(failure(&recovering), std::process::ExitCode::from(75));
        let never = anyhow::Error::new(Refusal::new(RefusalKind::NotFound, "no application"));
        assert_eq!(failure(&never), std::process::ExitCode::FAILURE);
        assert_eq!(
            failure(&anyhow::anyhow!("cannot read hosts.txt")),
            std::process::ExitCode::FAILURE
        );
    }
}
