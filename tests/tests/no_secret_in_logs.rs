//! Runs requests in every outcome, plus key management, with tracing at TRACE captured, then
//! asserts that no key, secret or digest appears anywhere in the output. Then handlers that
//! panic formatting everything they hold, in axum and in actix-web, under the same capture plus
//! a capturing panic hook: the key appears in no log line, panic message or response.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, Once, OnceLock};

use actix_web::dev::Service;
use futures_util::FutureExt;
use keygate::{KeyAdmin, NewKey};
use keygate_tests::{Harness, Keys, LogCapture, axum_app, request, send};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn no_secret_or_digest_reaches_the_logs() {
    let capture = LogCapture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::new();
    let keys = Keys::create(&h).await;
    let app = axum_app(&h.verifier);
    let admin = h.verifier.admin();
    let created = admin
        .create_key(NewKey::new("logged").scope("orders:read").unwrap())
        .await
        .unwrap();
    // Debug-formatting the types that hold secrets must redact them.
    tracing::info!(?created, record = ?created.record, "created a key");
    let logged_key = created.key.expose_secret().to_owned();

    let mut secrets = keys.secrets();
    secrets.push(logged_key.clone());
    let mut digests = Vec::new();
    let page = admin
        .list(
            &keygate::KeyFilter::default(),
            keygate::PageRequest::first(100),
        )
        .await
        .unwrap();
    for record in &page.keys {
        digests.push(hex(record.digest.as_bytes()));
        digests.push(format!("{:?}", record.digest.as_bytes()));
    }

    for key in [
        &keys.valid,
        &keys.revoked,
        &keys.disabled,
        &keys.expired,
        &keys.unknown,
        &keys.wrong_secret,
        &keys.wrong_prefix,
        &keys.bad_checksum,
        &keys.ip_restricted,
        &logged_key,
    ] {
        for path in ["/hello", "/orders", "/maybe", "/sensitive"] {
            let auth = format!("Bearer {key}");
            let reply = send(
                &app,
                request(path, &[("authorization", auth.as_bytes())], "192.0.2.1:9"),
            )
            .await;
            tracing::info!(status = %reply.status, rejection = ?reply.rejection, "reply");
            let doubled = [
                ("x-api-key", key.as_bytes()),
                ("authorization", auth.as_bytes()),
            ];
            send(&app, request(path, &doubled, "192.0.2.1:9")).await;
            let long = format!("{key}{}", "x".repeat(600));
            send(
                &app,
                request(path, &[("x-api-key", long.as_bytes())], "192.0.2.1:9"),
            )
            .await;
        }
    }
    // 192.0.2.1 is locked out by its failed attempts by now (its 429s are logged too); the
    // outage is seen from another client.
    h.store.set_down(true);
    let auth = format!("Bearer {}", keys.plain);
    let reply = send(
        &app,
        request(
            "/hello",
            &[("authorization", auth.as_bytes())],
            "192.0.2.2:9",
        ),
    )
    .await;
    assert_eq!(reply.status, 503);
    h.store.set_down(false);
    admin.revoke(&created.record.id).await.unwrap();

    // The audit trail (the default tracing sink) is part of the output scanned.
    h.verifier.flush_audit().await;
    let output = capture.text();
    assert!(
        output.contains("keygate::audit") && output.contains("action=\"revoked\""),
        "audit events were logged:\n{output}"
    );
    assert!(
        output.contains("outcome=\"allowed\""),
        "the capture works and saw decisions:\n{output}"
    );
    assert!(
        output.contains("reason=\"wrong_secret\""),
        "denials are logged with their reason"
    );
    assert!(
        output.contains("[redacted]"),
        "secret-holding types were formatted, redacted"
    );
    for secret in secrets.iter().chain(&digests) {
        assert!(
            !output.contains(secret.as_str()),
            "a secret or digest leaked into the logs"
        );
    }
}

/// Everything the panic hook saw in this test binary. The hook is installed once and chains to
/// the previous one, so a failing test still prints its message.
fn panic_capture() -> &'static Mutex<String> {
    static CAPTURE: OnceLock<Mutex<String>> = OnceLock::new();
    static INSTALL: Once = Once::new();
    let capture = CAPTURE.get_or_init(Mutex::default);
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(capture) = CAPTURE.get() {
                capture
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push_str(&format!("{info}\n"));
            }
            previous(info);
        }));
    });
    capture
}

/// The text of a panic payload, as a catch-panic middleware would log it.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("non-text panic")
}

fn trace_capture() -> (LogCapture, tracing::subscriber::DefaultGuard) {
    let capture = LogCapture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (capture, guard)
}

/// Asserts the handler panicked (its message reached both captures) and that no 8-character
/// piece of the key's secret part appears in the logs, the panic messages or the response.
fn assert_panic_leaked_nothing(key: &str, logs: &str, reply: &keygate_tests::Reply) {
    let panics = panic_capture()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let marker = format!("handler failed for {}", &key[..21]);
    assert!(
        panics.contains(&marker),
        "the panic hook saw the panic:\n{panics}"
    );
    assert!(logs.contains(&marker), "the panic was logged:\n{logs}");
    assert!(
        logs.contains("Sensitive"),
        "the handler did format the credential header:\n{logs}"
    );
    assert_eq!(reply.status, 500);
    // `{prefix}_{id}_` (21 characters) is public; the rest is the secret and its checksum.
    for window in key.as_bytes()[21..].windows(8) {
        let window = std::str::from_utf8(window).unwrap();
        for (place, text) in [
            ("logs", logs),
            ("panic messages", &panics),
            ("body", &reply.body),
        ] {
            assert!(!text.contains(window), "the secret reached the {place}");
        }
    }
}

async fn axum_panicking_handler(
    identity: keygate_axum::Identity,
    request: axum::extract::Request,
) -> String {
    panic!(
        "handler failed for {} with identity={identity:?} request={request:?} headers={:?}",
        &request
            .headers()
            .get("x-key-head")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
        request.headers()
    );
}

/// What an application's catch-panic middleware does: log the panic, answer 500.
async fn axum_catch_panic(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(payload) => {
            tracing::error!(panic = panic_text(&*payload), "handler panicked");
            axum::response::IntoResponse::into_response((
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
            ))
        }
    }
}

#[tokio::test]
async fn a_panicking_axum_handler_leaks_no_key() {
    let (capture, _guard) = trace_capture();
    panic_capture();
    let h = Harness::new();
    let keys = Keys::create(&h).await;
    let app = axum::Router::new()
        .route("/boom", axum::routing::get(axum_panicking_handler))
        .route_layer(keygate_axum::layer(h.verifier.clone()))
        .layer(axum::middleware::from_fn(axum_catch_panic));
    let key = keys.plain.clone();
    let auth = format!("Bearer {key}");
    for header in ["authorization", "x-api-key"] {
        let value = if header == "authorization" {
            &auth
        } else {
            &key
        };
        let reply = send(
            &app,
            request(
                "/boom",
                &[
                    (header, value.as_bytes()),
                    // The public part, so the panic message can be told apart.
                    ("x-key-head", &key.as_bytes()[..21]),
                ],
                "192.0.2.9:9",
            ),
        )
        .await;
        assert_panic_leaked_nothing(&key, &capture.text(), &reply);
    }
}

async fn actix_panicking_handler(
    identity: keygate_actix::Identity,
    request: actix_web::HttpRequest,
) -> String {
    panic!(
        "handler failed for {} with identity={identity:?} request={request:?} headers={:?}",
        request
            .headers()
            .get("x-key-head")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
        request.headers()
    );
}

#[actix_web::test]
async fn a_panicking_actix_handler_leaks_no_key() {
    let (capture, _guard) = trace_capture();
    panic_capture();
    let h = Harness::new();
    let keys = Keys::create(&h).await;
    let app = actix_web::test::init_service(
        actix_web::App::new()
            .service(
                actix_web::web::resource("/boom")
                    .wrap(keygate_actix::ApiKeyAuth::new(h.verifier.clone()))
                    .get(actix_panicking_handler),
            )
            // What an application's catch-panic middleware does: log the panic, answer 500 (an
            // error, which actix-web turns into the response; the request itself cannot be
            // kept for one, since keygate's middleware needs it unshared).
            .wrap_fn(|request, service| {
                let response = service.call(request);
                async move {
                    AssertUnwindSafe(response)
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|payload| {
                            tracing::error!(panic = panic_text(&*payload), "handler panicked");
                            Err(actix_web::error::ErrorInternalServerError("internal error"))
                        })
                }
            }),
    )
    .await;
    let key = keys.plain.clone();
    let auth = format!("Bearer {key}");
    for header in ["authorization", "x-api-key"] {
        let value = if header == "authorization" {
            &auth
        } else {
            &key
        };
        let request = actix_web::test::TestRequest::get()
            .uri("/boom")
            .peer_addr("192.0.2.9:9".parse().unwrap())
            .insert_header((header, value.as_str()))
            .insert_header(("x-key-head", &key[..21]))
            .to_request();
        // As the server answers: an error becomes its error response.
        let response = match actix_web::test::try_call_service(&app, request).await {
            Ok(response) => response.into_parts().1.map_into_boxed_body(),
            Err(error) => error.error_response(),
        };
        let status = http::StatusCode::from_u16(response.status().as_u16()).unwrap_or_default();
        let body = actix_web::body::to_bytes(response.into_body())
            .await
            .expect("body");
        let reply = keygate_tests::Reply {
            status,
            headers: http::HeaderMap::new(),
            body: String::from_utf8_lossy(&body).into_owned(),
            rejection: None,
        };
        assert_panic_leaked_nothing(&key, &capture.text(), &reply);
    }
}
