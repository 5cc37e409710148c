//! Framed TCP sources and generator sources.

use std::net::SocketAddr;
use std::sync::Arc;

use std::collections::VecDeque;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use wallaroo_engine::{DeadLetterEntry as Entry, Lsn, NotAccepted, SourceHandle};
use wallaroo_types::Framing;

use crate::protocol::{END_OF_STREAM, RESUME_AT_LAST_ACK, STREAM_ENDED, parse_ack_hello};

/// The most of an oversized frame's payload kept in the dead letters; the rest of the frame is
/// read and dropped, so one bad header costs bounded disk however long it claims the frame is.
pub const OVERSIZED_PREFIX: usize = 64 << 10;

#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Frames larger than this go to the dead letters (their first [`OVERSIZED_PREFIX`] bytes)
    /// instead of being processed.
    pub max_frame: u64,
    /// Most frames handed to a worker at once. Fewer go when the socket has no more data ready,
    /// so a quiet stream is not held back waiting for a full batch.
    pub batch_size: usize,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            max_frame: 16 << 20,
            batch_size: 256,
        }
    }
}

/// A listening framed TCP source. Accepts any number of connections at once.
pub struct TcpSource {
    name: String,
    listener: TcpListener,
    framing: Framing,
    options: SourceOptions,
}

impl TcpSource {
    pub async fn bind(
        name: &str,
        host: &str,
        port: &str,
        framing: Framing,
        options: SourceOptions,
    ) -> anyhow::Result<Self> {
        framing.validate()?;
        let addr = format!("{host}:{port}");
        let listener = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("source '{name}' cannot listen on {addr}"))?;
        Ok(Self {
            name: name.to_string(),
            listener,
            framing,
            options,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until `stop` turns true, then stops reading, waits for every
    /// connection's accepted frames to be handed over, and returns.
    pub async fn run(
        self,
        mut handles: impl FnMut() -> SourceHandle,
        mut stop: watch::Receiver<bool>,
    ) {
        let name: Arc<str> = self.name.into();
        let mut connections = JoinSet::new();
        loop {
            let conn_stop = stop.clone();
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let conn = Connection {
                            source: name.clone(),
                            peer,
                            handle: handles(),
                            framing: self.framing,
                            options: self.options.clone(),
                        };
                        connections.spawn(conn.run(stream, conn_stop));
                    }
                    Err(e) => tracing::warn!(source = %name, "accept failed: {e}"),
                },
            }
        }
        drop(self.listener);
        while connections.join_next().await.is_some() {}
    }
}

struct Connection {
    source: Arc<str>,
    peer: SocketAddr,
    handle: SourceHandle,
    framing: Framing,
    options: SourceOptions,
}

enum Frame {
    Payload(Vec<u8>),
    /// Too large: already written to the dead letters.
    Skipped,
}

/// How a connection's stream of frames ended.
enum Ended {
    /// Between two frames: nothing is lost. With the error, when it was not a clean close.
    Between(Option<std::io::Error>),
    /// Inside the connection's `frame`-th frame (counting from 1): `got` of its bytes (header
    /// included) came, of `whole` (None while its header is incomplete). With the error, when
    /// it was not a close.
    Inside {
        frame: u64,
        got: u64,
        whole: Option<u64>,
        error: Option<std::io::Error>,
    },
}

/// An acknowledged stream: where the next frame stands in it, and the task writing acks.
struct Acked {
    stream: u64,
    next_seq: u64,
    /// Frames of this connection handed to the node.
    accepted: u64,
    acks: mpsc::UnboundedSender<(Option<Lsn>, u64)>,
    writer: tokio::task::JoinHandle<()>,
}

impl Connection {
    async fn run(self, stream: TcpStream, stop: watch::Receiver<bool>) {
        self.handle.connection(true);
        self.serve(stream, stop).await;
        self.handle.connection(false);
    }

    async fn serve(&self, stream: TcpStream, mut stop: watch::Receiver<bool>) {
        let (read, write) = stream.into_split();
        let mut reader = BufReader::with_capacity(64 * 1024, read);
        let mut write = Some(write);
        let mut acked: Option<Acked> = None;
        let mut first = true;
        let mut frames = 0u64;
        let mut batch = Vec::new();
        loop {
            let frame = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                frame = self.read_frame(&mut reader, frames + 1) => frame,
            };
            let frame = match frame {
                Ok(frame) => frame,
                Err(ended) => {
                    self.log_end(ended);
                    break;
                }
            };
            frames += 1;
            if std::mem::take(&mut first)
                && let Frame::Payload(p) = &frame
                && let Some(stream) = parse_ack_hello(p)
            {
                // The hello is not one of the stream's frames: data frames count from 1.
                frames = 0;
                match self
                    .start_acks(stream, write.take().expect("first frame"))
                    .await
                {
                    Ok(a) => acked = Some(a),
                    Err(e) => {
                        tracing::warn!(source = %self.source, peer = %self.peer, "cannot answer an acknowledged client: {e}");
                        return;
                    }
                }
                continue;
            }
            if acked.as_ref().is_some_and(|a| a.next_seq == STREAM_ENDED) {
                tracing::warn!(
                    source = %self.source, peer = %self.peer,
                    "a frame came on acknowledged stream {} after its end: the connection is \
                     closed and nothing of it is taken",
                    acked.as_ref().map_or(0, |a| a.stream)
                );
                break;
            }
            match frame {
                Frame::Payload(p) if acked.is_some() && p == END_OF_STREAM => {
                    if !batch.is_empty() {
                        let sent = self.send(std::mem::take(&mut batch), &mut acked).await;
                        if self.refused(sent, &mut stop).await {
                            return;
                        }
                    }
                    let ended = self.end(&mut acked);
                    if self.refused(ended, &mut stop).await {
                        return;
                    }
                    // Nothing may follow the end: what does is not read.
                    break;
                }
                Frame::Payload(p) => batch.push(p),
                Frame::Skipped => {
                    // The skipped frame holds a position in the stream: what came before it
                    // goes first, so every batch's frames stay consecutive.
                    if !batch.is_empty() {
                        let sent = self.send(std::mem::take(&mut batch), &mut acked).await;
                        if self.refused(sent, &mut stop).await {
                            return;
                        }
                    }
                    let skipped = self.skip(&mut acked);
                    if self.refused(skipped, &mut stop).await {
                        return;
                    }
                }
            }
            let full = reader.buffer().is_empty() || batch.len() >= self.options.batch_size;
            if !batch.is_empty() && full {
                let sent = self.send(std::mem::take(&mut batch), &mut acked).await;
                if self.refused(sent, &mut stop).await {
                    return;
                }
            }
        }
        if !batch.is_empty() {
            let sent = self.send(batch, &mut acked).await;
            if self.refused(sent, &mut stop).await {
                return;
            }
        }
        if let Some(acked) = acked {
            // The client waits for its last acks: write them as the log makes them durable.
            drop(acked.acks);
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = acked.writer => {}
            }
        }
    }

    /// True when the connection must end. A failed log stops reading (and acknowledging) until
    /// the node stops: the client's unacknowledged frames stay with the client.
    async fn refused(
        &self,
        sent: Result<(), NotAccepted>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        match sent {
            Ok(()) => false,
            Err(NotAccepted::Stopping) => true,
            Err(NotAccepted::LogFailed) => {
                tracing::warn!(source = %self.source, peer = %self.peer, "not reading: the write-ahead log cannot store input");
                let _ = stop.wait_for(|s| *s).await;
                true
            }
        }
    }

    async fn start_acks(&self, stream: u64, mut write: OwnedWriteHalf) -> std::io::Result<Acked> {
        let resume = self.handle.stream_position(stream);
        self.handle.stream_hello(stream, resume.unwrap_or(0));
        write
            .write_all(&resume.unwrap_or(RESUME_AT_LAST_ACK).to_be_bytes())
            .await?;
        tracing::debug!(source = %self.source, peer = %self.peer, stream, ?resume, "acknowledged stream");
        let (acks, pending) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_acks(write, pending, self.handle.durable()));
        Ok(Acked {
            stream,
            next_seq: resume.unwrap_or(0),
            accepted: 0,
            acks,
            writer,
        })
    }

    async fn send(
        &self,
        batch: Vec<Vec<u8>>,
        acked: &mut Option<Acked>,
    ) -> Result<(), NotAccepted> {
        let n = batch.len() as u64;
        let position = acked.as_ref().map(|a| (a.stream, a.next_seq));
        let lsn = self.handle.send(batch, position).await?;
        if let Some(a) = acked {
            a.next_seq += n;
            a.accepted += n;
            let _ = a.acks.send((lsn, a.accepted));
        }
        Ok(())
    }

    /// Counts a frame that went to the dead letters instead of the node as one of an
    /// acknowledged stream's frames: the log records that the stream's position passed it,
    /// and it is acknowledged with the frames before it, so it is neither waited for nor
    /// resent after a crash.
    fn skip(&self, acked: &mut Option<Acked>) -> Result<(), NotAccepted> {
        let Some(a) = acked else { return Ok(()) };
        let lsn = self.handle.skip((a.stream, a.next_seq))?;
        a.next_seq += 1;
        a.accepted += 1;
        let _ = a.acks.send((lsn, a.accepted));
        Ok(())
    }

    /// The client ended its acknowledged stream: the end takes the stream's next position and
    /// is acknowledged once durable.
    fn end(&self, acked: &mut Option<Acked>) -> Result<(), NotAccepted> {
        let Some(a) = acked else { return Ok(()) };
        if a.next_seq == STREAM_ENDED {
            return Ok(());
        }
        let lsn = self.handle.end_stream((a.stream, a.next_seq))?;
        a.next_seq = STREAM_ENDED;
        a.accepted += 1;
        let _ = a.acks.send((lsn, a.accepted));
        Ok(())
    }

    /// Reads the connection's `frame`-th frame.
    async fn read_frame<R: AsyncRead + Unpin + Send + 'static>(
        &self,
        reader: &mut BufReader<R>,
        frame: u64,
    ) -> Result<Frame, Ended> {
        let header_len = self.framing.header_length as u64;
        let mut header = vec![0u8; header_len as usize];
        match fill(reader, &mut header).await {
            Ok(()) => {}
            Err((0, error)) => return Err(Ended::Between(error)),
            Err((got, error)) => {
                return Err(Ended::Inside {
                    frame,
                    got,
                    whole: None,
                    error,
                });
            }
        }
        let len = self.framing.payload_length(&header);
        let lost = |got: u64, error| Ended::Inside {
            frame,
            got: header_len + got,
            whole: Some(header_len + len),
            error,
        };
        if len > self.options.max_frame {
            return self
                .dead_letter_oversized(reader, frame, len)
                .await
                .map_err(|(got, error)| lost(got, error));
        }
        let mut payload = vec![0u8; len as usize];
        fill(reader, &mut payload)
            .await
            .map_err(|(got, error)| lost(got, error))?;
        Ok(Frame::Payload(payload))
    }

    /// Keeps the first [`OVERSIZED_PREFIX`] bytes of an oversized frame's payload in the dead
    /// letters, with its true length, and reads the rest without keeping it. On a lost
    /// connection, says how many payload bytes came.
    async fn dead_letter_oversized<R: AsyncRead + Unpin + Send + 'static>(
        &self,
        reader: &mut BufReader<R>,
        frame: u64,
        len: u64,
    ) -> Result<Frame, (u64, Option<std::io::Error>)> {
        let mut prefix = vec![0u8; len.min(OVERSIZED_PREFIX as u64) as usize];
        let read = fill(reader, &mut prefix).await;
        if let Err((got, _)) = &read {
            prefix.truncate(*got as usize);
        }
        let mut error = format!(
            "frame {frame} from {}: {len} bytes exceeds the maximum frame size of {} bytes \
             (--max-frame-size)",
            self.peer, self.options.max_frame,
        );
        if (prefix.len() as u64) < len {
            // How much is kept is the entry's `len` (the budget may keep less than was read);
            // the rest may never come.
            error += "; only its first bytes are kept, the rest dropped";
        }
        tracing::warn!("error in source '{}': {error}", self.source);
        let entry = Entry {
            at: &self.source,
            key: None,
            error: &error,
        };
        self.handle
            .dead_letters()
            .write_prefix(&entry, &prefix, len);
        self.handle.counters().dead_lettered.inc();
        read?;
        let mut skipped = prefix.len() as u64;
        while skipped < len {
            let buffered = match reader.fill_buf().await {
                Ok([]) => return Err((skipped, None)),
                Ok(buffered) => buffered.len() as u64,
                Err(e) => return Err((skipped, Some(e))),
            };
            let n = buffered.min(len - skipped);
            reader.consume(n as usize);
            skipped += n;
        }
        Ok(Frame::Skipped)
    }

    /// A close between frames is how a sender says it is done; one inside a frame loses that
    /// frame, and says how much of it.
    fn log_end(&self, ended: Ended) {
        let (source, peer) = (&self.source, &self.peer);
        match ended {
            Ended::Between(None) => tracing::debug!(%source, %peer, "connection closed"),
            Ended::Between(Some(e)) => {
                tracing::info!(%source, %peer, "connection ended between frames: {e}")
            }
            Ended::Inside {
                frame,
                got,
                whole,
                error,
            } => {
                let how = match error {
                    Some(e) => format!("lost ({e})"),
                    None => "closed by the sender".to_string(),
                };
                let header = self.framing.header_length;
                match whole {
                    Some(whole) => tracing::warn!(
                        %source, %peer,
                        "connection {how} inside frame {frame}: {got} of its {whole} bytes came, \
                         the other {} are lost",
                        whole - got
                    ),
                    None => tracing::warn!(
                        %source, %peer,
                        "connection {how} inside the header of frame {frame}: {got} of its \
                         {header} header bytes came; the frame is lost"
                    ),
                }
            }
        }
    }
}

/// Reads until `buf` is full. Short of that, returns how many bytes came and the error, if
/// the stream did not simply end.
async fn fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> Result<(), (u64, Option<std::io::Error>)> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]).await {
            Ok(0) => return Err((got as u64, None)),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err((got as u64, Some(e))),
        }
    }
    Ok(())
}

/// Feeds a generator source: asks its segment for `batch` messages at a time until `stop`, or
/// until the generator has run out.
pub async fn run_generator(handle: SourceHandle, batch: usize, mut stop: watch::Receiver<bool>) {
    while !handle.generator_done() {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            sent = handle.send(vec![Vec::new(); batch], None) => if sent.is_err() { return },
        }
    }
    tracing::info!("a generator source has run out");
    let _ = stop.wait_for(|s| *s).await;
}

/// Writes how many frames of the connection are acknowledged: at once without a log, else as
/// the log's durable position passes each batch.
async fn write_acks(
    mut write: OwnedWriteHalf,
    mut pending: mpsc::UnboundedReceiver<(Option<Lsn>, u64)>,
    mut durable: Option<watch::Receiver<Lsn>>,
) {
    let mut waiting: VecDeque<(Lsn, u64)> = VecDeque::new();
    let mut open = true;
    while open || !waiting.is_empty() {
        let mut ack = None;
        tokio::select! {
            item = pending.recv(), if open => match item {
                Some((None, count)) => ack = Some(count),
                Some((Some(lsn), count)) => waiting.push_back((lsn, count)),
                None => open = false,
            },
            changed = async { durable.as_mut().expect("waiting needs a log").changed().await },
                if !waiting.is_empty() => if changed.is_err() { return },
        }
        if let Some(durable) = &durable {
            let through = *durable.borrow();
            while waiting.front().is_some_and(|(lsn, _)| *lsn <= through) {
                ack = waiting.pop_front().map(|(_, count)| count);
            }
        }
        if let Some(count) = ack
            && write.write_all(&count.to_be_bytes()).await.is_err()
        {
            return;
        }
    }
}
