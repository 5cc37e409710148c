//! `wallaroo send`: a framed TCP load generator, the counterpart of a framed source.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wallaroo_types::Framing;

use crate::protocol::{END_OF_STREAM, RESUME_AT_LAST_ACK, STREAM_ENDED, ack_hello};
use crate::{connect_with_retry, latency};

#[derive(Debug, Clone)]
pub struct SendOptions {
    pub host: String,
    pub file: PathBuf,
    /// The file already holds frames (4-byte big-endian length, payload) rather than lines.
    pub binary: bool,
    /// Send empty lines as empty messages; by default they are skipped, as Wallaroo's sender
    /// did (so a text with paragraph breaks gives no empty words).
    pub keep_blank_lines: bool,
    /// Messages per write.
    pub batch_size: usize,
    /// Pause between writes.
    pub interval: Option<Duration>,
    /// Stop after this many messages.
    pub messages: Option<u64>,
    /// Start the file over when it ends (until `messages`, or forever).
    pub repeat: bool,
    /// Acknowledged mode with this stream id: wait for the node to acknowledge every message,
    /// and after a lost connection reconnect and resend from where the node says.
    pub ack: Option<u64>,
    /// Offer this many messages per second, on a schedule (see [`crate::latency`]); ignores
    /// `batch_size` and `interval`.
    pub rate: Option<u64>,
    /// With `rate`: put each message's intended send time in front of it (`t<NANOS> `).
    pub stamp: bool,
    /// With `ack`: end the stream after the file ([`crate::protocol::END_OF_STREAM`]).
    pub end: bool,
}

/// How long an acknowledged sender keeps trying to reach a node that went away.
const RECONNECT_PATIENCE: Duration = Duration::from_secs(120);

/// Sends the file's messages and returns how many were sent.
pub async fn send(options: &SendOptions) -> anyhow::Result<u64> {
    let data = std::fs::read(&options.file)
        .with_context(|| format!("cannot read {}", options.file.display()))?;
    let messages = if options.binary {
        split_frames(&data).with_context(|| format!("in {}", options.file.display()))?
    } else {
        split_lines(&data, options.keep_blank_lines)
    };
    if messages.is_empty() {
        let blank = !options.binary && !options.keep_blank_lines && !data.is_empty();
        bail!(
            "{} holds no messages{}",
            options.file.display(),
            if blank {
                " (only empty lines, which are skipped; --keep-blank-lines sends them)"
            } else {
                ""
            }
        );
    }
    crate::check_resolves(&options.host, "send").await?;
    if let Some(stream) = options.ack {
        return send_acked(options, &messages, stream).await;
    }
    let mut stream = connect_with_retry(
        &options.host,
        "send",
        Duration::from_millis(100),
        Some(Duration::from_secs(30)),
    )
    .await?;
    let limit = limit(options, messages.len());
    if let Some(rate) = options.rate {
        return latency::send_paced_tcp(stream, &messages, limit, rate, options.stamp)
            .with_context(|| format!("sending to {}", options.host));
    }
    let batch_size = options.batch_size.max(1);
    let mut sent = 0u64;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut next = messages.iter().cycle();
    while sent < limit {
        buf.clear();
        let mut in_batch = 0;
        while in_batch < batch_size && sent < limit {
            if !options.repeat && sent >= messages.len() as u64 {
                break;
            }
            Framing::DEFAULT.encode(next.next().expect("cycle of a non-empty list"), &mut buf);
            in_batch += 1;
            sent += 1;
        }
        if in_batch == 0 {
            break;
        }
        stream
            .write_all(&buf)
            .await
            .with_context(|| format!("sending to {}", options.host))?;
        if let Some(pause) = options.interval {
            tokio::time::sleep(pause).await;
        }
    }
    stream.flush().await?;
    stream.shutdown().await?;
    Ok(sent)
}

fn limit(options: &SendOptions, messages: usize) -> u64 {
    match (options.messages, options.repeat) {
        (Some(n), true) => n,
        (Some(n), false) => n.min(messages as u64),
        (None, true) => u64::MAX,
        (None, false) => messages as u64,
    }
}

/// Sends message `i` of the (cycled) file for every position from where the node asks to
/// resume, and returns once every message is acknowledged. Survives the node going away and
/// coming back: it reconnects and resends what was not acknowledged.
async fn send_acked(
    options: &SendOptions,
    messages: &[&[u8]],
    stream_id: u64,
) -> anyhow::Result<u64> {
    let limit = limit(options, messages.len());
    let acked = Arc::new(AtomicU64::new(0));
    loop {
        match acked_connection(options, messages, stream_id, limit, &acked).await {
            // A stream ended before (by this sender, acknowledged, or by an earlier one).
            Ok(()) if acked.load(Ordering::SeqCst) == STREAM_ENDED && !options.end => bail!(
                "stream {stream_id} of {} has ended: nothing more may be sent on it (give \
                 another --stream-id)",
                options.host
            ),
            Ok(()) => return Ok(limit),
            // connect_with_retry has already waited its patience out.
            Err(e) if e.downcast_ref::<Unreachable>().is_some() => return Err(e),
            Err(e) => {
                let at = acked.load(Ordering::SeqCst);
                tracing::warn!(
                    acknowledged = at,
                    "send: connection lost after {at} acknowledged messages ({e:#}); reconnecting"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unreachable(String);

async fn acked_connection(
    options: &SendOptions,
    messages: &[&[u8]],
    stream_id: u64,
    limit: u64,
    acked: &Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let stream = connect_with_retry(
        &options.host,
        "send",
        Duration::from_millis(100),
        Some(RECONNECT_PATIENCE),
    )
    .await
    .map_err(|e| Unreachable(format!("{e:#}")))?;
    let (mut read, mut write) = stream.into_split();
    let mut buf = Vec::with_capacity(64 * 1024);
    Framing::DEFAULT.encode(&ack_hello(stream_id), &mut buf);
    write.write_all(&buf).await?;
    let resume = read.read_u64().await.context(
        "the source did not answer the acknowledged-mode hello (is it a framed TCP source?)",
    )?;
    if resume == STREAM_ENDED {
        tracing::info!("stream {stream_id} has ended already: nothing to send");
        acked.store(STREAM_ENDED, Ordering::SeqCst);
        return Ok(());
    }
    let base = match resume {
        RESUME_AT_LAST_ACK => acked.load(Ordering::SeqCst),
        at => at,
    }
    .min(limit);
    acked.fetch_max(base, Ordering::SeqCst);
    // This connection's frames: the messages from `base`, then the end (which takes the
    // stream's next position, wherever the node has it).
    let frames = limit - base + u64::from(options.end);
    // Acks count this connection's frames.
    let reader = {
        let acked = acked.clone();
        tokio::spawn(async move {
            loop {
                let count = read.read_u64().await?;
                acked.fetch_max(base + count, Ordering::SeqCst);
                if count >= frames {
                    return std::io::Result::Ok(());
                }
            }
        })
    };
    let batch_size = options.batch_size.max(1) as u64;
    let total = base + frames;
    let mut at = base;
    let sending = async {
        while at < total {
            buf.clear();
            let end = (at + batch_size).min(total);
            for i in at..end {
                let message = match i {
                    i if i >= limit => END_OF_STREAM,
                    i => messages[(i % messages.len() as u64) as usize],
                };
                Framing::DEFAULT.encode(message, &mut buf);
            }
            write.write_all(&buf).await?;
            at = end;
            if let Some(pause) = options.interval {
                tokio::time::sleep(pause).await;
            }
        }
        write.flush().await?;
        anyhow::Ok(())
    };
    let result = async {
        sending.await?;
        if frames == 0 {
            return Ok(());
        }
        reader
            .await
            .context("the ack reader")?
            .context("waiting for acknowledgements")
    }
    .await;
    if result.is_ok() {
        let _ = write.shutdown().await;
    }
    result
}

/// Each line is a message, without its line ending. A final line ending adds no empty message;
/// empty lines are skipped unless `keep_blank` (a line of spaces is not empty: it is sent).
fn split_lines(data: &[u8], keep_blank: bool) -> Vec<&[u8]> {
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| keep_blank || !line.is_empty())
        .collect()
}

fn split_frames(mut data: &[u8]) -> anyhow::Result<Vec<&[u8]>> {
    let mut frames = Vec::new();
    let mut offset = 0usize;
    while !data.is_empty() {
        let Some((header, rest)) = data.split_first_chunk::<4>() else {
            bail!("torn frame header at byte {offset}");
        };
        let len = u32::from_be_bytes(*header) as usize;
        if rest.len() < len {
            bail!(
                "frame at byte {offset} announces {len} bytes, {} remain",
                rest.len()
            );
        }
        frames.push(&rest[..len]);
        data = &rest[len..];
        offset += 4 + len;
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_without_their_endings() {
        assert_eq!(
            split_lines(b"a\r\nbb\n\nc\n", true),
            vec![&b"a"[..], b"bb", b"", b"c"]
        );
        assert_eq!(split_lines(b"no newline", true), vec![&b"no newline"[..]]);
        assert!(split_lines(b"", true).is_empty());
    }

    #[test]
    fn blank_lines_are_skipped_unless_kept() {
        assert_eq!(
            split_lines(b"\na\n\r\n\n \nb\n\n", false),
            vec![&b"a"[..], b" ", b"b"]
        );
        assert!(split_lines(b"\n\n\r\n", false).is_empty());
        assert_eq!(split_lines(b"\n\n", true), vec![&b""[..], b""]);
    }

    #[test]
    fn frames_and_torn_frames() {
        let mut data = Vec::new();
        Framing::DEFAULT.encode(b"one", &mut data);
        Framing::DEFAULT.encode(b"", &mut data);
        assert_eq!(split_frames(&data).unwrap(), vec![&b"one"[..], b""]);
        data.extend_from_slice(&[0, 0, 0, 9, 1]);
        let err = split_frames(&data).unwrap_err().to_string();
        assert!(err.contains("byte 11"), "{err}");
    }
}
