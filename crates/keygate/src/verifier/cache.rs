//! The verifier's cache: records by id, and unknown ids beside them (bounded apart).
//!
//! Unknown ids live in the same cache as records, as entries whose digest no key has: a request
//! with an unknown id then takes exactly the path of a wrong secret (one cache hit, one HMAC,
//! one constant-time compare), so timing does not tell which ids exist. Their number is bounded
//! on its own ([`UnknownIds`]), so a flood of made-up ids never evicts a real key.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use moka::Expiry;

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
    /// No key has this id: the entry only remembers that (its digest matches nothing).
    pub(crate) unknown: bool,
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
            unknown: false,
        }
    }

    /// The entry of an id no key has: a digest no key hashes to (all zeros, a 2⁻²⁵⁶ chance,
    /// and checked apart anyway) under the current pepper version, so checking a key against
    /// it costs what a wrong secret costs.
    pub(crate) fn unknown(id: KeyId, pepper_version: u32, generation: u64) -> Self {
        Self {
            digest: Digest::from_bytes([0; 32]),
            pepper_version,
            expires_at: None,
            disabled: false,
            revoked: false,
            allowed_ips: Box::default(),
            rate_limit: None,
            // Never handed out: an unknown id is refused whatever the compare says.
            identity: Arc::new(Identity::new(
                id,
                String::new(),
                None,
                Vec::new(),
                crate::identity::Metadata::default(),
            )),
            generation,
            last_reported: AtomicU64::new(0),
            loaded_at: Instant::now(),
            retry_at: AtomicU64::new(0),
            store_failed: AtomicBool::new(false),
            rehash_queued: AtomicBool::new(false),
            unknown: true,
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

/// Each entry's lifetime in the cache: records live for the fresh TTL plus the stale-if-error
/// grace (the verifier judges freshness itself within it), unknown ids for the negative TTL.
pub(crate) struct EntryTtl {
    pub(crate) known: Duration,
    pub(crate) unknown: Duration,
}

impl EntryTtl {
    fn of(&self, entry: &CachedKey) -> Duration {
        if entry.unknown {
            self.unknown
        } else {
            self.known
        }
    }
}

impl Expiry<KeyId, Arc<CachedKey>> for EntryTtl {
    fn expire_after_create(
        &self,
        _: &KeyId,
        entry: &Arc<CachedKey>,
        _: Instant,
    ) -> Option<Duration> {
        Some(self.of(entry))
    }

    fn expire_after_update(
        &self,
        _: &KeyId,
        entry: &Arc<CachedKey>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.of(entry))
    }
}

/// The unknown ids in the cache, bounded apart from the records: past `capacity`, the oldest
/// is taken out (first in, first out), so unknown ids never fill the records' share.
#[derive(Debug)]
pub(crate) struct UnknownIds {
    capacity: usize,
    order: Mutex<VecDeque<KeyId>>,
    /// Unknown-id entries in the cache now: added when one is made, taken off by the cache's
    /// eviction listener when one leaves (whatever the cause).
    cached: Arc<AtomicU64>,
}

impl UnknownIds {
    pub(crate) fn new(capacity: u64, cached: Arc<AtomicU64>) -> Self {
        Self {
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
            order: Mutex::new(VecDeque::new()),
            cached,
        }
    }

    /// Notes a new unknown-id entry for `id`; returns the oldest id to take out when that
    /// makes one too many.
    pub(crate) fn remember(&self, id: KeyId) -> Option<KeyId> {
        self.cached.fetch_add(1, Ordering::Relaxed);
        let mut order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
        order.push_back(id);
        if order.len() > self.capacity {
            order.pop_front()
        } else {
            None
        }
    }

    /// Unknown-id entries in the cache (exact once the cache's pending maintenance has run).
    pub(crate) fn cached(&self) -> u64 {
        self.cached.load(Ordering::Relaxed)
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
