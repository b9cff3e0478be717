//! Every endpoint of the admin API, driven by one table: success, bad input (400 naming the
//! field, nothing changed), unknown id (404), no key (401), a key without admin scopes (403),
//! a read-only admin key on a change (403), and one audit event per change whose actor is the
//! admin key's id. Plus the OpenAPI document (3.1, every route served is in it, every route
//! in it is in the table) and a store that cannot be reached (503).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use common::{Fixture, fixture, fixture_with};
use http::{Method, StatusCode};
use keygate::audit::Action;
use keygate::owner::{NewOwner, OwnerKeysChange, OwnerRecord, OwnerUpdate};
use keygate::record::{CreatedKey, KeyChange, KeyRecord, MintedKey, RotatedKey, Rotation};
use keygate::store::{KeyFilter, KeyPage, PageRequest};
use keygate::{Admin, KeyAdmin, KeyId, KeyStore, StoreError};
use serde_json::{Value, json};

/// One endpoint: how to call it well and badly, and what a success records.
struct Case {
    method: Method,
    /// The route as documented; `{id}` is the managed key's id.
    route: &'static str,
    /// Whether it changes keys (needs `keygate:admin:write`).
    write: bool,
    /// A good body (for changes) or query string (after `?`, for reads).
    good: Option<Value>,
    query: &'static str,
    status: StatusCode,
    /// A bad request: (path suffix replacing `{id}` when `Some`, body, query) and the field
    /// the 400 names.
    bad: Bad,
    /// The lifecycle action a success records.
    action: Option<Action>,
    /// For owner routes: the owner id `{id}` stands for (else the managed key's id).
    owner: Option<&'static str>,
}

struct Bad {
    id: Option<&'static str>,
    body: Option<Value>,
    query: &'static str,
    field: &'static str,
}

/// The managed key's owner (its only key).
const OWNER: &str = "team-billing";
/// An owner without keys (the fixture creates it).
const EMPTY_OWNER: &str = "no-keys";

fn future() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(86_400 * 7))
        .to_string()
}

fn cases() -> Vec<Case> {
    let change = |route, good: Value, bad: Value, field, action| Case {
        method: Method::PUT,
        route,
        write: true,
        good: Some(good),
        query: "",
        status: StatusCode::OK,
        bad: Bad {
            id: None,
            body: Some(bad),
            query: "",
            field,
        },
        action: Some(action),
        owner: None,
    };
    let state = |route, action| Case {
        method: Method::POST,
        route,
        write: true,
        good: None,
        query: "",
        status: StatusCode::OK,
        bad: Bad {
            id: Some("not-a-key-id"),
            body: None,
            query: "",
            field: "id",
        },
        action: Some(action),
        owner: None,
    };
    let read = |route, query, bad_query, field| Case {
        method: Method::GET,
        route,
        write: false,
        good: None,
        query,
        status: StatusCode::OK,
        bad: Bad {
            id: None,
            body: None,
            query: bad_query,
            field,
        },
        action: None,
        owner: None,
    };
    vec![
        read(
            "/keys",
            "state=active&search=targ&limit=10",
            "limit=0",
            "limit",
        ),
        Case {
            bad: Bad {
                id: Some("x"),
                body: None,
                query: "",
                field: "id",
            },
            ..read("/keys/{id}", "", "", "")
        },
        read(
            "/audit",
            "action=created&limit=5",
            "outcome=maybe",
            "outcome",
        ),
        read("/usage", "days=7", "days=0", "days"),
        read(
            "/audit",
            "owner=team-billing&limit=5",
            "owner=team-billing&key_id=abcdefghijkl",
            "owner",
        ),
        read("/usage", "owner=team-billing&days=7", "owner=%01", "owner"),
        read("/keys", "environment=", "environment=live", "environment"),
        read("/environments", "", "", ""),
        read("/policy", "", "", ""),
        Case {
            bad: Bad {
                id: Some("x"),
                body: None,
                query: "",
                field: "id",
            },
            ..read("/keys/{id}/quota", "", "", "")
        },
        Case {
            method: Method::PUT,
            route: "/policy",
            write: true,
            good: Some(json!({
                "require_expiry": true,
                "default_lifetime_seconds": 30 * 86_400,
                "max_lifetime_seconds": 365 * 86_400,
                "max_idle_seconds": 90 * 86_400,
            })),
            query: "",
            status: StatusCode::OK,
            bad: Bad {
                id: None,
                body: Some(json!({"max_idle_seconds": 0})),
                query: "",
                field: "max_idle_seconds",
            },
            // A setting, not a key: no key changes; one event naming no key.
            action: Some(Action::PolicyChanged),
            owner: None,
        },
        Case {
            method: Method::POST,
            route: "/keys",
            write: true,
            // An owner that exists: one event for the change (a new owner id would add its
            // `owner_created`, see `audit_and_usage_roll_up_by_owner`).
            good: Some(json!({
                "name": "new key",
                "owner": OWNER,
                "scopes": ["orders:read", "orders:*"],
                "expires_at": future(),
                "metadata": {"tier": "gold"},
                "allowed_ips": ["10.0.0.0/8", "192.0.2.1"],
                "rate_limit": "100/1s burst 200",
                "quota": "credits 500 refill 500 every 1d",
                "limits": {"writes": "10/1s", "bulk": "unlimited"},
            })),
            query: "",
            status: StatusCode::CREATED,
            bad: Bad {
                id: None,
                body: Some(json!({"name": "new key", "scopes": ["orders:read", "not a scope"]})),
                query: "",
                field: "scopes[1]",
            },
            action: Some(Action::Created),
            owner: None,
        },
        Case {
            method: Method::DELETE,
            route: "/keys/{id}",
            write: true,
            good: None,
            query: "",
            status: StatusCode::NO_CONTENT,
            bad: Bad {
                id: Some("kg_not_an_id"),
                body: None,
                query: "",
                field: "id",
            },
            action: Some(Action::Deleted),
            owner: None,
        },
        change(
            "/keys/{id}/name",
            json!({"name": "renamed"}),
            json!({"name": "  "}),
            "name",
            Action::Renamed,
        ),
        change(
            "/keys/{id}/scopes",
            json!({"scopes": ["invoices:read"]}),
            json!({"scopes": "invoices:read"}),
            "scopes",
            Action::ScopesChanged,
        ),
        change(
            "/keys/{id}/expiry",
            json!({"expires_at": future()}),
            json!({}),
            "expires_at",
            Action::ExpiryChanged,
        ),
        change(
            "/keys/{id}/rate-limit",
            json!({"rate_limit": "5/1s"}),
            json!({"rate_limit": "lots"}),
            "rate_limit",
            Action::RateLimitChanged,
        ),
        change(
            "/keys/{id}/quota",
            json!({"quota": "10000/day"}),
            json!({"quota": "10000/week"}),
            "quota",
            Action::QuotaChanged,
        ),
        Case {
            method: Method::POST,
            ..change(
                "/keys/{id}/credits",
                json!({"add": 1000}),
                json!({"add": 0}),
                "add",
                Action::CreditsAdded,
            )
        },
        change(
            "/keys/{id}/limits",
            json!({"limits": {"writes": "10/1s", "reads": "100/1s burst 200"}}),
            json!({"limits": {"Writes": "10/1s"}}),
            "limits",
            Action::LimitsChanged,
        ),
        change(
            "/keys/{id}/metadata",
            json!({"metadata": {"team": "billing", "n": 3}}),
            json!({"metadata": [1, 2]}),
            "metadata",
            Action::MetadataChanged,
        ),
        change(
            "/keys/{id}/allowed-ips",
            json!({"allowed_ips": ["203.0.113.0/24"]}),
            json!({"allowed_ips": ["203.0.113.0/24", "nowhere"]}),
            "allowed_ips[1]",
            Action::AllowedIpsChanged,
        ),
        state("/keys/{id}/disable", Action::Disabled),
        state("/keys/{id}/enable", Action::Enabled),
        state("/keys/{id}/revoke", Action::Revoked),
        read("/owners", "limit=10", "limit=0", "limit"),
        Case {
            bad: Bad {
                id: Some("%07"),
                body: None,
                query: "",
                field: "id",
            },
            owner: Some(OWNER),
            ..read("/owners/{id}", "", "", "")
        },
        Case {
            method: Method::POST,
            route: "/owners",
            write: true,
            good: Some(json!({
                "id": "acme",
                "name": "ACME Corp",
                "metadata": {"plan": "gold"},
                "rate_limit": "10/1m",
                "quota": "100000/month",
                "limits": {"writes": "100/1s"},
            })),
            query: "",
            status: StatusCode::CREATED,
            bad: Bad {
                id: None,
                body: Some(json!({"id": "a\u{7}b"})),
                query: "",
                field: "id",
            },
            // Owner records are not keys: one event naming the owner, none about a key.
            action: Some(Action::OwnerCreated),
            owner: None,
        },
        Case {
            method: Method::PATCH,
            route: "/owners/{id}",
            write: true,
            good: Some(
                json!({"name": "Billing", "rate_limit": "10/1m", "quota": "50/day", "limits": {"reads": "1000/1s"}}),
            ),
            query: "",
            status: StatusCode::OK,
            bad: Bad {
                id: None,
                body: Some(json!({"rate_limit": "lots"})),
                query: "",
                field: "rate_limit",
            },
            action: Some(Action::OwnerChanged),
            owner: Some(OWNER),
        },
        Case {
            bad: Bad {
                id: Some("%07"),
                body: None,
                query: "",
                field: "id",
            },
            owner: Some(EMPTY_OWNER),
            ..read("/owners/{id}/quota", "", "", "")
        },
        Case {
            method: Method::POST,
            owner: Some(EMPTY_OWNER),
            ..change(
                "/owners/{id}/credits",
                json!({"add": 1000}),
                json!({"add": 0}),
                "add",
                Action::CreditsAdded,
            )
        },
        Case {
            method: Method::DELETE,
            route: "/owners/{id}",
            write: true,
            good: None,
            query: "",
            status: StatusCode::NO_CONTENT,
            bad: Bad {
                id: Some("%07"),
                body: None,
                query: "",
                field: "id",
            },
            action: Some(Action::OwnerDeleted),
            owner: Some(EMPTY_OWNER),
        },
        Case {
            owner: Some(OWNER),
            bad: Bad {
                id: Some("%07"),
                body: None,
                query: "",
                field: "id",
            },
            ..state("/owners/{id}/disable", Action::Disabled)
        },
        Case {
            owner: Some(OWNER),
            bad: Bad {
                id: Some("%07"),
                body: None,
                query: "",
                field: "id",
            },
            // Its one key is active: nothing to enable, nothing recorded.
            action: None,
            ..state("/owners/{id}/enable", Action::Enabled)
        },
        Case {
            owner: Some(OWNER),
            bad: Bad {
                id: Some("%07"),
                body: None,
                query: "",
                field: "id",
            },
            ..state("/owners/{id}/revoke", Action::Revoked)
        },
        Case {
            method: Method::POST,
            route: "/keys/{id}/rotate",
            write: true,
            good: Some(json!({"grace_seconds": 3600})),
            query: "",
            status: StatusCode::CREATED,
            bad: Bad {
                id: None,
                body: Some(json!({"grace_seconds": 31 * 86_400})),
                query: "",
                field: "grace_seconds",
            },
            action: Some(Action::Rotated),
            owner: None,
        },
    ]
}

fn path(case: &Case, id: &str, query: &str) -> String {
    let mut path = case.route.replace("{id}", id);
    if !query.is_empty() {
        path.push('?');
        path.push_str(query);
    }
    path
}

fn assert_problem(answer: &common::Answer, status: StatusCode, what: &str) -> Value {
    assert_eq!(answer.status, status, "{what}: {}", answer.text);
    assert_eq!(
        answer.content_type.as_deref(),
        Some("application/problem+json"),
        "{what}"
    );
    let problem = answer.json();
    assert_eq!(problem["status"], status.as_u16(), "{what}");
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:keygate:problem:"),
        "{what}: {problem}"
    );
    assert!(
        problem["title"].is_string() && problem["detail"].is_string(),
        "{what}"
    );
    problem
}

#[tokio::test]
async fn every_endpoint_answers_as_documented() {
    for case in cases() {
        let what = format!("{} {}", case.method, case.route);
        let f = fixture().await;
        let target = case
            .owner
            .map_or_else(|| f.target.to_string(), str::to_owned);
        let good = path(&case, &target, case.query);
        let body = case.good.as_ref();
        let before = f.records().await;

        // No key: 401 with a challenge, from keygate's layer.
        let answer = f.send(&case.method, &good, None, body).await;
        assert_problem(
            &answer,
            StatusCode::UNAUTHORIZED,
            &format!("{what} without a key"),
        );
        // A key without admin scopes: 403.
        let answer = f
            .send(&case.method, &good, Some(&f.outsider.key), body)
            .await;
        assert_problem(
            &answer,
            StatusCode::FORBIDDEN,
            &format!("{what} as a non-admin key"),
        );
        // A read-only admin key: reads, but 403 on every change.
        let answer = f.send(&case.method, &good, Some(&f.reader.key), body).await;
        if case.write {
            assert_problem(&answer, StatusCode::FORBIDDEN, &format!("{what} read-only"));
        } else {
            assert_eq!(
                answer.status, case.status,
                "{what} read-only: {}",
                answer.text
            );
        }
        // Bad input: 400 naming the field.
        let bad_path = path(&case, case.bad.id.unwrap_or(&target), case.bad.query);
        let bad_body = case.bad.body.as_ref().or(body);
        if !case.bad.field.is_empty() {
            let answer = f
                .send(&case.method, &bad_path, Some(&f.writer.key), bad_body)
                .await;
            let problem = assert_problem(&answer, StatusCode::BAD_REQUEST, &format!("{what} bad"));
            assert_eq!(problem["field"], case.bad.field, "{what}: {problem}");
        }
        // Unknown id: 404.
        if case.route.contains("{id}") {
            let unknown = path(&case, KeyId::random().as_str(), case.query);
            let answer = f
                .send(&case.method, &unknown, Some(&f.writer.key), body)
                .await;
            assert_problem(
                &answer,
                StatusCode::NOT_FOUND,
                &format!("{what} unknown id"),
            );
        }
        // Nothing so far changed anything, or recorded a change.
        assert_eq!(
            f.records().await,
            before,
            "{what}: refused requests changed nothing"
        );
        assert!(
            f.changes().await.len() == 4,
            "{what}: only the fixture's creations"
        );

        // Success.
        let answer = f.send(&case.method, &good, Some(&f.writer.key), body).await;
        assert_eq!(answer.status, case.status, "{what}: {}", answer.text);
        assert_eq!(answer.cache_control.as_deref(), Some("no-store"), "{what}");
        if case.status != StatusCode::NO_CONTENT {
            assert_eq!(
                answer.content_type.as_deref(),
                Some("application/json"),
                "{what}"
            );
            answer.json();
        }
        let changes = f.changes().await;
        match case.action {
            Some(action) => {
                assert_eq!(changes.len(), 5, "{what}: one event for the change");
                let event = &changes[4].event;
                assert_eq!(event.action, action, "{what}");
                assert_eq!(
                    event.actor.as_deref(),
                    Some(f.writer.id.as_str()),
                    "{what}: the actor is the admin key's id"
                );
                // Owner changes name the owner (an owner's top-up too); a key's, the key.
                let names_owner = matches!(
                    action,
                    Action::OwnerCreated | Action::OwnerChanged | Action::OwnerDeleted
                ) || (action == Action::CreditsAdded && case.owner.is_some());
                match action {
                    Action::Created => {}
                    Action::PolicyChanged => {
                        assert_eq!(event.key_id, None, "{what}");
                        assert_eq!(f.records().await, before, "{what}: no key changed");
                        continue;
                    }
                    _ if names_owner => {
                        assert_eq!(event.key_id, None, "{what}");
                        assert_eq!(
                            event.owner.as_deref(),
                            Some(case.owner.unwrap_or("acme")),
                            "{what}: the event names the owner"
                        );
                        assert!(event.detail.is_some() == (action != Action::OwnerDeleted));
                        assert_eq!(f.records().await, before, "{what}: no key changed");
                        continue;
                    }
                    _ => assert_eq!(event.key_id, Some(f.target), "{what}"),
                }
                assert_ne!(f.records().await, before, "{what}: the change was made");
            }
            None => {
                assert_eq!(changes.len(), 4, "{what}: a read records no change");
                assert_eq!(f.records().await, before, "{what}");
            }
        }
    }
}

#[tokio::test]
async fn created_and_listed_keys_hold_what_was_asked_and_the_secret_only_once() {
    let f = fixture().await;
    let answer = f
        .send(
            &Method::POST,
            "/keys",
            Some(&f.writer.key),
            Some(&json!({"name": "billing", "scopes": ["invoices:read"], "rate_limit": "10/1s"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let created = answer.json();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("admin_test_"), "{key}");
    let id = created["record"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["record"]["state"], "active");
    assert_eq!(created["record"]["scopes"], json!(["invoices:read"]));
    assert_eq!(created["record"]["rate_limit"], "10/1s");
    // The new key works, and is never shown again.
    let secret = &key[key.len() - 16..];
    for path in [
        "/keys?limit=1000",
        &format!("/keys/{id}"),
        "/audit?limit=1000",
    ] {
        let answer = f.send(&Method::GET, path, Some(&f.writer.key), None).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert!(!answer.text.contains(secret), "{path} shows the secret");
    }
    // Search and keyset pages.
    let page = f
        .send(&Method::GET, "/keys?search=BILL", Some(&f.reader.key), None)
        .await
        .json();
    assert_eq!(page["keys"].as_array().unwrap().len(), 1, "{page}");
    let mut seen = BTreeSet::new();
    let mut after = String::new();
    loop {
        let page = f
            .send(
                &Method::GET,
                &format!("/keys?limit=2{after}"),
                Some(&f.reader.key),
                None,
            )
            .await
            .json();
        for key in page["keys"].as_array().unwrap() {
            assert!(
                seen.insert(key["id"].as_str().unwrap().to_owned()),
                "no repeats"
            );
        }
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "every key once, over the pages");
    // Usage: the admin API's own requests are requests of the admin keys.
    f.verifier.flush_audit().await;
    let usage = f
        .send(&Method::GET, "/usage?days=1", Some(&f.reader.key), None)
        .await
        .json();
    let writer = f.writer.id.to_string();
    assert!(
        usage["days"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["key_id"] == writer.as_str() && d["allowed"].as_u64() >= Some(4)),
        "{usage}"
    );
    // Audit pages, newest first.
    let first = f
        .send(&Method::GET, "/audit?limit=2", Some(&f.reader.key), None)
        .await
        .json();
    let next = first["next"].as_i64().unwrap();
    let second = f
        .send(
            &Method::GET,
            &format!("/audit?limit=2&before={next}"),
            Some(&f.reader.key),
            None,
        )
        .await
        .json();
    assert!(
        second["events"][0]["id"].as_i64().unwrap() < next,
        "{second}"
    );
}

#[tokio::test]
async fn conflicts_are_409_and_change_nothing() {
    let f = fixture().await;
    let target = f.target.to_string();
    let revoke = format!("/keys/{target}/revoke");
    f.send(&Method::POST, &revoke, Some(&f.writer.key), None)
        .await;
    let before = f.records().await;
    let enable = format!("/keys/{target}/enable");
    let answer = f
        .send(&Method::POST, &enable, Some(&f.writer.key), None)
        .await;
    let problem = assert_problem(&answer, StatusCode::CONFLICT, "enable a revoked key");
    assert_eq!(problem["type"], "urn:keygate:problem:conflict");
    assert_eq!(f.records().await, before);
}

/// A key store that never answers.
struct Down;

fn down() -> StoreError {
    StoreError::unavailable(std::io::Error::other("connection refused"))
}

#[async_trait]
impl KeyStore for Down {
    async fn find(&self, _: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        Err(down())
    }
    async fn settings(&self) -> Result<Option<keygate::store::StoreSettings>, StoreError> {
        Err(down())
    }
}

#[async_trait]
impl KeyAdmin for Down {
    async fn create(&self, _: MintedKey) -> Result<CreatedKey, StoreError> {
        Err(down())
    }
    async fn get(&self, _: &KeyId) -> Result<KeyRecord, StoreError> {
        Err(down())
    }
    async fn list(&self, _: &KeyFilter, _: PageRequest) -> Result<KeyPage, StoreError> {
        Err(down())
    }
    async fn apply(&self, _: &KeyId, _: KeyChange) -> Result<KeyRecord, StoreError> {
        Err(down())
    }
    async fn rotate_with(
        &self,
        _: &KeyId,
        _: MintedKey,
        _: Rotation,
    ) -> Result<RotatedKey, StoreError> {
        Err(down())
    }
    async fn delete(&self, _: &KeyId) -> Result<(), StoreError> {
        Err(down())
    }
    // A store that keeps owners, down: not one that cannot keep them (that is a 501).
    async fn create_owner(&self, _: NewOwner) -> Result<OwnerRecord, StoreError> {
        Err(down())
    }
    async fn get_owner(&self, _: &str) -> Result<OwnerRecord, StoreError> {
        Err(down())
    }
    async fn list_owners(&self, _: Option<&str>, _: usize) -> Result<Vec<OwnerRecord>, StoreError> {
        Err(down())
    }
    async fn update_owner(&self, _: &str, _: OwnerUpdate) -> Result<OwnerRecord, StoreError> {
        Err(down())
    }
    async fn delete_owner(&self, _: &str) -> Result<(), StoreError> {
        Err(down())
    }
    async fn change_owner_keys(
        &self,
        _: &str,
        _: OwnerKeysChange,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        Err(down())
    }
}

#[tokio::test]
async fn an_unreachable_store_is_503_never_401() {
    let f = fixture_with(|_| Some(Admin::builder(Down).keyring(common::keyring()).build())).await;
    for case in cases() {
        // The trail is not the store; the environments are the keyring's, read from no store.
        if case.route.starts_with("/audit")
            || case.route.starts_with("/usage")
            || case.route == "/environments"
        {
            continue;
        }
        let what = format!("{} {}", case.method, case.route);
        let path = path(&case, f.target.as_str(), case.query);
        let answer = f
            .send(&case.method, &path, Some(&f.writer.key), case.good.as_ref())
            .await;
        let problem = assert_problem(&answer, StatusCode::SERVICE_UNAVAILABLE, &what);
        assert!(
            !problem.to_string().contains("connection refused"),
            "{what}: no driver error"
        );
    }
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_lists_every_route_the_router_serves() {
    let f: Fixture = fixture().await;
    let answer = f.send(&Method::GET, "/openapi.json", None, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let document = answer.json();
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        document["openapi"]
    );
    assert!(document["info"]["title"].is_string());
    assert!(document["components"]["securitySchemes"]["api_key"].is_object());
    let methods = ["get", "put", "post", "delete", "patch"];
    let mut documented = BTreeSet::new();
    for (route, item) in document["paths"].as_object().unwrap() {
        for method in methods {
            if let Some(operation) = item.get(method) {
                documented.insert((method.to_uppercase(), route.clone()));
                // Every operation documents its success and its refusals.
                let responses = operation["responses"].as_object().unwrap();
                for status in ["400", "401", "403", "503"] {
                    assert!(responses.contains_key(status), "{method} {route}: {status}");
                }
                assert!(operation["security"].is_array(), "{method} {route}");
            }
        }
    }
    // Every reference resolves: the document stands on its own.
    fn refs(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => found.push(r.clone()),
                        _ => refs(v, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&document, &mut found);
    assert!(!found.is_empty());
    for reference in found {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{reference}"));
        assert!(
            document["components"]["schemas"][name].is_object(),
            "{reference} is not in the document"
        );
    }
    // Fields the API requires are required in the document, nullable or not.
    for (schema, field) in [
        ("CreateKey", "name"),
        ("SetExpiry", "expires_at"),
        ("SetRateLimit", "rate_limit"),
        ("SetQuota", "quota"),
        ("AddCredits", "add"),
        ("SetLimits", "limits"),
    ] {
        let required = &document["components"]["schemas"][schema]["required"];
        assert!(
            required
                .as_array()
                .is_some_and(|r| r.contains(&json!(field))),
            "{schema}.{field}: {required}"
        );
    }
    // The table drives every documented route, and only those.
    let tested: BTreeSet<(String, String)> = cases()
        .iter()
        .map(|c| (c.method.to_string(), c.route.to_owned()))
        .collect();
    assert_eq!(tested, documented, "the table and the document");
    // Every documented route is served, and its path answers no undocumented method.
    for route in document["paths"].as_object().unwrap().keys() {
        let path = route.replace("{id}", f.target.as_str());
        for method in methods {
            let method_upper = method.to_uppercase();
            let m = Method::from_bytes(method_upper.as_bytes()).unwrap();
            let answer = f.send(&m, &path, Some(&f.writer.key), None).await;
            if documented.contains(&(method_upper.clone(), route.clone())) {
                // Served: a handler's answer (a missing key is a problem body, not the
                // router's bare 404).
                assert_ne!(
                    answer.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {route}"
                );
                assert!(
                    answer.status != StatusCode::NOT_FOUND || !answer.text.is_empty(),
                    "{method} {route} is not served"
                );
            } else {
                assert_eq!(
                    answer.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {route} is served but not documented"
                );
            }
        }
    }
    // And nothing is served elsewhere.
    let answer = f
        .send(&Method::GET, "/nowhere", Some(&f.writer.key), None)
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn without_an_audit_trail_the_trail_endpoints_say_so() {
    let f = fixture().await;
    let app: axum::Router = keygate_admin::router(f.verifier.admin(), f.verifier.clone());
    let f = Fixture { app, ..f };
    for path in ["/audit", "/usage"] {
        let answer = f.send(&Method::GET, path, Some(&f.reader.key), None).await;
        let problem = assert_problem(&answer, StatusCode::NOT_IMPLEMENTED, path);
        assert_eq!(problem["type"], "urn:keygate:problem:not_configured");
    }
    // The keys are served all the same.
    let answer = f
        .send(&Method::GET, "/keys", Some(&f.reader.key), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn a_key_revoked_through_the_api_is_refused_by_the_service_at_once() {
    use axum::routing::get;
    let f = fixture().await;
    let service: axum::Router = axum::Router::new()
        .route("/orders", get(|| async { "orders" }))
        .layer(keygate_axum::layer(f.verifier.clone()));
    let created = f
        .send(
            &Method::POST,
            "/keys",
            Some(&f.writer.key),
            Some(&json!({"name": "partner"})),
        )
        .await
        .json();
    let key = created["key"].as_str().unwrap();
    let id = created["record"]["id"].as_str().unwrap();
    // The service caches the key on its first use…
    let answer = common::send_to(&service, &Method::GET, "/orders", Some(key), None).await;
    assert_eq!(answer.status, StatusCode::OK);
    // …and refuses it on the very next request after the revoke.
    let revoke = format!("/keys/{id}/revoke");
    let answer = f
        .send(&Method::POST, &revoke, Some(&f.writer.key), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = common::send_to(&service, &Method::GET, "/orders", Some(key), None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

/// Environments (issue 17 item 5): the create request names one, key views show each key's,
/// and an environment the service's keyring lacks is a 400 naming the field, creating nothing.
#[tokio::test]
async fn keys_are_created_in_the_environment_asked_for_and_show_it() {
    let environments = keygate::Keyring::builder()
        .environment("live", keygate::KeyFormat::new("admin_test").unwrap())
        .environment("test", keygate::KeyFormat::new("admin_sandbox").unwrap())
        .build(keygate::Peppers::development())
        .unwrap();
    let f = fixture_with(|store| Some(Admin::builder(store.clone()).keyring(environments).build()))
        .await;
    let create = |body: Value| {
        let f = &f;
        async move {
            f.send(&Method::POST, "/keys", Some(&f.writer.key), Some(&body))
                .await
        }
    };
    let answer = create(json!({"name": "ci", "environment": "test"})).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let created = answer.json();
    assert!(
        created["key"]
            .as_str()
            .unwrap()
            .starts_with("admin_sandbox_"),
        "{created}"
    );
    assert_eq!(created["record"]["prefix"], "admin_sandbox");
    assert_eq!(created["record"]["environment"], "test");
    let id = created["record"]["id"].as_str().unwrap().to_owned();
    let shown = f
        .send(
            &Method::GET,
            &format!("/keys/{id}"),
            Some(&f.reader.key),
            None,
        )
        .await
        .json();
    assert_eq!(shown["environment"], "test");

    let answer = create(json!({"name": "billing"})).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    assert_eq!(
        answer.json()["record"]["environment"],
        "live",
        "the default"
    );
    let listed = f
        .send(&Method::GET, "/keys?limit=1000", Some(&f.reader.key), None)
        .await
        .json();
    assert!(
        listed["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["environment"] == "live" || k["id"] == id.as_str()),
        "{listed}"
    );

    let before = f.records().await;
    let answer = create(json!({"name": "x", "environment": "staging"})).await;
    let problem = assert_problem(&answer, StatusCode::BAD_REQUEST, "unknown environment");
    assert_eq!(problem["field"], "environment", "{problem}");
    assert_eq!(f.records().await, before, "nothing created");
}

/// Without named environments (the fixture's keyring), views say `null`.
#[tokio::test]
async fn without_environments_views_show_null() {
    let f = fixture().await;
    let shown = f
        .send(
            &Method::GET,
            &format!("/keys/{}", f.target),
            Some(&f.reader.key),
            None,
        )
        .await
        .json();
    assert!(shown.as_object().unwrap().contains_key("environment"));
    assert_eq!(shown["environment"], Value::Null);
}

/// Issue 18: `canary: true` mints a canary, which the views mark; it may not carry the admin
/// scopes; and the admin API itself answers it as it answers an unknown key.
#[tokio::test]
async fn a_canary_is_created_shown_and_refused_like_an_unknown_key() {
    let f = fixture().await;
    let created = f
        .send(
            &Method::POST,
            "/keys",
            Some(&f.writer.key),
            Some(&json!({"name": "decoy", "scopes": ["invoices:read"], "canary": true})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let created = created.json();
    assert_eq!(created["record"]["canary"], true);
    let id = created["record"]["id"].as_str().unwrap().to_owned();
    let shown = f
        .send(
            &Method::GET,
            &format!("/keys/{id}"),
            Some(&f.reader.key),
            None,
        )
        .await
        .json();
    assert_eq!(shown["canary"], true);
    let plain = f
        .send(
            &Method::POST,
            "/keys",
            Some(&f.writer.key),
            Some(&json!({"name": "plain"})),
        )
        .await
        .json();
    assert_eq!(plain["record"]["canary"], false);

    let refused = f
        .send(
            &Method::POST,
            "/keys",
            Some(&f.writer.key),
            Some(&json!({"name": "x", "scopes": [keygate_admin::READ_SCOPE], "canary": true})),
        )
        .await;
    assert!(refused.status.is_client_error(), "{}", refused.status);
    assert!(refused.text.contains("canary"), "{}", refused.text);

    // A deleted key's id is unknown: the API answers the canary exactly as it answers that.
    let unknown = f
        .send(
            &Method::POST,
            "/keys",
            Some(&f.writer.key),
            Some(&json!({"name": "gone"})),
        )
        .await
        .json();
    let gone_key = unknown["key"].as_str().unwrap().to_owned();
    let gone_id = unknown["record"]["id"].as_str().unwrap().to_owned();
    let deleted = f
        .send(
            &Method::DELETE,
            &format!("/keys/{gone_id}"),
            Some(&f.writer.key),
            None,
        )
        .await;
    assert!(deleted.status.is_success(), "{}", deleted.text);
    let as_unknown = f.send(&Method::GET, "/keys", Some(&gone_key), None).await;
    let as_canary = f
        .send(
            &Method::GET,
            "/keys",
            Some(created["key"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(as_unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        (
            as_canary.status,
            &as_canary.content_type,
            &as_canary.cache_control,
            &as_canary.text
        ),
        (
            as_unknown.status,
            &as_unknown.content_type,
            &as_unknown.cache_control,
            &as_unknown.text
        )
    );
}

fn rule_of(answer: &common::Answer, what: &str) -> String {
    let problem = assert_problem(answer, StatusCode::UNPROCESSABLE_ENTITY, what);
    assert_eq!(
        problem["type"], "urn:keygate:problem:policy_violation",
        "{what}: {problem}"
    );
    problem["rule"].as_str().unwrap_or_default().to_owned()
}

/// `GET /keys/{id}/quota`: what a key's own quota and its owner's have left, as the service's
/// meter counts them (the requests just made included), top-ups counted, with when each
/// resets; `null` for a line the key does not have.
#[tokio::test]
async fn quota_balances_show_what_requests_left() {
    let f: Fixture = fixture().await;
    let writer = Some(f.writer.key.as_str());
    let reader = Some(f.reader.key.as_str());
    f.store
        .create_owner(NewOwner::new("metered").quota("10/day".parse().unwrap()))
        .await
        .unwrap();
    let created = f
        .send(
            &Method::POST,
            "/keys",
            writer,
            Some(&json!({"name": "metered", "owner": "metered", "quota": "credits 5"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let key = created.json()["key"].as_str().unwrap().to_owned();
    let id = created.json()["record"]["id"].as_str().unwrap().to_owned();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", key.parse().unwrap());
    let uri = http::Uri::from_static("/");
    let view = keygate::HttpRequestView::new(&headers, &uri, None);
    f.verifier.verify_request(&view).await.unwrap();
    f.verifier.verify_request(&view).await.unwrap();

    let path = format!("/keys/{id}/quota");
    let shown = f.send(&Method::GET, &path, reader, None).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.text);
    let shown = shown.json();
    assert_eq!(shown["key_id"], id.as_str());
    assert_eq!(
        shown["key"],
        json!({"quota": "credits 5", "granted": 0, "remaining": 3, "resets_at": null})
    );
    assert_eq!(shown["owner"]["quota"], "10/day");
    assert_eq!(shown["owner"]["granted"], 0);
    assert_eq!(shown["owner"]["remaining"], 8);
    let resets = shown["owner"]["resets_at"].as_str().unwrap();
    assert!(resets.ends_with("T00:00:00.000Z"), "{shown}");
    let at = humantime::parse_rfc3339(shown["at"].as_str().unwrap()).unwrap();
    let until = humantime::parse_rfc3339(resets)
        .unwrap()
        .duration_since(at)
        .unwrap();
    assert!(until <= Duration::from_secs(86_400), "{shown}");

    let added = f
        .send(
            &Method::POST,
            &format!("/keys/{id}/credits"),
            writer,
            Some(&json!({"add": 4})),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.text);
    let shown = f.send(&Method::GET, &path, reader, None).await.json();
    assert_eq!(
        (&shown["key"]["granted"], &shown["key"]["remaining"]),
        (&json!(4), &json!(7))
    );

    // The fixture's target: its owner has no quota. A key without any quota: both null.
    let target = f
        .send(
            &Method::GET,
            &format!("/keys/{}/quota", f.target),
            reader,
            None,
        )
        .await
        .json();
    assert_eq!(target["key"]["remaining"], 500);
    assert_eq!(target["owner"], Value::Null);
    let plain = f
        .send(
            &Method::GET,
            &format!("/keys/{}/quota", f.outsider.id),
            reader,
            None,
        )
        .await
        .json();
    assert_eq!(
        (&plain["key"], &plain["owner"]),
        (&Value::Null, &Value::Null)
    );
}

/// An owner's shared balance through the API: `GET /owners/{id}/quota` shows what its keys'
/// requests left, `POST /owners/{id}/credits` adds to it (`quota_granted` in the owner's view)
/// and its keys spend the credits at once; an owner whose quota is not credits is a 409 with
/// nothing changed, and an owner without a quota reads as `null`.
#[tokio::test]
async fn owner_balances_and_top_ups() {
    let f: Fixture = fixture().await;
    let writer = Some(f.writer.key.as_str());
    let reader = Some(f.reader.key.as_str());
    let owner = f
        .send(
            &Method::POST,
            "/owners",
            writer,
            Some(&json!({"id": "prepaid-co", "quota": "credits 2"})),
        )
        .await;
    assert_eq!(owner.status, StatusCode::CREATED, "{}", owner.text);
    assert_eq!(owner.json()["quota_granted"], 0);
    let created = f
        .send(
            &Method::POST,
            "/keys",
            writer,
            Some(&json!({"name": "shared", "owner": "prepaid-co"})),
        )
        .await;
    let key = created.json()["key"].as_str().unwrap().to_owned();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", key.parse().unwrap());
    let uri = http::Uri::from_static("/");
    let view = keygate::HttpRequestView::new(&headers, &uri, None);
    for _ in 0..2 {
        f.verifier.verify_request(&view).await.unwrap();
    }
    assert!(f.verifier.verify_request(&view).await.is_err(), "spent");

    let balance = |answer: common::Answer| {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json()
    };
    let shown = balance(
        f.send(&Method::GET, "/owners/prepaid-co/quota", reader, None)
            .await,
    );
    assert_eq!(shown["owner_id"], "prepaid-co");
    assert_eq!(
        shown["quota"],
        json!({"quota": "credits 2", "granted": 0, "remaining": 0, "resets_at": null})
    );
    assert!(humantime::parse_rfc3339(shown["at"].as_str().unwrap()).is_ok());

    let added = f
        .send(
            &Method::POST,
            "/owners/prepaid-co/credits",
            writer,
            Some(&json!({"add": 3})),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.text);
    assert_eq!(added.json()["quota_granted"], 3);
    assert_eq!(added.json()["quota"], "credits 2");
    let shown = balance(
        f.send(&Method::GET, "/owners/prepaid-co/quota", reader, None)
            .await,
    );
    assert_eq!(
        (&shown["quota"]["granted"], &shown["quota"]["remaining"]),
        (&json!(3), &json!(3))
    );
    // The key's own read-out shows the same owner line; its requests spend it at once.
    f.verifier.verify_request(&view).await.unwrap();
    let id = created.json()["record"]["id"].as_str().unwrap().to_owned();
    let key_view = balance(
        f.send(&Method::GET, &format!("/keys/{id}/quota"), reader, None)
            .await,
    );
    assert_eq!(key_view["owner"]["remaining"], 2, "{key_view}");
    assert_eq!(key_view["owner"]["granted"], 3, "{key_view}");

    // No quota: a 409 naming the reason, nothing changed; the read-out is null.
    let refused = f
        .send(
            &Method::POST,
            &format!("/owners/{OWNER}/credits"),
            writer,
            Some(&json!({"add": 3})),
        )
        .await;
    let problem = assert_problem(&refused, StatusCode::CONFLICT, "credits without a quota");
    assert!(
        problem["detail"].as_str().unwrap().contains("not credits"),
        "{problem}"
    );
    let unchanged = balance(
        f.send(&Method::GET, &format!("/owners/{OWNER}"), reader, None)
            .await,
    );
    assert_eq!(unchanged["quota_granted"], 0);
    let none = balance(
        f.send(
            &Method::GET,
            &format!("/owners/{OWNER}/quota"),
            reader,
            None,
        )
        .await,
    );
    assert_eq!(none["quota"], Value::Null);
}

/// Top-ups through the API: `POST /keys/{id}/credits` adds to a credits key's running total
/// (`quota_granted`, also on its successor after a rotation); a key without a credits quota is a
/// 409, a bad count a 400 naming `add`, and neither changes anything.
#[tokio::test]
async fn credits_are_added_to_credits_keys_only() {
    let f: Fixture = fixture().await;
    let writer = Some(f.writer.key.as_str());
    let path = format!("/keys/{}/credits", f.target);
    let added = f
        .send(&Method::POST, &path, writer, Some(&json!({"add": 250})))
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.text);
    assert_eq!(added.json()["quota_granted"], 250);
    assert_eq!(added.json()["quota"], "credits 500");
    let rotated = f
        .send(
            &Method::POST,
            &format!("/keys/{}/rotate", f.target),
            writer,
            Some(&json!({"grace_seconds": 60})),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{}", rotated.text);
    let successor = rotated.json()["record"]["id"].as_str().unwrap().to_owned();
    let again = f
        .send(&Method::POST, &path, writer, Some(&json!({"add": 5})))
        .await;
    assert_eq!(again.json()["quota_granted"], 255);
    let shown = f
        .send(&Method::GET, &format!("/keys/{successor}"), writer, None)
        .await;
    assert_eq!(shown.json()["quota_granted"], 255, "one total per lineage");

    let daily = f
        .send(
            &Method::POST,
            "/keys",
            writer,
            Some(&json!({"name": "daily", "quota": "5/day"})),
        )
        .await;
    let daily = daily.json()["record"]["id"].as_str().unwrap().to_owned();
    let refused = f
        .send(
            &Method::POST,
            &format!("/keys/{daily}/credits"),
            writer,
            Some(&json!({"add": 5})),
        )
        .await;
    let problem = assert_problem(&refused, StatusCode::CONFLICT, "credits on 5/day");
    assert!(
        problem["detail"].as_str().unwrap().contains("not credits"),
        "{problem}"
    );
    for bad in [
        json!({"add": 0}),
        json!({"add": 1_000_000_000_001_u64}),
        json!({"add": -5}),
        json!({"add": "5"}),
        json!({"add": 5, "more": 1}),
        json!({}),
    ] {
        let answer = f.send(&Method::POST, &path, writer, Some(&bad)).await;
        let problem = assert_problem(&answer, StatusCode::BAD_REQUEST, &bad.to_string());
        assert!(
            problem["field"] == "add" || problem["field"] == "more",
            "{bad}: {problem}"
        );
    }
    let shown = f
        .send(&Method::GET, &format!("/keys/{}", f.target), writer, None)
        .await;
    assert_eq!(shown.json()["quota_granted"], 255, "nothing changed");
}

/// Quotas through the API: on create and with `PUT /keys/{id}/quota` (null clears), on owners
/// (PATCH with `"quota": null` removes it, no `quota` keeps it), shown in the views; a bad
/// quota is a 400 naming the field, with nothing changed.
#[tokio::test]
async fn quotas_are_written_and_read_on_keys_and_owners() {
    let f: Fixture = fixture().await;
    let writer = Some(f.writer.key.as_str());
    let created = f
        .send(
            &Method::POST,
            "/keys",
            writer,
            Some(&json!({"name": "metered", "quota": "10000/day"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let record = &created.json()["record"];
    assert_eq!(record["quota"], "10000/day");
    assert_eq!(record["quota_lineage"], record["id"]);
    let path = format!("/keys/{}/quota", record["id"].as_str().unwrap());
    for (bad, detail) in [
        (json!({"quota": "10000/week"}), "period"),
        (json!({"quota": "0/day"}), "counts"),
        (json!({"quota": "often"}), "invalid quota"),
    ] {
        let answer = f.send(&Method::PUT, &path, writer, Some(&bad)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        let problem = answer.json();
        assert_eq!(problem["field"], "quota", "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(detail),
            "{problem}"
        );
    }
    let missing = f.send(&Method::PUT, &path, writer, Some(&json!({}))).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    let set = f
        .send(
            &Method::PUT,
            &path,
            writer,
            Some(&json!({"quota": "credits 5 refill 5 every 1h"})),
        )
        .await;
    assert_eq!(set.json()["quota"], "credits 5 refill 5 every 1h");
    let cleared = f
        .send(&Method::PUT, &path, writer, Some(&json!({"quota": null})))
        .await;
    assert_eq!(cleared.json()["quota"], Value::Null);

    let owner = f
        .send(
            &Method::POST,
            "/owners",
            writer,
            Some(&json!({"id": "metered-co", "quota": "100000/month"})),
        )
        .await;
    assert_eq!(owner.status, StatusCode::CREATED, "{}", owner.text);
    assert_eq!(owner.json()["quota"], "100000/month");
    let kept = f
        .send(
            &Method::PATCH,
            "/owners/metered-co",
            writer,
            Some(&json!({"name": "Metered"})),
        )
        .await;
    assert_eq!(kept.json()["quota"], "100000/month", "no `quota`: kept");
    let bad = f
        .send(
            &Method::PATCH,
            "/owners/metered-co",
            writer,
            Some(&json!({"quota": "lots"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let removed = f
        .send(
            &Method::PATCH,
            "/owners/metered-co",
            writer,
            Some(&json!({"quota": null})),
        )
        .await;
    assert_eq!(removed.json()["quota"], Value::Null);
    let shown = f
        .send(&Method::GET, "/owners/metered-co", writer, None)
        .await;
    assert_eq!(shown.json()["quota"], Value::Null);
    assert_eq!(shown.json()["name"], "Metered");
}

/// Named limits through the API: on create and with `PUT /keys/{id}/limits` (the whole set;
/// `{}` clears), on owners (PATCH with `limits` replaces the set, `null` or `{}` removes it, no
/// `limits` keeps it), shown in the views as an object; a bad name is a 400 naming `limits`, a
/// bad policy one naming `limits.NAME`, with nothing changed.
#[tokio::test]
async fn named_limits_are_written_and_read_on_keys_and_owners() {
    let f: Fixture = fixture().await;
    let writer = Some(f.writer.key.as_str());
    let created = f
        .send(
            &Method::POST,
            "/keys",
            writer,
            Some(&json!({"name": "limited", "limits": {"writes": "10/1s", "reads": "100/1s burst 200"}})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let record = &created.json()["record"];
    assert_eq!(
        record["limits"],
        json!({"reads": "100/1s burst 200", "writes": "10/1s"})
    );
    let id = record["id"].as_str().unwrap().to_owned();
    let path = format!("/keys/{id}/limits");
    let plain = f
        .send(
            &Method::POST,
            "/keys",
            writer,
            Some(&json!({"name": "plain"})),
        )
        .await;
    assert_eq!(
        plain.json()["record"]["limits"],
        json!({}),
        "none: an empty object"
    );

    let before = f.records().await;
    let many: serde_json::Map<String, Value> =
        (0..=16).map(|i| (format!("l{i}"), json!("1/1s"))).collect();
    for (bad, field, detail) in [
        (
            json!({"limits": {"Writes": "10/1s"}}),
            "limits",
            "invalid limit name",
        ),
        (
            json!({"limits": {"quota": "10/1s"}}),
            "limits",
            "invalid limit name",
        ),
        (
            json!({"limits": {"writes": "0/1s"}}),
            "limits.writes",
            "request count",
        ),
        (
            json!({"limits": {"writes": "often"}}),
            "limits.writes",
            "invalid rate policy",
        ),
        (json!({"limits": many}), "limits", "at most 16"),
        (json!({"limits": "writes: 10/1s"}), "limits", "wrong type"),
        (json!({"limits": null}), "limits", "wrong type"),
        (json!({}), "limits", "required"),
    ] {
        for (method, route) in [(Method::PUT, path.as_str()), (Method::POST, "/keys")] {
            let mut body = bad.clone();
            if method == Method::POST {
                if body.get("limits").is_none_or(Value::is_null) {
                    // Optional on create.
                    continue;
                }
                body["name"] = json!("refused");
            }
            let answer = f.send(&method, route, writer, Some(&body)).await;
            let problem = assert_problem(&answer, StatusCode::BAD_REQUEST, &bad.to_string());
            assert_eq!(problem["field"], field, "{method} {bad}: {problem}");
            assert!(
                problem["detail"].as_str().unwrap().contains(detail),
                "{method} {bad}: {problem}"
            );
        }
    }
    assert_eq!(f.records().await, before, "nothing changed");

    let set = f
        .send(
            &Method::PUT,
            &path,
            writer,
            Some(&json!({"limits": {"bulk": "unlimited", "writes": "20/1s"}})),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    assert_eq!(
        set.json()["limits"],
        json!({"bulk": "unlimited", "writes": "20/1s"}),
        "the whole set is replaced"
    );
    let shown = f
        .send(&Method::GET, &format!("/keys/{id}"), writer, None)
        .await;
    assert_eq!(shown.json()["limits"], set.json()["limits"]);
    let cleared = f
        .send(&Method::PUT, &path, writer, Some(&json!({"limits": {}})))
        .await;
    assert_eq!(cleared.json()["limits"], json!({}));
    let changes: Vec<_> = f
        .changes()
        .await
        .into_iter()
        .filter(|e| e.event.action == Action::LimitsChanged)
        .collect();
    assert_eq!(changes.len(), 2, "one event per change");

    let owner = f
        .send(
            &Method::POST,
            "/owners",
            writer,
            Some(&json!({"id": "limited-co", "limits": {"writes": "100/1s"}})),
        )
        .await;
    assert_eq!(owner.status, StatusCode::CREATED, "{}", owner.text);
    assert_eq!(owner.json()["limits"], json!({"writes": "100/1s"}));
    let patch = |body: Value| {
        let f = &f;
        async move {
            f.send(&Method::PATCH, "/owners/limited-co", writer, Some(&body))
                .await
        }
    };
    let kept = patch(json!({"name": "Limited"})).await;
    assert_eq!(
        kept.json()["limits"],
        json!({"writes": "100/1s"}),
        "no `limits`: kept"
    );
    let replaced = patch(json!({"limits": {"reads": "1000/1s"}})).await;
    assert_eq!(replaced.json()["limits"], json!({"reads": "1000/1s"}));
    for (bad, field) in [
        (json!({"limits": {"reads": "lots"}}), "limits.reads"),
        (json!({"limits": {"a b": "1/1s"}}), "limits"),
    ] {
        let answer = patch(bad.clone()).await;
        let problem = assert_problem(&answer, StatusCode::BAD_REQUEST, &bad.to_string());
        assert_eq!(problem["field"], field, "{problem}");
    }
    let refused = f
        .send(
            &Method::POST,
            "/owners",
            writer,
            Some(&json!({"id": "refused-co", "limits": {"writes": "0/1s"}})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let shown = f
        .send(&Method::GET, "/owners/limited-co", writer, None)
        .await;
    assert_eq!(
        shown.json()["limits"],
        json!({"reads": "1000/1s"}),
        "bad: nothing changed"
    );
    let removed = patch(json!({"limits": null})).await;
    assert_eq!(removed.json()["limits"], json!({}));
    let listed = f.send(&Method::GET, "/owners", writer, None).await;
    let row = listed.json()["owners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == "limited-co")
        .cloned()
        .unwrap();
    assert_eq!(row["limits"], json!({}));
    assert_eq!(
        f.send(&Method::GET, "/owners/refused-co", writer, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_lifetime_policy_is_set_read_and_enforced_with_422_naming_the_rule() {
    const DAY: u64 = 86_400;
    let f = fixture().await;
    let send = |method: Method, path: String, body: Option<Value>| {
        let f = &f;
        async move {
            f.send(&method, &path, Some(&f.writer.key), body.as_ref())
                .await
        }
    };
    let set = send(
        Method::PUT,
        "/policy".into(),
        Some(json!({"require_expiry": true, "max_lifetime_seconds": 30 * DAY})),
    )
    .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    let shown = f
        .send(&Method::GET, "/policy", Some(&f.reader.key), None)
        .await;
    assert_eq!(
        shown.json(),
        json!({
            "require_expiry": true,
            "default_lifetime_seconds": null,
            "max_lifetime_seconds": 30 * DAY,
            "max_idle_seconds": null,
        })
    );
    let before = f.records().await;

    // No expiry, no default: expiry_required. Beyond the maximum: max_lifetime.
    let refused = send(Method::POST, "/keys".into(), Some(json!({"name": "x"}))).await;
    assert_eq!(
        rule_of(&refused, "create without expiry"),
        "expiry_required"
    );
    let far = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(60 * DAY))
        .to_string();
    let refused = send(
        Method::POST,
        "/keys".into(),
        Some(json!({"name": "x", "expires_at": far})),
    )
    .await;
    assert_eq!(rule_of(&refused, "create too long"), "max_lifetime");
    assert!(refused.text.contains("30 days"), "{}", refused.text);
    let target = f.target.to_string();
    let refused = send(
        Method::PUT,
        format!("/keys/{target}/expiry"),
        Some(json!({"expires_at": null})),
    )
    .await;
    assert_eq!(rule_of(&refused, "clear expiry"), "expiry_required");
    let refused = send(
        Method::PUT,
        format!("/keys/{target}/expiry"),
        Some(json!({"expires_at": far})),
    )
    .await;
    assert_eq!(rule_of(&refused, "expiry too far"), "max_lifetime");
    assert_eq!(f.records().await, before, "refusals change nothing");

    // Within the policy: accepted. A rotation's new key gets the maximum lifetime (no default).
    let created = send(
        Method::POST,
        "/keys".into(),
        Some(json!({"name": "ok", "expires_at": future()})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let rotated = send(
        Method::POST,
        format!("/keys/{target}/rotate"),
        Some(json!({"grace_seconds": 60})),
    )
    .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{}", rotated.text);
    assert!(
        rotated.json()["record"]["expires_at"].is_string(),
        "{}",
        rotated.text
    );

    // An invalid policy: 400 naming the field; the policy stands.
    let bad = send(
        Method::PUT,
        "/policy".into(),
        Some(json!({"default_lifetime_seconds": 10 * DAY, "max_lifetime_seconds": DAY})),
    )
    .await;
    let problem = assert_problem(&bad, StatusCode::BAD_REQUEST, "default over max");
    assert_eq!(problem["field"], "default_lifetime_seconds");
    let shown = send(Method::GET, "/policy".into(), None).await.json();
    assert_eq!(shown["max_lifetime_seconds"], 30 * DAY);

    // A default: keys without expiry get it. Cleared: none.
    let set = send(
        Method::PUT,
        "/policy".into(),
        Some(json!({"default_lifetime_seconds": 7 * DAY})),
    )
    .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    let created = send(Method::POST, "/keys".into(), Some(json!({"name": "d"}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert!(created.json()["record"]["expires_at"].is_string());
    let cleared = send(Method::PUT, "/policy".into(), Some(json!({}))).await;
    assert_eq!(cleared.status, StatusCode::OK, "{}", cleared.text);
    let created = send(Method::POST, "/keys".into(), Some(json!({"name": "e"}))).await;
    assert!(
        created.json()["record"]["expires_at"].is_null(),
        "{}",
        created.text
    );

    // Each change is one `policy_changed` event naming the admin key that made it and the
    // new policy; the refused one is none.
    let policies: Vec<(Option<KeyId>, Option<String>, Option<String>)> = f
        .changes()
        .await
        .into_iter()
        .filter(|e| e.event.action == Action::PolicyChanged)
        .map(|e| {
            (
                e.event.key_id,
                e.event.actor.as_deref().map(str::to_owned),
                e.event.detail,
            )
        })
        .collect();
    let writer = Some(f.writer.id.as_str().to_owned());
    assert_eq!(
        policies,
        [
            (
                None,
                writer.clone(),
                Some("require_expiry=true max_lifetime=30 days".to_owned())
            ),
            (
                None,
                writer.clone(),
                Some("default_lifetime=7 days".to_owned())
            ),
            (None, writer, Some("none".to_owned())),
        ]
    );
    let listed = send(Method::GET, "/audit?action=policy_changed".into(), None).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert_eq!(
        listed.json()["events"].as_array().map(Vec::len),
        Some(3),
        "{}",
        listed.text
    );
}

/// The keyring of two environments, `live` (the fixture's own prefix: its admin keys are
/// live keys) and `test`, as an admin handle over `store`.
fn two_environments(store: &keygate::MemoryStore) -> Admin {
    let keyring = keygate::Keyring::builder()
        .environment("live", keygate::KeyFormat::new("admin_test").unwrap())
        .environment("test", keygate::KeyFormat::new("admin_sandbox").unwrap())
        .build(keygate::Peppers::development())
        .unwrap();
    Admin::builder(store.clone()).keyring(keyring).build()
}

/// The ids of a `GET /keys` answer.
fn listed_ids(answer: &common::Answer) -> Vec<String> {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect()
}

/// `environment=` on the key list: only that environment's keys (filtered by the store, so
/// pages are full), with the other filters; an environment the keyring lacks is a 400 naming
/// the field; `GET /environments` lists the keyring's, the default first.
#[tokio::test]
async fn keys_are_listed_by_environment() {
    let f = fixture_with(|store| Some(two_environments(store))).await;
    let (mut sandbox, mut ci_2) = (Vec::new(), String::new());
    for (name, environment) in [
        ("ci-1", "test"),
        ("web", "live"),
        ("ci-2", "test"),
        ("ci-3", "test"),
    ] {
        let body = json!({"name": name, "environment": environment, "owner": "acme"});
        let answer = f
            .send(&Method::POST, "/keys", Some(&f.writer.key), Some(&body))
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        let id = answer.json()["record"]["id"].as_str().unwrap().to_owned();
        if name == "ci-2" {
            ci_2.clone_from(&id);
        }
        if environment == "test" {
            sandbox.push(id);
        }
    }
    sandbox.sort();
    let list = |query: &str| {
        let f = &f;
        let path = format!("/keys?{query}");
        async move { f.send(&Method::GET, &path, Some(&f.reader.key), None).await }
    };
    assert_eq!(listed_ids(&list("environment=test").await), sandbox);
    let answer = list("environment=test").await;
    assert!(
        answer.json()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["environment"] == "test" && k["prefix"] == "admin_sandbox"),
        "{}",
        answer.text
    );
    // Pages of the filtered list: full pages, then the rest.
    let first = list("environment=test&limit=2").await.json();
    assert_eq!(first["keys"].as_array().unwrap().len(), 2);
    let next = first["next"].as_str().unwrap();
    let rest = listed_ids(&list(&format!("environment=test&limit=2&after={next}")).await);
    assert_eq!(rest, sandbox[2..]);
    // With the other filters.
    assert_eq!(
        listed_ids(&list("environment=test&search=CI-2").await),
        [ci_2]
    );
    assert!(listed_ids(&list("environment=test&owner=nobody").await).is_empty());
    // The live keys: the fixture's four and "web".
    let live = listed_ids(&list("environment=live").await);
    assert_eq!(live.len(), 5);
    assert!(live.iter().all(|id| !sandbox.contains(id)));
    // Empty is no filter.
    assert_eq!(listed_ids(&list("environment=").await).len(), 8);

    // Unknown: 400 naming the field and the environments there are, not the value given.
    let answer = list("environment=%3Cstaging%3E").await;
    let problem = assert_problem(&answer, StatusCode::BAD_REQUEST, "unknown environment");
    assert_eq!(problem["field"], "environment");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("live, test"), "{detail}");
    assert!(!detail.contains("staging"), "{detail}");

    let environments = f
        .send(&Method::GET, "/environments", Some(&f.reader.key), None)
        .await;
    assert_eq!(environments.status, StatusCode::OK, "{}", environments.text);
    assert_eq!(
        environments.json(),
        json!({"environments": [
            {"name": "live", "prefix": "admin_test", "default": true},
            {"name": "test", "prefix": "admin_sandbox", "default": false},
        ]})
    );
}

/// Without named environments, `GET /environments` is empty and any `environment=` is a 400.
#[tokio::test]
async fn without_environments_the_environment_filter_is_refused() {
    let f = fixture().await;
    let answer = f
        .send(&Method::GET, "/environments", Some(&f.reader.key), None)
        .await;
    assert_eq!(answer.json(), json!({"environments": []}));
    let answer = f
        .send(
            &Method::GET,
            "/keys?environment=live",
            Some(&f.reader.key),
            None,
        )
        .await;
    let problem = assert_problem(&answer, StatusCode::BAD_REQUEST, "no environments");
    assert_eq!(problem["field"], "environment");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("names no environments")
    );
}

/// `owner=` on `/audit` and `/usage`: the events and usage of the keys the owner has now (as
/// `keygate audit --owner` and `keygate usage --owner`), an unknown owner 404, an owner with
/// no keys an empty answer, and a deleted one its own events.
#[tokio::test]
async fn audit_and_usage_roll_up_by_owner() {
    use axum::routing::get;
    let f = fixture().await;
    let service: axum::Router = axum::Router::new()
        .route("/orders", get(|| async { "orders" }))
        .layer(keygate_axum::layer(f.verifier.clone()));
    // Two more keys of the managed key's owner, one of another owner.
    let mut keys = Vec::new();
    for (name, owner) in [
        ("billing-2", OWNER),
        ("billing-3", OWNER),
        ("other", "team-other"),
    ] {
        let body = json!({"name": name, "owner": owner});
        let created = f
            .send(&Method::POST, "/keys", Some(&f.writer.key), Some(&body))
            .await
            .json();
        keys.push((
            created["key"].as_str().unwrap().to_owned(),
            created["record"]["id"].as_str().unwrap().to_owned(),
        ));
    }
    // Requests: 2 and 1 by the owner's keys, 3 by the other owner's.
    for (i, times) in [(0, 2), (1, 1), (2, 3)] {
        for _ in 0..times {
            let answer =
                common::send_to(&service, &Method::GET, "/orders", Some(&keys[i].0), None).await;
            assert_eq!(answer.status, StatusCode::OK);
        }
    }
    let revoke = format!("/keys/{}/revoke", keys[1].1);
    f.send(&Method::POST, &revoke, Some(&f.writer.key), None)
        .await;
    let answer = common::send_to(&service, &Method::GET, "/orders", Some(&keys[1].0), None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    f.verifier.flush_audit().await;

    let get = |path: String| {
        let f = &f;
        async move { f.send(&Method::GET, &path, Some(&f.reader.key), None).await }
    };
    let owner_keys = [f.target.to_string(), keys[0].1.clone(), keys[1].1.clone()];
    let answer = get(format!("/audit?owner={OWNER}&limit=100")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let events = answer.json()["events"].as_array().unwrap().clone();
    let of = |action: &str, key: &str| {
        events
            .iter()
            .filter(|e| e["action"] == action && e["key_id"] == key)
            .count()
    };
    // Every event is of the owner's keys: their creations, requests, the revocation.
    assert!(
        events
            .iter()
            .all(|e| owner_keys.iter().any(|k| e["key_id"] == k.as_str())),
        "{events:?}"
    );
    assert_eq!(of("created", &keys[0].1), 1);
    assert_eq!(of("created", f.target.as_str()), 1);
    assert_eq!(of("request", &keys[0].1), 2);
    assert_eq!(of("request", &keys[1].1), 2, "one allowed, one refused");
    assert_eq!(of("revoked", &keys[1].1), 1);
    assert!(!events.iter().any(|e| e["key_id"] == keys[2].1.as_str()));
    // With the other filters: only the refused request.
    let denied = get(format!("/audit?owner={OWNER}&outcome=denied"))
        .await
        .json();
    let denied = denied["events"].as_array().unwrap();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["key_id"], keys[1].1.as_str());
    assert_eq!(denied[0]["reason"], "revoked");

    let answer = get(format!("/usage?owner={OWNER}&days=1")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let mut rows: Vec<(String, u64, u64)> = answer.json()["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["key_id"].as_str().unwrap().to_owned(),
                d["allowed"].as_u64().unwrap(),
                d["denied"].as_u64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    let mut expected = vec![(keys[0].1.clone(), 2, 0), (keys[1].1.clone(), 1, 1)];
    expected.sort();
    assert_eq!(rows, expected);
    let other = get("/usage?owner=team-other".to_owned()).await.json();
    assert_eq!(other["days"][0]["allowed"], 3, "{other}");
    // team-other was made by its first key (POST /keys): its creation is an event of its own,
    // just before the key's.
    let made = get("/audit?owner=team-other&action=owner_created".to_owned())
        .await
        .json();
    let made = made["events"].as_array().unwrap();
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0]["owner"], "team-other");
    assert_eq!(made[0]["key_id"], Value::Null);
    assert_eq!(made[0]["actor"], f.writer.id.as_str());
    assert_eq!(made[0]["detail"], r#"name "team-other""#);

    // An owner without keys: nothing. No such owner: 404, as the CLI refuses it.
    let empty = get(format!("/audit?owner={EMPTY_OWNER}")).await.json();
    assert_eq!(empty["events"], json!([]));
    let empty = get(format!("/usage?owner={EMPTY_OWNER}")).await.json();
    assert_eq!(empty["days"], json!([]));
    for path in ["/audit?owner=nobody", "/usage?owner=nobody"] {
        let problem = assert_problem(&get(path.to_owned()).await, StatusCode::NOT_FOUND, path);
        assert_eq!(problem["title"], "No such owner", "{path}");
    }
    // Deleted, an owner is still read from the trail: its own events, its deletion last.
    let delete = format!("/owners/{EMPTY_OWNER}");
    let answer = f
        .send(&Method::DELETE, &delete, Some(&f.writer.key), None)
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text);
    f.verifier.flush_audit().await;
    let gone = get(format!("/audit?owner={EMPTY_OWNER}")).await;
    assert_eq!(gone.status, StatusCode::OK, "{}", gone.text);
    let gone = gone.json();
    assert_eq!(gone["events"][0]["action"], "owner_deleted", "{gone}");
    assert_eq!(gone["events"][0]["owner"], EMPTY_OWNER, "{gone}");
    let empty = get(format!("/usage?owner={EMPTY_OWNER}")).await.json();
    assert_eq!(empty["days"], json!([]));
    // key_id and owner together: 400 naming owner.
    let both = format!("/usage?owner={OWNER}&key_id={}", f.target);
    let problem = assert_problem(&get(both).await, StatusCode::BAD_REQUEST, "both");
    assert_eq!(problem["field"], "owner");
}

/// A trail that cannot read by owner (the default of `AuditTrail`): 501, not 503.
#[tokio::test]
async fn a_trail_without_owner_reads_answers_501() {
    let f = fixture().await;
    let app: axum::Router = keygate_admin::AdminApi::new(f.verifier.admin(), f.verifier.clone())
        .audit_trail(keygate::audit::MemoryAuditTrail::new())
        .router();
    let f = Fixture { app, ..f };
    for path in ["/audit?owner=team-billing", "/usage?owner=team-billing"] {
        let answer = f.send(&Method::GET, path, Some(&f.reader.key), None).await;
        let problem = assert_problem(&answer, StatusCode::NOT_IMPLEMENTED, path);
        assert_eq!(problem["type"], "urn:keygate:problem:not_configured");
    }
    // An owner the store does not know is still a 404: such a trail cannot vouch for a
    // deleted one.
    for path in ["/audit?owner=nobody", "/usage?owner=nobody"] {
        let answer = f.send(&Method::GET, path, Some(&f.reader.key), None).await;
        assert_problem(&answer, StatusCode::NOT_FOUND, path);
    }
}
