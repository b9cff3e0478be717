//! The CLI and peppers: never the development pepper as a fallback; a wrong pepper, or none on
//! a store that is not a development store (or on no store yet), is refused with exit code 6
//! and nothing written; on a development store the development pepper is used, with a note;
//! `keygate peppers` shows keys per version and the recorded fingerprints.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::temp_dir;
use std::path::Path;
use std::process::{Command, Output};
use std::time::SystemTime;

use keygate::{KeyFormat, Keyring, Peppers, Verifier};
use serde_json::Value;

const PEPPER_A: &str = "1:cli-pepper-test-a-0123456789abcdefghijklmnop";
const PEPPER_B: &str = "1:cli-pepper-test-b-0123456789abcdefghijklmnop";
const ROTATED: &str =
    "2:cli-pepper-test-c-0123456789abcdefghijklmnop,1:cli-pepper-test-a-0123456789abcdefghijklmnop";
const PREFIX: &str = "pep_cli";

/// Runs `keygate` against the SQLite file `db`, with `pepper` as KEYGATE_PEPPER (or none).
fn keygate(db: &Path, pepper: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keygate"));
    command
        .args(args)
        .env("KEYGATE_DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("KEYGATE_PREFIX", PREFIX)
        .env_remove("KEYGATE_PEPPER")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null());
    if let Some(pepper) = pepper {
        command.env("KEYGATE_PEPPER", pepper);
    }
    command.output().expect("run keygate")
}

fn ok(db: &Path, pepper: Option<&str>, args: &[&str]) -> (String, String) {
    let out = keygate(db, pepper, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "keygate {args:?} failed ({:?}): {stderr}",
        out.status.code()
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// Runs a command that must be refused for its pepper: exit 6; returns stderr.
fn refused(db: &Path, pepper: Option<&str>, args: &[&str]) -> String {
    let out = keygate(db, pepper, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(6), "keygate {args:?}: {stderr}");
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert!(out.stdout.is_empty(), "printed: {:?}", out.stdout);
    stderr
}

/// Keys and settings of the store, to show that a refusal wrote nothing.
fn snapshot(db: &Path) -> (String, String) {
    let (keys, _) = ok(db, None, &["list", "--json"]);
    let (peppers, _) = ok(db, None, &["peppers", "--json"]);
    (keys, peppers)
}

fn peppers_json(db: &Path, pepper: Option<&str>) -> Value {
    let (out, _) = ok(db, pepper, &["peppers", "--json"]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn no_pepper_and_no_store_creates_nothing() {
    let dir = temp_dir("nostore");
    let db = dir.join("keys.db");
    let stderr = refused(&db, None, &["create", "--name", "k"]);
    assert!(
        stderr.contains("KEYGATE_PEPPER") && stderr.contains("--development-pepper"),
        "{stderr}"
    );
    assert!(!db.exists(), "a store was created");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn no_pepper_on_a_real_store_and_a_wrong_pepper_are_refused() {
    let dir = temp_dir("real");
    let db = dir.join("keys.db");
    ok(&db, Some(PEPPER_A), &["create", "--name", "first"]);
    // An empty store that exists is no development store either.
    let empty = dir.join("empty.db");
    ok(&empty, None, &["migrate"]);
    refused(&empty, None, &["create", "--name", "k"]);

    let before = snapshot(&db);
    let stderr = refused(&db, None, &["create", "--name", "k"]);
    assert!(stderr.contains("not a development store"), "{stderr}");
    let stderr = refused(&db, Some(PEPPER_B), &["create", "--name", "k"]);
    assert!(stderr.contains("pepper version 1"), "{stderr}");
    assert!(!stderr.contains("cli-pepper-test"), "a pepper in: {stderr}");
    refused(&db, Some("development"), &["create", "--name", "k"]);
    refused(
        &db,
        None,
        &["--development-pepper", "create", "--name", "k"],
    );
    let id =
        serde_json::from_str::<Value>(before.0.lines().next().unwrap_or_default()).unwrap()["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
    refused(&db, Some(PEPPER_B), &["rotate", &id]);
    refused(&db, None, &["rotate", &id]);
    assert_eq!(snapshot(&db), before, "a refusal wrote something");

    // Commands that mint nothing need no pepper.
    ok(&db, None, &["revoke", &id]);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_development_store_needs_no_pepper_and_refuses_real_ones() {
    let dir = temp_dir("dev");
    let db = dir.join("keys.db");
    let (key, stderr) = ok(
        &db,
        None,
        &["--development-pepper", "create", "--name", "demo"],
    );
    // Said once, not also by the library's own warning.
    assert_eq!(stderr.matches("development pepper").count(), 1, "{stderr}");
    let (second, stderr) = ok(&db, None, &["create", "--name", "again"]);
    assert!(
        stderr.contains("note: this key store is a development store"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("development pepper").count(), 1, "{stderr}");
    let before = snapshot(&db);
    let stderr = refused(&db, Some(PEPPER_A), &["create", "--name", "real"]);
    assert!(stderr.contains("development store"), "{stderr}");
    assert_eq!(snapshot(&db), before);
    let report = peppers_json(&db, None);
    assert_eq!(report["development_store"], true, "{report}");
    assert_eq!(report["versions"][0]["version"], 0, "{report}");
    assert_eq!(report["versions"][0]["keys"], 2, "{report}");

    // A service on the development pepper accepts both keys; one with a real pepper refuses
    // to start.
    let store = keygate_sqlx::SqliteStore::open(&db).await.unwrap();
    let format = KeyFormat::new(PREFIX).unwrap();
    let real = Peppers::parse(PEPPER_A).unwrap();
    assert!(
        Verifier::builder(Keyring::new(format.clone(), real), store.clone())
            .start()
            .await
            .is_err()
    );
    let verifier = Verifier::builder(Keyring::new(format, Peppers::development()), store)
        .start()
        .await
        .unwrap();
    for key in [key.trim(), second.trim()] {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-api-key", key.parse().unwrap());
        let uri = http::Uri::from_static("/");
        verifier
            .verify_request(&keygate::HttpRequestView::new(&headers, &uri, None))
            .await
            .unwrap();
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn peppers_shows_keys_per_version_through_a_rotation() {
    let dir = temp_dir("report");
    let db = dir.join("keys.db");
    let (old, _) = ok(&db, Some(PEPPER_A), &["create", "--name", "old"]);
    ok(&db, Some(PEPPER_A), &["create", "--name", "stays"]);
    let (report, _) = ok(&db, None, &["peppers"]);
    assert!(report.contains("VERSION"), "{report}");
    assert!(report.contains("development store: no"), "{report}");

    // v2 becomes current: the CLI mints under it and records its fingerprint.
    ok(&db, Some(ROTATED), &["create", "--name", "new"]);
    let report = peppers_json(&db, Some(ROTATED));
    let versions = report["versions"].as_array().cloned().unwrap_or_default();
    let by_version = |v: u64| {
        versions
            .iter()
            .find(|r| r["version"] == v)
            .cloned()
            .unwrap_or_else(|| panic!("no version {v}: {report}"))
    };
    assert_eq!(by_version(2)["keys"], 1);
    assert_eq!(by_version(2)["current"], true);
    assert_eq!(by_version(2)["configured"], "matches");
    assert_eq!(by_version(1)["keys"], 2);
    assert_eq!(by_version(1)["configured"], "matches");
    let fingerprint = by_version(1)["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(fingerprint.len(), 16, "{report}");
    let wrong = peppers_json(&db, Some(PEPPER_B));
    assert_eq!(wrong["versions"][1]["configured"], "DIFFERS", "{wrong}");

    // A service with both peppers verifies the old key and moves it to v2.
    let store = keygate_sqlx::SqliteStore::open(&db).await.unwrap();
    let keyring = Keyring::new(
        KeyFormat::new(PREFIX).unwrap(),
        Peppers::parse(ROTATED).unwrap(),
    );
    let verifier = Verifier::builder(keyring, store).start().await.unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", old.trim().parse().unwrap());
    let uri = http::Uri::from_static("/");
    verifier
        .verify_request(&keygate::HttpRequestView::new(&headers, &uri, None))
        .await
        .unwrap();
    verifier.flush_last_used().await.unwrap();
    let report = peppers_json(&db, Some(ROTATED));
    assert_eq!(report["versions"][0]["version"], 2, "{report}");
    assert_eq!(report["versions"][0]["keys"], 2, "{report}");
    assert_eq!(report["versions"][1]["keys"], 1, "{report}");
    let (text, _) = ok(&db, Some(ROTATED), &["peppers"]);
    assert!(text.contains("2 (current)"), "{text}");
    assert!(!text.contains("can be retired"), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The same refusals on PostgreSQL: without a pepper, a database without keygate's tables is no
/// store yet, and none is created; a wrong pepper is refused on a real store.
#[tokio::test]
async fn postgres_no_store_yet_and_wrong_pepper() {
    use keygate_sqlx::sqlx::{self, AssertSqlSafe};
    let Ok(base) = std::env::var("KEYGATE_TEST_POSTGRES_URL") else {
        eprintln!("KEYGATE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL pepper test");
        return;
    };
    let admin = sqlx::PgPool::connect(&base).await.unwrap_or_else(|e| {
        panic!("KEYGATE_TEST_POSTGRES_URL is set but PostgreSQL is unreachable: {e}")
    });
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let name = format!("keygate_cli_pep_{}_{nanos}", std::process::id());
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create database");
    let (root, _) = base.rsplit_once('/').unwrap_or((&base, ""));
    let url = format!("{root}/{name}");
    let run = |pepper: Option<&str>, args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keygate"));
        command
            .args(args)
            .env("KEYGATE_DATABASE_URL", &url)
            .env("KEYGATE_PREFIX", PREFIX)
            .env_remove("KEYGATE_PEPPER")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null());
        if let Some(pepper) = pepper {
            command.env("KEYGATE_PEPPER", pepper);
        }
        command.output().expect("run keygate")
    };
    let tables = || async {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let found: bool = sqlx::query_scalar("SELECT to_regclass('keygate_keys') IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        found
    };

    let out = run(None, &["create", "--name", "k"]);
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!tables().await, "a store was created");
    let out = run(Some(PEPPER_A), &["create", "--name", "k"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(Some(PEPPER_B), &["create", "--name", "k2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("pepper version 1"), "{stderr}");
    let out = run(None, &["create", "--name", "k3"]);
    assert_eq!(out.status.code(), Some(6));
    let out = run(None, &["list", "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);

    let _ = sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await;
}
