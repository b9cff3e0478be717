//! The hand-written floor: what a user would write instead of keygate, in a few lines.
//!
//! A key looks like keygate's, `{prefix}_{id}_{secret}{crc}`. The floor splits it into prefix, id
//! and secret-with-checksum (no checksum check), hashes everything after the prefix with one SHA-256 (49 bytes:
//! one compression, as the reference measurement in DESIGN.md did; the whole 60-byte key would take
//! two), looks the id up in a `HashMap` built at start, compares the digests with
//! `subtle::ConstantTimeEq`, and hands back the key's [`Identity`] for the request's extensions.
//! [`CachedFloorKeys`] is the same with a `moka::future::Cache` in front of the map, as a user
//! adding a cache would write it.
//!
//! Benchmark code, not a recommendation: no expiry, revocation, rate limits, lockouts or audit.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Characters in a key id.
const ID_LEN: usize = 12;
/// Characters after the id's underscore: the secret (30) and its checksum (6).
const SECRET_AND_CRC_LEN: usize = 36;

/// Who a key belongs to: what the floor puts into the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity(pub Arc<str>);

/// What the floor keeps per key: the SHA-256 of its `{id}_{secret}{crc}` part, and its owner.
struct KeyRecord {
    digest: [u8; 32],
    identity: Identity,
}

/// A key split into its id and the part that is hashed (`{id}_{secret}{crc}`). The id, secret
/// and checksum have fixed lengths, so the split is at fixed positions from the right (as
/// keygate's parser does; `rsplitn(3, '_')` costs ~500 more instructions per request).
fn split<'a>(key: &'a str, prefix: &str) -> Option<(&'a str, &'a [u8])> {
    let bytes = key.as_bytes();
    let start = prefix.len() + 1;
    let well_formed = bytes.len() == start + ID_LEN + 1 + SECRET_AND_CRC_LEN
        && key.starts_with(prefix)
        && bytes[prefix.len()] == b'_'
        && bytes[start + ID_LEN] == b'_';
    // `key` is a `str` and the checked positions are ASCII, so both slices are on char
    // boundaries.
    well_formed.then(|| (&key[start..start + ID_LEN], &bytes[start..]))
}

fn digest_matches(record: &KeyRecord, hashed: &[u8]) -> bool {
    let digest = Sha256::digest(hashed);
    record.digest[..].ct_eq(&digest[..]).into()
}

/// The floor's key set: id → record, in a `HashMap` built once at start.
pub struct FloorKeys {
    prefix: String,
    records: HashMap<String, Arc<KeyRecord>>,
}

impl FloorKeys {
    /// Builds the map from `(key, owner)` pairs; the plaintexts are hashed and not kept.
    ///
    /// # Errors
    /// A key that does not split as `{prefix}_{id}_{secret}{crc}` (its text is not in the message).
    pub fn new<'a>(
        prefix: &str,
        keys: impl IntoIterator<Item = (&'a str, String)>,
    ) -> Result<Self, String> {
        let mut records = HashMap::new();
        for (n, (key, owner)) in keys.into_iter().enumerate() {
            let (id, hashed) =
                split(key, prefix).ok_or_else(|| format!("key #{n} is not a {prefix} key"))?;
            let record = KeyRecord {
                digest: Sha256::digest(hashed).into(),
                identity: Identity(owner.into()),
            };
            records.insert(id.to_owned(), Arc::new(record));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            records,
        })
    }

    /// The identity of the key presented in the header (`None`: absent, malformed, unknown, or
    /// the wrong secret; all answered 401).
    #[must_use]
    pub fn check(&self, header: Option<&str>) -> Option<Identity> {
        let (id, hashed) = split(header?, &self.prefix)?;
        let record = self.records.get(id)?;
        digest_matches(record, hashed).then(|| record.identity.clone())
    }

    /// How many keys the map holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the map is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

impl fmt::Debug for FloorKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FloorKeys")
            .field("prefix", &self.prefix)
            .field("keys", &self.records.len())
            .finish()
    }
}

/// The floor through a cache: a `moka::future::Cache` (id → record) in front of [`FloorKeys`]'s
/// map, filled on a miss.
pub struct CachedFloorKeys {
    keys: FloorKeys,
    cache: moka::future::Cache<String, Arc<KeyRecord>>,
}

impl CachedFloorKeys {
    /// A cache of up to `capacity` records, each kept for `ttl`, in front of `keys`.
    #[must_use]
    pub fn new(keys: FloorKeys, capacity: u64, ttl: Duration) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(capacity)
            .time_to_live(ttl)
            .build();
        Self { keys, cache }
    }

    /// [`FloorKeys::check`], the record read through the cache.
    pub async fn check(&self, header: Option<&str>) -> Option<Identity> {
        let (id, hashed) = split(header?, &self.keys.prefix)?;
        let record = match self.cache.get(id).await {
            Some(record) => record,
            None => {
                let record = Arc::clone(self.keys.records.get(id)?);
                self.cache.insert(id.to_owned(), Arc::clone(&record)).await;
                record
            }
        };
        digest_matches(&record, hashed).then(|| record.identity.clone())
    }

    /// Records in the cache (moka's estimate, after its pending work has run).
    pub async fn cached(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }
}

impl fmt::Debug for CachedFloorKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedFloorKeys")
            .field("keys", &self.keys)
            .field("cached", &self.cache.entry_count())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{CachedFloorKeys, FloorKeys, Identity, split};

    // Shaped like keygate's keys (base62 id, secret and checksum); not real ones.
    const KEY_A: &str = "bench_live_AbCdEfGhIjKl_0123456789abcdefghijABCDEFGHIJklmnop";
    const KEY_B: &str = "bench_live_ZyXwVuTsRqPo_9876543210zyxwvutsrqZYXWVUTSRQponmlk";

    fn keys() -> FloorKeys {
        FloorKeys::new(
            "bench_live",
            [(KEY_A, "owner a".to_owned()), (KEY_B, "owner b".to_owned())],
        )
        .unwrap()
    }

    /// `key` with its character at `index` replaced by another base62 character.
    fn altered(key: &str, index: usize) -> String {
        let mut bytes = key.as_bytes().to_vec();
        bytes[index] = if bytes[index] == b'x' { b'y' } else { b'x' };
        String::from_utf8(bytes).unwrap()
    }

    fn wrong_keys() -> Vec<String> {
        vec![
            String::new(),
            "nope".into(),
            // Same id, one secret character changed: found in the map, refused by the compare.
            altered(KEY_A, 30),
            // Same id, checksum changed (the floor hashes it too).
            altered(KEY_A, KEY_A.len() - 1),
            // Unknown id.
            altered(KEY_A, 12),
            // Another prefix.
            KEY_A.replacen("bench_live", "bench_test", 1),
            // Too short or too long a secret, or the id's underscore moved.
            KEY_A[..KEY_A.len() - 1].to_owned(),
            format!("{KEY_A}x"),
            KEY_A.replacen("Kl_0", "K_l0", 1),
            // A non-ASCII character where the id's underscore should be.
            KEY_A.replacen("l_0", "é0", 1),
            // A's id with B's secret.
            format!("{}{}", &KEY_A[..24], &KEY_B[24..]),
        ]
    }

    #[test]
    fn splits_into_id_and_hashed_part() {
        let (id, hashed) = split(KEY_A, "bench_live").unwrap_or_else(|| panic!("unsplit"));
        assert_eq!(id, "AbCdEfGhIjKl");
        assert_eq!(hashed, &KEY_A.as_bytes()[11..]);
        assert_eq!(hashed.len(), 49);
        assert!(split(KEY_A, "bench").is_none());
    }

    #[test]
    fn the_floor_accepts_its_keys_and_refuses_others() {
        let keys = keys();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.check(Some(KEY_A)), Some(Identity("owner a".into())));
        assert_eq!(keys.check(Some(KEY_B)), Some(Identity("owner b".into())));
        assert_eq!(keys.check(None), None);
        for wrong in wrong_keys() {
            assert_eq!(keys.check(Some(&wrong)), None, "{wrong}");
        }
    }

    #[tokio::test]
    async fn the_cached_floor_reads_through_its_cache() {
        let cached = CachedFloorKeys::new(keys(), 100, Duration::from_secs(60));
        assert_eq!(cached.cached().await, 0);
        for _ in 0..2 {
            assert_eq!(
                cached.check(Some(KEY_A)).await,
                Some(Identity("owner a".into()))
            );
        }
        assert_eq!(cached.cached().await, 1);
        // A wrong secret for a cached id is refused by the compare, not by a miss.
        for wrong in wrong_keys() {
            assert_eq!(cached.check(Some(&wrong)).await, None, "{wrong}");
        }
        assert_eq!(cached.cached().await, 1, "unknown ids are not cached");
        assert_eq!(
            cached.check(Some(KEY_B)).await,
            Some(Identity("owner b".into()))
        );
        assert_eq!(cached.cached().await, 2);
    }
}
