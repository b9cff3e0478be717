//! A flood of well-formed made-up ids (SECURITY-CHECKLIST item 30): the cache stays within its
//! capacities, memory stays bounded, and a hot real key keeps being answered from the cache.
//! Its own test binary, so the process's memory is this test's alone.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use http::{HeaderMap, Uri};
use keygate::{HttpRequestView, KeyId, NewKey, Reason, Verifier};
use keygate_tests::{Harness, PREFIX, forge};

async fn call(verifier: &Verifier, key: &str) -> Result<(), Reason> {
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", key.parse().unwrap());
    let uri = Uri::from_static("/");
    verifier
        .verify_request(&HttpRequestView::new(&headers, &uri, None))
        .await
        .map(|_| ())
        .map_err(|r| r.reason())
}

/// Resident memory of this process, in bytes (Linux; 0 elsewhere).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_made_up_ids_keep_the_cache_bounded_and_a_hot_key_cached() {
    const FLOOD: usize = 1_000_000;
    const CAPACITY: u64 = 1_000;
    const UNKNOWN_CAPACITY: u64 = 1_000;
    let h = Harness::new();
    let (hot, _) = h.create(NewKey::new("hot")).await;
    // Real keys fill the records' share, and more come and go during the flood.
    let mut cold = Vec::new();
    for n in 0..CAPACITY / 2 {
        cold.push(h.create(NewKey::new(format!("cold-{n}"))).await.0);
    }
    let verifier = h.sibling_with(|b| {
        b.cache_capacity(CAPACITY)
            .negative_cache_capacity(UNKNOWN_CAPACITY)
            .cache_ttl(Duration::from_secs(3600))
            .negative_cache_ttl(Duration::from_secs(3600))
            // The flood comes from one address; this test is about the cache.
            .failure_limit(None)
    });
    assert_eq!(call(&verifier, &hot).await, Ok(()));
    for key in &cold {
        assert_eq!(call(&verifier, key).await, Ok(()));
    }
    let rss_before = rss();
    let finds_before = h.store.finds();
    let secret = "s".repeat(30);
    let (mut hot_requests, mut peak) = (0, (0, 0));
    for n in 0..FLOOD {
        let bogus = forge(PREFIX, KeyId::random().as_str(), &secret);
        assert_eq!(call(&verifier, &bogus).await, Err(Reason::UnknownKey));
        if n % 10 == 0 {
            assert_eq!(
                call(&verifier, &hot).await,
                Ok(()),
                "hot key refused at {n}"
            );
            hot_requests += 1;
        }
        if n % 100_000 == 99_999 {
            let (keys, unknown) = verifier.cache_entry_counts().await;
            peak = (peak.0.max(keys), peak.1.max(unknown));
        }
    }
    let (keys, unknown) = verifier.cache_entry_counts().await;
    assert!(
        peak.0 <= CAPACITY && keys <= CAPACITY,
        "records: {keys}, peak {}",
        peak.0
    );
    assert!(
        peak.1 <= UNKNOWN_CAPACITY && unknown <= UNKNOWN_CAPACITY,
        "unknown ids: {unknown}, peak {}",
        peak.1
    );
    // Every made-up id is one store read; the hot key's misses are whatever is left.
    let hot_misses = h.store.finds() - finds_before - FLOOD;
    assert!(
        hot_misses * 100 <= hot_requests,
        "hot key: {hot_misses} misses in {hot_requests} requests (hit ratio under 99 %)"
    );
    // The cold keys, cached before the flood, are still cached: unknown ids never take the
    // records' share.
    let finds = h.store.finds();
    for key in &cold {
        assert_eq!(call(&verifier, key).await, Ok(()));
    }
    let cold_misses = h.store.finds() - finds;
    assert!(
        cold_misses * 100 <= cold.len(),
        "{cold_misses} of {} cold keys were evicted by the flood",
        cold.len()
    );
    let grown = rss().saturating_sub(rss_before);
    assert!(
        grown < 64 << 20,
        "memory grew by {} MiB during the flood",
        grown >> 20
    );
}
