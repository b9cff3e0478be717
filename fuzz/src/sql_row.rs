//! `sql_row`: a stored row's column values into a `KeyRecord`, as both SQL stores decode them.
//!
//! Input: one `column=value` line per column (`id`, `prefix`, `name`, `owner`, `digest` in hex,
//! `pepper_version`, `scopes` and `allowed_ips` as SQLite's JSON arrays, `metadata` JSON,
//! `rotated_from`, the six times in microseconds since the epoch, `rate_limit`, `limits`). A missing
//! nullable column is `NULL`; a missing required one is empty (or 0).
//! Invariants: a row is either decoded faithfully (every field is what its column says, times
//! to the microsecond, before or after 1970) or refused as the store being unavailable (503),
//! never as an unknown key, with a short message; never a panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use keygate::KeyId;
use keygate::rate::RateLimit;
use keygate_sqlx::fuzzing::{RawRecord, parse_json_strings};

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let column = |name: &str| {
        text.split('\n')
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
    };
    let int = |name: &str| column(name).and_then(|v| v.parse::<i64>().ok());
    let id = column("id").unwrap_or("").to_owned();
    let mut refused = Vec::new();
    let mut json =
        |name: &'static str| match parse_json_strings(&id, name, column(name).unwrap_or("[]")) {
            Ok(items) => items,
            Err(error) => {
                refused.push(error);
                Vec::new()
            }
        };
    let scopes = json("scopes");
    let allowed_ips = json("allowed_ips");
    for error in refused {
        assert!(error.is_unavailable(), "{error}");
        assert!(error.to_string().len() <= 400);
    }
    let digest = column("digest").map_or_else(Vec::new, |hex| {
        unhex(hex).unwrap_or_else(|| hex.as_bytes().to_vec())
    });
    let raw = RawRecord {
        id: id.clone(),
        prefix: column("prefix").unwrap_or("").to_owned(),
        name: column("name").unwrap_or("").to_owned(),
        owner: column("owner").map(str::to_owned),
        digest: digest.clone(),
        pepper_version: int("pepper_version").unwrap_or(0),
        scopes: scopes.clone(),
        metadata: column("metadata").unwrap_or("").to_owned(),
        allowed_ips: allowed_ips.clone(),
        rotated_from: column("rotated_from").map(str::to_owned),
        created_at: int("created_at").unwrap_or(0),
        updated_at: int("updated_at").unwrap_or(0),
        expires_at: int("expires_at"),
        disabled_at: int("disabled_at"),
        revoked_at: int("revoked_at"),
        last_used_at: int("last_used_at"),
        rate_limit: column("rate_limit").map(str::to_owned),
        canary: int("canary").is_some_and(|n| n != 0),
        quota: column("quota").map(str::to_owned),
        lineage: column("lineage").map(str::to_owned),
        limits: column("limits").unwrap_or("").to_owned(),
        quota_granted: int("quota_granted").unwrap_or(0),
    };
    let record = match raw.into_record() {
        Ok(record) => record,
        Err(error) => {
            assert!(
                error.is_unavailable(),
                "an unreadable row is not a 503: {error}"
            );
            assert!(error.to_string().len() <= 400);
            return;
        }
    };
    assert_eq!(record.id.as_str(), id);
    assert_eq!(id.parse::<KeyId>(), Ok(record.id));
    assert_eq!(
        Some(record.prefix.as_str()),
        Some(column("prefix").unwrap_or(""))
    );
    assert_eq!(record.name, column("name").unwrap_or(""));
    assert_eq!(record.owner.as_deref(), column("owner"));
    assert_eq!(record.digest.as_bytes().as_slice(), digest.as_slice());
    assert_eq!(
        i64::from(record.pepper_version),
        int("pepper_version").unwrap_or(0)
    );
    let scope_text: Vec<&str> = record.scopes.iter().map(keygate::Scope::as_str).collect();
    assert_eq!(scope_text, scopes);
    let nets: Vec<IpNet> = allowed_ips
        .iter()
        .map(|s| s.parse().unwrap_or_else(|e| panic!("accepted {s:?}: {e}")))
        .collect();
    assert_eq!(record.allowed_ips, nets);
    let metadata: serde_json::Value =
        serde_json::from_str(column("metadata").unwrap_or("")).unwrap();
    assert_eq!(Some(&record.metadata), metadata.as_object());
    assert_eq!(
        record.rotated_from.map(|id| id.to_string()).as_deref(),
        column("rotated_from")
    );
    let limit = column("rate_limit").map(|t| t.parse::<RateLimit>());
    assert_eq!(record.rate_limit.map(Ok), limit);
    // Named limits are read exactly as written, in their canonical form.
    let limits = column("limits")
        .unwrap_or("")
        .parse::<keygate::rate::NamedLimits>();
    assert_eq!(Ok(&record.limits), limits.as_ref());
    assert_eq!(micros(record.created_at), int("created_at").unwrap_or(0));
    assert_eq!(micros(record.updated_at), int("updated_at").unwrap_or(0));
    for (at, name) in [
        (record.expires_at, "expires_at"),
        (record.disabled_at, "disabled_at"),
        (record.revoked_at, "revoked_at"),
        (record.last_used_at, "last_used_at"),
    ] {
        assert_eq!(at.map(micros), int(name), "{name}");
    }
}

/// Signed microseconds since the epoch (every stored time fits: it came from an `i64`).
fn micros(at: SystemTime) -> i64 {
    let signed = |d: Duration, sign: i128| {
        i64::try_from(sign * i128::try_from(d.as_micros()).unwrap_or(i128::MAX)).unwrap()
    };
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => signed(after, 1),
        Err(before) => signed(before.duration(), -1),
    }
}

fn unhex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}
