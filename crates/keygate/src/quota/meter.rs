//! The [`QuotaMeter`] trait, what it charges and what it answers; the [`QuotaLedger`] that
//! persists in-process counters.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{Quota, QuotaPeriod};
use crate::key::KeyId;
use crate::owner::OwnerTag;
use crate::store::{BoxError, StoreError};

/// Most lines one charge may spend from at once (a key's quota and its owner's).
pub const MAX_LINES: usize = 2;

/// Whose balance a charge spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuotaSubject {
    /// A key's own quota, counted under the id of the first key of its rotation lineage, so a
    /// rotated key (and its predecessor during the grace period) keeps spending one balance.
    Key(KeyId),
    /// An owner's quota, shared by all its keys (the owner id's [`OwnerTag`]).
    Owner(OwnerTag),
}

impl fmt::Display for QuotaSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(id) => write!(f, "key:{id}"),
            Self::Owner(tag) => write!(f, "owner:{tag}"),
        }
    }
}

/// One balance a charge spends from: a subject under its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuotaLine {
    /// Whose balance.
    pub subject: QuotaSubject,
    /// Under which quota.
    pub quota: Quota,
    /// The credits operators have added to this subject's balance, in all, as its record
    /// says ([`KeyRecord::quota_granted`](crate::KeyRecord::quota_granted)): a meter adds
    /// what its counter has not counted yet ([`Quota::with_granted`]). 0: none.
    pub granted: u64,
}

impl QuotaLine {
    /// A line without top-ups.
    #[must_use]
    pub fn new(subject: QuotaSubject, quota: Quota) -> Self {
        Self {
            subject,
            quota,
            granted: 0,
        }
    }

    /// The same line with `granted` credits added by operators in all.
    #[must_use]
    pub fn granted(self, granted: u64) -> Self {
        Self { granted, ..self }
    }

    /// The subject's counter brought up to date at `now` ([`Quota::current`]) with the
    /// line's top-ups counted ([`Quota::with_granted`]): what every meter charges from.
    #[must_use]
    pub fn current(&self, state: Option<CounterState>, now: SystemTime) -> CounterState {
        self.quota
            .with_granted(self.quota.current(state, now), self.granted)
    }

    /// [`current`](QuotaLine::current) at `secs` seconds since the Unix epoch.
    pub(crate) fn current_at_secs(&self, state: Option<CounterState>, secs: u64) -> CounterState {
        self.quota
            .with_granted(self.quota.current_at_secs(state, secs), self.granted)
    }
}

/// What kind of counter a quota keeps: a period's used count, or a credit balance. A
/// subject's state of another kind than its quota's counts as none (a fresh start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CounterKind {
    /// Units used in the current period window.
    Period(QuotaPeriod),
    /// Credits left.
    Credits,
}

impl CounterKind {
    /// The kind's stable name, as ledgers store it: `minute`, `hour`, `day`, `month`, `credits`.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Period(period) => period.name(),
            Self::Credits => "credits",
        }
    }
}

impl fmt::Display for CounterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown counter kind name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown quota counter kind")]
pub struct UnknownCounterKind;

impl FromStr for CounterKind {
    type Err = UnknownCounterKind;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "minute" => Self::Period(QuotaPeriod::Minute),
            "hour" => Self::Period(QuotaPeriod::Hour),
            "day" => Self::Period(QuotaPeriod::Day),
            "month" => Self::Period(QuotaPeriod::Month),
            "credits" => Self::Credits,
            _ => return Err(UnknownCounterKind),
        })
    }
}

/// A subject's counter: its kind, the window it was last brought up to date in (see
/// [`Quota::window_at`]), its value (units used for a period, credits left for credits), and
/// how many credits added by operators it has counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CounterState {
    /// The kind of counter.
    pub kind: CounterKind,
    /// The window the value belongs to.
    pub window: u64,
    /// Units used (period) or credits left (credits).
    pub value: u64,
    /// The running total of top-ups already added to `value` ([`QuotaLine::granted`] as last
    /// counted): a top-up is counted once, when a line's total first exceeds it.
    pub granted: u64,
}

/// A meter's answer to a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaDecision {
    /// Whether the cost was spent (from every line); when refused nothing was spent.
    pub allowed: bool,
    /// The line the decision is reported by: the refusing line when refused (the one that
    /// refills last, if several refuse), else the line with the least left.
    pub line: usize,
    /// Units left on that line after the charge.
    pub remaining: u64,
    /// That line's quota's size ([`Quota::size`]).
    pub size: u64,
    /// Time until that line's next period or refill; `None`: it never refills.
    pub reset: Option<Duration>,
    /// Each line's window the charge was made in (for [`QuotaMeter::refund`]); only the
    /// first `lines.len()` entries mean anything.
    pub windows: [u64; MAX_LINES],
}

impl QuotaDecision {
    /// The decision for `lines` whose states are `states` (already brought up to date with
    /// [`QuotaLine::current`], one per line), charging `cost` at `now`: when every line has
    /// `cost` left, `states` are spent and the decision allows; otherwise `states` are left as
    /// they are. Meters that keep their counters in memory decide with this; remote meters
    /// implement the same rule where the counters live.
    ///
    /// # Panics
    /// If `lines` and `states` differ in length or hold more than [`MAX_LINES`] entries.
    #[must_use]
    pub fn charge(
        lines: &[QuotaLine],
        states: &mut [CounterState],
        cost: u64,
        now: SystemTime,
    ) -> Self {
        Self::charge_since(lines, states, cost, super::since_epoch(now))
    }

    /// [`charge`](QuotaDecision::charge) at the time `since_epoch` after the Unix epoch.
    pub(crate) fn charge_since(
        lines: &[QuotaLine],
        states: &mut [CounterState],
        cost: u64,
        since_epoch: Duration,
    ) -> Self {
        assert!(lines.len() == states.len() && lines.len() <= MAX_LINES);
        let mut windows = [0; MAX_LINES];
        for (window, state) in windows.iter_mut().zip(states.iter()) {
            *window = state.window;
        }
        let refusing = lines
            .iter()
            .zip(states.iter())
            .enumerate()
            .filter(|(_, (line, state))| line.quota.remaining_in(**state) < cost)
            .max_by_key(|(_, (line, _))| {
                // Never-refilling lines sort last: a refusal by one of them is final.
                line.quota
                    .reset_after_since(since_epoch)
                    .unwrap_or(Duration::MAX)
            })
            .map(|(index, _)| index);
        if let Some(index) = refusing {
            let quota = &lines[index].quota;
            return Self {
                allowed: false,
                line: index,
                remaining: quota.remaining_in(states[index]),
                size: quota.size(),
                reset: quota.reset_after_since(since_epoch),
                windows,
            };
        }
        for (line, state) in lines.iter().zip(states.iter_mut()) {
            if let Some(spent) = line.quota.spend(*state, cost) {
                *state = spent;
            }
        }
        let (index, remaining) = lines
            .iter()
            .zip(states.iter())
            .map(|(line, state)| line.quota.remaining_in(*state))
            .enumerate()
            .min_by_key(|(_, remaining)| *remaining)
            .unwrap_or((0, u64::MAX));
        let quota = lines.get(index).map(|line| line.quota);
        Self {
            allowed: true,
            line: index,
            remaining,
            size: quota.map_or(0, |q| q.size()),
            reset: quota.and_then(|q| q.reset_after_since(since_epoch)),
            windows,
        }
    }
}

/// A subject's balance as shown to operators, without spending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUsage {
    /// Units left now.
    pub remaining: u64,
    /// The counter behind it.
    pub state: CounterState,
    /// Time until the next period or refill; `None`: never.
    pub reset: Option<Duration>,
}

impl QuotaUsage {
    /// `line`'s balance at `now` from its subject's `saved` counter (`None`: never charged),
    /// brought up to date as a charge would ([`QuotaLine::current`]).
    #[must_use]
    pub fn of(line: &QuotaLine, saved: Option<CounterState>, now: SystemTime) -> Self {
        let state = line.current(saved, now);
        Self {
            remaining: line.quota.remaining_in(state),
            state,
            reset: line.quota.reset_after(now),
        }
    }
}

/// The lines a charge for `record` spends from: its own quota's (counted under its rotation
/// lineage, with its top-ups) and its owner's (with the owner's top-ups), when it has an
/// owner with a quota. The verifier's cached keys and [`Admin::quota_balance`](crate::Admin::quota_balance) build them
/// here, so a read-out names the very balances requests spend.
pub(crate) fn record_lines(
    record: &crate::KeyRecord,
    owner: &crate::store::OwnerLimits,
) -> (Option<QuotaLine>, Option<QuotaLine>) {
    let key = record
        .quota
        .map(|quota| QuotaLine::new(record.quota_subject(), quota).granted(record.quota_granted));
    let owner = record
        .owner
        .as_deref()
        .zip(owner.quota)
        .map(|(id, quota)| owner_line(id, quota, owner.quota_granted));
    (key, owner)
}

/// The line an owner's shared quota is counted on, with the credits added to it.
pub(crate) fn owner_line(owner: &str, quota: Quota, granted: u64) -> QuotaLine {
    QuotaLine::new(QuotaSubject::Owner(OwnerTag::of(owner)), quota).granted(granted)
}

/// A key's quota balances ([`Admin::quota_balance`](crate::Admin::quota_balance)): what its
/// own quota and its owner's quota have left, without spending. An owner's read-out
/// ([`Admin::owner_quota_balance`](crate::Admin::owner_quota_balance)) has only the owner line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuotaBalance {
    /// When the balances were read: each `reset` counts from here.
    pub at: SystemTime,
    /// The key's own quota (with the credits added to it, [`QuotaLine::granted`]), counted
    /// under its rotation lineage, and its balance; `None`: the key has no quota of its own.
    pub key: Option<(QuotaLine, QuotaUsage)>,
    /// Its owner's shared quota (with the credits added to it) and its balance; `None`: no
    /// owner, or an owner without one.
    pub owner: Option<(QuotaLine, QuotaUsage)>,
}

impl QuotaBalance {
    /// A key's balances read at `at`: its own line's and its owner's.
    #[must_use]
    pub fn new(
        at: SystemTime,
        key: Option<(QuotaLine, QuotaUsage)>,
        owner: Option<(QuotaLine, QuotaUsage)>,
    ) -> Self {
        Self { at, key, owner }
    }
}

/// The meter could not decide (its backing service is unreachable). The verifier answers
/// 503, never allows silently.
#[derive(Debug, thiserror::Error)]
#[error("quota meter unavailable: {0}")]
pub struct MeterError(#[source] pub BoxError);

/// Counts what keys and owners spend of their quotas. Object safe (`Arc<dyn QuotaMeter>`).
///
/// A charge spends one cost from one or more lines (a key's quota and its owner's) as one step:
/// from all of them, or — when any has less than the cost left — from none.
#[async_trait]
pub trait QuotaMeter: Send + Sync + 'static {
    /// Spends `cost` from every line, or from none (see [`QuotaDecision::charge`]).
    ///
    /// # Errors
    /// [`MeterError`] when the meter cannot decide.
    async fn charge(
        &self,
        lines: &[QuotaLine],
        cost: u64,
        now: SystemTime,
    ) -> Result<QuotaDecision, MeterError>;

    /// Whether this meter may answer [`charge_now`](QuotaMeter::charge_now) (it keeps its
    /// counters in process). `false` (the default): the verifier awaits
    /// [`charge`](QuotaMeter::charge).
    fn decides_now(&self) -> bool {
        false
    }

    /// [`charge`](QuotaMeter::charge) without awaiting; `None` (the default) means "call
    /// `charge`" (for an in-process meter: a counter must be loaded first), and nothing was
    /// spent.
    fn charge_now(
        &self,
        lines: &[QuotaLine],
        cost: u64,
        now: SystemTime,
    ) -> Option<Result<QuotaDecision, MeterError>> {
        let _ = (lines, cost, now);
        None
    }

    /// Gives back `cost` that the allowed `decision` spent from `lines` (a guard refused the
    /// request after the key layer charged it, or a route costs less than was charged). A
    /// line whose window has moved on by `now` is left alone; a refused decision refunds
    /// nothing.
    ///
    /// # Errors
    /// [`MeterError`] when the meter cannot be reached.
    async fn refund(
        &self,
        lines: &[QuotaLine],
        cost: u64,
        decision: &QuotaDecision,
        now: SystemTime,
    ) -> Result<(), MeterError>;

    /// Saves what the meter keeps only in memory (an in-process meter's counters not yet
    /// written behind to its ledger). Call it on graceful shutdown, through
    /// [`Verifier::flush_quota`](crate::Verifier::flush_quota). The default does nothing:
    /// a shared meter keeps nothing to save.
    ///
    /// # Errors
    /// [`MeterError`] when the counters could not be saved (they stay pending).
    async fn flush(&self) -> Result<(), MeterError> {
        Ok(())
    }

    /// `line`'s balance at `now`, without spending.
    ///
    /// # Errors
    /// [`MeterError`] when the meter cannot be reached.
    async fn usage(&self, line: &QuotaLine, now: SystemTime) -> Result<QuotaUsage, MeterError>;
}

/// Where an in-process meter persists its counters (write-behind): implemented by the key
/// stores that keep a counter table. A subject's counter is one row, overwritten on save.
#[async_trait]
pub trait QuotaLedger: Send + Sync + 'static {
    /// The saved counters of `subjects` (those that have one).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot be read.
    async fn load_counters(
        &self,
        subjects: &[QuotaSubject],
    ) -> Result<Vec<(QuotaSubject, CounterState)>, StoreError>;

    /// The saved counter of `subject` alone (`None`: none saved). The default reads it with
    /// [`load_counters`](QuotaLedger::load_counters).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot be read.
    async fn load_counter(
        &self,
        subject: &QuotaSubject,
    ) -> Result<Option<CounterState>, StoreError> {
        Ok(self
            .load_counters(std::slice::from_ref(subject))
            .await?
            .into_iter()
            .find_map(|(saved, state)| (saved == *subject).then_some(state)))
    }

    /// Saves `counters`, replacing each subject's saved counter.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot be written; nothing may be assumed
    /// saved then.
    async fn save_counters(
        &self,
        counters: &[(QuotaSubject, CounterState)],
    ) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(subject: QuotaSubject, quota: &str) -> QuotaLine {
        QuotaLine::new(
            subject,
            quota.parse().unwrap_or_else(|e| panic!("{quota}: {e}")),
        )
    }

    #[test]
    fn a_charge_spends_from_all_lines_or_none() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 10 + 60);
        let key = QuotaSubject::Key(KeyId::random());
        let owner = QuotaSubject::Owner(OwnerTag::of("team-x"));
        let lines = [line(key, "5/day"), line(owner, "3/hour")];
        let mut states = lines.map(|l| l.quota.current(None, now));
        let first = QuotaDecision::charge(&lines, &mut states, 2, now);
        assert!(first.allowed);
        assert_eq!((first.line, first.remaining, first.size), (1, 1, 3));
        assert_eq!(first.reset, Some(Duration::from_secs(3_540)));
        let before = states;
        let refused = QuotaDecision::charge(&lines, &mut states, 2, now);
        assert!(!refused.allowed);
        assert_eq!((refused.line, refused.remaining), (1, 1));
        assert_eq!(states, before, "nothing spent from the key's line either");
        // Both refuse: the one that refills last is reported.
        let refused = QuotaDecision::charge(&lines, &mut states, 4, now);
        assert_eq!((refused.allowed, refused.line), (false, 0));
        assert_eq!(refused.reset, Some(Duration::from_secs(86_400 - 60)));
        assert_eq!(refused.windows[..2], [states[0].window, states[1].window]);
    }

    #[test]
    fn never_refilling_credits_refuse_for_good() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let key = QuotaSubject::Key(KeyId::random());
        let lines = [line(key, "credits 1")];
        let mut states = lines.map(|l| l.quota.current(None, now));
        assert!(QuotaDecision::charge(&lines, &mut states, 1, now).allowed);
        let refused = QuotaDecision::charge(&lines, &mut states, 1, now);
        assert_eq!(
            (refused.allowed, refused.remaining, refused.reset),
            (false, 0, None)
        );
    }

    #[test]
    fn counter_kinds_round_trip() {
        for kind in [
            CounterKind::Period(QuotaPeriod::Minute),
            CounterKind::Period(QuotaPeriod::Hour),
            CounterKind::Period(QuotaPeriod::Day),
            CounterKind::Period(QuotaPeriod::Month),
            CounterKind::Credits,
        ] {
            assert_eq!(kind.as_str().parse::<CounterKind>(), Ok(kind));
        }
        assert_eq!("week".parse::<CounterKind>(), Err(UnknownCounterKind));
    }
}
