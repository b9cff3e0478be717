//! A cached key's request through the actix-web middleware allocates only what actix-web makes
//! any middleware pay to hand the handler a value: the box of the identity in the request's
//! extensions. The middleware's own future is not boxed (a request answered from the cache,
//! or refused, needs no future of its own). Measured with dhat's heap statistics against the
//! same app without the middleware, in the same process (one global allocator per test binary).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use actix_web::{App, test, web};
use keygate::{Keyring, MemoryStore, NewKey, Verifier};
use keygate_actix::ApiKeyAuth;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const N: u64 = 2_000;

/// A request for `/hello`, with `key` in `x-api-key` when given.
fn request(key: Option<&str>) -> test::TestRequest {
    let request = test::TestRequest::get()
        .uri("/hello")
        .peer_addr("127.0.0.1:1".parse().unwrap());
    match key {
        Some(key) => request.insert_header(("x-api-key", key)),
        None => request,
    }
}

/// Heap blocks allocated by `N` requests made by `make` to `app` (after as many unmeasured).
async fn blocks_for<S, R, B>(app: &S, make: impl Fn() -> R) -> u64
where
    S: actix_web::dev::Service<
            R,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
{
    let run = async |count: u64| {
        for _ in 0..count {
            let response = test::call_service(app, make()).await;
            assert_eq!(response.status(), 200);
        }
    };
    run(N).await;
    let before = dhat::HeapStats::get().total_blocks;
    run(N).await;
    dhat::HeapStats::get().total_blocks - before
}

#[actix_web::test]
async fn a_cached_key_adds_only_the_identitys_extension_box() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let verifier = Verifier::builder(
        Keyring::development("alloc_test").unwrap(),
        MemoryStore::new(),
    )
    .build();
    let created = verifier
        .admin()
        .create_key(NewKey::new("hot"))
        .await
        .unwrap();
    let key = created.key.expose_secret().to_owned();

    let plain =
        test::init_service(App::new().route("/hello", web::get().to(|| async { "hi" }))).await;
    let guarded = test::init_service(
        App::new()
            .wrap(ApiKeyAuth::new(verifier))
            .route("/hello", web::get().to(|| async { "hi" })),
    )
    .await;

    // The same requests, key included, to both apps: only the middleware's allocations differ.
    let plain_blocks = blocks_for(&plain, || request(Some(&key)).to_request()).await;
    let guarded_blocks = blocks_for(&guarded, || request(Some(&key)).to_request()).await;
    let added = guarded_blocks.saturating_sub(plain_blocks);
    assert_eq!(
        added, N,
        "{added} allocations for {N} cached requests beyond the app without the middleware \
         (expected one each: the identity's extension box)"
    );
}
