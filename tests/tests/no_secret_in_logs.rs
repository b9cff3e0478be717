//! Runs requests in every outcome, plus key management, with tracing at TRACE captured, then
//! asserts that no key, secret or digest appears anywhere in the output.

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
        .create_key(
            NewKey::new("logged")
                .scope("orders:read")
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
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
        .unwrap_or_else(|e| panic!("{e}"));
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
    admin
        .revoke(&created.record.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

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
