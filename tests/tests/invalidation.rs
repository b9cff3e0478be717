//! Cross-instance invalidation and stale-if-error, on an in-process channel and a store that
//! fails on demand (the same behaviour on real PostgreSQL and Redis is in `many_instances.rs`).
//!
//! Latencies are measured (poll until the other instance refuses, with a deadline), never slept
//! for.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use keygate::{KeyAdmin, NewKey, Reason, Verifier};
use keygate_tests::channel::MemoryChannel;
use keygate_tests::{CapturingSink, Harness, axum_app, check, measure, send_bearer};

async fn wait_subscribed(verifier: &Verifier, subscribed: bool) {
    measure(Duration::from_secs(5), "subscription state", || async {
        verifier.invalidation_subscribed() == Some(subscribed)
    })
    .await;
}

fn instance(h: &Harness, channel: &MemoryChannel, degraded_ttl: Duration) -> Verifier {
    let channel = channel.clone();
    h.sibling_with(move |b| b.invalidation(channel).degraded_cache_ttl(degraded_ttl))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_on_one_instance_is_refused_by_the_other_within_a_second() {
    let h = Harness::new();
    let channel = MemoryChannel::default();
    let a = instance(&h, &channel, Duration::from_secs(1));
    let b = instance(&h, &channel, Duration::from_secs(1));
    wait_subscribed(&a, true).await;
    wait_subscribed(&b, true).await;
    let created = a
        .admin()
        .create_key(NewKey::new("shared"))
        .await
        .expect("create");
    let key = created.key.expose_secret().to_owned();
    assert_eq!(check(&b, &key).await, Ok(false), "b caches the valid key");

    let published = channel.published();
    a.admin().revoke(&created.record.id).await.expect("revoke");
    assert_eq!(
        channel.published(),
        published + 1,
        "the admin published once"
    );
    let took = measure(
        Duration::from_secs(1),
        "b refuses the revoked key",
        || async { check(&b, &key).await == Err(Reason::Revoked) },
    )
    .await;
    println!("revoke seen by the other instance after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revocation_bound_follows_the_subscription() {
    let h = Harness::new();
    let secs = Duration::from_secs;
    // No channel: changes made elsewhere are seen when the cached record expires.
    assert_eq!(h.verifier.revocation_bound(), secs(30));
    let short = h.sibling_with(|b| b.cache_ttl(secs(7)));
    assert_eq!(short.revocation_bound(), secs(7));

    // A channel that states no liveness bound promises nothing better than the TTL.
    let silent = MemoryChannel::default();
    let v = instance(&h, &silent, secs(1));
    wait_subscribed(&v, true).await;
    assert_eq!(v.revocation_bound(), secs(30));

    // One that does: the longer of its bound and the degraded TTL, at most the cache TTL.
    let quick = MemoryChannel::default().with_liveness_bound(Duration::from_millis(600));
    let v = instance(&h, &quick, secs(1));
    wait_subscribed(&v, true).await;
    assert_eq!(v.revocation_bound(), secs(1));
    let slow = MemoryChannel::default().with_liveness_bound(secs(8));
    let v = instance(&h, &slow, secs(1));
    wait_subscribed(&v, true).await;
    assert_eq!(v.revocation_bound(), secs(8));
    let v2 = {
        let slow = slow.clone();
        h.sibling_with(move |b| b.invalidation(slow).cache_ttl(secs(5)))
    };
    wait_subscribed(&v2, true).await;
    assert_eq!(v2.revocation_bound(), secs(5), "capped at the cache TTL");

    // Degraded (the channel down): the degraded TTL, until subscribed again.
    slow.set_down(true);
    wait_subscribed(&v, false).await;
    assert_eq!(v.revocation_bound(), secs(1));
    slow.set_down(false);
    wait_subscribed(&v, true).await;
    assert_eq!(v.revocation_bound(), secs(8));
}

#[tokio::test]
async fn without_a_channel_the_other_instance_keeps_its_cached_record() {
    // The control for the test above: the cache alone would keep the revoked key alive.
    let h = Harness::new();
    let b = h.sibling();
    let (key, id) = h.create(NewKey::new("cached")).await;
    assert_eq!(check(&b, &key).await, Ok(false));
    h.verifier.admin().revoke(&id).await.expect("revoke");
    assert_eq!(check(&h.verifier, &key).await, Err(Reason::Revoked));
    assert_eq!(check(&b, &key).await, Ok(false), "b serves its cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_channel_down_a_missed_revoke_is_enforced_within_the_degraded_ttl() {
    let h = Harness::new();
    let channel = MemoryChannel::default();
    let degraded = Duration::from_millis(300);
    let b = instance(&h, &channel, degraded);
    wait_subscribed(&b, true).await;
    let (key, id) = h.create(NewKey::new("cut")).await;
    assert_eq!(check(&b, &key).await, Ok(false));

    channel.set_down(true);
    let noticed = measure(Duration::from_secs(1), "b notices the cut", || async {
        b.invalidation_subscribed() == Some(false)
    })
    .await;
    // The revoke goes straight to the store: its message is lost, as one sent during a cut.
    let revoked_at = Instant::now();
    h.store.revoke(&id).await.expect("revoke");
    let took = measure(
        degraded + Duration::from_millis(200),
        "b refuses within the degraded TTL",
        || async { check(&b, &key).await == Err(Reason::Revoked) },
    )
    .await;
    assert!(revoked_at.elapsed() >= took);
    println!("cut noticed after {noticed:?}; missed revoke enforced after {took:?}");

    // Back up: b subscribes again by itself.
    let subscribes = channel.subscribes();
    channel.set_down(false);
    wait_subscribed(&b, true).await;
    assert!(channel.subscribes() > subscribes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_again_empties_the_cache() {
    let h = Harness::new();
    let channel = MemoryChannel::default();
    // A degraded TTL longer than the test: only the flush on resubscription can evict.
    let b = instance(&h, &channel, Duration::from_secs(30));
    wait_subscribed(&b, true).await;
    let (key, id) = h.create(NewKey::new("flushed")).await;
    assert_eq!(check(&b, &key).await, Ok(false));

    channel.set_down(true);
    wait_subscribed(&b, false).await;
    h.store.revoke(&id).await.expect("revoke");
    assert_eq!(
        check(&b, &key).await,
        Ok(false),
        "still cached while degraded"
    );
    channel.set_down(false);
    wait_subscribed(&b, true).await;
    assert_eq!(check(&b, &key).await, Err(Reason::Revoked));
}

#[tokio::test]
async fn the_admin_publishes_every_change_unless_the_store_does() {
    for store_publishes in [false, true] {
        let h = Harness::new();
        let channel = MemoryChannel::new(store_publishes);
        let a = instance(&h, &channel, Duration::from_secs(1));
        let admin = a.admin();
        let created = admin
            .create_key(NewKey::new("changes"))
            .await
            .expect("create");
        let id = created.record.id;
        admin.rename(&id, "renamed").await.expect("rename");
        admin.disable(&id).await.expect("disable");
        admin.enable(&id).await.expect("enable");
        admin
            .rotate(&id, Duration::from_secs(60))
            .await
            .expect("rotate");
        // Refused changes publish nothing.
        admin.revoke(&id).await.expect("revoke");
        assert!(admin.enable(&id).await.is_err());
        admin.delete(&id).await.expect("delete");
        // create, rename, disable, enable, rotate (old and new), revoke, delete.
        let expected = if store_publishes { 0 } else { 8 };
        assert_eq!(
            channel.published(),
            expected,
            "store publishes: {store_publishes}"
        );
    }
}

#[tokio::test]
async fn a_failed_publish_leaves_the_change_in_place() {
    let h = Harness::new();
    let channel = MemoryChannel::default();
    let a = instance(&h, &channel, Duration::from_secs(1));
    let (key, id) = h.create(NewKey::new("unpublished")).await;
    channel.set_down(true);
    a.admin().revoke(&id).await.expect("the change stands");
    assert_eq!(channel.published(), 0);
    assert!(h.store.get(&id).await.unwrap().revoked_at.is_some());
    assert_eq!(check(&a, &key).await, Err(Reason::Revoked));
}

// --- stale-if-error ---------------------------------------------------------------------------

const TTL: Duration = Duration::from_millis(200);
const GRACE: Duration = Duration::from_millis(700);

fn stale_instance(h: &Harness, grace: Duration, sink: &CapturingSink) -> Verifier {
    let sink = sink.clone();
    h.sibling_with(move |b| b.cache_ttl(TTL).stale_if_error(grace).audit_sink(sink))
}

#[tokio::test]
async fn stale_if_error_serves_a_cached_valid_key_for_its_grace_and_says_so() {
    let h = Harness::new();
    let sink = CapturingSink::default();
    let v = stale_instance(&h, GRACE, &sink);
    let (key, _) = h.create(NewKey::new("stale")).await;
    let (revoked, revoked_id) = h.create(NewKey::new("revoked")).await;
    let (never_cached, _) = h.create(NewKey::new("cold")).await;
    h.store.revoke(&revoked_id).await.unwrap();
    let loaded = Instant::now();
    assert_eq!(check(&v, &key).await, Ok(false), "fresh");
    assert_eq!(check(&v, &revoked).await, Err(Reason::Revoked));

    h.store.set_down(true);
    assert_eq!(
        check(&v, &key).await,
        Ok(false),
        "within the TTL, no store access"
    );
    tokio::time::sleep(TTL.saturating_sub(loaded.elapsed()) + Duration::from_millis(20)).await;
    let finds = h.store.finds();
    assert_eq!(check(&v, &key).await, Ok(true), "past the TTL: stale");
    assert_eq!(h.store.finds(), finds + 1, "one store retry");
    assert_eq!(check(&v, &key).await, Ok(true));
    assert_eq!(
        h.store.finds(),
        finds + 1,
        "one retry per second, not per request"
    );
    assert_eq!(
        check(&v, &revoked).await,
        Err(Reason::Revoked),
        "a record known revoked is never served"
    );
    assert_eq!(
        check(&v, &never_cached).await,
        Err(Reason::StoreUnavailable),
        "nothing cached: 503"
    );

    // Through the HTTP layer, the audit event says it was stale.
    let app = axum_app(&v);
    assert_eq!(send_bearer(&app, "/hello", &key).await.status, 200);
    v.flush_audit().await;
    let events = sink.take();
    let last = events.last().unwrap_or_else(|| panic!("no audit event"));
    assert_eq!(last.detail.as_deref(), Some(keygate::audit::STALE_DETAIL));

    // Past the grace: 503.
    tokio::time::sleep((TTL + GRACE).saturating_sub(loaded.elapsed()) + Duration::from_millis(20))
        .await;
    assert_eq!(check(&v, &key).await, Err(Reason::StoreUnavailable));

    // The store back: fresh again.
    h.store.set_down(false);
    assert_eq!(check(&v, &key).await, Ok(false));
}

#[tokio::test]
async fn without_stale_if_error_an_expired_entry_and_a_down_store_give_503() {
    let h = Harness::new();
    let sink = CapturingSink::default();
    let v = stale_instance(&h, Duration::ZERO, &sink);
    let (key, _) = h.create(NewKey::new("strict")).await;
    assert_eq!(check(&v, &key).await, Ok(false));
    h.store.set_down(true);
    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    assert_eq!(check(&v, &key).await, Err(Reason::StoreUnavailable));
}

#[tokio::test]
async fn a_key_revoked_through_the_admin_is_not_served_stale() {
    let h = Harness::new();
    let sink = CapturingSink::default();
    let v = stale_instance(&h, GRACE, &sink);
    let (key, id) = h.create(NewKey::new("evicted")).await;
    assert_eq!(check(&v, &key).await, Ok(false));
    v.admin().revoke(&id).await.unwrap();
    h.store.set_down(true);
    // The revoke evicted the record: with the store down, 503, never an allow.
    assert_eq!(check(&v, &key).await, Err(Reason::StoreUnavailable));
}
