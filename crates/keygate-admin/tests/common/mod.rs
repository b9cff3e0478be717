//! A memory-store admin API with three callers: a full admin key, a read-only admin key and a
//! key without admin scopes; and one key to manage.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use keygate::audit::{AuditTrail, EventQuery, MemoryAuditTrail, StoredEvent};
use keygate::{Admin, KeyAdmin, KeyId, Keyring, MemoryStore, NewKey, Verifier};
use keygate_admin::{AdminApi, READ_SCOPE, WRITE_SCOPE};
use serde_json::Value;
use tower::ServiceExt;

pub struct Fixture {
    pub app: Router,
    pub store: MemoryStore,
    pub trail: MemoryAuditTrail,
    pub verifier: Verifier,
    /// Both admin scopes.
    pub writer: Caller,
    /// `keygate:admin:read` only.
    pub reader: Caller,
    /// No admin scope.
    pub outsider: Caller,
    /// The key the requests manage.
    pub target: KeyId,
}

pub struct Caller {
    pub id: KeyId,
    pub key: String,
}

pub fn keyring() -> Keyring {
    Keyring::development("admin_test").unwrap()
}

async fn caller(admin: &Admin, name: &str, scopes: &[&str]) -> Caller {
    let mut spec = NewKey::new(name);
    for scope in scopes {
        spec = spec.scope(scope).unwrap();
    }
    let created = admin.create_key(spec).await.unwrap();
    Caller {
        id: created.record.id,
        key: created.key.expose_secret().to_owned(),
    }
}

/// The fixture, its API over `admin` (default: the verifier's own).
pub async fn fixture_with(admin: impl FnOnce(&MemoryStore) -> Option<Admin>) -> Fixture {
    let store = MemoryStore::new();
    // Linked to the store, so the trail reads by owner (`owner=` of /audit and /usage).
    let trail = MemoryAuditTrail::new().key_store(store.clone());
    let verifier = Verifier::builder(keyring(), store.clone())
        .audit_sink(trail.clone())
        .audit_linger(Duration::ZERO)
        .failure_limit(None)
        .build();
    let setup = verifier.admin();
    let writer = caller(&setup, "admin", &[READ_SCOPE, WRITE_SCOPE]).await;
    let reader = caller(&setup, "auditor", &[READ_SCOPE]).await;
    let outsider = caller(&setup, "orders", &["orders:read"]).await;
    // Owners straight into the store, unaudited: the fixture's recorded changes are its four
    // keys' (a key naming an unknown owner would record the owner's creation too).
    store
        .create_owner(keygate::owner::NewOwner::new("team-billing"))
        .await
        .unwrap();
    // A shared credits balance, so an owner top-up (`POST /owners/{id}/credits`) applies.
    store
        .create_owner(
            keygate::owner::NewOwner::new("no-keys").quota("credits 100".parse().unwrap()),
        )
        .await
        .unwrap();
    let target = setup
        .create_key(
            NewKey::new("target")
                .owner("team-billing")
                .scope("orders:read")
                .unwrap()
                // A credits balance, so a top-up (`POST /keys/{id}/credits`) applies.
                .quota("credits 500".parse().unwrap()),
        )
        .await
        .unwrap()
        .record
        .id;
    let admin = admin(&store).unwrap_or_else(|| verifier.admin());
    let app = AdminApi::new(admin, verifier.clone())
        .audit_trail(trail.clone())
        .router();
    Fixture {
        app,
        store,
        trail,
        verifier,
        writer,
        reader,
        outsider,
        target,
    }
}

pub async fn fixture() -> Fixture {
    fixture_with(|_| None).await
}

pub struct Answer {
    pub status: StatusCode,
    pub cache_control: Option<String>,
    pub content_type: Option<String>,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
}

impl Fixture {
    /// Sends a request to the admin API as `key` (none: no credentials).
    pub async fn send(
        &self,
        method: &Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        send_to(&self.app, method, path, key, body).await
    }

    /// The lifecycle events recorded so far (the verifier's own requests left out).
    pub async fn changes(&self) -> Vec<StoredEvent> {
        self.verifier.flush_audit().await;
        let all = self
            .trail
            .events(&EventQuery {
                limit: 10_000,
                oldest_first: true,
                ..EventQuery::default()
            })
            .await
            .unwrap();
        all.into_iter()
            .filter(|e| {
                !matches!(
                    e.event.action,
                    keygate::audit::Action::Request | keygate::audit::Action::Denials
                )
            })
            .collect()
    }

    /// Every key record, to compare before and after a refused request.
    pub async fn records(&self) -> Vec<keygate::KeyRecord> {
        self.store
            .list(
                &keygate::KeyFilter::default(),
                keygate::PageRequest::first(1000),
            )
            .await
            .unwrap()
            .keys
    }
}

/// Sends a request to `app` as `key` (none: no credentials).
pub async fn send_to(
    app: &Router,
    method: &Method,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    let mut request = Request::builder().method(method.clone()).uri(path);
    if let Some(key) = key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let request = match body {
        Some(body) => request
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let cache_control = response
        .headers()
        .get(header::CACHE_CONTROL)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        cache_control,
        content_type,
        text: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}
