//! The admin API on a SQLite file, with a standalone `Admin` (no verifier behind it) that
//! records changes in the store's audit trail and publishes them on an invalidation channel;
//! the callers are checked by a service's verifier on the same file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use keygate::{
    Admin, Invalidated, Invalidation, InvalidationError, KeyId, Keyring, NewKey, Subscription,
    Verifier,
};
use keygate_admin::{AdminApi, READ_SCOPE, WRITE_SCOPE};
use keygate_sqlx::SqliteStore;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Records what is published.
#[derive(Clone, Default)]
struct Published(Arc<Mutex<Vec<Invalidated>>>);

#[async_trait]
impl Invalidation for Published {
    async fn publish(&self, what: Invalidated) -> Result<(), InvalidationError> {
        self.0.lock().unwrap().push(what);
        Ok(())
    }

    async fn subscribe(&self) -> Result<Box<dyn Subscription>, InvalidationError> {
        Err(InvalidationError::new("publishing only"))
    }
}

async fn send(
    app: &Router,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, value)
}

#[tokio::test]
async fn a_standalone_admin_on_sqlite_audits_and_publishes_what_the_api_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("keys.db")).await.unwrap();
    let keyring = Keyring::development("admin_sqlite").unwrap();
    let sink = store.audit_sink();
    let verifier = Verifier::builder(keyring.clone(), store.clone())
        .audit_sink(sink.clone())
        .build();
    let published = Published::default();
    let admin = Admin::builder(store.clone())
        .keyring(keyring)
        .audit_sink(sink.clone())
        .invalidation(published.clone())
        .build();
    let writer = admin
        .create_key(
            NewKey::new("ops")
                .owner("ops-team")
                .scope(READ_SCOPE)
                .unwrap()
                .scope(WRITE_SCOPE)
                .unwrap(),
        )
        .await
        .unwrap();
    let writer_id = writer.record.id;
    let writer_key = writer.key.expose_secret().to_owned();
    let app: Router = AdminApi::new(admin.clone(), verifier.clone())
        .audit_trail(sink.clone())
        .router();

    let (status, created) = send(
        &app,
        Method::POST,
        "/keys",
        &writer_key,
        Some(json!({"name": "partner", "owner": "acme", "scopes": ["orders:read"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id: KeyId = created["record"]["id"].as_str().unwrap().parse().unwrap();
    let (status, revoked) = send(
        &app,
        Method::POST,
        &format!("/keys/{id}/revoke"),
        &writer_key,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!(revoked["state"], "revoked");
    // Bad input changes nothing and records nothing.
    let (status, problem) = send(
        &app,
        Method::PUT,
        &format!("/keys/{id}/name"),
        &writer_key,
        Some(json!({"name": ""})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["field"], "name");

    admin.flush_audit().await;
    verifier.flush_audit().await;
    let (status, trail) = send(
        &app,
        Method::GET,
        &format!("/audit?key_id={id}"),
        &writer_key,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{trail}");
    let events = trail["events"].as_array().unwrap();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["revoked", "created"], "newest first: {trail}");
    for event in events {
        assert_eq!(
            event["actor"],
            writer_id.as_str(),
            "the actor is the admin key's id"
        );
    }
    assert_eq!(
        *published.0.lock().unwrap(),
        [
            Invalidated::Key(writer_id),
            Invalidated::Key(id),
            Invalidated::Key(id)
        ],
        "the set-up's creation, then the API's two changes"
    );
    // The store has it: the key is revoked for the service.
    let (status, shown) = send(&app, Method::GET, &format!("/keys/{id}"), &writer_key, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["name"], "partner");
    // Usage of the admin key, per day, from the store's usage table.
    verifier.flush_audit().await;
    let (_, usage) = send(&app, Method::GET, "/usage", &writer_key, None).await;
    assert!(
        usage["days"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["key_id"] == writer_id.as_str() && d["allowed"].as_u64() >= Some(5)),
        "{usage}"
    );

    // By owner, through the SQL trail's own statements (those of `keygate audit --owner`).
    let (status, by_owner) = send(&app, Method::GET, "/audit?owner=acme", &writer_key, None).await;
    assert_eq!(status, StatusCode::OK, "{by_owner}");
    // acme's only key, partner, and before it acme's creation by that key (newest first).
    let by_owner = by_owner["events"].as_array().unwrap();
    let (made, of_partner) = by_owner.split_last().unwrap();
    assert_eq!(of_partner, events.as_slice(), "acme's only key: partner");
    assert_eq!(
        [
            &made["action"],
            &made["owner"],
            &made["key_id"],
            &made["actor"]
        ],
        [
            &json!("owner_created"),
            &json!("acme"),
            &Value::Null,
            &json!(writer_id.as_str())
        ],
        "{by_owner:?}"
    );
    let (_, ops) = send(
        &app,
        Method::GET,
        "/usage?owner=ops-team",
        &writer_key,
        None,
    )
    .await;
    let days = ops["days"].as_array().unwrap();
    assert!(
        !days.is_empty() && days.iter().all(|d| d["key_id"] == writer_id.as_str()),
        "{ops}"
    );
    let (_, acme) = send(&app, Method::GET, "/usage?owner=acme", &writer_key, None).await;
    assert_eq!(acme["days"], json!([]), "partner made no request");
    let (status, _) = send(&app, Method::GET, "/usage?owner=nobody", &writer_key, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Named limits through the API on a SQLite file: stored and read back as set, each key change
/// audited as `limits_changed` and published for that key, and an owner's new limits published
/// so its keys' cached copies go too.
#[tokio::test]
async fn named_limits_set_through_the_api_are_stored_audited_and_published() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("keys.db")).await.unwrap();
    let keyring = Keyring::development("admin_sqlite").unwrap();
    let sink = store.audit_sink();
    let verifier = Verifier::builder(keyring.clone(), store.clone()).build();
    let published = Published::default();
    let admin = Admin::builder(store.clone())
        .keyring(keyring)
        .audit_sink(sink.clone())
        .invalidation(published.clone())
        .build();
    let writer = admin
        .create_key(NewKey::new("ops").scope(WRITE_SCOPE).unwrap())
        .await
        .unwrap();
    let writer_key = writer.key.expose_secret().to_owned();
    let app: Router = AdminApi::new(admin.clone(), verifier)
        .audit_trail(sink.clone())
        .router();

    let (status, created) = send(
        &app,
        Method::POST,
        "/keys",
        &writer_key,
        Some(json!({"name": "app", "owner": "acme", "limits": {"writes": "10/1s"}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id: KeyId = created["record"]["id"].as_str().unwrap().parse().unwrap();
    let (status, set) = send(
        &app,
        Method::PUT,
        &format!("/keys/{id}/limits"),
        &writer_key,
        Some(json!({"limits": {"reads": "100/1s burst 200", "writes": "20/1s"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let stored = keygate::KeyAdmin::get(&store, &id).await.unwrap();
    assert_eq!(
        stored.limits.to_string(),
        "reads: 100/1s burst 200, writes: 20/1s"
    );
    let (_, shown) = send(&app, Method::GET, &format!("/keys/{id}"), &writer_key, None).await;
    assert_eq!(
        shown["limits"],
        json!({"reads": "100/1s burst 200", "writes": "20/1s"})
    );

    assert_eq!(
        published.0.lock().unwrap()[1..],
        [Invalidated::Key(id), Invalidated::Key(id)],
        "the creation, then the change"
    );
    published.0.lock().unwrap().clear();
    let (status, owner) = send(
        &app,
        Method::PATCH,
        "/owners/acme",
        &writer_key,
        Some(json!({"limits": {"writes": "100/1s"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{owner}");
    assert_eq!(owner["limits"], json!({"writes": "100/1s"}));
    let (_, owner) = send(&app, Method::GET, "/owners/acme", &writer_key, None).await;
    assert_eq!(owner["limits"], json!({"writes": "100/1s"}), "as stored");
    assert!(
        !published.0.lock().unwrap().is_empty(),
        "an owner's new limits are published"
    );

    admin.flush_audit().await;
    let (_, trail) = send(
        &app,
        Method::GET,
        &format!("/audit?key_id={id}"),
        &writer_key,
        None,
    )
    .await;
    let actions: Vec<&str> = trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["limits_changed", "created"],
        "newest first: {trail}"
    );
}
