//! The UDP socket that accepts and makes connections.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

use crate::connection::{Connection, canonical};
use crate::error::{Side, describe};
use crate::refusals::Refusals;
use crate::tls::{ClusterTls, SERVER_NAME};

/// A keep-alive is sent after this long without other traffic.
const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// A connection with no packet from the peer for this long is dead.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Flow-control window of one stream.
const STREAM_WINDOW: u32 = 8 << 20;
/// Flow-control window of a whole connection (receive and send).
const CONNECTION_WINDOW: u32 = 32 << 20;
/// Streams of each kind the peer may have open at once.
const MAX_STREAMS: u32 = 1024;

/// What the accepting side sends on a unidirectional stream once the handshake is complete.
const GREETING: &[u8] = b"wallaroo/2 ready";
/// How long `connect` waits for the greeting after the handshake (the peer is alive, as
/// keep-alives would show, but does not greet: it is not a wallaroo node of this version).
const GREETING_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes done but not yet taken by [`Endpoint::accept`]; beyond this, handshakes wait.
const ACCEPT_BACKLOG: usize = 64;

/// A QUIC endpoint on one UDP socket: it accepts connections (if made with
/// [`Endpoint::bind`]) and makes them. Cheap to clone; all clones are the same endpoint.
#[derive(Clone)]
pub struct Endpoint {
    inner: quinn::Endpoint,
    /// Connections whose handshake completed, for [`Endpoint::accept`]; `None` on a client.
    incoming: Option<Arc<Mutex<mpsc::Receiver<Connection>>>>,
    /// Set by [`Endpoint::close`]: connections still queued are not handed out.
    closed: Arc<AtomicBool>,
    _accept_task: Option<Arc<AbortOnDrop>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("local", &self.inner.local_addr().ok())
            .field("accepts", &self.incoming.is_some())
            .finish()
    }
}

/// Stops the accept loop when the last clone of the endpoint goes.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn transport_config() -> anyhow::Result<Arc<TransportConfig>> {
    let mut t = TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(
            IdleTimeout::try_from(IDLE_TIMEOUT).context("idle timeout out of range")?,
        ))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(u64::from(CONNECTION_WINDOW))
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS));
    Ok(Arc::new(t))
}

fn client_config(tls: &ClusterTls) -> anyhow::Result<quinn::ClientConfig> {
    let crypto = QuicClientConfig::try_from(tls.client_config())
        .context("the TLS client configuration is not usable for QUIC")?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config()?);
    Ok(config)
}

fn server_config(tls: &ClusterTls) -> anyhow::Result<quinn::ServerConfig> {
    let crypto = QuicServerConfig::try_from(tls.server_config())
        .context("the TLS server configuration is not usable for QUIC")?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport_config()?);
    Ok(config)
}

fn runtime() -> anyhow::Result<Arc<dyn quinn::Runtime>> {
    quinn::default_runtime()
        .ok_or_else(|| anyhow!("a QUIC endpoint must be made inside a tokio runtime"))
}

impl Endpoint {
    /// Listens on `addr` (UDP) and can connect out from it (to addresses of the same family).
    /// Peers must present a certificate signed by the cluster CA. Must be called inside a
    /// tokio runtime.
    ///
    /// Handshakes run in the background as peers arrive; [`Endpoint::accept`] takes the
    /// connections whose handshake succeeded.
    pub fn bind(addr: SocketAddr, tls: &ClusterTls) -> anyhow::Result<Endpoint> {
        let runtime = runtime()?;
        let socket = std::net::UdpSocket::bind(addr)
            .with_context(|| format!("cannot listen on {addr} (UDP)"))?;
        let mut inner = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config(tls)?),
            socket,
            runtime,
        )
        .with_context(|| format!("cannot listen on {addr} (UDP)"))?;
        inner.set_default_client_config(client_config(tls)?);

        let (tx, rx) = mpsc::channel(ACCEPT_BACKLOG);
        let task = tokio::spawn(accept_loop(inner.clone(), tx));
        Ok(Endpoint {
            inner,
            incoming: Some(Arc::new(Mutex::new(rx))),
            closed: Arc::default(),
            _accept_task: Some(Arc::new(AbortOnDrop(task))),
        })
    }

    /// A connect-only endpoint on an ephemeral port, for CLI clients. The socket is dual-stack
    /// (IPv6 and IPv4) where the system allows, IPv4 otherwise. Must be called inside a tokio
    /// runtime.
    pub fn client(tls: &ClusterTls) -> anyhow::Result<Endpoint> {
        runtime()?;
        let mut inner = quinn::Endpoint::client((Ipv6Addr::UNSPECIFIED, 0).into())
            .or_else(|_| quinn::Endpoint::client((Ipv4Addr::UNSPECIFIED, 0).into()))
            .context("cannot open a UDP socket")?;
        inner.set_default_client_config(client_config(tls)?);
        Ok(Endpoint {
            inner,
            incoming: None,
            closed: Arc::default(),
            _accept_task: None,
        })
    }

    /// The address the socket is bound to (with the port the system chose, if it was 0).
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner
            .local_addr()
            .context("cannot get the endpoint's local address")
    }

    /// The next incoming connection whose handshake completed. A handshake that fails (a
    /// certificate from another CA, no client certificate, another protocol) is logged with
    /// `tracing::warn!`, naming the peer and the reason, and skipped; the same refusal from
    /// the same peer again is counted, and the count logged once a minute.
    ///
    /// A connection the peer closed meanwhile is yielded all the same: the streams it sent
    /// before closing can still be accepted and read to their end.
    ///
    /// `None` once the endpoint is closed, and at once on an endpoint made with
    /// [`Endpoint::client`].
    pub async fn accept(&self) -> Option<Connection> {
        let incoming = self.incoming.as_ref()?;
        let conn = incoming.lock().await.recv().await?;
        (!self.closed.load(Ordering::Acquire)).then_some(conn)
    }

    /// Connects to the node at `addr`, which must present a certificate of the cluster's CA
    /// (for the name [`SERVER_NAME`]) and accept ours.
    ///
    /// Errors name the address and the reason, e.g. `cannot connect to 10.0.0.2:7100: the
    /// node's certificate is not signed by this cluster's CA (unknown issuer) ...`.
    pub async fn connect(&self, addr: SocketAddr) -> anyhow::Result<Connection> {
        let fail = |why: String| anyhow!("cannot connect to {addr}: {why}");
        let connecting = self
            .inner
            .connect(addr, SERVER_NAME)
            .map_err(|e| fail(e.to_string()))?;
        let conn = connecting
            .await
            .map_err(|e| fail(describe(&e, Side::Client)))?;

        // The server checks our certificate after our side of the handshake is done; if it
        // refuses it, it closes the connection instead of greeting us.
        let greeting = tokio::time::timeout(GREETING_TIMEOUT, async {
            let mut stream = conn
                .accept_uni()
                .await
                .map_err(|e| describe(&e, Side::Client))?;
            stream
                .read_to_end(GREETING.len())
                .await
                .map_err(|e| match e {
                    quinn::ReadToEndError::Read(e) => {
                        crate::error::describe_read(&e, Side::Client)
                    }
                    quinn::ReadToEndError::TooLong => {
                        "the node's greeting is too long (is it a wallaroo node of the same version?)"
                            .to_string()
                    }
                })
        })
        .await;
        match greeting {
            Ok(Ok(bytes)) if bytes == GREETING => Ok(Connection::new(conn, Side::Client)),
            Ok(Ok(_)) => {
                conn.close(VarInt::from_u32(1), b"unexpected greeting");
                Err(fail(format!(
                    "the node's greeting is not `{}` (is it a wallaroo node of the same \
                     version?)",
                    String::from_utf8_lossy(GREETING)
                )))
            }
            Ok(Err(why)) => {
                // The connection may still be up if only the stream failed.
                conn.close(VarInt::from_u32(1), b"no greeting");
                Err(fail(why))
            }
            Err(_) => {
                conn.close(VarInt::from_u32(1), b"no greeting");
                Err(fail(format!(
                    "the node completed the handshake but did not greet us within {} s \
                     (is it a wallaroo node of the same version?)",
                    GREETING_TIMEOUT.as_secs()
                )))
            }
        }
    }

    /// Closes the endpoint and all its connections at once; [`Endpoint::accept`] returns
    /// `None` from now on.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.inner.close(VarInt::from_u32(0), b"endpoint closed");
    }

    /// Waits until the peers have been told of the closing of every connection (call after
    /// [`Endpoint::close`], before the process exits).
    pub async fn wait_idle(&self) {
        self.inner.wait_idle().await;
    }
}

/// Takes incoming connections as they arrive and runs each handshake in a task of its own,
/// so that a slow or hostile peer holds up no one else.
async fn accept_loop(endpoint: quinn::Endpoint, ready: mpsc::Sender<Connection>) {
    let refusals = Arc::new(std::sync::Mutex::new(Refusals::default()));
    while let Some(incoming) = endpoint.accept().await {
        let ready = ready.clone();
        let refusals = refusals.clone();
        tokio::spawn(async move {
            let peer = canonical(incoming.remote_address());
            match handshake(incoming).await {
                Ok(conn) => {
                    let counted = refusals.lock().unwrap().accepted(peer);
                    if let Some(line) = counted {
                        tracing::warn!(%peer, "{line}");
                    }
                    if let Err(mpsc::error::SendError(conn)) = ready.send(conn).await {
                        // The endpoint is gone.
                        conn.close("endpoint closed");
                    }
                }
                Err(why) => {
                    let lines =
                        refusals
                            .lock()
                            .unwrap()
                            .refused(peer, &why, std::time::Instant::now());
                    for line in lines {
                        tracing::warn!(%peer, "{line}");
                    }
                }
            }
        });
    }
}

/// Completes the handshake of an incoming connection and greets the peer.
async fn handshake(incoming: quinn::Incoming) -> Result<Connection, String> {
    let connecting = incoming.accept().map_err(|e| describe(&e, Side::Server))?;
    let conn = connecting.await.map_err(|e| describe(&e, Side::Server))?;
    let greet = async {
        let mut stream = conn
            .open_uni()
            .await
            .map_err(|e| describe(&e, Side::Server))?;
        stream
            .write_all(GREETING)
            .await
            .map_err(|e| crate::error::describe_write(&e, Side::Server))?;
        stream
            .finish()
            .map_err(|_| "the greeting stream was closed".to_string())?;
        Ok::<_, String>(())
    };
    greet
        .await
        .map_err(|why| format!("cannot greet it: {why}"))?;
    Ok(Connection::new(conn, Side::Server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_greeting_names_the_protocol_version_the_handshake_agreed_on() {
        assert_eq!(
            GREETING,
            format!("{} ready", crate::tls::PROTOCOL).as_bytes()
        );
    }
}
