//! Redis for keygate, when one instance is no longer enough:
//!
//! - [`RedisRateLimiter`]: one rate limit per key (and one failed-attempt limit per client)
//!   shared by every instance, decided by a GCRA script in one round trip on Redis's clock;
//!   the verifier's "is this client locked out?" pre-check is answered from the lockouts this
//!   instance has learned, so a request costs one round trip, not two; fails open (or closed,
//!   [`FailurePolicy`]) when Redis is unreachable.
//! - [`RedisQuotaMeter`]: quotas (`10000/day`, credits with refill) counted in Redis, so that
//!   every instance spends from one balance per key and per owner, exactly: one Lua script per
//!   charge spends from the key's and the owner's lines atomically, all or nothing; an outage
//!   answers 503, never lifts a quota.
//! - [`RedisInvalidation`]: when a key changes, every instance's verifier drops its cached
//!   record, through Redis pub/sub.
//!
//! # Example
//! ```no_run
//! use keygate::rate::RatePolicy;
//! use keygate::{KeyAdmin, KeyFormat, Keyring, MemoryStore, Peppers, Verifier};
//! use keygate_redis::{RedisInvalidation, RedisRateLimiter};
//!
//! # async fn run(id: keygate::KeyId) -> Result<(), Box<dyn std::error::Error>> {
//! let url = "redis://127.0.0.1:6379";
//! let limiter = RedisRateLimiter::builder(url).prefix("acme").build().await?;
//! let invalidation = RedisInvalidation::builder(url).prefix("acme").build().await?;
//! let keyring = Keyring::new(KeyFormat::new("acme_live")?, Peppers::from_env()?);
//! let verifier = Verifier::builder(keyring, MemoryStore::new())
//!     .rate_limiter(limiter)
//!     .invalidation(invalidation)
//!     .default_rate_limit("100/1s burst 200".parse::<RatePolicy>()?)
//!     .start()
//!     .await?;
//!
//! // Published on acme:invalidate: every instance's verifier drops its cached copy.
//! verifier.admin().revoke(&id).await?;
//! # Ok(())
//! # }
//! ```
//!
//! All take a URL or a configured [`redis::Client`] ([`RedisTarget`]), and name everything
//! they keep under one prefix (default `keygate`): rate-limit keys `keygate:rl:…`, quota counters
//! `keygate:quota:…`, the channel `keygate:invalidate`.
//!
//! Neither connects when it is built: a service starts while Redis is down (limits follow the
//! [`FailurePolicy`], invalidation runs degraded) and recovers by itself once Redis is up. Only
//! an invalid URL fails `build()`.

mod connection;
mod error;
mod gcra;
mod invalidation;
mod limiter;
mod lockouts;
mod quota;
mod target;

pub use error::Error;
pub use invalidation::{RedisInvalidation, RedisInvalidationBuilder};
pub use limiter::{
    DEFAULT_LOCAL_LOCKOUT_CAPACITY, FAIL_OPEN, FailurePolicy, RedisRateLimiter,
    RedisRateLimiterBuilder,
};
pub use quota::{PERIOD_KEY_MARGIN, RedisQuotaMeter, RedisQuotaMeterBuilder};
pub use target::RedisTarget;

/// The decoders of what Redis sends back, for keygate's fuzz targets (`fuzz/` in the
/// repository). Not public API: no stability promise.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::gcra::reply_decision;
    pub use crate::invalidation::message_payload;
}

/// The `redis` crate keygate-redis is built on, for configuring a [`redis::Client`].
pub use redis;
