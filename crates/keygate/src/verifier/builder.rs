use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::cache::{EntryTtl, KeyCache};
use super::{Inner, Verifier};
use crate::audit::{AuditSink, Auditor, DEFAULT_LINGER, PipelineConfig};
use crate::clock::{Clock, SystemClock};
use crate::extract::{CredentialSources, TrustedProxies};
use crate::invalidation::Invalidation;
use crate::keyring::Keyring;
use crate::rate::{InProcessLimiter, RateLimit, RateLimiter, RatePolicy};
use crate::store::{KeyAdmin, KeyStore};

/// Configures a [`Verifier`]. Defaults suit most services:
///
/// | setting | default |
/// | --- | --- |
/// | cache capacity / fresh TTL | 100 000 keys / 30 s |
/// | negative cache capacity / TTL | 10 000 ids / 10 s |
/// | credential sources | `Authorization: Bearer`, `x-api-key`; no query string |
/// | credential length cap | 512 bytes |
/// | trusted proxies | none (the peer address is the client) |
/// | clock | system clock |
/// | last-used flush interval / buffer | 60 s / 4 096 reports |
/// | rate limiter | [`InProcessLimiter`] on the verifier's clock |
/// | quota meter | [`InProcessMeter`](crate::quota::InProcessMeter), persisted to the store's [ledger](crate::KeyStore::quota_ledger) when it has one |
/// | rate limit of keys without their own | unlimited |
/// | rate limit of keys without their own, per environment | none: the line above |
/// | failed attempts per client | `10/1m burst 20`: 20 at once, then one per 6 s |
/// | audit sinks / buffer / batch / linger | [`TracingSink`](crate::audit::TracingSink) / 65 536 events / 16 384 events / 500 ms |
/// | audit runtime | the runtime of the first event |
/// | invalidation channel | none (the cache TTL bounds changes made elsewhere) |
/// | degraded cache TTL (invalidation subscription down) | 1 s |
/// | stale-if-error grace | off |
#[must_use]
pub struct VerifierBuilder {
    keyring: Keyring,
    store: Arc<dyn KeyStore>,
    admin: Arc<dyn KeyAdmin>,
    clock: Arc<dyn Clock>,
    cache_capacity: u64,
    cache_ttl: Duration,
    negative_capacity: u64,
    negative_ttl: Duration,
    sources: CredentialSources,
    proxies: Vec<IpNet>,
    last_used_interval: Duration,
    last_used_buffer: usize,
    limiter: Option<Arc<dyn RateLimiter>>,
    quota_meter: Option<Arc<dyn crate::quota::QuotaMeter>>,
    default_rate_limit: RateLimit,
    /// By position of the environment in the keyring.
    environment_limits: Vec<Option<RateLimit>>,
    default_named_limits: crate::rate::NamedLimits,
    failure_limit: Option<RatePolicy>,
    canary_lockout: bool,
    notices: Option<Arc<dyn crate::notice::NoticeSink>>,
    audit_sinks: Vec<Arc<dyn AuditSink>>,
    audit_buffer: usize,
    audit_batch: usize,
    audit_linger: Duration,
    audit_runtime: Option<tokio::runtime::Handle>,
    invalidation: Option<Arc<dyn Invalidation>>,
    degraded_ttl: Duration,
    stale_grace: Duration,
}

/// The default limit on failed attempts per client: bursts of 20, then one every 6 s.
pub const DEFAULT_FAILURE_LIMIT: RatePolicy = RatePolicy::from_parts(10, 60, 20);

impl VerifierBuilder {
    pub(crate) fn new(
        keyring: Keyring,
        store: Arc<dyn KeyStore>,
        admin: Arc<dyn KeyAdmin>,
    ) -> Self {
        Self {
            keyring,
            store,
            admin,
            clock: Arc::new(SystemClock),
            cache_capacity: 100_000,
            cache_ttl: Duration::from_secs(30),
            negative_capacity: 10_000,
            negative_ttl: Duration::from_secs(10),
            sources: CredentialSources::default(),
            proxies: Vec::new(),
            last_used_interval: Duration::from_secs(60),
            last_used_buffer: 4096,
            limiter: None,
            quota_meter: None,
            default_rate_limit: RateLimit::Unlimited,
            environment_limits: Vec::new(),
            default_named_limits: crate::rate::NamedLimits::new(),
            failure_limit: Some(DEFAULT_FAILURE_LIMIT),
            canary_lockout: false,
            notices: None,
            audit_sinks: Vec::new(),
            audit_buffer: 65_536,
            audit_batch: 16_384,
            audit_linger: DEFAULT_LINGER,
            audit_runtime: None,
            invalidation: None,
            degraded_ttl: Duration::from_secs(1),
            stale_grace: Duration::ZERO,
        }
    }

    /// The clock for expiry checks (use [`ManualClock`](crate::clock::ManualClock) in tests).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Most keys kept in the cache.
    pub fn cache_capacity(mut self, keys: u64) -> Self {
        self.cache_capacity = keys;
        self
    }

    /// How long a cached record is used before it is read again: the bound on staleness for
    /// changes made elsewhere (changes through [`Verifier::admin`] apply at once).
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// Most unknown ids remembered (oldest out first), on top of the cache capacity: a flood
    /// of made-up ids never evicts a real key.
    pub fn negative_cache_capacity(mut self, ids: u64) -> Self {
        self.negative_capacity = ids;
        self
    }

    /// How long an unknown id is remembered; a key created elsewhere with that id (ids are
    /// random, so practically never) is refused for at most this long.
    pub fn negative_cache_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// Reads keys from header `name` (default `x-api-key`), besides `Authorization: Bearer`.
    ///
    /// # Panics
    /// If `name` is not a valid header name.
    pub fn header(mut self, name: &str) -> Self {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|_| panic!("keygate: {name:?} is not a valid header name"));
        self.sources.header = Some(name.as_str().into());
        self
    }

    /// Reads keys only from `Authorization: Bearer`, not from a named header.
    pub fn no_header(mut self) -> Self {
        self.sources.header = None;
        self
    }

    /// Whether `Authorization: Bearer` is read (default true).
    pub fn bearer(mut self, enabled: bool) -> Self {
        self.sources.bearer = enabled;
        self
    }

    /// Also accepts keys from query parameter `name`. **Off by default, and dangerous**: URLs are
    /// written to access logs, proxy and CDN logs, browser history and `Referer` headers, so keys
    /// sent this way leak. Enable it only for clients that cannot send headers, and rotate those
    /// keys often.
    pub fn allow_query_param(mut self, name: &str) -> Self {
        self.sources.query = Some(name.into());
        self
    }

    /// Longest credential header value accepted before any parsing (default 512 bytes).
    pub fn max_credential_len(mut self, bytes: usize) -> Self {
        self.sources.max_len = bytes;
        self
    }

    /// Reverse proxies whose `X-Forwarded-For` is believed (see [`crate::extract`]).
    pub fn trusted_proxies(mut self, nets: impl IntoIterator<Item = IpNet>) -> Self {
        self.proxies.extend(nets);
        self
    }

    /// How often last-used times are written to the store (default 60 s): each key is written
    /// at most once per interval, so `last_used_at` trails real use by up to this much. Zero
    /// turns last-used tracking off. See [`Verifier::flush_last_used`].
    pub fn last_used_interval(mut self, interval: Duration) -> Self {
        self.last_used_interval = interval;
        self
    }

    /// How many last-used reports may wait for the next flush (default 4 096; at most one per
    /// key per interval). When full, reports are dropped and counted
    /// ([`Verifier::last_used_stats`]); requests never wait.
    pub fn last_used_buffer(mut self, reports: usize) -> Self {
        self.last_used_buffer = reports;
        self
    }

    /// The rate limiter (default: an [`InProcessLimiter`] on this verifier's clock). Use a
    /// shared one (backed by a store every instance reaches) when several instances must enforce one limit together.
    pub fn rate_limiter(self, limiter: impl RateLimiter) -> Self {
        self.shared_rate_limiter(Arc::new(limiter))
    }

    /// [`VerifierBuilder::rate_limiter`] with a limiter already shared.
    pub fn shared_rate_limiter(mut self, limiter: Arc<dyn RateLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// The meter that counts what keys and owners spend of their [quotas](crate::quota)
    /// (default: an [`InProcessMeter`](crate::quota::InProcessMeter) that persists its counters
    /// write-behind to the store's [ledger](crate::KeyStore::quota_ledger) when the store has
    /// one, else keeps them in memory). Use a shared meter (Redis) when several instances
    /// must enforce one quota together.
    pub fn quota_meter(mut self, meter: Arc<dyn crate::quota::QuotaMeter>) -> Self {
        self.quota_meter = Some(meter);
        self
    }

    /// The rate limit of keys that have none of their own (default: unlimited).
    ///
    /// ```
    /// # use keygate::{Keyring, MemoryStore, Verifier, rate::RatePolicy};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let verifier = Verifier::builder(Keyring::development("acme_test")?, MemoryStore::new())
    ///     .default_rate_limit("100/1s burst 200".parse::<RatePolicy>()?)
    ///     .build();
    /// # Ok(()) }
    /// ```
    pub fn default_rate_limit(mut self, limit: impl Into<RateLimit>) -> Self {
        self.default_rate_limit = limit.into();
        self
    }

    /// The rate limit of keys of environment `name` that have none of their own: a key's own
    /// limit wins, then its environment's default, then the verifier's
    /// [`default_rate_limit`](Self::default_rate_limit). Resolved when a key's record is read
    /// into the cache, so it costs nothing per request.
    ///
    /// ```
    /// # use keygate::{KeyFormat, Keyring, MemoryStore, Peppers, Verifier, rate::RatePolicy};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let keyring = Keyring::builder()
    ///     .environment("live", KeyFormat::new("acme_live")?)
    ///     .environment("test", KeyFormat::new("acme_test")?)
    ///     .build(Peppers::development())?;
    /// let verifier = Verifier::builder(keyring, MemoryStore::new())
    ///     .default_rate_limit("1000/1s".parse::<RatePolicy>()?)
    ///     .environment_rate_limit("test", "25/1s".parse::<RatePolicy>()?)
    ///     .build();
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    /// If the keyring has no environment `name`: this is configuration, caught at start-up.
    pub fn environment_rate_limit(mut self, name: &str, limit: impl Into<RateLimit>) -> Self {
        let position = self
            .keyring
            .environments()
            .iter()
            .position(|e| e.name() == name)
            .unwrap_or_else(|| panic!("keygate: the keyring has no environment {name:?}"));
        if self.environment_limits.len() <= position {
            self.environment_limits.resize(position + 1, None);
        }
        self.environment_limits[position] = Some(limit.into());
        self
    }

    /// The named limit `name` of keys that have none of that name (their own `unlimited`
    /// under the name switches it off): applied on the routes that choose it with
    /// [`RouteLimit`](crate::RouteLimit). Resolved when a key's record is read into the cache.
    ///
    /// ```
    /// # use keygate::{Keyring, MemoryStore, Verifier, rate::RatePolicy};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let verifier = Verifier::builder(Keyring::development("acme_live")?, MemoryStore::new())
    ///     .default_named_limit("writes", "10/1s".parse::<RatePolicy>()?)
    ///     .build();
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    /// If `name` is not a valid [`LimitName`](crate::rate::LimitName), or this makes more
    /// than [`MAX_NAMED_LIMITS`](crate::rate::MAX_NAMED_LIMITS) defaults: configuration,
    /// caught at start-up.
    pub fn default_named_limit(mut self, name: &str, limit: impl Into<RateLimit>) -> Self {
        let parsed = crate::rate::LimitName::new(name)
            .and_then(|parsed| self.default_named_limits.set(parsed, limit.into()));
        if let Err(error) = parsed {
            panic!("keygate default_named_limit({name:?}): {error}");
        }
        self
    }

    /// How many failed attempts (a well-formed key that is unknown, has the wrong secret, or
    /// is revoked, disabled or expired) a client may make before it is answered 429 without
    /// any key check; `None` turns the limit off. Default [`DEFAULT_FAILURE_LIMIT`].
    ///
    /// Clients are told apart by address (see [`LimitKey::client`](crate::rate::LimitKey::client): IPv6 per /64), taken from
    /// the peer or, behind [`trusted_proxies`](Self::trusted_proxies), from
    /// `X-Forwarded-For`. Requests whose client address is unknown share one allowance
    /// ([`LimitKey::UnknownClient`](crate::rate::LimitKey::UnknownClient)). Behind a
    /// proxy you have not declared trusted, every client shares the proxy's address: declare
    /// it, or one attacker locks everyone out.
    pub fn failure_limit(mut self, policy: Option<RatePolicy>) -> Self {
        self.failure_limit = policy;
        self
    }

    /// Whether a request with a [canary](crate::NewKey::canary) key also spends the client's
    /// whole [failure allowance](Self::failure_limit), so its next requests (with any key) are
    /// answered 429 as after too many failed attempts. Off by default. The canary's own
    /// response is still the unknown key's `401`; only the next requests show the lockout
    /// (which tells the client its key was a decoy: choose between alerting quietly and
    /// shutting the door). No effect while the failure limit is off.
    pub fn canary_lockout(mut self, enabled: bool) -> Self {
        self.canary_lockout = enabled;
        self
    }

    /// Sends a [`Notice::CanaryTripped`](crate::notice::Notice::CanaryTripped) to `sink` when
    /// a [canary](crate::NewKey::canary) key is presented: once per key per hour
    /// ([`CANARY_OCCASION`](crate::notice::CANARY_OCCASION)) in this process. The request
    /// never waits on it ([`NoticeSink::notify`](crate::notice::NoticeSink::notify) returns at
    /// once; a webhook sink queues, and counts what its full queue drops), and the response
    /// is still exactly an unknown key's. None by default.
    pub fn notices(self, sink: impl crate::notice::NoticeSink) -> Self {
        self.shared_notices(Arc::new(sink))
    }

    /// [`VerifierBuilder::notices`] with a sink already shared.
    pub fn shared_notices(mut self, sink: Arc<dyn crate::notice::NoticeSink>) -> Self {
        self.notices = Some(sink);
        self
    }

    /// Adds an audit sink. Without any, events go to
    /// [`TracingSink`](crate::audit::TracingSink) (target `keygate::audit`, INFO): filter that
    /// target out of your subscriber and no event is even built. Add it explicitly to keep it
    /// beside another sink.
    pub fn audit_sink(self, sink: impl AuditSink) -> Self {
        self.shared_audit_sink(Arc::new(sink))
    }

    /// [`VerifierBuilder::audit_sink`] with a sink already shared.
    pub fn shared_audit_sink(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit_sinks.push(sink);
        self
    }

    /// How many audit events may wait for the sinks (default 65 536). When full, events are
    /// dropped and counted ([`Verifier::audit_stats`]); requests never wait on the sinks (a
    /// request holds the buffer's lock only to push its event). Memory is taken as events
    /// wait, not up front, and given back when the load falls.
    pub fn audit_buffer(mut self, events: usize) -> Self {
        self.audit_buffer = events;
        self
    }

    /// Most events handed to a sink in one batch (default 16 384).
    pub fn audit_batch(mut self, events: usize) -> Self {
        self.audit_batch = events;
        self
    }

    /// How long a partial batch waits for more events before it goes to the sinks (default
    /// [`DEFAULT_LINGER`](crate::audit::DEFAULT_LINGER), 500 ms; less when a whole batch is
    /// waiting); `Duration::ZERO` writes whatever has arrived at once.
    /// [`Verifier::flush_audit`] does not wait for it.
    pub fn audit_linger(mut self, linger: Duration) -> Self {
        self.audit_linger = linger;
        self
    }

    /// Runs the audit pipeline's task, and so every sink's writes, on `runtime` instead of the
    /// runtime that records the first event: for example a single-threaded runtime on a thread
    /// of its own, so that encoding and writing the trail never takes a turn on the threads
    /// that serve requests (the request path only queues each event). The runtime must outlive
    /// the verifier: once it has shut down, events wait in the buffer and are dropped, counted,
    /// when it is full.
    pub fn audit_runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.audit_runtime = Some(runtime);
        self
    }

    /// Subscribes to `channel` for changes made by other instances or the CLI (see
    /// [`crate::invalidation`]): each id received is evicted from the caches at once, and
    /// [`Verifier::admin`](super::Verifier::admin) publishes this instance's changes on it. The
    /// subscription runs on a background task started on the tokio runtime `build` is called
    /// in (or, failing that, of the first request), and subscribes again by itself when it
    /// breaks; meanwhile the [degraded TTL](Self::degraded_cache_ttl) applies.
    ///
    /// ```no_run
    /// # use keygate::{Invalidation, Keyring, MemoryStore, Verifier};
    /// # fn channel() -> std::sync::Arc<dyn Invalidation> { unimplemented!() }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let verifier = Verifier::builder(Keyring::development("acme_test")?, MemoryStore::new())
    ///     .shared_invalidation(channel()) // e.g. keygate_redis::RedisInvalidation
    ///     .build();
    /// # Ok(()) }
    /// ```
    pub fn invalidation(self, channel: impl Invalidation) -> Self {
        self.shared_invalidation(Arc::new(channel))
    }

    /// [`VerifierBuilder::invalidation`] with a channel already shared.
    pub fn shared_invalidation(mut self, channel: Arc<dyn Invalidation>) -> Self {
        self.invalidation = Some(channel);
        self
    }

    /// While the invalidation subscription is down (not yet subscribed, or broken), cached
    /// records older than this are read from the store again (default 1 s; capped at the cache
    /// TTL). This is the bound on how long a change published meanwhile, and so missed, can go
    /// unseen, once the broken subscription is noticed. Zero reads the store on every request
    /// while degraded.
    pub fn degraded_cache_ttl(mut self, ttl: Duration) -> Self {
        self.degraded_ttl = ttl;
        self
    }

    /// Stale-if-error: when the key store cannot be reached to refresh a cached record past
    /// its TTL, keep accepting that record for up to `grace` beyond the TTL (default: zero,
    /// off — such requests are answered 503).
    ///
    /// Only records that were valid when read are served so: a record known revoked, disabled
    /// or expired (checked against the clock on every request) is refused as always, and an
    /// invalidated record (revoked here or, through the [invalidation](Self::invalidation)
    /// channel, elsewhere) has left the cache. Keys never cached are answered 503. While a
    /// record is served stale, one request per second tries the store again; the requests are
    /// [`Passed::is_stale`](crate::gate::Passed::is_stale) and their audit events say so. With the
    /// grace on, a record past its TTL is refreshed by one request while concurrent requests
    /// use the cached one for the duration of that read.
    pub fn stale_if_error(mut self, grace: Duration) -> Self {
        self.stale_grace = grace;
        self
    }

    /// Builds the verifier, then checks its keyring against the key store's settings: the way
    /// to start a service. Refuses, with nothing written, when the store's keys under a
    /// configured pepper version were made with another pepper, when a real pepper is given
    /// for a development store, or the development pepper for a store that is not one, or when
    /// the store's keys use another prefix than the keyring's [`KeyFormat`](crate::KeyFormat)
    /// (see [`check_keyring`](crate::store::check_keyring)). On first use it records each
    /// pepper version's fingerprint (and, for the development pepper, that the store is a
    /// development store) and the key prefix, which the `keygate` CLI then uses by default.
    ///
    /// With a keyring of [environments](crate::keyring), the prefix checked is the default
    /// environment's, and each environment is checked and recorded too (setting
    /// `key.environment.<name>`; see [`check_keyring`](crate::store::check_keyring)): another
    /// prefix for a recorded environment, or a recorded prefix under another name, is refused.
    ///
    /// This binds the store to one prefix: services of several prefixes sharing one store
    /// use [`build`](Self::build), which does not check or record the prefix (a verifier treats
    /// a key of another prefix as unknown).
    ///
    /// ```
    /// use keygate::{KeyFormat, Keyring, MemoryStore, Peppers, Verifier};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // A service reads its peppers with `Peppers::from_env()?` (KEYGATE_PEPPER); a demo
    /// // asks for the public development pepper by name.
    /// let keyring = Keyring::new(KeyFormat::new("acme_test")?, Peppers::development());
    /// let verifier = Verifier::builder(keyring, MemoryStore::new()).start().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// [`build`](Self::build) builds without waiting: the check of the peppers (not of the
    /// prefix) then runs before the verifier's first store read or key creation, and a refusal
    /// answers every request that needs the store with 503 (logged as an error), never 401.
    ///
    /// # Errors
    /// A [`SettingsError`](crate::store::SettingsError) naming what does not match;
    /// `SettingsError::Store` when the store cannot be reached (a later start may succeed).
    pub async fn start(self) -> Result<Verifier, crate::store::SettingsError> {
        let verifier = self.build();
        let inner = &*verifier.inner;
        inner.pepper_gate.start(inner).await?;
        Ok(verifier)
    }

    /// Builds the verifier, and describes keygate's metrics (see [`crate::metrics`]) to the
    /// recorder installed now: install yours before.
    ///
    /// The peppers are checked against the store before its first read (see
    /// [`start`](Self::start), which checks at once and is the better way to start a service).
    /// The last-used flusher is started on the tokio runtime of the first successful
    /// verification (none is needed to build).
    pub fn build(self) -> Verifier {
        crate::metrics::describe();
        let degraded_ttl = self.degraded_ttl.min(self.cache_ttl);
        let subscriber = self.invalidation.map(|source| {
            let bounds = super::subscriber::Bounds::new(&*source, self.cache_ttl, degraded_ttl);
            super::Subscriber::new(source, bounds)
        });
        if subscriber.is_none() {
            crate::metrics::revocation_bound(self.cache_ttl);
        }
        let last_used = super::LastUsed::new(
            Arc::clone(&self.store),
            self.last_used_interval,
            self.last_used_buffer,
        );
        let (limiter, own_limiter): (Arc<dyn RateLimiter>, _) = match self.limiter {
            Some(limiter) => (limiter, None),
            None => {
                let own = Arc::new(
                    InProcessLimiter::builder()
                        .shared_clock(Arc::clone(&self.clock))
                        .build(),
                );
                (Arc::clone(&own) as Arc<dyn RateLimiter>, Some(own))
            }
        };
        let quota_meter = self.quota_meter.unwrap_or_else(|| {
            let meter = match Arc::clone(&self.store).quota_ledger() {
                Some(ledger) => crate::quota::InProcessMeter::builder()
                    .ledger(ledger)
                    .build(),
                None => crate::quota::InProcessMeter::new(),
            };
            Arc::new(meter)
        });
        let verifier = Verifier {
            inner: Arc::new(Inner {
                keyring: self.keyring,
                store: self.store,
                admin: self.admin,
                clock: Arc::clone(&self.clock),
                // Unknown ids are bounded apart to their share, so records always have
                // `cache_capacity`.
                cache: KeyCache::new(
                    self.cache_capacity,
                    self.negative_capacity,
                    EntryTtl {
                        // Past the fresh TTL, stale-if-error keeps the entry for its grace;
                        // the verifier judges freshness itself then.
                        known: self.cache_ttl.saturating_add(self.stale_grace),
                        unknown: self.negative_ttl,
                    },
                ),
                generations: super::Generations::default(),
                last_used,
                sources: self.sources,
                proxies: TrustedProxies::new(self.proxies),
                limiter_decides_now: limiter.decides_now(),
                limiter,
                own_limiter,
                default_rate_limit: self.default_rate_limit,
                meter_decides_now: quota_meter.decides_now(),
                quota_meter,
                environment_limits: self.environment_limits.into_boxed_slice(),
                default_named_limits: self.default_named_limits,
                failure_limit: self.failure_limit,
                canary_lockout: self.canary_lockout,
                canary_notices: self.notices.map(crate::notice::CanaryNotices::new),
                auditor: Auditor::or_tracing(
                    self.audit_sinks,
                    PipelineConfig {
                        buffer: self.audit_buffer,
                        batch: self.audit_batch,
                        linger: self.audit_linger,
                        runtime: self.audit_runtime,
                    },
                ),
                cache_ttl: self.cache_ttl,
                stale_grace: self.stale_grace,
                degraded_ttl,
                subscriber,
                pepper_gate: super::pepper_check::PepperGate::default(),
                memo: super::memo::MemoKey::random(),
            }),
        };
        if let Some(subscriber) = &verifier.inner.subscriber {
            subscriber.ensure_running(Arc::downgrade(&verifier.inner));
        }
        verifier
    }
}

impl std::fmt::Debug for VerifierBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierBuilder")
            .field("keyring", &self.keyring)
            .field("cache_capacity", &self.cache_capacity)
            .field("cache_ttl", &self.cache_ttl)
            .field("sources", &self.sources)
            .field("last_used_interval", &self.last_used_interval)
            .field("default_rate_limit", &self.default_rate_limit)
            .field("environment_limits", &self.environment_limits)
            .field("default_named_limits", &self.default_named_limits)
            .field("failure_limit", &self.failure_limit)
            .field("canary_lockout", &self.canary_lockout)
            .field("notices", &self.notices)
            .field("invalidation", &self.invalidation.is_some())
            .field("degraded_ttl", &self.degraded_ttl)
            .field("stale_grace", &self.stale_grace)
            .finish_non_exhaustive()
    }
}
