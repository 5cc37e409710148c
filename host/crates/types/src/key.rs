//! Keys and key groups.
//!
//! A key is the bytes a guest's key extractor returned. It is hashed with XXH3-64 (seed 0), the
//! same function on every node and for every guest language, and the hash picks one of `K` key
//! groups: `group = xxh3_64(key) % K`. `K` is fixed for a cluster's life (default 1024), so a key
//! stays in its group; only whole groups move between workers and nodes.

use xxhash_rust::xxh3::xxh3_64;

/// How many key groups a cluster has unless configured otherwise.
pub const DEFAULT_KEY_GROUPS: u32 = 1024;

/// The most key groups a cluster may have: the key-group table names each group's node, and
/// every node keeps a table entry per group (a count from a corrupt or hostile manifest must
/// not make it allocate gigabytes).
pub const MAX_KEY_GROUPS: u32 = 1 << 16;

/// A key-group count outside `1..=MAX_KEY_GROUPS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{count} key groups: the number of key groups must be 1 to {MAX_KEY_GROUPS}")]
pub struct KeyGroupsError {
    pub count: u32,
}

/// The documented key hash: XXH3-64 with seed 0 over the key's bytes.
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// One key group, `0..K`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyGroup(pub u32);

impl std::fmt::Display for KeyGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key group {}", self.0)
    }
}

/// The number of key groups, and the mapping of keys onto them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyGroups {
    count: u32,
}

impl KeyGroups {
    /// For a count the program itself chose (a constant, a test).
    ///
    /// # Panics
    /// If `count` is not in `1..=MAX_KEY_GROUPS`. A count from outside the process (a flag, a
    /// manifest, the network) goes through [`KeyGroups::try_new`].
    pub fn new(count: u32) -> Self {
        Self::try_new(count).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `count` key groups, or why there cannot be that many.
    pub fn try_new(count: u32) -> Result<Self, KeyGroupsError> {
        if count == 0 || count > MAX_KEY_GROUPS {
            return Err(KeyGroupsError { count });
        }
        Ok(Self { count })
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn of(&self, key: &[u8]) -> KeyGroup {
        KeyGroup((key_hash(key) % u64::from(self.count)) as u32)
    }
}

impl Default for KeyGroups {
    fn default() -> Self {
        Self::new(DEFAULT_KEY_GROUPS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_the_documented_xxh3_with_seed_zero() {
        // Reference values of XXH3-64 (seed 0); a change here would move every key of every
        // running cluster to another group.
        assert_eq!(key_hash(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(key_hash(b"a"), 0xe6c6_32b6_1e96_4e1f);
    }

    #[test]
    fn same_key_same_group_and_groups_in_range() {
        let groups = KeyGroups::new(16);
        for i in 0..10_000u32 {
            let key = format!("word{i}");
            let g = groups.of(key.as_bytes());
            assert!(g.0 < 16);
            assert_eq!(g, groups.of(key.as_bytes()));
        }
    }

    #[test]
    fn a_key_group_count_from_outside_is_checked_not_asserted_on() {
        assert_eq!(KeyGroups::try_new(1).unwrap().count(), 1);
        assert_eq!(
            KeyGroups::try_new(MAX_KEY_GROUPS).unwrap().count(),
            MAX_KEY_GROUPS
        );
        for count in [0, MAX_KEY_GROUPS + 1, u32::MAX] {
            let e = KeyGroups::try_new(count).unwrap_err();
            assert_eq!(e, KeyGroupsError { count });
            assert_eq!(
                e.to_string(),
                format!("{count} key groups: the number of key groups must be 1 to 65536")
            );
        }
    }

    #[test]
    fn keys_spread_over_groups() {
        let groups = KeyGroups::default();
        let mut hits = vec![0u32; groups.count() as usize];
        for i in 0..102_400u32 {
            hits[groups.of(&i.to_le_bytes()).0 as usize] += 1;
        }
        // 100 keys per group on average; a sound hash keeps every group well populated.
        assert!(hits.iter().all(|&h| (40..200).contains(&h)), "{hits:?}");
    }
}
