//! The metrics keygate emits through the [`metrics`](https://docs.rs/metrics) facade: names and
//! meanings. The application installs the recorder (a Prometheus exporter, say); keygate only
//! emits. docs/observability.md is the full reference: types, labels, when each one moves.
//!
//! | name | type | labels |
//! | --- | --- | --- |
//! | [`DECISIONS`] | counter | `outcome` (`allowed`, `denied`), `reason` (`none` or a [`Reason::as_str`]) |
//! | [`GUARD_REFUSALS`] | counter | `reason` (`insufficient_scope`, `wrong_environment`, `quota_exhausted`, `quota_unavailable`, `rate_limited`, `limiter_unavailable`, `missing_credentials`) |
//! | [`CACHE_HITS`], [`CACHE_MISSES`] | counter | `cache` (`keys`, `unknown_ids`) |
//! | [`CACHE_ENTRIES`] | gauge | `cache` (`keys`, `unknown_ids`) |
//! | [`STORE_FIND_DURATION`] | histogram (seconds) | — |
//! | [`STORE_FIND_ERRORS`] | counter | — |
//! | [`AUDIT_EVENTS_DROPPED`], [`AUDIT_EVENTS_LOST`], [`AUDIT_FAILED_WRITES`] | counter | — |
//! | [`LAST_USED_REPORTS_DROPPED`], [`LAST_USED_WRITTEN`], [`LAST_USED_FAILED_FLUSHES`] | counter | — |
//! | [`INVALIDATIONS_RECEIVED`], [`INVALIDATION_PUBLISH_FAILURES`] | counter | — |
//! | [`INVALIDATION_SUBSCRIBED`] | gauge (0 or 1) | — |
//! | [`REVOCATION_BOUND`] | gauge (seconds) | — |
//! | [`STALE_SERVED`] | counter | — |
//!
//! # One request, one decision
//! [`DECISIONS`] counts the key check: exactly one per request that reached it (a refusal by
//! [`Verifier::extract`](crate::Verifier::extract), or the outcome of
//! [`Verifier::verify`](crate::Verifier::verify)). A route guard ([`RequireScopes`]) runs after
//! the key check allowed the request, and counts its refusals in [`GUARD_REFUSALS`] only. So
//! requests refused = `DECISIONS{outcome="denied"}` + `GUARD_REFUSALS`; requests that reached
//! the handler = `DECISIONS{outcome="allowed"}` − `GUARD_REFUSALS{reason="insufficient_scope"}`.
//! A request without a key on an [`optional`](crate::ApiKeyLayer::optional) route is no
//! decision: it is not counted (unless a guard then refuses it, `missing_credentials`).
//!
//! # Cost
//! Every key is a `static` (no allocation, no formatting); with no recorder installed an
//! emission is a thread-local read and an atomic load. A cache hit of a valid key emits two
//! counter increments: [`CACHE_HITS`]`{cache="keys"}` and [`DECISIONS`]`{outcome="allowed"}`.
//!
//! Metrics are per process, like the recorder: several verifiers in one process add up their
//! counters, and the gauges show the verifier that updated them last.
//!
//! [`Reason::as_str`]: crate::Reason::as_str
//! [`RequireScopes`]: crate::RequireScopes

use std::time::Duration;

use ::metrics::{Key, Label, Level, Metadata, Unit};

use crate::rejection::Reason;

/// Counter: key checks by `outcome` and `reason`.
pub const DECISIONS: &str = "keygate_decisions_total";
/// Counter: requests a route guard refused after the key check, by `reason`.
pub const GUARD_REFUSALS: &str = "keygate_guard_refusals_total";
/// Counter: cache lookups answered by the cache, by `cache`.
pub const CACHE_HITS: &str = "keygate_cache_hits_total";
/// Counter: cache lookups the cache could not answer, by `cache`.
pub const CACHE_MISSES: &str = "keygate_cache_misses_total";
/// Gauge: entries in each cache (approximate), by `cache`.
pub const CACHE_ENTRIES: &str = "keygate_cache_entries";
/// Histogram: duration of `KeyStore::find` calls on cache misses, in seconds.
pub const STORE_FIND_DURATION: &str = "keygate_store_find_duration_seconds";
/// Counter: `KeyStore::find` calls that failed (answered 503).
pub const STORE_FIND_ERRORS: &str = "keygate_store_find_errors_total";
/// Counter: audit events dropped because the buffer was full.
pub const AUDIT_EVENTS_DROPPED: &str = "keygate_audit_events_dropped_total";
/// Counter: audit events a sink failed to take that no longer fit its retry buffer.
pub const AUDIT_EVENTS_LOST: &str = "keygate_audit_events_lost_total";
/// Counter: batch writes an audit sink refused (retried with the next batch).
pub const AUDIT_FAILED_WRITES: &str = "keygate_audit_failed_writes_total";
/// Counter: last-used reports dropped because the buffer was full.
pub const LAST_USED_REPORTS_DROPPED: &str = "keygate_last_used_reports_dropped_total";
/// Counter: last-used times written to the store.
pub const LAST_USED_WRITTEN: &str = "keygate_last_used_written_total";
/// Counter: last-used flushes the store refused (retried at the next flush).
pub const LAST_USED_FAILED_FLUSHES: &str = "keygate_last_used_failed_flushes_total";

/// Counter: invalidation messages received from the [`Invalidation`](crate::Invalidation) channel.
pub const INVALIDATIONS_RECEIVED: &str = "keygate_invalidations_received_total";
/// Gauge: 1 while the verifier's invalidation subscription is live, 0 while it is degraded.
pub const INVALIDATION_SUBSCRIBED: &str = "keygate_invalidation_subscribed";
/// Gauge: the verifier's [revocation bound](crate::Verifier::revocation_bound) now, in
/// seconds: how long a key changed elsewhere may still be accepted from its cache.
pub const REVOCATION_BOUND: &str = "keygate_revocation_bound_seconds";
/// Counter: changes made through `Admin` whose invalidation could not be published.
pub const INVALIDATION_PUBLISH_FAILURES: &str = "keygate_invalidation_publish_failures_total";
/// Counter: requests allowed on a cached record past its TTL because the store was unreachable
/// (stale-if-error).
pub const STALE_SERVED: &str = "keygate_stale_served_total";
/// Counter: failed attempts from clients whose address is unknown (no peer address, or an
/// unparsable `X-Forwarded-For` behind a trusted proxy), counted in one shared failure
/// allowance. A steady rate means the address is lost somewhere: check the proxy set-up.
pub const UNKNOWN_CLIENT_FAILURES: &str = "keygate_unknown_client_failures_total";

static METADATA: Metadata<'static> = Metadata::new("keygate", Level::INFO, Some(module_path!()));

/// A `&'static Key` built at compile time: no allocation, no hashing at run time.
macro_rules! key {
    ($name:expr $(, $label:literal => $value:expr)* $(,)?) => {{
        static LABELS: &[Label] = &[$(Label::from_static_parts($label, $value)),*];
        static KEY: Key = Key::from_static_parts($name, LABELS);
        &KEY
    }};
}

fn count(key: &'static Key, n: u64) {
    ::metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA).increment(n));
}

/// Describes every metric to the recorder installed now (called by `VerifierBuilder::build`).
pub(crate) fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        DECISIONS,
        Unit::Count,
        "API-key checks by outcome (allowed, denied) and reason (none, or why the key was refused)"
    );
    describe_counter!(
        GUARD_REFUSALS,
        Unit::Count,
        "Requests a route guard refused after the key check allowed them, by reason"
    );
    describe_counter!(
        CACHE_HITS,
        Unit::Count,
        "Key lookups answered by the cache (keys: a known key; unknown_ids: a remembered unknown id)"
    );
    describe_counter!(
        CACHE_MISSES,
        Unit::Count,
        "Key lookups the cache could not answer (a miss of unknown_ids means a store load)"
    );
    describe_gauge!(
        CACHE_ENTRIES,
        Unit::Count,
        "Entries in the key cache and the unknown-id cache (approximate; updated on misses and invalidations)"
    );
    describe_histogram!(
        STORE_FIND_DURATION,
        Unit::Seconds,
        "Duration of key store lookups on cache misses (one per coalesced load)"
    );
    describe_counter!(
        STORE_FIND_ERRORS,
        Unit::Count,
        "Key store lookups that failed (requests answered 503)"
    );
    describe_counter!(
        AUDIT_EVENTS_DROPPED,
        Unit::Count,
        "Audit events dropped because the buffer was full (the sinks fell behind)"
    );
    describe_counter!(
        AUDIT_EVENTS_LOST,
        Unit::Count,
        "Audit events a failing sink could not take and that no longer fit its retry buffer"
    );
    describe_counter!(
        AUDIT_FAILED_WRITES,
        Unit::Count,
        "Audit batch writes a sink refused (retried with the next batch)"
    );
    describe_counter!(
        LAST_USED_REPORTS_DROPPED,
        Unit::Count,
        "Last-used reports dropped because the buffer was full"
    );
    describe_counter!(
        LAST_USED_WRITTEN,
        Unit::Count,
        "Last-used times written to the key store"
    );
    describe_counter!(
        LAST_USED_FAILED_FLUSHES,
        Unit::Count,
        "Last-used flushes the key store refused (retried at the next flush)"
    );
    describe_counter!(
        INVALIDATIONS_RECEIVED,
        Unit::Count,
        "Key invalidation messages received from other instances"
    );
    describe_gauge!(
        INVALIDATION_SUBSCRIBED,
        Unit::Count,
        "1 while the invalidation subscription is live; 0 while cached keys are re-read after the degraded TTL"
    );
    describe_gauge!(
        REVOCATION_BOUND,
        Unit::Seconds,
        "How long a key changed elsewhere (revoked by the CLI or another instance) may still be accepted from this verifier's cache"
    );
    describe_counter!(
        INVALIDATION_PUBLISH_FAILURES,
        Unit::Count,
        "Key changes whose invalidation could not be published (other instances see them after their TTL)"
    );
    describe_counter!(
        STALE_SERVED,
        Unit::Count,
        "Requests allowed on a cached record past its TTL because the key store was unreachable"
    );
    describe_counter!(
        UNKNOWN_CLIENT_FAILURES,
        Unit::Count,
        "Failed attempts from clients without a known address, counted in one shared failure allowance"
    );
}

/// The key check allowed the request.
#[inline]
pub(crate) fn allowed() {
    count(
        key!(DECISIONS, "outcome" => "allowed", "reason" => "none"),
        1,
    );
}

/// The key check refused the request.
pub(crate) fn denied(reason: Reason) {
    count(denied_key(reason), 1);
}

/// A route guard refused the request.
pub(crate) fn guard_refused(reason: Reason) {
    let key = match reason {
        Reason::InsufficientScope => {
            key!(GUARD_REFUSALS, "reason" => Reason::InsufficientScope.as_str())
        }
        Reason::WrongEnvironment => {
            key!(GUARD_REFUSALS, "reason" => Reason::WrongEnvironment.as_str())
        }
        Reason::QuotaExhausted => {
            key!(GUARD_REFUSALS, "reason" => Reason::QuotaExhausted.as_str())
        }
        Reason::QuotaUnavailable => {
            key!(GUARD_REFUSALS, "reason" => Reason::QuotaUnavailable.as_str())
        }
        Reason::RateLimited => {
            key!(GUARD_REFUSALS, "reason" => Reason::RateLimited.as_str())
        }
        Reason::LimiterUnavailable => {
            key!(GUARD_REFUSALS, "reason" => Reason::LimiterUnavailable.as_str())
        }
        _ => key!(GUARD_REFUSALS, "reason" => Reason::MissingCredentials.as_str()),
    };
    count(key, 1);
}

fn denied_key(reason: Reason) -> &'static Key {
    macro_rules! denied {
        ($variant:ident) => {
            key!(DECISIONS, "outcome" => "denied", "reason" => Reason::$variant.as_str())
        };
    }
    // Exhaustive: a new reason does not compile until it has its key.
    match reason {
        Reason::MissingCredentials => denied!(MissingCredentials),
        Reason::MultipleCredentials => denied!(MultipleCredentials),
        Reason::CredentialTooLong => denied!(CredentialTooLong),
        Reason::Malformed => denied!(Malformed),
        Reason::WrongPrefix => denied!(WrongPrefix),
        Reason::BadChecksum => denied!(BadChecksum),
        Reason::UnknownKey => denied!(UnknownKey),
        Reason::Canary => denied!(Canary),
        Reason::WrongSecret => denied!(WrongSecret),
        Reason::Revoked => denied!(Revoked),
        Reason::Disabled => denied!(Disabled),
        Reason::Expired => denied!(Expired),
        Reason::ForbiddenClientIp => denied!(ForbiddenClientIp),
        Reason::InsufficientScope => denied!(InsufficientScope),
        Reason::WrongEnvironment => denied!(WrongEnvironment),
        Reason::StoreUnavailable => denied!(StoreUnavailable),
        Reason::RateLimited => denied!(RateLimited),
        Reason::TooManyFailures => denied!(TooManyFailures),
        Reason::LimiterUnavailable => denied!(LimiterUnavailable),
        Reason::QuotaExhausted => denied!(QuotaExhausted),
        Reason::QuotaUnavailable => denied!(QuotaUnavailable),
    }
}

/// Which of the verifier's two caches.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CacheKind {
    /// Records of known keys.
    Keys,
    /// Ids the store did not know.
    UnknownIds,
}

/// A cache hit on a record (a hit of `keys`), or on an unknown id (a miss of `keys` and a hit
/// of `unknown_ids`). Both make the same two counter updates (a record's second is by 0, which
/// no exporter shows as a change), so they cost the same: timing does not tell them apart.
#[inline]
pub(crate) fn cache_hit_of(unknown: bool) {
    let (first, n) = if unknown {
        (key!(CACHE_MISSES, "cache" => "keys"), 1)
    } else {
        (key!(CACHE_HITS, "cache" => "keys"), 0)
    };
    count(first, 1);
    count(key!(CACHE_HITS, "cache" => "unknown_ids"), n);
}

pub(crate) fn cache_miss(cache: CacheKind) {
    count(
        match cache {
            CacheKind::Keys => key!(CACHE_MISSES, "cache" => "keys"),
            CacheKind::UnknownIds => key!(CACHE_MISSES, "cache" => "unknown_ids"),
        },
        1,
    );
}

/// Sets both cache size gauges (the cache's counts: O(1)).
pub(crate) fn cache_entries(keys: u64, unknown_ids: u64) {
    #[allow(clippy::cast_precision_loss)] // exact up to 2^53 entries
    ::metrics::with_recorder(|recorder| {
        recorder
            .register_gauge(key!(CACHE_ENTRIES, "cache" => "keys"), &METADATA)
            .set(keys as f64);
        recorder
            .register_gauge(key!(CACHE_ENTRIES, "cache" => "unknown_ids"), &METADATA)
            .set(unknown_ids as f64);
    });
}

pub(crate) fn store_find(duration: Duration, failed: bool) {
    ::metrics::with_recorder(|recorder| {
        recorder
            .register_histogram(key!(STORE_FIND_DURATION), &METADATA)
            .record(duration.as_secs_f64());
        if failed {
            recorder
                .register_counter(key!(STORE_FIND_ERRORS), &METADATA)
                .increment(1);
        }
    });
}

pub(crate) fn audit_dropped() {
    count(key!(AUDIT_EVENTS_DROPPED), 1);
}

pub(crate) fn audit_lost(events: u64) {
    count(key!(AUDIT_EVENTS_LOST), events);
}

pub(crate) fn audit_failed_write() {
    count(key!(AUDIT_FAILED_WRITES), 1);
}

pub(crate) fn last_used_dropped() {
    count(key!(LAST_USED_REPORTS_DROPPED), 1);
}

pub(crate) fn last_used_written(keys: u64) {
    count(key!(LAST_USED_WRITTEN), keys);
}

pub(crate) fn last_used_failed_flush() {
    count(key!(LAST_USED_FAILED_FLUSHES), 1);
}

pub(crate) fn invalidation_received() {
    count(key!(INVALIDATIONS_RECEIVED), 1);
}

pub(crate) fn invalidation_subscribed(live: bool) {
    ::metrics::with_recorder(|recorder| {
        recorder
            .register_gauge(key!(INVALIDATION_SUBSCRIBED), &METADATA)
            .set(if live { 1.0 } else { 0.0 });
    });
}

/// The verifier's revocation bound changed (built, subscribed, subscription lost).
pub(crate) fn revocation_bound(bound: Duration) {
    ::metrics::with_recorder(|recorder| {
        recorder
            .register_gauge(key!(REVOCATION_BOUND), &METADATA)
            .set(bound.as_secs_f64());
    });
}

pub(crate) fn invalidation_publish_failed() {
    count(key!(INVALIDATION_PUBLISH_FAILURES), 1);
}

pub(crate) fn stale_served() {
    count(key!(STALE_SERVED), 1);
}

pub(crate) fn unknown_client_failure() {
    count(key!(UNKNOWN_CLIENT_FAILURES), 1);
}

#[cfg(test)]
mod tests {
    use super::{DECISIONS, denied_key};
    use crate::rejection::Reason;

    #[test]
    fn every_reason_has_its_own_denied_key() {
        for reason in Reason::ALL {
            let key = denied_key(reason);
            assert_eq!(key.name(), DECISIONS);
            let labels: Vec<_> = key.labels().map(|l| (l.key(), l.value())).collect();
            assert_eq!(labels, [("outcome", "denied"), ("reason", reason.as_str())]);
        }
    }
}
