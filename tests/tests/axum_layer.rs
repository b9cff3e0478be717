//! axum-specific behaviour of the tower layer and the axum adapter (the shared scenario table,
//! run on both frameworks, is in `scenarios.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use keygate::Reason;
use keygate_tests::{Harness, Keys, axum_app, request, send, send_bearer};

#[tokio::test]
async fn every_invalid_key_gets_the_identical_response() {
    let h = Harness::new();
    let keys = Keys::create(&h).await;
    let app = axum_app(&h.verifier);
    let mut replies = Vec::new();
    for key in [
        &keys.unknown,
        &keys.wrong_secret,
        &keys.revoked,
        &keys.disabled,
        &keys.expired,
        &keys.bad_checksum,
        &keys.wrong_prefix,
    ] {
        let reply = send_bearer(&app, "/hello", key).await;
        let mut headers: Vec<(String, Vec<u8>)> = reply
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        headers.sort();
        replies.push((reply.status, headers, reply.body));
    }
    assert!(
        replies.windows(2).all(|w| w[0] == w[1]),
        "responses differ: {replies:#?}"
    );
}

#[tokio::test]
async fn store_outage_is_503_never_401_and_is_not_cached() {
    let h = Harness::new();
    let (key, _) = h.create(keygate::NewKey::new("svc")).await;
    let app = axum_app(&h.verifier);
    h.store.set_down(true);
    let reply = send_bearer(&app, "/hello", &key).await;
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.problem_type().as_deref(),
        Some("urn:keygate:problem:unavailable")
    );
    assert_eq!(reply.www_authenticate(), None);
    assert_eq!(
        reply.rejection.map(|r| r.reason()),
        Some(Reason::StoreUnavailable)
    );
    // The failure was not cached: once the store is back, the same key works.
    h.store.set_down(false);
    let reply = send_bearer(&app, "/hello", &key).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test]
async fn custom_rejection_response_keeps_the_rejection_in_extensions() {
    let h = Harness::new();
    let layer = keygate_axum::layer(h.verifier.clone()).with_rejection_response(
        |rejection: &keygate::Rejection| {
            let mut response = axum::response::Response::new(axum::body::Body::from(format!(
                "custom {}",
                rejection.status().as_u16()
            )));
            *response.status_mut() = rejection.status();
            response
        },
    );
    let app = axum::Router::new()
        .route("/hello", axum::routing::get(|| async { "hi" }))
        .layer(layer);
    let reply = send(&app, request("/hello", &[], "127.0.0.1:1")).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.body, "custom 401");
    assert_eq!(
        reply.rejection.map(|r| r.reason()),
        Some(Reason::MissingCredentials)
    );
}

#[tokio::test]
async fn identity_extractor_without_layer_says_so() {
    let app = axum::Router::new().route(
        "/hello",
        axum::routing::get(
            |identity: keygate_axum::Identity| async move { identity.name().to_owned() },
        ),
    );
    let reply = send(&app, request("/hello", &[], "127.0.0.1:1")).await;
    assert_eq!(reply.status, 500);
    assert!(
        reply
            .body
            .contains("keygate layer not installed on this route"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn layer_works_with_router_layer_and_realm() {
    let h = Harness::new();
    let (key, _) = h.create(keygate::NewKey::new("svc")).await;
    let app = axum::Router::new()
        .route("/a", axum::routing::get(|| async { "a" }))
        .layer(keygate_axum::layer(h.verifier.clone()).realm("orders"));
    let reply = send(&app, request("/a", &[], "127.0.0.1:1")).await;
    assert_eq!(reply.www_authenticate(), Some(r#"Bearer realm="orders""#));
    let reply = send(
        &app,
        request("/a", &[("x-api-key", key.as_bytes())], "127.0.0.1:1"),
    )
    .await;
    assert_eq!(reply.status, 200);
    // Unmatched routes behind Router::layer are authenticated too.
    let reply = send(&app, request("/nope", &[], "127.0.0.1:1")).await;
    assert_eq!(reply.status, 401);
}
