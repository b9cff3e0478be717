//! Fixtures for the store suites: every store the conformance cases run against (MemoryStore,
//! SQLite in a temp file, PostgreSQL in a throw-away schema), a way to take each one down, and a
//! wrapper that counts last-used writes.
//!
//! PostgreSQL is used when `KEYGATE_TEST_POSTGRES_URL` is set (CI sets it). Set but unreachable
//! is a test failure; unset skips the PostgreSQL cases with a printed note.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use keygate::clock::ManualClock;
use keygate::store::{KeyFilter, KeyPage, PageRequest};
use keygate::{
    CreatedKey, Invalidation, KeyAdmin, KeyChange, KeyId, KeyRecord, KeyStore, MemoryStore,
    MintedKey, RotatedKey, Rotation, StoreError, Verifier,
};
use keygate_sqlx::sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use keygate_sqlx::{PostgresStore, SqliteStore};

use crate::{CountingStore, epoch, keyring};

/// The environment variable naming the test PostgreSQL server.
pub const POSTGRES_URL_ENV: &str = "KEYGATE_TEST_POSTGRES_URL";

/// A store under test, type-erased so one case runs against all of them.
pub trait TestStore: KeyStore + KeyAdmin + Clone {}
impl<T: KeyStore + KeyAdmin + Clone> TestStore for T {}

type Outage = Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// One store under test with its clock, a verifier over it, and a switch that takes it down.
pub struct Fixture<S> {
    /// Which store this is, for messages.
    pub name: &'static str,
    /// The store.
    pub store: S,
    /// The clock shared by store and verifier.
    pub clock: ManualClock,
    /// A verifier over the store (test keyring, manual clock).
    pub verifier: Verifier,
    outage: Outage,
    _cleanup: Option<Cleanup>,
}

impl<S> std::fmt::Debug for Fixture<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<S: TestStore> Fixture<S> {
    fn new(name: &'static str, store: S, clock: ManualClock, outage: Outage) -> Self {
        Self::with_channel(name, store, clock, outage, None)
    }

    fn with_channel(
        name: &'static str,
        store: S,
        clock: ManualClock,
        outage: Outage,
        channel: Option<Arc<dyn Invalidation>>,
    ) -> Self {
        let mut builder = Verifier::builder(keyring(), store.clone()).clock(clock.clone());
        if let Some(channel) = channel {
            builder = builder.shared_invalidation(channel);
        }
        let verifier = builder.build();
        Self {
            name,
            store,
            clock,
            verifier,
            outage,
            _cleanup: None,
        }
    }

    /// Takes the store down: every later call fails as an outage would.
    pub async fn take_down(&self) {
        (self.outage)().await;
    }
}

/// A fresh MemoryStore (behind [`CountingStore`], whose outage switch stands in for a real one).
pub fn memory() -> Fixture<CountingStore> {
    let clock = ManualClock::new(epoch());
    let store = CountingStore::new(MemoryStore::with_clock(clock.clone()));
    let down = store.clone();
    Fixture::new(
        "memory",
        store,
        clock,
        Box::new(move || {
            down.set_down(true);
            Box::pin(async {})
        }),
    )
}

/// A fresh SQLite store in its own temp directory (removed when the fixture drops), its
/// verifier subscribed to the file's change feed.
pub async fn sqlite() -> Fixture<SqliteStore> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keygate.db");
    let clock = ManualClock::new(epoch());
    let store = SqliteStore::open(&path)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
        .with_clock(clock.clone());
    let pool = store.pool().clone();
    let feed = Arc::new(store.invalidation());
    let mut fixture = Fixture::with_channel(
        "sqlite",
        store,
        clock,
        Box::new(move || {
            let pool = pool.clone();
            Box::pin(async move { pool.close().await })
        }),
        Some(feed),
    );
    fixture._cleanup = Some(Cleanup::Dir(dir));
    // Subscribing empties the cache: let it happen before the cases count store calls.
    crate::wait_subscribed(&fixture.verifier).await;
    fixture
}

/// The SQLite file of a fixture made by [`sqlite`].
pub fn sqlite_path<S>(fixture: &Fixture<S>) -> Option<PathBuf> {
    match &fixture._cleanup {
        Some(Cleanup::Dir(dir)) => Some(dir.path().join("keygate.db")),
        _ => None,
    }
}

/// The test PostgreSQL URL, or `None` (with a printed note) when it is not configured.
pub fn postgres_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!(
                "note: {POSTGRES_URL_ENV} is not set: skipping the PostgreSQL part of this test"
            );
            None
        }
    }
}

/// A schema of its own on the test server, dropped when the value drops (even on panic).
#[derive(Debug)]
pub struct PgSchema {
    /// The server URL.
    pub url: String,
    /// The schema name (`kgt_<unix seconds>_<pid>_<n>`).
    pub name: String,
}

static SCHEMA_SEQ: AtomicU64 = AtomicU64::new(0);

impl PgSchema {
    /// Creates a new schema; first drops schemas of earlier runs that are over an hour old.
    ///
    /// # Panics
    /// When the server does not answer: a configured PostgreSQL must be reachable.
    pub async fn create(url: &str) -> Self {
        let admin = admin_pool(url).await;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let stale: Vec<String> = keygate_sqlx::sqlx::query_scalar(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'kgt\\_%'",
        )
        .fetch_all(&admin)
        .await
        .expect("list schemas");
        for name in stale {
            let created = name
                .split('_')
                .nth(1)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(u64::MAX);
            if now.saturating_sub(created) > 3600 && created != u64::MAX {
                drop_schema(&admin, &name).await;
            }
        }
        let name = format!(
            "kgt_{now}_{}_{}",
            std::process::id(),
            SCHEMA_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        keygate_sqlx::sqlx::query(keygate_sqlx::sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA \"{name}\""
        )))
        .execute(&admin)
        .await
        .unwrap_or_else(|e| panic!("create schema {name}: {e}"));
        admin.close().await;
        Self {
            url: url.to_owned(),
            name,
        }
    }

    /// Connection options whose `search_path` is this schema.
    pub fn options(&self) -> PgConnectOptions {
        let options: PgConnectOptions = self
            .url
            .parse()
            .unwrap_or_else(|e| panic!("{POSTGRES_URL_ENV}: {e}"));
        // The application name marks this run's sessions, so the schema's drop can end them.
        options
            .options([("search_path", self.name.as_str())])
            .application_name(&self.name)
    }

    /// A migrated store in this schema.
    pub async fn store(&self) -> PostgresStore {
        self.store_with(self.options()).await
    }

    /// A migrated store connected with `options` (this schema's, changed).
    pub async fn store_with(&self, options: PgConnectOptions) -> PostgresStore {
        let store = PostgresStore::connect_with(options)
            .await
            .unwrap_or_else(|e| {
                panic!("{POSTGRES_URL_ENV} is set but PostgreSQL does not answer: {e}")
            });
        store.migrate().await.expect("migrate");
        store
    }
}

async fn admin_pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("{POSTGRES_URL_ENV} is set but PostgreSQL does not answer: {e}"))
}

async fn drop_schema(pool: &PgPool, name: &str) {
    // Sessions of the test may still hold locks (a panic can leave a transaction open, and its
    // runtime is blocked by this drop): end them first.
    let _ = keygate_sqlx::sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(name)
    .execute(pool)
    .await;
    let _ = keygate_sqlx::sqlx::query("SET lock_timeout = '5s'")
        .execute(pool)
        .await;
    let _ = keygate_sqlx::sqlx::query(keygate_sqlx::sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
    )))
    .execute(pool)
    .await;
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // Drop is synchronous and may run inside a runtime: do the async work on a thread of its own.
        let url = self.url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(pool) = PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(&url)
                    .await
                {
                    drop_schema(&pool, &name).await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

enum Cleanup {
    Dir(tempfile::TempDir),
    Schema(PgSchema),
}

/// A fresh PostgreSQL store in a schema of its own, or `None` when PostgreSQL is not configured.
pub async fn postgres() -> Option<Fixture<PostgresStore>> {
    postgres_with(|options| options).await
}

/// [`postgres`] with its connection options changed by `configure` (e.g. through a proxy).
pub async fn postgres_with(
    configure: impl FnOnce(PgConnectOptions) -> PgConnectOptions,
) -> Option<Fixture<PostgresStore>> {
    let url = postgres_url()?;
    let schema = PgSchema::create(&url).await;
    let clock = ManualClock::new(epoch());
    let store = schema
        .store_with(configure(schema.options()))
        .await
        .with_clock(clock.clone());
    let pool = store.pool().clone();
    let mut fixture = Fixture::new(
        "postgres",
        store,
        clock,
        Box::new(move || {
            let pool = pool.clone();
            Box::pin(async move { pool.close().await })
        }),
    );
    fixture._cleanup = Some(Cleanup::Schema(schema));
    Some(fixture)
}

/// The schema of a fixture made by [`postgres`].
pub fn postgres_schema<S>(fixture: &Fixture<S>) -> Option<&PgSchema> {
    match &fixture._cleanup {
        Some(Cleanup::Schema(schema)) => Some(schema),
        _ => None,
    }
}

/// Wraps a store and counts, per key, the last-used times written through it.
#[derive(Clone, Debug)]
pub struct UsageCounter<S> {
    inner: S,
    writes: Arc<Mutex<HashMap<KeyId, usize>>>,
}

impl<S> UsageCounter<S> {
    /// Counts writes to `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            writes: Arc::default(),
        }
    }

    /// Last-used writes for `id` so far.
    pub fn writes(&self, id: &KeyId) -> usize {
        let writes = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        writes.get(id).copied().unwrap_or(0)
    }
}

#[async_trait]
impl<S: KeyStore> KeyStore for UsageCounter<S> {
    async fn find(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.find(id).await
    }
    async fn record_last_used(&self, used: &[(KeyId, SystemTime)]) -> Result<(), StoreError> {
        {
            let mut writes = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
            for (id, _) in used {
                *writes.entry(*id).or_default() += 1;
            }
        }
        self.inner.record_last_used(used).await
    }
}

#[async_trait]
impl<S: KeyAdmin> KeyAdmin for UsageCounter<S> {
    async fn create(&self, key: MintedKey) -> Result<CreatedKey, StoreError> {
        self.inner.create(key).await
    }
    async fn get(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
        self.inner.get(id).await
    }
    async fn list(&self, filter: &KeyFilter, page: PageRequest) -> Result<KeyPage, StoreError> {
        self.inner.list(filter, page).await
    }
    async fn apply(&self, id: &KeyId, change: KeyChange) -> Result<KeyRecord, StoreError> {
        self.inner.apply(id, change).await
    }
    async fn rotate_with(
        &self,
        id: &KeyId,
        replacement: MintedKey,
        rotation: Rotation,
    ) -> Result<RotatedKey, StoreError> {
        self.inner.rotate_with(id, replacement, rotation).await
    }
    async fn delete(&self, id: &KeyId) -> Result<(), StoreError> {
        self.inner.delete(id).await
    }
}
