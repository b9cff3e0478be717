//! Shared fixtures for keygate's cross-crate suites: a store that counts and fails on demand, a
//! set of keys in every state, the same app in axum, actix-web and tonic (gRPC), the scenario
//! table they must pass, and helpers to send requests and read responses. [`stores`] holds the
//! store fixtures (memory, SQLite, PostgreSQL).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

pub mod actix_app;
pub mod axum_app;
pub mod channel;
pub mod scenario;
pub mod stores;
pub mod tonic_app;

pub use axum_app::{axum_app, request, send, send_bearer};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use http::{HeaderMap, StatusCode};
use keygate::clock::{Clock, ManualClock};
use keygate::owner::{NewOwner, OwnerKeysChange, OwnerRecord, OwnerUpdate};
use keygate::store::{KeyFilter, KeyPage, PageRequest};
use keygate::{
    CreatedKey, KeyAdmin, KeyChange, KeyFormat, KeyId, KeyRecord, KeyStore, Keyring, MemoryStore,
    MintedKey, NewKey, Pepper, Peppers, Reason, Rejection, RotatedKey, Rotation, StoreError,
    Verifier,
};

/// Formatted log output captured in memory (a `tracing_subscriber` writer), for leak scans.
#[derive(Clone, Debug, Default)]
pub struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// An audit sink that keeps every event, for tests to inspect.
#[derive(Clone, Debug, Default)]
pub struct CapturingSink {
    events: Arc<std::sync::Mutex<Vec<keygate::audit::AuditEvent>>>,
}

impl CapturingSink {
    /// Takes the events captured so far.
    pub fn take(&self) -> Vec<keygate::audit::AuditEvent> {
        std::mem::take(
            &mut *self
                .events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

#[async_trait]
impl keygate::audit::AuditSink for CapturingSink {
    async fn write(
        &self,
        events: &[keygate::audit::AuditEvent],
    ) -> Result<(), keygate::audit::AuditError> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(events);
        Ok(())
    }
}

/// The deployment prefix used by the suites.
pub const PREFIX: &str = "kgt_test";

/// A store that any store can stand behind (a [`MemoryStore`] by default).
pub trait Backend: KeyStore + KeyAdmin + std::fmt::Debug {}
impl<T: KeyStore + KeyAdmin + std::fmt::Debug> Backend for T {}

/// A store (a [`MemoryStore`] unless built with [`CountingStore::over`]) that counts `find`
/// calls and can be switched into an outage or slowed down.
#[derive(Clone, Debug)]
pub struct CountingStore {
    inner: Arc<dyn Backend>,
    finds: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    delay_ms: Arc<AtomicUsize>,
}

impl Default for CountingStore {
    fn default() -> Self {
        Self::new(MemoryStore::new())
    }
}

impl CountingStore {
    /// A counting store over `inner`.
    pub fn new(inner: MemoryStore) -> Self {
        Self::over(inner)
    }

    /// A counting store over any store (SQLite, PostgreSQL).
    pub fn over(inner: impl Backend) -> Self {
        Self {
            inner: Arc::new(inner),
            finds: Arc::default(),
            down: Arc::default(),
            delay_ms: Arc::default(),
        }
    }

    /// Number of `find` calls so far.
    pub fn finds(&self) -> usize {
        self.finds.load(Ordering::SeqCst)
    }

    /// Switches the outage on or off: while on, every call fails with `Unavailable`.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Makes each `find` take this long (to pile up concurrent misses).
    pub fn set_delay(&self, delay: Duration) {
        let ms = usize::try_from(delay.as_millis()).unwrap_or(usize::MAX);
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    fn check_up(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::unavailable(
                "simulated outage: connection refused",
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl KeyStore for CountingStore {
    fn quota_ledger(self: Arc<Self>) -> Option<Arc<dyn keygate::quota::QuotaLedger>> {
        Arc::clone(&self.inner).quota_ledger()
    }

    async fn find(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.finds.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay as u64)).await;
        }
        self.check_up()?;
        self.inner.find(id).await
    }
    async fn record_last_used(&self, used: &[(KeyId, SystemTime)]) -> Result<(), StoreError> {
        self.check_up()?;
        self.inner.record_last_used(used).await
    }
    async fn settings(&self) -> Result<Option<keygate::store::StoreSettings>, StoreError> {
        self.check_up()?;
        self.inner.settings().await
    }
    async fn add_settings(&self, entries: &[(String, String)]) -> Result<(), StoreError> {
        self.check_up()?;
        self.inner.add_settings(entries).await
    }
    async fn replace_policy_settings(
        &self,
        entries: &[(String, String)],
    ) -> Result<(), StoreError> {
        self.check_up()?;
        self.inner.replace_policy_settings(entries).await
    }
    async fn rehash(&self, keys: &[keygate::store::KeyRehash]) -> Result<(), StoreError> {
        self.check_up()?;
        self.inner.rehash(keys).await
    }
    // Not counted: the verifier reads a key's owner only with its record
    // (`find_with_owner_limit`'s default calls `find`, which is).
    async fn find_owner(&self, id: &str) -> Result<Option<OwnerRecord>, StoreError> {
        self.check_up()?;
        self.inner.find_owner(id).await
    }
}

#[async_trait]
impl KeyAdmin for CountingStore {
    async fn pepper_versions(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        self.check_up()?;
        self.inner.pepper_versions().await
    }
    async fn create(&self, key: MintedKey) -> Result<CreatedKey, StoreError> {
        self.check_up()?;
        self.inner.create(key).await
    }
    async fn get(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
        self.check_up()?;
        self.inner.get(id).await
    }
    async fn list(&self, filter: &KeyFilter, page: PageRequest) -> Result<KeyPage, StoreError> {
        self.check_up()?;
        self.inner.list(filter, page).await
    }
    async fn apply(&self, id: &KeyId, change: KeyChange) -> Result<KeyRecord, StoreError> {
        self.check_up()?;
        self.inner.apply(id, change).await
    }
    async fn rotate_with(
        &self,
        id: &KeyId,
        replacement: MintedKey,
        rotation: Rotation,
    ) -> Result<RotatedKey, StoreError> {
        self.check_up()?;
        self.inner.rotate_with(id, replacement, rotation).await
    }
    async fn delete(&self, id: &KeyId) -> Result<(), StoreError> {
        self.check_up()?;
        self.inner.delete(id).await
    }
    async fn create_owner(&self, owner: NewOwner) -> Result<OwnerRecord, StoreError> {
        self.check_up()?;
        self.inner.create_owner(owner).await
    }
    async fn get_owner(&self, id: &str) -> Result<OwnerRecord, StoreError> {
        self.check_up()?;
        self.inner.get_owner(id).await
    }
    async fn list_owners(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OwnerRecord>, StoreError> {
        self.check_up()?;
        self.inner.list_owners(after, limit).await
    }
    async fn update_owner(&self, id: &str, update: OwnerUpdate) -> Result<OwnerRecord, StoreError> {
        self.check_up()?;
        self.inner.update_owner(id, update).await
    }
    async fn delete_owner(&self, id: &str) -> Result<(), StoreError> {
        self.check_up()?;
        self.inner.delete_owner(id).await
    }
    async fn change_owner_keys(
        &self,
        id: &str,
        change: OwnerKeysChange,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        self.check_up()?;
        self.inner.change_owner_keys(id, change).await
    }
    async fn deleted_owner_keys(&self, id: &str) -> Result<Vec<KeyId>, StoreError> {
        self.check_up()?;
        self.inner.deleted_owner_keys(id).await
    }
}

/// Waits (at most 10 s) until `verifier`'s invalidation subscription is live.
///
/// # Panics
/// When it is not live by then.
pub async fn wait_subscribed(verifier: &Verifier) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while verifier.invalidation_subscribed() != Some(true) {
        assert!(
            std::time::Instant::now() < deadline,
            "the verifier did not subscribe within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A fixed start time for the manual clock.
pub fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// The test keyring: prefix [`PREFIX`], one real (non-development) pepper.
pub fn keyring() -> Keyring {
    Keyring::new(KeyFormat::new(PREFIX).unwrap(), Peppers::new(pepper()))
}

/// The suites' real (non-development) pepper.
fn pepper() -> Pepper {
    Pepper::new(3, "test-pepper-0123456789-abcdefghijklmnop").unwrap()
}

/// The prefix of the environments keyring's `live` keys.
pub const LIVE_PREFIX: &str = "kgt_live";
/// The prefix of the environments keyring's `test` keys.
pub const TEST_PREFIX: &str = "kgt_envtest";

/// A keyring of two environments: `live` ([`LIVE_PREFIX`], the default) and `test`
/// ([`TEST_PREFIX`]), on the suites' pepper.
pub fn environments_keyring() -> Keyring {
    Keyring::builder()
        .environment("live", KeyFormat::new(LIVE_PREFIX).unwrap())
        .environment("test", KeyFormat::new(TEST_PREFIX).unwrap())
        .build(Peppers::new(pepper()))
        .unwrap()
}

/// A verifier over a fresh counting store, on a manual clock.
#[derive(Clone)]
pub struct Harness {
    /// The verifier under test.
    pub verifier: Verifier,
    /// Its store.
    pub store: CountingStore,
    /// Its clock.
    pub clock: ManualClock,
    /// The invalidation channel every verifier of this harness subscribes to, if any.
    pub invalidation: Option<Arc<dyn keygate::Invalidation>>,
    /// The keyring of every verifier of this harness ([`keyring`] unless built with
    /// [`Harness::with_keyring`]).
    pub keyring: Keyring,
    _dir: Option<Arc<tempfile::TempDir>>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("store", &self.store)
            .field("invalidation", &self.invalidation.is_some())
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// A harness with default verifier settings.
    pub fn new() -> Self {
        Self::with_keyring(keyring())
    }

    /// [`Harness::new`] with another keyring (for example [`environments_keyring`]).
    pub fn with_keyring(keyring: Keyring) -> Self {
        let clock = ManualClock::new(epoch());
        let store = CountingStore::new(MemoryStore::with_clock(clock.clone()));
        Self::over(store, clock, None, None, keyring)
    }

    /// A harness over a SQLite file in a temp directory, every verifier subscribed to the
    /// file's change feed (`SqliteStore::invalidation`). Returns once the harness's own
    /// verifier is subscribed (subscribing empties the cache).
    pub async fn sqlite_with_feed() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(epoch());
        let sqlite = keygate_sqlx::SqliteStore::open(dir.path().join("keygate.db"))
            .await
            .expect("open sqlite")
            .with_clock(clock.clone());
        let feed: Arc<dyn keygate::Invalidation> = Arc::new(sqlite.invalidation());
        let harness = Self::over(
            CountingStore::over(sqlite),
            clock,
            Some(feed),
            Some(dir),
            keyring(),
        );
        wait_subscribed(&harness.verifier).await;
        harness
    }

    fn over(
        store: CountingStore,
        clock: ManualClock,
        invalidation: Option<Arc<dyn keygate::Invalidation>>,
        dir: Option<tempfile::TempDir>,
        keyring: Keyring,
    ) -> Self {
        let mut builder = Verifier::builder(keyring.clone(), store.clone())
            .clock(clock.clone())
            .quota_meter(own_quota_meter());
        if let Some(channel) = &invalidation {
            builder = builder.shared_invalidation(Arc::clone(channel));
        }
        Self {
            verifier: builder.build(),
            store,
            clock,
            invalidation,
            keyring,
            _dir: dir.map(Arc::new),
        }
    }

    /// Another verifier over the same store and clock, with its own (empty) cache and quota
    /// counters: what a second
    /// framework, or a second instance, would build from the same configuration.
    pub fn sibling(&self) -> Verifier {
        self.sibling_with(|builder| builder)
    }

    /// [`Harness::sibling`] with more configuration.
    pub fn sibling_with(
        &self,
        configure: impl FnOnce(keygate::VerifierBuilder) -> keygate::VerifierBuilder,
    ) -> Verifier {
        let mut builder = Verifier::builder(self.keyring.clone(), self.store.clone())
            .clock(self.clock.clone())
            .quota_meter(own_quota_meter());
        if let Some(channel) = &self.invalidation {
            builder = builder.shared_invalidation(Arc::clone(channel));
        }
        configure(builder).build()
    }

    /// Creates a key and returns its plaintext and id.
    pub async fn create(&self, spec: NewKey) -> (String, KeyId) {
        let created = self
            .verifier
            .admin()
            .create_key(spec)
            .await
            .expect("create");
        (created.key.expose_secret().to_owned(), created.record.id)
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

/// Keys in every state, created in one harness.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Active, scopes `orders:read`, named "valid".
    pub valid: String,
    /// Active, no scopes, named "plain".
    pub plain: String,
    /// Active, named "fresh"; used by no case before the store outage, so it is never cached then.
    pub fresh: String,
    /// Revoked.
    pub revoked: String,
    /// Disabled.
    pub disabled: String,
    /// Expired (after [`Keys::create`] moves the clock).
    pub expired: String,
    /// Allowed only from 10.0.0.0/8.
    pub ip_restricted: String,
    /// Well-formed, right prefix, id in no store.
    pub unknown: String,
    /// The valid key's id with another secret (checksum fixed up).
    pub wrong_secret: String,
    /// The valid key under another deployment's prefix (checksum fixed up).
    pub wrong_prefix: String,
    /// The valid key with its last character changed.
    pub bad_checksum: String,
    /// Active, its own rate limit `5/1s burst 5`.
    pub limited: String,
    /// The limited key's id with another secret (checksum fixed up).
    pub limited_wrong_secret: String,
    /// Active, rate limit `unlimited` (whatever the verifier's default).
    pub unlimited: String,
    /// Active, no rate limit of its own: the verifier's default applies. Used only by the
    /// rate-limit cases.
    pub defaulted: String,
    /// A canary (`NewKey::canary`), scopes `orders:read`: refused as an unknown key.
    pub canary: String,
    /// Three keys of owner [`SHARED_OWNER`], whose limit [`SHARED_OWNER_RATE`] they share; no
    /// limit of their own (the verifier's default applies to each as well).
    pub owned: [String; 3],
    /// Two keys of owner `departed`, revoked together by `Admin::revoke_owner`.
    pub departed: [String; 2],
    /// Two keys of owner [`THRIFTY_OWNER`] (limit [`THRIFTY_OWNER_RATE`]): the first with its
    /// own limit `1/1m`, the second with none of its own (the verifier's default applies).
    pub thrifty: [String; 2],
}

/// The owner of [`Keys::owned`].
pub const SHARED_OWNER: &str = "shared-owner";
/// The rate limit of [`SHARED_OWNER`], shared by its three keys.
pub const SHARED_OWNER_RATE: &str = "10/1m";
/// The owner of [`Keys::thrifty`].
pub const THRIFTY_OWNER: &str = "thrifty-owner";
/// The rate limit of [`THRIFTY_OWNER`], shared by its two keys.
pub const THRIFTY_OWNER_RATE: &str = "3/1m";

impl Keys {
    /// Creates the keys, then advances the clock so the expiring key has expired.
    pub async fn create(h: &Harness) -> Self {
        let spec = |name: &str| NewKey::new(name).owner("tests");
        let (valid, valid_id) = h.create(spec("valid").scope("orders:read").unwrap()).await;
        let (plain, _) = h.create(spec("plain")).await;
        let (fresh, _) = h.create(spec("fresh")).await;
        let (revoked, revoked_id) = h.create(spec("revoked")).await;
        let (disabled, disabled_id) = h.create(spec("disabled")).await;
        let (expired, _) = h
            .create(spec("expired").expires_at(h.clock.now() + Duration::from_secs(60)))
            .await;
        let (ip_restricted, _) = h
            .create(spec("office").allowed_ips(["10.0.0.0/8".parse().unwrap()]))
            .await;
        let (limited, limited_id) = h
            .create(
                spec("limited")
                    .rate_limit("5/1s burst 5".parse::<keygate::rate::RatePolicy>().unwrap()),
            )
            .await;
        let (unlimited, _) = h
            .create(spec("unlimited").rate_limit(keygate::rate::RateLimit::Unlimited))
            .await;
        let (defaulted, _) = h.create(spec("defaulted")).await;
        let (canary, _) = h
            .create(spec("decoy").scope("orders:read").unwrap().canary())
            .await;
        let admin = h.verifier.admin();
        admin.revoke(&revoked_id).await.unwrap();
        admin.disable(&disabled_id).await.unwrap();
        for (owner, rate) in [
            (SHARED_OWNER, SHARED_OWNER_RATE),
            (THRIFTY_OWNER, THRIFTY_OWNER_RATE),
        ] {
            admin
                .create_owner(
                    keygate::owner::NewOwner::new(owner)
                        .rate_limit(rate.parse::<keygate::rate::RatePolicy>().unwrap()),
                )
                .await
                .unwrap();
        }
        let mut owned = Vec::new();
        for name in ["owned-a", "owned-b", "owned-c"] {
            owned.push(h.create(NewKey::new(name).owner(SHARED_OWNER)).await.0);
        }
        let (capped, _) = h
            .create(
                NewKey::new("thrifty-capped")
                    .owner(THRIFTY_OWNER)
                    .rate_limit("1/1m".parse::<keygate::rate::RatePolicy>().unwrap()),
            )
            .await;
        let (sibling, _) = h
            .create(NewKey::new("thrifty-sibling").owner(THRIFTY_OWNER))
            .await;
        let mut departed = Vec::new();
        for name in ["departed-a", "departed-b"] {
            let (key, _) = h.create(NewKey::new(name).owner("departed")).await;
            // Accepted until the owner's keys are revoked together.
            check(&h.verifier, &key).await.unwrap();
            departed.push(key);
        }
        assert_eq!(admin.revoke_owner("departed").await.unwrap().len(), 2);
        h.clock.advance(Duration::from_secs(120));

        let other = Harness::new();
        let (unknown, _) = other.create(spec("elsewhere")).await;
        let secret_of =
            |key: &str| key[PREFIX.len() + 1 + KeyId::LEN + 1..key.len() - 6].to_owned();
        let wrong_secret = forge(PREFIX, valid_id.as_str(), &secret_of(&unknown));
        let limited_wrong_secret = forge(PREFIX, limited_id.as_str(), &secret_of(&unknown));
        let wrong_prefix = forge("kgt_live", valid_id.as_str(), &secret_of(&valid));
        let mut bad_checksum = valid.clone().into_bytes();
        let last = bad_checksum.len() - 1;
        bad_checksum[last] = if bad_checksum[last] == b'A' {
            b'B'
        } else {
            b'A'
        };
        let bad_checksum = String::from_utf8(bad_checksum).unwrap_or_default();
        Self {
            valid,
            plain,
            fresh,
            revoked,
            disabled,
            expired,
            ip_restricted,
            unknown,
            wrong_secret,
            wrong_prefix,
            bad_checksum,
            limited,
            limited_wrong_secret,
            unlimited,
            defaulted,
            canary,
            owned: owned.try_into().unwrap(),
            departed: departed.try_into().unwrap(),
            thrifty: [capped, sibling],
        }
    }

    /// Every plaintext key and secret part used, for leak scans.
    pub fn secrets(&self) -> Vec<String> {
        let all = [
            &self.valid,
            &self.plain,
            &self.fresh,
            &self.revoked,
            &self.disabled,
            &self.expired,
            &self.ip_restricted,
            &self.unknown,
            &self.wrong_secret,
            &self.limited,
            &self.limited_wrong_secret,
            &self.unlimited,
            &self.defaulted,
            &self.canary,
            &self.thrifty[0],
            &self.thrifty[1],
        ];
        all.iter()
            .flat_map(|k| [k.to_string(), k[k.len() - 36..k.len() - 6].to_owned()])
            .collect()
    }
}

/// Keys of the environments keyring ([`environments_keyring`]), created in one harness.
#[derive(Debug, Clone)]
pub struct EnvironmentKeys {
    /// A `live` key named "live", no rate limit of its own.
    pub live: String,
    /// A `test` key named "test", no rate limit of its own (its environment's default applies).
    pub test: String,
    /// A `test` key named "test-own", with its own limit `2/1m`.
    pub test_own_limit: String,
    /// The live key's id and secret under the test prefix (checksum fixed up).
    pub live_as_test: String,
    /// The test key's id and secret under the live prefix (checksum fixed up).
    pub test_as_live: String,
    /// The live key's id and secret under a prefix of no environment (checksum fixed up).
    pub other_prefix: String,
}

impl EnvironmentKeys {
    /// Creates the keys in `h` (whose keyring must be [`environments_keyring`]).
    pub async fn create(h: &Harness) -> Self {
        let (live, _) = h.create(NewKey::new("live")).await;
        let (test, _) = h.create(NewKey::new("test").environment("test")).await;
        let (test_own_limit, _) = h
            .create(
                NewKey::new("test-own")
                    .environment("test")
                    .rate_limit("2/1m".parse::<keygate::rate::RatePolicy>().unwrap()),
            )
            .await;
        // `{prefix}_{id}_{secret}{crc}`: the id and secret, without prefix and checksum.
        let body = |key: &str, prefix: &str| key[prefix.len() + 1..key.len() - 6].to_owned();
        let moved = |key: &str, from: &str, to: &str| {
            let body = body(key, from);
            let (id, secret) = body.split_at(KeyId::LEN);
            forge(to, id, &secret[1..])
        };
        Self {
            live_as_test: moved(&live, LIVE_PREFIX, TEST_PREFIX),
            test_as_live: moved(&test, TEST_PREFIX, LIVE_PREFIX),
            other_prefix: moved(&live, LIVE_PREFIX, "kgt_staging"),
            live,
            test,
            test_own_limit,
        }
    }
}

/// What the suites' `/report` and `/free` routes answer: `{n} left`, or `no quota`.
pub fn quota_left(remaining: Option<u64>) -> String {
    remaining.map_or_else(|| "no quota".to_owned(), |n| format!("{n} left"))
}

/// Keys with quotas (issue 17 item 2), created in one harness; none is rate limited, so the
/// `RateLimit` fields show the `"quota"` item alone.
#[derive(Debug, Clone)]
pub struct QuotaKeys {
    /// `5/day`.
    pub five_a_day: String,
    /// `credits 2 refill 2 every 1h`.
    pub refilled: String,
    /// `credits 1`: never refills.
    pub one_credit: String,
    /// Three keys of owner `quota-team`, whose quota is `10/day`; no quota of their own.
    pub shared: [String; 3],
    /// `2/day`, of owner `quota-loose` (`100/day`): the key's own is the tighter.
    pub tight_key: String,
    /// `50/day`, of owner `quota-tight` (`1/day`): the owner's is the tighter.
    pub tight_owner: String,
    /// `2/day`, no scopes.
    pub unscoped: String,
    /// `1/day`.
    pub one_a_day: String,
    /// `3/day`, then rotated (grace 30 days): [`QuotaKeys::rotated_new`] is its successor.
    pub rotated_old: String,
    /// The rotated key's successor: the same lineage, one balance.
    pub rotated_new: String,
}

impl QuotaKeys {
    /// Creates the keys (and owners) in `h`.
    pub async fn create(h: &Harness) -> Self {
        use keygate::owner::NewOwner;
        use keygate::quota::Quota;
        let quota = |text: &str| text.parse::<Quota>().unwrap();
        let admin = h.verifier.admin();
        for (owner, q) in [
            ("quota-team", "10/day"),
            ("quota-loose", "100/day"),
            ("quota-tight", "1/day"),
        ] {
            admin
                .create_owner(NewOwner::new(owner).quota(quota(q)))
                .await
                .expect("owner");
        }
        let key = |name: &str| NewKey::new(name).rate_limit(keygate::rate::RateLimit::Unlimited);
        let with = |name: &str, q: &str| key(name).quota(quota(q));
        let (rotated_old, old_id) = h.create(with("rotated", "3/day")).await;
        let rotated = admin
            .rotate(&old_id, Duration::from_secs(30 * 86_400))
            .await
            .expect("rotate");
        Self {
            five_a_day: h.create(with("five", "5/day")).await.0,
            refilled: h
                .create(with("refilled", "credits 2 refill 2 every 1h"))
                .await
                .0,
            one_credit: h.create(with("one-credit", "credits 1")).await.0,
            shared: [
                h.create(key("shared-1").owner("quota-team")).await.0,
                h.create(key("shared-2").owner("quota-team")).await.0,
                h.create(key("shared-3").owner("quota-team")).await.0,
            ],
            tight_key: h
                .create(with("tight-key", "2/day").owner("quota-loose"))
                .await
                .0,
            tight_owner: h
                .create(with("tight-owner", "50/day").owner("quota-tight"))
                .await
                .0,
            unscoped: h.create(with("unscoped", "2/day")).await.0,
            one_a_day: h.create(with("one", "1/day")).await.0,
            rotated_old,
            rotated_new: rotated.new.key.expose_secret().to_owned(),
        }
    }
}

/// The keys of the named-limit scenarios (issue 17 item 4), all without a key-wide rate limit
/// (`unlimited`), so only the routes' named limits report.
#[derive(Debug, Clone)]
pub struct NamedKeys {
    /// `writes: 2/1h`; no `reads` of its own (the verifier's default applies).
    pub writer: String,
    /// `reads: unlimited`: the verifier's default for `reads` is switched off.
    pub unlimited_reader: String,
    /// Two keys of owner `named-team` (`writes: 3/1h`), with no named limits of their own.
    pub team: [String; 2],
    /// `writes: 1/1h`, of owner `named-loose` (`writes: 5/1h`): the key's is the tighter.
    pub tight: String,
    /// `writes: 1/1h` and the quota `credits 3`.
    pub metered: String,
}

impl NamedKeys {
    /// Creates the keys (and owners) in `h`.
    pub async fn create(h: &Harness) -> Self {
        use keygate::owner::NewOwner;
        use keygate::rate::NamedLimits;
        let limits = |text: &str| text.parse::<NamedLimits>().unwrap();
        let admin = h.verifier.admin();
        for (owner, named) in [
            ("named-team", "writes: 3/1h"),
            ("named-loose", "writes: 5/1h"),
        ] {
            admin
                .create_owner(NewOwner::new(owner).limits(limits(named)))
                .await
                .expect("owner");
        }
        let key = |name: &str| NewKey::new(name).rate_limit(keygate::rate::RateLimit::Unlimited);
        Self {
            writer: h
                .create(key("writer").limits(limits("writes: 2/1h")))
                .await
                .0,
            unlimited_reader: h
                .create(key("reader").limits(limits("reads: unlimited")))
                .await
                .0,
            team: [
                h.create(key("team-1").owner("named-team")).await.0,
                h.create(key("team-2").owner("named-team")).await.0,
            ],
            tight: h
                .create(
                    key("tight")
                        .owner("named-loose")
                        .limits(limits("writes: 1/1h")),
                )
                .await
                .0,
            metered: h
                .create(
                    key("metered")
                        .limits(limits("writes: 1/1h"))
                        .quota("credits 3".parse().unwrap()),
                )
                .await
                .0,
        }
    }
}

/// Builds `{prefix}_{id}_{secret}{crc}` with a correct checksum.
pub fn forge(prefix: &str, id: &str, secret: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let body = format!("{prefix}_{id}_{secret}");
    let mut crc = crc32fast::hash(body.as_bytes());
    let mut tail = [b'0'; 6];
    for slot in tail.iter_mut().rev() {
        *slot = ALPHABET[(crc % 62) as usize];
        crc /= 62;
    }
    format!("{body}{}", String::from_utf8_lossy(&tail))
}

/// What a test reads from a response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body text.
    pub body: String,
    /// The rejection put in the response extensions, if any.
    pub rejection: Option<Rejection>,
}

impl Reply {
    /// The `WWW-Authenticate` header, if any.
    pub fn www_authenticate(&self) -> Option<&str> {
        self.headers
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
    }

    /// A header as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The problem `type` of a problem+json body.
    pub fn problem_type(&self) -> Option<String> {
        let json: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        json.get("type")?.as_str().map(str::to_owned)
    }
}

/// Sends `key` through `verifier` (a fresh extraction each time): whether it was served stale,
/// or the refusal reason.
pub async fn check(verifier: &Verifier, key: &str) -> Result<bool, Reason> {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", key.parse().expect("header"));
    let uri = http::Uri::from_static("/");
    let view = keygate::HttpRequestView::new(&headers, &uri, None);
    let gate = keygate::gate::Gate::new(verifier.clone());
    match gate.admit(&view, "GET", || None) {
        keygate::gate::Admission::Check(check) => gate
            .check(check)
            .await
            .map(|passed| passed.is_stale())
            .map_err(|refusal| refusal.rejection().reason()),
        keygate::gate::Admission::Refuse(refusal) => Err(refusal.rejection().reason()),
        keygate::gate::Admission::Pass(_) => panic!("a required gate let a request pass"),
    }
}

/// Polls `condition` every millisecond until it holds; returns how long it took, or panics
/// with `what` after `deadline`.
pub async fn measure<F, Fut>(deadline: Duration, what: &str, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    loop {
        if condition().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Each harness verifier counts quotas in memory on its own, as one instance does: the default
/// meter would persist to the shared store's counter table write-behind, so a sibling (the
/// other framework in the scenario table) would start from what the first one had saved,
/// depending on when its flush ran.
fn own_quota_meter() -> Arc<dyn keygate::quota::QuotaMeter> {
    Arc::new(keygate::quota::InProcessMeter::new())
}
