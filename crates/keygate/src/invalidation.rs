//! Cross-instance cache invalidation: when a key's record changes, every verifier drops its
//! cached copy.
//!
//! A verifier caches records for its cache TTL (30 s by default). On one instance,
//! [`Verifier::admin`](crate::Verifier::admin) evicts a changed key at once. When a service runs
//! on many instances, or keys are managed from the CLI, the other processes learn of a change
//! through an [`Invalidation`] channel: the side making the change [publishes](Invalidation::publish)
//! the key's id, and every verifier built with
//! [`VerifierBuilder::invalidation`](crate::VerifierBuilder::invalidation) holds a
//! [`Subscription`] and evicts each id it receives.
//!
//! Implementations: the SQLite change feed (`keygate_sqlx::SqliteInvalidation`, rows written
//! by the change's own transaction, read by every process on the file), PostgreSQL
//! `LISTEN/NOTIFY` (`keygate_sqlx::PostgresInvalidation`, where the store notifies inside the
//! change's own transaction) and Redis pub/sub (`keygate_redis::RedisInvalidation`).
//!
//! # When the channel is down
//! Pub/sub delivers at most once: a message sent while a subscriber is disconnected is lost. So
//! while its subscription is down, a verifier treats every cached record older than its
//! *degraded TTL* (default 1 s, [`VerifierBuilder::degraded_cache_ttl`](crate::VerifierBuilder::degraded_cache_ttl))
//! as stale and reads the store again; once it has subscribed again, it empties its caches (what
//! it missed is unknown) and goes back to its normal TTL. A missed message therefore keeps a
//! revoked key alive for at most the time to notice the broken connection plus the degraded TTL.
//!
//! A connection that dies silently (no reset, no error) is only noticed by the implementation's
//! own liveness check; see each implementation's documentation for its bound.

use std::time::Duration;

use async_trait::async_trait;

use crate::key::KeyId;
use crate::store::BoxError;

/// What a subscription received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalidated {
    /// One key's record changed.
    Key(KeyId),
    /// Anything may have changed (e.g. a bulk change or an unreadable message): drop every
    /// cached record.
    All,
}

impl Invalidated {
    /// The message text for this invalidation: the key id, or `*` for all.
    #[must_use]
    pub fn to_message(&self) -> String {
        match self {
            Self::Key(id) => id.to_string(),
            Self::All => ALL.to_owned(),
        }
    }

    /// Reads a message published by [`Invalidated::to_message`]. Text that is neither a key id
    /// nor `*` reads as [`Invalidated::All`]: an unknown message cannot be ignored safely.
    #[must_use]
    pub fn from_message(text: &str) -> Self {
        match text.trim() {
            ALL => Self::All,
            id => id.parse().map_or(Self::All, Self::Key),
        }
    }
}

const ALL: &str = "*";

/// The invalidation channel could not be used (its service is unreachable, or the connection
/// broke).
#[derive(Debug, thiserror::Error)]
#[error("invalidation channel unavailable: {0}")]
pub struct InvalidationError(#[source] pub BoxError);

impl InvalidationError {
    /// Wraps a driver error.
    pub fn new(error: impl Into<BoxError>) -> Self {
        Self(error.into())
    }
}

/// A publish/subscribe channel of changed key ids. Object safe (`Arc<dyn Invalidation>`).
#[async_trait]
pub trait Invalidation: Send + Sync + 'static {
    /// Tells every subscribed verifier that `what` changed.
    ///
    /// # Errors
    /// [`InvalidationError`] when the channel is unreachable. The change itself has happened;
    /// subscribers fall back on their TTLs.
    async fn publish(&self, what: Invalidated) -> Result<(), InvalidationError>;

    /// Opens a subscription (usually its own connection). The verifier calls it again, with
    /// backoff, whenever the subscription it holds fails.
    ///
    /// # Errors
    /// [`InvalidationError`] when the channel is unreachable.
    async fn subscribe(&self) -> Result<Box<dyn Subscription>, InvalidationError>;

    /// Whether the key store itself publishes every change, inside the change's transaction
    /// (PostgreSQL's `NOTIFY`). Then [`Admin`](crate::Admin) does not publish again after a
    /// change. Default `false`.
    fn published_by_store(&self) -> bool {
        false
    }

    /// The longest a change may go unseen by a subscription that seems live: its delivery
    /// delay (a poll interval, for channels that poll) plus the time its liveness check takes
    /// to notice a subscription that died silently. The verifier's
    /// [`revocation_bound`](crate::Verifier::revocation_bound) is built from it. Default
    /// `None`: unknown, and the verifier can promise no better than its cache TTL.
    fn liveness_bound(&self) -> Option<Duration> {
        None
    }
}

/// An open subscription to an [`Invalidation`] channel.
#[async_trait]
pub trait Subscription: Send + 'static {
    /// Waits for the next invalidation.
    ///
    /// # Errors
    /// [`InvalidationError`] when the subscription broke: messages may have been lost. The
    /// subscription is not used again.
    async fn next(&mut self) -> Result<Invalidated, InvalidationError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_unknown_text_means_all() {
        let id = KeyId::random();
        let key = Invalidated::Key(id);
        assert_eq!(Invalidated::from_message(&key.to_message()), key);
        assert_eq!(
            Invalidated::from_message(&Invalidated::All.to_message()),
            Invalidated::All
        );
        assert_eq!(Invalidated::from_message("garbage"), Invalidated::All);
        assert_eq!(Invalidated::from_message(""), Invalidated::All);
    }
}
