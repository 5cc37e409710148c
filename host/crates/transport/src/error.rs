//! quinn's errors, told so that an operator can act on them.

use std::borrow::Cow;

use quinn::{ConnectionError, ReadError, StoppedError, WriteError};
use rustls::AlertDescription;

use crate::tls::{PROTOCOL, SERVER_NAME};

/// Which end of the connection we are, to say who refused whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// We dialled: the peer is "the node".
    Client,
    /// We accepted: the peer is "the peer".
    Server,
}

impl Side {
    fn peer(self) -> &'static str {
        match self {
            Side::Client => "the node",
            Side::Server => "the peer",
        }
    }
}

/// Why a connection ended or failed, as a sentence fragment ("the node refused our
/// certificate: ...").
pub(crate) fn describe(e: &ConnectionError, side: Side) -> String {
    let peer = side.peer();
    match e {
        // Generated here: our TLS refused the peer, or the peer broke the protocol.
        ConnectionError::TransportError(t) => {
            if let Some(alert) = tls_alert(u64::from(t.code)) {
                refused_by_us(&t.reason, alert, peer)
            } else {
                format!("protocol error: {t}")
            }
        }
        // Sent by the peer: its TLS refused us, or it saw a protocol error.
        ConnectionError::ConnectionClosed(c) => {
            let reason = String::from_utf8_lossy(&c.reason);
            match tls_alert(u64::from(c.error_code)) {
                Some(alert) => refused_by_peer(alert, &reason, peer),
                None if reason.is_empty() => {
                    format!("{peer} aborted the connection: {}", c.error_code)
                }
                None => format!("{peer} aborted the connection: {} ({reason})", c.error_code),
            }
        }
        ConnectionError::ApplicationClosed(c) => {
            let reason = String::from_utf8_lossy(&c.reason);
            if reason.is_empty() {
                format!("closed by {peer} (code {})", c.error_code)
            } else {
                format!("closed by {peer}: {reason}")
            }
        }
        ConnectionError::Reset => format!("{peer} reset the connection (did it restart?)"),
        ConnectionError::TimedOut => format!(
            "no answer from {peer} for {} s (is it running and listening on that UDP port, \
             and does the network let UDP through?)",
            crate::endpoint::IDLE_TIMEOUT.as_secs()
        ),
        ConnectionError::LocallyClosed => "closed by this side".to_string(),
        ConnectionError::VersionMismatch => format!("{peer} does not speak QUIC version 1"),
        ConnectionError::CidsExhausted => "ran out of connection IDs".to_string(),
    }
}

/// The TLS alert inside a QUIC CRYPTO_ERROR code (0x100 + alert), if it is one.
fn tls_alert(code: u64) -> Option<AlertDescription> {
    (0x100..0x200)
        .contains(&code)
        .then(|| AlertDescription::from((code & 0xff) as u8))
}

/// What rustls' error text says about a certificate it refused, if it says something an
/// operator can act on.
fn certificate_problem(reason: &str) -> Option<Cow<'static, str>> {
    Some(if reason.contains("UnknownIssuer") {
        Cow::Borrowed("is not signed by this cluster's CA (unknown issuer)")
    } else if reason.contains("BadSignature") {
        // Same issuer name, another key: a CA from another `cert init` of an older version.
        Cow::Borrowed(
            "is not signed by this cluster's CA (bad signature from an issuer of the same name)",
        )
    } else if reason.contains("NotValidForName") {
        Cow::Owned(format!("is not for the name `{SERVER_NAME}`"))
    } else if reason.contains("Expired") {
        Cow::Borrowed("has expired")
    } else if reason.contains("NotValidYet") {
        Cow::Borrowed("is not valid yet (is the clock right?)")
    } else {
        return None;
    })
}

/// Our TLS refused the peer's handshake; `reason` is rustls' error text.
fn refused_by_us(reason: &str, alert: AlertDescription, peer: &str) -> String {
    if let Some(what) = certificate_problem(reason) {
        format!("{peer}'s certificate {what}")
    } else if reason.contains("no certificates") || alert == AlertDescription::CertificateRequired {
        format!("{peer} presented no certificate ({reason})")
    } else if alert == AlertDescription::NoApplicationProtocol {
        format!("{peer} does not speak the `{PROTOCOL}` protocol ({reason})")
    } else if reason.contains("certificate") {
        format!("{peer}'s certificate was refused: {reason}")
    } else {
        format!("TLS handshake failed: {reason}")
    }
}

/// The peer's TLS refused our handshake with `alert`; `reason` is the text it sent along
/// (quinn sends rustls' error text).
fn refused_by_peer(alert: AlertDescription, reason: &str, peer: &str) -> String {
    let name = alert_name(alert);
    let detail = if reason.is_empty() {
        format!("TLS alert: {name}")
    } else {
        format!("TLS alert: {name}, {reason}")
    };
    if let Some(what) = certificate_problem(reason) {
        let what = what.replace("this cluster's CA", &format!("{peer}'s CA"));
        return format!(
            "{peer} refused our certificate: it {what} ({detail}); \
             are both using files from the same `wallaroo cert init`?"
        );
    }
    match alert {
        AlertDescription::UnknownCA => format!(
            "{peer} refused our certificate: it is not signed by {peer}'s CA ({detail}); \
             are both using files from the same `wallaroo cert init`?"
        ),
        AlertDescription::BadCertificate
        | AlertDescription::UnsupportedCertificate
        | AlertDescription::CertificateRevoked
        | AlertDescription::CertificateExpired
        | AlertDescription::CertificateUnknown
        | AlertDescription::CertificateRequired
        | AlertDescription::AccessDenied => format!("{peer} refused our certificate ({detail})"),
        AlertDescription::NoApplicationProtocol => {
            format!("{peer} does not speak the `{PROTOCOL}` protocol ({detail})")
        }
        _ => format!("{peer} aborted the TLS handshake ({detail})"),
    }
}

fn alert_name(alert: AlertDescription) -> Cow<'static, str> {
    Cow::Borrowed(match alert {
        AlertDescription::BadCertificate => "bad certificate",
        AlertDescription::UnsupportedCertificate => "unsupported certificate",
        AlertDescription::CertificateRevoked => "certificate revoked",
        AlertDescription::CertificateExpired => "certificate expired",
        AlertDescription::CertificateUnknown => "certificate unknown",
        AlertDescription::CertificateRequired => "certificate required",
        AlertDescription::UnknownCA => "unknown CA",
        AlertDescription::AccessDenied => "access denied",
        AlertDescription::DecryptError => "decrypt error",
        AlertDescription::HandshakeFailure => "handshake failure",
        AlertDescription::NoApplicationProtocol => "no application protocol",
        AlertDescription::ProtocolVersion => "protocol version",
        other => return Cow::Owned(format!("{other:?}")),
    })
}

/// A failed write on a stream.
pub(crate) fn describe_write(e: &WriteError, side: Side) -> String {
    match e {
        WriteError::Stopped(code) => format!("the peer stopped reading the stream (code {code})"),
        WriteError::ConnectionLost(e) => describe(e, side),
        WriteError::ClosedStream => "the stream is already finished".to_string(),
        WriteError::ZeroRttRejected => "0-RTT data was rejected".to_string(),
    }
}

/// A failed read on a stream.
pub(crate) fn describe_read(e: &ReadError, side: Side) -> String {
    match e {
        ReadError::Reset(code) => format!("the peer abandoned the stream (code {code})"),
        ReadError::ConnectionLost(e) => describe(e, side),
        ReadError::ClosedStream => "the stream is already closed".to_string(),
        ReadError::IllegalOrderedRead => "illegal ordered read".to_string(),
        ReadError::ZeroRttRejected => "0-RTT data was rejected".to_string(),
    }
}

/// A failed wait for the peer to take a finished stream.
pub(crate) fn describe_stopped(e: &StoppedError, side: Side) -> String {
    match e {
        StoppedError::ConnectionLost(e) => describe(e, side),
        StoppedError::ZeroRttRejected => "0-RTT data was rejected".to_string(),
    }
}
