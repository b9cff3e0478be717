//! The service of the multi-instance example: configuration from the environment, one
//! instance's verifier (PostgreSQL keys, Redis rate limits, PostgreSQL or Redis invalidation)
//! and its axum app. `main.rs` serves it; `tests/` runs two instances side by side.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use keygate::rate::RatePolicy;
use keygate::verifier::DEFAULT_FAILURE_LIMIT;
use keygate::{Invalidation, KeyFormat, Keyring, Peppers, Verifier};
use keygate_axum::Identity;
use keygate_redis::{FailurePolicy, RedisInvalidation, RedisRateLimiter};
use keygate_sqlx::PostgresStore;

/// A boxed error for the example's set-up.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Which channel carries key changes to the other instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// PostgreSQL `LISTEN/NOTIFY`: the store notifies inside each change's transaction.
    Postgres,
    /// Redis pub/sub: whoever changes a key publishes it (the CLI with `--redis-url`).
    Redis,
}

/// One instance's configuration (the same on every instance).
#[derive(Clone)]
pub struct Config {
    /// `KEYGATE_DATABASE_URL`: the PostgreSQL every instance shares.
    pub database_url: String,
    /// `KEYGATE_REDIS_URL`: the Redis every instance shares.
    pub redis_url: String,
    /// `KEYGATE_INVALIDATION`: `postgres` (default) or `redis`.
    pub channel: Channel,
    /// `KEYGATE_PREFIX`: the key prefix (default `kg`, as the CLI's).
    pub prefix: String,
    /// `KEYGATE_PEPPER` (required): `VERSION:SECRET[,…]`, current first, the same on every
    /// instance and for the CLI; `development` for the public development pepper.
    pub peppers: Peppers,
    /// `KEYGATE_REDIS_PREFIX`: namespace of everything kept in Redis (default `keygate`).
    pub redis_prefix: String,
    /// `KEYGATE_CACHE_TTL_SECS`: the cache TTL (default 30 s).
    pub cache_ttl: Duration,
    /// `KEYGATE_STALE_IF_ERROR_SECS`: stale-if-error grace (default 0, off).
    pub stale_if_error: Duration,
    /// `KEYGATE_RATE_LIMITER_FAIL_CLOSED=1`: answer 503 instead of allowing when Redis is down.
    pub fail_closed: bool,
    /// `KEYGATE_FAILURE_LIMIT`: failed attempts allowed per client (a policy like `10/1m burst
    /// 20`, the default, or `off`).
    pub failure_limit: Option<RatePolicy>,
}

impl std::fmt::Debug for Config {
    // The URLs may carry passwords.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("channel", &self.channel)
            .field("prefix", &self.prefix)
            .field("peppers", &self.peppers)
            .field("redis_prefix", &self.redis_prefix)
            .field("cache_ttl", &self.cache_ttl)
            .field("stale_if_error", &self.stale_if_error)
            .field("fail_closed", &self.fail_closed)
            .field("failure_limit", &self.failure_limit)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads the configuration from the environment (names on the fields).
    ///
    /// # Errors
    /// A variable that is missing or cannot be read.
    pub fn from_env() -> Result<Self, Error> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let secs = |name: &str, default: u64| -> Result<Duration, Error> {
            Ok(Duration::from_secs(match var(name) {
                Some(v) => v.parse().map_err(|e| format!("{name}: {e}"))?,
                None => default,
            }))
        };
        Ok(Self {
            database_url: var("KEYGATE_DATABASE_URL")
                .ok_or("KEYGATE_DATABASE_URL is not set (postgres://user@host/db)")?,
            redis_url: var("KEYGATE_REDIS_URL")
                .ok_or("KEYGATE_REDIS_URL is not set (redis://host:6379)")?,
            channel: match var("KEYGATE_INVALIDATION").as_deref() {
                None | Some("postgres") => Channel::Postgres,
                Some("redis") => Channel::Redis,
                Some(other) => {
                    return Err(format!(
                        "KEYGATE_INVALIDATION: {other:?} is not postgres or redis"
                    )
                    .into());
                }
            },
            prefix: var("KEYGATE_PREFIX").unwrap_or_else(|| "kg".to_owned()),
            peppers: Peppers::from_env().map_err(|e| {
                format!("{e}: set KEYGATE_PEPPER to VERSION:SECRET (or `development` for a demo)")
            })?,
            redis_prefix: var("KEYGATE_REDIS_PREFIX").unwrap_or_else(|| "keygate".to_owned()),
            cache_ttl: secs("KEYGATE_CACHE_TTL_SECS", 30)?,
            stale_if_error: secs("KEYGATE_STALE_IF_ERROR_SECS", 0)?,
            fail_closed: var("KEYGATE_RATE_LIMITER_FAIL_CLOSED").is_some_and(|v| v == "1"),
            failure_limit: match var("KEYGATE_FAILURE_LIMIT").as_deref() {
                None => Some(DEFAULT_FAILURE_LIMIT),
                Some("off") => None,
                Some(policy) => Some(
                    policy
                        .parse()
                        .map_err(|e| format!("KEYGATE_FAILURE_LIMIT: {e}"))?,
                ),
            },
        })
    }
}

/// Builds one instance's verifier: connects to PostgreSQL (migrating the schema); Redis is
/// connected to on first use, so the instance starts while Redis is down (limits follow the
/// failure policy, invalidation runs degraded, until Redis answers). Every instance has its
/// own connections and its own subscription.
///
/// # Errors
/// PostgreSQL cannot be reached at start, the Redis URL is invalid, `KEYGATE_PEPPER` is unset
/// or invalid, or it does not match the pepper fingerprints the store recorded.
pub async fn verifier(config: &Config) -> Result<Verifier, Error> {
    let keyring = Keyring::new(KeyFormat::new(&config.prefix)?, config.peppers.clone());
    let store = PostgresStore::open(&config.database_url).await?;
    let limiter = RedisRateLimiter::builder(config.redis_url.as_str())
        .prefix(config.redis_prefix.clone())
        .failure_policy(if config.fail_closed {
            FailurePolicy::Closed
        } else {
            FailurePolicy::Open
        })
        .build()
        .await?;
    let channel: std::sync::Arc<dyn Invalidation> = match config.channel {
        Channel::Postgres => std::sync::Arc::new(store.invalidation()),
        Channel::Redis => std::sync::Arc::new(
            RedisInvalidation::builder(config.redis_url.as_str())
                .prefix(config.redis_prefix.clone())
                .build()
                .await?,
        ),
    };
    let audit = store.audit_sink();
    Ok(Verifier::builder(keyring, store)
        .rate_limiter(limiter)
        .shared_invalidation(channel)
        .cache_ttl(config.cache_ttl)
        .stale_if_error(config.stale_if_error)
        .failure_limit(config.failure_limit)
        .audit_sink(audit)
        .start()
        .await?)
}

/// The instance's routes: `/` public, `/hello` behind the key layer (with `RateLimit`
/// headers), `/healthz` for the load balancer.
pub fn app(verifier: Verifier, instance: &str) -> Router {
    let name: std::sync::Arc<str> = instance.into();
    let protected = Router::new()
        .route("/hello", get(hello))
        .route_layer(keygate_axum::layer(verifier.clone()).rate_limit_headers());
    Router::new()
        .route("/", get(|| async { "public: no key needed\n" }))
        .route("/healthz", get(health))
        .merge(protected)
        .with_state(Shared { verifier, name })
}

#[derive(Clone)]
struct Shared {
    verifier: Verifier,
    name: std::sync::Arc<str>,
}

async fn hello(State(shared): State<Shared>, identity: Identity) -> String {
    format!(
        "hello from {}, {} (key {})\n",
        shared.name,
        identity.name(),
        identity.key_id()
    )
}

/// The instance's state, for operators and dashboards. Always 200: taking instances out of
/// the load balancer while their subscription is down would turn a Redis or PostgreSQL blip
/// into an outage of every instance, and a degraded instance is still correct (it re-reads
/// records after the degraded TTL).
async fn health(State(shared): State<Shared>) -> Json<serde_json::Value> {
    let audit = shared.verifier.audit_stats();
    Json(serde_json::json!({
        "instance": &*shared.name,
        "invalidation_subscribed": shared.verifier.invalidation_subscribed().unwrap_or(false),
        "audit_events_dropped": audit.dropped,
        "audit_events_lost": audit.lost,
    }))
}
