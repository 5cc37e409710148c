//! Native code for a component, cached by content hash.
//!
//! Compiling a Python component takes seconds; loading its cached native code (mmap) takes about
//! a millisecond. The cache key is the SHA-256 of the component's bytes plus the engine's
//! compatibility hash (wasmtime version and every setting that changes generated code), so a new
//! host build or configuration never loads stale code. Entries are written to a temporary file
//! and renamed into place, so a crash never leaves a half-written entry under a valid name; a
//! temporary file a killed process left is removed when that entry is written next.
//!
//! The version of the `wallaroo:app` contract is deliberately not part of the key: an entry is
//! native code for exactly these component bytes, whichever contract they were built for, and a
//! component built for another version is refused when it is linked, cached or not.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

#[derive(Clone)]
pub struct CompileCache {
    dir: Option<PathBuf>,
    /// Called just before a component is compiled (the cache misses or is disabled).
    on_compile: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Where a component's native code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Compiled,
    Disabled,
}

impl CompileCache {
    /// A cache in `dir` (created on first write).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: Some(dir.into()),
            on_compile: None,
        }
    }

    pub fn disabled() -> Self {
        Self {
            dir: None,
            on_compile: None,
        }
    }

    /// Calls `notice` just before compiling, so a caller can say why the next seconds pass
    /// with nothing to show (a cache hit, taking a millisecond, calls nothing).
    pub fn on_compile(mut self, notice: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_compile = Some(Arc::new(notice));
        self
    }

    fn compiling(&self) {
        if let Some(notice) = &self.on_compile {
            notice();
        }
    }

    /// A cache in `dir` if given, else in [`CompileCache::default_dir`], else none.
    pub fn at_or_default(dir: Option<&Path>) -> Self {
        match dir {
            Some(dir) => Self::at(dir),
            None => Self::default_dir()
                .map(Self::at)
                .unwrap_or_else(Self::disabled),
        }
    }

    /// `$WALLAROO_CACHE_DIR`, else `$XDG_CACHE_HOME/wallaroo`, else `$HOME/.cache/wallaroo`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("WALLAROO_CACHE_DIR") {
            return Some(dir.into());
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(dir).join("wallaroo"));
        }
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("wallaroo"))
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Loads `wasm` as a component, from the cache when it holds native code for it.
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> anyhow::Result<(Component, CacheOutcome)> {
        let Some(dir) = &self.dir else {
            self.compiling();
            return Ok((
                Component::new(engine, wasm).map_err(crate::host_error)?,
                CacheOutcome::Disabled,
            ));
        };
        let entry = dir.join(format!("{}.cwasm", cache_key(engine, wasm)));
        if entry.exists() {
            // SAFETY: the file was written by `store` below from `Component::serialize` of this
            // very engine configuration (its name carries the compatibility hash), and wasmtime
            // validates the header before use. Cache entries are never modified in place.
            match unsafe { Component::deserialize_file(engine, &entry) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) => tracing::warn!(
                    path = %entry.display(),
                    error = %e,
                    "unusable compile cache entry; compiling again"
                ),
            }
        }
        self.compiling();
        let component = Component::new(engine, wasm).map_err(crate::host_error)?;
        if let Err(e) = store(&entry, &component.serialize().map_err(crate::host_error)?) {
            tracing::warn!(path = %entry.display(), error = %e, "cannot write compile cache entry");
        }
        Ok((component, CacheOutcome::Compiled))
    }
}

fn cache_key(engine: &Engine, wasm: &[u8]) -> String {
    let mut compat = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut compat);
    let digest = Sha256::digest(wasm);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}-{:016x}", compat.finish())
}

/// How old a temporary file in the cache must be before it counts as left by a process that
/// died while writing it (another process may be writing its own right now).
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// Temporary files are named after the entry they become: `.KEY.cwasm.XXXXXX.tmp`.
fn store(entry: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = entry.parent().context("cache entry has no directory")?;
    let name = entry
        .file_name()
        .context("cache entry has no name")?
        .to_string_lossy();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    remove_stale(dir, &name);
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    std::fs::write(tmp.path(), bytes)?;
    tmp.persist(entry)?;
    Ok(())
}

/// Removes temporary files for entry `name` that a process killed while writing them left
/// behind (a signal during start-up exits without waiting for the write).
fn remove_stale(dir: &Path, name: &str) {
    let Ok(files) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for file in files.flatten() {
        let stale = file
            .file_name()
            .to_str()
            .is_some_and(|f| f.starts_with(&prefix) && f.ends_with(".tmp"))
            && file
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE_AFTER));
        if stale {
            let _ = std::fs::remove_file(file.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_file_left_by_a_killed_writer_is_removed_and_a_fresh_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path().join("abc-1.cwasm");
        let old = dir.path().join(".abc-1.cwasm.OLD123.tmp");
        let fresh = dir.path().join(".abc-1.cwasm.NEW456.tmp");
        let other = dir.path().join(".def-2.cwasm.OLD789.tmp");
        for f in [&old, &fresh, &other] {
            std::fs::write(f, b"half").unwrap();
        }
        let long_ago = std::time::SystemTime::now() - STALE_AFTER * 2;
        for f in [&old, &other] {
            std::fs::File::options()
                .write(true)
                .open(f)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        store(&entry, b"native code").unwrap();
        assert_eq!(std::fs::read(&entry).unwrap(), b"native code");
        assert!(!old.exists());
        // Another process may still be writing it.
        assert!(fresh.exists());
        // Another entry's leftovers wait for that entry's next write.
        assert!(other.exists());
    }
}
