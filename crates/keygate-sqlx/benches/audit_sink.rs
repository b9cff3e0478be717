//! The SQLite audit sink's cost per event, split by thread: what the writing task spends
//! (building statements and binds) and what sqlx's connection thread spends (SQLite itself),
//! user and system CPU.
//!
//! ```text
//! cargo bench -p keygate-sqlx --bench audit_sink -- [--events N] [--batch N] [--keys N]
//! ```
//!
//! Writes `--events` (200 000) request events, allowed, cycling through `--keys` (1 000) key ids
//! as the load benchmark's client does, in batches of `--batch` (16 384, the verifier's default)
//! through [`SqlAuditSink::write`](keygate_sqlx::SqlAuditSink) into a fresh SQLite file opened
//! with [`SqliteStore::open`] (WAL, `synchronous=NORMAL`), on a current-thread runtime, then
//! flushes. Per-thread CPU from `/proc/self/task/*/stat` (clock ticks).

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic is the failure report

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use keygate::KeyId;
use keygate::audit::{AuditEvent, AuditSink, Outcome};
use keygate_sqlx::SqliteStore;

struct Options {
    events: usize,
    batch: usize,
    keys: usize,
}

fn options() -> Options {
    let mut options = Options {
        events: 200_000,
        batch: 16_384,
        keys: 1_000,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--events" => options.events = value(),
            "--batch" => options.batch = value().max(1),
            "--keys" => options.keys = value().max(1),
            // cargo bench passes `--bench`; criterion-style filters are not used here.
            _ => {}
        }
    }
    options
}

/// A well-formed key id for `n`: twelve base-62 symbols.
fn key_id(mut n: usize) -> KeyId {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut id = [b'A'; 12];
    for slot in id.iter_mut().rev().take(6) {
        *slot = ALPHABET[n % 62];
        n /= 62;
    }
    String::from_utf8_lossy(&id).parse().unwrap()
}

/// CPU ticks (user, system) per thread name.
fn thread_ticks() -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state …`: comm may hold spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let user: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
        let system: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
        // sqlx names its threads `sqlx-sqlite-worker-N`; one group per kind.
        let group = if name.starts_with("sqlx-sqlite") {
            "sqlx-sqlite-worker".to_owned()
        } else {
            name
        };
        let entry = out.entry(group).or_insert((0, 0));
        entry.0 += user;
        entry.1 += system;
    }
    out
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let keys: Vec<KeyId> = (0..options.keys).map(key_id).collect();
    let started_at = SystemTime::now();
    let events: Vec<AuditEvent> = (0..options.events)
        .map(|i| {
            let mut e = AuditEvent::request(
                started_at + Duration::from_micros(i as u64 * 20),
                Outcome::Allowed,
            )
            .key_id(Some(keys[i % keys.len()]));
            e.method = Some(http::Method::GET);
            e.route = Some(Arc::from("/hello"));
            e.client_ip = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
            e.status = Some(200);
            e.latency = Some(Duration::from_micros(40 + (i % 50) as u64));
            e
        })
        .collect();
    runtime.block_on(async {
        let store = SqliteStore::open(&path).await.unwrap();
        let sink = store.audit_sink();
        // One batch first, so the connection and its thread exist before the count starts.
        sink.write(&events[..1]).await.unwrap();
        let before = thread_ticks();
        let started = Instant::now();
        for batch in events[1..].chunks(options.batch) {
            sink.write(batch).await.unwrap();
        }
        sink.flush().await.unwrap();
        let wall = started.elapsed();
        let after = thread_ticks();
        let n = (options.events - 1) as f64;
        let tick_us = 1e6 / 100.0;
        println!(
            "{} events in batches of {}, {} keys: {:.0} events/s, {:.2} µs/event wall",
            options.events - 1,
            options.batch,
            options.keys,
            n / wall.as_secs_f64(),
            wall.as_secs_f64() * 1e6 / n
        );
        for (name, (user, system)) in &after {
            let (u0, s0) = before.get(name).copied().unwrap_or((0, 0));
            let (user, system) = (user - u0, system - s0);
            if user + system == 0 {
                continue;
            }
            println!(
                "  {name:<20} user {:.2} µs/event  sys {:.2} µs/event",
                user as f64 * tick_us / n,
                system as f64 * tick_us / n
            );
        }
        let rows: i64 = keygate_sqlx::sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM keygate_audit_events) \
                 + (SELECT coalesce(sum(count), 0) FROM keygate_audit_blocks)",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        let counted: Option<i64> =
            keygate_sqlx::sqlx::query_scalar("SELECT sum(allowed) FROM keygate_usage")
                .fetch_one(store.pool())
                .await
                .unwrap();
        println!(
            "  rows {rows}, usage total {}, file {} MB",
            counted.unwrap_or(0),
            std::fs::metadata(&path).map_or(0, |m| m.len()) / 1_000_000
        );
    });
}
