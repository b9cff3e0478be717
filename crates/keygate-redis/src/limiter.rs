//! [`RedisRateLimiter`]: one rate limit per key shared by every instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::connection::LazyConnection;
use crate::error::within;
use crate::lockouts::Lockouts;
use crate::{Error, RedisTarget, gcra};
use async_trait::async_trait;
use keygate::rate::{LimitKey, LimiterError, RateDecision, RateLimiter, RatePolicy};

/// Counter: decisions a [`RedisRateLimiter`] with [`FailurePolicy::Open`] allowed because Redis
/// could not be asked (unreachable, timed out, or an unexpected reply), by `kind` (`key` for
/// keys' requests, `client` for clients' failed attempts).
pub const FAIL_OPEN: &str = "keygate_rate_limiter_fail_open_total";

/// Locked-out clients a [`RedisRateLimiter`] remembers by default
/// ([`local_lockout_capacity`](RedisRateLimiterBuilder::local_lockout_capacity)).
pub const DEFAULT_LOCAL_LOCKOUT_CAPACITY: u64 = 100_000;

/// What a [`RedisRateLimiter`] answers when Redis cannot be asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Allow the request (the default): an outage of Redis lifts rate limits, but no request is
    /// refused because of it. Each such answer is counted in [`FAIL_OPEN`] and
    /// [`RedisRateLimiter::fail_open_count`], and a warning is logged at most once per
    /// [`warn_interval`](RedisRateLimiterBuilder::warn_interval).
    #[default]
    Open,
    /// Return [`LimiterError`]: the verifier answers 503. For limits that protect something
    /// more valuable than availability (a paid upstream, say).
    Closed,
}

/// Rate limits held in Redis, so that every instance of a service enforces one limit per key
/// (and one failed-attempt limit per client) together, instead of each its own.
///
/// - **Same rule as [`InProcessLimiter`](keygate::rate::InProcessLimiter)**: a GCRA with the
///   policy's burst; [`acquire`](RateLimiter::acquire) takes one request,
///   [`peek`](RateLimiter::peek) takes nothing. Decisions are made by one Lua script in one
///   round trip, atomically, on **Redis's clock** (`TIME`), so instances whose clocks
///   disagree still share one allowance.
/// - **Keys**: `{prefix}:rl:key:{id}:{policy}` and `{prefix}:rl:client:{ip or /64}:{policy}`
///   (the policy written without spaces, `100/1s_burst_200`). The policy is part of the key,
///   so a changed policy applies at once. Each key expires when its allowance would be full
///   again, so Redis holds nothing for idle keys.
/// - **Precision**: 1 µs. The emission interval is rounded up to a whole microsecond (never
///   more lenient than the policy); policies over 1 000 000 requests per second per key are
///   enforced as 1 000 000 per second.
/// - **Peek answers exactly**: an allowed peek's `remaining` is the number of requests that
///   could be made at once now (at least 1), and `reset` the time until the allowance is full.
///
/// # Local lockouts
/// The verifier asks, before checking any key, whether the client is locked out for too many
/// failed attempts ([`peek`](RateLimiter::peek) on [`LimitKey::Client`]). Asking Redis would
/// cost a round trip on every request, almost always to hear "no". So, with
/// [`local_lockouts`](RedisRateLimiterBuilder::local_lockouts) on (the default), that
/// pre-check is answered by [`peek_now`](RateLimiter::peek_now) from the lockouts this
/// instance has learned: whenever Redis answers *denied* to an `acquire` or `peek` of a
/// client's failed attempts, the client is remembered as locked until the answer's
/// retry-after has passed (on this process's monotonic clock, from when the answer arrived,
/// so the local lock ends at most one round trip after Redis's). Any client not remembered is
/// answered *allowed* without asking Redis. A limited key's request therefore costs one round
/// trip (the key's `acquire`), and an unlimited key's none.
///
/// Failed attempts are still counted in Redis (the verifier `acquire`s one per failure), so
/// the count is shared by every instance. What an instance that has not yet seen a client's
/// lockout does:
/// - **At most one extra attempt per instance per lockout.** It lets the client's next
///   attempt through to the key check; if that fails, its `acquire` in Redis answers denied,
///   and from then on this instance refuses the client too. With `n` instances, a locked-out
///   client gets at most `n` more guesses than the policy's burst before every instance
///   refuses it, then none until the lock ends.
/// - **A valid key is served.** A locked-out client presenting a valid key to an instance that
///   has not seen the lockout is served (and its key's own limit applies as usual). The
///   lockout exists against guessing keys, and a client holding a valid key is not guessing.
///   With local lockouts off, every instance refuses it until the lock ends.
/// - **Memory is bounded**: at most
///   [`local_lockout_capacity`](RedisRateLimiterBuilder::local_lockout_capacity) clients
///   (default 100 000), each forgotten when its lock ends; a client forgotten early (a flood
///   of locked-out addresses evicting it) gets one more attempt, as above.
///
/// An allowed answer from `peek_now` knows nothing exact about the allowance: its `remaining`
/// is 1 (a lower bound) and its `reset` the time a whole burst takes to come back (an upper
/// bound). Keys' limits are never answered locally: [`acquire_now`](RateLimiter::acquire_now)
/// and `peek_now` return `None` for [`LimitKey::Key`].
///
/// # When Redis cannot be asked
/// Every call waits at most [`response_timeout`](RedisRateLimiterBuilder::response_timeout)
/// (connecting included), then answers by the [`FailurePolicy`]: allowed (the default,
/// `Open`), or [`LimiterError`] (`Closed`). A fail-open answer is what an idle key would get:
/// `remaining` = burst − 1 for an acquire (burst for a peek). The connection reconnects by
/// itself: after a failed call, the next call starts a new connection attempt (one at a time,
/// shared by concurrent calls, without backoff delay), so the limiter works again within one
/// call of Redis coming back. While Redis refuses connections, calls fail in about a loopback
/// round trip; while it does not answer at all, each call costs the response timeout.
///
/// **At start-up too**: [`build`](RedisRateLimiterBuilder::build) does not wait for Redis, so
/// a service starts while Redis is down, and its limits follow the failure policy (counted
/// and warned about as above) until Redis answers; then the next calls connect, load the
/// script and enforce the shared limits. The same holds after Redis restarts empty: the
/// script is loaded again on the first call that finds it missing.
///
/// With [local lockouts](#local-lockouts), the failed-attempt pre-check does not ask Redis, so
/// an outage changes it little:
/// - [`FailurePolicy::Open`]: the pre-check goes on answering from what this instance
///   learned before the outage: clients it knew to be locked out stay refused until their
///   lock ends, every other client is allowed. Failed attempts cannot be counted during the
///   outage (their `acquire` fails open), so no new lockout is learned. Pre-checks are not
///   counted in [`FAIL_OPEN`], which counts only calls that went to Redis.
/// - [`FailurePolicy::Closed`]: once a call to Redis has failed, the pre-check asks Redis
///   again (so requests from clients with an address get 503, as without local lockouts)
///   until a call succeeds. Between Redis going down and the first failed call, pre-checks
///   are still answered locally.
///
/// # Example
/// ```no_run
/// use std::time::Duration;
/// use keygate::{KeyFormat, Keyring, MemoryStore, Peppers, Verifier};
/// use keygate_redis::{FailurePolicy, RedisRateLimiter};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379")
///     .prefix("acme")
///     .failure_policy(FailurePolicy::Open)
///     .response_timeout(Duration::from_millis(100))
///     .build()
///     .await?;
/// let keyring = Keyring::new(KeyFormat::new("acme_live")?, Peppers::from_env()?);
/// let verifier = Verifier::builder(keyring, MemoryStore::new())
///     .rate_limiter(limiter)
///     .default_rate_limit("100/1s burst 200".parse::<keygate::rate::RatePolicy>()?)
///     .start()
///     .await?;
/// # let _ = verifier;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisRateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    connection: LazyConnection,
    script: redis::Script,
    prefix: String,
    failure_policy: FailurePolicy,
    response_timeout: Duration,
    connection_timeout: Duration,
    warn_interval: Duration,
    /// The origin of `last_warning`.
    started: Instant,
    /// Milliseconds after `started` of the last warning, plus one (0: never warned).
    last_warning: AtomicU64,
    /// Failures since the last warning.
    unreported: AtomicU64,
    fail_open: AtomicU64,
    /// Client lockouts learned from Redis (`None`: turned off).
    lockouts: Option<Lockouts>,
    /// Whether the last call to Redis got an answer: under [`FailurePolicy::Closed`], the
    /// local pre-check gives way to Redis (and so to 503s) while it does not.
    answering: AtomicBool,
}

impl RedisRateLimiter {
    /// Configures a limiter on `target`: a URL (`"redis://127.0.0.1:6379"`) or a
    /// [`redis::Client`]. Defaults:
    ///
    /// | setting | default |
    /// | --- | --- |
    /// | [`prefix`](RedisRateLimiterBuilder::prefix) | `keygate` (keys `keygate:rl:…`) |
    /// | [`failure_policy`](RedisRateLimiterBuilder::failure_policy) | [`FailurePolicy::Open`]: allow, count, warn |
    /// | [`response_timeout`](RedisRateLimiterBuilder::response_timeout) | 250 ms per call, connecting included |
    /// | [`connection_timeout`](RedisRateLimiterBuilder::connection_timeout) | 1 s per connection attempt |
    /// | [`warn_interval`](RedisRateLimiterBuilder::warn_interval) | one warning per 10 s at most |
    /// | [`local_lockouts`](RedisRateLimiterBuilder::local_lockouts) | on: the failed-attempt pre-check answers locally |
    /// | [`local_lockout_capacity`](RedisRateLimiterBuilder::local_lockout_capacity) | 100 000 locked-out clients remembered |
    pub fn builder(target: impl Into<RedisTarget>) -> RedisRateLimiterBuilder {
        RedisRateLimiterBuilder {
            target: target.into(),
            prefix: "keygate".to_owned(),
            failure_policy: FailurePolicy::Open,
            response_timeout: Duration::from_millis(250),
            connection_timeout: Duration::from_secs(1),
            warn_interval: Duration::from_secs(10),
            local_lockouts: true,
            local_lockout_capacity: DEFAULT_LOCAL_LOCKOUT_CAPACITY,
        }
    }

    /// Decisions allowed because Redis could not be asked ([`FailurePolicy::Open`]), since
    /// this limiter was built (shared by its clones).
    #[must_use]
    pub fn fail_open_count(&self) -> u64 {
        self.inner.fail_open.load(Ordering::Relaxed)
    }

    /// The Redis key holding `key`'s state under `policy` (for operators and tests).
    #[must_use]
    pub fn state_key(&self, key: &LimitKey, policy: &RatePolicy) -> String {
        gcra::state_key(&self.inner.prefix, key, policy)
    }

    /// Connects and loads the script, so that the first requests cost one round trip as later
    /// ones do. Waits at most the connection timeout plus the response timeout; on failure,
    /// warns once and leaves reconnecting to the calls.
    async fn warm_up(self) {
        let inner = &*self.inner;
        let loaded = inner
            .connection
            .load_script(
                &inner.script,
                inner.connection_timeout + inner.response_timeout,
            )
            .await;
        if let Err(error) = loaded {
            inner.answering.store(false, Ordering::Relaxed);
            tracing::warn!(
                target: "keygate::redis",
                failure_policy = ?inner.failure_policy,
                "redis rate limiter: redis does not answer yet, limits follow the failure policy until it does: {error}"
            );
        }
    }

    async fn ask(
        &self,
        key: &LimitKey,
        policy: RatePolicy,
        take: bool,
    ) -> Result<RateDecision, Error> {
        let (interval, tau) = gcra::script_args(&policy);
        let mut invocation = self.inner.script.key(self.state_key(key, &policy));
        invocation.arg(interval).arg(tau).arg(u8::from(take));
        let mut connection = self.inner.connection.current();
        let reply = within(
            self.inner.response_timeout,
            invocation.invoke_async::<redis::Value>(&mut connection.manager),
        )
        .await;
        let answer = self
            .inner
            .connection
            .settle(&connection, reply)
            .and_then(|reply| gcra::reply_decision(policy, reply));
        let answering = answer.is_ok();
        // Read first: a store on every call would bounce the cache line between cores.
        if self.inner.answering.load(Ordering::Relaxed) != answering {
            self.inner.answering.store(answering, Ordering::Relaxed);
        }
        if let (Ok(decision), LimitKey::Client(ip), Some(lockouts)) =
            (&answer, key, &self.inner.lockouts)
        {
            lockouts.learn(*ip, decision, Instant::now());
        }
        answer
    }

    /// The answer when Redis could not be asked.
    fn failed(
        &self,
        key: &LimitKey,
        policy: RatePolicy,
        take: bool,
        error: Error,
    ) -> Result<RateDecision, LimiterError> {
        self.warn(&error);
        match self.inner.failure_policy {
            FailurePolicy::Closed => Err(LimiterError(Box::new(error))),
            FailurePolicy::Open => {
                self.inner.fail_open.fetch_add(1, Ordering::Relaxed);
                let kind = if key.is_client() { "client" } else { "key" };
                metrics::counter!(FAIL_OPEN, "kind" => kind).increment(1);
                // What an idle key would be answered.
                Ok(if take {
                    RateDecision {
                        allowed: true,
                        policy,
                        remaining: policy.burst() - 1,
                        reset: policy.emission_interval(),
                        retry_after: Duration::ZERO,
                    }
                } else {
                    RateDecision {
                        allowed: true,
                        policy,
                        remaining: policy.burst(),
                        reset: Duration::ZERO,
                        retry_after: Duration::ZERO,
                    }
                })
            }
        }
    }

    /// Logs `error` unless a warning was logged less than `warn_interval` ago.
    fn warn(&self, error: &Error) {
        let inner = &self.inner;
        let unreported = inner.unreported.fetch_add(1, Ordering::Relaxed) + 1;
        let now = u64::try_from(inner.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = inner.last_warning.load(Ordering::Relaxed);
        let interval = u64::try_from(inner.warn_interval.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now < last.saturating_add(interval) {
            return;
        }
        if inner
            .last_warning
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        inner.unreported.fetch_sub(unreported, Ordering::Relaxed);
        match inner.failure_policy {
            FailurePolicy::Open => tracing::warn!(
                target: "keygate::redis",
                failures = unreported,
                "redis rate limiter unavailable, allowing requests without a limit (fail open): {error}"
            ),
            FailurePolicy::Closed => tracing::warn!(
                target: "keygate::redis",
                failures = unreported,
                "redis rate limiter unavailable, refusing requests (fail closed): {error}"
            ),
        }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn acquire(
        &self,
        key: LimitKey,
        policy: RatePolicy,
    ) -> Result<RateDecision, LimiterError> {
        match self.ask(&key, policy, true).await {
            Ok(decision) => Ok(decision),
            Err(error) => self.failed(&key, policy, true, error),
        }
    }

    async fn peek(&self, key: LimitKey, policy: RatePolicy) -> Result<RateDecision, LimiterError> {
        match self.ask(&key, policy, false).await {
            Ok(decision) => Ok(decision),
            Err(error) => self.failed(&key, policy, false, error),
        }
    }

    /// For [`LimitKey::Client`], with [local lockouts](RedisRateLimiterBuilder::local_lockouts)
    /// on: whether this instance knows the client to be locked out, without asking Redis (see
    /// [`RedisRateLimiter`]'s "Local lockouts"). `None` for keys, with local lockouts off, and
    /// under [`FailurePolicy::Closed`] after a call to Redis failed (until one succeeds).
    fn peek_now(
        &self,
        key: LimitKey,
        policy: RatePolicy,
    ) -> Option<Result<RateDecision, LimiterError>> {
        let LimitKey::Client(ip) = key else {
            return None;
        };
        let inner = &*self.inner;
        let lockouts = inner.lockouts.as_ref()?;
        if inner.failure_policy == FailurePolicy::Closed && !inner.answering.load(Ordering::Relaxed)
        {
            return None;
        }
        Some(Ok(lockouts.check(ip, policy, Instant::now())))
    }
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.inner.prefix)
            .field("failure_policy", &self.inner.failure_policy)
            .field("response_timeout", &self.inner.response_timeout)
            .field("fail_open_count", &self.fail_open_count())
            .field(
                "local_lockouts",
                &self.inner.lockouts.as_ref().map(Lockouts::len),
            )
            .finish_non_exhaustive()
    }
}

/// Configures a [`RedisRateLimiter`]; see [`RedisRateLimiter::builder`] for the defaults.
#[derive(Debug)]
#[must_use]
pub struct RedisRateLimiterBuilder {
    target: RedisTarget,
    prefix: String,
    failure_policy: FailurePolicy,
    response_timeout: Duration,
    connection_timeout: Duration,
    warn_interval: Duration,
    local_lockouts: bool,
    local_lockout_capacity: u64,
}

impl RedisRateLimiterBuilder {
    /// The first part of every key (default `keygate`): keys are `{prefix}:rl:…`. Give each
    /// deployment sharing one Redis its own.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// What to answer when Redis cannot be asked (default [`FailurePolicy::Open`]).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    /// Longest wait for one decision, connecting included (default 250 ms); then the
    /// [`FailurePolicy`] answers. It bounds the latency a slow or hung Redis adds to a
    /// request: a loopback round trip takes tens of microseconds, a same-zone one about a
    /// millisecond.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Longest wait for one connection attempt (default 1 s). Calls still wait no longer than
    /// the response timeout; a longer attempt goes on in the background.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Least time between two warnings that Redis could not be asked (default 10 s). Each
    /// warning says how many calls failed since the previous one.
    pub fn warn_interval(mut self, interval: Duration) -> Self {
        self.warn_interval = interval;
        self
    }

    /// Whether the verifier's failed-attempt pre-check is answered from the client lockouts
    /// this instance has learned from Redis, without a round trip (default `true`; see
    /// [`RedisRateLimiter`]'s "Local lockouts" for exactly what that allows). `false`: every
    /// pre-check asks Redis, which makes the lockout exact across instances at the cost of a
    /// second round trip per request.
    pub fn local_lockouts(mut self, on: bool) -> Self {
        self.local_lockouts = on;
        self
    }

    /// Most locked-out clients remembered locally (default 100 000). Each is forgotten when
    /// its lock ends; beyond the capacity, the least recently used are forgotten first, and
    /// each forgotten client may make one more attempt on this instance before Redis's answer
    /// locks it again. Bounds the memory a flood from many addresses can take.
    pub fn local_lockout_capacity(mut self, clients: u64) -> Self {
        self.local_lockout_capacity = clients;
        self
    }

    /// Builds the limiter without waiting for Redis: a service starts while Redis is down,
    /// and its limits follow the [`FailurePolicy`] until Redis answers (see
    /// [`RedisRateLimiter`]'s "When Redis cannot be asked"). It starts connecting and loading
    /// the script in the background at once, so that the first requests need not; a warning
    /// is logged if that fails.
    ///
    /// Async so that it runs inside the Tokio runtime the limiter's connection needs.
    ///
    /// # Errors
    /// [`Error::Redis`] when the URL is invalid (not when Redis is unreachable).
    pub async fn build(self) -> Result<RedisRateLimiter, Error> {
        let client = self.target.client()?;
        let connection =
            LazyConnection::new(client, self.connection_timeout, self.response_timeout)?;
        let limiter = RedisRateLimiter {
            inner: Arc::new(Inner {
                connection,
                script: redis::Script::new(gcra::SCRIPT),
                prefix: self.prefix,
                failure_policy: self.failure_policy,
                response_timeout: self.response_timeout,
                connection_timeout: self.connection_timeout,
                warn_interval: self.warn_interval,
                started: Instant::now(),
                last_warning: AtomicU64::new(0),
                unreported: AtomicU64::new(0),
                fail_open: AtomicU64::new(0),
                lockouts: self
                    .local_lockouts
                    .then(|| Lockouts::new(self.local_lockout_capacity)),
                answering: AtomicBool::new(true),
            }),
        };
        tokio::spawn(limiter.clone().warm_up());
        Ok(limiter)
    }
}
