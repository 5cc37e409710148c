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

/// A package like numpy: its `__init__` imports a compiled extension and, when that fails,
/// raises an ImportError of its own about the Python version.
#[test]
fn a_native_extension_module_is_named_and_what_works_instead_said() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("fastnum").join("_core");
    std::fs::create_dir_all(&core).unwrap();
    std::fs::write(
        dir.path().join("fastnum/__init__.py"),
        "try:\n    from ._core import _umath  # noqa: F401\nexcept ImportError as exc:\n    \
         raise ImportError('the fastnum C-extensions failed: cpython-311-x86_64') from exc\n",
    )
    .unwrap();
    std::fs::write(core.join("__init__.py"), "").unwrap();
    std::fs::write(
        core.join("_umath.cpython-311-x86_64-linux-gnu.so"),
        b"\x7fELF",
    )
    .unwrap();
    let app = dir.path().join("app.py");
    std::fs::copy(
        root().join("componentize-py-examples/word_count/word_count.py"),
        &app,
    )
    .unwrap();
    let source = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, format!("import fastnum  # noqa: F401\n{source}")).unwrap();
    let out = Command::new(wallaroo())
        .arg("build")
        .arg(&app)
        .arg("-o")
        .arg(dir.path().join("app.wasm"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("package 'fastnum'"), "{err}");
    assert!(err.contains("native extension modules"), "{err}");
    assert!(err.contains("fastnum._core._umath"), "{err}");
    assert!(err.contains("Pure-Python packages are bundled"), "{err}");
    // Python's own error follows, for the record.
    assert!(err.contains("cpython-311-x86_64"), "{err}");
}
