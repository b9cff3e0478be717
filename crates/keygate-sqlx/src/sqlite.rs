//! [`SqliteStore`]: keys in one SQLite file, the embedded default.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use keygate::clock::{Clock, SystemClock};
use keygate::store::{KeyFilter, KeyPage, KeyRehash, PageRequest, StoreSettings};
use keygate::{
    CreatedKey, KeyAdmin, KeyChange, KeyId, KeyRecord, KeyStore, MintedKey, RotatedKey, Rotation,
    StoreError,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::audit::SqlAuditSink;
use crate::codec::{
    self, RawRecord, columns, fold, id_taken, ip_strings, is_unique_violation, json_array,
    metadata_json, normalized, rate_limit_text, scope_strings, to_micros, unavailable,
};
use crate::error::Error;
use crate::feed::SqliteInvalidation;

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
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
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
            pool,
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` for change times, rotation and state filters (tests use
    /// [`ManualClock`](keygate::clock::ManualClock)).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Applies the embedded migrations that are not applied yet (idempotent; safe to call on
    /// every start). Migrations are tracked in table `keygate_migrations`.
    ///
    /// # Errors
    /// [`Error::SchemaTooNew`] when the database was migrated by a newer keygate;
    /// [`Error::Migrate`] when a migration fails.
    pub async fn migrate(&self) -> Result<(), Error> {
        let migrator = crate::migrations::sqlite();
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
        let exists: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'keygate_migrations'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(Error::Connect)?;
        if exists == 0 {
            return Ok(None);
        }
        sqlx::query_scalar("SELECT max(version) FROM keygate_migrations WHERE success")
            .fetch_one(&self.pool)
            .await
            .map_err(Error::Connect)
    }

    /// The change feed of this store's file as an invalidation channel: give it to the
    /// verifier ([`VerifierBuilder::invalidation`](keygate::VerifierBuilder::invalidation)) and
    /// a key changed by any process on the file (the CLI, another service) is evicted from its
    /// cache within about 100 ms. See [`SqliteInvalidation`].
    #[must_use]
    pub fn invalidation(&self) -> SqliteInvalidation {
        // A private in-memory database exists once, in this pool: a second connection would
        // open another, empty one.
        let own_connection = self.pool.connect_options().get_filename() != Path::new(":memory:");
        SqliteInvalidation::new(self.pool.clone(), own_connection)
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
        SqlAuditSink::sqlite(self.audit_pool(), Arc::clone(&self.clock))
    }

    /// The audit sink's own connection to the file: one, kept open, so its page cache stays
    /// warm from one batch to the next (connections taking turns would each find their cache
    /// stale after the other's write, and read the indexes' pages again), with a cache large
    /// enough for the pages a batch touches. A private in-memory database has no second
    /// connection: the sink then shares the store's pool.
    fn audit_pool(&self) -> SqlitePool {
        let options = self.pool.connect_options();
        if options.get_filename() == Path::new(":memory:") {
            return self.pool.clone();
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

    fn now(&self) -> SystemTime {
        codec::truncate(self.clock.now())
    }

    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, Sqlite>, StoreError> {
        // Take the write lock up front: a deferred transaction that reads, then writes, can
        // fail with SQLITE_BUSY instead of waiting.
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)
    }
}

fn raw(row: &SqliteRow) -> Result<RawRecord, sqlx::Error> {
    let id: String = row.try_get("id")?;
    let scopes: String = row.try_get("scopes")?;
    let ips: String = row.try_get("allowed_ips")?;
    Ok(RawRecord {
        scopes: codec::parse_json_strings(&id, "scopes", &scopes)
            .map_err(|e| sqlx::Error::Decode(e.into()))?,
        allowed_ips: codec::parse_json_strings(&id, "allowed_ips", &ips)
            .map_err(|e| sqlx::Error::Decode(e.into()))?,
        prefix: row.try_get("prefix")?,
        name: row.try_get("name")?,
        owner: row.try_get("owner")?,
        digest: row.try_get("digest")?,
        pepper_version: row.try_get("pepper_version")?,
        metadata: row.try_get("metadata")?,
        rotated_from: row.try_get("rotated_from")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        expires_at: row.try_get("expires_at")?,
        disabled_at: row.try_get("disabled_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
        rate_limit: row.try_get("rate_limit")?,
        id,
    })
}

fn record(row: &SqliteRow) -> Result<KeyRecord, StoreError> {
    raw(row).map_err(unavailable)?.into_record()
}

async fn select(conn: &mut SqliteConnection, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
    let row = sqlx::query(SELECT_BY_ID)
        .bind(id.as_str())
        .fetch_optional(conn)
        .await
        .map_err(unavailable)?;
    row.as_ref().map(record).transpose()
}

const SELECT_BY_ID: &str = concat!(
    "SELECT ",
    columns!("metadata"),
    " FROM keygate_keys WHERE id = ?"
);

/// Inserts `r` unless its id exists or existed.
async fn insert(conn: &mut SqliteConnection, r: &KeyRecord) -> Result<(), StoreError> {
    let result = sqlx::query(
        "INSERT INTO keygate_keys (id, prefix, name, name_folded, owner, digest, pepper_version, \
         scopes, metadata, allowed_ips, rotated_from, created_at, updated_at, expires_at, \
         disabled_at, revoked_at, last_used_at, rate_limit) \
         SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
         WHERE NOT EXISTS (SELECT 1 FROM keygate_deleted_keys WHERE id = ?)",
    )
    .bind(r.id.as_str())
    .bind(&r.prefix)
    .bind(&r.name)
    .bind(fold(&r.name))
    .bind(r.owner.as_deref())
    .bind(r.digest.as_bytes().as_slice())
    .bind(i64::from(r.pepper_version))
    .bind(json_array(&scope_strings(&r.scopes)))
    .bind(metadata_json(&r.metadata))
    .bind(json_array(&ip_strings(&r.allowed_ips)))
    .bind(r.rotated_from.as_ref().map(KeyId::as_str))
    .bind(to_micros(r.created_at))
    .bind(to_micros(r.updated_at))
    .bind(r.expires_at.map(to_micros))
    .bind(r.disabled_at.map(to_micros))
    .bind(r.revoked_at.map(to_micros))
    .bind(r.last_used_at.map(to_micros))
    .bind(rate_limit_text(r.rate_limit.as_ref()))
    .bind(r.id.as_str())
    .execute(conn)
    .await;
    match result {
        Ok(done) if done.rows_affected() == 1 => Ok(()),
        Ok(_) => Err(id_taken(r.id)),
        Err(e) if is_unique_violation(&e) => Err(id_taken(r.id)),
        Err(e) => Err(unavailable(e)),
    }
}

/// Writes the fields a change or rotation may alter.
async fn update(conn: &mut SqliteConnection, r: &KeyRecord) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE keygate_keys SET name = ?, name_folded = ?, scopes = ?, metadata = ?, \
         allowed_ips = ?, expires_at = ?, disabled_at = ?, revoked_at = ?, updated_at = ?, \
         rate_limit = ? WHERE id = ?",
    )
    .bind(&r.name)
    .bind(fold(&r.name))
    .bind(json_array(&scope_strings(&r.scopes)))
    .bind(metadata_json(&r.metadata))
    .bind(json_array(&ip_strings(&r.allowed_ips)))
    .bind(r.expires_at.map(to_micros))
    .bind(r.disabled_at.map(to_micros))
    .bind(r.revoked_at.map(to_micros))
    .bind(to_micros(r.updated_at))
    .bind(rate_limit_text(r.rate_limit.as_ref()))
    .bind(r.id.as_str())
    .execute(conn)
    .await
    .map_err(unavailable)?;
    Ok(())
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn find(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        select(&mut conn, id).await
    }

    async fn record_last_used(&self, used: &[(KeyId, SystemTime)]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for (id, at) in used {
            let at = to_micros(*at);
            sqlx::query(
                "UPDATE keygate_keys SET last_used_at = ? \
                 WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
            )
            .bind(at)
            .bind(id.as_str())
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
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
        let mut tx = self.write_tx().await?;
        for (name, value) in entries {
            sqlx::query(
                "INSERT INTO keygate_settings (name, value, created_at) VALUES (?, ?, ?) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(value)
            .bind(to_micros(self.now()))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn rehash(&self, keys: &[KeyRehash]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for key in keys {
            sqlx::query(
                "UPDATE keygate_keys SET digest = ?, pepper_version = ? \
                 WHERE id = ? AND pepper_version = ?",
            )
            .bind(key.digest.as_bytes().as_slice())
            .bind(i64::from(key.to_version))
            .bind(key.id.as_str())
            .bind(i64::from(key.from_version))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }
}

#[async_trait]
impl KeyAdmin for SqliteStore {
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
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        insert(&mut conn, &stored).await?;
        Ok(key.into_created(stored))
    }

    async fn get(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
        self.find(id).await?.ok_or(StoreError::NotFound(*id))
    }

    async fn list(&self, filter: &KeyFilter, page: PageRequest) -> Result<KeyPage, StoreError> {
        let limit = page.clamped_limit();
        let mut q = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            columns!("metadata"),
            " FROM keygate_keys WHERE 1 = 1"
        ));
        if let Some(after) = page.after {
            q.push(" AND id > ").push_bind(after.as_str().to_owned());
        }
        if let Some(owner) = &filter.owner {
            q.push(" AND owner = ").push_bind(owner.clone());
        }
        if let Some(needle) = codec::needle(filter) {
            q.push(" AND instr(name_folded, ")
                .push_bind(needle)
                .push(") > 0");
        }
        if let Some(state) = filter.state {
            let (before, after) = codec::state_sql(state);
            q.push(" AND (").push(before);
            if let Some(after) = after {
                q.push_bind(to_micros(self.now())).push(after);
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
        let mut tx = self.write_tx().await?;
        let mut record = select(&mut tx, id)
            .await?
            .ok_or(StoreError::NotFound(*id))?;
        change
            .apply_to(&mut record, now)
            .map_err(|refused| StoreError::refused(*id, refused))?;
        update(&mut tx, &record).await?;
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
        let mut tx = self.write_tx().await?;
        let mut old = select(&mut tx, id)
            .await?
            .ok_or(StoreError::NotFound(*id))?;
        let new = rotation
            .apply_to(&mut old, &normalized(replacement.record()), now)
            .map_err(|refused| StoreError::refused(*id, refused))?;
        insert(&mut tx, &new).await?;
        update(&mut tx, &old).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(RotatedKey {
            old,
            new: replacement.into_created(new),
        })
    }

    async fn delete(&self, id: &KeyId) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let deleted = sqlx::query("DELETE FROM keygate_keys WHERE id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound(*id));
        }
        sqlx::query("INSERT INTO keygate_deleted_keys (id, deleted_at) VALUES (?, ?)")
            .bind(id.as_str())
            .bind(to_micros(self.now()))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options = self.pool.connect_options();
        f.debug_struct("SqliteStore")
            .field("file", &options.get_filename())
            .field("pool_size", &self.pool.size())
            .field("clock", &self.clock)
            .finish()
    }
}
