//! The command-line side: `wallaroo deploy`, `wallaroo status`, `wallaroo stop`. What they
//! print on standard output is the command's result (where the sources listen, the status
//! report, the totals of a stop); progress on the way is logged (`tracing`, at `info`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_bytes::ByteBuf;
use wallaroo_transport::{ClusterTls, Connection, Endpoint};

use crate::daemon::{request, resolve};
use crate::manifest::{Manifest, Settings, component_hash, read_hosts};
use crate::proto::Msg;

#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub app: PathBuf,
    pub hosts: PathBuf,
    pub certs: PathBuf,
    pub args: Vec<String>,
    pub settings: Settings,
}

struct Client {
    endpoint: Endpoint,
    nodes: Vec<String>,
}

impl Client {
    fn new(hosts: &Path, certs: &Path) -> anyhow::Result<Client> {
        let nodes = read_hosts(hosts)?;
        let tls = ClusterTls::load(certs)?;
        let endpoint = Endpoint::client(&tls)?;
        Ok(Client { endpoint, nodes })
    }

    async fn connect(&self, i: usize) -> anyhow::Result<Connection> {
        let addr = &self.nodes[i];
        let resolved = resolve(addr).await?;
        self.endpoint
            .connect(resolved)
            .await
            .with_context(|| format!("node {i} ({addr})"))
    }

    async fn ask(&self, i: usize, msg: &Msg) -> anyhow::Result<Msg> {
        let conn = self.connect(i).await?;
        let reply = request(&conn, msg)
            .await
            .with_context(|| format!("node {i} ({})", self.nodes[i]))?;
        conn.close("done");
        match reply {
            Msg::Refused(why) => {
                Err(anyhow::Error::new(why).context(format!("node {i} ({})", self.nodes[i])))
            }
            reply => Ok(reply),
        }
    }
}

/// Ships the component to every node that lacks it, then has the first node start it.
pub async fn deploy(options: DeployOptions) -> anyhow::Result<()> {
    let client = Client::new(&options.hosts, &options.certs)?;
    let wasm = std::fs::read(&options.app)
        .with_context(|| format!("cannot read {}", options.app.display()))?;
    let hash = component_hash(&wasm);
    for i in 0..client.nodes.len() {
        let have = client
            .ask(i, &Msg::HasComponent { hash: hash.clone() })
            .await?;
        if matches!(have, Msg::Have(true)) {
            tracing::info!("node {i} ({}): has the component", client.nodes[i]);
            continue;
        }
        let started = std::time::Instant::now();
        client
            .ask(
                i,
                &Msg::PutComponent {
                    hash: hash.clone(),
                    bytes: ByteBuf::from(wasm.clone()),
                },
            )
            .await?;
        tracing::info!(
            "node {i} ({}): component shipped ({:.1} MiB in {} ms)",
            client.nodes[i],
            wasm.len() as f64 / (1 << 20) as f64,
            started.elapsed().as_millis()
        );
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let manifest = Manifest {
        deployment: format!("{}-{secs}", &hash[..12]),
        component: hash,
        args: options.args,
        nodes: client.nodes.clone(),
        table: Vec::new(),
        settings: Settings {
            key_groups: options.settings.key_groups.max(1),
            ..options.settings
        },
    };
    let deployment = manifest.deployment.clone();
    match client.ask(0, &Msg::Deploy { manifest }).await? {
        Msg::Deployed { app, sources } => {
            println!(
                "deployed '{app}' (deployment {deployment}) on {} nodes",
                client.nodes.len()
            );
            for s in sources {
                println!("source {s}");
            }
            Ok(())
        }
        Msg::Changed { app, what } => {
            println!("'{app}': {what}");
            Ok(())
        }
        other => anyhow::bail!("unexpected answer {}", other.name()),
    }
}

/// Prints every node's figures. Fails if a node cannot be reached.
pub async fn status(hosts: &Path, certs: &Path) -> anyhow::Result<()> {
    let client = Client::new(hosts, certs)?;
    let mut unreachable = 0;
    for i in 0..client.nodes.len() {
        let s = match client.ask(i, &Msg::Status).await {
            Ok(Msg::NodeStatus(s)) => s,
            Ok(other) => anyhow::bail!("unexpected answer {}", other.name()),
            Err(e) => {
                println!("node {i}  {}  unreachable: {e:#}", client.nodes[i]);
                unreachable += 1;
                continue;
            }
        };
        let component = match s.component.get(..12) {
            Some(prefix) => format!("  component {prefix}"),
            None => String::new(),
        };
        println!(
            "node {i}  {}  {}  {}  generation {}{component}",
            client.nodes[i], s.state, s.app, s.generation
        );
        if let Some(r) = &s.recovery {
            println!("  {}", recovery_line(r));
        }
        if s.key_groups.is_empty() {
            continue;
        }
        let owned: u64 = s
            .key_groups
            .iter()
            .map(|&(a, b)| u64::from(b.saturating_sub(a)) + 1)
            .sum();
        let ranges: Vec<String> = s
            .key_groups
            .iter()
            .map(|(a, b)| {
                if a == b {
                    format!("{a}")
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        println!(
            "  key groups {} ({owned}), {} workers",
            ranges.join(","),
            s.workers
        );
        println!(
            "  received {}, emitted {}, backlog {}, dead letters {}, last checkpoint {}",
            s.received, s.emitted, s.backlog, s.dead_lettered, s.last_checkpoint
        );
        if !s.steps.is_empty() {
            let steps: Vec<String> = s.steps.iter().map(|(n, c)| format!("{n} {c}")).collect();
            println!("  steps: {}", steps.join(", "));
        }
        if s.remote_messages > 0 {
            println!(
                "  to other nodes: {} messages, {} bytes on the wire ({:.1} bytes/message)",
                s.remote_messages,
                s.remote_bytes,
                s.remote_bytes as f64 / s.remote_messages as f64
            );
        }
        for source in &s.sources {
            println!("  source {source}");
        }
    }
    anyhow::ensure!(unreachable == 0, "{unreachable} node(s) unreachable");
    Ok(())
}

/// What a recovering cluster waits for, as `wallaroo status` shows it under the coordinator.
fn recovery_line(r: &crate::proto::Recovery) -> String {
    let waiting = if r.missing.is_empty() {
        "starting the application on every node".to_string()
    } else {
        format!("waiting for {} to join", r.missing.join(", "))
    };
    let why = if r.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", r.reason)
    };
    format!(
        "cluster recovering for {} s, from checkpoint {}: {waiting}{why}",
        r.waited_ms / 1000,
        r.checkpoint
    )
}

/// Stops the application everywhere after processing everything accepted.
pub async fn stop(hosts: &Path, certs: &Path) -> anyhow::Result<()> {
    let client = Client::new(hosts, certs)?;
    match client.ask(0, &Msg::Stop).await? {
        Msg::Deployed { app, sources } => {
            println!("stopped '{app}'");
            for line in sources {
                println!("{line}");
            }
            Ok(())
        }
        other => anyhow::bail!("unexpected answer {}", other.name()),
    }
}
