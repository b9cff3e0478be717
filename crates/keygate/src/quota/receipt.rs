//! What a request spent of its quotas: the [`QuotaReceipt`] the key check puts into the
//! request, which route guards settle ([`Cost`](crate::Cost)) or refund (a guard's refusal).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use super::meter::MeterError;
use super::{Quota, QuotaDecision, QuotaLine, QuotaMeter};
use crate::clock::Clock;

/// A quota decision with the quota it was made under: what the `RateLimit` fields and a
/// `429 quota_exhausted` report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaReport {
    /// The meter's decision.
    pub decision: QuotaDecision,
    /// The quota of the line the decision reports ([`QuotaDecision::line`]).
    pub quota: Quota,
}

impl QuotaReport {
    /// The report of `decision` over `lines`.
    #[must_use]
    pub fn of(lines: &[QuotaLine], decision: QuotaDecision) -> Option<Self> {
        lines.get(decision.line).map(|line| Self {
            decision,
            quota: line.quota,
        })
    }

    /// The length of the reported line's window in seconds (the period's, e.g. 86 400 for a
    /// day and the current month's length for a month; the refill interval's for credits);
    /// `None` for credits that never refill.
    #[must_use]
    pub fn window_secs(&self) -> Option<u64> {
        let window = self.decision.windows[self.decision.line];
        match self.quota {
            Quota::Period { period, .. } => {
                Some(period.window_start(window + 1) - period.window_start(window))
            }
            Quota::Credits {
                refill: Some(refill),
                ..
            } => Some(refill.every().as_secs()),
            Quota::Credits { refill: None, .. } => None,
        }
    }

    /// The `RateLimit-Policy` list item: `"quota";q=<size>;w=<window seconds>` (no `w` for
    /// credits that never refill).
    #[must_use]
    pub fn policy_item(&self) -> String {
        match self.window_secs() {
            Some(w) => format!("\"quota\";q={};w={w}", self.decision.size),
            None => format!("\"quota\";q={}", self.decision.size),
        }
    }

    /// The `RateLimit` list item: `"quota";r=<remaining>;t=<seconds to the next period or
    /// refill>` (no `t` when it never refills).
    #[must_use]
    pub fn limit_item(&self) -> String {
        match self.decision.reset {
            Some(reset) => format!(
                "\"quota\";r={};t={}",
                self.decision.remaining,
                ceil_secs(reset)
            ),
            None => format!("\"quota\";r={}", self.decision.remaining),
        }
    }

    /// `Retry-After` for a refusal: whole seconds to the next period or refill, rounded up, at
    /// least 1; `None` when the quota never refills (retrying will not help).
    #[must_use]
    pub fn retry_after_header(&self) -> Option<HeaderValue> {
        self.decision
            .reset
            .map(|reset| HeaderValue::from(ceil_secs(reset).max(1)))
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// What the key check charged a request's quotas (the default cost, 1), put into the request's
/// extensions for keys with a quota (their own or their owner's). Route guards use it:
/// [`Cost`](crate::Cost) settles the route's cost against it, and a guard that refuses the
/// request (scopes, environment) refunds it, so a refused request spends nothing.
///
/// Keys without any quota get no receipt.
#[derive(Clone)]
pub struct QuotaReceipt {
    lines: Arc<[QuotaLine]>,
    meter: Arc<dyn QuotaMeter>,
    clock: Arc<dyn Clock>,
    decision: QuotaDecision,
    charged: u64,
}

/// Why [`QuotaReceipt::settle`] did not charge a route's cost.
#[derive(Debug)]
pub enum SettleError {
    /// A quota has less than the route's cost left: what was charged before was refunded.
    Exhausted(QuotaReport),
    /// The meter could not decide (503); what was charged before was refunded if it could be.
    Meter(MeterError),
}

impl QuotaReceipt {
    pub(crate) fn new(
        lines: Arc<[QuotaLine]>,
        meter: Arc<dyn QuotaMeter>,
        clock: Arc<dyn Clock>,
        decision: QuotaDecision,
        charged: u64,
    ) -> Self {
        Self {
            lines,
            meter,
            clock,
            decision,
            charged,
        }
    }

    /// Units the request has spent so far (from every line).
    #[must_use]
    pub fn charged(&self) -> u64 {
        self.charged
    }

    /// Units left after the request's charges, on the line with the least left.
    #[must_use]
    pub fn remaining(&self) -> u64 {
        self.decision.remaining
    }

    /// The latest decision.
    #[must_use]
    pub fn decision(&self) -> &QuotaDecision {
        &self.decision
    }

    /// The lines charged (the key's quota, its owner's, or both).
    #[must_use]
    pub fn lines(&self) -> &[QuotaLine] {
        &self.lines
    }

    /// The latest decision with its quota, for the `RateLimit` fields.
    #[must_use]
    pub fn report(&self) -> Option<QuotaReport> {
        QuotaReport::of(&self.lines, self.decision)
    }

    /// Makes the request's whole cost `cost`: charges what is missing (all or nothing, from
    /// every line) or refunds what was charged beyond it. On success the receipt says what is
    /// spent now.
    ///
    /// # Errors
    /// [`SettleError::Exhausted`] when a line has less left than the missing part, and
    /// [`SettleError::Meter`] when the meter cannot decide; in both cases what the request was
    /// charged before is refunded (the request is refused: it spends nothing).
    pub async fn settle(&mut self, cost: u64) -> Result<(), SettleError> {
        let now = self.clock.now();
        if cost < self.charged {
            let excess = self.charged - cost;
            self.meter
                .refund(&self.lines, excess, &self.decision, now)
                .await
                .map_err(SettleError::Meter)?;
            self.charged = cost;
            self.decision.remaining = self.decision.remaining.saturating_add(excess);
            return Ok(());
        }
        let missing = cost - self.charged;
        if missing == 0 {
            return Ok(());
        }
        let charged = match self.meter.charge_now(&self.lines, missing, now) {
            Some(decided) => decided,
            None => self.meter.charge(&self.lines, missing, now).await,
        };
        match charged {
            Ok(decision) if decision.allowed => {
                self.decision = decision;
                self.charged = cost;
                Ok(())
            }
            Ok(mut refused) => {
                let before = self.charged;
                self.refund_all().await.map_err(SettleError::Meter)?;
                // Every line gave back what the request had been charged.
                refused.remaining = refused.remaining.saturating_add(before);
                let report = QuotaReport::of(&self.lines, refused).ok_or_else(|| {
                    SettleError::Meter(MeterError("a refusal named no line".into()))
                })?;
                Err(SettleError::Exhausted(report))
            }
            Err(error) => {
                if let Err(refund) = self.refund_all().await {
                    tracing::warn!(target: "keygate", error = %refund, "could not refund a request's quota charge");
                }
                Err(SettleError::Meter(error))
            }
        }
    }

    /// Gives back everything the request was charged (a guard refused it).
    ///
    /// # Errors
    /// [`MeterError`] when the meter cannot be reached: the charge stays spent.
    pub async fn refund_all(&mut self) -> Result<(), MeterError> {
        if self.charged == 0 {
            return Ok(());
        }
        let now = self.clock.now();
        self.meter
            .refund(&self.lines, self.charged, &self.decision, now)
            .await?;
        self.decision.remaining = self.decision.remaining.saturating_add(self.charged);
        self.charged = 0;
        Ok(())
    }
}

impl fmt::Debug for QuotaReceipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaReceipt")
            .field("lines", &self.lines)
            .field("charged", &self.charged)
            .field("decision", &self.decision)
            .finish_non_exhaustive()
    }
}

/// Refunds a refused request's receipt (a guard refused it): a refused request spends no
/// quota. Logs when the meter cannot be reached. Returns the receipt as it stands after, for
/// the response's extensions (the key layer's `RateLimit` fields report it).
pub(crate) async fn refund_refused(mut receipt: QuotaReceipt) -> QuotaReceipt {
    if let Err(error) = receipt.refund_all().await {
        tracing::warn!(target: "keygate", %error, "could not refund the quota charge of a refused request");
    }
    receipt
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::key::KeyId;
    use crate::quota::{InProcessMeter, QuotaSubject};
    use std::time::SystemTime;

    fn noon() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + 43_200)
    }

    async fn receipt(quotas: &[&str]) -> (QuotaReceipt, Arc<InProcessMeter>) {
        let meter = Arc::new(InProcessMeter::new());
        let lines: Arc<[QuotaLine]> = quotas
            .iter()
            .map(|q| QuotaLine::new(QuotaSubject::Key(KeyId::random()), q.parse().unwrap()))
            .collect();
        let clock = Arc::new(ManualClock::new(noon()));
        let decision = meter.charge(&lines, 1, noon()).await.unwrap();
        assert!(decision.allowed);
        let receipt = QuotaReceipt::new(lines, meter.clone(), clock, decision, 1);
        (receipt, meter)
    }

    async fn left(meter: &InProcessMeter, receipt: &QuotaReceipt, line: usize) -> u64 {
        meter
            .usage(&receipt.lines()[line], noon())
            .await
            .unwrap()
            .remaining
    }

    #[tokio::test]
    async fn settling_charges_the_difference_or_refunds_the_excess() {
        let (mut receipt, meter) = receipt(&["10/day"]).await;
        receipt.settle(4).await.unwrap();
        assert_eq!((receipt.charged(), receipt.remaining()), (4, 6));
        assert_eq!(left(&meter, &receipt, 0).await, 6);
        // A nested guard asking less gives the excess back.
        receipt.settle(2).await.unwrap();
        assert_eq!((receipt.charged(), receipt.remaining()), (2, 8));
        assert_eq!(left(&meter, &receipt, 0).await, 8);
        // A free route.
        receipt.settle(0).await.unwrap();
        assert_eq!(left(&meter, &receipt, 0).await, 10);
    }

    #[tokio::test]
    async fn a_refused_cost_refunds_what_was_charged_on_every_line() {
        let (mut receipt, meter) = receipt(&["100/day", "3/day"]).await;
        match receipt.settle(4).await {
            Err(SettleError::Exhausted(report)) => {
                assert_eq!(report.decision.line, 1, "the owner-like line refused");
                assert_eq!(report.quota.to_string(), "3/day");
                // What is left once the key layer's charge is refunded.
                assert_eq!(report.limit_item(), "\"quota\";r=3;t=43200");
                assert_eq!(report.policy_item(), "\"quota\";q=3;w=86400");
            }
            other => panic!("not refused: {other:?}"),
        }
        assert_eq!(receipt.charged(), 0);
        assert_eq!(left(&meter, &receipt, 0).await, 100);
        assert_eq!(left(&meter, &receipt, 1).await, 3);
    }

    #[tokio::test]
    async fn refunding_twice_gives_back_once() {
        let (mut receipt, meter) = receipt(&["credits 5"]).await;
        receipt.refund_all().await.unwrap();
        receipt.refund_all().await.unwrap();
        assert_eq!(left(&meter, &receipt, 0).await, 5);
        let report = receipt.report().unwrap();
        assert_eq!(report.policy_item(), "\"quota\";q=5");
        assert_eq!(report.limit_item(), "\"quota\";r=5");
        assert!(report.retry_after_header().is_none());
    }
}
