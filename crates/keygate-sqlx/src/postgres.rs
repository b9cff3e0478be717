//! [`PostgresStore`]: keys in PostgreSQL, shared by every instance of a service.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use keygate::clock::Clock;
use keygate::store::KeyRehash;
use keygate::{KeyId, StoreError};
use sqlx::Postgres;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use time::OffsetDateTime;

use crate::audit::SqlAuditSink;
use crate::codec::to_micros;
use crate::error::Error;
use crate::invalidation::{self, PostgresInvalidation};
use crate::store::{Dialect, SqlStore, Statement, Statements, delegate_to_sql_store};

/// Keys in PostgreSQL, through a connection pool: several instances of a service share one
/// key store.
///
/// Contents: [opening](#opening), [migrations](PostgresStore::migrate),
/// [consistency](#consistency-between-instances), [errors](#errors). Clones share the pool.
///
/// # Opening
/// [`PostgresStore::open`] connects (pool of 10, 3 s acquire timeout) and applies the embedded
/// migrations; [`PostgresStore::connect_with`] takes your options and does not migrate. To keep
/// keygate's tables in their own schema, set the connection's `search_path`:
///
/// ```no_run
/// use keygate_sqlx::PostgresStore;
/// use keygate_sqlx::sqlx::postgres::PgConnectOptions;
///
/// # async fn run() -> Result<(), keygate_sqlx::Error> {
/// let options: PgConnectOptions = "postgres://app@db.internal/app".parse().map_err(keygate_sqlx::Error::Connect)?;
/// let store = PostgresStore::connect_with(options.options([("search_path", "keygate")])).await?;
/// store.migrate().await?;
/// # Ok(())
/// # }
/// ```
///
/// # Consistency between instances
/// Every write is one transaction (rotation included). Changes made through a verifier's own
/// [`Admin`](keygate::Admin) apply there at once; another instance's verifier sees a change
/// when its cached record expires (its cache TTL), or at once when it subscribes to the
/// store's [`invalidation`](PostgresStore::invalidation) channel.
///
/// # Change notifications
/// Every management change (create, [`apply`](keygate::KeyAdmin::apply) of any
/// [`KeyChange`](keygate::KeyChange), [`rotate_with`](keygate::KeyAdmin::rotate_with) — the new
/// and the old id —, delete) also calls `pg_notify(channel, id)` inside its own transaction, so
/// the notification is delivered when, and only if, the change commits. The channel is `keygate_keys` unless set with
/// [`notify_channel`](PostgresStore::notify_channel). Last-used times are not notified.
/// The call is part of the very statement that writes the key's row (`WITH … RETURNING id
/// SELECT pg_notify(…)`), so it adds no round trip; what remains is PostgreSQL queueing the
/// notification at commit. See [`PostgresInvalidation`].
///
/// # Errors
/// Input is validated before any query; a database failure (unreachable, pool exhausted,
/// refused) is [`StoreError::Unavailable`] (503 on the request path), never a message about
/// your input.
#[derive(Clone)]
pub struct PostgresStore {
    keys: SqlStore<PostgresDialect>,
}

/// How long an operation waits for a pooled connection (including connecting) before the store
/// counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
const POOL_SIZE: u32 = 10;

impl PostgresStore {
    /// Connects to `url` and applies the migrations.
    ///
    /// # Errors
    /// [`Error::Connect`]; [`Error::SchemaTooNew`] or [`Error::Migrate`] from
    /// [`PostgresStore::migrate`].
    pub async fn open(url: &str) -> Result<Self, Error> {
        let options: PgConnectOptions = url.parse().map_err(Error::Connect)?;
        let store = Self::connect_with(options).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// The pool options [`PostgresStore::connect_with`] uses: 10 connections, 3 s acquire
    /// timeout.
    #[must_use]
    pub fn pool_options() -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
    }

    /// Connects with `options`. Does not migrate.
    ///
    /// # Errors
    /// [`Error::Connect`] when the server cannot be reached or refuses the login.
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, Error> {
        let pool = Self::pool_options()
            .connect_with(options)
            .await
            .map_err(Error::Connect)?;
        Ok(Self::from_pool(pool))
    }

    /// A store whose pool connects on first use: a service can start while the database is
    /// still down (requests get 503 until it answers). Does not migrate.
    #[must_use]
    pub fn connect_lazy_with(options: PgConnectOptions) -> Self {
        Self::from_pool(Self::pool_options().connect_lazy_with(options))
    }

    /// Wraps an existing pool. Does not migrate.
    #[must_use]
    pub fn from_pool(pool: PgPool) -> Self {
        let dialect = PostgresDialect {
            channel: Arc::from(invalidation::DEFAULT_CHANNEL),
        };
        Self {
            keys: SqlStore::new(pool, dialect),
        }
    }

    /// Notifies changes on channel `name` instead of `keygate_keys`. Channels are per
    /// database: give each keygate schema sharing a database a channel of its own.
    ///
    /// # Errors
    /// [`Error::InvalidChannel`] unless `name` is 1 to 63 bytes of ASCII letters, digits and
    /// `_`, not starting with a digit (PostgreSQL's identifier limit; the name only travels as
    /// a bind parameter or quoted, never as SQL text).
    pub fn notify_channel(mut self, name: &str) -> Result<Self, Error> {
        self.keys.dialect.channel = invalidation::channel_name(name)?;
        Ok(self)
    }

    /// The channel changes are notified on.
    #[must_use]
    pub fn channel(&self) -> &str {
        &self.keys.dialect.channel
    }

    /// Cross-instance invalidation on this store's pool and channel, for
    /// [`VerifierBuilder::invalidation`](keygate::VerifierBuilder::invalidation): each verifier subscribes and
    /// evicts the keys this store (on any instance) changes. Its
    /// [`published_by_store`](keygate::Invalidation::published_by_store) is `true`, since the
    /// store already notifies inside each change's transaction.
    #[must_use]
    pub fn invalidation(&self) -> PostgresInvalidation {
        PostgresInvalidation::from_store(
            self.pool().clone(),
            Arc::clone(&self.keys.dialect.channel),
        )
    }

    /// Uses `clock` for change times, rotation and state filters.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.keys.clock = Arc::new(clock);
        self
    }

    /// The connection pool, shared with the store's [`audit_sink`](Self::audit_sink) and
    /// [`invalidation`](Self::invalidation) channel.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.keys.pool
    }

    /// Applies the embedded migrations that are not applied yet (idempotent; concurrent calls
    /// from several instances are serialised by an advisory lock). Migrations are tracked in
    /// table `keygate_migrations` of the connection's schema.
    ///
    /// # Errors
    /// [`Error::Connect`] when the server cannot be reached; [`Error::SchemaTooNew`] when the
    /// database was migrated by a newer keygate; [`Error::Migrate`] when a migration fails.
    pub async fn migrate(&self) -> Result<(), Error> {
        self.keys.migrate().await
    }

    /// The newest keygate migration applied in the connection's schema (its `search_path`),
    /// `None` before the first.
    ///
    /// # Errors
    /// [`Error::Connect`] when the server cannot be reached or refuses the query.
    pub async fn schema_version(&self) -> Result<Option<i64>, Error> {
        self.keys.schema_version().await
    }

    /// The newest schema version this build embeds: what [`schema_version`](Self::schema_version)
    /// reads after [`migrate`](Self::migrate), and the `known` of [`Error::SchemaTooNew`]. A
    /// deployment check compares the two (older: `migrate` has not run; newer: this build is
    /// older than the one that migrated the database).
    #[must_use]
    pub fn known_schema_version() -> i64 {
        crate::migrations::latest(&crate::migrations::postgres())
    }

    /// A sink keeping audit events and per-day usage in this database (tables
    /// `keygate_audit_events` and `keygate_usage`), sharing this store's pool and clock. See
    /// [`SqlAuditSink`] for retention and reading.
    #[must_use]
    pub fn audit_sink(&self) -> SqlAuditSink {
        SqlAuditSink::postgres(self.pool().clone(), Arc::clone(&self.keys.clock))
    }
}

delegate_to_sql_store!(PostgresStore);
crate::ledger::ledger_of_sql_store!(PostgresStore);

pub(crate) fn timestamp(at: SystemTime) -> OffsetDateTime {
    let micros = to_micros(at);
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).unwrap_or(if micros < 0 {
        OffsetDateTime::UNIX_EPOCH
    } else {
        far_future()
    })
}

fn far_future() -> OffsetDateTime {
    // 9999-12-31T00:00:00Z: later than any expiry anyone means.
    OffsetDateTime::from_unix_timestamp(253_402_214_400).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(crate) fn micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// PostgreSQL: times as `timestamptz`, lists as `text[]`, rows locked for a change with
/// `FOR UPDATE`, changes announced with `pg_notify` on the store's channel in the statement
/// that writes the key's row.
#[derive(Clone, Debug)]
pub(crate) struct PostgresDialect {
    /// The channel changes are notified on.
    pub(crate) channel: Arc<str>,
}

static STATEMENTS: LazyLock<Statements> = LazyLock::new(Statements::new::<PostgresDialect>);

impl Dialect for PostgresDialect {
    type DB = Postgres;
    type Time = OffsetDateTime;
    type List = Vec<String>;

    const BEGIN_WRITE: &'static str = "BEGIN";
    const LOCK_ROW: &'static str = " FOR UPDATE";
    const JSON: &'static str = "::jsonb";
    const POSITION: &'static str = "strpos";
    const SCHEMA_PROBE: &'static str =
        "SELECT to_regclass('keygate_migrations') IS NOT NULL AS present";

    fn time(at: SystemTime) -> OffsetDateTime {
        timestamp(at)
    }

    fn micros(time: OffsetDateTime) -> i64 {
        micros(time)
    }

    fn list(items: Vec<String>) -> Vec<String> {
        items
    }

    fn strings(
        _id: &str,
        _column: &'static str,
        list: Vec<String>,
    ) -> Result<Vec<String>, StoreError> {
        Ok(list)
    }

    /// The statement as a `WITH` clause whose `RETURNING id` feeds `pg_notify(channel, id)`:
    /// the notification belongs to the change's transaction (delivered at commit, dropped on
    /// rollback) and costs no extra round trip.
    fn announced(sql: &str, parameters: usize) -> String {
        let channel = parameters + 1;
        let message = parameters + 2;
        format!(
            "WITH changed AS ({sql} RETURNING id) \
             SELECT pg_notify(${channel}, ${message})::text FROM changed"
        )
    }

    fn announce(&self, statement: Statement<Postgres>, id: &KeyId) -> Statement<Postgres> {
        statement
            .bind(&*self.channel)
            .bind(keygate::Invalidated::Key(*id).to_message())
    }

    fn announce_owner_keys(&self, owner: &str) -> Statement<Postgres> {
        // The keys' rows do not change: notify each here, in the change's transaction.
        sqlx::query("SELECT pg_notify($2, id)::text FROM keygate_keys WHERE owner = $1")
            .bind(owner.to_owned())
            .bind(self.channel.to_string())
    }

    fn statements() -> &'static Statements {
        &STATEMENTS
    }

    fn migrator() -> Migrator {
        crate::migrations::postgres()
    }

    // One statement a batch, over arrays: one round trip, one statement text whatever the
    // batch's size.

    fn last_used(used: &[(KeyId, SystemTime)]) -> Vec<Statement<Postgres>> {
        let ids: Vec<&str> = used.iter().map(|(id, _)| id.as_str()).collect();
        let times: Vec<OffsetDateTime> = used.iter().map(|(_, at)| timestamp(*at)).collect();
        vec![
            sqlx::query(
                "UPDATE keygate_keys AS k SET last_used_at = u.at \
                 FROM UNNEST($1::text[], $2::timestamptz[]) AS u(id, at) \
                 WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
            )
            .bind(ids)
            .bind(times),
        ]
    }

    fn add_settings(entries: &[(String, String)], now: SystemTime) -> Vec<Statement<Postgres>> {
        let names: Vec<&str> = entries.iter().map(|(name, _)| name.as_str()).collect();
        let values: Vec<&str> = entries.iter().map(|(_, value)| value.as_str()).collect();
        vec![
            sqlx::query(
                "INSERT INTO keygate_settings (name, value, created_at) \
                 SELECT n, v, $3::timestamptz FROM UNNEST($1::text[], $2::text[]) AS s(n, v) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(names)
            .bind(values)
            .bind(timestamp(now)),
        ]
    }

    fn rehash(keys: &[KeyRehash]) -> Vec<Statement<Postgres>> {
        let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        let from: Vec<i64> = keys.iter().map(|k| i64::from(k.from_version)).collect();
        let to: Vec<i64> = keys.iter().map(|k| i64::from(k.to_version)).collect();
        let digests: Vec<Vec<u8>> = keys.iter().map(|k| k.digest.as_bytes().to_vec()).collect();
        vec![
            sqlx::query(
                "UPDATE keygate_keys AS k SET digest = u.digest, pepper_version = u.to_version \
                 FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bytea[]) \
                 AS u(id, from_version, to_version, digest) \
                 WHERE k.id = u.id AND k.pepper_version = u.from_version",
            )
            .bind(ids)
            .bind(from)
            .bind(to)
            .bind(digests),
        ]
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Host and database only: the URL may carry a password.
        let options = self.pool().connect_options();
        f.debug_struct("PostgresStore")
            .field("host", &options.get_host())
            .field("database", &options.get_database())
            .field("pool_size", &self.pool().size())
            .field("channel", &self.channel())
            .field("clock", &self.keys.clock)
            .finish()
    }
}
