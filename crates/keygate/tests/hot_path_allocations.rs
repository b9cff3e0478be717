//! The cache-hit path allocates nothing per request: the `Arc<Identity>` handed out is a
//! reference-count increment. Measured with dhat's heap statistics (its own test binary: one global allocator).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use http::{HeaderMap, HeaderValue, Uri};
use keygate::{HttpRequestView, Keyring, MemoryStore, NewKey, Verifier};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn a_cache_hit_allocates_nothing() {
    // One profiler per process: both cases in one test.
    let _profiler = dhat::Profiler::builder().testing().build();
    hits_allocate_nothing(NewKey::new("hot"), "unlimited");
    let generous = "1000000/1s".parse::<keygate::rate::RatePolicy>().unwrap();
    hits_allocate_nothing(NewKey::new("limited").rate_limit(generous), "rate limited");
}

fn hits_allocate_nothing(spec: NewKey, what: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let verifier = Verifier::builder(
            Keyring::development("alloc_test").unwrap(),
            MemoryStore::new(),
        )
        .build();
        let created = verifier.admin().create_key(spec).await.unwrap();
        let mut headers = HeaderMap::new();
        let value =
            HeaderValue::from_str(&format!("Bearer {}", created.key.expose_secret())).unwrap();
        headers.insert(http::header::AUTHORIZATION, value);
        let uri = Uri::from_static("/orders");
        let view = HttpRequestView::new(&headers, &uri, None);
        // Warm the cache (and the limiter's bucket).
        for _ in 0..2_000 {
            assert!(verifier.verify_request(&view).await.is_ok());
        }
        let before = dhat::HeapStats::get().total_blocks;
        const N: u64 = 10_000;
        for _ in 0..N {
            let identity = verifier.verify_request(&view).await;
            assert!(identity.is_ok());
        }
        let allocations = dhat::HeapStats::get().total_blocks - before;
        // A cache hit allocates nothing: not keygate, not its caches (quick_cache keeps no read
        // log to drain), not the limiter. One allocation anywhere in 10 000 hits fails this.
        assert_eq!(
            allocations, 0,
            "{what}: {allocations} allocations for {N} cache hits"
        );
        println!("{what}: {allocations} allocations for {N} cache hits");
    });
}
