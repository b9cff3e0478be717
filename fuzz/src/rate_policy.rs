//! `rate_policy`: `RatePolicy` and `RateLimit` from text, and the first decision under a
//! parsed policy.
//!
//! Input: the text of a policy (`100/1m burst 200`, `unlimited`, …); not UTF-8 is skipped.
//! Invariants: an accepted policy is within the documented bounds (1 to `MAX_REQUESTS`
//! requests and burst, 1 s to `MAX_PERIOD`); its `Display` parses back to the same policy;
//! its derived intervals are positive and bounded; `RateLimit` agrees with `RatePolicy`; a fresh
//! key's first request under it is allowed by the in-process limiter with fewer than `burst`
//! requests left, and its `RateLimit` headers can be built.

use std::sync::OnceLock;
use std::time::Duration;

use keygate::KeyId;
use keygate::rate::{
    InProcessLimiter, LimitKey, MAX_PERIOD, MAX_REQUESTS, RateLimit, RateLimiter, RatePolicy,
};

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = text.parse::<RatePolicy>();
    let limit = text.parse::<RateLimit>();
    match (&policy, &limit) {
        (Ok(p), Ok(l)) => assert_eq!(RateLimit::Limited(*p), *l),
        (Err(_), Ok(RateLimit::Unlimited)) => {
            assert!(text.trim().eq_ignore_ascii_case("unlimited"));
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (p, l) => panic!("RatePolicy {p:?} and RateLimit {l:?} disagree on {text:?}"),
    }
    if let Ok(limit) = limit {
        assert_eq!(limit.to_string().parse::<RateLimit>(), Ok(limit));
    }
    let Ok(policy) = policy else { return };
    assert!((1..=MAX_REQUESTS).contains(&policy.requests()));
    assert!((1..=MAX_REQUESTS).contains(&policy.burst()));
    assert!(policy.period() >= Duration::from_secs(1) && policy.period() <= MAX_PERIOD);
    assert_eq!(policy.period().as_secs(), u64::from(policy.period_secs()));
    assert_eq!(policy.to_string().parse::<RatePolicy>(), Ok(policy));
    assert!(policy.emission_interval() > Duration::ZERO);
    assert!(policy.emission_interval() <= policy.period());
    assert!(policy.refill_time() <= Duration::from_secs(u64::from(u32::MAX)));

    let decision = limiter()
        .acquire_now(LimitKey::Key(KeyId::random()), policy)
        .unwrap_or_else(|| panic!("the in-process limiter answers at once"))
        .unwrap();
    assert!(
        decision.allowed,
        "a fresh key's first request under {policy}"
    );
    assert_eq!(decision.policy, policy);
    assert!(decision.remaining < policy.burst());
    assert_eq!(decision.retry_after, Duration::ZERO);
    let _ = decision.headers("default");
    let _ = decision.retry_after_header();
}

fn limiter() -> &'static InProcessLimiter {
    static LIMITER: OnceLock<InProcessLimiter> = OnceLock::new();
    LIMITER.get_or_init(InProcessLimiter::new)
}
