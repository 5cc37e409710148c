//! Go applications: standard Go builds the package as a WASI preview1 reactor
//! (`GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared`) whose `//go:wasmexport` functions
//! implement the canonical ABI of world `app` (the Go SDK, guest-sdks/go); this module embeds
//! the world's type information into that core module and wraps it, with the preview1 reactor
//! adapter, into a component. Nothing but `go` and this binary is needed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context as _;
use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::{Resolve, SourceMap};

use crate::{BuildError, BuildReport, wit_files};

/// The world the host runs, in the embedded WIT package.
const WORLD: &str = "app";

#[derive(Debug, Clone)]
pub struct GoBuild {
    /// A directory holding the main package, or a Go package path (`./cmd/app`,
    /// `example.com/app`) resolved from the current directory.
    pub package: String,
    pub output: PathBuf,
}

pub fn build_go(build: &GoBuild) -> Result<BuildReport, BuildError> {
    let started = Instant::now();
    let work = tempfile::tempdir().context("creating a build directory")?;
    let core = work.path().join("core.wasm");

    // A directory is built where it is, so that its own go.mod applies; anything else is a
    // package path for `go build` in the current directory.
    let dir = Path::new(&build.package);
    let (cwd, target) = if dir.is_dir() {
        (Some(dir.to_path_buf()), ".".to_string())
    } else {
        (None, build.package.clone())
    };
    let mut cmd = Command::new(go_binary());
    cmd.args(["build", "-buildmode=c-shared", "-o"])
        .arg(&core)
        .arg(&target)
        .env("GOOS", "wasip1")
        .env("GOARCH", "wasm");
    if let Some(cwd) = &cwd {
        cmd.current_dir(cwd);
    }
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BuildError::MissingGo),
        Err(e) => return Err(anyhow::Error::new(e).context("running go build").into()),
    };
    if !out.status.success() {
        // Go's own report, as Go prints it.
        return Err(BuildError::Application(
            String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
        ));
    }
    let module = std::fs::read(&core).context("reading the module go build wrote")?;
    let component = componentize(module)?;
    std::fs::write(&build.output, &component)
        .with_context(|| format!("writing {}", build.output.display()))?;
    Ok(BuildReport {
        output: build.output.clone(),
        bytes: component.len() as u64,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `go` on PATH, else the standard install location.
fn go_binary() -> OsString {
    let standard = Path::new("/usr/local/go/bin/go");
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("go").is_file()));
    if !on_path && standard.is_file() {
        standard.as_os_str().to_owned()
    } else {
        OsString::from("go")
    }
}

/// A core module exporting world `app` under the canonical ABI's names -> a component.
pub fn componentize(mut module: Vec<u8>) -> Result<Vec<u8>, BuildError> {
    let mut resolve = Resolve::default();
    let mut sources = SourceMap::new();
    for (path, bytes) in wit_files() {
        let text = std::str::from_utf8(bytes).context("the embedded WIT is not UTF-8")?;
        sources.push(Path::new(path), text);
    }
    let group = sources
        .parse()
        .map_err(|(_, e)| anyhow::anyhow!("parsing the embedded WIT: {e}"))?;
    let package = resolve
        .push_group(group)
        .context("resolving the embedded WIT")?;
    let world = resolve
        .select_world(&[package], Some(WORLD))
        .context("selecting the world")?;
    wit_component::embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)
        .context("embedding the world's types")?;
    let component = ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|encoder| {
            encoder.adapter(
                "wasi_snapshot_preview1",
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
        })
        .and_then(|mut encoder| encoder.encode())
        .map_err(|e| {
            BuildError::Application(format!(
                "the Go module is not a component of world `{WORLD}` (is the package a main \
                 package importing the Go SDK, with wallaroo.Setup called in init?): {e:#}"
            ))
        })?;
    Ok(component)
}
