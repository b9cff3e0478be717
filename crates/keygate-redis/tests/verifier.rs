//! Two verifiers (two "instances") over one store, wired to the shared Redis as a service would
//! be: one rate limit across both, and a revoke through one seen by the other long before its
//! 30 s cache TTL; a client's failed attempts limited across both; and the Redis calls one
//! request costs, counted by a private Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{PrivateRedis, UNDER_LOAD, connection, ok, redis_url, script_calls, unique_prefix};
use http::{HeaderMap, HeaderValue, Uri};
use keygate::rate::{RateLimit, RatePolicy};
use keygate::{
    HttpRequestView, KeyAdmin, KeyFormat, Keyring, MemoryStore, NewKey, Pepper, Peppers, Reason,
    Rejection, Verifier,
};
use keygate_redis::{RedisInvalidation, RedisRateLimiter};

fn keyring() -> Keyring {
    Keyring::new(
        ok(KeyFormat::new("kgtest"), "format"),
        Peppers::new(ok(
            Pepper::new(1, "redis-test-pepper-0123456789abcdefghij"),
            "pepper",
        )),
    )
}

/// A verifier whose only Redis use is the rate limiter (no invalidation), so that every
/// script call Redis counts is the limiter's.
async fn limited_instance(
    url: &str,
    prefix: &str,
    store: &MemoryStore,
    local_lockouts: bool,
    failure_limit: RatePolicy,
) -> Verifier {
    let limiter = ok(
        RedisRateLimiter::builder(url)
            .prefix(prefix)
            .local_lockouts(local_lockouts)
            .response_timeout(UNDER_LOAD)
            .build()
            .await,
        "KEYGATE_TEST_REDIS_URL is not a Redis URL",
    );
    Verifier::builder(keyring(), store.clone())
        .rate_limiter(limiter)
        .failure_limit(Some(failure_limit))
        .default_rate_limit(ok("1000000/1s".parse::<RatePolicy>(), "policy"))
        .build()
}

async fn instance(url: &str, prefix: &str, store: &MemoryStore) -> Verifier {
    let limiter = ok(
        RedisRateLimiter::builder(url)
            .prefix(prefix)
            .response_timeout(UNDER_LOAD)
            .build()
            .await,
        "KEYGATE_TEST_REDIS_URL is not a Redis URL",
    );
    let invalidation = ok(
        RedisInvalidation::builder(url).prefix(prefix).build().await,
        "KEYGATE_TEST_REDIS_URL is not a Redis URL",
    );
    Verifier::builder(keyring(), store.clone())
        .rate_limiter(limiter)
        .invalidation(invalidation)
        .default_rate_limit(ok("3/1h".parse::<RatePolicy>(), "policy"))
        .build()
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

async fn subscribed(verifier: &Verifier) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while verifier.invalidation_subscribed() != Some(true) {
        assert!(Instant::now() < deadline, "not subscribed within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_limits_and_see_each_others_revokes() {
    let Some(url) = redis_url("two_instances_share_limits_and_see_each_others_revokes") else {
        return;
    };
    let prefix = unique_prefix("instances");
    let store = MemoryStore::new();
    let a = instance(&url, &prefix, &store).await;
    let b = instance(&url, &prefix, &store).await;
    subscribed(&a).await;
    subscribed(&b).await;

    // One 3/1h limit across both instances.
    let created = ok(a.admin().create_key(NewKey::new("shared")).await, "create");
    let key = created.key.expose_secret().to_owned();
    assert!(verify(&a, &key).await.is_ok());
    assert!(verify(&b, &key).await.is_ok());
    assert!(verify(&a, &key).await.is_ok());
    let refused = verify(&b, &key).await.err().map(|r| r.reason());
    assert_eq!(
        refused,
        Some(Reason::RateLimited),
        "the 4th, on the other instance"
    );

    // A second key, cached by b, revoked through a.
    let created = ok(a.admin().create_key(NewKey::new("revoked")).await, "create");
    let key = created.key.expose_secret().to_owned();
    assert!(verify(&b, &key).await.is_ok(), "cached by b");
    let revoked_at = Instant::now();
    ok(a.admin().revoke(&created.record.id).await, "revoke");
    while verify(&b, &key).await.is_ok() {
        assert!(
            revoked_at.elapsed() < Duration::from_secs(2),
            "b still accepts the revoked key 2 s later (its cache TTL is 30 s)"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "revoke through one instance seen by the other after {:?}",
        revoked_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_wrong_guesses_through_two_instances_get_the_burst_plus_one_per_instance() {
    let Some(url) = redis_url(
        "a_thousand_wrong_guesses_through_two_instances_get_the_burst_plus_one_per_instance",
    ) else {
        return;
    };
    let prefix = unique_prefix("guesses");
    let store = MemoryStore::new();
    let failure_limit = ok("20/1h".parse::<RatePolicy>(), "policy");
    let a = limited_instance(&url, &prefix, &store, true, failure_limit).await;
    let b = limited_instance(&url, &prefix, &store, true, failure_limit).await;
    // A well-formed key of a stored id whose secret does not match under the instances'
    // pepper (another pepper, under a version they do not have: the store refuses a second
    // pepper for one version): every guess is a WrongSecret, a failed attempt.
    let guessing = Verifier::builder(
        Keyring::new(
            ok(KeyFormat::new("kgtest"), "format"),
            Peppers::new(ok(
                Pepper::new(2, "another-pepper-0123456789abcdefghijklm"),
                "pepper",
            )),
        ),
        store.clone(),
    )
    .build();
    let created = ok(
        guessing.admin().create_key(NewKey::new("guessed")).await,
        "create",
    );
    let guess = created.key.expose_secret().to_owned();

    let mut not_429 = 0;
    for i in 0..1000 {
        let instance = if i % 2 == 0 { &a } else { &b };
        let Err(rejection) = verify(instance, &guess).await else {
            panic!("guess {i} accepted");
        };
        match rejection.reason() {
            Reason::TooManyFailures => {}
            Reason::WrongSecret => not_429 += 1,
            other => panic!("guess {i}: {other:?}"),
        }
    }
    eprintln!("1000 wrong guesses through two instances: {not_429} reached the key check");
    assert!(
        not_429 <= 20 + 2,
        "{not_429} guesses reached the key check: more than the burst (20) plus one per instance"
    );
    assert!(not_429 >= 20, "the whole burst is usable");
}

/// Counted by Redis itself: `INFO commandstats` of a private `redis-server` (no other test or
/// session talks to it, and the verifiers use it for nothing but the limiter), before and after
/// a run of requests. Deterministic: the count is of commands Redis ran, not of time.
#[tokio::test]
async fn a_valid_request_costs_one_redis_call_and_an_unlimited_one_none() {
    let Some(_) = redis_url("a_valid_request_costs_one_redis_call_and_an_unlimited_one_none")
    else {
        return;
    };
    let server = PrivateRedis::start().await;
    let mut inspect = connection(&server.url()).await;
    let store = MemoryStore::new();
    let failure_limit = ok("10/1m burst 20".parse::<RatePolicy>(), "policy");
    let local = limited_instance(
        &server.url(),
        &unique_prefix("calls"),
        &store,
        true,
        failure_limit,
    )
    .await;
    let remote = limited_instance(
        &server.url(),
        &unique_prefix("calls"),
        &store,
        false,
        failure_limit,
    )
    .await;
    let limited = ok(
        local.admin().create_key(NewKey::new("limited")).await,
        "create",
    );
    let limited = limited.key.expose_secret().to_owned();
    let unlimited = ok(
        local
            .admin()
            .create_key(NewKey::new("unlimited").rate_limit(RateLimit::Unlimited))
            .await,
        "create",
    );
    let unlimited = unlimited.key.expose_secret().to_owned();

    // Not counted: an instance's first request may find the script not yet loaded (building
    // does not wait for Redis; the script is loaded in the background or on a NOSCRIPT).
    assert!(verify(&local, &limited).await.is_ok());
    assert!(verify(&remote, &limited).await.is_ok());

    const REQUESTS: u64 = 50;
    for (verifier, key, expected_per_request) in [
        (&local, &limited, 1),
        (&local, &unlimited, 0),
        // Without local lockouts, the failed-attempt pre-check is a second call: the count
        // above would have seen it.
        (&remote, &limited, 2),
        (&remote, &unlimited, 1),
    ] {
        let before = script_calls(&mut inspect).await;
        for _ in 0..REQUESTS {
            assert!(verify(verifier, key).await.is_ok());
        }
        let made = script_calls(&mut inspect).await - before;
        assert_eq!(
            made,
            REQUESTS * expected_per_request,
            "{REQUESTS} requests made {made} Redis script calls"
        );
    }
}

/// An owner's limit on Redis: one allowance shared by the owner's keys across both instances
/// (owner limits and key limits both apply; the tighter wins).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owners_limit_is_shared_by_its_keys_across_instances() {
    let Some(url) = redis_url("an_owners_limit_is_shared_by_its_keys_across_instances") else {
        return;
    };
    let prefix = unique_prefix("owners");
    let store = MemoryStore::new();
    let a = instance(&url, &prefix, &store).await;
    let b = instance(&url, &prefix, &store).await;
    ok(
        a.admin()
            .create_owner(
                keygate::owner::NewOwner::new("acme")
                    .rate_limit(ok("5/1h".parse::<RatePolicy>(), "policy")),
            )
            .await,
        "owner",
    );
    let mut keys = Vec::new();
    for name in ["one", "two", "three"] {
        let created = ok(
            a.admin()
                .create_key(
                    NewKey::new(name)
                        .owner("acme")
                        .rate_limit(RateLimit::Unlimited),
                )
                .await,
            "create",
        );
        keys.push(created.key.expose_secret().to_owned());
    }
    let mut allowed = 0;
    for i in 0..12 {
        let instance = if i % 2 == 0 { &a } else { &b };
        match verify(instance, &keys[i % 3]).await {
            Ok(()) => allowed += 1,
            Err(r) => assert_eq!(r.reason(), Reason::RateLimited),
        }
    }
    assert_eq!(
        allowed, 5,
        "one 5/1h owner limit across three keys and two instances"
    );
    // Another owner's key is not touched by it.
    let other = ok(
        a.admin()
            .create_key(NewKey::new("other").owner("other"))
            .await,
        "create",
    );
    assert!(verify(&b, other.key.expose_secret()).await.is_ok());
}
