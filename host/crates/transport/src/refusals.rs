//! Which refused handshakes are worth a log line. A peer that keeps retrying with a certificate
//! of another cluster (a node restarted with the wrong `--certs`) is refused several times a
//! second: its first refusal is logged, the same refusal again is counted, and the count is
//! logged at most once a minute while it goes on, or when something else happens to that peer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often refusals already logged are reported as a count while the peer keeps trying.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Peers remembered; past this, the one reported longest ago is forgotten (a flood of
/// handshakes from many ports must not grow memory without bound).
const PEERS_KEPT: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct Refusals {
    peers: HashMap<SocketAddr, Refused>,
}

#[derive(Debug)]
struct Refused {
    why: String,
    /// When the last line about this peer was logged.
    reported: Instant,
    /// Refusals since then, not yet logged.
    unreported: u64,
}

impl Refusals {
    /// A handshake from `peer` was refused for `why` at `now`: the lines to log (none for a
    /// repeat that is only counted).
    pub(crate) fn refused(&mut self, peer: SocketAddr, why: &str, now: Instant) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(known) = self.peers.get_mut(&peer) {
            if known.why == why {
                known.unreported += 1;
                let waited = now.saturating_duration_since(known.reported);
                if waited >= SUMMARY_EVERY {
                    lines.push(format!(
                        "refused {} more connections from {peer} in the last {} s: {why}",
                        known.unreported,
                        waited.as_secs()
                    ));
                    known.unreported = 0;
                    known.reported = now;
                }
                return lines;
            }
            lines.extend(Self::count(peer, known));
        }
        if self.peers.len() >= PEERS_KEPT && !self.peers.contains_key(&peer) {
            let oldest = self
                .peers
                .iter()
                .min_by_key(|(_, r)| r.reported)
                .map(|(addr, _)| *addr);
            if let Some(oldest) = oldest {
                self.peers.remove(&oldest);
            }
        }
        lines.push(format!(
            "refused a connection from {peer}: {why} (the same refusal again is counted, and \
             reported once a minute)"
        ));
        self.peers.insert(
            peer,
            Refused {
                why: why.to_string(),
                reported: now,
                unreported: 0,
            },
        );
        lines
    }

    /// A handshake from `peer` succeeded: the count of its refusals not yet logged, if any.
    pub(crate) fn accepted(&mut self, peer: SocketAddr) -> Option<String> {
        let known = self.peers.remove(&peer)?;
        Self::count(peer, &known)
    }

    fn count(peer: SocketAddr, known: &Refused) -> Option<String> {
        (known.unreported > 0).then(|| {
            format!(
                "refused {} more connections from {peer} since the last report: {}",
                known.unreported, known.why
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_refusal_is_logged_once_then_counted() {
        let mut r = Refusals::default();
        let peer: SocketAddr = "10.0.0.2:7100".parse().unwrap();
        let other: SocketAddr = "10.0.0.3:7100".parse().unwrap();
        let t0 = Instant::now();
        let why = "its certificate is not signed by this cluster's CA";
        let first = r.refused(peer, why, t0);
        assert_eq!(first.len(), 1);
        assert!(first[0].starts_with("refused a connection from 10.0.0.2:7100"));
        // Every 200 ms for 23 s: nothing more until a minute has passed.
        let mut logged = 0;
        for i in 1..=115u64 {
            logged += r
                .refused(peer, why, t0 + Duration::from_millis(200 * i))
                .len();
        }
        assert_eq!(logged, 0);
        // Another peer is its own story.
        assert_eq!(r.refused(other, why, t0).len(), 1);
        // A minute on, the count.
        let later = r.refused(peer, why, t0 + SUMMARY_EVERY);
        assert_eq!(
            later,
            vec![format!(
                "refused 116 more connections from 10.0.0.2:7100 in the last 60 s: {why}"
            )]
        );
        // Another reason: the count so far, then the new refusal.
        r.refused(peer, why, t0 + SUMMARY_EVERY + Duration::from_secs(1));
        let changed = r.refused(peer, "no certificate", t0 + SUMMARY_EVERY * 2);
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert!(changed[0].starts_with("refused 1 more connections"));
        assert!(changed[1].contains("no certificate"));
        // Accepted at last: what was not reported yet, once.
        r.refused(peer, "no certificate", t0 + SUMMARY_EVERY * 2);
        assert!(r.accepted(peer).unwrap().contains("1 more"));
        assert_eq!(r.accepted(peer), None);
    }

    #[test]
    fn peers_remembered_are_bounded() {
        let mut r = Refusals::default();
        let t0 = Instant::now();
        for port in 0..(PEERS_KEPT as u16 + 10) {
            let peer = SocketAddr::from(([10, 0, 0, 9], port));
            r.refused(peer, "garbage", t0 + Duration::from_millis(port.into()));
        }
        assert_eq!(r.peers.len(), PEERS_KEPT);
    }
}
