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
use crate::report::StatusReport;

#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub app: PathBuf,
    pub hosts: PathBuf,
    pub certs: PathBuf,
    pub args: Vec<String>,
    pub settings: Settings,
    /// `--drop-state`: stateful steps a hot swap to this version may drop the state of.
    pub drop_state: Vec<String>,
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
    // The time the build wrote it, which the nodes keep and `wallaroo status` shows.
    let modified_ms = std::fs::metadata(&options.app)
        .and_then(|m| m.modified())
        .ok()
        .and_then(crate::manifest::unix_ms);
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
                    modified_ms,
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
        retired: Vec::new(),
        settings: Settings {
            key_groups: options.settings.key_groups.max(1),
            ..options.settings
        },
        drop_state: options.drop_state,
    };
    let deployment = manifest.deployment.clone();
    let finish = manifest.settings.finish;
    match client.ask(0, &Msg::Deploy { manifest }).await? {
        Msg::Deployed { app, sources } => {
            println!(
                "deployed '{app}' (deployment {deployment}) on {} nodes",
                client.nodes.len()
            );
            for s in sources {
                println!("source {s}");
            }
            if finish {
                wait_finished(&client, &app).await?;
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

/// Waits until the application, deployed to finish at the end, has finished: its coordinator
/// has no application any more, and its last change was the finish.
async fn wait_finished(client: &Client, app: &str) -> anyhow::Result<()> {
    println!(
        "waiting for '{app}' to finish once every source's stream has ended (interrupting this \
         leaves it running)"
    );
    // The coordinator's own node stops before the coordinator has every node's answer: the
    // finish is recorded a moment after the application is gone there.
    let mut gone_since = None;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let status = match client.ask(0, &Msg::Status).await {
            Ok(Msg::NodeStatus(s)) => *s,
            // The coordinator's node may be restarting: it recovers the application.
            Ok(_) | Err(_) => continue,
        };
        if status.state != "no application" {
            gone_since = None;
            continue;
        }
        if status.changes.last().is_some_and(|c| c.kind == "finish") {
            println!(
                "finished '{app}': every source's stream ended, every window fired and the \
                 output is written"
            );
            return Ok(());
        }
        let since = *gone_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() > std::time::Duration::from_secs(150) {
            anyhow::bail!("'{app}' stopped before every source's stream had ended");
        }
    }
}

/// Prints every node's figures, as text or (`json`) as one JSON object (see
/// [`StatusReport`]). Fails if a node cannot be reached, after printing what the others said.
pub async fn status(hosts: &Path, certs: &Path, json: bool) -> anyhow::Result<()> {
    let client = Client::new(hosts, certs)?;
    let mut answers = Vec::with_capacity(client.nodes.len());
    for i in 0..client.nodes.len() {
        answers.push(match client.ask(i, &Msg::Status).await {
            Ok(Msg::NodeStatus(s)) => Ok(*s),
            Ok(other) => anyhow::bail!("unexpected answer {}", other.name()),
            Err(e) => Err(format!("{e:#}")),
        });
    }
    let report = StatusReport::new(&client.nodes, answers);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    let unreachable = report.unreachable();
    anyhow::ensure!(unreachable == 0, "{unreachable} node(s) unreachable");
    Ok(())
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
