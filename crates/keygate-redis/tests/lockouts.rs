//! `RedisRateLimiter`'s local lockouts: the failed-attempt pre-check (`peek_now` on a client)
//! answered from the lockouts this instance learned from Redis, without a round trip.
//!
//! Runs only when `KEYGATE_TEST_REDIS_URL` is set; the tests that prove "no round trip" use a
//! private `redis-server` (on PATH) they can stop or read the command counts of.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{PrivateRedis, UNDER_LOAD, connection, ok, redis_url, script_calls, unique_prefix};
use keygate::KeyId;
use keygate::rate::{LimitKey, RateDecision, RateLimiter, RatePolicy};
use keygate_redis::{FailurePolicy, RedisRateLimiter};

fn policy(text: &str) -> RatePolicy {
    ok(text.parse(), text)
}

fn client(text: &str) -> LimitKey {
    LimitKey::client(ok(text.parse::<IpAddr>(), text))
}

async fn limiter(url: &str, prefix: &str) -> RedisRateLimiter {
    ok(
        RedisRateLimiter::builder(url)
            .prefix(prefix)
            .response_timeout(UNDER_LOAD)
            .build()
            .await,
        "KEYGATE_TEST_REDIS_URL is not a Redis URL",
    )
}

async fn acquire(limiter: &RedisRateLimiter, key: LimitKey, p: RatePolicy) -> RateDecision {
    ok(limiter.acquire(key, p).await, "acquire")
}

/// `peek_now`'s answer, which must be there (answered locally).
#[track_caller]
fn local(limiter: &RedisRateLimiter, key: LimitKey, p: RatePolicy) -> RateDecision {
    match limiter.peek_now(key, p) {
        Some(Ok(decision)) => decision,
        Some(Err(e)) => panic!("peek_now failed: {e}"),
        None => panic!("peek_now did not answer locally"),
    }
}

/// Locks `key` out in Redis through `limiter` (the verifier's `count_failure`), returning the
/// denial.
async fn lock_out(limiter: &RedisRateLimiter, key: LimitKey, p: RatePolicy) -> RateDecision {
    for _ in 0..p.burst() {
        assert!(acquire(limiter, key, p).await.allowed);
    }
    let denied = acquire(limiter, key, p).await;
    assert!(!denied.allowed, "the attempt past the burst is denied");
    denied
}

#[tokio::test]
async fn a_known_lockout_is_answered_without_redis() {
    let Some(_) = redis_url("a_known_lockout_is_answered_without_redis") else {
        return;
    };
    let mut server = PrivateRedis::start().await;
    let limiter = ok(
        RedisRateLimiter::builder(server.url())
            .prefix(unique_prefix("lockout-local"))
            .response_timeout(Duration::from_millis(250))
            .build()
            .await,
        "build the limiter on the private redis",
    );
    let mut inspect = connection(&server.url()).await;
    let p = policy("3/1h");
    let (attacker, bystander) = (client("10.1.0.1"), client("10.1.0.2"));

    assert!(local(&limiter, attacker, p).allowed, "nothing learned yet");
    let denied = lock_out(&limiter, attacker, p).await;

    // No script call between these two counts: every answer is local.
    let before = script_calls(&mut inspect).await;
    for _ in 0..100 {
        let locked = local(&limiter, attacker, p);
        assert!(!locked.allowed);
        assert!(locked.retry_after > Duration::ZERO && locked.retry_after <= denied.retry_after);
        assert!(local(&limiter, bystander, p).allowed);
    }
    assert_eq!(
        script_calls(&mut inspect).await,
        before,
        "peek_now asked Redis"
    );

    // Nor with Redis gone: the lock is still known, and nothing failed open.
    server.stop();
    assert!(!local(&limiter, attacker, p).allowed, "still locked");
    assert!(local(&limiter, bystander, p).allowed);
    assert_eq!(limiter.fail_open_count(), 0, "no call went to Redis");
    // Whereas asking Redis fails open.
    assert!(ok(limiter.peek(attacker, p).await, "peek").allowed);
    assert_eq!(limiter.fail_open_count(), 1);
    assert!(
        !local(&limiter, attacker, p).allowed,
        "a fail-open answer is not Redis's: the lock stays"
    );
}

#[tokio::test]
async fn keys_and_switched_off_lockouts_are_never_answered_locally() {
    let Some(url) = redis_url("keys_and_switched_off_lockouts_are_never_answered_locally") else {
        return;
    };
    let prefix = unique_prefix("lockout-off");
    let on = limiter(&url, &prefix).await;
    let off = ok(
        RedisRateLimiter::builder(url.as_str())
            .prefix(&prefix)
            .local_lockouts(false)
            .response_timeout(UNDER_LOAD)
            .build()
            .await,
        "build",
    );
    let p = policy("2/1h");
    let key = LimitKey::Key(KeyId::random());
    assert!(on.peek_now(key, p).is_none() && on.acquire_now(key, p).is_none());
    let attacker = client("2001:db8:9:9::1");
    assert!(
        on.acquire_now(attacker, p).is_none(),
        "failures are counted in Redis"
    );

    lock_out(&off, attacker, p).await;
    assert!(
        off.peek_now(attacker, p).is_none(),
        "off: every pre-check asks Redis"
    );
    assert!(!ok(off.peek(attacker, p).await, "peek").allowed);
    assert!(
        local(&on, attacker, p).allowed,
        "`on` has not seen this lockout yet: allowed until one of its own calls is denied"
    );
    assert!(!acquire(&on, attacker, p).await.allowed);
    assert!(
        !local(&on, attacker, p).allowed,
        "learned from its own denial"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_the_count_and_each_lets_at_most_one_more_through() {
    let Some(url) = redis_url("instances_share_the_count_and_each_lets_at_most_one_more_through")
    else {
        return;
    };
    let prefix = unique_prefix("lockout-shared");
    let (a, b) = (limiter(&url, &prefix).await, limiter(&url, &prefix).await);
    let p = policy("6/1h");
    let attacker = client("10.2.0.1");
    // What the verifier does with each wrong guess, alternating between the instances: the
    // local pre-check, then (if it passes) the failure counted in Redis.
    let mut checked = 0;
    let mut counted_allowed = 0;
    for i in 0..200 {
        let instance = if i % 2 == 0 { &a } else { &b };
        if !local(instance, attacker, p).allowed {
            continue;
        }
        checked += 1;
        if acquire(instance, attacker, p).await.allowed {
            counted_allowed += 1;
        }
    }
    assert_eq!(counted_allowed, 6, "one burst across both instances");
    assert_eq!(
        checked, 8,
        "the burst, then one more attempt per instance before each learned the lockout"
    );
    assert!(!local(&a, attacker, p).allowed && !local(&b, attacker, p).allowed);
}

#[tokio::test]
async fn the_local_lock_ends_when_redis_s_does() {
    let Some(url) = redis_url("the_local_lock_ends_when_redis_s_does") else {
        return;
    };
    let limiter = limiter(&url, &unique_prefix("lockout-ends")).await;
    // One attempt per 500 ms: a lockout of just under 500 ms.
    let p = policy("2/1s burst 1");
    let attacker = client("10.3.0.1");
    let denied = lock_out(&limiter, attacker, p).await;
    let learned = Instant::now();
    let locked = local(&limiter, attacker, p);
    assert!(!locked.allowed);
    assert!(locked.retry_after <= denied.retry_after);
    assert!(locked.retry_after + Duration::from_millis(100) >= denied.retry_after);

    tokio::time::sleep_until((learned + denied.retry_after).into()).await;
    assert!(
        local(&limiter, attacker, p).allowed,
        "the local lock ended with the retry-after"
    );
    assert!(
        ok(limiter.peek(attacker, p).await, "peek").allowed,
        "and Redis's had ended too (it started earlier)"
    );
    assert!(
        acquire(&limiter, attacker, p).await.allowed,
        "one attempt allowed again"
    );
    assert!(!acquire(&limiter, attacker, p).await.allowed);
    assert!(!local(&limiter, attacker, p).allowed, "and locked again");
}

#[tokio::test]
async fn fail_closed_gives_the_pre_check_back_to_redis_once_it_fails() {
    let Some(_) = redis_url("fail_closed_gives_the_pre_check_back_to_redis_once_it_fails") else {
        return;
    };
    let mut server = PrivateRedis::start().await;
    let limiter = ok(
        RedisRateLimiter::builder(server.url())
            .prefix(unique_prefix("lockout-closed"))
            .failure_policy(FailurePolicy::Closed)
            .response_timeout(Duration::from_millis(250))
            .build()
            .await,
        "build the limiter on the private redis",
    );
    let p = policy("10/1m burst 20");
    let somebody = client("10.4.0.1");
    assert!(local(&limiter, somebody, p).allowed);
    server.stop();
    assert!(limiter.acquire(somebody, p).await.is_err(), "fails closed");
    assert!(
        limiter.peek_now(somebody, p).is_none(),
        "after a failed call, the pre-check asks Redis (and fails closed: 503)"
    );
    assert!(limiter.peek(somebody, p).await.is_err());
    server.restart().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while limiter.peek(somebody, p).await.is_err() {
        assert!(Instant::now() < deadline, "Redis back, the limiter not");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        local(&limiter, somebody, p).allowed,
        "answered locally again"
    );
}
