//! One segment file: header, records, and the scan that finds where intact records end.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::{FORMAT_VERSION, Lost, Lsn, OLDEST_READABLE_VERSION, Record, WalError, io};

const MAGIC: &[u8; 8] = b"WALLAROO";
pub(crate) const HEADER_LEN: u64 = 12;
/// A record body larger than this is taken as a corrupt length field.
const MAX_BODY: u32 = 1 << 30;

pub(crate) fn path(dir: &Path, first_lsn: Lsn) -> PathBuf {
    dir.join(format!("{first_lsn:020}.wal"))
}

/// The segments in `dir`, ordered by first LSN.
pub(crate) fn list(dir: &Path) -> Result<Vec<(Lsn, PathBuf)>, WalError> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let first = path
            .extension()
            .filter(|e| *e == "wal")
            .and_then(|_| path.file_stem()?.to_str()?.parse::<Lsn>().ok());
        if let Some(first) = first {
            segments.push((first, path));
        }
    }
    segments.sort();
    Ok(segments)
}

pub(crate) fn write_header(out: &mut impl Write) -> std::io::Result<()> {
    out.write_all(MAGIC)?;
    out.write_all(&FORMAT_VERSION.to_le_bytes())
}

/// Appends one record; returns the bytes written.
pub(crate) fn write_record(out: &mut impl Write, record: &Record) -> std::io::Result<u64> {
    let mut body = Vec::new();
    record.encode(&mut body);
    out.write_all(&(body.len() as u32).to_le_bytes())?;
    out.write_all(&crc32fast::hash(&body).to_le_bytes())?;
    out.write_all(&body)?;
    Ok(8 + body.len() as u64)
}

pub(crate) struct Segment {
    pub(crate) records: Vec<(Lsn, Record)>,
    /// The offset of the first torn or corrupt record, if any.
    pub(crate) bad_at: Option<u64>,
    /// The whole file, for a look at what lies after `bad_at`.
    pub(crate) data: Vec<u8>,
}

/// The format version in a segment's header (which [`Segment::scan`] has checked).
pub(crate) fn version(path: &Path) -> Result<u32, WalError> {
    let mut header = [0u8; HEADER_LEN as usize];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(io(path))?;
    Ok(u32::from_le_bytes(
        header[8..12].try_into().expect("4 bytes"),
    ))
}

impl Segment {
    pub(crate) fn scan(path: &Path, first_lsn: Lsn) -> Result<Segment, WalError> {
        let mut data = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(io(path))?;
        if data.len() < HEADER_LEN as usize {
            // A header that never made it to disk: the segment holds nothing.
            return Ok(Segment {
                records: Vec::new(),
                bad_at: Some(0),
                data,
            });
        }
        if &data[..8] != MAGIC {
            return Err(WalError::NotALog {
                path: path.to_path_buf(),
            });
        }
        let version = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
        if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(WalError::IncompatibleVersion {
                path: path.to_path_buf(),
                found: version,
            });
        }
        let mut records = Vec::new();
        let mut at = HEADER_LEN as usize;
        while at < data.len() {
            match read_record(&data[at..]) {
                Some((record, used)) => {
                    records.push((first_lsn + records.len() as u64, record));
                    at += used;
                }
                None => {
                    return Ok(Segment {
                        records,
                        bad_at: Some(at as u64),
                        data,
                    });
                }
            }
        }
        Ok(Segment {
            records,
            bad_at: None,
            data,
        })
    }
}

/// The header bytes of the segment at `path` (fewer if the file is shorter).
pub(crate) fn header(path: &Path) -> Result<Vec<u8>, WalError> {
    let mut header = Vec::with_capacity(HEADER_LEN as usize);
    File::open(path)
        .and_then(|f| f.take(HEADER_LEN).read_to_end(&mut header))
        .map_err(io(path))?;
    Ok(header)
}

/// Whether what follows the header of `data` starts with a record this build reads.
pub(crate) fn body_parses(data: &[u8]) -> bool {
    data.get(HEADER_LEN as usize..)
        .is_some_and(|body| read_record(body).is_some())
}

/// Whether `data` starts like a segment this build can read (magic and version).
pub(crate) fn readable_header(data: &[u8]) -> bool {
    data.len() >= HEADER_LEN as usize
        && &data[..8] == MAGIC
        && (OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&u32::from_le_bytes(
            data[8..12].try_into().expect("4 bytes"),
        ))
}

/// How many body bytes [`survey`] may checksum while it looks for intact records after a bad
/// one, in all (about 0.1 s). Most offsets are dismissed without a checksum (their length is 0
/// or runs past the file, or their first body byte is no record kind), so a torn tail (at most
/// one group commit, zeros where pages never reached the disk) is searched whole, and so are a
/// few MiB of random bytes; past the budget the rest counts as unchecked, and unchecked bytes
/// are never taken for a torn tail.
pub(crate) const RESYNC_BUDGET: u64 = 1 << 30;

/// What lies in `data[from..]`, which starts with a bad record (or is a whole segment whose
/// header is bad): the intact records found by scanning on past every bad spot for the next
/// offset holding a record whose length, checksum and body check.
pub(crate) fn survey(data: &[u8], from: usize, budget: &mut u64, lost: &mut Lost) {
    let mut at = from;
    while at < data.len() {
        if let Some((record, used)) = read_record(&data[at..]) {
            lost.count(&record);
            at += used;
            continue;
        }
        lost.bad_records += 1;
        match resync(data, at, budget) {
            Resync::Found(next) => {
                lost.unreadable_bytes += (next - at) as u64;
                at = next;
            }
            Resync::None => {
                lost.unreadable_bytes += (data.len() - at) as u64;
                return;
            }
            Resync::OverBudget => {
                lost.unreadable_bytes += (data.len() - at) as u64;
                lost.unchecked_bytes += (data.len() - at) as u64;
                return;
            }
        }
    }
}

enum Resync {
    Found(usize),
    None,
    OverBudget,
}

/// The first offset after the bad record at `bad` that holds an intact record.
fn resync(data: &[u8], bad: usize, budget: &mut u64) -> Resync {
    // A flipped body byte leaves the length intact: the next record starts where it says.
    if let Some(len) = data.get(bad..bad + 4) {
        let next = bad + 8 + u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        if next < data.len() && read_record(&data[next..]).is_some() {
            return Resync::Found(next);
        }
    }
    for at in bad + 1..data.len().saturating_sub(8) {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
        let end = at + 8 + len as usize;
        if len == 0 || len > MAX_BODY || end > data.len() || !Record::known_kind(data[at + 8]) {
            continue;
        }
        if *budget < u64::from(len) {
            return Resync::OverBudget;
        }
        *budget -= u64::from(len);
        if read_record(&data[at..]).is_some() {
            return Resync::Found(at);
        }
    }
    Resync::None
}

fn read_record(data: &[u8]) -> Option<(Record, usize)> {
    let (len, rest) = data.split_first_chunk::<4>()?;
    let (crc, rest) = rest.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len);
    if len > MAX_BODY || rest.len() < len as usize {
        return None;
    }
    let body = &rest[..len as usize];
    if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
        return None;
    }
    Some((Record::decode(body)?, 8 + len as usize))
}
