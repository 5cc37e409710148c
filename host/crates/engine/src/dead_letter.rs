//! Messages the application could not process, kept for the operator.
//!
//! Two files in the node's data directory: `dead-letter.log` has one JSON object per message
//! (time, source or step, key, error, and where its bytes are), `dead-letter.bin` holds the
//! message bytes themselves, back to back, at the offset and length the log line gives. The
//! bytes are the input of the failed segment: a source frame's payload, or the serialised value
//! a keyed step received.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::Serialize;

pub struct DeadLetters {
    dir: PathBuf,
    files: Mutex<Option<Files>>,
}

struct Files {
    log: File,
    bin: File,
    offset: u64,
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
    len: u64,
}

impl DeadLetters {
    /// Dead letters for a node whose data directory is `dir`; files are created on first use.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            files: Mutex::new(None),
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

    pub fn write(&self, entry: &Entry<'_>, payload: &[u8]) -> anyhow::Result<()> {
        self.write_from(entry, payload.len() as u64, &mut &payload[..])
    }

    /// Writes a message whose `len` bytes are read from `payload` (a frame too large to hold in
    /// memory is streamed from its socket this way).
    pub fn write_from(
        &self,
        entry: &Entry<'_>,
        len: u64,
        payload: &mut dyn Read,
    ) -> anyhow::Result<()> {
        let mut guard = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        let files = guard.as_mut().expect("opened above");
        let copied = std::io::copy(&mut payload.take(len), &mut files.bin)
            .with_context(|| format!("writing {}", self.bin_path().display()))?;
        let line = Line {
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default(),
            entry,
            offset: files.offset,
            len: copied,
        };
        files.offset += copied;
        let mut text = serde_json::to_vec(&line)?;
        text.push(b'\n');
        files
            .log
            .write_all(&text)
            .with_context(|| format!("writing {}", self.log_path().display()))?;
        Ok(())
    }

    /// Starts an entry whose bytes arrive in pieces (a frame too large to hold in memory, read
    /// from its socket in chunks). The pieces go to a private temporary file, so concurrent
    /// entries never interleave; [`EntryWriter::finish`] moves them into the dead letters.
    pub fn open_entry(&self) -> std::io::Result<EntryWriter<'_>> {
        std::fs::create_dir_all(&self.dir)?;
        Ok(EntryWriter {
            dead_letters: self,
            file: tempfile::tempfile_in(&self.dir)?,
            len: 0,
        })
    }

    fn open(&self) -> anyhow::Result<Files> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating data directory {}", self.dir.display()))?;
        let open = |p: PathBuf| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .with_context(|| format!("opening {}", p.display()))
        };
        let bin = open(self.bin_path())?;
        let offset = bin.metadata()?.len();
        Ok(Files {
            log: open(self.log_path())?,
            bin,
            offset,
        })
    }
}

pub struct EntryWriter<'a> {
    dead_letters: &'a DeadLetters,
    file: File,
    len: u64,
}

impl EntryWriter<'_> {
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    pub fn finish(mut self, entry: &Entry<'_>) -> anyhow::Result<()> {
        use std::io::Seek;
        self.file.rewind()?;
        self.dead_letters
            .write_from(entry, self.len, &mut self.file)
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

    #[test]
    fn entries_point_at_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetters::new(dir.path().join("data"));
        let e = |error| Entry {
            at: "count word",
            key: Some("w".into()),
            error,
        };
        dl.write(&e("first"), b"abc").unwrap();
        dl.write(&e("second"), b"defgh").unwrap();
        let log = std::fs::read_to_string(dl.log_path()).unwrap();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let bin = std::fs::read(dl.bin_path()).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["error"], "second");
        assert_eq!(lines[1]["at"], "count word");
        let (off, len) = (
            lines[1]["offset"].as_u64().unwrap(),
            lines[1]["len"].as_u64().unwrap(),
        );
        assert_eq!(&bin[off as usize..(off + len) as usize], b"defgh");
    }
}
