//! [`PostgresStore`]: keys in PostgreSQL, shared by every instance of a service.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use keygate::clock::{Clock, SystemClock};
use keygate::store::{KeyFilter, KeyPage, KeyRehash, PageRequest, StoreSettings};
use keygate::{
    CreatedKey, KeyAdmin, KeyChange, KeyId, KeyRecord, KeyStore, MintedKey, RotatedKey, Rotation,
    StoreError,
};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};
use time::OffsetDateTime;

use crate::audit::SqlAuditSink;
use crate::codec::{
    self, RawRecord, columns, fold, id_taken, ip_strings, is_unique_violation, metadata_json,
    normalized, rate_limit_text, scope_strings, to_micros, unavailable,
};
use crate::error::Error;
use crate::invalidation::{self, PostgresInvalidation};

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
/// Every management change (create, [`apply`](KeyAdmin::apply) of any [`KeyChange`],
/// [`rotate_with`](KeyAdmin::rotate_with) — the new and the old id —, delete) also calls
/// `pg_notify(channel, id)` inside its own transaction, so the notification is delivered when,
/// and only if, the change commits. The channel is `keygate_keys` unless set with
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
    pool: PgPool,
    clock: Arc<dyn Clock>,
    channel: Arc<str>,
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
        Self {
            pool,
            clock: Arc::new(SystemClock),
            channel: Arc::from(invalidation::DEFAULT_CHANNEL),
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
        self.channel = invalidation::channel_name(name)?;
        Ok(self)
    }

    /// The channel changes are notified on.
    #[must_use]
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Cross-instance invalidation on this store's pool and channel, for
    /// [`VerifierBuilder::invalidation`](keygate::VerifierBuilder::invalidation): each verifier subscribes and
    /// evicts the keys this store (on any instance) changes. Its
    /// [`published_by_store`](keygate::Invalidation::published_by_store) is `true`, since the
    /// store already notifies inside each change's transaction.
    #[must_use]
    pub fn invalidation(&self) -> PostgresInvalidation {
        PostgresInvalidation::from_store(self.pool.clone(), Arc::clone(&self.channel))
    }

    /// Uses `clock` for change times, rotation and state filters.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the embedded migrations that are not applied yet (idempotent; concurrent calls
    /// from several instances are serialised by an advisory lock). Migrations are tracked in
    /// table `keygate_migrations` of the connection's schema.
    ///
    /// # Errors
    /// [`Error::SchemaTooNew`] when the database was migrated by a newer keygate;
    /// [`Error::Migrate`] when a migration fails.
    pub async fn migrate(&self) -> Result<(), Error> {
        let migrator = crate::migrations::postgres();
        let known = crate::migrations::latest(&migrator);
        if let Some(found) = self.schema_version().await?
            && found > known
        {
            return Err(Error::SchemaTooNew { found, known });
        }
        migrator.run(&self.pool).await.map_err(Error::Migrate)
    }

    /// The newest keygate migration applied to this database, `None` before the first.
    ///
    /// # Errors
    /// [`Error::Connect`] when the database cannot be read.
    pub async fn schema_version(&self) -> Result<Option<i64>, Error> {
        let exists: bool =
            sqlx::query_scalar("SELECT to_regclass('keygate_migrations') IS NOT NULL")
                .fetch_one(&self.pool)
                .await
                .map_err(Error::Connect)?;
        if !exists {
            return Ok(None);
        }
        sqlx::query_scalar("SELECT max(version) FROM keygate_migrations WHERE success")
            .fetch_one(&self.pool)
            .await
            .map_err(Error::Connect)
    }

    /// A sink keeping audit events and per-day usage in this database (tables
    /// `keygate_audit_events` and `keygate_usage`), sharing this store's pool and clock. See
    /// [`SqlAuditSink`] for retention and reading.
    #[must_use]
    pub fn audit_sink(&self) -> SqlAuditSink {
        SqlAuditSink::postgres(self.pool.clone(), Arc::clone(&self.clock))
    }

    fn now(&self) -> SystemTime {
        codec::truncate(self.clock.now())
    }
}

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

fn raw(row: &PgRow) -> Result<RawRecord, sqlx::Error> {
    let time = |column: &str| -> Result<i64, sqlx::Error> {
        Ok(micros(row.try_get::<OffsetDateTime, _>(column)?))
    };
    let optional_time = |column: &str| -> Result<Option<i64>, sqlx::Error> {
        Ok(row
            .try_get::<Option<OffsetDateTime>, _>(column)?
            .map(micros))
    };
    Ok(RawRecord {
        id: row.try_get("id")?,
        prefix: row.try_get("prefix")?,
        name: row.try_get("name")?,
        owner: row.try_get("owner")?,
        digest: row.try_get("digest")?,
        pepper_version: row.try_get("pepper_version")?,
        scopes: row.try_get("scopes")?,
        metadata: row.try_get("metadata")?,
        allowed_ips: row.try_get("allowed_ips")?,
        rotated_from: row.try_get("rotated_from")?,
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
        expires_at: optional_time("expires_at")?,
        disabled_at: optional_time("disabled_at")?,
        revoked_at: optional_time("revoked_at")?,
        last_used_at: optional_time("last_used_at")?,
        rate_limit: row.try_get("rate_limit")?,
    })
}

fn record(row: &PgRow) -> Result<KeyRecord, StoreError> {
    raw(row).map_err(unavailable)?.into_record()
}

const SELECT_BY_ID: &str = concat!(
    "SELECT ",
    columns!("metadata::text"),
    " FROM keygate_keys WHERE id = $1"
);

const SELECT_FOR_UPDATE: &str = concat!(
    "SELECT ",
    columns!("metadata::text"),
    " FROM keygate_keys WHERE id = $1 FOR UPDATE"
);

async fn select_for_update(
    conn: &mut PgConnection,
    id: &KeyId,
) -> Result<Option<KeyRecord>, StoreError> {
    let row = sqlx::query(SELECT_FOR_UPDATE)
        .bind(id.as_str())
        .fetch_optional(conn)
        .await
        .map_err(unavailable)?;
    row.as_ref().map(record).transpose()
}

/// Inserts `r` unless its id exists or existed, and notifies its id on `channel`.
///
/// Every statement that writes a key row also announces it, in the same statement: the
/// notification then belongs to the change's transaction (delivered at commit, dropped on
/// rollback) and costs no extra round trip.
async fn insert(conn: &mut PgConnection, r: &KeyRecord, channel: &str) -> Result<(), StoreError> {
    let result = sqlx::query(
        "WITH inserted AS (INSERT INTO keygate_keys (id, prefix, name, name_folded, owner, digest, \
         pepper_version, scopes, metadata, allowed_ips, rotated_from, created_at, updated_at, \
         expires_at, disabled_at, revoked_at, last_used_at, rate_limit) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12, $13, $14, $15, $16, $17, $18 \
         WHERE NOT EXISTS (SELECT 1 FROM keygate_deleted_keys WHERE id = $1) RETURNING id) \
         SELECT pg_notify($19, $20)::text FROM inserted",
    )
    .bind(r.id.as_str())
    .bind(&r.prefix)
    .bind(&r.name)
    .bind(fold(&r.name))
    .bind(r.owner.as_deref())
    .bind(r.digest.as_bytes().as_slice())
    .bind(i64::from(r.pepper_version))
    .bind(scope_strings(&r.scopes))
    .bind(metadata_json(&r.metadata))
    .bind(ip_strings(&r.allowed_ips))
    .bind(r.rotated_from.as_ref().map(KeyId::as_str))
    .bind(timestamp(r.created_at))
    .bind(timestamp(r.updated_at))
    .bind(r.expires_at.map(timestamp))
    .bind(r.disabled_at.map(timestamp))
    .bind(r.revoked_at.map(timestamp))
    .bind(r.last_used_at.map(timestamp))
    .bind(rate_limit_text(r.rate_limit.as_ref()))
    .bind(channel)
    .bind(message(&r.id))
    .fetch_optional(conn)
    .await;
    match result {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(id_taken(r.id)),
        Err(e) if is_unique_violation(&e) => Err(id_taken(r.id)),
        Err(e) => Err(unavailable(e)),
    }
}

/// Writes the fields a change or rotation may alter, and notifies the id on `channel` (see
/// [`insert`]).
async fn update(conn: &mut PgConnection, r: &KeyRecord, channel: &str) -> Result<(), StoreError> {
    sqlx::query(
        "WITH updated AS (UPDATE keygate_keys SET name = $1, name_folded = $2, scopes = $3, \
         metadata = $4::jsonb, allowed_ips = $5, expires_at = $6, disabled_at = $7, \
         revoked_at = $8, updated_at = $9, rate_limit = $10 WHERE id = $11 RETURNING id) \
         SELECT pg_notify($12, $13)::text FROM updated",
    )
    .bind(&r.name)
    .bind(fold(&r.name))
    .bind(scope_strings(&r.scopes))
    .bind(metadata_json(&r.metadata))
    .bind(ip_strings(&r.allowed_ips))
    .bind(r.expires_at.map(timestamp))
    .bind(r.disabled_at.map(timestamp))
    .bind(r.revoked_at.map(timestamp))
    .bind(timestamp(r.updated_at))
    .bind(rate_limit_text(r.rate_limit.as_ref()))
    .bind(r.id.as_str())
    .bind(channel)
    .bind(message(&r.id))
    .execute(conn)
    .await
    .map_err(unavailable)?;
    Ok(())
}

/// The notification payload for a change to `id`.
fn message(id: &KeyId) -> String {
    keygate::Invalidated::Key(*id).to_message()
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn find(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(SELECT_BY_ID)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(record).transpose()
    }

    async fn record_last_used(&self, used: &[(KeyId, SystemTime)]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = used.iter().map(|(id, _)| id.as_str()).collect();
        let times: Vec<OffsetDateTime> = used.iter().map(|(_, at)| timestamp(*at)).collect();
        sqlx::query(
            "UPDATE keygate_keys AS k SET last_used_at = u.at \
             FROM UNNEST($1::text[], $2::timestamptz[]) AS u(id, at) \
             WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
        )
        .bind(ids)
        .bind(times)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn settings(&self) -> Result<Option<StoreSettings>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT name, value FROM keygate_settings")
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(Some(StoreSettings::from_entries(rows)))
    }

    async fn add_settings(&self, entries: &[(String, String)]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = entries.iter().map(|(name, _)| name.as_str()).collect();
        let values: Vec<&str> = entries.iter().map(|(_, value)| value.as_str()).collect();
        sqlx::query(
            "INSERT INTO keygate_settings (name, value, created_at) \
             SELECT n, v, $3::timestamptz FROM UNNEST($1::text[], $2::text[]) AS s(n, v) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(names)
        .bind(values)
        .bind(timestamp(self.now()))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn rehash(&self, keys: &[KeyRehash]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        let from: Vec<i64> = keys.iter().map(|k| i64::from(k.from_version)).collect();
        let to: Vec<i64> = keys.iter().map(|k| i64::from(k.to_version)).collect();
        let digests: Vec<Vec<u8>> = keys.iter().map(|k| k.digest.as_bytes().to_vec()).collect();
        sqlx::query(
            "UPDATE keygate_keys AS k SET digest = u.digest, pepper_version = u.to_version \
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bytea[]) \
             AS u(id, from_version, to_version, digest) \
             WHERE k.id = u.id AND k.pepper_version = u.from_version",
        )
        .bind(ids)
        .bind(from)
        .bind(to)
        .bind(digests)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl KeyAdmin for PostgresStore {
    async fn pepper_versions(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT pepper_version, count(*) FROM keygate_keys \
             GROUP BY pepper_version ORDER BY pepper_version",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(codec::version_counts(rows))
    }

    async fn create(&self, key: MintedKey) -> Result<CreatedKey, StoreError> {
        let stored = normalized(key.record());
        // One statement (insert and notify): no transaction needed.
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        insert(&mut conn, &stored, &self.channel).await?;
        Ok(key.into_created(stored))
    }

    async fn get(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
        self.find(id).await?.ok_or(StoreError::NotFound(*id))
    }

    async fn list(&self, filter: &KeyFilter, page: PageRequest) -> Result<KeyPage, StoreError> {
        let limit = page.clamped_limit();
        let mut q = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            columns!("metadata::text"),
            " FROM keygate_keys WHERE true"
        ));
        if let Some(after) = page.after {
            q.push(" AND id > ").push_bind(after.as_str().to_owned());
        }
        if let Some(owner) = &filter.owner {
            q.push(" AND owner = ").push_bind(owner.clone());
        }
        if let Some(needle) = codec::needle(filter) {
            q.push(" AND strpos(name_folded, ")
                .push_bind(needle)
                .push(") > 0");
        }
        if let Some(state) = filter.state {
            let (before, after) = codec::state_sql(state);
            q.push(" AND (").push(before);
            if let Some(after) = after {
                q.push_bind(timestamp(self.now())).push(after);
            }
            q.push(")");
        }
        q.push(" ORDER BY id LIMIT ")
            .push_bind(i64::try_from(limit + 1).unwrap_or(i64::MAX));
        let rows = q.build().fetch_all(&self.pool).await.map_err(unavailable)?;
        let keys = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
        Ok(KeyPage::from_overfetch(keys, limit))
    }

    async fn apply(&self, id: &KeyId, change: KeyChange) -> Result<KeyRecord, StoreError> {
        change.validate()?;
        let change = codec::truncate_change(change);
        let now = self.now();
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let mut record = select_for_update(&mut tx, id)
            .await?
            .ok_or(StoreError::NotFound(*id))?;
        change
            .apply_to(&mut record, now)
            .map_err(|refused| StoreError::refused(*id, refused))?;
        update(&mut tx, &record, &self.channel).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(record)
    }

    async fn rotate_with(
        &self,
        id: &KeyId,
        replacement: MintedKey,
        rotation: Rotation,
    ) -> Result<RotatedKey, StoreError> {
        let now = self.now();
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let mut old = select_for_update(&mut tx, id)
            .await?
            .ok_or(StoreError::NotFound(*id))?;
        let new = rotation
            .apply_to(&mut old, &normalized(replacement.record()), now)
            .map_err(|refused| StoreError::refused(*id, refused))?;
        insert(&mut tx, &new, &self.channel).await?;
        update(&mut tx, &old, &self.channel).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(RotatedKey {
            old,
            new: replacement.into_created(new),
        })
    }

    async fn delete(&self, id: &KeyId) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // Deletes and notifies in one statement (see `insert`).
        let deleted = sqlx::query(
            "WITH deleted AS (DELETE FROM keygate_keys WHERE id = $1 RETURNING id) \
             SELECT pg_notify($2, $3)::text FROM deleted",
        )
        .bind(id.as_str())
        .bind(&*self.channel)
        .bind(message(id))
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        if deleted.is_none() {
            return Err(StoreError::NotFound(*id));
        }
        sqlx::query("INSERT INTO keygate_deleted_keys (id, deleted_at) VALUES ($1, $2)")
            .bind(id.as_str())
            .bind(timestamp(self.now()))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Host and database only: the URL may carry a password.
        let options = self.pool.connect_options();
        f.debug_struct("PostgresStore")
            .field("host", &options.get_host())
            .field("database", &options.get_database())
            .field("pool_size", &self.pool.size())
            .field("channel", &self.channel)
            .field("clock", &self.clock)
            .finish()
    }
}
