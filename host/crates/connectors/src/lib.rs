//! The edges of a node: framed TCP sources, TCP sinks and generator sources, plus the `send` and
//! `receive` tools that speak the same framing. Everything here is I/O on the tokio runtime; the
//! engine sees only batches of frames and batches of encoded output. [`Settings`] and [`Edges`]
//! are how `wallaroo run` and a cluster node alike turn host options into a running node.

mod edges;
pub mod kafka;
pub mod latency;
pub mod protocol;
mod receive;
mod send;
mod settings;
mod sink;
mod source;

pub use edges::{Edge, EdgePlan, Edges, SourceAddress};
pub use receive::{ReceiveOptions, receive};
pub use send::{SendOptions, send};
pub use settings::{Settings, SettingsError, SinkFraming};
pub use sink::run_tcp_sink;
pub use source::{SourceOptions, TcpSource, run_generator};

use std::time::Duration;

use tokio::net::TcpStream;

/// Connects to `addr`, retrying every `every` until `patience` has passed. Logs once while
/// waiting, so an operator sees what the node is waiting for. An address that is not
/// `HOST:PORT` fails at once: no retry can make it right.
pub async fn connect_with_retry(
    addr: &str,
    what: &str,
    every: Duration,
    patience: Option<Duration>,
) -> anyhow::Result<TcpStream> {
    check_address(addr).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
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

/// Checks that `addr` has the shape `HOST:PORT` (`[V6]:PORT` for an IPv6 literal) with a port
/// number, without resolving the host; says what is wrong with it otherwise.
pub fn check_address(addr: &str) -> Result<(), String> {
    let example = "expected HOST:PORT, e.g. 127.0.0.1:7010";
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("'{addr}' has no port: {example}"));
    };
    if host.is_empty() {
        return Err(format!("'{addr}' has no host: {example}"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!(
            "'{addr}' is not an address: {example} (an IPv6 address goes in brackets: [::1]:7010)"
        ));
    }
    match port.parse::<u16>() {
        Err(_) => Err(format!(
            "'{addr}': '{port}' is not a port number: {example}"
        )),
        Ok(0) => Err(format!(
            "'{addr}': port 0 cannot be connected to (it means any free port when listening): \
             {example}"
        )),
        Ok(_) => Ok(()),
    }
}

/// Fails when `addr`'s host name does not exist (the resolver's definite answer), so a sender
/// given a mistyped name says so at once instead of retrying. A temporary resolver failure,
/// like a refused connection, is left to the retries.
pub async fn check_resolves(addr: &str, what: &str) -> anyhow::Result<()> {
    check_address(addr).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    match tokio::net::lookup_host(addr).await {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("Temporary failure") => Ok(()),
        Err(e) => {
            let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
            anyhow::bail!("{what}: cannot resolve the host name '{host}' of {addr}: {e}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_addresses_are_named_and_good_ones_pass() {
        for good in [
            "127.0.0.1:7010",
            "localhost:1",
            "[::1]:7010",
            "example.org:65535",
        ] {
            assert_eq!(check_address(good), Ok(()), "{good}");
        }
        let no_port = check_address("127.0.0.1").unwrap_err();
        assert!(no_port.contains("'127.0.0.1' has no port"), "{no_port}");
        assert!(check_address(":7010").unwrap_err().contains("no host"));
        assert!(check_address("::1:7010").unwrap_err().contains("brackets"));
        let bad_port = check_address("127.0.0.1:70100").unwrap_err();
        assert!(
            bad_port.contains("'70100' is not a port number"),
            "{bad_port}"
        );
        assert!(
            check_address("127.0.0.1:")
                .unwrap_err()
                .contains("port number")
        );
        let port_0 = check_address("127.0.0.1:0").unwrap_err();
        assert!(port_0.contains("port 0 cannot be connected to"), "{port_0}");
    }

    #[tokio::test]
    async fn a_malformed_address_fails_without_retrying() {
        // Retrying would end, after its patience, in the resolver's "invalid socket address".
        let err = connect_with_retry(
            "127.0.0.1",
            "send",
            Duration::from_millis(100),
            Some(Duration::from_secs(1)),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("send: '127.0.0.1' has no port"), "{err}");
    }
}
