//! Cold lookups: a verification whose key is not cached, so the verifier reads the store.
//!
//! ```text
//! KEYGATE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p keygate-sqlx --bench cold_lookup
//! ```
//!
//! Cases, per store (1 000 keys stored): `find` (the store call alone) and `verify_miss` (evict the
//! key from the verifier's cache, then verify it: cache miss → store → HMAC → checks). PostgreSQL
//! runs in a schema of its own (dropped at the end) when `KEYGATE_TEST_POSTGRES_URL` is set, and is
//! skipped with a note otherwise. Targets (docs/benchmarks.md): ≤ 100 µs SQLite, ≤ 1 ms PostgreSQL
//! on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::hint::black_box;

use criterion::{Criterion, criterion_main};
use http::{HeaderMap, HeaderValue, Uri};
use keygate::{
    HttpRequestView, KeyAdmin, KeyFormat, KeyStore, Keyring, NewKey, Pepper, Peppers, Verifier,
};
use keygate_sqlx::sqlx::postgres::PgConnectOptions;
use keygate_sqlx::{PostgresStore, SqliteStore};
use tokio::runtime::Runtime;

const KEYS: usize = 1000;

fn keyring() -> Keyring {
    let pepper = Pepper::new(1, "bench-pepper-bench-pepper-bench-pepper").unwrap();
    Keyring::new(KeyFormat::new("bench_live").unwrap(), Peppers::new(pepper))
}

/// Fills the store and benches `find` and a verifier cache miss.
fn bench_store<S: KeyStore + KeyAdmin + Clone>(
    c: &mut Criterion,
    runtime: &Runtime,
    name: &str,
    store: &S,
) {
    let verifier = Verifier::builder(keyring(), store.clone()).build();
    let admin = verifier.admin();
    let mut last = None;
    runtime.block_on(async {
        for i in 0..KEYS {
            let created = admin
                .create_key(NewKey::new(format!("bench {i}")).owner("bench"))
                .await
                .unwrap();
            last = Some((created.record.id, created.key.expose_secret().to_owned()));
        }
    });
    let Some((id, key)) = last else { return };
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
    );
    let uri = Uri::from_static("/");
    let view = HttpRequestView::new(&headers, &uri, None);
    assert!(runtime.block_on(verifier.verify_request(&view)).is_ok());

    let mut group = c.benchmark_group(format!("cold_lookup/{name}"));
    group.bench_function("find", |b| {
        b.to_async(runtime)
            .iter(|| async { black_box(store.find(black_box(&id)).await.is_ok()) });
    });
    group.bench_function("verify_miss", |b| {
        b.to_async(runtime).iter(|| async {
            verifier.invalidate(black_box(id)).await;
            black_box(verifier.verify_request(black_box(&view)).await.is_ok())
        });
    });
    group.finish();
}

fn bench_cold_lookup(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    let dir = std::env::temp_dir().join(format!("keygate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = runtime
        .block_on(SqliteStore::open(dir.join("bench.db")))
        .unwrap();
    bench_store(c, &runtime, "sqlite", &sqlite);
    let _ = std::fs::remove_dir_all(&dir);

    let Ok(url) = std::env::var("KEYGATE_TEST_POSTGRES_URL") else {
        println!("note: KEYGATE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL cold lookup");
        return;
    };
    let schema = format!("kgt_bench_{}", std::process::id());
    let options: PgConnectOptions = url.parse().unwrap();
    runtime.block_on(async {
        let admin = PostgresStore::connect_with(options.clone())
            .await
            .expect("KEYGATE_TEST_POSTGRES_URL is set but");
        keygate_sqlx::sqlx::query(keygate_sqlx::sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA \"{schema}\""
        )))
        .execute(admin.pool())
        .await
        .unwrap();
    });
    let store = runtime.block_on(async {
        let store = PostgresStore::connect_with(
            options.clone().options([("search_path", schema.as_str())]),
        )
        .await
        .unwrap();
        store.migrate().await.unwrap();
        store
    });
    bench_store(c, &runtime, "postgres", &store);
    runtime.block_on(async {
        store.pool().close().await;
        let admin = PostgresStore::connect_with(options).await.unwrap();
        keygate_sqlx::sqlx::query(keygate_sqlx::sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{schema}\" CASCADE"
        )))
        .execute(admin.pool())
        .await
        .unwrap();
    });
}

#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench_cold_lookup);
}
use group::benches;
criterion_main!(benches);
