//! The edges of a node: framed TCP sources, TCP sinks and generator sources, plus the `send` and
//! `receive` tools that speak the same framing. Everything here is I/O on the tokio runtime; the
//! engine sees only batches of frames and batches of encoded output.

pub mod latency;
pub mod protocol;
mod receive;
mod send;
mod sink;
mod source;

pub use receive::{ReceiveOptions, receive};
pub use send::{SendOptions, send};
pub use sink::run_tcp_sink;
pub use source::{SourceOptions, TcpSource, run_generator};

use std::time::Duration;

use tokio::net::TcpStream;

/// Connects to `addr`, retrying every `every` until `patience` has passed. Logs once while
/// waiting, so an operator sees what the node is waiting for.
pub async fn connect_with_retry(
    addr: &str,
    what: &str,
    every: Duration,
    patience: Option<Duration>,
) -> anyhow::Result<TcpStream> {
    let started = tokio::time::Instant::now();
    let mut warned = false;
    loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                if warned {
                    tracing::warn!("{what}: connected to {addr}");
                }
                return Ok(stream);
            }
            Err(e) => {
                if patience.is_some_and(|p| started.elapsed() >= p) {
                    anyhow::bail!("{what}: cannot connect to {addr}: {e}");
                }
                if !warned {
                    tracing::warn!("{what}: cannot connect to {addr} ({e}); retrying");
                    warned = true;
                }
                tokio::time::sleep(every).await;
            }
        }
    }
}
