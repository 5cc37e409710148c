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
//! Layout: two 20-byte slots, at offsets 0 and 32, each
//! `MAGIC | lsn: u64 LE | crc32 of the 16 bytes before: u32 LE`. Writes go to the slots in
//! turn, in place, so a write torn by a crash spoils at most the slot it was writing; reading
//! takes the highest LSN among the intact slots. The file stays at 52 bytes: once it exists,
//! updating it needs no room on the disk.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::{Lsn, WalError, io};

const FILE_NAME: &str = "durable";
const MAGIC: &[u8; 8] = b"WALDURBL";
const SLOT_LEN: usize = 20;
const SLOTS: [u64; 2] = [0, 32];

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// The mark in `dir`; 0 when there is none (a log written before the mark existed, or a new
/// one) or when no slot is intact.
pub(crate) fn read(dir: &Path) -> Result<Lsn, WalError> {
    let path = path(dir);
    let data = match std::fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(&path)(e)),
    };
    let intact: Vec<Lsn> = SLOTS
        .iter()
        .filter_map(|&at| data.get(at as usize..at as usize + SLOT_LEN))
        .filter_map(decode)
        .collect();
    if intact.is_empty() {
        tracing::warn!(
            file = %path.display(),
            "the write-ahead log's durable mark is unreadable; checking the log without it"
        );
    }
    Ok(intact.into_iter().max().unwrap_or(0))
}

fn encode(lsn: Lsn) -> [u8; SLOT_LEN] {
    let mut slot = [0u8; SLOT_LEN];
    slot[..8].copy_from_slice(MAGIC);
    slot[8..16].copy_from_slice(&lsn.to_le_bytes());
    let crc = crc32fast::hash(&slot[..16]);
    slot[16..].copy_from_slice(&crc.to_le_bytes());
    slot
}

fn decode(slot: &[u8]) -> Option<Lsn> {
    let (head, crc) = slot.split_at(16);
    if &head[..8] != MAGIC || crc32fast::hash(head).to_le_bytes() != crc {
        return None;
    }
    Some(u64::from_le_bytes(head[8..16].try_into().ok()?))
}

pub(crate) struct DurableMark {
    path: PathBuf,
    file: File,
    written: Lsn,
    next_slot: usize,
}

impl DurableMark {
    /// Opens (creating if needed) the mark in `dir` and sets it to `lsn`, durably: used when
    /// opening the log, once `lsn` is known to be on disk, and when the mark must go down
    /// (records were discarded), so a crash cannot leave it above the log.
    pub(crate) fn reset(dir: &Path, lsn: Lsn) -> Result<DurableMark, WalError> {
        let path = path(dir);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let mark = DurableMark {
            path,
            file,
            written: lsn,
            next_slot: 0,
        };
        for at in SLOTS {
            mark.file
                .write_all_at(&encode(lsn), at)
                .map_err(io(&mark.path))?;
        }
        mark.file.sync_data().map_err(io(&mark.path))?;
        Ok(mark)
    }

    /// Records that everything through `lsn` is on disk (no sync: see the module doc).
    pub(crate) fn advance(&mut self, lsn: Lsn) -> Result<(), WalError> {
        if lsn <= self.written {
            return Ok(());
        }
        self.file
            .write_all_at(&encode(lsn), SLOTS[self.next_slot])
            .map_err(io(&self.path))?;
        self.next_slot = (self.next_slot + 1) % SLOTS.len();
        self.written = lsn;
        Ok(())
    }
}
