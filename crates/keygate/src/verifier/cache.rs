//! The verifier's caches: positive records by id, and a separate negative cache of unknown ids.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;

use super::last_used::micros;
use crate::identity::Identity;
use crate::key::KeyId;
use crate::pepper::Digest;
use crate::rate::RateLimit;
use crate::record::{KeyRecord, ip_allowed};
use crate::rejection::Reason;

/// What the hot path needs from a record, prepared once per cache fill.
#[derive(Debug)]
pub(crate) struct CachedKey {
    pub(crate) digest: Digest,
    pub(crate) pepper_version: u32,
    expires_at: Option<SystemTime>,
    disabled: bool,
    revoked: bool,
    allowed_ips: Box<[IpNet]>,
    /// The key's own limit; `None`: the verifier's default.
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) identity: Arc<Identity>,
    /// The invalidation generation of this id's slot when the load started.
    pub(crate) generation: u64,
    /// When this key's use was last reported for last-used tracking (µs since the epoch);
    /// starts at the stored last-used time so a reload does not report again too early.
    pub(crate) last_reported: AtomicU64,
    /// When the record was read from the store (freshness is judged on this, not the clock:
    /// a manual clock in tests must not age the cache).
    loaded_at: Instant,
    /// While this entry is served stale: when (ns after `loaded_at`) the store may be tried
    /// again. Zero: at once.
    retry_at: AtomicU64,
    /// A refresh of this entry failed on a store error: it is being served stale.
    store_failed: AtomicBool,
    /// This key (under an older pepper) was queued to be re-hashed: once per entry.
    pub(crate) rehash_queued: AtomicBool,
}

impl CachedKey {
    pub(crate) fn new(record: &KeyRecord, generation: u64) -> Self {
        Self {
            digest: record.digest,
            pepper_version: record.pepper_version,
            expires_at: record.expires_at,
            disabled: record.disabled_at.is_some(),
            revoked: record.revoked_at.is_some(),
            allowed_ips: record.allowed_ips.clone().into_boxed_slice(),
            rate_limit: record.rate_limit,
            identity: Arc::new(record.identity()),
            generation,
            last_reported: AtomicU64::new(record.last_used_at.map_or(0, micros)),
            loaded_at: Instant::now(),
            retry_at: AtomicU64::new(0),
            store_failed: AtomicBool::new(false),
            rehash_queued: AtomicBool::new(false),
        }
    }

    /// How long ago the record was read from the store.
    pub(crate) fn age(&self) -> Duration {
        self.loaded_at.elapsed()
    }

    /// Whether a stale entry's store retry is due (and, if so, claims it for `backoff`, so
    /// one request per `backoff` tries the store while the others keep serving the entry).
    pub(crate) fn claim_retry(&self, backoff: Duration) -> bool {
        let now = nanos(self.loaded_at.elapsed());
        let due = self.retry_at.load(Ordering::Relaxed);
        now >= due
            && self
                .retry_at
                .compare_exchange(
                    due,
                    now.saturating_add(nanos(backoff)),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Whether the last refresh of this entry failed (it is served stale until one succeeds).
    pub(crate) fn store_failed(&self) -> bool {
        self.store_failed.load(Ordering::Relaxed)
    }

    pub(crate) fn set_store_failed(&self) {
        self.store_failed.store(true, Ordering::Relaxed);
    }

    /// The state check, after the secret matched. Revoked outranks disabled, then expired.
    pub(crate) fn refusal(&self, now: SystemTime, client: Option<IpAddr>) -> Option<Reason> {
        if self.revoked {
            Some(Reason::Revoked)
        } else if self.disabled {
            Some(Reason::Disabled)
        } else if self.expires_at.is_some_and(|at| at <= now) {
            Some(Reason::Expired)
        } else if !ip_allowed(&self.allowed_ips, client) {
            Some(Reason::ForbiddenClientIp)
        } else {
            None
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

const SLOTS: usize = 256;

/// Invalidation generations, one counter per slot of ids.
///
/// An entry remembers its slot's generation when its load *started*; an invalidation bumps the
/// slot. A hit whose generation is older than its slot's is stale and reloaded. This closes the
/// race where a load that read the store before a revoke inserts its result after the revoke's
/// cache eviction.
#[derive(Debug)]
pub(crate) struct Generations {
    slots: Box<[AtomicU64]>,
}

impl Default for Generations {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Generations {
    fn slot(&self, id: &KeyId) -> &AtomicU64 {
        // Ids are uniformly random, so their first bytes spread evenly.
        let b = id.as_bytes();
        let index = (usize::from(b[0]) << 8 | usize::from(b[1])) % SLOTS;
        &self.slots[index]
    }

    pub(crate) fn current(&self, id: &KeyId) -> u64 {
        self.slot(id).load(Ordering::Acquire)
    }

    pub(crate) fn bump(&self, id: &KeyId) {
        self.slot(id).fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn bump_all(&self) {
        for slot in &*self.slots {
            slot.fetch_add(1, Ordering::AcqRel);
        }
    }
}
