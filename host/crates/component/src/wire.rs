//! The flat byte buffers of `process`, `snapshot-changed`, `restore` and `take`, and the plain
//! Rust values the rest of the host sees in their place.
//!
//! The layouts are specified in `wit/wallaroo.wit` (types `batch`, `outputs`, `state-entries`
//! and `state-keys`); this module is their only reader and writer on the host. A buffer from a
//! guest is untrusted: every length is checked against what is left, and anything that does not
//! fit becomes a [`Malformed`] naming the record and byte where it went wrong, never a panic.

use std::fmt;

/// One message into a segment. `key` is empty for source segments. `event_time` is in
/// nanoseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub event_time: u64,
}

/// A message leaving a segment at a `key_by`: the host routes it to the owner of `key`'s key
/// group, which runs `segment` on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub key: Vec<u8>,
    pub segment: u32,
    pub payload: Vec<u8>,
    pub event_time: u64,
}

/// Input message `input` reached window step `step` too late for every window it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Late {
    pub input: u32,
    pub step: u32,
}

/// The `input` of a failure that no input message caused (a window that a watermark fired).
pub const NO_INPUT: u32 = u32::MAX;

/// Encoded bytes for a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    pub sink: u32,
    pub payload: Vec<u8>,
}

/// A user error while processing input message `input` of the batch. Nothing that message
/// produced is in the output; the host dead-letters it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub input: u32,
    pub step: u32,
    /// The key being processed, where known, for the error report.
    pub key: Option<Vec<u8>>,
    pub error: String,
}

/// One result of a `process` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Route(Routed),
    Emit(Emitted),
    Failed(Failure),
    Late(Late),
    /// The generator source of this segment has run out.
    Ended(u32),
}

/// The durable form of one key's state in one stateful step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    pub step: u32,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// A key of a stateful step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateKey {
    pub step: u32,
    pub key: Vec<u8>,
}

const ROUTE: u8 = 0;
const EMIT: u8 = 1;
const FAILED: u8 = 2;
const LATE: u8 = 3;
const ENDED: u8 = 4;

/// A buffer from the guest that does not follow its layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// Which buffer: "outputs" or "state entries".
    pub buffer: &'static str,
    /// Its size in bytes.
    pub size: usize,
    /// What did not fit, and where.
    pub detail: String,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed {} buffer from the guest ({} bytes): {} (a bug in the guest's SDK)",
            self.buffer, self.size, self.detail
        )
    }
}

impl std::error::Error for Malformed {}

/// Values too large for one buffer: the guest's memory is 32-bit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge {
    pub what: String,
    pub bytes: usize,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} would be {} bytes; a guest call carries at most {} bytes",
            self.what,
            self.bytes,
            u32::MAX
        )
    }
}

impl std::error::Error for TooLarge {}

/// Writes a table-then-bytes buffer: the count, `head(item)` for every item, `middle(item)`
/// for every item (`middle_size` bytes each), then the byte fields of every item in order.
fn encode_table<T>(
    items: &[T],
    head_size: usize,
    what: &str,
    head: impl Fn(&T, &mut Vec<u8>),
    (middle_size, middle): (usize, impl Fn(&T, &mut Vec<u8>)),
    fields: impl Fn(&T) -> [&[u8]; 2],
) -> Result<Vec<u8>, TooLarge> {
    let data: usize = items
        .iter()
        .map(|item| fields(item).iter().map(|f| f.len()).sum::<usize>())
        .sum();
    let total = 4 + (head_size + middle_size) * items.len() + data;
    // The guest's memory is 32-bit: a buffer that fits it has every count and length fit a u32,
    // so the casts in `head` are exact.
    if u32::try_from(total).is_err() {
        return Err(TooLarge {
            what: format!("the buffer of {} {what}", items.len()),
            bytes: total,
        });
    }
    let mut buf = Vec::with_capacity(total);
    buf.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for item in items {
        head(item, &mut buf);
    }
    for item in items {
        middle(item, &mut buf);
    }
    for item in items {
        for field in fields(item) {
            buf.extend_from_slice(field);
        }
    }
    Ok(buf)
}

/// The `middle` of [`encode_table`] for tables without one.
fn nothing_between<T>(_: &T, _: &mut Vec<u8>) {}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

/// The `batch` buffer of a `process` call.
pub fn encode_batch(messages: &[Message]) -> Result<Vec<u8>, TooLarge> {
    encode_table(
        messages,
        8,
        "messages",
        |m, buf| {
            put_u32(buf, m.key.len() as u32);
            put_u32(buf, m.payload.len() as u32);
        },
        (8, |m: &Message, buf: &mut Vec<u8>| {
            buf.extend_from_slice(&m.event_time.to_le_bytes())
        }),
        |m| [&m.key, &m.payload],
    )
}

/// The `state-entries` buffer of a `restore` call.
pub fn encode_entries(entries: &[StateEntry]) -> Result<Vec<u8>, TooLarge> {
    encode_table(
        entries,
        12,
        "state entries",
        |e, buf| {
            put_u32(buf, e.step);
            put_u32(buf, e.key.len() as u32);
            put_u32(buf, e.value.len() as u32);
        },
        (0, nothing_between),
        |e| [&e.key, &e.value],
    )
}

/// The `state-keys` buffer of a `take` call.
pub fn encode_keys(keys: &[StateKey]) -> Result<Vec<u8>, TooLarge> {
    encode_table(
        keys,
        8,
        "state keys",
        |k, buf| {
            put_u32(buf, k.step);
            put_u32(buf, k.key.len() as u32);
        },
        (0, nothing_between),
        |k| [&k.key, &[]],
    )
}

/// Reads a buffer from the guest front to back, failing with the place it stopped making sense.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
    buffer: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], buffer: &'static str) -> Self {
        Self { buf, at: 0, buffer }
    }

    fn malformed(&self, detail: String) -> Malformed {
        Malformed {
            buffer: self.buffer,
            size: self.buf.len(),
            detail,
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    fn bytes(&mut self, n: usize, what: impl FnOnce() -> String) -> Result<&'a [u8], Malformed> {
        if n > self.remaining() {
            return Err(self.malformed(format!(
                "{} needs {n} bytes at byte {}, only {} remain",
                what(),
                self.at,
                self.remaining()
            )));
        }
        let bytes = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(bytes)
    }

    fn u8(&mut self, what: impl FnOnce() -> String) -> Result<u8, Malformed> {
        Ok(self.bytes(1, what)?[0])
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, Malformed> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, Malformed> {
        let b = self.bytes(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn is_empty(&self) -> bool {
        self.at == self.buf.len()
    }
}

/// The `outputs` buffer a `process` call returned.
pub fn decode_outputs(buf: &[u8]) -> Result<Vec<Output>, Malformed> {
    let mut r = Reader::new(buf, "outputs");
    let mut outputs = Vec::new();
    while !r.is_empty() {
        let n = outputs.len();
        let start = r.at;
        let at = || format!("record {n} (at byte {start})");
        let output = match r.u8(|| format!("{}'s tag", at()))? {
            ROUTE => {
                let segment = r.u32(|| format!("{}'s segment", at()))?;
                let key_len = r.u32(|| format!("{}'s key length", at()))?;
                let payload_len = r.u32(|| format!("{}'s payload length", at()))?;
                let event_time = r.u64(|| format!("{}'s event time", at()))?;
                let key = r.bytes(key_len as usize, || format!("{}'s key", at()))?;
                let payload = r.bytes(payload_len as usize, || format!("{}'s payload", at()))?;
                Output::Route(Routed {
                    key: key.to_vec(),
                    segment,
                    payload: payload.to_vec(),
                    event_time,
                })
            }
            EMIT => {
                let sink = r.u32(|| format!("{}'s sink", at()))?;
                let payload_len = r.u32(|| format!("{}'s payload length", at()))?;
                let payload = r.bytes(payload_len as usize, || format!("{}'s payload", at()))?;
                Output::Emit(Emitted {
                    sink,
                    payload: payload.to_vec(),
                })
            }
            FAILED => {
                let input = r.u32(|| format!("{}'s input", at()))?;
                let step = r.u32(|| format!("{}'s step", at()))?;
                let has_key = r.u8(|| format!("{}'s has-key flag", at()))?;
                let key_len = r.u32(|| format!("{}'s key length", at()))?;
                let error_len = r.u32(|| format!("{}'s error length", at()))?;
                if has_key > 1 || (has_key == 0 && key_len != 0) {
                    return Err(r.malformed(format!(
                        "{} (failed) has has-key {has_key} with a key of {key_len} bytes; \
                         has-key must be 1, or 0 with no key",
                        at()
                    )));
                }
                let key = r.bytes(key_len as usize, || format!("{}'s key", at()))?;
                let error = r.bytes(error_len as usize, || format!("{}'s error text", at()))?;
                Output::Failed(Failure {
                    input,
                    step,
                    key: (has_key == 1).then(|| key.to_vec()),
                    error: String::from_utf8_lossy(error).into_owned(),
                })
            }
            LATE => {
                let input = r.u32(|| format!("{}'s input", at()))?;
                let step = r.u32(|| format!("{}'s step", at()))?;
                Output::Late(Late { input, step })
            }
            ENDED => Output::Ended(r.u32(|| format!("{}'s segment", at()))?),
            tag => {
                return Err(r.malformed(format!(
                    "{} has the unknown tag {tag} (route is 0, emit 1, failed 2, late 3, \
                     ended 4)",
                    at()
                )));
            }
        };
        outputs.push(output);
    }
    Ok(outputs)
}

/// The `state-entries` buffer a `snapshot-changed` or `take` call returned.
pub fn decode_entries(buf: &[u8]) -> Result<Vec<StateEntry>, Malformed> {
    let mut entries = Vec::new();
    for (i, (step, key, value)) in decode_entry_table(buf)?.into_iter().enumerate() {
        let Some(value) = value else {
            return Err(Malformed {
                buffer: "state entries",
                size: buf.len(),
                detail: format!(
                    "entry {i} says its key's state was removed, which only snapshot-changed \
                     may say"
                ),
            });
        };
        entries.push(StateEntry { step, key, value });
    }
    Ok(entries)
}

/// A `value-len` that says the key's state was removed (it expired); no value bytes follow.
pub const REMOVED: u32 = u32::MAX;

/// What `snapshot-changed` says of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateChange {
    /// Its state now.
    Set(StateEntry),
    /// Its state was removed (it expired).
    Removed(StateKey),
}

/// The `state-entries` buffer of `snapshot-changed`.
pub fn decode_changes(buf: &[u8]) -> Result<Vec<StateChange>, Malformed> {
    Ok(decode_entry_table(buf)?
        .into_iter()
        .map(|(step, key, value)| match value {
            Some(value) => StateChange::Set(StateEntry { step, key, value }),
            None => StateChange::Removed(StateKey { step, key }),
        })
        .collect())
}

type TableEntry = (u32, Vec<u8>, Option<Vec<u8>>);

fn decode_entry_table(buf: &[u8]) -> Result<Vec<TableEntry>, Malformed> {
    let mut r = Reader::new(buf, "state entries");
    let count = r.u32(|| "the entry count".into())? as usize;
    // Each entry's head takes 12 bytes: a count the buffer cannot hold is refused before
    // anything is allocated for it.
    if count > r.remaining() / 12 {
        return Err(r.malformed(format!(
            "the count says {count} entries, but {} bytes cannot hold their {} bytes of \
             lengths",
            r.remaining(),
            count as u64 * 12
        )));
    }
    let mut heads = Vec::with_capacity(count);
    for i in 0..count {
        let step = r.u32(|| format!("entry {i}'s step"))?;
        let key_len = r.u32(|| format!("entry {i}'s key length"))?;
        let value_len = r.u32(|| format!("entry {i}'s value length"))?;
        heads.push((step, key_len, value_len));
    }
    let mut entries = Vec::with_capacity(count);
    for (i, (step, key_len, value_len)) in heads.into_iter().enumerate() {
        let key = r.bytes(key_len as usize, || format!("entry {i}'s key"))?;
        let value = match value_len {
            REMOVED => None,
            n => Some(
                r.bytes(n as usize, || format!("entry {i}'s value"))?
                    .to_vec(),
            ),
        };
        entries.push((step, key.to_vec(), value));
    }
    if !r.is_empty() {
        return Err(r.malformed(format!(
            "{} bytes are left over after the last of {count} entries",
            r.remaining()
        )));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guest's side of the layouts, written independently of the host's, for round trips.
    mod guest {
        use super::super::*;

        pub fn decode_batch(buf: &[u8]) -> Vec<Message> {
            let n = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
            let times = 4 + 8 * n;
            let mut at = times + 8 * n;
            (0..n)
                .map(|i| {
                    let head = &buf[4 + 8 * i..12 + 8 * i];
                    let key_len = u32::from_le_bytes(head[0..4].try_into().unwrap()) as usize;
                    let payload_len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
                    let time = &buf[times + 8 * i..times + 8 * i + 8];
                    let event_time = u64::from_le_bytes(time.try_into().unwrap());
                    let key = buf[at..at + key_len].to_vec();
                    at += key_len;
                    let payload = buf[at..at + payload_len].to_vec();
                    at += payload_len;
                    Message {
                        key,
                        payload,
                        event_time,
                    }
                })
                .collect()
        }

        pub fn decode_keys(buf: &[u8]) -> Vec<StateKey> {
            let n = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
            let mut at = 4 + 8 * n;
            (0..n)
                .map(|i| {
                    let head = &buf[4 + 8 * i..12 + 8 * i];
                    let step = u32::from_le_bytes(head[0..4].try_into().unwrap());
                    let key_len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
                    let key = buf[at..at + key_len].to_vec();
                    at += key_len;
                    StateKey { step, key }
                })
                .collect()
        }

        pub fn encode_outputs(outputs: &[Output]) -> Vec<u8> {
            let mut buf = Vec::new();
            let u32 =
                |buf: &mut Vec<u8>, v: usize| buf.extend_from_slice(&(v as u32).to_le_bytes());
            for output in outputs {
                match output {
                    Output::Route(r) => {
                        buf.push(ROUTE);
                        u32(&mut buf, r.segment as usize);
                        u32(&mut buf, r.key.len());
                        u32(&mut buf, r.payload.len());
                        buf.extend_from_slice(&r.event_time.to_le_bytes());
                        buf.extend_from_slice(&r.key);
                        buf.extend_from_slice(&r.payload);
                    }
                    Output::Late(l) => {
                        buf.push(LATE);
                        u32(&mut buf, l.input as usize);
                        u32(&mut buf, l.step as usize);
                    }
                    Output::Ended(segment) => {
                        buf.push(ENDED);
                        u32(&mut buf, *segment as usize);
                    }
                    Output::Emit(e) => {
                        buf.push(EMIT);
                        u32(&mut buf, e.sink as usize);
                        u32(&mut buf, e.payload.len());
                        buf.extend_from_slice(&e.payload);
                    }
                    Output::Failed(f) => {
                        buf.push(FAILED);
                        u32(&mut buf, f.input as usize);
                        u32(&mut buf, f.step as usize);
                        let key = f.key.as_deref().unwrap_or_default();
                        buf.push(f.key.is_some() as u8);
                        u32(&mut buf, key.len());
                        u32(&mut buf, f.error.len());
                        buf.extend_from_slice(key);
                        buf.extend_from_slice(f.error.as_bytes());
                    }
                }
            }
            buf
        }
    }

    fn sample_outputs() -> Vec<Output> {
        vec![
            Output::Route(Routed {
                key: b"word".to_vec(),
                segment: 3,
                payload: vec![0x80, 5, 0, 255],
                event_time: 1_700_000_000_000_000_000,
            }),
            Output::Emit(Emitted {
                sink: 1,
                payload: b"word => 1\n".to_vec(),
            }),
            Output::Failed(Failure {
                input: 7,
                step: 2,
                key: Some(b"k\xffey".to_vec()),
                error: "ValueError: bad (app.py:3 in f)".into(),
            }),
            Output::Failed(Failure {
                input: 8,
                step: 0,
                key: None,
                error: String::new(),
            }),
            Output::Route(Routed {
                key: Vec::new(),
                segment: 0,
                payload: Vec::new(),
                event_time: u64::MAX,
            }),
            Output::Late(Late { input: 3, step: 9 }),
            Output::Failed(Failure {
                input: NO_INPUT,
                step: 4,
                key: Some(b"w".to_vec()),
                error: "late".into(),
            }),
        ]
    }

    fn sample_entries() -> Vec<StateEntry> {
        vec![
            StateEntry {
                step: 3,
                key: b"hi".to_vec(),
                value: b"\x80\x05state".to_vec(),
            },
            StateEntry {
                step: 4,
                key: Vec::new(),
                value: Vec::new(),
            },
            StateEntry {
                step: u32::MAX,
                key: vec![0; 300],
                value: vec![1; 70_000],
            },
        ]
    }

    fn detail(e: Malformed) -> String {
        e.to_string()
    }

    #[test]
    fn batches_round_trip() {
        let messages = vec![
            Message {
                key: Vec::new(),
                payload: b"a line of text".to_vec(),
                event_time: 0x0102_0304_0506_0708,
            },
            Message {
                key: b"k".to_vec(),
                payload: Vec::new(),
                event_time: 0,
            },
            Message {
                key: vec![9; 1000],
                payload: vec![7; 100_000],
                event_time: u64::MAX,
            },
        ];
        let buf = encode_batch(&messages).unwrap();
        assert_eq!(buf.len(), 4 + 16 * 3 + 14 + 1 + 1000 + 100_000);
        assert_eq!(&buf[..12], &[3, 0, 0, 0, 0, 0, 0, 0, 14, 0, 0, 0]);
        // The event times follow the table of lengths.
        assert_eq!(&buf[28..36], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(guest::decode_batch(&buf), messages);
        assert_eq!(encode_batch(&[]).unwrap(), vec![0, 0, 0, 0]);
    }

    #[test]
    fn outputs_round_trip() {
        let outputs = sample_outputs();
        assert_eq!(
            decode_outputs(&guest::encode_outputs(&outputs)).unwrap(),
            outputs
        );
        assert_eq!(decode_outputs(&[]).unwrap(), Vec::new());
    }

    #[test]
    fn outputs_have_the_documented_layout() {
        let emit = [1, 2, 0, 0, 0, 3, 0, 0, 0, b'a', b'b', b'c'];
        assert_eq!(
            decode_outputs(&emit).unwrap(),
            vec![Output::Emit(Emitted {
                sink: 2,
                payload: b"abc".to_vec()
            })]
        );
        let mut route = vec![0, 4, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0];
        route.extend_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1, b'k', b'p', b'q']);
        route.extend_from_slice(&[3, 5, 0, 0, 0, 6, 0, 0, 0]);
        assert_eq!(
            decode_outputs(&route).unwrap(),
            vec![
                Output::Route(Routed {
                    key: b"k".to_vec(),
                    segment: 4,
                    payload: b"pq".to_vec(),
                    event_time: 0x0102_0304_0506_0708,
                }),
                Output::Late(Late { input: 5, step: 6 }),
            ]
        );
    }

    #[test]
    fn state_entries_round_trip() {
        let entries = sample_entries();
        let buf = encode_entries(&entries).unwrap();
        assert_eq!(
            &buf[..16],
            &[3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0]
        );
        assert_eq!(decode_entries(&buf).unwrap(), entries);
        assert_eq!(
            decode_entries(&encode_entries(&[]).unwrap()).unwrap(),
            Vec::new()
        );
    }

    #[test]
    fn a_removed_key_is_a_change_of_snapshot_changed_and_malformed_elsewhere() {
        // Entry 0: step 2, key "ab", removed; entry 1: step 1, key "c", value "xyz".
        let mut buf = vec![2, 0, 0, 0];
        for v in [2u32, 2, REMOVED, 1, 1, 3] {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        buf.extend_from_slice(b"abcxyz");
        assert_eq!(
            decode_changes(&buf).unwrap(),
            vec![
                StateChange::Removed(StateKey {
                    step: 2,
                    key: b"ab".to_vec()
                }),
                StateChange::Set(StateEntry {
                    step: 1,
                    key: b"c".to_vec(),
                    value: b"xyz".to_vec()
                }),
            ]
        );
        let err = decode_entries(&buf).unwrap_err().to_string();
        assert!(
            err.contains("entry 0 says its key's state was removed"),
            "{err}"
        );
        // A removed entry has no value bytes: a buffer that gives it some is malformed.
        buf.splice(30..30, *b"zz");
        assert!(decode_changes(&buf).is_err());
    }

    #[test]
    fn state_keys_round_trip() {
        let keys = vec![
            StateKey {
                step: 3,
                key: b"hi".to_vec(),
            },
            StateKey {
                step: 1,
                key: Vec::new(),
            },
        ];
        let buf = encode_keys(&keys).unwrap();
        assert_eq!(buf.len(), 4 + 16 + 2);
        assert_eq!(guest::decode_keys(&buf), keys);
    }

    #[test]
    fn invalid_utf8_in_an_error_text_is_replaced() {
        let mut buf = guest::encode_outputs(&[Output::Failed(Failure {
            input: 0,
            step: 1,
            key: None,
            error: "ab".into(),
        })]);
        let last = buf.len() - 1;
        buf[last] = 0xff;
        let [Output::Failed(f)] = &decode_outputs(&buf).unwrap()[..] else {
            panic!("not one failure");
        };
        assert_eq!(f.error, "a\u{fffd}");
    }

    #[test]
    fn every_truncation_of_outputs_is_refused() {
        let buf = guest::encode_outputs(&sample_outputs());
        let ends: Vec<usize> = {
            let mut ends = Vec::new();
            let mut at = 0;
            for output in sample_outputs() {
                at += guest::encode_outputs(&[output]).len();
                ends.push(at);
            }
            ends
        };
        for cut in 0..buf.len() {
            match decode_outputs(&buf[..cut]) {
                Ok(outputs) => assert!(
                    cut == 0 || ends.contains(&cut),
                    "a cut at {cut} inside a record decoded as {outputs:?}"
                ),
                Err(e) => assert!(!ends.contains(&cut), "a cut at {cut} failed: {e}"),
            }
        }
    }

    #[test]
    fn every_truncation_of_state_entries_is_refused() {
        let buf = encode_entries(&sample_entries()).unwrap();
        for cut in 0..buf.len() {
            assert!(
                decode_entries(&buf[..cut]).is_err(),
                "a cut at {cut} decoded"
            );
        }
    }

    #[test]
    fn a_truncated_output_names_the_record_and_field() {
        let mut buf = guest::encode_outputs(&sample_outputs()[..2]);
        buf.truncate(buf.len() - 3);
        assert_eq!(
            detail(decode_outputs(&buf).unwrap_err()),
            "malformed outputs buffer from the guest (45 bytes): record 1 (at byte 29)'s payload \
             needs 10 bytes at byte 38, only 7 remain (a bug in the guest's SDK)"
        );
    }

    #[test]
    fn an_unknown_output_tag_is_refused() {
        let mut buf = guest::encode_outputs(&sample_outputs()[..1]);
        buf.push(9);
        let e = decode_outputs(&buf).unwrap_err();
        assert_eq!(e.buffer, "outputs");
        assert!(
            e.detail
                .starts_with("record 1 (at byte 29) has the unknown tag 9"),
            "{}",
            e.detail
        );
    }

    #[test]
    fn a_failure_with_a_key_it_says_it_lacks_is_refused() {
        let mut buf = guest::encode_outputs(&sample_outputs()[2..3]);
        buf[9] = 0; // has-key 0, but the key is 4 bytes
        let e = decode_outputs(&buf).unwrap_err();
        assert!(
            e.detail.contains("has-key 0 with a key of 4 bytes"),
            "{}",
            e.detail
        );
        buf[9] = 2;
        assert!(decode_outputs(&buf).is_err());
    }

    #[test]
    fn huge_lengths_are_refused_without_allocating() {
        let mut route = vec![ROUTE];
        for v in [0u32, u32::MAX, u32::MAX] {
            route.extend_from_slice(&v.to_le_bytes());
        }
        route.extend_from_slice(&7u64.to_le_bytes());
        assert!(
            decode_outputs(&route)
                .unwrap_err()
                .detail
                .contains("key needs 4294967295")
        );

        let count = u32::MAX.to_le_bytes();
        let e = decode_entries(&count).unwrap_err();
        assert!(
            e.detail.starts_with("the count says 4294967295 entries"),
            "{}",
            e.detail
        );
    }

    #[test]
    fn bytes_left_after_the_last_entry_are_refused() {
        let mut buf = encode_entries(&sample_entries()[..1]).unwrap();
        buf.push(0);
        let e = decode_entries(&buf).unwrap_err();
        assert_eq!(
            e.detail,
            "1 bytes are left over after the last of 1 entries"
        );
    }
}
