//! `wallaroo run APP.wasm [options] [app args]`: one node on this machine.
//!
//! Everything after APP.wasm goes to the application's `application_setup(args)`, as Wallaroo
//! passed its command line; the host's own options may stand before or after APP.wasm.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use clap::CommandFactory as _;
use wallaroo_component::{CacheOutcome, CompileCache, Runtime, Sandbox};
use wallaroo_connectors::{EdgePlan, Edges, SinkFraming, SourceAddress};
use wallaroo_engine::{Node, Resilience};

use crate::options::{HostOptions, LocalOptions};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub(crate) host: HostOptions,
    #[command(flatten)]
    local: LocalOptions,
    #[command(flatten)]
    options: Options,
    /// The application component (built with `wallaroo build`).
    app: PathBuf,
    /// Arguments for the application, e.g. --in HOST:PORT --out HOST:PORT.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    app_args: Vec<String>,
}

/// The options only `wallaroo run` takes.
#[derive(clap::Args)]
struct Options {
    /// The node's data directory: its write-ahead log and dead letters.
    #[arg(long, default_value = "wallaroo-data")]
    data_dir: PathBuf,
    /// Compile the component on every start.
    #[arg(long)]
    no_cache: bool,
    /// Serve Prometheus metrics (per-step counts and call latency, backlog, checkpoints) at
    /// http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<String>,
    /// Give the application the real clock (default: frozen at the Unix epoch).
    #[arg(long)]
    allow_clock: bool,
    /// Give the application real randomness (default: a fixed seed, so replays repeat).
    #[arg(long)]
    allow_random: bool,
    /// Give the application network access.
    #[arg(long)]
    allow_network: bool,
    /// Give the application a directory, as HOST_DIR or HOST_DIR:GUEST_PATH.
    #[arg(long)]
    allow_dir: Vec<String>,
    /// Swap in the new version when APP.wasm is rebuilt: at a checkpoint, state kept, output
    /// exactly-once (needs a --resilience other than none).
    #[arg(long)]
    watch: bool,
    /// Let this version (or, with --watch, a new one) lack stateful step STEP, whose state in
    /// the log is then dropped (repeatable).
    #[arg(long, value_name = "STEP")]
    drop_state: Vec<String>,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let o = &args.options;
    let settings = args.host.settings();
    let wasm = read_component(&args.app)?;
    let app_name = args.app.display().to_string();
    let cache = match (&args.local.cache_dir, o.no_cache) {
        (_, true) => CompileCache::disabled(),
        (dir, false) => CompileCache::at_or_default(dir.as_deref()),
    }
    .on_compile({
        let app = app_name.clone();
        let cached = !o.no_cache;
        move || {
            if cached {
                eprintln!("compiling {app} (first run; cached afterwards)");
            } else {
                eprintln!("compiling {app} (--no-cache)");
            }
        }
    });
    let limits = settings.limits();
    let sandbox = Sandbox {
        allow_clock: o.allow_clock,
        allow_random: o.allow_random,
        allow_network: o.allow_network,
        dirs: o.allow_dir.iter().map(|d| parse_dir_grant(d)).collect(),
    };
    if o.watch && settings.resilience == Resilience::None {
        anyhow::bail!(
            "--watch needs --resilience at-least-once or exactly-once: a swap restarts the node \
             from a checkpoint of its state, and without a write-ahead log the state would be \
             lost"
        );
    }
    let workers = settings.workers_or(None);
    let mut config = settings.node_config(
        &o.data_dir,
        args.app_args.clone(),
        workers,
        args.local.discard_corrupt_log,
    )?;
    config.drop_state = o.drop_state.clone();

    // Signals are caught from here on: compiling and recovering take seconds, and a signal
    // meanwhile must stop the process at once, not after them.
    let io = crate::io_runtime()?;
    let mut signals = {
        let _inside = io.enter();
        crate::Signals::catch()?
    };
    let component = wallaroo_cluster::manifest::component_hash(&wasm);
    let watch = o.watch.then(|| crate::watch::Watch {
        path: args.app.clone(),
        // A new version is compiled on its own notice ("compiling the new version").
        cache: match (&args.local.cache_dir, o.no_cache) {
            (_, true) => CompileCache::disabled(),
            (dir, false) => CompileCache::at_or_default(dir.as_deref()),
        },
        limits: limits.clone(),
        sandbox: sandbox.clone(),
        args: args.app_args.clone(),
        running: component.clone(),
    });
    let started = Instant::now();
    let (runtime, outcome) = io.block_on(signals.unless_stopped(
        &format!("loading {app_name}"),
        move || {
            Runtime::new(&wasm, &cache, limits, sandbox)
                .with_context(|| format!("loading {app_name}"))
        },
    ))??;
    let loaded = started.elapsed();
    let (mut node, recovered) = {
        let runtime = runtime.clone();
        let config = config.clone();
        io.block_on(
            signals.unless_stopped("recovering from the write-ahead log", move || {
                Node::start(&runtime, config)
            }),
        )??
    };
    if let Some(c) = &recovered.discarded {
        eprintln!("{}", c.dropped());
    }
    let spec = node.spec().clone();
    // A step to drop is one this version has (with --watch, for a later version to lack), or
    // one the log held state of.
    let stateful = |name: &String| {
        spec.steps
            .iter()
            .any(|s| s.kind == wallaroo_component::StepKind::Stateful && s.name == *name)
    };
    let unknown: Vec<&String> = o
        .drop_state
        .iter()
        .filter(|name| !stateful(name) && !recovered.dropped.iter().any(|(d, _)| d == *name))
        .collect();
    if let Some(name) = unknown.first() {
        io.block_on(node.abort());
        anyhow::bail!(
            "--drop-state '{name}': {} has no stateful step '{name}' and its log holds no state \
             of one; name a stateful step of the running application",
            spec.name
        );
    }
    for (step, keys) in &recovered.dropped {
        eprintln!(
            "dropped the state of stateful step '{step}' ({keys} keys), which {} lacks, as \
             --drop-state asked",
            spec.name
        );
    }
    eprintln!(
        "{}: {} worker{}, code {} in {} ms",
        spec.name,
        workers,
        if workers == 1 { "" } else { "s" },
        match outcome {
            CacheOutcome::Hit => "loaded from cache",
            CacheOutcome::Compiled => "compiled and cached",
            CacheOutcome::Disabled => "compiled",
        },
        loaded.as_millis()
    );

    let tagged = settings.sink_framing == SinkFraming::Tagged;
    match node.resilience() {
        Resilience::None => {}
        mode => {
            eprintln!(
                "resilience {mode}: write-ahead log in {}, checkpoint every {} ms",
                o.data_dir.join("wal").display(),
                settings.checkpoint_interval_ms
            );
            if mode == Resilience::ExactlyOnce && !tagged && !spec.sinks.is_empty() {
                eprintln!(
                    "sinks use plain framing, so output is at-least-once: after a crash a \
                     receiver may see output again (--sink-framing tagged makes it exactly-once)"
                );
            }
            eprintln!("{recovered}");
        }
    }

    let plan = EdgePlan {
        sources: settings.source_options(),
        source_address: SourceAddress::AsNamed,
        generators: true,
        tagged_stream: tagged.then(String::new),
        kafka: settings.kafka_plan(
            0,
            1,
            String::new(),
            wallaroo_connectors::kafka::instance_for(
                &spec,
                settings.resilience == Resilience::ExactlyOnce,
                &o.data_dir,
            )?,
        ),
    };
    let metrics_addr = o.metrics.clone();
    io.block_on(async move {
        let mut edges = Edges::start(&mut node, &plan).await?;
        for edge in &edges.started {
            eprintln!("{edge}");
        }
        let mut metrics_server = match &metrics_addr {
            Some(addr) => {
                let listener = crate::status::bind_metrics(addr).await?;
                eprintln!("metrics at http://{}/metrics", listener.local_addr()?);
                Some(tokio::spawn(crate::status::serve_metrics(
                    listener,
                    node.metrics(),
                )))
            }
            None => None,
        };
        eprintln!("running; Ctrl-C or SIGTERM stops after processing what was accepted");
        let mut candidates = watch.map(|w| {
            eprintln!(
                "watching {}: a rebuilt component is swapped in at a checkpoint",
                w.path.display()
            );
            crate::watch::spawn(w)
        });
        let mut running = Running {
            runtime,
            component,
            config,
        };
        let mut status = crate::status::spawn_status_line(node.metrics());
        let finish = settings.finish;
        let mut finished = false;

        let failure = loop {
            let candidate = async {
                match &mut candidates {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = signals.next() => break None,
                () = node.at_end(), if finish => {
                    finished = true;
                    break None;
                }
                why = node.failed() => break Some(why),
                Some(candidate) = candidate => {
                    crate::status::clear_status_line(status);
                    let file = args.app.display();
                    match candidate.and_then(|c| {
                        let dropped = wallaroo_component::check_keeps_state(
                            node.spec(),
                            &c.spec,
                            &running.config.drop_state,
                        )?;
                        for step in dropped {
                            eprintln!(
                                "the new version of {file} has no stateful step '{step}': \
                                 its state is dropped (--drop-state)"
                            );
                        }
                        Ok(c)
                    }) {
                        Err(why) => eprintln!(
                            "refused the new version of {file}: {why:#}; the running version \
                             (component {}) runs on",
                            &running.component[..12]
                        ),
                        Ok(c) if c.component == running.component => {
                            eprintln!("{file} is the running version again: nothing to swap");
                        }
                        Ok(c) => {
                            (node, edges) =
                                swap(node, edges, &mut running, c, &plan, &file.to_string())
                                    .await?;
                            for edge in &edges.started {
                                eprintln!("{edge}");
                            }
                            // The metrics server serves the new node's figures, on the
                            // same address once the old server has let it go.
                            if let Some(server) = metrics_server.take() {
                                server.abort();
                                let _ = server.await;
                            }
                            if let Some(addr) = &metrics_addr {
                                match crate::status::bind_metrics(addr).await {
                                    Ok(listener) => {
                                        metrics_server = Some(tokio::spawn(
                                            crate::status::serve_metrics(listener, node.metrics()),
                                        ));
                                    }
                                    Err(e) => eprintln!(
                                        "metrics are not served after the swap: {e:#}"
                                    ),
                                }
                            }
                        }
                    }
                    status = crate::status::spawn_status_line(node.metrics());
                }
            }
        };
        crate::status::clear_status_line(status);
        if finished {
            eprintln!("every source's stream has ended and every window has fired: finishing");
        }
        if let Some(why) = failure {
            // Its sources stopped accepting when it failed; what is queued is left undone.
            edges.stop_sources().await;
            node.abort().await;
            anyhow::bail!(
                "{why}; the node stopped without draining (with a --resilience other than none, \
                 a restart on the same data directory replays what was acknowledged since the \
                 last checkpoint)"
            );
        }
        eprintln!(
            "stopping: processing accepted messages and flushing sinks (signal again to exit now)"
        );
        tokio::spawn(async move {
            signals.next().await;
            eprintln!("second signal: exiting without draining");
            std::process::exit(130);
        });
        edges.stop_sources().await;
        let dead_letters = node.dead_letters().log_path();
        let totals = node.shutdown().await;
        if let Some(server) = metrics_server {
            server.abort();
        }
        edges.finish_sinks().await;
        eprintln!(
            "stopped: {} messages received, {} emitted, {} dead-lettered, {} instances replaced, \
             {} recycled",
            totals.received,
            totals.emitted,
            totals.dead_lettered,
            totals.instances_replaced,
            totals.instances_recycled
        );
        let unwritten = totals.dead_letters_unwritten;
        let written = totals.dead_lettered.saturating_sub(unwritten);
        if written > 0 {
            eprintln!("dead letters: {}", dead_letters.display());
        }
        if unwritten > 0 {
            eprintln!(
                "dead letters: {}{unwritten} dead letters could not be written (see the error \
                 above)",
                if written == 0 { "none written; " } else { "" },
            );
        }
        if totals.log_failed {
            anyhow::bail!(
                "the write-ahead log failed (see above): input and output since the last \
                 checkpoint are kept by the senders and the log; restart on the same data \
                 directory once it is writable"
            );
        }
        anyhow::Ok(())
    })
}

/// What runs now, and what a swap starts the next version with.
struct Running {
    runtime: Runtime,
    /// The component's SHA-256, in hex.
    component: String,
    config: wallaroo_engine::NodeConfig,
}

/// Swaps `candidate` in for the running version: the sources stop, the node takes a
/// checkpoint and stops at it without draining, a new node with the new version recovers
/// from that checkpoint on the same data directory and replays what came after its cut from
/// the log (so output stays exactly-once), and the edges start again. If the new version
/// cannot start, the running one starts again the same way.
async fn swap(
    node: Node,
    mut edges: Edges,
    running: &mut Running,
    candidate: crate::watch::Candidate,
    plan: &EdgePlan,
    file: &str,
) -> anyhow::Result<(Node, Edges)> {
    let paused = Instant::now();
    edges.abort_sources_and_wait().await;
    let cut = node.abort_at_checkpoint().await;
    edges.abort_sinks();
    if let Err(why) = &cut {
        eprintln!(
            "no checkpoint before the swap ({why}): the new version recovers from the last \
             committed one and replays the rest"
        );
    }
    let start = |runtime: Runtime, config: wallaroo_engine::NodeConfig| {
        tokio::task::spawn_blocking(move || Node::start(&runtime, config))
    };
    let started = start(candidate.runtime.clone(), running.config.clone())
        .await
        .context("starting the new version")?;
    let swapped = started.is_ok();
    let (mut node, recovered) = match started {
        Ok(started) => {
            running.runtime = candidate.runtime;
            running.component = candidate.component;
            started
        }
        Err(e) => {
            eprintln!(
                "the new version of {file} could not start: {e:#}; starting the running \
                 version (component {}) again",
                &running.component[..12]
            );
            start(running.runtime.clone(), running.config.clone())
                .await
                .context("starting the running version again")?
                .context("starting the running version again")?
        }
    };
    let edges = Edges::start(&mut node, plan).await?;
    let pause = paused.elapsed();
    eprintln!(
        "{} {file} (component {}) in {} ms: from checkpoint {}, {} messages replayed",
        if swapped {
            "swapped to"
        } else {
            "no swap: started again the running version of"
        },
        &running.component[..12],
        pause.as_millis(),
        recovered.checkpoint,
        recovered.replayed_messages
    );
    for (step, keys) in &recovered.dropped {
        eprintln!("dropped the state of stateful step '{step}' ({keys} keys)");
    }
    Ok((node, edges))
}

/// The bytes of the component at `path`, or what `path` is instead and how to make a
/// component of it (wasmtime would try a Python file as WebAssembly text: "expected '('").
pub(crate) fn read_component(path: &Path) -> anyhow::Result<Vec<u8>> {
    let shown = path.display();
    if path.is_dir() {
        anyhow::bail!(
            "{shown} is a directory, not a component; if it is a Go main package, {}",
            build_first(&shown.to_string())
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {shown}"))?;
    if let Some(why) = not_a_component(path, &bytes) {
        anyhow::bail!("{shown} is {why}");
    }
    Ok(bytes)
}

/// What the file at `path` holding `bytes` is, if it is not a WebAssembly component.
fn not_a_component(path: &Path, bytes: &[u8]) -> Option<String> {
    // A binary module or component: b"\0asm", then a version; 1 is a core module.
    if let Some(version) = bytes.strip_prefix(b"\0asm") {
        return (version.get(..4) == Some(&[1, 0, 0, 0])).then(|| {
            "a core WebAssembly module, not a component of the wallaroo:app world: build the \
             application with `wallaroo build` (APP.py or a Go main package)"
                .to_string()
        });
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    Some(match ext {
        "py" => format!(
            "Python source, not a component; {}",
            build_first(&path.display().to_string())
        ),
        "go" => {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            format!(
                "Go source, not a component; {}",
                build_first(&dir.display().to_string())
            )
        }
        _ => "not a WebAssembly component (it does not start with \\0asm); build the \
              application with `wallaroo build APP.py -o app.wasm` (or a Go main package)"
            .to_string(),
    })
}

/// How to make a component of the application whose source is at `source`.
fn build_first(source: &str) -> String {
    format!(
        "build it first with `wallaroo build {source} -o app.wasm`, then `wallaroo run app.wasm`"
    )
}

fn parse_dir_grant(grant: &str) -> (PathBuf, String) {
    match grant.split_once(':') {
        Some((host, guest)) => (PathBuf::from(host), guest.to_string()),
        None => (PathBuf::from(grant), grant.to_string()),
    }
}

/// Copies the host options that stand after APP.wasm in a `run` command line to before it, so
/// clap sees them; the application still receives the whole list after APP.wasm.
pub fn hoist_host_flags(argv: Vec<String>) -> Vec<String> {
    let Some(command @ ("run" | "deploy")) = argv.get(1).map(String::as_str) else {
        return argv;
    };
    let cli = crate::Cli::command();
    let Some(run) = cli.find_subcommand(command) else {
        return argv;
    };
    // Some(true): a host option taking a value; Some(false): a host switch.
    let host_option = |arg: &str| -> Option<bool> {
        let name = arg.strip_prefix("--")?.split('=').next()?;
        run.get_arguments()
            .find(|a| a.get_long() == Some(name))
            .map(|a| a.get_action().takes_values() && !arg.contains('='))
    };
    let mut app = 2;
    while app < argv.len() && argv[app].starts_with('-') {
        app += if host_option(&argv[app]) == Some(true) {
            2
        } else {
            1
        };
    }
    if app >= argv.len() {
        return argv;
    }
    let mut hoisted = Vec::new();
    let mut i = app + 1;
    while i < argv.len() {
        match host_option(&argv[i]) {
            Some(true) => {
                hoisted.extend(argv[i..(i + 2).min(argv.len())].iter().cloned());
                i += 2;
            }
            Some(false) => {
                hoisted.push(argv[i].clone());
                i += 1;
            }
            None => i += 1,
        }
    }
    if hoisted.is_empty() {
        return argv;
    }
    let mut out = argv[..app].to_vec();
    out.extend(hoisted);
    out.push(argv[app].clone());
    // Everything after the app is the app's, even what looks like a host option.
    if argv[app + 1] != "--" {
        out.push("--".into());
    }
    out.extend(argv[app + 1..].iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn host_options_after_the_app_are_seen_and_still_passed_on() {
        let out = hoist_host_flags(argv(
            "wallaroo run app.wasm --in 127.0.0.1:7010 --workers 3 --allow-clock --mine x",
        ));
        assert_eq!(
            out,
            argv(
                "wallaroo run --workers 3 --allow-clock app.wasm -- --in 127.0.0.1:7010 \
                 --workers 3 --allow-clock --mine x"
            )
        );
        let parsed = crate::Cli::try_parse_from_args(out).unwrap();
        let crate::Command::Run(args) = parsed.command else {
            panic!("not run")
        };
        assert_eq!(args.host.workers, Some(3));
        assert!(args.options.allow_clock);
        assert_eq!(args.app, PathBuf::from("app.wasm"));
        assert_eq!(args.app_args[0], "--in");
        assert_eq!(args.app_args.len(), 7);
    }

    #[test]
    fn a_host_option_right_after_the_app_is_hoisted_once() {
        let out = hoist_host_flags(argv("wallaroo run app.wasm --workers 2 --in h:1"));
        let parsed = crate::Cli::try_parse_from_args(out).unwrap();
        let crate::Command::Run(args) = parsed.command else {
            panic!("not run")
        };
        assert_eq!(args.host.workers, Some(2));
        assert_eq!(args.app_args, argv("--workers 2 --in h:1"));
    }

    #[test]
    fn a_file_that_is_not_a_component_says_what_it_is_and_how_to_build_one() {
        let python = not_a_component(Path::new("app.py"), b"import wallaroo\n").unwrap();
        assert!(
            python.starts_with("Python source, not a component"),
            "{python}"
        );
        assert!(
            python.contains("wallaroo build app.py -o app.wasm"),
            "{python}"
        );
        let go = not_a_component(Path::new("cmd/app/main.go"), b"package main\n").unwrap();
        assert!(go.contains("wallaroo build cmd/app -o app.wasm"), "{go}");
        let core = not_a_component(Path::new("m.wasm"), b"\0asm\x01\0\0\0").unwrap();
        assert!(core.contains("core WebAssembly module"), "{core}");
        let other = not_a_component(Path::new("app.txt"), b"hello").unwrap();
        assert!(other.contains("not a WebAssembly component"), "{other}");
        assert_eq!(
            not_a_component(Path::new("app.wasm"), b"\0asm\x0d\0\x01\0"),
            None
        );
    }

    #[test]
    fn options_before_the_app_are_left_alone() {
        let line = argv("wallaroo run --workers 2 app.wasm --out h:1");
        assert_eq!(hoist_host_flags(line.clone()), line);
        let other = argv("wallaroo send --host h:1 --file f");
        assert_eq!(hoist_host_flags(other.clone()), other);
    }
}
