//! The GCRA as one Lua script, the keys it runs on, and reading its reply. Pure: no I/O here.

use std::time::Duration;

use keygate::rate::{LimitKey, RateDecision, RatePolicy};

use crate::Error;

/// GCRA on one key, in one round trip, on Redis's clock.
///
/// `KEYS[1]`: the (key, policy)'s state, its TAT (theoretical arrival time) in microseconds
/// since the Unix epoch. `ARGV[1]`: the emission interval T, `ARGV[2]`: the delay tolerance
/// τ = T × (burst − 1), both in whole microseconds; `ARGV[3]`: `1` to take a request, `0` to
/// peek. Replies `{allowed, remaining, reset_us, retry_after_us}`.
///
/// The same rule as governor's (the in-process limiter): a request at `now` is allowed unless
/// `now < TAT − τ`; taking one sets `TAT = max(TAT, now) + T`. The key expires when the
/// allowance is full again (`TAT` reached), so Redis holds nothing for idle keys. Lua numbers
/// are doubles: every value stays an integer below 2^53 (now ≈ 1.8 × 10^15 µs, τ is capped at
/// `u32::MAX` seconds), so the arithmetic is exact.
pub(crate) const SCRIPT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local earliest = tat - tau
if now < earliest then
  return {0, 0, tat - now, earliest - now}
end
if ARGV[3] ~= '1' then
  -- Requests that could be made at once now (at least 1); nothing is taken.
  return {1, math.floor((now + tau + interval - tat) / interval), tat - now, 0}
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
return {1, math.floor((now + tau - tat) / interval), next_tat - now, 0}
";

/// The Redis key holding `key`'s state under `policy`:
/// `{prefix}:rl:key:{id}:{policy}`, `{prefix}:rl:owner:{owner tag}:{policy}` (an owner's shared
/// limit, under the hash of its id) or `{prefix}:rl:client:{ip-or-/64}:{policy}`. The policy is
/// part of the key, so a changed policy starts from a full allowance at once (as the trait
/// requires); the old key expires by itself.
pub(crate) fn state_key(prefix: &str, key: &LimitKey, policy: &RatePolicy) -> String {
    // `100/1s burst 200` → `100/1s_burst_200`: no spaces in keys, for redis-cli's sake.
    let policy = policy.to_string().replace(' ', "_");
    format!("{prefix}:rl:{key}:{policy}")
}

/// The script's numeric arguments for `policy`: (T, τ) in whole microseconds.
///
/// T is rounded up to a whole microsecond (at least 1), so the Redis limiter is never more
/// lenient than the policy: `3/1s` allows one request every 333 334 µs. Policies faster than
/// one request per microsecond per key are enforced as 1 000 000 per second.
pub(crate) fn script_args(policy: &RatePolicy) -> (u64, u64) {
    let interval_ns = policy.emission_interval().as_nanos();
    let interval_us = u64::try_from(interval_ns.div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1);
    let max_tau_us = u64::from(u32::MAX) * 1_000_000;
    let tau_us = interval_us
        .saturating_mul(u64::from(policy.burst() - 1))
        .min(max_tau_us);
    (interval_us, tau_us)
}

/// Reads the script's reply as Redis sent it (after server errors were taken out): four
/// integers, converted as `redis` converts any reply to `Vec<i64>`, then [`decision`].
pub fn reply_decision(policy: RatePolicy, reply: redis::Value) -> Result<RateDecision, Error> {
    let reply: Vec<i64> =
        redis::from_redis_value(reply).map_err(|e| Error::Redis(redis::RedisError::from(e)))?;
    decision(policy, &reply)
}

/// Reads the script's reply `{allowed, remaining, reset_us, retry_after_us}`.
pub(crate) fn decision(policy: RatePolicy, reply: &[i64]) -> Result<RateDecision, Error> {
    let &[allowed, remaining, reset, retry_after] = reply else {
        return Err(Error::UnexpectedReply(format!(
            "expected 4 integers from the rate limit script, got {}",
            reply.len()
        )));
    };
    let micros = |n: i64| Duration::from_micros(u64::try_from(n).unwrap_or(0));
    Ok(RateDecision {
        allowed: allowed == 1,
        policy,
        remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
        reset: micros(reset),
        retry_after: micros(retry_after),
    })
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use keygate::KeyId;

    use super::*;

    fn policy(text: &str) -> RatePolicy {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn keys_name_the_prefix_the_kind_and_the_policy() {
        let id: KeyId = "4fT0qKb2mZ9x".parse().unwrap();
        assert_eq!(
            state_key("keygate", &LimitKey::Key(id), &policy("10/1m")),
            "keygate:rl:key:4fT0qKb2mZ9x:10/1m"
        );
        assert_eq!(
            state_key("acme", &LimitKey::Key(id), &policy("100/1s burst 200")),
            "acme:rl:key:4fT0qKb2mZ9x:100/1s_burst_200"
        );
        assert_eq!(
            state_key(
                "keygate",
                &LimitKey::client(ip("10.1.2.3")),
                &policy("10/1m burst 20")
            ),
            "keygate:rl:client:10.1.2.3:10/1m_burst_20"
        );
        assert_eq!(
            state_key(
                "keygate",
                &LimitKey::client(ip("2001:db8:1:2:aaaa::1")),
                &policy("5/1s")
            ),
            "keygate:rl:client:2001:db8:1:2::/64:5/1s"
        );
        // An owner's shared limit: under a hash of its id (any text), the same on every instance.
        let owner = keygate::owner::OwnerTag::of("acme corp");
        let key = state_key("keygate", &LimitKey::Owner(owner), &policy("10/1m"));
        assert_eq!(key, format!("keygate:rl:owner:{owner}:10/1m"));
        assert!(!key.contains("acme"), "{key}");
        assert_eq!(
            key,
            state_key(
                "keygate",
                &LimitKey::Owner(keygate::owner::OwnerTag::of("acme corp")),
                &policy("10/1m")
            )
        );
    }

    #[test]
    fn arguments_are_whole_microseconds() {
        assert_eq!(script_args(&policy("10/1m")), (6_000_000, 54_000_000));
        assert_eq!(script_args(&policy("5/1s")), (200_000, 800_000));
        assert_eq!(script_args(&policy("3/1s")), (333_334, 666_668));
        assert_eq!(script_args(&policy("1/1h")), (3_600_000_000, 0));
        assert_eq!(script_args(&policy("1000000000/1s")), (1, 999_999_999));
        let (_, tau) = script_args(&policy("1/365d burst 1000000000"));
        assert_eq!(tau, u64::from(u32::MAX) * 1_000_000, "τ is capped");
    }

    #[test]
    fn replies_become_decisions() -> Result<(), Error> {
        let p = policy("10/1m");
        assert_eq!(
            decision(p, &[1, 9, 6_000_000, 0])?,
            RateDecision {
                allowed: true,
                policy: p,
                remaining: 9,
                reset: Duration::from_secs(6),
                retry_after: Duration::ZERO,
            }
        );
        let denied = decision(p, &[0, 0, 60_000_000, 5_999_001])?;
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Duration::from_micros(5_999_001));
        assert_eq!(denied.reset, Duration::from_secs(60));
        assert!(matches!(
            decision(p, &[1, 2]),
            Err(Error::UnexpectedReply(_))
        ));
        assert_eq!(decision(p, &[1, -3, -1, 0])?.remaining, 0, "no negatives");
        Ok(())
    }
}
