//! Environments (issue 17 item 5): one verifier accepts keys of several prefixes, each naming an
//! environment. What a caller relies on: the environment is the stored record's, never what the
//! client presents; `Identity::environment`; per-environment default rate limits; rotation keeps
//! a key's environment; the store's settings record the environments and refuse a keyring that
//! disagrees.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, SystemTime};

use keygate::clock::ManualClock;
use keygate::rate::{RateLimit, RatePolicy};
use keygate::store::{SettingsError, StoreSettings, environment_setting};
use keygate::{
    HttpRequestView, KeyFormat, KeyStore, Keyring, MemoryStore, NewKey, Peppers, Reason, Rejection,
    Verifier,
};

fn keyring() -> Keyring {
    Keyring::builder()
        .environment("live", KeyFormat::new("acme_live").unwrap())
        .environment("test", KeyFormat::new("acme_test").unwrap())
        .build(Peppers::development())
        .unwrap()
}

fn verifier(store: MemoryStore) -> Verifier {
    Verifier::builder(keyring(), store)
        .clock(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 30),
        ))
        .build()
}

async fn verify(
    verifier: &Verifier,
    key: &str,
) -> Result<std::sync::Arc<keygate::Identity>, Rejection> {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", key.parse().unwrap());
    let uri = http::Uri::from_static("/");
    verifier
        .verify_request(&HttpRequestView::new(&headers, &uri, None))
        .await
}

/// `key` with its prefix replaced by `prefix` and the checksum recomputed: the checksum is a
/// public CRC32, so anyone holding a key can do this.
fn represented(key: &str, from: &str, prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let rest = key.strip_prefix(from).unwrap();
    let body = format!("{prefix}{}", &rest[..rest.len() - 6]);
    let mut crc = crc32fast::hash(body.as_bytes());
    let mut tail = [b'0'; 6];
    for slot in tail.iter_mut().rev() {
        *slot = ALPHABET[(crc % 62) as usize];
        crc /= 62;
    }
    format!("{body}{}", String::from_utf8_lossy(&tail))
}

/// The security requirement: a live key presented under the test prefix (checksum fixed up),
/// or a test key under the live prefix, hashes to its record's digest (the prefix is not hashed)
/// and is still refused, as a wrong secret, with no identity handed out: whether its record
/// was cached by an honest request first or is read from the store for the forged one.
#[tokio::test]
async fn a_key_presented_under_another_environment_prefix_is_an_invalid_key() {
    for honest_first in [true, false] {
        let verifier = verifier(MemoryStore::new());
        let admin = verifier.admin();
        let live = admin.create_key(NewKey::new("live key")).await.unwrap();
        let test = admin
            .create_key(NewKey::new("test key").environment("test"))
            .await
            .unwrap();
        assert_eq!(live.record.prefix, "acme_live");
        assert_eq!(test.record.prefix, "acme_test");
        let live_key = live.key.expose_secret();
        let test_key = test.key.expose_secret();
        let cases = [
            (live_key, represented(live_key, "acme_live", "acme_test")),
            (test_key, represented(test_key, "acme_test", "acme_live")),
        ];
        for (honest, forged) in &cases {
            // The forgery is well-formed for this keyring: only the record can refuse it.
            assert!(verifier.keyring().parse(forged.as_bytes()).is_ok());
            if honest_first {
                assert!(verify(&verifier, honest).await.is_ok());
            }
            for _ in 0..3 {
                let refused = verify(&verifier, forged).await.unwrap_err();
                assert_eq!(refused.reason(), Reason::WrongSecret, "{honest_first}");
                assert_eq!(refused.status(), http::StatusCode::UNAUTHORIZED);
            }
            // The honest key still works, in its own environment.
            let identity = verify(&verifier, honest).await.unwrap();
            assert!(identity.environment().is_some());
        }
        let live_identity = verify(&verifier, live_key).await.unwrap();
        assert_eq!(live_identity.environment(), Some("live"));
        let test_identity = verify(&verifier, test_key).await.unwrap();
        assert_eq!(test_identity.environment(), Some("test"));
    }
}

/// A key of a prefix the keyring does not have is refused by its format, as before.
#[tokio::test]
async fn a_prefix_of_no_environment_is_refused_by_format() {
    let verifier = verifier(MemoryStore::new());
    let live = verifier
        .admin()
        .create_key(NewKey::new("live"))
        .await
        .unwrap();
    let other = represented(live.key.expose_secret(), "acme_live", "acme_staging");
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", other.parse().unwrap());
    let uri = http::Uri::from_static("/");
    let refused = verifier.extract(&HttpRequestView::new(&headers, &uri, None));
    assert_eq!(refused.unwrap_err().reason(), Reason::WrongPrefix);
}

/// A keyring of one format (`Keyring::new`, `Keyring::development`) names no environment.
#[tokio::test]
async fn a_single_format_keyring_names_no_environment() {
    let verifier = Verifier::builder(
        Keyring::development("acme_live").unwrap(),
        MemoryStore::new(),
    )
    .build();
    let created = verifier.admin().create_key(NewKey::new("k")).await.unwrap();
    let identity = verify(&verifier, created.key.expose_secret())
        .await
        .unwrap();
    assert_eq!(identity.environment(), None);
    // One named environment: the same format, named.
    let named = Keyring::builder()
        .environment("live", KeyFormat::new("acme_live").unwrap())
        .build(Peppers::development())
        .unwrap();
    let verifier = Verifier::builder(named, MemoryStore::new()).build();
    let created = verifier.admin().create_key(NewKey::new("k")).await.unwrap();
    let identity = verify(&verifier, created.key.expose_secret())
        .await
        .unwrap();
    assert_eq!(identity.environment(), Some("live"));
}

/// The policy a key is limited by: the one its 429 reports, after `burst` allowed requests.
async fn limited_by(verifier: &Verifier, key: &str, burst: u32) -> Option<RatePolicy> {
    for _ in 0..burst {
        verify(verifier, key).await.unwrap();
    }
    let refused = verify(verifier, key).await.err()?;
    assert_eq!(refused.reason(), Reason::RateLimited);
    refused.rate_decision().map(|decision| decision.policy)
}

/// A key's own limit wins, then its environment's default, then the verifier's default.
#[tokio::test]
async fn limits_resolve_key_then_environment_then_verifier() {
    let policy = |text: &str| text.parse::<RatePolicy>().unwrap();
    let verifier = Verifier::builder(keyring(), MemoryStore::new())
        .clock(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 30),
        ))
        .default_rate_limit(policy("5/1h"))
        .environment_rate_limit("test", policy("2/1h"))
        .build();
    let admin = verifier.admin();
    let test_default = admin
        .create_key(NewKey::new("a").environment("test"))
        .await
        .unwrap();
    let test_own = admin
        .create_key(
            NewKey::new("b")
                .environment("test")
                .rate_limit(policy("3/1h")),
        )
        .await
        .unwrap();
    let test_unlimited = admin
        .create_key(
            NewKey::new("c")
                .environment("test")
                .rate_limit(RateLimit::Unlimited),
        )
        .await
        .unwrap();
    let live_default = admin.create_key(NewKey::new("d")).await.unwrap();

    assert_eq!(
        limited_by(&verifier, test_default.key.expose_secret(), 2).await,
        Some(policy("2/1h")),
        "the environment's default"
    );
    assert_eq!(
        limited_by(&verifier, test_own.key.expose_secret(), 3).await,
        Some(policy("3/1h")),
        "the key's own limit wins"
    );
    assert_eq!(
        limited_by(&verifier, test_unlimited.key.expose_secret(), 50).await,
        None,
        "an unlimited key stays unlimited"
    );
    assert_eq!(
        limited_by(&verifier, live_default.key.expose_secret(), 5).await,
        Some(policy("5/1h")),
        "no environment default: the verifier's"
    );
}

#[test]
#[should_panic(expected = "no environment \"staging\"")]
fn a_limit_for_an_unknown_environment_is_a_configuration_error() {
    let _ = Verifier::builder(keyring(), MemoryStore::new())
        .environment_rate_limit("staging", "1/1s".parse::<RatePolicy>().unwrap());
}

/// Rotation keeps the key's environment: a test key's successor is a test key.
#[tokio::test]
async fn rotation_keeps_the_environment() {
    let verifier = verifier(MemoryStore::new());
    let admin = verifier.admin();
    let test = admin
        .create_key(NewKey::new("ci").environment("test"))
        .await
        .unwrap();
    let rotated = admin
        .rotate(&test.record.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(rotated.new.record.prefix, "acme_test");
    let identity = verify(&verifier, rotated.new.key.expose_secret())
        .await
        .unwrap();
    assert_eq!(identity.environment(), Some("test"));
}

/// Minting in an environment the keyring lacks is a typed error; nothing is stored.
#[tokio::test]
async fn an_unknown_environment_is_refused_at_creation() {
    let verifier = verifier(MemoryStore::new());
    let refused = verifier
        .admin()
        .create_key(NewKey::new("x").environment("staging"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &refused,
            keygate::StoreError::InvalidInput(keygate::record::InvalidInput::UnknownEnvironment(name)) if name == "staging"
        ),
        "{refused:?}"
    );
}

async fn settings(store: &MemoryStore) -> StoreSettings {
    store.settings().await.unwrap().unwrap()
}

/// `start()` records the prefixes the deployment accepts, and refuses a keyring whose
/// environments disagree with them; a keyring that adds an environment records it.
#[tokio::test]
async fn start_records_and_checks_the_environments() {
    let store = MemoryStore::new();
    Verifier::builder(keyring(), store.clone())
        .start()
        .await
        .unwrap();
    let recorded = settings(&store).await;
    assert_eq!(recorded.prefix(), Some("acme_live"));
    assert_eq!(
        recorded.environments().into_iter().collect::<Vec<_>>(),
        [("live", "acme_live"), ("test", "acme_test")]
    );
    assert_eq!(recorded.prefixes(), ["acme_live", "acme_test"]);
    assert_eq!(recorded.environment_of("acme_test"), Some("test"));
    assert_eq!(
        recorded.get(&environment_setting("test")),
        Some("acme_test")
    );

    let start = |keyring: Keyring| {
        let store = store.clone();
        async move { Verifier::builder(keyring, store).start().await.err() }
    };
    let envs = |list: &[(&str, &str)]| {
        list.iter()
            .fold(Keyring::builder(), |b, (name, prefix)| {
                b.environment(name, KeyFormat::new(prefix).unwrap())
            })
            .build(Peppers::development())
            .unwrap()
    };
    // The same keyring, or one with fewer environments, or a plain keyring of the default
    // prefix: accepted.
    assert!(start(keyring()).await.is_none());
    assert!(start(envs(&[("live", "acme_live")])).await.is_none());
    assert!(
        start(Keyring::development("acme_live").unwrap())
            .await
            .is_none()
    );
    // A test environment of another prefix, or the test prefix under another name: refused.
    for keyring in [
        envs(&[("live", "acme_live"), ("test", "acme_sandbox")]),
        envs(&[("live", "acme_live"), ("sandbox", "acme_test")]),
    ] {
        match start(keyring).await {
            Some(SettingsError::WrongEnvironment { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    // Another default environment: the recorded `key.prefix` refuses it.
    assert!(matches!(
        start(envs(&[("test", "acme_test"), ("live", "acme_live")])).await,
        Some(SettingsError::WrongPrefix { .. })
    ));
    assert_eq!(settings(&store).await, recorded, "refusals write nothing");
    // A new environment is added to what is recorded.
    assert!(
        start(envs(&[
            ("live", "acme_live"),
            ("test", "acme_test"),
            ("staging", "acme_staging")
        ]))
        .await
        .is_none()
    );
    assert_eq!(
        settings(&store).await.prefixes(),
        ["acme_live", "acme_staging", "acme_test"]
    );
}
