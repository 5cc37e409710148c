//! Embeds the WIT contract and the Python SDK into the `wallaroo` binary, so `wallaroo build`
//! works from any directory with nothing but the binary and componentize-py.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../..");
    let mut code = String::new();
    embed(&mut code, "WIT_FILES", &root.join("wit"), &["wit"]);
    embed(
        &mut code,
        "PYTHON_SDK_FILES",
        &root.join("guest-sdks/python/wallaroo"),
        &["py"],
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("embedded.rs");
    std::fs::write(out, code).unwrap();
}

/// Emits `pub static NAME: &[(&str, &[u8])]`: every file under `dir` with one of `exts`, by
/// path relative to `dir`.
fn embed(code: &mut String, name: &str, dir: &Path, exts: &[&str]) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files = Vec::new();
    collect(dir, dir, exts, &mut files);
    files.sort();
    writeln!(code, "pub static {name}: &[(&str, &[u8])] = &[").unwrap();
    for (rel, abs) in files {
        println!("cargo:rerun-if-changed={}", abs.display());
        writeln!(
            code,
            "    ({rel:?}, include_bytes!({:?})),",
            abs.display().to_string()
        )
        .unwrap();
    }
    writeln!(code, "];").unwrap();
}

fn collect(base: &Path, dir: &Path, exts: &[&str], out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "__pycache__") {
                collect(base, &path, exts, out);
            }
        } else if path
            .extension()
            .is_some_and(|e| exts.iter().any(|x| e == *x))
        {
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((rel, path.canonicalize().unwrap()));
        }
    }
}
