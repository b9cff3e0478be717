//! [`SqliteInvalidation`]: cache invalidation for every process on one SQLite file, from the
//! store's change feed (table `keygate_changes`).

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use keygate::{Invalidated, Invalidation, InvalidationError, Subscription};
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{ConnectOptions, SqliteExecutor};
use tokio::time::Instant;

const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);
const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_millis(500);
/// Rows read per query; a longer backlog is read in several queries, without waiting between.
const BATCH: usize = 512;

/// Cache invalidation on one SQLite file: every verifier subscribed evicts a key soon after a
/// change to it commits, in any process on the file (other services, the `keygate` CLI).
///
/// Contents: [how changes travel](#how-changes-travel), [the revocation bound](#the-revocation-bound),
/// [cost](#cost), [example](#example).
///
/// # How changes travel
/// Every change to a key writes a row (its id) to table `keygate_changes`, in the transaction
/// that changes the key: triggers on `keygate_keys` do it, so no writer can forget, and a
/// change that fails or rolls back is never announced (as with PostgreSQL's `pg_notify`).
/// Creations, every [`KeyChange`](keygate::KeyChange), rotations (old and new id) and
/// deletions are announced; last-used times and re-hashing under a new pepper are not.
///
/// A [subscription](Invalidation::subscribe) remembers the newest row when it opens, then
/// reads the rows after it every [poll interval](SqliteInvalidation::poll_interval) (100 ms by
/// default) and hands each id to the verifier. Rows are numbered without holes, so a
/// subscription that finds one (rows it had not read were pruned: the table keeps the newest
/// 10,000) answers [`Invalidated::All`] and the verifier empties its cache.
///
/// [`SqliteStore::invalidation`](crate::SqliteStore::invalidation) answers `true` to
/// [`published_by_store`](Invalidation::published_by_store), so [`keygate::Admin`] does not
/// publish a second time. [`publish`](Invalidation::publish) writes a row itself, for changes
/// made by other paths (`Invalidated::All` is a row with no id).
///
/// # The revocation bound
/// While the subscription works, a change is seen within one poll interval of its commit
/// (plus the time to evict). Each poll must answer within the
/// [liveness timeout](SqliteInvalidation::liveness_timeout) (500 ms); one that fails or does
/// not answer ends the subscription with an error, and the verifier falls back on its
/// degraded TTL until it has subscribed again (see [`keygate::invalidation`]). So a change
/// goes unseen for at most [`liveness_bound`](SqliteInvalidation::liveness_bound) (interval +
/// timeout, 600 ms by default) or the degraded TTL (1 s by default), whichever is longer:
/// [`Verifier::revocation_bound`](keygate::Verifier::revocation_bound) reports it.
///
/// # Cost
/// A subscription holds one SQLite connection of its own (not one of the store's pooled
/// connections), which runs one indexed query per poll interval: about 10 queries a second,
/// each reading one page of the table. A store opened with
/// [`SqliteStore::in_memory`](crate::SqliteStore::in_memory) cannot be opened twice, so its
/// subscriptions poll through the store's pool instead.
///
/// # Example
/// ```
/// use keygate::{KeyAdmin, KeyChange, Keyring, NewKey, Verifier};
/// use keygate_sqlx::SqliteStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("keygate-feed-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # let path = dir.join("feed-doc.db");
/// let store = SqliteStore::open(&path).await?; // e.g. "keygate.db"
/// let verifier = Verifier::builder(Keyring::development("acme_test")?, store.clone())
///     .invalidation(store.invalidation())
///     .build();
/// // A key revoked by another process on the same file (the CLI, another service) is refused
/// // here within about 100 ms.
/// # drop(verifier);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteInvalidation {
    pool: SqlitePool,
    /// Whether subscriptions open a connection of their own (a file) or poll through the pool
    /// (a private in-memory database, which a second connection would not see).
    own_connection: bool,
    poll_interval: Duration,
    liveness_timeout: Duration,
}

impl SqliteInvalidation {
    pub(crate) fn new(pool: SqlitePool, own_connection: bool) -> Self {
        Self {
            pool,
            own_connection,
            poll_interval: DEFAULT_POLL_INTERVAL,
            liveness_timeout: DEFAULT_LIVENESS_TIMEOUT,
        }
    }

    /// How often a subscription reads the new rows of the change feed (default 100 ms). Values
    /// under 1 ms are raised to 1 ms.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long one read of the feed may take before the subscription fails (default 500 ms).
    /// Values under 10 ms are raised to 10 ms.
    #[must_use]
    pub fn liveness_timeout(mut self, timeout: Duration) -> Self {
        self.liveness_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// The longest a change goes unseen, or a failed subscription unnoticed: poll interval +
    /// liveness timeout.
    #[must_use]
    pub fn liveness_bound(&self) -> Duration {
        self.poll_interval + self.liveness_timeout
    }

    async fn open(&self) -> Result<SqliteSubscription, sqlx::Error> {
        let mut connection = if self.own_connection {
            Some(self.pool.connect_options().connect().await?)
        } else {
            None
        };
        // The last number handed out so far (rows may have been pruned since): everything
        // after it is news.
        let last_query = sqlx::query_scalar::<_, i64>(
            "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'keygate_changes'",
        );
        let last = match connection.as_mut() {
            Some(connection) => last_query.fetch_one(connection).await?,
            None => last_query.fetch_one(&self.pool).await?,
        };
        Ok(SqliteSubscription {
            connection,
            pool: self.pool.clone(),
            last,
            pending: VecDeque::new(),
            next_poll: Instant::now() + self.poll_interval,
            poll_interval: self.poll_interval,
            liveness_timeout: self.liveness_timeout,
            closed: false,
        })
    }
}

#[async_trait]
impl Invalidation for SqliteInvalidation {
    async fn publish(&self, what: Invalidated) -> Result<(), InvalidationError> {
        let key_id = match what {
            Invalidated::Key(id) => Some(id.to_string()),
            _ => None,
        };
        let insert = sqlx::query("INSERT INTO keygate_changes (key_id) VALUES (?)")
            .bind(key_id)
            .execute(&self.pool);
        tokio::time::timeout(self.liveness_timeout, insert)
            .await
            .map_err(|_| InvalidationError::new(Broken::NoAnswer(self.liveness_timeout)))?
            .map_err(InvalidationError::new)?;
        Ok(())
    }

    async fn subscribe(&self) -> Result<Box<dyn Subscription>, InvalidationError> {
        let subscription = tokio::time::timeout(self.liveness_timeout, self.open())
            .await
            .map_err(|_| InvalidationError::new(Broken::NoAnswer(self.liveness_timeout)))?
            .map_err(InvalidationError::new)?;
        Ok(Box::new(subscription))
    }

    fn published_by_store(&self) -> bool {
        true
    }

    fn liveness_bound(&self) -> Option<Duration> {
        Some(SqliteInvalidation::liveness_bound(self))
    }
}

impl fmt::Debug for SqliteInvalidation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteInvalidation")
            .field("file", &self.pool.connect_options().get_filename())
            .field("own_connection", &self.own_connection)
            .field("poll_interval", &self.poll_interval)
            .field("liveness_timeout", &self.liveness_timeout)
            .finish()
    }
}

/// Why a subscription ended, for [`InvalidationError`].
#[derive(Debug, thiserror::Error)]
enum Broken {
    #[error("the SQLite change feed did not answer within {0:?}")]
    NoAnswer(Duration),
    #[error("this subscription failed earlier and is closed")]
    Closed,
}

/// One reader of the change feed (only ever seen as a `Box<dyn Subscription>`, which has no
/// `Debug`).
struct SqliteSubscription {
    /// Its own connection; `None`: poll through the pool.
    connection: Option<SqliteConnection>,
    pool: SqlitePool,
    /// The number of the last row read (or of the last number handed out when it opened).
    last: i64,
    /// Read but not yet returned.
    pending: VecDeque<Invalidated>,
    next_poll: Instant,
    poll_interval: Duration,
    liveness_timeout: Duration,
    closed: bool,
}

impl SqliteSubscription {
    /// Reads the rows after the last one seen into `pending`; returns how many it read.
    async fn poll(&mut self) -> Result<usize, InvalidationError> {
        let last = self.last;
        let read = async {
            match self.connection.as_mut() {
                Some(connection) => read_after(&mut *connection, last).await,
                None => read_after(&self.pool, last).await,
            }
        };
        let rows = tokio::time::timeout(self.liveness_timeout, read)
            .await
            .map_err(|_| InvalidationError::new(Broken::NoAnswer(self.liveness_timeout)))?
            .map_err(InvalidationError::new)?;
        for (seq, key_id) in &rows {
            if *seq != self.last + 1 {
                // Rows this subscription never read were pruned: what changed is unknown.
                self.pending.push_back(Invalidated::All);
            }
            self.last = *seq;
            self.pending.push_back(
                key_id
                    .as_deref()
                    .map_or(Invalidated::All, Invalidated::from_message),
            );
        }
        Ok(rows.len())
    }
}

async fn read_after<'e>(
    executor: impl SqliteExecutor<'e>,
    last: i64,
) -> Result<Vec<(i64, Option<String>)>, sqlx::Error> {
    sqlx::query_as("SELECT seq, key_id FROM keygate_changes WHERE seq > ? ORDER BY seq LIMIT 512")
        .bind(last)
        .fetch_all(executor)
        .await
}

#[async_trait]
impl Subscription for SqliteSubscription {
    async fn next(&mut self) -> Result<Invalidated, InvalidationError> {
        loop {
            if self.closed {
                return Err(InvalidationError::new(Broken::Closed));
            }
            if let Some(what) = self.pending.pop_front() {
                return Ok(what);
            }
            tokio::time::sleep_until(self.next_poll).await;
            match self.poll().await {
                // A full batch: there may be more, read them now.
                Ok(read) if read >= BATCH => {}
                Ok(_) => self.next_poll = Instant::now() + self.poll_interval,
                Err(error) => {
                    // Not used again (a hung connection is dropped, not waited for).
                    self.closed = true;
                    self.connection = None;
                    return Err(error);
                }
            }
        }
    }
}
