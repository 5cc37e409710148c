//! `wallaroo receive`: listens where a TCP sink connects and writes what arrives.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::latency::LatencyRecorder;

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
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => {
                let (mut stream, peer) = accepted?;
                let out = out.clone();
                let rate = options.rate;
                let mut lines = options.latency.as_ref().map(|l| l.connection());
                connections.spawn(async move {
                    let started = tokio::time::Instant::now();
                    let mut read = 0u64;
                    let mut buf = vec![0u8; if rate.is_some() { 4096 } else { 64 * 1024 }];
                    loop {
                        if let Some(rate) = rate {
                            // Sleep until the bytes read so far fit the rate.
                            let due = Duration::from_secs_f64(read as f64 / rate.max(1) as f64);
                            tokio::time::sleep_until(started + due).await;
                        }
                        match stream.read(&mut buf).await {
                            Ok(0) => break,
                            Ok(n) => {
                                if let Some(lines) = &mut lines {
                                    lines.observe(&buf[..n]);
                                }
                                read += n as u64;
                                let mut guard = out.lock().unwrap_or_else(|p| p.into_inner());
                                let (w, total) = &mut *guard;
                                if let Err(e) = w.write_all(&buf[..n]).and_then(|_| w.flush()) {
                                    tracing::error!("cannot write received data: {e}");
                                    break;
                                }
                                *total += n as u64;
                            }
                            Err(e) => {
                                tracing::warn!(%peer, "connection lost: {e}");
                                break;
                            }
                        }
                    }
                });
            }
        }
    }
    connections.abort_all();
    let total = out.lock().unwrap_or_else(|p| p.into_inner()).1;
    Ok(total)
}
