//! Messages the application could not process, kept for the operator, on a bounded budget of
//! disk.
//!
//! Two files in the node's data directory: `dead-letter.log` has one JSON object per message
//! (time, source or step, key, error, and where its bytes are), `dead-letter.bin` holds the
//! message bytes themselves, back to back, at the offset and length the log line gives. The
//! bytes are the input of the failed segment: a source frame's payload, or the serialised value
//! a keyed step received.
//!
//! The files together never pass the node's `max_bytes`: once the pair would pass half of it,
//! it is renamed to `dead-letter.1.log` / `dead-letter.1.bin` (replacing the pair there) and a
//! new pair is started, so the newest entries are kept and the oldest go first. A message's
//! bytes are kept whole when they fit in half of the budget, else only their first bytes; each
//! line says how many bytes were kept (`len`) and how long the message was (`message_len`).
//!
//! An error's text is kept up to [`MAX_ERROR_TEXT`] bytes (a longer one is cut, and says how
//! long it was), so that an entry's line is bounded too; a budget below [`MIN_MAX_BYTES`]
//! cannot hold such entries and is refused when the node starts.
//!
//! Dead letters are for inspection; they never hold the stream back. A write that fails (a full
//! disk, a file made unwritable) is logged once with the system's reason, and the messages that
//! cannot be kept meanwhile are counted (`dead_letters_unwritten`) until writing works again.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

/// The default budget of disk for a node's dead letters, both generations together.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// The most of an error's text a dead letter, or the node's log line for it, keeps.
pub const MAX_ERROR_TEXT: usize = 4 << 10;

/// The smallest budget a node accepts: half of it (one generation) holds the longest entry
/// line, an error of [`MAX_ERROR_TEXT`] bytes however JSON escapes it.
pub const MIN_MAX_BYTES: u64 = 64 << 10;

/// `error`, cut to its first [`MAX_ERROR_TEXT`] bytes (at a character boundary) when longer,
/// saying how long it was.
pub fn bounded_error(error: &str) -> Cow<'_, str> {
    if error.len() <= MAX_ERROR_TEXT {
        return Cow::Borrowed(error);
    }
    let mut end = MAX_ERROR_TEXT;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}... [error text cut to its first {end} of {} bytes]",
        &error[..end],
        error.len()
    ))
}

pub struct DeadLetters {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    unwritten: Counter,
}

#[derive(Default)]
struct State {
    files: Option<Files>,
    /// Messages not kept since writing last failed (None while writing works).
    failing: Option<u64>,
}

struct Files {
    log: File,
    bin: File,
    /// Length of `bin`: where the next message's bytes go.
    offset: u64,
    log_len: u64,
}

/// Where a dead message came from and why it died.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// The source or step the message failed in.
    pub at: &'a str,
    /// The message's key, where it had one (lossy UTF-8).
    pub key: Option<String>,
    pub error: &'a str,
}

#[derive(Serialize)]
struct Line<'a> {
    time_ms: u128,
    #[serde(flatten)]
    entry: &'a Entry<'a>,
    offset: u64,
    /// Bytes kept in the bin file.
    len: u64,
    /// The whole message's length; more than `len` when only its first bytes are kept.
    message_len: u64,
}

/// Why a dead letter could not be kept: the file and the system's reason.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
struct WriteError {
    what: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

impl DeadLetters {
    /// Dead letters for a node whose data directory is `dir`, at most `max_bytes` on disk;
    /// files are created on first use. `unwritten` counts the messages that could not be kept.
    /// (A budget below [`MIN_MAX_BYTES`] is refused by the node, not here.)
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64, unwritten: Counter) -> Self {
        Self {
            dir: dir.into(),
            max_bytes,
            state: Mutex::default(),
            unwritten,
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("dead-letter.log")
    }

    pub fn bin_path(&self) -> PathBuf {
        self.dir.join("dead-letter.bin")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps a whole message (or its first bytes, if it does not fit in half the budget).
    pub fn write(&self, entry: &Entry<'_>, payload: &[u8]) {
        self.write_prefix(entry, payload, payload.len() as u64);
    }

    /// Keeps the first bytes `prefix` of a message `message_len` bytes long (a frame too large
    /// to read whole is kept this way).
    pub fn write_prefix(&self, entry: &Entry<'_>, prefix: &[u8], message_len: u64) {
        let error = bounded_error(entry.error);
        let entry = Entry {
            at: entry.at,
            key: entry.key.clone(),
            error: &error,
        };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match self.store(&mut state, &entry, prefix, message_len) {
            Ok(()) => {
                if let Some(lost) = state.failing.take() {
                    tracing::warn!(
                        "dead letters are written again in {}; {lost} messages since the \
                         failure were counted but not kept",
                        self.dir.display()
                    );
                }
            }
            Err(e) => {
                // Reopened on the next message, so its offset follows what reached the disk.
                state.files = None;
                self.unwritten.inc();
                match &mut state.failing {
                    Some(lost) => *lost += 1,
                    None => {
                        tracing::error!(
                            "cannot keep a dead letter: {e}; the stream goes on, and failed \
                             messages are counted but not kept until the dead letters can be \
                             written (free space in, or fix, {})",
                            self.dir.display()
                        );
                        state.failing = Some(1);
                    }
                }
            }
        }
    }

    fn store(
        &self,
        state: &mut State,
        entry: &Entry<'_>,
        bytes: &[u8],
        message_len: u64,
    ) -> Result<(), WriteError> {
        let half = self.max_bytes / 2;
        if state.files.is_none() {
            state.files = Some(self.open()?);
        }
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let line = |offset: u64, len: usize| {
            let mut text = serde_json::to_vec(&Line {
                time_ms,
                entry,
                offset,
                len: len as u64,
                message_len,
            })
            .expect("a line of strings and numbers serialises");
            text.push(b'\n');
            text
        };
        let files = state.files.as_mut().expect("opened above");
        let mut kept = bytes.len();
        let mut text = line(files.offset, kept);
        if (kept + text.len()) as u64 > half {
            kept = (half as usize).saturating_sub(text.len()).min(kept);
            text = line(files.offset, kept);
        }
        let size = files.offset + files.log_len;
        if size > 0 && size + (kept + text.len()) as u64 > half {
            state.files = None;
            self.rotate()?;
            state.files = Some(self.open()?);
            text = line(0, kept);
        }
        let files = state.files.as_mut().expect("opened above");
        files
            .bin
            .write_all(&bytes[..kept])
            .map_err(|source| self.error("writing", self.bin_path(), source))?;
        files.offset += kept as u64;
        files
            .log
            .write_all(&text)
            .map_err(|source| self.error("writing", self.log_path(), source))?;
        files.log_len += text.len() as u64;
        Ok(())
    }

    /// The current pair becomes the previous one.
    fn rotate(&self) -> Result<(), WriteError> {
        for (from, to) in [
            (self.log_path(), self.dir.join("dead-letter.1.log")),
            (self.bin_path(), self.dir.join("dead-letter.1.bin")),
        ] {
            match std::fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(self.error("rotating", from, source)),
            }
        }
        Ok(())
    }

    fn open(&self) -> Result<Files, WriteError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|source| self.error("creating", self.dir.clone(), source))?;
        let open = |p: PathBuf| {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map_err(|source| self.error("opening", p.clone(), source))?;
            let len = file
                .metadata()
                .map_err(|source| self.error("reading the size of", p, source))?
                .len();
            Ok((file, len))
        };
        let (bin, offset) = open(self.bin_path())?;
        let (log, log_len) = open(self.log_path())?;
        Ok(Files {
            log,
            bin,
            offset,
            log_len,
        })
    }

    fn error(&self, what: &'static str, path: PathBuf, source: std::io::Error) -> WriteError {
        WriteError { what, path, source }
    }
}

/// A key as it appears in logs and dead letters.
pub(crate) fn display_key(key: &[u8]) -> String {
    const MAX: usize = 64;
    let text = String::from_utf8_lossy(key);
    if text.chars().count() > MAX {
        format!("{}...", text.chars().take(MAX).collect::<String>())
    } else {
        text.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(error: &str) -> Entry<'_> {
        Entry {
            at: "count word",
            key: Some("w".into()),
            error,
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The bytes a line points at, in the bin file beside its log.
    fn bytes_of(bin: &Path, line: &serde_json::Value) -> Vec<u8> {
        let bin = std::fs::read(bin).unwrap();
        let (off, len) = (
            line["offset"].as_u64().unwrap() as usize,
            line["len"].as_u64().unwrap() as usize,
        );
        bin[off..off + len].to_vec()
    }

    fn size(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }

    #[test]
    fn entries_point_at_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetters::new(dir.path().join("data"), 1 << 20, Counter::default());
        dl.write(&entry("first"), b"abc");
        dl.write(&entry("second"), b"defgh");
        let lines = lines(&dl.log_path());
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["error"], "second");
        assert_eq!(lines[1]["at"], "count word");
        assert_eq!(lines[1]["message_len"], 5);
        assert_eq!(bytes_of(&dl.bin_path(), &lines[1]), b"defgh");
    }

    #[test]
    fn a_prefix_names_the_whole_length() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetters::new(dir.path(), 1 << 20, Counter::default());
        dl.write_prefix(&entry("too long"), b"head", 4 << 30);
        let line = &lines(&dl.log_path())[0];
        assert_eq!(line["len"], 4);
        assert_eq!(line["message_len"], 4u64 << 30);
        assert_eq!(bytes_of(&dl.bin_path(), line), b"head");
    }

    #[test]
    fn the_files_rotate_and_never_pass_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let max = 10_000;
        let dl = DeadLetters::new(dir.path(), max, Counter::default());
        for i in 0..200u32 {
            dl.write(&entry(&format!("message {i}")), &[i as u8; 300]);
            assert!(
                size(dir.path()) <= max,
                "{} bytes after {i}",
                size(dir.path())
            );
        }
        // The newest entries are kept, each pointing at its own bytes in its own generation.
        let current = lines(&dl.log_path());
        let previous = lines(&dir.path().join("dead-letter.1.log"));
        assert!(!previous.is_empty());
        assert_eq!(current.last().unwrap()["error"], "message 199");
        let first_current = current[0]["error"].as_str().unwrap().to_string();
        let last_previous = previous.last().unwrap()["error"].as_str().unwrap();
        let n = |s: &str| s.strip_prefix("message ").unwrap().parse::<u32>().unwrap();
        assert_eq!(n(last_previous) + 1, n(&first_current));
        for (log, bin) in [
            (&current, dl.bin_path()),
            (&previous, dir.path().join("dead-letter.1.bin")),
        ] {
            for line in log {
                let i = n(line["error"].as_str().unwrap());
                assert_eq!(bytes_of(&bin, line), vec![i as u8; 300]);
            }
        }
    }

    #[test]
    fn a_message_larger_than_half_the_budget_keeps_its_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetters::new(dir.path(), 4096, Counter::default());
        dl.write(&entry("big"), &[7u8; 10_000]);
        dl.write(&entry("big again"), &[8u8; 10_000]);
        assert!(size(dir.path()) <= 4096);
        let line = &lines(&dl.log_path())[0];
        assert_eq!(line["message_len"], 10_000);
        let kept = bytes_of(&dl.bin_path(), line);
        assert!(!kept.is_empty() && kept.len() < 2048, "{}", kept.len());
        assert!(kept.iter().all(|&b| b == 8));
    }

    #[test]
    fn a_long_error_text_is_cut_and_the_files_stay_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let max = MIN_MAX_BYTES;
        let dl = DeadLetters::new(dir.path(), max, Counter::default());
        let huge = "é".repeat(1_500_000);
        for _ in 0..10 {
            dl.write(&entry(&huge), b"payload");
            assert!(size(dir.path()) <= max, "{} bytes", size(dir.path()));
        }
        let line = &lines(&dl.log_path())[0];
        let error = line["error"].as_str().unwrap();
        assert!(error.len() < MAX_ERROR_TEXT + 100, "{}", error.len());
        assert!(
            error.ends_with("[error text cut to its first 4096 of 3000000 bytes]"),
            "{}",
            &error[error.len() - 80..]
        );
        assert_eq!(bytes_of(&dl.bin_path(), line), b"payload");
        // Control characters escape to six bytes each in JSON: the line still fits.
        let nuls = "\0".repeat(1 << 20);
        dl.write(&entry(&nuls), b"payload");
        assert!(size(dir.path()) <= max, "{} bytes", size(dir.path()));
        assert_eq!(
            bytes_of(&dl.bin_path(), lines(&dl.log_path()).last().unwrap()),
            b"payload"
        );
        assert_eq!(bounded_error("short"), "short");
    }

    #[test]
    fn a_failing_write_is_counted_and_writing_resumes_when_it_can() {
        let dir = tempfile::tempdir().unwrap();
        let unwritten = Counter::default();
        let dl = DeadLetters::new(dir.path(), 1 << 20, unwritten.clone());
        // A directory where the bin file belongs fails every open, even for root.
        std::fs::create_dir(dl.bin_path()).unwrap();
        dl.write(&entry("lost"), b"x");
        dl.write(&entry("lost too"), b"y");
        assert_eq!(unwritten.get(), 2);
        assert!(lines(&dl.log_path()).is_empty());
        std::fs::remove_dir(dl.bin_path()).unwrap();
        dl.write(&entry("kept"), b"z");
        assert_eq!(unwritten.get(), 2);
        let lines = lines(&dl.log_path());
        assert_eq!(lines.len(), 1);
        assert_eq!(bytes_of(&dl.bin_path(), &lines[0]), b"z");
    }
}
