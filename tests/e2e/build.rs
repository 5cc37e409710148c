//! `wallaroo build` reports application errors with file and line.

use std::process::Command;

use wallaroo_tests::*;

fn build(app: &str, path_env: Option<&str>) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(wallaroo());
    cmd.arg("build")
        .arg(root().join(app))
        .arg("-o")
        .arg(dir.path().join("out.wasm"));
    if let Some(path) = path_env {
        cmd.env("PATH", path);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_syntax_error_names_file_and_line() {
    let (ok, err) = build("tests/apps/syntax_error/broken.py", None);
    assert!(!ok);
    assert!(err.contains("broken.py\", line 4"), "{err}");
    assert!(err.contains("SyntaxError"), "{err}");
    assert!(!err.contains("Caused by"), "{err}");
}

#[test]
fn a_missing_application_setup_is_named() {
    let (ok, err) = build("tests/apps/no_setup/no_setup.py", None);
    assert!(!ok);
    assert!(err.contains("application_setup"), "{err}");
    assert!(err.contains("no_setup.py"), "{err}");
}

#[test]
fn a_missing_componentize_py_says_how_to_install_it() {
    let empty = tempfile::tempdir().unwrap();
    let (ok, err) = build(
        "componentize-py-examples/word_count/word_count.py",
        Some(empty.path().to_str().unwrap()),
    );
    assert!(!ok);
    assert!(err.contains("pip install componentize-py"), "{err}");
}

#[test]
fn a_missing_application_is_named() {
    let (ok, err) = build("tests/apps/not-there.py", None);
    assert!(!ok);
    assert!(
        err.contains("not-there.py: no such file or directory"),
        "{err}"
    );
}

#[test]
fn python_2_syntax_is_named_as_such() {
    let (ok, err) = build("tests/apps/python2/python2.py", None);
    assert!(!ok);
    assert!(err.contains("python2.py\", line 5"), "{err}");
    assert!(
        err.contains("This is Python 2 syntax: port it to Python 3"),
        "{err}"
    );
}
