//! `keygate policy` and the lifetime policy applied by `create`, `expire` and `rotate`, against
//! a SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::process::{Command, Output};

use serde_json::Value;

const PEPPER: &str = "1:cli-test-pepper-0123456789abcdefghijklmnop";

fn keygate(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .env("KEYGATE_DATABASE_URL", url)
        .env("KEYGATE_PEPPER", PEPPER)
        .env("KEYGATE_PREFIX", "cli_test")
        .env_remove("RUST_LOG")
        .env_remove("KEYGATE_REDIS_URL")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run keygate")
}

fn json(url: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = keygate(url, &all);
    assert!(
        out.status.success(),
        "keygate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The command fails with exit 7 and a message naming `rule`, writing nothing to stdout.
fn refused(url: &str, args: &[&str], rule: &str) {
    let out = keygate(url, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "keygate {args:?}: {stderr}");
    assert!(
        stderr.contains(&format!("rule `{rule}`")) && stderr.contains("nothing was written"),
        "{args:?}: {stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn the_policy_is_set_shown_cleared_and_applied() {
    let dir = common::temp_dir("policy");
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    let empty = json(&url, &["policy", "show"]);
    assert_eq!(
        empty,
        serde_json::json!({"require_expiry": false, "default_lifetime_seconds": null, "max_lifetime_seconds": null, "max_idle_seconds": null})
    );
    let before = json(&url, &["create", "--name", "before"]);
    assert!(before["expires_at"].is_null(), "{before}");

    // An invalid policy is refused (exit 1) and nothing is written.
    let out = keygate(
        &url,
        &[
            "policy",
            "set",
            "--default-lifetime",
            "400d",
            "--max-lifetime",
            "365d",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("default lifetime"));
    assert_eq!(json(&url, &["policy", "show"]), empty);

    // Required, with no default: keys without expiry are refused, as are too-long ones.
    let set = json(
        &url,
        &[
            "policy",
            "set",
            "--require-expiry",
            "--max-lifetime",
            "30d",
            "--max-idle",
            "90d",
        ],
    );
    assert_eq!(set["require_expiry"], true);
    assert_eq!(set["max_lifetime_seconds"], 30 * 86_400);
    assert_eq!(set["max_idle_seconds"], 90 * 86_400);
    let shown = keygate(&url, &["policy", "show"]);
    assert_eq!(
        String::from_utf8_lossy(&shown.stdout).trim(),
        "lifetime policy: require_expiry=true max_lifetime=30 days max_idle=90 days"
    );
    refused(&url, &["create", "--name", "x"], "expiry_required");
    refused(
        &url,
        &["create", "--name", "x", "--expires-in", "31d"],
        "max_lifetime",
    );
    let id = before["id"].as_str().unwrap();
    refused(&url, &["expire", id, "--in", "60d"], "max_lifetime");
    refused(&url, &["expire", id, "--never"], "expiry_required");
    let ok = json(&url, &["create", "--name", "ok", "--expires-in", "7d"]);
    assert!(ok["expires_at"].is_string());
    // A rotation gets the maximum lifetime (there is no default).
    let rotated = json(&url, &["rotate", id, "--grace", "1h"]);
    assert!(rotated["expires_at"].is_string(), "{rotated}");
    let listed = keygate(&url, &["list", "--json"]);
    let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["name"].to_string())
        .collect();
    assert!(!names.iter().any(|n| n.contains("\"x\"")), "{names:?}");

    // A default: keys without expiry get it; `expire --never` too.
    json(&url, &["policy", "set", "--default-lifetime", "90d"]);
    let defaulted = json(&url, &["create", "--name", "defaulted"]);
    assert!(defaulted["expires_at"].is_string(), "{defaulted}");
    let cleared = keygate(&url, &["expire", ok["id"].as_str().unwrap(), "--never"]);
    assert!(cleared.status.success());
    assert!(
        String::from_utf8_lossy(&cleared.stdout).contains("the lifetime policy's default lifetime"),
        "{}",
        String::from_utf8_lossy(&cleared.stdout)
    );

    // Cleared: no rule.
    let cleared = json(&url, &["policy", "clear", "--actor", "ops-lead"]);
    assert_eq!(cleared, empty);
    let free = json(&url, &["create", "--name", "free"]);
    assert!(free["expires_at"].is_null());

    // Each change is one audit event, with no key, its actor and the new policy; the invalid
    // policy and the `show`s are none.
    let out = keygate(&url, &["audit", "--action", "policy_changed", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    events.sort_by_key(|e| e["id"].as_i64());
    let seen: Vec<(&Value, &Value, &Value)> = events
        .iter()
        .map(|e| (&e["key_id"], &e["actor"], &e["detail"]))
        .collect();
    // The CLI's default actor (docs/cli.md).
    let user = std::env::var("KEYGATE_ACTOR")
        .or_else(|_| std::env::var("USER"))
        .map_or(Value::Null, Value::from);
    assert_eq!(
        seen,
        [
            (
                &Value::Null,
                &user,
                &Value::from("require_expiry=true max_lifetime=30 days max_idle=90 days")
            ),
            (
                &Value::Null,
                &user,
                &Value::from("default_lifetime=90 days")
            ),
            (&Value::Null, &Value::from("ops-lead"), &Value::from("none")),
        ],
        "{events:?}"
    );
    // An unknown action is refused, naming the ones there are.
    let out = keygate(&url, &["audit", "--action", "policy"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("policy_changed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}
