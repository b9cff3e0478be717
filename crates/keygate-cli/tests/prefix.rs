//! The CLI and the key store's prefix: with no `--prefix` / `KEYGATE_PREFIX`, `create` mints
//! keys with the prefix the store recorded (at a service's first `start()`, or the first
//! `create`), else `kg`; a prefix given that differs from the store's is refused with exit
//! code 6, naming both, with nothing written.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::temp_dir;
use std::path::Path;
use std::process::{Command, Output};

use keygate::store::SettingsError;
use keygate::{KeyFormat, Keyring, Peppers, Verifier};
use serde_json::Value;

/// Every variable the CLI reads, cleared so that the test sees what a newcomer's shell sees.
const KEYGATE_VARS: [&str; 7] = [
    "KEYGATE_DATABASE_URL",
    "KEYGATE_PEPPER",
    "KEYGATE_PREFIX",
    "KEYGATE_ACTOR",
    "KEYGATE_REDIS_URL",
    "KEYGATE_REDIS_PREFIX",
    "RUST_LOG",
];

/// Runs `keygate args` in `dir` with no KEYGATE_* variable but those of `env`, and no flags
/// but `args` (so the store is `./keygate.db`).
fn keygate(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keygate"));
    command
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null());
    for name in KEYGATE_VARS {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.output().expect("run keygate")
}

/// Runs a command that must succeed; returns stdout.
fn ok(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = keygate(dir, args, env);
    assert!(
        out.status.success(),
        "keygate {args:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must be refused by the store's settings (exit 6, nothing printed on
/// stdout, nothing written); returns stderr.
fn refused(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let before = snapshot(dir);
    let out = keygate(dir, args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(6), "keygate {args:?}: {stderr}");
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert!(out.stdout.is_empty(), "printed: {:?}", out.stdout);
    assert_eq!(snapshot(dir), before, "keygate {args:?} wrote something");
    stderr
}

/// The keys and settings of `./keygate.db` in `dir`.
fn snapshot(dir: &Path) -> (String, String) {
    (
        ok(dir, &["list", "--json"], &[]),
        ok(dir, &["peppers", "--json"], &[]),
    )
}

/// The prefix the store in `dir` recorded, as `keygate peppers --json` shows it.
fn recorded_prefix(dir: &Path) -> Value {
    let out = ok(dir, &["peppers", "--json"], &[]);
    let report: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    report["prefix"].clone()
}

/// A development verifier for `prefix` on `dir/keygate.db`, started (so checked and recorded).
async fn start(dir: &Path, prefix: &str) -> Result<Verifier, SettingsError> {
    let store = keygate_sqlx::SqliteStore::open(dir.join("keygate.db"))
        .await
        .unwrap();
    let keyring = Keyring::new(KeyFormat::new(prefix).unwrap(), Peppers::development());
    Verifier::builder(keyring, store).start().await
}

async fn accepts(verifier: &Verifier, key: &str) -> bool {
    verifier.invalidate_all();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", key.parse().unwrap());
    let uri = http::Uri::from_static("/");
    verifier
        .verify_request(&keygate::HttpRequestView::new(&headers, &uri, None))
        .await
        .is_ok()
}

/// Issue 14's acceptance line: in the directory of a service that started a development store
/// with prefix `demo_test`, `keygate create --name t` (no flags, no environment) mints a key the
/// service accepts; another prefix is refused, naming both.
#[tokio::test]
async fn create_in_a_services_directory_uses_the_stores_prefix() {
    let dir = temp_dir("quickstart");
    let service = start(&dir, "demo_test").await.unwrap();
    assert_eq!(recorded_prefix(&dir), "demo_test");

    let key = ok(&dir, &["create", "--name", "t"], &[]);
    let key = key.trim();
    assert!(key.starts_with("demo_test_"), "{key}");
    assert!(accepts(&service, key).await, "the service refused {key}");

    for (args, env) in [
        (vec!["create", "--name", "u", "--prefix", "other"], vec![]),
        (
            vec!["create", "--name", "u"],
            vec![("KEYGATE_PREFIX", "other")],
        ),
    ] {
        let stderr = refused(&dir, &args, &env);
        assert!(
            stderr.contains("`demo_test`") && stderr.contains("`other`"),
            "{stderr}"
        );
    }
    // An empty KEYGATE_PREFIX is none.
    let empty = ok(&dir, &["create", "--name", "e"], &[("KEYGATE_PREFIX", "")]);
    assert!(empty.trim().starts_with("demo_test_"), "{empty}");
    // Given, and the store's: fine.
    let again = ok(
        &dir,
        &["create", "--name", "v", "--prefix", "demo_test"],
        &[],
    );
    assert!(accepts(&service, again.trim()).await);
    // A service configured with another prefix does not start on this store.
    match start(&dir, "kg").await {
        Err(SettingsError::WrongPrefix { recorded, given }) => {
            assert_eq!((recorded.as_str(), given.as_str()), ("demo_test", "kg"));
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("started with another prefix"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// On a store with no prefix recorded, the first `create` records the one it used (the one
/// given, else `kg`); later commands and services follow it.
#[tokio::test]
async fn the_first_create_records_its_prefix() {
    let given = temp_dir("given");
    ok(
        &given,
        &["--development-pepper", "create", "--name", "a"],
        &[("KEYGATE_PREFIX", "acme_test")],
    );
    assert_eq!(recorded_prefix(&given), "acme_test");
    let key = ok(&given, &["create", "--name", "b"], &[]);
    assert!(key.trim().starts_with("acme_test_"), "{key}");
    let service = start(&given, "acme_test").await.unwrap();
    assert!(accepts(&service, key.trim()).await);
    let stderr = refused(&given, &["create", "--name", "c", "--prefix", "kg"], &[]);
    assert!(
        stderr.contains("`acme_test`") && stderr.contains("`kg`"),
        "{stderr}"
    );
    let (text, _) = (ok(&given, &["peppers"], &[]), ());
    assert!(text.contains("key prefix: acme_test"), "{text}");

    let neither = temp_dir("default");
    ok(&neither, &["migrate"], &[]);
    assert_eq!(recorded_prefix(&neither), Value::Null);
    let key = ok(
        &neither,
        &["--development-pepper", "create", "--name", "a"],
        &[],
    );
    assert!(key.trim().starts_with("kg_"), "{key}");
    assert_eq!(recorded_prefix(&neither), "kg");
    assert!(start(&neither, "demo_test").await.is_err());
    for dir in [given, neither] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
