//! Plain types every other crate shares: key hashing and key-group math, worker ids, source
//! framing. No I/O lives here.

mod framing;
mod key;

pub use framing::{Framing, FramingError};
pub use key::{DEFAULT_KEY_GROUPS, KeyGroup, KeyGroups, KeyGroupsError, MAX_KEY_GROUPS, key_hash};

/// A worker thread of one node, `0..workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub u32);

impl std::fmt::Display for WorkerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "worker {}", self.0)
    }
}
