//! TCP sinks: the node connects and writes the encoder's bytes as they are.

use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use wallaroo_engine::SinkBatch;

use crate::connect_with_retry;

const RECONNECT_EVERY: Duration = Duration::from_millis(200);

/// Writes every batch from `queue` to `addr` until the queue closes (the node has drained), then
/// flushes and closes the connection. A lost connection is reopened and the batch being written
/// is written again in full, so nothing is lost (a receiver may see its start twice).
pub async fn run_tcp_sink(
    name: String,
    addr: String,
    queue: flume::Receiver<SinkBatch>,
) -> anyhow::Result<()> {
    let what = format!("sink '{name}'");
    // Connect when there is something to write: a node stopped before producing output does
    // not wait for a sink that is not there.
    let Ok(first) = queue.recv_async().await else {
        return Ok(());
    };
    let mut out = BufWriter::with_capacity(
        64 * 1024,
        connect_with_retry(&addr, &what, RECONNECT_EVERY, None).await?,
    );
    let mut next = Some(first);
    while let Some(batch) = match next.take() {
        Some(batch) => Some(batch),
        None => queue.recv_async().await.ok(),
    } {
        loop {
            match write_batch(&mut out, &batch, queue.is_empty()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!("{what}: writing to {addr} failed: {e}; reconnecting");
                    let stream: TcpStream =
                        connect_with_retry(&addr, &what, RECONNECT_EVERY, None).await?;
                    out = BufWriter::with_capacity(64 * 1024, stream);
                }
            }
        }
    }
    out.flush().await?;
    out.shutdown().await?;
    Ok(())
}

async fn write_batch(
    out: &mut BufWriter<TcpStream>,
    batch: &SinkBatch,
    flush: bool,
) -> std::io::Result<()> {
    for payload in batch {
        out.write_all(payload).await?;
    }
    // Flush when nothing else is queued: low latency when quiet, large writes under load.
    if flush {
        out.flush().await?;
    }
    Ok(())
}
