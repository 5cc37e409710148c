//! What a guest may touch. By default nothing: no files, no network, clocks frozen (the wall
//! clock at the Unix epoch, the monotonic clock at 1 ns) and a random source seeded with a
//! constant, so that a replayed batch computes the same result as the first run. Each grant is
//! an explicit operator decision.

use std::path::PathBuf;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use wasmtime_wasi::{FsPerms, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder};

/// The seed of every guest's random source unless `allow_random` is set.
const DETERMINISTIC_SEED: u64 = 0x5741_4c4c_4152_4f4f; // "WALLAROO"

#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    /// The host's real wall and monotonic clocks.
    pub allow_clock: bool,
    /// The host's real random source.
    pub allow_random: bool,
    /// TCP, UDP and name lookup to any address.
    pub allow_network: bool,
    /// Host directories the guest may read and write, with the path the guest sees them at.
    pub dirs: Vec<(PathBuf, String)>,
}

struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    /// One nanosecond, not zero: the Go runtime refuses to start on a monotonic clock reading
    /// zero ("nanotime returning zero").
    fn now(&self) -> u64 {
        1
    }
}

impl Sandbox {
    pub(crate) fn wasi_ctx(&self) -> anyhow::Result<WasiCtx> {
        let mut b = WasiCtxBuilder::new();
        b.inherit_stdout().inherit_stderr();
        if !self.allow_clock {
            b.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
        }
        if !self.allow_random {
            b.secure_random(StdRng::seed_from_u64(DETERMINISTIC_SEED))
                .insecure_random(StdRng::seed_from_u64(DETERMINISTIC_SEED + 1))
                .insecure_random_seed(u128::from(DETERMINISTIC_SEED));
        }
        if self.allow_network {
            b.inherit_network()
                .allow_tcp(true)
                .allow_udp(true)
                .allow_ip_name_lookup(true);
        } else {
            b.allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false);
        }
        for (host, guest) in &self.dirs {
            b.preopened_dir(host, guest, FsPerms::ReadWrite)
                .map_err(|e| anyhow::anyhow!("cannot grant directory {}: {e}", host.display()))?;
        }
        Ok(b.build())
    }
}
