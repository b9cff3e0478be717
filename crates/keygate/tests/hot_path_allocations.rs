//! The cache-hit path allocates nothing per request: the `Arc<Identity>` handed out is a
//! reference-count increment. Measured with dhat's heap statistics (its own test binary: one global allocator).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use http::{HeaderMap, HeaderValue, Uri};
use keygate::owner::NewOwner;
use keygate::{
    HttpRequestView, KeyAdmin, KeyFormat, Keyring, MemoryStore, NewKey, Peppers, Verifier,
};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn a_cache_hit_allocates_nothing() {
    // One profiler per process: both cases in one test.
    let _profiler = dhat::Profiler::builder().testing().build();
    let single = || Keyring::development("alloc_test").unwrap();
    hits_allocate_nothing(single, NewKey::new("hot"), None, "unlimited");
    let generous = "1000000/1s".parse::<keygate::rate::RatePolicy>().unwrap();
    hits_allocate_nothing(
        single,
        NewKey::new("limited").rate_limit(generous),
        None,
        "rate limited",
    );
    // An owner's shared limit on top of the key's: two limiter checks, no allocation (the
    // owner's limit key is a fixed-size hash, resolved when the entry was filled).
    hits_allocate_nothing(
        single,
        NewKey::new("owned").rate_limit(generous).owner("metered"),
        Some(NewOwner::new("metered").rate_limit(generous)),
        "key and owner limits",
    );
    // A quota (the key's and its owner's): the in-process meter charges both lines under one
    // lock, through lines resolved when the entry was filled; the balance goes to the shared
    // identity's gauge. No allocation either.
    let plenty = "1000000000/day".parse::<keygate::quota::Quota>().unwrap();
    hits_allocate_nothing(
        single,
        NewKey::new("quota").quota(plenty).owner("quota-owner"),
        Some(NewOwner::new("quota-owner").quota(plenty)),
        "key and owner quotas",
    );
    // Several environments: the key's prefix is matched among them, its environment's
    // default limit applies (resolved when the cache entry was filled).
    let environments = || {
        Keyring::builder()
            .environment("live", KeyFormat::new("alloc_live").unwrap())
            .environment("test", KeyFormat::new("alloc_test").unwrap())
            .build(Peppers::development())
            .unwrap()
    };
    hits_allocate_nothing(
        environments,
        NewKey::new("test").environment("test"),
        None,
        "environment default limit",
    );
}

fn hits_allocate_nothing(
    keyring: impl Fn() -> Keyring,
    spec: NewKey,
    owner: Option<NewOwner>,
    what: &str,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut builder = Verifier::builder(keyring(), MemoryStore::new());
        if !builder_keyring_is_single(&keyring()) {
            let generous = "1000000/1s".parse::<keygate::rate::RatePolicy>().unwrap();
            builder = builder.environment_rate_limit("test", generous);
        }
        let verifier = builder.build();
        if let Some(owner) = owner {
            verifier.admin().create_owner(owner).await.unwrap();
        }
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
        let environment = spec_environment(&keyring());
        let before = dhat::HeapStats::get().total_blocks;
        const N: u64 = 10_000;
        for _ in 0..N {
            let identity = verifier.verify_request(&view).await;
            assert!(identity.is_ok_and(|i| i.environment() == environment));
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

fn builder_keyring_is_single(keyring: &Keyring) -> bool {
    keyring.environments().len() < 2
}

/// The environment the test's key is in: `test` for the keyring of environments.
fn spec_environment(keyring: &Keyring) -> Option<&'static str> {
    (!builder_keyring_is_single(keyring)).then_some("test")
}
