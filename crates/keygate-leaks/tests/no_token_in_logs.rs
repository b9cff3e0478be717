//! No reported token, nor its secret part, reaches the logs or the audit trail at any level.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use keygate::Admin;
use keygate_leaks::{LeakAction, LeakReports, StaticKeys};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_reported_token_reaches_the_logs_or_the_audit_trail() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();

    let f = Fixture::new().await;
    // The default audit sink: events go to the logs, so the audit trail is checked too.
    let admin = Admin::builder(f.store.clone())
        .keyring(f.keyring.clone())
        .build();
    let keys = StaticKeys::new()
        .with_pem(IDENTIFIER, &f.signer.public_pem())
        .unwrap();
    let active = f.active.1.expose_secret().to_owned();
    let (_, secret) = parts(&active);
    let unknown = craft(PREFIX, "Zz9Zz9Zz9Zz9", &"q".repeat(30));
    for action in [
        LeakAction::ReportOnly,
        LeakAction::Disable,
        LeakAction::Revoke,
    ] {
        let leaks = LeakReports::builder(admin.clone(), f.keyring.clone())
            .action(action)
            .key_source(keys.clone())
            .build();
        // A URL that embeds the token, and one with a forged log line.
        let body = serde_json::to_vec(&serde_json::json!([
            {"token": active, "type": TOKEN_TYPE, "url": format!("https://gist.test/raw?k={active}"), "source": "gist_content"},
            {"token": unknown, "type": TOKEN_TYPE, "url": "https://x.test/\nINFO forged", "source": "content"},
        ]))
        .unwrap();
        let mut headers = http::HeaderMap::new();
        for (name, value) in signed(&f.signer, &body) {
            headers.insert(name, value.parse().unwrap());
        }
        assert_eq!(leaks.handle(&headers, &body).await.status, 200);
        // Tampered: refused, and logged as such.
        let mut tampered = body.clone();
        tampered[10] ^= 1;
        assert_eq!(leaks.handle(&headers, &tampered).await.status, 401);
        tracing::info!("{leaks:?}");
    }
    admin.flush_audit().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("GitHub secret scanning reported a leaked key"),
        "{logs}"
    );
    assert!(
        logs.contains(&f.active.0.to_string()),
        "the key id is logged: {logs}"
    );
    assert!(logs.contains("https://gist.test/raw?k=[token]"), "{logs}");
    // The audit events (the default sink logs them) carry the source URL.
    assert!(
        logs.contains("leaked: reported by GitHub secret scanning"),
        "{logs}"
    );
    assert!(!logs.contains("\nINFO forged"), "{logs}");
    for secret in [active.as_str(), secret.as_str(), unknown.as_str()] {
        assert!(!logs.contains(secret), "a token reached the logs: {logs}");
    }
}
