//! TCP sinks: the node connects and writes the encoder's bytes as they are, or, for
//! exactly-once sinks, tagged with (epoch, sequence) (see [`crate::protocol`]).

use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use wallaroo_engine::{SinkBatch, SinkQueue};

use crate::connect_with_retry;
use crate::protocol::{encode_tagged, tagged_hello};

const RECONNECT_EVERY: Duration = Duration::from_millis(200);

/// Writes every batch from `queue` to `addr` until the queue closes (the node has drained), then
/// flushes and closes the connection. A lost connection is reopened and the batch being written
/// is written again in full, so nothing is lost (a plain receiver may see its start twice; a
/// tagged one drops the repeat). `tagged` is the sink's identity when frames are tagged.
pub async fn run_tcp_sink(
    name: String,
    addr: String,
    queue: SinkQueue,
    tagged: Option<String>,
) -> anyhow::Result<()> {
    let what = format!("sink '{name}'");
    let mut out: Option<BufWriter<TcpStream>> = None;
    let mut buf = Vec::new();
    while let Ok(batch) = queue.batches.recv_async().await {
        // Connect when there is something to write: a node stopped before producing output
        // does not wait for a sink that is not there.
        if !batch.frames.is_empty() {
            loop {
                let conn = match &mut out {
                    Some(conn) => conn,
                    None => out.insert(connect(&addr, &what, tagged.as_deref()).await?),
                };
                let flush = queue.batches.is_empty() || batch.epoch > 0;
                match write_batch(conn, &batch, tagged.is_some(), flush, &mut buf).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!("{what}: writing to {addr} failed: {e}; reconnecting");
                        out = None;
                    }
                }
            }
        }
        if batch.epoch > 0 {
            queue.written(batch.epoch);
        }
    }
    if let Some(mut conn) = out {
        conn.flush().await?;
        conn.shutdown().await?;
    }
    Ok(())
}

async fn connect(
    addr: &str,
    what: &str,
    tagged: Option<&str>,
) -> anyhow::Result<BufWriter<TcpStream>> {
    let stream = connect_with_retry(addr, what, RECONNECT_EVERY, None).await?;
    let mut out = BufWriter::with_capacity(64 * 1024, stream);
    if let Some(identity) = tagged {
        out.write_all(&tagged_hello(identity)).await?;
    }
    Ok(out)
}

async fn write_batch(
    out: &mut BufWriter<TcpStream>,
    batch: &SinkBatch,
    tagged: bool,
    flush: bool,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    for (seq, payload) in batch.frames.iter().enumerate() {
        if tagged {
            buf.clear();
            encode_tagged(batch.epoch, seq as u64, payload, buf);
            out.write_all(buf).await?;
        } else {
            out.write_all(payload).await?;
        }
    }
    // Flush when nothing else is queued (low latency when quiet, large writes under load) and
    // at the end of an epoch, which the node then counts as written.
    if flush {
        out.flush().await?;
    }
    Ok(())
}
