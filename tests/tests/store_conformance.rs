//! Store conformance: one set of cases, run against MemoryStore, SQLite (a temp file) and
//! PostgreSQL (a schema of its own, when `KEYGATE_TEST_POSTGRES_URL` is set). Every store must
//! behave exactly like the others: same records, same filters and pages, same typed errors.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Uri};
use keygate::clock::Clock;
use keygate::owner::OwnerTag;
use keygate::owner::{NewOwner, OwnerUpdate};
use keygate::policy::{LifetimePolicy, PolicyViolation, read_policy, write_policy};
use keygate::quota::{
    CounterKind, CounterState, MAX_BALANCE, MAX_GRANTED, MAX_QUOTA, QuotaPeriod, QuotaSubject,
};
use keygate::rate::{LimitName, NamedLimits};
use keygate::rate::{RateLimit, RatePolicy};
use keygate::record::{InvalidInput, MAX_NAME_LEN};
use keygate::store::{KeyFilter, PageRequest, StoreSettings};
use keygate::{
    HttpRequestView, Identity, KeyAdmin, KeyId, KeyState, NewKey, Reason, Rejection, Scope,
    StoreError,
};
use keygate_tests::stores::{self, Fixture, TestStore};

fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    // The error's Display, which is what a store error says to an operator.
    result.unwrap_or_else(|e| panic!("{e}"))
}

async fn verify<S: TestStore>(
    f: &Fixture<S>,
    key: &str,
    ip: Option<IpAddr>,
) -> Result<Arc<Identity>, Rejection> {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        ok(HeaderValue::from_str(&format!("Bearer {key}"))),
    );
    let uri = Uri::from_static("/");
    f.verifier
        .verify_request(&HttpRequestView::new(&headers, &uri, ip))
        .await
}

async fn refused<S: TestStore>(f: &Fixture<S>, key: &str) -> Reason {
    match verify(f, key, None).await {
        Ok(_) => panic!("{}: key accepted, expected a refusal", f.name),
        Err(rejection) => rejection.reason(),
    }
}

async fn create<S: TestStore>(f: &Fixture<S>, spec: NewKey) -> (String, keygate::KeyRecord) {
    let created = ok(f.verifier.admin().create_key(spec).await);
    (created.key.expose_secret().to_owned(), created.record)
}

fn scope(s: &str) -> Scope {
    ok(Scope::new(s))
}

fn metadata(json: serde_json::Value) -> keygate::Metadata {
    match json {
        serde_json::Value::Object(map) => map,
        _ => panic!("not an object"),
    }
}

// ---- cases --------------------------------------------------------------------------------

async fn create_get_find<S: TestStore>(f: Fixture<S>) {
    let spec = NewKey::new("Billing Service")
        .owner("team-billing")
        .scopes([scope("invoices:read"), scope("orders:*")])
        .metadata(metadata(
            serde_json::json!({"env": "prod", "n": 3, "nested": {"a": [1, 2]}}),
        ))
        .allowed_ips([ok("10.0.0.0/8".parse()), ok("2001:db8::/32".parse())])
        .rate_limit(ok("100/1s burst 200".parse::<RatePolicy>()))
        .expires_at(f.clock.now() + Duration::from_secs(86_400));
    let (key, record) = create(&f, spec).await;
    assert_eq!(
        record.rate_limit,
        Some(RateLimit::Limited(ok("100/1s burst 200".parse())))
    );
    assert_eq!(record.name, "Billing Service");
    assert_eq!(record.owner.as_deref(), Some("team-billing"));
    assert_eq!(record.rotated_from, None);
    assert_eq!(record.last_used_at, None);
    assert_eq!(ok(f.store.get(&record.id).await), record, "{}: get", f.name);
    assert_eq!(ok(f.store.find(&record.id).await), Some(record.clone()));
    let identity = ok(verify(&f, &key, Some(ok("10.1.2.3".parse()))).await);
    assert_eq!(identity.name(), "Billing Service");
    assert!(identity.has_scope("orders:write"));
    assert_eq!(
        identity.metadata().get("env"),
        Some(&serde_json::json!("prod"))
    );
    assert_eq!(
        refused(&f, &key).await,
        Reason::ForbiddenClientIp,
        "no client address never satisfies an IP restriction"
    );

    let unknown = KeyId::random();
    assert_eq!(ok(f.store.find(&unknown).await), None);
    assert!(matches!(f.store.get(&unknown).await, Err(StoreError::NotFound(id)) if id == unknown));
}

/// Every key `filter` lists, in pages of two.
async fn listed<S: TestStore>(f: &Fixture<S>, filter: KeyFilter) -> Vec<keygate::KeyRecord> {
    let mut found = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let got = ok(f.store.list(&filter, page).await);
        assert!(
            got.keys.len() <= 2,
            "{}: a page of at most its limit",
            f.name
        );
        found.extend(got.keys);
        match got.next {
            Some(next) => page.after = Some(next),
            None => return found,
        }
    }
}

/// The prefix filter: only the keys of one environment, with the other filters and in pages.
async fn list_filters_by_prefix<S: TestStore>(f: Fixture<S>) {
    // Keys of two more environments, minted as a service with both would mint them.
    let keyring = ok(keygate::Keyring::builder()
        .environment("live", ok(keygate::KeyFormat::new("conf_live")))
        .environment("sandbox", ok(keygate::KeyFormat::new("conf_sandbox")))
        .build(keygate::Peppers::development()));
    let (mut live, mut sandbox) = (Vec::new(), Vec::new());
    for (name, environment) in [
        ("one", "live"),
        ("two", "sandbox"),
        ("three", "live"),
        ("four", "sandbox"),
        ("five", "live"),
    ] {
        let minted = ok(keyring.mint(NewKey::new(name).owner("p").environment(environment)));
        let id = ok(f.store.create(minted).await).record.id;
        if environment == "live" {
            live.push(id);
        } else {
            sandbox.push(id);
        }
    }
    let (_, own) = create(&f, NewKey::new("own prefix").owner("p")).await;
    // "three" disabled: the active live keys are "one" and "five".
    ok(f.verifier.admin().disable(&live[1]).await);
    let mut active_live = vec![live[0], live[2]];
    active_live.sort();
    let all = |filter: KeyFilter| listed(&f, filter);
    let ids = |found: &[keygate::KeyRecord]| found.iter().map(|r| r.id).collect::<Vec<_>>();
    live.sort();
    sandbox.sort();
    let got = all(KeyFilter::default().prefix("conf_live")).await;
    assert_eq!(ids(&got), live, "{}: the live keys, in id order", f.name);
    assert!(got.iter().all(|r| r.prefix == "conf_live"));
    let got = all(KeyFilter::default().prefix("conf_sandbox")).await;
    assert_eq!(ids(&got), sandbox, "{}: the sandbox keys", f.name);
    let got = all(KeyFilter::default().prefix(own.prefix.clone())).await;
    assert_eq!(ids(&got), [own.id], "{}: the fixture's own prefix", f.name);
    // Combined with the other filters.
    let got = all(KeyFilter::default()
        .prefix("conf_live")
        .state(KeyState::Active)
        .owner("p")
        .name_contains("E"))
    .await;
    assert_eq!(
        ids(&got),
        active_live,
        "{}: prefix, state, owner, name",
        f.name
    );
    // Exactly the prefix: not a prefix of it, not another case, nothing for an unknown one.
    for other in ["conf", "conf_liv", "CONF_LIVE", "conf_live_", "nope_live"] {
        assert!(
            all(KeyFilter::default().prefix(other)).await.is_empty(),
            "{}: prefix {other:?}",
            f.name
        );
    }
}

/// The lineage filter: a key and the keys that replaced it, not another lineage's.
async fn list_filters_by_lineage<S: TestStore>(f: Fixture<S>) {
    let admin = f.verifier.admin();
    let (_, first) = create(&f, NewKey::new("first").owner("l")).await;
    let (_, bystander) = create(&f, NewKey::new("bystander").owner("l")).await;
    let second = ok(admin.rotate(&first.id, Duration::from_secs(60)).await)
        .new
        .record;
    let third = ok(admin.rotate(&second.id, Duration::from_secs(60)).await)
        .new
        .record;
    assert_eq!((second.lineage, third.lineage), (first.id, first.id));
    let mut lineage = vec![first.id, second.id, third.id];
    lineage.sort();
    let ids = |found: Vec<keygate::KeyRecord>| found.iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(listed(&f, KeyFilter::default().lineage(first.id)).await),
        lineage,
        "{}: the whole lineage, in id order, in pages",
        f.name
    );
    assert_eq!(
        ids(listed(&f, KeyFilter::default().lineage(bystander.id)).await),
        [bystander.id],
        "{}: a key never rotated is its own lineage",
        f.name
    );
    // The lineage is named by its first key's id, not a later key's.
    assert!(
        listed(&f, KeyFilter::default().lineage(third.id))
            .await
            .is_empty()
    );
    // With the other filters.
    assert_eq!(
        ids(listed(&f, KeyFilter::default().lineage(first.id).owner("l")).await),
        lineage,
        "{}: lineage and owner",
        f.name
    );
    assert!(
        listed(&f, KeyFilter::default().lineage(first.id).owner("m"))
            .await
            .is_empty(),
        "{}: lineage and another owner",
        f.name
    );
}

async fn list_filters_and_paging<S: TestStore>(f: Fixture<S>) {
    let admin = f.verifier.admin();
    let mut ids = Vec::new();
    for (name, owner) in [
        ("alpha one", "a"),
        ("Alpha two", "a"),
        ("beta", "a"),
        ("GAMMA", "b"),
        ("Ärger ALPHA", "b"),
        ("delta", "b"),
        ("no owner alpha", ""),
    ] {
        let mut spec = NewKey::new(name);
        if !owner.is_empty() {
            spec = spec.owner(owner);
        }
        if name == "delta" {
            spec = spec.expires_at(f.clock.now() + Duration::from_secs(60));
        }
        ids.push(create(&f, spec).await.1.id);
    }
    ok(admin.revoke(&ids[1]).await);
    ok(admin.disable(&ids[3]).await);
    f.clock.advance(Duration::from_secs(120));

    let all = |filter: KeyFilter| {
        let f = &f;
        async move {
            listed(f, filter)
                .await
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    let sorted = |mut v: Vec<KeyId>| {
        v.sort();
        v
    };

    let everything = all(KeyFilter::default()).await;
    assert_eq!(
        everything,
        sorted(ids.clone()),
        "{}: pages in id order, nothing twice",
        f.name
    );
    let owned_a = all(KeyFilter::default().owner("a")).await;
    assert_eq!(owned_a, sorted(ids[0..3].to_vec()));
    let search = all(KeyFilter::default().name_contains("alpha")).await;
    assert_eq!(
        search,
        sorted(vec![ids[0], ids[1], ids[4], ids[6]]),
        "{}: case-insensitive name search",
        f.name
    );
    let umlaut = all(KeyFilter::default().name_contains("ärger")).await;
    assert_eq!(umlaut, vec![ids[4]], "{}: non-ASCII case folding", f.name);
    for (state, expected) in [
        (KeyState::Revoked, vec![ids[1]]),
        (KeyState::Disabled, vec![ids[3]]),
        (KeyState::Expired, vec![ids[5]]),
        (KeyState::Active, vec![ids[0], ids[2], ids[4], ids[6]]),
    ] {
        let got = all(KeyFilter::default().state(state)).await;
        assert_eq!(got, sorted(expected), "{}: state {state:?}", f.name);
    }
    let combined = all(KeyFilter::default()
        .owner("b")
        .state(KeyState::Active)
        .name_contains("ALPHA"))
    .await;
    assert_eq!(combined, vec![ids[4]]);

    // A page exactly as long as what is left has no `next`.
    let page = ok(f
        .store
        .list(&KeyFilter::default(), PageRequest::first(ids.len()))
        .await);
    assert_eq!((page.keys.len(), page.next), (ids.len(), None));
    // Keyset paging is stable while keys are deleted behind the cursor.
    let first = ok(f
        .store
        .list(&KeyFilter::default(), PageRequest::first(3))
        .await);
    ok(admin.delete(&first.keys[0].id).await);
    let rest = ok(f
        .store
        .list(
            &KeyFilter::default(),
            PageRequest {
                after: first.next,
                limit: 100,
            },
        )
        .await);
    assert_eq!(rest.keys.len(), ids.len() - 3);
}

async fn changes<S: TestStore>(f: Fixture<S>) {
    let admin = f.verifier.admin();
    let (key, record) = create(&f, NewKey::new("before").owner("o")).await;
    let id = record.id;
    assert!(verify(&f, &key, None).await.is_ok());

    f.clock.advance(Duration::from_secs(10));
    let renamed = ok(admin.rename(&id, "after").await);
    assert_eq!(renamed.name, "after");
    assert_eq!(renamed.updated_at, f.clock.now());
    assert_eq!(renamed.created_at, record.created_at);
    assert_eq!(ok(verify(&f, &key, None).await).name(), "after");

    let scoped = ok(admin
        .set_scopes(&id, vec![scope("a:read"), scope("b:*")])
        .await);
    assert_eq!(scoped.scopes, vec![scope("a:read"), scope("b:*")]);
    assert!(ok(verify(&f, &key, None).await).has_scope("b:write"));

    let meta = metadata(serde_json::json!({"tier": "gold", "quota": 10}));
    assert_eq!(
        ok(admin.set_metadata(&id, meta.clone()).await).metadata,
        meta
    );

    let ips = vec![ok("192.168.0.0/16".parse())];
    assert_eq!(
        ok(admin.set_allowed_ips(&id, ips.clone()).await).allowed_ips,
        ips
    );
    assert!(
        verify(&f, &key, Some(ok("192.168.1.1".parse())))
            .await
            .is_ok()
    );
    assert_eq!(refused(&f, &key).await, Reason::ForbiddenClientIp);
    ok(admin.set_allowed_ips(&id, Vec::new()).await);

    assert_eq!(record.rate_limit, None, "no policy: the default applies");
    for limit in [
        Some(RateLimit::Unlimited),
        Some(ok("10000/1d".parse())),
        Some(ok("5/1s burst 7".parse())),
        None,
    ] {
        assert_eq!(ok(admin.set_rate_limit(&id, limit).await).rate_limit, limit);
        assert_eq!(ok(f.store.get(&id).await).rate_limit, limit, "{}", f.name);
    }

    let at = f.clock.now() + Duration::from_secs(30);
    assert_eq!(
        ok(admin.set_expiry(&id, Some(at)).await).expires_at,
        Some(at)
    );
    f.clock.advance(Duration::from_secs(31));
    assert_eq!(refused(&f, &key).await, Reason::Expired);
    assert_eq!(ok(admin.set_expiry(&id, None).await).expires_at, None);
    assert!(verify(&f, &key, None).await.is_ok());

    // Bad input is a typed error and changes nothing.
    let before = ok(f.store.get(&id).await);
    for bad in ["", "   ", "tab\there", &"x".repeat(MAX_NAME_LEN + 1)] {
        assert!(
            matches!(
                admin.rename(&id, bad).await,
                Err(StoreError::InvalidInput(InvalidInput::Name))
            ),
            "{}: rename to {bad:?}",
            f.name
        );
    }
    let many: Vec<Scope> = (0..100).map(|i| scope(&format!("s{i}"))).collect();
    assert!(matches!(
        admin.set_scopes(&id, many).await,
        Err(StoreError::InvalidInput(InvalidInput::TooManyScopes))
    ));
    assert!(
        Scope::new("not a scope").is_err(),
        "malformed scopes never reach a store"
    );
    assert_eq!(ok(f.store.get(&id).await), before);

    let unknown = KeyId::random();
    assert!(matches!(
        admin.rename(&unknown, "x").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        admin.revoke(&unknown).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn disable_enable_revoke<S: TestStore>(f: Fixture<S>) {
    let admin = f.verifier.admin();
    let (key, record) = create(&f, NewKey::new("k")).await;
    let id = record.id;

    let disabled = ok(admin.disable(&id).await);
    assert_eq!(disabled.state(f.clock.now()), KeyState::Disabled);
    assert_eq!(refused(&f, &key).await, Reason::Disabled);
    let enabled = ok(admin.enable(&id).await);
    assert_eq!(enabled.disabled_at, None);
    assert!(verify(&f, &key, None).await.is_ok());

    let revoked = ok(admin.revoke(&id).await);
    let first = revoked.revoked_at;
    assert_eq!(first, Some(f.clock.now()));
    assert_eq!(refused(&f, &key).await, Reason::Revoked);
    f.clock.advance(Duration::from_secs(5));
    assert_eq!(
        ok(admin.revoke(&id).await).revoked_at,
        first,
        "revoking twice keeps the first time"
    );
    for result in [admin.enable(&id).await, admin.disable(&id).await] {
        assert!(
            matches!(result, Err(StoreError::Conflict { id: c, .. }) if c == id),
            "{}: revocation is final",
            f.name
        );
    }
    assert_eq!(
        ok(f.store.get(&id).await).revoked_at,
        first,
        "kept for audit"
    );
    assert_eq!(refused(&f, &key).await, Reason::Revoked);
}

async fn delete_and_ids_never_reused<S: TestStore>(f: Fixture<S>) {
    let admin = f.verifier.admin();
    let (key, record) = create(&f, NewKey::new("doomed")).await;
    let id = record.id;
    assert!(verify(&f, &key, None).await.is_ok());
    ok(admin.delete(&id).await);
    assert!(matches!(
        f.store.get(&id).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(ok(f.store.find(&id).await), None);
    assert!(matches!(
        admin.delete(&id).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(refused(&f, &key).await, Reason::UnknownKey);
    assert!(
        ok(f.store
            .list(&KeyFilter::default(), PageRequest::default())
            .await)
        .keys
        .is_empty()
    );

    // Neither a deleted id nor a live one can be created again.
    let (_, live) = create(&f, NewKey::new("live")).await;
    for taken in [id, live.id] {
        let minted = ok(f.verifier.keyring().mint(NewKey::new("reuse"))).testing_with_id(taken);
        assert!(
            matches!(f.store.create(minted).await, Err(StoreError::Conflict { id: c, .. }) if c == taken),
            "{}: id reused",
            f.name
        );
    }
    assert!(matches!(
        f.store.get(&id).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn rotation<S: TestStore>(f: Fixture<S>) {
    let admin = f.verifier.admin();
    let spec = NewKey::new("rotating")
        .owner("team")
        .scopes([scope("orders:read")])
        .metadata(metadata(serde_json::json!({"k": "v"})))
        .allowed_ips([ok("127.0.0.0/8".parse())])
        .rate_limit(RateLimit::Unlimited);
    let (old_key, old) = create(&f, spec).await;
    let local = Some(ok("127.0.0.1".parse()));
    assert!(verify(&f, &old_key, local).await.is_ok());

    let grace = Duration::from_secs(3600);
    let start = f.clock.now();
    let rotated = ok(admin.rotate(&old.id, grace).await);
    let new = &rotated.new.record;
    let new_key = rotated.new.key.expose_secret().to_owned();
    assert_ne!(new.id, old.id);
    assert_ne!(new.digest, old.digest);
    assert_eq!(
        (
            &new.name,
            &new.owner,
            &new.scopes,
            &new.metadata,
            &new.allowed_ips,
            new.rate_limit
        ),
        (
            &old.name,
            &old.owner,
            &old.scopes,
            &old.metadata,
            &old.allowed_ips,
            old.rate_limit
        )
    );
    assert_eq!(new.rotated_from, Some(old.id));
    assert_eq!(rotated.old.expires_at, Some(start + grace));
    assert_eq!(ok(f.store.get(&old.id).await), rotated.old);
    assert_eq!(&ok(f.store.get(&new.id).await), new);

    // The new key works at once; the old one until the end of the grace period.
    assert!(verify(&f, &new_key, local).await.is_ok());
    f.clock.set(start + grace - Duration::from_secs(1));
    assert!(
        verify(&f, &old_key, local).await.is_ok(),
        "{}: old key at grace - 1 s",
        f.name
    );
    f.clock.set(start + grace + Duration::from_secs(1));
    assert_eq!(
        verify(&f, &old_key, local)
            .await
            .map(|_| ())
            .map_err(|r| r.reason()),
        Err(Reason::Expired),
        "{}: old key at grace + 1 s",
        f.name
    );
    assert!(verify(&f, &new_key, local).await.is_ok());
    // An expired key does not rotate.
    assert!(matches!(
        admin.rotate(&old.id, grace).await,
        Err(StoreError::Conflict { .. })
    ));

    // Grace 0 revokes the old key at once.
    let again = ok(admin.rotate(&new.id, Duration::ZERO).await);
    assert_eq!(again.old.revoked_at, Some(f.clock.now()));
    assert_eq!(refused(&f, &new_key).await, Reason::Revoked);
    assert!(
        verify(&f, again.new.key.expose_secret(), local)
            .await
            .is_ok()
    );
    assert!(matches!(
        admin.rotate(&new.id, grace).await,
        Err(StoreError::Conflict { .. })
    ));

    // Over the cap: refused, nothing created.
    let count = ok(f
        .store
        .list(&KeyFilter::default(), PageRequest::default())
        .await)
    .keys
    .len();
    let over = keygate::record::MAX_ROTATION_GRACE + Duration::from_secs(1);
    assert!(matches!(
        admin.rotate(&again.new.record.id, over).await,
        Err(StoreError::InvalidInput(InvalidInput::GraceTooLong))
    ));
    assert!(matches!(
        admin.rotate(&KeyId::random(), grace).await,
        Err(StoreError::NotFound(_))
    ));
    let after = ok(f
        .store
        .list(&KeyFilter::default(), PageRequest::default())
        .await)
    .keys
    .len();
    assert_eq!(after, count);
}

async fn last_used<S: TestStore>(f: Fixture<S>) {
    let (key, record) = create(&f, NewKey::new("used")).await;
    let id = record.id;
    assert!(verify(&f, &key, None).await.is_ok());
    assert_eq!(ok(f.verifier.flush_last_used().await), 1);
    let stored = ok(f.store.get(&id).await);
    assert_eq!(stored.last_used_at, Some(f.clock.now()));
    assert_eq!(
        stored.updated_at, record.updated_at,
        "usage is not a management change"
    );

    let later = f.clock.now() + Duration::from_secs(100);
    let earlier = f.clock.now() - Duration::from_secs(100);
    ok(f.store
        .record_last_used(&[(id, later), (KeyId::random(), later)])
        .await);
    ok(f.store.record_last_used(&[(id, earlier)]).await);
    assert_eq!(
        ok(f.store.get(&id).await).last_used_at,
        Some(later),
        "never moves back"
    );
    assert_eq!(f.verifier.last_used_stats().dropped, 0);
}

async fn outage<S: TestStore>(f: Fixture<S>) {
    let (key, record) = create(&f, NewKey::new("k")).await;
    let minted = ok(f.verifier.keyring().mint(NewKey::new("later")));
    f.take_down().await;
    let id = record.id;
    assert!(
        f.store.find(&id).await.is_err_and(|e| e.is_unavailable()),
        "{}: find",
        f.name
    );
    assert!(f.store.get(&id).await.is_err_and(|e| e.is_unavailable()));
    assert!(
        f.store
            .list(&KeyFilter::default(), PageRequest::default())
            .await
            .is_err_and(|e| e.is_unavailable())
    );
    assert!(f.store.revoke(&id).await.is_err_and(|e| e.is_unavailable()));
    assert!(
        f.store
            .create(minted)
            .await
            .is_err_and(|e| e.is_unavailable())
    );
    assert!(f.store.delete(&id).await.is_err_and(|e| e.is_unavailable()));
    assert!(
        f.store
            .record_last_used(&[(id, f.clock.now())])
            .await
            .is_err_and(|e| e.is_unavailable())
    );
    // On the request path: 503, never 401.
    f.verifier.invalidate_all();
    assert_eq!(
        refused(&f, &key).await,
        Reason::StoreUnavailable,
        "{}",
        f.name
    );
}

/// Changes to one key made at the same time are each applied to the key as the others left
/// it: a change reads and writes the record in one transaction holding the key's row, so none
/// is lost.
async fn concurrent_changes_are_all_kept<S: TestStore>(f: Fixture<S>) {
    let (_, record) = create(&f, NewKey::new("racing")).await;
    let id = record.id;
    let store = &f.store;
    let expiry = f.clock.now() + Duration::from_secs(3600);
    let ips = vec![ok("10.0.0.0/8".parse())];
    let meta = metadata(serde_json::json!({"k": 1}));
    let (renamed, scoped, described, restricted, limited, expiring) = tokio::join!(
        store.rename(&id, "renamed"),
        store.set_scopes(&id, vec![scope("a:read")]),
        store.set_metadata(&id, meta.clone()),
        store.set_allowed_ips(&id, ips.clone()),
        store.set_rate_limit(&id, Some(RateLimit::Unlimited)),
        store.set_expiry(&id, Some(expiry)),
    );
    for result in [renamed, scoped, described, restricted, limited, expiring] {
        ok(result);
    }
    let stored = ok(store.get(&id).await);
    assert_eq!(
        (
            stored.name.as_str(),
            stored.scopes,
            stored.metadata,
            stored.allowed_ips,
            stored.rate_limit,
            stored.expires_at
        ),
        (
            "renamed",
            vec![scope("a:read")],
            meta,
            ips,
            Some(RateLimit::Unlimited),
            Some(expiry)
        ),
        "{}: a change was lost",
        f.name
    );
}

/// Two rotations of one key at the same time: the first replaces it (grace 0 revokes it), the
/// second finds it revoked and is refused. Exactly one replacement exists.
async fn concurrent_rotations_replace_a_key_once<S: TestStore>(f: Fixture<S>) {
    let admin = f.verifier.admin();
    let (_, record) = create(&f, NewKey::new("rotated twice")).await;
    let id = record.id;
    let (first, second) = tokio::join!(
        admin.rotate(&id, Duration::ZERO),
        admin.rotate(&id, Duration::ZERO)
    );
    let (won, lost) = match (first, second) {
        (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
        (first, second) => panic!(
            "{}: expected one rotation and one refusal, got {:?} and {:?}",
            f.name,
            first.map(|r| r.new.record.id),
            second.map(|r| r.new.record.id)
        ),
    };
    assert!(
        matches!(lost, StoreError::Conflict { id: c, .. } if c == id),
        "{}: {lost}",
        f.name
    );
    let successors: Vec<KeyId> = ok(f
        .store
        .list(&KeyFilter::default(), PageRequest::default())
        .await)
    .keys
    .iter()
    .filter(|r| r.rotated_from == Some(id))
    .map(|r| r.id)
    .collect();
    assert_eq!(successors, vec![won.new.record.id], "{}", f.name);
    assert_eq!(ok(f.store.get(&id).await), won.old);
}

/// A rotation whose replacement cannot be stored (its id is taken) changes nothing: the old
/// key keeps working as it was, and no replacement exists.
async fn a_refused_rotation_changes_nothing<S: TestStore>(f: Fixture<S>) {
    let (key, old) = create(&f, NewKey::new("kept")).await;
    let (_, other) = create(&f, NewKey::new("other")).await;
    let deleted = create(&f, NewKey::new("deleted")).await.1.id;
    ok(f.store.delete(&deleted).await);
    let before = ok(f
        .store
        .list(&KeyFilter::default(), PageRequest::default())
        .await)
    .keys;
    for taken in [other.id, deleted] {
        let replacement = ok(f.verifier.keyring().mint(NewKey::new("kept"))).testing_with_id(taken);
        let rotation = ok(keygate::Rotation::new(Duration::ZERO));
        assert!(
            matches!(
                f.store.rotate_with(&old.id, replacement, rotation).await,
                Err(StoreError::Conflict { id: c, .. }) if c == taken
            ),
            "{}: rotation to a taken id",
            f.name
        );
    }
    let after = ok(f
        .store
        .list(&KeyFilter::default(), PageRequest::default())
        .await)
    .keys;
    assert_eq!(after, before, "{}: nothing changed", f.name);
    assert!(verify(&f, &key, None).await.is_ok());
}

async fn canaries<S: TestStore>(f: Fixture<S>) {
    let admin = f.verifier.admin();
    let (canary_key, canary) = create(
        &f,
        NewKey::new("decoy").scopes([scope("orders:*")]).canary(),
    )
    .await;
    let (plain_key, plain) = create(&f, NewKey::new("plain")).await;
    assert!(canary.canary && !plain.canary);
    assert_eq!(ok(f.store.get(&canary.id).await), canary, "{}: get", f.name);
    assert_eq!(ok(f.store.find(&canary.id).await), Some(canary.clone()));
    assert!(!ok(f.store.get(&plain.id).await).canary);
    let listed = ok(f
        .store
        .list(&KeyFilter::default(), PageRequest::first(10))
        .await);
    let flags: Vec<(String, bool)> = listed
        .keys
        .iter()
        .map(|r| (r.name.clone(), r.canary))
        .collect();
    assert!(flags.contains(&("decoy".to_owned(), true)), "{flags:?}");
    assert!(flags.contains(&("plain".to_owned(), false)), "{flags:?}");

    // Never accepted, whatever its scopes and state; a normal key is.
    assert!(verify(&f, &plain_key, None).await.is_ok());
    assert_eq!(refused(&f, &canary_key).await, Reason::Canary);
    ok(admin.disable(&canary.id).await);
    assert_eq!(refused(&f, &canary_key).await, Reason::Canary);
    ok(admin.enable(&canary.id).await);

    // A rotated canary's successor is a canary too.
    let rotated = ok(admin.rotate(&canary.id, Duration::from_secs(60)).await);
    assert!(rotated.new.record.canary);
    assert!(ok(f.store.get(&rotated.new.record.id).await).canary);
    assert_eq!(
        refused(&f, rotated.new.key.expose_secret()).await,
        Reason::Canary
    );
}

/// Policy settings are the only ones that can be replaced; the rest are never touched.
async fn policy_settings<S: TestStore>(f: Fixture<S>) {
    let settings = |entries: &[(&str, &str)]| -> Vec<(String, String)> {
        entries
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    };
    ok(f.store
        .add_settings(&settings(&[("key.prefix", "conf_test")]))
        .await);
    let before = ok(f.store.settings().await).expect("the store keeps settings");
    let policy_of = |all: &StoreSettings| -> Vec<(String, String)> {
        all.iter()
            .filter(|(n, _)| n.starts_with("policy."))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    };
    let others = |all: &StoreSettings| -> Vec<(String, String)> {
        all.iter()
            .filter(|(n, _)| !n.starts_with("policy."))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    };
    let read = || async { ok(f.store.settings().await).unwrap() };

    let first = settings(&[
        ("policy.require_expiry", "true"),
        ("policy.max_idle_seconds", "60"),
    ]);
    ok(f.store.replace_policy_settings(&first).await);
    let now = read().await;
    assert_eq!(policy_of(&now), sorted(first), "{}", f.name);
    assert_eq!(others(&now), others(&before), "{}", f.name);

    // Replaced as a whole: what is not given any more is gone.
    let second = settings(&[("policy.max_lifetime_seconds", "86400")]);
    ok(f.store.replace_policy_settings(&second).await);
    assert_eq!(policy_of(&read().await), second, "{}", f.name);

    // Only `policy.*` names: a pepper or prefix setting is refused, and nothing is written.
    for bad in [
        ("key.prefix", "evil"),
        ("pepper.1.fingerprint", "x"),
        ("development", "true"),
        ("POLICY.max_idle_seconds", "1"),
        ("policy.", "1"),
    ] {
        let refused = f
            .store
            .replace_policy_settings(&settings(&[("policy.max_idle_seconds", "5"), bad]))
            .await;
        assert!(
            matches!(
                refused,
                Err(StoreError::InvalidInput(InvalidInput::SettingName))
            ),
            "{}: {bad:?}: {refused:?}",
            f.name
        );
        let now = read().await;
        assert_eq!(policy_of(&now), second, "{}: {bad:?}", f.name);
        assert_eq!(others(&now), others(&before), "{}: {bad:?}", f.name);
    }

    // Cleared.
    ok(f.store.replace_policy_settings(&[]).await);
    let now = read().await;
    assert!(policy_of(&now).is_empty(), "{}", f.name);
    assert_eq!(others(&now), others(&before), "{}", f.name);
}

fn sorted(mut entries: Vec<(String, String)>) -> Vec<(String, String)> {
    entries.sort();
    entries
}

/// The lifetime policy in the store's settings rules the verifier's `Admin`: defaults filled
/// in, refusals typed, rotation given a compliant expiry, canaries exempt.
async fn lifetime_policy<S: TestStore>(f: Fixture<S>) {
    const DAY: Duration = Duration::from_secs(86_400);
    let admin = f.verifier.admin();
    let policy = LifetimePolicy {
        require_expiry: true,
        default_lifetime: Some(30 * DAY),
        max_lifetime: Some(90 * DAY),
        max_idle: None,
    };
    ok(write_policy(&f.store, &policy).await);
    assert_eq!(ok(read_policy(&f.store).await), policy, "{}", f.name);
    assert_eq!(ok(admin.lifetime_policy().await), policy);
    let now = f.clock.now();

    // No expiry given: the default lifetime, stored.
    let (_, defaulted) = create(&f, NewKey::new("defaulted")).await;
    assert_eq!(defaulted.expires_at, Some(now + 30 * DAY), "{}", f.name);
    assert_eq!(
        ok(f.store.get(&defaulted.id).await).expires_at,
        Some(now + 30 * DAY)
    );
    // Beyond the maximum: refused, naming the rule; nothing stored.
    let refused = admin
        .create_key(NewKey::new("too-long").expires_at(now + 91 * DAY))
        .await
        .unwrap_err();
    match &refused {
        StoreError::Policy(violation) => assert_eq!(violation.rule(), "max_lifetime"),
        other => panic!("{}: {other:?}", f.name),
    }
    let listed = ok(f
        .store
        .list(&KeyFilter::default(), PageRequest::first(100))
        .await);
    assert!(listed.keys.iter().all(|k| k.name != "too-long"));
    // Setting an expiry: within the maximum only; clearing it gives the default.
    assert!(matches!(
        admin.set_expiry(&defaulted.id, Some(now + 100 * DAY)).await,
        Err(StoreError::Policy(PolicyViolation::LifetimeTooLong { .. }))
    ));
    assert_eq!(
        ok(f.store.get(&defaulted.id).await).expires_at,
        Some(now + 30 * DAY)
    );
    let cleared = ok(admin.set_expiry(&defaulted.id, None).await);
    assert_eq!(cleared.expires_at, Some(now + 30 * DAY));
    let set = ok(admin.set_expiry(&defaulted.id, Some(now + 60 * DAY)).await);
    assert_eq!(set.expires_at, Some(now + 60 * DAY));
    // A rotation's new key: the default lifetime from now, not the old key's expiry.
    f.clock.advance(DAY);
    let rotated = ok(admin.rotate(&defaulted.id, Duration::from_secs(60)).await);
    assert_eq!(
        rotated.new.record.expires_at,
        Some(f.clock.now() + 30 * DAY),
        "{}",
        f.name
    );
    assert_eq!(
        ok(f.store.get(&rotated.new.record.id).await).expires_at,
        Some(f.clock.now() + 30 * DAY)
    );

    // Without a default, a key without expiry (and a rotation) is refused.
    ok(write_policy(
        &f.store,
        &LifetimePolicy {
            require_expiry: true,
            ..LifetimePolicy::default()
        },
    )
    .await);
    assert!(matches!(
        admin.create_key(NewKey::new("no-expiry")).await,
        Err(StoreError::Policy(PolicyViolation::ExpiryRequired))
    ));
    assert!(matches!(
        admin.rotate(&rotated.new.record.id, Duration::ZERO).await,
        Err(StoreError::Policy(PolicyViolation::ExpiryRequired))
    ));
    assert_eq!(
        ok(f.store.get(&rotated.new.record.id).await).state(f.clock.now()),
        KeyState::Active,
        "a refused rotation changes nothing"
    );
    // Canaries are exempt (an expiry would disarm them).
    let (_, canary) = create(&f, NewKey::new("decoy").canary()).await;
    assert_eq!(canary.expires_at, None);

    // Cleared: no rule.
    ok(write_policy(&f.store, &LifetimePolicy::default()).await);
    let (_, free) = create(&f, NewKey::new("free")).await;
    assert_eq!(free.expires_at, None);
}

async fn owners<S: TestStore>(f: Fixture<S>) {
    let admin = f.verifier.admin();
    let created = ok(admin
        .create_owner(
            NewOwner::new("acme")
                .name("ACME Corp")
                .metadata(metadata(serde_json::json!({"plan": "gold", "seats": 3})))
                .rate_limit(policy("10/1m")),
        )
        .await);
    assert_eq!(created.id, "acme");
    assert_eq!(created.name, "ACME Corp");
    assert_eq!(
        created.rate_limit,
        Some(RateLimit::Limited(policy("10/1m")))
    );
    assert_eq!(created.created_at, f.clock.now());
    assert_eq!(ok(f.store.get_owner("acme").await), created, "{}", f.name);
    assert_eq!(ok(f.store.find_owner("acme").await), Some(created.clone()));
    assert_eq!(ok(f.store.find_owner("nobody").await), None);
    assert!(matches!(
        f.store.get_owner("nobody").await,
        Err(StoreError::OwnerNotFound(o)) if o == "nobody"
    ));
    assert!(
        matches!(
            admin.create_owner(NewOwner::new("acme")).await,
            Err(StoreError::OwnerConflict { owner, .. }) if owner == "acme"
        ),
        "{}: an owner id is taken once",
        f.name
    );
    for (bad, want) in [
        (NewOwner::new(""), InvalidInput::Owner),
        (NewOwner::new("a\nb"), InvalidInput::Owner),
        (
            NewOwner::new("x".repeat(MAX_NAME_LEN + 1)),
            InvalidInput::Owner,
        ),
        (NewOwner::new("ok").name(" "), InvalidInput::OwnerName),
        (
            NewOwner::new("ok").metadata(metadata(serde_json::json!({"a": "\u{0}"}))),
            InvalidInput::Metadata,
        ),
    ] {
        assert!(
            matches!(admin.create_owner(bad).await, Err(StoreError::InvalidInput(ref got)) if *got == want),
            "{}: {want:?}",
            f.name
        );
    }
    assert!(matches!(
        f.store.get_owner("ok").await,
        Err(StoreError::OwnerNotFound(_))
    ));

    // A key naming an unknown owner creates a bare one, named after its id, and says so.
    f.clock.advance(Duration::from_secs(10));
    let first = ok(admin.create_key(NewKey::new("k").owner("team-x")).await);
    assert!(
        first.owner_created,
        "{}: the first key made its owner",
        f.name
    );
    let key = first.record;
    let bare = ok(f.store.get_owner("team-x").await);
    assert_eq!(
        (
            bare.name.as_str(),
            bare.rate_limit,
            bare.metadata.is_empty()
        ),
        ("team-x", None, true)
    );
    assert_eq!(bare.created_at, key.created_at);
    // A second key keeps the owner as it is.
    ok(admin
        .update_owner("team-x", OwnerUpdate::new().name("Team X"))
        .await);
    let second = ok(admin.create_key(NewKey::new("k2").owner("team-x")).await);
    assert!(!second.owner_created, "{}: the owner existed", f.name);
    let of_acme = ok(admin.create_key(NewKey::new("k3").owner("acme")).await);
    assert!(!of_acme.owner_created, "{}: created before its key", f.name);
    ok(admin.delete(&of_acme.record.id).await);
    let unowned = ok(admin.create_key(NewKey::new("k4")).await);
    assert!(!unowned.owner_created);
    ok(admin.delete(&unowned.record.id).await);
    assert_eq!(ok(f.store.get_owner("team-x").await).name, "Team X");
    assert_eq!(ok(f.store.owner_key_count("team-x").await), 2);
    assert_eq!(ok(f.store.owner_key_count("acme").await), 0);
    // A deleted key's tombstone keeps its owner (for the owner's audit roll-up); one without
    // an owner is nobody's.
    assert_eq!(
        ok(f.store.deleted_owner_keys("acme").await),
        [of_acme.record.id],
        "{}",
        f.name
    );
    assert_eq!(
        ok(admin.deleted_owner_keys("acme").await),
        [of_acme.record.id]
    );
    assert!(ok(f.store.deleted_owner_keys("team-x").await).is_empty());
    assert!(ok(f.store.deleted_owner_keys("").await).is_empty());

    // Listing: ordered by id, paged by the last id.
    for id in ["b-owner", "a-owner", "c-owner"] {
        ok(admin.create_owner(NewOwner::new(id)).await);
    }
    let ids = |owners: Vec<keygate::owner::OwnerRecord>| -> Vec<String> {
        owners.into_iter().map(|o| o.id).collect()
    };
    assert_eq!(
        ids(ok(f.store.list_owners(None, 100).await)),
        ["a-owner", "acme", "b-owner", "c-owner", "team-x"],
        "{}",
        f.name
    );
    assert_eq!(
        ids(ok(f.store.list_owners(None, 2).await)),
        ["a-owner", "acme"]
    );
    assert_eq!(
        ids(ok(f.store.list_owners(Some("acme"), 2).await)),
        ["b-owner", "c-owner"]
    );
    assert!(ok(f.store.list_owners(Some("team-x"), 2).await).is_empty());

    // Updates change what they name, and `updated_at`.
    f.clock.advance(Duration::from_secs(5));
    let updated = ok(admin
        .update_owner(
            "acme",
            OwnerUpdate::new()
                .metadata(metadata(serde_json::json!({"plan": "silver"})))
                .rate_limit(None),
        )
        .await);
    assert_eq!(updated.name, "ACME Corp");
    assert_eq!(updated.rate_limit, None);
    assert_eq!(
        updated.metadata,
        metadata(serde_json::json!({"plan": "silver"}))
    );
    assert_eq!(updated.updated_at, f.clock.now());
    assert_eq!(updated.created_at, created.created_at);
    assert_eq!(ok(f.store.get_owner("acme").await), updated, "{}", f.name);
    assert!(matches!(
        admin
            .update_owner("nobody", OwnerUpdate::new().name("x"))
            .await,
        Err(StoreError::OwnerNotFound(_))
    ));
    assert!(matches!(
        admin
            .update_owner("acme", OwnerUpdate::new().name(""))
            .await,
        Err(StoreError::InvalidInput(InvalidInput::OwnerName))
    ));

    // Deleting: refused while keys (in any state) belong to the owner.
    ok(admin.revoke(&key.id).await);
    assert!(
        matches!(
            admin.delete_owner("team-x").await,
            Err(StoreError::OwnerConflict { owner, .. }) if owner == "team-x"
        ),
        "{}",
        f.name
    );
    assert_eq!(ok(f.store.get_owner("team-x").await).name, "Team X");
    ok(admin.delete_owner("acme").await);
    assert!(matches!(
        f.store.get_owner("acme").await,
        Err(StoreError::OwnerNotFound(_))
    ));
    assert!(matches!(
        admin.delete_owner("acme").await,
        Err(StoreError::OwnerNotFound(_))
    ));
}

async fn owner_bulk_actions<S: TestStore>(f: Fixture<S>) {
    let admin = f.verifier.admin();
    let mut keys = Vec::new();
    for name in ["a", "b", "c"] {
        keys.push(create(&f, NewKey::new(name).owner("departed")).await);
    }
    let (gone_key, gone) = create(&f, NewKey::new("gone").owner("departed")).await;
    let gone_revoked = ok(admin.revoke(&gone.id).await).revoked_at;
    let (other_key, _) = create(&f, NewKey::new("other").owner("staying")).await;
    let (lone_key, _) = create(&f, NewKey::new("lone")).await;
    for (key, _) in &keys {
        assert!(
            verify(&f, key, None).await.is_ok(),
            "{}: cached now",
            f.name
        );
    }
    let mut want: Vec<KeyId> = keys.iter().map(|(_, r)| r.id).collect();
    want.sort();
    let ids = |records: &[keygate::KeyRecord]| records.iter().map(|r| r.id).collect::<Vec<_>>();

    f.clock.advance(Duration::from_secs(1));
    let disabled = ok(admin.disable_owner("departed").await);
    assert_eq!(
        ids(&disabled),
        want,
        "{}: the revoked key is left alone",
        f.name
    );
    assert!(
        disabled
            .iter()
            .all(|r| r.disabled_at == Some(f.clock.now()))
    );
    for (key, record) in &keys {
        assert_eq!(refused(&f, key).await, Reason::Disabled, "{}", f.name);
        assert_eq!(
            ok(f.store.get(&record.id).await).state(f.clock.now()),
            KeyState::Disabled
        );
    }
    assert!(
        ok(admin.disable_owner("departed").await).is_empty(),
        "{}: nothing left to disable",
        f.name
    );
    assert!(verify(&f, &other_key, None).await.is_ok());
    assert!(verify(&f, &lone_key, None).await.is_ok());

    let enabled = ok(admin.enable_owner("departed").await);
    assert_eq!(ids(&enabled), want);
    for (key, _) in &keys {
        assert!(verify(&f, key, None).await.is_ok(), "{}", f.name);
    }
    assert_eq!(refused(&f, &gone_key).await, Reason::Revoked);

    ok(admin.disable(&keys[0].1.id).await);
    f.clock.advance(Duration::from_secs(1));
    let revoked = ok(admin.revoke_owner("departed").await);
    assert_eq!(
        ids(&revoked),
        want,
        "{}: disabled keys are revoked too",
        f.name
    );
    for (key, record) in &keys {
        assert_eq!(refused(&f, key).await, Reason::Revoked, "{}", f.name);
        assert_eq!(
            ok(f.store.get(&record.id).await).revoked_at,
            Some(f.clock.now())
        );
    }
    assert_eq!(
        ok(f.store.get(&gone.id).await).revoked_at,
        gone_revoked,
        "{}: an earlier revocation keeps its time",
        f.name
    );
    assert!(
        ok(admin.enable_owner("departed").await).is_empty(),
        "revocation is final"
    );
    assert!(verify(&f, &other_key, None).await.is_ok());
    for result in [
        admin.disable_owner("nobody").await,
        admin.enable_owner("nobody").await,
        admin.revoke_owner("nobody").await,
    ] {
        assert!(
            matches!(result, Err(StoreError::OwnerNotFound(_))),
            "{}",
            f.name
        );
    }
}

/// Owner limits and key limits both apply; the tighter wins, and the owner's is shared.
async fn owner_rate_limits<S: TestStore>(f: Fixture<S>) {
    let admin = f.verifier.admin();
    ok(admin
        .create_owner(NewOwner::new("metered").rate_limit(policy("4/1m")))
        .await);
    let (a, _) = create(&f, NewKey::new("a").owner("metered")).await;
    let (b, _) = create(&f, NewKey::new("b").owner("metered")).await;
    let (tight, _) = create(
        &f,
        NewKey::new("tight")
            .owner("metered")
            .rate_limit(policy("1/1m")),
    )
    .await;
    let (free, _) = create(&f, NewKey::new("free").owner("unmetered")).await;

    // The key's own 1/1m is tighter than the owner's 4/1m.
    assert!(verify(&f, &tight, None).await.is_ok());
    assert_eq!(refused(&f, &tight).await, Reason::RateLimited, "{}", f.name);
    // The owner's 4/1m is shared: 3 more in all, whichever key (the refused one took none).
    for key in [&a, &b, &a] {
        assert!(verify(&f, key, None).await.is_ok(), "{}", f.name);
    }
    for key in [&a, &b] {
        assert_eq!(refused(&f, key).await, Reason::RateLimited, "{}", f.name);
    }
    for _ in 0..10 {
        assert!(
            verify(&f, &free, None).await.is_ok(),
            "{}: no owner limit",
            f.name
        );
    }
    // A new owner limit applies at once (the owner's keys are evicted).
    ok(admin
        .update_owner(
            "metered",
            OwnerUpdate::new().rate_limit(Some(policy("100/1m").into())),
        )
        .await);
    assert!(verify(&f, &a, None).await.is_ok(), "{}", f.name);
    ok(admin
        .update_owner("metered", OwnerUpdate::new().rate_limit(None))
        .await);
    for _ in 0..10 {
        assert!(verify(&f, &b, None).await.is_ok(), "{}", f.name);
    }
}

/// The quota counter table ([`QuotaLedger`]): saves overwrite, loads return exactly the saved
/// counters of the subjects asked for, every kind, values up to [`MAX_BALANCE`] and top-up
/// totals up to [`MAX_GRANTED`] round-trip.
async fn quota_counters<S: TestStore>(f: Fixture<S>) {
    let ledger = Arc::new(f.store.clone())
        .quota_ledger()
        .unwrap_or_else(|| panic!("{}: keeps quota counters", f.name));
    let key = QuotaSubject::Key(KeyId::random());
    let rotated_lineage = QuotaSubject::Key(KeyId::random());
    let owner = QuotaSubject::Owner(OwnerTag::of("acme corp"));
    let unknown = QuotaSubject::Owner(OwnerTag::of("nobody"));
    let state = |kind: CounterKind, window: u64, value: u64| CounterState {
        kind,
        window,
        value,
        granted: 0,
    };
    let sorted = |mut counters: Vec<(QuotaSubject, CounterState)>| {
        counters.sort_by_key(|(subject, _)| subject.to_string());
        counters
    };
    assert!(ok(ledger.load_counters(&[key, owner]).await).is_empty());
    ok(ledger.save_counters(&[]).await);

    let day = state(CounterKind::Period(QuotaPeriod::Day), 20_423, 3);
    let credits = CounterState {
        granted: MAX_GRANTED,
        ..state(CounterKind::Credits, 7, MAX_BALANCE)
    };
    let month = state(CounterKind::Period(QuotaPeriod::Month), 671, MAX_QUOTA - 1);
    ok(ledger
        .save_counters(&[(key, day), (owner, credits), (rotated_lineage, month)])
        .await);
    assert_eq!(
        sorted(ok(ledger.load_counters(&[key, owner, unknown]).await)),
        sorted(vec![(key, day), (owner, credits)]),
        "{}: the subjects asked for that have a counter",
        f.name
    );

    // Overwrite: another kind, and a subject listed twice keeps its last counter.
    let minute = state(CounterKind::Period(QuotaPeriod::Minute), 29_409_120, 0);
    let hour = state(CounterKind::Period(QuotaPeriod::Hour), 490_152, 999);
    ok(ledger
        .save_counters(&[(key, minute), (owner, hour), (owner, credits)])
        .await);
    assert_eq!(
        sorted(ok(ledger
            .load_counters(&[rotated_lineage, owner, key])
            .await)),
        sorted(vec![
            (key, minute),
            (owner, credits),
            (rotated_lineage, month)
        ]),
        "{}",
        f.name
    );
    assert!(ok(ledger.load_counters(&[]).await).is_empty());

    // More counters than one statement holds: saved and read back whole.
    let many: Vec<(QuotaSubject, CounterState)> = (0..2_500_u64)
        .map(|n| {
            (
                QuotaSubject::Key(KeyId::random()),
                CounterState {
                    granted: n * 3,
                    ..state(CounterKind::Credits, n, n * 7)
                },
            )
        })
        .collect();
    ok(ledger.save_counters(&many).await);
    let subjects: Vec<QuotaSubject> = many.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        sorted(ok(ledger.load_counters(&subjects).await)),
        sorted(many),
        "{}",
        f.name
    );
}

/// Quotas on keys and owners: stored, changed and cleared alike by every store, and enforced
/// from what the store returns (the owner's read with the key).
async fn quotas<S: TestStore>(f: Fixture<S>) {
    let admin = f.verifier.admin();
    let (key, record) = create(&f, NewKey::new("metered").quota(quota("3/day"))).await;
    assert_eq!(record.quota, Some(quota("3/day")));
    assert_eq!(
        record.lineage, record.id,
        "a new key starts its own lineage"
    );
    assert_eq!(ok(f.store.get(&record.id).await), record, "{}", f.name);
    for _ in 0..3 {
        assert!(verify(&f, &key, None).await.is_ok(), "{}", f.name);
    }
    assert_eq!(
        refused(&f, &key).await,
        Reason::QuotaExhausted,
        "{}",
        f.name
    );

    // Changed (credits: a counter of another kind starts afresh) and cleared.
    let changed = ok(admin
        .set_quota(&record.id, Some(quota("credits 10 refill 10 every 1h")))
        .await);
    assert_eq!(changed.quota, Some(quota("credits 10 refill 10 every 1h")));
    assert_eq!(ok(f.store.get(&record.id).await), changed, "{}", f.name);
    assert!(verify(&f, &key, None).await.is_ok(), "{}", f.name);
    let cleared = ok(admin.set_quota(&record.id, None).await);
    assert_eq!(cleared.quota, None);
    assert_eq!(ok(f.store.get(&record.id).await).quota, None, "{}", f.name);

    // An owner's quota is shared by its keys; the key's own, when tighter, wins.
    let owner = ok(admin
        .create_owner(NewOwner::new("shared").quota(quota("4/day")))
        .await);
    assert_eq!(owner.quota, Some(quota("4/day")));
    assert_eq!(ok(f.store.get_owner("shared").await), owner, "{}", f.name);
    let (a, _) = create(&f, NewKey::new("a").owner("shared")).await;
    let (b, _) = create(&f, NewKey::new("b").owner("shared")).await;
    let (tight, _) = create(
        &f,
        NewKey::new("tight").owner("shared").quota(quota("1/day")),
    )
    .await;
    assert!(verify(&f, &tight, None).await.is_ok());
    assert_eq!(
        refused(&f, &tight).await,
        Reason::QuotaExhausted,
        "{}",
        f.name
    );
    for key in [&a, &b, &a] {
        assert!(verify(&f, key, None).await.is_ok(), "{}", f.name);
    }
    for key in [&a, &b] {
        assert_eq!(refused(&f, key).await, Reason::QuotaExhausted, "{}", f.name);
    }
    // Cleared on the owner: its keys are evicted and go on at once.
    let updated = ok(admin
        .update_owner("shared", OwnerUpdate::new().quota(None))
        .await);
    assert_eq!(updated.quota, None);
    assert_eq!(ok(f.store.get_owner("shared").await).quota, None);
    assert!(verify(&f, &a, None).await.is_ok(), "{}", f.name);
    // A bare owner (created with its first key) has none.
    create(&f, NewKey::new("c").owner("bare")).await;
    assert_eq!(ok(f.store.get_owner("bare").await).quota, None);
}

/// A rotated key keeps spending its predecessor's balance: both keys are counted under the
/// lineage (the first key's id), which every rotation copies with the quota.
async fn quota_rotation<S: TestStore>(f: Fixture<S>) {
    let admin = f.verifier.admin();
    let (old_key, old) = create(&f, NewKey::new("rotating").quota(quota("4/day"))).await;
    for _ in 0..2 {
        assert!(verify(&f, &old_key, None).await.is_ok());
    }
    let rotated = ok(admin.rotate(&old.id, Duration::from_secs(3600)).await);
    let new = &rotated.new.record;
    assert_eq!((new.quota, new.lineage), (old.quota, old.id), "{}", f.name);
    assert_eq!(&ok(f.store.get(&new.id).await), new, "{}", f.name);
    let again = ok(admin.rotate(&new.id, Duration::from_secs(3600)).await);
    assert_eq!(again.new.record.lineage, old.id, "{}", f.name);
    // 2 left in all, whichever key of the chain spends them (the old ones in their grace).
    let newest = again.new.key.expose_secret().to_owned();
    assert!(verify(&f, &newest, None).await.is_ok(), "{}", f.name);
    assert!(verify(&f, &old_key, None).await.is_ok(), "{}", f.name);
    assert_eq!(
        refused(&f, &newest).await,
        Reason::QuotaExhausted,
        "{}",
        f.name
    );
    assert_eq!(
        refused(&f, rotated.new.key.expose_secret()).await,
        Reason::QuotaExhausted,
        "{}",
        f.name
    );
}

/// A top-up (`KeyChange::AddCredits`): the record's running total grows on every key of the
/// lineage, refused (and nothing changed) for a key without a credits quota of its own or for
/// 0 or too many credits at once; the verifier adds the credits to the balance once.
async fn credit_top_ups<S: TestStore>(f: Fixture<S>) {
    let admin = f.verifier.admin();
    // Another credits key, of another lineage: no top-up of the first reaches it.
    let (_, bystander) = create(&f, NewKey::new("bystander").quota(quota("credits 9"))).await;
    let (key, record) = create(&f, NewKey::new("prepaid").quota(quota("credits 2"))).await;
    assert_eq!(record.quota_granted, 0, "{}", f.name);
    for _ in 0..2 {
        assert!(verify(&f, &key, None).await.is_ok(), "{}", f.name);
    }
    assert_eq!(
        refused(&f, &key).await,
        Reason::QuotaExhausted,
        "{}",
        f.name
    );

    let topped = ok(admin.add_credits(&record.id, 3).await);
    assert_eq!(topped.quota_granted, 3, "{}", f.name);
    assert_eq!(topped.quota, record.quota, "{}", f.name);
    assert_eq!(ok(f.store.get(&record.id).await), topped, "{}", f.name);
    // Three more, once: reading the record again adds nothing.
    for _ in 0..3 {
        assert!(verify(&f, &key, None).await.is_ok(), "{}", f.name);
    }
    assert_eq!(
        refused(&f, &key).await,
        Reason::QuotaExhausted,
        "{}",
        f.name
    );
    f.verifier
        .admin()
        .rename(&record.id, "reloaded")
        .await
        .unwrap();
    assert_eq!(
        refused(&f, &key).await,
        Reason::QuotaExhausted,
        "{}",
        f.name
    );

    // The lineage shares one total: a top-up of the old key reaches its successor's record,
    // and the next of the successor reaches the old one's.
    let rotated = ok(admin.rotate(&record.id, Duration::from_secs(3600)).await);
    let new = rotated.new.record;
    assert_eq!(
        new.quota_granted, 3,
        "rotation copies the total ({})",
        f.name
    );
    ok(admin.add_credits(&record.id, 1).await);
    assert_eq!(
        ok(f.store.get(&new.id).await).quota_granted,
        4,
        "{}",
        f.name
    );
    ok(admin.add_credits(&new.id, 10).await);
    assert_eq!(
        ok(f.store.get(&record.id).await).quota_granted,
        14,
        "{}",
        f.name
    );
    assert_eq!(
        ok(f.store.get(&new.id).await).quota_granted,
        14,
        "{}",
        f.name
    );
    assert_eq!(
        ok(f.store.get(&bystander.id).await),
        bystander,
        "another lineage is untouched ({})",
        f.name
    );
    let successor = rotated.new.key.expose_secret().to_owned();
    for _ in 0..11 {
        assert!(verify(&f, &successor, None).await.is_ok(), "{}", f.name);
    }
    assert_eq!(
        refused(&f, &successor).await,
        Reason::QuotaExhausted,
        "{}",
        f.name
    );

    // Refused, and nothing changes.
    let (_, daily) = create(&f, NewKey::new("daily").quota(quota("5/day"))).await;
    let (_, bare) = create(&f, NewKey::new("bare")).await;
    for id in [daily.id, bare.id] {
        assert!(
            matches!(
                admin.add_credits(&id, 5).await,
                Err(StoreError::Conflict { .. })
            ),
            "{}",
            f.name
        );
        assert_eq!(ok(f.store.get(&id).await).quota_granted, 0, "{}", f.name);
    }
    for credits in [0, MAX_QUOTA + 1] {
        assert!(
            matches!(
                admin.add_credits(&new.id, credits).await,
                Err(StoreError::InvalidInput(InvalidInput::Credits))
            ),
            "{}",
            f.name
        );
    }
    assert_eq!(
        ok(f.store.get(&new.id).await).quota_granted,
        14,
        "{}",
        f.name
    );
    assert!(matches!(
        admin.add_credits(&KeyId::random(), 5).await,
        Err(StoreError::NotFound(_))
    ));
}

/// An owner top-up (`OwnerUpdate::add_credits`): the owner's running total grows, reaches
/// every key of the owner at once (their cached entries are evicted) and is spent once;
/// refused, with nothing changed, for an owner whose quota is not credits, for 0 or too many
/// credits, and for an unknown owner. A key's own top-up leaves the owner's total alone.
async fn owner_credit_top_ups<S: TestStore>(f: Fixture<S>) {
    let admin = f.verifier.admin();
    ok(admin
        .create_owner(NewOwner::new("prepaid-co").quota(quota("credits 2")))
        .await);
    ok(admin
        .create_owner(NewOwner::new("daily-co").quota(quota("10/day")))
        .await);
    let (a, _) = create(&f, NewKey::new("a").owner("prepaid-co")).await;
    let (b, b_record) = create(
        &f,
        NewKey::new("b")
            .owner("prepaid-co")
            .quota(quota("credits 100")),
    )
    .await;
    for key in [&a, &b] {
        assert!(verify(&f, key, None).await.is_ok(), "{}", f.name);
    }
    for key in [&a, &b] {
        assert_eq!(refused(&f, key).await, Reason::QuotaExhausted, "{}", f.name);
    }

    let owner = ok(admin
        .update_owner("prepaid-co", OwnerUpdate::new().add_credits(3))
        .await);
    assert_eq!(owner.quota_granted, 3, "{}", f.name);
    assert_eq!(owner.quota, Some(quota("credits 2")), "{}", f.name);
    assert_eq!(
        ok(f.store.get_owner("prepaid-co").await),
        owner,
        "{}",
        f.name
    );
    // Three more in all, whichever key; the key's own top-up does not add to the owner's.
    for key in [&b, &a, &b] {
        assert!(verify(&f, key, None).await.is_ok(), "{}", f.name);
    }
    ok(admin.add_credits(&b_record.id, 5).await);
    for key in [&a, &b] {
        assert_eq!(refused(&f, key).await, Reason::QuotaExhausted, "{}", f.name);
    }
    assert_eq!(
        ok(f.store.get_owner("prepaid-co").await).quota_granted,
        3,
        "{}",
        f.name
    );
    // Reading the owner again (another change evicts its keys) adds nothing.
    ok(admin
        .update_owner("prepaid-co", OwnerUpdate::new().name("Prepaid"))
        .await);
    assert_eq!(refused(&f, &a).await, Reason::QuotaExhausted, "{}", f.name);

    // Refused, nothing changed.
    let daily = ok(f.store.get_owner("daily-co").await);
    assert!(
        matches!(
            admin
                .update_owner(
                    "daily-co",
                    OwnerUpdate::new().name("renamed").add_credits(5)
                )
                .await,
            Err(StoreError::OwnerConflict { .. })
        ),
        "{}",
        f.name
    );
    for credits in [0, MAX_QUOTA + 1] {
        assert!(
            matches!(
                admin
                    .update_owner("prepaid-co", OwnerUpdate::new().add_credits(credits))
                    .await,
                Err(StoreError::InvalidInput(_))
            ),
            "{credits}: {}",
            f.name
        );
    }
    assert_eq!(ok(f.store.get_owner("daily-co").await), daily, "{}", f.name);
    assert_eq!(
        ok(f.store.get_owner("prepaid-co").await).quota_granted,
        3,
        "{}",
        f.name
    );
    assert!(
        matches!(
            admin
                .update_owner("nobody", OwnerUpdate::new().add_credits(1))
                .await,
            Err(StoreError::OwnerNotFound(_))
        ),
        "{}",
        f.name
    );
    // The total survives a quota change, as a key's does, and a bare owner starts at 0.
    let requoted = ok(admin
        .update_owner(
            "prepaid-co",
            OwnerUpdate::new().quota(Some(quota("credits 50"))),
        )
        .await);
    assert_eq!(requoted.quota_granted, 3, "{}", f.name);
    create(&f, NewKey::new("c").owner("bare-co")).await;
    assert_eq!(ok(f.store.get_owner("bare-co").await).quota_granted, 0);
}

/// Named limits are stored with the key and its owner, set and cleared, carried by rotations,
/// and reach the verifier's identity (the owner's change evicts its keys' entries).
async fn named_limits<S: TestStore>(f: Fixture<S>) {
    let admin = f.verifier.admin();
    let limits = |text: &str| -> NamedLimits { ok(text.parse()) };
    let writes: LimitName = ok("writes".parse());
    let reads: LimitName = ok("reads".parse());
    let (key, record) = create(
        &f,
        NewKey::new("named").limits(limits("writes: 10/1s, reads: 100/1s burst 200")),
    )
    .await;
    assert_eq!(
        record.limits,
        limits("reads: 100/1s burst 200, writes: 10/1s")
    );
    assert_eq!(ok(f.store.get(&record.id).await), record, "{}", f.name);
    let identity = ok(verify(&f, &key, None).await);
    assert_eq!(
        identity.named_limit(writes),
        (Some(policy("10/1s")), None),
        "{}",
        f.name
    );

    let changed = ok(admin
        .set_limits(&record.id, limits("writes: 5/1m, bulk: unlimited"))
        .await);
    assert_eq!(changed.limits, limits("bulk: unlimited, writes: 5/1m"));
    assert_eq!(ok(f.store.get(&record.id).await), changed, "{}", f.name);
    let identity = ok(verify(&f, &key, None).await);
    assert_eq!(identity.named_limit(writes), (Some(policy("5/1m")), None));
    assert_eq!(identity.named_limit(reads), (None, None), "{}", f.name);

    let rotated = ok(admin.rotate(&record.id, Duration::from_secs(60)).await);
    assert_eq!(rotated.new.record.limits, changed.limits, "{}", f.name);

    let cleared = ok(admin.set_limits(&record.id, NamedLimits::new()).await);
    assert!(cleared.limits.is_empty());
    assert!(
        ok(f.store.get(&record.id).await).limits.is_empty(),
        "{}",
        f.name
    );

    // An owner's named limits come with its keys' records; changing them evicts the keys.
    let owner = ok(admin
        .create_owner(NewOwner::new("named-owner").limits(limits("writes: 3/1m")))
        .await);
    assert_eq!(owner.limits, limits("writes: 3/1m"));
    assert_eq!(
        ok(f.store.get_owner("named-owner").await),
        owner,
        "{}",
        f.name
    );
    let (member, _) = create(
        &f,
        NewKey::new("member")
            .owner("named-owner")
            .limits(limits("writes: 1/1s")),
    )
    .await;
    let identity = ok(verify(&f, &member, None).await);
    assert_eq!(
        identity.named_limit(writes),
        (Some(policy("1/1s")), Some(policy("3/1m"))),
        "{}",
        f.name
    );
    let updated = ok(admin
        .update_owner(
            "named-owner",
            OwnerUpdate::new().limits(limits("writes: 7/1m, reads: 9/1m")),
        )
        .await);
    assert_eq!(updated.limits, limits("reads: 9/1m, writes: 7/1m"));
    assert_eq!(
        ok(f.store.get_owner("named-owner").await),
        updated,
        "{}",
        f.name
    );
    let identity = ok(verify(&f, &member, None).await);
    assert_eq!(
        identity.named_limit(writes),
        (Some(policy("1/1s")), Some(policy("7/1m"))),
        "{}",
        f.name
    );
    assert_eq!(identity.named_limit(reads), (None, Some(policy("9/1m"))));
    // A bare owner (created with its first key) has none.
    create(&f, NewKey::new("c").owner("bare-named")).await;
    assert!(ok(f.store.get_owner("bare-named").await).limits.is_empty());
}

fn quota(text: &str) -> keygate::quota::Quota {
    ok(text.parse())
}

fn policy(text: &str) -> RatePolicy {
    ok(text.parse())
}

// ---- one test per case and store ----------------------------------------------------------

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $case() {
                super::$case(keygate_tests::stores::memory()).await;
            })*
        }
        mod sqlite {
            $(#[tokio::test]
            async fn $case() {
                super::$case(keygate_tests::stores::sqlite().await).await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $case() {
                if let Some(fixture) = keygate_tests::stores::postgres().await {
                    super::$case(fixture).await;
                }
            })*
        }
    };
}

conformance!(
    create_get_find,
    list_filters_and_paging,
    list_filters_by_prefix,
    list_filters_by_lineage,
    changes,
    disable_enable_revoke,
    delete_and_ids_never_reused,
    rotation,
    last_used,
    outage,
    concurrent_changes_are_all_kept,
    concurrent_rotations_replace_a_key_once,
    a_refused_rotation_changes_nothing,
    canaries,
    owners,
    owner_bulk_actions,
    owner_rate_limits,
    quotas,
    quota_rotation,
    credit_top_ups,
    owner_credit_top_ups,
    policy_settings,
    lifetime_policy,
    quota_counters,
    named_limits,
);

#[test]
fn stores_module_is_used() {
    let _ = stores::POSTGRES_URL_ENV;
}

// ---- the SQL stores only ------------------------------------------------------------------

/// A delete is one transaction: when its second statement (writing the tombstone that keeps the
/// id from being used again) fails, the key is still there, unchanged. The failure is planted
/// by `plant_tombstone`: a tombstone for the live key's id, as damage could leave.
async fn a_failed_delete_changes_nothing<S: TestStore>(
    f: Fixture<S>,
    plant_tombstone: impl AsyncFnOnce(KeyId),
) {
    let (key, record) = create(&f, NewKey::new("survivor")).await;
    plant_tombstone(record.id).await;
    assert!(
        f.store
            .delete(&record.id)
            .await
            .is_err_and(|e| e.is_unavailable()),
        "{}: the tombstone cannot be written",
        f.name
    );
    assert_eq!(
        ok(f.store.get(&record.id).await),
        record,
        "{}: rolled back",
        f.name
    );
    assert!(verify(&f, &key, None).await.is_ok());
}

/// A key row keygate cannot read back (damaged, or written by something else) is the store
/// failing: `Unavailable` from find, get and list, and 503 on the request path, never 401 or
/// a panic. Each of `damages` (an `UPDATE … WHERE id = $1`) is run on a key of its own.
async fn a_damaged_row_is_unavailable<S: TestStore>(
    f: Fixture<S>,
    damages: &[&'static str],
    run: impl AsyncFn(&'static str, KeyId),
) {
    for &damage in damages {
        let (key, record) = create(&f, NewKey::new("damaged")).await;
        run(damage, record.id).await;
        assert!(
            f.store
                .find(&record.id)
                .await
                .is_err_and(|e| e.is_unavailable()),
            "{}: find after {damage}",
            f.name
        );
        assert!(
            f.store
                .get(&record.id)
                .await
                .is_err_and(|e| e.is_unavailable())
        );
        assert!(
            f.store
                .list(&KeyFilter::default(), PageRequest::default())
                .await
                .is_err_and(|e| e.is_unavailable())
        );
        f.verifier.invalidate_all();
        assert_eq!(
            refused(&f, &key).await,
            Reason::StoreUnavailable,
            "{}",
            f.name
        );
        ok(f.store.delete(&record.id).await);
    }
}

#[tokio::test]
async fn sqlite_a_damaged_row_is_unavailable() {
    let f = stores::sqlite().await;
    let pool = f.store.pool().clone();
    let damages = [
        "UPDATE keygate_keys SET scopes = 'not json' WHERE id = $1",
        "UPDATE keygate_keys SET allowed_ips = '[\"not an address\"]' WHERE id = $1",
        "UPDATE keygate_keys SET metadata = '[1]' WHERE id = $1",
        "UPDATE keygate_keys SET rate_limit = 'often' WHERE id = $1",
    ];
    a_damaged_row_is_unavailable(f, &damages, async |damage, id: KeyId| {
        keygate_sqlx::sqlx::query(damage)
            .bind(id.as_str())
            .execute(&pool)
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn postgres_a_damaged_row_is_unavailable() {
    let Some(f) = stores::postgres().await else {
        return;
    };
    let pool = f.store.pool().clone();
    let damages = [
        "UPDATE keygate_keys SET scopes = ARRAY['not a scope'] WHERE id = $1",
        "UPDATE keygate_keys SET allowed_ips = ARRAY['not an address'] WHERE id = $1",
        "UPDATE keygate_keys SET metadata = '[1]'::jsonb WHERE id = $1",
        "UPDATE keygate_keys SET rate_limit = 'often' WHERE id = $1",
    ];
    a_damaged_row_is_unavailable(f, &damages, async |damage, id: KeyId| {
        keygate_sqlx::sqlx::query(damage)
            .bind(id.as_str())
            .execute(&pool)
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn sqlite_a_failed_delete_changes_nothing() {
    let f = stores::sqlite().await;
    let pool = f.store.pool().clone();
    a_failed_delete_changes_nothing(f, async move |id: KeyId| {
        keygate_sqlx::sqlx::query(
            "INSERT INTO keygate_deleted_keys (id, deleted_at) VALUES ($1, 0)",
        )
        .bind(id.as_str())
        .execute(&pool)
        .await
        .unwrap();
    })
    .await;
}

#[tokio::test]
async fn postgres_a_failed_delete_changes_nothing() {
    let Some(f) = stores::postgres().await else {
        return;
    };
    let pool = f.store.pool().clone();
    a_failed_delete_changes_nothing(f, async move |id: KeyId| {
        keygate_sqlx::sqlx::query(
            "INSERT INTO keygate_deleted_keys (id, deleted_at) VALUES ($1, now())",
        )
        .bind(id.as_str())
        .execute(&pool)
        .await
        .unwrap();
    })
    .await;
}
