//! The in-process [`RateLimiter`]: a GCRA per (key, policy) in a bounded cache, one atomic
//! word of state each.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use quick_cache::UnitWeighter;
use quick_cache::sync::Cache;

use super::{LimitKey, LimiterError, RateDecision, RateLimiter, RatePolicy};
use crate::clock::{Clock, SystemClock};

/// Rate limits for one process: each (key, policy) pair gets its own GCRA state (one atomic
/// word: the theoretical arrival time), held in a bounded cache.
///
/// - **Bounded**: at most `key_capacity` keys' and `client_capacity` clients' limiters are
///   kept (least recently used go first), so a flood of distinct ids or addresses cannot
///   grow memory. Clients have their own cache: addresses cannot evict keys' limiters.
/// - **Lockouts survive floods**: who is exhausted, and until when, is kept apart from the
///   limiters (at most the same capacities, each entry gone when its lockout ends), so a
///   flood of failed attempts from many other addresses, which evicts idle limiters, never
///   lifts an active lockout.
/// - **Idle keys go first**: when a cache is full, limiters not used lately are evicted first
///   (CLOCK-Pro); an evicted limiter starts again full, which is what an idle one would be.
/// - **Policy changes apply at once**: the cache is keyed by (key, policy), so a new policy
///   starts a fresh limiter.
/// - **No I/O**: decisions are made without awaiting or allocating (after a key's first
///   request), through [`RateLimiter::acquire_now`].
///
/// Limits are per process: with several instances behind a load balancer, each enforces the
/// whole policy. For one limit across instances, give the verifier a shared [`RateLimiter`] (backed by a
/// store all instances reach) instead.
#[derive(Clone)]
pub struct InProcessLimiter {
    inner: Arc<Inner>,
}

// quick_cache: a hit is a shard read lock and a probe (moka's sync cache also logged every
// read for its admission policy and timer wheel). foldhash: several times faster than std's
// SipHash on these small keys, and seeded per cache (client addresses are chosen by clients).
type Map<V> = Cache<(LimitKey, RatePolicy), V, UnitWeighter, foldhash::fast::RandomState>;
type Buckets = Map<Arc<Gcra>>;
/// Exhausted (key, policy) pairs, each until its lockout ends (an ended lock is taken out
/// when next looked at, or evicted first when the cache is full).
type Locks = Map<Lock>;

struct Inner {
    keys: Buckets,
    clients: Buckets,
    key_locks: Locks,
    client_locks: Locks,
    /// Per cache, the latest time any of its buckets is exhausted until (nanoseconds since the
    /// epoch; 0: none ever was). A peek at a time past it answers without a cache lookup: the
    /// verifier peeks at the client's failures on every request, and almost never finds any.
    keys_exhausted_until: AtomicU64,
    clients_exhausted_until: AtomicU64,
    clock: ClockAdapter,
}

/// One (key, policy)'s GCRA (generic cell rate algorithm) state: the theoretical arrival time
/// (TAT) of the next request, in nanoseconds since the Unix epoch on the limiter's clock (0:
/// never used). A request at `now` is allowed unless `now < TAT − τ`; taking one sets
/// `TAT = max(TAT, now) + T`, with T the policy's emission interval and τ = T × (burst − 1)
/// the delay tolerance — the rule governor and the Redis limiter use. One compare-and-swap
/// per request, one clock read.
///
/// It names the (key, policy) it is for, so a [`HeldLimit`] is one pointer: a verifier's cache
/// entry holds it in 8 bytes, and a request reads the target from the line it updates anyway.
struct Gcra {
    tat: AtomicU64,
    /// T, in nanoseconds (at least 1).
    interval: u64,
    /// τ, in nanoseconds, capped at `u32::MAX` seconds (see [`tolerance`]).
    tau: u64,
    policy: RatePolicy,
    key: LimitKey,
}

/// What one GCRA step decided, in nanoseconds.
enum Step {
    /// Allowed: the state is now `tat` (the request was taken).
    Allowed { tat: u64 },
    /// Refused: the next request is allowed at `at`; nothing was taken.
    Refused { at: u64 },
}

impl Gcra {
    fn new(key: LimitKey, policy: RatePolicy) -> Self {
        let interval = u64::try_from(policy.emission_interval().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            tat: AtomicU64::new(0),
            interval,
            tau: tolerance(policy, interval),
            policy,
            key,
        }
    }

    /// Takes one request at `now`, if allowed.
    #[inline]
    fn step(&self, now: u64) -> Step {
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let base = tat.max(now);
            if base - now > self.tau {
                return Step::Refused {
                    at: base - self.tau,
                };
            }
            let next = base.saturating_add(self.interval);
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Step::Allowed { tat: next },
                Err(current) => tat = current,
            }
        }
    }
}

/// One (key, policy)'s GCRA state, held by the verifier in the key's cache entry
/// ([`RateLimiter::hold`]) so that a limited key's request needs no lookup in the limiter's
/// own cache. Only an [`InProcessLimiter`] makes one.
#[derive(Clone)]
pub struct HeldLimit(Arc<Gcra>);

impl HeldLimit {
    /// The (key, policy) this state is for.
    #[must_use]
    #[inline]
    pub fn target(&self) -> (LimitKey, RatePolicy) {
        (self.0.key, self.0.policy)
    }
}

impl std::fmt::Debug for HeldLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldLimit")
            .field("key", &self.0.key)
            .field("policy", &self.0.policy)
            .finish_non_exhaustive()
    }
}

/// An exhausted (key, policy): when it will next allow a request (so that
/// [`RateLimiter::peek`] can answer without taking anything).
#[derive(Debug, Clone, Copy)]
struct Lock {
    /// Nanoseconds since the Unix epoch, on the limiter's clock.
    until: u64,
}

/// The limiter's clock (keygate's, so tests drive limits with a `ManualClock`).
#[derive(Debug, Clone)]
struct ClockAdapter(Arc<dyn Clock>);

impl Default for InProcessLimiter {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl InProcessLimiter {
    /// A limiter with the default capacities (100 000 keys, 100 000 clients) on the system clock.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Configures capacities and the clock.
    pub fn builder() -> InProcessLimiterBuilder {
        InProcessLimiterBuilder {
            key_capacity: 100_000,
            client_capacity: 100_000,
            clock: Arc::new(SystemClock),
        }
    }

    /// Limiters currently held for keys and for clients.
    #[must_use]
    pub fn entry_counts(&self) -> (u64, u64) {
        (count(&self.inner.keys), count(&self.inner.clients))
    }

    /// Keys and clients locked out now (exhausted until a time still ahead on the limiter's
    /// clock). Visits every lock: for tests and diagnostics, not per request.
    #[must_use]
    pub fn lockout_counts(&self) -> (u64, u64) {
        let now = nanos_since_epoch(self.inner.clock.0.now());
        let active = |locks: &Locks| {
            let active = locks.iter().filter(|(_, lock)| lock.until > now).count();
            u64::try_from(active).unwrap_or(u64::MAX)
        };
        (
            active(&self.inner.key_locks),
            active(&self.inner.client_locks),
        )
    }

    fn cache(&self, key: &LimitKey) -> &Buckets {
        if key.is_client() {
            &self.inner.clients
        } else {
            &self.inner.keys
        }
    }

    fn locks(&self, key: &LimitKey) -> &Locks {
        if key.is_client() {
            &self.inner.client_locks
        } else {
            &self.inner.key_locks
        }
    }

    fn any_exhausted_until(&self, key: &LimitKey) -> &AtomicU64 {
        if key.is_client() {
            &self.inner.clients_exhausted_until
        } else {
            &self.inner.keys_exhausted_until
        }
    }

    fn mark_exhausted(&self, key: LimitKey, policy: RatePolicy, until: SystemTime) {
        let until = nanos_since_epoch(until);
        self.locks(&key).insert((key, policy), Lock { until });
        self.any_exhausted_until(&key)
            .fetch_max(until, Ordering::AcqRel);
    }

    /// The GCRA state of (key, policy), made on first use.
    fn state(&self, key: LimitKey, policy: RatePolicy) -> Arc<Gcra> {
        let cache = self.cache(&key);
        match cache.get(&(key, policy)) {
            Some(gcra) => gcra,
            None => match cache.get_or_insert_with(&(key, policy), || {
                Ok::<_, Infallible>(Arc::new(Gcra::new(key, policy)))
            }) {
                Ok(gcra) => gcra,
                Err(never) => match never {},
            },
        }
    }

    fn decide(&self, key: LimitKey, policy: RatePolicy) -> RateDecision {
        self.decide_with(key, policy, &self.state(key, policy))
    }

    fn decide_with(&self, key: LimitKey, policy: RatePolicy, gcra: &Gcra) -> RateDecision {
        self.decide_with_at(key, policy, gcra, self.now_nanos())
    }

    /// The limiter's time now, in nanoseconds since the Unix epoch.
    fn now_nanos(&self) -> u64 {
        nanos_since_epoch(self.inner.clock.0.now())
    }

    /// [`RateLimiter::acquire_held`] at `now` (nanoseconds since the Unix epoch on this
    /// limiter's clock, from [`nanos_since_epoch`]), for a verifier that shares the clock and
    /// has read it already: one clock read per request instead of one per step.
    pub(crate) fn decide_held_at(&self, held: &HeldLimit, now: u64) -> RateDecision {
        let gcra = &*held.0;
        self.decide_with_at(gcra.key, gcra.policy, gcra, now)
    }

    /// The refusal [`RateLimiter::peek_now`] would answer at `now`, or `None` where it would
    /// allow: the verifier's check of a client's failed attempts, on every request. It asks
    /// only for a refusal, so the usual answer (no lockout anywhere: one atomic load) builds
    /// no decision.
    #[inline]
    pub(crate) fn refusal_at(
        &self,
        key: LimitKey,
        policy: RatePolicy,
        now: u64,
    ) -> Option<RateDecision> {
        if now >= self.any_exhausted_until(&key).load(Ordering::Acquire) {
            return None;
        }
        Some(self.look_with(key, policy, now)).filter(|decision| !decision.allowed)
    }

    fn decide_with_at(
        &self,
        key: LimitKey,
        policy: RatePolicy,
        gcra: &Gcra,
        now: u64,
    ) -> RateDecision {
        match gcra.step(now) {
            Step::Allowed { tat } => {
                // The next request is allowed at once while `tat − now ≤ τ`; each one after
                // it moves `tat` on by T.
                let ahead = tat - now;
                let remaining = if ahead > gcra.tau {
                    // Exhausted by this request: `peek` refuses until the next is allowed.
                    self.mark_exhausted(key, policy, from_nanos(tat - gcra.tau));
                    0
                } else {
                    u32::try_from((gcra.tau - ahead) / gcra.interval + 1).unwrap_or(u32::MAX)
                };
                RateDecision {
                    allowed: true,
                    policy,
                    remaining,
                    // Full again when `tat` is reached.
                    reset: Duration::from_nanos(ahead),
                    retry_after: Duration::ZERO,
                }
            }
            Step::Refused { at } => {
                self.mark_exhausted(key, policy, from_nanos(at));
                exhausted(policy, Duration::from_nanos(at - now))
            }
        }
    }

    fn look(&self, key: LimitKey, policy: RatePolicy) -> RateDecision {
        self.look_with(key, policy, self.now_nanos())
    }

    fn look_with(&self, key: LimitKey, policy: RatePolicy, now_nanos: u64) -> RateDecision {
        // Not exhausted: at least one request would pass; how many more is not known without
        // taking one.
        let open = RateDecision {
            allowed: true,
            policy,
            remaining: 1,
            reset: policy.refill_time(),
            retry_after: Duration::ZERO,
        };
        // No bucket of this kind is exhausted now: no lookup needed.
        if now_nanos >= self.any_exhausted_until(&key).load(Ordering::Acquire) {
            return open;
        }
        // A peek never creates anything: looking costs no memory.
        let locks = self.locks(&key);
        match locks.get(&(key, policy)) {
            Some(lock) if now_nanos < lock.until => {
                exhausted(policy, Duration::from_nanos(lock.until - now_nanos))
            }
            Some(_) => {
                // Ended: out, unless a new lockout took its place meanwhile.
                locks.remove_if(&(key, policy), |lock| lock.until <= now_nanos);
                open
            }
            None => open,
        }
    }
}

/// The delay tolerance τ = T × (burst − 1) in nanoseconds, capped at `u32::MAX` seconds, as
/// the Redis limiter caps it: `1/365d burst 1000000000` would be ~10²⁵ ns, past `u64` (a
/// burst that would take over 136 years to refill is cut to the part that refills in 136
/// years). Found by the `rate_policy` fuzz target, against governor, which overflowed there.
fn tolerance(policy: RatePolicy, interval: u64) -> u64 {
    const MAX_TAU_NANOS: u128 = u32::MAX as u128 * 1_000_000_000;
    let tau = u128::from(interval) * u128::from(policy.burst() - 1);
    u64::try_from(tau.min(MAX_TAU_NANOS)).unwrap_or(u64::MAX)
}

fn from_nanos(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

fn exhausted(policy: RatePolicy, retry_after: Duration) -> RateDecision {
    RateDecision {
        allowed: false,
        policy,
        remaining: 0,
        // Full again `burst - 1` intervals after the next request is allowed.
        reset: retry_after
            + policy
                .emission_interval()
                .saturating_mul(policy.burst() - 1),
        retry_after,
    }
}

fn count<V: Clone>(map: &Map<V>) -> u64 {
    u64::try_from(map.len()).unwrap_or(u64::MAX)
}

pub(crate) fn nanos_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[async_trait]
impl RateLimiter for InProcessLimiter {
    async fn acquire(
        &self,
        key: LimitKey,
        policy: RatePolicy,
    ) -> Result<RateDecision, LimiterError> {
        Ok(self.decide(key, policy))
    }

    async fn peek(&self, key: LimitKey, policy: RatePolicy) -> Result<RateDecision, LimiterError> {
        Ok(self.look(key, policy))
    }

    fn decides_now(&self) -> bool {
        true
    }

    fn acquire_now(
        &self,
        key: LimitKey,
        policy: RatePolicy,
    ) -> Option<Result<RateDecision, LimiterError>> {
        Some(Ok(self.decide(key, policy)))
    }

    fn peek_now(
        &self,
        key: LimitKey,
        policy: RatePolicy,
    ) -> Option<Result<RateDecision, LimiterError>> {
        Some(Ok(self.look(key, policy)))
    }

    fn hold(&self, key: LimitKey, policy: RatePolicy) -> Option<HeldLimit> {
        Some(HeldLimit(self.state(key, policy)))
    }

    fn acquire_held(&self, held: &HeldLimit) -> Option<Result<RateDecision, LimiterError>> {
        let gcra = &*held.0;
        Some(Ok(self.decide_with(gcra.key, gcra.policy, gcra)))
    }
}

impl std::fmt::Debug for InProcessLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessLimiter")
            .field("keys", &self.inner.keys.len())
            .field("clients", &self.inner.clients.len())
            .finish_non_exhaustive()
    }
}

/// Configures an [`InProcessLimiter`].
#[derive(Debug)]
#[must_use]
pub struct InProcessLimiterBuilder {
    key_capacity: u64,
    client_capacity: u64,
    clock: Arc<dyn Clock>,
}

impl InProcessLimiterBuilder {
    /// Most keys whose limiters are kept (default 100 000). When more keys are active at
    /// once, the least recently used lose their state (and start again with a full burst).
    pub fn key_capacity(mut self, keys: u64) -> Self {
        self.key_capacity = keys;
        self
    }

    /// Most clients whose failed attempts are tracked (default 100 000), and, apart from
    /// them, most clients locked out at once.
    pub fn client_capacity(mut self, clients: u64) -> Self {
        self.client_capacity = clients;
        self
    }

    /// The clock limits are measured on (use the verifier's, e.g. a
    /// [`ManualClock`](crate::clock::ManualClock) in tests).
    pub fn clock(self, clock: impl Clock) -> Self {
        self.shared_clock(Arc::new(clock))
    }

    pub(crate) fn shared_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the limiter.
    #[must_use]
    pub fn build(self) -> InProcessLimiter {
        fn map<V: Clone>(capacity: u64) -> Map<V> {
            Cache::with(
                // Sizes the shards' tables; they grow on demand past this.
                usize::try_from(capacity.min(1 << 12)).unwrap_or(1 << 12),
                capacity,
                UnitWeighter,
                foldhash::fast::RandomState::default(),
                quick_cache::sync::DefaultLifecycle::default(),
            )
        }
        InProcessLimiter {
            inner: Arc::new(Inner {
                keys: map(self.key_capacity),
                clients: map(self.client_capacity),
                key_locks: map(self.key_capacity),
                client_locks: map(self.client_capacity),
                keys_exhausted_until: AtomicU64::new(0),
                clients_exhausted_until: AtomicU64::new(0),
                clock: ClockAdapter(self.clock),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    use crate::clock::ManualClock;
    use crate::key::KeyId;

    /// The failed-attempt key of the client at `ip`.
    fn client(ip: &str) -> LimitKey {
        LimitKey::client(ip.parse().unwrap_or_else(|_| unreachable!()))
    }

    fn limiter() -> (InProcessLimiter, ManualClock) {
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        (
            InProcessLimiter::builder().clock(clock.clone()).build(),
            clock,
        )
    }

    fn policy(text: &str) -> RatePolicy {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn burst_then_steady_rate() {
        let (limiter, clock) = limiter();
        let key = LimitKey::Key(KeyId::random());
        let p = policy("5/1s");
        for remaining in (0..5).rev() {
            let d = limiter.decide(key, p);
            assert!(d.allowed);
            assert_eq!(d.remaining, remaining);
        }
        let denied = limiter.decide(key, p);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Duration::from_millis(200));
        assert_eq!(denied.reset, Duration::from_secs(1));
        clock.advance(Duration::from_millis(200));
        assert!(limiter.decide(key, p).allowed);
        assert!(!limiter.decide(key, p).allowed);
        clock.advance(Duration::from_secs(1));
        assert_eq!(limiter.decide(key, p).remaining, 4, "full again after 1 s");
    }

    #[test]
    fn a_held_state_is_the_limiters_own() {
        let (limiter, clock) = limiter();
        let key = LimitKey::Key(KeyId::random());
        let p = policy("3/1m");
        let held = limiter.hold(key, p).unwrap_or_else(|| unreachable!());
        assert_eq!(held.target(), (key, p));
        let take = |held: &HeldLimit| match limiter.acquire_held(held) {
            Some(Ok(decision)) => decision,
            other => panic!("in-process limiters decide at once: {other:?}"),
        };
        assert_eq!(take(&held).remaining, 2);
        // Another holder (a refilled cache entry) and the plain path share the same state.
        let again = limiter.hold(key, p).unwrap_or_else(|| unreachable!());
        assert_eq!(take(&again).remaining, 1);
        assert_eq!(limiter.decide(key, p).remaining, 0);
        let refused = take(&held);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_secs(20));
        assert!(
            !limiter.look(key, p).allowed,
            "an exhaustion through a held state is seen by peek"
        );
        // Another policy is another state.
        let other = limiter
            .hold(key, policy("3/1h"))
            .unwrap_or_else(|| unreachable!());
        assert!(take(&other).allowed);
        clock.advance(Duration::from_secs(20));
        assert_eq!(take(&held).remaining, 0);
        assert_eq!(limiter.entry_counts().0, 2, "one state per (key, policy)");
    }

    /// A lockout that ended is open to a peek while another client of the same kind is still
    /// locked out (so the peek cannot answer from the kind's "none exhausted" mark alone).
    #[test]
    fn an_ended_lockout_is_open_while_another_still_holds() {
        let (limiter, clock) = limiter();
        let (early, late) = (client("10.0.0.1"), client("10.0.0.2"));
        let p = policy("1/1m");
        assert!(limiter.decide(early, p).allowed);
        assert!(!limiter.decide(early, p).allowed, "locked until +60 s");
        clock.advance(Duration::from_secs(30));
        assert!(limiter.decide(late, p).allowed);
        assert!(!limiter.decide(late, p).allowed, "locked until +90 s");
        clock.advance(Duration::from_secs(31));
        let at = limiter.now_nanos();
        assert!(limiter.look(early, p).allowed, "early's lockout has ended");
        assert_eq!(limiter.refusal_at(early, p, at), None);
        let still = limiter.refusal_at(late, p, at);
        assert_eq!(still, Some(limiter.look(late, p)));
        assert_eq!(still.map(|s| s.retry_after), Some(Duration::from_secs(29)));
        // Once every lockout has ended, the kind's mark answers alone.
        clock.advance(Duration::from_secs(29));
        assert_eq!(limiter.refusal_at(late, p, limiter.now_nanos()), None);
        assert!(limiter.look(late, p).allowed);
    }

    /// `refusal_at` refuses exactly where a peek refuses, before, during and after a lockout,
    /// for the locked client and another.
    #[test]
    fn refusal_at_agrees_with_peek() {
        let (limiter, clock) = limiter();
        let (locked, other) = (client("10.0.0.1"), client("10.0.0.2"));
        let p = policy("2/1m");
        let agree = |limiter: &InProcessLimiter| {
            for key in [locked, other, LimitKey::UnknownClient] {
                let peek = limiter.look(key, p);
                let refusal = limiter.refusal_at(key, p, limiter.now_nanos());
                assert_eq!(refusal, Some(peek).filter(|peek| !peek.allowed), "{key}");
            }
        };
        agree(&limiter);
        for _ in 0..3 {
            limiter.decide(locked, p);
            agree(&limiter);
        }
        assert!(limiter.refusal_at(locked, p, limiter.now_nanos()).is_some());
        for _ in 0..4 {
            clock.advance(Duration::from_secs(15));
            agree(&limiter);
        }
    }

    #[test]
    fn peek_takes_nothing_and_sees_exhaustion() {
        let (limiter, clock) = limiter();
        let key = client("10.0.0.1");
        let p = policy("3/1m");
        assert!(limiter.look(key, p).allowed);
        assert_eq!(limiter.entry_counts().1, 0, "peeking creates nothing");
        for _ in 0..3 {
            assert!(limiter.look(key, p).allowed);
            assert!(limiter.decide(key, p).allowed);
        }
        let peek = limiter.look(key, p);
        assert!(!peek.allowed);
        assert_eq!(peek.retry_after, Duration::from_secs(20));
        assert_eq!(limiter.look(key, p), peek, "peeking again changes nothing");
        let other = client("10.0.0.2");
        assert!(
            limiter.look(other, p).allowed,
            "another client is not locked out"
        );
        clock.advance(Duration::from_secs(20));
        assert!(limiter.look(key, p).allowed);
        assert!(limiter.decide(key, p).allowed);
        assert!(!limiter.look(key, p).allowed);
    }

    #[test]
    fn lockouts_survive_a_flood_of_other_addresses() {
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let limiter = InProcessLimiter::builder()
            .clock(clock.clone())
            .client_capacity(1_000)
            .build();
        let p = policy("1/1h burst 3");
        let victim = client("10.0.0.1");
        for _ in 0..3 {
            assert!(limiter.decide(victim, p).allowed);
        }
        assert!(!limiter.look(victim, p).allowed, "locked out");
        // 10^6 other addresses fail once each: ten thousand times the client capacity.
        for n in 0..1_000_000u32 {
            let other = LimitKey::client(IpAddr::V4(std::net::Ipv4Addr::from(0x0B00_0000 + n)));
            assert!(limiter.decide(other, p).allowed);
        }
        let (_, clients) = limiter.entry_counts();
        assert!(clients <= 1_000, "limiters stay bounded: {clients}");
        assert_eq!(
            limiter.lockout_counts().1,
            1,
            "only the victim is locked out"
        );
        let peek = limiter.look(victim, p);
        assert!(!peek.allowed, "the lockout survived the flood");
        assert!(peek.retry_after > Duration::from_secs(59 * 60));
        clock.advance(Duration::from_secs(3600));
        assert!(limiter.look(victim, p).allowed, "and ends on time");
    }

    #[test]
    fn unknown_clients_share_one_allowance() {
        let (limiter, _) = limiter();
        let p = policy("1/1h burst 2");
        let unknown = LimitKey::client_or_unknown(None);
        assert!(limiter.decide(unknown, p).allowed);
        assert!(limiter.decide(unknown, p).allowed);
        assert!(!limiter.decide(unknown, p).allowed);
        assert!(!limiter.look(LimitKey::UnknownClient, p).allowed);
        let known = client("10.0.0.1");
        assert!(
            limiter.look(known, p).allowed,
            "known addresses keep their own"
        );
        assert_eq!(
            limiter.entry_counts(),
            (0, 1),
            "one limiter, kept with the clients' (peeking created none)"
        );
    }

    #[test]
    fn a_burst_beyond_u64_nanoseconds_is_capped_not_overflowed() {
        let (limiter, _) = limiter();
        let key = LimitKey::Key(KeyId::random());
        // τ = 365 d × (10⁹ − 1) overflows u64 nanoseconds; capped at u32::MAX s, the burst is
        // the 137 requests that refill within 136 years (as in the Redis limiter).
        let p = policy("1/365d burst 1000000000");
        let first = limiter.decide(key, p);
        assert!(first.allowed);
        assert_eq!(first.remaining, 136);
        for _ in 0..136 {
            assert!(limiter.decide(key, p).allowed);
        }
        assert!(!limiter.decide(key, p).allowed);
        let fast = policy("1000000000/1s burst 1000000000");
        assert_eq!(
            limiter.decide(key, fast).remaining,
            999_999_999,
            "no cap needed"
        );
    }

    #[test]
    fn policy_change_starts_a_fresh_limiter() {
        let (limiter, _) = limiter();
        let key = LimitKey::Key(KeyId::random());
        assert!(limiter.decide(key, policy("1/1h")).allowed);
        assert!(!limiter.decide(key, policy("1/1h")).allowed);
        assert!(limiter.decide(key, policy("2/1h")).allowed);
    }
}
