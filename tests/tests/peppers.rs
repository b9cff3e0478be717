//! Pepper safety, on every store (MemoryStore, SQLite, PostgreSQL): the store records a
//! fingerprint per pepper version and whether it is a development store; a verifier given a
//! pepper that does not match refuses to start (and, built without the check, answers 503, never
//! 401), with nothing written; keys under an old pepper move to the current one, write-behind.
//! The store also records its deployment's key prefix at the first `start()`, which then
//! refuses a keyring of another prefix (`build()` does not check it).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Uri};
use keygate::store::{SettingsError, StoreSettings};
use keygate::{
    HttpRequestView, Identity, KeyFormat, Keyring, NewKey, Pepper, Peppers, Reason, Rejection,
    Verifier,
};
use keygate_tests::stores::{Fixture, TestStore};

const A: &str = "pepper-a-0123456789abcdefghijklmnopqrstuv";
const B: &str = "pepper-b-0123456789abcdefghijklmnopqrstuv";
const C: &str = "pepper-c-0123456789abcdefghijklmnopqrstuv";

fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    // The error's Display, which is what a store error says to an operator.
    result.unwrap_or_else(|e| panic!("{e}"))
}

fn keyring(peppers: &str) -> Keyring {
    let peppers = if peppers == "development" {
        Peppers::development()
    } else {
        ok(Peppers::parse(peppers))
    };
    Keyring::new(ok(KeyFormat::new("pep_test")), peppers)
}

fn builder<S: TestStore>(f: &Fixture<S>, peppers: &str) -> keygate::VerifierBuilder {
    Verifier::builder(keyring(peppers), f.store.clone()).clock(f.clock.clone())
}

async fn start<S: TestStore>(f: &Fixture<S>, peppers: &str) -> Result<Verifier, SettingsError> {
    builder(f, peppers).start().await
}

async fn settings<S: TestStore>(f: &Fixture<S>) -> StoreSettings {
    ok(f.store.settings().await).unwrap_or_else(|| panic!("{}: keeps no settings", f.name))
}

async fn verify(verifier: &Verifier, key: &str) -> Result<Arc<Identity>, Rejection> {
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", ok(HeaderValue::from_str(key)));
    let uri = Uri::from_static("/");
    verifier
        .verify_request(&HttpRequestView::new(&headers, &uri, None))
        .await
}

async fn versions<S: TestStore>(f: &Fixture<S>) -> Vec<(u32, u64)> {
    ok(f.store.pepper_versions().await)
}

fn fingerprint(version: u32, secret: &str) -> String {
    ok(Pepper::new(version, secret)).fingerprint()
}

// ---- cases --------------------------------------------------------------------------------

/// First use records a fingerprint per configured version (never the pepper); settings are
/// never overwritten.
async fn fingerprints_recorded_on_first_use<S: TestStore>(f: Fixture<S>) {
    assert!(settings(&f).await.is_empty(), "{}", f.name);
    let verifier = ok(start(&f, &format!("2:{B},1:{A}")).await);
    let recorded = settings(&f).await;
    assert_eq!(recorded.fingerprint(1), Some(fingerprint(1, A).as_str()));
    assert_eq!(recorded.fingerprint(2), Some(fingerprint(2, B).as_str()));
    assert_ne!(fingerprint(1, A), fingerprint(1, B));
    assert!(!recorded.is_development(), "{}", f.name);
    for (name, value) in recorded.iter() {
        assert!(
            !value.contains("pepper-") && !name.contains("pepper-"),
            "{}: a pepper was stored: {name}={value}",
            f.name
        );
    }
    // Settings are added, never replaced.
    ok(f.store
        .add_settings(&[("pepper.1.fingerprint".into(), "0000000000000000".into())])
        .await);
    assert_eq!(settings(&f).await, recorded, "{}", f.name);
    // The same peppers start again; a key made now verifies.
    let created = ok(verifier.admin().create_key(NewKey::new("k")).await);
    let again = ok(start(&f, &format!("2:{B},1:{A}")).await);
    ok(verify(&again, created.key.expose_secret()).await);
}

/// A pepper that is not the one recorded for its version is refused, naming the version, with
/// nothing written; a verifier built without the start-up check answers 503, never 401, and
/// creates nothing.
async fn wrong_pepper_refused<S: TestStore>(f: Fixture<S>) {
    let right = ok(start(&f, &format!("1:{A}")).await);
    let created = ok(right.admin().create_key(NewKey::new("k")).await);
    let before = settings(&f).await;

    let error = match start(&f, &format!("1:{C}")).await {
        Err(error) => error,
        Ok(_) => panic!("{}: a wrong pepper started", f.name),
    };
    assert!(
        matches!(error, SettingsError::WrongPepper { version: 1, .. }),
        "{}: {error:?}",
        f.name
    );
    let message = error.to_string();
    assert!(message.contains("pepper version 1"), "{message}");
    assert!(!message.contains(C) && !message.contains(A), "{message}");
    // A new current version next to a wrong old one: refused as a whole, v2 not recorded.
    assert!(start(&f, &format!("2:{B},1:{C}")).await.is_err());
    assert_eq!(settings(&f).await, before, "{}: nothing written", f.name);

    let unchecked = builder(&f, &format!("1:{C}")).build();
    let rejection = match verify(&unchecked, created.key.expose_secret()).await {
        Err(rejection) => rejection,
        Ok(_) => panic!("{}: accepted under a wrong pepper", f.name),
    };
    assert_eq!(rejection.reason(), Reason::StoreUnavailable, "{}", f.name);
    assert_eq!(rejection.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        unchecked
            .admin()
            .create_key(NewKey::new("x"))
            .await
            .is_err(),
        "{}: minted under a wrong pepper",
        f.name
    );
    assert_eq!(versions(&f).await, vec![(1, 1)], "{}", f.name);
    assert_eq!(settings(&f).await, before, "{}: nothing written", f.name);
    // The right pepper still works.
    ok(verify(&right, created.key.expose_secret()).await);
}

/// The development pepper, asked for by name, makes a development store; a real pepper is then
/// refused there, and the development pepper is refused on a store with real peppers.
async fn development_store<S: TestStore>(f: Fixture<S>) {
    let dev = ok(start(&f, "development").await);
    let created = ok(dev.admin().create_key(NewKey::new("demo")).await);
    let recorded = settings(&f).await;
    assert!(recorded.is_development(), "{}", f.name);
    assert_eq!(
        recorded.fingerprint(0),
        Some(keygate::pepper::development_fingerprint().as_str())
    );
    let error = start(&f, &format!("1:{A}")).await.err();
    assert!(
        matches!(error, Some(SettingsError::DevelopmentStore)),
        "{}: {error:?}",
        f.name
    );
    // Even alongside the development pepper.
    assert!(
        start(
            &f,
            &format!("1:{A},0:{}", keygate::pepper::DEVELOPMENT_PEPPER)
        )
        .await
        .is_err()
    );
    assert_eq!(settings(&f).await, recorded, "{}: nothing written", f.name);
    ok(verify(
        &ok(start(&f, "development").await),
        created.key.expose_secret(),
    )
    .await);
}

async fn development_pepper_refused_on_a_real_store<S: TestStore>(f: Fixture<S>) {
    ok(start(&f, &format!("1:{A}")).await);
    let before = settings(&f).await;
    let error = start(&f, "development").await.err();
    assert!(
        matches!(error, Some(SettingsError::NotDevelopmentStore { .. })),
        "{}: {error:?}",
        f.name
    );
    assert_eq!(settings(&f).await, before, "{}: nothing written", f.name);
}

/// A store from before settings were kept, holding keys under a real pepper: the development
/// pepper may not claim it.
async fn development_pepper_refused_on_an_unrecorded_store_with_keys<S: TestStore>(f: Fixture<S>) {
    let minted = ok(keyring(&format!("1:{A}")).mint(NewKey::new("old")));
    ok(f.store.create(minted).await);
    assert!(settings(&f).await.is_empty());
    let error = start(&f, "development").await.err();
    assert!(
        matches!(
            error,
            Some(SettingsError::NotDevelopmentStore { has_keys: true })
        ),
        "{}: {error:?}",
        f.name
    );
    assert!(settings(&f).await.is_empty(), "{}: nothing written", f.name);
}

/// Checklist item 7: keys under v1 verify once v2 is current, and move to v2 at the next
/// write-behind flush; then v1 can be removed and they still verify. A key still under a
/// removed version is refused as a wrong secret (401 invalid_token).
async fn rehash_after_rotation<S: TestStore>(f: Fixture<S>) {
    let v1 = ok(start(&f, &format!("1:{A}")).await);
    let moved = ok(v1.admin().create_key(NewKey::new("moved")).await);
    let stays = ok(v1.admin().create_key(NewKey::new("stays")).await);
    drop(v1);
    assert_eq!(versions(&f).await, vec![(1, 2)], "{}", f.name);

    let v2 = ok(start(&f, &format!("2:{B},1:{A}")).await);
    let id = moved.record.id;
    for _ in 0..3 {
        ok(verify(&v2, moved.key.expose_secret()).await);
    }
    // Write-behind: the store is untouched until the flush.
    assert_eq!(ok(f.store.get(&id).await).pepper_version, 1, "{}", f.name);
    ok(v2.flush_last_used().await);
    let record = ok(f.store.get(&id).await);
    assert_eq!(record.pepper_version, 2, "{}", f.name);
    assert_ne!(record.digest, moved.record.digest);
    assert_eq!(v2.last_used_stats().rehashed, 1, "once per key");
    assert_eq!(versions(&f).await, vec![(1, 1), (2, 1)], "{}", f.name);
    // Still verifies through the cache, and after a reload.
    ok(verify(&v2, moved.key.expose_secret()).await);
    v2.invalidate_all();
    ok(verify(&v2, moved.key.expose_secret()).await);
    ok(v2.flush_last_used().await);
    assert_eq!(
        v2.last_used_stats().rehashed,
        1,
        "a key under v2 is not re-hashed"
    );

    // v1 retired.
    let only_v2 = ok(start(&f, &format!("2:{B}")).await);
    ok(verify(&only_v2, moved.key.expose_secret()).await);
    let refused = verify(&only_v2, stays.key.expose_secret()).await.err();
    assert_eq!(
        refused.as_ref().map(Rejection::reason),
        Some(Reason::WrongSecret),
        "{}",
        f.name
    );
    assert_eq!(
        refused.map(|r| r.status()),
        Some(http::StatusCode::UNAUTHORIZED)
    );
}

/// `start()` records the keyring's prefix on first use and refuses another one, naming both,
/// with nothing written (not even a new pepper version's fingerprint); `build()` checks and
/// records no prefix, so services of several prefixes can share a store.
async fn prefix_recorded_and_enforced<S: TestStore>(f: Fixture<S>) {
    assert_eq!(settings(&f).await.prefix(), None, "{}", f.name);
    let first = ok(start(&f, &format!("1:{A}")).await);
    let created = ok(first.admin().create_key(NewKey::new("k")).await);
    let recorded = settings(&f).await;
    assert_eq!(recorded.prefix(), Some("pep_test"), "{}", f.name);
    assert_eq!(
        recorded.get(keygate::store::PREFIX_SETTING),
        Some("pep_test")
    );

    let other = |peppers: &str| {
        Keyring::new(
            ok(KeyFormat::new("other_test")),
            ok(Peppers::parse(peppers)),
        )
    };
    for peppers in [format!("1:{A}"), format!("2:{B},1:{A}")] {
        let error = match Verifier::builder(other(&peppers), f.store.clone())
            .clock(f.clock.clone())
            .start()
            .await
        {
            Err(error) => error,
            Ok(_) => panic!("{}: started with another prefix", f.name),
        };
        match &error {
            SettingsError::WrongPrefix { recorded, given } => {
                assert_eq!(recorded, "pep_test", "{}", f.name);
                assert_eq!(given, "other_test", "{}", f.name);
            }
            other => panic!("{}: {other:?}", f.name),
        }
        let message = error.to_string();
        assert!(
            message.contains("`pep_test`") && message.contains("`other_test`"),
            "{message}"
        );
        assert_eq!(settings(&f).await, recorded, "{}: nothing written", f.name);
    }

    // Unchecked: keys of its own prefix work; the store's prefix stays; the other prefix's
    // keys are not this verifier's (401, not 503).
    let shared = Verifier::builder(other(&format!("1:{A}")), f.store.clone())
        .clock(f.clock.clone())
        .build();
    let own = ok(shared.admin().create_key(NewKey::new("own")).await);
    assert!(own.key.expose_secret().starts_with("other_test_"));
    ok(verify(&shared, own.key.expose_secret()).await);
    let refused = verify(&shared, created.key.expose_secret()).await.err();
    assert_eq!(
        refused.map(|r| r.status()),
        Some(http::StatusCode::UNAUTHORIZED),
        "{}",
        f.name
    );
    assert_eq!(settings(&f).await, recorded, "{}", f.name);
    // The recorded prefix starts again, and its key verifies.
    ok(verify(
        &ok(start(&f, &format!("1:{A}")).await),
        created.key.expose_secret(),
    )
    .await);
}

/// A re-hash only applies to a key still under the version it was computed from.
async fn rehash_is_conditional<S: TestStore>(f: Fixture<S>) {
    let v1 = ok(start(&f, &format!("1:{A}")).await);
    let created = ok(v1.admin().create_key(NewKey::new("k")).await);
    let id = created.record.id;
    let other = created.record.digest;
    ok(f.store
        .rehash(&[keygate::store::KeyRehash::new(id, 7, 2, other)])
        .await);
    assert_eq!(ok(f.store.get(&id).await).pepper_version, 1, "{}", f.name);
    ok(f.store
        .rehash(&[keygate::store::KeyRehash::new(id, 1, 2, other)])
        .await);
    assert_eq!(ok(f.store.get(&id).await).pepper_version, 2, "{}", f.name);
}

// ---- one test per case and store ----------------------------------------------------------

macro_rules! per_store {
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

per_store!(
    fingerprints_recorded_on_first_use,
    wrong_pepper_refused,
    development_store,
    development_pepper_refused_on_a_real_store,
    development_pepper_refused_on_an_unrecorded_store_with_keys,
    rehash_after_rotation,
    rehash_is_conditional,
    prefix_recorded_and_enforced,
);
