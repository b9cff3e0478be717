//! `RedisRateLimiter` against the shared Redis (`KEYGATE_TEST_REDIS_URL`): several limiters with
//! their own connections hold one limit, with the in-process limiter's semantics.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{UNDER_LOAD, connection, ok, query, redis_url, unique_prefix};
use keygate::KeyId;
use keygate::rate::{InProcessLimiter, LimitKey, RateDecision, RateLimiter, RatePolicy};
use keygate_redis::{RedisRateLimiter, redis};

fn policy(text: &str) -> RatePolicy {
    ok(text.parse(), text)
}

fn ip(text: &str) -> IpAddr {
    ok(text.parse(), text)
}

async fn limiter(url: &str, prefix: &str) -> RedisRateLimiter {
    match RedisRateLimiter::builder(url)
        .prefix(prefix)
        .response_timeout(UNDER_LOAD)
        .build()
        .await
    {
        Ok(limiter) => limiter,
        Err(e) => panic!("KEYGATE_TEST_REDIS_URL is not a Redis URL: {e}"),
    }
}

async fn acquire(limiter: &RedisRateLimiter, key: LimitKey, p: RatePolicy) -> RateDecision {
    ok(limiter.acquire(key, p).await, "acquire")
}

async fn peek(limiter: &RedisRateLimiter, key: LimitKey, p: RatePolicy) -> RateDecision {
    ok(limiter.peek(key, p).await, "peek")
}

fn assert_about(actual: Duration, expected: Duration, what: &str) {
    let slack = Duration::from_millis(500);
    assert!(
        actual <= expected && actual + slack >= expected,
        "{what}: {actual:?}, expected just under {expected:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_limiters_share_one_keys_limit() {
    let Some(url) = redis_url("two_limiters_share_one_keys_limit") else {
        return;
    };
    let prefix = unique_prefix("share");
    let (a, b) = (limiter(&url, &prefix).await, limiter(&url, &prefix).await);
    let p = policy("10/1m");

    // Interleaved: 10 allowed in total, not 10 each.
    let key = LimitKey::Key(KeyId::random());
    let mut allowed = 0;
    let mut first_denied = None;
    for i in 0..20 {
        let d = acquire(if i % 2 == 0 { &a } else { &b }, key, p).await;
        if d.allowed {
            allowed += 1;
            assert_eq!(d.remaining, 10 - allowed, "remaining after request {i}");
            assert_eq!(d.retry_after, Duration::ZERO);
        } else if first_denied.is_none() {
            first_denied = Some(d);
        }
    }
    assert_eq!(allowed, 10, "one 10/1m limit across both limiters");
    let Some(denied) = first_denied else {
        panic!("the 11th request was allowed")
    };
    assert_eq!(denied.remaining, 0);
    // One request every 6 s: the 11th may go 6 s after the first.
    assert_about(denied.retry_after, Duration::from_secs(6), "retry_after");
    assert_about(denied.reset, Duration::from_secs(60), "reset");
    assert_eq!(denied.retry_after_header(), "6");

    // Concurrently: 40 requests at once from both, still exactly 10.
    let key = LimitKey::Key(KeyId::random());
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { limiter.acquire(key, p).await })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        if ok(ok(task.await, "task"), "acquire").allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10, "concurrent requests share one limit");
}

#[tokio::test]
async fn peek_takes_nothing() {
    let Some(url) = redis_url("peek_takes_nothing") else {
        return;
    };
    let limiter = limiter(&url, &unique_prefix("peek")).await;
    let key = LimitKey::Key(KeyId::random());
    let p = policy("3/1m");
    let mut redis = connection(&url).await;
    for _ in 0..5 {
        let d = peek(&limiter, key, p).await;
        assert!(d.allowed);
        assert_eq!(d.remaining, 3, "the whole burst is there");
    }
    let exists: bool = query(
        &mut redis,
        redis::cmd("EXISTS").arg(limiter.state_key(&key, &p)),
    )
    .await;
    assert!(!exists, "peeking stores nothing");
    for left in [2, 1, 0] {
        assert_eq!(acquire(&limiter, key, p).await.remaining, left);
        assert_eq!(
            peek(&limiter, key, p).await.allowed,
            left > 0,
            "peek after acquiring down to {left}"
        );
    }
    let first = peek(&limiter, key, p).await;
    assert!(!first.allowed);
    assert_about(
        first.retry_after,
        Duration::from_secs(20),
        "peek's retry_after",
    );
    let again = peek(&limiter, key, p).await;
    assert!(!again.allowed && again.retry_after <= first.retry_after);
    assert!(!acquire(&limiter, key, p).await.allowed);
}

#[tokio::test]
async fn keys_expire_when_the_allowance_is_full_again() {
    let Some(url) = redis_url("keys_expire_when_the_allowance_is_full_again") else {
        return;
    };
    let limiter = limiter(&url, &unique_prefix("expire")).await;
    let mut redis = connection(&url).await;
    let key = LimitKey::Key(KeyId::random());
    let p = policy("10/1m");
    let state = limiter.state_key(&key, &p);
    assert!(acquire(&limiter, key, p).await.allowed);
    let pttl: i64 = query(&mut redis, redis::cmd("PTTL").arg(&state)).await;
    assert!(
        pttl > 5_000 && pttl <= 6_000,
        "one request: full again in 6 s, PTTL {pttl}"
    );
    for _ in 0..9 {
        acquire(&limiter, key, p).await;
    }
    let pttl: i64 = query(&mut redis, redis::cmd("PTTL").arg(&state)).await;
    assert!(pttl > 59_000 && pttl <= 60_000, "ten: 60 s, PTTL {pttl}");
    // A denial writes nothing.
    assert!(!acquire(&limiter, key, p).await.allowed);
    let after: i64 = query(&mut redis, redis::cmd("PTTL").arg(&state)).await;
    assert!(after <= pttl);

    // A fast policy's key is gone once its allowance is full again.
    let quick = policy("5/1s");
    let state = limiter.state_key(&key, &quick);
    assert!(acquire(&limiter, key, quick).await.allowed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let exists: bool = query(&mut redis, redis::cmd("EXISTS").arg(&state)).await;
        if !exists {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{state} never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        acquire(&limiter, key, quick).await.remaining,
        4,
        "a fresh start"
    );
}

#[tokio::test]
async fn different_policies_are_independent() {
    let Some(url) = redis_url("different_policies_are_independent") else {
        return;
    };
    let limiter = limiter(&url, &unique_prefix("policies")).await;
    let key = LimitKey::Key(KeyId::random());
    assert!(acquire(&limiter, key, policy("1/1h")).await.allowed);
    assert!(!acquire(&limiter, key, policy("1/1h")).await.allowed);
    let changed = acquire(&limiter, key, policy("2/1h")).await;
    assert!(changed.allowed, "a new policy starts from a full allowance");
    assert_eq!(changed.remaining, 1);
    assert!(
        acquire(&limiter, key, policy("1/1h burst 2")).await.allowed,
        "a burst is part of the policy"
    );
    let other = LimitKey::Key(KeyId::random());
    assert!(
        acquire(&limiter, other, policy("1/1h")).await.allowed,
        "keys are independent"
    );
}

#[tokio::test]
async fn client_failed_attempt_keys_are_shared_too() {
    let Some(url) = redis_url("client_failed_attempt_keys_are_shared_too") else {
        return;
    };
    let prefix = unique_prefix("client");
    let (a, b) = (limiter(&url, &prefix).await, limiter(&url, &prefix).await);
    let mut redis = connection(&url).await;
    // The verifier's default failure limit.
    let p = policy("10/1m burst 20");
    let client = LimitKey::client(ip("2001:db8:7:7:aaaa::1"));
    let same_64 = LimitKey::client(ip("2001:db8:7:7:bbbb::2"));
    assert!(peek(&a, client, p).await.allowed);
    let mut allowed = 0;
    for i in 0..30 {
        let (limiter, key) = if i % 2 == 0 {
            (&a, client)
        } else {
            (&b, same_64)
        };
        if acquire(limiter, key, p).await.allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 20, "one /64, one burst across both instances");
    let locked = peek(&b, client, p).await;
    assert!(!locked.allowed, "the client is locked out everywhere");
    assert_about(
        locked.retry_after,
        Duration::from_secs(6),
        "lockout retry_after",
    );
    let state = a.state_key(&client, &p);
    assert!(state.starts_with(&format!("{prefix}:rl:client:2001:db8:7:7::/64:")));
    let pttl: i64 = query(&mut redis, redis::cmd("PTTL").arg(&state)).await;
    assert!(
        pttl > 0 && pttl <= 120_000,
        "PTTL {pttl} within the refill time"
    );
    assert!(
        peek(&a, LimitKey::client(ip("10.9.9.9")), p).await.allowed,
        "another client is not locked out"
    );
}

/// The same sequence through both limiters gives the same answers (to the microsecond the
/// Redis one works in).
#[tokio::test]
async fn answers_like_the_in_process_limiter() {
    let Some(url) = redis_url("answers_like_the_in_process_limiter") else {
        return;
    };
    let redis_limiter = limiter(&url, &unique_prefix("same")).await;
    let in_process = InProcessLimiter::new();
    let p = policy("5/1m burst 3");
    let key = LimitKey::Key(KeyId::random());
    for step in 0..5 {
        let here = ok(in_process.acquire(key, p).await, "in-process");
        let there = acquire(&redis_limiter, key, p).await;
        assert_eq!(there.allowed, here.allowed, "step {step}");
        assert_eq!(there.remaining, here.remaining, "step {step}");
        let close = |a: Duration, b: Duration| a.abs_diff(b) < Duration::from_millis(200);
        assert!(
            close(there.retry_after, here.retry_after),
            "step {step}: {there:?} vs {here:?}"
        );
        assert!(
            close(there.reset, here.reset),
            "step {step}: {there:?} vs {here:?}"
        );
    }
}
