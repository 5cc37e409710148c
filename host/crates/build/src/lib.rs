//! `wallaroo build`: turns an application into one component of the `wallaroo:app` world.
//!
//! Python: componentize-py bundles CPython, the SDK (embedded in this binary) and the app's own
//! modules into a component. It imports the app at build time and snapshots the result, so the
//! app's top level runs here and `application_setup(args)` runs later, per instance.
//!
//! Go: standard Go builds a WASI preview1 reactor module whose exports implement the world by
//! hand (the Go SDK); it is wrapped into a component here, with no tool beyond `go`.

mod go;
mod python;

pub use go::{GoBuild, build_go, componentize};
pub use python::{PythonBuild, build_python};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

use std::path::Path;

/// The WIT package the host implements, as text files relative to `wit/`.
pub fn wit_files() -> &'static [(&'static str, &'static [u8])] {
    embedded::WIT_FILES
}

/// Writes the embedded `files` under `dir`.
fn write_tree(dir: &Path, files: &[(&str, &[u8])]) -> std::io::Result<()> {
    for (rel, bytes) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, bytes)?;
    }
    Ok(())
}

/// What a finished build produced.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub output: std::path::PathBuf,
    pub bytes: u64,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Input(String),
    #[error(
        "componentize-py was not found on PATH; install it with \
         `pip install componentize-py==0.25.1` (or run scripts/setup)"
    )]
    MissingComponentizePy,
    #[error(
        "go was not found on PATH (nor in /usr/local/go/bin); install Go 1.24 or newer \
         from https://go.dev/dl/"
    )]
    MissingGo,
    /// The application failed to import or set up, or to compile; the text is the Python
    /// error (with paths pointing at the user's files) or Go's own report.
    #[error("{0}")]
    Application(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}
