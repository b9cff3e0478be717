//! Opening the key store named by `--database-url`.

use std::sync::Arc;

use keygate::{Admin, AdminBuilder, KeyAdmin, KeyStore};
use keygate_sqlx::{PostgresStore, SqlAuditSink, SqliteStore};

use crate::error::CliError;

/// An open, migrated key store.
pub(crate) enum Store {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl Store {
    /// Opens (and migrates) the store at `url`: `sqlite://PATH`, `sqlite:PATH` or
    /// `postgres://…` / `postgresql://…`.
    pub(crate) async fn open(url: &str) -> Result<Self, CliError> {
        if let Some(path) = sqlite_path(url)? {
            return Ok(Self::Sqlite(SqliteStore::open(path).await?));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(PostgresStore::open(url).await?));
        }
        Err(unsupported_url())
    }

    /// Opens (and migrates) the store at `url` only if it exists: `None`, with nothing
    /// created, for a missing SQLite file or a database without keygate's tables.
    pub(crate) async fn open_existing(url: &str) -> Result<Option<Self>, CliError> {
        if let Some(path) = sqlite_path(url)? {
            if !std::path::Path::new(path).exists() {
                return Ok(None);
            }
            return Ok(Some(Self::Sqlite(SqliteStore::open(path).await?)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options: keygate_sqlx::sqlx::postgres::PgConnectOptions = url
                .parse()
                .map_err(|e| CliError::from(keygate_sqlx::Error::Connect(e)))?;
            let store = PostgresStore::connect_with(options).await?;
            if store.schema_version().await?.is_none() {
                return Ok(None);
            }
            store.migrate().await?;
            return Ok(Some(Self::Postgres(store)));
        }
        Err(unsupported_url())
    }

    /// The store's read path (settings included).
    pub(crate) fn keys(&self) -> &dyn KeyStore {
        match self {
            Self::Sqlite(store) => store,
            Self::Postgres(store) => store,
        }
    }

    /// The store's management interface, for commands that mint nothing.
    pub(crate) fn admin(&self) -> &dyn KeyAdmin {
        match self {
            Self::Sqlite(store) => store,
            Self::Postgres(store) => store,
        }
    }

    /// The store's management interface, shared (for the sweeps of `serve`).
    pub(crate) fn shared_admin(&self) -> Arc<dyn KeyAdmin> {
        match self {
            Self::Sqlite(store) => Arc::new(store.clone()),
            Self::Postgres(store) => Arc::new(store.clone()),
        }
    }

    /// A management handle over this store that records each change in the store's audit
    /// trail (call `flush_audit` before exiting).
    pub(crate) fn admin_builder(&self) -> AdminBuilder {
        match self {
            Self::Sqlite(store) => Admin::builder(store.clone()),
            Self::Postgres(store) => Admin::builder(store.clone()),
        }
        .audit_sink(self.audit())
    }

    /// The store's audit trail and usage counts. The CLI never prunes: retention is the
    /// services' setting.
    pub(crate) fn audit(&self) -> SqlAuditSink {
        let sink = match self {
            Self::Sqlite(store) => store.audit_sink(),
            Self::Postgres(store) => store.audit_sink(),
        };
        sink.retention(None)
    }

    /// The schema version after migration.
    pub(crate) async fn schema_version(&self) -> Result<Option<i64>, CliError> {
        Ok(match self {
            Self::Sqlite(store) => store.schema_version().await?,
            Self::Postgres(store) => store.schema_version().await?,
        })
    }
}

/// The file of a SQLite URL; `None` for other URLs.
fn sqlite_path(url: &str) -> Result<Option<&str>, CliError> {
    match url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        Some("") => Err(CliError::usage(
            "the SQLite URL names no file: use sqlite://keygate.db or sqlite:///absolute/path.db",
        )),
        other => Ok(other),
    }
}

fn unsupported_url() -> CliError {
    CliError::usage(
        "unsupported --database-url: use sqlite://PATH or postgres://USER@HOST/DATABASE",
    )
}
