//! `wallaroo receive`: listens where a TCP sink connects and writes what arrives.
//!
//! A connection that starts with the tagged sink hello (see [`crate::protocol`]) is an
//! exactly-once sink: each frame's payload is written once, and frames a node releases again
//! after a crash (at or below the last (epoch, sequence) kept from that sink) are dropped.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::latency::{LatencyRecorder, LineTracker};
use crate::protocol::{TAG_HEADER, TAGGED_HELLO, decode_tag};

#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    pub listen: String,
    /// Where to write; standard output when absent.
    pub output: Option<PathBuf>,
    /// Read at most this many bytes per second per connection (a slow consumer, for testing
    /// backpressure).
    pub rate: Option<u64>,
    /// Count the lines that arrive and the latency of stamped ones (see [`crate::latency`]).
    pub latency: Option<Arc<LatencyRecorder>>,
}

/// Binds, reports the bound address through `bound`, and writes every byte received (from any
/// number of connections, each written in the order it arrives) until `stop` turns true.
pub async fn receive(
    options: &ReceiveOptions,
    bound: impl FnOnce(std::net::SocketAddr),
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<u64> {
    let listener = TcpListener::bind(&options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    bound(listener.local_addr()?);
    let out: Box<dyn Write + Send> = match &options.output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let out = Arc::new(Mutex::new((out, 0u64)));
    let seen: Seen = Arc::default();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => {
                let (stream, peer) = accepted?;
                let conn = Connection {
                    out: out.clone(),
                    seen: seen.clone(),
                    rate: options.rate,
                    mode: Mode::Detect,
                    pending: Vec::new(),
                    dropped: 0,
                    lines: options.latency.as_ref().map(|l| l.connection()),
                };
                connections.spawn(conn.run(stream, peer));
            }
        }
    }
    connections.abort_all();
    let total = out.lock().unwrap_or_else(|p| p.into_inner()).1;
    Ok(total)
}

type Output = Arc<Mutex<(Box<dyn Write + Send>, u64)>>;
/// The last (epoch, sequence) kept from each tagged sink.
type Seen = Arc<Mutex<HashMap<String, (u64, u64)>>>;

enum Mode {
    /// Not yet known whether the connection starts with the tagged hello.
    Detect,
    Plain,
    Tagged(String),
}

struct Connection {
    out: Output,
    seen: Seen,
    rate: Option<u64>,
    mode: Mode,
    /// Bytes not yet written: a partial hello or tagged frame.
    pending: Vec<u8>,
    dropped: u64,
    /// Counts lines and their latency (`--latency`).
    lines: Option<LineTracker>,
}

impl Connection {
    async fn run(mut self, mut stream: tokio::net::TcpStream, peer: std::net::SocketAddr) {
        let started = tokio::time::Instant::now();
        let mut read = 0u64;
        let mut buf = vec![0u8; if self.rate.is_some() { 4096 } else { 64 * 1024 }];
        loop {
            if let Some(rate) = self.rate {
                // Sleep until the bytes read so far fit the rate.
                let due = Duration::from_secs_f64(read as f64 / rate.max(1) as f64);
                tokio::time::sleep_until(started + due).await;
            }
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    read += n as u64;
                    if let Err(e) = self.take(&buf[..n]) {
                        tracing::error!(%peer, "{e}");
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(%peer, "connection lost: {e}");
                    break;
                }
            }
        }
        if let Mode::Tagged(identity) = &self.mode
            && self.dropped > 0
        {
            tracing::info!(%peer, sink = %identity, "dropped {} repeated frames", self.dropped);
        }
    }

    fn take(&mut self, data: &[u8]) -> anyhow::Result<()> {
        if let Mode::Plain = self.mode {
            return self.write(data);
        }
        self.pending.extend_from_slice(data);
        if let Mode::Detect = self.mode {
            let n = self.pending.len().min(TAGGED_HELLO.len());
            if self.pending[..n] != TAGGED_HELLO[..n] {
                self.mode = Mode::Plain;
                let pending = std::mem::take(&mut self.pending);
                return self.write(&pending);
            }
            let Some(rest) = self.pending.get(TAGGED_HELLO.len()..) else {
                return Ok(());
            };
            let Some((len, rest)) = rest.split_first_chunk::<4>() else {
                return Ok(());
            };
            let len = u32::from_be_bytes(*len) as usize;
            let Some(identity) = rest.get(..len) else {
                return Ok(());
            };
            let identity = String::from_utf8_lossy(identity).into_owned();
            let used = TAGGED_HELLO.len() + 4 + len;
            self.pending.drain(..used);
            self.mode = Mode::Tagged(identity);
        }
        let Mode::Tagged(identity) = &self.mode else {
            unreachable!("detected above")
        };
        let mut at = 0;
        let mut kept = Vec::new();
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let last = seen.entry(identity.clone()).or_insert((0, 0));
            while let Some(header) = self.pending[at..].first_chunk::<TAG_HEADER>() {
                let (epoch, seq, len) = decode_tag(header);
                let Some(payload) = self.pending.get(at + TAG_HEADER..at + TAG_HEADER + len) else {
                    break;
                };
                // Epochs start at 1, so the first frame is always above (0, 0).
                if (epoch, seq) > *last {
                    *last = (epoch, seq);
                    kept.extend_from_slice(payload);
                } else {
                    self.dropped += 1;
                }
                at += TAG_HEADER + len;
            }
        }
        self.pending.drain(..at);
        self.write(&kept)
    }

    fn write(&mut self, data: &[u8]) -> anyhow::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if let Some(lines) = &mut self.lines {
            lines.observe(data);
        }
        let mut guard = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let (w, total) = &mut *guard;
        w.write_all(data)
            .and_then(|_| w.flush())
            .context("cannot write received data")?;
        *total += data.len() as u64;
        Ok(())
    }
}
