//! Metrics through the `metrics` facade (docs/observability.md): what each kind of request
//! emits, read from a `DebuggingRecorder` installed as this thread's local recorder (every test
//! runs on a current-thread runtime, so background tasks emit to it too).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use actix_web::test;
use keygate::audit::{AuditEvent, Outcome};
use keygate::metrics::{
    AUDIT_EVENTS_DROPPED, CACHE_ENTRIES, CACHE_HITS, CACHE_MISSES, DECISIONS, GUARD_REFUSALS,
    REVOCATION_BOUND, STORE_FIND_DURATION, STORE_FIND_ERRORS,
};
use keygate::{HttpRequestView, NewKey, Scope, Verifier};
use keygate_tests::actix_app::{actix_app, send_actix};
use keygate_tests::channel::MemoryChannel;
use keygate_tests::{Harness, axum_app, send, send_bearer};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// A metric by name and sorted labels.
type Id = (String, Vec<(String, String)>);
/// A counter that moved: name, sorted labels, by how much.
type Moved = (String, Vec<(String, String)>, u64);

/// What was emitted since the last [`Emitted::take`] (the snapshot resets counters).
struct Emitted {
    values: HashMap<Id, DebugValue>,
}

impl Emitted {
    fn take(snapshotter: &Snapshotter) -> Self {
        let values = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let key = key.key();
                let mut labels: Vec<_> = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                labels.sort();
                ((key.name().to_owned(), labels), value)
            })
            .collect();
        Self { values }
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<&DebugValue> {
        let mut labels: Vec<_> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        self.values.get(&(name.to_owned(), labels))
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.get(name, labels) {
            Some(DebugValue::Counter(n)) => *n,
            None => 0,
            Some(other) => panic!("{name} is not a counter: {other:?}"),
        }
    }

    fn samples(&self, name: &str) -> usize {
        match self.get(name, &[]) {
            Some(DebugValue::Histogram(samples)) => samples.len(),
            None => 0,
            Some(other) => panic!("{name} is not a histogram: {other:?}"),
        }
    }

    /// Every counter that moved, as `(name, labels) → n`, for exact comparisons.
    fn moved_counters(&self) -> Vec<Moved> {
        let mut moved: Vec<_> = self
            .values
            .iter()
            .filter_map(|((name, labels), value)| match value {
                DebugValue::Counter(n) if *n > 0 => Some((name.clone(), labels.clone(), *n)),
                _ => None,
            })
            .collect();
        moved.sort();
        moved
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut labels: Vec<_> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    labels
}

async fn verify(verifier: &Verifier, key: &str) -> Result<(), keygate::Rejection> {
    let mut headers = http::HeaderMap::new();
    let value = format!("Bearer {key}").parse().unwrap();
    headers.insert(http::header::AUTHORIZATION, value);
    let uri = http::Uri::from_static("/orders");
    let peer = Some("127.0.0.1".parse().unwrap());
    verifier
        .verify_request(&HttpRequestView::new(&headers, &uri, peer))
        .await
        .map(drop)
}

#[tokio::test]
async fn an_allowed_cache_hit_emits_exactly_one_decision_and_one_hit() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let h = Harness::new();
    let (key, _) = h.create(NewKey::new("hot")).await;
    assert!(verify(&h.verifier, &key).await.is_ok());
    Emitted::take(&snapshotter);

    assert!(verify(&h.verifier, &key).await.is_ok());
    let emitted = Emitted::take(&snapshotter);
    assert_eq!(
        emitted.moved_counters(),
        [
            (CACHE_HITS.to_owned(), labels(&[("cache", "keys")]), 1),
            (
                DECISIONS.to_owned(),
                labels(&[("outcome", "allowed"), ("reason", "none")]),
                1
            ),
        ]
    );
    assert_eq!(emitted.samples(STORE_FIND_DURATION), 0);
}

#[tokio::test]
async fn a_miss_times_one_store_call_and_sets_the_size_gauges() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let h = Harness::new();
    let (key, _) = h.create(NewKey::new("cold")).await;
    Emitted::take(&snapshotter);

    assert!(verify(&h.verifier, &key).await.is_ok());
    let emitted = Emitted::take(&snapshotter);
    assert_eq!(emitted.counter(CACHE_MISSES, &[("cache", "keys")]), 1);
    assert_eq!(
        emitted.counter(CACHE_MISSES, &[("cache", "unknown_ids")]),
        1
    );
    assert_eq!(emitted.counter(CACHE_HITS, &[("cache", "keys")]), 0);
    assert_eq!(emitted.samples(STORE_FIND_DURATION), 1);
    assert_eq!(h.store.finds(), 1);
    assert_eq!(emitted.counter(STORE_FIND_ERRORS, &[]), 0);
    assert_eq!(
        emitted.counter(DECISIONS, &[("outcome", "allowed"), ("reason", "none")]),
        1
    );
    for cache in ["keys", "unknown_ids"] {
        assert!(
            matches!(
                emitted.get(CACHE_ENTRIES, &[("cache", cache)]),
                Some(DebugValue::Gauge(_))
            ),
            "{CACHE_ENTRIES}{{cache={cache}}} set on a miss"
        );
    }
}

#[tokio::test]
async fn an_unknown_key_is_a_denial_and_then_a_hit_of_the_unknown_id_cache() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let h = Harness::new();
    // A real key of another store: well-formed, unknown here.
    let (unknown, _) = Harness::new().create(NewKey::new("elsewhere")).await;
    Emitted::take(&snapshotter);

    let denied = [("outcome", "denied"), ("reason", "unknown_key")];
    assert!(verify(&h.verifier, &unknown).await.is_err());
    let first = Emitted::take(&snapshotter);
    assert_eq!(first.counter(DECISIONS, &denied), 1);
    assert_eq!(first.counter(CACHE_MISSES, &[("cache", "unknown_ids")]), 1);
    assert_eq!(first.samples(STORE_FIND_DURATION), 1);

    assert!(verify(&h.verifier, &unknown).await.is_err());
    let second = Emitted::take(&snapshotter);
    assert_eq!(second.counter(DECISIONS, &denied), 1);
    assert_eq!(second.counter(CACHE_MISSES, &[("cache", "keys")]), 1);
    assert_eq!(second.counter(CACHE_HITS, &[("cache", "unknown_ids")]), 1);
    assert_eq!(second.counter(CACHE_MISSES, &[("cache", "unknown_ids")]), 0);
    assert_eq!(second.samples(STORE_FIND_DURATION), 0, "no store call");
}

#[tokio::test]
async fn a_malformed_key_is_one_denial_and_nothing_else() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let h = Harness::new();
    Emitted::take(&snapshotter);

    assert!(verify(&h.verifier, "not-a-key").await.is_err());
    assert_eq!(
        Emitted::take(&snapshotter).moved_counters(),
        [(
            DECISIONS.to_owned(),
            labels(&[("outcome", "denied"), ("reason", "malformed")]),
            1
        )]
    );
}

#[tokio::test]
async fn a_store_outage_counts_the_error_times_the_call_and_denies_store_unavailable() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let h = Harness::new();
    let (key, _) = h.create(NewKey::new("cold")).await;
    h.store.set_down(true);
    Emitted::take(&snapshotter);

    assert!(verify(&h.verifier, &key).await.is_err());
    let emitted = Emitted::take(&snapshotter);
    assert_eq!(emitted.counter(STORE_FIND_ERRORS, &[]), 1);
    assert_eq!(emitted.samples(STORE_FIND_DURATION), 1);
    assert_eq!(
        emitted.counter(
            DECISIONS,
            &[("outcome", "denied"), ("reason", "store_unavailable")]
        ),
        1
    );

    // Never cached: back up, the next request loads and is allowed.
    h.store.set_down(false);
    assert!(verify(&h.verifier, &key).await.is_ok());
    assert_eq!(
        Emitted::take(&snapshotter).counter(STORE_FIND_ERRORS, &[]),
        0
    );
}

#[tokio::test]
async fn audit_drops_are_counted_as_in_audit_stats() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let h = Harness::new();
    let verifier = h.sibling_with(|b| {
        b.audit_sink(keygate_tests::CapturingSink::default())
            .audit_buffer(2)
    });
    Emitted::take(&snapshotter);

    // No await in between: the writer cannot run, so all but the buffer's two are dropped.
    for _ in 0..10 {
        verifier.audit(AuditEvent::request(SystemTime::UNIX_EPOCH, Outcome::Denied));
    }
    let stats = verifier.audit_stats();
    assert_eq!((stats.recorded, stats.dropped), (2, 8));
    assert_eq!(
        Emitted::take(&snapshotter).counter(AUDIT_EVENTS_DROPPED, &[]),
        8
    );
}

#[tokio::test]
async fn a_guard_refusal_is_counted_by_the_guard_after_the_key_check_allowed() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let h = Harness::new();
    let (plain, _) = h.create(NewKey::new("plain")).await;
    let (reader, _) = h
        .create(NewKey::new("reader").scopes([Scope::new("orders:read").unwrap()]))
        .await;
    let app = axum_app(&h.verifier);
    Emitted::take(&snapshotter);

    let allowed = [("outcome", "allowed"), ("reason", "none")];
    let refused = [("reason", "insufficient_scope")];
    assert_eq!(send_bearer(&app, "/orders", &plain).await.status, 403);
    let emitted = Emitted::take(&snapshotter);
    assert_eq!(emitted.counter(DECISIONS, &allowed), 1);
    assert_eq!(emitted.counter(GUARD_REFUSALS, &refused), 1);

    assert_eq!(send_bearer(&app, "/orders", &reader).await.status, 200);
    let emitted = Emitted::take(&snapshotter);
    assert_eq!(emitted.counter(DECISIONS, &allowed), 1);
    assert_eq!(emitted.counter(GUARD_REFUSALS, &refused), 0);

    // The actix guard counts the same way.
    let actix = test::init_service(actix_app(h.verifier.clone())).await;
    let auth = format!("Bearer {plain}");
    let reply = send_actix(
        &actix,
        "/orders",
        &[("authorization", auth.as_bytes())],
        "127.0.0.1:1",
    )
    .await;
    assert_eq!(reply.status, 403);
    let emitted = Emitted::take(&snapshotter);
    assert_eq!(emitted.counter(DECISIONS, &allowed), 1);
    assert_eq!(emitted.counter(GUARD_REFUSALS, &refused), 1);
}

#[tokio::test]
async fn no_key_on_an_optional_route_is_no_decision() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let h = Harness::new();
    let app = axum_app(&h.verifier);
    Emitted::take(&snapshotter);

    let reply = send(&app, keygate_tests::request("/maybe", &[], "127.0.0.1:1")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(Emitted::take(&snapshotter).moved_counters(), []);

    let actix = test::init_service(actix_app(h.verifier.clone())).await;
    let reply = send_actix(&actix, "/maybe", &[], "127.0.0.1:1").await;
    assert_eq!(reply.status, 200);
    assert_eq!(Emitted::take(&snapshotter).moved_counters(), []);

    // A required route without a key is a denial.
    let reply = send(&app, keygate_tests::request("/hello", &[], "127.0.0.1:1")).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        Emitted::take(&snapshotter).counter(
            DECISIONS,
            &[("outcome", "denied"), ("reason", "missing_credentials")]
        ),
        1
    );
}

#[tokio::test]
async fn every_metric_is_described_when_a_verifier_is_built() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let h = Harness::new();
    let (key, _) = h.create(NewKey::new("k")).await;
    assert!(verify(&h.verifier, &key).await.is_ok());
    assert!(verify(&h.verifier, &key).await.is_ok());
    tokio::time::sleep(Duration::ZERO).await;
    for (key, _unit, description, _) in snapshotter.snapshot().into_vec() {
        let name = key.key().name().to_owned();
        assert!(name.starts_with("keygate_"), "{name}");
        assert!(description.is_some(), "{name} has no description");
    }
}

#[tokio::test]
async fn the_revocation_bound_gauge_follows_the_subscription() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let gauge = |emitted: &Emitted| match emitted.get(REVOCATION_BOUND, &[]) {
        Some(DebugValue::Gauge(value)) => Some(value.into_inner()),
        _ => None,
    };
    // Without a channel: the cache TTL, set when the verifier is built.
    let h = Harness::new();
    assert_eq!(gauge(&Emitted::take(&snapshotter)), Some(30.0));

    // With one: the degraded TTL until subscribed, then the channel's bound.
    let channel = MemoryChannel::default().with_liveness_bound(Duration::from_secs(4));
    let v = {
        let channel = channel.clone();
        h.sibling_with(move |b| b.invalidation(channel))
    };
    assert_eq!(gauge(&Emitted::take(&snapshotter)), Some(1.0));
    while v.invalidation_subscribed() != Some(true) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(gauge(&Emitted::take(&snapshotter)), Some(4.0));
    channel.set_down(true);
    while v.invalidation_subscribed() != Some(false) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(gauge(&Emitted::take(&snapshotter)), Some(1.0));
}

/// Issue 18: each use of a canary is one `reason="canary"` denial and one high-severity audit
/// event with the client address and route — never a second of either — on axum and actix-web,
/// whether the key was loaded from the store or cached.
#[tokio::test]
async fn a_canary_use_is_one_denial_and_one_high_severity_event() {
    use keygate::audit::{Action, Severity};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let h = Harness::new();
    let (canary, record) = h.create(NewKey::new("decoy").canary()).await;
    let denied = [("outcome", "denied"), ("reason", "canary")];

    let axum_events = keygate_tests::CapturingSink::default();
    let sink = axum_events.clone();
    let axum_verifier = h.sibling_with(|b| b.audit_sink(sink));
    let axum = axum_app(&axum_verifier);
    let actix_events = keygate_tests::CapturingSink::default();
    let sink = actix_events.clone();
    let actix_verifier = h.sibling_with(|b| b.audit_sink(sink));
    let actix = test::init_service(actix_app(actix_verifier.clone())).await;
    let auth = format!("Bearer {canary}");
    Emitted::take(&snapshotter);

    for round in ["cold", "cached"] {
        for framework in ["axum", "actix"] {
            let (reply, verifier, events) = if framework == "axum" {
                let reply = send_bearer(&axum, "/hello", &canary).await;
                (reply, &axum_verifier, &axum_events)
            } else {
                let headers = [("authorization", auth.as_bytes())];
                let reply = send_actix(&actix, "/hello", &headers, "127.0.0.1:1").await;
                (reply, &actix_verifier, &actix_events)
            };
            assert_eq!(reply.status, 401, "{framework} {round}");
            verifier.flush_audit().await;
            let emitted = Emitted::take(&snapshotter);
            let decisions: Vec<_> = emitted
                .moved_counters()
                .into_iter()
                .filter(|(name, _, _)| name == DECISIONS)
                .collect();
            assert_eq!(
                decisions,
                [(DECISIONS.to_owned(), labels(&denied), 1)],
                "{framework} {round}: one decision, the canary's"
            );
            let events = events.take();
            let [event] = &events[..] else {
                panic!("{framework} {round}: {} events, want 1", events.len());
            };
            assert_eq!(event.action, Action::Request);
            assert_eq!(event.outcome, Some(Outcome::Denied));
            assert_eq!(event.reason, Some(keygate::Reason::Canary));
            assert_eq!(event.severity(), Severity::High, "{framework} {round}");
            assert_eq!(event.key_id, Some(record));
            assert_eq!(event.client_ip, Some("127.0.0.1".parse().unwrap()));
            assert_eq!(event.route.as_deref(), Some("/hello"));
            assert_eq!(event.status, Some(401));
        }
    }
}
