//! The network between Wallaroo nodes, and between a node and the clients that deploy to it,
//! ask its status or stop it: QUIC (quinn) with mutual TLS.
//!
//! # Security
//!
//! Every cluster has a certificate authority of its own ([`init_certs`], `wallaroo cert init`)
//! and every member — node or client — presents a certificate signed by it. Both sides verify
//! the other against that CA alone: a peer without such a certificate does not get past the
//! handshake, in either direction. See [`tls`] for the files and the checks.
//!
//! # Connections
//!
//! An [`Endpoint`] is one UDP socket that accepts connections ([`Endpoint::bind`]) and makes
//! them ([`Endpoint::connect`]); a CLI client uses a connect-only [`Endpoint::client`]. QUIC
//! gives each [`Connection`] any number of independent bidirectional streams, with no
//! head-of-line blocking between them; a stream is opened with [`Connection::open`] and taken
//! by the peer with [`Connection::accept`]. QUIC only tells the peer about a new stream when
//! data is sent on it, so the opener speaks first.
//!
//! Connections send a keep-alive every second and are declared dead after 5 s without a packet
//! from the peer, so a crashed or cut-off peer is noticed within seconds. Flow-control windows
//! (8 MiB per stream, 32 MiB per connection) are large enough that a LAN link, not the window,
//! bounds throughput.
//!
//! After the TLS handshake the accepting side sends a short greeting on a unidirectional
//! stream, and [`Endpoint::connect`] returns only once it has read it. In TLS 1.3 the client
//! finishes its handshake *before* the server has checked the client's certificate; waiting
//! for the greeting is what makes a refused client certificate an error of `connect` rather
//! than of some later stream operation.
//!
//! # Wire format of a stream
//!
//! A stream carries frames, one message each, in each direction:
//!
//! ```text
//! +------------------------+------------------------------------------------+
//! | length: u32 big-endian | message: MessagePack, `rmp_serde::to_vec`      |
//! |                        | (compact: structs as arrays, enums by name)    |
//! +------------------------+------------------------------------------------+
//! ```
//!
//! The length counts the message bytes only and is at most [`MAX_FRAME`] (64 MiB). Byte
//! payloads should use `serde_bytes` so that they encode as MessagePack `bin`, not as arrays
//! of integers. The end of a stream (QUIC FIN) at a frame boundary is the clean end of the
//! message sequence ([`FrameReceiver::recv`] returns `Ok(None)`). A frame that is too long,
//! cut short or does not decode is an error naming the peer, never a panic.

mod connection;
mod endpoint;
mod error;
mod frame;
mod refusals;
pub mod tls;

pub use connection::Connection;
pub use endpoint::Endpoint;
pub use frame::{FrameReceiver, FrameSender, MAX_FRAME};
pub use tls::{CertFiles, ClusterTls, init_certs, issue_cert};
