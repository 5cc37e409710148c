//! A cluster of `wallaroo node` daemons, each on its own host (a network namespace with its
//! own address, or loopback with distinct ports where namespaces cannot be made): word count
//! deployed across three nodes, a node killed and restarted, certificates from another CA.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng};
use wallaroo_tests::hosts::Hosts;
use wallaroo_tests::*;

const WORD_COUNT: &str = "componentize-py-examples/word_count/word_count.py";
/// The port the application names for its source; each node's source listens on it (in
/// namespaces) or on it plus the node's offset (on loopback).
const APP_SOURCE_PORT: u16 = 1024;
const NODE_PORT: u16 = 7100;

/// `wallaroo cert ARGS...`, which must succeed.
fn cert(args: &[&std::ffi::OsStr]) {
    let out = Command::new(wallaroo())
        .arg("cert")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `wallaroo cert init DIR`.
fn cert_init(dir: &Path) {
    cert(&["init".as_ref(), dir.as_ref()]);
}

struct Cluster {
    hosts: Hosts,
    dir: tempfile::TempDir,
    certs: PathBuf,
    hosts_file: PathBuf,
    /// Each node's own certificate, issued by the cluster's CA (`certs` is the client's).
    node_certs: Vec<PathBuf>,
    addrs: Vec<String>,
    offsets: Vec<u16>,
    /// The nodes' compile cache.
    cache: PathBuf,
    nodes: Vec<Proc>,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        Cluster::with_cache(n, &scratch().join("cache"))
    }

    /// A cluster whose nodes cache compiled code in `cache`.
    fn with_cache(n: usize, cache: &Path) -> Cluster {
        let hosts = Hosts::new(n);
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        cert_init(&certs);
        let addrs: Vec<String> = (0..n)
            .map(|i| format!("{}:{}", hosts.addr(i), hosts.port(i, NODE_PORT)))
            .collect();
        let offsets = (0..n)
            .map(|i| hosts.port(i, APP_SOURCE_PORT) - APP_SOURCE_PORT)
            .collect();
        let node_certs: Vec<PathBuf> = (0..n)
            .map(|i| {
                let out = dir.path().join(format!("certs-node{i}"));
                let name = format!("node{i}");
                cert(&[
                    "issue".as_ref(),
                    name.as_ref(),
                    "--ca".as_ref(),
                    certs.as_ref(),
                    "--out".as_ref(),
                    out.as_ref(),
                ]);
                assert!(!out.join("ca.key").exists());
                out
            })
            .collect();
        let hosts_file = dir.path().join("hosts.txt");
        std::fs::write(
            &hosts_file,
            format!("# test cluster\n{}\n", addrs.join("\n")),
        )
        .unwrap();
        let mut cluster = Cluster {
            hosts,
            dir,
            certs,
            hosts_file,
            node_certs,
            addrs,
            offsets,
            cache: cache.to_path_buf(),
            nodes: Vec::new(),
        };
        for i in 0..n {
            let node = cluster.start_node(i, &cluster.node_certs[i].clone());
            cluster.nodes.push(node);
        }
        cluster
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}"))
    }

    fn start_node(&self, i: usize, certs: &Path) -> Proc {
        self.start_node_in(i, certs, &[])
    }

    /// Starts node `i` under `wrapper` (a command that ends by running its arguments).
    fn start_node_in(&self, i: usize, certs: &Path, wrapper: &[&str]) -> Proc {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = self.hosts.command(i, program);
                cmd.args(args).arg(wallaroo());
                cmd
            }
            None => self.hosts.command(i, wallaroo()),
        };
        cmd.args(["node", "--listen", &self.addrs[i], "--data-dir"])
            .arg(self.data_dir(i))
            .arg("--certs")
            .arg(certs)
            .args(["--source-port-offset", &self.offsets[i].to_string()])
            .env("WALLAROO_CACHE_DIR", &self.cache);
        let node = Proc::spawn(&format!("node {i}"), cmd);
        node.wait_line("node listening on", Duration::from_secs(30));
        node
    }

    /// `wallaroo deploy` (or status, stop) against this cluster; returns its output.
    fn command(&self, args: &[&str]) -> std::process::Output {
        Command::new(wallaroo())
            .args(args)
            .arg("--nodes")
            .arg(&self.hosts_file)
            .arg("--certs")
            .arg(&self.certs)
            .output()
            .unwrap()
    }

    /// `wallaroo deploy` of `wasm` as every test deploys (one worker a node, the source and
    /// the receiver as the application's arguments).
    fn deploy_command(&self, wasm: &Path, receiver: &str, extra: &[&str]) -> std::process::Output {
        self.deploy_command_with(wasm, receiver, extra, &[])
    }

    /// [`Cluster::deploy_command`] with more arguments for the application.
    fn deploy_command_with(
        &self,
        wasm: &Path,
        receiver: &str,
        extra: &[&str],
        app_args: &[&str],
    ) -> std::process::Output {
        let mut args = vec!["deploy", "--workers", "1"];
        args.extend(extra);
        let wasm = wasm.to_string_lossy().into_owned();
        args.push(&wasm);
        let in_arg = format!("127.0.0.1:{APP_SOURCE_PORT}");
        args.extend(["--in", &in_arg, "--out", receiver]);
        args.extend(app_args);
        self.command(&args)
    }

    /// `wallaroo deploy` of `wasm` with exactly-once output, on a thread: its output arrives
    /// on the channel returned.
    fn deploy_in_background(
        &self,
        wasm: &Path,
        receiver: &str,
    ) -> std::sync::mpsc::Receiver<std::process::Output> {
        let mut deploy = Command::new(wallaroo());
        deploy.args(["deploy", "--workers", "1"]).args(EXACTLY_ONCE);
        deploy
            .arg(wasm)
            .args(["--in", &format!("127.0.0.1:{APP_SOURCE_PORT}")])
            .args(["--out", receiver])
            .arg("--nodes")
            .arg(&self.hosts_file)
            .arg("--certs")
            .arg(&self.certs);
        let (done, deployed) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(deploy.output().unwrap()));
        deployed
    }

    /// [`Cluster::deploy_command`], which must succeed: its stdout.
    fn deploy_output(&self, wasm: &Path, receiver: &str, extra: &[&str]) -> String {
        self.deploy_output_with(wasm, receiver, extra, &[])
    }

    fn deploy_output_with(
        &self,
        wasm: &Path,
        receiver: &str,
        extra: &[&str],
        app_args: &[&str],
    ) -> String {
        let out = self.deploy_command_with(wasm, receiver, extra, app_args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "deploy failed:\n{}{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        stdout
    }

    fn deploy(&self, wasm: &Path, receiver: &str, extra: &[&str]) -> Vec<String> {
        self.deploy_with(wasm, receiver, extra, &[])
    }

    /// Deploys `wasm` with `app_args` for the application too; returns each node's source.
    fn deploy_with(
        &self,
        wasm: &Path,
        receiver: &str,
        extra: &[&str],
        app_args: &[&str],
    ) -> Vec<String> {
        let stdout = self.deploy_output_with(wasm, receiver, extra, app_args);
        // "source node 0: Split and Count 10.200.1.2:1024"
        let mut sources = vec![String::new(); self.addrs.len()];
        for line in stdout.lines().filter(|l| l.starts_with("source node ")) {
            let i: usize = line["source node ".len()..]
                .split(':')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            sources[i] = line.rsplit(' ').next().unwrap().to_string();
        }
        assert!(sources.iter().all(|s| !s.is_empty()), "{stdout}");
        sources
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {}:\n{}", n.name, tail(&n.stderr(), 30)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn seeded(what: &str) -> StdRng {
    StdRng::seed_from_u64(test_seed(&format!("{what}: input")))
}

#[test]
fn word_count_on_three_nodes_counts_exactly_as_one_node() {
    let wasm = build_app(WORD_COUNT);
    let cluster = Cluster::new(3);
    let mut rng = seeded("three nodes");
    let a = cluster.dir.path().join("a.txt");
    let b = cluster.dir.path().join("b.txt");
    let mut totals = random_words(&a, 3000, 8, &mut rng);
    for (w, n) in random_words(&b, 3000, 8, &mut rng) {
        *totals.entry(w).or_insert(0) += n;
    }
    let receiver = Receiver::start_on(cluster.dir.path(), cluster.hosts.outside());
    let sources = cluster.deploy(&wasm, &receiver.addr, &[]);

    // Input to sources on two different nodes at once.
    let mut send_a = ack_sender(&sources[0], &a, "1");
    let mut send_b = ack_sender(&sources[2], &b, "2");
    for s in [&mut send_a, &mut send_b] {
        assert_eq!(s.wait(Duration::from_secs(120)), Some(0), "{}", s.stderr());
    }
    let words: u64 = totals.values().sum();
    let text = receiver.wait_lines(words as usize, Duration::from_secs(60));
    assert_eq!(final_values(&text), totals, "{}", cluster.logs());

    // The same input through one node.
    let single = tempfile::tempdir().unwrap();
    let one = Receiver::start(single.path());
    let mut node = Node::start(&wasm, &one.addr, single.path(), &["--workers", "2"]);
    send(&node.source, &a, &[]);
    send(&node.source, &b, &[]);
    let one_text = one.wait_lines(words as usize, Duration::from_secs(60));
    assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
    assert_eq!(final_values(&one_text), final_values(&text));

    let status = cluster.command(&["status"]);
    let report = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.status.success(), "{report}");
    for i in 0..3 {
        assert!(
            report.contains(&format!("node {i}  {}  running", cluster.addrs[i])),
            "{report}"
        );
    }
    assert!(report.contains("key groups 0-341 (342)"), "{report}");
    assert!(report.contains("bytes on the wire"), "{report}");
    eprintln!("{report}");

    // A deploy over the running application with options that cannot change while it runs
    // is refused, naming them; the same deploy again changes nothing and says so.
    let out = cluster.deploy_command(&wasm, &receiver.addr, &["--key-groups", "64"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--key-groups cannot change while it runs"),
        "{err}"
    );
    let out = cluster.command(&["deploy", &wasm.to_string_lossy()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("the application's arguments differ"), "{err}");
    let again = cluster.deploy_output(&wasm, &receiver.addr, &[]);
    assert!(again.contains("nothing to change"), "{again}");

    let stop = cluster.command(&["stop"]);
    let said = String::from_utf8_lossy(&stop.stdout);
    assert!(
        stop.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(said.contains("stopped 'Word Count Application'"), "{said}");
    let status = cluster.command(&["status"]);
    let report = String::from_utf8_lossy(&status.stdout);
    assert_eq!(report.matches("no application").count(), 3, "{report}");
}

#[test]
fn the_word_counts_of_every_api_generation_give_the_same_output_on_three_nodes() {
    let cluster = Cluster::new(3);
    let sample = root().join("componentize-py-examples/word_count/sample.txt");
    let want = expected("componentize-py-examples/word_count/expected.txt");
    let lines = want.values().sum::<u64>() as usize;
    let mut outputs = Vec::new();
    for app in crate::examples::WORD_COUNT_STYLES {
        let wasm = build_app(app);
        let out = tempfile::tempdir().unwrap();
        let receiver = Receiver::start_on(out.path(), cluster.hosts.outside());
        let sources = cluster.deploy(&wasm, &receiver.addr, &[]);
        // Lines into two nodes, so words cross between nodes both ways.
        send(&sources[0], &sample, &["--batch-size", "3"]);
        send(&sources[1], &sample, &["--batch-size", "3"]);
        let text = receiver.wait_lines(2 * lines, Duration::from_secs(60));
        let stop = cluster.command(&["stop"]);
        assert!(
            stop.status.success(),
            "{app}: {}{}",
            String::from_utf8_lossy(&stop.stderr),
            cluster.logs()
        );
        let doubled: std::collections::BTreeMap<String, u64> =
            want.iter().map(|(w, n)| (w.clone(), 2 * n)).collect();
        assert_eq!(running_counts(&text), doubled, "{app}: {}", cluster.logs());
        outputs.push(crate::examples::sorted_lines(&text));
    }
    assert_eq!(
        outputs[1],
        outputs[0],
        "{}",
        crate::examples::WORD_COUNT_STYLES[1]
    );
    assert_eq!(
        outputs[2],
        outputs[0],
        "{}",
        crate::examples::WORD_COUNT_STYLES[2]
    );
}

#[test]
fn a_killed_node_restarts_and_the_cluster_recovers_with_exactly_once_output() {
    kill_and_restart(2, Kill::WhileSending);
}

#[test]
fn a_killed_coordinator_restarts_and_the_cluster_recovers_with_exactly_once_output() {
    kill_and_restart(0, Kill::WhileSending);
}

#[test]
fn a_stop_asked_while_a_node_is_down_waits_for_it_and_loses_nothing() {
    kill_and_restart(2, Kill::BeforeStop);
}

/// The options of an exactly-once deployment with tagged output.
const EXACTLY_ONCE: &[&str] = &[
    "--resilience",
    "exactly-once",
    "--sink-framing",
    "tagged",
    "--checkpoint-interval",
    "200",
];

/// Exactly-once word count deployed on a cluster, with two acknowledged senders' input (of
/// `lines` lines each) for the sources of nodes 1 and 2.
struct Workload {
    a: PathBuf,
    b: PathBuf,
    totals: std::collections::BTreeMap<String, u64>,
    words: u64,
    receiver: Receiver,
    sources: Vec<String>,
}

impl Workload {
    fn deploy(cluster: &Cluster, lines: usize, rng: &mut StdRng) -> Workload {
        Workload::deploy_app(cluster, &build_app(WORD_COUNT), lines, rng)
    }

    /// [`Workload::deploy`] of the word count `wasm`.
    fn deploy_app(cluster: &Cluster, wasm: &Path, lines: usize, rng: &mut StdRng) -> Workload {
        let a = cluster.dir.path().join("a.txt");
        let b = cluster.dir.path().join("b.txt");
        let mut totals = random_words(&a, lines, 8, rng);
        for (w, n) in random_words(&b, lines, 8, rng) {
            *totals.entry(w).or_insert(0) += n;
        }
        let words = totals.values().sum();
        let receiver = Receiver::start_on(cluster.dir.path(), cluster.hosts.outside());
        let sources = cluster.deploy(wasm, &receiver.addr, EXACTLY_ONCE);
        Workload {
            a,
            b,
            totals,
            words,
            receiver,
            sources,
        }
    }

    fn senders(&self) -> [Proc; 2] {
        [
            ack_sender(&self.sources[1], &self.a, "1"),
            ack_sender(&self.sources[2], &self.b, "2"),
        ]
    }

    /// Waits for the senders to finish: everything they sent was logged.
    fn wait(senders: &mut [Proc], cluster: &Cluster) {
        for s in senders {
            assert_eq!(
                s.wait(Duration::from_secs(180)),
                Some(0),
                "{}\n{}",
                s.stderr(),
                cluster.logs()
            );
        }
    }

    /// `stop` succeeded, and every word's counts run 1, 2, 3... up to its total, with nothing
    /// missing, repeated or extra: as if nothing had gone wrong.
    fn check(&self, stop: std::process::Output, cluster: &Cluster) {
        assert!(
            stop.status.success(),
            "{}{}\n{}",
            String::from_utf8_lossy(&stop.stdout),
            String::from_utf8_lossy(&stop.stderr),
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
        let text = self.receiver.text();
        assert_eq!(running_counts(&text), self.totals, "{}", cluster.logs());
        assert_eq!(text.lines().count() as u64, self.words);
    }
}

enum Kill {
    /// At a random point of the output, while the senders send.
    WhileSending,
    /// Once the senders are done, just before `wallaroo stop`; the node is restarted while
    /// the stop waits.
    BeforeStop,
}

/// Exactly-once word count on three nodes, with input into nodes 1 and 2, while node `victim`
/// is killed with SIGKILL and restarted on its data directory.
fn kill_and_restart(victim: usize, when: Kill) {
    let mut cluster = Cluster::new(3);
    let mut rng = seeded(&format!("kill node {victim}"));
    let work = Workload::deploy(&cluster, 4000, &mut rng);
    let (words, receiver) = (work.words, &work.receiver);
    let mut senders = work.senders();
    let certs = cluster.certs.clone();
    let own = cluster.node_certs[victim].clone();
    let stop = match when {
        Kill::WhileSending => {
            let point = rng.random_range(words / 5..words / 2);
            wait_until(Duration::from_secs(120), || {
                (receiver.text().lines().count() as u64 >= point).then_some(())
            })
            .unwrap_or_else(|| panic!("output stalled before {point} lines\n{}", cluster.logs()));
            eprintln!("killing node {victim} after {point} output lines");
            cluster.nodes[victim].signal(libc::SIGKILL);
            cluster.nodes[victim].wait(Duration::from_secs(10));
            cluster.nodes[victim] = cluster.start_node(victim, &own);
            cluster.nodes[victim].wait_line("rejoining deployment", Duration::from_secs(10));
            Workload::wait(&mut senders, &cluster);
            cluster.command(&["stop"])
        }
        Kill::BeforeStop => {
            // Acknowledged means logged: all of it must come out, whatever happens next.
            Workload::wait(&mut senders, &cluster);
            cluster.nodes[victim].signal(libc::SIGKILL);
            cluster.nodes[victim].wait(Duration::from_secs(10));
            let mut cmd = Command::new(wallaroo());
            cmd.args(["stop", "--nodes"])
                .arg(&cluster.hosts_file)
                .arg("--certs")
                .arg(&certs);
            let (done, stopped) = std::sync::mpsc::channel();
            std::thread::spawn(move || done.send(cmd.output().unwrap()));
            std::thread::sleep(Duration::from_secs(1));
            cluster.nodes[victim] = cluster.start_node(victim, &own);
            let stop = stopped
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("stop still waits after 120 s\n{}", cluster.logs()));
            let waited = cluster.nodes[0].stderr();
            assert!(
                waited.contains("the stop follows once it runs again")
                    || waited.contains("stopping once the cluster has recovered"),
                "{}",
                cluster.logs()
            );
            stop
        }
    };
    work.check(stop, &cluster);
    if victim == 0 {
        // The restarted coordinator told the others at once, instead of their connections
        // timing out.
        assert!(
            cluster.nodes[1..]
                .iter()
                .any(|n| n.stderr().contains("the coordinator restarted")),
            "{}",
            cluster.logs()
        );
    }
    if victim != 0 {
        // Whichever node noticed first (the coordinator, or a node whose data stream to the
        // victim broke), the node named lost is the victim.
        let log = cluster.nodes[0].stderr();
        let named = format!("node {victim} ({}) lost", cluster.addrs[victim]);
        for line in log.lines().filter(|l| l.contains(" lost")) {
            assert!(line.contains(&named), "{line}\n{}", cluster.logs());
        }
    }
    // The coordinator (the restarted one, if it was the victim) started a later generation
    // from a checkpoint.
    assert!(
        cluster.nodes[0]
            .stderr()
            .contains("running from checkpoint"),
        "{}",
        cluster.logs()
    );
}

/// Node 2's disk fills up (a file size limit stands in for it) while input goes to nodes 1
/// and 2: the cluster keeps rolling back rather than lose anything, and once node 2 runs with
/// room again everything comes out exactly once.
#[test]
fn a_full_disk_on_one_node_holds_the_cluster_back_and_loses_nothing() {
    let mut cluster = Cluster::new(3);
    let work = Workload::deploy(&cluster, 2000, &mut seeded("full disk"));
    // Node 2 again (it has the component now), with no room for its log to grow. SIGXFSZ is
    // ignored, so a write past the limit fails as on a full disk.
    let own = cluster.node_certs[2].clone();
    cluster.nodes[2].signal(libc::SIGKILL);
    cluster.nodes[2].wait(Duration::from_secs(10));
    let full_disk = ["sh", "-c", "trap '' XFSZ; ulimit -f 1; exec \"$@\"", "sh"];
    cluster.nodes[2] = cluster.start_node_in(2, &own, &full_disk);
    let mut senders = work.senders();
    cluster.nodes[2].wait_line("cannot write the write-ahead log", Duration::from_secs(60));
    cluster.nodes[0].wait_line("it cannot begin checkpoint", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !senders[1].has_exited(),
        "node 2 acknowledged what it could not store: {}",
        senders[1].stderr()
    );

    // Room again.
    cluster.nodes[2].signal(libc::SIGKILL);
    cluster.nodes[2].wait(Duration::from_secs(10));
    cluster.nodes[2] = cluster.start_node(2, &own);
    Workload::wait(&mut senders, &cluster);
    work.check(cluster.command(&["stop"]), &cluster);
}

#[test]
fn a_certificate_from_another_ca_can_neither_deploy_nor_join() {
    let wasm = build_app(WORD_COUNT);
    let mut cluster = Cluster::new(2);
    let other = cluster.dir.path().join("other-ca");
    cert_init(&other);

    // A client with the other CA's certificate.
    let out = Command::new(wallaroo())
        .args(["status", "--nodes"])
        .arg(&cluster.hosts_file)
        .arg("--certs")
        .arg(&other)
        .output()
        .unwrap();
    let err =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("certificate"), "{err}");
    let out = Command::new(wallaroo())
        .args(["deploy", "--nodes"])
        .arg(&cluster.hosts_file)
        .arg("--certs")
        .arg(&other)
        .arg(&wasm)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("certificate"), "{err}");

    // A node holding the other CA's certificate cannot be part of the cluster.
    cluster.nodes[1].stop(Duration::from_secs(10));
    cluster.nodes[1] = cluster.start_node(1, &other);
    let receiver = Receiver::start_on(cluster.dir.path(), cluster.hosts.outside());
    let out = cluster.command(&[
        "deploy",
        &wasm.to_string_lossy(),
        "--in",
        "127.0.0.1:1024",
        "--out",
        &receiver.addr,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("node 1"), "{err}");
    assert!(err.contains("certificate"), "{err}");
    eprintln!("refused as: {err}");
}

/// A node told to stop while it compiles the component (seconds, the first time) stops at
/// once, without waiting for the compile to finish.
#[test]
fn a_node_stops_at_once_while_it_compiles() {
    let wasm = build_app(WORD_COUNT);
    let cache = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::with_cache(1, cache.path());
    let mut deploy = Command::new(wallaroo());
    deploy
        .args(["deploy", "--nodes"])
        .arg(&cluster.hosts_file)
        .arg("--certs")
        .arg(&cluster.certs)
        .arg(&wasm)
        .args(["--in", "127.0.0.1:1024", "--out", "127.0.0.1:9"]);
    let deploying = Proc::spawn("deploy", deploy);
    cluster.nodes[0].wait_line("compiling the component", Duration::from_secs(60));
    cluster.nodes[0].signal(libc::SIGTERM);
    cluster.nodes[0].wait(Duration::from_secs(30));
    // Had the node waited for the compile, its native code would be cached now.
    let cached: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(cached.is_empty(), "{cached:?}\n{}", cluster.logs());
    drop(deploying);
}

/// A node restarted with another cluster's certificate retries joining every 200 ms; the
/// coordinator logs the refusal once, not once per retry.
#[test]
fn a_node_refused_again_and_again_is_logged_once() {
    let wasm = build_app(WORD_COUNT);
    let mut cluster = Cluster::new(2);
    let receiver = Receiver::start_on(cluster.dir.path(), cluster.hosts.outside());
    cluster.deploy(&wasm, &receiver.addr, &[]);
    let other = cluster.dir.path().join("other-ca");
    cert_init(&other);
    cluster.nodes[1].signal(libc::SIGKILL);
    cluster.nodes[1].wait(Duration::from_secs(10));
    cluster.nodes[1] = cluster.start_node(1, &other);
    cluster.nodes[1].wait_line("cannot join the coordinator", Duration::from_secs(30));
    cluster.nodes[0].wait_line("refused a connection from", Duration::from_secs(30));
    // Some fifteen retries.
    std::thread::sleep(Duration::from_secs(3));
    let log = cluster.nodes[0].stderr();
    let refusals: Vec<_> = log.lines().filter(|l| l.contains("refused")).collect();
    assert_eq!(refusals.len(), 1, "{}", cluster.logs());
    assert!(refusals[0].contains("certificate"), "{}", refusals[0]);
}

/// Node 1 is killed while data flows between the nodes and stays away: the coordinator names
/// node 1, whichever node notices first (the coordinator's control stream to node 1 times out,
/// or another node's data stream to it breaks and that node leaves and joins again), and
/// `wallaroo status` says what the cluster waits for, since when, and from which checkpoint
/// it will resume.
#[test]
fn a_lost_node_is_named_and_status_says_what_the_cluster_waits_for() {
    let mut cluster = Cluster::new(3);
    let work = Workload::deploy(&cluster, 3000, &mut seeded("lost node"));
    let _senders = work.senders();
    let receiver = &work.receiver;
    wait_until(Duration::from_secs(120), || {
        (receiver.text().lines().count() as u64 >= work.words / 4).then_some(())
    })
    .unwrap_or_else(|| panic!("output stalled\n{}", cluster.logs()));
    cluster.nodes[1].signal(libc::SIGKILL);
    cluster.nodes[1].wait(Duration::from_secs(10));
    cluster.nodes[0].wait_line("waiting for node 1", Duration::from_secs(60));

    let log = cluster.nodes[0].stderr();
    let lost: Vec<_> = log.lines().filter(|l| l.contains(" lost")).collect();
    assert!(!lost.is_empty(), "{}", cluster.logs());
    for line in &lost {
        assert!(
            line.contains(&format!("node 1 ({}) lost", cluster.addrs[1])),
            "{line}\n{}",
            cluster.logs()
        );
        assert!(!line.contains("restarted"), "{line}");
    }

    let status = cluster.command(&["status"]);
    let report = String::from_utf8_lossy(&status.stdout).into_owned();
    let line = report
        .lines()
        .find(|l| l.contains("cluster recovering for"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        line.contains(&format!(
            "waiting for node 1 ({}) to join",
            cluster.addrs[1]
        )),
        "{report}"
    );
    assert!(line.contains("(node 1 lost: "), "{report}");
    // It resumes from the checkpoint the cluster committed last, which every node that is
    // left reports as its last, with the generation it ran.
    let from: u64 = line
        .split("from checkpoint ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{report}"));
    assert!(from > 0, "{report}");
    assert!(
        report.contains("node 2  ") && report.contains("recovering  Word Count Application"),
        "{report}"
    );
    let last: Vec<u64> = report
        .lines()
        .filter_map(|l| l.split("last checkpoint ").nth(1))
        .map(|n| n.trim().parse().unwrap())
        .collect();
    assert_eq!(last.len(), 2, "{report}");
    assert!(last.iter().all(|&n| n >= from), "{report}");
    eprintln!("{report}");
}

/// A version of word count whose state class has another name (see its docstring).
const WORD_COUNT_NEW_STATE: &str = "tests/apps/word_count_new_state/word_count.py";

/// A hot swap on three nodes while acknowledged senders stream into two of them: the new
/// version changes the output format and inserts a stateless step before the key_by. Every
/// word's counts run on with nothing lost or repeated, and switch format once. A version that
/// renames the stateful step is refused, naming it, and the running version goes on.
/// `wallaroo status --json`, which must succeed, parsed.
fn status_json(cluster: &Cluster) -> serde_json::Value {
    let out = cluster.command(&["status", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn a_hot_swap_keeps_every_count_exactly_once_and_switches_the_format_once() {
    let cluster = Cluster::new(3);
    let mut rng = seeded("hot swap");
    let w = Workload::deploy(&cluster, 4000, &mut rng);
    let v2 = build_app(WORD_COUNT_SWAP);
    let renamed = build_app(WORD_COUNT_RENAMED);
    let mut senders = [
        slow_ack_sender(&w.sources[1], &w.a, "1", 4000, 20),
        slow_ack_sender(&w.sources[2], &w.b, "2", 4000, 20),
    ];
    w.receiver.wait_lines(2000, Duration::from_secs(120));
    let before = status_json(&cluster);

    let swapped = cluster.deploy_output(&v2, &w.receiver.addr, EXACTLY_ONCE);
    assert!(swapped.contains("swapped to component"), "{swapped}");
    eprintln!("{swapped}");
    let status = cluster.command(&["status"]);
    let report = String::from_utf8_lossy(&status.stdout).into_owned();
    let hash = |wasm: &Path| -> String {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(std::fs::read(wasm).unwrap());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    };
    let (v1_hash, v2_hash) = (hash(&build_app(WORD_COUNT)), hash(&v2));
    let prefix = &v2_hash[..12];
    assert_eq!(
        report.matches(&format!("component {prefix}")).count(),
        3,
        "{report}"
    );
    assert!(
        report.contains(&format!("version {prefix}, built ")),
        "{report}"
    );
    assert!(
        report.contains(&format!("swap {} -> {prefix}", &v1_hash[..12])),
        "{report}"
    );
    eprintln!("{report}");

    // The same as one JSON object: the new version, a later generation, every key group on
    // one of the three nodes, and the swap with the stream's pause.
    let after = status_json(&cluster);
    assert_eq!(after["app"], "Word Count Application", "{after}");
    assert_eq!(before["component"], v1_hash.as_str(), "{before}");
    assert_eq!(after["component"], v2_hash.as_str(), "{after}");
    assert!(after["component_built_ms"].as_u64().is_some(), "{after}");
    let generation = |s: &serde_json::Value| s["generation"].as_u64().unwrap();
    assert!(
        generation(&after) > generation(&before),
        "{before}\n{after}"
    );
    let nodes = after["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{after}");
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(node["address"], cluster.addrs[i].as_str(), "{after}");
        assert_eq!(node["component"], v2_hash.as_str(), "{after}");
        assert_eq!(node["state"], "running", "{after}");
    }
    let groups: u64 = nodes
        .iter()
        .map(|n| n["key_groups"].as_u64().unwrap())
        .sum();
    // The default number of key groups.
    assert_eq!(groups, 1024, "{after}");
    let changes = after["changes"].as_array().unwrap();
    assert_eq!(changes[0]["kind"], "deploy", "{after}");
    let swap = changes
        .iter()
        .find(|c| c["kind"] == "swap")
        .unwrap_or_else(|| panic!("no swap in {after}"));
    assert_eq!(swap["from"], v1_hash.as_str(), "{after}");
    assert_eq!(swap["to"], v2_hash.as_str(), "{after}");
    assert_eq!(swap["failed"], false, "{after}");
    assert_eq!(
        swap["generation"].as_u64(),
        Some(generation(&after)),
        "{after}"
    );
    assert!(swap["paused_ms"].as_u64().is_some(), "{after}");

    let refused = cluster.deploy_command(&renamed, &w.receiver.addr, EXACTLY_ONCE);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(err.contains("no stateful step 'count word'"), "{err}");
    // One whose state class is gone cannot restore the running state: found on a sample of
    // keys before anything changes.
    let new_state = build_app(WORD_COUNT_NEW_STATE);
    let refused = cluster.deploy_command(&new_state, &w.receiver.addr, EXACTLY_ONCE);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("cannot restore the state of stateful step 'count word' for key 'w"),
        "{err}"
    );

    // More input after the swap, so every word is counted by the new version too.
    let c = cluster.dir.path().join("c.txt");
    let mut totals = w.totals.clone();
    for (word, n) in random_words(&c, 2000, 8, &mut rng) {
        *totals.entry(word).or_insert(0) += n;
    }
    let mut after = [ack_sender(&w.sources[0], &c, "3")];
    Workload::wait(&mut senders, &cluster);
    Workload::wait(&mut after, &cluster);
    // The refused version is a change that did not happen. Every word is a key with state
    // on one node, once the workers have copied it (at a checkpoint at the latest).
    let status = status_json(&cluster);
    let changes = status["changes"].as_array().unwrap();
    assert_eq!(changes.last().unwrap()["failed"], true, "{status}");
    let keys = |s: &serde_json::Value| -> u64 {
        let nodes = s["nodes"].as_array().unwrap();
        nodes
            .iter()
            .map(|n| n["state_keys"].as_u64().unwrap())
            .sum()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut status = status;
    while keys(&status) != totals.len() as u64 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        status = status_json(&cluster);
    }
    assert_eq!(keys(&status), totals.len() as u64, "{status}");
    assert!(
        status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state_bytes"].as_u64() > n["state_keys"].as_u64()),
        "{status}"
    );
    let stop = cluster.command(&["stop"]);
    assert!(
        stop.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&stop.stderr),
        cluster.logs()
    );
    std::thread::sleep(Duration::from_millis(300));
    let text = w.receiver.text();
    assert_eq!(counts_across_a_swap(&text), totals, "{}", cluster.logs());
}

/// A version whose stateful step has another name is refused, naming the step and the flag
/// that lets its state go; `--drop-state` naming a step that does not run is refused naming
/// it; with `--drop-state 'count word'` the version goes in, says the state was dropped, and
/// every word is counted from 1 again, exactly once.
#[test]
fn a_hot_swap_with_drop_state_lets_a_version_without_the_stateful_step_in_and_starts_afresh() {
    let cluster = Cluster::new(2);
    let mut rng = seeded("drop state");
    let w = Workload::deploy(&cluster, 1000, &mut rng);
    let renamed = build_app(WORD_COUNT_RENAMED);
    let mut senders = [
        ack_sender(&w.sources[0], &w.a, "1"),
        ack_sender(&w.sources[1], &w.b, "2"),
    ];
    Workload::wait(&mut senders, &cluster);
    w.receiver
        .wait_lines(w.words as usize, Duration::from_secs(120));

    let refused = cluster.deploy_command(&renamed, &w.receiver.addr, EXACTLY_ONCE);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(err.contains("no stateful step 'count word'"), "{err}");
    assert!(err.contains("--drop-state 'count word'"), "{err}");

    let mut extra = EXACTLY_ONCE.to_vec();
    extra.extend(["--drop-state", "count words"]);
    let refused = cluster.deploy_command(&renamed, &w.receiver.addr, &extra);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains(
            "--drop-state 'count words': the running application 'Word Count Application' has \
             no stateful step of that name (its stateful steps: 'count word')"
        ),
        "{err}\n{}",
        cluster.logs()
    );

    let mut extra = EXACTLY_ONCE.to_vec();
    extra.extend(["--drop-state", "count word"]);
    let swapped = cluster.deploy_output(&renamed, &w.receiver.addr, &extra);
    assert!(swapped.contains("swapped to component"), "{swapped}");
    assert!(
        swapped.contains("the state of stateful step 'count word' was dropped"),
        "{swapped}"
    );

    let c = cluster.dir.path().join("c.txt");
    let again = random_words(&c, 500, 8, &mut rng);
    Workload::wait(&mut [ack_sender(&w.sources[1], &c, "3")], &cluster);
    let stop = cluster.command(&["stop"]);
    assert!(stop.status.success(), "{}", cluster.logs());
    std::thread::sleep(Duration::from_millis(300));
    // Every word's counts: 1..n of the first input, then 1..m of the input after the swap.
    let text = w.receiver.text();
    let lines: Vec<&str> = text.lines().collect();
    let (before, after) = lines.split_at(w.words as usize);
    assert_eq!(final_values(&before.join("\n")), w.totals);
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for line in after {
        let (word, n) = line.rsplit_once(" => ").expect("a word count line");
        let last = counts.entry(word.to_string()).or_insert(0);
        assert_eq!(n.parse::<u64>().unwrap(), *last + 1, "{word}: {line}");
        *last += 1;
    }
    assert_eq!(counts, again, "{}", cluster.logs());
}

/// The Go word count example hot-swapped on three nodes for a version with another output
/// format, a stateless step before the KeyBy and another state type (converted with
/// `wallaroo.UpgradeState`), while acknowledged senders stream into two nodes: every word's
/// counts run on exactly once and switch format once.
#[test]
fn a_go_app_is_hot_swapped_on_three_nodes_with_every_count_exactly_once() {
    let cluster = Cluster::new(3);
    let mut rng = seeded("hot swap, Go");
    let v1 = build_go_app("guest-sdks/go/examples/word_count");
    let v2 = build_go_app("tests/apps/go_word_count_swap");
    let w = Workload::deploy_app(&cluster, &v1, 4000, &mut rng);
    let mut senders = [
        slow_ack_sender(&w.sources[1], &w.a, "1", 4000, 20),
        slow_ack_sender(&w.sources[2], &w.b, "2", 4000, 20),
    ];
    w.receiver.wait_lines(2000, Duration::from_secs(120));
    let swapped = cluster.deploy_output(&v2, &w.receiver.addr, EXACTLY_ONCE);
    assert!(swapped.contains("swapped to component"), "{swapped}");
    eprintln!("{swapped}");

    let c = cluster.dir.path().join("c.txt");
    let mut totals = w.totals.clone();
    for (word, n) in random_words(&c, 2000, 8, &mut rng) {
        *totals.entry(word).or_insert(0) += n;
    }
    let mut after = [ack_sender(&w.sources[0], &c, "3")];
    Workload::wait(&mut senders, &cluster);
    Workload::wait(&mut after, &cluster);
    let stop = cluster.command(&["stop"]);
    assert!(stop.status.success(), "{}", cluster.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        counts_across_a_swap(&w.receiver.text()),
        totals,
        "{}",
        cluster.logs()
    );
}

/// Node 2 is killed with SIGKILL at a random moment of a hot swap (while the nodes make the new
/// version ready, during its checkpoint, or after its record) and restarted. The cluster ends
/// with one version everywhere: the deploy succeeds and every word switches to the new output
/// format once, or it fails and no word ever does; either way every word's counts run 1..n
/// with nothing lost or repeated.
#[test]
fn a_node_killed_during_a_hot_swap_leaves_one_version_with_exactly_once_output() {
    let mut cluster = Cluster::new(3);
    let mut rng = seeded("kill during a swap");
    let w = Workload::deploy(&cluster, 4000, &mut rng);
    let v2 = build_app(WORD_COUNT_SWAP);
    let mut senders = [
        slow_ack_sender(&w.sources[1], &w.a, "1", 4000, 20),
        slow_ack_sender(&w.sources[2], &w.b, "2", 4000, 20),
    ];
    w.receiver.wait_lines(1000, Duration::from_secs(120));

    let deployed = cluster.deploy_in_background(&v2, &w.receiver.addr);
    let delay = Duration::from_millis(rng.random_range(0..400));
    std::thread::sleep(delay);
    eprintln!("killing node 2 {} ms into the swap", delay.as_millis());
    cluster.nodes[2].signal(libc::SIGKILL);
    cluster.nodes[2].wait(Duration::from_secs(10));
    let own = cluster.node_certs[2].clone();
    cluster.nodes[2] = cluster.start_node(2, &own);
    let deployed = deployed
        .recv_timeout(Duration::from_secs(240))
        .unwrap_or_else(|_| panic!("the deploy still waits after 240 s\n{}", cluster.logs()));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&deployed.stdout),
        String::from_utf8_lossy(&deployed.stderr)
    );
    let swapped = deployed.status.success();
    eprintln!(
        "the swap {}: {said}",
        if swapped { "happened" } else { "failed" }
    );
    if swapped {
        assert!(said.contains("swapped to component"), "{said}");
    }

    // More input once the cluster runs again, so every word is counted after the swap.
    let c = cluster.dir.path().join("c.txt");
    let mut totals = w.totals.clone();
    for (word, n) in random_words(&c, 2000, 8, &mut rng) {
        *totals.entry(word).or_insert(0) += n;
    }
    let mut after = [ack_sender(&w.sources[0], &c, "3")];
    Workload::wait(&mut senders, &cluster);
    Workload::wait(&mut after, &cluster);
    let stop = cluster.command(&["stop"]);
    assert!(
        stop.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&stop.stderr),
        cluster.logs()
    );
    std::thread::sleep(Duration::from_millis(300));
    let text = w.receiver.text();
    if swapped {
        assert_eq!(counts_across_a_swap(&text), totals, "{}", cluster.logs());
    } else {
        assert!(
            !text.contains(" := "),
            "a failed swap let the new version's output out"
        );
        assert_eq!(running_counts(&text), totals, "{}", cluster.logs());
    }
}

/// Word count deployed with exactly-once output on the first three of four nodes, the fourth
/// started and holding nothing; the hosts file names what the next deploy asks for.
struct OnThreeOfFour {
    cluster: Cluster,
    wasm: PathBuf,
    a: PathBuf,
    b: PathBuf,
    totals: std::collections::BTreeMap<String, u64>,
    receiver: Receiver,
    deployed: String,
}

impl OnThreeOfFour {
    fn deploy(what: &str) -> OnThreeOfFour {
        let cluster = Cluster::new(4);
        let mut rng = seeded(what);
        let a = cluster.dir.path().join("a.txt");
        let b = cluster.dir.path().join("b.txt");
        let mut totals = random_words(&a, 3000, 8, &mut rng);
        for (w, n) in random_words(&b, 1500, 8, &mut rng) {
            *totals.entry(w).or_insert(0) += n;
        }
        let receiver = Receiver::start_on(cluster.dir.path(), cluster.hosts.outside());
        let wasm = build_app(WORD_COUNT);
        let mut setup = OnThreeOfFour {
            cluster,
            wasm,
            a,
            b,
            totals,
            receiver,
            deployed: String::new(),
        };
        setup.hosts(&[0, 1, 2]);
        setup.deployed = setup.deploy_output();
        setup
    }

    /// The hosts file names nodes `nodes`.
    fn hosts(&self, nodes: &[usize]) {
        let lines: Vec<&str> = nodes
            .iter()
            .map(|&i| self.cluster.addrs[i].as_str())
            .collect();
        std::fs::write(&self.cluster.hosts_file, lines.join("\n") + "\n").unwrap();
    }

    fn deploy_output(&self) -> String {
        let receiver = &self.receiver.addr;
        self.cluster
            .deploy_output(&self.wasm, receiver, EXACTLY_ONCE)
    }

    /// Where node `i`'s source listens, from the first deploy's output ("source node 0:
    /// Split and Count 10.200.1.2:1024").
    fn source(&self, i: usize) -> String {
        let prefix = format!("source node {i}: ");
        let line = self.deployed.lines().find(|l| l.starts_with(&prefix));
        line.unwrap_or_else(|| panic!("{}", self.deployed))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string()
    }

    /// Each running node's key groups, in order.
    fn key_groups(&self) -> Vec<u64> {
        let status = status_json(&self.cluster);
        let nodes = status["nodes"].as_array().unwrap();
        nodes
            .iter()
            .map(|n| n["key_groups"].as_u64().unwrap())
            .collect()
    }

    /// Stops the application: every word's counts ran 1..n, nothing lost or repeated.
    fn stop_and_check(&self) {
        let stop = self.cluster.command(&["stop"]);
        assert!(
            stop.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&stop.stderr),
            self.cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
        let text = self.receiver.text();
        assert_eq!(
            running_counts(&text),
            self.totals,
            "{}",
            self.cluster.logs()
        );
        assert_eq!(
            text.lines().count() as u64,
            self.totals.values().sum::<u64>()
        );
    }
}

/// Word count deployed on three of four nodes, with acknowledged input streaming throughout:
/// a deploy naming all four grows the cluster (the fourth takes a quarter of the key groups,
/// with their state), one with two workers a node changes that live, then one naming two
/// shrinks it (the other two hand theirs over and stop, saying so). Every word's counts run
/// 1..n across all of it, with nothing lost or repeated.
#[test]
fn a_grow_and_a_shrink_move_key_groups_with_their_state_and_every_count_stays_exactly_once() {
    let w = OnThreeOfFour::deploy("grow and shrink");
    let mut first = [slow_ack_sender(&w.source(0), &w.a, "1", 3000, 25)];
    w.receiver.wait_lines(2000, Duration::from_secs(120));

    w.hosts(&[0, 1, 2, 3]);
    let grown = w.deploy_output();
    let added = format!("added {}", w.cluster.addrs[3]);
    assert!(grown.contains(&added), "{grown}");
    assert_eq!(w.key_groups(), [256, 256, 256, 256]);
    let status = status_json(&w.cluster);
    let changes = status["changes"].as_array().unwrap();
    assert_eq!(changes.last().unwrap()["kind"], "grow", "{status}");
    // Deploying the same again changes nothing.
    let same = w.deploy_output();
    assert!(same.contains("nothing to change"), "{same}");
    let seen = w.receiver.text().lines().count();
    w.receiver.wait_lines(seen + 1000, Duration::from_secs(120));

    // An option that can change does so live, the state kept: two workers a node.
    let wasm = w.wasm.to_string_lossy().into_owned();
    let in_arg = format!("127.0.0.1:{APP_SOURCE_PORT}");
    let mut args = vec!["deploy", "--workers", "2"];
    args.extend(EXACTLY_ONCE);
    args.extend([wasm.as_str(), "--in", &in_arg, "--out", &w.receiver.addr]);
    let out = w.cluster.command(&args);
    let said = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}{err}");
    assert!(said.contains("changed options"), "{said}");
    let report = String::from_utf8_lossy(&w.cluster.command(&["status"]).stdout).into_owned();
    assert_eq!(report.matches(", 2 workers, ").count(), 4, "{report}");
    let seen = w.receiver.text().lines().count();
    w.receiver.wait_lines(seen + 500, Duration::from_secs(120));

    w.hosts(&[0, 1]);
    let shrunk = w.deploy_output();
    assert!(shrunk.contains("removed"), "{shrunk}");
    assert_eq!(w.key_groups(), [512, 512]);
    for i in [2, 3] {
        w.cluster.nodes[i].wait_line("no longer a member", Duration::from_secs(30));
    }
    // Node 1's source takes input again after the shrink.
    let mut second = [ack_sender(&w.source(1), &w.b, "2")];
    Workload::wait(&mut first, &w.cluster);
    Workload::wait(&mut second, &w.cluster);
    w.stop_and_check();
}

/// A node (an old member or the new one) is killed with SIGKILL during a grow from three
/// nodes to four: when a node hands its key groups over, or at a random moment of the change,
/// and restarted. The cluster ends with one table: the deploy succeeds and the four nodes
/// share the key groups, or it fails and the three do as before; either way every word's
/// counts run 1..n with nothing lost or repeated.
#[test]
fn a_node_killed_during_a_grow_leaves_one_table_with_exactly_once_output() {
    let mut w = OnThreeOfFour::deploy("kill during a grow");
    let mut rng = seeded("kill during a grow: when");
    let mut first = [slow_ack_sender(&w.source(0), &w.a, "1", 3000, 20)];
    w.receiver.wait_lines(1000, Duration::from_secs(120));

    w.hosts(&[0, 1, 2, 3]);
    let deployed = w.cluster.deploy_in_background(&w.wasm, &w.receiver.addr);
    let victim = [1, 3][rng.random_range(0..2)];
    if rng.random_bool(0.5) {
        // As the victim's key groups' state is handed over, or the state moved to it is.
        let at = match victim {
            3 => 1,
            v => v,
        };
        w.cluster.nodes[at].wait_line("keys' state over at checkpoint", Duration::from_secs(60));
        eprintln!("killing node {victim} as node {at} has handed its key groups over");
    } else {
        let delay = Duration::from_millis(rng.random_range(0..1500));
        std::thread::sleep(delay);
        eprintln!(
            "killing node {victim} {} ms into the grow",
            delay.as_millis()
        );
    }
    w.cluster.nodes[victim].signal(libc::SIGKILL);
    w.cluster.nodes[victim].wait(Duration::from_secs(10));
    let own = w.cluster.node_certs[victim].clone();
    w.cluster.nodes[victim] = w.cluster.start_node(victim, &own);
    let deployed = deployed
        .recv_timeout(Duration::from_secs(240))
        .unwrap_or_else(|_| panic!("the deploy still waits after 240 s\n{}", w.cluster.logs()));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&deployed.stdout),
        String::from_utf8_lossy(&deployed.stderr)
    );
    let grown = deployed.status.success();
    eprintln!(
        "the grow {}: {said}",
        if grown { "happened" } else { "failed" }
    );
    if !grown {
        w.hosts(&[0, 1, 2]);
    }
    // Once the cluster runs again, the table is one or the other, never a mix.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let groups = loop {
        let status = status_json(&w.cluster);
        let running = status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "running");
        if running || std::time::Instant::now() > deadline {
            break w.key_groups();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    match grown {
        true => assert_eq!(groups, [256, 256, 256, 256], "{said}"),
        false => assert_eq!(groups, [342, 341, 341], "{said}"),
    }
    let mut second = [ack_sender(&w.source(1), &w.b, "2")];
    Workload::wait(&mut first, &w.cluster);
    Workload::wait(&mut second, &w.cluster);
    w.stop_and_check();
}

/// A new version that passes the check before the switch (it restores a sample of the state)
/// but cannot restore the rest once it is recorded: the cluster goes back to the version it
/// ran, as the next version, from the same checkpoint; the deploy fails saying which node and
/// why; every word's counts run 1..n in the old format with nothing lost or repeated.
#[test]
fn a_version_that_cannot_start_once_recorded_is_changed_back_from_with_nothing_lost() {
    let cluster = Cluster::new(3);
    let mut rng = seeded("change back");
    let w = Workload::deploy(&cluster, 3000, &mut rng);
    let mut senders = [
        slow_ack_sender(&w.sources[1], &w.a, "1", 3000, 15),
        slow_ack_sender(&w.sources[2], &w.b, "2", 3000, 15),
    ];
    w.receiver.wait_lines(1500, Duration::from_secs(120));
    let v1 = status_json(&cluster)["component"].clone();

    let broken = build_app(WORD_COUNT_BREAKS_ON_START);
    let out = cluster.deploy_command(&broken, &w.receiver.addr, EXACTLY_ONCE);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("cannot start version 1"), "{err}");
    assert!(err.contains("cannot restore more than 20 keys"), "{err}");
    assert!(err.contains("went back to what ran before it"), "{err}");
    let status = status_json(&cluster);
    assert_eq!(status["component"], v1, "{status}");
    for node in status["nodes"].as_array().unwrap() {
        assert_eq!(node["component"], v1, "{status}");
    }
    Workload::wait(&mut senders, &cluster);
    w.check(cluster.command(&["stop"]), &cluster);
}

#[test]
fn sliding_windows_on_three_nodes_fire_by_the_watermark_and_hold_every_message_twice() {
    use crate::windows::{APP, assert_each_message_in_two_windows, transactions, wait_for_windows};
    let wasm = build_app(APP);
    let cluster = Cluster::new(3);
    let mut rng = seeded("windows on three nodes");
    let a = cluster.dir.path().join("a.txt");
    let b = cluster.dir.path().join("b.txt");
    let mut amounts = transactions(&a, 2000, &mut rng);
    for (user, more) in transactions(&b, 2000, &mut rng) {
        amounts.entry(user).or_default().extend(more);
    }
    let receiver = Receiver::start_on(cluster.dir.path(), cluster.hosts.outside());
    let sources = cluster.deploy(&wasm, &receiver.addr, EXACTLY_ONCE);
    // Input at two nodes; every user's windows are on one node, fed by all three.
    let mut send_a = ack_sender(&sources[0], &a, "1");
    let mut send_b = ack_sender(&sources[2], &b, "2");
    for s in [&mut send_a, &mut send_b] {
        assert_eq!(s.wait(Duration::from_secs(120)), Some(0), "{}", s.stderr());
    }
    let all = 2 * 4000;
    let text = wait_for_windows(&receiver, all, 60, || cluster.logs());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(receiver.text(), text, "a window fired twice");
    assert_each_message_in_two_windows(&text, &amounts);
}

#[test]
fn a_cluster_deployed_to_finish_fires_every_window_at_the_end_and_the_deploy_then_exits_0() {
    use crate::finish::send_ended;
    use crate::windows::{event_time_input, windows};
    let wasm = build_app(crate::windows::APP);
    let cluster = Cluster::new(3);
    let mut rng = seeded("finish on three nodes");
    // One stream of event times, its lines dealt to two senders: each stays in time order.
    let all = cluster.dir.path().join("all.txt");
    let expected = event_time_input(&all, 3000, &mut rng);
    let text = std::fs::read_to_string(&all).unwrap();
    let (a, b) = (
        cluster.dir.path().join("a.txt"),
        cluster.dir.path().join("b.txt"),
    );
    let dealt = |parity| -> String {
        let lines = text.lines().enumerate().filter(|(i, _)| i % 2 == parity);
        lines.map(|(_, l)| format!("{l}\n")).collect()
    };
    std::fs::write(&a, dealt(0)).unwrap();
    std::fs::write(&b, dealt(1)).unwrap();
    // Stream 2's first half goes before stream 1 ends, the rest after: a cluster that finished
    // early would lose it.
    let b_half = cluster.dir.path().join("b_half.txt");
    let half: String = dealt(1)
        .lines()
        .take(750)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&b_half, half).unwrap();
    let receiver = Receiver::start_on(cluster.dir.path(), cluster.hosts.outside());
    // The deploy waits for the end: its output (sent to standard error here) names the sources.
    let mut deploy = Command::new("sh");
    deploy
        .args(["-c", "exec \"$0\" \"$@\" 1>&2"])
        .arg(wallaroo())
        .args(["deploy", "--workers", "1", "--finish"])
        .args(EXACTLY_ONCE)
        .arg(&wasm)
        .args(["--in", &format!("127.0.0.1:{APP_SOURCE_PORT}")])
        .args(["--out", &receiver.addr, "--event-time"])
        .arg("--nodes")
        .arg(&cluster.hosts_file)
        .arg("--certs")
        .arg(&cluster.certs);
    let mut deploy = Proc::spawn("deploy", deploy);
    let source = |node: usize| {
        let line = deploy.wait_line(&format!("source node {node}:"), Duration::from_secs(120));
        line.rsplit(' ').next().unwrap().to_string()
    };
    let (first, last) = (source(0), source(2));
    deploy.wait_line("waiting for", Duration::from_secs(10));
    // Both streams at once, stream 2 half of it; stream 1 ends; then stream 2's rest and end.
    let mut send_a = ack_sender(&first, &a, "1");
    let mut send_b = ack_sender(&last, &b_half, "2");
    for s in [&mut send_a, &mut send_b] {
        assert_eq!(s.wait(Duration::from_secs(120)), Some(0), "{}", s.stderr());
    }
    send_ended(&first, &a, "1");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!deploy.has_exited(), "finished with stream 2 not ended");
    send_ended(&last, &b, "2");
    assert_eq!(
        deploy.wait(Duration::from_secs(120)),
        Some(0),
        "{}\n{}",
        deploy.stderr(),
        cluster.logs()
    );
    assert!(
        deploy.stderr().contains("finished 'Window totals'"),
        "{}",
        deploy.stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(windows(&receiver.text()), expected);
    let status = cluster.command(&["status"]);
    let report = String::from_utf8_lossy(&status.stdout);
    assert!(report.contains("no application"), "{report}");
}

#[test]
fn expiring_state_on_three_nodes_says_farewell_once_and_status_counts_the_keys_down_to_zero() {
    use crate::expiry::{APP, histories};
    let wasm = build_app(APP);
    let cluster = Cluster::new(3);
    let mut rng = seeded("expiry on three nodes");
    // Each sender its own users, so that each user's messages keep their order.
    let mut amounts: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    let files: Vec<PathBuf> = ["a", "b"]
        .iter()
        .map(|prefix| {
            let mut text = String::new();
            for _ in 0..1500 {
                let user = format!("{prefix}{}", rng.random_range(0..12));
                let amount = rng.random_range(-500..500i64);
                text.push_str(&format!("{user},{amount}\n"));
                amounts.entry(user).or_default().push(amount);
            }
            let path = cluster.dir.path().join(format!("{prefix}.txt"));
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect();
    let receiver = Receiver::start_on(cluster.dir.path(), cluster.hosts.outside());
    let app_args = ["--expire-after-ms", "5000"];
    let sources = cluster.deploy_with(&wasm, &receiver.addr, EXACTLY_ONCE, &app_args);
    let mut send_a = ack_sender(&sources[0], &files[0], "1");
    let mut send_b = ack_sender(&sources[2], &files[1], "2");
    for s in [&mut send_a, &mut send_b] {
        assert_eq!(s.wait(Duration::from_secs(120)), Some(0), "{}", s.stderr());
    }
    let keys = |status: &serde_json::Value| -> u64 {
        let nodes = status["nodes"].as_array().unwrap();
        nodes
            .iter()
            .map(|n| n["state_keys"].as_u64().unwrap())
            .sum()
    };
    let held = keys(&status_json(&cluster));
    assert!(held > 0, "no keys held right after the input");
    let done = wait_until(Duration::from_secs(60), || {
        let h = histories(&receiver.text(), &amounts);
        let all = amounts.iter().all(|(u, a)| {
            h.get(u)
                .is_some_and(|h| h.messages == a.len() && h.ended_expired)
        });
        all.then_some(h)
    })
    .unwrap_or_else(|| {
        panic!(
            "not every user expired; the nodes said:\n{}",
            cluster.logs()
        )
    });
    assert!(done.values().all(|h| h.expiries == 1), "{done:?}");
    let left = wait_until(Duration::from_secs(10), || {
        let k = keys(&status_json(&cluster));
        (k == 0).then_some(k)
    });
    assert_eq!(
        left,
        Some(0),
        "keys left after every user expired (held {held} before)"
    );
}
