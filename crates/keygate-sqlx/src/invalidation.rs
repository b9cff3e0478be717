//! [`PostgresInvalidation`]: cross-instance cache invalidation over PostgreSQL `LISTEN/NOTIFY`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keygate::{Invalidated, Invalidation, InvalidationError, Subscription};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};

use crate::error::Error;
use crate::postgres::PostgresStore;

/// The channel [`PostgresStore`] notifies on unless told otherwise.
pub(crate) const DEFAULT_CHANNEL: &str = "keygate_keys";
/// The `application_name` of the listener's connection unless told otherwise.
const DEFAULT_APPLICATION_NAME: &str = "keygate-invalidation";
const DEFAULT_LIVENESS_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(3);
/// How long opening the listener's connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// PostgreSQL's identifier limit (`NAMEDATALEN - 1`), which also bounds channel names.
const MAX_CHANNEL_BYTES: usize = 63;

/// Checks a channel name: 1 to 63 bytes of ASCII letters, digits and `_`, not starting with a
/// digit. The name only ever travels as a bind parameter (`pg_notify`) or quoted (`LISTEN`),
/// so this is not about injection: it keeps names PostgreSQL neither truncates nor folds, so
/// `LISTEN` and `pg_notify` always mean the same channel.
pub(crate) fn channel_name(name: &str) -> Result<Arc<str>, Error> {
    let mut bytes = name.bytes();
    let plain = name.len() <= MAX_CHANNEL_BYTES
        && bytes
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain {
        Ok(Arc::from(name))
    } else {
        Err(Error::InvalidChannel(name.to_owned()))
    }
}

/// Cross-instance cache invalidation through PostgreSQL `LISTEN/NOTIFY`: every verifier
/// subscribed to the channel evicts a key as soon as a change to it commits, on any instance.
///
/// Contents: [building one](#building-one), [who publishes](#who-publishes),
/// [subscriptions and lost messages](#subscriptions-and-lost-messages),
/// [the listener's connection](#the-listeners-connection), [example](#example).
///
/// # Building one
/// - [`PostgresStore::invalidation`]: the store's pool and channel. Use this for verifiers
///   over a [`PostgresStore`].
/// - [`PostgresInvalidation::from_pool`] / [`PostgresInvalidation::connect`]: any pool or URL
///   and a channel, for processes that change keys by other paths and publish themselves.
///
/// # Who publishes
/// [`PostgresStore`] sends `pg_notify(channel, key id)` inside the transaction of every
/// management change (create, every [`KeyChange`](keygate::KeyChange), rotation — old and new
/// id —, delete). PostgreSQL delivers a notification only when its transaction commits, so a
/// subscriber never hears of a change before it can read it, and a change that fails or is
/// refused is never announced. Last-used times are not announced (they are not a management
/// change, and would evict every key in use every flush).
///
/// An invalidation built from the store therefore answers `true` to
/// [`published_by_store`](Invalidation::published_by_store), and [`keygate::Admin`] does not
/// publish a second time. One built with [`from_pool`](PostgresInvalidation::from_pool) or
/// [`connect`](PostgresInvalidation::connect) answers `false`: its
/// [`publish`](Invalidation::publish) is a plain `SELECT pg_notify(…)` on the pool, outside any
/// transaction, for changes made by other paths.
///
/// Channels are per *database*, not per schema: several keygate schemas in one database should
/// each use their own channel ([`PostgresStore::notify_channel`]), or they will evict each
/// other's ids (harmless, but wasteful).
///
/// # Subscriptions and lost messages
/// Each [`subscribe`](Invalidation::subscribe) opens a connection of its own (see below), runs
/// `LISTEN` and returns once it is in effect: every change committed afterwards is delivered.
/// A notification sent while no subscription is connected is lost (PostgreSQL does not keep
/// them), so the subscription never reconnects silently (it reads with sqlx's
/// [`PgListener::try_recv`], not `recv`): when its connection breaks, or the server ends it,
/// [`Subscription::next`] returns an error, and the verifier falls back on its degraded TTL
/// until it has subscribed again (see [`keygate::invalidation`]).
///
/// **Liveness bound.** A connection that dies without a reset (a firewall dropping state, a
/// host gone) sends no error. So when no notification has arrived for the
/// [liveness interval](PostgresInvalidation::liveness_interval) (5 s by default), the
/// subscription runs `SELECT 1` on its connection and fails unless the answer comes within the
/// [liveness timeout](PostgresInvalidation::liveness_timeout) (3 s). A silently dead
/// connection is therefore noticed within interval + timeout: **8 s by default**. A connection
/// that is closed or reset (server restart, `pg_terminate_backend`) is noticed at once.
/// The check costs one `SELECT 1` per idle interval per subscribed instance.
///
/// # The listener's connection
/// A subscription does not hold one of the store's pooled connections (that would take one
/// away from requests for good): it opens one connection of its own with the pool's connect
/// options and the `application_name` `keygate-invalidation` (change it with
/// [`application_name`](PostgresInvalidation::application_name)), so it is easy to spot in
/// `pg_stat_activity`. That connection sits idle in `LISTEN` between notifications.
/// Opening it (connecting and `LISTEN`) fails after 3 s + the liveness timeout at most.
///
/// # SQLite
/// [`SqliteStore`](crate::SqliteStore) has its own channel, read from the file's change feed:
/// [`SqliteInvalidation`](crate::SqliteInvalidation).
///
/// # Example
/// ```no_run
/// use keygate::{Keyring, Verifier};
/// use keygate_sqlx::PostgresStore;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::open("postgres://app@db.internal/app").await?;
/// let verifier = Verifier::builder(Keyring::development("acme_live")?, store.clone())
///     .invalidation(store.invalidation())
///     .build();
/// // A key revoked on any instance, or with the CLI, is refused here as soon as the revoke
/// // commits (a few milliseconds on one network).
/// # let _ = verifier;
/// # Ok(())
/// # }
/// ```
///
/// By hand (what the verifier does with it):
/// ```no_run
/// use keygate::{Invalidated, Invalidation, KeyAdmin, KeyChange, Keyring, NewKey};
/// use keygate_sqlx::PostgresStore;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::open("postgres://app@db.internal/app").await?;
/// let mut subscription = store.invalidation().subscribe().await?;
/// let created = store.create(Keyring::development("acme_live")?.mint(NewKey::new("billing"))?).await?;
/// assert_eq!(subscription.next().await?, Invalidated::Key(created.record.id));
/// store.apply(&created.record.id, KeyChange::Revoke).await?;
/// assert_eq!(subscription.next().await?, Invalidated::Key(created.record.id));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresInvalidation {
    pool: PgPool,
    channel: Arc<str>,
    published_by_store: bool,
    application_name: Arc<str>,
    liveness_interval: Duration,
    liveness_timeout: Duration,
}

impl PostgresInvalidation {
    /// Invalidation on `channel` through `pool`, for processes that change keys by paths other
    /// than [`PostgresStore`] (which notifies by itself; use [`PostgresStore::invalidation`]
    /// for it). [`published_by_store`](Invalidation::published_by_store) is `false`.
    ///
    /// # Errors
    /// [`Error::InvalidChannel`] when `channel` is not a plain name of at most 63 bytes.
    pub fn from_pool(pool: PgPool, channel: &str) -> Result<Self, Error> {
        Ok(Self::new(pool, channel_name(channel)?, false))
    }

    /// Connects to `url` (a pool of at most 2 connections) and publishes and subscribes on
    /// `channel`, like [`PostgresInvalidation::from_pool`].
    ///
    /// # Errors
    /// [`Error::InvalidChannel`]; [`Error::Connect`] when the server cannot be reached.
    pub async fn connect(url: &str, channel: &str) -> Result<Self, Error> {
        let channel = channel_name(channel)?;
        let options: PgConnectOptions = url.parse().map_err(Error::Connect)?;
        let pool = PostgresStore::pool_options()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(Error::Connect)?;
        Ok(Self::new(pool, channel, false))
    }

    pub(crate) fn from_store(pool: PgPool, channel: Arc<str>) -> Self {
        Self::new(pool, channel, true)
    }

    fn new(pool: PgPool, channel: Arc<str>, published_by_store: bool) -> Self {
        Self {
            pool,
            channel,
            published_by_store,
            application_name: Arc::from(DEFAULT_APPLICATION_NAME),
            liveness_interval: DEFAULT_LIVENESS_INTERVAL,
            liveness_timeout: DEFAULT_LIVENESS_TIMEOUT,
        }
    }

    /// The channel name.
    #[must_use]
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The `application_name` of each subscription's connection (default
    /// `keygate-invalidation`), as shown in `pg_stat_activity`. PostgreSQL truncates it to 63
    /// bytes.
    #[must_use]
    pub fn application_name(mut self, name: &str) -> Self {
        self.application_name = Arc::from(name);
        self
    }

    /// How long a subscription waits without any notification before it checks its connection
    /// with `SELECT 1` (default 5 s). Shorter notices a silently dead connection sooner, at one
    /// query per interval per subscribed instance. Values under 10 ms are raised to 10 ms.
    #[must_use]
    pub fn liveness_interval(mut self, interval: Duration) -> Self {
        self.liveness_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How long that `SELECT 1` may take before the subscription fails (default 3 s). Values
    /// under 10 ms are raised to 10 ms.
    #[must_use]
    pub fn liveness_timeout(mut self, timeout: Duration) -> Self {
        self.liveness_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// The longest a silently dead subscription goes unnoticed: liveness interval + timeout.
    #[must_use]
    pub fn liveness_bound(&self) -> Duration {
        self.liveness_interval + self.liveness_timeout
    }

    async fn listen(&self) -> Result<PgListener, sqlx::Error> {
        let options = (*self.pool.connect_options())
            .clone()
            .application_name(&self.application_name);
        // A pool of one, for this subscription alone: PgListener takes its connection from a
        // pool. The connection is held for the subscription's life, so no lifetime or idle
        // limit applies.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(options)
            .await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        // Never reconnect behind our back: a lost connection must reach the verifier as an
        // error (messages may have been lost meanwhile), and it subscribes again itself.
        listener.eager_reconnect(false);
        listener.listen(&self.channel).await?;
        Ok(listener)
    }
}

#[async_trait]
impl Invalidation for PostgresInvalidation {
    async fn publish(&self, what: Invalidated) -> Result<(), InvalidationError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&*self.channel)
            .bind(what.to_message())
            .execute(&self.pool)
            .await
            .map_err(InvalidationError::new)?;
        Ok(())
    }

    async fn subscribe(&self) -> Result<Box<dyn Subscription>, InvalidationError> {
        // Bounded as a whole: a server that accepts the connection and then stops answering
        // must not hold the verifier's re-subscription forever.
        let limit = CONNECT_TIMEOUT + self.liveness_timeout;
        let listener = tokio::time::timeout(limit, self.listen())
            .await
            .map_err(|_| InvalidationError::new(Broken::NoAnswer(limit)))?
            .map_err(InvalidationError::new)?;
        Ok(Box::new(PostgresSubscription {
            listener: Some(listener),
            channel: Arc::clone(&self.channel),
            liveness_interval: self.liveness_interval,
            liveness_timeout: self.liveness_timeout,
        }))
    }

    fn published_by_store(&self) -> bool {
        self.published_by_store
    }

    fn liveness_bound(&self) -> Option<Duration> {
        Some(PostgresInvalidation::liveness_bound(self))
    }
}

impl fmt::Debug for PostgresInvalidation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Host and database only: the connect options may carry a password.
        let options = self.pool.connect_options();
        f.debug_struct("PostgresInvalidation")
            .field("host", &options.get_host())
            .field("database", &options.get_database())
            .field("channel", &self.channel)
            .field("published_by_store", &self.published_by_store)
            .field("application_name", &self.application_name)
            .field("liveness_interval", &self.liveness_interval)
            .field("liveness_timeout", &self.liveness_timeout)
            .finish()
    }
}

/// One `LISTEN` connection. `None` once it failed: it is not used again.
struct PostgresSubscription {
    listener: Option<PgListener>,
    channel: Arc<str>,
    liveness_interval: Duration,
    liveness_timeout: Duration,
}

/// Why a subscription ended, for [`InvalidationError`].
#[derive(Debug, thiserror::Error)]
enum Broken {
    #[error("the LISTEN connection was lost; notifications may have been missed")]
    ConnectionLost,
    #[error("the LISTEN connection did not answer within {0:?}")]
    NoAnswer(Duration),
    #[error("this subscription failed earlier and is closed")]
    Closed,
}

impl PostgresSubscription {
    async fn receive(
        listener: &mut PgListener,
        interval: Duration,
        timeout: Duration,
    ) -> Result<Invalidated, InvalidationError> {
        loop {
            // `try_recv` is cancel safe (sqlx reads a message from its buffer only once it is
            // complete), so the interval may cut it short.
            match tokio::time::timeout(interval, listener.try_recv()).await {
                Ok(Ok(Some(notification))) => {
                    return Ok(Invalidated::from_message(notification.payload()));
                }
                Ok(Ok(None)) => return Err(InvalidationError::new(Broken::ConnectionLost)),
                Ok(Err(error)) => return Err(InvalidationError::new(error)),
                Err(_idle) => {
                    // Notifications arriving during the check are buffered by the listener and
                    // returned by the next `try_recv`.
                    let ping = sqlx::query("SELECT 1").execute(&mut *listener);
                    match tokio::time::timeout(timeout, ping).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => return Err(InvalidationError::new(error)),
                        Err(_) => return Err(InvalidationError::new(Broken::NoAnswer(timeout))),
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Subscription for PostgresSubscription {
    async fn next(&mut self) -> Result<Invalidated, InvalidationError> {
        let Some(listener) = self.listener.as_mut() else {
            return Err(InvalidationError::new(Broken::Closed));
        };
        let received = Self::receive(listener, self.liveness_interval, self.liveness_timeout).await;
        if received.is_err() {
            // After a lost connection the listener holds none. Otherwise sqlx's drop sends
            // UNLISTEN from a background task and returns the connection to this
            // subscription's own pool; on a silently dead connection that task waits for the
            // OS to give up on the socket, which holds nothing but the socket meanwhile.
            self.listener = None;
        }
        received
    }
}

impl fmt::Debug for PostgresSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSubscription")
            .field("channel", &self.channel)
            .field("open", &self.listener.is_some())
            .field("liveness_interval", &self.liveness_interval)
            .field("liveness_timeout", &self.liveness_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_plain_identifiers_of_at_most_63_bytes() {
        for ok in ["keygate_keys", "_x", "K", &"a".repeat(63)] {
            assert!(channel_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "with space",
            "semi;colon",
            "quote\"",
            "dash-ed",
            "é",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(channel_name(bad), Err(Error::InvalidChannel(_))),
                "{bad}"
            );
        }
    }
}
