//! End-to-end: the `keygate` binary against a SQLite file and against PostgreSQL, with an axum
//! app on the same database checking that what the CLI does is what services see.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::temp_dir;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use keygate::clock::ManualClock;
use keygate::rate::RateLimit;
use keygate::{KeyAdmin, KeyFormat, KeyId, Keyring, Pepper, Peppers, Verifier};
use keygate_sqlx::sqlx::{self, AssertSqlSafe};
use serde_json::Value;
use tower::ServiceExt;

const PEPPER: &str = "1:cli-test-pepper-0123456789abcdefghijklmnop";
const PREFIX: &str = "cli_test";
/// The services' rate limit for keys without their own (`keygate limit ID --rate default`).
const SERVICE_DEFAULT_RATE: &str = "1/1h";

/// Runs `keygate` with `args` against `url`; stdin is empty, stdout is a pipe.
fn keygate(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .env("KEYGATE_DATABASE_URL", url)
        .env("KEYGATE_PEPPER", PEPPER)
        .env("KEYGATE_PREFIX", PREFIX)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run keygate")
}

fn ok(url: &str, args: &[&str]) -> String {
    let out = keygate(url, args);
    assert!(
        out.status.success(),
        "keygate {args:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A SQLite store in a fresh directory, migrated by `keygate migrate`: the directory (to remove
/// at the end), the URL the CLI opens it by, and the store opened in process.
async fn migrated_sqlite(name: &str) -> (std::path::PathBuf, String, keygate_sqlx::SqliteStore) {
    let dir = temp_dir(name);
    let path = dir.join("keys.db");
    let url = format!("sqlite://{}", path.display());
    ok(&url, &["migrate"]);
    let store = keygate_sqlx::SqliteStore::open(&path).await.unwrap();
    (dir, url, store)
}

fn json(url: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(ok(url, &all).trim()).unwrap_or_else(|e| panic!("json of {args:?}: {e}"))
}

fn json_lines(url: &str, args: &[&str]) -> Vec<Value> {
    let mut all = args.to_vec();
    all.push("--json");
    ok(url, &all)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// The line of a `list` table that shows key `id`.
fn row<'t>(table: &'t str, id: &str) -> &'t str {
    table
        .lines()
        .find(|line| line.contains(id))
        .unwrap_or_else(|| panic!("no row for {id}:\n{table}"))
}

/// The value of `name` in a `show` table.
fn field<'t>(table: &'t str, name: &str) -> &'t str {
    table
        .lines()
        .find_map(|line| line.trim().strip_prefix(name))
        .map_or_else(|| panic!("no {name:?} in:\n{table}"), str::trim)
}

fn keyring() -> Keyring {
    let (version, secret) = PEPPER.split_once(':').unwrap_or_default();
    let pepper = Pepper::new(version.parse().unwrap_or_default(), secret).unwrap();
    Keyring::new(KeyFormat::new(PREFIX).unwrap(), Peppers::new(pepper))
}

/// An axum app on the same database as the CLI.
struct Service {
    verifier: Verifier,
    clock: ManualClock,
    app: Router,
    /// The database, for tests that read tables directly.
    store_kind: StoreKind,
}

enum StoreKind {
    None,
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Service {
    fn new(verifier: Verifier, clock: ManualClock) -> Self {
        let app = Router::new()
            .route(
                "/hello",
                get(|me: keygate_axum::Identity| async move { me.name().to_owned() }),
            )
            .layer(keygate_axum::layer(verifier.clone()));
        Self {
            verifier,
            clock,
            app,
            store_kind: StoreKind::None,
        }
    }

    /// The status of GET /hello with `key`, after dropping cached records (the CLI changed the
    /// database from another process; in production the cache TTL bounds this).
    async fn status(&self, key: &str) -> StatusCode {
        self.verifier.invalidate_all();
        let request = Request::get("/hello")
            .header("x-api-key", key)
            .body(Body::empty())
            .unwrap();
        self.app
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|e| match e {})
            .status()
    }

    /// The rate limit the services read for key `id`.
    async fn rate_limit(&self, id: &str) -> Option<RateLimit> {
        let id: KeyId = id.parse().unwrap_or_else(|e| panic!("{id}: {e}"));
        self.verifier.admin().get(&id).await.unwrap().rate_limit
    }
}

fn rate(text: &str) -> RateLimit {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// The whole life of a key through the CLI, checked against a service on the same database.
async fn lifecycle(url: &str, service: &Service) {
    // create: piped stdout gets the key alone on one line.
    let key = ok(
        url,
        &[
            "create",
            "--name",
            "ci",
            "--owner",
            "team-a",
            "--scope",
            "orders:read",
            "--meta",
            "env=test",
            "--rate",
            "100/1s burst 200",
        ],
    );
    let key = key.trim().to_owned();
    assert!(key.starts_with("cli_test_"), "the key alone: {key}");
    assert_eq!(key.lines().count(), 1);

    // list shows it, without the secret.
    let listed = json_lines(url, &["list"]);
    let entry = listed
        .iter()
        .find(|v| v["name"] == "ci")
        .unwrap_or_else(|| panic!("{listed:?}"));
    let id = entry["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(entry["owner"], "team-a");
    assert_eq!(entry["state"], "active");
    assert_eq!(entry["rate_limit"], "100/1s burst 200");
    let table = ok(url, &["list"]);
    assert!(
        table.contains(&id) && table.contains("NAME") && table.contains("orders:read"),
        "{table}"
    );
    assert!(
        table.contains("RATE LIMIT") && row(&table, &id).contains(" 100/1s burst 200 "),
        "{table}"
    );
    assert!(
        !table.contains(&key)
            && !serde_json::to_string(&listed)
                .unwrap_or_default()
                .contains(&key[20..])
    );

    // the service accepts it, and reads the limit the CLI set.
    assert_eq!(service.status(&key).await, StatusCode::OK);
    assert_eq!(
        service.rate_limit(&id).await,
        Some(rate("100/1s burst 200"))
    );

    // rename, scopes, expire are reflected in show.
    ok(url, &["rename", &id, "ci (prod)"]);
    ok(
        url,
        &[
            "scopes",
            &id,
            "--add",
            "orders:write",
            "--remove",
            "orders:read",
        ],
    );
    ok(url, &["expire", &id, "--in", "7d"]);
    let shown = json(url, &["show", &id]);
    assert_eq!(shown["name"], "ci (prod)");
    assert_eq!(shown["scopes"], serde_json::json!(["orders:write"]));
    assert!(shown["expires_at"].is_string(), "{shown}");
    assert_eq!(shown["metadata"]["env"], "test");
    assert!(
        !shown.to_string().contains(&key[20..]),
        "show never prints the secret"
    );
    assert_eq!(shown["rate_limit"], "100/1s burst 200", "{shown}");
    let human = ok(url, &["show", &id]);
    assert!(
        human.contains("ci (prod)") && human.contains("orders:write"),
        "{human}"
    );
    assert_eq!(field(&human, "rate limit"), "100/1s burst 200", "{human}");
    ok(url, &["expire", &id, "--never"]);
    assert!(json(url, &["show", &id])["expires_at"].is_null());

    // limit: another policy, unlimited, then the services' default again; each is enforced by
    // the service at once (the manual clock stands still, so nothing refills).
    let limited = json(url, &["limit", &id, "--rate", "2/h"]);
    assert_eq!(limited["rate_limit"], "2/1h", "canonical form: {limited}");
    assert_eq!(
        limited["name"], "ci (prod)",
        "the rest of the record is unchanged"
    );
    assert_eq!(service.rate_limit(&id).await, Some(rate("2/1h")));
    assert_eq!(service.status(&key).await, StatusCode::OK);
    assert_eq!(service.status(&key).await, StatusCode::OK);
    assert_eq!(
        service.status(&key).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the key's own limit, set by the CLI"
    );
    let said = ok(url, &["limit", &id, "--rate", "unlimited"]);
    assert_eq!(said.trim(), format!("key {id} rate limit: unlimited"));
    assert_eq!(service.rate_limit(&id).await, Some(RateLimit::Unlimited));
    assert_eq!(json(url, &["show", &id])["rate_limit"], "unlimited");
    for _ in 0..3 {
        assert_eq!(service.status(&key).await, StatusCode::OK, "unlimited");
    }
    let said = ok(url, &["limit", &id, "--rate", "default"]);
    assert_eq!(said.trim(), format!("key {id} rate limit: default"));
    assert_eq!(service.rate_limit(&id).await, None);
    assert!(json(url, &["show", &id])["rate_limit"].is_null());
    assert_eq!(field(&ok(url, &["show", &id]), "rate limit"), "default");
    assert!(row(&ok(url, &["list"]), &id).contains(" default "));
    assert_eq!(service.status(&key).await, StatusCode::OK);
    assert_eq!(
        service.status(&key).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the services' default ({SERVICE_DEFAULT_RATE})"
    );
    ok(url, &["limit", &id, "--rate", "1000/1h"]);

    // rotate: the new key works at once; the old one during the grace period, then no more.
    let rotated = json(url, &["rotate", &id, "--grace", "1h"]);
    let new_key = rotated["key"].as_str().unwrap_or_default().to_owned();
    let new_id = rotated["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(rotated["rotated_from"], id.as_str());
    assert_eq!(rotated["name"], "ci (prod)");
    assert_eq!(rotated["rate_limit"], "1000/1h", "rotation keeps the limit");
    assert_eq!(service.status(&new_key).await, StatusCode::OK);
    assert_eq!(
        service.status(&key).await,
        StatusCode::OK,
        "old key inside the grace period"
    );
    // The CLI stamps the grace period with the real clock when it runs, which is past the
    // service's (standing) manual clock by however long the commands above took: measure from
    // now, not from the manual clock, or a slow run keeps the old key valid.
    service
        .clock
        .set(SystemTime::now() + Duration::from_secs(3600 + 1));
    assert_eq!(
        service.status(&key).await,
        StatusCode::UNAUTHORIZED,
        "old key after the grace period"
    );
    assert_eq!(service.status(&new_key).await, StatusCode::OK);

    // revoke: refused; delete: gone from the list.
    ok(url, &["revoke", &new_id]);
    assert_eq!(service.status(&new_key).await, StatusCode::UNAUTHORIZED);
    assert_eq!(json(url, &["show", &new_id])["state"], "revoked");
    ok(url, &["delete", &new_id, "--yes"]);
    let ids: Vec<String> = json_lines(url, &["list"])
        .iter()
        .map(|v| v["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(!ids.contains(&new_id) && ids.contains(&id), "{ids:?}");
    let out = keygate(url, &["show", &new_id]);
    assert_eq!(out.status.code(), Some(2));

    // A canary: refused by the service like an unknown key, marked in list and show.
    let canary = ok(
        url,
        &[
            "create",
            "--name",
            "decoy",
            "--scope",
            "orders:read",
            "--canary",
        ],
    )
    .trim()
    .to_owned();
    assert_eq!(service.status(&canary).await, StatusCode::UNAUTHORIZED);
    let decoy = json_lines(url, &["list"])
        .into_iter()
        .find(|v| v["name"] == "decoy")
        .unwrap();
    assert_eq!(
        (&decoy["canary"], &decoy["state"]),
        (&Value::Bool(true), &Value::from("active"))
    );
    let canary_id = decoy["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(json(url, &["show", &id])["canary"], Value::Bool(false));
    let table = ok(url, &["list"]);
    assert!(
        row(&table, &canary_id).contains(" active (canary) "),
        "{table}"
    );
    assert!(!row(&table, &id).contains("canary"), "{table}");
    assert!(field(&ok(url, &["show", &canary_id]), "canary").starts_with("yes"));
    assert!(field(&ok(url, &["show", &id]), "canary").starts_with("no"));
    let out = keygate(url, &["create", "--name", "x", "--canary", "--admin"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--admin"),
        "a canary admin key was accepted"
    );
}

#[tokio::test]
async fn lifecycle_on_sqlite() {
    let (dir, url, store) = migrated_sqlite("lifecycle").await;
    let clock = ManualClock::new(SystemTime::now());
    let verifier = Verifier::builder(keyring(), store)
        .clock(clock.clone())
        .default_rate_limit(rate(SERVICE_DEFAULT_RATE))
        .build();
    lifecycle(&url, &Service::new(verifier, clock)).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn lifecycle_on_postgres() {
    let Ok(base) = std::env::var("KEYGATE_TEST_POSTGRES_URL") else {
        eprintln!("KEYGATE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL CLI test");
        return;
    };
    let db = TempDatabase::create(&base).await;
    ok(&db.url, &["migrate"]);
    let store = keygate_sqlx::PostgresStore::open(&db.url).await.unwrap();
    let clock = ManualClock::new(SystemTime::now());
    let verifier = Verifier::builder(keyring(), store)
        .clock(clock.clone())
        .default_rate_limit(rate(SERVICE_DEFAULT_RATE))
        .build();
    lifecycle(&db.url, &Service::new(verifier, clock)).await;
    db.drop_now().await;
}

/// A database of its own for one test run, so runs cannot collide.
struct TempDatabase {
    admin: sqlx::PgPool,
    name: String,
    url: String,
}

impl TempDatabase {
    async fn create(base: &str) -> Self {
        let admin = sqlx::PgPool::connect(base).await.unwrap_or_else(|e| {
            panic!("KEYGATE_TEST_POSTGRES_URL is set but PostgreSQL is unreachable: {e}")
        });
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!("keygate_cli_{}_{nanos}", std::process::id());
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create database");
        let (root, _) = base.rsplit_once('/').unwrap_or((base, ""));
        let url = format!("{root}/{name}");
        Self { admin, name, url }
    }

    async fn drop_now(self) {
        let _ = sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await;
    }
}

/// Every error case: the exit code, and a stderr line that names the problem.
#[test]
fn errors_have_exit_codes_and_say_what_is_wrong() {
    let dir = temp_dir("errors");
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    let key = ok(&url, &["create", "--name", "victim"]);
    let id = json_lines(&url, &["list"])[0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ok(&url, &["revoke", &id]);

    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["show", "AAAAAAAAAAAA"],
            2,
            "no key with id AAAAAAAAAAAA",
        ),
        (vec!["show", "not-an-id"], 1, "malformed key id"),
        (vec!["show", key.trim()], 1, "malformed key id"),
        (
            vec!["create", "--name", "x", "--expires-in", "soon"],
            1,
            "bad duration",
        ),
        (
            vec!["rotate", &id, "--grace", "31d"],
            1,
            "grace period too long",
        ),
        (
            vec!["create", "--name", "x", "--allow-ip", "10.0.0.0/33"],
            1,
            "bad --allow-ip",
        ),
        (
            vec!["create", "--name", "x", "--scope", "bad scope"],
            1,
            "invalid scope",
        ),
        (vec!["create", "--name", ""], 1, "invalid key name"),
        (
            vec!["create", "--name", "x", "--expires-at", "yesterday"],
            1,
            "bad time",
        ),
        (
            vec!["create", "--name", "x", "--meta", "novalue"],
            1,
            "bad --meta",
        ),
        (
            vec!["create", "--name", "x", "--rate", "fast"],
            1,
            "invalid rate policy: write <requests>/<period>",
        ),
        (
            vec!["create", "--name", "x", "--rate", "100/1w"],
            1,
            "the period must be",
        ),
        (
            vec!["limit", &id, "--rate", "0/1s"],
            1,
            "the request count must be",
        ),
        (
            vec!["limit", &id, "--rate", "often"],
            1,
            "or \"unlimited\", or \"default\"",
        ),
        (vec!["limit", &id], 1, "--rate"),
        (
            vec!["limit", "not-an-id", "--rate", "5/1s"],
            1,
            "malformed key id",
        ),
        (
            vec!["limit", "AAAAAAAAAAAA", "--rate", "5/1s"],
            2,
            "no key with id AAAAAAAAAAAA",
        ),
        (vec!["enable", &id], 4, "revoked"),
        (vec!["delete", &id], 1, "--yes"),
        (vec!["frobnicate"], 1, "unrecognized subcommand"),
    ];
    for (args, code, needle) in &cases {
        let out = keygate(&url, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: stderr should mention {needle:?}: {stderr}"
        );
        assert!(
            !stderr.contains(&key.trim()[20..]),
            "{args:?}: the secret leaked into stderr"
        );
    }

    // Nothing half-written: a refused create leaves the store as it was.
    assert_eq!(json_lines(&url, &["list"]).len(), 1);

    // Unreachable database: exit 3.
    let out = keygate("postgres://nobody@127.0.0.1:1/none", &["list"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("key store unavailable")
            || String::from_utf8_lossy(&out.stderr).contains("could not open the key store")
    );

    // An unsupported URL is a usage error.
    let out = keygate("mysql://x", &["list"]);
    assert_eq!(out.status.code(), Some(1));

    let _ = std::fs::remove_dir_all(dir);
}

/// A bad policy is refused before the store is opened: no store is created, and an existing
/// key keeps its limit.
#[test]
fn a_bad_rate_policy_changes_nothing() {
    let dir = temp_dir("rate");
    let path = dir.join("keys.db");
    let url = format!("sqlite://{}", path.display());
    let out = keygate(&url, &["create", "--name", "x", "--rate", "10/1m burst"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !path.exists(),
        "a refused create opened (created) the store"
    );

    // `default` is also accepted by create, so scripts can pass one value to either command.
    let plain = json(&url, &["create", "--name", "plain", "--rate", "default"]);
    assert!(plain["rate_limit"].is_null(), "{plain}");
    let limited = json(&url, &["create", "--name", "limited", "--rate", "10/1m"]);
    assert_eq!(limited["rate_limit"], "10/1m");
    let id = limited["id"].as_str().unwrap_or_default().to_owned();
    let before = json_lines(&url, &["list"]);
    for bad in ["10/1m burst", "unlimted", "", "10/0s", "default 5/1s"] {
        let out = keygate(&url, &["limit", &id, "--rate", bad]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {stderr}");
        assert!(stderr.contains("invalid rate policy"), "{bad:?}: {stderr}");
    }
    assert_eq!(json_lines(&url, &["list"]), before, "the key is as it was");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn help_reads_well() {
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for needle in [
        "create",
        "rotate",
        "revoke",
        "Examples:",
        "Exit codes:",
        "KEYGATE_DATABASE_URL",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
    for command in [
        "create", "list", "show", "rename", "scopes", "expire", "limit", "disable", "enable",
        "revoke", "rotate", "delete", "migrate",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args([command, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{command} --help");
    }
}

/// A store migrated by a newer keygate: exit 5, and the message says to upgrade the CLI.
#[tokio::test]
async fn a_newer_schema_is_refused_with_exit_code_5() {
    let (dir, url, store) = migrated_sqlite("schema").await;
    sqlx::query(
        "INSERT INTO keygate_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, X'00', 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    store.pool().close().await;
    let out = keygate(&url, &["list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("newer") && stderr.contains("install the newer CLI"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Another process holds the SQLite write lock: the change waits for the busy timeout, then
/// fails with exit 3 and nothing written.
#[tokio::test]
async fn a_locked_database_is_exit_code_3_and_changes_nothing() {
    let dir = temp_dir("locked");
    let path = dir.join("keys.db");
    let url = format!("sqlite://{}", path.display());
    ok(&url, &["create", "--name", "locked out"]);
    let id = json_lines(&url, &["list"])[0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let store = keygate_sqlx::SqliteStore::open(&path).await.unwrap();
    let mut lock = store.pool().acquire().await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let url_for_cli = url.clone();
    let id_for_cli = id.clone();
    let out = tokio::task::spawn_blocking(move || keygate(&url_for_cli, &["revoke", &id_for_cli]))
        .await
        .unwrap();
    sqlx::query("ROLLBACK").execute(&mut *lock).await.unwrap();
    drop(lock);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("locked"), "{stderr}");
    assert_eq!(
        json(&url, &["show", &id])["state"],
        "active",
        "nothing half-written"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `keygate` like [`keygate`], with more environment.
fn keygate_with(url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .env("KEYGATE_DATABASE_URL", url)
        .env("KEYGATE_PEPPER", PEPPER)
        .env("KEYGATE_PREFIX", PREFIX)
        .env_remove("RUST_LOG")
        .env_remove("KEYGATE_ACTOR")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run keygate")
}

fn ok_with(url: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = keygate_with(url, args, env);
    assert!(
        out.status.success(),
        "keygate {args:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The part of a key that must never be stored or shown again: everything after the id.
fn secret_of(key: &str) -> &str {
    key.rsplit_once('_').map_or(key, |(_, secret)| secret)
}

/// A scripted run: keys made with the CLI, requests through a service whose verifier keeps
/// its audit trail in the same database, then `keygate audit` and `keygate usage` report
/// exactly what happened, every change made with the CLI is an event with its actor, and no
/// secret appears anywhere.
async fn audit_trail(url: &str, service: &Service) {
    let as_ops = [("KEYGATE_ACTOR", "ops-env")];
    let key_a = ok_with(
        url,
        &["create", "--name", "a", "--scope", "orders:read"],
        &as_ops,
    )
    .trim()
    .to_owned();
    let key_b = ok_with(
        url,
        &["create", "--name", "b", "--actor", "ops-flag"],
        &as_ops,
    )
    .trim()
    .to_owned();
    let id_of = |key: &str| key.split('_').nth(2).unwrap_or_default().to_owned();
    let (a, b) = (id_of(&key_a), id_of(&key_b));

    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/admin",
            get(|| async { "admin" })
                .route_layer(keygate_axum::RequireScopes::all(["admin:write"])),
        )
        .layer(keygate_axum::layer(service.verifier.clone()));
    let send = |path: &'static str, key: Option<String>| {
        let app = app.clone();
        async move {
            let mut request = Request::get(path);
            if let Some(key) = key {
                request = request.header("x-api-key", key);
            }
            let request = request.body(Body::empty()).unwrap();
            app.oneshot(request)
                .await
                .unwrap_or_else(|e| match e {})
                .status()
        }
    };
    const A_ALLOWED: u64 = 5;
    const A_DENIED: u64 = 3;
    const B_ALLOWED: u64 = 2;
    for _ in 0..A_ALLOWED {
        assert_eq!(send("/hello", Some(key_a.clone())).await, StatusCode::OK);
    }
    for _ in 0..A_DENIED {
        assert_eq!(
            send("/admin", Some(key_a.clone())).await,
            StatusCode::FORBIDDEN
        );
    }
    for _ in 0..B_ALLOWED {
        assert_eq!(send("/hello", Some(key_b.clone())).await, StatusCode::OK);
    }
    // No key: an event, but no key to count usage against.
    assert_eq!(send("/hello", None).await, StatusCode::UNAUTHORIZED);
    service.verifier.flush_audit().await;
    assert_eq!(service.verifier.audit_stats().dropped, 0);

    // Exactly the denied requests of key a.
    let denied = json_lines(url, &["audit", "--key", &a, "--outcome", "denied"]);
    assert_eq!(
        denied.len(),
        usize::try_from(A_DENIED).unwrap_or_default(),
        "{denied:?}"
    );
    for event in &denied {
        assert_eq!(event["key_id"], a.as_str());
        assert_eq!(event["outcome"], "denied");
        assert_eq!(event["reason"], "insufficient_scope");
        assert_eq!(event["route"], "/admin");
        assert_eq!(event["status"], 403);
        assert_eq!(event["method"], "GET");
    }
    let table = ok(url, &["audit", "--key", &a, "--outcome", "denied"]);
    assert_eq!(table.lines().count(), 1 + denied.len(), "{table}");
    assert!(
        table
            .lines()
            .skip(1)
            .all(|l| l.contains("insufficient_scope")),
        "{table}"
    );
    let by_reason = json_lines(
        url,
        &["audit", "--reason", "missing_credentials", "--since", "1h"],
    );
    assert_eq!(by_reason.len(), 1, "{by_reason:?}");
    // A request without a key names no key: it is folded per client and minute, with a count.
    assert_eq!(by_reason[0]["action"], "denials", "{by_reason:?}");
    assert_eq!(by_reason[0]["folded"]["count"], 1, "{by_reason:?}");
    let folded = ok(url, &["audit", "--reason", "missing_credentials"]);
    assert!(folded.contains("denied ×1"), "{folded}");

    // Usage totals are the requests sent, per key.
    let usage = json_lines(url, &["usage"]);
    let total = |id: &str, column: &str| -> u64 {
        usage
            .iter()
            .filter(|d| d["key_id"] == id)
            .map(|d| d[column].as_u64().unwrap_or_default())
            .sum()
    };
    assert_eq!(total(&a, "allowed"), A_ALLOWED, "{usage:?}");
    assert_eq!(total(&a, "denied"), A_DENIED, "{usage:?}");
    assert_eq!(total(&b, "allowed"), B_ALLOWED, "{usage:?}");
    assert_eq!(total(&b, "denied"), 0, "{usage:?}");
    let bars = ok(url, &["usage", "--days", "7"]);
    assert!(bars.contains("LAST 7 DAYS"), "{bars}");
    let bar = bars.lines().rev().find(|l| l.starts_with(a.as_str()));
    assert!(bar.is_some_and(|l| l.contains('█')), "{bars}");
    let only_b = json_lines(url, &["usage", "--key", &b]);
    assert!(only_b.iter().all(|d| d["key_id"] == b.as_str()) && !only_b.is_empty());

    // Every change through the CLI is an event, with its actor.
    let actor = ["--actor", "alice"];
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(actor);
        ok(url, &all)
    };
    run(&["rename", &a, "a2"]);
    run(&["scopes", &a, "--add", "orders:write"]);
    run(&["expire", &a, "--in", "7d"]);
    run(&["limit", &a, "--rate", "10/1s"]);
    run(&["disable", &b]);
    run(&["enable", &b]);
    let new_key = run(&["rotate", &a, "--grace", "1h"]).trim().to_owned();
    run(&["revoke", &b]);
    run(&["delete", &b, "--yes"]);
    // A refused change is no event.
    assert_eq!(keygate(url, &["enable", &b]).status.code(), Some(2));

    let changes: Vec<(String, String, String, String)> =
        json_lines(url, &["audit", "--limit", "10000"])
            .iter()
            .filter(|e| e["action"] != "request" && e["action"] != "denials")
            .map(|e| {
                let text = |name: &str| e[name].as_str().unwrap_or("-").to_owned();
                (
                    text("action"),
                    text("key_id"),
                    text("actor"),
                    text("detail"),
                )
            })
            .collect();
    let event = |action: &str, id: &str, actor: &str| {
        (
            action.to_owned(),
            id.to_owned(),
            actor.to_owned(),
            "-".to_owned(),
        )
    };
    let new_id = id_of(&new_key);
    assert_eq!(
        changes,
        [
            event("created", &a, "ops-env"),
            event("created", &b, "ops-flag"),
            event("renamed", &a, "alice"),
            event("scopes_changed", &a, "alice"),
            event("expiry_changed", &a, "alice"),
            event("rate_limit_changed", &a, "alice"),
            event("disabled", &b, "alice"),
            event("enabled", &b, "alice"),
            (
                "rotated".to_owned(),
                a.clone(),
                "alice".to_owned(),
                format!("new key {new_id}")
            ),
            event("revoked", &b, "alice"),
            event("deleted", &b, "alice"),
        ]
    );

    // No secret anywhere: not in the CLI's output, not in the events table.
    let everything = ok(url, &["audit", "--limit", "10000", "--json"])
        + &ok(url, &["audit", "--limit", "10000"])
        + &ok(url, &["usage", "--json"]);
    let rows: Vec<String> = match service.store_kind {
        StoreKind::Sqlite(ref pool) => {
            let mut rows: Vec<String> = sqlx::query_scalar(
                "SELECT coalesce(key_id,'') || coalesce(route,'') || coalesce(request_id,'') || \
                 coalesce(actor,'') || coalesce(detail,'') FROM keygate_audit_events",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            // Request events are kept in blocks: their bytes too.
            let blocks: Vec<Vec<u8>> =
                sqlx::query_scalar("SELECT events FROM keygate_audit_blocks")
                    .fetch_all(pool)
                    .await
                    .unwrap();
            rows.extend(
                blocks
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned()),
            );
            rows
        }
        StoreKind::Postgres(ref pool) => sqlx::query_scalar(
            "SELECT concat(key_id, route, request_id, actor, detail) FROM keygate_audit_events",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        StoreKind::None => Vec::new(),
    };
    assert!(!rows.is_empty());
    for key in [&key_a, &key_b, &new_key] {
        let secret = secret_of(key);
        assert!(secret.len() >= 20, "{key}");
        assert!(!everything.contains(secret), "a secret in the CLI's output");
        assert!(
            rows.iter().all(|r| !r.contains(secret)),
            "a secret in the events table"
        );
    }
}

#[tokio::test]
async fn audit_and_usage_on_sqlite() {
    let (dir, url, store) = migrated_sqlite("audit").await;
    let clock = ManualClock::new(SystemTime::now());
    let verifier = Verifier::builder(keyring(), store.clone())
        .clock(clock.clone())
        .audit_sink(store.audit_sink())
        .build();
    let mut service = Service::new(verifier, clock);
    service.store_kind = StoreKind::Sqlite(store.pool().clone());
    audit_trail(&url, &service).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn audit_and_usage_on_postgres() {
    let Ok(base) = std::env::var("KEYGATE_TEST_POSTGRES_URL") else {
        eprintln!("KEYGATE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL CLI test");
        return;
    };
    let db = TempDatabase::create(&base).await;
    ok(&db.url, &["migrate"]);
    let store = keygate_sqlx::PostgresStore::open(&db.url).await.unwrap();
    let clock = ManualClock::new(SystemTime::now());
    let verifier = Verifier::builder(keyring(), store.clone())
        .clock(clock.clone())
        .audit_sink(store.audit_sink())
        .build();
    let mut service = Service::new(verifier, clock);
    service.store_kind = StoreKind::Postgres(store.pool().clone());
    audit_trail(&db.url, &service).await;
    store.pool().close().await;
    db.drop_now().await;
}

#[test]
fn audit_and_usage_refuse_bad_input_before_opening_the_store() {
    let dir = temp_dir("audit-input");
    let path = dir.join("never.db");
    let url = format!("sqlite://{}", path.display());
    for (args, says) in [
        (vec!["audit", "--since", "yesterday"], "--since"),
        (vec!["audit", "--reason", "bored"], "wrong_secret"),
        (vec!["audit", "--limit", "0"], "--limit"),
        (vec!["audit", "--key", "not-an-id"], "malformed key id"),
        (vec!["audit", "--outcome", "maybe"], "maybe"),
        (vec!["usage", "--days", "0"], "--days"),
        (vec!["usage", "--key", "x"], "malformed key id"),
    ] {
        let out = keygate(&url, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert!(!path.exists(), "a usage error created the store");
    let _ = std::fs::remove_dir_all(dir);
}

/// A service writes its request events in batches, so an event can be written after a later
/// one (a change the CLI made meanwhile): `keygate audit` prints them in the order they
/// happened, and `--json` too.
#[tokio::test]
async fn audit_prints_events_in_the_order_they_happened_not_written() {
    use keygate::audit::{Action, AuditEvent, AuditSink as _};
    let (dir, url, store) = migrated_sqlite("audit-order").await;
    let sink = store.audit_sink();
    let id = KeyId::random();
    let t0 = SystemTime::now() - Duration::from_secs(60);
    // Written first, happened last.
    sink.write(&[AuditEvent::lifecycle(
        t0 + Duration::from_secs(2),
        Action::Revoked,
        id,
    )])
    .await
    .unwrap();
    sink.write(&[
        AuditEvent::lifecycle(t0, Action::Created, id),
        AuditEvent::lifecycle(t0 + Duration::from_secs(1), Action::Disabled, id),
    ])
    .await
    .unwrap();
    let lines = ok(&url, &["audit", "--key", id.as_str(), "--json"]);
    let actions: Vec<String> = lines
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(actions, ["created", "disabled", "revoked"]);
    let table = ok(&url, &["audit", "--key", id.as_str()]);
    let created = table.find("created").unwrap();
    let revoked = table.find("revoked").unwrap();
    assert!(created < revoked, "{table}");
    let _ = std::fs::remove_dir_all(dir);
}

/// During a rolling upgrade a newer keygate may record actions and reasons this CLI has no name
/// for: `keygate audit` prints them by the names they were stored under instead of failing.
#[tokio::test]
async fn audit_prints_a_newer_keygates_names_as_stored() {
    let (dir, url, store) = migrated_sqlite("audit-newer").await;
    let id = KeyId::random();
    let at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
        - 60_000_000;
    for (offset, action, outcome, reason) in [
        (0, "credits_topped_up", None, None),
        (1, "request", Some("denied"), Some("quota_frozen")),
    ] {
        keygate_sqlx::sqlx::query(
            "INSERT INTO keygate_audit_events (at, action, key_id, outcome, reason) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(at + offset)
        .bind(action)
        .bind(id.as_str())
        .bind(outcome)
        .bind(reason)
        .execute(store.pool())
        .await
        .unwrap();
    }
    let lines = ok(&url, &["audit", "--key", id.as_str(), "--json"]);
    let events: Vec<Value> = lines
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{lines}");
    assert_eq!(events[0]["action"], "credits_topped_up");
    assert_eq!(events[1]["action"], "request");
    assert_eq!(events[1]["outcome"], "denied");
    assert_eq!(events[1]["reason"], "quota_frozen");
    let table = ok(&url, &["audit", "--key", id.as_str()]);
    assert!(table.contains("credits_topped_up"), "{table}");
    assert!(table.contains("quota_frozen"), "{table}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `list --expiring-within`: active keys expiring within the window, soonest first; not keys
/// expiring later, never, or switched off; a bad window is refused before the store is opened.
#[test]
fn list_expiring_within_shows_active_keys_in_the_window_soonest_first() {
    let dir = temp_dir("expiring");
    let path = dir.join("keys.db");
    let url = format!("sqlite://{}", path.display());
    let out = keygate(&url, &["list", "--expiring-within", "a week"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--expiring-within"),
        "{out:?}"
    );
    assert!(!path.exists(), "a refused list opened (created) the store");

    let create = |name: &str, expires_in: Option<&str>| {
        let mut args = vec!["create", "--name", name];
        if let Some(d) = expires_in {
            args.extend(["--expires-in", d]);
        }
        json(&url, &args)["id"].as_str().unwrap().to_owned()
    };
    let six_days = create("six days", Some("6d"));
    let three_days = create("three days", Some("3d"));
    create("a month", Some("30d"));
    create("forever", None);
    let revoked = create("revoked", Some("1d"));
    ok(&url, &["revoke", &revoked]);
    let disabled = create("disabled", Some("2d"));
    ok(&url, &["disable", &disabled]);

    let listed: Vec<String> = json_lines(&url, &["list", "--expiring-within", "7d"])
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, [three_days.clone(), six_days.clone()]);
    let table = ok(&url, &["list", "--expiring-within", "4d"]);
    assert!(
        table.contains(&three_days) && !table.contains(&six_days),
        "{table}"
    );
    assert!(json_lines(&url, &["list", "--expiring-within", "12h"]).is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

/// `keygate owners …`, `revoke --owner`, `audit|usage --owner`: owner records, bulk actions
/// with one audit event per key, exit codes for unknown owners and conflicts, and a refused
/// bulk revoke without `--yes` off a terminal that changes nothing.
#[test]
fn owners_are_managed_and_their_keys_changed_together() {
    let dir = temp_dir("owners");
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    let key = |name: &str, owner: &str| {
        json(&url, &["create", "--name", name, "--owner", owner])["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let a = key("a", "team-x");
    let b = key("b", "team-x");
    let other = key("other", "team-y");
    // Created with their first key, named after their id.
    let owner = json(&url, &["owners", "show", "team-x"]);
    assert_eq!(owner["name"], "team-x");
    assert_eq!(owner["keys"], 2);
    assert_eq!(owner["rate_limit"], Value::Null);
    let created = json(
        &url,
        &[
            "owners",
            "create",
            "acme",
            "--name",
            "ACME",
            "--meta",
            "plan=gold",
            "--rate-limit",
            "10/1m",
            "--actor",
            "owner-admin",
        ],
    );
    assert_eq!(created["rate_limit"], "10/1m");
    assert_eq!(created["metadata"]["plan"], "gold");
    let ids: Vec<String> = json_lines(&url, &["owners", "list"])
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["acme", "team-x", "team-y"]);
    let updated = json(
        &url,
        &[
            "owners",
            "update",
            "acme",
            "--rate-limit",
            "none",
            "--actor",
            "owner-admin",
        ],
    );
    assert_eq!(updated["rate_limit"], Value::Null);
    assert_eq!(updated["name"], "ACME");

    // Exit codes: 2 unknown owner, 4 taken id or owner with keys, 1 bad id.
    for (args, code) in [
        (vec!["owners", "show", "nobody"], 2),
        (vec!["owners", "disable", "nobody"], 2),
        (vec!["revoke", "--owner", "nobody", "--yes"], 2),
        (vec!["owners", "create", "acme"], 4),
        (vec!["owners", "delete", "team-x"], 4),
        (vec!["owners", "create", " "], 1),
    ] {
        assert_eq!(keygate(&url, &args).status.code(), Some(code), "{args:?}");
    }

    let disabled = json_lines(&url, &["owners", "disable", "team-x"]);
    assert_eq!(disabled.len(), 2);
    assert!(disabled.iter().all(|k| k["state"] == "disabled"));
    assert_eq!(json(&url, &["show", &other])["state"], "active");
    assert_eq!(json_lines(&url, &["owners", "enable", "team-x"]).len(), 2);

    // Off a terminal a bulk revoke needs --yes, and without it changes nothing.
    let refused = keygate(&url, &["revoke", "--owner", "team-x"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    assert_eq!(json(&url, &["show", &a])["state"], "active");
    let revoked = ok(&url, &["revoke", "--owner", "team-x", "--yes"]);
    assert!(revoked.contains("revoked 2 key(s)"), "{revoked}");
    for id in [&a, &b] {
        assert_eq!(json(&url, &["show", id])["state"], "revoked");
    }
    assert_eq!(json(&url, &["show", &other])["state"], "active");

    // The audit trail by owner (in time order): its creation by its first key, then the
    // creations and the three bulk changes of its two keys.
    let events = json_lines(&url, &["audit", "--owner", "team-x", "--limit", "100"]);
    let first = &events[0];
    assert_eq!(
        [&first["action"], &first["owner"], &first["detail"]],
        ["owner_created", "team-x", r#"name "team-x""#],
        "{events:?}"
    );
    assert_eq!(events[1]["action"], "created");
    assert_eq!(events[1]["key_id"], a.as_str());
    let events = &events[1..];
    let mut actions: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["key_id"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    actions.sort();
    let mut want = Vec::new();
    for id in [&a, &b] {
        for action in ["created", "disabled", "enabled", "revoked"] {
            want.push((id.clone(), action.to_owned()));
        }
    }
    want.sort();
    assert_eq!(actions, want);
    assert!(
        events
            .iter()
            .filter(|e| e["action"] == "revoked")
            .all(|e| e["detail"] == "revoke of owner team-x"),
        "{events:?}"
    );
    assert_eq!(
        keygate(&url, &["usage", "--owner", "nobody"]).status.code(),
        Some(2)
    );
    assert!(json_lines(&url, &["usage", "--owner", "team-x"]).is_empty());
    // acme's own changes: created with its name and limit, updated, all with the actor; the
    // refused create (taken id) recorded nothing.
    let owner_events = |owner: &str| {
        json_lines(&url, &["audit", "--owner", owner, "--limit", "100"])
            .iter()
            .map(|e| {
                assert_eq!(e["key_id"], Value::Null, "{e}");
                assert_eq!(e["owner"], owner, "{e}");
                assert_eq!(e["actor"], "owner-admin", "{e}");
                (
                    e["action"].as_str().unwrap().to_owned(),
                    e["detail"].as_str().map(str::to_owned),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        owner_events("acme"),
        [
            (
                "owner_created".to_owned(),
                Some(r#"name "ACME"; metadata set; rate limit 10/1m"#.to_owned())
            ),
            (
                "owner_changed".to_owned(),
                Some("rate limit none".to_owned())
            ),
        ]
    );
    ok(
        &url,
        &["owners", "delete", "acme", "--actor", "owner-admin"],
    );
    assert_eq!(
        keygate(&url, &["owners", "show", "acme"]).status.code(),
        Some(2)
    );
    // Deleted, the owner's own events are still read by --owner (its deletion last), and its
    // usage is empty (it never had keys); an id that never was an owner is still exit 2.
    let actions: Vec<_> = owner_events("acme").into_iter().map(|(a, _)| a).collect();
    assert_eq!(actions, ["owner_created", "owner_changed", "owner_deleted"]);
    assert!(json_lines(&url, &["usage", "--owner", "acme"]).is_empty());
    assert_eq!(
        keygate(&url, &["audit", "--owner", "nobody"]).status.code(),
        Some(2)
    );
    let deleted = json_lines(&url, &["audit", "--action", "owner_deleted"]);
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0]["owner"], "acme");
    assert_eq!(deleted[0]["actor"], "owner-admin");
    let table = ok(&url, &["audit", "--action", "owner_deleted"]);
    assert!(table.contains("owner acme"), "{table}");

    // Offboarding team-x: its keys deleted, then the owner. Its roll-up still has every event
    // of the keys it had (a key never changes owner; its tombstone keeps it).
    let before = json_lines(&url, &["audit", "--owner", "team-x", "--limit", "100"]).len();
    for id in [&a, &b] {
        ok(&url, &["delete", id, "--yes"]);
    }
    ok(&url, &["owners", "delete", "team-x"]);
    let events = json_lines(&url, &["audit", "--owner", "team-x", "--limit", "100"]);
    assert_eq!(events.len(), before + 3, "{events:?}");
    let deleted: Vec<_> = events
        .iter()
        .filter(|e| e["action"] == "deleted")
        .map(|e| e["key_id"].as_str().unwrap())
        .collect();
    assert_eq!(deleted.len(), 2, "{events:?}");
    assert!(deleted.contains(&a.as_str()) && deleted.contains(&b.as_str()));
    assert_eq!(events.last().unwrap()["action"], "owner_deleted");
    assert!(
        events.iter().all(|e| e["key_id"] != other.as_str()),
        "another owner's key: {events:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Quotas from the command line: set on create and with `keygate quota`, cleared with `none`,
/// shown by `show` and `list`; owners take `--quota` too. A bad quota is exit code 1 and
/// changes nothing.
#[test]
fn quotas_are_set_shown_and_cleared() {
    let dir = temp_dir("quotas");
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    let created = json(
        &url,
        &["create", "--name", "reports", "--quota", "10000/day"],
    );
    assert_eq!(created["quota"], "10000/day");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["quota_lineage"], id.as_str());
    assert_eq!(field(&ok(&url, &["show", &id]), "quota"), "10000/day");
    assert!(row(&ok(&url, &["list"]), &id).contains("10000/day"));

    let changed = json(
        &url,
        &["quota", &id, "--quota", "credits 500 refill 500 every 1d"],
    );
    assert_eq!(changed["quota"], "credits 500 refill 500 every 1d");
    let said = ok(&url, &["quota", &id, "--quota", "1000000/month"]);
    assert!(said.contains("quota: 1000000/month"), "{said}");
    let before = json_lines(&url, &["list"]);
    for bad in [
        "10000/week",
        "often",
        "0/day",
        "credits 5 refill 5 every 1y",
        "",
    ] {
        let out = keygate(&url, &["quota", &id, "--quota", bad]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {stderr}");
        assert!(stderr.contains("invalid quota"), "{bad:?}: {stderr}");
    }
    assert_eq!(json_lines(&url, &["list"]), before, "the key is as it was");
    let cleared = json(&url, &["quota", &id, "--quota", "none"]);
    assert_eq!(cleared["quota"], Value::Null);
    assert_eq!(field(&ok(&url, &["show", &id]), "quota"), "none");

    let owner = json(
        &url,
        &["owners", "create", "acme", "--quota", "100000/month"],
    );
    assert_eq!(owner["quota"], "100000/month");
    assert!(ok(&url, &["owners", "show", "acme"]).contains("100000/month"));
    let updated = json(&url, &["owners", "update", "acme", "--quota", "none"]);
    assert_eq!(updated["quota"], Value::Null);
    let updated = json(&url, &["owners", "update", "acme", "--quota", "50/day"]);
    assert_eq!(updated["quota"], "50/day");
    let _ = std::fs::remove_dir_all(dir);
}

/// Top-ups from the command line: `keygate quota ID --add-credits N` adds to a credits key's
/// running total (shown by `show` and `--json`, audited as `credits_added`); a key without a
/// credits quota is exit code 4 (a conflict with its state); 0, too many, or `--quota` beside
/// it exit code 1; either changes nothing.
#[test]
fn credits_are_added_to_a_credits_key_only() {
    let dir = temp_dir("top-ups");
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    let single = json(
        &url,
        &["create", "--name", "single", "--quota", "credits 0"],
    );
    let single = single["id"].as_str().unwrap().to_owned();
    let said = ok(&url, &["quota", &single, "--add-credits", "1"]);
    assert!(
        said.contains(&format!(
            "key {single}: 1 credit added to its balance (1 added in all)"
        )),
        "{said}"
    );
    assert_eq!(
        field(&ok(&url, &["show", &single]), "quota"),
        "credits 0, 1 credit added"
    );
    let created = json(
        &url,
        &["create", "--name", "prepaid", "--quota", "credits 500"],
    );
    assert_eq!(created["quota_granted"], 0);
    let id = created["id"].as_str().unwrap().to_owned();
    let said = ok(&url, &["quota", &id, "--add-credits", "1000"]);
    assert!(
        said.contains(&format!(
            "key {id}: 1000 credits added to its balance (1000 added in all)"
        )),
        "{said}"
    );
    let again = json(&url, &["quota", &id, "--add-credits", "250"]);
    assert_eq!(again["quota_granted"], 1250);
    assert_eq!(again["quota"], "credits 500");
    assert_eq!(
        field(&ok(&url, &["show", &id]), "quota"),
        "credits 500, 1250 credits added"
    );
    let events = json_lines(&url, &["audit", "--key", &id, "--action", "credits_added"]);
    let details: Vec<&str> = events
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(
        details,
        [
            "1000 credits added (1000 added in all)",
            "250 credits added (1250 added in all)"
        ]
    );

    let daily = json(&url, &["create", "--name", "daily", "--quota", "5/day"]);
    let daily = daily["id"].as_str().unwrap().to_owned();
    let before = json_lines(&url, &["list"]);
    for (args, code, says) in [
        (
            vec!["quota", daily.as_str(), "--add-credits", "5"],
            4,
            "quota is not credits",
        ),
        (
            vec!["quota", id.as_str(), "--add-credits", "0"],
            1,
            "0 is not in 1..=1000000000000",
        ),
        (
            vec!["quota", id.as_str(), "--add-credits", "1000000000001"],
            1,
            "1000000000001 is not in",
        ),
        (vec!["quota", id.as_str(), "--add-credits", "-5"], 1, "'-5'"),
        (
            vec![
                "quota",
                id.as_str(),
                "--add-credits",
                "5",
                "--quota",
                "none",
            ],
            1,
            "cannot be used with",
        ),
        (
            vec!["quota", id.as_str(), "--redis-meter", "--add-credits", "5"],
            1,
            "cannot be used with",
        ),
    ] {
        let out = keygate(&url, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert_eq!(json_lines(&url, &["list"]), before, "nothing changed");
    let _ = std::fs::remove_dir_all(dir);
}

/// `keygate quota ID` alone shows what a key's quota has left, read from the counters a
/// service's in-process meter saved in the store: its own balance (top-ups counted) and its
/// owner's, with when each resets. `--json` the same. A key
/// without a quota says so; an unknown key is exit 2; `--redis-meter` needs a Redis URL.
#[tokio::test]
async fn the_balance_is_read_from_the_counters_a_service_saves() {
    let (dir, url, store) = migrated_sqlite("balances").await;
    ok(&url, &["owners", "create", "acme", "--quota", "10/day"]);
    let created = json(
        &url,
        &[
            "create",
            "--name",
            "prepaid",
            "--owner",
            "acme",
            "--quota",
            "credits 5",
        ],
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let verifier = Verifier::builder(keyring(), store.clone()).build();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "x-api-key",
        created["key"].as_str().unwrap().parse().unwrap(),
    );
    let uri = http::Uri::from_static("/");
    let view = keygate::HttpRequestView::new(&headers, &uri, None);
    verifier.verify_request(&view).await.unwrap();
    verifier.verify_request(&view).await.unwrap();
    let balance = |expected: &str| {
        let said = ok(&url, &["quota", &id]);
        assert!(said.contains(expected), "{said}");
        said
    };
    // Saved as a service saves every second (or on shutdown).
    verifier.flush_quota().await.unwrap();
    let said = balance(&format!(
        "key {id} quota: credits 5: 3 left, never refilled"
    ));
    let tomorrow = SystemTime::now() + Duration::from_secs(86_400);
    let midnight =
        humantime::format_rfc3339_seconds(tomorrow).to_string()[..10].to_owned() + "T00:00:00Z";
    assert!(
        said.contains(&format!(
            "owner acme quota: 10/day: 8 left, resets at {midnight}"
        )),
        "{said}"
    );
    assert!(
        said.contains("read from the counters the services save"),
        "{said}"
    );
    ok(&url, &["quota", &id, "--add-credits", "4"]);
    balance("credits 5, 4 credits added: 7 left, never refilled");
    let shown = json(&url, &["quota", &id]);
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["owner"], "acme");
    assert_eq!(shown["source"], "store");
    assert_eq!(shown["key"]["quota"], "credits 5");
    assert_eq!(shown["key"]["granted"], 4);
    assert_eq!(shown["key"]["remaining"], 7);
    assert_eq!(shown["key"]["resets_at"], Value::Null);
    assert_eq!(shown["owner_quota"]["quota"], "10/day");
    assert_eq!(shown["owner_quota"]["remaining"], 8);
    assert!(
        shown["owner_quota"]["resets_at"]
            .as_str()
            .is_some_and(|at| at.ends_with("T00:00:00Z")),
        "{shown}"
    );

    let plain = json(&url, &["create", "--name", "plain"]);
    let plain = plain["id"].as_str().unwrap();
    assert_eq!(
        ok(&url, &["quota", plain]).trim(),
        format!("key {plain} quota: none of its own")
    );
    let none = json(&url, &["quota", plain]);
    assert_eq!(
        (&none["key"], &none["owner_quota"]),
        (&Value::Null, &Value::Null)
    );
    for (args, code, says) in [
        (vec!["quota", "AAAAAAAAAAAA"], 2, "AAAAAAAAAAAA"),
        (
            vec!["quota", id.as_str(), "--redis-meter"],
            1,
            "--redis-url",
        ),
    ] {
        let out = keygate(&url, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `keygate owners quota ID` shows what an owner's shared quota has left (read from the
/// counters a service saved), `--add-credits N` tops it up (audited as `credits_added` naming
/// the owner); a service's keys of the owner spend the credits once. An owner whose quota is
/// not credits is exit code 4 with nothing changed; a bad count exit code 1; an unknown owner
/// exit code 2.
#[tokio::test]
async fn an_owner_shared_balance_is_shown_and_topped_up() {
    let (dir, url, store) = migrated_sqlite("owner-balances").await;
    ok(&url, &["owners", "create", "acme", "--quota", "credits 2"]);
    ok(&url, &["owners", "create", "daily", "--quota", "10/day"]);
    ok(&url, &["owners", "create", "free"]);
    let created = json(&url, &["create", "--name", "shared", "--owner", "acme"]);
    let verifier = Verifier::builder(keyring(), store.clone()).build();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "x-api-key",
        created["key"].as_str().unwrap().parse().unwrap(),
    );
    let uri = http::Uri::from_static("/");
    let view = keygate::HttpRequestView::new(&headers, &uri, None);
    for _ in 0..2 {
        verifier.verify_request(&view).await.unwrap();
    }
    assert!(verifier.verify_request(&view).await.is_err(), "spent");
    verifier.flush_quota().await.unwrap();
    let said = ok(&url, &["owners", "quota", "acme"]);
    assert!(
        said.contains("owner acme quota: credits 2: 0 left, never refilled"),
        "{said}"
    );
    assert!(
        said.contains("read from the counters the services save"),
        "{said}"
    );

    let said = ok(&url, &["owners", "quota", "acme", "--add-credits", "3"]);
    assert!(
        said.contains(r#"owner "acme": 3 credits added to its shared balance (3 added in all)"#),
        "{said}"
    );
    let again = json(&url, &["owners", "quota", "acme", "--add-credits", "1"]);
    assert_eq!(again["quota_granted"], 4);
    assert_eq!(again["quota"], "credits 2");
    assert_eq!(
        field(&ok(&url, &["owners", "show", "acme"]), "quota"),
        "credits 2, 4 credits added"
    );
    let shown = json(&url, &["owners", "quota", "acme"]);
    assert_eq!(shown["owner"], "acme");
    assert_eq!(shown["source"], "store");
    assert_eq!(
        shown["quota"],
        serde_json::json!({"quota": "credits 2", "granted": 4, "remaining": 4, "resets_at": null})
    );
    // The service reads the owner afresh (its cache entry expired, or the change feed told
    // it): the four credits, once.
    verifier
        .invalidate(created["id"].as_str().unwrap().parse::<KeyId>().unwrap())
        .await;
    for _ in 0..4 {
        verifier.verify_request(&view).await.unwrap();
    }
    assert!(verifier.verify_request(&view).await.is_err(), "spent again");
    let events = json_lines(
        &url,
        &["audit", "--owner", "acme", "--action", "credits_added"],
    );
    let details: Vec<&str> = events
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(
        details,
        [
            "3 credits added (3 added in all)",
            "1 credit added (4 added in all)"
        ]
    );

    assert_eq!(
        ok(&url, &["owners", "quota", "free"]).trim(),
        "owner free quota: none"
    );
    assert_eq!(
        json(&url, &["owners", "quota", "free"])["quota"],
        Value::Null
    );
    let before = json_lines(&url, &["owners", "list"]);
    for (args, code, says) in [
        (
            vec!["owners", "quota", "daily", "--add-credits", "5"],
            4,
            "quota is not credits",
        ),
        (
            vec!["owners", "quota", "free", "--add-credits", "5"],
            4,
            "quota is not credits",
        ),
        (
            vec!["owners", "quota", "acme", "--add-credits", "0"],
            1,
            "0 is not in 1..=1000000000000",
        ),
        (
            vec![
                "owners",
                "quota",
                "acme",
                "--redis-meter",
                "--add-credits",
                "5",
            ],
            1,
            "cannot be used with",
        ),
        (vec!["owners", "quota", "nobody"], 2, "nobody"),
        (
            vec!["owners", "quota", "nobody", "--add-credits", "5"],
            2,
            "nobody",
        ),
        (
            vec!["owners", "quota", "acme", "--redis-meter"],
            1,
            "--redis-url",
        ),
        (vec!["owners", "quota", "a\u{7}b"], 1, "owner"),
    ] {
        let out = keygate(&url, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert_eq!(
        json_lines(&url, &["owners", "list"]),
        before,
        "nothing changed"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Named limits from the command line: `create --limit` (both spellings), `keygate limits`
/// setting, removing and clearing while keeping the names not given, audited as
/// `limits_changed`; owners take `--limit` on create and merge it on update. `show`, `list` and
/// `--json` show them. A bad name, a bad policy or a name given twice is exit code 1 and
/// changes nothing.
#[test]
fn named_limits_are_set_merged_shown_and_cleared() {
    let dir = temp_dir("named-limits");
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    let created = json(
        &url,
        &[
            "create",
            "--name",
            "app",
            "--limit",
            "writes=10/1s",
            "--limit",
            "reads: 100/1s burst 200",
        ],
    );
    assert_eq!(
        created["limits"],
        serde_json::json!({"reads": "100/1s burst 200", "writes": "10/1s"})
    );
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        field(&ok(&url, &["show", &id]), "limits"),
        "reads: 100/1s burst 200, writes: 10/1s"
    );
    let table = ok(&url, &["list"]);
    assert!(
        table.contains("LIMITS")
            && row(&table, &id).contains("reads: 100/1s burst 200, writes: 10/1s"),
        "{table}"
    );

    // Sets one, removes one, adds one: the others stay.
    let said = ok(
        &url,
        &[
            "limits",
            &id,
            "writes=20/1s",
            "reads=none",
            "bulk: unlimited",
        ],
    );
    assert!(
        said.contains(&format!("key {id} limits: bulk: unlimited, writes: 20/1s")),
        "{said}"
    );
    let changed = json(&url, &["limits", &id, "exports=5/1h"]);
    assert_eq!(
        changed["limits"],
        serde_json::json!({"bulk": "unlimited", "exports": "5/1h", "writes": "20/1s"})
    );
    assert_eq!(
        json(&url, &["show", &id])["limits"],
        changed["limits"],
        "as stored"
    );

    let before = json_lines(&url, &["list"]);
    for (args, message) in [
        (vec!["Writes=1/1s"], "invalid limit name"),
        (vec!["quota=1/1s"], "invalid limit name"),
        (vec!["writes=0/1s"], "request count"),
        (vec!["writes=often"], "invalid rate policy"),
        (vec!["writes"], "invalid named limit"),
        (
            vec!["writes=1/1s", "writes=none"],
            "the limit writes is given twice",
        ),
    ] {
        let mut all = vec!["limits", id.as_str()];
        all.extend(&args);
        let out = keygate(&url, &all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    for args in [
        vec!["limits", id.as_str()],
        vec!["limits", &id, "--clear", "a=1/1s"],
    ] {
        assert_eq!(keygate(&url, &args).status.code(), Some(1), "{args:?}");
    }
    let out = keygate(
        &url,
        &[
            "create", "--name", "twice", "--limit", "x=1/1s", "--limit", "x: 2/1s",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the limit x is given twice"));
    assert_eq!(json_lines(&url, &["list"]), before, "nothing changed");

    let said = ok(&url, &["limits", &id, "--clear"]);
    assert!(said.contains(&format!("key {id} limits: none")), "{said}");
    assert_eq!(json(&url, &["show", &id])["limits"], serde_json::json!({}));
    assert_eq!(field(&ok(&url, &["show", &id]), "limits"), "none");
    // Each change is one audit event.
    let events = json_lines(&url, &["audit", "--key", &id, "--limit", "100"]);
    let changes = events
        .iter()
        .filter(|e| e["action"] == "limits_changed")
        .count();
    assert_eq!(changes, 3, "{events:?}");

    // Owners: set on create, merged on update (with --limit alone as the change).
    let owner = json(
        &url,
        &[
            "owners",
            "create",
            "acme",
            "--limit",
            "writes=100/1s",
            "--limit",
            "reads=1000/1s",
        ],
    );
    assert_eq!(
        owner["limits"],
        serde_json::json!({"reads": "1000/1s", "writes": "100/1s"})
    );
    let updated = json(
        &url,
        &[
            "owners",
            "update",
            "acme",
            "--limit",
            "writes=none",
            "--limit",
            "uploads=1/1m",
        ],
    );
    assert_eq!(
        updated["limits"],
        serde_json::json!({"reads": "1000/1s", "uploads": "1/1m"})
    );
    let renamed = json(&url, &["owners", "update", "acme", "--name", "ACME"]);
    assert_eq!(renamed["limits"], updated["limits"], "no --limit: kept");
    let shown = ok(&url, &["owners", "show", "acme"]);
    assert!(shown.contains("reads: 1000/1s, uploads: 1/1m"), "{shown}");
    assert!(row(&ok(&url, &["owners", "list"]), "acme").contains("reads: 1000/1s, uploads: 1/1m"));
    for args in [
        vec![
            "owners", "update", "acme", "--limit", "a=1/1s", "--limit", "a=none",
        ],
        vec!["owners", "update", "acme", "--limit", "A=1/1s"],
        vec!["owners", "create", "other", "--limit", "a=none"],
    ] {
        assert_eq!(keygate(&url, &args).status.code(), Some(1), "{args:?}");
    }
    assert_eq!(
        json(&url, &["owners", "show", "acme"])["limits"],
        updated["limits"],
        "nothing changed"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// What `--limit`, `keygate limits` and `owners update --limit` write is what a service's
/// `RouteLimit` applies: the key's limit of the name, then none (removed), then its owner's,
/// which the key's `unlimited` does not lift, then none again.
async fn named_limits_reach_the_service(url: &str, verifier: Verifier) {
    let app = Router::new()
        .route(
            "/orders",
            axum::routing::post(|| async { "saved" })
                .route_layer(keygate::RouteLimit::new("writes")),
        )
        .route("/hello", get(|| async { "hello" }))
        .layer(keygate_axum::layer(verifier.clone()));
    let statuses = |key: String, path: &'static str, n: usize| {
        let app = app.clone();
        let verifier = verifier.clone();
        async move {
            // The CLI changed the database from another process: drop the cached copies.
            verifier.invalidate_all();
            let mut statuses = Vec::new();
            for _ in 0..n {
                let request = Request::builder()
                    .method(if path == "/orders" { "POST" } else { "GET" })
                    .uri(path)
                    .header("x-api-key", &key)
                    .body(Body::empty())
                    .unwrap();
                let status = app
                    .clone()
                    .oneshot(request)
                    .await
                    .unwrap_or_else(|e| match e {})
                    .status();
                statuses.push(status.as_u16());
            }
            statuses
        }
    };
    let key = ok(
        url,
        &[
            "create",
            "--name",
            "writer",
            "--owner",
            "acme",
            "--limit",
            "writes=1/1h",
        ],
    )
    .trim()
    .to_owned();
    let id = json_lines(url, &["list", "--search", "writer"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(statuses(key.clone(), "/orders", 2).await, [200, 429]);
    assert_eq!(
        statuses(key.clone(), "/hello", 2).await,
        [200, 200],
        "only the routes naming it"
    );
    ok(url, &["limits", &id, "writes=none"]);
    assert_eq!(statuses(key.clone(), "/orders", 3).await, [200, 200, 200]);
    ok(url, &["owners", "update", "acme", "--limit", "writes=1/1h"]);
    assert_eq!(statuses(key.clone(), "/orders", 2).await, [200, 429]);
    ok(url, &["limits", &id, "writes=unlimited"]);
    assert_eq!(
        statuses(key.clone(), "/orders", 1).await,
        [429],
        "the owner's still applies"
    );
    ok(url, &["owners", "update", "acme", "--limit", "writes=none"]);
    assert_eq!(statuses(key, "/orders", 3).await, [200, 200, 200]);
}

#[tokio::test]
async fn named_limits_reach_the_service_on_sqlite() {
    let (dir, url, store) = migrated_sqlite("named-limits-service").await;
    named_limits_reach_the_service(&url, Verifier::builder(keyring(), store).build()).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn named_limits_reach_the_service_on_postgres() {
    let Ok(base) = std::env::var("KEYGATE_TEST_POSTGRES_URL") else {
        eprintln!(
            "KEYGATE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL named limits test"
        );
        return;
    };
    let db = TempDatabase::create(&base).await;
    ok(&db.url, &["migrate"]);
    let store = keygate_sqlx::PostgresStore::open(&db.url).await.unwrap();
    named_limits_reach_the_service(&db.url, Verifier::builder(keyring(), store).build()).await;
    db.drop_now().await;
}
