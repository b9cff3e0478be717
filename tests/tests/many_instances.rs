//! Many instances on the machine's real PostgreSQL and Redis (`KEYGATE_TEST_POSTGRES_URL`,
//! `KEYGATE_TEST_REDIS_URL`; unset skips with a note, set but unreachable fails).
//!
//! Outages are made with a TCP proxy in front of the real server ([`TcpProxy`]): cutting it
//! resets the client's connections and refuses new ones, which is what a client sees of a
//! stopped or partitioned server, without stopping the server other tests use.

use std::time::{Duration, Instant};

use keygate::{NewKey, Reason, Verifier};
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
        .unwrap_or_else(|e| panic!("connect through the proxy: {e}"))
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
        .unwrap_or_else(|e| panic!("create: {e}"));
    let key = created.key.expose_secret().to_owned();
    let cold = admin
        .create_key(NewKey::new("never cached"))
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    let cold = cold.key.expose_secret().to_owned();

    let loaded = Instant::now();
    assert_eq!(check(&strict, &key).await, Ok(false));
    assert_eq!(check(&stale, &key).await, Ok(false));

    proxy.cut();
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
