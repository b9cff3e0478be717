//! Timing-leak tests in the style of dudect (Reparaz, Balasch, Verbauwhede, "Dude, is my code
//! constant time?", 2017): two classes of input, measured interleaved in random order, compared
//! with Welch's t-test; |t| above 4.5 means the classes are told apart by timing.
//!
//! ```text
//! cargo bench -p keygate --bench timing              # 10^6 samples per test
//! cargo bench -p keygate --bench timing -- 4000000   # more samples
//! ```
//!
//! Tests (SECURITY-CHECKLIST items 13 and 14):
//! - `digest_compare`: `Digest::ct_eq` against a digest that differs in byte 0 vs in byte 31.
//!   `digest_compare_control` runs the same classes through a byte loop that stops at the
//!   first difference: it shows the harness sees a leak of a few nanoseconds.
//! - `unknown_vs_wrong_secret`: `Verifier::verify` (in-memory store, warm caches, no failure
//!   limit) of an unknown id (answered by the negative cache) vs a known id with a wrong
//!   secret, each drawn from 256 of its class so that no one id's place in the cache decides.
//!
//! `control: wrong_secret_vs_wrong_secret (A/A)` measures two halves of one class the same way:
//! the |t| the machine's noise alone reaches (samples on a shared machine are not independent,
//! which Welch's t assumes).
//!
//! Each test prints Welch's t on all samples and on the samples below several percentiles
//! (dudect's cropping, which removes interrupts and other long outliers), and the largest |t|.
//! Timing figures on a shared machine wander; rerun before believing a single large |t|.

use std::hint::black_box;
use std::time::Instant;

use http::{HeaderMap, HeaderValue, Uri};
use keygate::pepper::Digest;
use keygate::{
    HttpRequestView, KeyFormat, Keyring, MemoryStore, NewKey, Pepper, Peppers, Presented, Verifier,
};
use rand::Rng;

/// Welford's running mean and variance.
#[derive(Default, Clone, Copy)]
struct Moments {
    n: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    fn push(&mut self, x: f64) {
        self.n += 1.0;
        let delta = x - self.mean;
        self.mean += delta / self.n;
        self.m2 += delta * (x - self.mean);
    }

    fn variance(&self) -> f64 {
        if self.n < 2.0 {
            0.0
        } else {
            self.m2 / (self.n - 1.0)
        }
    }
}

/// Welch's t statistic of two samples.
fn welch_t(a: &Moments, b: &Moments) -> f64 {
    let se = (a.variance() / a.n + b.variance() / b.n).sqrt();
    if se == 0.0 {
        0.0
    } else {
        (a.mean - b.mean) / se
    }
}

/// Percentiles the samples are cropped at, as dudect does (plus "no cropping").
const CROPS: [f64; 5] = [0.50, 0.75, 0.90, 0.95, 0.99];

/// Runs `samples` measurements of `measure(class)`, the class drawn at random for each, and
/// prints the t statistics. Returns the largest |t|.
fn run(name: &str, samples: usize, mut measure: impl FnMut(bool) -> u64) -> f64 {
    let mut rng = rand::rng();
    // Warm-up, and the cropping thresholds from the first measurements (both classes).
    let mut warm: Vec<u64> = (0..20_000).map(|_| measure(rng.random())).collect();
    warm.sort_unstable();
    let thresholds: Vec<f64> = CROPS
        .iter()
        .map(|p| warm[((warm.len() - 1) as f64 * p) as usize] as f64)
        .collect();
    let mut all = [Moments::default(); 2];
    let mut cropped = vec![[Moments::default(); 2]; CROPS.len()];
    for _ in 0..samples {
        let class: bool = rng.random();
        let x = measure(class) as f64;
        let c = usize::from(class);
        all[c].push(x);
        for (t, moments) in thresholds.iter().zip(cropped.iter_mut()) {
            if x <= *t {
                moments[c].push(x);
            }
        }
    }
    let t_all = welch_t(&all[0], &all[1]);
    let mut worst = t_all.abs();
    println!(
        "{name}: {samples} samples; mean ns {:.1} vs {:.1}; t (all) = {t_all:+.2}",
        all[0].mean, all[1].mean
    );
    for (p, moments) in CROPS.iter().zip(&cropped) {
        let t = welch_t(&moments[0], &moments[1]);
        worst = worst.max(t.abs());
        println!(
            "    below p{:<2} ({:>6.0} / {:>6.0} samples): t = {t:+.2}",
            (p * 100.0) as u32,
            moments[0].n,
            moments[1].n
        );
    }
    let verdict = if worst < 4.5 {
        "no leak detected"
    } else {
        "LEAK: classes told apart"
    };
    println!("    max |t| = {worst:.2} ({verdict})");
    worst
}

fn nanos(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Comparisons per sample: one takes a few nanoseconds, below the clock's resolution.
const BATCH: usize = 64;

fn digest_tests(samples: usize) {
    let mut secret = [0u8; 32];
    rand::rng().fill(&mut secret[..]);
    let mut first = secret;
    first[0] ^= 1;
    let mut last = secret;
    last[31] ^= 1;
    let (secret_digest, first, last) = (
        Digest::from_bytes(secret),
        Digest::from_bytes(first),
        Digest::from_bytes(last),
    );
    run("digest_compare", samples, |class| {
        let other = if class { &last } else { &first };
        let start = Instant::now();
        for _ in 0..BATCH {
            black_box(black_box(&secret_digest).ct_eq(black_box(other)));
        }
        nanos(start)
    });
    let (secret_bytes, first, last) = (secret, *first.as_bytes(), *last.as_bytes());
    run("digest_compare_control (early exit)", samples, |class| {
        let other = if class { &last } else { &first };
        let start = Instant::now();
        for _ in 0..BATCH {
            black_box(early_exit_eq(black_box(&secret_bytes), black_box(other)));
        }
        nanos(start)
    });
}

/// The comparison a constant-time one replaces: it stops at the first differing byte.
fn early_exit_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// Keys (and unknown ids) per class: each sample picks one at random, so what is measured is
/// the class, not where one id happens to sit in the cache's hash table.
const IDS_PER_CLASS: usize = 256;

fn verifier_test(samples: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let pepper = Pepper::new(1, "timing-pepper-timing-pepper-timing-pepper")
        .unwrap_or_else(|e| panic!("{e}"));
    let format = KeyFormat::new("timing_live").unwrap_or_else(|e| panic!("{e}"));
    let keyring = Keyring::new(format.clone(), Peppers::new(pepper));
    let verifier = Verifier::builder(keyring, MemoryStore::new())
        .failure_limit(None)
        .build();
    let present = |key: &str| -> Presented {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-api-key",
            HeaderValue::from_str(key).unwrap_or_else(|e| panic!("{e}")),
        );
        let uri = Uri::from_static("/");
        verifier
            .extract(&HttpRequestView::new(&headers, &uri, None))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let mut wrong = Vec::with_capacity(IDS_PER_CLASS);
    let mut unknown = Vec::with_capacity(IDS_PER_CLASS);
    for n in 0..IDS_PER_CLASS {
        let created = runtime
            .block_on(
                verifier
                    .admin()
                    .create_key(NewKey::new(format!("timing-{n}"))),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        // Same id, another secret: a well-formed key whose secret is wrong.
        let (_, other) = format.generate();
        let other = other.expose_secret();
        let secret = &other[other.len() - 36..other.len() - 6];
        wrong.push(present(&forge(
            format.prefix(),
            created.record.id.as_str(),
            secret,
        )));
        // An id no key has.
        let (_, never_stored) = format.generate();
        unknown.push(present(never_stored.expose_secret()));
    }
    runtime.block_on(async {
        // Warm the cache: every record, and every unknown id.
        for p in wrong.iter().chain(&unknown) {
            assert!(verifier.verify(p).await.is_err());
        }
        let mut rng = rand::rng();
        let mut measure = |a: &[Presented], b: &[Presented], class: bool| {
            let pool = if class { b } else { a };
            let presented = &pool[rng.random_range(0..pool.len())];
            let start = Instant::now();
            let answer = futures_now(verifier.verify(black_box(presented)));
            let elapsed = nanos(start);
            assert!(answer.is_err());
            elapsed
        };
        run("unknown_vs_wrong_secret", samples, |class| {
            measure(&unknown, &wrong, class)
        });
        // The noise floor: two halves of the same class. Whatever |t| this reaches on the
        // machine, a difference between the classes above must exceed it to mean anything.
        let (first, second) = wrong.split_at(IDS_PER_CLASS / 2);
        run(
            "control: wrong_secret_vs_wrong_secret (A/A)",
            samples,
            |class| measure(first, second, class),
        );
    });
}

/// Polls a future that completes without waiting (cache hits do) to its end.
fn futures_now<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// `{prefix}_{id}_{secret}{crc}` with a valid checksum.
fn forge(prefix: &str, id: &str, secret: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let body = format!("{prefix}_{id}_{secret}");
    let mut crc = crc32fast::hash(body.as_bytes());
    let mut tail = [b'0'; 6];
    for slot in tail.iter_mut().rev() {
        *slot = ALPHABET[(crc % 62) as usize];
        crc /= 62;
    }
    body + std::str::from_utf8(&tail).unwrap_or_default()
}

fn main() {
    // `cargo bench` passes `--bench`; a number sets the sample count.
    let samples = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    digest_tests(samples);
    verifier_test(samples);
}
