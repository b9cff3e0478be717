//! `--redis-url`: every change the CLI makes is published on the services' invalidation
//! channel, against the real Redis (`KEYGATE_TEST_REDIS_URL`; skipped when unset, failing when
//! set and Redis does not answer). A change that cannot be published still stands (exit 0 and
//! a warning).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use keygate::{Invalidated, Invalidation, KeyId, Subscription};
use keygate_redis::RedisInvalidation;
use serde_json::Value;

const PEPPER: &str = "1:cli-test-pepper-0123456789abcdefghijklmnop";

fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("keygate-cli-{tag}-{}-{nanos}", std::process::id())
}

fn sqlite_url(tag: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(unique(tag));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    (dir, url)
}

/// Runs `keygate` against `database` and Redis at `redis_url` with `prefix`.
fn keygate(database: &str, redis_url: &str, prefix: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .args(["--redis-url", redis_url, "--redis-prefix", prefix])
        .env("KEYGATE_DATABASE_URL", database)
        .env("KEYGATE_PEPPER", PEPPER)
        .env("KEYGATE_PREFIX", "cli_test")
        .env_remove("RUST_LOG")
        .env_remove("KEYGATE_REDIS_URL")
        .env_remove("KEYGATE_REDIS_PREFIX")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run keygate")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a command that must succeed without a warning; its JSON output.
fn json(database: &str, redis_url: &str, prefix: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = keygate(database, redis_url, prefix, &all);
    assert!(
        out.status.success(),
        "keygate {args:?} failed ({:?}): {}",
        out.status.code(),
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("warning"),
        "keygate {args:?} warned: {}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("json of {args:?}: {e}"))
}

fn id_of(value: &Value) -> KeyId {
    value["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no id in {value}"))
}

async fn receive(subscription: &mut Box<dyn Subscription>) -> Invalidated {
    match tokio::time::timeout(Duration::from_secs(5), subscription.next()).await {
        Ok(Ok(received)) => received,
        Ok(Err(e)) => panic!("subscription failed: {e}"),
        Err(_) => panic!("nothing published within 5 s"),
    }
}

/// `keygate quota ID --redis-meter` reads the balance the services' Redis quota meter keeps
/// (under `--redis-prefix`), where the store has no counter saved.
#[tokio::test]
async fn the_balance_is_read_from_the_services_redis_meter() {
    use keygate::quota::{QuotaLine, QuotaMeter as _, QuotaSubject};
    let Ok(redis_url) = std::env::var("KEYGATE_TEST_REDIS_URL") else {
        eprintln!("KEYGATE_TEST_REDIS_URL is not set: skipping the CLI's Redis meter test");
        return;
    };
    let prefix = unique("meter");
    let meter = keygate_redis::RedisQuotaMeter::builder(redis_url.as_str())
        .prefix(&prefix)
        .build()
        .await
        .expect("a Redis URL");
    let (dir, db) = sqlite_url("meter");
    let run = |args: &[&str]| json(&db, &redis_url, &prefix, args);
    let id = id_of(&run(&[
        "create",
        "--name",
        "metered",
        "--quota",
        "credits 5",
    ]));
    let line = QuotaLine::new(QuotaSubject::Key(id), "credits 5".parse().unwrap());
    let spent = meter
        .charge(&[line], 3, SystemTime::now())
        .await
        .expect("Redis answers");
    assert!(spent.allowed);
    let text = id.to_string();
    let shown = run(&["quota", &text, "--redis-meter"]);
    assert_eq!(shown["source"], "redis");
    assert_eq!(shown["key"]["remaining"], 2, "{shown}");
    // The store holds no counter: the services count in Redis.
    let stored = run(&["quota", &text]);
    assert_eq!(stored["key"]["remaining"], 5, "{stored}");
    let said = keygate(&db, &redis_url, &prefix, &["quota", &text, "--redis-meter"]);
    let said = String::from_utf8_lossy(&said.stdout);
    assert!(said.contains("credits 5: 2 left, never refilled"), "{said}");
    assert!(said.contains("Redis quota meter"), "{said}");

    // An owner's shared balance likewise (`owners quota ID --redis-meter`), top-ups counted.
    run(&["owners", "create", "acme", "--quota", "credits 10"]);
    run(&["owners", "quota", "acme", "--add-credits", "5"]);
    let owner = QuotaLine::new(
        QuotaSubject::Owner(keygate::owner::OwnerTag::of("acme")),
        "credits 10".parse().unwrap(),
    )
    .granted(5);
    let spent = meter
        .charge(&[owner], 4, SystemTime::now())
        .await
        .expect("Redis answers");
    assert!(spent.allowed);
    let shown = run(&["owners", "quota", "acme", "--redis-meter"]);
    assert_eq!(shown["source"], "redis");
    assert_eq!(shown["quota"]["granted"], 5, "{shown}");
    assert_eq!(shown["quota"]["remaining"], 11, "{shown}");
    let stored = run(&["owners", "quota", "acme"]);
    assert_eq!(stored["quota"]["remaining"], 15, "{stored}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn every_change_is_published_to_redis() {
    let Ok(redis_url) = std::env::var("KEYGATE_TEST_REDIS_URL") else {
        eprintln!("KEYGATE_TEST_REDIS_URL is not set: skipping the CLI's Redis publishing test");
        return;
    };
    let prefix = unique("publish");
    let channel = match RedisInvalidation::builder(&redis_url)
        .prefix(&prefix)
        .build()
        .await
    {
        Ok(channel) => channel,
        Err(e) => panic!("KEYGATE_TEST_REDIS_URL is not a Redis URL: {e}"),
    };
    let mut subscription = channel.subscribe().await.expect("subscribe");
    let (dir, db) = sqlite_url("publish");
    let run = |args: &[&str]| json(&db, &redis_url, &prefix, args);

    let id = id_of(&run(&["create", "--name", "published"]));
    assert_eq!(receive(&mut subscription).await, Invalidated::Key(id));
    let text = id.to_string();
    for args in [
        vec!["rename", &text, "renamed"],
        vec!["scopes", &text, "--add", "orders:read"],
        vec!["expire", &text, "--in", "7d"],
        vec!["limit", &text, "--rate", "5/1s"],
        vec!["limits", &text, "writes=5/1s"],
        vec!["limits", &text, "--clear"],
        vec!["disable", &text],
        vec!["enable", &text],
    ] {
        run(&args);
        assert_eq!(
            receive(&mut subscription).await,
            Invalidated::Key(id),
            "keygate {args:?}"
        );
    }
    let rotated = run(&["rotate", &text, "--grace", "1h"]);
    let new_id = id_of(&rotated);
    assert_eq!(receive(&mut subscription).await, Invalidated::Key(id));
    assert_eq!(receive(&mut subscription).await, Invalidated::Key(new_id));
    run(&["revoke", &text]);
    assert_eq!(receive(&mut subscription).await, Invalidated::Key(id));
    run(&["delete", new_id.as_str(), "--yes"]);
    assert_eq!(receive(&mut subscription).await, Invalidated::Key(new_id));

    // Reading changes nothing and publishes nothing.
    run(&["show", &text]);
    let quiet = tokio::time::timeout(Duration::from_millis(300), subscription.next()).await;
    assert!(quiet.is_err(), "show published {quiet:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_unreachable_redis_leaves_the_change_made_with_a_warning() {
    let (dir, db) = sqlite_url("unreachable");
    // Nothing listens on port 1: the connection is refused at once.
    let dead = "redis://127.0.0.1:1";
    let out = keygate(&db, dead, "keygate", &["create", "--name", "x", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    assert!(
        stderr(&out).contains("warning: the change was made") && stderr(&out).contains("cache TTL"),
        "{}",
        stderr(&out)
    );

    let out = keygate(&db, dead, "keygate", &["revoke", &id, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = keygate(&db, dead, "keygate", &["show", &id, "--json"]);
    assert!(shown.status.success());
    assert!(
        !stderr(&shown).contains("warning"),
        "reading publishes nothing"
    );
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["state"], "revoked", "the revoke stands: {shown}");
    // A balance read from an unreachable Redis meter is unavailable (exit 3), not a guess.
    let out = keygate(
        &db,
        dead,
        "keygate",
        &[
            "create",
            "--name",
            "metered",
            "--quota",
            "credits 5",
            "--json",
        ],
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let metered = created["id"].as_str().unwrap_or_default().to_owned();
    let out = keygate(&db, dead, "keygate", &["quota", &metered, "--redis-meter"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("unavailable"), "{}", stderr(&out));

    // A malformed URL is refused before anything changes (and is not echoed).
    let out = keygate(
        &db,
        "http://user:hunter2@example",
        "keygate",
        &["disable", &id],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!stderr(&out).contains("hunter2"));
    let _ = std::fs::remove_dir_all(dir);
}
