//! Every rejection's response, checked against the RFCs it follows (SECURITY-CHECKLIST items
//! 22–26): RFC 6750 challenges, RFC 9457 problem bodies, RFC 6585/9110 429s with the IETF
//! RateLimit fields. The scenario table checks the same over both frameworks, case by case;
//! this checks the rules over every reason at once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use http::Response;
use keygate::quota::{Quota, QuotaDecision, QuotaReport};
use keygate::rate::{RateDecision, RatePolicy};
use keygate::rejection::RejectionResponse;
use keygate::{KeyId, ProblemJson, Reason, Rejection};

fn rejection(reason: Reason) -> Rejection {
    let id = KeyId::random();
    match reason {
        Reason::RateLimited | Reason::TooManyFailures => {
            let policy: RatePolicy = "10/1m burst 20".parse().unwrap();
            Rejection::rate_limited(
                reason,
                id,
                RateDecision {
                    allowed: false,
                    policy,
                    remaining: 0,
                    reset: Duration::from_millis(120_500),
                    retry_after: Duration::from_millis(5_500),
                },
            )
        }
        Reason::InsufficientScope => {
            Rejection::insufficient_scope(Some(id), Arc::from("orders:read orders:write"))
        }
        Reason::QuotaExhausted => {
            // 10 a minute, spent, 5.5 s before the next minute.
            let quota: Quota = "10/minute".parse().unwrap();
            let decision = QuotaDecision {
                allowed: false,
                line: 0,
                remaining: 0,
                size: 10,
                reset: Some(Duration::from_millis(5_500)),
                windows: [29_000_000, 0],
            };
            Rejection::quota_exhausted(Some(id), QuotaReport { decision, quota }, None)
        }
        _ => Rejection::for_key(reason, id),
    }
}

fn header<'r>(response: &'r Response<String>, name: &str) -> Option<&'r str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

/// RFC 6750 §3: `error_description` may use only %x20-21 / %x23-5B / %x5D-7E; keygate sends
/// none, and every attribute's value is a plain quoted token.
fn check_challenge(reason: Reason, challenge: &str) {
    assert!(
        challenge.starts_with("Bearer realm=\"api\""),
        "{reason:?}: {challenge}"
    );
    assert!(
        challenge
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b'\\'),
        "{reason:?}: challenge bytes {challenge:?}"
    );
    assert!(!challenge.contains("error_description"), "{reason:?}");
    assert!(
        challenge.matches("error=").count() <= 1,
        "{reason:?}: {challenge}"
    );
    // Quotes only around attribute values: an even count, never inside a value.
    assert_eq!(
        challenge.matches('"').count() % 2,
        0,
        "{reason:?}: {challenge}"
    );
}

#[test]
fn every_reason_answers_by_the_rfcs() {
    let responder = ProblemJson::default();
    for reason in Reason::ALL {
        let rejection = rejection(reason);
        let response: Response<String> = responder.response(&rejection);
        let status = response.status().as_u16();
        assert_eq!(status, reason.problem().status().as_u16(), "{reason:?}");

        // RFC 9457: a JSON object with type (a URI), title and status equal to the response's.
        assert_eq!(
            header(&response, "content-type"),
            Some("application/problem+json"),
            "{reason:?}"
        );
        assert_eq!(
            header(&response, "cache-control"),
            Some("no-store"),
            "{reason:?}"
        );
        let body: serde_json::Value =
            serde_json::from_str(response.body()).unwrap_or_else(|e| panic!("{reason:?}: {e}"));
        let field = |name: &str| {
            body.get(name)
                .unwrap_or_else(|| panic!("{reason:?}: no {name}"))
        };
        let problem_type = field("type").as_str().unwrap_or_default();
        assert!(
            problem_type.starts_with("urn:keygate:problem:"),
            "{reason:?}: {problem_type}"
        );
        assert!(
            !field("title").as_str().unwrap_or_default().is_empty(),
            "{reason:?}"
        );
        assert_eq!(
            field("status").as_u64(),
            Some(u64::from(status)),
            "{reason:?}"
        );
        // Nothing from the request, the store or the key: no id, no SQL, no trace.
        let text = response.body().to_lowercase();
        for leak in [
            "select ",
            "insert ",
            "panicked",
            "backtrace",
            "sqlx",
            "redis",
            "digest",
        ] {
            assert!(!text.contains(leak), "{reason:?}: body mentions {leak:?}");
        }
        if let Some(id) = rejection.key_id() {
            assert!(
                !response.body().contains(id.as_str()),
                "{reason:?}: body names the key"
            );
        }

        // RFC 6750 §3 / §3.1: every 401 carries a challenge; invalid_token for bad keys,
        // invalid_request for a repeated credential (400), insufficient_scope with the scope.
        let challenge = header(&response, "www-authenticate");
        match status {
            401 => {
                let challenge =
                    challenge.unwrap_or_else(|| panic!("{reason:?}: 401 without challenge"));
                check_challenge(reason, challenge);
                if reason == Reason::MissingCredentials {
                    assert_eq!(
                        challenge, "Bearer realm=\"api\"",
                        "no error without credentials"
                    );
                } else {
                    assert!(
                        challenge.ends_with("error=\"invalid_token\""),
                        "{reason:?}: {challenge}"
                    );
                }
            }
            400 => assert_eq!(
                challenge,
                Some("Bearer realm=\"api\", error=\"invalid_request\""),
                "{reason:?}"
            ),
            403 if reason == Reason::InsufficientScope => {
                let challenge = challenge.unwrap_or_else(|| panic!("{reason:?}: no challenge"));
                check_challenge(reason, challenge);
                assert!(
                    challenge.ends_with(
                        "error=\"insufficient_scope\", scope=\"orders:read orders:write\""
                    ),
                    "{challenge}"
                );
            }
            _ => assert_eq!(challenge, None, "{reason:?}"),
        }

        // RFC 6585 / 9110 and the RateLimit draft: a 429 says when to retry, in whole
        // seconds, and how the allowance stands, as RFC 9651 lists of one item.
        if status == 429 {
            assert_eq!(
                header(&response, "retry-after"),
                Some("6"),
                "{reason:?}: 5.5 s rounded up"
            );
            let (name, t) = match reason {
                Reason::RateLimited => ("key", 121),
                // A quota's allowance is whole again at the next period: the retry time.
                Reason::QuotaExhausted => ("quota", 6),
                _ => ("failures", 121),
            };
            assert_eq!(
                header(&response, "ratelimit-policy"),
                Some(format!("\"{name}\";q=10;w=60").as_str()),
                "{reason:?}"
            );
            assert_eq!(
                header(&response, "ratelimit"),
                Some(format!("\"{name}\";r=0;t={t}").as_str()),
                "{reason:?}"
            );
        } else {
            for absent in ["retry-after", "ratelimit", "ratelimit-policy"] {
                assert_eq!(header(&response, absent), None, "{reason:?}: {absent}");
            }
        }
    }
}

/// The failure uniformity of item 15, at the response level: every reason a client without
/// the key could cause gets the very same bytes.
#[test]
fn every_invalid_key_reason_renders_the_same_bytes() {
    let responder = ProblemJson::default();
    let render = |reason| {
        let response: Response<String> = responder.response(&rejection(reason));
        let mut headers: Vec<_> = response
            .headers()
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or_default()))
            .collect();
        headers.sort();
        (response.status(), headers, response.body().clone())
    };
    let first = render(Reason::UnknownKey);
    for reason in [
        Reason::WrongSecret,
        Reason::Revoked,
        Reason::Disabled,
        Reason::Expired,
        Reason::Malformed,
        Reason::WrongPrefix,
        Reason::BadChecksum,
        Reason::CredentialTooLong,
    ] {
        assert_eq!(render(reason), first, "{reason:?}");
    }
}
