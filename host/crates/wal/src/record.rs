//! The kinds of record a node logs, and their bodies' byte layout (little endian; byte
//! strings as u32 length + bytes; lists as u32 count + items).

use crate::Lsn;

/// One log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A batch of frames a source accepted, logged before it is processed so it can be
    /// replayed. `stream` names an acknowledged client stream (0 for a plain connection) and
    /// `seq` is the position of the first frame in that stream. `time` is when the source
    /// received the frames, the event time they carry (nanoseconds since the Unix epoch; 0 in
    /// logs written before event times existed).
    Input {
        source: u32,
        stream: u64,
        seq: u64,
        time: u64,
        frames: Vec<Vec<u8>>,
    },
    /// Keys' state as of a checkpoint (the keys changed since the one before, or every key in
    /// a full checkpoint). `steps` says which stateful step each entry belongs to.
    State {
        checkpoint: u64,
        steps: StateSteps,
        entries: Vec<KeyState>,
    },
    /// Every worker has written its part of `checkpoint`. The checkpoint holds the effect of
    /// every input logged before `cut`; `streams` are the acknowledged streams' positions at
    /// the cut. A `full` checkpoint wrote every key, so nothing before its cut is needed.
    Commit {
        checkpoint: u64,
        cut: Lsn,
        full: bool,
        streams: Vec<StreamPosition>,
    },
    /// One sink's output of one epoch, in order, held until that epoch's checkpoint commits.
    Output {
        epoch: u64,
        sink: u32,
        payloads: Vec<Vec<u8>>,
    },
    /// Every sink has written out the output of every epoch up to `epoch`.
    Released { epoch: u64 },
    /// This node's cluster rolled back to checkpoint `to`: the checkpoints above it committed
    /// earlier in this log (by this node alone, before the cluster committed them) are void.
    Rollback { to: u64 },
    /// Keys whose state was removed (it expired) as of a checkpoint: a recovery forgets what
    /// earlier state records gave them. `keys` are (step, key), the step as `steps` says
    /// (always [`StateSteps::Named`]).
    Removed {
        checkpoint: u64,
        steps: StateSteps,
        keys: Vec<(u32, Vec<u8>)>,
    },
}

/// How a state record's entries name their step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateSteps {
    /// Format 3 on: [`KeyState::step`] indexes this table of stateful step names, so state
    /// stays with its step when a new version of the application adds or moves steps.
    Named(Vec<String>),
    /// Formats 1 and 2: [`KeyState::step`] is the step's position in the app spec of the
    /// component that wrote the record.
    Positions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    /// Which step, as the record's [`StateSteps`] says.
    pub step: u32,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// How far an acknowledged client stream has been logged: its next frame has `next_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamPosition {
    pub source: u32,
    pub stream: u64,
    pub next_seq: u64,
}

const INPUT: u8 = 1;
/// State whose entries give their step's position in the app spec (formats 1 and 2).
const STATE_BY_POSITION: u8 = 2;
const COMMIT: u8 = 3;
const OUTPUT: u8 = 4;
const RELEASED: u8 = 5;
const ROLLBACK: u8 = 6;
/// State whose entries index a table of step names carried before them (format 3 on).
const STATE: u8 = 7;
/// Input with the time it was received (what `INPUT` became once messages had event times).
const INPUT_AT: u8 = 8;
const REMOVED: u8 = 9;

impl Record {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Input {
                source,
                stream,
                seq,
                time,
                frames,
            } => {
                out.push(INPUT_AT);
                put_u32(out, *source);
                put_u64(out, *stream);
                put_u64(out, *seq);
                put_u64(out, *time);
                put_u32(out, frames.len() as u32);
                frames.iter().for_each(|f| put_bytes(out, f));
            }
            Record::State {
                checkpoint,
                steps,
                entries,
            } => {
                match steps {
                    StateSteps::Named(names) => {
                        out.push(STATE);
                        put_u64(out, *checkpoint);
                        put_u32(out, names.len() as u32);
                        names.iter().for_each(|n| put_bytes(out, n.as_bytes()));
                    }
                    StateSteps::Positions => {
                        out.push(STATE_BY_POSITION);
                        put_u64(out, *checkpoint);
                    }
                }
                put_u32(out, entries.len() as u32);
                for e in entries {
                    put_u32(out, e.step);
                    put_bytes(out, &e.key);
                    put_bytes(out, &e.value);
                }
            }
            Record::Commit {
                checkpoint,
                cut,
                full,
                streams,
            } => {
                out.push(COMMIT);
                put_u64(out, *checkpoint);
                put_u64(out, *cut);
                out.push(u8::from(*full));
                put_u32(out, streams.len() as u32);
                for s in streams {
                    put_u32(out, s.source);
                    put_u64(out, s.stream);
                    put_u64(out, s.next_seq);
                }
            }
            Record::Output {
                epoch,
                sink,
                payloads,
            } => {
                out.push(OUTPUT);
                put_u64(out, *epoch);
                put_u32(out, *sink);
                put_u32(out, payloads.len() as u32);
                payloads.iter().for_each(|p| put_bytes(out, p));
            }
            Record::Released { epoch } => {
                out.push(RELEASED);
                put_u64(out, *epoch);
            }
            Record::Rollback { to } => {
                out.push(ROLLBACK);
                put_u64(out, *to);
            }
            Record::Removed {
                checkpoint,
                steps,
                keys,
            } => {
                out.push(REMOVED);
                put_u64(out, *checkpoint);
                let names = match steps {
                    StateSteps::Named(names) => names.as_slice(),
                    StateSteps::Positions => &[],
                };
                put_u32(out, names.len() as u32);
                names.iter().for_each(|n| put_bytes(out, n.as_bytes()));
                put_u32(out, keys.len() as u32);
                for (step, key) in keys {
                    put_u32(out, *step);
                    put_bytes(out, key);
                }
            }
        }
    }

    /// Whether `byte` is the first byte of some record's body.
    pub(crate) fn known_kind(byte: u8) -> bool {
        (INPUT..=REMOVED).contains(&byte)
    }

    /// None when the body is not a well-formed record (its checksum matched, so this means a
    /// record kind from a newer build or a bug, and is treated like corruption).
    pub(crate) fn decode(body: &[u8]) -> Option<Record> {
        let (&kind, mut rest) = body.split_first()?;
        let r = &mut rest;
        let record = match kind {
            INPUT => Record::Input {
                source: take_u32(r)?,
                stream: take_u64(r)?,
                seq: take_u64(r)?,
                time: 0,
                frames: take_list(r, take_bytes)?,
            },
            INPUT_AT => Record::Input {
                source: take_u32(r)?,
                stream: take_u64(r)?,
                seq: take_u64(r)?,
                time: take_u64(r)?,
                frames: take_list(r, take_bytes)?,
            },
            STATE_BY_POSITION => Record::State {
                checkpoint: take_u64(r)?,
                steps: StateSteps::Positions,
                entries: take_list(r, take_key_state)?,
            },
            STATE => {
                let checkpoint = take_u64(r)?;
                let names = take_list(r, |r| String::from_utf8(take_bytes(r)?).ok())?;
                let entries = take_list(r, take_key_state)?;
                if entries.iter().any(|e| e.step as usize >= names.len()) {
                    return None;
                }
                Record::State {
                    checkpoint,
                    steps: StateSteps::Named(names),
                    entries,
                }
            }
            COMMIT => Record::Commit {
                checkpoint: take_u64(r)?,
                cut: take_u64(r)?,
                full: match take_u8(r)? {
                    0 => false,
                    1 => true,
                    _ => return None,
                },
                streams: take_list(r, |r| {
                    Some(StreamPosition {
                        source: take_u32(r)?,
                        stream: take_u64(r)?,
                        next_seq: take_u64(r)?,
                    })
                })?,
            },
            OUTPUT => Record::Output {
                epoch: take_u64(r)?,
                sink: take_u32(r)?,
                payloads: take_list(r, take_bytes)?,
            },
            RELEASED => Record::Released {
                epoch: take_u64(r)?,
            },
            ROLLBACK => Record::Rollback { to: take_u64(r)? },
            REMOVED => {
                let checkpoint = take_u64(r)?;
                let names = take_list(r, |r| String::from_utf8(take_bytes(r)?).ok())?;
                let keys = take_list(r, |r| Some((take_u32(r)?, take_bytes(r)?)))?;
                if keys.iter().any(|(step, _)| *step as usize >= names.len()) {
                    return None;
                }
                Record::Removed {
                    checkpoint,
                    steps: StateSteps::Named(names),
                    keys,
                }
            }
            _ => return None,
        };
        rest.is_empty().then_some(record)
    }
}

fn take_key_state(r: &mut &[u8]) -> Option<KeyState> {
    Some(KeyState {
        step: take_u32(r)?,
        key: take_bytes(r)?,
        value: take_bytes(r)?,
    })
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

fn take_u8(rest: &mut &[u8]) -> Option<u8> {
    let (&b, tail) = rest.split_first()?;
    *rest = tail;
    Some(b)
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

/// A count, then that many items. The count is checked against the bytes left (every item
/// takes at least 4), so a corrupt count cannot ask for a huge allocation.
fn take_list<T>(rest: &mut &[u8], item: impl Fn(&mut &[u8]) -> Option<T>) -> Option<Vec<T>> {
    let n = take_u32(rest)? as usize;
    if n > rest.len() / 4 {
        return None;
    }
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        items.push(item(rest)?);
    }
    Some(items)
}
