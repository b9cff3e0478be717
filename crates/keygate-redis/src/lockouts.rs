//! The client lockouts one [`RedisRateLimiter`](crate::RedisRateLimiter) has learned from Redis,
//! so that the verifier's "is this client locked out?" pre-check needs no round trip.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use keygate::rate::{RateDecision, RatePolicy};
use moka::Expiry;
use moka::sync::Cache;

/// A client's failed attempts under one policy (the Redis state is per policy too).
type Client = (IpAddr, RatePolicy);

/// A lockout as Redis answered it, on this process's monotonic clock.
#[derive(Debug, Clone, Copy)]
struct Lock {
    /// When one attempt will be allowed again.
    until: Instant,
    /// When the whole allowance will be full again (the denial's `reset`).
    full_at: Instant,
}

/// Entries leave the cache when their lock ends, so it holds only clients locked out now.
struct UntilLockEnds;

impl Expiry<Client, Lock> for UntilLockEnds {
    fn expire_after_create(
        &self,
        _: &Client,
        lock: &Lock,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(lock.until.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _: &Client,
        lock: &Lock,
        updated_at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(lock.until.saturating_duration_since(updated_at))
    }
}

/// Locked-out clients, bounded: at most `capacity` entries, each gone when its lock ends.
pub(crate) struct Lockouts {
    // foldhash, seeded per cache: fast on these small keys, and client addresses are chosen by
    // clients.
    locks: Cache<Client, Lock, foldhash::fast::RandomState>,
}

impl Lockouts {
    pub(crate) fn new(capacity: u64) -> Self {
        Self {
            locks: Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilLockEnds)
                .build_with_hasher(foldhash::fast::RandomState::default()),
        }
    }

    /// Takes in Redis's `decision` on client `ip`'s failed attempts, received at `now`: a
    /// denial locks the client until its retry-after has passed; an allowed answer lifts any
    /// lock this instance held (Redis is the authority whenever it is asked).
    pub(crate) fn learn(&self, ip: IpAddr, decision: &RateDecision, now: Instant) {
        let client = (ip, decision.policy);
        if decision.allowed {
            self.locks.invalidate(&client);
        } else {
            self.locks.insert(
                client,
                Lock {
                    until: now + decision.retry_after,
                    full_at: now + decision.reset.max(decision.retry_after),
                },
            );
        }
    }

    /// Whether client `ip` is locked out under `policy` at `now`, as far as this instance
    /// knows. A denial carries the remaining retry-after; an allowed answer knows nothing
    /// exact about the allowance, so it gives bounds: `remaining` 1 (a lower bound, as
    /// [`RateLimiter::peek`](keygate::rate::RateLimiter::peek) permits) and `reset` the time a
    /// whole burst takes to come back (an upper bound).
    pub(crate) fn check(&self, ip: IpAddr, policy: RatePolicy, now: Instant) -> RateDecision {
        match self.locks.get(&(ip, policy)) {
            // Checked here too: moka's expiry is for memory, this comparison for correctness.
            Some(lock) if now < lock.until => RateDecision {
                allowed: false,
                policy,
                remaining: 0,
                reset: lock.full_at.saturating_duration_since(now),
                retry_after: lock.until - now,
            },
            _ => RateDecision {
                allowed: true,
                policy,
                remaining: 1,
                reset: policy.emission_interval().saturating_mul(policy.burst()),
                retry_after: Duration::ZERO,
            },
        }
    }

    /// Clients held (approximate: moka counts lazily).
    pub(crate) fn len(&self) -> u64 {
        self.locks.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(policy: RatePolicy, retry_after: Duration) -> RateDecision {
        RateDecision {
            allowed: false,
            policy,
            remaining: 0,
            reset: retry_after * 3,
            retry_after,
        }
    }

    #[test]
    fn a_denial_locks_until_its_retry_after_and_an_allowed_answer_unlocks() {
        let policy: RatePolicy = "10/1m burst 20"
            .parse()
            .unwrap_or_else(|e| panic!("policy: {e}"));
        let other: RatePolicy = "5/1m".parse().unwrap_or_else(|e| panic!("policy: {e}"));
        let ip = IpAddr::from([10, 0, 0, 1]);
        let lockouts = Lockouts::new(100);
        let t0 = Instant::now();
        assert!(
            lockouts.check(ip, policy, t0).allowed,
            "nothing learned yet"
        );

        lockouts.learn(ip, &denial(policy, Duration::from_secs(6)), t0);
        let later = t0 + Duration::from_secs(2);
        let locked = lockouts.check(ip, policy, later);
        assert!(!locked.allowed);
        assert_eq!(locked.retry_after, Duration::from_secs(4));
        assert_eq!(locked.reset, Duration::from_secs(16));
        assert_eq!(locked.remaining, 0);
        assert!(
            lockouts.check(ip, other, later).allowed,
            "another policy's state is its own, as in Redis"
        );
        assert!(
            lockouts
                .check(IpAddr::from([10, 0, 0, 2]), policy, later)
                .allowed
        );
        assert!(
            lockouts
                .check(ip, policy, t0 + Duration::from_secs(6))
                .allowed,
            "the lock ends with the retry-after"
        );

        let allowed = RateDecision {
            allowed: true,
            retry_after: Duration::ZERO,
            remaining: 3,
            ..denial(policy, Duration::ZERO)
        };
        lockouts.learn(ip, &allowed, later);
        assert!(
            lockouts.check(ip, policy, later).allowed,
            "Redis said allowed"
        );
    }

    #[test]
    fn holds_at_most_its_capacity() {
        let policy: RatePolicy = "1/1h".parse().unwrap_or_else(|e| panic!("policy: {e}"));
        let lockouts = Lockouts::new(1000);
        let now = Instant::now();
        for n in 0..20_000u32 {
            lockouts.learn(
                IpAddr::from(n.to_be_bytes()),
                &denial(policy, Duration::from_secs(3600)),
                now,
            );
        }
        lockouts.locks.run_pending_tasks();
        assert!(
            lockouts.len() <= 1000,
            "{} entries for a capacity of 1000",
            lockouts.len()
        );
    }
}
