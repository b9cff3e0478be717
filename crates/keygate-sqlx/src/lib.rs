//! SQLite and PostgreSQL key stores for keygate.
//!
//! | store | for | feature |
//! | --- | --- | --- |
//! | [`SqliteStore`] | one host: an embedded file (`keygate.db`), zero set-up | `sqlite` (default) |
//! | [`PostgresStore`] | several instances sharing one key store, with [`PostgresInvalidation`] | `postgres` (default) |
//!
//! Both implement [`keygate::KeyStore`] (the request path, including write-behind last-used
//! times) and [`keygate::KeyAdmin`] (management, with atomic rotation), with exactly
//! [`keygate::MemoryStore`]'s semantics: the conformance suite in the workspace's `tests/`
//! crate runs the same cases against all three.
//!
//! # Many instances
//! [`PostgresStore`] notifies the id of every key it changes (`pg_notify`, inside the change's
//! transaction), and [`PostgresInvalidation`] (from `store.invalidation()`) subscribes to those
//! notifications, so every instance's verifier evicts a changed key as soon as the change
//! commits. [`SqliteStore`] serves one host: every change writes a row to its change feed in
//! the same transaction, and [`SqliteInvalidation`] (from `store.invalidation()`) reads it, so
//! a verifier evicts a key changed by any process on the file (the CLI, another service)
//! within about 100 ms.
//!
//! # Audit trail and usage
//! [`SqlAuditSink`] (from `store.audit_sink()`) keeps the verifier's audit events and per-key,
//! per-day request counts in the same database, for `keygate audit` and `keygate usage`; see
//! the [`audit`] module.
//!
//! # Quota counters
//! Both stores keep the counters of an in-process quota meter
//! ([`keygate::quota::InProcessMeter`]) in table `keygate_quota_counters`: they implement
//! [`keygate::quota::QuotaLedger`] (one upsert statement per save, one query per load), and
//! [`KeyStore::quota_ledger`](keygate::KeyStore::quota_ledger) hands them out, so a meter
//! built with `.ledger(Arc::new(store.clone()))` survives a restart losing at most one flush
//! interval of charges (see `docs/deployment.md`, "Durability and many instances").
//!
//! # Migrations
//! The schema ships inside the crate as versioned migrations (tracked in table
//! `keygate_migrations`). Apply them with `migrate()` on start (the `open` constructors do);
//! it is idempotent. Later versions only add to the schema. A database already migrated by a
//! newer keygate is refused with [`Error::SchemaTooNew`].
//!
//! # What is stored
//! Per key: the public id, prefix, name, owner, the HMAC-SHA256 digest of the key and its
//! pepper version, scopes, metadata, allowed client IP ranges, the id it was rotated from, and
//! its created/updated/expires/disabled/revoked/last-used times. Never the key's secret or any
//! part of it. Deleted ids are kept in `keygate_deleted_keys` so they are never reused, with
//! the deleted key's owner (an owner's audit roll-up keeps its deleted keys). Deployment
//! settings are kept in `keygate_settings` (written on first use, never overwritten): a
//! fingerprint per pepper version (never the pepper) and whether this is a development store,
//! which `VerifierBuilder::start` and the CLI check their peppers against (see
//! [`keygate::store::StoreSettings`]). The one exception is the key lifetime policy
//! (`policy.*` names, see [`keygate::policy`]), which
//! [`replace_policy_settings`](keygate::KeyStore::replace_policy_settings) replaces in one
//! transaction; no other setting can be changed through it.
//!
//! # Errors
//! Opening and migrating return [`Error`]. Store operations return [`keygate::StoreError`]:
//! bad input is refused before any query with a typed error, and database failures
//! (unreachable, locked, damaged) are `StoreError::Unavailable`, which the verifier answers
//! with 503, never 401.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use keygate::{KeyAdmin, Keyring, NewKey, Verifier};
//! use keygate_sqlx::SqliteStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A file such as "keygate.db" in production; in memory here.
//! let store = SqliteStore::in_memory().await?;
//! // Checks the pepper against the store's recorded fingerprints (here: a development store).
//! let verifier = Verifier::builder(Keyring::development("acme_test")?, store).start().await?;
//! let admin = verifier.admin();
//!
//! let created = admin.create_key(NewKey::new("billing").scope("invoices:read")?).await?;
//! println!("your key (shown once): {}", created.key.expose_secret());
//!
//! // Replace it; the old key keeps working for an hour.
//! let rotated = admin.rotate(&created.record.id, Duration::from_secs(3600)).await?;
//! assert_eq!(rotated.new.record.rotated_from, Some(created.record.id));
//!
//! // On shutdown, write the last-used times still buffered.
//! verifier.flush_last_used().await?;
//! # Ok(())
//! # }
//! ```
//!
//! With PostgreSQL: `PostgresStore::open("postgres://…").await?` (see [`PostgresStore`]).

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod audit;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod codec;
mod error;
#[cfg(feature = "sqlite")]
mod feed;
#[cfg(feature = "postgres")]
mod invalidation;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod ledger;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod migrations;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod store;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use audit::SqlAuditSink;
pub use error::Error;
#[cfg(feature = "sqlite")]
pub use feed::SqliteInvalidation;
#[cfg(feature = "postgres")]
pub use invalidation::PostgresInvalidation;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// The decoding of stored rows into records, for keygate's fuzz targets (`fuzz/` in the
/// repository). Not public API: no stability promise.
#[doc(hidden)]
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod fuzzing {
    pub use crate::codec::RawRecord;
    #[cfg(feature = "sqlite")]
    pub use crate::codec::parse_json_strings;
}

/// The sqlx version this crate is built on, for pools passed to `from_pool`.
pub use sqlx;
