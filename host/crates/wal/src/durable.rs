//! The durable mark: a small file beside the segments, `durable`, that holds the highest LSN
//! the log has reported durable. Opening compares the log with it: a bad record at or before
//! the mark is not a torn write (those only happen after the last sync) but lost data.
//!
//! The mark is a lower bound, never more than the truth: it is written only after the sync
//! that made its LSN durable, and it is not synced itself, so after a power loss it may lag
//! (by what the kernel had not yet written back, typically up to 30 s) but never lead. That
//! keeps group commit at one `fdatasync`: the price is that corruption of records synced in
//! the last few seconds before a power loss is told from a torn tail only by what follows it
//! (see [`crate::Wal::open`]), not by the mark.
//!
//! The mark also holds the log's low-water mark: the first LSN compaction kept. Segments
//! before it were removed on purpose (a full checkpoint made them unnecessary); a log whose
//! first segment starts after it has lost its head, and opening refuses it.
//!
//! Layout: two 28-byte slots, at offsets 0 and 32, each
//! `MAGIC | lsn: u64 LE | low: u64 LE | crc32 of the 24 bytes before: u32 LE` (a mark written
//! before the low-water mark existed has 20-byte slots, `OLD_MAGIC | lsn | crc32`, and no low
//! mark). Writes go to the slots in turn, in place, so a write torn by a crash spoils at most
//! the slot it was writing; reading takes the highest LSN among the intact slots. The file
//! stays at 60 bytes: once it exists, updating it needs no room on the disk.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::{Lsn, WalError, io};

const FILE_NAME: &str = "durable";
const MAGIC: &[u8; 8] = b"WALDURB2";
const OLD_MAGIC: &[u8; 8] = b"WALDURBL";
const SLOT_LEN: usize = 28;
const OLD_SLOT_LEN: usize = 20;
const SLOTS: [u64; 2] = [0, 32];

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// What the mark file says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Mark {
    /// The highest LSN the log reported durable; 0 when unknown.
    pub(crate) durable: Lsn,
    /// The first LSN compaction kept; `None` when unknown (no mark file, no intact slot, or a
    /// mark written before the low-water mark existed).
    pub(crate) low: Option<Lsn>,
    /// Whether the file exists at all.
    pub(crate) exists: bool,
}

/// The mark in `dir`; durable 0 and no low mark when there is none (a log written before the
/// mark existed, or a new one) or when no slot is intact.
pub(crate) fn read(dir: &Path) -> Result<Mark, WalError> {
    let path = path(dir);
    let data = match std::fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Mark::default()),
        Err(e) => return Err(io(&path)(e)),
    };
    let intact: Vec<(Lsn, Option<Lsn>)> = SLOTS
        .iter()
        .filter_map(|&at| decode(data.get(at as usize..)?))
        .collect();
    if intact.is_empty() {
        tracing::warn!(
            file = %path.display(),
            "the write-ahead log's durable mark is unreadable; checking the log without it"
        );
    }
    let (durable, low) = intact.into_iter().max().unwrap_or((0, None));
    Ok(Mark {
        durable,
        low,
        exists: true,
    })
}

fn encode(lsn: Lsn, low: Lsn) -> [u8; SLOT_LEN] {
    let mut slot = [0u8; SLOT_LEN];
    slot[..8].copy_from_slice(MAGIC);
    slot[8..16].copy_from_slice(&lsn.to_le_bytes());
    slot[16..24].copy_from_slice(&low.to_le_bytes());
    let crc = crc32fast::hash(&slot[..24]);
    slot[24..].copy_from_slice(&crc.to_le_bytes());
    slot
}

/// The LSN and low-water mark in the slot at the start of `data`.
fn decode(data: &[u8]) -> Option<(Lsn, Option<Lsn>)> {
    let u64_at = |at: usize| Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?));
    let crc_ok = |len: usize| {
        let (head, rest) = data.split_at_checked(len)?;
        (crc32fast::hash(head).to_le_bytes() == rest.get(..4)?).then_some(())
    };
    match data.get(..8)? {
        m if m == MAGIC => {
            crc_ok(SLOT_LEN - 4)?;
            Some((u64_at(8)?, Some(u64_at(16)?)))
        }
        m if m == OLD_MAGIC => {
            crc_ok(OLD_SLOT_LEN - 4)?;
            Some((u64_at(8)?, None))
        }
        _ => None,
    }
}

pub(crate) struct DurableMark {
    path: PathBuf,
    file: File,
    written: Lsn,
    low: Lsn,
    next_slot: usize,
}

impl DurableMark {
    /// Opens (creating if needed) the mark in `dir` and sets it to `lsn` and the low-water
    /// mark to `low`, durably: used when opening the log, once `lsn` is known to be on disk,
    /// and when the mark must go down (records were discarded), so a crash cannot leave it
    /// above the log.
    pub(crate) fn reset(dir: &Path, lsn: Lsn, low: Lsn) -> Result<DurableMark, WalError> {
        let path = path(dir);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut mark = DurableMark {
            path,
            file,
            written: lsn,
            low,
            next_slot: 0,
        };
        mark.set_low(low)?;
        Ok(mark)
    }

    /// Sets the low-water mark to `low`, durably (in both slots), before compaction removes
    /// the segments before it.
    pub(crate) fn set_low(&mut self, low: Lsn) -> Result<(), WalError> {
        self.low = low;
        for at in SLOTS {
            self.file
                .write_all_at(&encode(self.written, low), at)
                .map_err(io(&self.path))?;
        }
        self.file.sync_data().map_err(io(&self.path))
    }

    /// Records that everything through `lsn` is on disk (no sync: see the module doc).
    pub(crate) fn advance(&mut self, lsn: Lsn) -> Result<(), WalError> {
        if lsn <= self.written {
            return Ok(());
        }
        self.file
            .write_all_at(&encode(lsn, self.low), SLOTS[self.next_slot])
            .map_err(io(&self.path))?;
        self.next_slot = (self.next_slot + 1) % SLOTS.len();
        self.written = lsn;
        Ok(())
    }
}
