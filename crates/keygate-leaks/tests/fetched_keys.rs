//! GitHub's keys fetched from a URL: a local plain-HTTP server stands in for
//! api.github.com/meta/public_keys/secret_scanning.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use common::*;
use keygate::clock::ManualClock;
use keygate_leaks::{FetchedKeys, LeakAction, LeakReports};

/// The keys server: the document it serves (or a 500 when `None`), what it was asked.
#[derive(Clone, Default)]
struct KeysServer {
    document: Arc<Mutex<Option<String>>>,
    hits: Arc<AtomicUsize>,
    last_headers: Arc<Mutex<Option<HeaderMap>>>,
}

impl KeysServer {
    /// Starts serving `/meta/public_keys/secret_scanning`; returns its URL.
    async fn start(&self) -> String {
        let app = axum::Router::new()
            .route("/meta/public_keys/secret_scanning", get(serve))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/meta/public_keys/secret_scanning")
    }

    /// Serves `signers`' keys in GitHub's format.
    fn publish(&self, signers: &[&Signer]) {
        let keys: Vec<serde_json::Value> = signers
            .iter()
            .enumerate()
            .map(|(at, signer)| {
                serde_json::json!({
                    "key_identifier": signer.identifier,
                    "key": signer.public_pem(),
                    "is_current": at == 0,
                })
            })
            .collect();
        let document = serde_json::json!({ "public_keys": keys }).to_string();
        *self.document.lock().unwrap() = Some(document);
    }

    fn fail(&self) {
        *self.document.lock().unwrap() = None;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn serve(State(server): State<KeysServer>, headers: HeaderMap) -> (StatusCode, String) {
    server.hits.fetch_add(1, Ordering::SeqCst);
    *server.last_headers.lock().unwrap() = Some(headers);
    match server.document.lock().unwrap().clone() {
        Some(document) => (StatusCode::OK, document),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "down".to_owned()),
    }
}

fn endpoint(f: &Fixture, keys: FetchedKeys) -> LeakReports {
    LeakReports::builder(f.admin.clone(), f.keyring.clone())
        .action(LeakAction::Revoke)
        .key_source(keys)
        .build()
}

/// Status of a report of an unknown token signed by `signer`.
async fn report_status(leaks: &LeakReports, signer: &Signer) -> u16 {
    let body = report(&[&craft(PREFIX, "Zz9Zz9Zz9Zz9", &"q".repeat(30))]);
    let mut headers = http::HeaderMap::new();
    for (name, value) in signed(signer, &body) {
        headers.insert(name, value.parse().unwrap());
    }
    leaks.handle(&headers, &body).await.status.as_u16()
}

#[tokio::test]
async fn keys_are_fetched_from_the_configured_url_once_and_cached() {
    let f = Fixture::new().await;
    let server = KeysServer::default();
    server.publish(&[&f.signer]);
    let url = server.start().await;
    let leaks = endpoint(&f, FetchedKeys::from_url(&url).github_token("t0k"));
    assert_eq!(report_status(&leaks, &f.signer).await, 200);
    assert_eq!(report_status(&leaks, &f.signer).await, 200);
    assert_eq!(server.hits(), 1);

    let headers = server.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(headers["authorization"], "Bearer t0k");
    assert_eq!(headers["accept"], "application/json");
    let agent = headers["user-agent"].to_str().unwrap();
    assert!(agent.starts_with("keygate-leaks/"), "{agent}");

    // A real revocation through fetched keys.
    let body = report(&[f.active.1.expose_secret()]);
    let mut headers = http::HeaderMap::new();
    for (name, value) in signed(&f.signer, &body) {
        headers.insert(name, value.parse().unwrap());
    }
    assert_eq!(leaks.handle(&headers, &body).await.status, 200);
    assert!(f.record(&f.active.0).await.revoked_at.is_some());
}

#[tokio::test]
async fn an_unknown_identifier_refetches_at_most_once_per_interval() {
    let f = Fixture::new().await;
    let rotated = Signer::random("test-key-2");
    let forged = Signer::random("test-key-3");
    let server = KeysServer::default();
    server.publish(&[&f.signer]);
    let url = server.start().await;
    let clock = ManualClock::new(SystemTime::now());
    let leaks = endpoint(&f, FetchedKeys::from_url(&url).clock(clock.clone()));

    assert_eq!(report_status(&leaks, &f.signer).await, 200);
    assert_eq!(server.hits(), 1);

    // GitHub rotates its key; a report under the new one arrives within the minute of the
    // last fetch: refused without a fetch.
    server.publish(&[&rotated, &f.signer]);
    assert_eq!(report_status(&leaks, &rotated).await, 401);
    assert_eq!(server.hits(), 1);

    // A minute on, the unknown identifier fetches the keys again, once.
    clock.advance(Duration::from_secs(61));
    assert_eq!(report_status(&leaks, &rotated).await, 200);
    assert_eq!(server.hits(), 2);
    assert_eq!(report_status(&leaks, &rotated).await, 200);
    assert_eq!(report_status(&leaks, &f.signer).await, 200);
    assert_eq!(server.hits(), 2);

    // Forged identifiers do not make it hammer the keys' URL: one fetch per interval.
    for _ in 0..5 {
        assert_eq!(report_status(&leaks, &forged).await, 401);
    }
    assert_eq!(server.hits(), 2);
    clock.advance(Duration::from_secs(61));
    for _ in 0..5 {
        assert_eq!(report_status(&leaks, &forged).await, 401);
    }
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn keys_are_fetched_again_after_their_ttl_and_kept_when_that_fails() {
    let f = Fixture::new().await;
    let server = KeysServer::default();
    server.publish(&[&f.signer]);
    let url = server.start().await;
    let clock = ManualClock::new(SystemTime::now());
    let keys = FetchedKeys::from_url(&url)
        .ttl(Duration::from_secs(600))
        .clock(clock.clone());
    let leaks = endpoint(&f, keys);

    assert_eq!(report_status(&leaks, &f.signer).await, 200);
    clock.advance(Duration::from_secs(300));
    assert_eq!(report_status(&leaks, &f.signer).await, 200);
    assert_eq!(server.hits(), 1);
    clock.advance(Duration::from_secs(301));
    assert_eq!(report_status(&leaks, &f.signer).await, 200);
    assert_eq!(server.hits(), 2);

    // The keys' URL fails after the TTL: the keys already fetched stay in use.
    server.fail();
    clock.advance(Duration::from_secs(601));
    assert_eq!(report_status(&leaks, &f.signer).await, 200);
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn keys_that_cannot_be_fetched_are_503_and_change_nothing() {
    let f = Fixture::new().await;
    let before = f.record(&f.active.0).await;
    let body = report(&[f.active.1.expose_secret()]);
    let mut headers = http::HeaderMap::new();
    for (name, value) in signed(&f.signer, &body) {
        headers.insert(name, value.parse().unwrap());
    }

    // The keys' URL answers 500.
    let server = KeysServer::default();
    server.fail();
    let url = server.start().await;
    let leaks = endpoint(&f, FetchedKeys::from_url(&url));
    assert_eq!(leaks.handle(&headers, &body).await.status, 503);

    // Nothing listens at the keys' URL.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = format!("http://{}/keys", listener.local_addr().unwrap());
    drop(listener);
    let leaks = endpoint(&f, FetchedKeys::from_url(&closed));
    assert_eq!(leaks.handle(&headers, &body).await.status, 503);

    // Not GitHub's format.
    *server.document.lock().unwrap() = Some(r#"{"keys": []}"#.to_owned());
    let leaks = endpoint(&f, FetchedKeys::from_url(&url));
    assert_eq!(leaks.handle(&headers, &body).await.status, 503);

    let after = f.record(&f.active.0).await;
    assert_eq!(after.revoked_at, before.revoked_at);
    assert_eq!(after.updated_at, before.updated_at);
}
