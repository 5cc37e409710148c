//! Typed frames on one bidirectional QUIC stream: a `u32` big-endian length, then the
//! compact MessagePack encoding (`rmp_serde::to_vec`) of one message.

use std::marker::PhantomData;
use std::net::SocketAddr;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use quinn::{RecvStream, SendStream, VarInt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Side, describe_read, describe_stopped, describe_write};

/// The largest message a frame may carry, in bytes (64 MiB). Longer frames are refused by the
/// sender and by the receiver.
pub const MAX_FRAME: usize = 64 << 20;

/// Length of the frame header.
const HEADER: usize = 4;

/// Code with which a receiver stops a stream whose framing it cannot follow any more.
const STOP_PROTOCOL_ERROR: u32 = 1;

/// A receive buffer larger than this is given back after its frame rather than kept.
const KEEP_BUFFER: usize = 4 << 20;

/// The sending half of a stream: writes messages of type `T`, one frame each.
///
/// Dropping it without [`FrameSender::finish`] also ends the stream cleanly, but without
/// waiting for the peer to receive the data.
pub struct FrameSender<T> {
    stream: SendStream,
    peer: SocketAddr,
    side: Side,
    /// The size of the last frame, to size the next buffer.
    last_len: usize,
    _message: PhantomData<fn(&T)>,
}

/// The receiving half of a stream: reads messages of type `R`, one frame each.
///
/// Dropping it before the end of the stream tells the peer to stop sending.
pub struct FrameReceiver<R> {
    stream: RecvStream,
    peer: SocketAddr,
    side: Side,
    /// The frame being read: its header, then (once the header is whole) its body. Kept here
    /// so that a `recv` dropped halfway (in a `select!`) loses nothing: the next one goes on.
    header: [u8; HEADER],
    body: Option<Vec<u8>>,
    filled: usize,
    /// A body buffer kept for the next frame.
    buf: Vec<u8>,
    /// Set once the framing is lost (a bad length, a frame cut short): every later call fails.
    broken: Option<String>,
    _message: PhantomData<fn() -> R>,
}

impl<T> std::fmt::Debug for FrameSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameSender")
            .field("stream", &self.stream.id())
            .field("peer", &self.peer)
            .finish()
    }
}

impl<R> std::fmt::Debug for FrameReceiver<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReceiver")
            .field("stream", &self.stream.id())
            .field("peer", &self.peer)
            .finish()
    }
}

impl<T> FrameSender<T> {
    pub(crate) fn new(stream: SendStream, peer: SocketAddr, side: Side) -> Self {
        Self {
            stream,
            peer,
            side,
            last_len: 0,
            _message: PhantomData,
        }
    }

    /// Writes `bytes` as they are, without a frame header. Only for tests of malformed input.
    #[doc(hidden)]
    pub async fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes).await.map_err(|e| {
            anyhow!(
                "cannot send to {}: {}",
                self.peer,
                describe_write(&e, self.side)
            )
        })
    }
}

impl<T: Serialize> FrameSender<T> {
    /// Sends `msg` as one frame. The frame goes out at once (QUIC does not hold small writes
    /// back); this waits only while the peer's flow-control window is full.
    pub async fn send(&mut self, msg: &T) -> anyhow::Result<()> {
        // Encode behind a reserved header and patch the length in, so the frame is handed to
        // quinn as one owned buffer, without a copy.
        let mut frame = Vec::with_capacity(HEADER + self.last_len.max(64));
        frame.extend_from_slice(&[0; HEADER]);
        rmp_serde::encode::write(&mut frame, msg)
            .with_context(|| format!("cannot encode a message for {}", self.peer))?;
        let len = frame.len() - HEADER;
        if len > MAX_FRAME {
            bail!(
                "a message for {} is {len} bytes encoded, over the frame limit of {MAX_FRAME}",
                self.peer
            );
        }
        // MAX_FRAME < u32::MAX, so this cannot truncate.
        frame[..HEADER].copy_from_slice(&(len as u32).to_be_bytes());
        self.last_len = len;
        self.stream
            .write_chunk(Bytes::from(frame))
            .await
            .map_err(|e| {
                anyhow!(
                    "cannot send to {}: {}",
                    self.peer,
                    describe_write(&e, self.side)
                )
            })
    }

    /// Ends the stream after the frames sent so far, and waits until the peer has received
    /// them all (not necessarily processed them), so that the connection may be closed
    /// right after without losing them.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        self.stream
            .finish()
            .map_err(|_| anyhow!("the stream to {} was already finished", self.peer))?;
        match self.stream.stopped().await {
            // Every byte acknowledged.
            Ok(None) => Ok(()),
            // Code 0 is what a receiver sends when it is dropped: it took what it wanted.
            Ok(Some(code)) if code == VarInt::from_u32(0) => Ok(()),
            Ok(Some(code)) => Err(anyhow!(
                "{} stopped reading the stream before its end (code {code})",
                self.peer
            )),
            Err(e) => Err(anyhow!(
                "cannot finish the stream to {}: {}",
                self.peer,
                describe_stopped(&e, self.side)
            )),
        }
    }
}

impl<R> FrameReceiver<R> {
    pub(crate) fn new(stream: RecvStream, peer: SocketAddr, side: Side) -> Self {
        Self {
            stream,
            peer,
            side,
            header: [0; HEADER],
            body: None,
            filled: 0,
            buf: Vec::new(),
            broken: None,
            _message: PhantomData,
        }
    }

    /// Marks the stream unusable, tells the peer to stop sending, and returns the error.
    fn break_stream(&mut self, what: String) -> anyhow::Error {
        // Ignored: the stream may already be closed, and the error is reported anyway.
        let _ = self.stream.stop(VarInt::from_u32(STOP_PROTOCOL_ERROR));
        let e = anyhow!("{what}");
        self.broken = Some(what);
        e
    }
}

impl<R: DeserializeOwned> FrameReceiver<R> {
    /// The next message, or `Ok(None)` when the peer ended the stream at a frame boundary.
    ///
    /// A frame longer than [`MAX_FRAME`], a stream that ends inside a frame, or a lost
    /// connection is an error after which the stream is unusable. A frame that does not decode
    /// as `R` is an error too, but the stream stays usable (the next frame can be read).
    ///
    /// Cancel-safe: dropping the future before it completes loses no data, and the next call
    /// goes on with the same frame.
    pub async fn recv(&mut self) -> anyhow::Result<Option<R>> {
        if let Some(what) = &self.broken {
            bail!("{what}");
        }
        let peer = self.peer;
        loop {
            let (target, what) = match self.body.as_mut() {
                None => (&mut self.header[..], "frame header"),
                Some(body) => (&mut body[..], "frame"),
            };
            let total = target.len();
            if self.filled < total {
                // `read` is cancel-safe: what it returns is kept in `self` before any await.
                match self.stream.read(&mut target[self.filled..]).await {
                    Ok(Some(n)) => self.filled += n,
                    Ok(None) if self.filled == 0 && self.body.is_none() => return Ok(None),
                    Ok(None) => {
                        let filled = self.filled;
                        return Err(self.break_stream(format!(
                            "{peer} ended the stream inside a {what} ({filled} of {total} bytes)"
                        )));
                    }
                    Err(e) => {
                        let why = describe_read(&e, self.side);
                        return Err(self.break_stream(format!("cannot receive from {peer}: {why}")));
                    }
                }
                continue;
            }
            self.filled = 0;
            let Some(body) = self.body.take() else {
                let len = u32::from_be_bytes(self.header) as usize;
                if len > MAX_FRAME {
                    return Err(self.break_stream(format!(
                        "{peer} sent a frame of {len} bytes, over the limit of {MAX_FRAME} \
                         (is it a wallaroo node of the same version?)"
                    )));
                }
                let mut buf = std::mem::take(&mut self.buf);
                buf.clear();
                buf.resize(len, 0);
                self.body = Some(buf);
                continue;
            };
            let decoded = rmp_serde::from_slice(&body).map_err(|e| {
                anyhow!(
                    "a frame of {} bytes from {peer} does not decode as {}: {e}",
                    body.len(),
                    std::any::type_name::<R>()
                )
            });
            if body.capacity() <= KEEP_BUFFER {
                self.buf = body;
            }
            return decoded.map(Some);
        }
    }
}
