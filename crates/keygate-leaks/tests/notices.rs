//! The leak endpoint sends a `Leaked` notice for each reported token that is one of the
//! deployment's keys, and none for anything else; the notice never carries the token.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::*;
use keygate::notice::{MemoryNotices, Notice};
use keygate_leaks::{LeakAction, LeakReports, StaticKeys};

fn leaks_with_notices(f: &Fixture, notices: &MemoryNotices, action: LeakAction) -> LeakReports {
    let keys = StaticKeys::new()
        .with_pem(IDENTIFIER, &f.signer.public_pem())
        .unwrap();
    LeakReports::builder(f.admin.clone(), f.keyring.clone())
        .action(action)
        .key_source(keys)
        .notices(notices.clone())
        .build()
}

#[tokio::test]
async fn matched_keys_are_noticed_once_per_report_with_a_stable_id() {
    for framework in FRAMEWORKS {
        for action in [LeakAction::Revoke, LeakAction::ReportOnly] {
            let f = Fixture::new().await;
            let notices = MemoryNotices::new();
            let leaks = leaks_with_notices(&f, &notices, action);
            let active = f.active.1.expose_secret().to_owned();
            let revoked = f.revoked.1.expose_secret().to_owned();
            let unknown = craft(PREFIX, "Zz9Zz9Zz9Zz9", &"q".repeat(30));
            let body = report(&[&active, &unknown, &revoked]);
            let answer = send(framework, &leaks, &signed(&f.signer, &body), body.clone()).await;
            assert_eq!(answer.status, 200);

            let got = notices.all();
            assert_eq!(
                got.len(),
                2,
                "{framework:?} {action:?}: one per matched key"
            );
            for (notice, (id, name)) in got
                .iter()
                .zip([(f.active.0, "active"), (f.revoked.0, "revoked")])
            {
                let Notice::Leaked { key, url } = notice else {
                    panic!("not a leak notice: {notice:?}");
                };
                assert_eq!((key.id, key.name.as_str()), (id, name));
                assert_eq!(url, FOUND_AT);
                let shown = format!("{notice:?} {}", notice.data());
                assert!(!shown.contains(&active) && !shown.contains(&revoked));
            }

            // GitHub sends the report again: the same notices, with the same event ids.
            let again = send(framework, &leaks, &signed(&f.signer, &body), body).await;
            assert_eq!(again.status, 200);
            let all = notices.all();
            assert_eq!(all.len(), 4);
            assert_eq!(all[0].event_id(), all[2].event_id());
            assert_eq!(all[1].event_id(), all[3].event_id());
            assert_ne!(all[0].event_id(), all[1].event_id());
        }
    }
}

#[tokio::test]
async fn a_refused_report_sends_no_notice() {
    let f = Fixture::new().await;
    let notices = MemoryNotices::new();
    let leaks = leaks_with_notices(&f, &notices, LeakAction::Revoke);
    let body = report(&[f.active.1.expose_secret()]);
    let mut headers = signed(&f.signer, &body);
    headers[1].1 = f.signer.sign(b"another body");
    let answer = send(Framework::Axum, &leaks, &headers, body).await;
    assert_eq!(answer.status, 401);
    assert!(notices.all().is_empty());
}
