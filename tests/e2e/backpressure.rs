//! A sink that reads slowly slows the sources: the node's memory stays bounded and nothing is
//! dropped.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use wallaroo_tests::*;

/// Resident memory of `pid`, in MiB.
fn rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024
}

#[test]
fn a_slow_sink_bounds_memory_and_loses_nothing() {
    const FRAMES: usize = 10_000;
    const REPEATS: usize = 10;
    const FRAME: usize = 4096;
    // 400 MB go through a sink that takes 20 MB/s: a node that buffered instead of pushing
    // back would hold hundreds of MB; one that pushes back stays at its working set.
    const BOUND_MIB: u64 = 512;

    let wasm = build_app("tests/apps/passthrough/passthrough.py");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("frames.txt");
    let mut text = String::with_capacity(FRAMES * (FRAME + 1));
    for i in 0..FRAMES {
        text.push_str(&format!("{i:08} {}\n", "x".repeat(FRAME - 9)));
    }
    std::fs::write(&input, text).unwrap();

    let output = dir.path().join("received.txt");
    let mut cmd = Command::new(wallaroo());
    cmd.args([
        "receive",
        "--listen",
        "127.0.0.1:0",
        "--rate",
        "20000000",
        "--output",
    ])
    .arg(&output);
    let receiver = Proc::spawn("receive", cmd);
    let sink = receiver.listening_addr("listening on");
    // Compiling the component takes far more memory than running it; let a first start fill
    // the compile cache so the node measured below only runs.
    Node::start(&wasm, &sink, dir.path(), &["--workers", "1"])
        .proc
        .stop(Duration::from_secs(30));
    let mut node = Node::start(&wasm, &sink, dir.path(), &["--workers", "1"]);
    let pid = node.proc.pid();

    let total = FRAMES * REPEATS;
    let messages = total.to_string();
    let source = node.source.clone();
    let sender = std::thread::spawn(move || {
        send(
            &source,
            &input,
            &["--repeat", "--messages", &messages, "--batch-size", "64"],
        )
    });
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        peak = peak.max(rss_mib(pid));
        let lines = std::fs::read(&output)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0);
        if lines >= total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {lines} of {total} lines arrived"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sender.join().unwrap();
    assert_eq!(node.proc.stop(Duration::from_secs(30)), Some(0));
    eprintln!("peak RSS of the node: {peak} MiB");
    assert!(
        peak < BOUND_MIB,
        "node RSS peaked at {peak} MiB (bound {BOUND_MIB} MiB)"
    );

    // Every frame arrived, each exactly REPEATS times, whole.
    let data = std::fs::read(&output).unwrap();
    let mut seen: BTreeMap<&[u8], usize> = BTreeMap::new();
    for line in data.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
        assert_eq!(line.len(), FRAME, "a frame arrived cut or merged");
        *seen.entry(&line[..8]).or_default() += 1;
    }
    assert_eq!(seen.len(), FRAMES);
    assert!(seen.values().all(|&n| n == REPEATS));
}
