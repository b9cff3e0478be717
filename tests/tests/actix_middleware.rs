//! actix-specific behaviour of the middleware (the shared scenario table is in `scenarios.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use actix_web::dev::Service;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{App, HttpResponse, test, web};
use keygate::{NewKey, Reason, Rejection};
use keygate_actix::{ApiKeyAuth, Identity};
use keygate_tests::Harness;
use keygate_tests::actix_app::send_actix;

#[actix_web::test]
async fn identity_extractor_without_middleware_says_so() {
    let app = test::init_service(App::new().route(
        "/hello",
        web::get().to(|identity: Identity| async move { identity.name().to_owned() }),
    ))
    .await;
    let reply = send_actix(&app, "/hello", &[], "127.0.0.1:1").await;
    assert_eq!(reply.status, 500);
    assert!(
        reply
            .body
            .contains("keygate middleware not installed on this route"),
        "{}",
        reply.body
    );
}

#[actix_web::test]
async fn rejections_are_responses_so_outer_middleware_still_runs() {
    let h = Harness::new();
    let app = test::init_service(
        App::new()
            .route("/hello", web::get().to(|| async { "hi" }))
            .wrap(ApiKeyAuth::new(h.verifier.clone()))
            // Outer middleware (think CORS or Logger): runs on rejections too.
            .wrap_fn(|request, service| {
                let response = service.call(request);
                async move {
                    let mut response = response.await?;
                    response.headers_mut().insert(
                        HeaderName::from_static("x-outer"),
                        HeaderValue::from_static("seen"),
                    );
                    Ok(response)
                }
            }),
    )
    .await;
    let reply = send_actix(&app, "/hello", &[], "127.0.0.1:1").await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("x-outer"), Some("seen"));
    assert_eq!(
        reply.rejection.map(|r| r.reason()),
        Some(Reason::MissingCredentials)
    );
}

#[actix_web::test]
async fn custom_rejection_response_keeps_the_rejection_in_extensions() {
    let h = Harness::new();
    let (key, _) = h.create(NewKey::new("svc")).await;
    let auth =
        ApiKeyAuth::new(h.verifier.clone()).with_rejection_response(|rejection: &Rejection| {
            HttpResponse::build(
                actix_web::http::StatusCode::from_u16(rejection.status().as_u16())
                    .unwrap_or(actix_web::http::StatusCode::UNAUTHORIZED),
            )
            .body(format!("custom {}", rejection.status().as_u16()))
        });
    let app = test::init_service(
        App::new()
            .route("/hello", web::get().to(|| async { "hi" }))
            .wrap(auth),
    )
    .await;
    let reply = send_actix(&app, "/hello", &[], "127.0.0.1:1").await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.body, "custom 401");
    assert_eq!(
        reply.rejection.map(|r| r.reason()),
        Some(Reason::MissingCredentials)
    );
    let reply = send_actix(
        &app,
        "/hello",
        &[("x-api-key", key.as_bytes())],
        "127.0.0.1:1",
    )
    .await;
    assert_eq!(reply.status, 200);
}

#[actix_web::test]
async fn realm_and_scope_wide_middleware() {
    let h = Harness::new();
    let (key, _) = h.create(NewKey::new("svc")).await;
    let app = test::init_service(
        App::new().service(
            web::scope("/api")
                .wrap(ApiKeyAuth::new(h.verifier.clone()).realm("orders"))
                .route("/a", web::get().to(|| async { "a" })),
        ),
    )
    .await;
    let reply = send_actix(&app, "/api/a", &[], "127.0.0.1:1").await;
    assert_eq!(reply.www_authenticate(), Some(r#"Bearer realm="orders""#));
    let reply = send_actix(
        &app,
        "/api/a",
        &[("x-api-key", key.as_bytes())],
        "127.0.0.1:1",
    )
    .await;
    assert_eq!(reply.status, 200);
}

#[actix_web::test]
async fn forwarded_for_is_honoured_only_from_trusted_proxies() {
    let h = Harness::new();
    let proxy_aware = keygate::Verifier::builder(keygate_tests::keyring(), h.store.clone())
        .trusted_proxies(["10.0.0.0/8".parse().unwrap()])
        .build();
    let (key, _) = h
        .create(NewKey::new("office").allowed_ips(["192.0.2.0/24".parse().unwrap()]))
        .await;
    let app = test::init_service(
        App::new()
            .route("/hello", web::get().to(|| async { "hi" }))
            .wrap(ApiKeyAuth::new(proxy_aware)),
    )
    .await;
    let headers = [
        ("x-api-key", key.as_bytes()),
        ("x-forwarded-for", &b"192.0.2.7"[..]),
    ];
    // From a trusted proxy: the forwarded client address is used, and it is allowed.
    assert_eq!(
        send_actix(&app, "/hello", &headers, "10.0.0.2:80")
            .await
            .status,
        200
    );
    // From an untrusted peer: the header is ignored; the peer itself is not allowed.
    assert_eq!(
        send_actix(&app, "/hello", &headers, "203.0.113.9:80")
            .await
            .status,
        403
    );
}

#[actix_web::test]
async fn audited_routes_are_the_patterns_matched_whatever_the_app_and_however_often() {
    let h = Harness::new();
    let (key, _) = h.create(NewKey::new("routes")).await;
    let auth = format!("Bearer {key}");
    let headers = [("authorization", auth.as_bytes())];
    let events = keygate_tests::CapturingSink::default();
    let verifier = h.sibling_with(|b| b.audit_sink(events.clone()));
    let ok = || async { "ok" };
    let app = test::init_service(
        App::new()
            .route("/hello", web::get().to(ok))
            .route("/users/{id}", web::get().to(ok))
            .service(web::scope("/api").route("/items", web::get().to(ok)))
            .wrap(ApiKeyAuth::new(verifier.clone())),
    )
    .await;
    // Another app on the same thread, whose one route matches every path the first app has
    // routes for: a route kept by the first app's middleware must not leak into it.
    let other = test::init_service(
        App::new()
            .route("/{page}", web::get().to(ok))
            .wrap(ApiKeyAuth::new(verifier.clone())),
    )
    .await;
    let mut want = Vec::new();
    for round in 0..3 {
        for (path, route) in [
            ("/hello", Some("/hello")),
            ("/users/7", Some("/users/{id}")),
            ("/users/{id}", Some("/users/{id}")),
            ("/api/items", Some("/api/items")),
            ("/nowhere/at/all", None),
        ] {
            let reply = send_actix(&app, path, &headers, "127.0.0.1:1").await;
            assert_eq!(
                reply.status,
                if route.is_some() { 200 } else { 404 },
                "{path} {round}"
            );
            want.push(route);
        }
        for path in ["/hello", "/users"] {
            let reply = send_actix(&other, path, &headers, "127.0.0.1:1").await;
            assert_eq!(reply.status, 200, "{path} {round}");
            want.push(Some("/{page}"));
        }
    }
    verifier.flush_audit().await;
    let got: Vec<_> = events.take().into_iter().map(|e| e.route).collect();
    let got: Vec<Option<&str>> = got.iter().map(|r| r.as_deref()).collect();
    assert_eq!(got, want);
}
