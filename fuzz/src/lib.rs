//! keygate's fuzz targets: one module per target, each with a `run(&[u8])` that does the work
//! and asserts the target's invariants (a failed assertion is a crash the fuzzer reports).
//!
//! The libFuzzer binaries in `fuzz_targets/` only call these functions; `cargo fuzz` builds
//! them (see `fuzz/README.md`). The test `tests/corpus.rs` replays every committed seed corpus
//! (`fuzz/corpus/<target>/`) through the same functions, so `cargo test --workspace` runs
//! every corpus.
//!
//! | target | what it feeds |
//! | --- | --- |
//! | [`key_parse`] | `KeyFormat::new` and `KeyFormat::parse`, checked against a reference parser |
//! | [`extract`] | `Verifier::extract` over arbitrary headers, URIs, peers and `X-Forwarded-For` |
//! | [`rate_policy`] | `RatePolicy` and `RateLimit` `FromStr`, and their `Display` round trip |
//! | [`peppers`] | `Peppers::parse` (`KEYGATE_PEPPER`), with no secret in errors or `Debug` |
//! | [`scopes`] | `Scope::new`, `Scope::grants` and `ScopeRequirement`, against reference rules |
//! | [`invalidation`] | invalidation message payloads (Redis pub/sub bytes, PostgreSQL `NOTIFY` text) |
//! | [`redis_reply`] | RESP bytes → the rate limit script's reply → a `RateDecision` |
//! | [`sql_row`] | a stored row's column values → a `KeyRecord` (503 on anything unreadable) |
//! | [`tower_service`] | an arbitrary request through `ApiKeyLayer` over a trivial service |
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

pub mod extract;
pub mod invalidation;
pub mod key_parse;
pub mod peppers;
pub mod rate_policy;
pub mod redis_reply;
pub mod request;
pub mod scopes;
pub mod sql_row;
pub mod tower_service;

/// A target's entry point: one input, invariants asserted.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its binary and of its corpus folder).
pub const TARGETS: &[(&str, Target)] = &[
    ("key_parse", key_parse::run),
    ("extract", extract::run),
    ("rate_policy", rate_policy::run),
    ("peppers", peppers::run),
    ("scopes", scopes::run),
    ("invalidation", invalidation::run),
    ("redis_reply", redis_reply::run),
    ("sql_row", sql_row::run),
    ("tower_service", tower_service::run),
];

/// The deployment prefix of every key the targets make.
pub const PREFIX: &str = "fuzz_test";

/// The base62 alphabet of keys, in value order.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The checksum a key ending after `body` must carry: CRC32 as six base62 characters, computed
/// here independently of keygate.
#[must_use]
pub fn checksum(body: &[u8]) -> [u8; 6] {
    let mut value = crc32fast::hash(body);
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// A well-formed key of `prefix` with this id and secret, its checksum computed here.
#[must_use]
pub fn key_with(prefix: &str, id: &str, secret: &str) -> String {
    let mut key = format!("{prefix}_{id}_{secret}");
    let crc = checksum(key.as_bytes());
    key.extend(crc.iter().map(|b| char::from(*b)));
    key
}

/// Whether `needle` occurs in `haystack`.
#[must_use]
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
