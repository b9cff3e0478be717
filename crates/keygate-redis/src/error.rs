//! The crate's error type.

use std::time::Duration;

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis refused the connection or the command, or the connection broke.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time (see the builders' `response_timeout`).
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered something keygate's script or command never returns.
    #[error("unexpected reply from redis: {0}")]
    UnexpectedReply(String),
    /// The pub/sub connection closed (the server went away, or the connection was killed).
    #[error("the redis pub/sub connection closed")]
    Closed,
}

/// Runs `future` for at most `limit`.
pub(crate) async fn within<T>(
    limit: Duration,
    future: impl Future<Output = Result<T, redis::RedisError>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result.map_err(Error::from),
        Err(_) => Err(Error::Timeout(limit)),
    }
}
