//! The SQLite change feed (`keygate_changes`, written by triggers) and `SqliteInvalidation`:
//! what is announced, to whom, in which order, and what a subscription does when rows were
//! pruned or the feed cannot be read. Each test has its own file in a temp directory.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant, SystemTime};

use keygate::owner::{NewOwner, OwnerUpdate};
use keygate::store::KeyRehash;
use keygate::{
    Invalidated, Invalidation, KeyAdmin, KeyChange, KeyId, KeyStore, Keyring, NewKey, Reason,
    Rotation, StoreError, Subscription, Verifier,
};
use keygate_sqlx::SqliteStore;
use tempfile::TempDir;

/// How long a test waits for a change it expects (loaded CI machines are slow).
const DELIVERY: Duration = Duration::from_secs(10);

fn keyring() -> Keyring {
    Keyring::development("feed_test").unwrap()
}

async fn store() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("keygate.db"))
        .await
        .unwrap();
    (dir, store)
}

/// Another pool on the same file: what another process (the CLI, a second service) has.
async fn other_process(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(dir.path().join("keygate.db"))
        .await
        .unwrap()
}

async fn create(store: &SqliteStore, name: &str) -> (String, KeyId) {
    let created = store
        .create(keyring().mint(NewKey::new(name)).unwrap())
        .await
        .unwrap();
    (created.key.expose_secret().to_owned(), created.record.id)
}

async fn next(subscription: &mut Box<dyn Subscription>) -> Invalidated {
    tokio::time::timeout(DELIVERY, subscription.next())
        .await
        .expect("a change within the delivery bound")
        .expect("the subscription works")
}

/// Nothing more arrives for a few poll intervals.
async fn nothing_more(subscription: &mut Box<dyn Subscription>) {
    let more = tokio::time::timeout(Duration::from_millis(400), subscription.next()).await;
    assert!(more.is_err(), "unexpected: {more:?}");
}

#[tokio::test]
async fn every_management_change_is_announced_in_commit_order_and_nothing_else() {
    let (dir, store) = store().await;
    let mut subscription = store.invalidation().subscribe().await.unwrap();
    // Changes by another process on the file.
    let other = other_process(&dir).await;

    let (_, a) = create(&other, "a").await;
    other
        .apply(&a, KeyChange::Rename("a2".to_owned()))
        .await
        .unwrap();
    let rotated = other
        .rotate_with(
            &a,
            keyring().mint(NewKey::new("b")).unwrap(),
            Rotation::new(Duration::from_secs(60)).unwrap(),
        )
        .await
        .unwrap();
    let b = rotated.new.record.id;
    other.delete(&b).await.unwrap();
    // Refused changes are never announced.
    let unknown = KeyId::random();
    assert!(matches!(
        other.apply(&unknown, KeyChange::Revoke).await,
        Err(StoreError::NotFound(_))
    ));
    // Neither are last-used times nor re-hashing under a new pepper.
    other
        .record_last_used(&[(a, SystemTime::now())])
        .await
        .unwrap();
    let digest = keyring().peppers().digest(b"anything").1;
    other
        .rehash(&[KeyRehash::new(a, 0, 1, digest)])
        .await
        .unwrap();

    let expected = [a, a, b, a, b].map(Invalidated::Key);
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(&next(&mut subscription).await, want, "change {i}");
    }
    nothing_more(&mut subscription).await;
}

#[tokio::test]
async fn every_subscription_on_the_file_sees_every_change() {
    let (dir, store) = store().await;
    let other = other_process(&dir).await;
    let mut first = store.invalidation().subscribe().await.unwrap();
    let mut second = other.invalidation().subscribe().await.unwrap();
    let mut ids = Vec::new();
    for name in ["one", "two", "three"] {
        ids.push(create(&store, name).await.1);
    }
    for subscription in [&mut first, &mut second] {
        for id in &ids {
            assert_eq!(next(subscription).await, Invalidated::Key(*id));
        }
        nothing_more(subscription).await;
    }
}

#[tokio::test]
async fn a_subscription_hears_only_what_commits_after_it_opened() {
    let (_dir, store) = store().await;
    create(&store, "before").await;
    let mut subscription = store.invalidation().subscribe().await.unwrap();
    let (_, after) = create(&store, "after").await;
    assert_eq!(next(&mut subscription).await, Invalidated::Key(after));
    nothing_more(&mut subscription).await;
}

#[tokio::test]
async fn rows_pruned_before_they_were_read_mean_everything_changed() {
    let (_dir, store) = store().await;
    let mut subscription = store
        .invalidation()
        .poll_interval(Duration::from_millis(300))
        .subscribe()
        .await
        .unwrap();
    let (_, a) = create(&store, "a").await;
    let (_, b) = create(&store, "b").await;
    // A's row goes before the subscription reads it (as pruning would).
    keygate_sqlx::sqlx::query("DELETE FROM keygate_changes WHERE key_id = ?")
        .bind(a.as_str())
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(next(&mut subscription).await, Invalidated::All);
    assert_eq!(next(&mut subscription).await, Invalidated::Key(b));
    nothing_more(&mut subscription).await;
}

#[tokio::test]
async fn the_feed_keeps_its_newest_ten_thousand_rows() {
    let (_dir, store) = store().await;
    let (_, id) = create(&store, "busy").await;
    let mut tx = store.pool().begin().await.unwrap();
    for i in 0..10_050_i64 {
        keygate_sqlx::sqlx::query("UPDATE keygate_keys SET updated_at = ? WHERE id = ?")
            .bind(i)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let (rows, first, last): (i64, i64, i64) =
        keygate_sqlx::sqlx::query_as("SELECT count(*), min(seq), max(seq) FROM keygate_changes")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(rows, 10_000);
    assert_eq!(last, 10_051, "one row for the creation, one per update");
    assert_eq!(first, last - 9_999);
}

#[tokio::test]
async fn a_backlog_longer_than_one_read_arrives_whole_and_in_order() {
    let (_dir, store) = store().await;
    let mut subscription = store
        .invalidation()
        .poll_interval(Duration::from_millis(200))
        .subscribe()
        .await
        .unwrap();
    let channel = store.invalidation();
    let ids: Vec<KeyId> = (0..1_200).map(|_| KeyId::random()).collect();
    for id in &ids {
        channel.publish(Invalidated::Key(*id)).await.unwrap();
    }
    channel.publish(Invalidated::All).await.unwrap();
    for id in &ids {
        assert_eq!(next(&mut subscription).await, Invalidated::Key(*id));
    }
    assert_eq!(next(&mut subscription).await, Invalidated::All);
    nothing_more(&mut subscription).await;
}

#[tokio::test]
async fn a_feed_that_cannot_be_read_ends_the_subscription_with_an_error() {
    let (_dir, store) = store().await;
    let mut subscription = store.invalidation().subscribe().await.unwrap();
    keygate_sqlx::sqlx::query("DROP TABLE keygate_changes")
        .execute(store.pool())
        .await
        .unwrap();
    let ended = tokio::time::timeout(DELIVERY, subscription.next())
        .await
        .expect("the subscription notices within the delivery bound");
    assert!(ended.is_err(), "{ended:?}");
    // And it stays closed: the verifier subscribes again instead.
    assert!(subscription.next().await.is_err());
}

#[tokio::test]
async fn the_store_publishes_so_the_admin_does_not() {
    let (_dir, store) = store().await;
    let channel = store.invalidation();
    assert!(channel.published_by_store());
    assert_eq!(
        channel.liveness_bound(),
        Duration::from_millis(600),
        "poll interval 100 ms + liveness timeout 500 ms"
    );
    assert_eq!(
        Invalidation::liveness_bound(&channel),
        Some(Duration::from_millis(600))
    );
    // Through a verifier's admin: one row per change, not two.
    let verifier = Verifier::builder(keyring(), store.clone())
        .invalidation(store.invalidation())
        .build();
    let mut subscription = channel.subscribe().await.unwrap();
    let created = verifier
        .admin()
        .create_key(NewKey::new("once"))
        .await
        .unwrap();
    assert_eq!(
        next(&mut subscription).await,
        Invalidated::Key(created.record.id)
    );
    nothing_more(&mut subscription).await;
}

#[tokio::test]
async fn an_in_memory_store_polls_through_its_own_pool() {
    let store = SqliteStore::in_memory().await.unwrap();
    let mut subscription = store.invalidation().subscribe().await.unwrap();
    let (_, id) = create(&store, "memory").await;
    assert_eq!(next(&mut subscription).await, Invalidated::Key(id));
    nothing_more(&mut subscription).await;
}

/// The acceptance path in one process: a verifier subscribed to the feed refuses a key revoked
/// through another pool on the file within a second, and reports its revocation bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_by_another_process_is_refused_within_a_second() {
    let (dir, store) = store().await;
    let verifier = Verifier::builder(keyring(), store.clone())
        .invalidation(store.invalidation())
        .build();
    assert_eq!(
        verifier.revocation_bound(),
        Duration::from_secs(1),
        "degraded until subscribed"
    );
    let deadline = Instant::now() + DELIVERY;
    while verifier.invalidation_subscribed() != Some(true) {
        assert!(Instant::now() < deadline, "not subscribed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Subscribed: max(600 ms liveness bound, 1 s degraded TTL).
    assert_eq!(verifier.revocation_bound(), Duration::from_secs(1));

    let other = other_process(&dir).await;
    let mut seen = Vec::new();
    for round in 0..20 {
        let (key, id) = create(&other, &format!("k{round}")).await;
        // Cached as valid.
        let presented = |key: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("authorization", format!("Bearer {key}").parse().unwrap());
            let uri = http::Uri::from_static("/");
            let view = keygate::HttpRequestView::new(&headers, &uri, None);
            verifier.extract(&view).unwrap()
        };
        // The creation may still be on its way: an unknown id is cached too, until evicted.
        let accepted = Instant::now() + DELIVERY;
        while verifier.verify(&presented(&key)).await.is_err() {
            assert!(
                Instant::now() < accepted,
                "a new key is accepted once announced"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        other.apply(&id, KeyChange::Revoke).await.unwrap();
        let revoked = Instant::now();
        loop {
            match verifier.verify(&presented(&key)).await {
                Ok(_) => {
                    assert!(revoked.elapsed() < DELIVERY, "still accepted");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(rejection) => {
                    assert_eq!(rejection.reason(), Reason::Revoked);
                    break;
                }
            }
        }
        seen.push(revoked.elapsed());
    }
    seen.sort();
    let worst = seen[seen.len() - 1];
    println!(
        "revoke seen after: median {:?}, worst {worst:?}",
        seen[seen.len() / 2]
    );
    assert!(worst < Duration::from_secs(1), "worst {worst:?}");
}

#[tokio::test]
async fn without_the_feed_the_revocation_bound_is_the_cache_ttl() {
    let (_dir, store) = store().await;
    let verifier = Verifier::builder(keyring(), store).build();
    assert_eq!(verifier.revocation_bound(), Duration::from_secs(30));
    assert_eq!(verifier.invalidation_subscribed(), None);
}

/// The feed is read once per poll interval, the first time one interval after the
/// subscription opened, and a backlog longer than one read is read at once, not one read per
/// interval. (Lower bounds on delays: a slow machine only makes them longer.)
#[tokio::test]
async fn reads_are_paced_by_the_poll_interval_and_a_backlog_is_read_at_once() {
    let (_dir, store) = store().await;
    let interval = Duration::from_millis(400);
    let channel = store.invalidation().poll_interval(interval);
    let opened = Instant::now();
    let mut subscription = channel.subscribe().await.unwrap();
    channel.publish(Invalidated::All).await.unwrap();
    assert_eq!(next(&mut subscription).await, Invalidated::All);
    let first = opened.elapsed();
    assert!(first >= interval * 3 / 4, "first read after {first:?}");

    // The read that found it was a poll: the next one is an interval later.
    let read = Instant::now();
    channel.publish(Invalidated::All).await.unwrap();
    assert_eq!(next(&mut subscription).await, Invalidated::All);
    let paced = read.elapsed();
    assert!(paced >= interval * 3 / 4, "next read after {paced:?}");

    // 1,100 rows (three reads of at most 512) arrive in one go.
    let ids: Vec<KeyId> = (0..1_100).map(|_| KeyId::random()).collect();
    for id in &ids {
        channel.publish(Invalidated::Key(*id)).await.unwrap();
    }
    assert_eq!(next(&mut subscription).await, Invalidated::Key(ids[0]));
    let backlog = Instant::now();
    for id in &ids[1..] {
        assert_eq!(next(&mut subscription).await, Invalidated::Key(*id));
    }
    let whole = backlog.elapsed();
    assert!(
        whole < interval / 2,
        "the backlog took {whole:?}: paced like new rows"
    );
}

#[tokio::test]
async fn debug_output_names_the_file_and_the_settings() {
    let (_dir, store) = store().await;
    let channel = store
        .invalidation()
        .poll_interval(Duration::from_millis(250));
    let shown = format!("{channel:?}");
    assert!(shown.starts_with("SqliteInvalidation"), "{shown}");
    assert!(
        shown.contains("keygate.db") && shown.contains("250ms"),
        "{shown}"
    );
}

/// `keygate revoke --owner` on a file: every key of the owner, revoked by another process in
/// one transaction, is refused by a subscribed verifier within a second; so is a new owner
/// limit (the owner's keys are announced although their rows do not change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_revoked_by_another_process_is_refused_within_a_second() {
    let (dir, store) = store().await;
    let verifier = Verifier::builder(keyring(), store.clone())
        .invalidation(store.invalidation())
        .build();
    let deadline = Instant::now() + DELIVERY;
    while verifier.invalidation_subscribed() != Some(true) {
        assert!(Instant::now() < deadline, "not subscribed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let other = other_process(&dir).await;
    let check = |key: String| {
        let verifier = verifier.clone();
        async move {
            let mut headers = http::HeaderMap::new();
            headers.insert("authorization", format!("Bearer {key}").parse().unwrap());
            let uri = http::Uri::from_static("/");
            let view = keygate::HttpRequestView::new(&headers, &uri, None);
            let presented = verifier.extract(&view).unwrap();
            verifier
                .verify(&presented)
                .await
                .map(drop)
                .map_err(|r| r.reason())
        }
    };
    let mut keys = Vec::new();
    for n in 0..5 {
        let created = other
            .create(
                keyring()
                    .mint(NewKey::new(format!("k{n}")).owner("departed"))
                    .unwrap(),
            )
            .await
            .unwrap();
        keys.push(created.key.expose_secret().to_owned());
    }
    let (bystander, _) = create(&other, "bystander").await;
    for key in keys.iter().chain([&bystander]) {
        let accepted = Instant::now() + DELIVERY;
        while check(key.clone()).await.is_err() {
            assert!(
                Instant::now() < accepted,
                "a new key is accepted once announced"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    // A shared limit set by another process applies at once: 2 more requests in all.
    other
        .update_owner(
            "departed",
            keygate::owner::OwnerUpdate::new().rate_limit(Some(
                "2/1h".parse::<keygate::rate::RatePolicy>().unwrap().into(),
            )),
        )
        .await
        .unwrap();
    let limited = Instant::now();
    while check(keys[0].clone()).await != Err(Reason::RateLimited) {
        assert!(
            limited.elapsed() < Duration::from_secs(1),
            "the owner limit is not applied"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(check(keys[1].clone()).await, Err(Reason::RateLimited));
    println!("owner limit seen after {:?}", limited.elapsed());

    let changed = other
        .change_owner_keys("departed", keygate::owner::OwnerKeysChange::Revoke)
        .await
        .unwrap();
    assert_eq!(changed.len(), keys.len());
    let revoked = Instant::now();
    for key in &keys {
        while check(key.clone()).await != Err(Reason::Revoked) {
            assert!(revoked.elapsed() < Duration::from_secs(1), "still accepted");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let took = revoked.elapsed();
    println!("owner's {} keys all refused after {took:?}", keys.len());
    assert_eq!(
        check(bystander).await,
        Ok(()),
        "another owner's key is untouched"
    );
}

/// A top-up from another process (the CLI) on the file: a verifier subscribed to the feed lets
/// the exhausted key in again within a second, for exactly the credits added; restarted on the
/// file after saving its counters, it adds them no second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_up_by_another_process_is_spent_once_within_a_second() {
    top_up_from_another_process(false).await;
}

/// The same for an owner's shared credits, topped up by another process: the store announces
/// every key of the owner, so the exhausted key is let in within a second, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_top_up_by_another_process_is_spent_once_within_a_second() {
    top_up_from_another_process(true).await;
}

/// A key with a `credits 1` quota of its own, or (`owner`) of an owner with one, topped up by
/// 3 from another process.
async fn top_up_from_another_process(owner: bool) {
    let (dir, store) = store().await;
    let service = || {
        Verifier::builder(keyring(), store.clone())
            .invalidation(store.invalidation())
            .build()
    };
    let verifier = service();
    let deadline = Instant::now() + DELIVERY;
    while verifier.invalidation_subscribed() != Some(true) {
        assert!(Instant::now() < deadline, "not subscribed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let other = other_process(&dir).await;
    let credits = "credits 1".parse().unwrap();
    let spec = if owner {
        other
            .create_owner(NewOwner::new("prepaid-co").quota(credits))
            .await
            .unwrap();
        NewKey::new("prepaid").owner("prepaid-co")
    } else {
        NewKey::new("prepaid").quota(credits)
    };
    let created = other.create(keyring().mint(spec).unwrap()).await.unwrap();
    let (key, id) = (created.key.expose_secret().to_owned(), created.record.id);
    let verify = |verifier: &Verifier| {
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", format!("Bearer {key}").parse().unwrap());
        let uri = http::Uri::from_static("/");
        let view = keygate::HttpRequestView::new(&headers, &uri, None);
        let presented = verifier.extract(&view).unwrap();
        let verifier = verifier.clone();
        async move { verifier.verify(&presented).await.map_err(|r| r.reason()) }
    };
    let accepted = Instant::now() + DELIVERY;
    while verify(&verifier).await.is_err() {
        assert!(
            Instant::now() < accepted,
            "the new key is accepted once announced"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(verify(&verifier).await.err(), Some(Reason::QuotaExhausted));

    let granted = if owner {
        let update = OwnerUpdate::new().add_credits(3);
        other
            .update_owner("prepaid-co", update)
            .await
            .unwrap()
            .quota_granted
    } else {
        let topped = other.apply(&id, KeyChange::AddCredits(3)).await.unwrap();
        topped.quota_granted
    };
    assert_eq!(granted, 3);
    let added = Instant::now();
    while verify(&verifier).await.is_err() {
        assert!(
            added.elapsed() < Duration::from_secs(1),
            "not let in within a second"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for _ in 0..2 {
        assert!(verify(&verifier).await.is_ok());
    }
    assert_eq!(verify(&verifier).await.err(), Some(Reason::QuotaExhausted));

    verifier.flush_quota().await.unwrap();
    drop(verifier);
    let restarted = service();
    assert_eq!(
        verify(&restarted).await.err(),
        Some(Reason::QuotaExhausted),
        "a restart does not add the top-up again"
    );
}
