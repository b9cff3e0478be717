//! Per-request cost of a rate-limit decision: `RedisRateLimiter::acquire` (one EVALSHA round
//! trip) against `InProcessLimiter::acquire`, in the same run.
//!
//! ```text
//! KEYGATE_TEST_REDIS_URL=redis://127.0.0.1:6379 \
//!     cargo bench -p keygate-redis --bench redis_limiter -- --measurement-time 5
//! ```
//!
//! Cases: `in_process/acquire` and `redis/acquire` (one key, a policy it never exhausts, so
//! every call writes), `redis/peek`, and `redis/acquire_8_concurrent` (8 calls in flight on one
//! multiplexed connection, time per call). Redis runs on loopback; without
//! `KEYGATE_TEST_REDIS_URL` only the in-process case runs, with a note.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_main};
use keygate::KeyId;
use keygate::rate::{InProcessLimiter, LimitKey, RateLimiter, RatePolicy};
use keygate_redis::RedisRateLimiter;
use tokio::runtime::Runtime;

fn policy() -> RatePolicy {
    // Never exhausted in a bench run: every acquire is allowed and writes the key.
    "1000000000/1s".parse().expect("policy")
}

fn limiters(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let key = LimitKey::Key(KeyId::random());
    let p = policy();

    let in_process = InProcessLimiter::new();
    c.bench_function("in_process/acquire", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(in_process.acquire(key, p).await) });
    });

    let Ok(url) = std::env::var("KEYGATE_TEST_REDIS_URL") else {
        eprintln!("KEYGATE_TEST_REDIS_URL is not set: skipping the Redis cases");
        return;
    };
    let limiter = redis_limiter(&runtime, &url);
    c.bench_function("redis/acquire", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(limiter.acquire(key, p).await) });
    });
    c.bench_function("redis/peek", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(limiter.peek(key, p).await) });
    });
    c.bench_function("redis/acquire_8_concurrent", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let limiter = limiter.clone();
            async move {
                let start = Instant::now();
                let mut tasks = Vec::with_capacity(8);
                for lane in 0..8 {
                    let limiter = limiter.clone();
                    tasks.push(tokio::spawn(async move {
                        for _ in (lane..iters).step_by(8) {
                            black_box(limiter.acquire(key, p).await).ok();
                        }
                    }));
                }
                for task in tasks {
                    task.await.ok();
                }
                start.elapsed()
            }
        });
    });
    assert_eq!(
        limiter.fail_open_count(),
        0,
        "every decision came from Redis"
    );
}

fn redis_limiter(runtime: &Runtime, url: &str) -> RedisRateLimiter {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    runtime.block_on(async {
        RedisRateLimiter::builder(url)
            .prefix(format!("kgbench-{nanos}"))
            .response_timeout(Duration::from_secs(2))
            .build()
            .await
            .expect("KEYGATE_TEST_REDIS_URL is not a Redis URL")
    })
}

#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::limiters);
}
use group::benches;
criterion_main!(benches);
