//! [`RedisRateLimiter`]: one rate limit per key shared by every instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keygate::rate::{LimitKey, LimiterError, RateDecision, RateLimiter, RatePolicy};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::error::within;
use crate::{Error, RedisTarget, gcra};

/// Counter: decisions a [`RedisRateLimiter`] with [`FailurePolicy::Open`] allowed because Redis
/// could not be asked (unreachable, timed out, or an unexpected reply), by `kind` (`key` for
/// keys' requests, `client` for clients' failed attempts).
pub const FAIL_OPEN: &str = "keygate_rate_limiter_fail_open_total";

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
/// let keyring = Keyring::new(KeyFormat::new("acme_live")?, Peppers::from_env_or_development()?);
/// let verifier = Verifier::builder(keyring, MemoryStore::new())
///     .rate_limiter(limiter)
///     .default_rate_limit("100/1s burst 200".parse::<keygate::rate::RatePolicy>()?)
///     .build();
/// # let _ = verifier;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisRateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    connection: ConnectionManager,
    script: redis::Script,
    prefix: String,
    failure_policy: FailurePolicy,
    response_timeout: Duration,
    warn_interval: Duration,
    /// The origin of `last_warning`.
    started: Instant,
    /// Milliseconds after `started` of the last warning, plus one (0: never warned).
    last_warning: AtomicU64,
    /// Failures since the last warning.
    unreported: AtomicU64,
    fail_open: AtomicU64,
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
    pub fn builder(target: impl Into<RedisTarget>) -> RedisRateLimiterBuilder {
        RedisRateLimiterBuilder {
            target: target.into(),
            prefix: "keygate".to_owned(),
            failure_policy: FailurePolicy::Open,
            response_timeout: Duration::from_millis(250),
            connection_timeout: Duration::from_secs(1),
            warn_interval: Duration::from_secs(10),
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

    async fn ask(
        &self,
        key: &LimitKey,
        policy: RatePolicy,
        take: bool,
    ) -> Result<RateDecision, Error> {
        let (interval, tau) = gcra::script_args(&policy);
        let mut invocation = self.inner.script.key(self.state_key(key, &policy));
        invocation.arg(interval).arg(tau).arg(u8::from(take));
        let mut connection = self.inner.connection.clone();
        let reply: Vec<i64> = within(
            self.inner.response_timeout,
            invocation.invoke_async(&mut connection),
        )
        .await?;
        gcra::decision(policy, &reply)
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
                let kind = match key {
                    LimitKey::Client(_) => "client",
                    _ => "key",
                };
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
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.inner.prefix)
            .field("failure_policy", &self.inner.failure_policy)
            .field("response_timeout", &self.inner.response_timeout)
            .field("fail_open_count", &self.fail_open_count())
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

    /// Connects, and loads the script (so a wrong URL or an unreachable Redis is found at
    /// start-up).
    ///
    /// # Errors
    /// [`Error`] when the URL is invalid or Redis does not answer within the connection
    /// timeout plus the response timeout.
    pub async fn build(self) -> Result<RedisRateLimiter, Error> {
        let client = self.target.client()?;
        // No retries inside one connection attempt: a backoff delay there would hold every
        // call waiting on the connection. Instead each failed call starts the next attempt,
        // so the limiter is back as soon as Redis is.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(self.connection_timeout))
            .set_response_timeout(Some(self.response_timeout));
        let connection = match tokio::time::timeout(
            self.connection_timeout + self.response_timeout,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        {
            Ok(connection) => connection?,
            Err(_) => return Err(Error::Timeout(self.connection_timeout)),
        };
        let script = redis::Script::new(gcra::SCRIPT);
        let mut loading = connection.clone();
        within(
            self.response_timeout.max(Duration::from_secs(1)),
            script.prepare_invoke().load_async(&mut loading),
        )
        .await?;
        Ok(RedisRateLimiter {
            inner: Arc::new(Inner {
                connection,
                script,
                prefix: self.prefix,
                failure_policy: self.failure_policy,
                response_timeout: self.response_timeout,
                warn_interval: self.warn_interval,
                started: Instant::now(),
                last_warning: AtomicU64::new(0),
                unreported: AtomicU64::new(0),
                fail_open: AtomicU64::new(0),
            }),
        })
    }
}
