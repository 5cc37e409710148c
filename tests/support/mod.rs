//! Fixtures for the end-to-end tests: the `wallaroo` binary, components built from Python apps
//! (once per test run, cached by content), child processes whose output is watched, and several
//! hosts on one machine for cluster tests ([`hosts`]).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub mod hosts;
pub mod kafka;

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `target/<profile>/wallaroo`, next to the test binary's `deps/` directory.
pub fn wallaroo() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .join("wallaroo");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --bin wallaroo` (scripts/test does)",
        bin.display()
    );
    bin
}

/// A scratch directory under target/, kept between runs (build outputs and compile cache).
pub fn scratch() -> PathBuf {
    let dir = root().join("target").join("e2e");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Builds the Python application `app` (a path relative to the repository root) with
/// `wallaroo build`, once per distinct content of the app's directory, the SDK and the WIT.
pub fn build_app(app: &str) -> PathBuf {
    let source = root().join(app);
    let mut inputs = Vec::new();
    for dir in [
        source.parent().unwrap().to_path_buf(),
        root().join("guest-sdks/python/wallaroo"),
    ] {
        inputs.extend(
            std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "py")),
        );
    }
    let stem = source.file_stem().unwrap().to_string_lossy().into_owned();
    build_component(app, &source, inputs, &stem)
}

/// Builds the Go main package `package` (a path relative to the repository root), once per
/// distinct content of the Go SDK module (which holds the examples), the package's own
/// directory (a test app with its own go.mod) and the WIT.
pub fn build_go_app(package: &str) -> PathBuf {
    let mut inputs = Vec::new();
    let source = root().join(package);
    for dir in [root().join("guest-sdks/go"), source.clone()] {
        collect_files(&dir, &["go", "mod", "sum"], &mut inputs);
    }
    inputs.sort();
    inputs.dedup();
    let stem = source.file_name().unwrap().to_string_lossy().into_owned();
    build_component(package, &source, inputs, &format!("go-{stem}"))
}

/// `wallaroo build SOURCE` into target/e2e, named by `name` and a hash of `inputs`, the WIT and
/// the `wallaroo` binary; built once per test run and reused across runs while nothing changed.
fn build_component(id: &str, source: &Path, mut inputs: Vec<PathBuf>, name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    // Hold the lock while building: concurrent tests wanting the same app wait for one build.
    let mut built = built.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.get(id) {
        return path.clone();
    }
    collect_files(&root().join("wit"), &["wit"], &mut inputs);
    inputs.sort();
    let mut hash = Sha256::new();
    hash.update(id.as_bytes());
    for f in &inputs {
        hash.update(f.as_os_str().as_encoded_bytes());
        hash.update(std::fs::read(f).unwrap());
    }
    hash.update(
        std::fs::read(wallaroo())
            .map(|b| b.len().to_le_bytes())
            .unwrap(),
    );
    let digest: String = hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let out = scratch().join(format!("{name}-{digest}.wasm"));
    if !out.exists() {
        let status = Command::new(wallaroo())
            .arg("build")
            .arg(source)
            .arg("-o")
            .arg(&out)
            .status()
            .expect("running wallaroo build");
        assert!(status.success(), "wallaroo build {id} failed");
    }
    built.insert(id.to_string(), out.clone());
    out
}

/// A child process whose standard error is collected line by line as it runs.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let (lock, cv) = &*sink;
                lock.lock().unwrap().push(line);
                cv.notify_all();
            }
        });
        Proc {
            name: name.to_string(),
            child: Some(child),
            lines,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("process still running").id()
    }

    /// Everything the process has written to standard error so far.
    pub fn stderr(&self) -> String {
        self.lines.0.lock().unwrap().join("\n")
    }

    /// Waits for a line containing `needle` and returns it.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        let (lock, cv) = &*self.lines;
        let deadline = Instant::now() + timeout;
        let mut lines = lock.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "{}: no line with {needle:?} within {timeout:?}; stderr:\n{}",
                self.name,
                lines.join("\n")
            );
            lines = cv.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    /// The address in the line `... listening on ADDR` that contains `needle`.
    pub fn listening_addr(&self, needle: &str) -> String {
        let line = self.wait_line(needle, Duration::from_secs(120));
        line.rsplit("listening on ")
            .next()
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
        }
    }

    /// Sends SIGTERM and waits for the exit; returns the exit code.
    pub fn stop(&mut self, timeout: Duration) -> Option<i32> {
        self.signal(libc::SIGTERM);
        self.wait(timeout)
    }

    /// True once the process has exited (it is not reaped: [`Proc::wait`] still gives its code).
    pub fn has_exited(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().unwrap().is_some(),
            None => true,
        }
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Give the reader thread a moment to collect the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return status.code();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit within {timeout:?}; stderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `wallaroo receive` on a free port, writing to a file in `dir`.
pub struct Receiver {
    pub proc: Proc,
    pub addr: String,
    pub output: PathBuf,
}

impl Receiver {
    pub fn start(dir: &Path) -> Receiver {
        Receiver::start_on(dir, "127.0.0.1".parse().unwrap())
    }

    /// A receiver listening on `ip` (for nodes in other network namespaces to reach).
    pub fn start_on(dir: &Path, ip: std::net::IpAddr) -> Receiver {
        let output = dir.join("received.txt");
        let mut cmd = Command::new(wallaroo());
        cmd.args(["receive", "--listen", &format!("{ip}:0"), "--output"])
            .arg(&output);
        let proc = Proc::spawn("receive", cmd);
        let addr = proc.listening_addr("listening on");
        Receiver { proc, addr, output }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.output).unwrap_or_default()).into_owned()
    }

    /// Waits until the output holds at least `lines` lines.
    pub fn wait_lines(&self, lines: usize, timeout: Duration) -> String {
        wait_until(timeout, || {
            let text = self.text();
            (text.lines().count() >= lines).then_some(text)
        })
        .unwrap_or_else(|| {
            panic!(
                "receiver got {} of {lines} lines within {timeout:?}:\n{}",
                self.text().lines().count(),
                tail(&self.text(), 20)
            )
        })
    }
}

/// `wallaroo run APP` with a TCP source on a free port and its sink pointed at `sink`.
pub struct Node {
    pub proc: Proc,
    pub source: String,
    pub data_dir: PathBuf,
}

impl Node {
    pub fn start(wasm: &Path, sink: &str, dir: &Path, extra: &[&str]) -> Node {
        Node::start_at(wasm, "127.0.0.1:0", sink, dir, extra)
    }

    /// A node whose source listens on `source` (a restarted node keeps its address).
    pub fn start_at(wasm: &Path, source: &str, sink: &str, dir: &Path, extra: &[&str]) -> Node {
        Node::start_wrapped(&[], wasm, source, sink, dir, extra)
    }

    /// As [`Node::start_at`], run through `wrapper` (a command that ends by running its
    /// arguments, e.g. a shell that sets limits first).
    pub fn start_wrapped(
        wrapper: &[&str],
        wasm: &Path,
        source: &str,
        sink: &str,
        dir: &Path,
        extra: &[&str],
    ) -> Node {
        let data_dir = dir.join("data");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(wallaroo());
                cmd
            }
            None => Command::new(wallaroo()),
        };
        cmd.arg("run")
            .arg(wasm)
            .args(["--in", source, "--out", sink, "--data-dir"])
            .arg(&data_dir)
            .arg("--cache-dir")
            .arg(scratch().join("cache"))
            .args(extra);
        let proc = Proc::spawn("run", cmd);
        let source = proc.listening_addr("listening on");
        Node {
            proc,
            source,
            data_dir,
        }
    }

    /// The dead-letter log's entries.
    pub fn dead_letters(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.data_dir.join("dead-letter.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("dead-letter lines are JSON"))
            .collect()
    }
}

/// A faulty word-count app (Python or Go) after it was sent `lines` twice, once a message per
/// write and once all at once, so failures land inside and across batches.
pub struct FaultyRun {
    pub node: Node,
    /// The node's closing `stopped: ...` line.
    pub summary: String,
    _dir: tempfile::TempDir,
}

/// Runs a faulty app (see tests/apps/faulty) on `lines`, checks that the good words were each
/// counted exactly once per send (apple 10, banana 4, cherry 2 in all, nothing else), and stops
/// the node cleanly.
pub fn run_faulty(wasm: &Path, extra: &[&str], lines: &[&[u8]]) -> FaultyRun {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let mut args = vec![
        "--workers",
        "2",
        "--call-timeout",
        "2000",
        "--max-memory",
        "128",
    ];
    args.extend_from_slice(extra);
    let mut node = Node::start(wasm, &receiver.addr, dir.path(), &args);
    let mut input = Vec::new();
    for line in lines {
        input.extend_from_slice(line);
        input.push(b'\n');
    }
    let file = dir.path().join("input.txt");
    std::fs::write(&file, &input).unwrap();
    send(&node.source, &file, &["--batch-size", "1"]);
    send(&node.source, &file, &["--batch-size", "100"]);

    let text = receiver.wait_lines(16, Duration::from_secs(120));
    let counts = running_counts(&text);
    assert_eq!(counts["apple"], 10, "{text}");
    assert_eq!(counts["banana"], 4, "{text}");
    assert_eq!(counts["cherry"], 2, "{text}");
    assert_eq!(counts.len(), 3, "{text}");
    assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
    let summary = node.proc.wait_line("stopped:", Duration::from_secs(1));
    FaultyRun {
        node,
        summary,
        _dir: dir,
    }
}

/// The seed for a test's random choices: `WALLAROO_TEST_SEED` when set, else a new one each
/// run. It is printed, so a failing run can be replayed with the same choices.
pub fn test_seed(what: &str) -> u64 {
    let seed = std::env::var("WALLAROO_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
    eprintln!("{what}: seed {seed} (replay with WALLAROO_TEST_SEED={seed})");
    seed
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free port")
        .port()
}

/// Runs `wallaroo send` to completion.
pub fn send(addr: &str, file: &Path, extra: &[&str]) {
    let out = Command::new(wallaroo())
        .args(["send", "--host", addr, "--file"])
        .arg(file)
        .args(extra)
        .output()
        .expect("running wallaroo send");
    assert!(
        out.status.success(),
        "wallaroo send failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `f` every 20 ms until it returns Some or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<_> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Parses `KEY => N` lines and checks each key's counts run 1, 2, 3... with no gap or repeat
/// (for running counts that grow by one); returns the final count per key.
pub fn running_counts(text: &str) -> BTreeMap<String, u64> {
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for line in text.lines() {
        let (key, n) = line
            .rsplit_once(" => ")
            .unwrap_or_else(|| panic!("not a `KEY => N` line: {line:?}"));
        let n: u64 = n
            .parse()
            .unwrap_or_else(|_| panic!("bad count in {line:?}"));
        let prev = last.insert(key.to_string(), n).unwrap_or(0);
        assert_eq!(n, prev + 1, "count for {key:?} went from {prev} to {n}");
    }
    last
}

/// Parses `KEY => N` lines and returns the last N per key.
pub fn final_values(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .map(|line| {
            let (key, n) = line.rsplit_once(" => ").expect("a `KEY => N` line");
            (key.to_string(), n.parse().expect("a number"))
        })
        .collect()
}

/// Reads an example's expected final values (`KEY => N` lines).
pub fn expected(path: &str) -> BTreeMap<String, u64> {
    final_values(&std::fs::read_to_string(root().join(path)).unwrap())
}

fn collect_files(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, exts, out);
        } else if path
            .extension()
            .is_some_and(|e| exts.iter().any(|x| e == *x))
        {
            out.push(path);
        }
    }
}

/// Writes `lines` lines of `per_line` random words (w0..w299) to `path`; returns each word's
/// total.
pub fn random_words(
    path: &Path,
    lines: usize,
    per_line: usize,
    rng: &mut rand::rngs::StdRng,
) -> BTreeMap<String, u64> {
    use rand::RngExt as _;
    let mut totals = BTreeMap::new();
    let mut text = String::new();
    for _ in 0..lines {
        let words: Vec<String> = (0..per_line)
            .map(|_| format!("w{}", rng.random_range(0..300u32)))
            .collect();
        for w in &words {
            *totals.entry(w.clone()).or_insert(0) += 1;
        }
        text.push_str(&words.join(" "));
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
    totals
}

/// `wallaroo send --ack` of `input` to `source`, running until every line is acknowledged.
pub fn ack_sender(source: &str, input: &Path, stream_id: &str) -> Proc {
    let mut cmd = Command::new(wallaroo());
    cmd.args(["send", "--host", source, "--file"])
        .arg(input)
        .args(["--ack", "--stream-id", stream_id, "--batch-size", "100"]);
    Proc::spawn(&format!("send {stream_id}"), cmd)
}

/// The word count example with a stateless step before its key_by and another output format
/// (`WORD := COUNT`), and one whose stateful step has another name.
pub const WORD_COUNT_SWAP: &str = "tests/apps/word_count_swap/word_count.py";
pub const WORD_COUNT_RENAMED: &str = "tests/apps/word_count_renamed/word_count.py";
/// A version of word count that restores a sample of its state and fails on the rest.
pub const WORD_COUNT_BREAKS_ON_START: &str = "tests/apps/word_count_breaks_on_start/word_count.py";

/// Kills `node` with SIGKILL and starts it again with `start` (on the same data directory)
/// each time `progress()` reaches the next of `points`, waiting up to 120 s for each.
pub fn kill_at(
    node: &mut Node,
    points: &[u64],
    progress: impl Fn() -> u64,
    start: impl Fn() -> Node,
) {
    for &point in points {
        wait_until(Duration::from_secs(120), || {
            (progress() >= point).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "output stalled before {point}; the node said:\n{}",
                node.proc.stderr()
            )
        });
        node.proc.signal(libc::SIGKILL);
        node.proc.wait(Duration::from_secs(10));
        *node = start();
    }
}

/// `wallaroo run` of `wasm`, whose sources are generators (no `--in`), writing to `sink`, its
/// data in `dir`, with `extra` options and arguments.
pub fn run_generating(name: &str, wasm: &Path, sink: &str, dir: &Path, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(wallaroo());
    cmd.arg("run")
        .arg(wasm)
        .args(["--out", sink, "--data-dir"])
        .arg(dir.join("data"))
        .arg("--cache-dir")
        .arg(scratch().join("cache"))
        .args(extra);
    Proc::spawn(name, cmd)
}

/// `wallaroo send --ack` of `input` to `source`, spread over about `secs` seconds.
pub fn slow_ack_sender(
    source: &str,
    input: &Path,
    stream_id: &str,
    lines: usize,
    secs: u64,
) -> Proc {
    let writes = lines.div_ceil(100).max(1) as u64;
    let interval = (secs * 1_000_000_000 / writes).to_string();
    let mut cmd = Command::new(wallaroo());
    cmd.args(["send", "--host", source, "--file"])
        .arg(input)
        .args(["--ack", "--stream-id", stream_id, "--batch-size", "100"])
        .args(["--interval", &interval]);
    Proc::spawn(&format!("send {stream_id}"), cmd)
}

/// Every word's counts in `text` (lines `WORD => N` of the first version, `WORD := N` of the
/// second) run 1, 2, 3... with no gap or repeat across the swap, and switch format once, from
/// the first to the second. Returns the last count per word.
pub fn counts_across_a_swap(text: &str) -> std::collections::BTreeMap<String, u64> {
    let mut last: std::collections::BTreeMap<String, (u64, bool)> = Default::default();
    for line in text.lines() {
        let (word, n, swapped) = match line.rsplit_once(" := ") {
            Some((w, n)) => (w, n, true),
            None => {
                let (w, n) = line
                    .rsplit_once(" => ")
                    .unwrap_or_else(|| panic!("not a word count line: {line:?}"));
                (w, n, false)
            }
        };
        let n: u64 = n
            .parse()
            .unwrap_or_else(|_| panic!("bad count in {line:?}"));
        let (prev, was_swapped) = last.get(word).copied().unwrap_or((0, false));
        assert_eq!(n, prev + 1, "count for {word:?} went from {prev} to {n}");
        assert!(
            swapped || !was_swapped,
            "{word:?} went back to the old output format at {n}"
        );
        last.insert(word.to_string(), (n, swapped));
    }
    for (word, (_, swapped)) in &last {
        assert!(swapped, "{word:?} never switched to the new output format");
    }
    last.into_iter().map(|(w, (n, _))| (w, n)).collect()
}
