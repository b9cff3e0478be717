//! The store audit sink (keygate-sqlx's `SqlAuditSink`) on SQLite and PostgreSQL: every field
//! round trips, filters and order, usage counts per key per UTC day (kept in memory until a
//! flush, exact across failed writes and flushes), retention pruning, a corrupt row is
//! `Unavailable` (not a panic) while a newer keygate's action and reason names are kept, a stalled database never blocks requests, with every lost
//! event counted, 10⁵ forged ids add a handful of rows, and a batch far larger than one
//! statement's bind limit is every event a row.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keygate::audit::{Action, AuditEvent, AuditSink, Folded, Outcome};
use keygate::clock::ManualClock;
use keygate::gate::{Admission, Gate};
use keygate::{HttpRequestView, KeyAdmin, KeyId, KeyStore, NewKey, Reason, StoreError, Verifier};
use keygate_sqlx::SqlAuditSink;
use keygate_sqlx::audit::{EventQuery, MAX_EVENTS, UsageDay};
use keygate_sqlx::sqlx;
use keygate_tests::stores::{self, sqlite_path};
use keygate_tests::{PREFIX, axum_app, epoch, forge, keyring, send_bearer};

const DAY: Duration = Duration::from_secs(86_400);

fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    // The error's Display, which is what a store error says to an operator.
    result.unwrap_or_else(|e| panic!("{e}"))
}

fn id(text: &str) -> KeyId {
    ok(text.parse())
}

/// A request event with every field set.
fn full_request(at: SystemTime, key: KeyId) -> AuditEvent {
    let mut e = AuditEvent::request(at, Outcome::Denied)
        .key_id(Some(key))
        .reason(Some(Reason::InsufficientScope));
    e.method = Some(http::Method::PATCH);
    e.route = Some(Arc::from("/orders/{id}"));
    e.client_ip = Some(ok("2001:db8::7".parse::<IpAddr>()));
    e.status = Some(403);
    e.latency = Some(Duration::from_micros(1_234));
    e.request_id = Some(Arc::from("req-\u{e9}-1"));
    e
}

fn request(at: SystemTime, key: Option<KeyId>, outcome: Outcome) -> AuditEvent {
    let reason = (outcome == Outcome::Denied).then_some(Reason::WrongSecret);
    AuditEvent::request(at, outcome).key_id(key).reason(reason)
}

async fn round_trip(name: &str, sink: SqlAuditSink) {
    let key = id("AAAAAAAAAAAA");
    let other = id("BBBBBBBBBBBB");
    let t0 = epoch();
    let lifecycle = AuditEvent::lifecycle(t0 + Duration::from_micros(2), Action::Rotated, key)
        .actor(Some(Arc::from("alice@ops")))
        .detail(format!("new key {other}"));
    let anonymous = AuditEvent::request(t0 + Duration::from_micros(3), Outcome::Denied)
        .reason(Some(Reason::MissingCredentials));
    let allowed = request(t0 + Duration::from_secs(60), Some(other), Outcome::Allowed);
    let owner_changed = AuditEvent::owner_change(
        t0 + Duration::from_micros(4),
        Action::OwnerChanged,
        "team-x",
    )
    .actor(Some(Arc::from("alice@ops")))
    .detail("rate limit 10/1m");
    let written = vec![
        full_request(t0 + Duration::from_micros(1), key),
        lifecycle,
        anonymous,
        allowed,
        owner_changed,
    ];
    ok(sink.write(&written).await);

    let all = ok(sink
        .events(&EventQuery {
            oldest_first: true,
            ..EventQuery::default()
        })
        .await);
    let events: Vec<_> = all.iter().map(|s| s.event.clone()).collect();
    assert_eq!(events, written, "{name}: every field round trips");
    assert!(
        all.windows(2).all(|w| w[0].id < w[1].id),
        "{name}: ids grow"
    );

    let newest = ok(sink.events(&EventQuery::default()).await);
    assert_eq!(newest.first().map(|s| s.id), all.last().map(|s| s.id));

    let query = |q: EventQuery| {
        let sink = sink.clone();
        async move {
            ok(sink.events(&q).await)
                .into_iter()
                .map(|s| s.event)
                .collect::<Vec<_>>()
        }
    };
    let of_key = query(EventQuery {
        key_id: Some(key),
        oldest_first: true,
        ..EventQuery::default()
    })
    .await;
    assert_eq!(of_key, written[..2], "{name}: by key");
    let denied = query(EventQuery {
        outcome: Some(Outcome::Denied),
        oldest_first: true,
        ..EventQuery::default()
    })
    .await;
    assert_eq!(denied, [written[0].clone(), written[2].clone()], "{name}");
    let missing = query(EventQuery {
        reason: Some(Reason::MissingCredentials),
        ..EventQuery::default()
    })
    .await;
    assert_eq!(missing, [written[2].clone()], "{name}: by reason");
    let rotated = query(EventQuery {
        action: Some(Action::Rotated),
        ..EventQuery::default()
    })
    .await;
    assert_eq!(rotated, [written[1].clone()], "{name}: by action");
    // An owner's roll-up finds the owner's own events, though it has no key.
    let of_owner = ok(sink.owner_events(&EventQuery::default(), "team-x").await);
    assert_eq!(
        of_owner.into_iter().map(|s| s.event).collect::<Vec<_>>(),
        [written[4].clone()],
        "{name}: by owner"
    );
    assert!(
        ok(sink.owner_events(&EventQuery::default(), "team-y").await).is_empty(),
        "{name}: another owner's"
    );
    let since = query(EventQuery {
        since: Some(t0 + Duration::from_secs(1)),
        ..EventQuery::default()
    })
    .await;
    assert_eq!(since, [written[3].clone()], "{name}: since");
    let after = ok(sink
        .events(&EventQuery {
            after_id: Some(all[1].id),
            oldest_first: true,
            limit: 1,
            ..EventQuery::default()
        })
        .await);
    assert_eq!(after.len(), 1, "{name}: limit");
    assert_eq!(after[0].id, all[2].id, "{name}: after id, oldest first");
    // Paging back, newest first: the page before the newest two.
    let before = ok(sink
        .events(&EventQuery {
            before_id: Some(all[2].id),
            limit: 1,
            ..EventQuery::default()
        })
        .await);
    assert_eq!(
        before.iter().map(|s| s.id).collect::<Vec<_>>(),
        [all[1].id],
        "{name}: before id, newest first"
    );
}

#[tokio::test]
async fn every_field_round_trips_and_every_filter_applies() {
    let f = stores::sqlite().await;
    round_trip(f.name, f.store.audit_sink()).await;
    if let Some(f) = stores::postgres().await {
        round_trip(f.name, f.store.audit_sink()).await;
    }
}

async fn usage_counts(name: &str, sink: SqlAuditSink) {
    let (a, b) = (id("AAAAAAAAAAAA"), id("BBBBBBBBBBBB"));
    // Day boundaries are UTC: epoch() is 2027-01-15T08:00:00Z.
    let day0 = SystemTime::UNIX_EPOCH + DAY * 20_833;
    let day1 = day0 + DAY;
    let first = vec![
        request(day0, Some(a), Outcome::Allowed),
        request(
            day0 + DAY - Duration::from_micros(1),
            Some(a),
            Outcome::Allowed,
        ),
        request(day0, Some(a), Outcome::Denied),
        request(day1, Some(a), Outcome::Allowed),
        request(day0, Some(b), Outcome::Denied),
        // Neither counts: no key, and a lifecycle event.
        request(day0, None, Outcome::Denied),
        AuditEvent::lifecycle(day0, Action::Created, a),
    ];
    ok(sink.write(&first).await);
    // A second batch adds to the same rows.
    ok(sink
        .write(&[
            request(day0, Some(a), Outcome::Allowed),
            request(day1, Some(b), Outcome::Denied),
        ])
        .await);
    // Counts are kept in memory until the sink is flushed (the verifier does so every second).
    assert!(ok(sink.usage(None, day0).await).is_empty(), "{name}");
    ok(sink.flush().await);
    let got = ok(sink.usage(None, day0).await);
    let row = |key, day, allowed, denied| UsageDay {
        key_id: key,
        day,
        allowed,
        denied,
    };
    assert_eq!(
        got,
        [
            row(a, day0, 3, 1),
            row(a, day1, 1, 0),
            row(b, day0, 0, 1),
            row(b, day1, 0, 1)
        ],
        "{name}"
    );
    assert_eq!(
        ok(sink.usage(Some(&b), day1 + Duration::from_secs(5)).await),
        [row(b, day1, 0, 1)],
        "{name}: one key, from a day on"
    );
}

#[tokio::test]
async fn usage_is_counted_per_key_per_utc_day_across_batches() {
    let f = stores::sqlite().await;
    usage_counts(f.name, f.store.audit_sink()).await;
    if let Some(f) = stores::postgres().await {
        usage_counts(f.name, f.store.audit_sink()).await;
    }
}

/// A key never changes owner, and deleting it keeps the owner in its tombstone: its events
/// (rows, and on SQLite blocks) and usage stay in its owner's roll-up, and only in its owner's.
async fn deleted_keys_roll_up(name: &str, admin: &keygate::Admin, sink: SqlAuditSink) {
    let mut ids = Vec::new();
    for owner in ["acme", "acme", "globex"] {
        ids.push(
            ok(admin.create_key(NewKey::new("k").owner(owner)).await)
                .record
                .id,
        );
    }
    let (a1, a2, g) = (ids[0], ids[1], ids[2]);
    let day0 = SystemTime::UNIX_EPOCH + DAY * 20_833;
    let second = Duration::from_secs(1);
    let written = vec![
        request(day0, Some(a1), Outcome::Allowed),
        request(day0 + second, Some(a2), Outcome::Allowed),
        request(day0 + second * 2, Some(g), Outcome::Denied),
        request(day0 + second * 3, Some(a2), Outcome::Denied),
        AuditEvent::lifecycle(day0 + second * 4, Action::Disabled, a2),
    ];
    ok(sink.write(&written).await);
    ok(sink.flush().await);
    let oldest_first = EventQuery {
        oldest_first: true,
        ..EventQuery::default()
    };
    let events = |owner: &'static str| {
        let (sink, query) = (sink.clone(), oldest_first.clone());
        async move {
            ok(sink.owner_events(&query, owner).await)
                .into_iter()
                .map(|s| s.event)
                .collect::<Vec<_>>()
        }
    };
    let usage = |owner: &'static str| {
        let sink = sink.clone();
        async move {
            ok(sink.owner_usage(owner, day0).await)
                .into_iter()
                .map(|u| (u.key_id, u.allowed, u.denied))
                .collect::<Vec<_>>()
        }
    };
    let acme_events = [
        written[0].clone(),
        written[1].clone(),
        written[3].clone(),
        written[4].clone(),
    ];
    let mut acme_usage = vec![(a1, 1, 0), (a2, 1, 1)];
    acme_usage.sort();
    assert_eq!(events("acme").await, acme_events, "{name}");
    assert_eq!(usage("acme").await, acme_usage, "{name}");

    ok(admin.delete(&a2).await);
    ok(admin.delete(&g).await);
    assert_eq!(
        events("acme").await,
        acme_events,
        "{name}: a deleted key's events stay"
    );
    assert_eq!(usage("acme").await, acme_usage, "{name}: and its usage");
    assert_eq!(events("globex").await, [written[2].clone()], "{name}");
    assert_eq!(usage("globex").await, [(g, 0, 1)], "{name}");
    // Only its owner's: a deleted key without an owner, or another owner's, adds nothing.
    let loose = ok(admin.create_key(NewKey::new("loose")).await).record.id;
    ok(sink
        .write(&[request(day0 + second * 5, Some(loose), Outcome::Allowed)])
        .await);
    ok(admin.delete(&loose).await);
    assert_eq!(events("acme").await, acme_events, "{name}");
    assert!(events("nobody").await.is_empty(), "{name}");
}

#[tokio::test]
async fn a_deleted_keys_events_and_usage_stay_in_its_owners_roll_up() {
    let f = stores::sqlite().await;
    deleted_keys_roll_up(f.name, &f.verifier.admin(), f.store.audit_sink()).await;
    if let Some(f) = stores::postgres().await {
        deleted_keys_roll_up(f.name, &f.verifier.admin(), f.store.audit_sink()).await;
    }
}

async fn retention(name: &str, sink: SqlAuditSink, clock: &ManualClock) {
    let key = id("AAAAAAAAAAAA");
    let now = clock.now_for_test();
    let sink = sink.retention(Some(DAY * 30));
    let old = request(now - DAY * 31, Some(key), Outcome::Allowed);
    let recent = request(now - DAY * 29, Some(key), Outcome::Allowed);
    // The first write prunes, its own old event included.
    ok(sink.write(&[old.clone(), recent.clone()]).await);
    ok(sink.flush().await);
    let left: Vec<_> = ok(sink.events(&EventQuery::default()).await)
        .into_iter()
        .map(|s| s.event)
        .collect();
    assert_eq!(
        left,
        std::slice::from_ref(&recent),
        "{name}: older than 30 days pruned"
    );
    assert_eq!(
        ok(sink.usage(None, now - DAY * 60).await).len(),
        1,
        "{name}: usage days older than the retention pruned"
    );
    // Not again within the prune interval (default: an hour)…
    ok(sink.write(std::slice::from_ref(&old)).await);
    assert_eq!(ok(sink.events(&EventQuery::default()).await).len(), 2);
    // …but a sink pruning on every write does, and `None` keeps everything.
    let keep = sink.clone().retention(None);
    ok(keep.write(std::slice::from_ref(&old)).await);
    assert_eq!(ok(keep.events(&EventQuery::default()).await).len(), 3);
    let eager = sink.prune_interval(Duration::ZERO);
    clock.advance(Duration::from_secs(1));
    ok(eager.write(std::slice::from_ref(&recent)).await);
    let left = ok(eager.events(&EventQuery::default()).await);
    assert_eq!(left.len(), 2, "{name}: {left:?}");
    assert!(left.iter().all(|s| s.event == recent));
}

trait Now {
    fn now_for_test(&self) -> SystemTime;
}

impl Now for ManualClock {
    fn now_for_test(&self) -> SystemTime {
        keygate::clock::Clock::now(self)
    }
}

#[tokio::test]
async fn events_older_than_the_retention_are_pruned_by_the_sinks_writes() {
    let f = stores::sqlite().await;
    retention(f.name, f.store.audit_sink(), &f.clock).await;
    if let Some(f) = stores::postgres().await {
        retention(f.name, f.store.audit_sink(), &f.clock).await;
    }
}

#[tokio::test]
async fn a_row_keygate_cannot_read_is_unavailable_not_a_panic() {
    // A value no keygate writes, whatever its version: an address that is not one, a reason
    // that is not a name.
    for sql in [
        "INSERT INTO keygate_audit_events (at, action, client_ip) VALUES (0, 'request', 'not an ip')",
        "INSERT INTO keygate_audit_events (at, action, outcome, reason) \
         VALUES (0, 'request', 'denied', 'Not A Reason!')",
    ] {
        let f = stores::sqlite().await;
        ok(sqlx::query(sql).execute(f.store.pool()).await);
        let result = f.store.audit_sink().events(&EventQuery::default()).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{sql}: {result:?}"
        );
    }
    if let Some(f) = stores::postgres().await {
        // Not a name any keygate writes (a newer keygate's names are kept: see below).
        ok(sqlx::query(
            "INSERT INTO keygate_audit_events (at, action) VALUES (now(), 'Launched Missiles!')",
        )
        .execute(f.store.pool())
        .await);
        let result = f.store.audit_sink().events(&EventQuery::default()).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
    }
}

/// What a newer keygate sharing the store wrote (during a rolling upgrade) and this version has
/// no name for: an action and a reason in rows, then this version's own denial, then (on
/// SQLite) a reason in a block.
async fn newer_names(name: &str, sink: SqlAuditSink, newer_block: bool) {
    let all = ok(sink
        .events(&EventQuery {
            oldest_first: true,
            ..EventQuery::default()
        })
        .await);
    let events: Vec<&AuditEvent> = all.iter().map(|stored| &stored.event).collect();
    assert_eq!(
        events.len(),
        3 + usize::from(newer_block),
        "{name}: {events:?}"
    );
    let topped_up = events[0];
    assert_eq!(topped_up.action, Action::Unrecognized, "{name}");
    assert_eq!(topped_up.action_name(), "credits_topped_up", "{name}");
    assert_eq!(
        topped_up.detail.as_deref(),
        Some("by 100"),
        "{name}: the rest is kept"
    );
    assert_eq!(topped_up.key_id, Some(id("AAAAAAAAAAAA")), "{name}");
    let frozen = events[1];
    assert_eq!(frozen.action_name(), "request", "{name}");
    assert_eq!(frozen.outcome, Some(Outcome::Denied), "{name}");
    assert_eq!(
        (frozen.reason, frozen.reason_name()),
        (None, Some("quota_frozen")),
        "{name}"
    );
    // A known name reads as before, with nothing unrecognized.
    let known = events[2];
    assert_eq!(known.reason, Some(Reason::WrongSecret), "{name}");
    assert_eq!(known.unrecognized, None, "{name}");
    if newer_block {
        let retired = events[3];
        assert_eq!(
            (retired.reason, retired.reason_name()),
            (None, Some("retired")),
            "{name}"
        );
        assert_eq!(
            retired.key_id,
            Some(id("BBBBBBBBBBBB")),
            "{name}: the block's other values"
        );
    }
    // Filters still apply: a known reason does not match an unrecognized one.
    let revoked = ok(sink
        .events(&EventQuery {
            reason: Some(Reason::Revoked),
            ..EventQuery::default()
        })
        .await);
    assert!(revoked.is_empty(), "{name}: {revoked:?}");
    let denied = ok(sink
        .events(&EventQuery {
            outcome: Some(Outcome::Denied),
            ..EventQuery::default()
        })
        .await);
    assert_eq!(denied.len(), 2 + usize::from(newer_block), "{name}");
}

#[tokio::test]
async fn names_a_newer_keygate_wrote_are_kept_not_a_failed_read() {
    let f = stores::sqlite().await;
    let sink = f.store.audit_sink().retention(None);
    for sql in [
        "INSERT INTO keygate_audit_events (at, action, key_id, detail) \
         VALUES (1, 'credits_topped_up', 'AAAAAAAAAAAA', 'by 100')",
        "INSERT INTO keygate_audit_events (at, action, outcome, reason) \
         VALUES (2, 'request', 'denied', 'quota_frozen')",
    ] {
        ok(sqlx::query(sql).execute(f.store.pool()).await);
    }
    let t0 = epoch();
    // Written by this version: one row-or-block event, then a block whose reason a newer
    // keygate names (this version's block, its reason's text changed in place).
    ok(sink.write(&[request(t0, None, Outcome::Denied)]).await);
    let revoked =
        request(t0 + DAY, Some(id("BBBBBBBBBBBB")), Outcome::Denied).reason(Some(Reason::Revoked));
    ok(sink.write(&[revoked]).await);
    let (first_id, blob): (i64, Vec<u8>) = ok(sqlx::query_as(
        "SELECT first_id, events FROM keygate_audit_blocks ORDER BY first_id DESC LIMIT 1",
    )
    .fetch_one(f.store.pool())
    .await);
    let at = blob
        .windows(7)
        .position(|w| w == b"revoked")
        .expect("the block keeps the reason's name");
    let set_reason = |name: &[u8; 7]| {
        let mut blob = blob.clone();
        blob[at..at + 7].copy_from_slice(name);
        sqlx::query("UPDATE keygate_audit_blocks SET events = ? WHERE first_id = ?")
            .bind(blob)
            .bind(first_id)
            .execute(f.store.pool())
    };
    // Not a name: damage, as in a row.
    ok(set_reason(b"REVOKED").await);
    let result = sink.events(&EventQuery::default()).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    ok(set_reason(b"retired").await);
    newer_names(f.name, sink, true).await;

    if let Some(f) = stores::postgres().await {
        for sql in [
            "INSERT INTO keygate_audit_events (at, action, key_id, detail) \
             VALUES (now() - interval '2 seconds', 'credits_topped_up', 'AAAAAAAAAAAA', 'by 100')",
            "INSERT INTO keygate_audit_events (at, action, outcome, reason) \
             VALUES (now() - interval '1 second', 'request', 'denied', 'quota_frozen')",
        ] {
            ok(sqlx::query(sql).execute(f.store.pool()).await);
        }
        let sink = f.store.audit_sink().retention(None);
        ok(sink
            .write(&[request(f.clock.now_for_test(), None, Outcome::Denied)])
            .await);
        newer_names(f.name, sink, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_never_blocks_requests_and_every_lost_event_is_counted() {
    let f = stores::sqlite().await;
    let created = ok(f.verifier.admin().create_key(NewKey::new("busy")).await);
    let key = created.key.expose_secret().to_owned();
    let verifier = Verifier::builder(keyring(), f.store.clone())
        .clock(f.clock.clone())
        .audit_sink(f.store.audit_sink())
        .audit_buffer(4)
        .audit_batch(2)
        .build();
    let app = axum_app(&verifier);

    // Another process holds SQLite's write lock: the sink's batch waits for it.
    let path = sqlite_path(&f).unwrap_or_else(|| panic!("sqlite path"));
    let other = ok(sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(keygate_sqlx::SqliteStore::options(&path))
        .await);
    let mut lock = ok(other.begin_with("BEGIN IMMEDIATE").await);

    const N: usize = 100;
    let all = tokio::time::timeout(Duration::from_secs(20), async {
        for _ in 0..N {
            assert_eq!(send_bearer(&app, "/hello", &key).await.status, 200);
        }
    })
    .await;
    assert!(all.is_ok(), "requests waited for the audit sink");
    let stats = verifier.audit_stats();
    assert!(stats.dropped > 0, "a 4-event buffer cannot hold {N} events");
    assert_eq!(stats.recorded + stats.dropped, N as u64);

    ok(sqlx::query("SELECT 1").execute(&mut *lock).await);
    ok(lock.rollback().await);
    verifier.flush_audit().await;
    // A write that outlasted the busy timeout is retried with the flush's batch.
    verifier.flush_audit().await;
    let stats = verifier.audit_stats();
    // Request events: rows, and those SQLite keeps in blocks.
    let stored: i64 = ok(sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM keygate_audit_events WHERE action = 'request') \
         + (SELECT coalesce(sum(count), 0) FROM keygate_audit_blocks)",
    )
    .fetch_one(f.store.pool())
    .await);
    assert_eq!(
        stored.unsigned_abs() + stats.dropped + stats.lost,
        N as u64,
        "every event is stored or counted as dropped or lost: {stats:?}"
    );
    let usage = ok(f
        .store
        .audit_sink()
        .usage(Some(&created.record.id), f.clock.now_for_test())
        .await);
    assert_eq!(
        usage.iter().map(|u| u.allowed).sum::<u64>(),
        stored.unsigned_abs()
    );

    // Nothing in the tables is the key or its secret.
    let mut dump: Vec<String> = ok(sqlx::query_scalar(
        "SELECT coalesce(key_id,'') || coalesce(route,'') || coalesce(request_id,'') || \
         coalesce(actor,'') || coalesce(detail,'') || coalesce(client_ip,'') FROM keygate_audit_events",
    )
    .fetch_all(f.store.pool())
    .await);
    let blocks: Vec<Vec<u8>> = ok(
        sqlx::query_scalar("SELECT events FROM keygate_audit_blocks")
            .fetch_all(f.store.pool())
            .await,
    );
    assert!(!blocks.is_empty(), "the requests are in blocks");
    dump.extend(
        blocks
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned()),
    );
    let secret = &key[key.len() - 30..];
    assert!(dump.iter().all(|row| !row.contains(secret)));
    other.close().await;
}

async fn big_batch(name: &str, sink: SqlAuditSink) {
    let key = id("CCCCCCCCCCCC");
    // More rows than one multi-row insert takes: the sink splits it, in one transaction.
    let batch: Vec<_> = (0..1_201)
        .map(|i| {
            request(
                epoch() + Duration::from_micros(i),
                Some(key),
                Outcome::Allowed,
            )
        })
        .collect();
    ok(sink.write(&batch).await);
    ok(sink.flush().await);
    let stored = ok(sink
        .events(&EventQuery {
            limit: 5_000,
            ..EventQuery::default()
        })
        .await);
    assert_eq!(stored.len(), batch.len(), "{name}");
    let usage = ok(sink.usage(Some(&key), epoch()).await);
    assert_eq!(
        usage.iter().map(|u| u.allowed).sum::<u64>(),
        1_201,
        "{name}"
    );
}

#[tokio::test]
async fn a_batch_larger_than_one_insert_is_written_whole() {
    let f = stores::sqlite().await;
    big_batch(f.name, f.store.audit_sink()).await;
    if let Some(f) = stores::postgres().await {
        big_batch(f.name, f.store.audit_sink()).await;
    }
}

async fn usage_only(name: &str, sink: SqlAuditSink) {
    let sink = sink.allowed_rows(false);
    let a = id("CCCCCCCCCCCC");
    let day0 = SystemTime::UNIX_EPOCH + DAY * 20_833;
    ok(sink
        .write(&[
            request(day0, Some(a), Outcome::Allowed),
            request(day0, Some(a), Outcome::Allowed),
            request(day0, Some(a), Outcome::Denied),
            AuditEvent::lifecycle(day0, Action::Revoked, a),
        ])
        .await);
    ok(sink.flush().await);
    let events = ok(sink
        .events(&EventQuery {
            key_id: Some(a),
            ..EventQuery::default()
        })
        .await);
    let kept: Vec<_> = events
        .iter()
        .map(|e| (e.event.action, e.event.outcome))
        .collect();
    kept.iter()
        .for_each(|k| assert_ne!(*k, (Action::Request, Some(Outcome::Allowed)), "{name}"));
    assert_eq!(kept.len(), 2, "{name}: the denial and the revoke are rows");
    let usage = ok(sink.usage(Some(&a), day0).await);
    assert_eq!(
        usage
            .iter()
            .map(|u| (u.allowed, u.denied))
            .collect::<Vec<_>>(),
        [(2, 1)],
        "{name}: allowed requests are still counted"
    );
}

#[tokio::test]
async fn without_allowed_rows_allowed_requests_are_only_counted() {
    let f = stores::sqlite().await;
    usage_only(f.name, f.store.audit_sink()).await;
    if let Some(f) = stores::postgres().await {
        usage_only(f.name, f.store.audit_sink()).await;
    }
}

/// One request through `verifier` as the adapters audit it: the event is recorded once the
/// outcome is known. Returns the status.
async fn audited(verifier: &Verifier, key: &str, client: IpAddr) -> u16 {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        ok(http::HeaderValue::from_str(&format!("Bearer {key}"))),
    );
    let uri = http::Uri::from_static("/orders/7");
    let view = HttpRequestView::new(&headers, &uri, Some(client));
    let gate = Gate::new(verifier.clone());
    let refusal = match gate.admit(&view, "GET", || Some(Arc::from("/orders/{id}"))) {
        Admission::Check(check) => match gate.check(check).await {
            Ok(passed) => {
                passed.into_parts().1.finish(200, None);
                return 200;
            }
            Err(refusal) => refusal,
        },
        Admission::Refuse(refusal) => refusal,
        Admission::Pass(_) => panic!("a required gate let a request pass"),
    };
    let status = refusal.rejection().status().as_u16();
    refusal.finish(status);
    status
}

/// A well-formed id that no key has: `n` in base 62, twelve symbols.
fn forged_id(mut n: u64) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut id = [b'z'; 12];
    for slot in id.iter_mut().rev().take(6) {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8_lossy(&id).into_owned()
}

async fn forged_flood<S>(name: &str, store: S, sink: SqlAuditSink, clock: ManualClock)
where
    S: KeyStore + KeyAdmin + Clone,
{
    const N: u64 = 100_000;
    const SECRET: &str = "0123456789abcdefghijABCDEFGHIJ";
    let attacker = ok("203.0.113.9".parse::<IpAddr>());
    let user = ok("198.51.100.4".parse::<IpAddr>());
    let verifier = Verifier::builder(keyring(), store)
        .clock(clock.clone())
        .audit_sink(sink.clone())
        // Every event fits, so the counts below are exact (a full buffer would drop some).
        .audit_buffer(usize::try_from(N).unwrap_or(usize::MAX) + 1_000)
        .build();
    let created = ok(verifier.admin().create_key(NewKey::new("real")).await);
    let real = created.key.expose_secret().to_owned();
    let real_id = created.record.id;

    // The flood: every id well-formed, with a correct checksum, none a key. The failed-attempt
    // limiter soon answers 429 instead of 401; both are folded.
    for n in 0..N {
        let id = forged_id(n);
        assert_ne!(id, real_id.as_str());
        let status = audited(&verifier, &forge(PREFIX, &id, SECRET), attacker).await;
        assert!(status == 401 || status == 429, "{name}: {status}");
    }
    // The real key's user: three requests let in, one wrong secret.
    for _ in 0..3 {
        assert_eq!(audited(&verifier, &real, user).await, 200, "{name}");
    }
    let wrong = forge(PREFIX, real_id.as_str(), SECRET);
    assert_eq!(audited(&verifier, &wrong, user).await, 401, "{name}");

    // Shutdown: the open folds are written, nothing is lost.
    let stats = verifier.flush_audit().await;
    assert_eq!(stats.dropped, 0, "{name}: {stats:?}");
    assert_eq!(stats.folded, N, "{name}: {stats:?}");
    assert_eq!(stats.written, stats.recorded, "{name}: {stats:?}");

    let rows = ok(sink
        .events(&EventQuery {
            limit: MAX_EVENTS,
            oldest_first: true,
            ..EventQuery::default()
        })
        .await);
    // Created, the user's four requests, and the flood's folds (unknown_key, too_many_failures).
    assert!(rows.len() <= 7, "{name}: {} rows: {rows:#?}", rows.len());
    let folds: Vec<_> = rows
        .iter()
        .filter(|r| r.event.action == Action::Denials)
        .map(|r| &r.event)
        .collect();
    assert!(
        (1..=2).contains(&folds.len()),
        "{name}: one fold per reason: {folds:#?}"
    );
    let mut total = 0;
    for fold in &folds {
        let folded = fold
            .folded
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: {fold:?}"));
        assert_eq!(fold.client_ip, Some(attacker), "{name}");
        assert_eq!(fold.key_id, None, "{name}: a fold names no key");
        assert!(
            matches!(
                fold.reason,
                Some(Reason::UnknownKey | Reason::TooManyFailures)
            ),
            "{name}: {fold:?}"
        );
        assert!(!folded.other_clients, "{name}");
        assert!(folded.last_at >= fold.at, "{name}");
        assert!(
            !folded.sample.is_empty() && folded.sample.len() <= keygate::audit::MAX_FOLDED_SAMPLE,
            "{name}: {folded:?}"
        );
        assert!(folded.sample.iter().all(|id| *id != real_id), "{name}");
        total += folded.count;
    }
    assert_eq!(total, N, "{name}: every forged request is counted");
    assert!(
        rows.iter()
            .all(|r| r.event.action != Action::Request || r.event.client_ip == Some(user)),
        "{name}: no single event from the flood"
    );

    // The real key's wrong secret is its own event, naming the key.
    let wrong_secret: Vec<_> = rows
        .iter()
        .filter(|r| r.event.reason == Some(Reason::WrongSecret))
        .collect();
    assert_eq!(wrong_secret.len(), 1, "{name}: {rows:#?}");
    assert_eq!(wrong_secret[0].event.key_id, Some(real_id), "{name}");
    assert_eq!(wrong_secret[0].event.action, Action::Request, "{name}");
    assert_eq!(wrong_secret[0].event.client_ip, Some(user), "{name}");

    // Usage: the real key only, exactly; no row for any forged id.
    let usage = ok(sink.usage(None, epoch() - DAY).await);
    assert_eq!(
        usage
            .iter()
            .map(|u| (u.key_id, u.allowed, u.denied))
            .collect::<Vec<_>>(),
        [(real_id, 3, 1)],
        "{name}"
    );
    // Even written to the sink directly, a folded reason is never counted against its id.
    let forged = id(&forged_id(N + 1));
    let direct = AuditEvent::request(epoch(), Outcome::Denied)
        .key_id(Some(forged))
        .reason(Some(Reason::UnknownKey));
    ok(sink.write(&[direct]).await);
    ok(sink.flush().await);
    assert!(
        ok(sink.usage(Some(&forged), epoch() - DAY).await).is_empty(),
        "{name}"
    );

    // A fold round trips whole, "other clients" included.
    let mut other = AuditEvent::new(epoch() + DAY, Action::Denials).reason(Some(Reason::Malformed));
    other.outcome = Some(Outcome::Denied);
    other.folded = Some(Box::new(Folded::new(
        12_345,
        epoch() + DAY + Duration::from_secs(59),
        vec![forged, real_id],
        true,
    )));
    ok(sink.write(std::slice::from_ref(&other)).await);
    let back = ok(sink
        .events(&EventQuery {
            limit: 1,
            ..EventQuery::default()
        })
        .await);
    assert_eq!(
        back.iter().map(|s| &s.event).collect::<Vec<_>>(),
        [&other],
        "{name}"
    );
}

#[tokio::test]
async fn forged_ids_add_a_handful_of_rows_not_one_each() {
    let f = stores::sqlite().await;
    forged_flood(
        f.name,
        f.store.clone(),
        f.store.audit_sink(),
        f.clock.clone(),
    )
    .await;
    if let Some(f) = stores::postgres().await {
        forged_flood(
            f.name,
            f.store.clone(),
            f.store.audit_sink(),
            f.clock.clone(),
        )
        .await;
    }
}

/// `n` events over `keys` keys, as varied as a service's: allowed and denied, several methods,
/// routes and clients, some with a request id or a detail, a lifecycle change now and then and
/// a fold or two; strictly increasing times.
fn varied(n: u64, keys: &[KeyId]) -> Vec<AuditEvent> {
    let routes: [Arc<str>; 2] = [Arc::from("/orders"), Arc::from("/orders/{id}")];
    let n_keys = keys.len() as u64;
    (0..n)
        .map(|i| {
            let at = epoch() + Duration::from_micros(i * 3);
            let key = keys[(i % n_keys) as usize];
            if i % 1_000 == 999 {
                return AuditEvent::lifecycle(at, Action::Rotated, key)
                    .actor(Some(Arc::from("ops")))
                    .detail(format!("rotation {i}"));
            }
            if i % 5_000 == 4_999 {
                let mut fold =
                    AuditEvent::new(at, Action::Denials).reason(Some(Reason::UnknownKey));
                fold.outcome = Some(Outcome::Denied);
                fold.client_ip = Some(IpAddr::from([203, 0, 113, 9]));
                fold.folded = Some(Box::new(Folded::new(
                    i,
                    at + Duration::from_secs(1),
                    vec![key],
                    false,
                )));
                return fold;
            }
            let outcome = if i % 7 == 0 {
                Outcome::Denied
            } else {
                Outcome::Allowed
            };
            let mut e = request(at, Some(key), outcome);
            e.method = Some(if i % 3 == 0 {
                http::Method::POST
            } else {
                http::Method::GET
            });
            e.route = Some(routes[(i % 2) as usize].clone());
            e.client_ip = Some(if i % 11 == 0 {
                IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, (i % 5) as u16])
            } else {
                IpAddr::from([198, 51, 100, (i % 4) as u8])
            });
            e.status = Some(if outcome == Outcome::Allowed {
                200
            } else {
                401
            });
            e.latency = Some(Duration::from_micros(i % 900));
            if i % 13 == 0 {
                e.request_id = Some(Arc::from(format!("req-{i}")));
            }
            if i % 17 == 0 && outcome == Outcome::Allowed {
                e.detail = Some(keygate::audit::STALE_DETAIL.to_owned());
            }
            e
        })
        .collect()
}

/// Every stored event, oldest first.
async fn all_events(sink: &SqlAuditSink) -> Vec<AuditEvent> {
    all_stored(sink).await.into_iter().map(|(_, e)| e).collect()
}

/// Every stored event with its id, oldest first, read page by page as a follower does.
async fn all_stored(sink: &SqlAuditSink) -> Vec<(i64, AuditEvent)> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = ok(sink
            .events(&EventQuery {
                after_id: after,
                limit: MAX_EVENTS,
                oldest_first: true,
                ..EventQuery::default()
            })
            .await);
        let Some(last) = page.last() else {
            return all;
        };
        after = Some(last.id);
        all.extend(page.into_iter().map(|s| (s.id, s.event)));
    }
}

async fn every_event_a_row(name: &str, sink: SqlAuditSink) {
    let keys: Vec<KeyId> = (0..37_u64).map(|n| id(&forged_id(n))).collect();
    // 20 011 events: many statements' worth (SQLite takes 32 766 parameters a statement,
    // PostgreSQL 65 535), and a last chunk of an odd size.
    let events = varied(20_011, &keys);
    ok(sink.write(&events).await);
    let stored = all_events(&sink).await;
    assert_eq!(stored.len(), events.len(), "{name}: every event a row");
    for (i, (got, sent)) in stored.iter().zip(&events).enumerate() {
        assert_eq!(got, sent, "{name}: event {i} round trips, in order");
    }

    // Usage: nothing before the flush, then each key's own sums.
    assert!(
        ok(sink.usage(None, epoch() - DAY).await).is_empty(),
        "{name}"
    );
    ok(sink.flush().await);
    let mut expected = std::collections::BTreeMap::<KeyId, (u64, u64)>::new();
    for e in events.iter().filter(|e| e.action == Action::Request) {
        let count = expected
            .entry(e.key_id.unwrap_or_else(|| panic!("{e:?}")))
            .or_default();
        match e.outcome {
            Some(Outcome::Allowed) => count.0 += 1,
            _ => count.1 += 1,
        }
    }
    let usage: std::collections::BTreeMap<KeyId, (u64, u64)> =
        ok(sink.usage(None, epoch() - DAY).await)
            .into_iter()
            .map(|u| (u.key_id, (u.allowed, u.denied)))
            .collect();
    assert_eq!(usage, expected, "{name}: usage is each key's own sums");
    // A second flush with nothing new adds nothing.
    ok(sink.flush().await);
    let again = ok(sink.usage(None, epoch() - DAY).await);
    assert_eq!(again.len(), expected.len(), "{name}");
    assert!(
        again
            .iter()
            .all(|u| expected.get(&u.key_id) == Some(&(u.allowed, u.denied))),
        "{name}"
    );
}

#[tokio::test]
async fn a_batch_of_many_statements_is_every_event_a_row_and_usage_the_per_key_sums() {
    let f = stores::sqlite().await;
    every_event_a_row(f.name, f.store.audit_sink()).await;
    if let Some(f) = stores::postgres().await {
        every_event_a_row(f.name, f.store.audit_sink()).await;
    }
}

async fn many_keys(name: &str, sink: SqlAuditSink) {
    // More (key, day) counts than the sink holds in memory: the batch writes them itself.
    let events: Vec<_> = (0..10_050_u64)
        .map(|n| {
            request(
                epoch() + Duration::from_micros(n),
                Some(id(&forged_id(n))),
                Outcome::Allowed,
            )
        })
        .collect();
    ok(sink.write(&events).await);
    let usage = ok(sink.usage(None, epoch() - DAY).await);
    assert_eq!(usage.len(), events.len(), "{name}: written without a flush");
    assert!(
        usage.iter().all(|u| (u.allowed, u.denied) == (1, 0)),
        "{name}"
    );
    ok(sink.flush().await);
    assert_eq!(ok(sink.usage(None, epoch() - DAY).await), usage, "{name}");
}

#[tokio::test]
async fn counts_for_too_many_keys_are_written_with_the_batch() {
    let f = stores::sqlite().await;
    many_keys(f.name, f.store.audit_sink()).await;
    if let Some(f) = stores::postgres().await {
        many_keys(f.name, f.store.audit_sink()).await;
    }
}

#[tokio::test]
async fn a_refused_write_or_flush_neither_loses_nor_doubles_a_count() {
    let f = stores::sqlite().await;
    let path = sqlite_path(&f).unwrap_or_else(|| panic!("sqlite path"));
    // A sink that gives up on a locked file after 50 ms.
    let store = ok(keygate_sqlx::SqliteStore::connect_with(
        keygate_sqlx::SqliteStore::options(&path).busy_timeout(Duration::from_millis(50)),
    )
    .await);
    let sink = store.audit_sink();
    let other = ok(sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(keygate_sqlx::SqliteStore::options(&path))
        .await);
    let key = id("DDDDDDDDDDDD");
    let batch: Vec<_> = (0..10_u64)
        .map(|n| {
            let outcome = if n < 7 {
                Outcome::Allowed
            } else {
                Outcome::Denied
            };
            request(epoch() + Duration::from_micros(n), Some(key), outcome)
        })
        .collect();

    // Refused while another connection holds the write lock: nothing counted for it.
    let lock = ok(other.begin_with("BEGIN IMMEDIATE").await);
    assert!(sink.write(&batch).await.is_err());
    ok(lock.rollback().await);
    // The pipeline retries the batch: counted once.
    ok(sink.write(&batch).await);
    // A refused flush keeps the counts for the next.
    let lock = ok(other.begin_with("BEGIN IMMEDIATE").await);
    assert!(sink.flush().await.is_err());
    ok(lock.rollback().await);
    ok(sink.flush().await);

    let usage = ok(sink.usage(Some(&key), epoch() - DAY).await);
    assert_eq!(
        usage
            .iter()
            .map(|u| (u.allowed, u.denied))
            .collect::<Vec<_>>(),
        [(7, 3)]
    );
    assert_eq!(
        ok(sink
            .events(&EventQuery {
                limit: 100,
                ..EventQuery::default()
            })
            .await)
        .len(),
        10
    );
    other.close().await;
}

/// A small deterministic generator (the test must fail the same way every run).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// SQLite keeps request events in blocks and the rest in rows: whatever the query, what it
/// reads is what a plain filter over every event written, in id order, gives. 120 batches
/// (more blocks than one page of block headers), 400 queries over every filter, order, limit,
/// paging bound and owner; a batch written after a follower's last id is found whole.
#[tokio::test]
async fn sqlite_blocks_and_rows_read_as_one_trail_whatever_the_query() {
    let f = stores::sqlite().await;
    let sink = f.store.audit_sink();
    let admin = f.verifier.admin();
    let mut owned = Vec::new();
    for (i, owner) in ["team-a", "team-a", "team-b", "team-b"].iter().enumerate() {
        let created = ok(admin
            .create_key(NewKey::new(format!("k{i}")).owner(*owner))
            .await);
        owned.push((created.record.id, *owner));
    }
    let mut keys: Vec<KeyId> = owned.iter().map(|(id, _)| *id).collect();
    keys.extend((0..4_u64).map(|n| id(&forged_id(n))));

    let mut rng = Lcg(7);
    let mut at = epoch();
    for batch in 0..120 {
        let n = 1 + rng.below(if batch % 10 == 0 { 400 } else { 40 });
        let mut events = varied(n, &keys);
        for e in &mut events {
            // Times move on from batch to batch, and jitter within one (requests finish out
            // of order).
            at += Duration::from_micros(rng.below(2_000_000));
            e.at = at - Duration::from_micros(rng.below(500_000));
            if rng.below(9) == 0 {
                e.key_id = None;
            }
        }
        ok(sink.write(&events).await);
    }
    let every = all_stored(&sink).await;
    assert!(every.windows(2).all(|w| w[0].0 < w[1].0), "ids ascend");
    let blocks: i64 = ok(
        sqlx::query_scalar("SELECT count(*) FROM keygate_audit_blocks")
            .fetch_one(f.store.pool())
            .await,
    );
    assert!(
        blocks > 64,
        "{blocks} blocks: more than one page of headers"
    );

    let first = every.first().map_or(0, |e| e.0);
    let last = every.last().map_or(0, |e| e.0);
    let actions = [
        None,
        Some(Action::Request),
        Some(Action::Rotated),
        Some(Action::Denials),
    ];
    let outcomes = [None, Some(Outcome::Allowed), Some(Outcome::Denied)];
    let reasons = [
        None,
        None,
        Some(Reason::WrongSecret),
        Some(Reason::UnknownKey),
    ];
    let owners = [
        None,
        None,
        None,
        Some("team-a"),
        Some("team-b"),
        Some("nobody"),
    ];
    for case in 0..400 {
        let span = u64::try_from(last - first).unwrap_or(1).max(1);
        let some_id = |rng: &mut Lcg| first + i64::try_from(rng.below(span + 1)).unwrap_or(0);
        let query = EventQuery {
            key_id: (rng.below(3) == 0).then(|| rng.pick(&keys)),
            outcome: rng.pick(&outcomes),
            reason: rng.pick(&reasons),
            action: rng.pick(&actions),
            since: (rng.below(3) == 0).then(|| every[rng.below(every.len() as u64) as usize].1.at),
            after_id: (rng.below(3) == 0).then(|| some_id(&mut rng)),
            before_id: (rng.below(3) == 0).then(|| some_id(&mut rng)),
            limit: rng.pick(&[1, 7, 50, 333, MAX_EVENTS]),
            oldest_first: rng.below(2) == 0,
        };
        let owner = rng.pick(&owners);
        let mut expected: Vec<i64> = every
            .iter()
            .filter(|(id, e)| query.matches(*id, e))
            .filter(|(_, e)| {
                owner.is_none_or(|owner| {
                    e.key_id
                        .is_some_and(|k| owned.iter().any(|(id, o)| *id == k && *o == owner))
                })
            })
            .map(|(id, _)| *id)
            .collect();
        if !query.oldest_first {
            expected.reverse();
        }
        expected.truncate(query.clamped_limit());
        let got = match owner {
            Some(owner) => ok(sink.owner_events(&query, owner).await),
            None => ok(sink.events(&query).await),
        };
        let got_ids: Vec<i64> = got.iter().map(|s| s.id).collect();
        assert_eq!(got_ids, expected, "case {case}: {query:?} owner {owner:?}");
        for stored in &got {
            let (_, written) = &every[every.partition_point(|(id, _)| *id < stored.id)];
            assert_eq!(&stored.event, written, "case {case}");
        }
    }

    // A follower that saw the last id gets the next batch, rows and blocks, whole.
    let next = varied(50, &keys);
    ok(sink.write(&next).await);
    let followed = ok(sink
        .events(&EventQuery {
            after_id: Some(last),
            limit: MAX_EVENTS,
            oldest_first: true,
            ..EventQuery::default()
        })
        .await);
    let followed: Vec<AuditEvent> = followed.into_iter().map(|s| s.event).collect();
    assert_eq!(followed, next);
}

/// Retention is per event in blocks too: a block with events on both sides of the cutoff
/// keeps exactly the later ones, and a wholly old block goes.
#[tokio::test]
async fn sqlite_retention_prunes_block_events_one_by_one() {
    let f = stores::sqlite().await;
    let sink = f.store.audit_sink().prune_interval(Duration::ZERO);
    let key = id("AAAAAAAAAAAA");
    let now = f.clock.now_for_test();
    let old = |days: u32| request(now - DAY * days, Some(key), Outcome::Allowed);
    // One batch: one block, straddling the 90-day cutoff.
    let straddling = vec![old(120), old(100), old(10), old(91), old(1)];
    // Another wholly before it.
    let stale = vec![old(200), old(150)];
    ok(sink.write(&stale).await);
    ok(sink.write(&straddling).await);
    // The next write prunes.
    let fresh = vec![request(now, Some(key), Outcome::Denied)];
    ok(sink.write(&fresh).await);
    let left = all_events(&sink).await;
    assert_eq!(left, vec![old(10), old(1), fresh[0].clone()]);
    let blocks: i64 = ok(
        sqlx::query_scalar("SELECT count(*) FROM keygate_audit_blocks")
            .fetch_one(f.store.pool())
            .await,
    );
    assert_eq!(
        blocks, 2,
        "the straddling block rewritten, the stale one gone, the new one"
    );
}

/// A block keygate cannot decode makes reads `Unavailable` (not a panic, not a silent gap),
/// and does not stop the sink's writes or prunes.
#[tokio::test]
async fn a_damaged_block_is_unavailable_not_a_panic_and_writes_go_on() {
    let f = stores::sqlite().await;
    let sink = f.store.audit_sink().prune_interval(Duration::ZERO);
    let key = id("AAAAAAAAAAAA");
    let now = f.clock.now_for_test();
    let old = request(now - DAY * 100, Some(key), Outcome::Allowed);
    let recent = request(now - DAY, Some(key), Outcome::Allowed);
    ok(sink.write(&[old, recent.clone()]).await);
    ok(
        sqlx::query("UPDATE keygate_audit_blocks SET events = x'01ff'")
            .execute(f.store.pool())
            .await,
    );
    let result = sink.events(&EventQuery::default()).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    // The damaged block straddles the cutoff: the prune leaves it, the write still lands.
    ok(sink.write(std::slice::from_ref(&recent)).await);
    let blocks: i64 = ok(
        sqlx::query_scalar("SELECT count(*) FROM keygate_audit_blocks")
            .fetch_one(f.store.pool())
            .await,
    );
    assert_eq!(blocks, 2);
}
