//! Rate limits: per-key policies, and the limiters that enforce them.
//!
//! - [`RatePolicy`]: `requests/period[ burst n]`, enforced as a GCRA; [`RateLimit`] is a key's
//!   own setting (a policy, or unlimited). Keys without one get the verifier's default
//!   ([`VerifierBuilder::default_rate_limit`](crate::VerifierBuilder::default_rate_limit)).
//! - [`RateLimiter`]: the trait the verifier checks requests with; [`InProcessLimiter`] is the
//!   default (one process); a shared implementation holds one limit across instances.
//! - [`NamedLimits`]: several limits per key or owner (`reads: 100/1s`, `writes: 10/1s`),
//!   each chosen per route with [`RouteLimit`](crate::RouteLimit) and reported as its own
//!   item of the `RateLimit` fields.
//! - [`RateDecision`]: the answer, and the `RateLimit-Policy` / `RateLimit` / `Retry-After`
//!   header values it maps to.
//!
//! # What is counted
//! - A **valid key**'s requests count against its policy, after the key, its state and its
//!   client restriction are checked. Refused requests never consume a key's allowance, so a
//!   stranger guessing secrets for a known id cannot exhaust its owner's limit.
//! - **Failed attempts** (a well-formed key that is unknown, has the wrong secret, or is
//!   revoked, disabled or expired) count against the client's address
//!   ([`LimitKey::client`]); past the verifier's failure limit
//!   ([`VerifierBuilder::failure_limit`](crate::VerifierBuilder::failure_limit)) the client is
//!   answered 429 before any hashing or store access. Malformed keys are refused for free
//!   before this and are not counted.

pub(crate) mod in_process;
mod limiter;
mod named;
mod policy;

pub use in_process::{InProcessLimiter, InProcessLimiterBuilder};
pub use limiter::{HeldLimit, LimitKey, LimiterError, RateDecision, RateLimiter};
pub use named::{
    InvalidNamedLimit, LimitName, MAX_LIMIT_NAME, MAX_NAMED_LIMITS, NamedLimits, parse_entry,
};
pub use policy::{InvalidRatePolicy, MAX_PERIOD, MAX_REQUESTS, RateLimit, RatePolicy};
