//! Issue 4's acceptance lines for the persistent stores: no secret at rest, two instances on one
//! PostgreSQL database, last-used write-behind bounded per key, and store outages as 503.
//! (Rotation with a manual clock runs for every store in `store_conformance.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::Path;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Uri};
use keygate::clock::{Clock, ManualClock};
use keygate::store::{KeyFilter, PageRequest};
use keygate::{
    HttpRequestView, KeyAdmin, KeyId, KeyStore as _, NewKey, Reason, Rejection, Verifier,
};
use keygate_sqlx::sqlx::postgres::PgConnectOptions;
use keygate_sqlx::{PostgresStore, SqliteStore};
use keygate_tests::stores::{self, Fixture, PgSchema, TestStore, UsageCounter};
use keygate_tests::{epoch, keyring};

fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    // The error's Display, which is what a store error says to an operator.
    result.unwrap_or_else(|e| panic!("{e}"))
}

async fn verify(verifier: &Verifier, key: &str) -> Result<(), Reason> {
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", ok(HeaderValue::from_str(key)));
    let uri = Uri::from_static("/");
    verifier
        .verify_request(&HttpRequestView::new(&headers, &uri, None))
        .await
        .map(|_| ())
        .map_err(|r: Rejection| r.reason())
}

/// Creates keys of every kind (scoped, with metadata, rotated, revoked, used) and returns their
/// plaintexts.
async fn populate<S: TestStore>(f: &Fixture<S>) -> Vec<String> {
    let admin = f.verifier.admin();
    let mut keys = Vec::new();
    for i in 0..5 {
        let spec = NewKey::new(format!("key {i}"))
            .owner("scan")
            .scope("orders:read")
            .unwrap()
            .metadata(
                serde_json::json!({"i": i})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            );
        let created = ok(admin.create_key(spec).await);
        keys.push(created.key.expose_secret().to_owned());
        ok(verify(&f.verifier, created.key.expose_secret())
            .await
            .map_err(|r| r.as_str()));
        if i == 1 {
            let rotated = ok(admin
                .rotate(&created.record.id, Duration::from_secs(60))
                .await);
            keys.push(rotated.new.key.expose_secret().to_owned());
        }
        if i == 2 {
            ok(admin.revoke(&created.record.id).await);
        }
    }
    ok(f.verifier.flush_last_used().await);
    keys
}

/// Each whole key, and every 8-character piece of its secret part (secret and checksum).
fn needles(keys: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for key in keys {
        out.push(key.clone());
        let secret = &key[key.len() - 36..];
        for start in 0..=secret.len() - 8 {
            out.push(secret[start..start + 8].to_owned());
        }
    }
    out
}

fn assert_absent(haystack: &[u8], needles: &[String], what: &str) {
    for needle in needles {
        assert!(
            !haystack
                .windows(needle.len())
                .any(|w| w == needle.as_bytes()),
            "a piece of a secret was found in {what}"
        );
    }
}

fn read_if_exists(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

#[tokio::test]
async fn no_secret_or_piece_of_one_is_stored_in_sqlite() {
    let f = stores::sqlite().await;
    let keys = populate(&f).await;
    let path = stores::sqlite_path(&f).unwrap_or_else(|| panic!("sqlite fixture has a file"));
    let needles = needles(&keys);
    let mut scanned = 0;
    for suffix in ["", "-wal", "-shm"] {
        let file = Path::new(&format!("{}{suffix}", path.display())).to_path_buf();
        let bytes = read_if_exists(&file);
        scanned += bytes.len();
        assert_absent(&bytes, &needles, &file.display().to_string());
    }
    // The scan reads the data: the public ids are there (in the main file or the WAL).
    let all: Vec<u8> = ["", "-wal"]
        .iter()
        .flat_map(|s| read_if_exists(Path::new(&format!("{}{s}", path.display()))))
        .collect();
    let page = ok(f
        .store
        .list(&KeyFilter::default(), PageRequest::default())
        .await);
    for record in &page.keys {
        assert!(
            all.windows(KeyId::LEN)
                .any(|w| w == record.id.as_str().as_bytes()),
            "public id {} not found: the scan would miss data",
            record.id
        );
    }
    assert!(scanned > 0);
}

#[tokio::test]
async fn no_secret_or_piece_of_one_is_stored_in_postgres() {
    let Some(f) = stores::postgres().await else {
        return;
    };
    let keys = populate(&f).await;
    let schema = stores::postgres_schema(&f).unwrap_or_else(|| panic!("postgres fixture"));
    let pool = f.store.pool();
    // A pg_dump-style read: every table of the schema, every row, as text.
    let tables: Vec<String> = ok(keygate_sqlx::sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(&schema.name)
    .fetch_all(pool)
    .await);
    assert!(tables.iter().any(|t| t == "keygate_keys"), "{tables:?}");
    let mut dump = String::new();
    for table in &tables {
        let rows: Vec<String> = ok(keygate_sqlx::sqlx::query_scalar(
            keygate_sqlx::sqlx::AssertSqlSafe(format!(
                "SELECT row_to_json(t)::text FROM \"{}\".\"{table}\" t",
                schema.name
            )),
        )
        .fetch_all(pool)
        .await);
        for row in rows {
            dump.push_str(&row);
            dump.push('\n');
        }
    }
    assert_absent(dump.as_bytes(), &needles(&keys), "the PostgreSQL tables");
    let page = ok(f
        .store
        .list(&KeyFilter::default(), PageRequest::default())
        .await);
    assert_eq!(page.keys.len(), keys.len());
    for record in &page.keys {
        assert!(dump.contains(record.id.as_str()), "the dump holds the rows");
    }
}

/// Checklist item 12: the secret never reaches SQL. Everything the store and its audit sink send
/// to PostgreSQL (SQL text and bound parameters, on the wire, TLS off) is recorded by a proxy
/// while keys are created, verified, rotated, revoked, used, and the audit trail written: the
/// public ids are there, no secret nor any 8-character piece of one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_piece_of_one_is_sent_to_postgres() {
    let Some(url) = stores::postgres_url() else {
        return;
    };
    let server: PgConnectOptions = ok(url.parse());
    let proxy = keygate_tests::channel::RecordingProxy::start(&format!(
        "{}:{}",
        server.get_host(),
        server.get_port()
    ))
    .await;
    let Some(f) = stores::postgres_with(|options| {
        options
            .host("127.0.0.1")
            .port(proxy.addr().port())
            .ssl_mode(keygate_sqlx::sqlx::postgres::PgSslMode::Disable)
    })
    .await
    else {
        return;
    };
    // The audit sink writes through the same pool: denials with a key id, allowed requests,
    // lifecycle events.
    let audited = Verifier::builder(keyring(), f.store.clone())
        .audit_sink(f.store.audit_sink())
        .build();
    let mut keys = populate(&f).await;
    let created = ok(audited.admin().create_key(NewKey::new("audited")).await);
    let key = created.key.expose_secret().to_owned();
    assert_eq!(verify(&audited, &key).await, Ok(()));
    // Its last character changed (to `x`, or `y` when it is an `x`: keys are random).
    let (kept, last) = key.split_at(key.len() - 1);
    let wrong = format!("{kept}{}", if last == "x" { "y" } else { "x" });
    assert!(verify(&audited, &wrong).await.is_err());
    ok(audited.admin().revoke(&created.record.id).await);
    assert_eq!(verify(&audited, &key).await, Err(Reason::Revoked));
    ok(audited.flush_last_used().await);
    audited.flush_audit().await;
    keys.push(key);

    let sent = proxy.sent();
    assert!(
        sent.windows(12).any(|w| w == b"keygate_keys"),
        "the proxy sees SQL in clear ({} bytes): the check would miss a secret",
        sent.len()
    );
    assert!(
        sent.windows(12)
            .any(|w| w == created.record.id.as_str().as_bytes()),
        "the public id is sent as a parameter"
    );
    assert_absent(&sent, &needles(&keys), "the bytes sent to PostgreSQL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_verifiers_on_one_postgres_database_share_keys_and_see_a_revoke_within_the_ttl() {
    let Some(url) = stores::postgres_url() else {
        return;
    };
    let schema = PgSchema::create(&url).await;
    let ttl = Duration::from_millis(500);
    let (store_a, store_b) = (schema.store().await, schema.store().await);
    let a = Verifier::builder(keyring(), store_a).cache_ttl(ttl).build();
    let b = Verifier::builder(keyring(), store_b).cache_ttl(ttl).build();

    let from_a = ok(a.admin().create_key(NewKey::new("made on a")).await);
    let from_b = ok(b.admin().create_key(NewKey::new("made on b")).await);
    for verifier in [&a, &b] {
        assert_eq!(verify(verifier, from_a.key.expose_secret()).await, Ok(()));
        assert_eq!(verify(verifier, from_b.key.expose_secret()).await, Ok(()));
        let listed = ok(verifier
            .admin()
            .list(&KeyFilter::default(), PageRequest::default())
            .await);
        assert_eq!(listed.keys.len(), 2);
    }

    // Revoke on A: A refuses at once, B within its cache TTL.
    let revoked_at = Instant::now();
    ok(a.admin().revoke(&from_a.record.id).await);
    assert_eq!(
        verify(&a, from_a.key.expose_secret()).await,
        Err(Reason::Revoked)
    );
    loop {
        match verify(&b, from_a.key.expose_secret()).await {
            Err(Reason::Revoked) => break,
            Ok(()) => {
                assert!(
                    revoked_at.elapsed() <= ttl + Duration::from_millis(250),
                    "B still accepts the revoked key {:?} after the revoke (TTL {ttl:?})",
                    revoked_at.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
    }
    assert_eq!(verify(&b, from_b.key.expose_secret()).await, Ok(()));
}

/// 10 000 verifications of one key over a simulated 5 minutes, with a 60 s interval, a flush
/// every simulated 3 s and a cache reload every 45 s: at most 6 last-used writes for the key.
async fn last_used_writes_are_bounded<S: TestStore>(name: &str, store: S, clock: ManualClock) {
    let counted = UsageCounter::new(store);
    let verifier = Verifier::builder(keyring(), counted.clone())
        .clock(clock.clone())
        .last_used_interval(Duration::from_secs(60))
        .build();
    let created = ok(verifier.admin().create_key(NewKey::new("hot")).await);
    let key = created.key.expose_secret().to_owned();
    for i in 0..10_000u32 {
        assert_eq!(verify(&verifier, &key).await, Ok(()));
        clock.advance(Duration::from_millis(30));
        if i % 100 == 99 {
            ok(verifier.flush_last_used().await);
        }
        if i % 1500 == 1499 {
            verifier.invalidate(created.record.id).await;
        }
    }
    ok(verifier.flush_last_used().await);
    let writes = counted.writes(&created.record.id);
    assert!(
        (1..=6).contains(&writes),
        "{name}: {writes} last-used writes for one key in 5 minutes"
    );
    let stored = ok(counted.get(&created.record.id).await);
    let last = stored
        .last_used_at
        .unwrap_or_else(|| panic!("{name}: last_used_at set"));
    assert!(clock.now().duration_since(last).unwrap_or_default() <= Duration::from_secs(60));
    assert_eq!(verifier.last_used_stats().dropped, 0);
    println!("{name}: {writes} last-used writes for 10 000 verifications over 5 simulated minutes");
}

#[tokio::test]
async fn ten_thousand_verifications_over_five_minutes_write_last_used_at_most_six_times() {
    let f = stores::memory();
    last_used_writes_are_bounded("memory", f.store.clone(), f.clock.clone()).await;
    let f = stores::sqlite().await;
    last_used_writes_are_bounded("sqlite", f.store.clone(), f.clock.clone()).await;
    if let Some(f) = stores::postgres().await {
        last_used_writes_are_bounded("postgres", f.store.clone(), f.clock.clone()).await;
    }
}

#[tokio::test]
async fn a_full_last_used_buffer_drops_and_counts_instead_of_waiting() {
    let clock = ManualClock::new(epoch());
    let store = ok(SqliteStore::in_memory().await).with_clock(clock.clone());
    let verifier = Verifier::builder(keyring(), store)
        .clock(clock.clone())
        .last_used_buffer(2)
        .build();
    let mut keys = Vec::new();
    for i in 0..5 {
        let created = ok(verifier
            .admin()
            .create_key(NewKey::new(format!("k{i}")))
            .await);
        keys.push(created.key.expose_secret().to_owned());
    }
    for key in &keys {
        assert_eq!(verify(&verifier, key).await, Ok(()));
    }
    assert_eq!(verifier.last_used_stats().dropped, 3);
    assert_eq!(ok(verifier.flush_last_used().await), 2);
    assert_eq!(verifier.last_used_stats().written, 2);
}

#[tokio::test]
async fn an_unreachable_postgres_is_unavailable_and_503_never_401() {
    // Nothing listens on port 1: connection refused.
    let options: PgConnectOptions = ok("postgres://postgres@127.0.0.1:1/test".parse());
    let store = PostgresStore::connect_lazy_with(options);
    let id = KeyId::random();
    assert!(store.find(&id).await.is_err_and(|e| e.is_unavailable()));
    let verifier = Verifier::builder(keyring(), store).build();
    let other = Verifier::builder(keyring(), keygate::MemoryStore::new()).build();
    let created = ok(other.admin().create_key(NewKey::new("elsewhere")).await);
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-api-key",
        ok(HeaderValue::from_str(created.key.expose_secret())),
    );
    let uri = Uri::from_static("/");
    let rejection = verifier
        .verify_request(&HttpRequestView::new(&headers, &uri, None))
        .await
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert_eq!(rejection.reason(), Reason::StoreUnavailable);
    assert_eq!(rejection.status(), http::StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
#[should_panic(expected = "does not answer")]
async fn a_configured_but_unreachable_postgres_fails_the_tests() {
    // The fixtures' behaviour when KEYGATE_TEST_POSTGRES_URL points nowhere: fail, never skip.
    let _ = PgSchema::create("postgres://postgres@127.0.0.1:1/test").await;
}

#[tokio::test]
async fn migrate_is_idempotent_and_a_newer_schema_is_refused_with_a_typed_error() {
    let f = stores::sqlite().await;
    assert_eq!(
        ok(f.store.schema_version().await),
        Some(SqliteStore::known_schema_version())
    );
    ok(f.store.migrate().await);
    ok(keygate_sqlx::sqlx::query(
        "INSERT INTO keygate_migrations (version, description, success, checksum, execution_time) \
         VALUES (99, 'from the future', true, x'00', 0)",
    )
    .execute(f.store.pool())
    .await);
    assert!(matches!(
        f.store.migrate().await,
        Err(keygate_sqlx::Error::SchemaTooNew { found: 99, known })
            if known == SqliteStore::known_schema_version()
    ));

    if let Some(f) = stores::postgres().await {
        assert_eq!(
            ok(f.store.schema_version().await),
            Some(PostgresStore::known_schema_version())
        );
        ok(f.store.migrate().await);
        ok(keygate_sqlx::sqlx::query(
            "INSERT INTO keygate_migrations (version, description, success, checksum, execution_time) \
             VALUES (99, 'from the future', true, '\\x00', 0)",
        )
        .execute(f.store.pool())
        .await);
        let error = f.store.migrate().await.err();
        assert!(
            matches!(
                error,
                Some(keygate_sqlx::Error::SchemaTooNew { found: 99, known })
                    if known == PostgresStore::known_schema_version()
            ),
            "{error:?}"
        );
    }
}

/// Migration 9 on PostgreSQL gives existing keys their lineage, following `rotated_from` back
/// to the first key of the chain (a key whose predecessor was deleted starts its own), as the
/// SQLite migration does (`keygate_sqlx`'s own test covers that one).
#[tokio::test]
async fn postgres_migration_9_backfills_each_key_s_lineage() {
    let Some(url) = stores::postgres_url() else {
        return;
    };
    use keygate_sqlx::sqlx;
    // A schema at version 8, as a build before quotas left it.
    let dir = tempfile::tempdir().unwrap();
    let embedded =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/keygate-sqlx/migrations/postgres");
    for entry in std::fs::read_dir(&embedded).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let version: i64 = name.to_string_lossy()[..4].parse().unwrap();
        if version <= 8 {
            std::fs::copy(entry.path(), dir.path().join(name)).unwrap();
        }
    }
    let schema = PgSchema::create(&url).await;
    let store = ok(PostgresStore::connect_with(schema.options()).await);
    let mut old = ok(sqlx::migrate::Migrator::new(dir.path()).await);
    old.dangerous_set_table_name("keygate_migrations");
    ok(old.run(store.pool()).await);
    assert_eq!(ok(store.schema_version().await), Some(8));
    // a <- b <- c is one chain; d's predecessor was deleted; e stands alone.
    for (id, from) in [
        ("aaaaaaaaaaaa", None),
        ("bbbbbbbbbbbb", Some("aaaaaaaaaaaa")),
        ("cccccccccccc", Some("bbbbbbbbbbbb")),
        ("dddddddddddd", Some("gonegonegone")),
        ("eeeeeeeeeeee", None),
    ] {
        ok(sqlx::query(
            "INSERT INTO keygate_keys (id, prefix, name, name_folded, digest, pepper_version, \
             rotated_from, created_at, updated_at) \
             VALUES ($1, 'acme_test', $1, $1, decode(repeat('00', 32), 'hex'), 1, $2, now(), now())",
        )
        .bind(id)
        .bind(from)
        .execute(store.pool())
        .await);
    }

    ok(store.migrate().await);
    let rows: Vec<(String, String)> = ok(sqlx::query_as(
        "SELECT id::text, lineage::text FROM keygate_keys ORDER BY id",
    )
    .fetch_all(store.pool())
    .await);
    let got: Vec<(&str, &str)> = rows.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(
        got,
        [
            ("aaaaaaaaaaaa", "aaaaaaaaaaaa"),
            ("bbbbbbbbbbbb", "aaaaaaaaaaaa"),
            ("cccccccccccc", "aaaaaaaaaaaa"),
            ("dddddddddddd", "dddddddddddd"),
            ("eeeeeeeeeeee", "eeeeeeeeeeee"),
        ]
    );
    store.pool().close().await;
}

#[tokio::test]
async fn schema_version_is_none_until_the_first_migration() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        ok(SqliteStore::connect_with(SqliteStore::options(dir.path().join("new.db"))).await);
    assert_eq!(ok(store.schema_version().await), None, "sqlite: a new file");
    ok(store.migrate().await);
    assert_eq!(
        ok(store.schema_version().await),
        Some(SqliteStore::known_schema_version())
    );

    if let Some(url) = stores::postgres_url() {
        let schema = PgSchema::create(&url).await;
        let store = ok(PostgresStore::connect_with(schema.options()).await);
        assert_eq!(
            ok(store.schema_version().await),
            None,
            "postgres: a new schema"
        );
        ok(store.migrate().await);
        assert_eq!(
            ok(store.schema_version().await),
            Some(PostgresStore::known_schema_version())
        );
        store.pool().close().await;
    }
}

#[test]
fn the_flusher_restarts_when_its_runtime_is_gone_and_flushes_on_its_own() {
    // A verifier outliving the runtime its flusher was started on (a test harness, a restarted
    // worker) gets a new flusher on the next runtime; that flusher writes without being asked.
    let clock = ManualClock::new(epoch());
    let store = keygate::MemoryStore::with_clock(clock.clone());
    let verifier = Verifier::builder(keyring(), store.clone())
        .clock(clock.clone())
        .last_used_interval(Duration::from_millis(50))
        .build();
    let runtime = |_| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime(1);
    let created = first.block_on(async {
        let created = ok(verifier.admin().create_key(NewKey::new("k")).await);
        assert_eq!(verify(&verifier, created.key.expose_secret()).await, Ok(()));
        created
    });
    drop(first);
    clock.advance(Duration::from_secs(1));
    runtime(2).block_on(async {
        assert_eq!(verify(&verifier, created.key.expose_secret()).await, Ok(()));
        // No explicit flush: the background flusher on this runtime writes within a few ticks.
        for _ in 0..100 {
            if ok(store.get(&created.record.id).await).last_used_at == Some(clock.now()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the background flusher never wrote last_used_at");
    });
}
