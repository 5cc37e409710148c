//! A node's write-ahead log: append-only segment files of checksummed records.
//!
//! Layout: one directory, files `<first-lsn>.wal` (20 digits) in LSN order. Each file starts with
//! an 12-byte header (`WALLAROO`, format version as u32 LE); a directory written by another
//! format version is refused rather than reused. Each record is
//! `len: u32 LE | crc32: u32 LE | body`, the CRC covering the body, and the body is a
//! [`Record`] (kind byte, then its fields). Records are numbered by their position in the log
//! (the LSN), starting at 1.
//!
//! Appends are buffered and made durable together: [`Wal::append`] as many records as there are,
//! then one [`Wal::sync`] (one `fdatasync`) makes all of them durable — group commit. After
//! each sync the log notes the durable LSN in a small file beside the segments (`durable`, see
//! the `durable` module).
//!
//! Opening scans every segment. A crash can tear only the end of the newest segment, after the
//! last sync: a bad record there, with no intact record after it, is cut off with a warning
//! naming file and offset. A bad record anywhere else (intact records follow it, a later
//! segment exists, or the log had reported it durable) is corruption of data that may have
//! been acknowledged: opening fails with [`WalError::Corrupt`], which says where and what lies
//! after, and leaves every file as it is, unless [`WalOptions::discard_corrupt`] says to drop
//! the log from there on (the file truncated there, later segments removed).
//!
//! Missing records are corruption as well: segments that do not join, a log that ends before
//! the durable mark, and a head that compaction did not remove. Compaction notes the first LSN
//! it keeps (the low-water mark) in the `durable` file before it removes a segment; a log
//! whose oldest segment starts after that mark has lost records nothing made unnecessary. (A
//! log whose mark predates the low-water mark accepts a missing head that a full checkpoint's
//! cut covers, as compaction would have.) A damaged segment header in a log whose other
//! segments read, or before records that read, is corruption at offset 0; a directory whose
//! segments all carry the same header of another format is refused as a foreign log.

mod corruption;
mod durable;
mod record;
mod segment;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use corruption::{Corruption, Lost, StreamRange, Why};
pub use record::{KeyState, Record, StateSteps, StreamPosition};
use segment::{HEADER_LEN, Segment};

/// The position of a record in the log, from 1.
pub type Lsn = u64;

/// The on-disk format this build writes.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format this build reads (format 2 added the rollback record; format 3 names the
/// step of each state entry, where formats 1 and 2 gave its position in the app spec).
pub const OLDEST_READABLE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} was written by log format {found}; this build reads formats \
         {OLDEST_READABLE_VERSION} to {FORMAT_VERSION}: use a new data directory, or the version \
         that wrote this one"
    )]
    IncompatibleVersion { path: PathBuf, found: u32 },
    #[error("{path} is not a Wallaroo log segment (bad header)")]
    NotALog { path: PathBuf },
    #[error("{0}")]
    Corrupt(Box<Corruption>),
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct WalOptions {
    /// A segment is closed and a new one started once it holds this many bytes.
    pub segment_bytes: u64,
    /// Open a corrupt log anyway, dropping everything from the bad record on (see
    /// [`Wal::open`]); off, opening a corrupt log fails and leaves it as it is.
    pub discard_corrupt: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            discard_corrupt: false,
        }
    }
}

/// What opening found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every intact record, with its LSN, in order.
    pub records: Vec<(Lsn, Record)>,
    /// Bytes cut off a torn tail, or dropped with a discarded corruption (0 when the log was
    /// clean).
    pub truncated_bytes: u64,
    /// The corruption [`WalOptions::discard_corrupt`] made opening drop, and what it dropped.
    pub discarded: Option<Corruption>,
}

pub struct Wal {
    dir: PathBuf,
    options: WalOptions,
    /// Closed segments, oldest first, with their first LSN.
    closed: Vec<(Lsn, PathBuf)>,
    active: Active,
    next_lsn: Lsn,
    mark: Arc<Mutex<durable::DurableMark>>,
}

struct Active {
    first_lsn: Lsn,
    path: PathBuf,
    out: BufWriter<File>,
    bytes: u64,
}

impl Wal {
    /// Opens (creating if needed) the log in `dir` and returns what it holds.
    ///
    /// A bad record at the end of the newest segment, after the last position the log reported
    /// durable and with no intact record after it, is a write a crash tore: it is cut off with
    /// a warning. Any other bad spot is corruption of records that were (or may have been)
    /// acknowledged: opening fails with [`WalError::Corrupt`] and changes nothing on disk,
    /// unless [`WalOptions::discard_corrupt`] says to drop the log from there on, which
    /// [`Recovered::discarded`] then reports.
    pub fn open(
        dir: impl Into<PathBuf>,
        options: WalOptions,
    ) -> Result<(Wal, Recovered), WalError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut segments = segment::list(&dir)?;
        let mark = durable::read(&dir)?;
        let durable = mark.durable;
        if !mark.exists && !segments.is_empty() {
            tracing::warn!(
                file = %durable::path(&dir).display(),
                "the write-ahead log's durable mark is missing; checking the log without it \
                 (records lost before a crash cannot be told from a torn tail this time)"
            );
        }
        let headers = segments
            .iter()
            .map(|(_, path)| segment::header(path))
            .collect::<Result<Vec<Vec<u8>>, WalError>>()?;
        // Every segment with the same header this build cannot read: a log of another format
        // (one flipped byte does not strike every segment alike).
        let foreign = headers.len() > 1
            && headers.iter().all(|h| h == &headers[0])
            && !segment::readable_header(&headers[0]);
        let mut recovered = Recovered::default();
        let mut next_lsn = segments.first().map_or(1, |(first, _)| *first);
        let mut bad = None;
        for (i, (first, path)) in segments.iter().enumerate() {
            if *first != next_lsn {
                // Only reachable for i > 0: the previous segment ends short of this one.
                let (_, prev) = &segments[i - 1];
                let offset = fs::metadata(prev).map_err(io(prev))?.len();
                let why = Why::Gap {
                    next: path.clone(),
                    first: *first,
                };
                bad = Some((i - 1, offset, Vec::new(), Some(why)));
                break;
            }
            let scan = match Segment::scan(path, *first) {
                Ok(scan) => scan,
                Err(e @ (WalError::NotALog { .. } | WalError::IncompatibleVersion { .. })) => {
                    // A header of another format in a log of this one, or before records this
                    // build reads, is damage, not a foreign log.
                    let data = fs::read(path).map_err(io(path))?;
                    let others_good = headers
                        .iter()
                        .enumerate()
                        .any(|(j, h)| j != i && segment::readable_header(h));
                    if foreign || !others_good && !segment::body_parses(&data) {
                        return Err(e);
                    }
                    let found = match &e {
                        WalError::IncompatibleVersion { found, .. } => {
                            format!("it names log format {found}")
                        }
                        _ => "its first 8 bytes are not WALLAROO".to_string(),
                    };
                    bad = Some((i, 0, data, Some(Why::BadHeader { found })));
                    break;
                }
                Err(e) => return Err(e),
            };
            next_lsn = first + scan.records.len() as u64;
            recovered.records.extend(scan.records);
            if let Some(at) = scan.bad_at {
                bad = Some((i, at, scan.data, None));
                break;
            }
        }
        // The head: segments before the first one may be gone only if compaction removed them.
        let mut low = mark.low.unwrap_or(1);
        let mut head_discarded = None;
        if let Some((first, path)) = segments.first() {
            let covered = match mark.low {
                Some(low) => *first <= low,
                // A log that keeps no low-water mark: compaction removes only records before a
                // full checkpoint's cut, and that checkpoint's commit follows its cut.
                None => {
                    *first == 1
                        || recovered.records.iter().any(|(_, r)| {
                            matches!(r, Record::Commit { full: true, cut, .. } if cut >= first)
                        })
                }
            };
            if !covered {
                let corruption = missing_head(path, *first, mark.low, &recovered.records);
                if !options.discard_corrupt {
                    return Err(WalError::Corrupt(Box::new(corruption)));
                }
                head_discarded = Some(corruption);
            }
            if !covered || mark.low.is_none() {
                low = *first;
            }
        }
        let mut keep = segments.len();
        if let Some((i, offset, data, why)) = bad {
            let path = segments[i].1.clone();
            let (mut lost, in_segment) = lost_from(&data, offset, &segments[i + 1..])?;
            if let Some(Why::Gap { first, .. }) = &why {
                lost.missing += first - next_lsn;
            }
            let reached = next_lsn - 1 + lost.missing + lost.bad_records + lost.records;
            lost.missing += durable.saturating_sub(reached);
            lost.start_streams_at(&recovered.records);
            let why = why.or_else(|| {
                if i + 1 < segments.len() {
                    Some(Why::NotNewestSegment)
                } else if next_lsn <= durable {
                    Some(Why::BeforeDurable { durable })
                } else if in_segment > 0 || lost.unchecked_bytes > 0 {
                    Some(Why::RecordsAfter)
                } else {
                    None
                }
            });
            match why {
                None => tracing::warn!(
                    file = %path.display(),
                    offset,
                    bytes = lost.bytes,
                    "torn record at the end of the write-ahead log (a write a crash cut short, \
                     never reported durable); cutting it off"
                ),
                Some(why) => {
                    let corruption = Corruption {
                        path: path.clone(),
                        offset,
                        lsn: next_lsn,
                        why,
                        lost,
                    };
                    if !options.discard_corrupt {
                        return Err(WalError::Corrupt(Box::new(corruption)));
                    }
                    // Down first, durably: a crash before the cut below must not leave a mark
                    // above what the log will hold.
                    durable::DurableMark::reset(&dir, next_lsn - 1, low)?;
                    recovered.discarded = Some(corruption);
                }
            }
            recovered.truncated_bytes += data.len().saturating_sub(offset as usize) as u64;
            if (offset as usize) < data.len() || offset < HEADER_LEN {
                let mut f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(&path))?;
                if offset < HEADER_LEN {
                    // Not even the header made it: start the segment over.
                    f.set_len(0).map_err(io(&path))?;
                    segment::write_header(&mut f).map_err(io(&path))?;
                } else {
                    f.set_len(offset).map_err(io(&path))?;
                }
                f.sync_all().map_err(io(&path))?;
            }
            keep = i + 1;
        } else if next_lsn - 1 < durable {
            let (path, offset) = match segments.last() {
                Some((_, path)) => (path.clone(), fs::metadata(path).map_err(io(path))?.len()),
                None => (dir.clone(), 0),
            };
            let corruption = Corruption {
                path,
                offset,
                lsn: next_lsn,
                why: Why::Missing { durable },
                lost: Lost {
                    missing: durable - (next_lsn - 1),
                    ..Lost::default()
                },
            };
            if !options.discard_corrupt {
                return Err(WalError::Corrupt(Box::new(corruption)));
            }
            recovered.discarded = Some(corruption);
        }
        // A discarded head is reported unless a discard later in the log is.
        if recovered.discarded.is_none() {
            recovered.discarded = head_discarded;
        }
        if keep < segments.len() {
            for (_, later) in segments.drain(keep..) {
                let len = fs::metadata(&later).map(|m| m.len()).unwrap_or(0);
                tracing::warn!(
                    file = %later.display(),
                    "removing a log segment after a discarded corrupt record"
                );
                recovered.truncated_bytes += len;
                fs::remove_file(&later).map_err(io(&later))?;
            }
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&dir))?;
        }
        let active = match segments.pop() {
            // A segment of an older format is not appended to (a build of that format would
            // take this build's records for corruption): new records go to a new segment.
            Some((first, path)) if segment::version(&path)? < FORMAT_VERSION => {
                if first == next_lsn {
                    // It holds no record: it becomes a segment of this format.
                    fs::remove_file(&path).map_err(io(&path))?;
                } else {
                    segments.push((first, path));
                }
                Active::create(&dir, next_lsn)?
            }
            Some((first, path)) => Active::reopen(first, path)?,
            None => Active::create(&dir, next_lsn)?,
        };
        // What was read is on disk from here on (a crash of the process leaves written records
        // in the page cache, not yet synced): the mark may say so.
        active.out.get_ref().sync_data().map_err(io(&active.path))?;
        // Past the checks above, the log holds at least what the mark said.
        let mark = durable::DurableMark::reset(&dir, next_lsn - 1, low)?;
        let wal = Wal {
            dir,
            options,
            closed: segments,
            active,
            next_lsn,
            mark: Arc::new(Mutex::new(mark)),
        };
        Ok((wal, recovered))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The LSN the next appended record will get.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Buffers a record; it is durable after the next [`Wal::sync`].
    pub fn append(&mut self, record: &Record) -> Result<Lsn, WalError> {
        if self.active.bytes >= self.options.segment_bytes {
            self.roll()?;
        }
        let lsn = self.next_lsn;
        let written =
            segment::write_record(&mut self.active.out, record).map_err(io(&self.active.path))?;
        self.active.bytes += written;
        self.next_lsn += 1;
        Ok(lsn)
    }

    /// Writes every buffered record and waits until the disk has them (one fsync).
    pub fn sync(&mut self) -> Result<(), WalError> {
        let path = &self.active.path;
        self.active.out.flush().map_err(io(path))?;
        self.active.out.get_ref().sync_data().map_err(io(path))?;
        advance(&self.mark, self.next_lsn - 1)
    }

    /// Writes every buffered record to the file and returns what makes them durable. Call
    /// [`PendingSync::sync`] without holding the log, so appends go on while the disk syncs.
    pub fn flush(&mut self) -> Result<PendingSync, WalError> {
        let path = &self.active.path;
        self.active.out.flush().map_err(io(path))?;
        Ok(PendingSync {
            file: self.active.out.get_ref().try_clone().map_err(io(path))?,
            path: path.clone(),
            through: self.next_lsn - 1,
            mark: self.mark.clone(),
        })
    }

    /// Removes closed segments holding only records before `lsn` (records a committed
    /// checkpoint has made unnecessary). Returns how many segments were removed.
    ///
    /// The first LSN kept goes to the low-water mark first, durably, so opening can tell
    /// segments compaction removed from segments that went missing.
    pub fn compact_before(&mut self, lsn: Lsn) -> Result<usize, WalError> {
        let mut removed = 0;
        let mut low = None;
        while self.closed.len() > removed {
            // A closed segment ends where the next one (closed or active) begins.
            let next_first = self
                .closed
                .get(removed + 1)
                .map(|(first, _)| *first)
                .unwrap_or(self.active.first_lsn);
            if next_first > lsn {
                break;
            }
            low = Some(next_first);
            removed += 1;
        }
        let Some(low) = low else {
            return Ok(0);
        };
        self.mark
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_low(low)?;
        for (_, path) in self.closed.drain(..removed) {
            fs::remove_file(&path).map_err(io(&path))?;
        }
        Ok(removed)
    }

    /// The segment files, oldest first.
    pub fn segments(&self) -> Vec<PathBuf> {
        self.closed
            .iter()
            .map(|(_, p)| p.clone())
            .chain(std::iter::once(self.active.path.clone()))
            .collect()
    }

    fn roll(&mut self) -> Result<(), WalError> {
        self.sync()?;
        let fresh = Active::create(&self.dir, self.next_lsn)?;
        let old = std::mem::replace(&mut self.active, fresh);
        self.closed.push((old.first_lsn, old.path));
        Ok(())
    }
}

/// What lies from `offset` in the segment `data` (a bad spot) to the end of the log, the
/// segments `later` included; and how many intact records follow in the same segment.
fn lost_from(data: &[u8], offset: u64, later: &[(Lsn, PathBuf)]) -> Result<(Lost, u64), WalError> {
    let mut lost = Lost::default();
    let mut budget = segment::RESYNC_BUDGET;
    if offset < HEADER_LEN {
        // A bad header, or one that never made it: records can only follow a whole one.
        let header = data.len().min(HEADER_LEN as usize);
        lost.unreadable_bytes += header as u64;
        segment::survey(data, header, &mut budget, &mut lost);
    } else {
        segment::survey(data, offset as usize, &mut budget, &mut lost);
    }
    let in_segment = lost.records;
    lost.bytes = data.len().saturating_sub(offset as usize) as u64;
    for (_, path) in later {
        let data = fs::read(path).map_err(io(path))?;
        let from = if segment::readable_header(&data) {
            HEADER_LEN as usize
        } else {
            0
        };
        lost.unreadable_bytes += from as u64;
        segment::survey(&data, from, &mut budget, &mut lost);
        lost.bytes += data.len() as u64;
        lost.later_segments += 1;
    }
    Ok((lost, in_segment))
}

/// The report for a log whose oldest segment, `path`, starts at `first` though compaction kept
/// it from `low` on (from 1 when the log keeps no low-water mark); `kept` are its records.
fn missing_head(path: &Path, first: Lsn, low: Option<Lsn>, kept: &[(Lsn, Record)]) -> Corruption {
    let from = low.unwrap_or(1);
    let mut lost = Lost {
        missing: first - from,
        ..Lost::default()
    };
    lost.state_kept_by = kept
        .iter()
        .filter_map(|(_, r)| match r {
            Record::Commit {
                checkpoint,
                cut,
                full: true,
                ..
            } if *cut >= first => Some(*checkpoint),
            _ => None,
        })
        .max();
    if from == 1 && lost.state_kept_by.is_none() {
        // Every stream began in the missing records or after them: a stream's frames before
        // its first kept input record are gone; for a stream with no kept input, at least the
        // frames a kept checkpoint counts for it.
        let mut first_input: BTreeMap<(u32, u64), u64> = BTreeMap::new();
        let mut checkpointed: BTreeMap<(u32, u64), u64> = BTreeMap::new();
        for (_, r) in kept {
            match r {
                Record::Input {
                    source,
                    stream,
                    seq,
                    ..
                } if *stream != 0 => {
                    first_input.entry((*source, *stream)).or_insert(*seq);
                }
                Record::Commit { streams, .. } => {
                    for p in streams {
                        let at = checkpointed.entry((p.source, p.stream)).or_default();
                        *at = (*at).max(p.next_seq);
                    }
                }
                _ => {}
            }
        }
        for (key, at) in checkpointed {
            first_input.entry(key).or_insert(at);
        }
        lost.streams = first_input
            .into_iter()
            .filter(|(_, to)| *to > 0)
            .map(|((source, stream), to_seq)| StreamRange {
                source,
                stream,
                from_seq: 0,
                to_seq,
            })
            .collect();
    }
    Corruption {
        path: path.to_path_buf(),
        offset: 0,
        lsn: from,
        why: Why::MissingHead { first, low },
        lost,
    }
}

/// Records written to the file and not yet known to be on disk.
pub struct PendingSync {
    file: File,
    path: PathBuf,
    through: Lsn,
    mark: Arc<Mutex<durable::DurableMark>>,
}

impl PendingSync {
    /// Waits until the disk has every record up to the returned LSN.
    pub fn sync(self) -> Result<Lsn, WalError> {
        self.file.sync_data().map_err(io(&self.path))?;
        advance(&self.mark, self.through)?;
        Ok(self.through)
    }
}

fn advance(mark: &Mutex<durable::DurableMark>, lsn: Lsn) -> Result<(), WalError> {
    mark.lock().unwrap_or_else(|p| p.into_inner()).advance(lsn)
}

impl Active {
    fn create(dir: &Path, first_lsn: Lsn) -> Result<Active, WalError> {
        let path = segment::path(dir, first_lsn);
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        segment::write_header(&mut file).map_err(io(&path))?;
        file.sync_all().map_err(io(&path))?;
        // The new file's name must survive a crash too.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        Ok(Active {
            first_lsn,
            path,
            out: BufWriter::with_capacity(256 * 1024, file),
            bytes: HEADER_LEN,
        })
    }

    fn reopen(first_lsn: Lsn, path: PathBuf) -> Result<Active, WalError> {
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let bytes = file.metadata().map_err(io(&path))?.len();
        Ok(Active {
            first_lsn,
            path,
            out: BufWriter::with_capacity(256 * 1024, file),
            bytes,
        })
    }
}

#[cfg(test)]
mod tests;
