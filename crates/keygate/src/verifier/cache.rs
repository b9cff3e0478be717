//! The verifier's cache: records by id, and unknown ids beside them (bounded apart).
//!
//! Unknown ids live in the same cache as records, as entries whose digest no key has: a request
//! with an unknown id then takes exactly the path of a wrong secret (one cache hit, one HMAC,
//! one constant-time compare), so timing does not tell which ids exist. Their number is bounded
//! on its own ([`UnknownIds`]), so a flood of made-up ids never evicts a real key.
//!
//! The map is a [`quick_cache`] sync cache: a hit is a shard read lock and a probe, so the
//! verifier can decide a cached key without awaiting (see `Verifier::check_now`). Entries carry
//! their load time and the verifier judges their lifetime on each hit ([`EntryTtl`]); concurrent
//! misses for one id wait on one load ([`KeyCache::get_or_load`]).

use std::collections::VecDeque;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use quick_cache::sync::Cache;
use quick_cache::{Lifecycle, UnitWeighter};

use super::last_used::micros;
use crate::identity::Identity;
use crate::key::KeyId;
use crate::owner::OwnerTag;
use crate::pepper::Digest;
use crate::quota::{QuotaLine, QuotaSubject};
use crate::rate::{HeldLimit, LimitKey, RateLimit, RatePolicy};
use crate::record::{KeyRecord, ip_allowed};
use crate::rejection::Reason;
use crate::store::OwnerLimits;

/// What the hot path needs from a record, prepared once per cache fill.
///
/// Laid out by hand (`repr(C)`), hottest first: a cached key's check reads every field up to
/// `pepper_version` (the first three cache lines of the allocation, with the `Arc`'s counts),
/// and nothing after it unless the credential is new to the entry or the store is failing.
/// Requests cycling through many keys find an entry's lines cold in the CPU cache, so each line
/// touched is a miss; the default layout spread those reads over six lines. The rare and
/// large parts (an owner's limit, the limiter's state) are one pointer each.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct CachedKey {
    /// The invalidation generation of this id's slot when the load started.
    pub(crate) generation: u64,
    /// When the record was read from the store (freshness is judged on this, not the clock:
    /// a manual clock in tests must not age the cache).
    loaded_at: Instant,
    /// The key's own limit, else its environment's default, resolved when the entry is
    /// filled; `None`: the verifier's default.
    pub(crate) rate_limit: Option<RateLimit>,
    /// No key has this id: the entry only remembers that (its digest matches nothing).
    pub(crate) unknown: bool,
    /// The position of the record's prefix among the keyring's formats: a key presented under
    /// another prefix (another environment's) is not this key.
    pub(crate) environment: u8,
    /// A canary: refused as an unknown key once its secret matched (checked only then, so a
    /// normal key pays one load of this flag after the compare).
    pub(crate) canary: bool,
    disabled: bool,
    revoked: bool,
    /// A charge of these lines was awaited once: an in-process meter has their counters in
    /// memory now, so later requests are charged without awaiting.
    pub(crate) quota_ready: AtomicBool,
    /// A refresh of this entry failed on a store error: it is being served stale.
    store_failed: AtomicBool,
    /// This key (under an older pepper) was queued to be re-hashed: once per entry.
    pub(crate) rehash_queued: AtomicBool,
    /// The tag of the credential that passed this record's HMAC check (see
    /// [`super::memo`]): later requests with the same credential compare tags instead.
    pub(crate) verified: OnceLock<u128>,
    expires_at: Option<SystemTime>,
    allowed_ips: Box<[IpNet]>,
    pub(crate) identity: Arc<Identity>,
    /// When this key's use was last reported for last-used tracking (µs since the epoch);
    /// starts at the stored last-used time so a reload does not report again too early.
    pub(crate) last_reported: AtomicU64,
    /// The limiter's state for this key's limit, asked for on the entry's first limited
    /// request ([`RateLimiter::hold`](crate::rate::RateLimiter::hold)); `None` inside: the
    /// limiter holds none (it is remote).
    pub(crate) held_limit: OnceLock<Option<HeldLimit>>,
    /// The owner's shared limit and the key it is counted under, resolved when the entry is
    /// filled; `None`: no owner, or an owner without a limit (no extra work per request).
    /// Boxed: rare, and large (a limit key).
    pub(crate) owner_limit: Option<Box<(LimitKey, RatePolicy)>>,
    /// The quota lines a request of this key spends from: the key's own quota (under its
    /// lineage) and its owner's, resolved when the entry is filled; `None`: neither has a
    /// quota (a branch on the hot path, nothing more).
    pub(crate) quota_lines: Option<Arc<[QuotaLine]>>,
    pub(crate) pepper_version: u32,
    // Read only when the credential is new to this entry (the HMAC check) or the entry is
    // served stale.
    pub(crate) digest: Digest,
    /// While this entry is served stale: when (ns after `loaded_at`) the store may be tried
    /// again. Zero: at once.
    retry_at: AtomicU64,
}

/// The environment a record belongs to, as the verifier's keyring and configuration see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyEnvironment<'a> {
    /// The position of the record's prefix among the keyring's formats.
    pub(crate) position: u8,
    /// Its name, when the keyring names environments.
    pub(crate) name: Option<&'a Arc<str>>,
    /// Its default rate limit, when the verifier has one for it.
    pub(crate) default_limit: Option<RateLimit>,
}

impl CachedKey {
    pub(crate) fn new(
        record: &KeyRecord,
        generation: u64,
        environment: KeyEnvironment<'_>,
        owner: &OwnerLimits,
        route_limits: Option<Arc<crate::route_limit::RouteLimits>>,
    ) -> Self {
        let owner_limit = match (record.owner.as_deref(), owner.rate_limit) {
            (Some(owner), Some(RateLimit::Limited(policy))) => {
                Some(Box::new((LimitKey::Owner(OwnerTag::of(owner)), policy)))
            }
            _ => None,
        };
        let (key_line, owner_line) = crate::quota::record_lines(record, owner);
        let quota_lines: Option<Arc<[QuotaLine]>> = match (key_line, owner_line) {
            (None, None) => None,
            (key, owner) => Some(key.into_iter().chain(owner).collect()),
        };
        let mut identity = record.identity().with_route_limits(route_limits);
        if let Some(name) = environment.name {
            identity = identity.with_environment(Arc::clone(name));
        }
        Self {
            digest: record.digest,
            pepper_version: record.pepper_version,
            expires_at: record.expires_at,
            disabled: record.disabled_at.is_some(),
            revoked: record.revoked_at.is_some(),
            allowed_ips: record.allowed_ips.clone().into_boxed_slice(),
            // A key's own limit (even `unlimited`) wins over its environment's default; the
            // verifier's default applies when neither is set.
            rate_limit: record.rate_limit.or(environment.default_limit),
            owner_limit,
            quota_lines,
            quota_ready: AtomicBool::new(false),
            environment: environment.position,
            identity: Arc::new(identity),
            generation,
            last_reported: AtomicU64::new(record.last_used_at.map_or(0, micros)),
            loaded_at: Instant::now(),
            retry_at: AtomicU64::new(0),
            store_failed: AtomicBool::new(false),
            rehash_queued: AtomicBool::new(false),
            unknown: false,
            canary: record.canary,
            held_limit: OnceLock::new(),
            verified: OnceLock::new(),
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
            owner_limit: None,
            quota_lines: None,
            quota_ready: AtomicBool::new(false),
            environment: 0,
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
            canary: false,
            held_limit: OnceLock::new(),
            verified: OnceLock::new(),
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
/// Judged on every hit: an entry past its lifetime is a miss.
#[derive(Debug, Clone, Copy)]
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

type Map<V, L> = Cache<KeyId, V, UnitWeighter, foldhash::fast::RandomState, L>;

/// Counts unknown-id entries that leave the map by eviction (removals are counted by
/// [`KeyCache`] itself).
#[derive(Clone)]
struct Departures {
    unknown: Arc<AtomicU64>,
}

impl Lifecycle<KeyId, Arc<CachedKey>> for Departures {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, (): &mut Self::RequestState, _: KeyId, entry: Arc<CachedKey>) {
        if entry.unknown {
            self.unknown.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// How many ids whose load failed are remembered (so waiters share the failure): the ids of
/// one outage's in-flight loads, not a history.
const FAILURES_REMEMBERED: usize = 1024;

/// Records and unknown ids by id, with their lifetimes, the unknown ids' own bound, and
/// coalesced loads. `repr(C)`: a hit reads `map` and `ttl` only, so they come first (the
/// verifier's hot fields run on into them).
#[repr(C)]
pub(crate) struct KeyCache {
    map: Map<Arc<CachedKey>, Departures>,
    ttl: EntryTtl,
    unknown: UnknownIds,
    /// When each of the last failed loads failed: a miss that was waiting on a load that then
    /// failed answers with the failure instead of trying the store again itself (one store
    /// call per outage and id, however many requests wait).
    failures: Map<Instant, quick_cache::sync::DefaultLifecycle<KeyId, Instant>>,
}

impl KeyCache {
    /// The bytes a hit reads from the start of the struct (the map and the lifetimes).
    #[cfg(test)]
    pub(crate) const HOT_LEN: usize = std::mem::offset_of!(KeyCache, unknown);

    /// A cache of `capacity` records plus `unknown_capacity` unknown ids.
    pub(crate) fn new(capacity: u64, unknown_capacity: u64, ttl: EntryTtl) -> Self {
        let unknown = Arc::new(AtomicU64::new(0));
        let total = capacity.saturating_add(unknown_capacity);
        let map = Cache::with(
            // Sizes the shards' tables; they grow on demand past this.
            usize::try_from(total.min(1 << 16)).unwrap_or(1 << 16),
            total,
            UnitWeighter,
            foldhash::fast::RandomState::default(),
            Departures {
                unknown: Arc::clone(&unknown),
            },
        );
        Self {
            map,
            ttl,
            unknown: UnknownIds::new(unknown_capacity, unknown),
            failures: Cache::with(
                FAILURES_REMEMBERED,
                FAILURES_REMEMBERED as u64,
                UnitWeighter,
                foldhash::fast::RandomState::default(),
                quick_cache::sync::DefaultLifecycle::default(),
            ),
        }
    }

    /// The entry for `id`, if cached and within its lifetime. Synchronous: a read lock and a
    /// probe.
    #[inline]
    pub(crate) fn get(&self, id: &KeyId) -> Option<Arc<CachedKey>> {
        let entry = self.map.get(id)?;
        if entry.age() < self.ttl.of(&entry) {
            Some(entry)
        } else {
            self.remove_entry(id, &entry);
            None
        }
    }

    /// The entry for `id`, loading it with `load` on a miss. Concurrent misses for one id wait
    /// for the first one's load; if that load fails, they all answer with its failure (a
    /// store error is never cached: the next miss loads again). If the loading request is
    /// dropped, one of the waiters loads instead.
    pub(crate) async fn get_or_load<E>(
        &self,
        id: KeyId,
        load: impl Future<Output = Result<Arc<CachedKey>, E>>,
    ) -> Result<Arc<CachedKey>, Option<E>> {
        let waiting_since = Instant::now();
        let guard = loop {
            match self.map.get_value_or_guard_async(&id).await {
                // Within its lifetime, or the load this request waited for (even when its
                // lifetime is zero: waiters share a load, they do not reload in turn).
                Ok(entry)
                    if entry.age() < self.ttl.of(&entry) || entry.loaded_at >= waiting_since =>
                {
                    return Ok(entry);
                }
                Ok(expired) => self.remove_entry(&id, &expired),
                Err(guard) => break guard,
            }
        };
        if self
            .failures
            .peek(&id)
            .is_some_and(|failed| failed >= waiting_since)
        {
            // The load this request waited for failed meanwhile.
            return Err(None);
        }
        match load.await {
            Ok(entry) => {
                self.note_insert(&entry);
                if let Err(entry) = guard.insert(Arc::clone(&entry)) {
                    // Invalidated while loading: not cached (its generation is behind anyway).
                    self.note_removed(&entry);
                }
                Ok(entry)
            }
            Err(error) => {
                self.failures.insert(id, Instant::now());
                drop(guard);
                Err(Some(error))
            }
        }
    }

    /// Caches `entry` for `id`, replacing what is there.
    pub(crate) fn insert(&self, id: KeyId, entry: Arc<CachedKey>) {
        if let Some((_, old)) = self.map.remove(&id) {
            self.note_removed(&old);
        }
        self.note_insert(&entry);
        self.map.insert(id, entry);
    }

    /// Takes `id` out of the cache (also stops an in-flight load of it from caching its result).
    pub(crate) fn invalidate(&self, id: &KeyId) {
        if let Some((_, old)) = self.map.remove(id) {
            self.note_removed(&old);
        }
    }

    /// The ids of the cached keys whose requests spend from the quota counted under
    /// `subject` (every key of a rotation lineage spends from one): a scan of the cache, for
    /// an operator's top-up, never for a request.
    pub(crate) fn ids_spending_from(&self, subject: &QuotaSubject) -> Vec<KeyId> {
        self.map
            .iter()
            .filter(|(_, entry)| {
                entry
                    .quota_lines
                    .as_ref()
                    .is_some_and(|lines| lines.iter().any(|line| line.subject == *subject))
            })
            .map(|(id, _)| id)
            .collect()
    }

    /// Takes `id` out if it is still `entry`.
    fn remove_entry(&self, id: &KeyId, entry: &Arc<CachedKey>) {
        if let Some((_, old)) = self.map.remove_if(id, |cached| Arc::ptr_eq(cached, entry)) {
            self.note_removed(&old);
        }
    }

    /// Empties the cache.
    pub(crate) fn invalidate_all(&self) {
        for (_, old) in self.map.drain() {
            self.note_removed(&old);
        }
    }

    /// Notes a new unknown-id entry for `id` (see [`UnknownIds::remember`]); takes the oldest
    /// unknown id out when that makes one too many (unless a key took its id meanwhile).
    pub(crate) fn remember_unknown(&self, id: KeyId) {
        if let Some(oldest) = self.unknown.remember(id)
            && let Some((_, old)) = self.map.remove_if(&oldest, |entry| entry.unknown)
        {
            self.note_removed(&old);
        }
    }

    /// Records and unknown ids in the cache.
    pub(crate) fn entry_counts(&self) -> (u64, u64) {
        let unknown = self.unknown.cached();
        let all = u64::try_from(self.map.len()).unwrap_or(u64::MAX);
        (all.saturating_sub(unknown), unknown)
    }

    fn note_insert(&self, entry: &CachedKey) {
        if entry.unknown {
            self.unknown.cached.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn note_removed(&self, entry: &CachedKey) {
        if entry.unknown {
            self.unknown.cached.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The unknown ids in the cache, bounded apart from the records: past `capacity`, the oldest
/// is taken out (first in, first out), so unknown ids never fill the records' share.
#[derive(Debug)]
pub(crate) struct UnknownIds {
    capacity: usize,
    order: Mutex<VecDeque<KeyId>>,
    /// Unknown-id entries in the cache now: added when one is inserted, taken off when one
    /// leaves (whatever the cause).
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
        let mut order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
        order.push_back(id);
        if order.len() > self.capacity {
            order.pop_front()
        } else {
            None
        }
    }

    /// Unknown-id entries in the cache.
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::{CachedKey, EntryTtl, KeyCache};
    use crate::key::KeyId;

    const LONG: Duration = Duration::from_secs(3600);

    fn unknown(id: KeyId) -> Arc<CachedKey> {
        Arc::new(CachedKey::unknown(id, 1, 0))
    }

    fn known(id: KeyId) -> Arc<CachedKey> {
        let mut entry = CachedKey::unknown(id, 1, 0);
        entry.unknown = false;
        Arc::new(entry)
    }

    fn cache(capacity: u64, unknown_capacity: u64, ttl: EntryTtl) -> KeyCache {
        KeyCache::new(capacity, unknown_capacity, ttl)
    }

    /// What a cached key's check reads fits the allocation's first three 64-byte lines (the
    /// `Arc`'s two counts come first), and what it reads only on a new credential or a store
    /// failure comes after.
    #[test]
    fn a_check_reads_three_cache_lines_of_an_entry() {
        use std::mem::{offset_of, size_of};
        // `ArcInner`: strong and weak counts, then the value at its alignment.
        let start = (2 * size_of::<usize>()).next_multiple_of(std::mem::align_of::<CachedKey>());
        let hot_end = start + offset_of!(CachedKey, pepper_version) + size_of::<u32>();
        assert!(hot_end <= 3 * 64, "hot fields end at byte {hot_end}");
        for cold in [
            offset_of!(CachedKey, digest),
            offset_of!(CachedKey, retry_at),
        ] {
            assert!(cold > offset_of!(CachedKey, pepper_version));
        }
        assert!(
            size_of::<super::HeldLimit>() <= size_of::<usize>(),
            "a held limit is one pointer"
        );
    }

    #[test]
    fn an_entry_past_its_lifetime_is_a_miss_and_leaves() {
        let cache = cache(
            10,
            10,
            EntryTtl {
                known: LONG,
                unknown: Duration::ZERO,
            },
        );
        let (a, b) = (KeyId::random(), KeyId::random());
        cache.insert(a, known(a));
        cache.insert(b, unknown(b));
        assert!(cache.get(&a).is_some(), "within its lifetime");
        assert!(
            cache.get(&b).is_none(),
            "an unknown id past the negative TTL"
        );
        assert_eq!(cache.entry_counts(), (1, 0), "the expired entry left");
    }

    #[test]
    fn counts_follow_inserts_replacements_removals_and_clears() {
        let ttl = EntryTtl {
            known: LONG,
            unknown: LONG,
        };
        let cache = cache(10, 10, ttl);
        let ids: Vec<KeyId> = (0..4).map(|_| KeyId::random()).collect();
        cache.insert(ids[0], known(ids[0]));
        cache.insert(ids[1], unknown(ids[1]));
        cache.insert(ids[2], unknown(ids[2]));
        assert_eq!(cache.entry_counts(), (1, 2));
        // A key takes an unknown id's place, and the other way round.
        cache.insert(ids[1], known(ids[1]));
        cache.insert(ids[0], unknown(ids[0]));
        assert_eq!(cache.entry_counts(), (1, 2));
        cache.invalidate(&ids[2]);
        cache.invalidate(&ids[3]);
        assert_eq!(cache.entry_counts(), (1, 1));
        cache.invalidate_all();
        assert_eq!(cache.entry_counts(), (0, 0));
    }

    #[test]
    fn evicted_unknown_ids_are_counted_out() {
        let ttl = EntryTtl {
            known: LONG,
            unknown: LONG,
        };
        let cache = cache(0, 8, ttl);
        for _ in 0..1000 {
            let id = KeyId::random();
            cache.insert(id, unknown(id));
        }
        let (keys, unknown) = cache.entry_counts();
        assert_eq!(keys, 0);
        assert!(unknown <= 8, "{unknown} unknown ids in a cache of 8");
        assert_eq!(
            unknown,
            u64::try_from(cache.map.len()).unwrap(),
            "the count is the map's"
        );
    }

    #[test]
    fn the_oldest_unknown_id_goes_past_the_bound() {
        let ttl = EntryTtl {
            known: LONG,
            unknown: LONG,
        };
        let cache = cache(100, 2, ttl);
        let ids: Vec<KeyId> = (0..3).map(|_| KeyId::random()).collect();
        for id in &ids {
            cache.remember_unknown(*id);
            cache.insert(*id, unknown(*id));
        }
        assert!(cache.get(&ids[0]).is_none(), "the oldest went");
        assert!(cache.get(&ids[1]).is_some() && cache.get(&ids[2]).is_some());
        assert_eq!(cache.entry_counts(), (0, 2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_share_one_load_and_its_failure() {
        let ttl = EntryTtl {
            known: LONG,
            unknown: LONG,
        };
        let cache = Arc::new(cache(10, 10, ttl));
        let loads = Arc::new(AtomicUsize::new(0));
        let id = KeyId::random();
        let run = |fail: bool| {
            let tasks: Vec<_> = (0..50)
                .map(|_| {
                    let (cache, loads) = (Arc::clone(&cache), Arc::clone(&loads));
                    tokio::spawn(async move {
                        cache
                            .get_or_load(id, async {
                                loads.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                if fail { Err("down") } else { Ok(known(id)) }
                            })
                            .await
                            .is_ok()
                    })
                })
                .collect();
            async move {
                let mut ok = 0;
                for task in tasks {
                    ok += usize::from(task.await.unwrap());
                }
                ok
            }
        };
        assert_eq!(run(true).await, 0, "every waiter gets the failure");
        assert_eq!(loads.load(Ordering::SeqCst), 1, "one load for all");
        assert!(cache.get(&id).is_none(), "a failure is not cached");
        assert_eq!(run(false).await, 50);
        assert_eq!(loads.load(Ordering::SeqCst), 2, "one load for all");
        assert!(cache.get(&id).is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_share_a_load_even_with_a_zero_lifetime() {
        let ttl = EntryTtl {
            known: LONG,
            unknown: Duration::ZERO,
        };
        let cache = Arc::new(cache(10, 10, ttl));
        let loads = Arc::new(AtomicUsize::new(0));
        let id = KeyId::random();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cache, loads) = (Arc::clone(&cache), Arc::clone(&loads));
                tokio::spawn(async move {
                    cache
                        .get_or_load(id, async {
                            loads.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            Ok::<_, &str>(unknown(id))
                        })
                        .await
                        .is_ok_and(|entry| entry.unknown)
                })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap());
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1, "one load for all");
    }

    #[tokio::test]
    async fn an_entry_past_its_lifetime_is_loaded_again() {
        let ttl = EntryTtl {
            known: LONG,
            unknown: Duration::ZERO,
        };
        let cache = cache(10, 10, ttl);
        let id = KeyId::random();
        cache.insert(id, unknown(id));
        // Loaded strictly before this request started waiting.
        std::thread::sleep(Duration::from_millis(1));
        let loaded = cache
            .get_or_load(id, async { Ok::<_, &str>(known(id)) })
            .await
            .unwrap();
        assert!(!loaded.unknown, "the expired entry was not served");
        let again = cache
            .get_or_load(id, async { Err("not called: cached") })
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&loaded, &again), "the fresh entry is served");
    }
}
