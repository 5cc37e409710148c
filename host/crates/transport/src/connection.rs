//! One authenticated QUIC connection to another member of the cluster.

use std::net::SocketAddr;

use anyhow::anyhow;
use quinn::{ConnectionError, VarInt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Side, describe};
use crate::frame::{FrameReceiver, FrameSender};

/// A connection whose peer proved it holds a certificate of the cluster's CA. Cheap to clone;
/// all clones are the same connection.
#[derive(Clone)]
pub struct Connection {
    inner: quinn::Connection,
    side: Side,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("remote", &self.remote_address())
            .field("side", &self.side)
            .finish()
    }
}

/// `addr` with an IPv4-mapped IPv6 address (from a dual-stack socket) turned back into IPv4.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

impl Connection {
    pub(crate) fn new(inner: quinn::Connection, side: Side) -> Self {
        Self { inner, side }
    }

    /// The connection was closed or lost (a new one is needed).
    pub fn is_closed(&self) -> bool {
        self.inner.close_reason().is_some()
    }

    /// The peer's address (IPv4 addresses as IPv4, even on a dual-stack socket).
    pub fn remote_address(&self) -> SocketAddr {
        canonical(self.inner.remote_address())
    }

    /// Opens a bidirectional stream: frames of `T` go out, frames of `R` come back.
    ///
    /// The peer learns of the stream (its [`Connection::accept`] returns) only when the first
    /// frame is sent on it.
    pub async fn open<T: Serialize, R: DeserializeOwned>(
        &self,
    ) -> anyhow::Result<(FrameSender<T>, FrameReceiver<R>)> {
        let peer = self.remote_address();
        let (send, recv) = self.inner.open_bi().await.map_err(|e| {
            anyhow!(
                "cannot open a stream to {peer}: {}",
                describe(&e, self.side)
            )
        })?;
        Ok((
            FrameSender::new(send, peer, self.side),
            FrameReceiver::new(recv, peer, self.side),
        ))
    }

    /// Takes the next bidirectional stream the peer opened: frames of `T` go back, frames of
    /// `R` come in. `Ok(None)` once the connection was closed by either application
    /// ([`Connection::close`], [`crate::Endpoint::close`]); an error if it was lost otherwise
    /// (timeout, reset, protocol error).
    pub async fn accept<T: Serialize, R: DeserializeOwned>(
        &self,
    ) -> anyhow::Result<Option<(FrameSender<T>, FrameReceiver<R>)>> {
        let peer = self.remote_address();
        match self.inner.accept_bi().await {
            Ok((send, recv)) => Ok(Some((
                FrameSender::new(send, peer, self.side),
                FrameReceiver::new(recv, peer, self.side),
            ))),
            Err(ConnectionError::ApplicationClosed(_) | ConnectionError::LocallyClosed) => Ok(None),
            Err(e) => Err(anyhow!(
                "connection to {peer} lost: {}",
                describe(&e, self.side)
            )),
        }
    }

    /// UDP payload bytes sent on this connection so far, QUIC and TLS overhead included.
    pub fn bytes_sent(&self) -> u64 {
        self.inner.stats().udp_tx.bytes
    }

    /// UDP payload bytes received on this connection so far, QUIC and TLS overhead included.
    pub fn bytes_received(&self) -> u64 {
        self.inner.stats().udp_rx.bytes
    }

    /// Closes the connection at once, telling the peer `reason`. Data not yet acknowledged
    /// by the peer is lost (see [`FrameSender::finish`] to wait for it).
    pub fn close(&self, reason: &str) {
        self.inner.close(VarInt::from_u32(0), reason.as_bytes());
    }

    /// Resolves when the connection is closed, with the reason as text.
    pub async fn closed(&self) -> String {
        describe(&self.inner.closed().await, self.side)
    }
}
