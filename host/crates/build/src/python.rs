//! Python applications, via componentize-py.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context as _;

use crate::{BuildError, BuildReport, embedded, wit_files, write_tree};

/// The module componentize-py is pointed at: it imports the user's module and hands it to the
/// SDK, which checks it for `application_setup` at build time.
const ENTRY_MODULE: &str = "_wallaroo_entry";

#[derive(Debug, Clone)]
pub struct PythonBuild {
    /// The application module, e.g. `word_count.py`.
    pub app: PathBuf,
    pub output: PathBuf,
    /// More directories to find the app's imports in (its own directory always counts).
    pub paths: Vec<PathBuf>,
}

pub fn build_python(build: &PythonBuild) -> Result<BuildReport, BuildError> {
    let started = Instant::now();
    let app = &build.app;
    if !app.is_file() {
        return Err(BuildError::Input(format!(
            "{} is not a file",
            app.display()
        )));
    }
    let module = app
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|m| is_identifier(m))
        .ok_or_else(|| {
            BuildError::Input(format!(
                "{}: a Python application's file name must be a module name (letters, digits, _)",
                app.display()
            ))
        })?;
    let app_dir = app
        .canonicalize()
        .context("resolving the application's path")?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));

    let work = tempfile::tempdir().context("creating a build directory")?;
    let wit_dir = work.path().join("wit");
    let sdk_dir = work.path().join("sdk");
    let entry_dir = work.path().join("entry");
    write_tree(&wit_dir, wit_files()).context("writing the WIT package")?;
    write_tree(&sdk_dir.join("wallaroo"), embedded::PYTHON_SDK_FILES)
        .context("writing the Python SDK")?;
    std::fs::create_dir_all(&entry_dir).context("creating the entry module's directory")?;
    std::fs::write(
        entry_dir.join(format!("{ENTRY_MODULE}.py")),
        format!(
            "import {module} as _app\n\
             from wallaroo._component import Guest, install  # noqa: F401\n\
             install(_app)\n"
        ),
    )
    .context("writing the entry module")?;

    // componentize-py names the search paths /0/, /1/, ... in tracebacks; keep the list to map
    // them back to the user's directories.
    let mut search = vec![sdk_dir.clone(), app_dir];
    search.extend(build.paths.iter().cloned());
    search.push(entry_dir);

    let mut cmd = Command::new("componentize-py");
    cmd.arg("-d")
        .arg(&wit_dir)
        .args(["-w", "app", "componentize"]);
    for p in &search {
        cmd.arg("-p").arg(p);
    }
    cmd.arg(ENTRY_MODULE).arg("-o").arg(&build.output);
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BuildError::MissingComponentizePy);
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context("running componentize-py")
                .into());
        }
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let error = python_error(&stderr, &search);
        return Err(BuildError::Application(with_python2_hint(error)));
    }
    let bytes = std::fs::metadata(&build.output)
        .with_context(|| format!("componentize-py wrote no {}", build.output.display()))?
        .len();
    Ok(BuildReport {
        output: build.output.clone(),
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The Python traceback inside componentize-py's report, with its internal frames dropped and
/// `/N/` paths mapped back to real directories. Falls back to the whole output.
fn python_error(stderr: &str, search: &[PathBuf]) -> String {
    let Some(start) = stderr.rfind("Traceback (most recent call last):") else {
        return stderr.trim().to_string();
    };
    let block = &stderr[start..];
    let block = block.split("\n\nCaused by:").next().unwrap_or(block);
    let mut lines: Vec<String> = Vec::new();
    let mut skip_frame = false;
    for line in block.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("File \"") {
            skip_frame = trimmed.contains("<frozen ")
                || trimmed.contains(ENTRY_MODULE)
                || trimmed.contains("/wallaroo/_component.py");
            if skip_frame {
                continue;
            }
            let mut line = line.to_string();
            for (i, dir) in search.iter().enumerate() {
                line = line.replace(&format!("\"/{i}/"), &format!("\"{}/", dir.display()));
            }
            lines.push(line);
        } else if !(skip_frame && line.starts_with("    ")) {
            skip_frame = false;
            lines.push(line.to_string());
        }
    }
    lines.join("\n")
}

/// Python 3's own messages for syntax that only Python 2 accepted.
const PYTHON2_SYNTAX: [&str; 4] = [
    "Missing parentheses in call to 'print'",
    "Missing parentheses in call to 'exec'",
    "multiple exception types must be parenthesized",
    "leading zeros in decimal integer literals are not permitted",
];

/// `error`, with a last line saying so when it is Python 2 syntax: applications written for
/// Wallaroo's Python 2 run here on Python 3 once such lines are ported.
fn with_python2_hint(error: String) -> String {
    if !error.contains("SyntaxError") || !PYTHON2_SYNTAX.iter().any(|s| error.contains(s)) {
        return error;
    }
    format!(
        "{error}\nThis is Python 2 syntax: port it to Python 3 (print(x), except E as e, \
         0o777); applications run on Python 3, and nothing else in a Wallaroo application \
         needs to change"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceback_maps_paths_and_drops_internal_frames() {
        let stderr = "Traceback (most recent call last):\n  File \"/root/bin/componentize-py\", line 8\n\
            AssertionError: Traceback (most recent call last):\n\
            \x20 File \"/3/_wallaroo_entry.py\", line 1, in <module>\n\
            \x20   import app as _app\n\
            \x20 File \"<frozen importlib._bootstrap>\", line 1, in _load\n\
            \x20 File \"/1/app.py\", line 3\n\
            \x20   def broken(:\n\
            \x20              ^\n\
            SyntaxError: invalid syntax\n\nCaused by:\n    SyntaxError";
        let search = vec![
            PathBuf::from("/sdk"),
            PathBuf::from("/home/me/app"),
            PathBuf::from("/x"),
            PathBuf::from("/entry"),
        ];
        let shown = python_error(stderr, &search);
        assert!(
            shown.contains("File \"/home/me/app/app.py\", line 3"),
            "{shown}"
        );
        assert!(shown.contains("SyntaxError: invalid syntax"), "{shown}");
        assert!(!shown.contains("_wallaroo_entry"), "{shown}");
        assert!(!shown.contains("frozen"), "{shown}");
        assert!(!shown.contains("Caused by"), "{shown}");
    }

    #[test]
    fn python2_syntax_is_named_as_such() {
        let print = "  File \"/app/wc.py\", line 9\n    print x\n    ^^^^^^^\n\
            SyntaxError: Missing parentheses in call to 'print'. Did you mean print(...)?";
        let shown = with_python2_hint(print.to_string());
        assert!(shown.starts_with(print), "{shown}");
        assert!(
            shown.ends_with("needs to change") && shown.contains("port it to Python 3"),
            "{shown}"
        );
        let other = "SyntaxError: invalid syntax".to_string();
        assert_eq!(with_python2_hint(other.clone()), other);
    }
}
