//! Fixtures: a SQLite store with keys, a local P-256 key pair standing in for GitHub's, signed
//! reports, and one `send` for both frameworks.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine as _;
use http_body_util::BodyExt as _;
use keygate::audit::{AuditError, AuditEvent, AuditSink};
use keygate::{Admin, KeyAdmin, KeyId, KeyRecord, Keyring, NewKey, PlaintextKey};
use keygate_leaks::{LeakAction, LeakReports, StaticKeys};
use keygate_sqlx::SqliteStore;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use sha2::{Digest as _, Sha256};
use tower::ServiceExt as _;

pub const PREFIX: &str = "acme_live";
pub const TOKEN_TYPE: &str = "acme_api_key";
pub const IDENTIFIER: &str = "test-key-1";
pub const FOUND_AT: &str = "https://github.com/octocat/Hello-World/blob/12345600b9cbe38a219f39a9941c9319b600c002/foo/bar.txt";

/// The sample request in GitHub's specification (signed by GitHub's key below).
pub const SPEC_IDENTIFIER: &str =
    "bcb53661c06b4728e59d897fb6165d5c9cda0fd9cdf9d09ead458168deb7518c";
pub const SPEC_SIGNATURE: &str = "MEQCIQDaMKqrGnE27S0kgMrEK0eYBmyG0LeZismAEz/BgZyt7AIfXt9fErtRS4XaeSt/AO1RtBY66YcAdjxji410VQV4xg==";
pub const SPEC_PAYLOAD: &str = r#"[{"source":"commit","token":"some_token","type":"some_type","url":"https://example.com/base-repo-url/"}]"#;
/// GitHub's published key for `SPEC_IDENTIFIER` (api.github.com/meta/public_keys/secret_scanning).
pub const SPEC_KEY: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEYAGMWO8XgCamYKMJS6jc/qgvSlAd\nAjPuDPRcXU22YxgBrz+zoN19MzuRyW87qEt9/AmtoNP5GrobzUvQSyJFVw==\n-----END PUBLIC KEY-----\n";

/// Audit events, kept in memory.
#[derive(Clone, Default)]
pub struct Events(pub Arc<Mutex<Vec<AuditEvent>>>);

#[async_trait]
impl AuditSink for Events {
    async fn write(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        self.0.lock().unwrap().extend_from_slice(events);
        Ok(())
    }
}

impl Events {
    pub fn all(&self) -> Vec<AuditEvent> {
        self.0.lock().unwrap().clone()
    }
}

/// A signing key standing in for GitHub's.
pub struct Signer {
    pub identifier: String,
    pub key: SigningKey,
}

impl Signer {
    pub fn random(identifier: &str) -> Self {
        Self {
            identifier: identifier.to_owned(),
            key: SigningKey::random(&mut rand_core::OsRng),
        }
    }

    pub fn public_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    }

    pub fn signature(&self, body: &[u8]) -> Signature {
        self.key.sign(body)
    }

    /// Base64 of the DER signature, as GitHub sends it.
    pub fn sign(&self, body: &[u8]) -> String {
        b64(&self.signature(body).to_der().to_bytes())
    }
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A SQLite store (a file, so a verifier on it gets the change feed) with two keys: one
/// active, one revoked.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: SqliteStore,
    pub keyring: Keyring,
    pub active: (KeyId, PlaintextKey),
    pub revoked: (KeyId, PlaintextKey),
    pub signer: Signer,
    /// The events of changes the endpoint makes.
    pub events: Events,
    /// The Admin the endpoint changes keys through (recording to `events`, publishing on the
    /// store's channel); flush it before reading `events`.
    pub admin: Admin,
}

impl Fixture {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("keys.db")).await.unwrap();
        store.migrate().await.unwrap();
        let keyring = Keyring::development(PREFIX).unwrap();
        let setup = Admin::builder(store.clone())
            .keyring(keyring.clone())
            .build();
        let active = setup.create_key(NewKey::new("active")).await.unwrap();
        let revoked = setup.create_key(NewKey::new("revoked")).await.unwrap();
        setup.revoke(&revoked.record.id).await.unwrap();
        let events = Events::default();
        let admin = Admin::builder(store.clone())
            .keyring(keyring.clone())
            .audit_sink(events.clone())
            .invalidation(store.invalidation())
            .build();
        Self {
            dir,
            store,
            keyring,
            active: (active.record.id, active.key),
            revoked: (revoked.record.id, revoked.key),
            signer: Signer::random(IDENTIFIER),
            events,
            admin,
        }
    }

    /// The endpoint, signed reports checked against the fixture's signer and GitHub's
    /// documented key, changes through an Admin publishing on the store's channel.
    pub fn leaks(&self, action: LeakAction) -> LeakReports {
        let keys = StaticKeys::new()
            .with_pem(IDENTIFIER, &self.signer.public_pem())
            .unwrap()
            .with_pem(SPEC_IDENTIFIER, SPEC_KEY)
            .unwrap();
        LeakReports::builder(self.admin.clone(), self.keyring.clone())
            .action(action)
            .key_source(keys)
            .max_body_bytes(16 * 1024)
            .build()
    }

    pub async fn record(&self, id: &KeyId) -> KeyRecord {
        self.store.get(id).await.unwrap()
    }

    /// Every record, to compare before and after a request that must change nothing.
    pub async fn snapshot(&self) -> Vec<KeyRecord> {
        vec![
            self.record(&self.active.0).await,
            self.record(&self.revoked.0).await,
        ]
    }
}

/// A report of `tokens`, each `{token, type, url, source}` as in the specification.
pub fn report(tokens: &[&str]) -> Vec<u8> {
    let entries: Vec<serde_json::Value> = tokens
        .iter()
        .map(|token| {
            serde_json::json!({
                "token": token,
                "type": TOKEN_TYPE,
                "url": FOUND_AT,
                "source": "content",
            })
        })
        .collect();
    serde_json::to_vec(&entries).unwrap()
}

/// The feedback the specification defines for `tokens` with `labels` (hashed form).
pub fn feedback(entries: &[(&str, &str, &str)]) -> serde_json::Value {
    entries
        .iter()
        .map(|(token, token_type, label)| {
            serde_json::json!({
                "token_hash": sha256_hex(token),
                "token_type": token_type,
                "label": label,
            })
        })
        .collect()
}

/// A token of `prefix` with the given id and secret and a correct checksum (keygate's
/// format: CRC32 of the rest, six base62 digits, most significant first).
pub fn craft(prefix: &str, id: &str, secret: &str) -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let body = format!("{prefix}_{id}_{secret}");
    let mut crc = crc32fast::hash(body.as_bytes());
    let mut digits = [b'0'; 6];
    for slot in digits.iter_mut().rev() {
        *slot = ALPHABET[(crc % 62) as usize];
        crc /= 62;
    }
    format!("{body}{}", std::str::from_utf8(&digits).unwrap())
}

/// The id and secret parts of a keygate key.
pub fn parts(key: &str) -> (String, String) {
    let tail = &key[key.len() - 50..];
    (tail[1..13].to_owned(), tail[14..44].to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framework {
    Axum,
    Actix,
}

pub const FRAMEWORKS: [Framework; 2] = [Framework::Axum, Framework::Actix];

/// The answer as a client sees it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// POSTs `body` with `headers` to the endpoint mounted at `/github/secret-scanning` in an app
/// of `framework`.
pub async fn send(
    framework: Framework,
    leaks: &LeakReports,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Answer {
    const PATH: &str = "/github/secret-scanning";
    match framework {
        Framework::Axum => {
            let app: axum::Router = axum::Router::new().route(PATH, leaks.axum_handler());
            let mut request = http::Request::post(PATH).header("content-type", "application/json");
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            let response = app
                .oneshot(request.body(axum::body::Body::from(body)).unwrap())
                .await
                .unwrap();
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            Answer {
                status,
                content_type,
                body: body.to_vec(),
            }
        }
        Framework::Actix => {
            let app = actix_web::test::init_service(
                actix_web::App::new().route(PATH, leaks.actix_route()),
            )
            .await;
            let mut request = actix_web::test::TestRequest::post()
                .uri(PATH)
                .insert_header(("content-type", "application/json"));
            for (name, value) in headers {
                request = request.insert_header((*name, value.as_str()));
            }
            let response =
                actix_web::test::call_service(&app, request.set_payload(body).to_request()).await;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body = actix_web::test::read_body(response).await;
            Answer {
                status,
                content_type,
                body: body.to_vec(),
            }
        }
    }
}

/// The two signature headers for `body` signed by `signer`.
pub fn signed(signer: &Signer, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("Github-Public-Key-Identifier", signer.identifier.clone()),
        ("Github-Public-Key-Signature", signer.sign(body)),
    ]
}
