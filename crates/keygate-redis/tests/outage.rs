//! `RedisRateLimiter` while Redis is down or hung: a private `redis-server` (never the shared
//! one) is stopped, frozen and restarted under a limiter that is never rebuilt.
//!
//! Runs only when `KEYGATE_TEST_REDIS_URL` is set (the tests need Redis installed); then
//! `redis-server` must be on PATH.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::{PrivateRedis, ok, redis_url, unique_prefix};
use keygate::KeyId;
use keygate::rate::{LimitKey, RateLimiter, RatePolicy};
use keygate_redis::{FAIL_OPEN, FailurePolicy, RedisRateLimiter};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

const TIMEOUT: Duration = Duration::from_millis(250);
/// Scheduling slack on a busy 2-core machine.
const SLACK: Duration = Duration::from_millis(250);

fn policy(text: &str) -> RatePolicy {
    ok(text.parse(), text)
}

async fn limiter(redis: &PrivateRedis, failure: FailurePolicy) -> RedisRateLimiter {
    ok(
        RedisRateLimiter::builder(redis.url())
            .prefix(unique_prefix("outage"))
            .failure_policy(failure)
            .response_timeout(TIMEOUT)
            .build()
            .await,
        "build the limiter on the private redis",
    )
}

/// Whether `limiter` decides through Redis: an exhausted `1/1h` key is refused, which a
/// fail-open answer never is.
async fn works(limiter: &RedisRateLimiter) -> bool {
    let key = LimitKey::Key(KeyId::random());
    let p = policy("1/1h");
    matches!(limiter.acquire(key, p).await, Ok(d) if d.allowed)
        && matches!(limiter.acquire(key, p).await, Ok(d) if !d.allowed)
}

/// Polls [`works`] until it holds; returns how long that took.
async fn recovers(limiter: &RedisRateLimiter, within: Duration) -> Duration {
    let start = Instant::now();
    while !works(limiter).await {
        assert!(
            start.elapsed() < within,
            "the limiter did not work again within {within:?} of Redis restarting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn fail_open_counter(snapshotter: &Snapshotter) -> u64 {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, _, _, _)| key.key().name() == FAIL_OPEN)
        .map(|(_, _, _, value)| match value {
            DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum()
}

// Current-thread runtime: the limiter's metrics reach this thread's local recorder.
#[tokio::test]
async fn fails_open_while_redis_is_down_and_recovers_by_itself() {
    let Some(_) = redis_url("fails_open_while_redis_is_down_and_recovers_by_itself") else {
        return;
    };
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut redis = PrivateRedis::start().await;
    let limiter = limiter(&redis, FailurePolicy::Open).await;
    assert!(works(&limiter).await);
    assert_eq!(limiter.fail_open_count(), 0);

    redis.stop();
    let p = policy("1/1h");
    let key = LimitKey::Key(KeyId::random());
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let start = Instant::now();
        let decision = ok(limiter.acquire(key, p).await, "fail-open acquire");
        slowest = slowest.max(start.elapsed());
        assert!(decision.allowed, "fail open: allowed while Redis is down");
        let peeked = ok(limiter.peek(key, p).await, "fail-open peek");
        assert!(peeked.allowed);
    }
    eprintln!("Redis down: slowest fail-open answer {slowest:?}");
    assert!(
        slowest <= TIMEOUT + SLACK,
        "bounded by the timeout: {slowest:?}"
    );
    assert_eq!(limiter.fail_open_count(), 10);
    assert_eq!(fail_open_counter(&snapshotter), 10, "{FAIL_OPEN}");

    redis.restart().await;
    let took = recovers(&limiter, Duration::from_secs(5)).await;
    eprintln!("Redis restarted: the limiter worked again after {took:?}");

    // Hung (SIGSTOP): connections stay open and nothing answers.
    redis.freeze();
    let start = Instant::now();
    let decision = ok(limiter.acquire(key, p).await, "acquire while hung");
    let waited = start.elapsed();
    eprintln!("Redis hung: fail-open answer after {waited:?}");
    assert!(decision.allowed);
    assert!(
        waited >= TIMEOUT - Duration::from_millis(20) && waited <= TIMEOUT + SLACK,
        "a hung Redis costs the response timeout: {waited:?}"
    );
    redis.thaw();
    let took = recovers(&limiter, Duration::from_secs(5)).await;
    eprintln!("Redis thawed: the limiter worked again after {took:?}");
}

#[tokio::test]
async fn fails_closed_with_a_limiter_error() {
    let Some(_) = redis_url("fails_closed_with_a_limiter_error") else {
        return;
    };
    let mut redis = PrivateRedis::start().await;
    let limiter = limiter(&redis, FailurePolicy::Closed).await;
    assert!(works(&limiter).await);

    redis.stop();
    let key = LimitKey::Key(KeyId::random());
    let p = policy("10/1m");
    for _ in 0..3 {
        let start = Instant::now();
        assert!(
            limiter.acquire(key, p).await.is_err(),
            "fail closed: LimiterError"
        );
        assert!(limiter.peek(key, p).await.is_err(), "peek fails closed too");
        assert!(start.elapsed() <= 2 * TIMEOUT + SLACK);
    }
    assert_eq!(limiter.fail_open_count(), 0);

    redis.restart().await;
    let took = recovers(&limiter, Duration::from_secs(5)).await;
    eprintln!("Redis restarted: the fail-closed limiter worked again after {took:?}");
}
