//! Many instances on the machine's real PostgreSQL and Redis (`KEYGATE_TEST_POSTGRES_URL`,
//! `KEYGATE_TEST_REDIS_URL`; unset skips with a note, set but unreachable fails).
//!
//! Outages are made with a TCP proxy in front of the real server ([`TcpProxy`]): cutting it
//! resets the client's connections and refuses new ones, which is what a client sees of a
//! stopped or partitioned server, without stopping the server other tests use.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use keygate::{KeyAdmin, NewKey, Reason, Verifier};
use keygate_sqlx::PostgresStore;
use keygate_sqlx::sqlx::postgres::PgConnectOptions;
use keygate_tests::channel::TcpProxy;
use keygate_tests::stores::{PgSchema, postgres_url};
use keygate_tests::{check, keyring, measure};

/// A store in `schema` whose connections go through `proxy`.
async fn store_through(schema: &PgSchema, proxy: &TcpProxy) -> PostgresStore {
    let options: PgConnectOptions = schema.options().host("127.0.0.1").port(proxy.addr().port());
    PostgresStore::connect_with(options)
        .await
        .expect("connect through the proxy")
}

fn server_addr(schema: &PgSchema) -> String {
    let options = schema.options();
    format!("{}:{}", options.get_host(), options.get_port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_gives_503_or_stale_serving_exactly_as_configured() {
    let Some(url) = postgres_url() else { return };
    let schema = PgSchema::create(&url).await;
    let direct = schema.store().await;
    let proxy = TcpProxy::start(&server_addr(&schema)).await;
    let ttl = Duration::from_millis(300);
    let grace = Duration::from_secs(2);
    let strict = Verifier::builder(keyring(), store_through(&schema, &proxy).await)
        .cache_ttl(ttl)
        .build();
    let stale = Verifier::builder(keyring(), store_through(&schema, &proxy).await)
        .cache_ttl(ttl)
        .stale_if_error(grace)
        .build();
    let admin = Verifier::builder(keyring(), direct).build().admin();
    let created = admin
        .create_key(NewKey::new("outage"))
        .await
        .expect("create");
    let key = created.key.expose_secret().to_owned();
    let cold = admin
        .create_key(NewKey::new("never cached"))
        .await
        .expect("create");
    let cold = cold.key.expose_secret().to_owned();

    assert_eq!(check(&strict, &key).await, Ok(false));
    assert_eq!(check(&stale, &key).await, Ok(false));
    // Both records were read before this instant, so sleeping from it outlasts their TTLs
    // however long the first reads took (they connect through the proxy).
    let loaded = Instant::now();

    proxy.cut().await;
    // Within the TTL the cache answers, store or not.
    assert_eq!(check(&strict, &key).await, Ok(false));
    tokio::time::sleep(ttl.saturating_sub(loaded.elapsed()) + Duration::from_millis(50)).await;

    let started = Instant::now();
    assert_eq!(
        check(&strict, &key).await,
        Err(Reason::StoreUnavailable),
        "no grace: 503, never 401"
    );
    let refused_in = started.elapsed();
    assert_eq!(
        check(&stale, &key).await,
        Ok(true),
        "grace: the cached valid record, marked stale"
    );
    assert_eq!(check(&stale, &cold).await, Err(Reason::StoreUnavailable));
    assert_eq!(check(&strict, &cold).await, Err(Reason::StoreUnavailable));
    println!("PostgreSQL unreachable: 503 after {refused_in:?}");
    assert!(
        refused_in < Duration::from_secs(4),
        "a refused connection is answered within the pool's acquire timeout (3 s), took {refused_in:?}"
    );

    // Past the grace the stale instance answers 503 too.
    tokio::time::sleep((ttl + grace).saturating_sub(loaded.elapsed()) + Duration::from_millis(50))
        .await;
    assert_eq!(check(&stale, &key).await, Err(Reason::StoreUnavailable));

    // Back: both serve fresh records again, without being rebuilt.
    proxy.restore();
    let recovered = measure(Duration::from_secs(10), "recovery", || async {
        check(&strict, &key).await == Ok(false) && check(&stale, &key).await == Ok(false)
    })
    .await;
    println!("PostgreSQL back: serving again after {recovered:?}");
}

/// A store in `schema` notifying on the schema's own channel (channels are per database).
async fn notifying_store(schema: &PgSchema) -> PostgresStore {
    schema
        .store()
        .await
        .notify_channel(&schema.name)
        .expect("channel")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_postgres_subscription_cut_a_revoke_is_still_enforced_within_the_bound() {
    let Some(url) = postgres_url() else { return };
    let schema = PgSchema::create(&url).await;
    let proxy = TcpProxy::start(&server_addr(&schema)).await;
    let a_store = notifying_store(&schema).await;
    let a = Verifier::builder(keyring(), a_store.clone())
        .invalidation(a_store.invalidation())
        .build();
    // b reads keys directly, but listens through the proxy, so only its subscription is cut.
    let listen_pool = keygate_sqlx::sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(schema.options().host("127.0.0.1").port(proxy.addr().port()));
    let channel =
        keygate_sqlx::PostgresInvalidation::from_pool(listen_pool, &schema.name).expect("channel");
    let b = Verifier::builder(keyring(), notifying_store(&schema).await)
        .invalidation(channel)
        .degraded_cache_ttl(DEGRADED)
        .build();
    cut_subscription_scenario("PostgreSQL", &a, &b, &proxy).await;
}

/// The degraded TTL of the instance whose subscription is cut.
const DEGRADED: Duration = Duration::from_millis(500);

/// `a` and `b` share a store and a channel; `b` subscribes through `proxy` (and was built with
/// [`DEGRADED`]). A revoke on `a` reaches `b` within 1 s while the subscription lives; with it
/// cut (and kept down), a revoke `b` misses is enforced within the degraded TTL; once the
/// proxy is back, `b` subscribes again by itself.
async fn cut_subscription_scenario(what: &str, a: &Verifier, b: &Verifier, proxy: &TcpProxy) {
    subscribed(a, true).await;
    subscribed(b, true).await;
    let create = |name: &'static str| async move {
        a.admin()
            .create_key(NewKey::new(name))
            .await
            .expect("create")
    };
    let revoke = |id: keygate::KeyId| async move {
        a.admin().revoke(&id).await.expect("revoke");
    };

    // Live: the revoke's notice reaches b.
    let live_key = create("live").await;
    let live_secret = live_key.key.expose_secret().to_owned();
    assert_eq!(check(b, &live_secret).await, Ok(false));
    revoke(live_key.record.id).await;
    let live = measure(Duration::from_secs(1), "b hears the revoke", || async {
        check(b, &live_secret).await == Err(Reason::Revoked)
    })
    .await;

    // Cut b's subscription and keep it down: the next notice is lost for b.
    let created = create("cut").await;
    let key = created.key.expose_secret().to_owned();
    proxy.cut().await;
    let noticed = measure(Duration::from_secs(2), "b notices the cut", || async {
        b.invalidation_subscribed() == Some(false)
    })
    .await;
    // Read after the cut: a late notice of the key's creation cannot have evicted it since.
    assert_eq!(check(b, &key).await, Ok(false), "b caches the key");
    revoke(created.record.id).await;
    assert_eq!(
        check(b, &key).await,
        Ok(false),
        "the notice was lost: b serves its cache until the degraded TTL"
    );
    let enforced = measure(
        DEGRADED + Duration::from_millis(300),
        "b enforces the missed revoke within the degraded TTL",
        || async { check(b, &key).await == Err(Reason::Revoked) },
    )
    .await;
    println!(
        "{what}: live revoke seen after {live:?}; cut noticed after {noticed:?}; missed revoke enforced {enforced:?} after the revoke returned (degraded TTL {DEGRADED:?})"
    );
    proxy.restore();
    subscribed(b, true).await;
}

async fn subscribed(verifier: &Verifier, live: bool) {
    measure(Duration::from_secs(10), "subscription state", || async {
        verifier.invalidation_subscribed() == Some(live)
    })
    .await;
}

// --- Redis ------------------------------------------------------------------------------------

/// The test Redis URL, or `None` (with a note) when it is not configured.
fn redis_url() -> Option<String> {
    match std::env::var("KEYGATE_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("note: KEYGATE_TEST_REDIS_URL is not set: skipping this test");
            None
        }
    }
}

/// `host:port` of a `redis://host:port[/db]` URL.
fn redis_addr(url: &str) -> String {
    let rest = url.trim_start_matches("redis://");
    let host_port = rest.split('/').next().unwrap_or(rest);
    host_port.rsplit('@').next().unwrap_or(host_port).to_owned()
}

fn unique_prefix(what: &str) -> String {
    format!(
        "kgt-{what}-{}-{}",
        std::process::id(),
        keygate::KeyId::random()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_fails_open_or_closed_as_configured_then_recovers() {
    let Some(url) = redis_url() else { return };
    let proxy = TcpProxy::start(&redis_addr(&url)).await;
    let through = format!("redis://{}", proxy.addr());
    let store = keygate::MemoryStore::new();
    let prefix = unique_prefix("outage");
    let mut verifiers = Vec::new();
    for policy in [
        keygate_redis::FailurePolicy::Open,
        keygate_redis::FailurePolicy::Closed,
    ] {
        let limiter = keygate_redis::RedisRateLimiter::builder(through.as_str())
            .prefix(prefix.clone())
            .failure_policy(policy)
            .build()
            .await
            .expect("KEYGATE_TEST_REDIS_URL is not a Redis URL");
        verifiers.push(
            Verifier::builder(keyring(), store.clone())
                .rate_limiter(limiter)
                .build(),
        );
    }
    let (open, closed) = (&verifiers[0], &verifiers[1]);
    let created = open
        .admin()
        .create_key(
            NewKey::new("limited").rate_limit("3/1m".parse::<keygate::rate::RatePolicy>().unwrap()),
        )
        .await
        .expect("create");
    let key = created.key.expose_secret().to_owned();
    // Both share the limit while Redis answers: 3 allowed in total.
    assert_eq!(check(open, &key).await, Ok(false));
    assert_eq!(check(closed, &key).await, Ok(false));
    assert_eq!(check(open, &key).await, Ok(false));
    assert_eq!(check(closed, &key).await, Err(Reason::RateLimited));
    assert_eq!(check(open, &key).await, Err(Reason::RateLimited));

    proxy.cut().await;
    let started = Instant::now();
    assert_eq!(
        check(open, &key).await,
        Ok(false),
        "fail open: allowed while Redis is unreachable"
    );
    assert_eq!(
        check(closed, &key).await,
        Err(Reason::LimiterUnavailable),
        "fail closed: 503"
    );
    let answered = started.elapsed();
    println!("Redis unreachable: both answered within {answered:?}");
    assert!(
        answered < Duration::from_secs(2),
        "bounded by the response timeout"
    );

    proxy.restore();
    let recovered = measure(
        Duration::from_secs(10),
        "the limit is enforced again",
        || async {
            check(open, &key).await == Err(Reason::RateLimited)
                && check(closed, &key).await == Err(Reason::RateLimited)
        },
    )
    .await;
    println!("Redis back: limit enforced again after {recovered:?}, no rebuild");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_redis_subscription_cut_a_revoke_is_still_enforced_within_the_bound() {
    let Some(url) = redis_url() else { return };
    let proxy = TcpProxy::start(&redis_addr(&url)).await;
    let prefix = unique_prefix("cut");
    let store = keygate::MemoryStore::new();
    let channel = |target: String| {
        let prefix = prefix.clone();
        async move {
            keygate_redis::RedisInvalidation::builder(target)
                .prefix(prefix)
                .build()
                .await
                .expect("KEYGATE_TEST_REDIS_URL is not a Redis URL")
        }
    };
    let a = Verifier::builder(keyring(), store.clone())
        .invalidation(channel(url.clone()).await)
        .build();
    let b = Verifier::builder(keyring(), store.clone())
        .invalidation(channel(format!("redis://{}", proxy.addr())).await)
        .degraded_cache_ttl(DEGRADED)
        .build();
    cut_subscription_scenario("Redis", &a, &b, &proxy).await;
}

/// Issue 17's acceptance: two instances (two verifiers, each with its own Redis connection)
/// serving one key with a `1000/day` quota through their HTTP layers share the quota exactly:
/// 1,200 concurrent requests split between them get exactly 1,000 answers 200 and 200 answers
/// 429 `quota_exhausted`, never more than the quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_redis_share_one_quota_exactly_over_http() {
    let Some(url) = redis_url() else { return };
    let store = keygate::MemoryStore::new();
    let prefix = unique_prefix("quota");
    let mut apps = Vec::new();
    let mut verifiers = Vec::new();
    for _ in 0..2 {
        let meter = keygate_redis::RedisQuotaMeter::builder(url.as_str())
            .prefix(prefix.clone())
            .response_timeout(Duration::from_secs(10))
            .build()
            .await
            .expect("KEYGATE_TEST_REDIS_URL is not a Redis URL");
        let verifier = Verifier::builder(keyring(), store.clone())
            .quota_meter(std::sync::Arc::new(meter))
            .build();
        apps.push(keygate_tests::axum_app(&verifier));
        verifiers.push(verifier);
    }
    let created = verifiers[0]
        .admin()
        .create_key(NewKey::new("metered").quota("1000/day".parse().unwrap()))
        .await
        .expect("create");
    let key = created.key.expose_secret().to_owned();
    let mut tasks = Vec::new();
    for n in 0..1_200 {
        let app = apps[n % 2].clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let reply = keygate_tests::send_bearer(&app, "/hello", &key).await;
            (reply.status.as_u16(), reply.rejection.map(|r| r.reason()))
        }));
    }
    let (mut allowed, mut exhausted) = (0, 0);
    for task in tasks {
        match task.await.expect("task") {
            (200, None) => allowed += 1,
            (429, Some(Reason::QuotaExhausted)) => exhausted += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(
        (allowed, exhausted),
        (1_000, 200),
        "no over-grant, no under-grant"
    );
    // Both instances see the quota used up.
    for app in &apps {
        assert_eq!(
            keygate_tests::send_bearer(app, "/hello", &key).await.status,
            429
        );
    }
}

/// A named limit on Redis is one limit across instances: a key's `writes: 300/1d` and its
/// owner's `writes: 400/1d` (shared with a second key), taken through `/write` on two
/// instances, grant exactly what the two policies allow, and other routes stay free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_redis_share_one_named_limit_exactly_over_http() {
    let Some(url) = redis_url() else { return };
    let store = keygate::MemoryStore::new();
    let prefix = unique_prefix("named");
    let mut apps = Vec::new();
    let mut verifiers = Vec::new();
    let mut limiters = Vec::new();
    for _ in 0..2 {
        // A thousand requests at once on a busy machine can keep a decision waiting longer
        // than the default 250 ms, and the default failure policy then allows it (counted):
        // this test is about exactness, so no decision may time out.
        let limiter = keygate_redis::RedisRateLimiter::builder(url.as_str())
            .prefix(prefix.clone())
            .response_timeout(Duration::from_secs(30))
            .build()
            .await
            .expect("KEYGATE_TEST_REDIS_URL is not a Redis URL");
        limiters.push(limiter.clone());
        let verifier = Verifier::builder(keyring(), store.clone())
            .rate_limiter(limiter)
            .build();
        apps.push(keygate_tests::axum_app(&verifier));
        verifiers.push(verifier);
    }
    let admin = verifiers[0].admin();
    admin
        .create_owner(
            keygate::owner::NewOwner::new("named-shared").limits("writes: 400/1d".parse().unwrap()),
        )
        .await
        .expect("owner");
    let spec = |name: &str| NewKey::new(name).owner("named-shared");
    let own = admin
        .create_key(spec("own").limits("writes: 300/1d".parse().unwrap()))
        .await
        .expect("create");
    let other = admin.create_key(spec("other")).await.expect("create");
    let keys = [
        own.key.expose_secret().to_owned(),
        other.key.expose_secret().to_owned(),
    ];
    let mut tasks = Vec::new();
    for n in 0..1_000 {
        let app = apps[n % 2].clone();
        let key = keys[(n / 2) % 2].clone();
        tasks.push(tokio::spawn(async move {
            let reply = keygate_tests::send_bearer(&app, "/write", &key).await;
            let status = reply.status.as_u16();
            (n, status, reply.rejection.map(|r| r.reason()))
        }));
    }
    let (mut allowed, mut limited) = ([0; 2], 0);
    for task in tasks {
        match task.await.expect("task") {
            (n, 200, None) => allowed[(n / 2) % 2] += 1,
            (_, 429, Some(Reason::RateLimited)) => limited += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let failed_open: u64 = limiters.iter().map(|l| l.fail_open_count()).sum();
    assert_eq!(failed_open, 0, "decisions that timed out and were allowed");
    // 500 requests per key: the owner's 400 are the bound for both together, and the first
    // key's own 300 for it; no over-grant, none lost.
    assert_eq!(
        allowed[0] + allowed[1],
        400,
        "the owner's limit: {allowed:?}"
    );
    assert!(allowed[0] <= 300, "the key's own limit: {allowed:?}");
    assert_eq!(limited, 600);
    // Both instances see the owner's limit spent; other routes are not limited by it.
    for app in &apps {
        for key in &keys {
            assert_eq!(
                keygate_tests::send_bearer(app, "/write", key).await.status,
                429
            );
            assert_eq!(
                keygate_tests::send_bearer(app, "/hello", key).await.status,
                200
            );
        }
    }
}

/// A top-up reaches every key of the lineage on every instance at once over Redis's channel,
/// which the store does not publish to: the admin announces the whole lineage. Instance B has
/// a rotated key's successor cached (for an hour) with its one credit spent; instance A tops up
/// the predecessor; B lets the successor through again within the channel's delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_up_on_one_instance_reaches_the_whole_lineage_on_another_over_redis() {
    let Some(url) = redis_url() else { return };
    let store = keygate::MemoryStore::new();
    let prefix = unique_prefix("top-up");
    let mut verifiers = Vec::new();
    for _ in 0..2 {
        let channel = keygate_redis::RedisInvalidation::builder(url.as_str())
            .prefix(prefix.clone())
            .build()
            .await
            .expect("KEYGATE_TEST_REDIS_URL is not a Redis URL");
        verifiers.push(
            Verifier::builder(keyring(), store.clone())
                .invalidation(channel)
                .cache_ttl(Duration::from_secs(3600))
                .quota_meter(std::sync::Arc::new(keygate::quota::InProcessMeter::new()))
                .build(),
        );
    }
    let (a, b) = (&verifiers[0], &verifiers[1]);
    let old = a
        .admin()
        .create_key(NewKey::new("prepaid").quota("credits 1".parse().unwrap()))
        .await
        .expect("create");
    let rotated = a
        .admin()
        .rotate(&old.record.id, Duration::from_secs(3600))
        .await
        .expect("rotate");
    let successor = rotated.new.key.expose_secret().to_owned();
    assert_eq!(check(b, &successor).await, Ok(false));
    assert_eq!(check(b, &successor).await, Err(Reason::QuotaExhausted));
    subscribed(a, true).await;
    subscribed(b, true).await;

    a.admin()
        .add_credits(&old.record.id, 2)
        .await
        .expect("top-up");
    let took = measure(
        Duration::from_secs(5),
        "the top-up seen for the successor on the other instance",
        || async { check(b, &successor).await.is_ok() },
    )
    .await;
    println!("a top-up of the predecessor on A reached its successor on B after {took:?}");
    assert_eq!(check(b, &successor).await, Ok(false), "the third credit");
    assert_eq!(check(b, &successor).await, Err(Reason::QuotaExhausted));
}
