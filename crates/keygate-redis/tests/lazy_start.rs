//! A service with `RedisRateLimiter` and `RedisInvalidation` starts while Redis is down: its
//! limits follow the failure policy and its invalidation runs degraded; once Redis is started,
//! it enforces one limit across instances and sees other instances' changes, without being
//! rebuilt.
//!
//! Uses a private `redis-server` on a free port, started midway (never the shared Redis); runs
//! whenever `redis-server` is on PATH.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{PrivateRedis, connection, ok, query, unique_prefix};
use http::{HeaderMap, HeaderValue, Uri};
use keygate::rate::{LimitKey, RateLimiter, RatePolicy};
use keygate::{
    HttpRequestView, Invalidated, Invalidation, KeyAdmin, KeyFormat, KeyId, Keyring, MemoryStore,
    NewKey, Pepper, Peppers, Reason, Rejection, Verifier,
};
use keygate_redis::{FailurePolicy, RedisInvalidation, RedisRateLimiter, redis};

const TIMEOUT: Duration = Duration::from_millis(250);
/// Scheduling slack on a busy 2-core machine.
const SLACK: Duration = Duration::from_millis(250);

fn policy(text: &str) -> RatePolicy {
    ok(text.parse(), text)
}

fn keyring() -> Keyring {
    Keyring::new(
        ok(KeyFormat::new("kgtest"), "format"),
        Peppers::new(ok(
            Pepper::new(1, "redis-test-pepper-0123456789abcdefghij"),
            "pepper",
        )),
    )
}

async fn limiter(url: &str, prefix: &str, failure: FailurePolicy) -> RedisRateLimiter {
    ok(
        RedisRateLimiter::builder(url)
            .prefix(prefix)
            .failure_policy(failure)
            .response_timeout(TIMEOUT)
            .build()
            .await,
        "build a limiter while Redis is down",
    )
}

async fn channel(url: &str, prefix: &str) -> RedisInvalidation {
    ok(
        RedisInvalidation::builder(url)
            .prefix(prefix)
            .response_timeout(TIMEOUT)
            .build()
            .await,
        "build an invalidation channel while Redis is down",
    )
}

/// A service instance: one verifier with the Redis limiter and invalidation.
async fn instance(
    store: &MemoryStore,
    limiter: RedisRateLimiter,
    channel: RedisInvalidation,
) -> Verifier {
    ok(
        Verifier::builder(keyring(), store.clone())
            .rate_limiter(limiter)
            .invalidation(channel)
            .default_rate_limit(policy("3/1h burst 3"))
            .start()
            .await,
        "start a verifier while Redis is down",
    )
}

async fn verify(verifier: &Verifier, key: &str) -> Result<(), Rejection> {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        ok(HeaderValue::from_str(&format!("Bearer {key}")), "header"),
    );
    let uri = Uri::from_static("/orders");
    let peer: Option<IpAddr> = Some(IpAddr::from([10, 0, 0, 1]));
    verifier
        .verify_request(&HttpRequestView::new(&headers, &uri, peer))
        .await
        .map(drop)
}

/// Runs `call`, failing the test if it took longer than one response timeout (plus slack).
async fn bounded<T>(what: &str, call: impl Future<Output = T>) -> T {
    let start = Instant::now();
    let result = call.await;
    let took = start.elapsed();
    assert!(
        took <= TIMEOUT + SLACK,
        "{what} took {took:?} while Redis is down: more than the response timeout"
    );
    result
}

/// The answers of four acquires of one fresh key, alternating between `a` and `b`.
async fn four_across(a: &RedisRateLimiter, b: &RedisRateLimiter, p: RatePolicy) -> Vec<bool> {
    let key = LimitKey::Key(KeyId::random());
    let mut allowed = Vec::new();
    for limiter in [a, b, a, b] {
        allowed.push(matches!(limiter.acquire(key, p).await, Ok(d) if d.allowed));
    }
    allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_with_redis_down_and_enforces_shared_limits_once_it_is_up() {
    let test = "starts_with_redis_down_and_enforces_shared_limits_once_it_is_up";
    if !PrivateRedis::available(test) {
        return;
    }
    // Nothing listens on the port yet: connections are refused.
    let mut redis = PrivateRedis::not_started();
    let url = redis.url();
    let prefix = unique_prefix("lazy");

    // Building needs no Redis; a URL that is not a Redis URL is still refused at once.
    let open_a = limiter(&url, &prefix, FailurePolicy::Open).await;
    let open_b = limiter(&url, &prefix, FailurePolicy::Open).await;
    let closed = limiter(&url, &prefix, FailurePolicy::Closed).await;
    let channel_a = channel(&url, &prefix).await;
    let channel_b = channel(&url, &prefix).await;
    assert!(
        RedisRateLimiter::builder("http://127.0.0.1:6379")
            .build()
            .await
            .is_err(),
        "not a redis URL"
    );
    assert!(
        RedisInvalidation::builder("not a url")
            .build()
            .await
            .is_err(),
        "not a URL"
    );

    // While Redis is down: the failure policy answers, within the response timeout.
    let p = policy("3/1h burst 3");
    let key = LimitKey::Key(KeyId::random());
    for _ in 0..5 {
        let decision = bounded("a fail-open acquire", open_a.acquire(key, p)).await;
        assert!(
            ok(decision, "fail-open acquire").allowed,
            "fail open: allowed while Redis is down"
        );
    }
    assert_eq!(open_a.fail_open_count(), 5, "each fail-open answer counted");
    for _ in 0..3 {
        let acquired = bounded("a fail-closed acquire", closed.acquire(key, p)).await;
        assert!(acquired.is_err(), "fail closed: LimiterError");
        let peeked = bounded("a fail-closed peek", closed.peek(key, p)).await;
        assert!(peeked.is_err(), "fail closed: LimiterError on peek too");
    }
    assert_eq!(closed.fail_open_count(), 0);
    let published = bounded("a publish", channel_a.publish(Invalidated::All)).await;
    assert!(published.is_err(), "publish fails while Redis is down");
    let subscribed = bounded("a subscribe", channel_a.subscribe()).await;
    assert!(subscribed.is_err(), "subscribe fails while Redis is down");

    // Two service instances start, serve keys without limits (fail open), and are degraded.
    let store = MemoryStore::new();
    let a = instance(&store, open_a.clone(), channel_a.clone()).await;
    let b = instance(&store, open_b.clone(), channel_b.clone()).await;
    let created = ok(a.admin().create_key(NewKey::new("early")).await, "create");
    let early = created.key.expose_secret().to_owned();
    for i in 0..5 {
        let instance = if i % 2 == 0 { &a } else { &b };
        assert!(
            verify(instance, &early).await.is_ok(),
            "request {i}: served without a limit while Redis is down"
        );
    }
    assert_eq!(a.invalidation_subscribed(), Some(false), "degraded");
    assert_eq!(b.invalidation_subscribed(), Some(false), "degraded");

    // Redis starts (empty: no script cached, so the first script call goes through NOSCRIPT).
    redis.restart().await;
    let up = Instant::now();

    // The limiters connect by themselves: one limit of 3 across both, the 4th refused.
    let deadline = Duration::from_secs(5);
    let mut answers = four_across(&open_a, &open_b, p).await;
    while answers != [true, true, true, false] {
        assert!(
            up.elapsed() < deadline,
            "the limiters did not share one limit within {deadline:?} of Redis starting: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        answers = four_across(&open_a, &open_b, p).await;
    }
    eprintln!(
        "Redis started: shared limits enforced after {:?}",
        up.elapsed()
    );
    let fail_open = (open_a.fail_open_count(), open_b.fail_open_count());
    assert_eq!(
        four_across(&open_a, &open_b, p).await,
        [true, true, true, false],
        "once connected, every call goes to Redis"
    );
    assert_eq!(
        (open_a.fail_open_count(), open_b.fail_open_count()),
        fail_open,
        "no fail-open answer once connected"
    );
    let mut inspect = connection(&url).await;
    let errors: String = query(&mut inspect, redis::cmd("INFO").arg("errorstats")).await;
    assert!(
        errors.contains("errorstat_NOSCRIPT"),
        "the script was loaded after a NOSCRIPT on the fresh server: {errors}"
    );
    while !matches!(closed.acquire(LimitKey::Key(KeyId::random()), p).await, Ok(d) if d.allowed) {
        assert!(
            up.elapsed() < deadline,
            "the fail-closed limiter did not answer within {deadline:?} of Redis starting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Invalidation: a subscription works now, and publishing reaches it.
    let mut subscription = match tokio::time::timeout(deadline, channel_b.subscribe()).await {
        Ok(Ok(subscription)) => subscription,
        Ok(Err(e)) => panic!("subscribe once Redis is up: {e}"),
        Err(_) => panic!("subscribe once Redis is up: no answer within {deadline:?}"),
    };
    let id = KeyId::random();
    while channel_a.publish(Invalidated::Key(id)).await.is_err() {
        assert!(
            up.elapsed() < deadline,
            "publishing did not work within {deadline:?} of Redis starting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match tokio::time::timeout(Duration::from_secs(5), subscription.next()).await {
        Ok(received) => assert_eq!(ok(received, "next"), Invalidated::Key(id)),
        Err(_) => panic!("the published id was not received within 5 s"),
    }

    // The service instances: subscribed again by themselves (the verifier's backoff is at most
    // 5 s), one limit across both, and a revoke through one seen by the other.
    let subscribed_by = up + Duration::from_secs(10);
    while a.invalidation_subscribed() != Some(true) || b.invalidation_subscribed() != Some(true) {
        assert!(
            Instant::now() < subscribed_by,
            "the verifiers did not subscribe within 10 s of Redis starting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let created = ok(a.admin().create_key(NewKey::new("shared")).await, "create");
    let key = created.key.expose_secret().to_owned();
    assert!(verify(&a, &key).await.is_ok());
    assert!(verify(&b, &key).await.is_ok(), "cached by b");
    assert!(verify(&a, &key).await.is_ok());
    assert_eq!(
        verify(&b, &key).await.err().map(|r| r.reason()),
        Some(Reason::RateLimited),
        "the 4th request, on the other instance"
    );
    ok(
        a.admin().revoke(&created.record.id).await,
        "revoke through a",
    );
    let revoked_at = Instant::now();
    loop {
        if verify(&b, &key).await.err().map(|r| r.reason()) == Some(Reason::Revoked) {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "b still serves a key revoked through a after 1 s (its cache TTL is 30 s)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `limiter` decides through Redis: an exhausted `1/1h` key is refused, which a
/// fail-open answer never is.
async fn works(limiter: &RedisRateLimiter) -> bool {
    let key = LimitKey::Key(KeyId::random());
    let p = policy("1/1h");
    matches!(limiter.acquire(key, p).await, Ok(d) if d.allowed)
        && matches!(limiter.acquire(key, p).await, Ok(d) if !d.allowed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_once_redis_accepts_its_password() {
    let test = "recovers_once_redis_accepts_its_password";
    if !PrivateRedis::available(test) {
        return;
    }
    let redis = PrivateRedis::start().await;
    let mut admin = connection(&redis.url()).await;
    // This connection stays authenticated; new ones need the password.
    let _: () = query(
        &mut admin,
        redis::cmd("CONFIG").arg(&["SET", "requirepass", "old-password"]),
    )
    .await;
    let url = format!("redis://:new-password@127.0.0.1:{}", redis.port);
    let limiter = limiter(&url, &unique_prefix("password"), FailurePolicy::Open).await;
    let channel = channel(&url, &unique_prefix("password")).await;

    // Refused at connection set-up (AUTH): the failure policy answers.
    assert!(!works(&limiter).await, "Redis refuses the password");
    assert!(limiter.fail_open_count() > 0);
    assert!(channel.publish(Invalidated::All).await.is_err());

    // The operator fixes the password: the same limiter and channel work again by themselves
    // (a connection manager whose set-up was refused would otherwise fail for good).
    let _: () = query(
        &mut admin,
        redis::cmd("CONFIG").arg(&["SET", "requirepass", "new-password"]),
    )
    .await;
    let fixed = Instant::now();
    while !works(&limiter).await {
        assert!(
            fixed.elapsed() < Duration::from_secs(5),
            "the limiter did not work within 5 s of Redis accepting its password"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while channel.publish(Invalidated::All).await.is_err() {
        assert!(
            fixed.elapsed() < Duration::from_secs(5),
            "publishing did not work within 5 s of Redis accepting the password"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "password accepted: limiter and channel worked again after {:?}",
        fixed.elapsed()
    );
}
