//! Quotas: how much a key (or all keys of an owner) may use per calendar period, or a balance of
//! credits that refills on a schedule.
//!
//! A rate limit ([`crate::rate`]) smooths traffic over seconds; a quota caps the total: `10000/day`
//! (a count per UTC calendar day, reset at midnight UTC), `1000000/month` (per UTC calendar
//! month), or `credits 500 refill 500 every 1d` (a balance that is spent and topped back up).
//! Each request spends its route's *cost* (1 by default). Refused requests never spend.
//!
//! - [`Quota`]: a quota as a key or owner record keeps it, with its text form.
//! - [`QuotaMeter`]: what counts spending; [`InProcessMeter`] counts in one process (optionally
//!   persisted write-behind through a [`QuotaLedger`]), a shared meter (Redis) counts across
//!   instances.
//! - [`QuotaSubject`]: whose balance a charge spends (a key's, or an owner's).
//! - [`QuotaReceipt`]: what the key check charged a request (the default cost, 1), in the
//!   request's extensions for route guards: [`Cost`](crate::Cost) settles a route's cost,
//!   refusing guards refund it. [`QuotaReport`]: a decision with its quota, for the
//!   `RateLimit` fields and a `429 quota_exhausted`.
//!
//! The whole picture (windows, cost, refunds, headers, rotation, durability) is in
//! `docs/quotas.md`.
//!
//! # Calendar periods
//! Period windows are aligned to UTC: a `day` runs from 00:00:00 UTC to the next midnight, a
//! `month` from the first of the month 00:00 UTC, an `hour` and a `minute` from the whole hour or
//! minute. Credits with a refill are refilled at the multiples of the refill interval since the
//! Unix epoch (UTC): `every 1d` refills at midnight UTC, `every 1h` on the hour.

mod in_process;
mod meter;
mod receipt;

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

pub use in_process::{DEFAULT_FLUSH_INTERVAL, InProcessMeter, InProcessMeterBuilder, MeterStats};
pub use meter::{
    CounterKind, CounterState, MAX_LINES, MeterError, QuotaBalance, QuotaDecision, QuotaLedger,
    QuotaLine, QuotaMeter, QuotaSubject, QuotaUsage, UnknownCounterKind,
};
pub(crate) use meter::{owner_line, record_lines};
pub(crate) use receipt::refund_refused;
pub use receipt::{QuotaReceipt, QuotaReport, SettleError};

/// Most units a quota may name (a count per period, a balance, a refill amount).
pub const MAX_QUOTA: u64 = 1_000_000_000_000;

/// The largest credit balance a counter holds: a starting balance and every top-up.
pub const MAX_BALANCE: u64 = MAX_QUOTA + MAX_GRANTED;

/// Most credits one subject may be given by top-ups in all ([`CounterState::granted`]): 10¹⁵,
/// so a balance (at most [`MAX_QUOTA`] + this) stays exact in a double (Redis's Lua) and in a
/// signed 64-bit column.
pub const MAX_GRANTED: u64 = 1_000_000_000_000_000;

/// Longest refill interval: 365 days.
pub const MAX_REFILL_INTERVAL: Duration = Duration::from_secs(365 * 86_400);

/// A quota: a count per calendar period, or credits with an optional refill.
///
/// ```
/// use keygate::quota::{Quota, QuotaPeriod};
///
/// let daily: Quota = "10000/day".parse()?;
/// assert_eq!(daily, Quota::per_period(10000, QuotaPeriod::Day)?);
/// assert_eq!(daily.to_string(), "10000/day");
///
/// let credits: Quota = "credits 500 refill 500 every 1d".parse()?;
/// assert_eq!(credits.to_string(), "credits 500 refill 500 every 1d");
/// # Ok::<(), keygate::quota::InvalidQuota>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Quota {
    /// At most `limit` units per calendar `period` (UTC).
    Period {
        /// Units per period.
        limit: u64,
        /// The calendar period.
        period: QuotaPeriod,
    },
    /// A balance of credits: `credits` to start with; with a refill, topped back up on
    /// schedule.
    Credits {
        /// The starting balance.
        credits: u64,
        /// How the balance is topped up, if it is.
        refill: Option<Refill>,
    },
}

/// A calendar period, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuotaPeriod {
    /// A whole UTC minute.
    Minute,
    /// A whole UTC hour.
    Hour,
    /// A UTC day, midnight to midnight.
    Day,
    /// A UTC calendar month.
    Month,
}

/// A credit refill: every `every` (at the multiples of `every` since the Unix epoch), the
/// balance is raised to `amount` if it is below (credits added on top by an operator are
/// kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Refill {
    amount: u64,
    every_secs: u32,
}

impl Refill {
    /// Refill to `amount` every `every`.
    ///
    /// # Errors
    /// [`InvalidQuota::Amount`] when `amount` is zero or above [`MAX_QUOTA`];
    /// [`InvalidQuota::Interval`] when `every` is not whole seconds from 1 s to
    /// [`MAX_REFILL_INTERVAL`].
    pub fn new(amount: u64, every: Duration) -> Result<Self, InvalidQuota> {
        let amount = amount_ok(amount)?;
        if every.subsec_nanos() != 0 || every.is_zero() || every > MAX_REFILL_INTERVAL {
            return Err(InvalidQuota::Interval);
        }
        let every_secs = u32::try_from(every.as_secs()).map_err(|_| InvalidQuota::Interval)?;
        Ok(Self { amount, every_secs })
    }

    /// The balance a refill raises to.
    #[must_use]
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// The refill interval.
    #[must_use]
    pub fn every(&self) -> Duration {
        Duration::from_secs(u64::from(self.every_secs))
    }
}

fn amount_ok(n: u64) -> Result<u64, InvalidQuota> {
    if n == 0 || n > MAX_QUOTA {
        Err(InvalidQuota::Amount)
    } else {
        Ok(n)
    }
}

impl Quota {
    /// `limit` units per calendar `period`.
    ///
    /// # Errors
    /// [`InvalidQuota::Amount`] when `limit` is zero or above [`MAX_QUOTA`].
    pub fn per_period(limit: u64, period: QuotaPeriod) -> Result<Self, InvalidQuota> {
        Ok(Self::Period {
            limit: amount_ok(limit)?,
            period,
        })
    }

    /// A balance of `credits` (which may be zero: a key that must be topped up first), refilled
    /// by `refill` if given.
    ///
    /// # Errors
    /// [`InvalidQuota::Amount`] when `credits` is above [`MAX_QUOTA`].
    pub fn credits(credits: u64, refill: Option<Refill>) -> Result<Self, InvalidQuota> {
        if credits > MAX_QUOTA {
            return Err(InvalidQuota::Amount);
        }
        Ok(Self::Credits { credits, refill })
    }

    /// What kind of counter this quota keeps (a changed quota of the same kind keeps counting
    /// from the same state; another kind starts afresh).
    #[must_use]
    pub fn counter_kind(&self) -> CounterKind {
        match self {
            Self::Period { period, .. } => CounterKind::Period(*period),
            Self::Credits { .. } => CounterKind::Credits,
        }
    }

    /// The window `now` falls in: the period's index since the epoch, the refill interval's
    /// index for credits with a refill, 0 for credits without.
    #[must_use]
    pub fn window_at(&self, now: SystemTime) -> u64 {
        self.window_at_secs(unix_secs(now))
    }

    /// [`window_at`](Quota::window_at) of `secs` seconds since the epoch.
    fn window_at_secs(&self, secs: u64) -> u64 {
        match self {
            Self::Period { period, .. } => period.window_of(secs),
            Self::Credits {
                refill: Some(refill),
                ..
            } => secs / u64::from(refill.every_secs),
            Self::Credits { refill: None, .. } => 0,
        }
    }

    /// Time from `now` to the end of its window (the next period boundary or refill); `None`
    /// for credits that never refill.
    #[must_use]
    pub fn reset_after(&self, now: SystemTime) -> Option<Duration> {
        self.reset_after_since(since_epoch(now))
    }

    /// [`reset_after`](Quota::reset_after) for the time `since_epoch` after the Unix epoch
    /// (a charge converts the clock's reading once, for all its lines).
    pub(crate) fn reset_after_since(&self, since_epoch: Duration) -> Option<Duration> {
        let secs = since_epoch.as_secs();
        let end_secs = match self {
            Self::Period { period, .. } => period.window_start(period.window_of(secs) + 1),
            Self::Credits {
                refill: Some(refill),
                ..
            } => {
                let every = u64::from(refill.every_secs);
                (secs / every + 1) * every
            }
            Self::Credits { refill: None, .. } => return None,
        };
        Some(Duration::from_secs(end_secs).saturating_sub(since_epoch))
    }

    /// The counter a subject starts a window with, or moves to from `state` at `now`: a
    /// period's used count resets each window; credits start at their balance and are raised
    /// to the refill amount at each refill. `state` of another kind counts as none, except for
    /// the credits it records as granted ([`CounterState::granted`]), which carry over (so a
    /// top-up is never added twice, whatever the quota changes to and back).
    #[must_use]
    pub fn current(&self, state: Option<CounterState>, now: SystemTime) -> CounterState {
        self.current_at_secs(state, unix_secs(now))
    }

    /// [`current`](Quota::current) at `secs` seconds since the Unix epoch.
    pub(crate) fn current_at_secs(&self, state: Option<CounterState>, secs: u64) -> CounterState {
        let kind = self.counter_kind();
        let window = self.window_at_secs(secs);
        let granted = state.map_or(0, |s| s.granted);
        let state = state.filter(|s| s.kind == kind);
        match (self, state) {
            (Self::Period { .. }, Some(s)) if s.window == window => s,
            (Self::Period { .. }, _) => CounterState {
                kind,
                window,
                value: 0,
                granted,
            },
            (Self::Credits { refill, .. }, Some(s)) => match refill {
                Some(refill) if s.window != window => CounterState {
                    kind,
                    window,
                    value: s.value.max(refill.amount),
                    granted,
                },
                _ => s,
            },
            (Self::Credits { credits, .. }, None) => CounterState {
                kind,
                window,
                value: *credits,
                granted,
            },
        }
    }

    /// `state` (already [`current`](Quota::current)) with the top-ups it has not counted yet:
    /// `granted` is the subject's running total of credits added by operators
    /// ([`QuotaLine::granted`]); what it exceeds `state.granted` by is added to a credit
    /// balance, once. A lower or equal total (an older copy of the record) changes nothing,
    /// so meters may be told the same total any number of times. A period's counter only
    /// records the total: top-ups add credits, not requests per period.
    #[must_use]
    pub fn with_granted(&self, state: CounterState, granted: u64) -> CounterState {
        if granted <= state.granted {
            return state;
        }
        let value = match self {
            Self::Credits { .. } => state
                .value
                .saturating_add(granted - state.granted)
                .min(MAX_BALANCE),
            Self::Period { .. } => state.value,
        };
        CounterState {
            value,
            granted,
            ..state
        }
    }

    /// Units left in `state` (already [`current`](Quota::current)).
    #[must_use]
    pub fn remaining_in(&self, state: CounterState) -> u64 {
        match self {
            Self::Period { limit, .. } => limit.saturating_sub(state.value),
            Self::Credits { .. } => state.value,
        }
    }

    /// `state` (already [`current`](Quota::current)) after spending `cost`, if that many units
    /// are left; `None`: refused, nothing spent.
    #[must_use]
    pub fn spend(&self, state: CounterState, cost: u64) -> Option<CounterState> {
        if self.remaining_in(state) < cost {
            return None;
        }
        let value = match self {
            Self::Period { .. } => state.value + cost,
            Self::Credits { .. } => state.value - cost,
        };
        Some(CounterState { value, ..state })
    }

    /// `state` (already [`current`](Quota::current)) with `cost` given back, when it is still
    /// in the window `window` the cost was spent in (a new window already started afresh).
    #[must_use]
    pub fn give_back(&self, state: CounterState, cost: u64, window: u64) -> CounterState {
        if state.window != window {
            return state;
        }
        let value = match self {
            Self::Period { .. } => state.value.saturating_sub(cost),
            Self::Credits { .. } => state.value.saturating_add(cost).min(MAX_BALANCE),
        };
        CounterState { value, ..state }
    }

    /// The quota's size as the `RateLimit-Policy` field's `q` states it: the period's limit,
    /// the refill amount, or the starting balance.
    #[must_use]
    pub fn size(&self) -> u64 {
        match self {
            Self::Period { limit, .. } => *limit,
            Self::Credits {
                refill: Some(refill),
                ..
            } => refill.amount,
            Self::Credits { credits, .. } => *credits,
        }
    }
}

/// Time since the Unix epoch; zero for earlier times.
pub(crate) fn since_epoch(now: SystemTime) -> Duration {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

fn unix_secs(now: SystemTime) -> u64 {
    since_epoch(now).as_secs()
}

impl QuotaPeriod {
    /// The index of the window holding `secs` (seconds since the epoch): minutes, hours or
    /// days since the epoch, or months since January 1970.
    #[must_use]
    pub fn window_of(self, secs: u64) -> u64 {
        match self {
            Self::Minute => secs / 60,
            Self::Hour => secs / 3_600,
            Self::Day => secs / 86_400,
            Self::Month => {
                let (year, month) = year_month(secs / 86_400);
                (year - 1970) * 12 + (month - 1)
            }
        }
    }

    /// The first second (since the epoch) of window `window`.
    #[must_use]
    pub fn window_start(self, window: u64) -> u64 {
        match self {
            Self::Minute => window.saturating_mul(60),
            Self::Hour => window.saturating_mul(3_600),
            Self::Day => window.saturating_mul(86_400),
            Self::Month => days_from_civil(1970 + window / 12, window % 12 + 1) * 86_400,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Month => "month",
        }
    }
}

/// (year, month 1..=12) of day `days` since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn year_month(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month)
}

/// Days since 1970-01-01 of the first day of `month` in `year` (`days_from_civil`).
fn days_from_civil(year: u64, month: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let yoe = year - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

impl fmt::Display for QuotaPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Refill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.every_secs;
        let (n, unit) = [(86_400, 'd'), (3_600, 'h'), (60, 'm')]
            .into_iter()
            .find(|(size, _)| secs.is_multiple_of(*size))
            .map_or((secs, 's'), |(size, unit)| (secs / size, unit));
        write!(f, "refill {} every {n}{unit}", self.amount)
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Period { limit, period } => write!(f, "{limit}/{period}"),
            Self::Credits { credits, refill } => {
                write!(f, "credits {credits}")?;
                if let Some(refill) = refill {
                    write!(f, " {refill}")?;
                }
                Ok(())
            }
        }
    }
}

impl FromStr for Quota {
    type Err = InvalidQuota;

    /// `<n>/<minute|hour|day|month>` (also `min`, `h`, `d`, `mo`), or
    /// `credits <n>[ refill <n> every <count><s|m|h|d>]` (`remaining` may stand for
    /// `credits`, and a comma may follow the balance: `remaining 500, refill 500 every 1d`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Some((count, period)) = text.split_once('/') {
            let period = match period.trim().to_ascii_lowercase().as_str() {
                "minute" | "min" => QuotaPeriod::Minute,
                "hour" | "h" => QuotaPeriod::Hour,
                "day" | "d" => QuotaPeriod::Day,
                "month" | "mo" => QuotaPeriod::Month,
                _ => return Err(InvalidQuota::Period),
            };
            return Self::per_period(number(count.trim())?, period);
        }
        let normalized = text.replace(',', " ");
        let words: Vec<&str> = normalized.split_whitespace().collect();
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
        match lower.as_slice() {
            ["credits" | "remaining", balance] => Self::credits(number(balance)?, None),
            [
                "credits" | "remaining",
                balance,
                "refill",
                amount,
                "every",
                every,
            ] => {
                let refill = Refill::new(number(amount)?, interval(every)?)?;
                Self::credits(number(balance)?, Some(refill))
            }
            _ => Err(InvalidQuota::Syntax),
        }
    }
}

fn number(text: &str) -> Result<u64, InvalidQuota> {
    let text = text.replace('_', "");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidQuota::Amount);
    }
    let n: u64 = text.parse().map_err(|_| InvalidQuota::Amount)?;
    if n > MAX_QUOTA {
        return Err(InvalidQuota::Amount);
    }
    Ok(n)
}

fn interval(text: &str) -> Result<Duration, InvalidQuota> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or(InvalidQuota::Interval)?;
    let (n, unit) = text.split_at(split);
    let n: u64 = if n.is_empty() {
        1
    } else {
        n.parse().map_err(|_| InvalidQuota::Interval)?
    };
    let size = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(InvalidQuota::Interval),
    };
    n.checked_mul(size)
        .map(Duration::from_secs)
        .ok_or(InvalidQuota::Interval)
}

/// Why a quota was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidQuota {
    /// Neither `<n>/<period>` nor `credits <n>[ refill <n> every <interval>]`.
    #[error(
        "invalid quota: write <n>/<minute|hour|day|month> (e.g. \"10000/day\") or credits <n>[ refill <n> every <interval>] (e.g. \"credits 500 refill 500 every 1d\")"
    )]
    Syntax,
    /// A count or balance is not a number up to [`MAX_QUOTA`] (counts and refills at least 1).
    #[error("invalid quota: counts must be whole numbers from 1 to {MAX_QUOTA}")]
    Amount,
    /// The period is not minute, hour, day or month.
    #[error("invalid quota: the period must be minute, hour, day or month")]
    Period,
    /// The refill interval is not `<count><s|m|h|d>` from 1 s to 365 days.
    #[error(
        "invalid quota: the refill interval must be <count><unit> with unit s, m, h or d, from 1s to 365d"
    )]
    Interval,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(text: &str) -> Quota {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn parses_and_displays_canonically() {
        for (text, canonical) in [
            ("10000/day", "10000/day"),
            ("10_000/d", "10000/day"),
            ("1000000/month", "1000000/month"),
            ("5/MO", "5/month"),
            ("60/min", "60/minute"),
            ("3/h", "3/hour"),
            ("credits 500", "credits 500"),
            ("credits 0", "credits 0"),
            (
                "credits 500 refill 500 every 1d",
                "credits 500 refill 500 every 1d",
            ),
            (
                "remaining 500, refill 500 every 24h",
                "credits 500 refill 500 every 1d",
            ),
            (
                "Credits 10 Refill 5 Every 90s",
                "credits 10 refill 5 every 90s",
            ),
            ("credits 1 refill 1 every 2m", "credits 1 refill 1 every 2m"),
        ] {
            assert_eq!(quota(text).to_string(), canonical, "{text}");
            assert_eq!(quota(canonical), quota(text));
        }
    }

    #[test]
    fn refuses_bad_quotas() {
        for (text, error) in [
            ("", InvalidQuota::Syntax),
            ("10000", InvalidQuota::Syntax),
            ("credits", InvalidQuota::Syntax),
            ("credits 5 refill 5", InvalidQuota::Syntax),
            ("credits 5 refill 5 every 1d extra", InvalidQuota::Syntax),
            ("0/day", InvalidQuota::Amount),
            ("-1/day", InvalidQuota::Amount),
            ("1000000000001/day", InvalidQuota::Amount),
            ("5/week", InvalidQuota::Period),
            ("5/", InvalidQuota::Period),
            ("credits x", InvalidQuota::Amount),
            ("credits 5 refill 0 every 1d", InvalidQuota::Amount),
            ("credits 5 refill 5 every 0s", InvalidQuota::Interval),
            ("credits 5 refill 5 every 366d", InvalidQuota::Interval),
            ("credits 5 refill 5 every 1w", InvalidQuota::Interval),
        ] {
            assert_eq!(text.parse::<Quota>(), Err(error), "{text:?}");
        }
    }

    #[test]
    fn months_follow_the_calendar() {
        // 2024-02-29 12:00 UTC (a leap day) is in February 2024.
        let leap_day = 1_709_208_000;
        let window = QuotaPeriod::Month.window_of(leap_day);
        assert_eq!(window, (2024 - 1970) * 12 + 1);
        assert_eq!(QuotaPeriod::Month.window_start(window), 1_706_745_600); // 2024-02-01
        assert_eq!(QuotaPeriod::Month.window_start(window + 1), 1_709_251_200); // 2024-03-01
        // 2023-12-31 23:59:59 → December; one second later → January 2024.
        assert_eq!(
            QuotaPeriod::Month.window_of(1_704_067_199) + 1,
            QuotaPeriod::Month.window_of(1_704_067_200)
        );
        assert_eq!(QuotaPeriod::Month.window_start(0), 0);
        // Every month start maps back to its own window, over 60 years.
        for window in 1..720 {
            let start = QuotaPeriod::Month.window_start(window);
            assert_eq!(QuotaPeriod::Month.window_of(start), window);
            assert_eq!(QuotaPeriod::Month.window_of(start - 1), window - 1);
        }
    }

    #[test]
    fn a_day_resets_at_midnight_utc() {
        let q = quota("5/day");
        let noon = at(19_000 * 86_400 + 43_200);
        let state = q.current(None, noon);
        let spent = q.spend(state, 2).and_then(|s| q.spend(s, 2));
        let spent = spent.unwrap_or_else(|| panic!("4 of 5 fit"));
        assert_eq!(q.remaining_in(spent), 1);
        assert_eq!(q.spend(spent, 2), None, "refused: nothing spent");
        assert_eq!(q.reset_after(noon), Some(Duration::from_secs(43_200)));
        let next_day = at(19_001 * 86_400);
        assert_eq!(q.remaining_in(q.current(Some(spent), next_day)), 5);
        // A refund lands only in the window the cost was spent in.
        assert_eq!(q.remaining_in(q.give_back(spent, 2, spent.window)), 3);
        let fresh = q.current(Some(spent), next_day);
        assert_eq!(q.give_back(fresh, 2, spent.window), fresh);
    }

    #[test]
    fn credits_refill_on_schedule_and_keep_top_ups() {
        let q = quota("credits 10 refill 4 every 1h");
        let t0 = at(3_600 * 100 + 10);
        let state = q.current(None, t0);
        assert_eq!(q.remaining_in(state), 10);
        let state = q.spend(state, 9).unwrap_or_else(|| panic!("9 of 10"));
        assert_eq!(
            q.remaining_in(q.current(Some(state), at(3_600 * 101 - 1))),
            1
        );
        let refilled = q.current(Some(state), at(3_600 * 101));
        assert_eq!(q.remaining_in(refilled), 4, "raised to the refill amount");
        // A balance above the refill amount is kept.
        let rich = CounterState { value: 50, ..state };
        assert_eq!(q.remaining_in(q.current(Some(rich), at(3_600 * 101))), 50);
        assert_eq!(q.reset_after(t0), Some(Duration::from_secs(3_590)));
        let once = quota("credits 3");
        assert_eq!(once.reset_after(t0), None);
        let state = once.current(None, t0);
        assert_eq!(
            once.remaining_in(once.current(Some(state), at(u64::from(u32::MAX)))),
            3
        );
    }

    #[test]
    fn another_kind_of_state_starts_afresh() {
        let daily = quota("5/day");
        let credits = quota("credits 7");
        let now = at(86_400 * 3);
        let spent = daily.spend(daily.current(None, now), 5);
        let spent = spent.unwrap_or_else(|| panic!("5 of 5"));
        assert_eq!(credits.remaining_in(credits.current(Some(spent), now)), 7);
        // A changed limit of the same kind keeps the count.
        let bigger = quota("8/day");
        assert_eq!(bigger.remaining_in(bigger.current(Some(spent), now)), 3);
    }

    #[test]
    fn top_ups_are_added_once() {
        let q = quota("credits 2");
        let now = at(86_400 * 3);
        let spent = q.spend(q.current(None, now), 2).unwrap();
        assert_eq!(q.remaining_in(spent), 0);
        let topped = q.with_granted(spent, 5);
        assert_eq!((q.remaining_in(topped), topped.granted), (5, 5));
        // The same total again, or an older (lower) one: nothing more.
        assert_eq!(q.with_granted(topped, 5), topped);
        assert_eq!(q.with_granted(topped, 3), topped);
        // A later total adds only the difference.
        let more = q.with_granted(topped, 12);
        assert_eq!((q.remaining_in(more), more.granted), (12, 12));
        // A fresh counter starts with the whole total added.
        let fresh = q.with_granted(q.current(None, now), 12);
        assert_eq!(q.remaining_in(fresh), 14);
        // Never beyond the largest balance.
        let capped = q.with_granted(spent, MAX_GRANTED);
        assert_eq!(capped.value, MAX_GRANTED);
        let full = CounterState {
            value: MAX_BALANCE,
            ..spent
        };
        assert_eq!(q.with_granted(full, 1).value, MAX_BALANCE);
        // A refund gives back past the quota's size when top-ups made the balance larger.
        let rich = q.spend(more, 1).unwrap();
        assert_eq!(q.give_back(rich, 1, rich.window).value, 12);
    }

    #[test]
    fn a_period_counter_records_top_ups_without_adding_them() {
        let daily = quota("5/day");
        let now = at(86_400 * 3);
        let used = daily.spend(daily.current(None, now), 4).unwrap();
        let recorded = daily.with_granted(used, 9);
        assert_eq!((recorded.value, recorded.granted), (4, 9));
        assert_eq!(daily.remaining_in(recorded), 1);
    }

    #[test]
    fn counted_top_ups_survive_a_change_of_kind_and_back() {
        let credits = quota("credits 2");
        let daily = quota("5/day");
        let now = at(86_400 * 3);
        let topped = credits.with_granted(credits.current(None, now), 10);
        assert_eq!(credits.remaining_in(topped), 12);
        // To a period: a fresh count, the total kept.
        let period = daily.current(Some(topped), now);
        assert_eq!((period.value, period.granted), (0, 10));
        // And back to credits: a fresh balance without the old top-ups added again.
        let back = credits.with_granted(credits.current(Some(period), now), 10);
        assert_eq!((credits.remaining_in(back), back.granted), (2, 10));
        // A refill keeps them: raised only when below the refill amount.
        let refilled = quota("credits 2 refill 2 every 1h");
        let state = refilled.with_granted(refilled.current(None, now), 10);
        let later = refilled.current(Some(state), now + Duration::from_secs(3_600));
        assert_eq!(refilled.remaining_in(later), 12);
    }
}
