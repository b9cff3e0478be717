//! The audit pipeline: lifecycle events from `Admin`, a stalled sink that never blocks requests
//! (its drops counted exactly), a failing sink retried, and the tracing sink's escaping.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use keygate::audit::{Action, AuditError, AuditEvent, AuditSink, Outcome, TracingSink};
use keygate::{KeyAdmin, NewKey, Scope};
use keygate_tests::{CapturingSink, Harness, LogCapture, axum_app, send_bearer};

#[tokio::test]
async fn every_change_through_admin_is_an_event_with_its_actor() {
    let h = Harness::new();
    let events = CapturingSink::default();
    let verifier = h.sibling_with(|b| b.audit_sink(events.clone()));
    let admin = verifier.admin().actor("alice@ops");
    let created = admin.create_key(NewKey::new("k")).await.unwrap();
    let id = created.record.id;
    let ok = |r: Result<keygate::KeyRecord, keygate::StoreError>| {
        r.unwrap();
    };
    ok(admin.rename(&id, "k2").await);
    ok(admin
        .set_scopes(&id, vec![Scope::new("a:b").unwrap()])
        .await);
    ok(admin.set_expiry(&id, None).await);
    ok(admin.set_metadata(&id, keygate::Metadata::new()).await);
    ok(admin.set_allowed_ips(&id, Vec::new()).await);
    ok(admin
        .set_rate_limit(&id, Some(keygate::rate::RateLimit::Unlimited))
        .await);
    ok(admin.disable(&id).await);
    ok(admin.enable(&id).await);
    let rotated = admin.rotate(&id, Duration::from_secs(60)).await.unwrap();
    ok(admin.revoke(&id).await);
    admin.delete(&id).await.unwrap();
    // A refused change is not an event.
    assert!(admin.enable(&rotated.new.record.id).await.is_ok());
    assert!(admin.rename(&id, "gone").await.is_err());

    verifier.flush_audit().await;
    let got: Vec<_> = events
        .take()
        .into_iter()
        .map(|e| {
            (
                e.action,
                e.key_id,
                e.actor.as_deref().map(str::to_owned),
                e.detail,
            )
        })
        .collect();
    let actor = Some("alice@ops".to_owned());
    let on = |action| (action, Some(id), actor.clone(), None);
    assert_eq!(
        got,
        vec![
            on(Action::Created),
            on(Action::Renamed),
            on(Action::ScopesChanged),
            on(Action::ExpiryChanged),
            on(Action::MetadataChanged),
            on(Action::AllowedIpsChanged),
            on(Action::RateLimitChanged),
            on(Action::Disabled),
            on(Action::Enabled),
            (
                Action::Rotated,
                Some(id),
                actor.clone(),
                Some(format!("new key {}", rotated.new.record.id))
            ),
            on(Action::Revoked),
            on(Action::Deleted),
            (
                Action::Enabled,
                Some(rotated.new.record.id),
                actor.clone(),
                None
            ),
        ]
    );
}

/// Owners carry limits and quotas every key of theirs obeys: creating, changing and deleting
/// one are events naming the owner (no key), with the actor and what was set; a refused
/// change records nothing. The memory trail's owner roll-up finds them beside the keys'.
#[tokio::test]
async fn every_owner_change_through_admin_is_an_event_naming_the_owner() {
    use keygate::StoreError;
    use keygate::audit::{AuditTrail, EventQuery, MemoryAuditTrail, owner_on_record};
    use keygate::owner::{NewOwner, OwnerUpdate};

    let h = Harness::new();
    let trail = MemoryAuditTrail::new().key_store(h.store.clone());
    let verifier = h.sibling_with(|b| b.audit_sink(trail.clone()));
    let admin = verifier.admin().actor("alice@ops");
    let policy = |text: &str| text.parse::<keygate::rate::RatePolicy>().unwrap();
    admin
        .create_owner(
            NewOwner::new("team-x")
                .name("Team X")
                .rate_limit(policy("10/1m"))
                .quota("1000/day".parse().unwrap()),
        )
        .await
        .unwrap();
    let key = admin
        .create_key(NewKey::new("k").owner("team-x"))
        .await
        .unwrap()
        .record
        .id;
    admin
        .update_owner(
            "team-x",
            OwnerUpdate::new()
                .name("Team Ex")
                .rate_limit(None)
                .limits("search: 5/1s".parse().unwrap()),
        )
        .await
        .unwrap();
    // Refused: nothing recorded.
    assert!(admin.create_owner(NewOwner::new("team-x")).await.is_err());
    assert!(
        admin
            .update_owner("nobody", OwnerUpdate::new().name("n"))
            .await
            .is_err()
    );
    assert!(admin.delete_owner("team-x").await.is_err(), "it has a key");
    admin.delete(&key).await.unwrap();
    admin.delete_owner("team-x").await.unwrap();

    verifier.flush_audit().await;
    let query = EventQuery {
        oldest_first: true,
        ..EventQuery::default()
    };
    // An event as (action, key, owner, actor, detail).
    let row = |s: keygate::audit::StoredEvent| {
        let e = s.event;
        (
            e.action,
            e.key_id,
            e.owner.as_deref().map(str::to_owned),
            e.actor.as_deref().map(str::to_owned),
            e.detail,
        )
    };
    let got: Vec<_> = trail
        .events(&query)
        .await
        .unwrap()
        .into_iter()
        .map(row)
        .map(|(action, k, owner, actor, detail)| {
            (action, k.map(|k| k == key), owner, actor, detail)
        })
        .collect();
    let actor = Some("alice@ops".to_owned());
    let owner = Some("team-x".to_owned());
    assert_eq!(
        got,
        vec![
            (
                Action::OwnerCreated,
                None,
                owner.clone(),
                actor.clone(),
                Some(r#"name "Team X"; rate limit 10/1m; quota 1000/day"#.to_owned()),
            ),
            (Action::Created, Some(true), None, actor.clone(), None),
            (
                Action::OwnerChanged,
                None,
                owner.clone(),
                actor.clone(),
                Some(r#"name "Team Ex"; rate limit none; limits search: 5/1s"#.to_owned()),
            ),
            (Action::Deleted, Some(true), None, actor.clone(), None),
            (
                Action::OwnerDeleted,
                None,
                owner.clone(),
                actor.clone(),
                None
            ),
        ]
    );
    // The owner's roll-up has its own events and its key's: the key is deleted, but its
    // tombstone keeps the owner.
    let rolled: Vec<_> = trail
        .owner_events(&query, "team-x")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.event.action)
        .collect();
    assert_eq!(
        rolled,
        [
            Action::OwnerCreated,
            Action::Created,
            Action::OwnerChanged,
            Action::Deleted,
            Action::OwnerDeleted
        ]
    );
    assert!(
        trail
            .owner_events(&query, "team-y")
            .await
            .unwrap()
            .is_empty()
    );
    // An owner made by its first key: its creation is recorded before the key's, once.
    let first = admin
        .create_key(NewKey::new("first").owner("team-new"))
        .await
        .unwrap();
    admin
        .create_key(NewKey::new("second").owner("team-new"))
        .await
        .unwrap();
    verifier.flush_audit().await;
    let made: Vec<_> = trail
        .owner_events(&query, "team-new")
        .await
        .unwrap()
        .into_iter()
        .map(row)
        .collect();
    assert_eq!(made.len(), 3, "{made:?}");
    assert_eq!(
        made[0],
        (
            Action::OwnerCreated,
            None,
            Some("team-new".to_owned()),
            actor.clone(),
            Some(r#"name "team-new""#.to_owned())
        )
    );
    assert_eq!(
        (made[1].0, made[1].1),
        (Action::Created, Some(first.record.id))
    );
    assert_eq!(made[2].0, Action::Created);

    // Deleted, the owner is still on record through its deletion event; an id that never was
    // an owner is not, nor one the trail never saw deleted.
    owner_on_record(&admin, &trail, "team-x").await.unwrap();
    assert!(matches!(
        owner_on_record(&admin, &trail, "team-y").await,
        Err(StoreError::OwnerNotFound(id)) if id == "team-y"
    ));
    admin.create_owner(NewOwner::new("team-z")).await.unwrap();
    owner_on_record(&admin, &trail, "team-z").await.unwrap();
    h.store.delete_owner("team-z").await.unwrap();
    assert!(
        matches!(
            owner_on_record(&admin, &trail, "team-z").await,
            Err(StoreError::OwnerNotFound(_))
        ),
        "deleted past the audit: no deletion event"
    );
}

/// A sink that blocks every write until released.
#[derive(Debug, Default)]
struct Stalled {
    released: AtomicBool,
    wake: tokio::sync::Notify,
    written: AtomicUsize,
}

#[async_trait]
impl AuditSink for Stalled {
    async fn write(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        while !self.released.load(Ordering::Acquire) {
            self.wake.notified().await;
        }
        self.written.fetch_add(events.len(), Ordering::Relaxed);
        Ok(())
    }
}

#[tokio::test]
async fn a_stalled_sink_never_blocks_requests_and_every_lost_event_is_counted() {
    let h = Harness::new();
    let (key, _) = h.create(NewKey::new("busy")).await;
    let sink = Arc::new(Stalled::default());
    let verifier = h.sibling_with(|b| {
        b.shared_audit_sink(sink.clone())
            .audit_buffer(4)
            .audit_batch(2)
    });
    let app = axum_app(&verifier);
    const N: usize = 200;
    let all = tokio::time::timeout(Duration::from_secs(20), async {
        for _ in 0..N {
            let reply = send_bearer(&app, "/hello", &key).await;
            assert_eq!(reply.status, 200);
        }
    })
    .await;
    assert!(all.is_ok(), "requests waited for the audit sink");

    let stats = verifier.audit_stats();
    assert!(stats.dropped > 0, "a 4-event buffer cannot hold {N} events");
    assert_eq!(stats.recorded + stats.dropped, N as u64);

    sink.released.store(true, Ordering::Release);
    sink.wake.notify_waiters();
    verifier.flush_audit().await;
    let stats = verifier.audit_stats();
    assert_eq!(
        sink.written.load(Ordering::Relaxed) as u64 + stats.dropped,
        N as u64,
        "every event is either written or counted as dropped: {stats:?}"
    );
    assert_eq!(stats.written, stats.recorded);
    assert_eq!(stats.lost, 0);
}

/// Fails its first `failures` writes.
#[derive(Debug)]
struct Flaky {
    failures: AtomicUsize,
    events: Mutex<Vec<AuditEvent>>,
}

#[async_trait]
impl AuditSink for Flaky {
    async fn write(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        if self
            .failures
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(AuditError("database unreachable".into()));
        }
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(events);
        Ok(())
    }
}

#[tokio::test]
async fn a_failed_batch_is_written_with_the_next_one() {
    let h = Harness::new();
    let sink = Arc::new(Flaky {
        failures: AtomicUsize::new(1),
        events: Mutex::new(Vec::new()),
    });
    let verifier = h.sibling_with(|b| b.shared_audit_sink(sink.clone()));
    let event = |n: u16| {
        let mut e = AuditEvent::request(SystemTime::UNIX_EPOCH, Outcome::Allowed);
        e.status = Some(n);
        e
    };
    verifier.audit(event(1));
    verifier.flush_audit().await;
    assert!(
        sink.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    );
    verifier.audit(event(2));
    verifier.flush_audit().await;
    let statuses: Vec<_> = sink
        .events
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|e| e.status)
        .collect();
    assert_eq!(statuses, vec![Some(1), Some(2)], "in order, nothing lost");
    let stats = verifier.audit_stats();
    assert_eq!((stats.failed_writes, stats.lost), (1, 0));
}

#[tokio::test]
async fn the_tracing_sink_escapes_what_could_forge_a_line() {
    let logs = LogCapture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    assert!(AuditSink::enabled(&TracingSink));
    let mut event = AuditEvent::request(SystemTime::UNIX_EPOCH, Outcome::Denied);
    event.route = Some(Arc::from("/a\r\nFAKE audit outcome=allowed"));
    event.detail = Some("x\ny".into());
    TracingSink.write(&[event]).await.unwrap();
    let text = logs.text();
    assert_eq!(text.lines().count(), 1, "one event, one line: {text}");
    assert!(text.contains(r"\r\nFAKE"), "{text}");
    assert!(text.contains("outcome=\"denied\""), "{text}");
}

#[test]
fn the_default_sink_is_enabled_exactly_while_a_subscriber_listens_to_audit_events() {
    use keygate::{Keyring, MemoryStore, Verifier};
    let keyring = || Keyring::development("acme_test").unwrap();
    // No sink given: the default tracing sink, asked of `tracing` directly.
    let default = Verifier::builder(keyring(), MemoryStore::new()).build();
    // A subscriber that filters INFO out.
    let quiet = || {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .finish()
    };
    tracing::subscriber::with_default(quiet(), || {
        assert!(
            !default.audit_enabled(),
            "INFO filtered out: no event built"
        );
    });
    let listening = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::sink)
        .finish();
    tracing::subscriber::with_default(listening, || {
        assert!(default.audit_enabled(), "a subscriber listens at INFO");
    });
    // A sink of the application's own: asked itself, whatever `tracing` listens to.
    let own = Verifier::builder(keyring(), MemoryStore::new())
        .audit_sink(CapturingSink::default())
        .build();
    tracing::subscriber::with_default(quiet(), || {
        assert!(own.audit_enabled(), "the application's sink wants events");
    });
}

/// A key store that wraps another and hands on only the required `KeyAdmin` methods (not
/// `deleted_owner_keys`, as `UsageCounter` does): owner roll-ups then leave out deleted keys,
/// and a warning says so, once per process rather than per read.
#[tokio::test]
async fn a_store_without_deleted_owner_keys_is_warned_about_once() {
    use keygate::MemoryStore;
    use keygate::audit::{AuditTrail as _, EventQuery, MemoryAuditTrail};
    use keygate_tests::stores::UsageCounter;

    let capture = LogCapture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let trail = MemoryAuditTrail::new().key_store(UsageCounter::new(MemoryStore::new()));
    for _ in 0..3 {
        assert!(
            trail
                .owner_events(&EventQuery::default(), "team-x")
                .await
                .unwrap()
                .is_empty()
        );
    }
    let logged = capture.text();
    let warning = "keeps no owners of deleted keys";
    assert_eq!(logged.matches(warning).count(), 1, "{logged}");
    assert!(logged.contains("WARN"), "{logged}");
}
