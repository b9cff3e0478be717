//! The webhook sink against a local receiver that is down for its first attempts.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use keygate::clock::{Clock, ManualClock};
use keygate::notice::{ExpiringSweep, IdleSweep, Notice, NoticeKey, NoticeSink};
use keygate::policy::{LifetimePolicy, write_policy};
use keygate::{Admin, HttpRequestView, Keyring, MemoryStore, NewKey, Reason, Verifier};
use keygate_webhook::{
    DEFAULT_TOLERANCE, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSecret, WebhookSink,
};

const SECRET: &str = "test-webhook-secret-0123456789";
const DAY: Duration = Duration::from_secs(86_400);

/// One request the receiver saw.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

/// Answers 503 to its first `down_for` requests without keeping them, then records every
/// request; the first recorded one is still answered 503 (its acknowledgement is "lost", so the
/// sink sends it again), the rest 200.
#[derive(Default)]
struct Receiver {
    down_for: usize,
    seen: AtomicUsize,
    received: Mutex<Vec<Received>>,
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let n = receiver.seen.fetch_add(1, Ordering::SeqCst);
    if n < receiver.down_for {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    receiver.received.lock().unwrap().push(Received {
        id: header(ID_HEADER),
        timestamp: header(TIMESTAMP_HEADER),
        signature: header(SIGNATURE_HEADER),
        body: body.to_vec(),
    });
    if n == receiver.down_for {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

async fn start(receiver: Arc<Receiver>, status_after: Option<StatusCode>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = match status_after {
        None => axum::Router::new().route("/hooks", post(receive)),
        Some(status) => axum::Router::new().route("/hooks", post(move || async move { status })),
    }
    .with_state(receiver);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hooks")
}

fn secret() -> WebhookSecret {
    WebhookSecret::new(SECRET).unwrap()
}

#[tokio::test]
async fn a_receiver_down_at_first_gets_every_notice_once_after_dedup_signed() {
    let receiver = Arc::new(Receiver {
        down_for: 3,
        ..Receiver::default()
    });
    let url = start(Arc::clone(&receiver), None).await;
    let sink = WebhookSink::builder(url, secret())
        .initial_backoff(Duration::from_millis(10))
        .max_backoff(Duration::from_millis(40))
        .build()
        .unwrap();

    // Keys in a store on a manual clock: two expire within the 7-day window, one later, one never.
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let store = MemoryStore::with_clock(clock.clone());
    let admin = Admin::builder(store.clone())
        .keyring(Keyring::development("acme").unwrap())
        .clock(clock.clone())
        .build();
    let mut plaintexts = Vec::new();
    let mut soon = Vec::new();
    let mut forever = None;
    for (name, expires_in) in [
        ("ci", Some(2 * DAY)),
        ("deploy", Some(6 * DAY)),
        ("batch", Some(20 * DAY)),
        ("forever", None),
    ] {
        let mut new = NewKey::new(name).owner("team-ops");
        if let Some(d) = expires_in {
            new = new.expires_at(clock.now() + d);
        }
        let created = admin.create_key(new).await.unwrap();
        plaintexts.push(created.key.expose_secret().to_owned());
        if expires_in.is_some_and(|d| d <= 7 * DAY) {
            soon.push(created.record);
        } else if expires_in.is_none() {
            forever = Some(created.record);
        }
    }
    let forever = forever.unwrap();

    let mut sweep =
        ExpiringSweep::new(Arc::new(store.clone()), sink.clone(), 7 * DAY).clock(clock.clone());
    assert_eq!(sweep.run_once().await.unwrap(), 2);
    assert_eq!(
        sweep.run_once().await.unwrap(),
        0,
        "expiring-soon fires once"
    );
    let leaked = Notice::Leaked {
        key: NoticeKey::from(&soon[0]),
        url: "https://gist.example/raw/1".to_owned(),
    };
    sink.notify(leaked.clone());

    // A canary presented three times to a service: one canary-tripped notice.
    let canary = admin
        .create_key(NewKey::new("decoy").owner("team-sec").canary())
        .await
        .unwrap();
    plaintexts.push(canary.key.expose_secret().to_owned());
    let verifier = Verifier::builder(Keyring::development("acme").unwrap(), store.clone())
        .clock(clock.clone())
        .notices(sink.clone())
        .build();
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::header::AUTHORIZATION,
        format!("Bearer {}", canary.key.expose_secret())
            .parse()
            .unwrap(),
    );
    let uri = axum::http::Uri::from_static("/orders");
    let client = "203.0.113.7".parse().unwrap();
    for _ in 0..3 {
        let refused = verifier
            .verify_request(&HttpRequestView::new(&headers, &uri, Some(client)))
            .await
            .unwrap_err();
        assert_eq!(refused.reason(), Reason::Canary);
    }
    let tripped = Notice::CanaryTripped {
        key: NoticeKey::from(&canary.record),
        client_ip: Some(client),
        at: clock.now(),
    };

    // 31 days on, under a 30-day idle policy, the key that never expires and was never used is
    // idle (the others have expired; the canary is exempt): one idle-disabled notice.
    write_policy(
        &store,
        &LifetimePolicy {
            max_idle: Some(30 * DAY),
            ..LifetimePolicy::default()
        },
    )
    .await
    .unwrap();
    clock.advance(31 * DAY);
    let mut idle = IdleSweep::new(admin.clone(), sink.clone()).clock(clock.clone());
    assert_eq!(idle.run_once().await.unwrap(), 1);
    assert_eq!(
        idle.run_once().await.unwrap(),
        0,
        "idle-disabled fires once"
    );
    let idle_disabled = Notice::IdleDisabled {
        key: NoticeKey::from(&forever),
        idle_since: forever.created_at,
    };

    let stats = sink.shutdown(Duration::from_secs(10)).await;
    assert_eq!(stats.accepted, 5);
    assert_eq!(stats.delivered, 5);
    assert_eq!(stats.lost(), 0);
    // 3 refused while down, and one whose acknowledgement was lost.
    assert_eq!(stats.retries, 4);

    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(
        received.len(),
        6,
        "one notice arrived twice (at least once)"
    );
    let mut by_id = BTreeMap::new();
    for r in &received {
        secret()
            .verify(
                &r.timestamp,
                &r.signature,
                &r.body,
                SystemTime::now(),
                DEFAULT_TOLERANCE,
            )
            .unwrap();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(documented_check(
            SECRET.as_bytes(),
            &r.timestamp,
            &r.signature,
            &r.body,
            now
        ));
        let payload: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(payload["id"], r.id.as_str());
        let text = String::from_utf8(r.body.clone()).unwrap();
        for plaintext in &plaintexts {
            assert!(!text.contains(plaintext.as_str()), "a notice carried a key");
        }
        // Receivers dedup by event id: a repeat has the same payload.
        if let Some(previous) = by_id.insert(r.id.clone(), payload.clone()) {
            assert_eq!(previous["data"], payload["data"]);
        }
    }
    let mut expected: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for record in &soon {
        let notice = Notice::ExpiringSoon {
            key: NoticeKey::from(record),
            expires_at: record.expires_at.unwrap(),
        };
        expected.insert(notice.event_id(), notice.data());
    }
    expected.insert(leaked.event_id(), leaked.data());
    expected.insert(tripped.event_id(), tripped.data());
    expected.insert(idle_disabled.event_id(), idle_disabled.data());
    let got: BTreeMap<String, serde_json::Value> = by_id
        .into_iter()
        .map(|(id, p)| (id, p["data"].clone()))
        .collect();
    assert_eq!(got, expected);
    let one = &expected[&leaked.event_id()];
    assert_eq!(one["key"]["owner"], "team-ops");
    assert_eq!(one["url"], "https://gist.example/raw/1");
    let kinds: BTreeSet<String> = received
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["type"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "key.canary_tripped",
            "key.expiring_soon",
            "key.idle_disabled",
            "key.leaked"
        ]
        .map(str::to_owned)
        .into()
    );
    assert_eq!(
        expected[&tripped.event_id()]["client_ip"],
        "203.0.113.7",
        "the canary's client"
    );
}

#[tokio::test]
async fn a_refusing_receiver_is_not_retried_and_the_loss_is_counted() {
    let url = start(Arc::new(Receiver::default()), Some(StatusCode::BAD_REQUEST)).await;
    let sink = WebhookSink::builder(url, secret())
        .initial_backoff(Duration::from_millis(1))
        .build()
        .unwrap();
    sink.notify(leaked_notice("https://a.example"));
    let stats = sink.shutdown(Duration::from_secs(10)).await;
    assert_eq!((stats.delivered, stats.retries, stats.failed), (0, 0, 1));
    // Debug shows where notices go, not the URL's path (it may carry the receiver's token).
    let shown = format!("{sink:?}");
    assert!(
        shown.contains("http://127.0.0.1:") && !shown.contains("/hooks"),
        "{shown}"
    );
}

#[tokio::test]
async fn attempts_are_bounded() {
    let url = start(Arc::new(Receiver::default()), Some(StatusCode::BAD_GATEWAY)).await;
    let sink = WebhookSink::builder(url, secret())
        .max_attempts(3)
        .initial_backoff(Duration::from_millis(1))
        .build()
        .unwrap();
    sink.notify(leaked_notice("https://a.example"));
    let stats = sink.shutdown(Duration::from_secs(10)).await;
    assert_eq!((stats.delivered, stats.retries, stats.failed), (0, 2, 1));
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_without_waiting() {
    // A receiver that accepts connections and never answers: the first notice hangs in flight.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let sink = WebhookSink::builder(format!("http://{addr}/hooks"), secret())
        .capacity(2)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let started = Instant::now();
    for i in 0..50 {
        sink.notify(leaked_notice(&format!("https://{i}.example")));
    }
    assert!(started.elapsed() < Duration::from_secs(1), "notify waited");
    let before = sink.stats();
    assert_eq!(before.accepted + before.dropped, 50);
    // The queue holds 2, and the task may have taken one out already.
    assert!((2..=3).contains(&before.accepted), "{before:?}");

    let stats = sink.shutdown(Duration::from_millis(200)).await;
    assert_eq!(stats.delivered, 0);
    assert_eq!(stats.lost(), 50, "{stats:?}");
    // After shutdown, notices are dropped and counted.
    sink.notify(leaked_notice("https://late.example"));
    assert_eq!(sink.stats().dropped, stats.dropped + 1);
}

fn leaked_notice(url: &str) -> Notice {
    Notice::Leaked {
        key: NoticeKey::new("abcdefghijkl".parse().unwrap(), "ci", None),
        url: url.to_owned(),
    }
}

/// The receiver-side check docs/notices.md gives ("Rust, with only hmac and sha2"), so the
/// documented snippet is known to accept what the sink sends.
fn documented_check(
    secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_secs: u64,
) -> bool {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    let Ok(sent) = timestamp.parse::<u64>() else {
        return false;
    };
    if sent.abs_diff(now_secs) > 300 {
        return false;
    }
    signature
        .split(' ')
        .filter_map(|v| v.strip_prefix("v1="))
        .any(|hex| {
            let Ok(tag) = (0..hex.len())
                .step_by(2)
                .map(|i| {
                    hex.get(i..i + 2)
                        .and_then(|b| u8::from_str_radix(b, 16).ok())
                        .ok_or(())
                })
                .collect::<Result<Vec<u8>, ()>>()
            else {
                return false;
            };
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            mac.verify_slice(&tag).is_ok() // constant time
        })
}

#[test]
fn the_documented_check_refuses_a_tampered_body() {
    let secret = secret();
    let sig = secret.sign(1_800_000_000, b"{}");
    assert!(documented_check(
        SECRET.as_bytes(),
        "1800000000",
        &sig,
        b"{}",
        1_800_000_000
    ));
    assert!(!documented_check(
        SECRET.as_bytes(),
        "1800000000",
        &sig,
        b"{ }",
        1_800_000_000
    ));
    assert!(!documented_check(
        SECRET.as_bytes(),
        "1800000000",
        &sig,
        b"{}",
        1_800_000_301
    ));
}
