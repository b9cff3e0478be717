//! Micro-benchmarks of the per-request check.
//!
//! ```text
//! cargo bench -p keygate --bench verify
//! ```
//!
//! Cases: a valid key on a cache hit (full request path, and `verify` alone; unlimited, and with
//! a generous rate limit checked by the in-process limiter), a malformed key,
//! a bad checksum (both refused before any cache access), and an unknown id answered by the
//! negative cache. Targets (docs/benchmarks.md): hit ≤ 1 µs, malformed ≤ 200 ns.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::hint::black_box;

use criterion::{Criterion, criterion_main};
use http::{HeaderMap, HeaderValue, Uri};
use keygate::{
    HttpRequestView, KeyFormat, Keyring, MemoryStore, NewKey, Pepper, Peppers, Verifier,
};

fn headers_with(key: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {key}")).unwrap();
    headers.insert(http::header::AUTHORIZATION, value);
    headers.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
    headers.insert(http::header::HOST, HeaderValue::from_static("127.0.0.1"));
    headers
}

fn bench_verify(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pepper = Pepper::new(1, "bench-pepper-bench-pepper-bench-pepper").unwrap();
    let keyring = Keyring::new(KeyFormat::new("bench_live").unwrap(), Peppers::new(pepper));
    let verifier = Verifier::builder(keyring.clone(), MemoryStore::new()).build();
    let created = runtime
        .block_on(verifier.admin().create_key(NewKey::new("bench")))
        .unwrap();
    let key = created.key.expose_secret().to_owned();
    let uri = Uri::from_static("/orders");

    // Valid key, warmed into the cache.
    let valid = headers_with(&key);
    let view = HttpRequestView::new(&valid, &uri, None);
    runtime.block_on(verifier.verify_request(&view)).unwrap();
    let presented = verifier.extract(&view).unwrap();

    let mut group = c.benchmark_group("verify");
    group.bench_function("cache_hit_request", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(verifier.verify_request(black_box(&view)).await) });
    });
    // The same hit, plus the in-process rate limiter (a policy generous enough never to refuse).
    let limited = runtime
        .block_on(
            verifier.admin().create_key(
                NewKey::new("bench limited").rate_limit(
                    "1000000000/1s"
                        .parse::<keygate::rate::RatePolicy>()
                        .unwrap(),
                ),
            ),
        )
        .unwrap();
    let limited = headers_with(limited.key.expose_secret());
    let limited_view = HttpRequestView::new(&limited, &uri, None);
    runtime
        .block_on(verifier.verify_request(&limited_view))
        .unwrap();
    group.bench_function("cache_hit_rate_limited", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(verifier.verify_request(black_box(&limited_view)).await) });
    });
    // The same hit for a key with a quota (its own, under the in-process meter; large enough
    // never to refuse): the charge is one lock and a counter update.
    let metered = runtime
        .block_on(
            verifier.admin().create_key(
                NewKey::new("bench metered").quota(
                    "1000000000000/month"
                        .parse::<keygate::quota::Quota>()
                        .unwrap(),
                ),
            ),
        )
        .unwrap();
    let metered = headers_with(metered.key.expose_secret());
    let metered_view = HttpRequestView::new(&metered, &uri, None);
    runtime
        .block_on(verifier.verify_request(&metered_view))
        .unwrap();
    group.bench_function("cache_hit_quota", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(verifier.verify_request(black_box(&metered_view)).await) });
    });
    group.bench_function("cache_hit_verify_only", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(verifier.verify(black_box(&presented)).await) });
    });

    // The same full path, cycling through 1,000 warm keys as the HTTP load benchmark does: one
    // key stays in the CPU caches, a thousand do not (moka's buckets and entries, the records).
    let many: Vec<HeaderMap> = runtime.block_on(async {
        let mut many = Vec::with_capacity(1_000);
        for i in 0..1_000 {
            let created = verifier
                .admin()
                .create_key(NewKey::new(format!("bench {i}")))
                .await
                .unwrap();
            let headers = headers_with(created.key.expose_secret());
            verifier
                .verify_request(&HttpRequestView::new(&headers, &uri, None))
                .await
                .unwrap();
            many.push(headers);
        }
        many
    });
    let mut next = 0;
    let (verifier_ref, uri_ref) = (&verifier, &uri);
    group.bench_function("cache_hit_request_1000_keys", |b| {
        b.to_async(&runtime).iter(|| {
            next = (next + 1) % many.len();
            let headers = &many[next];
            async move {
                let view = HttpRequestView::new(headers, uri_ref, None);
                black_box(verifier_ref.verify_request(black_box(&view)).await)
            }
        });
    });

    let malformed = headers_with("bench_live_not-a-key");
    let malformed_view = HttpRequestView::new(&malformed, &uri, None);
    group.bench_function("malformed", |b| {
        b.iter(|| black_box(verifier.extract(black_box(&malformed_view)).is_err()));
    });

    let mut bad_crc = key.clone().into_bytes();
    let last = bad_crc.len() - 1;
    bad_crc[last] = if bad_crc[last] == b'0' { b'1' } else { b'0' };
    let bad_crc = headers_with(&String::from_utf8(bad_crc).unwrap_or_default());
    let bad_crc_view = HttpRequestView::new(&bad_crc, &uri, None);
    group.bench_function("bad_checksum", |b| {
        b.iter(|| black_box(verifier.extract(black_box(&bad_crc_view)).is_err()));
    });

    // A well-formed key whose id is in no store: after the first miss, the negative cache answers.
    let other = Verifier::builder(keyring, MemoryStore::new()).build();
    let stranger = runtime
        .block_on(other.admin().create_key(NewKey::new("elsewhere")))
        .unwrap();
    let unknown = headers_with(stranger.key.expose_secret());
    let unknown_view = HttpRequestView::new(&unknown, &uri, None);
    assert!(
        runtime
            .block_on(verifier.verify_request(&unknown_view))
            .is_err()
    );
    group.bench_function("unknown_id_negative_hit", |b| {
        b.to_async(&runtime).iter(|| async {
            black_box(
                verifier
                    .verify_request(black_box(&unknown_view))
                    .await
                    .is_err(),
            )
        });
    });
    group.finish();
}

#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench_verify);
}
use group::benches;
criterion_main!(benches);
