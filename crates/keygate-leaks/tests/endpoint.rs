//! The leak endpoint through both adapters: one table of cases, run against axum and
//! actix-web, each on a fresh store; then the actions, a running service refusing a reported
//! key, and idempotence.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::*;
use keygate::audit::Action;
use keygate::rejection::Reason;
use keygate::{KeyAdmin as _, KeyRecord, Verifier};
use keygate_leaks::LeakAction;

type Request = (Vec<(&'static str, String)>, Vec<u8>);

struct Case {
    name: &'static str,
    request: fn(&Fixture) -> Request,
    status: u16,
    /// The feedback body expected with a 200.
    feedback: Option<fn(&Fixture) -> serde_json::Value>,
    /// Whether the active key ends revoked (one audit event); otherwise nothing changes.
    revokes_active: bool,
}

fn active(f: &Fixture) -> String {
    f.active.1.expose_secret().to_owned()
}

fn revoked(f: &Fixture) -> String {
    f.revoked.1.expose_secret().to_owned()
}

/// A well-formed key with a correct checksum whose id is in no store.
fn unknown() -> String {
    craft(PREFIX, "Zz9Zz9Zz9Zz9", &"q".repeat(30))
}

fn signed_report(f: &Fixture, tokens: &[&str]) -> Request {
    let body = report(tokens);
    (signed(&f.signer, &body), body)
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "a matched active key is revoked: true_positive",
            request: |f| signed_report(f, &[&active(f)]),
            status: 200,
            feedback: Some(|f| feedback(&[(&active(f), TOKEN_TYPE, "true_positive")])),
            revokes_active: true,
        },
        Case {
            name: "an already revoked key: true_positive, not changed again",
            request: |f| signed_report(f, &[&revoked(f)]),
            status: 200,
            feedback: Some(|f| feedback(&[(&revoked(f), TOKEN_TYPE, "true_positive")])),
            revokes_active: false,
        },
        Case {
            name: "an unknown id with a valid checksum is ignored",
            request: |f| signed_report(f, &[&unknown()]),
            status: 200,
            feedback: Some(|_| feedback(&[(&unknown(), TOKEN_TYPE, "false_positive")])),
            revokes_active: false,
        },
        Case {
            name: "a bad checksum is ignored",
            request: |f| signed_report(f, &[&bad_checksum(f)]),
            status: 200,
            feedback: Some(|f| feedback(&[(&bad_checksum(f), TOKEN_TYPE, "false_positive")])),
            revokes_active: false,
        },
        Case {
            name: "the active key's id with another secret is ignored",
            request: |f| signed_report(f, &[&wrong_secret(f)]),
            status: 200,
            feedback: Some(|f| feedback(&[(&wrong_secret(f), TOKEN_TYPE, "false_positive")])),
            revokes_active: false,
        },
        Case {
            name: "the active key's id and secret under another prefix are ignored",
            request: |f| signed_report(f, &[&other_prefix(f)]),
            status: 200,
            feedback: Some(|f| feedback(&[(&other_prefix(f), TOKEN_TYPE, "false_positive")])),
            revokes_active: false,
        },
        Case {
            name: "a token of another format is ignored",
            request: |f| signed_report(f, &["ghp_16C7e42F292c6912E7710c838347Ae178B4a"]),
            status: 200,
            feedback: Some(|_| {
                feedback(&[(
                    "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
                    TOKEN_TYPE,
                    "false_positive",
                )])
            }),
            revokes_active: false,
        },
        Case {
            name: "a batch is answered entry by entry, in order",
            request: |f| signed_report(f, &[&unknown(), &active(f), &revoked(f)]),
            status: 200,
            feedback: Some(|f| {
                feedback(&[
                    (&unknown(), TOKEN_TYPE, "false_positive"),
                    (&active(f), TOKEN_TYPE, "true_positive"),
                    (&revoked(f), TOKEN_TYPE, "true_positive"),
                ])
            }),
            revokes_active: true,
        },
        Case {
            name: "the same key twice in one report is changed once",
            request: |f| signed_report(f, &[&active(f), &active(f)]),
            status: 200,
            feedback: Some(|f| {
                feedback(&[
                    (&active(f), TOKEN_TYPE, "true_positive"),
                    (&active(f), TOKEN_TYPE, "true_positive"),
                ])
            }),
            revokes_active: true,
        },
        Case {
            name: "an empty report",
            request: |f| signed_report(f, &[]),
            status: 200,
            feedback: Some(|_| serde_json::json!([])),
            revokes_active: false,
        },
        Case {
            name: "a high-s signature is accepted (GitHub's signers do not normalise s)",
            request: |f| {
                let body = report(&[&active(f)]);
                let signature = f.signer.signature(&body);
                // RustCrypto does not normalise either: half its signatures are high-s.
                let high = if signature.normalize_s().is_some() {
                    signature
                } else {
                    let (r, s) = signature.split_scalars();
                    p256::ecdsa::Signature::from_scalars(r, -s).unwrap()
                };
                assert!(high.normalize_s().is_some(), "the signature is high-s");
                let headers = vec![
                    ("Github-Public-Key-Identifier", IDENTIFIER.to_owned()),
                    (
                        "Github-Public-Key-Signature",
                        b64(&high.to_der().to_bytes()),
                    ),
                ];
                (headers, body)
            },
            status: 200,
            feedback: Some(|f| feedback(&[(&active(f), TOKEN_TYPE, "true_positive")])),
            revokes_active: true,
        },
        Case {
            name: "GitHub's documented sample request verifies with GitHub's published key",
            request: |_| {
                let headers = vec![
                    ("Github-Public-Key-Identifier", SPEC_IDENTIFIER.to_owned()),
                    ("Github-Public-Key-Signature", SPEC_SIGNATURE.to_owned()),
                ];
                (headers, SPEC_PAYLOAD.as_bytes().to_vec())
            },
            status: 200,
            feedback: Some(|_| feedback(&[("some_token", "some_type", "false_positive")])),
            revokes_active: false,
        },
        Case {
            name: "no signature headers: 401",
            request: |f| (Vec::new(), report(&[&active(f)])),
            status: 401,
            feedback: None,
            revokes_active: false,
        },
        Case {
            name: "an identifier without a signature: 401",
            request: |f| {
                let body = report(&[&active(f)]);
                (
                    vec![("Github-Public-Key-Identifier", IDENTIFIER.to_owned())],
                    body,
                )
            },
            status: 401,
            feedback: None,
            revokes_active: false,
        },
        Case {
            name: "an unknown key identifier: 401",
            request: |f| {
                let body = report(&[&active(f)]);
                let mut headers = signed(&f.signer, &body);
                headers[0].1 = "not-a-github-key".to_owned();
                (headers, body)
            },
            status: 401,
            feedback: None,
            revokes_active: false,
        },
        Case {
            name: "a signature that is not base64: 401",
            request: |f| {
                let body = report(&[&active(f)]);
                let mut headers = signed(&f.signer, &body);
                headers[1].1 = "not base64 at all!".to_owned();
                (headers, body)
            },
            status: 401,
            feedback: None,
            revokes_active: false,
        },
        Case {
            name: "base64 that is not a DER signature: 401",
            request: |f| {
                let body = report(&[&active(f)]);
                let mut headers = signed(&f.signer, &body);
                headers[1].1 = b64(b"thirty-two bytes of no signature");
                (headers, body)
            },
            status: 401,
            feedback: None,
            revokes_active: false,
        },
        Case {
            name: "a signature by another key under the identifier: 401",
            request: |f| {
                let body = report(&[&active(f)]);
                let forger = Signer::random(IDENTIFIER);
                (signed(&forger, &body), body)
            },
            status: 401,
            feedback: None,
            revokes_active: false,
        },
        Case {
            name: "a tampered signature: 401",
            request: |f| {
                let body = report(&[&active(f)]);
                let signature = f.signer.signature(&body);
                let (r, s) = signature.split_scalars();
                let other =
                    p256::ecdsa::Signature::from_scalars(r, *s + p256::Scalar::ONE).unwrap();
                let headers = vec![
                    ("Github-Public-Key-Identifier", IDENTIFIER.to_owned()),
                    (
                        "Github-Public-Key-Signature",
                        b64(&other.to_der().to_bytes()),
                    ),
                ];
                (headers, body)
            },
            status: 401,
            feedback: None,
            revokes_active: false,
        },
        Case {
            name: "a tampered body (another report's signature): 401",
            request: |f| {
                let (headers, _) = signed_report(f, &[&unknown()]);
                (headers, report(&[&active(f)]))
            },
            status: 401,
            feedback: None,
            revokes_active: false,
        },
        Case {
            name: "a body changed after signing (one byte of the URL): 401",
            request: |f| {
                let (headers, mut body) = signed_report(f, &[&active(f)]);
                let at = body.len() - 20;
                body[at] ^= 0x01;
                (headers, body)
            },
            status: 401,
            feedback: None,
            revokes_active: false,
        },
        Case {
            name: "a signed body that is not a JSON array: 400",
            request: |f| {
                let body = serde_json::to_vec(&serde_json::json!({
                    "token": active(f), "type": TOKEN_TYPE, "url": FOUND_AT, "source": "content"
                }))
                .unwrap();
                (signed(&f.signer, &body), body)
            },
            status: 400,
            feedback: None,
            revokes_active: false,
        },
        Case {
            name: "a signed entry without a token: 400",
            request: |f| {
                let body = br#"[{"type":"acme_api_key","url":"","source":"content"}]"#.to_vec();
                (signed(&f.signer, &body), body)
            },
            status: 400,
            feedback: None,
            revokes_active: false,
        },
        Case {
            name: "a signed body over the limit: 413",
            request: |f| {
                let tokens: Vec<String> = (0..200).map(|_| active(f)).collect();
                let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
                let body = report(&tokens);
                assert!(body.len() > 16 * 1024);
                (signed(&f.signer, &body), body)
            },
            status: 413,
            feedback: None,
            revokes_active: false,
        },
    ]
}

fn bad_checksum(f: &Fixture) -> String {
    let mut key = active(f);
    let last = if key.ends_with('A') { "B" } else { "A" };
    key.replace_range(key.len() - 1.., last);
    key
}

fn wrong_secret(f: &Fixture) -> String {
    let (id, _) = parts(&active(f));
    craft(PREFIX, &id, &"w".repeat(30))
}

fn other_prefix(f: &Fixture) -> String {
    let (id, secret) = parts(&active(f));
    craft("acme_test", &id, &secret)
}

fn unchanged(before: &KeyRecord, after: &KeyRecord) {
    assert_eq!(before.revoked_at, after.revoked_at);
    assert_eq!(before.disabled_at, after.disabled_at);
    assert_eq!(before.updated_at, after.updated_at);
}

#[actix_web::test]
async fn every_case_gets_the_same_answer_and_store_state_on_both_frameworks() {
    for framework in FRAMEWORKS {
        for case in cases() {
            let f = Fixture::new().await;
            let leaks = f.leaks(LeakAction::Revoke);
            let before = f.snapshot().await;
            let (headers, body) = (case.request)(&f);
            let answer = send(framework, &leaks, &headers, body).await;
            let context = format!(
                "{framework:?}, {}: {} {}",
                case.name,
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
            assert_eq!(answer.status, case.status, "{context}");
            match case.feedback {
                Some(expected) => {
                    assert_eq!(answer.content_type, "application/json", "{context}");
                    assert_eq!(answer.json(), expected(&f), "{context}");
                }
                None => assert!(answer.content_type.starts_with("text/plain"), "{context}"),
            }

            let after = f.snapshot().await;
            unchanged(&before[1], &after[1]);
            f.admin.flush_audit().await;
            let (reported, events): (Vec<_>, Vec<_>) = f
                .events
                .all()
                .into_iter()
                .partition(|e| e.action == Action::LeakReported);
            // Every matched token is audited once: by the change it made, or, when it changed
            // nothing (the key was already revoked), as reported.
            let matched = match case.feedback {
                Some(expected) => expected(&f).as_array().map_or(0, |entries| {
                    entries
                        .iter()
                        .filter(|e| e["label"] == "true_positive")
                        .count()
                }),
                None => 0,
            };
            assert_eq!(
                reported.len() + events.len(),
                matched,
                "{context}: {reported:?} {events:?}"
            );
            for event in &reported {
                assert_eq!(event.actor.as_deref(), Some("github-secret-scanning"));
                let detail = event.detail.as_deref().unwrap_or_default();
                assert!(detail.contains(FOUND_AT), "{context}: {detail}");
            }
            if case.revokes_active {
                assert!(after[0].revoked_at.is_some(), "{context}");
                assert_eq!(events.len(), 1, "{context}: {events:?}");
                let event = &events[0];
                assert_eq!(event.action, Action::Revoked, "{context}");
                assert_eq!(event.key_id, Some(f.active.0), "{context}");
                assert_eq!(event.actor.as_deref(), Some("github-secret-scanning"));
                let detail = event.detail.as_deref().unwrap_or_default();
                assert!(detail.contains(FOUND_AT), "{context}: {detail}");
                assert!(detail.contains("source: content"), "{context}: {detail}");
            } else {
                unchanged(&before[0], &after[0]);
                assert!(events.is_empty(), "{context}: {events:?}");
            }
            // The token is in no answer (only its SHA-256 is).
            let text = String::from_utf8_lossy(&answer.body);
            assert!(!text.contains(f.active.1.expose_secret()), "{context}");
        }
    }
}

/// A verifier on the same store, subscribed to its change feed, as a running service has.
fn service(f: &Fixture) -> Verifier {
    Verifier::builder(f.keyring.clone(), f.store.clone())
        .invalidation(f.store.invalidation())
        .build()
}

async fn verify(verifier: &Verifier, key: &str) -> Result<(), Reason> {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", http::HeaderValue::from_str(key).unwrap());
    let uri = http::Uri::from_static("/orders");
    verifier
        .verify_request(&keygate::HttpRequestView::new(&headers, &uri, None))
        .await
        .map(|_| ())
        .map_err(|rejection| rejection.reason())
}

#[actix_web::test]
async fn a_reported_key_is_refused_by_a_running_service_within_a_second() {
    for framework in FRAMEWORKS {
        for (action, reason) in [
            (LeakAction::Revoke, Reason::Revoked),
            (LeakAction::Disable, Reason::Disabled),
        ] {
            let f = Fixture::new().await;
            let verifier = service(&f);
            let key = active(&f);
            // Let in, and cached.
            assert_eq!(verify(&verifier, &key).await, Ok(()));
            assert_eq!(verify(&verifier, &key).await, Ok(()));

            let body = report(&[&key]);
            let answer = send(framework, &f.leaks(action), &signed(&f.signer, &body), body).await;
            assert_eq!(answer.status, 200, "{framework:?} {action:?}");
            let reported = Instant::now();
            loop {
                match verify(&verifier, &key).await {
                    Err(refused) => {
                        assert_eq!(refused, reason, "{framework:?} {action:?}");
                        break;
                    }
                    Ok(()) => {
                        assert!(
                            reported.elapsed() < Duration::from_secs(1),
                            "{framework:?} {action:?}: still let in after 1 s"
                        );
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            let record = f.record(&f.active.0).await;
            match action {
                LeakAction::Revoke => assert!(record.revoked_at.is_some()),
                _ => {
                    assert!(record.revoked_at.is_none());
                    assert!(record.disabled_at.is_some());
                }
            }
            f.admin.flush_audit().await;
            let events = f.events.all();
            let expected = if action == LeakAction::Revoke {
                Action::Revoked
            } else {
                Action::Disabled
            };
            assert_eq!(
                events.iter().map(|e| e.action).collect::<Vec<_>>(),
                [expected]
            );
        }
    }
}

#[actix_web::test]
async fn repeated_reports_change_nothing_more_and_answer_the_same() {
    for framework in FRAMEWORKS {
        for action in [LeakAction::Revoke, LeakAction::Disable] {
            let f = Fixture::new().await;
            let leaks = f.leaks(action);
            let body = report(&[&active(&f), &revoked(&f), &unknown()]);
            let headers = signed(&f.signer, &body);
            let first = send(framework, &leaks, &headers, body.clone()).await;
            let after_first = f.snapshot().await;
            for _ in 0..3 {
                let again = send(framework, &leaks, &headers, body.clone()).await;
                assert_eq!(again.status, 200);
                assert_eq!(again.body, first.body, "{framework:?} {action:?}");
            }
            let after = f.snapshot().await;
            unchanged(&after_first[0], &after[0]);
            unchanged(&after_first[1], &after[1]);
            assert_eq!(
                first.json(),
                feedback(&[
                    (&active(&f), TOKEN_TYPE, "true_positive"),
                    (&revoked(&f), TOKEN_TYPE, "true_positive"),
                    (&unknown(), TOKEN_TYPE, "false_positive"),
                ])
            );
            f.admin.flush_audit().await;
            let events = f.events.all();
            let changes = events
                .iter()
                .filter(|e| e.action != Action::LeakReported)
                .count();
            assert_eq!(changes, 1, "{framework:?} {action:?}: one change");
            // Every report is audited: the first changes the active key and reports the revoked
            // one; the three repeats report both.
            assert_eq!(
                events.len() - changes,
                1 + 3 * 2,
                "{framework:?} {action:?}"
            );
        }
    }
}

#[actix_web::test]
async fn report_only_answers_true_positive_and_changes_nothing() {
    for framework in FRAMEWORKS {
        let f = Fixture::new().await;
        let verifier = service(&f);
        let before = f.snapshot().await;
        let body = report(&[&active(&f)]);
        let answer = send(
            framework,
            &f.leaks(LeakAction::ReportOnly),
            &signed(&f.signer, &body),
            body,
        )
        .await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.json(),
            feedback(&[(&active(&f), TOKEN_TYPE, "true_positive")])
        );
        unchanged(&before[0], &f.snapshot().await[0]);
        assert_eq!(verify(&verifier, &active(&f)).await, Ok(()));
        f.admin.flush_audit().await;
        let events = f.events.all();
        assert_eq!(events.len(), 1, "the find is audited: {events:?}");
        assert_eq!(events[0].action, Action::LeakReported);
        assert_eq!(events[0].key_id, Some(f.active.0));
        let detail = events[0].detail.as_deref().unwrap_or_default();
        assert!(detail.contains(FOUND_AT), "{detail}");
        assert!(
            !detail.contains(active(&f).as_str()),
            "no token in the event"
        );
    }
}

#[actix_web::test]
async fn a_store_that_does_not_answer_is_503_so_github_sends_the_report_again() {
    for framework in FRAMEWORKS {
        let f = Fixture::new().await;
        let leaks = f.leaks(LeakAction::Revoke);
        f.store.pool().close().await;
        let body = report(&[&active(&f)]);
        let answer = send(framework, &leaks, &signed(&f.signer, &body), body).await;
        assert_eq!(answer.status, 503, "{framework:?}");
    }
}

#[actix_web::test]
async fn a_disabled_key_reported_for_disabling_is_not_changed_again() {
    for framework in FRAMEWORKS {
        let f = Fixture::new().await;
        f.admin.disable(&f.active.0).await.unwrap();
        f.admin.flush_audit().await;
        let events_before = f.events.all().len();
        let before = f.snapshot().await;
        let body = report(&[&active(&f)]);
        let answer = send(
            framework,
            &f.leaks(LeakAction::Disable),
            &signed(&f.signer, &body),
            body,
        )
        .await;
        assert_eq!(
            answer.json(),
            feedback(&[(&active(&f), TOKEN_TYPE, "true_positive")])
        );
        unchanged(&before[0], &f.snapshot().await[0]);
        f.admin.flush_audit().await;
        let events = f.events.all();
        assert_eq!(
            events.len(),
            events_before + 1,
            "only the report: {events:?}"
        );
        assert_eq!(events[events_before].action, Action::LeakReported);
    }
}

#[test]
fn the_setup_guide_gives_github_the_library_s_regex() {
    let guide = include_str!("../../../docs/leaks.md");
    let regex = keygate::KeyFormat::new("acme_live")
        .unwrap()
        .scanner_regex();
    assert!(guide.contains(&format!("  {regex}\n")), "{regex}");
}

#[actix_web::test]
async fn an_endpoint_sharing_the_service_s_admin_gets_the_key_refused_on_the_next_request() {
    for framework in FRAMEWORKS {
        let keyring = keygate::Keyring::development(PREFIX).unwrap();
        let verifier = Verifier::builder(keyring.clone(), keygate::MemoryStore::new()).build();
        let created = verifier
            .admin()
            .create_key(keygate::NewKey::new("billing"))
            .await
            .unwrap();
        let key = created.key.expose_secret().to_owned();
        assert_eq!(verify(&verifier, &key).await, Ok(()));

        let signer = Signer::random(IDENTIFIER);
        let leaks = keygate_leaks::LeakReports::builder(verifier.admin(), keyring)
            .key_source(
                keygate_leaks::StaticKeys::new()
                    .with_pem(IDENTIFIER, &signer.public_pem())
                    .unwrap(),
            )
            .build();
        let body = report(&[&key]);
        let answer = send(framework, &leaks, &signed(&signer, &body), body).await;
        assert_eq!(
            answer.json(),
            feedback(&[(&key, TOKEN_TYPE, "true_positive")])
        );
        // The change left this verifier's cache with it: no wait.
        assert_eq!(verify(&verifier, &key).await, Err(Reason::Revoked));
    }
}

/// With a keyring of environments (`live`, `test`), a leaked test key is matched and revoked,
/// and a live key re-presented under the test prefix (its checksum recomputed) is not that key.
#[actix_web::test]
async fn keys_of_every_environment_are_matched_and_a_swapped_prefix_is_not() {
    for framework in FRAMEWORKS {
        let mut f = Fixture::new().await;
        let keyring = keygate::Keyring::builder()
            .environment("live", keygate::KeyFormat::new("acme_live").unwrap())
            .environment("test", keygate::KeyFormat::new("acme_test").unwrap())
            .build(keygate::Peppers::development())
            .unwrap();
        let minting = keygate::Admin::builder(f.store.clone())
            .keyring(keyring.clone())
            .build();
        let live = minting
            .create_key(keygate::NewKey::new("live"))
            .await
            .unwrap();
        let test = minting
            .create_key(keygate::NewKey::new("test").environment("test"))
            .await
            .unwrap();
        f.keyring = keyring;
        let leaks = f.leaks(LeakAction::Revoke);
        let (id, secret) = parts(live.key.expose_secret());
        let swapped = craft("acme_test", &id, &secret);
        let test_key = test.key.expose_secret().to_owned();
        let body = report(&[&swapped, &test_key]);
        let answer = send(framework, &leaks, &signed(&f.signer, &body), body).await;
        assert_eq!(answer.status, 200, "{framework:?}");
        assert_eq!(
            answer.json(),
            feedback(&[
                (&swapped, TOKEN_TYPE, "false_positive"),
                (&test_key, TOKEN_TYPE, "true_positive"),
            ])
        );
        let store = &f.store;
        assert!(
            store
                .get(&test.record.id)
                .await
                .unwrap()
                .revoked_at
                .is_some()
        );
        assert!(
            store
                .get(&live.record.id)
                .await
                .unwrap()
                .revoked_at
                .is_none()
        );
    }
}

/// The body limit holds in the core too (an adapter that reads more still gets 413), a body of
/// exactly the limit is read, the default limit is 1 MiB, and `Debug` shows the set-up only.
#[actix_web::test]
async fn the_core_enforces_the_body_limit_and_debug_shows_no_key() {
    let f = Fixture::new().await;
    let leaks = f.leaks(LeakAction::Revoke);
    let limit = leaks.max_body_bytes();
    let headers = |body: &[u8]| {
        let mut map = http::HeaderMap::new();
        for (name, value) in signed(&f.signer, body) {
            map.insert(name, value.parse().unwrap());
        }
        map
    };
    // A JSON array padded with spaces to exactly the limit, then one byte more.
    let mut body = report(&[&active(&f)]);
    body.resize(limit, b' ');
    let answer = leaks.handle(&headers(&body), &body).await;
    assert_eq!(answer.status, 200, "a body of exactly the limit is read");
    body.push(b' ');
    let answer = leaks.handle(&headers(&body), &body).await;
    assert_eq!(answer.status, 413);

    let default = keygate_leaks::LeakReports::builder(f.admin.clone(), f.keyring.clone()).build();
    assert_eq!(default.max_body_bytes(), 1024 * 1024);
    let shown = format!("{default:?}");
    assert!(
        shown.starts_with("LeakReports") && shown.contains("Revoke"),
        "{shown}"
    );
    assert!(!shown.contains(&active(&f)[10..]), "{shown}");
    let builder = format!(
        "{:?}",
        keygate_leaks::LeakReports::builder(f.admin.clone(), f.keyring.clone())
    );
    assert!(builder.starts_with("LeakReportsBuilder"), "{builder}");
}
