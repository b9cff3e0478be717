//! The CLI and environments (issue 17 item 5): in the directory of a service whose keyring has
//! the environments `live` (default) and `test`, `keygate create --environment test` (or
//! `KEYGATE_ENVIRONMENT=test`) mints a test key the service accepts as one; an environment the
//! store does not record is refused (exit 1) with nothing written; `keygate list` shows each
//! key's environment and filters by it; `rotate` keeps a key's environment; `peppers` lists the
//! recorded environments.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::temp_dir;
use keygate::{KeyFormat, Keyring, Peppers, Verifier};
use serde_json::Value;

const KEYGATE_VARS: [&str; 8] = [
    "KEYGATE_DATABASE_URL",
    "KEYGATE_PEPPER",
    "KEYGATE_PREFIX",
    "KEYGATE_ENVIRONMENT",
    "KEYGATE_ACTOR",
    "KEYGATE_REDIS_URL",
    "KEYGATE_REDIS_PREFIX",
    "RUST_LOG",
];

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

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// A development service with environments `live` (`acme_live`, the default) and `test`
/// (`acme_test`) on `dir/keygate.db`, started (so its environments are recorded).
async fn service(dir: &Path) -> Verifier {
    let store = keygate_sqlx::SqliteStore::open(dir.join("keygate.db"))
        .await
        .unwrap();
    let keyring = Keyring::builder()
        .environment("live", KeyFormat::new("acme_live").unwrap())
        .environment("test", KeyFormat::new("acme_test").unwrap())
        .build(Peppers::development())
        .unwrap();
    Verifier::builder(keyring, store).start().await.unwrap()
}

/// The environment the service sees for `key`, or why it refused it.
async fn environment(verifier: &Verifier, key: &str) -> Result<Option<String>, keygate::Reason> {
    verifier.invalidate_all();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", key.parse().unwrap());
    let uri = http::Uri::from_static("/");
    verifier
        .verify_request(&keygate::HttpRequestView::new(&headers, &uri, None))
        .await
        .map(|identity| identity.environment().map(str::to_owned))
        .map_err(|rejection| rejection.reason())
}

#[tokio::test]
async fn create_list_and_rotate_keys_of_an_environment() {
    let dir = temp_dir("environments");
    let service = service(&dir).await;

    let peppers: Value =
        serde_json::from_str(ok(&dir, &["peppers", "--json"], &[]).trim()).unwrap();
    assert_eq!(
        peppers["environments"],
        serde_json::json!({"live": "acme_live", "test": "acme_test"})
    );
    assert!(
        ok(&dir, &["peppers"], &[]).contains("environments: live (acme_live), test (acme_test)")
    );

    let test_key = ok(
        &dir,
        &["create", "--name", "ci", "--environment", "test"],
        &[],
    );
    let test_key = test_key.trim();
    assert!(test_key.starts_with("acme_test_"), "{test_key}");
    assert_eq!(
        environment(&service, test_key).await,
        Ok(Some("test".into()))
    );
    let by_variable = ok(
        &dir,
        &["create", "--name", "ci2"],
        &[("KEYGATE_ENVIRONMENT", "test")],
    );
    assert!(
        by_variable.trim().starts_with("acme_test_"),
        "{by_variable}"
    );
    let live_key = ok(&dir, &["create", "--name", "billing"], &[]);
    let live_key = live_key.trim();
    assert!(live_key.starts_with("acme_live_"), "{live_key}");
    assert_eq!(
        environment(&service, live_key).await,
        Ok(Some("live".into()))
    );

    // An environment the store does not record: exit 1, naming those it does; nothing written.
    let before = ok(&dir, &["list", "--json"], &[]);
    let out = keygate(
        &dir,
        &["create", "--name", "x", "--environment", "staging"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`staging`") && stderr.contains("live, test"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(ok(&dir, &["list", "--json"], &[]), before);

    // `list` names each key's environment, and filters by it.
    let all = json_lines(&ok(&dir, &["list", "--json"], &[]));
    assert_eq!(all.len(), 3);
    let tests = json_lines(&ok(&dir, &["list", "--json", "--environment", "test"], &[]));
    assert_eq!(tests.len(), 2);
    assert!(
        tests
            .iter()
            .all(|k| k["environment"] == "test" && k["prefix"] == "acme_test")
    );
    let lives = json_lines(&ok(&dir, &["list", "--json", "--environment", "live"], &[]));
    assert_eq!(lives.len(), 1);
    assert_eq!(lives[0]["name"], "billing");
    let table = ok(&dir, &["list"], &[]);
    assert!(table.contains("ENVIRONMENT"), "{table}");
    let out = keygate(&dir, &["list", "--environment", "staging"], &[]);
    assert_eq!(out.status.code(), Some(1));

    // `rotate` keeps the environment.
    let id = tests[0]["id"].as_str().unwrap().to_owned();
    let shown: Value =
        serde_json::from_str(ok(&dir, &["show", &id, "--json"], &[]).trim()).unwrap();
    assert_eq!(shown["environment"], "test");
    let rotated = ok(&dir, &["rotate", &id, "--grace", "1h"], &[]);
    assert!(rotated.trim().starts_with("acme_test_"), "{rotated}");
    assert_eq!(
        environment(&service, rotated.trim()).await,
        Ok(Some("test".into()))
    );

    // `scan` finds the keys of every environment the store records.
    let leaked = dir.join("leaked");
    std::fs::create_dir_all(&leaked).unwrap();
    std::fs::write(
        leaked.join("keys.txt"),
        format!("{live_key}\n{}\n", rotated.trim()),
    )
    .unwrap();
    let out = keygate(&dir, &["scan", "leaked", "--json"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let finds = json_lines(&String::from_utf8_lossy(&out.stdout));
    let prefixes: Vec<&str> = finds
        .iter()
        .map(|f| {
            f["key"]
                .as_str()
                .unwrap()
                .split('_')
                .take(2)
                .collect::<Vec<_>>()
        })
        .map(|parts| {
            if parts[1] == "live" {
                "acme_live"
            } else {
                "acme_test"
            }
        })
        .collect();
    assert_eq!(prefixes, ["acme_live", "acme_test"], "{finds:?}");
    assert!(
        finds
            .iter()
            .all(|f| f["match"] == "verified" && f["state"] == "active")
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// On a store without environments, `--environment` is refused (exit 1), nothing written.
#[tokio::test]
async fn an_environment_on_a_store_without_any_is_refused() {
    let dir = temp_dir("no-environments");
    ok(
        &dir,
        &["--development-pepper", "create", "--name", "a"],
        &[("KEYGATE_PREFIX", "acme_live")],
    );
    let before = ok(&dir, &["list", "--json"], &[]);
    let out = keygate(
        &dir,
        &["create", "--name", "b", "--environment", "test"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("records no environments"), "{stderr}");
    assert_eq!(ok(&dir, &["list", "--json"], &[]), before);
    let listed = json_lines(&before);
    assert_eq!(listed[0]["environment"], Value::Null);
    let _ = std::fs::remove_dir_all(dir);
}
