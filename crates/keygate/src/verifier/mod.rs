//! The [`Verifier`]: the framework-neutral centre of keygate.
//!
//! Contents: [`Verifier`] (check requests), [`VerifierBuilder`] (configure), [`Presented`] (a
//! credential taken from a request), [`Admin`] (manage keys with immediate cache eviction).
//!
//! # How one request is checked
//! 1. [`Verifier::extract`] (synchronous, no I/O) finds exactly one credential, caps its length,
//!    checks format, prefix and checksum, and resolves the client address. A malformed key stops
//!    here: no cache or store access at all.
//! 2. [`Verifier::verify`] looks the id up in the cache; a miss loads it from the store (one load
//!    per id however many requests wait for it); unknown ids are cached too, bounded apart, with
//!    a digest no key has. Then the key's HMAC is compared in constant time with the cached
//!    digest (the same work for an unknown id as for a wrong secret), and the key's state
//!    (revoked, disabled, expired — against the clock, on every hit) and client IP restriction
//!    are checked, and that the key was presented under its record's prefix (its
//!    [environment](crate::keyring)). Then the key's rate limit (its own policy, else its
//!    environment's default, else the verifier's default) takes
//!    one request from its allowance. A client that failed too often recently is refused
//!    before any of this (see [`crate::rate`]).
//!
//! # Example
//! ```
//! use keygate::{HttpRequestView, Keyring, MemoryStore, NewKey, Verifier};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::builder(Keyring::development("acme_test")?, MemoryStore::new()).build();
//! let created = verifier.admin().create_key(NewKey::new("docs").scope("orders:read")?).await?;
//!
//! let mut headers = http::HeaderMap::new();
//! headers.insert("x-api-key", created.key.expose_secret().parse()?);
//! let uri = http::Uri::from_static("/orders");
//! let identity = verifier.verify_request(&HttpRequestView::new(&headers, &uri, None)).await?;
//! assert_eq!(identity.name(), "docs");
//! assert!(identity.has_scope("orders:read"));
//! # Ok(())
//! # }
//! ```

mod admin;
mod builder;
mod cache;
mod last_used;
mod memo;
mod pepper_check;
mod subscriber;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

pub use admin::{Admin, AdminBuilder, NoKeyring};
pub use builder::{DEFAULT_FAILURE_LIMIT, VerifierBuilder};
pub use last_used::LastUsedStats;

use self::cache::{CachedKey, Generations, KeyCache, KeyEnvironment};
use self::last_used::LastUsed;
use self::subscriber::Subscriber;
use crate::audit::{AuditEvent, AuditStats, Auditor};
use crate::clock::Clock;
use crate::extract::{CredentialSources, RequestView, TrustedProxies};
use crate::identity::Identity;
use crate::key::{KeyId, PresentedKey};
use crate::keyring::Keyring;
use crate::metrics::{self, CacheKind};
use crate::quota::{MeterError, QuotaDecision, QuotaLine, QuotaMeter, QuotaReport};
use crate::rate::in_process::nanos_since_epoch;
use crate::rate::{
    InProcessLimiter, LimitKey, LimiterError, RateDecision, RateLimit, RateLimiter, RatePolicy,
};
use crate::rejection::{Reason, Rejection};
use crate::store::{KeyAdmin, KeyStore, StoreError};

/// Checks API keys: extraction, parsing, cache, store, constant-time digest comparison, state and
/// restrictions. Cheap to clone (one `Arc`); share one per process.
///
/// Build with [`Verifier::builder`].
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

/// Laid out by hand (`repr(C)`), the fields a cached key's check reads first: each request
/// finds this struct's lines cold in the CPU cache behind the framework's own work, and the
/// compiler's order spread those reads over all 13 lines of its 832 bytes; in this order they
/// end by byte 448 (`layout_tests`; `loadbench --cache-sim` counts the misses).
#[repr(C)]
struct Inner {
    sources: CredentialSources,
    proxies: TrustedProxies,
    keyring: Keyring,
    clock: Arc<dyn Clock>,
    /// The key of the verified-credential tags ([`memo`]).
    memo: memo::MemoKey,
    generations: Generations,
    /// The same limiter when it is the default one, on this verifier's clock: reached without
    /// dynamic dispatch, and given the check's own clock reading.
    own_limiter: Option<Arc<InProcessLimiter>>,
    failure_limit: Option<RatePolicy>,
    default_rate_limit: RateLimit,
    /// Whether the limiter decides without I/O ([`RateLimiter::decides_now`]): then a cached
    /// key is decided without awaiting.
    limiter_decides_now: bool,
    /// Whether the meter charges without I/O ([`QuotaMeter::decides_now`]).
    meter_decides_now: bool,
    last_used: LastUsed,
    auditor: Auditor,
    /// How long past `cache_ttl` a record may be served when the store is unreachable; zero:
    /// never.
    stale_grace: Duration,
    /// Fresh TTL of cached records (the cache keeps them for the stale grace beyond).
    cache_ttl: Duration,
    limiter: Arc<dyn RateLimiter>,
    /// Records and unknown ids, by id (unknown ids bounded apart). A hit reads its first
    /// fields only (the map, the lifetimes): its cold rest runs on into the cold fields here.
    cache: KeyCache,
    /// Only whether there is one is read on a hit without invalidations.
    subscriber: Option<Subscriber>,
    // Read only off the cached path (store loads, limits and quotas awaited, canaries,
    // changes).
    store: Arc<dyn KeyStore>,
    admin: Arc<dyn KeyAdmin>,
    /// Counts what keys and owners spend of their quotas.
    quota_meter: Arc<dyn QuotaMeter>,
    /// Default rate limits per environment, by position in the keyring (resolved into each
    /// cache entry when it is filled).
    environment_limits: Box<[Option<RateLimit>]>,
    /// Default named limits, for keys without their own of a name (resolved into each cache
    /// entry when it is filled).
    default_named_limits: crate::rate::NamedLimits,
    /// Whether a canary's use spends the client's whole failure allowance
    /// ([`VerifierBuilder::canary_lockout`]).
    canary_lockout: bool,
    /// Where canary uses are noticed ([`VerifierBuilder::notices`]).
    canary_notices: Option<crate::notice::CanaryNotices>,
    /// Fresh TTL while the invalidation subscription is down.
    degraded_ttl: Duration,
    /// The peppers checked against the store's settings (see [`VerifierBuilder::start`]).
    pepper_gate: pepper_check::PepperGate,
}

/// A successful verification: the caller's identity, and the rate limiter's decision when the
/// key is limited (for `RateLimit` response headers).
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    /// Who is calling.
    pub(crate) identity: Arc<Identity>,
    /// The key's rate limit state after this request; `None` for an unlimited key.
    pub(crate) rate: Option<RateDecision>,
    /// Whether the key was accepted on a cached record past its TTL because the key store
    /// was unreachable ([`VerifierBuilder::stale_if_error`]); the audit event says so.
    pub(crate) stale: bool,
    /// What the request was charged of its key's quotas (the default cost, 1); `None` when
    /// neither the key nor its owner has a quota.
    pub(crate) quota: Option<Charged>,
}

/// A quota charge the verifier made: the lines and the meter's decision.
#[derive(Debug, Clone)]
pub(crate) struct Charged {
    pub(crate) lines: Arc<[QuotaLine]>,
    pub(crate) decision: QuotaDecision,
}

/// The cost the key check charges each request of a key with a quota; routes settle their own
/// with [`Cost`](crate::Cost).
const DEFAULT_COST: u64 = 1;

/// A well-formed credential taken from a request, with the client's address.
///
/// Owns its data (an inline copy of the key, zeroed on drop), so verification can outlive the
/// request's headers. `Debug` shows only the key id.
#[derive(Debug)]
pub struct Presented {
    key: PresentedKey,
    client_ip: Option<IpAddr>,
}

impl Presented {
    /// The presented key's public id.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        self.key.id()
    }

    /// The client address, if known.
    #[must_use]
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }
}

/// Why a cache fill produced no entry (never cached): the store could not answer.
#[derive(Debug)]
struct LoadError(StoreError);

const LOOKUP_ATTEMPTS: usize = 3;

/// While a record is served stale, how often one request tries the store again.
const STALE_RETRY: Duration = Duration::from_secs(1);

impl Verifier {
    /// Starts configuring a verifier over `store`, which serves lookups and management.
    pub fn builder<S>(keyring: Keyring, store: S) -> VerifierBuilder
    where
        S: KeyStore + KeyAdmin,
    {
        let store = Arc::new(store);
        VerifierBuilder::new(keyring, store.clone(), store)
    }

    /// The keyring (format and peppers).
    #[must_use]
    pub fn keyring(&self) -> &Keyring {
        &self.inner.keyring
    }

    /// The clock used for expiry.
    #[must_use]
    pub fn clock(&self) -> &dyn Clock {
        &*self.inner.clock
    }

    /// The named header keys are read from (`x-api-key` by default), if any.
    #[must_use]
    pub fn credential_header(&self) -> Option<&str> {
        self.inner.sources.header.as_deref()
    }

    /// Key management through this verifier: changes evict the key from the caches at once.
    #[must_use]
    pub fn admin(&self) -> Admin {
        Admin::new(self.clone())
    }

    /// Finds and checks the format of the request's credential, and resolves the client address.
    /// Synchronous and free of I/O: a malformed, wrong-prefix or bad-checksum key is refused here.
    ///
    /// # Errors
    /// A [`Rejection`] with reason `MissingCredentials`, `MultipleCredentials`,
    /// `CredentialTooLong`, `Malformed`, `WrongPrefix` or `BadChecksum`.
    pub fn extract<R: RequestView + ?Sized>(&self, request: &R) -> Result<Presented, Rejection> {
        self.presented(request).map_err(refused)
    }

    fn presented<R: RequestView + ?Sized>(&self, request: &R) -> Result<Presented, Reason> {
        self.presented_from(request, self.inner.proxies.client_ip(request))
    }

    /// The request's credential, its format checked, from a client whose address the caller
    /// resolved already (the gate resolves it once for the check and the audit).
    pub(crate) fn presented_from<R: RequestView + ?Sized>(
        &self,
        request: &R,
        client_ip: Option<IpAddr>,
    ) -> Result<Presented, Reason> {
        let inner = &*self.inner;
        let parsed = inner
            .sources
            .find(request)
            .and_then(|raw| inner.keyring.parse(raw).map_err(Reason::from))?;
        Ok(Presented {
            key: parsed.to_presented(),
            client_ip,
        })
    }

    /// Checks a presented key against the store (through the cache) and returns the caller's
    /// identity.
    ///
    /// # Concurrent calls on the same key
    /// Concurrent cache misses for one id make a single store call; every waiter gets its result.
    /// Unknown ids are remembered too, in a share of the cache bounded apart (the negative
    /// cache capacity, oldest out first), so a flood of made-up ids cannot evict real keys.
    /// A store error is never cached: the next call tries again.
    ///
    /// # Timing
    /// An unknown id costs what a wrong secret costs: both are one cache hit (after the first
    /// request), one HMAC and one constant-time compare; the answer is the same `401`.
    ///
    /// # Cancellation
    /// Dropping the future is safe. If it was the one loading the record, another waiter takes
    /// over the load.
    ///
    /// # Errors
    /// A [`Rejection`]: `UnknownKey`, `Canary` (answered as `UnknownKey` is), `WrongSecret`,
    /// `Revoked`, `Disabled`, `Expired` (401),
    /// `ForbiddenClientIp` (403), `RateLimited`, `TooManyFailures` (429), `StoreUnavailable`,
    /// `LimiterUnavailable` (503).
    pub async fn verify(&self, presented: &Presented) -> Result<Arc<Identity>, Rejection> {
        self.verify_with_rate(presented)
            .await
            .map(|verified| verified.identity)
    }

    /// [`Verifier::verify`], also returning the key's rate limit state (for `RateLimit`
    /// headers on allowed responses).
    ///
    /// # Errors
    /// As [`Verifier::verify`].
    pub(crate) async fn verify_with_rate(
        &self,
        presented: &Presented,
    ) -> Result<Verified, Rejection> {
        let result = match self.check_now(presented, None) {
            Some(decided) => decided,
            None => self.check(presented).await,
        };
        log_outcome(presented, &result);
        result
    }

    /// [`Verifier::verify_with_rate`] without awaiting, when the answer needs no I/O: the
    /// record is cached and fresh, and the limiter decides in process. `None`: nothing was
    /// done (no limit taken, no attempt counted); call `verify_with_rate`.
    ///
    /// `now`: the verifier's clock as already read for this request (its audit record's
    /// time), so the check does not read it again; `None` reads it.
    pub(crate) fn verify_now(
        &self,
        presented: &Presented,
        now: Option<SystemTime>,
    ) -> Option<Result<Verified, Rejection>> {
        let result = self.check_now(presented, now)?;
        log_outcome(presented, &result);
        Some(result)
    }

    /// [`Verifier::extract`] then [`Verifier::verify`].
    ///
    /// # Errors
    /// The rejection of either step.
    pub async fn verify_request<R: RequestView + ?Sized>(
        &self,
        request: &R,
    ) -> Result<Arc<Identity>, Rejection> {
        let presented = self.extract(request)?;
        self.verify(&presented).await
    }

    /// The whole check, awaiting the store and the limiter as needed.
    async fn check(&self, presented: &Presented) -> Result<Verified, Rejection> {
        let inner = &*self.inner;
        let id = presented.key.id();
        let client = self.failure_client(presented);
        // A client that failed too often is refused before any hashing or store access.
        if let Some((client, policy)) = client {
            let peeked = match inner.limiter.peek_now(client, policy) {
                Some(peeked) => peeked,
                None => inner.limiter.peek(client, policy).await,
            };
            admit_client(peeked, id)?;
        }
        let (entry, stale) = self
            .lookup(id)
            .await
            .map_err(|reason| Rejection::for_key(reason, id))?;
        let now = inner.clock.now();
        match self.authenticate(presented, &entry, now) {
            Err(reason) => {
                let counted = match client.filter(|_| reason.is_failed_attempt()) {
                    Some((client, policy)) => {
                        let counted = match inner.limiter.acquire_now(client, policy) {
                            Some(counted) => counted,
                            None => inner.limiter.acquire(client, policy).await,
                        };
                        let counted = failure_counted(counted, client, id);
                        if reason == Reason::Canary && inner.canary_lockout {
                            lock_out(&*inner.limiter, client, policy).await;
                        }
                        counted
                    }
                    None => None,
                };
                Err(failed(reason, id, counted))
            }
            Ok(()) => {
                let mut rate = match self.rate_policy(&entry) {
                    None => None,
                    Some(policy) => Some(
                        match self.acquire_key_now(&entry, id, policy, || nanos_since_epoch(now)) {
                            Some(decision) => decision,
                            None => inner.limiter.acquire(LimitKey::Key(id), policy).await,
                        },
                    ),
                };
                if let Some(&(owner, policy)) = entry.owner_limit.as_deref()
                    && key_allowed(rate.as_ref())
                {
                    let owner_decision = match inner.limiter.acquire_now(owner, policy) {
                        Some(decision) => decision,
                        None => inner.limiter.acquire(owner, policy).await,
                    };
                    rate = Some(tighter(rate, owner_decision));
                }
                let quota = match entry.quota_lines.as_deref() {
                    Some(lines) if key_allowed(rate.as_ref()) => {
                        let meter = &*inner.quota_meter;
                        let charged = match meter.charge_now(lines, DEFAULT_COST, now) {
                            Some(charged) => charged,
                            None => meter.charge(lines, DEFAULT_COST, now).await,
                        };
                        if charged.is_ok() {
                            entry.quota_ready.store(true, Ordering::Relaxed);
                        }
                        Some(charged)
                    }
                    _ => None,
                };
                self.accept(
                    &entry,
                    id,
                    now,
                    || nanos_since_epoch(now),
                    rate,
                    quota,
                    stale,
                )
            }
        }
    }

    /// [`Verifier::check`] when it needs no I/O, else `None` before anything was taken or
    /// counted. A cached, fresh key with an in-process limiter (the usual case) is decided
    /// here, with no future and no allocation.
    #[inline]
    fn check_now(
        &self,
        presented: &Presented,
        now: Option<SystemTime>,
    ) -> Option<Result<Verified, Rejection>> {
        let inner = &*self.inner;
        let id = presented.key.id();
        // One clock read for the whole check: the default limiter shares the verifier's
        // clock, so it decides at this instant too (its own reads were two more a request).
        // An audited request's record read it on arrival, microseconds ago: that reading
        // serves (one read fewer a request, `gate::tests::an_audited_cached_check_reads_the_clock_once`).
        let now = now.unwrap_or_else(|| inner.clock.now());
        let limiter_nanos = std::cell::OnceCell::new();
        let limiter_now = || *limiter_nanos.get_or_init(|| nanos_since_epoch(now));
        let client = self.failure_client(presented);
        if let Some((client, policy)) = client {
            let refused = match &inner.own_limiter {
                Some(own) => own
                    .refusal_at(client, policy, limiter_now())
                    .map(|decision| too_many_failures(id, decision)),
                None => admit_client(inner.limiter.peek_now(client, policy)?, id).err(),
            };
            if let Some(refused) = refused {
                return Some(Err(refused));
            }
        }
        let entry = self.lookup_now(id)?;
        let limited = self.rate_policy(&entry);
        if (limited.is_some() || entry.owner_limit.is_some()) && !inner.limiter_decides_now {
            // Decided after the store's limiter answers: not here (the HMAC would run twice).
            return None;
        }
        if entry.quota_lines.is_some()
            && !(inner.meter_decides_now && entry.quota_ready.load(Ordering::Relaxed))
        {
            // The meter must be awaited (a shared meter, or counters not loaded yet).
            return None;
        }
        let decided = match self.authenticate(presented, &entry, now) {
            Err(reason) => {
                let counted = match client.filter(|_| reason.is_failed_attempt()) {
                    Some((client, policy)) => {
                        let counted =
                            failure_counted(inner.limiter.acquire_now(client, policy)?, client, id);
                        if reason == Reason::Canary && inner.canary_lockout {
                            lock_out_now(&*inner.limiter, client, policy);
                        }
                        counted
                    }
                    None => None,
                };
                Err(failed(reason, id, counted))
            }
            Ok(()) => {
                let mut rate = match limited {
                    None => None,
                    Some(policy) => Some(self.acquire_key_now(&entry, id, policy, limiter_now)?),
                };
                // The limiter decides now (checked above): this answers.
                if let Some(&(owner, policy)) = entry.owner_limit.as_deref()
                    && key_allowed(rate.as_ref())
                {
                    rate = Some(tighter(rate, inner.limiter.acquire_now(owner, policy)?));
                }
                let quota = match entry.quota_lines.as_deref() {
                    Some(lines) if key_allowed(rate.as_ref()) => Some(
                        // Ready (checked above): an in-process meter keeps loaded counters.
                        inner
                            .quota_meter
                            .charge_now(lines, DEFAULT_COST, now)
                            .unwrap_or_else(|| Err(MeterError("quota counters not loaded".into()))),
                    ),
                    _ => None,
                };
                self.accept(&entry, id, now, limiter_now, rate, quota, false)
            }
        };
        metrics::cache_hit_of(entry.unknown);
        Some(decided)
    }

    /// Takes one request from a valid key's allowance without awaiting, through the limiter
    /// state its cache entry holds (handed out by the limiter on the entry's first limited
    /// request): one cache lookup serves the key and its limit. `None`: the limiter must be
    /// awaited.
    #[inline]
    fn acquire_key_now(
        &self,
        entry: &CachedKey,
        id: KeyId,
        policy: RatePolicy,
        limiter_now: impl FnOnce() -> u64,
    ) -> Option<Result<RateDecision, LimiterError>> {
        let limiter = &*self.inner.limiter;
        let held = entry
            .held_limit
            .get_or_init(|| limiter.hold(LimitKey::Key(id), policy));
        match held {
            // An entry's policy is fixed when it is filled; checked anyway, as it is cheap.
            Some(held) if held.target() == (LimitKey::Key(id), policy) => {
                match &self.inner.own_limiter {
                    // The default limiter made `held` (a verifier has one limiter).
                    Some(own) => Some(Ok(own.decide_held_at(held, limiter_now()))),
                    None => limiter.acquire_held(held),
                }
            }
            _ => limiter.acquire_now(LimitKey::Key(id), policy),
        }
    }

    /// The client whose failed attempts are limited, and the policy, when the failure limit
    /// is on. Clients without a known address share one allowance: hiding the address never
    /// switches the failure limit off.
    #[inline]
    fn failure_client(&self, presented: &Presented) -> Option<(LimitKey, RatePolicy)> {
        self.inner
            .failure_limit
            .map(|policy| (LimitKey::client_or_unknown(presented.client_ip), policy))
    }

    /// The key's own limit, else its environment's default (both resolved when the entry was
    /// filled), else the verifier's default; `None`: unlimited.
    #[inline]
    fn rate_policy(&self, entry: &CachedKey) -> Option<RatePolicy> {
        match entry.rate_limit.unwrap_or(self.inner.default_rate_limit) {
            RateLimit::Unlimited => None,
            RateLimit::Limited(policy) => Some(policy),
        }
    }

    /// An authenticated key's request: the limiter's decision (only a valid key's requests
    /// count against its limit), then last-used tracking.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn accept(
        &self,
        entry: &CachedKey,
        id: KeyId,
        now: std::time::SystemTime,
        // `now` in nanoseconds since the Unix epoch (computed at most once a request).
        now_nanos: impl FnOnce() -> u64,
        rate: Option<Result<RateDecision, LimiterError>>,
        quota: Option<Result<QuotaDecision, MeterError>>,
        stale: bool,
    ) -> Result<Verified, Rejection> {
        let rate = match rate {
            None => None,
            Some(decided) => {
                let decision = decided.map_err(|error| limiter_unavailable(&error, id))?;
                if !decision.allowed {
                    return Err(Rejection::rate_limited(Reason::RateLimited, id, decision));
                }
                Some(decision)
            }
        };
        let quota = match (quota, entry.quota_lines.as_ref()) {
            (Some(decided), Some(lines)) => Some(self.charged(entry, id, lines, decided, rate)?),
            _ => None,
        };
        self.inner.last_used.seen(entry, id, now, now_nanos);
        if stale {
            metrics::stale_served();
            tracing::debug!(target: "keygate", key_id = %id, "key store unavailable: served a cached record past its TTL");
        }
        Ok(Verified {
            identity: Arc::clone(&entry.identity),
            rate,
            stale,
            quota,
        })
    }

    /// The meter's answer to the request's default charge: allowed (the identity notes the
    /// balance), or the 429 `quota_exhausted` / 503 refusal.
    #[inline]
    fn charged(
        &self,
        entry: &CachedKey,
        id: KeyId,
        lines: &Arc<[QuotaLine]>,
        decided: Result<QuotaDecision, MeterError>,
        rate: Option<RateDecision>,
    ) -> Result<Charged, Rejection> {
        let decision = decided.map_err(|error| quota_unavailable(&error, id))?;
        if !decision.allowed {
            return Err(match QuotaReport::of(lines, decision) {
                Some(report) => Rejection::quota_exhausted(Some(id), report, rate),
                None => Rejection::for_key(Reason::QuotaUnavailable, id),
            });
        }
        entry.identity.set_quota_remaining(decision.remaining);
        Ok(Charged {
            lines: Arc::clone(lines),
            decision,
        })
    }

    /// The quota meter.
    pub(crate) fn quota_meter(&self) -> &Arc<dyn QuotaMeter> {
        &self.inner.quota_meter
    }

    /// The clock, shared (for quota receipts, which refund at the time they are settled).
    pub(crate) fn shared_clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Whether the secret matches the cached entry and the key is usable now from the client's
    /// address.
    #[inline]
    fn authenticate(
        &self,
        presented: &Presented,
        entry: &CachedKey,
        now: std::time::SystemTime,
    ) -> Result<(), Reason> {
        let inner = &*self.inner;
        // The secret is checked before the state, so a caller without the secret learns nothing
        // about the key (not even through timing of the state checks). An unknown id's entry
        // goes through the same compare (its digest matches nothing), so it costs the same.
        //
        // A credential that passed this entry's HMAC check before is recognised by its keyed
        // tag (see `memo`); every request computes and compares the tag, so the work up to the
        // HMAC is the same whatever the outcome.
        let credential = presented.key.digest_input();
        let tag = inner.memo.tag(credential);
        let remembered = entry.verified.get().copied();
        // Both operands evaluated (`&`, not `&&`): the same work with or without a tag.
        let recognised = remembered.is_some() & memo::same(tag, remembered.unwrap_or(memo::NO_TAG));
        let matched = recognised || {
            let matched =
                inner
                    .keyring
                    .matches(&presented.key, entry.pepper_version, &entry.digest);
            if matched && !entry.unknown {
                let _ = entry.verified.set(tag);
            }
            matched
        };
        if entry.unknown {
            return Err(Reason::UnknownKey);
        }
        // The prefix is not hashed, so a key re-presented under another environment's prefix
        // (checksum recomputed: it is public) matches the digest: it is still not this key,
        // whose prefix the record keeps. Refused exactly as a wrong secret.
        if !matched || presented.key.environment() != entry.environment {
            return Err(Reason::WrongSecret);
        }
        // A canary's holder got it from where it was planted: refused whatever its state, as
        // an unknown key (the same response; the same work up to here: a hit, an HMAC, a
        // compare), but named for audit and metrics.
        if entry.canary {
            self.canary_tripped(presented, entry, now);
            return Err(Reason::Canary);
        }
        // A key under an older pepper moves to the current one, write-behind.
        inner
            .last_used
            .rehash_if_old(entry, &presented.key, &inner.keyring);
        match entry.refusal(now, presented.client_ip) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    /// The key's cached record, and whether it is served stale (past its TTL, the store being
    /// unreachable).
    async fn lookup(&self, id: KeyId) -> Result<(Arc<CachedKey>, bool), Reason> {
        let inner = &*self.inner;
        let mut attempt = 1;
        loop {
            let entry = match inner.cache.get(&id) {
                Some(entry) => {
                    metrics::cache_hit_of(entry.unknown);
                    entry
                }
                None => self.miss(id).await?,
            };
            if entry.generation != inner.generations.current(&id) && attempt < LOOKUP_ATTEMPTS {
                // Loaded before an invalidation of this id: reload.
                inner.cache.invalidate(&id);
                attempt += 1;
                continue;
            }
            return match self.max_age() {
                Some(max_age) if entry.age() > max_age => Box::pin(self.refresh(id, entry)).await,
                _ => Ok((entry, false)),
            };
        }
    }

    /// The key's cached record when it can be used as it is: cached, loaded after the last
    /// invalidation of its id, and fresh. `None`: [`Verifier::lookup`] has work to do.
    #[inline]
    fn lookup_now(&self, id: KeyId) -> Option<Arc<CachedKey>> {
        let inner = &*self.inner;
        let entry = inner.cache.get(&id)?;
        if entry.generation != inner.generations.current(&id) {
            return None;
        }
        // Without stale-if-error and with a live (or no) invalidation channel, the cache's
        // lifetime alone judges freshness: two loads and a branch on the hot path.
        match self.max_age() {
            Some(max_age) if entry.age() > max_age => None,
            _ => Some(entry),
        }
    }

    /// How old a cached record may be before it is read again, when the cache's lifetime is
    /// not the judge: the degraded TTL while invalidations are not received, the fresh TTL when stale
    /// entries are kept for stale-if-error.
    #[inline]
    fn max_age(&self) -> Option<Duration> {
        let inner = &*self.inner;
        match &inner.subscriber {
            Some(subscriber) if subscriber.degraded() => {
                subscriber.ensure_running(Arc::downgrade(&self.inner));
                Some(inner.degraded_ttl)
            }
            _ if !inner.stale_grace.is_zero() => Some(inner.cache_ttl),
            _ => None,
        }
    }

    /// A canary was presented: its notice, when notices are on. Out of line and cold, so the
    /// check of a real key carries none of it.
    #[cold]
    #[inline(never)]
    fn canary_tripped(&self, presented: &Presented, entry: &CachedKey, now: std::time::SystemTime) {
        if let Some(notices) = &self.inner.canary_notices {
            notices.tripped(&entry.identity, presented.client_ip, now);
        }
    }

    /// Reads a record past its freshness again. With stale-if-error, one request at a time
    /// reads the store (the others keep using the entry meanwhile), and if the store is
    /// unreachable the entry is served stale until its grace runs out; without, the entry is
    /// dropped and reloaded as on a miss.
    #[cold]
    async fn refresh(
        &self,
        id: KeyId,
        old: Arc<CachedKey>,
    ) -> Result<(Arc<CachedKey>, bool), Reason> {
        let inner = &*self.inner;
        let grace_left = !inner.stale_grace.is_zero()
            && old.age() < inner.cache_ttl.saturating_add(inner.stale_grace)
            && old.generation == inner.generations.current(&id);
        if !grace_left {
            inner.cache.invalidate(&id);
            return Ok((self.miss(id).await?, false));
        }
        if !old.claim_retry(STALE_RETRY) {
            // Another request is reading the store, or did so recently and failed.
            return Ok((Arc::clone(&old), old.store_failed()));
        }
        metrics::cache_miss(CacheKind::Keys);
        match self.load(id).await {
            Ok(fresh) => {
                inner.cache.insert(id, Arc::clone(&fresh));
                Ok((fresh, false))
            }
            Err(LoadError(error)) => {
                tracing::warn!(target: "keygate", key_id = %id, %error, "key store lookup failed; serving the cached record (stale-if-error)");
                old.set_store_failed();
                Ok((old, true))
            }
        }
    }

    /// The cache missed: a (coalesced) load from the store.
    async fn miss(&self, id: KeyId) -> Result<Arc<CachedKey>, Reason> {
        let inner = &*self.inner;
        metrics::cache_miss(CacheKind::Keys);
        metrics::cache_miss(CacheKind::UnknownIds);
        // Boxed: the coalescing load's future is large, and an unboxed await here would make
        // every verification future that large, hits included.
        let loaded = Box::pin(inner.cache.get_or_load(id, self.load(id))).await;
        self.report_cache_entries();
        loaded.map_err(|error| {
            // `None`: the load this request waited for failed (and was logged).
            if let Some(LoadError(error)) = error {
                tracing::warn!(target: "keygate", key_id = %id, %error, "key store lookup failed");
            }
            Reason::StoreUnavailable
        })
    }

    /// Sets the cache size gauges: two O(1) reads, done on misses and invalidations only.
    fn report_cache_entries(&self) {
        let (keys, unknown_ids) = self.entry_counts();
        metrics::cache_entries(keys, unknown_ids);
    }

    /// Records and unknown ids in the cache.
    fn entry_counts(&self) -> (u64, u64) {
        self.inner.cache.entry_counts()
    }

    async fn load(&self, id: KeyId) -> Result<Arc<CachedKey>, LoadError> {
        let inner = &*self.inner;
        let generation = inner.generations.current(&id);
        tracing::trace!(target: "keygate", key_id = %id, "cache miss: loading from the key store");
        // Never read keys with peppers the store did not make them with.
        inner.pepper_gate.ensure(inner).await.map_err(LoadError)?;
        let started = std::time::Instant::now();
        // The owner's shared limit comes with the record (one read on the SQL stores).
        let found = inner.store.find_with_owner_limit(&id).await;
        metrics::store_find(started.elapsed(), found.is_err());
        let found = found.map_err(LoadError)?;
        let position = found
            .as_ref()
            .and_then(|(record, _)| inner.keyring.position_of(&record.prefix));
        match (found, position) {
            (Some((record, owner)), Some(position)) => {
                let environment = KeyEnvironment {
                    position,
                    name: inner
                        .keyring
                        .environment_at(position)
                        .map(crate::keyring::Environment::shared_name),
                    default_limit: inner
                        .environment_limits
                        .get(usize::from(position))
                        .copied()
                        .flatten(),
                };
                let route_limits = crate::route_limit::RouteLimits::resolve(
                    &inner.limiter,
                    &record.limits,
                    record
                        .owner
                        .as_deref()
                        .map(|o| (crate::owner::OwnerTag::of(o), &owner.limits)),
                    &inner.default_named_limits,
                );
                Ok(Arc::new(CachedKey::new(
                    &record,
                    generation,
                    environment,
                    &owner,
                    route_limits,
                )))
            }
            // Another deployment's key in a shared store is as good as unknown here. (If the
            // id was invalidated while the store was read, the entry's generation is behind
            // and the lookup reads the store again.)
            _ => {
                // One unknown id too many: the oldest goes.
                inner.cache.remember_unknown(id);
                Ok(Arc::new(CachedKey::unknown(
                    id,
                    inner.keyring.peppers().current().version(),
                    generation,
                )))
            }
        }
    }

    /// Evicts `id` from the caches, so the next request reads the store. Also stops any load
    /// already in flight from serving its (possibly stale) result.
    pub async fn invalidate(&self, id: KeyId) {
        let inner = &*self.inner;
        inner.generations.bump(&id);
        inner.cache.invalidate(&id);
        self.report_cache_entries();
    }

    /// Evicts every cached key whose requests spend from the quota counted under `subject`,
    /// as [`Verifier::invalidate`] does: after a top-up of a rotation lineage, whose keys
    /// all carry its total.
    pub(crate) async fn invalidate_spending_from(&self, subject: &crate::quota::QuotaSubject) {
        for id in self.inner.cache.ids_spending_from(subject) {
            self.invalidate(id).await;
        }
    }

    /// Whether the verifier's [invalidation](crate::invalidation) subscription is live:
    /// `None` without an invalidation channel, `Some(false)` while degraded (not yet
    /// subscribed, or the subscription broke and cached records are re-read after the
    /// degraded TTL). For readiness checks.
    #[must_use]
    pub fn invalidation_subscribed(&self) -> Option<bool> {
        self.inner.subscriber.as_ref().map(|s| !s.degraded())
    }

    /// How long a key changed elsewhere (revoked, disabled or re-scoped by the CLI, another
    /// instance or another process on the store) may still be accepted from this verifier's
    /// cache, in its current state, while the store answers. Changes made through this
    /// verifier's own [`admin`](Self::admin) apply to the very next request.
    ///
    /// | state | bound |
    /// | --- | --- |
    /// | no [invalidation channel](VerifierBuilder::invalidation) | the cache TTL (30 s by default) |
    /// | subscribed | the channel's [liveness bound](crate::Invalidation::liveness_bound) or the degraded TTL, whichever is longer, at most the cache TTL (the cache TTL when the channel states no bound) |
    /// | degraded (not yet subscribed, or the subscription broke) | the degraded TTL (1 s by default) |
    ///
    /// So with `SqliteStore::invalidation()` and the defaults it is 1 s (a change is usually
    /// seen within one 100 ms poll; the bound covers a feed that stops answering). The gauge
    /// [`keygate_revocation_bound_seconds`](metrics::REVOCATION_BOUND) follows it, for health
    /// checks and alerts.
    #[must_use]
    pub fn revocation_bound(&self) -> Duration {
        let inner = &*self.inner;
        inner
            .subscriber
            .as_ref()
            .map_or(inner.cache_ttl, Subscriber::bound)
    }

    /// Evicts every key from the caches.
    pub fn invalidate_all(&self) {
        let inner = &*self.inner;
        inner.generations.bump_all();
        inner.cache.invalidate_all();
        self.report_cache_entries();
    }

    /// Writes the last-used times reported so far to the store now, instead of at the next
    /// flush interval. Call it on shutdown so the last interval's uses are not lost. Returns
    /// the number of keys written.
    ///
    /// # Errors
    /// The store's error; the batch is kept and retried at the next flush.
    pub async fn flush_last_used(&self) -> Result<usize, StoreError> {
        self.inner.last_used.flush().await
    }

    /// Saves the quota counters the verifier's meter keeps only in memory now (the default
    /// in-process meter writes them behind to the store every second), instead of at the next
    /// flush. Call it on shutdown so the last second's charges are not lost.
    ///
    /// # Errors
    /// The meter's error; the counters stay pending.
    pub async fn flush_quota(&self) -> Result<(), crate::quota::MeterError> {
        self.inner.quota_meter.flush().await
    }

    /// Whether any audit sink wants events now. Adapters check it before building a request's
    /// event, so a disabled trail costs nothing.
    #[must_use]
    pub fn audit_enabled(&self) -> bool {
        self.inner.auditor.enabled()
    }

    /// Records an audit event: queued without waiting, written by a background task (see
    /// [`crate::audit`]). The adapters record one per decided request and [`Admin`] one per
    /// change; applications may add their own.
    pub fn audit(&self, event: AuditEvent) {
        self.inner.auditor.record(event);
    }

    /// [`Verifier::audit`] for a request's event, queued in its compact form.
    pub(crate) fn audit_request(&self, event: crate::audit::RequestEvent) {
        self.inner.auditor.record_request(event);
    }

    /// Waits until every audit event recorded so far has been handed to the sinks, and returns
    /// the pipeline's counters then (a sink that refused the batch shows in
    /// [`AuditStats::failed_writes`]; its events are kept for the next write). Call it on
    /// shutdown so the last batch is not lost.
    pub async fn flush_audit(&self) -> AuditStats {
        self.inner.auditor.flush().await;
        self.inner.auditor.stats()
    }

    /// Counters of the audit pipeline: recorded, dropped (buffer full), written, lost.
    #[must_use]
    pub fn audit_stats(&self) -> AuditStats {
        self.inner.auditor.stats()
    }

    /// The client address of `request` under this verifier's trusted-proxy rule (the address
    /// rate limits and audit events use).
    pub fn client_ip<R: RequestView + ?Sized>(&self, request: &R) -> Option<IpAddr> {
        self.inner.proxies.client_ip(request)
    }

    /// Counters of last-used tracking: reports dropped because the buffer was full, times
    /// written, failed flushes.
    #[must_use]
    pub fn last_used_stats(&self) -> LastUsedStats {
        self.inner.last_used.stats()
    }

    /// Entry counts of records and of unknown ids in the cache (the "positive" and "negative"
    /// caches). Also sets the [`metrics::CACHE_ENTRIES`] gauges to these values (otherwise
    /// updated on cache misses and invalidations only).
    pub async fn cache_entry_counts(&self) -> (u64, u64) {
        self.report_cache_entries();
        self.entry_counts()
    }
}

/// Counts and logs a decided verification.
fn log_outcome(presented: &Presented, result: &Result<Verified, Rejection>) {
    let id = presented.key.id();
    match result {
        Err(rejection) if rejection.reason() == Reason::Canary => {
            metrics::denied(Reason::Canary);
            // Someone holds a decoy key: worth a warning wherever logs go (the audit event,
            // written apart, carries the route too).
            tracing::warn!(
                target: "keygate",
                key_id = %id,
                client_ip = ?presented.client_ip,
                outcome = "denied",
                reason = Reason::Canary.as_str(),
                "canary key used"
            );
        }
        Ok(_) => {
            metrics::allowed();
            tracing::debug!(target: "keygate", key_id = %id, outcome = "allowed");
        }
        Err(rejection) => {
            metrics::denied(rejection.reason());
            tracing::debug!(
                target: "keygate",
                key_id = %id,
                outcome = "denied",
                reason = rejection.reason().as_str()
            );
        }
    }
}

/// Spends what is left of `client`'s failure allowance (a canary was used, with
/// [`VerifierBuilder::canary_lockout`]): its next requests get the 429 of too many failed
/// attempts. At most the policy's burst of takes; stops at the first refusal or error.
fn lock_out_now(limiter: &dyn RateLimiter, client: LimitKey, policy: RatePolicy) {
    for _ in 0..policy.burst() {
        match limiter.acquire_now(client, policy) {
            Some(Ok(decision)) if decision.allowed => {}
            _ => return,
        }
    }
}

/// [`lock_out_now`] with a limiter that may need I/O.
async fn lock_out(limiter: &dyn RateLimiter, client: LimitKey, policy: RatePolicy) {
    for _ in 0..policy.burst() {
        let decided = match limiter.acquire_now(client, policy) {
            Some(decided) => decided,
            None => limiter.acquire(client, policy).await,
        };
        match decided {
            Ok(decision) if decision.allowed => {}
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(target: "keygate", %error, "could not lock out a canary's client");
                return;
            }
        }
    }
}

/// The failure limit's answer for the client, before any key check: refused (429) when it
/// failed too often.
fn admit_client(peeked: Result<RateDecision, LimiterError>, id: KeyId) -> Result<(), Rejection> {
    let decision = peeked.map_err(|error| limiter_unavailable(&error, id))?;
    if decision.allowed {
        Ok(())
    } else {
        Err(too_many_failures(id, decision))
    }
}

/// The 429 refusal of a client locked out by its failed attempts.
fn too_many_failures(id: KeyId, decision: RateDecision) -> Rejection {
    Rejection::rate_limited(Reason::TooManyFailures, id, decision)
}

/// Whether the key's own limit (if any) let the request through, so the owner's shared limit
/// is asked next. A request its key's limit refuses never takes from the owner's allowance,
/// which the owner's other keys share.
#[inline]
fn key_allowed(rate: Option<&Result<RateDecision, LimiterError>>) -> bool {
    match rate {
        None => true,
        Some(Ok(decision)) => decision.allowed,
        Some(Err(_)) => false,
    }
}

/// Owner limits and key limits both apply; the tighter wins: the owner's refusal (or failure)
/// if it refused, else the decision with fewer requests left (for the `RateLimit` fields).
fn tighter(
    key: Option<Result<RateDecision, LimiterError>>,
    owner: Result<RateDecision, LimiterError>,
) -> Result<RateDecision, LimiterError> {
    match (key, owner) {
        (_, Err(error)) => Err(error),
        (_, Ok(owner)) if !owner.allowed => Ok(owner),
        (Some(Ok(key)), Ok(owner)) if key.remaining <= owner.remaining => Ok(key),
        (_, Ok(owner)) => Ok(owner),
    }
}

/// One failed attempt, counted: the limiter's decision, or `None` when it could not count.
fn failure_counted(
    counted: Result<RateDecision, LimiterError>,
    client: LimitKey,
    id: KeyId,
) -> Option<RateDecision> {
    if client == LimitKey::UnknownClient {
        metrics::unknown_client_failure();
    }
    counted
        .inspect_err(|error| {
            // The request is refused anyway; the attempt goes uncounted.
            tracing::warn!(target: "keygate", key_id = %id, %error, "could not count a failed attempt");
        })
        .ok()
}

/// The refusal of a failed key check. The failure limit's pre-check and its count are apart
/// (a store lookup may sit between them), so concurrent attempts can all pass the pre-check;
/// the count is the atomic step: an attempt past the allowance is a 429 too, so at most the
/// burst of failures get an answer on the key.
fn failed(reason: Reason, id: KeyId, counted: Option<RateDecision>) -> Rejection {
    match counted {
        Some(decision) if !decision.allowed => {
            Rejection::rate_limited(Reason::TooManyFailures, id, decision)
        }
        _ => Rejection::for_key(reason, id),
    }
}

/// A refusal by [`Verifier::extract`]: logged and counted.
pub(crate) fn refused(reason: Reason) -> Rejection {
    metrics::denied(reason);
    tracing::debug!(target: "keygate", outcome = "denied", reason = reason.as_str());
    Rejection::new(reason)
}

fn quota_unavailable(error: &MeterError, id: KeyId) -> Rejection {
    tracing::warn!(target: "keygate", key_id = %id, %error, "quota meter failed");
    Rejection::for_key(Reason::QuotaUnavailable, id)
}

fn limiter_unavailable(error: &LimiterError, id: KeyId) -> Rejection {
    tracing::warn!(target: "keygate", key_id = %id, %error, "rate limiter failed");
    Rejection::for_key(Reason::LimiterUnavailable, id)
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keyring", &self.inner.keyring)
            .field("sources", &self.inner.sources)
            .field("proxies", &self.inner.proxies)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod memo_tests {
    use super::*;
    use crate::{HttpRequestView, MemoryStore, NewKey};

    /// The memo is used: a credential that passed the HMAC compare is remembered in its entry
    /// (and only then), and recognised by its tag afterwards.
    #[tokio::test]
    async fn a_verified_credential_is_remembered_in_its_entry()
    -> Result<(), Box<dyn std::error::Error>> {
        let verifier =
            Verifier::builder(Keyring::development("acme_test")?, MemoryStore::new()).build();
        let created = verifier.admin().create_key(NewKey::new("memo")).await?;
        let id = created.record.id;
        let mut headers = http::HeaderMap::new();
        headers.insert("x-api-key", created.key.expose_secret().parse()?);
        let uri = http::Uri::from_static("/");
        let view = HttpRequestView::new(&headers, &uri, None);
        let presented = verifier.extract(&view)?;
        verifier.verify(&presented).await?;
        let entry = verifier.inner.cache.get(&id).ok_or("cached")?;
        let tag = verifier.inner.memo.tag(presented.key.digest_input());
        assert_eq!(entry.verified.get(), Some(&tag));
        // Recognised from now on: the same answer, from the tag.
        assert!(
            verifier
                .authenticate(&presented, &entry, verifier.clock().now())
                .is_ok()
        );
        // Any other secret of the same id still fails, the tag remembered or not.
        let key = created.key.expose_secret();
        let body = &key[..key.len() - 6];
        let last = body.as_bytes()[body.len() - 1];
        for replacement in [b'0', b'z'] {
            if replacement == last {
                continue;
            }
            let wrong = format!("{}{}", &body[..body.len() - 1], char::from(replacement));
            let mut crc = crc32fast::hash(wrong.as_bytes());
            let mut tail = [b'0'; 6];
            for slot in tail.iter_mut().rev() {
                *slot = crate::base62::ALPHABET[(crc % 62) as usize];
                crc /= 62;
            }
            let wrong = format!("{wrong}{}", String::from_utf8_lossy(&tail));
            let mut headers = http::HeaderMap::new();
            headers.insert("x-api-key", wrong.parse()?);
            let presented = verifier.extract(&HttpRequestView::new(&headers, &uri, None))?;
            let now = verifier.clock().now();
            assert_eq!(
                verifier.authenticate(&presented, &entry, now),
                Err(Reason::WrongSecret)
            );
            assert_eq!(entry.verified.get(), Some(&tag), "never replaced");
        }
        Ok(())
    }

    /// `Verifier::flush_quota` saves the default meter's counters to the store's ledger at
    /// once (without it they wait for the next write-behind, a second later).
    #[tokio::test]
    async fn flush_quota_saves_the_counters_now() -> Result<(), Box<dyn std::error::Error>> {
        use crate::quota::QuotaLedger as _;
        let store = MemoryStore::new();
        let built = std::time::Instant::now();
        let verifier = Verifier::builder(Keyring::development("acme_test")?, store.clone()).build();
        let created = verifier
            .admin()
            .create_key(NewKey::new("metered").quota("5/day".parse()?))
            .await?;
        let mut headers = http::HeaderMap::new();
        headers.insert("x-api-key", created.key.expose_secret().parse()?);
        let uri = http::Uri::from_static("/");
        let view = HttpRequestView::new(&headers, &uri, None);
        verifier.verify_request(&view).await?;
        let subject = created.record.quota_subject();
        // The write-behind task saves a second after it started: not yet, on any sane machine.
        if built.elapsed() < Duration::from_millis(900) {
            assert!(store.load_counters(&[subject]).await?.is_empty(), "not yet");
        }
        verifier.flush_quota().await?;
        let saved = store.load_counters(&[subject]).await?;
        assert_eq!(saved.first().map(|(_, state)| state.value), Some(1));
        Ok(())
    }
    /// `Admin::quota_balance` reads the lines requests spend from: through the verifier, its
    /// meter (exact before any save); standalone, the store's saved counters, read afresh at
    /// each save (never the first read kept). An owner's line beside the key's; top-ups and
    /// resets as charges see them.
    #[tokio::test]
    async fn quota_balances_read_what_requests_spent() -> Result<(), Box<dyn std::error::Error>> {
        use crate::clock::ManualClock;
        use crate::owner::{NewOwner, OwnerTag};
        use crate::quota::QuotaSubject;
        // Noon UTC: the day's window resets in 12 hours.
        let noon = SystemTime::UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + 43_200);
        let clock = ManualClock::new(noon);
        let store = MemoryStore::new();
        let verifier = Verifier::builder(Keyring::development("acme_test")?, store.clone())
            .clock(clock.clone())
            .build();
        let admin = verifier.admin();
        admin
            .create_owner(NewOwner::new("acme").quota("10/day".parse()?))
            .await?;
        let created = admin
            .create_key(
                NewKey::new("metered")
                    .owner("acme")
                    .quota("credits 5".parse()?),
            )
            .await?;
        let plain = admin.create_key(NewKey::new("plain")).await?;
        let standalone = Admin::builder(store.clone()).clock(clock.clone()).build();
        let id = created.record.id;

        let balance = admin.quota_balance(&id).await?;
        let (key_line, key_usage) = balance.key.ok_or("the key's line")?;
        let (owner_line, owner_usage) = balance.owner.ok_or("the owner's line")?;
        assert_eq!(key_line.subject, created.record.quota_subject());
        assert_eq!(
            owner_line.subject,
            QuotaSubject::Owner(OwnerTag::of("acme"))
        );
        assert_eq!((key_usage.remaining, key_usage.reset), (5, None));
        assert_eq!(
            (owner_usage.remaining, owner_usage.reset),
            (10, Some(Duration::from_secs(43_200)))
        );

        let mut headers = http::HeaderMap::new();
        headers.insert("x-api-key", created.key.expose_secret().parse()?);
        let uri = http::Uri::from_static("/");
        let view = HttpRequestView::new(&headers, &uri, None);
        verifier.verify_request(&view).await?;
        verifier.verify_request(&view).await?;
        let remaining = |balance: crate::quota::QuotaBalance| {
            (
                balance.key.map(|(_, usage)| usage.remaining),
                balance.owner.map(|(_, usage)| usage.remaining),
            )
        };
        // The verifier's own meter: at once. The store: not saved yet.
        assert_eq!(
            remaining(admin.quota_balance(&id).await?),
            (Some(3), Some(8))
        );
        assert_eq!(
            remaining(standalone.quota_balance(&id).await?),
            (Some(5), Some(10))
        );
        verifier.flush_quota().await?;
        assert_eq!(
            remaining(standalone.quota_balance(&id).await?),
            (Some(3), Some(8))
        );
        verifier.verify_request(&view).await?;
        verifier.flush_quota().await?;
        assert_eq!(
            remaining(standalone.quota_balance(&id).await?),
            (Some(2), Some(7)),
            "read afresh, not the first read kept"
        );

        // A top-up counts at once, before any request spends from it; the owner's period
        // starts afresh at midnight.
        admin.add_credits(&id, 4).await?;
        let balance = standalone.quota_balance(&id).await?;
        let (line, usage) = balance.key.ok_or("the key's line")?;
        assert_eq!((line.granted, usage.remaining), (4, 6));
        clock.advance(Duration::from_secs(43_200));
        assert_eq!(
            remaining(admin.quota_balance(&id).await?),
            (Some(6), Some(10))
        );

        // A key with neither line; an unknown key.
        let none = admin.quota_balance(&plain.record.id).await?;
        assert_eq!((none.key, none.owner), (None, None));
        assert!(matches!(
            admin.quota_balance(&KeyId::random()).await,
            Err(StoreError::NotFound(_))
        ));
        Ok(())
    }
}

#[cfg(test)]
mod layout_tests {
    use super::Inner;
    use super::cache::KeyCache;

    /// The fields a cached key's check reads come first and fit seven cache lines with the
    /// `Arc`'s counts (the default order spread them over all thirteen); the rest, read off
    /// the cached path, after them.
    #[test]
    fn a_cached_check_reads_the_first_lines_of_the_verifier() {
        use std::mem::{align_of, offset_of, size_of};
        fn end<T>(offset: usize, _field: fn(&Inner) -> &T) -> usize {
            offset + size_of::<T>()
        }
        // `ArcInner`: strong and weak counts, then the value at its alignment.
        let start = (2 * size_of::<usize>()).next_multiple_of(align_of::<Inner>());
        let hot = [
            end(offset_of!(Inner, sources), |i| &i.sources),
            end(offset_of!(Inner, proxies), |i| &i.proxies),
            end(offset_of!(Inner, keyring), |i| &i.keyring),
            end(offset_of!(Inner, clock), |i| &i.clock),
            end(offset_of!(Inner, memo), |i| &i.memo),
            end(offset_of!(Inner, generations), |i| &i.generations),
            end(offset_of!(Inner, own_limiter), |i| &i.own_limiter),
            end(offset_of!(Inner, failure_limit), |i| &i.failure_limit),
            end(offset_of!(Inner, default_rate_limit), |i| {
                &i.default_rate_limit
            }),
            end(offset_of!(Inner, limiter_decides_now), |i| {
                &i.limiter_decides_now
            }),
            end(offset_of!(Inner, meter_decides_now), |i| {
                &i.meter_decides_now
            }),
            end(offset_of!(Inner, last_used), |i| &i.last_used),
            end(offset_of!(Inner, auditor), |i| &i.auditor),
            end(offset_of!(Inner, stale_grace), |i| &i.stale_grace),
            end(offset_of!(Inner, cache_ttl), |i| &i.cache_ttl),
            end(offset_of!(Inner, limiter), |i| &i.limiter),
            offset_of!(Inner, cache) + KeyCache::HOT_LEN,
        ];
        let hot_end = start + hot.into_iter().max().unwrap_or_default();
        assert!(hot_end <= 7 * 64, "hot fields end at byte {hot_end}");
        for cold in [
            offset_of!(Inner, store),
            offset_of!(Inner, quota_meter),
            offset_of!(Inner, pepper_gate),
            offset_of!(Inner, canary_notices),
        ] {
            assert!(cold > offset_of!(Inner, subscriber));
        }
    }
}
