//! Rate limits beyond the scenario table: memory bounds under floods, limiters that need I/O
//! (the awaited path) or fail, and policy changes taking effect at once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderMap, Uri};
use keygate::rate::{
    InProcessLimiter, LimitKey, LimiterError, RateDecision, RateLimit, RateLimiter, RatePolicy,
};
use keygate::{HttpRequestView, KeyAdmin, KeyId, NewKey, Reason, Verifier};
use keygate_tests::{Harness, keyring};

fn policy(text: &str) -> RatePolicy {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

async fn call(verifier: &Verifier, key: &str, peer: Option<IpAddr>) -> Result<(), Reason> {
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", key.parse().expect("header"));
    let uri = Uri::from_static("/");
    verifier
        .verify_request(&HttpRequestView::new(&headers, &uri, peer))
        .await
        .map(|_| ())
        .map_err(|r| r.reason())
}

/// A million distinct key ids, then 200 000 distinct client networks: each cache stays within
/// its capacity.
#[test]
fn a_flood_of_distinct_ids_keeps_memory_bounded() {
    let capacity = 10_000;
    let limiter = InProcessLimiter::builder()
        .key_capacity(capacity)
        .client_capacity(capacity)
        .build();
    let p = policy("100/1s");
    let mut peak = 0;
    for i in 0..1_000_000_u32 {
        let decision = limiter
            .acquire_now(LimitKey::Key(KeyId::random()), p)
            .unwrap_or_else(|| panic!("in-process limiters answer at once"))
            .unwrap();
        assert!(decision.allowed, "a fresh key is allowed");
        if i % 100_000 == 99_999 {
            peak = peak.max(limiter.entry_counts().0);
        }
    }
    let (keys, clients) = limiter.entry_counts();
    assert!(
        keys <= capacity && peak <= capacity,
        "keys: {keys} (peak {peak}) > {capacity}"
    );
    assert_eq!(clients, 0);

    for i in 0..200_000_u64 {
        // Distinct /64s: the lower 64 bits would all be grouped.
        let ip = IpAddr::V6(Ipv6Addr::from(u128::from(i) << 64));
        limiter.acquire_now(LimitKey::client(ip), p);
    }
    let (keys, clients) = limiter.entry_counts();
    assert!(clients <= capacity, "clients: {clients} > {capacity}");
    assert!(
        keys <= capacity,
        "the client flood did not grow the key cache"
    );
}

/// Delegates to an in-process limiter through the async methods only, as a networked limiter
/// would; counts calls.
#[derive(Debug, Default)]
struct Remote {
    inner: InProcessLimiter,
    calls: AtomicUsize,
    down: std::sync::atomic::AtomicBool,
}

impl Remote {
    fn check(&self) -> Result<(), LimiterError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.down.load(Ordering::Relaxed) {
            Err(LimiterError("connection refused".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl RateLimiter for Remote {
    async fn acquire(
        &self,
        key: LimitKey,
        policy: RatePolicy,
    ) -> Result<RateDecision, LimiterError> {
        self.check()?;
        tokio::task::yield_now().await;
        self.inner.acquire(key, policy).await
    }

    async fn peek(&self, key: LimitKey, policy: RatePolicy) -> Result<RateDecision, LimiterError> {
        self.check()?;
        tokio::task::yield_now().await;
        self.inner.peek(key, policy).await
    }
}

/// A verifier over `h`'s store and clock whose limiter is `remote`: every limited request is
/// decided on the awaited path.
fn awaited_verifier(h: &Harness, remote: Arc<Remote>) -> Verifier {
    Verifier::builder(keyring(), h.store.clone())
        .clock(h.clock.clone())
        .shared_rate_limiter(remote)
        .build()
}

#[tokio::test]
async fn a_limiter_that_awaits_is_awaited_and_its_failure_is_a_503() {
    let h = Harness::new();
    let remote = Arc::new(Remote::default());
    let verifier = awaited_verifier(&h, remote.clone());
    let created = verifier
        .admin()
        .create_key(NewKey::new("remote").rate_limit(policy("2/1m")))
        .await
        .unwrap();
    let key = created.key.expose_secret().to_owned();
    let peer = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)));

    assert_eq!(call(&verifier, &key, peer).await, Ok(()));
    assert_eq!(call(&verifier, &key, peer).await, Ok(()));
    assert_eq!(call(&verifier, &key, peer).await, Err(Reason::RateLimited));
    // Each request: a peek at the client's failures, an acquire on the key.
    assert_eq!(remote.calls.load(Ordering::Relaxed), 6);

    remote.down.store(true, Ordering::Relaxed);
    assert_eq!(
        call(&verifier, &key, peer).await,
        Err(Reason::LimiterUnavailable),
        "a limiter that cannot answer is a 503, never a silent allow"
    );
    let rejection = verifier
        .verify_request(&HttpRequestView::new(
            &HeaderMap::from_iter([(
                http::header::HeaderName::from_static("x-api-key"),
                key.parse().unwrap(),
            )]),
            &Uri::from_static("/"),
            None,
        ))
        .await
        .err()
        .unwrap_or_else(|| panic!("allowed while the limiter is down"));
    assert_eq!(rejection.status(), http::StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_policy_change_through_admin_applies_at_once() {
    let h = Harness::new();
    let (key, id) = h
        .create(NewKey::new("changing").rate_limit(policy("1/1h")))
        .await;
    assert_eq!(call(&h.verifier, &key, None).await, Ok(()));
    assert_eq!(
        call(&h.verifier, &key, None).await,
        Err(Reason::RateLimited)
    );

    let admin = h.verifier.admin();
    admin
        .set_rate_limit(&id, Some(policy("3/1h").into()))
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(call(&h.verifier, &key, None).await, Ok(()));
    }
    assert_eq!(
        call(&h.verifier, &key, None).await,
        Err(Reason::RateLimited)
    );

    admin
        .set_rate_limit(&id, Some(RateLimit::Unlimited))
        .await
        .unwrap();
    for _ in 0..100 {
        assert_eq!(call(&h.verifier, &key, None).await, Ok(()));
    }

    // Back to the default (unlimited here): still never limited.
    admin.set_rate_limit(&id, None).await.unwrap();
    for _ in 0..100 {
        assert_eq!(call(&h.verifier, &key, None).await, Ok(()));
    }
}

/// The verifier keeps the limiter's state in the key's cache entry (one lookup for both), but
/// the state is the limiter's: a change that refills the entry (a rename) or a cache
/// invalidation gives the key no fresh allowance.
#[tokio::test]
async fn a_refilled_cache_entry_keeps_the_keys_allowance() {
    let h = Harness::new();
    let (key, id) = h
        .create(NewKey::new("held").rate_limit(policy("2/1h")))
        .await;
    assert_eq!(call(&h.verifier, &key, None).await, Ok(()));
    assert_eq!(call(&h.verifier, &key, None).await, Ok(()));
    assert_eq!(
        call(&h.verifier, &key, None).await,
        Err(Reason::RateLimited)
    );
    h.verifier.admin().rename(&id, "renamed").await.unwrap();
    assert_eq!(
        call(&h.verifier, &key, None).await,
        Err(Reason::RateLimited),
        "renaming the key refilled its cache entry, not its allowance"
    );
    h.verifier.invalidate(id).await;
    assert_eq!(
        call(&h.verifier, &key, None).await,
        Err(Reason::RateLimited),
        "an invalidated entry's successor shares the same allowance"
    );
    // Half the hour later, one request's worth is back, and only that.
    h.clock.advance(Duration::from_secs(1800));
    assert_eq!(call(&h.verifier, &key, None).await, Ok(()));
    assert_eq!(
        call(&h.verifier, &key, None).await,
        Err(Reason::RateLimited)
    );
}

#[tokio::test]
async fn the_failure_limit_is_configurable_and_can_be_turned_off() {
    let h = Harness::new();
    let (key, _) = h.create(NewKey::new("k")).await;
    let last = if key.ends_with('A') { 'B' } else { 'A' };
    let bad_checksum = format!("{}{last}", &key[..key.len() - 1]);
    let attacker = Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)));

    let strict = h.sibling_with(|b| b.failure_limit(Some(policy("1/1m burst 3"))));
    for _ in 0..3 {
        // A bad checksum is refused before verification and is not counted...
        assert_eq!(
            call(&strict, &bad_checksum, attacker).await,
            Err(Reason::BadChecksum)
        );
    }
    let (unknown, _) = Harness::new().create(NewKey::new("elsewhere")).await;
    for _ in 0..3 {
        assert_eq!(
            call(&strict, &unknown, attacker).await,
            Err(Reason::UnknownKey)
        );
    }
    // ...well-formed failures are: the fourth is refused before any lookup.
    assert_eq!(
        call(&strict, &unknown, attacker).await,
        Err(Reason::TooManyFailures)
    );
    assert_eq!(
        call(&strict, &key, attacker).await,
        Err(Reason::TooManyFailures)
    );
    assert_eq!(
        call(&strict, &key, None).await,
        Ok(()),
        "a client without an address has its own (shared) allowance"
    );
    h.clock.advance(Duration::from_secs(59));
    assert_eq!(
        call(&strict, &key, attacker).await,
        Err(Reason::TooManyFailures)
    );
    h.clock.advance(Duration::from_secs(1));
    assert_eq!(
        call(&strict, &key, attacker).await,
        Ok(()),
        "a minute later one failure's worth has refilled"
    );

    let open = h.sibling_with(|b| b.failure_limit(None));
    for _ in 0..100 {
        assert_eq!(
            call(&open, &unknown, attacker).await,
            Err(Reason::UnknownKey)
        );
    }
}

/// 500 concurrent wrong secrets for one id from one client: at most the failure limit's burst
/// get 401, the rest 429 — while the id is being read from the store (every attempt passes the
/// "locked out?" pre-check before any failure is counted), once it is cached, and from a client
/// whose address is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_wrong_secrets_get_at_most_the_burst_of_401s() {
    const ATTEMPTS: usize = 500;
    const BURST: usize = 20;
    let attacker = Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)));
    for (cached, peer) in [
        (false, attacker),
        (true, attacker),
        (false, None),
        (true, None),
    ] {
        let h = Harness::new();
        let (key, id) = h.create(NewKey::new("victim")).await;
        let verifier = h.sibling_with(|b| b.failure_limit(Some(policy("1/1h burst 20"))));
        if cached {
            assert_eq!(call(&verifier, &key, peer).await, Ok(()), "warm the cache");
        } else {
            // Every attempt waits on the one store read: all pass the pre-check first.
            h.store.set_delay(Duration::from_millis(50));
        }
        let wrong = keygate_tests::forge(keygate_tests::PREFIX, id.as_str(), &"w".repeat(30));
        let tasks: Vec<_> = (0..ATTEMPTS)
            .map(|_| {
                let (verifier, wrong) = (verifier.clone(), wrong.clone());
                tokio::spawn(async move { call(&verifier, &wrong, peer).await })
            })
            .collect();
        let (mut unauthorized, mut too_many) = (0, 0);
        for task in tasks {
            match task.await.unwrap() {
                Err(Reason::WrongSecret) => unauthorized += 1,
                Err(Reason::TooManyFailures) => too_many += 1,
                other => panic!("unexpected answer {other:?}"),
            }
        }
        let case = format!("cached: {cached}, peer: {peer:?}");
        assert_eq!(unauthorized, BURST, "{case}: 401s");
        assert_eq!(too_many, ATTEMPTS - BURST, "{case}: 429s");
        if !cached {
            assert_eq!(h.store.finds(), 1, "{case}: one coalesced store read");
        }
        // The valid key from the same client is locked out too.
        assert_eq!(
            call(&verifier, &key, peer).await,
            Err(Reason::TooManyFailures),
            "{case}"
        );
    }
}

/// SECURITY-CHECKLIST item 27: a thousand wrong secrets for a valid key's id never use its
/// allowance: its `RateLimit` remaining count moves only with its own requests.
#[tokio::test]
async fn wrong_secrets_never_drain_the_victim_key_s_allowance() {
    let h = Harness::new();
    let (key, id) = h
        .create(NewKey::new("victim").rate_limit(policy("100/1h burst 5")))
        .await;
    let verifier = h.sibling_with(|b| b.failure_limit(None));
    let remaining = |verifier: Verifier, key: String| async move {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", key.parse().unwrap());
        let uri = Uri::from_static("/");
        let view = HttpRequestView::new(&headers, &uri, None);
        let gate = keygate::gate::Gate::new(verifier);
        let keygate::gate::Admission::Check(check) = gate.admit(&view, "GET", || None) else {
            panic!("the key was not taken for a check");
        };
        let passed = gate.check(check).await.unwrap_or_else(|r| panic!("{r:?}"));
        passed.rate().map(|r| r.remaining)
    };
    assert_eq!(remaining(verifier.clone(), key.clone()).await, Some(4));
    let wrong = keygate_tests::forge(keygate_tests::PREFIX, id.as_str(), &"x".repeat(30));
    for n in 0..1_000u32 {
        let peer = IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + n));
        assert_eq!(
            call(&verifier, &wrong, Some(peer)).await,
            Err(Reason::WrongSecret)
        );
    }
    assert_eq!(
        remaining(verifier.clone(), key.clone()).await,
        Some(3),
        "only the key's own second request was taken"
    );
}

/// Issue 18: with `canary_lockout`, one use of a canary spends the client's failure allowance
/// (its next request, even with a valid key, is the 429 of too many failures) while the canary's
/// own answer stays the unknown key's 401; without it, the client keeps its allowance less one.
#[tokio::test]
async fn a_canary_locks_its_client_out_only_when_asked() {
    let h = Harness::new();
    let (canary, _) = h.create(NewKey::new("decoy").canary()).await;
    let (valid, _) = h.create(NewKey::new("valid")).await;
    let limit = "5/1m burst 5".parse::<keygate::rate::RatePolicy>().unwrap();
    let ask = |verifier: Verifier, key: String, ip: &'static str| async move {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", key.parse().unwrap());
        let uri = Uri::from_static("/");
        let ip: IpAddr = ip.parse().unwrap();
        verifier
            .verify_request(&HttpRequestView::new(&headers, &uri, Some(ip)))
            .await
            .map(drop)
            .map_err(|r| r.reason())
    };
    for lockout in [true, false] {
        let verifier = h.sibling_with(|b| b.failure_limit(Some(limit)).canary_lockout(lockout));
        // Cold (the store read, so the awaiting path) from one client, cached from another.
        for ip in ["198.51.100.1", "198.51.100.2"] {
            if ip.ends_with('2') {
                assert!(matches!(
                    ask(verifier.clone(), valid.clone(), "203.0.113.9").await,
                    Ok(())
                ));
            }
            assert_eq!(
                ask(verifier.clone(), canary.clone(), ip).await,
                Err(Reason::Canary),
                "lockout {lockout}, {ip}: the canary's own answer"
            );
            let next = ask(verifier.clone(), valid.clone(), ip).await;
            if lockout {
                assert_eq!(next, Err(Reason::TooManyFailures), "{ip}: locked out");
            } else {
                assert_eq!(next, Ok(()), "{ip}: not locked out");
            }
            // Another client is not concerned.
            assert_eq!(
                ask(verifier.clone(), valid.clone(), "203.0.113.9").await,
                Ok(())
            );
        }
    }
}

/// A request its key's own limit refuses takes nothing from the owner's shared limit, on the
/// awaited path too (a limiter that needs I/O decides every request there): the owner's other
/// key still gets what the allowed requests left.
#[tokio::test]
async fn a_key_refused_by_its_own_limit_spends_nothing_of_its_owner_s_awaited() {
    let h = Harness::new();
    let verifier = awaited_verifier(&h, Arc::default());
    let admin = verifier.admin();
    admin
        .create_owner(keygate::owner::NewOwner::new("thrifty").rate_limit(policy("3/1m")))
        .await
        .unwrap();
    let create = |spec: NewKey| {
        let admin = admin.clone();
        async move {
            let created = admin.create_key(spec).await.unwrap();
            created.key.expose_secret().to_owned()
        }
    };
    let capped = create(
        NewKey::new("capped")
            .owner("thrifty")
            .rate_limit(policy("1/1m")),
    )
    .await;
    let sibling = create(NewKey::new("sibling").owner("thrifty")).await;

    assert_eq!(call(&verifier, &capped, None).await, Ok(()));
    for _ in 0..3 {
        assert_eq!(
            call(&verifier, &capped, None).await,
            Err(Reason::RateLimited)
        );
    }
    assert_eq!(call(&verifier, &sibling, None).await, Ok(()));
    assert_eq!(
        call(&verifier, &sibling, None).await,
        Ok(()),
        "the capped key's refused requests took from the owner's allowance"
    );
    assert_eq!(
        call(&verifier, &sibling, None).await,
        Err(Reason::RateLimited),
        "the owner's 3/1m counts the allowed requests"
    );
}

/// A request its key's own limit refuses spends none of the key's quota: on the cached path,
/// where both are decided without awaiting, and on the awaited one (a limiter that needs I/O).
#[tokio::test]
async fn a_key_refused_by_its_own_limit_spends_no_quota() {
    for awaited in [false, true] {
        let h = Harness::new();
        let verifier = if awaited {
            awaited_verifier(&h, Arc::default())
        } else {
            h.verifier.clone()
        };
        let created = verifier
            .admin()
            .create_key(
                NewKey::new("limited-and-metered")
                    .rate_limit(policy("1/1m"))
                    .quota("5/day".parse::<keygate::quota::Quota>().unwrap()),
            )
            .await
            .unwrap();
        let key = created.key.expose_secret();
        assert_eq!(call(&verifier, key, None).await, Ok(()));
        for _ in 0..3 {
            assert_eq!(call(&verifier, key, None).await, Err(Reason::RateLimited));
        }
        let balance = verifier
            .admin()
            .quota_balance(&created.record.id)
            .await
            .unwrap();
        assert_eq!(
            balance.key.map(|(_, usage)| usage.remaining),
            Some(4),
            "awaited: {awaited}: one allowed request spent one unit; the three refused spent none"
        );
    }
}
