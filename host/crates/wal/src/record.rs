//! The kinds of record a node logs, and their bodies' byte layout (little endian; byte
//! strings as u32 length + bytes).

/// One log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A frame a source accepted, logged before it is processed so it can be replayed.
    Input {
        source: u32,
        seq: u64,
        payload: Vec<u8>,
    },
    /// One key's state as of a checkpoint.
    State {
        checkpoint: u64,
        step: u32,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Every worker has written its part of `checkpoint`.
    Commit { checkpoint: u64 },
    /// Sink output of an epoch, held until that epoch's checkpoint commits.
    Output {
        epoch: u64,
        sink: u32,
        seq: u64,
        payload: Vec<u8>,
    },
}

const INPUT: u8 = 1;
const STATE: u8 = 2;
const COMMIT: u8 = 3;
const OUTPUT: u8 = 4;

impl Record {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Input {
                source,
                seq,
                payload,
            } => {
                out.push(INPUT);
                out.extend_from_slice(&source.to_le_bytes());
                out.extend_from_slice(&seq.to_le_bytes());
                put_bytes(out, payload);
            }
            Record::State {
                checkpoint,
                step,
                key,
                value,
            } => {
                out.push(STATE);
                out.extend_from_slice(&checkpoint.to_le_bytes());
                out.extend_from_slice(&step.to_le_bytes());
                put_bytes(out, key);
                put_bytes(out, value);
            }
            Record::Commit { checkpoint } => {
                out.push(COMMIT);
                out.extend_from_slice(&checkpoint.to_le_bytes());
            }
            Record::Output {
                epoch,
                sink,
                seq,
                payload,
            } => {
                out.push(OUTPUT);
                out.extend_from_slice(&epoch.to_le_bytes());
                out.extend_from_slice(&sink.to_le_bytes());
                out.extend_from_slice(&seq.to_le_bytes());
                put_bytes(out, payload);
            }
        }
    }

    /// None when the body is not a well-formed record (its checksum matched, so this means a
    /// record kind from a newer build or a bug, and is treated like corruption).
    pub(crate) fn decode(body: &[u8]) -> Option<Record> {
        let (&kind, mut rest) = body.split_first()?;
        let record = match kind {
            INPUT => Record::Input {
                source: take_u32(&mut rest)?,
                seq: take_u64(&mut rest)?,
                payload: take_bytes(&mut rest)?,
            },
            STATE => Record::State {
                checkpoint: take_u64(&mut rest)?,
                step: take_u32(&mut rest)?,
                key: take_bytes(&mut rest)?,
                value: take_bytes(&mut rest)?,
            },
            COMMIT => Record::Commit {
                checkpoint: take_u64(&mut rest)?,
            },
            OUTPUT => Record::Output {
                epoch: take_u64(&mut rest)?,
                sink: take_u32(&mut rest)?,
                seq: take_u64(&mut rest)?,
                payload: take_bytes(&mut rest)?,
            },
            _ => return None,
        };
        rest.is_empty().then_some(record)
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn take_u32(rest: &mut &[u8]) -> Option<u32> {
    let (head, tail) = rest.split_first_chunk::<4>()?;
    *rest = tail;
    Some(u32::from_le_bytes(*head))
}

fn take_u64(rest: &mut &[u8]) -> Option<u64> {
    let (head, tail) = rest.split_first_chunk::<8>()?;
    *rest = tail;
    Some(u64::from_le_bytes(*head))
}

fn take_bytes(rest: &mut &[u8]) -> Option<Vec<u8>> {
    let len = take_u32(rest)? as usize;
    if rest.len() < len {
        return None;
    }
    let (bytes, tail) = rest.split_at(len);
    *rest = tail;
    Some(bytes.to_vec())
}
