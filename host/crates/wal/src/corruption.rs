//! What opening found when a log holds a bad record that is not a torn tail: where it is,
//! why it cannot be a torn write, and what dropping the log from there on would lose.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::{Lsn, Record};

/// A bad spot in the log that a crash cannot explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The segment file holding the bad spot.
    pub path: PathBuf,
    /// Its offset in that file.
    pub offset: u64,
    /// The LSN the first record lost has (or had).
    pub lsn: Lsn,
    pub why: Why,
    /// Everything from the bad spot to the end of the log.
    pub lost: Lost,
}

/// Why a bad spot is corruption and not a torn write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Intact records follow it in its segment: a crash tears only the end of the log.
    RecordsAfter,
    /// It is in a segment before the newest, which was complete and synced before the next
    /// segment began.
    NotNewestSegment,
    /// The log had reported records through `durable` durable, and the bad record is one of
    /// them.
    BeforeDurable { durable: Lsn },
    /// Records are missing: the next segment, `next`, starts at LSN `first`, after a gap.
    Gap { next: PathBuf, first: Lsn },
    /// The log ends cleanly, but before records it had reported durable (through `durable`).
    Missing { durable: Lsn },
    /// The oldest segment starts at LSN `first`, but compaction kept the log from `low` on
    /// (`None`: the log keeps no low-water mark, and no full checkpoint covers the records
    /// before `first`): the log has lost its head.
    MissingHead { first: Lsn, low: Option<Lsn> },
    /// The segment's header is damaged (`found`: what it holds instead), while other
    /// segments' headers are good or records follow it.
    BadHeader { found: String },
}

/// What lies from a bad spot to the end of the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lost {
    /// Intact records found after the bad spot.
    pub records: u64,
    /// Bad spots (each at least one record that cannot be read), the first one included.
    pub bad_records: u64,
    /// Records known to be gone: LSNs between segments that do not join, before the oldest
    /// segment, or after the end of the log up to the durable mark.
    pub missing: u64,
    /// Bytes from the bad spot to the end of the log (its segment's rest and later segments).
    pub bytes: u64,
    /// Of those bytes, the ones in no intact record (the bad record itself and any other).
    pub unreadable_bytes: u64,
    /// Of the unreadable bytes, the ones not searched for intact records (a search bound).
    pub unchecked_bytes: u64,
    /// Segment files after the one with the bad spot.
    pub later_segments: usize,
    /// The checkpoints whose commit records are among the records.
    pub checkpoints: Vec<u64>,
    /// Input records (source batches) among the records, and the frames they hold.
    pub inputs: u64,
    pub frames: u64,
    /// The acknowledged streams' frames lost: from the last position the kept log holds to
    /// the last frame the lost records hold.
    pub streams: Vec<StreamRange>,
    /// A full checkpoint in the kept log that holds the state the missing records led to: only
    /// output they held that was not yet written out is lost.
    pub state_kept_by: Option<u64>,
}

/// Frames `from_seq..to_seq` of one acknowledged client stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRange {
    pub source: u32,
    pub stream: u64,
    pub from_seq: u64,
    pub to_seq: u64,
}

impl Lost {
    pub(crate) fn count(&mut self, record: &Record) {
        self.records += 1;
        match record {
            Record::Commit { checkpoint, .. } => self.checkpoints.push(*checkpoint),
            Record::Input {
                source,
                stream,
                seq,
                frames,
                ..
            } => {
                self.inputs += 1;
                self.frames += frames.len() as u64;
                if *stream != 0 {
                    let end = seq + frames.len() as u64;
                    match self
                        .streams
                        .iter_mut()
                        .find(|r| r.source == *source && r.stream == *stream)
                    {
                        Some(r) => {
                            r.from_seq = r.from_seq.min(*seq);
                            r.to_seq = r.to_seq.max(end);
                        }
                        None => self.streams.push(StreamRange {
                            source: *source,
                            stream: *stream,
                            from_seq: *seq,
                            to_seq: end,
                        }),
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether dropping this loses anything a reader of the log could use.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0 && self.missing == 0
    }

    /// Makes every stream's range start where the kept log leaves that stream: at the end of
    /// its last input record in `kept`, or its position in a checkpoint there, whichever is
    /// further. What lies between that and the first intact lost record was in the bad or
    /// missing records, and is lost as well.
    pub(crate) fn start_streams_at(&mut self, kept: &[(Lsn, Record)]) {
        for range in &mut self.streams {
            let kept_end = kept
                .iter()
                .filter_map(|(_, r)| match r {
                    Record::Input {
                        source,
                        stream,
                        seq,
                        frames,
                        ..
                    } if *source == range.source && *stream == range.stream => {
                        Some(seq + frames.len() as u64)
                    }
                    Record::Commit { streams, .. } => streams
                        .iter()
                        .find(|p| p.source == range.source && p.stream == range.stream)
                        .map(|p| p.next_seq),
                    _ => None,
                })
                .max();
            if let Some(end) = kept_end {
                range.from_seq = range.from_seq.min(end);
            }
        }
    }
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} intact records in {} bytes", self.records, self.bytes)?;
        if self.bad_records > 0 {
            let s = if self.bad_records == 1 { "" } else { "s" };
            write!(f, ", {} unreadable record{s}", self.bad_records)?;
        }
        if self.missing > 0 {
            let s = if self.missing == 1 { "" } else { "s" };
            write!(f, ", {} missing record{s}", self.missing)?;
        }
        write!(f, " ({} bytes unreadable", self.unreadable_bytes)?;
        if self.unchecked_bytes > 0 {
            write!(
                f,
                ", {} of them not searched for intact records",
                self.unchecked_bytes
            )?;
        }
        write!(f, "; {} later segment files", self.later_segments)?;
        match self.checkpoints.as_slice() {
            [] => write!(f, "; no checkpoint")?,
            [one] => write!(f, "; checkpoint {one}")?,
            many => {
                let list: Vec<String> = many.iter().map(u64::to_string).collect();
                write!(f, "; checkpoints {}", list.join(", "))?;
            }
        }
        write!(
            f,
            "; {} input records holding {} frames",
            self.inputs, self.frames
        )?;
        if self.bad_records + self.missing > 0 {
            write!(
                f,
                " (and whatever the {} unreadable or missing records held)",
                self.bad_records + self.missing
            )?;
        }
        let mut streams: BTreeMap<(u32, u64), (u64, u64)> = BTreeMap::new();
        for r in &self.streams {
            streams.insert((r.source, r.stream), (r.from_seq, r.to_seq));
        }
        if let Some(checkpoint) = self.state_kept_by {
            write!(
                f,
                "; full checkpoint {checkpoint} holds the state they led to, so only output of \
                 theirs not yet written out is lost)"
            )
        } else if streams.is_empty() {
            write!(f, ", none from an acknowledged stream)")
        } else {
            let list: Vec<String> = streams
                .iter()
                .map(|((source, stream), (from, to))| {
                    format!("source {source} stream {stream:#x} frames {from}..{to}")
                })
                .collect();
            write!(f, ", acknowledged: {})", list.join(", "))
        }
    }
}

impl Corruption {
    /// One line for the operator after `--discard-corrupt-log` dropped it.
    pub fn dropped(&self) -> String {
        if let Why::MissingHead { .. } = self.why {
            return format!(
                "discarded the write-ahead log's missing records before {}: {}; {}",
                self.path.display(),
                self.why,
                self.lost
            );
        }
        format!(
            "discarded the write-ahead log from {} offset {} (record {}) on: {}; {}",
            self.path.display(),
            self.offset,
            self.lsn,
            self.why,
            self.lost
        )
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::RecordsAfter => write!(f, "intact records follow it, so it is no torn write"),
            Why::NotNewestSegment => write!(
                f,
                "it is in a segment before the newest, which was complete and synced before the \
                 next one began"
            ),
            Why::BeforeDurable { durable } => write!(
                f,
                "the log had reported records up to {durable} durable, this one among them"
            ),
            Why::Gap { next, first } => write!(
                f,
                "the segments do not join: the next one, {}, starts at record {first}",
                next.display()
            ),
            Why::Missing { durable } => write!(
                f,
                "the log ends there, but it had reported records up to {durable} durable"
            ),
            Why::MissingHead {
                first,
                low: Some(low),
            } => write!(
                f,
                "the oldest segment starts at record {first}, but compaction kept the log from \
                 record {low} on: records {low} to {} are gone",
                first - 1
            ),
            Why::MissingHead { first, low: None } => write!(
                f,
                "the oldest segment starts at record {first}, and no full checkpoint in the log \
                 covers the records before it: records 1 to {} are gone",
                first - 1
            ),
            Why::BadHeader { found } => write!(
                f,
                "the segment's header is damaged ({found}), while the log around it is a \
                 readable Wallaroo log"
            ),
        }
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Why::MissingHead { .. } = self.why {
            return write!(
                f,
                "the write-ahead log has lost its head, before {}: {}. That is {}. Nothing was \
                 changed on disk. Restore the missing segments or the data directory from a \
                 backup, or restart with --discard-corrupt-log to accept the loss and go on with \
                 the records the log still holds",
                self.path.display(),
                self.why,
                self.lost
            );
        }
        write!(
            f,
            "the write-ahead log is corrupt at {} offset {} (record {}): {}. From there to the \
             end of the log lie {}. Nothing was changed on disk. Restore the data directory from \
             a backup, or restart with --discard-corrupt-log to drop all of that and recover from \
             the last checkpoint before it",
            self.path.display(),
            self.offset,
            self.lsn,
            self.why,
            self.lost
        )
    }
}
