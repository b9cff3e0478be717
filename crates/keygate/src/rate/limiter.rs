//! The [`RateLimiter`] trait and what it answers.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderName, HeaderValue};

pub use super::in_process::HeldLimit;
use super::{LimitName, RatePolicy};
use crate::key::KeyId;
use crate::owner::OwnerTag;
use crate::record::canonical_ip;
use crate::rejection::{RATELIMIT, RATELIMIT_POLICY};
use crate::store::BoxError;

/// What a limiter counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitKey {
    /// Requests made with a valid key.
    Key(KeyId),
    /// Requests made with any valid key of one owner, under the owner's shared limit (the
    /// owner id's [`OwnerTag`]).
    Owner(OwnerTag),
    /// Requests made with a valid key to routes that choose its named limit
    /// ([`RouteLimit`](crate::RouteLimit)).
    KeyNamed(KeyId, LimitName),
    /// Requests made with any valid key of one owner to routes that choose the owner's named
    /// limit.
    OwnerNamed(OwnerTag, LimitName),
    /// Failed attempts from one client: an IPv4 address, or an IPv6 /64 network (one host
    /// usually holds a whole /64, so single IPv6 addresses would be free to rotate through).
    /// Build with [`LimitKey::client`].
    Client(IpAddr),
    /// Failed attempts from clients whose address is unknown (no peer address, or an
    /// unparsable `X-Forwarded-For` entry behind a trusted proxy). They share this one
    /// allowance, so hiding the address never switches the failure limit off.
    UnknownClient,
}

impl LimitKey {
    /// The failed-attempts key of client `ip`: IPv4-mapped IPv6 as IPv4, other IPv6 addresses
    /// cut to their /64.
    #[must_use]
    pub fn client(ip: IpAddr) -> Self {
        Self::Client(match canonical_ip(ip) {
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !(u128::from(u64::MAX));
                IpAddr::V6(Ipv6Addr::from(bits))
            }
            v4 @ IpAddr::V4(_) => v4,
        })
    }

    /// The failed-attempts key of a client with address `ip`, or the shared
    /// [`LimitKey::UnknownClient`] when the address is not known.
    #[must_use]
    pub fn client_or_unknown(ip: Option<IpAddr>) -> Self {
        ip.map_or(Self::UnknownClient, Self::client)
    }

    /// Whether this key counts a client's failed attempts (known address or not).
    #[must_use]
    pub fn is_client(&self) -> bool {
        matches!(self, Self::Client(_) | Self::UnknownClient)
    }
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(id) => write!(f, "key:{id}"),
            Self::Owner(tag) => write!(f, "owner:{tag}"),
            Self::KeyNamed(id, name) => write!(f, "key:{id}:{name}"),
            Self::OwnerNamed(tag, name) => write!(f, "owner:{tag}:{name}"),
            Self::Client(ip @ IpAddr::V4(_)) => write!(f, "client:{ip}"),
            Self::Client(ip @ IpAddr::V6(_)) => write!(f, "client:{ip}/64"),
            Self::UnknownClient => f.write_str("client:unknown"),
        }
    }
}

/// A limiter's answer: allowed or not, and the state of the allowance afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The policy the decision was made under.
    pub policy: RatePolicy,
    /// Requests that could still be made at once after this one (0 when denied).
    pub remaining: u32,
    /// Time until the allowance is full again (the whole burst available).
    pub reset: Duration,
    /// When denied, time until one request would be allowed; zero when allowed.
    pub retry_after: Duration,
}

impl RateDecision {
    /// The `RateLimit-Policy` header value naming this decision's policy `name`, per the IETF
    /// draft *RateLimit header fields for HTTP* (draft-ietf-httpapi-ratelimit-headers-10):
    /// `"key";q=100;w=60` — `q` requests per `w` seconds.
    #[must_use]
    pub fn policy_header(&self, name: &str) -> HeaderValue {
        header(format!(
            "\"{name}\";q={};w={}",
            self.policy.requests(),
            self.policy.period_secs()
        ))
    }

    /// The `RateLimit` header value for policy `name`: `"key";r=4;t=1` — `r` requests left now,
    /// `t` seconds (rounded up) until the allowance is full again.
    #[must_use]
    pub fn limit_header(&self, name: &str) -> HeaderValue {
        header(format!(
            "\"{name}\";r={};t={}",
            self.remaining,
            ceil_secs(self.reset)
        ))
    }

    /// `RateLimit-Policy` and `RateLimit` for policy `name` (`"key"` for a key's limit), as
    /// allowed responses carry them when enabled
    /// ([`ApiKeyLayer::rate_limit_headers`](crate::ApiKeyLayer::rate_limit_headers)).
    #[must_use]
    pub fn headers(&self, name: &str) -> [(HeaderName, HeaderValue); 2] {
        [
            (RATELIMIT_POLICY, self.policy_header(name)),
            (RATELIMIT, self.limit_header(name)),
        ]
    }

    /// The `Retry-After` header value: whole seconds, rounded up, at least 1.
    #[must_use]
    pub fn retry_after_header(&self) -> HeaderValue {
        HeaderValue::from(ceil_secs(self.retry_after).max(1))
    }
}

fn header(text: String) -> HeaderValue {
    // Policy names are keygate's own tokens; numbers are ASCII.
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("\"invalid\""))
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The limiter could not decide (its backing service is unreachable). The verifier answers
/// 503, never allows silently; a limiter that should fail open answers `allowed` instead.
#[derive(Debug, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct LimiterError(#[source] pub BoxError);

/// Checks requests against rate policies. Object safe (`Arc<dyn RateLimiter>`).
///
/// The verifier asks it twice per request at most:
/// - before a key is checked, [`peek`](RateLimiter::peek) at the client's failed attempts (is
///   this client locked out?), and after a failure, [`acquire`](RateLimiter::acquire) one;
/// - after a key is valid, [`acquire`](RateLimiter::acquire) one request from the key's
///   allowance.
///
/// In-process limiters answer without I/O: they implement the `*_now` methods, which the
/// verifier calls first, so the hot path neither allocates nor awaits. Limiters backed by a
/// network service return `None` where they must ask it (they may still answer from local
/// knowledge, as `keygate_redis::RedisRateLimiter` answers the failed-attempt pre-check from
/// the lockouts it has learned).
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes one request from `key`'s allowance under `policy`, if there is one left.
    ///
    /// A policy change takes effect at once: state is kept per (key, policy).
    ///
    /// # Errors
    /// [`LimiterError`] when the limiter cannot decide.
    async fn acquire(
        &self,
        key: LimitKey,
        policy: RatePolicy,
    ) -> Result<RateDecision, LimiterError>;

    /// Whether [`acquire`](RateLimiter::acquire) would allow a request now, without taking
    /// anything. A refusal carries the exact retry-after; for an allowed answer `remaining` may
    /// be a lower bound (at least 1).
    ///
    /// # Errors
    /// [`LimiterError`] when the limiter cannot decide.
    async fn peek(&self, key: LimitKey, policy: RatePolicy) -> Result<RateDecision, LimiterError>;

    /// Whether this limiter answers [`acquire_now`](RateLimiter::acquire_now) and
    /// [`peek_now`](RateLimiter::peek_now) (always, or never: the verifier asks once, when it
    /// is built). `false` (the default): the verifier awaits [`acquire`](RateLimiter::acquire)
    /// for limited keys.
    fn decides_now(&self) -> bool {
        false
    }

    /// [`acquire`](RateLimiter::acquire) without awaiting, for limiters that need no I/O.
    /// `None` (the default) means "call `acquire`".
    fn acquire_now(
        &self,
        key: LimitKey,
        policy: RatePolicy,
    ) -> Option<Result<RateDecision, LimiterError>> {
        let _ = (key, policy);
        None
    }

    /// A handle on `key`'s state under `policy` that the caller may keep and decide with
    /// ([`acquire_held`](RateLimiter::acquire_held)) without looking the state up again: the
    /// verifier keeps it in the key's cache entry, so one cache lookup serves both the key and
    /// its limit. `None` (the default): the limiter keeps no such state (it is remote); call
    /// [`acquire`](RateLimiter::acquire).
    ///
    /// A held state is the limiter's own (handing it out changes nothing the limiter
    /// decides): every holder of a (key, policy) shares it while the limiter keeps it.
    fn hold(&self, key: LimitKey, policy: RatePolicy) -> Option<HeldLimit> {
        let _ = (key, policy);
        None
    }

    /// [`acquire_now`](RateLimiter::acquire_now) for the (key, policy) `held` was made for, by
    /// this limiter's [`hold`](RateLimiter::hold). `None` (the default) means "call
    /// `acquire_now`".
    fn acquire_held(&self, held: &HeldLimit) -> Option<Result<RateDecision, LimiterError>> {
        let _ = held;
        None
    }

    /// [`peek`](RateLimiter::peek) without awaiting; `None` (the default) means "call `peek`".
    fn peek_now(
        &self,
        key: LimitKey,
        policy: RatePolicy,
    ) -> Option<Result<RateDecision, LimiterError>> {
        let _ = (key, policy);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_grouped_by_ipv6_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(
            LimitKey::client(ip("2001:db8:1:2:aaaa::1")),
            LimitKey::client(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            LimitKey::client(ip("2001:db8:1:2::1")),
            LimitKey::client(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            LimitKey::client(ip("::ffff:10.0.0.1")),
            LimitKey::Client(ip("10.0.0.1"))
        );
        assert_eq!(
            LimitKey::client(ip("2001:db8:1:2::1")).to_string(),
            "client:2001:db8:1:2::/64"
        );
        assert_eq!(LimitKey::client_or_unknown(None), LimitKey::UnknownClient);
        assert_eq!(LimitKey::UnknownClient.to_string(), "client:unknown");
        assert_eq!(
            LimitKey::client_or_unknown(Some(ip("10.0.0.1"))),
            LimitKey::client(ip("10.0.0.1"))
        );
        assert!(
            LimitKey::UnknownClient.is_client() && LimitKey::client(ip("10.0.0.1")).is_client()
        );
        assert!(!LimitKey::Key(crate::KeyId::random()).is_client());
    }

    #[test]
    fn headers_follow_the_draft() -> Result<(), super::super::InvalidRatePolicy> {
        let decision = RateDecision {
            allowed: false,
            policy: "5/1s".parse()?,
            remaining: 0,
            reset: Duration::from_millis(1000),
            retry_after: Duration::from_millis(200),
        };
        assert_eq!(decision.policy_header("key"), "\"key\";q=5;w=1");
        assert_eq!(decision.limit_header("key"), "\"key\";r=0;t=1");
        assert_eq!(decision.retry_after_header(), "1");
        let later = RateDecision {
            retry_after: Duration::from_millis(2001),
            ..decision
        };
        assert_eq!(later.retry_after_header(), "3");
        Ok(())
    }
}
