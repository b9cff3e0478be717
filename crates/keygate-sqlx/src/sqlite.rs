//! [`SqliteStore`]: keys in one SQLite file, the embedded default.

use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use keygate::clock::Clock;
use keygate::store::KeyRehash;
use keygate::{KeyId, StoreError};
use sqlx::Sqlite;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::audit::SqlAuditSink;
use crate::codec::{self, json_array, to_micros};
use crate::error::Error;
use crate::feed::SqliteInvalidation;
use crate::store::{Dialect, SqlStore, Statement, Statements, delegate_to_sql_store};

/// Keys in a SQLite database (one file), through a small connection pool.
///
/// Contents: [opening](#opening), [migrations](SqliteStore::migrate),
/// [concurrency](#concurrent-use), [errors](#errors). Clones share the pool.
///
/// # Opening
/// [`SqliteStore::open`] creates the file if missing, sets WAL journaling, `synchronous=NORMAL`
/// and a 5 s busy timeout, and applies the embedded migrations. [`SqliteStore::connect_with`]
/// takes your own options and does not migrate; [`SqliteStore::from_pool`] wraps a pool.
///
/// ```
/// use keygate::{KeyAdmin, Keyring, NewKey, Verifier};
/// use keygate_sqlx::SqliteStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("keygate-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # let path = dir.join("sqlite-doc.db");
/// let store = SqliteStore::open(&path).await?; // e.g. "keygate.db"
/// let verifier = Verifier::builder(Keyring::development("acme_test")?, store).build();
/// let created = verifier.admin().create_key(NewKey::new("ci")).await?;
/// assert_eq!(verifier.admin().get(&created.record.id).await?.name, "ci");
/// # drop(verifier);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
///
/// # Concurrent use
/// WAL lets lookups run while a write is in progress. Writes (management, last-used flushes)
/// take SQLite's write lock up front (`BEGIN IMMEDIATE`) and wait up to the busy timeout for
/// it, so several processes may share the file; for several *hosts*, use PostgreSQL.
///
/// A verifier's own [`Admin`](keygate::Admin) evicts the keys it changes at once. Changes made
/// by another process on the same file (the CLI, another service) reach a verifier through
/// the file's change feed: build it with
/// [`.invalidation(store.invalidation())`](SqliteStore::invalidation) and they are seen within
/// about 100 ms; without it, when the cached record expires (the cache TTL, 30 s by default).
///
/// # Errors
/// Input is validated before any query; a database failure is
/// [`StoreError::Unavailable`] (503 on the request path), never a message about your input.
#[derive(Clone)]
pub struct SqliteStore {
    keys: SqlStore<SqliteDialect>,
}

/// How long a write waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections in the pool [`SqliteStore::open`] makes.
const POOL_SIZE: u32 = 4;
/// Page cache of the audit sink's connection: 16 MiB (SQLite's default is 2 MiB), room for the
/// index pages a batch touches when a few thousand keys are in use, so a batch writes them
/// without reading them back first.
const AUDIT_CACHE_KIB: u32 = 16 * 1024;
/// WAL pages after which the audit sink's commits checkpoint: 10 000 (~40 MB), not SQLite's
/// 1 000. A batch of a busy service touches about a page per key in use (the `(key_id, at)`
/// index), so with the default nearly every batch checkpointed, copying its pages into the
/// file again; a third of the sink's CPU per event in `benches/audit_sink.rs`.
const AUDIT_CHECKPOINT_PAGES: u32 = 10_000;

impl SqliteStore {
    /// The options [`SqliteStore::open`] uses for `path`: create if missing, WAL,
    /// `synchronous=NORMAL`, 5 s busy timeout, foreign keys on.
    #[must_use]
    pub fn options(path: impl AsRef<Path>) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
    }

    /// Opens (creating if missing) the database file at `path` and applies the migrations.
    ///
    /// # Errors
    /// [`Error::Connect`] when the file cannot be opened or created; [`Error::SchemaTooNew`]
    /// or [`Error::Migrate`] from [`SqliteStore::migrate`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let store = Self::connect_with(Self::options(path)).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// A private in-memory database (one connection, kept open), migrated. For tests and
    /// examples: the keys vanish with the store.
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub async fn in_memory() -> Result<Self, Error> {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(SqliteConnectOptions::new().in_memory(true))
            .await
            .map_err(Error::Connect)?;
        let store = Self::from_pool(pool);
        store.migrate().await?;
        Ok(store)
    }

    /// Opens a pool with `options` (see [`SqliteStore::options`]). Does not migrate.
    ///
    /// # Errors
    /// [`Error::Connect`].
    pub async fn connect_with(options: SqliteConnectOptions) -> Result<Self, Error> {
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options)
            .await
            .map_err(Error::Connect)?;
        Ok(Self::from_pool(pool))
    }

    /// Wraps an existing pool. Does not migrate.
    #[must_use]
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self {
            keys: SqlStore::new(pool, SqliteDialect),
        }
    }

    /// Uses `clock` for change times, rotation and state filters (tests use
    /// [`ManualClock`](keygate::clock::ManualClock)).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.keys.clock = Arc::new(clock);
        self
    }

    /// The connection pool. (Change-feed subscriptions and the audit sink connect to the file
    /// on their own, except to an in-memory database.)
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        &self.keys.pool
    }

    /// Applies the embedded migrations that are not applied yet (idempotent; safe to call on
    /// every start). Migrations are tracked in table `keygate_migrations`.
    ///
    /// # Errors
    /// [`Error::Connect`] when the file cannot be read; [`Error::SchemaTooNew`] when it was
    /// migrated by a newer keygate; [`Error::Migrate`] when a migration fails.
    pub async fn migrate(&self) -> Result<(), Error> {
        self.keys.migrate().await
    }

    /// The newest keygate migration applied to this file, `None` before the first (a new
    /// file, or one keygate never migrated).
    ///
    /// # Errors
    /// [`Error::Connect`] when the file cannot be read.
    pub async fn schema_version(&self) -> Result<Option<i64>, Error> {
        self.keys.schema_version().await
    }

    /// The newest schema version this build embeds: what [`schema_version`](Self::schema_version)
    /// reads after [`migrate`](Self::migrate), and the `known` of [`Error::SchemaTooNew`]. A
    /// deployment check compares the two (older: `migrate` has not run; newer: this build is
    /// older than the one that migrated the database).
    #[must_use]
    pub fn known_schema_version() -> i64 {
        crate::migrations::latest(&crate::migrations::sqlite())
    }

    /// The change feed of this store's file as an invalidation channel: give it to the
    /// verifier ([`VerifierBuilder::invalidation`](keygate::VerifierBuilder::invalidation)) and
    /// a key changed by any process on the file (the CLI, another service) is evicted from its
    /// cache within about 100 ms. See [`SqliteInvalidation`].
    #[must_use]
    pub fn invalidation(&self) -> SqliteInvalidation {
        // A private in-memory database exists once, in this pool: a second connection would
        // open another, empty one.
        let pool = self.pool();
        let own_connection = pool.connect_options().get_filename() != Path::new(":memory:");
        SqliteInvalidation::new(pool.clone(), own_connection)
    }

    /// A sink keeping audit events and per-day usage in this database (tables
    /// `keygate_audit_events` and `keygate_usage`), with this store's clock. See
    /// [`SqlAuditSink`] for retention and reading.
    ///
    /// The sink writes through a connection of its own to the file (one, opened on its first
    /// write, with the store's options and a 16 MiB page cache), so its cache stays warm from
    /// one batch to the next; clones of the sink share it. Its commits checkpoint the WAL
    /// every 10 000 pages (~40 MB) rather than SQLite's 1 000, so the `-wal` file grows to
    /// about that size; with `synchronous=NORMAL` the WAL is synced at checkpoints, so after
    /// a power loss or OS crash (not a crash of the process) up to that much of the latest
    /// audit trail may be missing. On a private in-memory database (no second connection can
    /// see it) the sink uses the store's pool.
    #[must_use]
    pub fn audit_sink(&self) -> SqlAuditSink {
        SqlAuditSink::sqlite(self.audit_pool(), Arc::clone(&self.keys.clock))
    }

    /// The audit sink's own connection to the file: one, kept open, so its page cache stays
    /// warm from one batch to the next (connections taking turns would each find their cache
    /// stale after the other's write, and read the indexes' pages again), with a cache large
    /// enough for the pages a batch touches. A private in-memory database has no second
    /// connection: the sink then shares the store's pool.
    fn audit_pool(&self) -> SqlitePool {
        let options = self.pool().connect_options();
        if options.get_filename() == Path::new(":memory:") {
            return self.pool().clone();
        }
        // Negative: KiB rather than pages.
        let options = (*options)
            .clone()
            .pragma("cache_size", format!("-{AUDIT_CACHE_KIB}"))
            .pragma("wal_autocheckpoint", AUDIT_CHECKPOINT_PAGES.to_string());
        // No idle timeout or lifetime: the pool then starts no maintenance task, so it can be
        // made outside a runtime; it connects on the first write.
        SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(options)
    }
}

delegate_to_sql_store!(SqliteStore);
crate::ledger::ledger_of_sql_store!(SqliteStore);

/// SQLite: times as `INTEGER` microseconds, lists as JSON text, writes under the database's
/// write lock taken up front, changes announced by the change feed's triggers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SqliteDialect;

static STATEMENTS: LazyLock<Statements> = LazyLock::new(Statements::new::<SqliteDialect>);

impl Dialect for SqliteDialect {
    type DB = Sqlite;
    type Time = i64;
    type List = String;

    // Take the write lock up front: a deferred transaction that reads, then writes, can fail
    // with SQLITE_BUSY instead of waiting. It also keeps the row read for a change as it is
    // until the commit, so rows need no lock of their own.
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const LOCK_ROW: &'static str = "";
    const JSON: &'static str = "";
    const POSITION: &'static str = "instr";
    const SCHEMA_PROBE: &'static str = "SELECT count(*) > 0 AS present FROM sqlite_master \
         WHERE type = 'table' AND name = 'keygate_migrations'";

    fn time(at: SystemTime) -> i64 {
        to_micros(at)
    }

    fn micros(time: i64) -> i64 {
        time
    }

    fn list(items: Vec<String>) -> String {
        json_array(items)
    }

    fn strings(id: &str, column: &'static str, list: String) -> Result<Vec<String>, StoreError> {
        codec::parse_json_strings(id, column, &list)
    }

    /// The change feed's triggers (migration 0006) announce every change to a key row, in the
    /// same transaction: the statement only returns the row's id.
    fn announced(sql: &str, _parameters: usize) -> String {
        format!("{sql} RETURNING id")
    }

    fn announce(&self, statement: Statement<Sqlite>, _id: &KeyId) -> Statement<Sqlite> {
        statement
    }

    fn announce_owner_keys(&self, owner: &str) -> Statement<Sqlite> {
        // The keys' rows do not change: write their feed rows here, in the change's
        // transaction, as the triggers do.
        sqlx::query(
            "INSERT INTO keygate_changes (key_id) SELECT id FROM keygate_keys WHERE owner = $1",
        )
        .bind(owner.to_owned())
    }

    fn statements() -> &'static Statements {
        &STATEMENTS
    }

    fn migrator() -> Migrator {
        crate::migrations::sqlite()
    }

    // SQLite has no arrays: one statement per row, in one transaction (each a prepared
    // statement reused from the connection's cache).

    fn last_used(used: &[(KeyId, SystemTime)]) -> Vec<Statement<Sqlite>> {
        used.iter()
            .map(|(id, at)| {
                sqlx::query(
                    "UPDATE keygate_keys SET last_used_at = $1 \
                     WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
                )
                .bind(to_micros(*at))
                .bind(id.as_str())
            })
            .collect()
    }

    fn add_settings(entries: &[(String, String)], now: SystemTime) -> Vec<Statement<Sqlite>> {
        entries
            .iter()
            .map(|(name, value)| {
                sqlx::query(
                    "INSERT INTO keygate_settings (name, value, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(name.as_str())
                .bind(value.as_str())
                .bind(to_micros(now))
            })
            .collect()
    }

    fn rehash(keys: &[KeyRehash]) -> Vec<Statement<Sqlite>> {
        keys.iter()
            .map(|key| {
                sqlx::query(
                    "UPDATE keygate_keys SET digest = $1, pepper_version = $2 \
                     WHERE id = $3 AND pepper_version = $4",
                )
                .bind(key.digest.as_bytes().as_slice())
                .bind(i64::from(key.to_version))
                .bind(key.id.as_str())
                .bind(i64::from(key.from_version))
            })
            .collect()
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options = self.pool().connect_options();
        f.debug_struct("SqliteStore")
            .field("file", &options.get_filename())
            .field("pool_size", &self.pool().size())
            .field("clock", &self.keys.clock)
            .finish()
    }
}
