//! What [`SqliteStore`](crate::SqliteStore) and [`PostgresStore`](crate::PostgresStore) share:
//! every [`KeyStore`](keygate::KeyStore) and [`KeyAdmin`](keygate::KeyAdmin) operation, its
//! validation, statements, transactions and error mapping, written once as [`SqlStore`] over
//! a [`Dialect`]. A dialect (`sqlite.rs`, `postgres.rs`) holds only what differs: how a time
//! and a list of strings are stored, how a write transaction starts and a row is locked, how a
//! change is announced, the batch statements, and the schema probe.
//!
//! Statements number their parameters (`$1`): PostgreSQL's form, which SQLite accepts as well,
//! so one text serves both databases wherever their SQL is the same.

use std::sync::Arc;
use std::time::SystemTime;

use keygate::clock::{Clock, SystemClock};
use keygate::owner::{NewOwner, OwnerKeysChange, OwnerRecord, OwnerUpdate};
use keygate::store::{
    KeyFilter, KeyPage, KeyRehash, MAX_OWNERS_PAGE, OwnerLimits, PageRequest, StoreSettings,
};
use keygate::{
    CreatedKey, KeyChange, KeyId, KeyRecord, MintedKey, RotatedKey, Rotation, StoreError,
};
use sqlx::migrate::{Migrate, Migrator};
use sqlx::query::Query;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Row,
    Transaction, Type,
};

use crate::codec::{
    self, OWNER_COLUMNS, RawOwner, RawRecord, columns, fold, granted_number, id_taken, ip_strings,
    is_unique_violation, limits_text, metadata_json, normalized, normalized_owner, quota_text,
    rate_limit_text, scope_strings, unavailable,
};
use crate::error::Error;

/// A statement with its parameters bound, ready to run.
pub(crate) type Statement<DB> = Query<'static, DB, <DB as Database>::Arguments>;

type Connection<D> = <<D as Dialect>::DB as Database>::Connection;
type DbRow<D> = <<D as Dialect>::DB as Database>::Row;

/// A value bound to and read from a column of `DB`.
pub(crate) trait ColumnValue<DB: Database>:
    for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> + Send + 'static
{
}

impl<DB: Database, T> ColumnValue<DB> for T where
    T: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> + Send + 'static
{
}

/// What differs between the databases, for [`SqlStore`].
pub(crate) trait Dialect: Clone + Send + Sync + 'static {
    /// The sqlx database.
    type DB: Database;
    /// A time as bound and read: microseconds since the epoch (SQLite) or `timestamptz`.
    type Time: ColumnValue<Self::DB>;
    /// A list of strings (scopes, IP ranges) as bound and read: a JSON array in a text column
    /// (SQLite) or `text[]` (PostgreSQL).
    type List: ColumnValue<Self::DB>;

    /// The statement that starts a transaction which will write.
    const BEGIN_WRITE: &'static str;
    /// Added to the read of a key about to change, to hold its row until the transaction ends.
    const LOCK_ROW: &'static str;
    /// Added to the metadata parameter (JSON text) to give it the column's type.
    const JSON: &'static str;
    /// The function `f(text, part)` giving the 1-based position of `part` in `text`, 0 if absent.
    const POSITION: &'static str;
    /// A query answering whether table `keygate_migrations` exists, as column `present`.
    const SCHEMA_PROBE: &'static str;

    fn time(at: SystemTime) -> Self::Time;
    fn micros(time: Self::Time) -> i64;
    fn list(items: Vec<String>) -> Self::List;
    /// The strings of a list read from column `column` of key `id`.
    ///
    /// # Errors
    /// `Unavailable` when the stored list cannot be read back.
    fn strings(id: &str, column: &'static str, list: Self::List)
    -> Result<Vec<String>, StoreError>;

    /// `sql`, a statement with `parameters` parameters writing at most one key row, made to
    /// return a row exactly when it wrote one, and to announce the change (with
    /// [`Dialect::announce`]'s parameters, numbered after the statement's).
    fn announced(sql: &str, parameters: usize) -> String;
    /// Binds the announcement's parameters of a statement made by [`Dialect::announced`] that
    /// changes key `id`.
    fn announce(&self, statement: Statement<Self::DB>, id: &KeyId) -> Statement<Self::DB>;
    /// A statement announcing every key of owner `owner` (whose rows do not change), to run
    /// in the transaction of a change to the owner that their cached entries depend on.
    fn announce_owner_keys(&self, owner: &str) -> Statement<Self::DB>;
    /// This dialect's [`Statements`], made once.
    fn statements() -> &'static Statements;
    /// The embedded migrations.
    fn migrator() -> Migrator;

    /// The statements writing last-used times, each only forward.
    fn last_used(used: &[(KeyId, SystemTime)]) -> Vec<Statement<Self::DB>>;
    /// The statements adding settings that do not exist yet (never overwriting one).
    fn add_settings(entries: &[(String, String)], now: SystemTime) -> Vec<Statement<Self::DB>>;
    /// The statements replacing digests, each only where the key is still at its old version.
    fn rehash(keys: &[KeyRehash]) -> Vec<Statement<Self::DB>>;
}

/// Reads a key by id.
const SELECT_BY_ID: &str = concat!("SELECT ", columns!(), " FROM keygate_keys WHERE id = $1");
/// Reads a key by id with its owner's rate limit, quota, named limits and top-up total
/// (columns `owner_rate_limit`, `owner_quota`, `owner_limits`, `owner_quota_granted`), in
/// one statement.
const SELECT_WITH_OWNER_LIMIT: &str = concat!(
    "SELECT ",
    columns!(),
    ", (SELECT rate_limit FROM keygate_owners WHERE keygate_owners.id = keygate_keys.owner) \
     AS owner_rate_limit, \
     (SELECT quota FROM keygate_owners WHERE keygate_owners.id = keygate_keys.owner) \
     AS owner_quota, \
     (SELECT limits FROM keygate_owners WHERE keygate_owners.id = keygate_keys.owner) \
     AS owner_limits, \
     (SELECT quota_granted FROM keygate_owners WHERE keygate_owners.id = keygate_keys.owner) \
     AS owner_quota_granted FROM keygate_keys WHERE id = $1"
);
/// Every key, for a listing to add its conditions to.
pub(crate) const SELECT_ALL: &str =
    concat!("SELECT ", columns!(), " FROM keygate_keys WHERE 1 = 1");
/// Remembers a deleted id, so it is never used again.
const TOMBSTONE: &str =
    "INSERT INTO keygate_deleted_keys (id, deleted_at, owner) VALUES ($1, $2, $3)";
/// The ids of owner `$1`'s deleted keys (their tombstones keep the owner, from schema 14).
const DELETED_OWNER_KEYS: &str = "SELECT id FROM keygate_deleted_keys WHERE owner = $1 ORDER BY id";
const SETTINGS: &str = "SELECT name, value FROM keygate_settings";
/// Removes every policy setting (`policy.*`; `substr`, not `LIKE`, which SQLite compares
/// without case).
const REMOVE_POLICY_SETTINGS: &str =
    "DELETE FROM keygate_settings WHERE substr(name, 1, 7) = 'policy.'";
const INSERT_SETTING: &str =
    "INSERT INTO keygate_settings (name, value, created_at) VALUES ($1, $2, $3)";
const PEPPER_VERSIONS: &str = "SELECT pepper_version, count(*) AS key_count FROM keygate_keys \
     GROUP BY pepper_version ORDER BY pepper_version";
const SCHEMA_VERSION: &str = "SELECT max(version) AS version FROM keygate_migrations WHERE success";
/// The other keys of a key's lineage (`$1`, not `$2` itself), for a top-up.
pub(crate) const SELECT_LINEAGE_OTHERS: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM keygate_keys WHERE lineage = $1 AND id <> $2 ORDER BY id"
);
/// The keys of an owner, for a bulk change (locked where the dialect locks rows).
const SELECT_BY_OWNER: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM keygate_keys WHERE owner = $1 ORDER BY id"
);
const OWNER_KEY_COUNT: &str = "SELECT count(*) AS key_count FROM keygate_keys WHERE owner = $1";
const OWNER_HAS_KEYS: &str = "SELECT 1 AS one FROM keygate_keys WHERE owner = $1 LIMIT 1";
const DELETE_OWNER: &str = "DELETE FROM keygate_owners WHERE id = $1";

/// The statements whose text depends on the dialect, made once per dialect.
#[derive(Debug)]
pub(crate) struct Statements {
    select_for_write: String,
    insert: String,
    update: String,
    delete: String,
    select_key_owner_for_write: String,
    select_by_owner_for_write: String,
    select_lineage_others_for_write: String,
    insert_owner: String,
    select_owner: String,
    select_owner_for_write: String,
    list_owners: String,
    list_owners_after: String,
    update_owner: String,
}

impl Statements {
    pub(crate) fn new<D: Dialect>() -> Self {
        let json = D::JSON;
        Self {
            select_for_write: format!("{SELECT_BY_ID}{}", D::LOCK_ROW),
            // Unless the id exists (the primary key) or existed (a tombstone).
            insert: D::announced(
                &format!(
                    "INSERT INTO keygate_keys (id, prefix, name, name_folded, owner, digest, \
                     pepper_version, scopes, metadata, allowed_ips, rotated_from, created_at, \
                     updated_at, expires_at, disabled_at, revoked_at, last_used_at, rate_limit, \
                     canary, quota, lineage, limits, quota_granted) \
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9{json}, $10, $11, $12, $13, $14, \
                     $15, $16, $17, $18, $19, $20, $21, $22, $23 \
                     WHERE NOT EXISTS (SELECT 1 FROM keygate_deleted_keys WHERE id = $1)"
                ),
                23,
            ),
            // The fields a change or rotation may alter.
            update: D::announced(
                &format!(
                    "UPDATE keygate_keys SET name = $1, name_folded = $2, scopes = $3, \
                     metadata = $4{json}, allowed_ips = $5, expires_at = $6, disabled_at = $7, \
                     revoked_at = $8, updated_at = $9, rate_limit = $10, quota = $11, \
                     limits = $12, quota_granted = $13 WHERE id = $14"
                ),
                14,
            ),
            delete: D::announced("DELETE FROM keygate_keys WHERE id = $1", 1),
            // The owner only: a row too damaged to read whole can still be deleted.
            select_key_owner_for_write: format!(
                "SELECT owner FROM keygate_keys WHERE id = $1{}",
                D::LOCK_ROW
            ),
            select_by_owner_for_write: format!("{SELECT_BY_OWNER}{}", D::LOCK_ROW),
            select_lineage_others_for_write: format!("{SELECT_LINEAGE_OTHERS}{}", D::LOCK_ROW),
            // Nothing when the id exists: creating an owner refuses it, creating a key keeps it.
            insert_owner: format!(
                "INSERT INTO keygate_owners (id, name, metadata, rate_limit, quota, created_at, \
                 updated_at, limits, quota_granted) VALUES ($1, $2, $3{json}, $4, $5, $6, $7, \
                 $8, $9) ON CONFLICT (id) DO NOTHING RETURNING id"
            ),
            select_owner: format!("SELECT {OWNER_COLUMNS} FROM keygate_owners WHERE id = $1"),
            select_owner_for_write: format!(
                "SELECT {OWNER_COLUMNS} FROM keygate_owners WHERE id = $1{}",
                D::LOCK_ROW
            ),
            list_owners: format!("SELECT {OWNER_COLUMNS} FROM keygate_owners ORDER BY id LIMIT $1"),
            list_owners_after: format!(
                "SELECT {OWNER_COLUMNS} FROM keygate_owners WHERE id > $2 ORDER BY id LIMIT $1"
            ),
            update_owner: format!(
                "UPDATE keygate_owners SET name = $1, metadata = $2{json}, rate_limit = $3, \
                 quota = $4, updated_at = $5, limits = $6, quota_granted = $7 WHERE id = $8"
            ),
        }
    }
}

/// A key store in a SQL database of dialect `D`: the whole of [`SqliteStore`](crate::SqliteStore)
/// and [`PostgresStore`](crate::PostgresStore) but their constructors and what they hand out
/// (invalidation channel, audit sink). Clones share the pool.
pub(crate) struct SqlStore<D: Dialect> {
    pub(crate) pool: Pool<D::DB>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) dialect: D,
}

// By hand: a derive would ask for `D::DB: Clone`, which sqlx's database types are not.
impl<D: Dialect> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            clock: Arc::clone(&self.clock),
            dialect: self.dialect.clone(),
        }
    }
}

impl<D: Dialect> SqlStore<D> {
    pub(crate) fn new(pool: Pool<D::DB>, dialect: D) -> Self {
        Self {
            pool,
            clock: Arc::new(SystemClock),
            dialect,
        }
    }
}

// The bounds say what this code asks of the database: run statements on a connection, migrate,
// and bind and read the Rust types below. sqlx promises them per driver, not for every
// `Database`; both dialects' databases have them all.
impl<D: Dialect> SqlStore<D>
where
    for<'c> &'c mut Connection<D>: Executor<'c, Database = D::DB>,
    <D::DB as Database>::Arguments: IntoArguments<D::DB>,
    Connection<D>: Migrate,
    for<'a> &'a str: Encode<'a, D::DB> + Type<D::DB> + ColumnIndex<DbRow<D>>,
    for<'a> Option<&'a str>: Encode<'a, D::DB>,
    for<'a> &'a [u8]: Encode<'a, D::DB> + Type<D::DB>,
    for<'a> String: Encode<'a, D::DB> + Decode<'a, D::DB> + Type<D::DB>,
    for<'a> Option<String>: Encode<'a, D::DB>,
    for<'a> Vec<u8>: Decode<'a, D::DB> + Type<D::DB>,
    for<'a> i64: Encode<'a, D::DB> + Decode<'a, D::DB> + Type<D::DB>,
    for<'a> bool: Encode<'a, D::DB> + Decode<'a, D::DB> + Type<D::DB>,
    for<'a> Option<D::Time>: Encode<'a, D::DB>,
{
    /// Applies the embedded migrations not applied yet, unless the database is newer.
    pub(crate) async fn migrate(&self) -> Result<(), Error> {
        let migrator = D::migrator();
        let known = crate::migrations::latest(&migrator);
        if let Some(found) = self.schema_version().await?
            && found > known
        {
            return Err(Error::SchemaTooNew { found, known });
        }
        migrator.run(&self.pool).await.map_err(Error::Migrate)
    }

    /// The newest migration applied, `None` before the first.
    pub(crate) async fn schema_version(&self) -> Result<Option<i64>, Error> {
        let probe = sqlx::query(D::SCHEMA_PROBE)
            .fetch_one(&self.pool)
            .await
            .map_err(Error::Connect)?;
        if !probe
            .try_get::<bool, _>("present")
            .map_err(Error::Connect)?
        {
            return Ok(None);
        }
        sqlx::query(SCHEMA_VERSION)
            .fetch_one(&self.pool)
            .await
            .and_then(|row| row.try_get("version"))
            .map_err(Error::Connect)
    }

    fn now(&self) -> SystemTime {
        codec::truncate(self.clock.now())
    }

    async fn write_tx(&self) -> Result<Transaction<'static, D::DB>, StoreError> {
        self.pool
            .begin_with(D::BEGIN_WRITE)
            .await
            .map_err(unavailable)
    }

    /// Runs `statements` atomically: one on its own (a statement is), several in one write
    /// transaction.
    async fn write_all(&self, statements: Vec<Statement<D::DB>>) -> Result<(), StoreError> {
        match <[_; 1]>::try_from(statements) {
            Ok([statement]) => {
                let mut conn = self.pool.acquire().await.map_err(unavailable)?;
                statement.execute(&mut *conn).await.map_err(unavailable)?;
            }
            Err(statements) => {
                let mut tx = self.write_tx().await?;
                for statement in statements {
                    statement.execute(&mut *tx).await.map_err(unavailable)?;
                }
                tx.commit().await.map_err(unavailable)?;
            }
        }
        Ok(())
    }

    fn column<'r, T>(row: &'r DbRow<D>, name: &str) -> Result<T, StoreError>
    where
        T: Decode<'r, D::DB> + Type<D::DB>,
    {
        row.try_get(name).map_err(unavailable)
    }

    fn raw(row: &DbRow<D>) -> Result<RawRecord, StoreError> {
        let id: String = Self::column(row, "id")?;
        let time = |name| Self::column::<D::Time>(row, name).map(D::micros);
        let optional_time =
            |name| Self::column::<Option<D::Time>>(row, name).map(|t| t.map(D::micros));
        Ok(RawRecord {
            scopes: D::strings(&id, "scopes", Self::column(row, "scopes")?)?,
            allowed_ips: D::strings(&id, "allowed_ips", Self::column(row, "allowed_ips")?)?,
            prefix: Self::column(row, "prefix")?,
            name: Self::column(row, "name")?,
            owner: Self::column(row, "owner")?,
            digest: Self::column(row, "digest")?,
            pepper_version: Self::column(row, "pepper_version")?,
            metadata: Self::column(row, "metadata")?,
            rotated_from: Self::column(row, "rotated_from")?,
            created_at: time("created_at")?,
            updated_at: time("updated_at")?,
            expires_at: optional_time("expires_at")?,
            disabled_at: optional_time("disabled_at")?,
            revoked_at: optional_time("revoked_at")?,
            last_used_at: optional_time("last_used_at")?,
            rate_limit: Self::column(row, "rate_limit")?,
            canary: Self::column(row, "canary")?,
            quota: Self::column(row, "quota")?,
            lineage: Self::column(row, "lineage")?,
            limits: Self::column(row, "limits")?,
            quota_granted: Self::column(row, "quota_granted")?,
            id,
        })
    }

    fn record(row: &DbRow<D>) -> Result<KeyRecord, StoreError> {
        Self::raw(row)?.into_record()
    }

    async fn select(
        conn: &mut Connection<D>,
        sql: &'static str,
        id: &KeyId,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(sql)
            .bind(id.as_str())
            .fetch_optional(conn)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(Self::record).transpose()
    }

    /// Inserts `r` unless its id exists or existed, announcing it.
    async fn insert(&self, conn: &mut Connection<D>, r: &KeyRecord) -> Result<(), StoreError> {
        let statement = sqlx::query(D::statements().insert.as_str())
            .bind(r.id.as_str())
            .bind(r.prefix.as_str())
            .bind(r.name.as_str())
            .bind(fold(&r.name))
            .bind(r.owner.as_deref())
            .bind(r.digest.as_bytes().as_slice())
            .bind(i64::from(r.pepper_version))
            .bind(D::list(scope_strings(&r.scopes)))
            .bind(metadata_json(&r.metadata))
            .bind(D::list(ip_strings(&r.allowed_ips)))
            .bind(r.rotated_from.as_ref().map(KeyId::as_str))
            .bind(D::time(r.created_at))
            .bind(D::time(r.updated_at))
            .bind(r.expires_at.map(D::time))
            .bind(r.disabled_at.map(D::time))
            .bind(r.revoked_at.map(D::time))
            .bind(r.last_used_at.map(D::time))
            .bind(rate_limit_text(r.rate_limit.as_ref()))
            .bind(r.canary)
            .bind(quota_text(r.quota.as_ref()))
            .bind(r.lineage.as_str())
            .bind(limits_text(&r.limits))
            .bind(granted_number(r.quota_granted)?);
        match self
            .dialect
            .announce(statement, &r.id)
            .fetch_optional(conn)
            .await
        {
            Ok(Some(_)) => Ok(()),
            // A tombstone: the id existed.
            Ok(None) => Err(id_taken(r.id)),
            Err(e) if is_unique_violation(&e) => Err(id_taken(r.id)),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Writes the fields a change or rotation may alter, announcing the change.
    async fn update(&self, conn: &mut Connection<D>, r: &KeyRecord) -> Result<(), StoreError> {
        let statement = sqlx::query(D::statements().update.as_str())
            .bind(r.name.as_str())
            .bind(fold(&r.name))
            .bind(D::list(scope_strings(&r.scopes)))
            .bind(metadata_json(&r.metadata))
            .bind(D::list(ip_strings(&r.allowed_ips)))
            .bind(r.expires_at.map(D::time))
            .bind(r.disabled_at.map(D::time))
            .bind(r.revoked_at.map(D::time))
            .bind(D::time(r.updated_at))
            .bind(rate_limit_text(r.rate_limit.as_ref()))
            .bind(quota_text(r.quota.as_ref()))
            .bind(limits_text(&r.limits))
            .bind(granted_number(r.quota_granted)?)
            .bind(r.id.as_str());
        self.dialect
            .announce(statement, &r.id)
            .execute(conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    // ---- KeyStore ------------------------------------------------------------------------

    pub(crate) async fn find(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        Self::select(&mut conn, SELECT_BY_ID, id).await
    }

    pub(crate) async fn find_with_owner_limit(
        &self,
        id: &KeyId,
    ) -> Result<Option<(KeyRecord, OwnerLimits)>, StoreError> {
        let row = sqlx::query(SELECT_WITH_OWNER_LIMIT)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        let Some(row) = row else { return Ok(None) };
        let record = Self::record(&row)?;
        let limit: Option<String> = Self::column(&row, "owner_rate_limit")?;
        let limit = codec::owner_limit(limit.as_deref())?;
        let quota: Option<String> = Self::column(&row, "owner_quota")?;
        let quota = codec::owner_quota(quota.as_deref())?;
        let limits: Option<String> = Self::column(&row, "owner_limits")?;
        let limits = codec::owner_named_limits(limits.as_deref().unwrap_or_default())?;
        let granted: Option<i64> = Self::column(&row, "owner_quota_granted")?;
        let granted = codec::owner_granted(granted.unwrap_or_default())?;
        Ok(Some((
            record,
            OwnerLimits::new(limit, quota)
                .with_limits(limits)
                .with_quota_granted(granted),
        )))
    }

    pub(crate) async fn record_last_used(
        &self,
        used: &[(KeyId, SystemTime)],
    ) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        self.write_all(D::last_used(used)).await
    }

    pub(crate) async fn settings(&self) -> Result<Option<StoreSettings>, StoreError> {
        let rows = sqlx::query(SETTINGS)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let entries = rows
            .iter()
            .map(|row| Ok((Self::column(row, "name")?, Self::column(row, "value")?)))
            .collect::<Result<Vec<(String, String)>, StoreError>>()?;
        Ok(Some(StoreSettings::from_entries(entries)))
    }

    pub(crate) async fn add_settings(
        &self,
        entries: &[(String, String)],
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.write_all(D::add_settings(entries, self.now())).await
    }

    /// Removes the policy settings and adds `entries`, in one transaction.
    pub(crate) async fn replace_policy_settings(
        &self,
        entries: &[(String, String)],
    ) -> Result<(), StoreError> {
        keygate::store::check_policy_settings(entries)?;
        let now = self.now();
        let mut statements = vec![sqlx::query(REMOVE_POLICY_SETTINGS)];
        for (name, value) in entries {
            statements.push(
                sqlx::query(INSERT_SETTING)
                    .bind(name.clone())
                    .bind(value.clone())
                    .bind(D::time(now)),
            );
        }
        self.write_all(statements).await
    }

    pub(crate) async fn rehash(&self, keys: &[KeyRehash]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.write_all(D::rehash(keys)).await
    }

    // ---- KeyAdmin ------------------------------------------------------------------------

    pub(crate) async fn pepper_versions(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        let rows = sqlx::query(PEPPER_VERSIONS)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let counts = rows
            .iter()
            .map(|row| {
                Ok((
                    Self::column(row, "pepper_version")?,
                    Self::column(row, "key_count")?,
                ))
            })
            .collect::<Result<Vec<(i64, i64)>, StoreError>>()?;
        Ok(codec::version_counts(counts))
    }

    pub(crate) async fn create(&self, key: MintedKey) -> Result<CreatedKey, StoreError> {
        let stored = normalized(key.record());
        let Some(owner) = stored.owner.as_deref() else {
            // One statement (insert and announce): no transaction needed.
            let mut conn = self.pool.acquire().await.map_err(unavailable)?;
            self.insert(&mut conn, &stored).await?;
            return Ok(key.into_created(stored));
        };
        // A key naming an owner the store does not know creates its bare record, in the key's
        // transaction (a refused key creates no owner).
        let mut tx = self.write_tx().await?;
        let owner_created = self
            .insert_owner(&mut tx, &OwnerRecord::bare(owner, stored.created_at))
            .await?;
        self.insert(&mut tx, &stored).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(key.into_created_with_owner(stored, owner_created))
    }

    pub(crate) async fn get(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
        self.find(id).await?.ok_or(StoreError::NotFound(*id))
    }

    pub(crate) async fn list(
        &self,
        filter: &KeyFilter,
        page: PageRequest,
    ) -> Result<KeyPage, StoreError> {
        let limit = page.clamped_limit();
        let mut q = QueryBuilder::<D::DB>::new(SELECT_ALL);
        if let Some(after) = page.after {
            q.push(" AND id > ").push_bind(after.as_str().to_owned());
        }
        if let Some(owner) = &filter.owner {
            q.push(" AND owner = ").push_bind(owner.clone());
        }
        if let Some(prefix) = &filter.prefix {
            q.push(" AND prefix = ").push_bind(prefix.clone());
        }
        if let Some(lineage) = filter.lineage {
            q.push(" AND lineage = ")
                .push_bind(lineage.as_str().to_owned());
        }
        if let Some(needle) = codec::needle(filter) {
            q.push(" AND ")
                .push(D::POSITION)
                .push("(name_folded, ")
                .push_bind(needle)
                .push(") > 0");
        }
        if let Some(state) = filter.state {
            let (before, after) = codec::state_sql(state);
            q.push(" AND (").push(before);
            if let Some(after) = after {
                q.push_bind(D::time(self.now())).push(after);
            }
            q.push(")");
        }
        q.push(" ORDER BY id LIMIT ")
            .push_bind(i64::try_from(limit + 1).unwrap_or(i64::MAX));
        let rows = q.build().fetch_all(&self.pool).await.map_err(unavailable)?;
        let keys = rows
            .iter()
            .map(Self::record)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KeyPage::from_overfetch(keys, limit))
    }

    pub(crate) async fn apply(
        &self,
        id: &KeyId,
        change: KeyChange,
    ) -> Result<KeyRecord, StoreError> {
        change.validate()?;
        let change = codec::truncate_change(change);
        let now = self.now();
        let mut tx = self.write_tx().await?;
        let mut record = Self::select(&mut tx, &D::statements().select_for_write, id)
            .await?
            .ok_or(StoreError::NotFound(*id))?;
        let top_up = matches!(change, KeyChange::AddCredits(_));
        change
            .apply_to(&mut record, now)
            .map_err(|refused| StoreError::refused(*id, refused))?;
        self.update(&mut tx, &record).await?;
        if top_up {
            // The other keys of the lineage (a rotated key in its grace period, its successor)
            // spend the same balance: they carry the same total, each change announced.
            let rows = sqlx::query(D::statements().select_lineage_others_for_write.as_str())
                .bind(record.lineage.as_str())
                .bind(id.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)?;
            for row in &rows {
                let mut other = Self::record(row)?;
                other.quota_granted = record.quota_granted;
                other.updated_at = now;
                self.update(&mut tx, &other).await?;
            }
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(record)
    }

    pub(crate) async fn rotate_with(
        &self,
        id: &KeyId,
        replacement: MintedKey,
        rotation: Rotation,
    ) -> Result<RotatedKey, StoreError> {
        let now = self.now();
        let mut tx = self.write_tx().await?;
        let mut old = Self::select(&mut tx, &D::statements().select_for_write, id)
            .await?
            .ok_or(StoreError::NotFound(*id))?;
        let new = rotation
            .apply_to(&mut old, &normalized(replacement.record()), now)
            .map_err(|refused| StoreError::refused(*id, refused))?;
        // Either both rows are written or neither: a taken new id rolls the old one back.
        self.insert(&mut tx, &new).await?;
        self.update(&mut tx, &old).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(RotatedKey {
            old,
            new: replacement.into_created(new),
        })
    }

    pub(crate) async fn delete(&self, id: &KeyId) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        // The owner goes into the tombstone: the owner's roll-up keeps the key's events.
        let row = sqlx::query(D::statements().select_key_owner_for_write.as_str())
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
            .ok_or(StoreError::NotFound(*id))?;
        let owner: Option<String> = Self::column(&row, "owner")?;
        let deleted = self
            .dialect
            .announce(
                sqlx::query(D::statements().delete.as_str()).bind(id.as_str()),
                id,
            )
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        if deleted.is_none() {
            return Err(StoreError::NotFound(*id));
        }
        sqlx::query(TOMBSTONE)
            .bind(id.as_str())
            .bind(D::time(self.now()))
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    // ---- Owners ----------------------------------------------------------------------------

    fn owner_row(row: &DbRow<D>) -> Result<OwnerRecord, StoreError> {
        RawOwner {
            id: Self::column(row, "id")?,
            name: Self::column(row, "name")?,
            metadata: Self::column(row, "metadata")?,
            rate_limit: Self::column(row, "rate_limit")?,
            quota: Self::column(row, "quota")?,
            limits: Self::column(row, "limits")?,
            created_at: D::micros(Self::column(row, "created_at")?),
            updated_at: D::micros(Self::column(row, "updated_at")?),
            quota_granted: Self::column(row, "quota_granted")?,
        }
        .into_owner()
    }

    async fn select_owner(
        conn: &mut Connection<D>,
        sql: &'static str,
        id: &str,
    ) -> Result<Option<OwnerRecord>, StoreError> {
        let row = sqlx::query(sql)
            .bind(id.to_owned())
            .fetch_optional(conn)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(Self::owner_row).transpose()
    }

    /// Inserts `owner` unless its id exists; whether it did.
    async fn insert_owner(
        &self,
        conn: &mut Connection<D>,
        owner: &OwnerRecord,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(D::statements().insert_owner.as_str())
            .bind(owner.id.clone())
            .bind(owner.name.clone())
            .bind(metadata_json(&owner.metadata))
            .bind(rate_limit_text(owner.rate_limit.as_ref()))
            .bind(quota_text(owner.quota.as_ref()))
            .bind(D::time(owner.created_at))
            .bind(D::time(owner.updated_at))
            .bind(limits_text(&owner.limits))
            .bind(granted_number(owner.quota_granted)?)
            .fetch_optional(conn)
            .await
            .map_err(unavailable)?;
        Ok(inserted.is_some())
    }

    pub(crate) async fn find_owner(&self, id: &str) -> Result<Option<OwnerRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        Self::select_owner(&mut conn, &D::statements().select_owner, id).await
    }

    pub(crate) async fn create_owner(&self, owner: NewOwner) -> Result<OwnerRecord, StoreError> {
        let record = normalized_owner(owner.into_record(self.now())?);
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        if self.insert_owner(&mut conn, &record).await? {
            Ok(record)
        } else {
            Err(StoreError::owner_exists(&record.id))
        }
    }

    pub(crate) async fn get_owner(&self, id: &str) -> Result<OwnerRecord, StoreError> {
        self.find_owner(id)
            .await?
            .ok_or_else(|| StoreError::OwnerNotFound(id.to_owned()))
    }

    pub(crate) async fn list_owners(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OwnerRecord>, StoreError> {
        let limit = i64::try_from(limit.clamp(1, MAX_OWNERS_PAGE)).unwrap_or(i64::MAX);
        let statements = D::statements();
        let query = match after {
            Some(after) => sqlx::query(statements.list_owners_after.as_str())
                .bind(limit)
                .bind(after.to_owned()),
            None => sqlx::query(statements.list_owners.as_str()).bind(limit),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.iter().map(Self::owner_row).collect()
    }

    pub(crate) async fn update_owner(
        &self,
        id: &str,
        update: OwnerUpdate,
    ) -> Result<OwnerRecord, StoreError> {
        update.validate()?;
        let limit_changed = update.changes_rate_limit();
        let now = self.now();
        let mut tx = self.write_tx().await?;
        let mut owner = Self::select_owner(&mut tx, &D::statements().select_owner_for_write, id)
            .await?
            .ok_or_else(|| StoreError::OwnerNotFound(id.to_owned()))?;
        update
            .apply_to(&mut owner, now)
            .map_err(|refused| StoreError::owner_refused(id, refused))?;
        sqlx::query(D::statements().update_owner.as_str())
            .bind(owner.name.clone())
            .bind(metadata_json(&owner.metadata))
            .bind(rate_limit_text(owner.rate_limit.as_ref()))
            .bind(quota_text(owner.quota.as_ref()))
            .bind(D::time(owner.updated_at))
            .bind(limits_text(&owner.limits))
            .bind(granted_number(owner.quota_granted)?)
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        if limit_changed {
            // Every cached entry of the owner's keys holds the old limit.
            self.dialect
                .announce_owner_keys(id)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(owner)
    }

    pub(crate) async fn delete_owner(&self, id: &str) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        if Self::select_owner(&mut tx, &D::statements().select_owner_for_write, id)
            .await?
            .is_none()
        {
            return Err(StoreError::OwnerNotFound(id.to_owned()));
        }
        let has_keys = sqlx::query(OWNER_HAS_KEYS)
            .bind(id.to_owned())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
            .is_some();
        if has_keys {
            return Err(StoreError::owner_has_keys(id));
        }
        sqlx::query(DELETE_OWNER)
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    pub(crate) async fn change_owner_keys(
        &self,
        id: &str,
        change: OwnerKeysChange,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let now = self.now();
        let mut tx = self.write_tx().await?;
        if Self::select_owner(&mut tx, &D::statements().select_owner_for_write, id)
            .await?
            .is_none()
        {
            return Err(StoreError::OwnerNotFound(id.to_owned()));
        }
        let rows = sqlx::query(D::statements().select_by_owner_for_write.as_str())
            .bind(id.to_owned())
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        let mut changed = Vec::new();
        for row in &rows {
            let mut record = Self::record(row)?;
            if !change.applies_to(&record) {
                continue;
            }
            change
                .key_change()
                .apply_to(&mut record, now)
                .map_err(|refused| StoreError::refused(record.id, refused))?;
            // Each update announces its key in this transaction: every instance hears of all
            // of them when, and only if, the whole change commits.
            self.update(&mut tx, &record).await?;
            changed.push(record);
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(changed)
    }

    pub(crate) async fn owner_key_count(&self, id: &str) -> Result<u64, StoreError> {
        let row = sqlx::query(OWNER_KEY_COUNT)
            .bind(id.to_owned())
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        let count: i64 = Self::column(&row, "key_count")?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    pub(crate) async fn deleted_owner_keys(&self, id: &str) -> Result<Vec<KeyId>, StoreError> {
        let rows = sqlx::query(DELETED_OWNER_KEYS)
            .bind(id.to_owned())
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                let id: String = Self::column(row, "id")?;
                id.parse().map_err(|_| codec::corrupt(&id, "id"))
            })
            .collect()
    }
}

/// Implements [`KeyStore`](keygate::KeyStore) and [`KeyAdmin`](keygate::KeyAdmin) for a public
/// store type by handing every call to its `keys` field, a [`SqlStore`]. (keygate's traits
/// cannot be implemented once for every `SqlStore` and reach the public types.)
macro_rules! delegate_to_sql_store {
    ($store:ty) => {
        // A scope for the imports.
        const _: () = {
            use std::time::SystemTime;

            use keygate::owner::{NewOwner, OwnerKeysChange, OwnerRecord, OwnerUpdate};
            use keygate::store::{
                KeyFilter, KeyPage, KeyRehash, OwnerLimits, PageRequest, StoreSettings,
            };
            use keygate::{
                CreatedKey, KeyAdmin, KeyChange, KeyId, KeyRecord, KeyStore, MintedKey, RotatedKey,
                Rotation, StoreError,
            };

            #[async_trait::async_trait]
            impl KeyStore for $store {
                fn quota_ledger(
                    self: std::sync::Arc<Self>,
                ) -> Option<std::sync::Arc<dyn keygate::quota::QuotaLedger>> {
                    Some(self)
                }

                async fn find(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
                    self.keys.find(id).await
                }

                async fn record_last_used(
                    &self,
                    used: &[(KeyId, SystemTime)],
                ) -> Result<(), StoreError> {
                    self.keys.record_last_used(used).await
                }

                async fn settings(&self) -> Result<Option<StoreSettings>, StoreError> {
                    self.keys.settings().await
                }

                async fn add_settings(
                    &self,
                    entries: &[(String, String)],
                ) -> Result<(), StoreError> {
                    self.keys.add_settings(entries).await
                }

                async fn replace_policy_settings(
                    &self,
                    entries: &[(String, String)],
                ) -> Result<(), StoreError> {
                    self.keys.replace_policy_settings(entries).await
                }

                async fn rehash(&self, keys: &[KeyRehash]) -> Result<(), StoreError> {
                    self.keys.rehash(keys).await
                }

                async fn find_owner(&self, id: &str) -> Result<Option<OwnerRecord>, StoreError> {
                    self.keys.find_owner(id).await
                }

                async fn find_with_owner_limit(
                    &self,
                    id: &KeyId,
                ) -> Result<Option<(KeyRecord, OwnerLimits)>, StoreError> {
                    self.keys.find_with_owner_limit(id).await
                }
            }

            #[async_trait::async_trait]
            impl KeyAdmin for $store {
                async fn pepper_versions(&self) -> Result<Vec<(u32, u64)>, StoreError> {
                    self.keys.pepper_versions().await
                }

                async fn create(&self, key: MintedKey) -> Result<CreatedKey, StoreError> {
                    self.keys.create(key).await
                }

                async fn get(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
                    self.keys.get(id).await
                }

                async fn list(
                    &self,
                    filter: &KeyFilter,
                    page: PageRequest,
                ) -> Result<KeyPage, StoreError> {
                    self.keys.list(filter, page).await
                }

                async fn apply(
                    &self,
                    id: &KeyId,
                    change: KeyChange,
                ) -> Result<KeyRecord, StoreError> {
                    self.keys.apply(id, change).await
                }

                async fn rotate_with(
                    &self,
                    id: &KeyId,
                    replacement: MintedKey,
                    rotation: Rotation,
                ) -> Result<RotatedKey, StoreError> {
                    self.keys.rotate_with(id, replacement, rotation).await
                }

                async fn delete(&self, id: &KeyId) -> Result<(), StoreError> {
                    self.keys.delete(id).await
                }

                async fn create_owner(&self, owner: NewOwner) -> Result<OwnerRecord, StoreError> {
                    self.keys.create_owner(owner).await
                }

                async fn get_owner(&self, id: &str) -> Result<OwnerRecord, StoreError> {
                    self.keys.get_owner(id).await
                }

                async fn list_owners(
                    &self,
                    after: Option<&str>,
                    limit: usize,
                ) -> Result<Vec<OwnerRecord>, StoreError> {
                    self.keys.list_owners(after, limit).await
                }

                async fn update_owner(
                    &self,
                    id: &str,
                    update: OwnerUpdate,
                ) -> Result<OwnerRecord, StoreError> {
                    self.keys.update_owner(id, update).await
                }

                async fn delete_owner(&self, id: &str) -> Result<(), StoreError> {
                    self.keys.delete_owner(id).await
                }

                async fn change_owner_keys(
                    &self,
                    id: &str,
                    change: OwnerKeysChange,
                ) -> Result<Vec<KeyRecord>, StoreError> {
                    self.keys.change_owner_keys(id, change).await
                }

                async fn owner_key_count(&self, id: &str) -> Result<u64, StoreError> {
                    self.keys.owner_key_count(id).await
                }

                async fn deleted_owner_keys(&self, id: &str) -> Result<Vec<KeyId>, StoreError> {
                    self.keys.deleted_owner_keys(id).await
                }
            }
        };
    };
}
pub(crate) use delegate_to_sql_store;
