//! Telling the services of each change through Redis (`--redis-url`), so they drop their
//! cached copy at once instead of within their cache TTL.

use keygate::{Invalidated, Invalidation, KeyId};
use keygate_redis::RedisInvalidation;

use crate::error::CliError;

/// Refuses a `--redis-url` that is not a Redis URL, before anything is changed. The URL is
/// not echoed: it may carry a password.
pub(crate) fn check_url(url: &str) -> Result<(), CliError> {
    keygate_redis::redis::Client::open(url)
        .map(drop)
        .map_err(|_| {
            CliError::usage(
                "bad --redis-url / KEYGATE_REDIS_URL: use redis://[:PASSWORD@]HOST[:PORT][/DB]",
            )
        })
}

/// Publishes each changed key's id on `{prefix}:invalidate`. The changes are made already, so
/// a failure is a warning, not an error: services see the change within their cache TTL.
pub(crate) async fn publish(url: &str, prefix: &str, changed: &[KeyId]) {
    if changed.is_empty() {
        return;
    }
    let result = async {
        let channel = RedisInvalidation::builder(url)
            .prefix(prefix)
            .build()
            .await
            .map_err(|e| e.to_string())?;
        for id in changed {
            // The driver's error ("redis: Connection refused …"): the warning says the rest.
            channel
                .publish(Invalidated::Key(*id))
                .await
                .map_err(|e| e.0.to_string())?;
        }
        Ok::<_, String>(())
    }
    .await;
    if let Err(error) = result {
        eprintln!(
            "keygate: warning: the change was made, but it could not be published to Redis ({error}); \
             services will see it when their cached copy expires (their cache TTL, 30 s by default)"
        );
    }
}
