//! `redis_reply`: the Redis rate limiter's reading of its script's reply.
//!
//! Input: optionally a first line naming the policy (`10/1s burst 20`, the default when the
//! first line is not a policy), then the reply's bytes as Redis sends them (RESP2 or RESP3).
//! The bytes go through what the connection does (`redis::parse_redis_value`, server errors
//! taken out), then through `keygate_redis`'s decoding into a `RateDecision`.
//! Invariants: a decision comes only from a reply of exactly four integers, and says what they
//! say (allowed only for `1`; `remaining` clamped to `0..=u32::MAX`; negative times read as
//! zero) under the policy asked for; any other reply is an error, never a panic and never an
//! allowance.

use std::time::Duration;

use keygate::rate::RatePolicy;

/// Runs one input.
pub fn run(data: &[u8]) {
    let default = || "10/1s burst 20".parse::<RatePolicy>().unwrap();
    let (policy, reply) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => match std::str::from_utf8(&data[..at])
            .ok()
            .and_then(|line| line.parse::<RatePolicy>().ok())
        {
            Some(policy) => (policy, &data[at + 1..]),
            None => (default(), data),
        },
        None => (default(), data),
    };
    let Ok(value) = redis::parse_redis_value(reply).and_then(redis::Value::extract_error) else {
        return;
    };
    let expected = redis::from_redis_value::<Vec<i64>>(value.clone()).ok();
    let decided = keygate_redis::fuzzing::reply_decision(policy, value);
    let _ = decided.as_ref().map_err(ToString::to_string);
    match (expected.as_deref(), decided) {
        (Some(&[allowed, remaining, reset, retry_after]), Ok(decision)) => {
            let micros = |n: i64| Duration::from_micros(u64::try_from(n.max(0)).unwrap_or(0));
            assert_eq!(decision.allowed, allowed == 1);
            assert_eq!(decision.policy, policy);
            assert_eq!(
                u64::from(decision.remaining),
                u64::try_from(remaining.max(0))
                    .unwrap_or(0)
                    .min(u64::from(u32::MAX))
            );
            assert_eq!(decision.reset, micros(reset));
            assert_eq!(decision.retry_after, micros(retry_after));
        }
        (_, Ok(decision)) => panic!("a decision {decision:?} from a reply {expected:?}"),
        (_, Err(_)) => assert!(!matches!(expected.as_deref(), Some(&[_, _, _, _]))),
    }
}
