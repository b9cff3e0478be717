//! The tower layer and axum adapter, driven through a real axum `Router`: statuses, challenges,
//! problem bodies, rejection reasons and store-call counts for every case of issue 2.

use keygate::Reason;
use keygate_tests::{Harness, Keys, Reply, axum_app, request, send};

const INVALID_TOKEN: &str = r#"Bearer realm="api", error="invalid_token""#;

/// One row of the table: a request and everything a client (and the audit trail) should see.
struct Case {
    name: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, Vec<u8>)>,
    peer: &'static str,
    status: u16,
    www_authenticate: Option<&'static str>,
    problem: Option<&'static str>,
    reason: Option<Reason>,
    body: Option<&'static str>,
    /// Expected increase of store `find` calls, when the case pins it.
    store_calls: Option<usize>,
}

impl Case {
    fn new(name: &'static str, path: &'static str, status: u16) -> Self {
        Self {
            name,
            path,
            headers: Vec::new(),
            peer: "127.0.0.1:40000",
            status,
            www_authenticate: None,
            problem: None,
            reason: None,
            body: None,
            store_calls: None,
        }
    }
    fn header(mut self, name: &'static str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    fn bearer(self, key: &str) -> Self {
        self.header("authorization", format!("Bearer {key}"))
    }
    fn api_key(self, key: impl Into<Vec<u8>>) -> Self {
        self.header("x-api-key", key)
    }
    fn peer(mut self, peer: &'static str) -> Self {
        self.peer = peer;
        self
    }
    fn challenge(mut self, value: &'static str) -> Self {
        self.www_authenticate = Some(value);
        self
    }
    fn problem(mut self, code: &'static str, reason: Reason) -> Self {
        self.problem = Some(code);
        self.reason = Some(reason);
        self
    }
    fn invalid_token(self, reason: Reason) -> Self {
        self.challenge(INVALID_TOKEN)
            .problem("urn:keygate:problem:invalid_token", reason)
    }
    fn body(mut self, body: &'static str) -> Self {
        self.body = Some(body);
        self
    }
    fn store_calls(mut self, calls: usize) -> Self {
        self.store_calls = Some(calls);
        self
    }
}

fn table(keys: &Keys) -> Vec<Case> {
    use Reason::*;
    let long = format!("{}{}", keys.valid, "A".repeat(600));
    vec![
        Case::new("public route needs no key", "/", 200).body("public"),
        Case::new("no key", "/hello", 401)
            .challenge(r#"Bearer realm="api""#)
            .problem(
                "urn:keygate:problem:missing_credentials",
                MissingCredentials,
            )
            .store_calls(0),
        Case::new("other scheme only", "/hello", 401)
            .header("authorization", "Basic dXNlcjpwYXNz")
            .challenge(r#"Bearer realm="api""#)
            .problem(
                "urn:keygate:problem:missing_credentials",
                MissingCredentials,
            ),
        Case::new("valid key, Bearer", "/hello", 200)
            .bearer(&keys.valid)
            .body("hello, valid"),
        Case::new("valid key, x-api-key", "/hello", 200)
            .api_key(keys.valid.as_str())
            .body("hello, valid"),
        Case::new("valid key, lowercase scheme", "/hello", 200)
            .header("authorization", format!("bearer {}", keys.valid))
            .body("hello, valid"),
        Case::new("valid key, uppercase scheme", "/hello", 200)
            .header("authorization", format!("BEARER {}", keys.valid))
            .body("hello, valid"),
        Case::new("two spaces after Bearer", "/hello", 401)
            .header("authorization", format!("Bearer  {}", keys.valid))
            .invalid_token(Malformed)
            .store_calls(0),
        Case::new("credential headers marked sensitive", "/sensitive", 200)
            .bearer(&keys.valid)
            .body("sensitive=true"),
        Case::new("unknown id", "/hello", 401)
            .bearer(&keys.unknown)
            .invalid_token(UnknownKey),
        Case::new("wrong secret", "/hello", 401)
            .bearer(&keys.wrong_secret)
            .invalid_token(WrongSecret),
        Case::new("revoked", "/hello", 401)
            .bearer(&keys.revoked)
            .invalid_token(Revoked),
        Case::new("disabled", "/hello", 401)
            .api_key(keys.disabled.as_str())
            .invalid_token(Disabled),
        Case::new("expired", "/hello", 401)
            .bearer(&keys.expired)
            .invalid_token(Expired),
        Case::new("malformed", "/hello", 401)
            .bearer("not-a-key")
            .invalid_token(Malformed)
            .store_calls(0),
        Case::new("empty x-api-key", "/hello", 401)
            .api_key("")
            .invalid_token(Malformed)
            .store_calls(0),
        Case::new("wrong prefix", "/hello", 401)
            .bearer(&keys.wrong_prefix)
            .invalid_token(WrongPrefix)
            .store_calls(0),
        Case::new("bad checksum", "/hello", 401)
            .bearer(&keys.bad_checksum)
            .invalid_token(BadChecksum)
            .store_calls(0),
        Case::new("credential over the length cap", "/hello", 401)
            .api_key(long)
            .invalid_token(CredentialTooLong)
            .store_calls(0),
        Case::new("tab inside the key", "/hello", 401)
            .api_key(format!("{}\t{}", &keys.valid[..20], &keys.valid[20..]))
            .invalid_token(Malformed)
            .store_calls(0),
        Case::new("non-ASCII byte inside the key", "/hello", 401)
            .api_key(
                [
                    &keys.valid.as_bytes()[..20],
                    b"\xe9",
                    &keys.valid.as_bytes()[21..],
                ]
                .concat(),
            )
            .invalid_token(Malformed)
            .store_calls(0),
        Case::new("two x-api-key headers", "/hello", 400)
            .api_key(keys.valid.as_str())
            .api_key(keys.valid.as_str())
            .challenge(r#"Bearer realm="api", error="invalid_request""#)
            .problem("urn:keygate:problem:invalid_request", MultipleCredentials)
            .store_calls(0),
        Case::new("Bearer and x-api-key together", "/hello", 400)
            .bearer(&keys.valid)
            .api_key(keys.valid.as_str())
            .challenge(r#"Bearer realm="api", error="invalid_request""#)
            .problem("urn:keygate:problem:invalid_request", MultipleCredentials)
            .store_calls(0),
        Case::new("two Authorization headers", "/hello", 400)
            .bearer(&keys.valid)
            .bearer(&keys.plain)
            .challenge(r#"Bearer realm="api", error="invalid_request""#)
            .problem("urn:keygate:problem:invalid_request", MultipleCredentials),
        Case::new(
            "query-string key ignored by default",
            "/hello?api_key=x",
            401,
        )
        .challenge(r#"Bearer realm="api""#)
        .problem(
            "urn:keygate:problem:missing_credentials",
            MissingCredentials,
        ),
        Case::new("IP-restricted key from outside", "/hello", 403)
            .bearer(&keys.ip_restricted)
            .peer("192.0.2.1:5000")
            .problem("urn:keygate:problem:forbidden", ForbiddenClientIp),
        Case::new("IP-restricted key from inside", "/hello", 200)
            .bearer(&keys.ip_restricted)
            .peer("10.1.2.3:5000")
            .body("hello, office"),
        Case::new("IP-restricted key, IPv4-mapped IPv6 peer", "/hello", 200)
            .bearer(&keys.ip_restricted)
            .peer("[::ffff:10.9.9.9]:5000")
            .body("hello, office"),
        Case::new("scope present", "/orders", 200)
            .bearer(&keys.valid)
            .body("hello, valid"),
        Case::new("scope missing", "/orders", 403)
            .bearer(&keys.plain)
            .challenge(r#"Bearer realm="api", error="insufficient_scope", scope="orders:read""#)
            .problem("urn:keygate:problem:insufficient_scope", InsufficientScope),
        Case::new("scope route without key", "/orders", 401)
            .challenge(r#"Bearer realm="api""#)
            .problem(
                "urn:keygate:problem:missing_credentials",
                MissingCredentials,
            ),
        Case::new("optional route, no key", "/maybe", 200).body("anonymous"),
        Case::new("optional route, valid key", "/maybe", 200)
            .bearer(&keys.plain)
            .body("plain"),
        Case::new("optional route, invalid key still refused", "/maybe", 401)
            .bearer(&keys.revoked)
            .invalid_token(Revoked),
    ]
}

fn check(case: &Case, reply: &Reply, calls: usize) {
    let name = case.name;
    assert_eq!(
        reply.status.as_u16(),
        case.status,
        "{name}: status (body {})",
        reply.body
    );
    assert_eq!(
        reply.www_authenticate(),
        case.www_authenticate,
        "{name}: WWW-Authenticate"
    );
    assert_eq!(
        reply.problem_type().as_deref(),
        case.problem,
        "{name}: problem type"
    );
    assert_eq!(
        reply.rejection.as_ref().map(|r| r.reason()),
        case.reason,
        "{name}: reason"
    );
    if let Some(body) = case.body {
        assert_eq!(reply.body, body, "{name}: body");
    }
    if case.problem.is_some() {
        assert_eq!(
            reply.headers.get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/problem+json"[..]),
            "{name}: content type"
        );
        assert_eq!(
            reply.headers.get("cache-control").map(|v| v.as_bytes()),
            Some(&b"no-store"[..]),
            "{name}: cache-control"
        );
        let json: serde_json::Value =
            serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{name}: body json: {e}"));
        assert_eq!(json["status"], case.status, "{name}: body status");
    }
    if let Some(expected) = case.store_calls {
        assert_eq!(calls, expected, "{name}: store calls");
    }
}

#[tokio::test]
async fn scenario_table_through_axum_router() {
    let h = Harness::new();
    let keys = Keys::create(&h).await;
    let app = axum_app(&h.verifier);
    for case in table(&keys) {
        let headers: Vec<(&str, &[u8])> = case.headers.iter().map(|(n, v)| (*n, &v[..])).collect();
        let before = h.store.finds();
        let reply = send(&app, request(case.path, &headers, case.peer)).await;
        check(&case, &reply, h.store.finds() - before);
    }
}

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
        let auth = format!("Bearer {key}");
        let reply = send(
            &app,
            request(
                "/hello",
                &[("authorization", auth.as_bytes())],
                "127.0.0.1:1",
            ),
        )
        .await;
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
    let auth = format!("Bearer {key}");
    h.store.set_down(true);
    let reply = send(
        &app,
        request(
            "/hello",
            &[("authorization", auth.as_bytes())],
            "127.0.0.1:1",
        ),
    )
    .await;
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
    let reply = send(
        &app,
        request(
            "/hello",
            &[("authorization", auth.as_bytes())],
            "127.0.0.1:1",
        ),
    )
    .await;
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
