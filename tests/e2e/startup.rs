//! `wallaroo run` while it starts: a signal during the first compile, and files that are not
//! components.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use wallaroo_tests::*;

const WORD_COUNT: &str = "componentize-py-examples/word_count/word_count.py";
const GO_PACKAGE: &str = "guest-sdks/go/examples/word_count";

fn run(name: &str, wasm: &Path, dir: &Path, sink: &str) -> Proc {
    let mut cmd = Command::new(wallaroo());
    cmd.arg("run")
        .arg(wasm)
        .args(["--in", "127.0.0.1:0", "--out", sink, "--workers", "1"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--cache-dir")
        .arg(dir.join("cache"));
    Proc::spawn(name, cmd)
}

/// Everything in the compile cache directory (which is made on the first write).
fn cached(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("cache"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_signal_while_compiling_stops_at_once_and_the_next_run_compiles_again() {
    let wasm = build_app(WORD_COUNT);
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());

    let mut first = run("first run", &wasm, dir.path(), &receiver.addr);
    let line = first.wait_line("compiling", Duration::from_secs(60));
    assert!(line.contains("(first run; cached afterwards)"), "{line}");
    first.signal(libc::SIGINT);
    let code = first.wait(Duration::from_secs(60));
    let said = first.stderr();
    assert_eq!(code, Some(130), "{said}");
    assert!(said.contains("stopped while loading"), "{said}");
    assert!(!said.contains("listening on"), "{said}");
    // Had the process waited for the compile (seconds), its native code would be cached now;
    // nothing half-written is left either.
    assert_eq!(cached(dir.path()), Vec::<String>::new(), "{said}");

    let mut second = run("second run", &wasm, dir.path(), &receiver.addr);
    second.wait_line("compiling", Duration::from_secs(60));
    second.listening_addr("listening on");
    assert!(second.stderr().contains("compiled and cached"));
    assert_eq!(second.stop(Duration::from_secs(30)), Some(0));
    let entries = cached(dir.path());
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].ends_with(".cwasm"), "{entries:?}");

    // A cache hit compiles nothing and says nothing about compiling.
    let mut third = run("third run", &wasm, dir.path(), &receiver.addr);
    third.listening_addr("listening on");
    assert_eq!(third.stop(Duration::from_secs(30)), Some(0));
    let said = third.stderr();
    assert!(said.contains("loaded from cache"), "{said}");
    assert!(!said.contains("compiling"), "{said}");
}

fn run_fails(app: &Path) -> String {
    let out = Command::new(wallaroo())
        .arg("run")
        .arg(app)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("expected '('"), "{err}");
    err
}

#[test]
fn running_python_source_says_it_is_not_a_component_and_how_to_build_one() {
    let app = root().join(WORD_COUNT);
    let err = run_fails(&app);
    assert!(err.contains("is Python source, not a component"), "{err}");
    assert!(
        err.contains(&format!("wallaroo build {} -o app.wasm", app.display())),
        "{err}"
    );
}

#[test]
fn running_a_go_package_directory_says_how_to_build_it() {
    let dir = root().join(GO_PACKAGE);
    let err = run_fails(&dir);
    assert!(err.contains("is a directory, not a component"), "{err}");
    assert!(
        err.contains(&format!("wallaroo build {} -o app.wasm", dir.display())),
        "{err}"
    );
}
