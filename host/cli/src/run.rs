//! `wallaroo run APP.wasm [options] [app args]`: one node on this machine.
//!
//! Everything after APP.wasm goes to the application's `application_setup(args)`, as Wallaroo
//! passed its command line; the host's own options may stand before or after APP.wasm.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::CommandFactory as _;
use tokio::sync::watch;
use tokio::task::JoinSet;
use wallaroo_component::{
    CacheOutcome, CompileCache, Limits, Runtime, Sandbox, SinkConfig, SourceConfig,
};
use wallaroo_connectors::{SourceOptions, TcpSource, run_generator, run_tcp_sink};
use wallaroo_engine::{Node, NodeConfig, Resilience};
use wallaroo_types::KeyGroups;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    options: Options,
    /// The application component (built with `wallaroo build`).
    app: PathBuf,
    /// Arguments for the application, e.g. --in HOST:PORT --out HOST:PORT.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    app_args: Vec<String>,
}

#[derive(clap::Args)]
struct Options {
    /// Worker threads, each with its own instance of the application [default: CPU cores].
    #[arg(long)]
    workers: Option<usize>,
    /// The node's data directory: its write-ahead log and dead letters.
    #[arg(long, default_value = "wallaroo-data")]
    data_dir: PathBuf,
    /// What a crash may cost: none (fastest; state and in-flight input are lost),
    /// at-least-once (input logged, state checkpointed; output after the last checkpoint is
    /// repeated), exactly-once (output released only after its checkpoint commits).
    #[arg(long, value_enum, default_value_t = ResilienceArg::None)]
    resilience: ResilienceArg,
    /// Time between checkpoints, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    checkpoint_interval: u64,
    /// Start even if the write-ahead log is corrupt (not merely torn at its end by a crash):
    /// drop it from the bad record on, and say what was dropped. Without it such a log stops
    /// the start and is left as it is.
    #[arg(long)]
    discard_corrupt_log: bool,
    /// How sinks frame output: plain (the encoder's bytes as they are) or tagged (each frame
    /// with its (epoch, sequence), so `wallaroo receive` drops repeats: exactly-once output).
    #[arg(long, value_enum, default_value_t = SinkFraming::Plain)]
    sink_framing: SinkFraming,
    /// Where compiled native code is cached [default: $WALLAROO_CACHE_DIR, else
    /// $XDG_CACHE_HOME/wallaroo, else ~/.cache/wallaroo].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Compile the component on every start.
    #[arg(long)]
    no_cache: bool,
    /// Memory each instance may use, in MiB.
    #[arg(long, default_value_t = 512)]
    max_memory: usize,
    /// Time one call into the application may take, in milliseconds, before the instance is
    /// stopped and replaced.
    #[arg(long, default_value_t = 10_000)]
    call_timeout: u64,
    /// Largest frame a source accepts, in bytes; of a larger frame the first 64 KiB go to the
    /// dead letters and the rest is dropped.
    #[arg(long, default_value_t = 16 << 20)]
    max_frame_size: u64,
    /// Disk the dead letters may take, in bytes, all files together; past half of it the
    /// files rotate and the oldest entries go.
    #[arg(long, default_value_t = wallaroo_engine::DEFAULT_DEAD_LETTER_MAX_BYTES)]
    dead_letter_max_bytes: u64,
    /// Most messages handed to the application in one call.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Serve Prometheus metrics (per-step counts and call latency, backlog, checkpoints) at
    /// http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<String>,
    /// Key groups keys are hashed to (fixed for the life of the application's state).
    #[arg(long, default_value_t = wallaroo_types::DEFAULT_KEY_GROUPS,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    key_groups: u32,
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
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ResilienceArg {
    None,
    AtLeastOnce,
    ExactlyOnce,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SinkFraming {
    Plain,
    Tagged,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let o = &args.options;
    let wasm = read_component(&args.app)?;
    let app_name = args.app.display().to_string();
    let cache = match (&o.cache_dir, o.no_cache) {
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
    let limits = Limits {
        max_memory: o.max_memory << 20,
        call_timeout: Duration::from_millis(o.call_timeout),
    };
    let sandbox = Sandbox {
        allow_clock: o.allow_clock,
        allow_random: o.allow_random,
        allow_network: o.allow_network,
        dirs: o.allow_dir.iter().map(|d| parse_dir_grant(d)).collect(),
    };
    let workers = o.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let mut config = NodeConfig::new(&o.data_dir, args.app_args.clone());
    config.workers = workers;
    config.dead_letter_max_bytes = o.dead_letter_max_bytes;
    config.key_groups = KeyGroups::try_new(o.key_groups)?;
    config.resilience = match o.resilience {
        ResilienceArg::None => Resilience::None,
        ResilienceArg::AtLeastOnce => Resilience::AtLeastOnce,
        ResilienceArg::ExactlyOnce => Resilience::ExactlyOnce,
    };
    config.checkpoint_interval = Duration::from_millis(o.checkpoint_interval.max(1));
    config.discard_corrupt_log = o.discard_corrupt_log;

    // Signals are caught from here on: compiling and recovering take seconds, and a signal
    // meanwhile must stop the process at once, not after them.
    let io = crate::io_runtime()?;
    let mut signals = {
        let _inside = io.enter();
        crate::Signals::catch()?
    };
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

    let tagged = o.sink_framing == SinkFraming::Tagged;
    match node.resilience() {
        Resilience::None => {}
        mode => {
            eprintln!(
                "resilience {}: write-ahead log in {}, checkpoint every {} ms",
                if mode == Resilience::ExactlyOnce {
                    "exactly-once"
                } else {
                    "at-least-once"
                },
                o.data_dir.join("wal").display(),
                o.checkpoint_interval
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
    if tagged && node.resilience() != Resilience::ExactlyOnce {
        anyhow::bail!("--sink-framing tagged needs --resilience exactly-once");
    }

    let source_options = SourceOptions {
        max_frame: o.max_frame_size,
        batch_size: o.batch_size.max(1),
    };
    let metrics_addr = o.metrics.clone();
    io.block_on(async move {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut sources = JoinSet::new();
        for (i, source) in spec.sources.iter().enumerate() {
            let handles = node.source(i);
            match &source.config {
                SourceConfig::Tcp(tcp) => {
                    let listener = TcpSource::bind(
                        &source.name,
                        &tcp.host,
                        &tcp.port,
                        tcp.framing.into(),
                        source_options.clone(),
                    )
                    .await?;
                    eprintln!(
                        "source '{}' listening on {}",
                        source.name,
                        listener.local_addr()?
                    );
                    sources.spawn(listener.run(move || handles.next(), stop_rx.clone()));
                }
                SourceConfig::Generator => {
                    eprintln!("source '{}' generating", source.name);
                    sources.spawn(run_generator(
                        handles.next(),
                        source_options.batch_size,
                        stop_rx.clone(),
                    ));
                }
            }
        }
        let mut sinks = JoinSet::new();
        for (i, sink) in spec.sinks.iter().enumerate() {
            let SinkConfig::Tcp(tcp) = &sink.config;
            let addr = format!("{}:{}", tcp.host, tcp.port);
            eprintln!("sink '{}' writing to {addr}", sink.name);
            let identity = tagged.then(|| format!("{}/{}", spec.name, sink.name));
            sinks.spawn(run_tcp_sink(
                sink.name.clone(),
                addr,
                node.take_sink(i),
                identity,
            ));
        }
        let metrics_server = match &metrics_addr {
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
        let status = crate::status::spawn_status_line(node.metrics());

        let failure = tokio::select! {
            _ = signals.next() => None,
            why = node.failed() => Some(why),
        };
        crate::status::clear_status_line(status);
        if let Some(why) = failure {
            // Its sources stopped accepting when it failed; what is queued is left undone.
            let _ = stop_tx.send(true);
            while sources.join_next().await.is_some() {}
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
        let _ = stop_tx.send(true);
        while sources.join_next().await.is_some() {}
        let dead_letters = node.dead_letters().log_path();
        let totals = node.shutdown().await;
        if let Some(server) = metrics_server {
            server.abort();
        }
        while let Some(done) = sinks.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::error!("{e:#}");
            }
        }
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

/// The bytes of the component at `path`, or what `path` is instead and how to make a
/// component of it (wasmtime would try a Python file as WebAssembly text: "expected '('").
fn read_component(path: &Path) -> anyhow::Result<Vec<u8>> {
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
        assert_eq!(args.options.workers, Some(3));
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
        assert_eq!(args.options.workers, Some(2));
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
