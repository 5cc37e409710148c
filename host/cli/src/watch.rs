//! `wallaroo run --watch`: notices when the component file is rebuilt and makes the new
//! version ready to take over (compiled, its spec described) off the async threads, so the
//! running version serves on meanwhile.
//!
//! The file is polled (its modification time and size, every [`POLL`]) rather than watched
//! through the operating system's notifications: a rebuild is a rare event measured in
//! seconds, half a second of latency costs nothing, and polling behaves the same on every
//! platform and file system (network mounts, editors that replace files by rename).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::sync::mpsc;
use wallaroo_component::{AppSpec, CompileCache, Limits, Runtime, Sandbox};

/// How often the component file is looked at.
pub const POLL: Duration = Duration::from_millis(500);

/// A new version of the component, compiled and described.
pub struct Candidate {
    pub runtime: Runtime,
    pub spec: AppSpec,
    /// The component's SHA-256, in hex.
    pub component: String,
}

/// What the watcher needs to make a new version ready.
pub struct Watch {
    pub path: PathBuf,
    pub cache: CompileCache,
    pub limits: Limits,
    pub sandbox: Sandbox,
    pub args: Vec<String>,
    /// The running component's SHA-256: the same bytes again are no new version.
    pub running: String,
}

/// Watches the file on the current (I/O) runtime; each change that settled yields a ready
/// candidate, or why the new version cannot run.
pub fn spawn(watch: Watch) -> mpsc::Receiver<anyhow::Result<Candidate>> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut seen = stamp(&watch.path).await;
        let mut last = watch.running.clone();
        loop {
            tokio::time::sleep(POLL).await;
            let now = stamp(&watch.path).await;
            if now == seen || now.is_none() {
                continue;
            }
            // Changed: wait until a whole poll sees it unchanged (a build may still write).
            seen = now;
            loop {
                tokio::time::sleep(POLL).await;
                let again = stamp(&watch.path).await;
                if again == seen {
                    break;
                }
                seen = again;
            }
            let made = ready(&watch, &last).await;
            if let Ok(Some(c)) = &made {
                last = c.component.clone();
            }
            let sent = match made {
                Ok(None) => continue,
                Ok(Some(c)) => tx.send(Ok(c)).await,
                Err(e) => tx.send(Err(e)).await,
            };
            if sent.is_err() {
                return;
            }
        }
    });
    rx
}

/// The file's modification time and size, None while it cannot be read. (One `stat`: too
/// short to be worth a blocking thread.)
async fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reads, compiles and describes the file's component, off the async threads; None if it is
/// the version `last` again.
async fn ready(watch: &Watch, last: &str) -> anyhow::Result<Option<Candidate>> {
    let path = watch.path.clone();
    let last = last.to_string();
    let (cache, limits, sandbox, args) = (
        watch.cache.clone(),
        watch.limits.clone(),
        watch.sandbox.clone(),
        watch.args.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let wasm = crate::run::read_component(&path)?;
        let component = wallaroo_cluster::manifest::component_hash(&wasm);
        if component == last {
            return Ok(None);
        }
        eprintln!(
            "{} changed (component {}): compiling the new version",
            path.display(),
            &component[..12]
        );
        let (runtime, _) =
            Runtime::new(&wasm, &cache, limits, sandbox).context("it does not load")?;
        let spec = runtime
            .instantiate()
            .context("it cannot be instantiated")?
            .describe(&args)
            .map_err(|e| anyhow::anyhow!("its application_setup failed: {e}"))?;
        Ok(Some(Candidate {
            runtime,
            spec,
            component,
        }))
    })
    .await
    .context("compiling the new version")?
}
