//! `RedisInvalidation`: fan-out to every subscriber on the shared Redis; a killed or silently
//! dead subscription fails promptly (on a private `redis-server`, so only this test's clients
//! are killed or frozen).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::{PrivateRedis, connection, ok, query, redis_url, unique_prefix};
use keygate::{Invalidated, Invalidation, KeyId, Subscription};
use keygate_redis::{RedisInvalidation, redis};

async fn channel(url: &str, prefix: &str) -> RedisInvalidation {
    match RedisInvalidation::builder(url).prefix(prefix).build().await {
        Ok(channel) => channel,
        Err(e) => panic!("KEYGATE_TEST_REDIS_URL is not a Redis URL: {e}"),
    }
}

async fn subscribe(channel: &RedisInvalidation) -> Box<dyn Subscription> {
    ok(channel.subscribe().await, "subscribe")
}

async fn receive(subscription: &mut Box<dyn Subscription>) -> Invalidated {
    match tokio::time::timeout(Duration::from_secs(5), subscription.next()).await {
        Ok(received) => ok(received, "next"),
        Err(_) => panic!("nothing received within 5 s"),
    }
}

/// Ids of the pub/sub clients connected to `url`.
async fn pubsub_clients(url: &str) -> Vec<i64> {
    let mut redis = connection(url).await;
    let list: String = query(
        &mut redis,
        redis::cmd("CLIENT").arg(&["LIST", "TYPE", "pubsub"]),
    )
    .await;
    list.lines()
        .filter_map(|line| {
            line.split(' ')
                .find_map(|field| field.strip_prefix("id="))
                .and_then(|id| id.parse().ok())
        })
        .collect()
}

#[tokio::test]
async fn a_publish_reaches_every_subscriber() {
    let Some(url) = redis_url("a_publish_reaches_every_subscriber") else {
        return;
    };
    let prefix = unique_prefix("fanout");
    let publisher = channel(&url, &prefix).await;
    let subscriber = channel(&url, &prefix).await;
    assert_eq!(publisher.channel(), format!("{prefix}:invalidate"));
    assert!(!publisher.published_by_store());
    let mut first = subscribe(&subscriber).await;
    let mut second = subscribe(&subscriber).await;
    let mut elsewhere = subscribe(&channel(&url, &unique_prefix("other")).await).await;

    let id = KeyId::random();
    ok(publisher.publish(Invalidated::Key(id)).await, "publish");
    assert_eq!(receive(&mut first).await, Invalidated::Key(id));
    assert_eq!(receive(&mut second).await, Invalidated::Key(id));
    ok(publisher.publish(Invalidated::All).await, "publish all");
    assert_eq!(receive(&mut first).await, Invalidated::All);
    assert_eq!(receive(&mut second).await, Invalidated::All);

    // Another prefix is another channel.
    let quiet = tokio::time::timeout(Duration::from_millis(200), elsewhere.next()).await;
    assert!(quiet.is_err(), "another prefix's subscriber got {quiet:?}");

    // Anything else on the channel means "drop everything".
    let mut redis = connection(&url).await;
    let _: i64 = query(
        &mut redis,
        redis::cmd("PUBLISH")
            .arg(publisher.channel())
            .arg("not an id"),
    )
    .await;
    assert_eq!(receive(&mut first).await, Invalidated::All);
}

#[tokio::test]
async fn a_killed_subscription_fails_at_once_and_subscribing_again_works() {
    let Some(_) = redis_url("a_killed_subscription_fails_at_once_and_subscribing_again_works")
    else {
        return;
    };
    let redis = PrivateRedis::start().await;
    let url = redis.url();
    let channel = channel(&url, "kill").await;
    let mut survivor = subscribe(&channel).await;
    let before = pubsub_clients(&url).await;
    let mut victim = subscribe(&channel).await;
    let victim_ids: Vec<i64> = pubsub_clients(&url)
        .await
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    let [victim_id] = victim_ids[..] else {
        panic!("expected one new pub/sub client, found {victim_ids:?}")
    };

    let waiting = tokio::spawn(async move {
        let result = victim.next().await;
        (result, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut admin = connection(&url).await;
    let killed_at = Instant::now();
    let killed: i64 = query(
        &mut admin,
        redis::cmd("CLIENT").arg("KILL").arg("ID").arg(victim_id),
    )
    .await;
    assert_eq!(killed, 1);
    let (result, failed_at) = match tokio::time::timeout(Duration::from_secs(2), waiting).await {
        Ok(joined) => ok(joined, "task"),
        Err(_) => panic!("the killed subscription's next() did not fail within 2 s"),
    };
    let took = failed_at.saturating_duration_since(killed_at);
    eprintln!("CLIENT KILL → next() failed after {took:?}");
    assert!(result.is_err(), "a killed subscription fails: {result:?}");
    assert!(took < Duration::from_secs(1), "promptly: {took:?}");

    // The other subscription is untouched, and a new one works.
    let mut again = subscribe(&channel).await;
    let id = KeyId::random();
    ok(channel.publish(Invalidated::Key(id)).await, "publish");
    assert_eq!(receive(&mut survivor).await, Invalidated::Key(id));
    assert_eq!(receive(&mut again).await, Invalidated::Key(id));
}

#[tokio::test]
async fn a_silently_dead_connection_is_noticed_by_the_ping() {
    let Some(_) = redis_url("a_silently_dead_connection_is_noticed_by_the_ping") else {
        return;
    };
    let redis = PrivateRedis::start().await;
    let interval = Duration::from_millis(300);
    let timeout = Duration::from_millis(300);
    let channel = ok(
        RedisInvalidation::builder(redis.url())
            .ping_interval(interval)
            .ping_timeout(timeout)
            .build()
            .await,
        "build",
    );
    let mut subscription = subscribe(&channel).await;
    // Quiet but alive: pings are answered, next() keeps waiting.
    let quiet = tokio::time::timeout(3 * interval, subscription.next()).await;
    assert!(
        quiet.is_err(),
        "a quiet, live subscription keeps waiting: {quiet:?}"
    );

    redis.freeze();
    let start = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(5), subscription.next()).await;
    let took = start.elapsed();
    redis.thaw();
    eprintln!("Redis frozen → next() failed after {took:?}");
    match result {
        Ok(Err(_)) => {}
        other => panic!("a frozen server's subscription must fail: {other:?}"),
    }
    assert!(
        took <= interval + timeout + Duration::from_millis(300),
        "within ping interval + ping timeout: {took:?}"
    );
}

/// The liveness bound the verifier's revocation bound is built from: ping interval + timeout.
/// (Building needs no Redis.)
#[tokio::test]
async fn the_liveness_bound_is_the_ping_interval_plus_the_ping_timeout() {
    let default = channel("redis://127.0.0.1:1", "kgt_bound").await;
    assert_eq!(default.liveness_bound(), Some(Duration::from_secs(4)));
    let tuned = ok(
        RedisInvalidation::builder("redis://127.0.0.1:1")
            .ping_interval(Duration::from_millis(700))
            .ping_timeout(Duration::from_millis(200))
            .build()
            .await,
        "build",
    );
    assert_eq!(tuned.liveness_bound(), Some(Duration::from_millis(900)));
}
