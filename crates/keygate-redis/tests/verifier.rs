//! Two verifiers (two "instances") over one store, wired to the shared Redis as a service would
//! be: one rate limit across both, and a revoke through one seen by the other long before its
//! 30 s cache TTL.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{ok, redis_url, unique_prefix};
use http::{HeaderMap, HeaderValue, Uri};
use keygate::rate::RatePolicy;
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

async fn instance(url: &str, prefix: &str, store: &MemoryStore) -> Verifier {
    let limiter = ok(
        RedisRateLimiter::builder(url).prefix(prefix).build().await,
        "KEYGATE_TEST_REDIS_URL is set but Redis does not answer",
    );
    let invalidation = ok(
        RedisInvalidation::builder(url).prefix(prefix).build().await,
        "KEYGATE_TEST_REDIS_URL is set but Redis does not answer",
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
