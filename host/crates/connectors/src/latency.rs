//! Latency measurement for benchmarks: `wallaroo send --rate R --stamp` offers a fixed load and
//! stamps each message with the time it was meant to be sent; `wallaroo receive --latency FILE`
//! finds the stamps in the lines that come back and records how long each took in an
//! HdrHistogram.
//!
//! A stamp is the token `t<NANOS>` (NANOS: the sender's CLOCK_MONOTONIC in nanoseconds, so sender
//! and receiver must share a machine) followed by a space, put in front of the message. A
//! received line whose first token is a stamp counts as one sample; a pass-through echoes it, a
//! word count emits it as a word of its own (`t<NANOS> => 1`).
//!
//! The stamp is the *intended* send time (`start + i / rate`), not the time the write happened:
//! a sender held up by a slow node (a full socket, a descheduled thread) sends its backlog at
//! once afterwards, and those messages carry the delay in their latency instead of hiding it
//! (coordinated omission).
//!
//! This module owns the stamp format, pacing and the histogram; it must not change framing or
//! what `receive` writes.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::watch;
use wallaroo_types::Framing;

/// Most messages written at once when catching up, so a long stall is paid back in bounded
/// writes.
const MAX_BURST: u64 = 1024;
/// Longest stamp prefix: `t`, 20 digits (u64::MAX), a space.
const STAMP_MAX: usize = 22;

/// CLOCK_MONOTONIC in nanoseconds: the clock of every stamp, shared by all processes on a
/// machine (Python's `time.monotonic()` reads the same clock).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a pointer to a live, owned value;
    // CLOCK_MONOTONIC always exists on Linux, so it cannot fail.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Appends `t<ns> ` and then `message`.
pub fn stamp(ns: u64, message: &[u8], out: &mut Vec<u8>) {
    write!(out, "t{ns} ").expect("writing to a Vec");
    out.extend_from_slice(message);
}

/// The stamp a line starts with: `t`, one or more digits, then a space or the line's end.
pub fn parse_stamp(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"t")?;
    let digits = rest
        .iter()
        .position(|&b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    if digits == 0 || rest.get(digits).is_some_and(|&b| b != b' ' && b != b'\r') {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// The schedule of a fixed offered load: message `i` is due at `start + i / rate`.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    start_ns: u64,
    rate: u64,
}

impl Pacer {
    pub fn new(rate: u64, start_ns: u64) -> Self {
        Self {
            start_ns,
            rate: rate.max(1),
        }
    }

    /// When message `i` is meant to be sent.
    pub fn intended_ns(&self, i: u64) -> u64 {
        self.start_ns + (u128::from(i) * 1_000_000_000 / u128::from(self.rate)) as u64
    }

    /// How many messages are due by `now_ns` (those whose intended time is not after it).
    pub fn due_by(&self, now_ns: u64) -> u64 {
        let Some(elapsed) = now_ns.checked_sub(self.start_ns) else {
            return 0;
        };
        let due = (u128::from(elapsed) + 1) * u128::from(self.rate);
        due.div_ceil(1_000_000_000).min(u128::from(u64::MAX)) as u64
    }
}

/// Sends `limit` frames (cycling through `messages`) to `out` at `rate` messages per second,
/// each stamped with its intended send time when `stamp` is set. Whatever is due is written in
/// one go, so a sender that fell behind catches up at once. `clock` and `sleep` are
/// [`now_ns`] and a thread sleep in real use.
pub fn send_paced(
    out: &mut impl Write,
    messages: &[&[u8]],
    limit: u64,
    pacer_rate: u64,
    stamp_messages: bool,
    mut clock: impl FnMut() -> u64,
    mut sleep: impl FnMut(Duration),
) -> std::io::Result<u64> {
    if messages.is_empty() {
        return Ok(0);
    }
    let pacer = Pacer::new(pacer_rate, clock());
    let mut sent = 0u64;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut stamped = Vec::new();
    while sent < limit {
        let now = clock();
        let due = pacer.due_by(now).min(limit);
        if due <= sent {
            sleep(Duration::from_nanos(
                pacer.intended_ns(sent).saturating_sub(now),
            ));
            continue;
        }
        let upto = due.min(sent + MAX_BURST);
        buf.clear();
        for i in sent..upto {
            let message = messages[(i % messages.len() as u64) as usize];
            if stamp_messages {
                stamped.clear();
                stamp(pacer.intended_ns(i), message, &mut stamped);
                Framing::DEFAULT.encode(&stamped, &mut buf);
            } else {
                Framing::DEFAULT.encode(message, &mut buf);
            }
        }
        out.write_all(&buf)?;
        sent = upto;
    }
    out.flush()?;
    Ok(sent)
}

/// [`send_paced`] on `stream`, made blocking and driven from this thread (the pacing sleeps are
/// finer than tokio's millisecond timer); needs the multi-threaded runtime. Closes the sending
/// side at the end.
pub(crate) fn send_paced_tcp(
    stream: tokio::net::TcpStream,
    messages: &[&[u8]],
    limit: u64,
    rate: u64,
    stamp_messages: bool,
) -> std::io::Result<u64> {
    let mut stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    let sent = tokio::task::block_in_place(|| {
        send_paced(
            &mut stream,
            messages,
            limit,
            rate,
            stamp_messages,
            now_ns,
            std::thread::sleep,
        )
    })?;
    stream.shutdown(std::net::Shutdown::Write)?;
    Ok(sent)
}

/// What a receiver has seen: every line, and the latency of every stamped one. Shared by all of
/// a receiver's connections.
pub struct LatencyRecorder {
    seen: Mutex<Seen>,
    expect_lines: Option<u64>,
    reached: watch::Sender<bool>,
}

struct Seen {
    /// Nanoseconds from intended send to receipt.
    histogram: Histogram<u64>,
    lines: u64,
    stamped: u64,
    first_ns: Option<u64>,
    last_ns: Option<u64>,
}

impl std::fmt::Debug for LatencyRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("LatencyRecorder")
            .field("lines", &seen.lines)
            .field("stamped", &seen.stamped)
            .field("expect_lines", &self.expect_lines)
            .finish()
    }
}

impl LatencyRecorder {
    /// `expect_lines`: turn [`LatencyRecorder::reached`] true once this many lines arrived.
    pub fn new(expect_lines: Option<u64>) -> Arc<Self> {
        // One nanosecond to an hour, three significant digits (0.1% resolution).
        let histogram =
            Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds");
        Arc::new(Self {
            seen: Mutex::new(Seen {
                histogram,
                lines: 0,
                stamped: 0,
                first_ns: None,
                last_ns: None,
            }),
            expect_lines,
            reached: watch::channel(false).0,
        })
    }

    /// Turns true once the expected number of lines has arrived.
    pub fn reached(&self) -> watch::Receiver<bool> {
        self.reached.subscribe()
    }

    /// A tracker for one connection's byte stream.
    pub fn connection(self: &Arc<Self>) -> LineTracker {
        LineTracker {
            recorder: self.clone(),
            prefix: Vec::with_capacity(STAMP_MAX),
        }
    }

    /// The report as one JSON object: lines, stamped lines, first and last receipt
    /// (CLOCK_MONOTONIC ns), and latency percentiles in microseconds.
    pub fn report_json(&self) -> String {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let h = &seen.histogram;
        let us = |ns: u64| ns as f64 / 1000.0;
        let mut latency = serde_json::Map::new();
        if seen.stamped > 0 {
            latency.insert("min".into(), us(h.min()).into());
            latency.insert("mean".into(), (h.mean() / 1000.0).into());
            for (name, q) in [
                ("p50", 0.5),
                ("p95", 0.95),
                ("p99", 0.99),
                ("p99.9", 0.999),
                ("p99.99", 0.9999),
            ] {
                latency.insert(name.into(), us(h.value_at_quantile(q)).into());
            }
            latency.insert("max".into(), us(h.max()).into());
        }
        serde_json::json!({
            "lines": seen.lines,
            "stamped": seen.stamped,
            "first_ns": seen.first_ns,
            "last_ns": seen.last_ns,
            "latency_us": latency,
        })
        .to_string()
    }
}

/// Splits one connection's bytes into lines (across reads) and records them. Keeps only the
/// start of the current line, as much as a stamp can take.
pub struct LineTracker {
    recorder: Arc<LatencyRecorder>,
    prefix: Vec<u8>,
}

impl LineTracker {
    /// Records the lines `chunk` completes, all received now.
    pub fn observe(&mut self, chunk: &[u8]) {
        self.observe_at(chunk, now_ns());
    }

    fn observe_at(&mut self, chunk: &[u8], now: u64) {
        let mut lines = 0u64;
        let mut latencies = Vec::new();
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let line = &rest[..end];
            let stamp = if self.prefix.is_empty() {
                parse_stamp(&line[..line.len().min(STAMP_MAX)])
            } else {
                self.keep(line);
                parse_stamp(&self.prefix)
            };
            self.prefix.clear();
            lines += 1;
            if let Some(sent) = stamp {
                latencies.push(now.saturating_sub(sent));
            }
            rest = &rest[end + 1..];
        }
        self.keep(rest);
        if lines == 0 {
            return;
        }
        let mut seen = self.recorder.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.lines += lines;
        seen.stamped += latencies.len() as u64;
        seen.first_ns.get_or_insert(now);
        seen.last_ns = Some(now);
        for latency in latencies {
            seen.histogram.saturating_record(latency.max(1));
        }
        if self
            .recorder
            .expect_lines
            .is_some_and(|expected| seen.lines >= expected)
        {
            self.recorder.reached.send_replace(true);
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = STAMP_MAX.saturating_sub(self.prefix.len());
        self.prefix
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_other_words_are_not_stamps() {
        let mut out = Vec::new();
        stamp(1_234_567, b"hello world", &mut out);
        assert_eq!(out, b"t1234567 hello world");
        assert_eq!(parse_stamp(&out), Some(1_234_567));
        assert_eq!(parse_stamp(b"t42 => 1"), Some(42));
        assert_eq!(parse_stamp(b"t42"), Some(42));
        assert_eq!(parse_stamp(b"t42\r"), Some(42));
        for not_a_stamp in [&b"t"[..], b"the => 3", b"t42x => 1", b"x t42", b"", b"t 42"] {
            assert_eq!(parse_stamp(not_a_stamp), None, "{not_a_stamp:?}");
        }
    }

    #[test]
    fn pacer_spreads_messages_evenly_from_the_start() {
        let p = Pacer::new(4, 1_000);
        assert_eq!(p.intended_ns(0), 1_000);
        assert_eq!(p.intended_ns(1), 250_001_000);
        assert_eq!(p.intended_ns(4), 1_000_001_000);
        assert_eq!(p.due_by(999), 0);
        assert_eq!(p.due_by(1_000), 1);
        assert_eq!(p.due_by(250_000_999), 1);
        assert_eq!(p.due_by(250_001_000), 2);
        assert_eq!(p.due_by(1_000_001_000), 5);
    }

    fn frames(mut data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some((len, rest)) = data.split_first_chunk::<4>() {
            let len = u32::from_be_bytes(*len) as usize;
            out.push(rest[..len].to_vec());
            data = &rest[len..];
        }
        out
    }

    /// A fake clock that a sleep moves forward, and one stall of `stall` ns before `at`.
    fn run_paced(limit: u64, rate: u64, stall_at: u64, stall: u64) -> (Vec<Vec<u8>>, Vec<usize>) {
        let clock = std::cell::Cell::new(1_000_000u64);
        let mut writes = Vec::new();
        struct Out<'a>(&'a mut Vec<usize>, Vec<u8>);
        impl Write for Out<'_> {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.push(b.len());
                self.1.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut out = Out(&mut writes, Vec::new());
        let sent = send_paced(
            &mut out,
            &[b"a b", b"c"],
            limit,
            rate,
            true,
            || clock.get(),
            |d| {
                let mut now = clock.get() + d.as_nanos() as u64;
                if clock.get() < stall_at && now >= stall_at {
                    now += stall;
                }
                clock.set(now);
            },
        )
        .unwrap();
        assert_eq!(sent, limit);
        let bytes = out.1;
        (frames(&bytes), writes)
    }

    #[test]
    fn paced_messages_carry_their_intended_send_time() {
        let (sent, writes) = run_paced(5, 1000, u64::MAX, 0);
        let expected: Vec<Vec<u8>> = (0..5u64)
            .map(|i| {
                let msg: &[u8] = if i % 2 == 0 { b"a b" } else { b"c" };
                let mut v = Vec::new();
                stamp(1_000_000 + i * 1_000_000, msg, &mut v);
                v
            })
            .collect();
        assert_eq!(sent, expected);
        assert_eq!(writes.len(), 5, "one message due per wake-up");
    }

    #[test]
    fn a_stalled_sender_catches_up_and_its_late_messages_keep_their_due_time() {
        // 1000/s from t=1 ms; the sleep before message 2 (due at 3 ms) oversleeps by 5 ms.
        let (sent, writes) = run_paced(10, 1000, 3_000_000, 5_000_000);
        let stamps: Vec<u64> = sent.iter().map(|m| parse_stamp(m).unwrap()).collect();
        let due: Vec<u64> = (0..10).map(|i| 1_000_000 + i * 1_000_000).collect();
        assert_eq!(stamps, due);
        // Messages 2..=7 were all due at 8 ms: written together, then the pace resumes.
        assert_eq!(writes.len(), 2 + 1 + 2, "{writes:?}");
    }

    fn report(recorder: &LatencyRecorder) -> serde_json::Value {
        serde_json::from_str(&recorder.report_json()).unwrap()
    }

    #[test]
    fn tracker_finds_stamps_in_lines_split_across_reads() {
        let recorder = LatencyRecorder::new(Some(4));
        let mut a = recorder.connection();
        let mut b = recorder.connection();
        a.observe_at(b"t1000 => 1\napple => 2\nt20", 5_000);
        assert!(!*recorder.reached().borrow());
        a.observe_at(b"00 x\n", 9_000);
        b.observe_at(b"t3000\n", 4_000);
        assert!(*recorder.reached().borrow());
        let r = report(&recorder);
        assert_eq!(r["lines"], 4);
        assert_eq!(r["stamped"], 3);
        assert_eq!(r["first_ns"], 5_000);
        assert_eq!(r["last_ns"], 4_000);
        // Latencies 4000, 7000 and 1000 ns, to the histogram's 0.1% resolution.
        let near = |name: &str, us: f64| {
            let got = r["latency_us"][name].as_f64().unwrap();
            assert!(
                (got - us).abs() <= us / 1000.0,
                "{name}: {got} us, want {us}"
            );
        };
        near("min", 1.0);
        near("p50", 4.0);
        near("max", 7.0);
    }

    #[test]
    fn a_long_unstamped_line_split_anywhere_is_one_line() {
        let recorder = LatencyRecorder::new(None);
        let mut t = recorder.connection();
        let line = [b'x'; 100];
        t.observe_at(&line[..10], 1);
        t.observe_at(&line[10..], 1);
        t.observe_at(b"\n", 2);
        let r = report(&recorder);
        assert_eq!(r["lines"], 1);
        assert_eq!(r["stamped"], 0);
        assert_eq!(r["latency_us"], serde_json::json!({}));
    }
}
