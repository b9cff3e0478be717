//! `PostgresStore`'s change notifications and `PostgresInvalidation`, against the real server at
//! `KEYGATE_TEST_POSTGRES_URL`: unset skips these tests with a printed note; set but unreachable
//! fails them. Each test runs in a schema of its own (dropped at the end) and on a random
//! channel, so tests running in parallel never hear each other.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use keygate::rate::RatePolicy;
use keygate::{
    Invalidated, Invalidation, KeyAdmin, KeyChange, KeyId, KeyStore, Keyring, Metadata, NewKey,
    Reason, Rotation, Scope, StoreError, Subscription, Verifier,
};
use keygate_sqlx::sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use keygate_sqlx::{PostgresInvalidation, PostgresStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const URL_ENV: &str = "KEYGATE_TEST_POSTGRES_URL";
/// How long a test waits for a notification it expects (loaded CI machines are slow).
const DELIVERY: Duration = Duration::from_secs(10);

fn postgres_url() -> Option<String> {
    match std::env::var(URL_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("note: {URL_ENV} is not set: skipping this PostgreSQL test");
            None
        }
    }
}

/// A schema of its own (`kgt_<unix seconds>_<pid>_<n>`, the workspace fixtures' pattern, so
/// their clean-up of stale schemas covers it), dropped when the value drops.
struct Schema {
    url: String,
    name: String,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

async fn admin_pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("{URL_ENV} is set but PostgreSQL does not answer: {e}"))
}

impl Schema {
    async fn create(url: &str) -> Self {
        let admin = admin_pool(url).await;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let name = format!(
            "kgt_{now}_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
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

    fn options(&self) -> PgConnectOptions {
        let options: PgConnectOptions = self.url.parse().unwrap();
        options
            .options([("search_path", self.name.as_str())])
            .application_name(&self.name)
    }

    /// A migrated store in this schema, notifying on `channel`.
    async fn store(&self, channel: &str) -> PostgresStore {
        let store = PostgresStore::connect_with(self.options())
            .await
            .unwrap_or_else(|e| panic!("{URL_ENV} is set but PostgreSQL does not answer: {e}"))
            .notify_channel(channel)
            .unwrap();
        store.migrate().await.unwrap();
        store
    }

    /// An `application_name` for a listener of this test, distinct from every other session.
    fn listener_name(&self, tag: &str) -> String {
        format!("{}_{tag}", self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let url = self.url.clone();
        let name = self.name.clone();
        // Drop may run inside the test's runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let Ok(pool) = PgPoolOptions::new().max_connections(1).connect(&url).await else {
                    return;
                };
                let _ = keygate_sqlx::sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name LIKE $1 || '%' AND pid <> pg_backend_pid()",
                )
                .bind(&name)
                .execute(&pool)
                .await;
                let _ = keygate_sqlx::sqlx::query(keygate_sqlx::sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
                )))
                .execute(&pool)
                .await;
                pool.close().await;
            });
        })
        .join();
    }
}

/// A channel no other test uses.
fn random_channel() -> String {
    format!("kgt_{}", KeyId::random())
}

fn keyring() -> Keyring {
    Keyring::development("acme_test").unwrap()
}

async fn next(subscription: &mut Box<dyn Subscription>) -> Invalidated {
    tokio::time::timeout(DELIVERY, subscription.next())
        .await
        .unwrap_or_else(|_| panic!("no notification within {DELIVERY:?}"))
        .expect("subscription failed")
}

/// Everything a subscription receives until the `*` sent last by `marker` (which marks the
/// end: every change before it has committed, and one session's notifications arrive in order).
async fn drain_until_marker(
    marker: &PostgresInvalidation,
    subscriptions: &mut [&mut Box<dyn Subscription>],
) -> Vec<Vec<Invalidated>> {
    marker.publish(Invalidated::All).await.unwrap();
    let mut all = Vec::new();
    for subscription in subscriptions.iter_mut() {
        let mut received = Vec::new();
        loop {
            match next(subscription).await {
                Invalidated::All => break,
                other => received.push(other),
            }
        }
        all.push(received);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_notifies_once_with_its_id_and_last_used_does_not() {
    let Some(url) = postgres_url() else { return };
    let schema = Schema::create(&url).await;
    let channel = random_channel();
    let store = schema.store(&channel).await;
    let invalidation = store.invalidation();
    assert!(invalidation.published_by_store());
    assert_eq!(invalidation.channel(), channel);
    let mut first = invalidation.subscribe().await.unwrap();
    let mut second = invalidation.subscribe().await.unwrap();
    let keyring = keyring();

    let mut expected = Vec::new();
    let key = store
        .create(keyring.mint(NewKey::new("billing")).unwrap())
        .await
        .unwrap()
        .record
        .id;
    expected.push(key);
    let mut metadata = Metadata::new();
    metadata.insert("team".into(), "payments".into());
    let changes = [
        KeyChange::Rename("invoicing".into()),
        KeyChange::SetScopes(vec![Scope::new("invoices:read").unwrap()]),
        KeyChange::SetExpiry(Some(SystemTime::now() + Duration::from_secs(86_400))),
        KeyChange::SetExpiry(None),
        KeyChange::SetMetadata(metadata),
        KeyChange::SetAllowedIps(vec!["10.0.0.0/8".parse().unwrap()]),
        KeyChange::SetRateLimit(Some(
            RatePolicy::new(10, Duration::from_secs(1)).unwrap().into(),
        )),
        KeyChange::SetRateLimit(None),
        KeyChange::Disable,
        KeyChange::Enable,
        KeyChange::Revoke,
    ];
    for change in changes {
        store.apply(&key, change).await.unwrap();
        expected.push(key);
    }

    let old = store
        .create(keyring.mint(NewKey::new("search")).unwrap())
        .await
        .unwrap()
        .record
        .id;
    expected.push(old);
    let rotated = store
        .rotate_with(
            &old,
            keyring.mint(NewKey::new("search")).unwrap(),
            Rotation::new(Duration::from_secs(3600)).unwrap(),
        )
        .await
        .unwrap();
    let new = rotated.new.record.id;
    // In the order the rotation writes them: the new key's row, then the old one's.
    expected.extend([new, old]);

    // Last-used times are not a management change: no notification.
    store
        .record_last_used(&[(old, SystemTime::now()), (new, SystemTime::now())])
        .await
        .unwrap();

    store.delete(&key).await.unwrap();
    expected.push(key);

    let expected: Vec<Invalidated> = expected.into_iter().map(Invalidated::Key).collect();
    let received = drain_until_marker(&invalidation, &mut [&mut first, &mut second]).await;
    assert_eq!(received[0], expected, "first subscriber");
    assert_eq!(received[1], expected, "second subscriber");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_failed_changes_notify_nothing() {
    let Some(url) = postgres_url() else { return };
    let schema = Schema::create(&url).await;
    let channel = random_channel();
    let store = schema.store(&channel).await;
    let invalidation = store.invalidation();
    let keyring = keyring();
    let revoked = store
        .create(keyring.mint(NewKey::new("revoked")).unwrap())
        .await
        .unwrap()
        .record
        .id;
    store.apply(&revoked, KeyChange::Revoke).await.unwrap();
    let active = store
        .create(keyring.mint(NewKey::new("active")).unwrap())
        .await
        .unwrap()
        .record
        .id;
    let deleted = store
        .create(keyring.mint(NewKey::new("deleted")).unwrap())
        .await
        .unwrap()
        .record
        .id;
    store.delete(&deleted).await.unwrap();
    let mut subscription = invalidation.subscribe().await.unwrap();

    let conflict = |result: Result<_, StoreError>| {
        assert!(
            matches!(result, Err(StoreError::Conflict { .. })),
            "{result:?}"
        );
    };
    let not_found = |result: Result<_, StoreError>| {
        assert!(matches!(result, Err(StoreError::NotFound(_))), "{result:?}");
    };
    // Refused by the key's state (the transaction rolls back before any write).
    conflict(store.apply(&revoked, KeyChange::Enable).await.map(drop));
    conflict(store.apply(&revoked, KeyChange::Disable).await.map(drop));
    let rotation = Rotation::new(Duration::from_secs(60)).unwrap();
    conflict(
        store
            .rotate_with(&revoked, keyring.mint(NewKey::new("x")).unwrap(), rotation)
            .await
            .map(drop),
    );
    // Unknown ids.
    let unknown = KeyId::random();
    not_found(store.apply(&unknown, KeyChange::Revoke).await.map(drop));
    not_found(store.delete(&unknown).await);
    not_found(store.delete(&deleted).await);
    // Failed inside the transaction: the replacement's id exists (after the old key was locked
    // and before anything was written), or an id that existed.
    let taken = keyring
        .mint(NewKey::new("x"))
        .unwrap()
        .testing_with_id(revoked);
    conflict(store.rotate_with(&active, taken, rotation).await.map(drop));
    conflict(
        store
            .create(
                keyring
                    .mint(NewKey::new("again"))
                    .unwrap()
                    .testing_with_id(deleted),
            )
            .await
            .map(drop),
    );
    // Input refused before any query.
    assert!(matches!(
        store.apply(&active, KeyChange::Rename(String::new())).await,
        Err(StoreError::InvalidInput(_))
    ));

    let received = drain_until_marker(&invalidation, &mut [&mut subscription]).await;
    assert_eq!(received[0], Vec::new(), "no change, no notification");
    // The failed rotation left the active key as it was.
    assert_eq!(store.get(&active).await.unwrap().expires_at, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_is_never_received_before_its_change_is_visible() {
    const KEYS: usize = 50;
    let Some(url) = postgres_url() else { return };
    let schema = Schema::create(&url).await;
    let channel = random_channel();
    let store = schema.store(&channel).await;
    let keyring = keyring();
    let mut ids = Vec::new();
    for n in 0..KEYS {
        let minted = keyring.mint(NewKey::new(format!("key {n}"))).unwrap();
        ids.push(store.create(minted).await.unwrap().record.id);
    }
    // Readers on connections of their own: a pool the writer never uses.
    let reader = PostgresStore::connect_with(schema.options()).await.unwrap();
    let mut subscription = store.invalidation().subscribe().await.unwrap();

    let checker = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < KEYS {
            let Invalidated::Key(id) = next(&mut subscription).await else {
                panic!("unexpected `*`");
            };
            let record = reader.find(&id).await.unwrap().unwrap();
            assert!(
                record.revoked_at.is_some(),
                "notified of {id}'s revoke before it was visible"
            );
            seen.push(id);
        }
        seen
    });
    for id in &ids {
        store.apply(id, KeyChange::Revoke).await.unwrap();
    }
    let seen = checker.await.unwrap();
    assert_eq!(seen, ids);
}

/// Terminates the sessions whose application_name is `name`; returns how many.
async fn terminate(admin: &PgPool, name: &str) -> i64 {
    keygate_sqlx::sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1) AS t",
    )
    .bind(name)
    .fetch_one(admin)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_listener_fails_next_at_once_and_subscribing_again_works() {
    let Some(url) = postgres_url() else { return };
    let schema = Schema::create(&url).await;
    let channel = random_channel();
    let store = schema.store(&channel).await;
    let name = schema.listener_name("terminated");
    // A long liveness interval: the failure must come from the connection, not the check.
    let invalidation = store
        .invalidation()
        .application_name(&name)
        .liveness_interval(Duration::from_secs(60));
    let admin = admin_pool(&url).await;
    let mut subscription = invalidation.subscribe().await.unwrap();
    invalidation
        .publish(Invalidated::Key(KeyId::random()))
        .await
        .unwrap();
    assert!(matches!(next(&mut subscription).await, Invalidated::Key(_)));

    let waiting = tokio::spawn(async move {
        let result = subscription.next().await;
        (result, Instant::now(), subscription)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let terminated_at = Instant::now();
    assert_eq!(terminate(&admin, &name).await, 1, "one listener session");
    let (result, failed_at, mut subscription) = tokio::time::timeout(DELIVERY, waiting)
        .await
        .expect("next() did not return after the backend was terminated")
        .unwrap();
    let noticed = failed_at.saturating_duration_since(terminated_at);
    println!("terminated listener noticed after {noticed:?}");
    let error = result.expect_err("next() must fail when the connection is lost");
    println!("error: {error}");
    assert!(
        noticed < Duration::from_secs(2),
        "noticed after {noticed:?}"
    );
    // A failed subscription stays failed: it never reconnects silently.
    assert!(subscription.next().await.is_err());

    let mut again = invalidation.subscribe().await.unwrap();
    let id = KeyId::random();
    invalidation.publish(Invalidated::Key(id)).await.unwrap();
    assert_eq!(next(&mut again).await, Invalidated::Key(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_from_any_pool_is_received() {
    let Some(url) = postgres_url() else { return };
    let schema = Schema::create(&url).await;
    let channel = random_channel();
    let store = schema.store(&channel).await;
    let mut subscription = store.invalidation().subscribe().await.unwrap();

    let from_pool = PostgresInvalidation::from_pool(admin_pool(&url).await, &channel).unwrap();
    assert!(!from_pool.published_by_store());
    let debug = format!("{from_pool:?}");
    assert!(
        debug.contains(&channel) && debug.contains("published_by_store: false"),
        "{debug}"
    );
    let connected = PostgresInvalidation::connect(&url, &channel).await.unwrap();
    assert!(!connected.published_by_store());

    let id = KeyId::random();
    from_pool.publish(Invalidated::Key(id)).await.unwrap();
    assert_eq!(next(&mut subscription).await, Invalidated::Key(id));
    connected.publish(Invalidated::All).await.unwrap();
    assert_eq!(next(&mut subscription).await, Invalidated::All);
    // Another channel is not heard.
    let elsewhere = PostgresInvalidation::connect(&url, &random_channel())
        .await
        .unwrap();
    elsewhere.publish(Invalidated::All).await.unwrap();
    let id = KeyId::random();
    connected.publish(Invalidated::Key(id)).await.unwrap();
    assert_eq!(next(&mut subscription).await, Invalidated::Key(id));

    assert!(matches!(
        PostgresInvalidation::from_pool(admin_pool(&url).await, "no-dashes"),
        Err(keygate_sqlx::Error::InvalidChannel(_))
    ));
    assert!(matches!(
        store.clone().notify_channel(&"x".repeat(64)),
        Err(keygate_sqlx::Error::InvalidChannel(_))
    ));
}

/// A TCP relay that can be frozen: it keeps both connections open but stops passing bytes,
/// like a peer that vanished without a reset.
struct Relay {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let relay_frozen = Arc::clone(&frozen);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pass(client_read, server_write, Arc::clone(&relay_frozen)));
                tokio::spawn(pass(server_read, client_write, Arc::clone(&relay_frozen)));
            }
        });
        Self { addr, frozen }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        // Frozen: hold the bytes and both sockets forever (until the test ends).
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_connection_fails_within_the_liveness_bound() {
    let Some(url) = postgres_url() else { return };
    let schema = Schema::create(&url).await;
    let channel = random_channel();
    let store = schema.store(&channel).await;
    let options = schema.options();
    let upstream: SocketAddr = tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap();
    let relay = Relay::start(upstream).await;
    let through_relay = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options.host("127.0.0.1").port(relay.addr.port()));
    let interval = Duration::from_millis(300);
    let timeout = Duration::from_millis(300);
    let invalidation = PostgresInvalidation::from_pool(through_relay, &channel)
        .unwrap()
        .liveness_interval(interval)
        .liveness_timeout(timeout);
    assert_eq!(invalidation.liveness_bound(), interval + timeout);
    let mut subscription = invalidation.subscribe().await.unwrap();

    // Alive: idle for several intervals (the liveness check passes), then a change arrives.
    tokio::time::sleep(interval * 3).await;
    let key = store
        .create(keyring().mint(NewKey::new("k")).unwrap())
        .await
        .unwrap()
        .record
        .id;
    assert_eq!(next(&mut subscription).await, Invalidated::Key(key));
    // Idle across several liveness checks without failing.
    let quiet = tokio::time::timeout(interval * 4, subscription.next()).await;
    assert!(
        quiet.is_err(),
        "an idle, live subscription must keep waiting: {quiet:?}"
    );

    relay.freeze();
    let frozen_at = Instant::now();
    let result = tokio::time::timeout(DELIVERY, subscription.next())
        .await
        .expect("a silently dead connection was not noticed");
    let noticed = frozen_at.elapsed();
    println!("silently dead listener noticed after {noticed:?} (bound {interval:?} + {timeout:?})");
    let error = result.expect_err("next() must fail on a dead connection");
    println!("error: {error}");
    assert!(
        noticed <= invalidation.liveness_bound() + Duration::from_millis(500),
        "noticed after {noticed:?}"
    );
    // The change made while the connection was dead is not delivered to it: the verifier
    // learns from the error that it may have missed some.
    store.apply(&key, KeyChange::Revoke).await.unwrap();
    assert!(subscription.next().await.is_err());
}

/// Verifies `key` (in `x-api-key`): `Ok(())` or the rejection's reason.
async fn check(verifier: &Verifier, key: &str) -> Result<(), Reason> {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", key.parse().unwrap());
    let uri = http::Uri::from_static("/");
    let view = keygate::HttpRequestView::new(&headers, &uri, None);
    let presented = verifier.extract(&view).map_err(|r| r.reason())?;
    verifier
        .verify(&presented)
        .await
        .map(drop)
        .map_err(|r| r.reason())
}

/// Polls `condition` every millisecond; how long it took to hold, or a panic after `deadline`.
async fn within<F, Fut>(deadline: Duration, what: &str, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    started.elapsed()
}

/// One service instance: its own pool, and a verifier subscribed to the store's channel.
async fn instance(schema: &Schema, channel: &str) -> Verifier {
    let store = schema.store(channel).await;
    let verifier = Verifier::builder(keyring(), store.clone())
        .invalidation(store.invalidation())
        .build();
    within(Duration::from_secs(5), "subscribed", || async {
        verifier.invalidation_subscribed() == Some(true)
    })
    .await;
    verifier
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_instance_or_from_a_bare_store_is_seen_by_every_verifier_within_a_second() {
    let Some(url) = postgres_url() else { return };
    let schema = Schema::create(&url).await;
    let channel = random_channel();
    let a = instance(&schema, &channel).await;
    let b = instance(&schema, &channel).await;

    let created = a.admin().create_key(NewKey::new("shared")).await.unwrap();
    let key = created.key.expose_secret().to_owned();
    assert_eq!(check(&b, &key).await, Ok(()), "b caches the valid key");
    a.admin().revoke(&created.record.id).await.unwrap();
    let took = within(
        Duration::from_secs(1),
        "b refuses the revoked key",
        || async { check(&b, &key).await == Err(Reason::Revoked) },
    )
    .await;
    println!("revoke through a's admin seen by b after {took:?}");

    // A change by another process (the CLI, a script) through a plain store: no verifier's
    // admin is involved, the store's notification alone reaches both.
    let created = a.admin().create_key(NewKey::new("cli")).await.unwrap();
    let key = created.key.expose_secret().to_owned();
    assert_eq!(check(&a, &key).await, Ok(()));
    assert_eq!(check(&b, &key).await, Ok(()));
    let cli = schema.store(&channel).await;
    cli.apply(&created.record.id, KeyChange::Disable)
        .await
        .unwrap();
    let took = within(
        Duration::from_secs(1),
        "both refuse the disabled key",
        || async {
            check(&a, &key).await == Err(Reason::Disabled)
                && check(&b, &key).await == Err(Reason::Disabled)
        },
    )
    .await;
    println!("disable through a bare store seen by both after {took:?}");
}

/// `keygate revoke --owner` on PostgreSQL: every key of the owner, revoked in one transaction
/// through a bare store (the CLI), is refused by every instance within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_revoked_through_a_bare_store_is_refused_by_every_instance_within_a_second() {
    let Some(url) = postgres_url() else { return };
    let schema = Schema::create(&url).await;
    let channel = random_channel();
    let a = instance(&schema, &channel).await;
    let b = instance(&schema, &channel).await;
    let mut keys = Vec::new();
    for n in 0..5 {
        let created = a
            .admin()
            .create_key(NewKey::new(format!("k{n}")).owner("departed"))
            .await
            .unwrap();
        keys.push(created.key.expose_secret().to_owned());
    }
    let bystander = a
        .admin()
        .create_key(NewKey::new("bystander"))
        .await
        .unwrap();
    let bystander = bystander.key.expose_secret().to_owned();
    for key in keys.iter().chain([&bystander]) {
        assert_eq!(check(&a, key).await, Ok(()));
        assert_eq!(check(&b, key).await, Ok(()));
    }
    let cli = schema.store(&channel).await;
    let changed = cli
        .change_owner_keys("departed", keygate::owner::OwnerKeysChange::Revoke)
        .await
        .unwrap();
    assert_eq!(changed.len(), keys.len());
    let took = within(
        Duration::from_secs(1),
        "both refuse every key of the owner",
        || async {
            for key in &keys {
                if check(&a, key).await != Err(Reason::Revoked)
                    || check(&b, key).await != Err(Reason::Revoked)
                {
                    return false;
                }
            }
            true
        },
    )
    .await;
    println!("owner revoke through a bare store seen by both after {took:?}");
    assert_eq!(check(&b, &bystander).await, Ok(()));

    // Through an instance's admin too (it evicts its own cache, the store notifies the rest).
    for n in 0..3 {
        let created = a
            .admin()
            .create_key(NewKey::new(format!("m{n}")).owner("moved-on"))
            .await
            .unwrap();
        let key = created.key.expose_secret().to_owned();
        assert_eq!(check(&b, &key).await, Ok(()));
        keys.push(key);
    }
    a.admin().revoke_owner("moved-on").await.unwrap();
    let took = within(Duration::from_secs(1), "b refuses them", || async {
        for key in &keys[5..] {
            if check(&b, key).await != Err(Reason::Revoked) {
                return false;
            }
        }
        true
    })
    .await;
    println!("Admin::revoke_owner seen by b after {took:?}");
}
