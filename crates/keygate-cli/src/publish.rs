//! `--redis-url`: the services' Redis invalidation channel. The management handle
//! ([`keygate::Admin`]) publishes every change on it, so services drop their cached copy at
//! once instead of within their cache TTL.

use crate::error::CliError;

/// What a bad `--redis-url` is told. The URL is not echoed: it may carry a password.
pub(crate) const BAD_URL: &str =
    "bad --redis-url / KEYGATE_REDIS_URL: use redis://[:PASSWORD@]HOST[:PORT][/DB]";

/// Refuses a `--redis-url` that is not a Redis URL, before anything is changed.
pub(crate) fn check_url(url: &str) -> Result<(), CliError> {
    keygate_redis::redis::Client::open(url)
        .map(drop)
        .map_err(|_| CliError::usage(BAD_URL))
}
