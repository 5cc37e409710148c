//! `wallaroo build APP.py [-o OUT.wasm]`

use std::path::PathBuf;

use wallaroo_build::{BuildError, PythonBuild, build_python};

#[derive(clap::Args)]
pub struct Args {
    /// The application: a Python module (app.py).
    app: PathBuf,
    /// Where to write the component [default: the app's name with .wasm].
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// More directories holding modules the application imports.
    #[arg(short = 'p', long = "path")]
    paths: Vec<PathBuf>,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let output = args
        .output
        .unwrap_or_else(|| args.app.with_extension("wasm"));
    if args.app.extension().is_none_or(|e| e != "py") {
        anyhow::bail!(
            "{}: expected a Python application (.py); Go packages come with the Go SDK",
            args.app.display()
        );
    }
    eprintln!("building {} ...", args.app.display());
    let build = PythonBuild {
        app: args.app.clone(),
        output,
        paths: args.paths,
    };
    match build_python(&build) {
        Ok(report) => {
            eprintln!(
                "built {} ({:.1} MiB) in {:.1} s",
                report.output.display(),
                report.bytes as f64 / (1 << 20) as f64,
                report.seconds
            );
            Ok(())
        }
        Err(BuildError::Application(text)) => {
            anyhow::bail!("{} cannot be built:\n{text}", args.app.display())
        }
        Err(e) => Err(e.into()),
    }
}
