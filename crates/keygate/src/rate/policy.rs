//! Rate policies: how many requests a key may make, per period, with what burst.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

/// Most requests (or burst) a policy may name.
pub const MAX_REQUESTS: u32 = 1_000_000_000;
/// Longest period a policy may name: 365 days.
pub const MAX_PERIOD: Duration = Duration::from_secs(365 * 86_400);

/// A rate policy: `requests` per `period`, with bursts of up to `burst` requests.
///
/// Enforced as a GCRA (generic cell rate algorithm, a leaky bucket without a background
/// timer): one request is allowed every `period / requests` on average, and up to `burst`
/// requests may arrive at once after a quiet spell. With `burst == requests` (the default),
/// `100/1m` allows 100 requests at once, then one every 0.6 s.
///
/// Written `<requests>/<period>[ burst <n>]`, the period being `<count><unit>` with unit `s`,
/// `m`, `h` or `d` (the count may be left out for one):
///
/// ```
/// use std::time::Duration;
/// use keygate::rate::RatePolicy;
///
/// let policy: RatePolicy = "100/1s burst 200".parse()?;
/// assert_eq!(policy.requests(), 100);
/// assert_eq!(policy.period(), Duration::from_secs(1));
/// assert_eq!(policy.burst(), 200);
///
/// let daily: RatePolicy = "10000/d".parse()?;
/// assert_eq!(daily.to_string(), "10000/1d");
/// assert_eq!(daily.burst(), 10000);
/// # Ok::<(), keygate::rate::InvalidRatePolicy>(())
/// ```
///
/// The type is `#[non_exhaustive]`-shaped (private fields, constructors), so quotas can join it
/// later without breaking callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RatePolicy {
    requests: NonZeroU32,
    period_secs: NonZeroU32,
    burst: NonZeroU32,
}

impl RatePolicy {
    /// `requests` per `period`, with a burst of `requests`.
    ///
    /// # Errors
    /// [`InvalidRatePolicy`] when `requests` is zero or above [`MAX_REQUESTS`], or `period` is
    /// not a whole number of seconds between one second and [`MAX_PERIOD`].
    pub fn new(requests: u32, period: Duration) -> Result<Self, InvalidRatePolicy> {
        let requests = count(requests, InvalidRatePolicy::Requests)?;
        if period.subsec_nanos() != 0 || period.is_zero() || period > MAX_PERIOD {
            return Err(InvalidRatePolicy::Period);
        }
        let secs = u32::try_from(period.as_secs()).map_err(|_| InvalidRatePolicy::Period)?;
        let period_secs = NonZeroU32::new(secs).ok_or(InvalidRatePolicy::Period)?;
        Ok(Self {
            requests,
            period_secs,
            burst: requests,
        })
    }

    /// The same policy with bursts of up to `burst` requests.
    ///
    /// # Errors
    /// [`InvalidRatePolicy::Burst`] when `burst` is zero or above [`MAX_REQUESTS`].
    pub fn with_burst(self, burst: u32) -> Result<Self, InvalidRatePolicy> {
        Ok(Self {
            burst: count(burst, InvalidRatePolicy::Burst)?,
            ..self
        })
    }

    /// Requests allowed per period, on average.
    #[must_use]
    pub fn requests(&self) -> u32 {
        self.requests.get()
    }

    /// The period.
    #[must_use]
    pub fn period(&self) -> Duration {
        Duration::from_secs(u64::from(self.period_secs.get()))
    }

    /// The period in whole seconds.
    #[must_use]
    pub fn period_secs(&self) -> u32 {
        self.period_secs.get()
    }

    /// Most requests allowed at once.
    #[must_use]
    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// For constants: panics (at compile time, in a `const`) on zero or out-of-range values.
    pub(crate) const fn from_parts(requests: u32, period_secs: u32, burst: u32) -> Self {
        assert!(requests <= MAX_REQUESTS && burst <= MAX_REQUESTS);
        match (
            NonZeroU32::new(requests),
            NonZeroU32::new(period_secs),
            NonZeroU32::new(burst),
        ) {
            (Some(requests), Some(period_secs), Some(burst)) => Self {
                requests,
                period_secs,
                burst,
            },
            _ => panic!("keygate: a rate policy's numbers are at least 1"),
        }
    }

    /// The steady interval between two requests: `period / requests` (at least 1 ns).
    #[must_use]
    pub fn emission_interval(&self) -> Duration {
        (self.period() / self.requests()).max(Duration::from_nanos(1))
    }

    /// How long an exhausted bucket takes to refill completely: `burst × period / requests`.
    /// After that long without requests, a key's limiter state is the same as a fresh one.
    #[must_use]
    pub fn refill_time(&self) -> Duration {
        self.emission_interval()
            .saturating_mul(self.burst())
            .min(Duration::from_secs(u64::from(u32::MAX)))
    }
}

fn count(n: u32, error: InvalidRatePolicy) -> Result<NonZeroU32, InvalidRatePolicy> {
    NonZeroU32::new(n)
        .filter(|n| n.get() <= MAX_REQUESTS)
        .ok_or(error)
}

impl fmt::Display for RatePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.period_secs.get();
        let (n, unit) = [(86_400, 'd'), (3_600, 'h'), (60, 'm')]
            .into_iter()
            .find(|(size, _)| secs.is_multiple_of(*size))
            .map_or((secs, 's'), |(size, unit)| (secs / size, unit));
        write!(f, "{}/{n}{unit}", self.requests)?;
        if self.burst != self.requests {
            write!(f, " burst {}", self.burst)?;
        }
        Ok(())
    }
}

impl FromStr for RatePolicy {
    type Err = InvalidRatePolicy;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut words = text.split_whitespace();
        let rate = words.next().ok_or(InvalidRatePolicy::Syntax)?;
        let (requests, period) = rate.split_once('/').ok_or(InvalidRatePolicy::Syntax)?;
        let requests = parse_count(requests, InvalidRatePolicy::Requests)?;
        let policy = Self::new(requests, parse_period(period)?)?;
        match (words.next(), words.next(), words.next()) {
            (None, _, _) => Ok(policy),
            (Some(word), Some(burst), None) if word.eq_ignore_ascii_case("burst") => {
                policy.with_burst(parse_count(burst, InvalidRatePolicy::Burst)?)
            }
            _ => Err(InvalidRatePolicy::Syntax),
        }
    }
}

fn parse_count(text: &str, error: InvalidRatePolicy) -> Result<u32, InvalidRatePolicy> {
    let text = text.replace('_', "");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error);
    }
    text.parse().map_err(|_| error)
}

fn parse_period(text: &str) -> Result<Duration, InvalidRatePolicy> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or(InvalidRatePolicy::Period)?;
    let (n, unit) = text.split_at(split);
    let n: u64 = if n.is_empty() {
        1
    } else {
        n.parse().map_err(|_| InvalidRatePolicy::Period)?
    };
    let size = match unit {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3_600,
        "d" | "day" => 86_400,
        _ => return Err(InvalidRatePolicy::Period),
    };
    n.checked_mul(size)
        .map(Duration::from_secs)
        .ok_or(InvalidRatePolicy::Period)
}

/// A key's own rate setting. A key without one (`None` in [`KeyRecord::rate_limit`]) gets the
/// verifier's default ([`VerifierBuilder::default_rate_limit`]).
///
/// Written `unlimited` or as a [`RatePolicy`].
///
/// [`KeyRecord::rate_limit`]: crate::KeyRecord::rate_limit
/// [`VerifierBuilder::default_rate_limit`]: crate::VerifierBuilder::default_rate_limit
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RateLimit {
    /// Never limited, whatever the default.
    Unlimited,
    /// Limited by this policy.
    Limited(RatePolicy),
}

impl RateLimit {
    /// The policy, unless unlimited.
    #[must_use]
    pub fn policy(&self) -> Option<&RatePolicy> {
        match self {
            Self::Unlimited => None,
            Self::Limited(policy) => Some(policy),
        }
    }
}

impl From<RatePolicy> for RateLimit {
    fn from(policy: RatePolicy) -> Self {
        Self::Limited(policy)
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unlimited => f.write_str("unlimited"),
            Self::Limited(policy) => policy.fmt(f),
        }
    }
}

impl FromStr for RateLimit {
    type Err = InvalidRatePolicy;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().eq_ignore_ascii_case("unlimited") {
            Ok(Self::Unlimited)
        } else {
            text.parse().map(Self::Limited)
        }
    }
}

/// Why a rate policy was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRatePolicy {
    /// Not of the shape `<requests>/<period>[ burst <n>]`.
    #[error(
        "invalid rate policy: write <requests>/<period>[ burst <n>], e.g. \"100/1s burst 200\" or \"10000/1d\", or \"unlimited\""
    )]
    Syntax,
    /// The request count is not a number from 1 to [`MAX_REQUESTS`].
    #[error("invalid rate policy: the request count must be from 1 to {MAX_REQUESTS}")]
    Requests,
    /// The period is not a whole number of seconds, minutes, hours or days up to 365 days.
    #[error(
        "invalid rate policy: the period must be <count><unit> with unit s, m, h or d, from 1s to 365d"
    )]
    Period,
    /// The burst is not a number from 1 to [`MAX_REQUESTS`].
    #[error("invalid rate policy: the burst must be from 1 to {MAX_REQUESTS}")]
    Burst,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> RatePolicy {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn parses_and_displays_canonically() {
        for (text, canonical) in [
            ("5/1s", "5/1s"),
            ("5/s burst 5", "5/1s"),
            ("100/1s burst 200", "100/1s burst 200"),
            ("100/1s BURST 200", "100/1s burst 200"),
            ("10000/1d", "10000/1d"),
            ("60/60s", "60/1m"),
            ("1/90s", "1/90s"),
            ("7200/2h burst 10", "7200/2h burst 10"),
            ("1_000/1m", "1000/1m"),
            ("  3/1min  ", "3/1m"),
        ] {
            assert_eq!(policy(text).to_string(), canonical, "{text}");
            assert_eq!(policy(canonical), policy(text));
        }
    }

    #[test]
    fn refuses_bad_policies() {
        for (text, error) in [
            ("", InvalidRatePolicy::Syntax),
            ("100", InvalidRatePolicy::Syntax),
            ("100/1s burst", InvalidRatePolicy::Syntax),
            ("100/1s burst 5 extra", InvalidRatePolicy::Syntax),
            ("100/1s spike 5", InvalidRatePolicy::Syntax),
            ("0/1s", InvalidRatePolicy::Requests),
            ("-1/1s", InvalidRatePolicy::Requests),
            ("1000000001/1s", InvalidRatePolicy::Requests),
            ("1/0s", InvalidRatePolicy::Period),
            ("1/1w", InvalidRatePolicy::Period),
            ("1/366d", InvalidRatePolicy::Period),
            ("1/1", InvalidRatePolicy::Period),
            ("1/99999999999999999999d", InvalidRatePolicy::Period),
            ("1/1s burst 0", InvalidRatePolicy::Burst),
            ("1/1s burst x", InvalidRatePolicy::Burst),
        ] {
            assert_eq!(text.parse::<RatePolicy>(), Err(error), "{text:?}");
        }
    }

    #[test]
    fn rate_limit_reads_unlimited() -> Result<(), InvalidRatePolicy> {
        assert_eq!("unlimited".parse::<RateLimit>()?, RateLimit::Unlimited);
        assert_eq!(RateLimit::Unlimited.to_string(), "unlimited");
        let limited: RateLimit = "5/1s".parse()?;
        assert_eq!(limited.policy(), Some(&policy("5/1s")));
        Ok(())
    }

    #[test]
    fn intervals() {
        let p = policy("5/1s");
        assert_eq!(p.emission_interval(), Duration::from_millis(200));
        assert_eq!(p.refill_time(), Duration::from_secs(1));
        let p = policy("100/1s burst 200");
        assert_eq!(p.refill_time(), Duration::from_secs(2));
        let p = policy("1000000000/1s");
        assert_eq!(p.emission_interval(), Duration::from_nanos(1));
    }
}
