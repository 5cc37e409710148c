//! `wallaroo build APP.py|GO_PACKAGE [-o OUT.wasm]`

use std::path::{Path, PathBuf};

use wallaroo_build::{BuildError, BuildReport, GoBuild, PythonBuild, build_go, build_python};

#[derive(clap::Args)]
pub struct Args {
    /// The application: a Python module (app.py), or a Go main package (a directory such as
    /// ./cmd/app, or a package path).
    app: PathBuf,
    /// Where to write the component [default: the app's name with .wasm].
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// More directories holding modules a Python application imports.
    #[arg(short = 'p', long = "path")]
    paths: Vec<PathBuf>,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let is_python = args.app.extension().is_some_and(|e| e == "py");
    if !is_python && args.app.is_file() {
        anyhow::bail!(
            "{}: expected a Python application (.py) or a Go package (a directory or package path)",
            args.app.display()
        );
    }
    // A local path (absolute, or starting with . or ..) must exist; anything else may be a Go
    // package path for `go build` to resolve.
    let local = args.app.is_absolute() || args.app.starts_with(".") || args.app.starts_with("..");
    if (is_python || local) && !args.app.exists() {
        anyhow::bail!("{}: no such file or directory", args.app.display());
    }
    let output = args.output.unwrap_or_else(|| default_output(&args.app));
    eprintln!("building {} ...", args.app.display());
    let result = if is_python {
        build_python(&PythonBuild {
            app: args.app.clone(),
            output,
            paths: args.paths,
        })
    } else {
        if !args.paths.is_empty() {
            anyhow::bail!(
                "--path is for Python applications; a Go package finds its imports through its go.mod"
            );
        }
        build_go(&GoBuild {
            package: args.app.to_string_lossy().into_owned(),
            output,
        })
    };
    match result {
        Ok(report) => {
            report_built(&report);
            Ok(())
        }
        Err(BuildError::Application(text)) => {
            anyhow::bail!("{} cannot be built:\n{text}", args.app.display())
        }
        Err(e) => Err(e.into()),
    }
}

/// `app.py` -> `app.wasm`; a Go package `./cmd/app` (or `example.com/app`) -> `app.wasm` in the
/// current directory.
fn default_output(app: &Path) -> PathBuf {
    if app.extension().is_some_and(|e| e == "py") {
        return app.with_extension("wasm");
    }
    let name = std::fs::canonicalize(app)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_os_string()))
        .or_else(|| app.file_name().map(|n| n.to_os_string()))
        .unwrap_or_else(|| "app".into());
    PathBuf::from(name).with_extension("wasm")
}

fn report_built(report: &BuildReport) {
    eprintln!(
        "built {} ({:.1} MiB) in {:.1} s",
        report.output.display(),
        report.bytes as f64 / (1 << 20) as f64,
        report.seconds
    );
}
