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
        return Err(BuildError::Application(match native_extensions(&error) {
            Some(why) => format!("{why}\n\nPython's error:\n{error}"),
            None => with_python2_hint(error),
        }));
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

/// File name endings of native extension modules (CPython loads them as machine code).
const NATIVE_SUFFIXES: &[&str] = &[".so", ".pyd", ".dylib"];

/// If the failed import in `traceback` went through a package that holds native extension
/// modules (numpy's `_multiarray_umath.cpython-311-x86_64-linux-gnu.so`), says so: the
/// package's own ImportError then only puzzles (it blames the Python version or the setup).
fn native_extensions(traceback: &str) -> Option<String> {
    if let Some(found) = missing_native_module(traceback) {
        return Some(found);
    }
    let mut seen = Vec::new();
    for file in traceback_files(traceback) {
        let Some(package) = package_root(file) else {
            continue;
        };
        if seen.contains(&package) {
            continue;
        }
        let mut native = Vec::new();
        find_native(&package, &mut native, 0);
        seen.push(package.clone());
        let Some(first) = native.first() else {
            continue;
        };
        let name = package.file_name()?.to_string_lossy().into_owned();
        let base = package.parent().unwrap_or(&package);
        let module = |f: &Path| {
            let rel = f.strip_prefix(base).unwrap_or(f);
            let mut parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if let Some(last) = parts.last_mut() {
                // _multiarray_umath.cpython-311-x86_64-linux-gnu.so -> _multiarray_umath
                *last = last.split('.').next().unwrap_or_default().to_string();
            }
            parts.join(".")
        };
        let more = match native.len() {
            1 => String::new(),
            n => format!(", and {} more", n - 1),
        };
        return Some(format!(
            "package '{name}' ({}) holds native extension modules, e.g. {} ({}){more}: machine \
             code built for this computer's Python, which cannot go into a WebAssembly \
             component. Pure-Python packages are bundled (from the application's directory or \
             a --path DIR); use a pure-Python alternative to '{name}', or do this work outside \
             the application (before its source or after its sink).",
            package.display(),
            module(first),
            first.strip_prefix(base).unwrap_or(first).display(),
        ));
    }
    None
}

/// `No module named 'fastmod'` where a frame's directory holds `fastmod.cpython-*.so`: a
/// native module on its own, which the component's Python does not even see.
fn missing_native_module(traceback: &str) -> Option<String> {
    let (_, rest) = traceback.rsplit_once("No module named '")?;
    let name = rest.split('\'').next()?.split('.').next()?;
    for dir in traceback_files(traceback).filter_map(Path::parent) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.split('.').next() == Some(name)
                && NATIVE_SUFFIXES.iter().any(|s| file.ends_with(s))
            {
                return Some(format!(
                    "module '{name}' is a native extension module ({}): machine code built for \
                     this computer's Python, which cannot go into a WebAssembly component. \
                     Pure-Python modules and packages are bundled (from the application's \
                     directory or a --path DIR); use a pure-Python alternative, or do this work \
                     outside the application (before its source or after its sink).",
                    dir.join(&file).display()
                ));
            }
        }
    }
    None
}

/// The files a traceback's frames name (`File "PATH", line N, ...`), in order.
fn traceback_files(traceback: &str) -> impl Iterator<Item = &Path> {
    traceback.lines().filter_map(|line| {
        let rest = line.trim_start().strip_prefix("File \"")?;
        rest.split('"').next().map(Path::new)
    })
}

/// The directory of the top-level package that `file` belongs to, if it is in a package.
fn package_root(file: &Path) -> Option<PathBuf> {
    let mut dir = file.parent()?;
    if !dir.join("__init__.py").is_file() {
        return None;
    }
    while let Some(parent) = dir.parent() {
        if !parent.join("__init__.py").is_file() {
            break;
        }
        dir = parent;
    }
    Some(dir.to_path_buf())
}

/// Native extension modules under `dir`, sorted (a few levels deep; numpy's are at two).
fn find_native(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if depth < 4 {
                find_native(&path, out, depth + 1);
            }
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| NATIVE_SUFFIXES.iter().any(|s| n.ends_with(s)))
        {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_with_native_extensions_is_named_with_one_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let core = dir.path().join("fastnum").join("_core");
        std::fs::create_dir_all(&core).unwrap();
        std::fs::write(dir.path().join("fastnum/__init__.py"), "").unwrap();
        std::fs::write(core.join("__init__.py"), "").unwrap();
        std::fs::write(core.join("_umath.cpython-311-x86_64-linux-gnu.so"), "").unwrap();
        std::fs::write(core.join("_sort.cpython-311-x86_64-linux-gnu.so"), "").unwrap();
        let traceback = format!(
            "Traceback (most recent call last):\n  File \"{}/app.py\", line 1, in <module>\n    \
             import fastnum\n  File \"{}/fastnum/__init__.py\", line 4, in <module>\n\
             ImportError: the C-extensions failed: cpython-311-x86_64",
            dir.path().display(),
            dir.path().display()
        );
        let why = native_extensions(&traceback).unwrap();
        assert!(why.starts_with("package 'fastnum'"), "{why}");
        assert!(why.contains("fastnum._core._sort"), "{why}");
        assert!(why.contains(", and 1 more"), "{why}");
        assert!(why.contains("Pure-Python packages are bundled"), "{why}");

        // A native module on its own, next to the app.
        std::fs::write(
            dir.path().join("fastmod.cpython-311-x86_64-linux-gnu.so"),
            "",
        )
        .unwrap();
        let missing = format!(
            "Traceback (most recent call last):\n  File \"{}/app.py\", line 1, in <module>\n\
             ModuleNotFoundError: No module named 'fastmod'",
            dir.path().display()
        );
        let why = native_extensions(&missing).unwrap();
        assert!(
            why.starts_with("module 'fastmod' is a native extension"),
            "{why}"
        );

        // A pure-Python package's error is left as it is.
        std::fs::remove_file(core.join("_umath.cpython-311-x86_64-linux-gnu.so")).unwrap();
        std::fs::remove_file(core.join("_sort.cpython-311-x86_64-linux-gnu.so")).unwrap();
        assert_eq!(native_extensions(&traceback), None);
    }

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
