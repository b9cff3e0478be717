//! Medians, and how far one run's median can be trusted.

/// The median of `values` (mean of the middle two for an even count); `NaN` when empty.
pub(crate) fn median(values: &[f64]) -> f64 {
    let sorted = sorted(values);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The smallest and largest of `values`.
pub(crate) fn range(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    sorted
}

/// An interval that holds the median of the distribution the rounds were drawn from, with
/// probability `coverage`: the `k`-th smallest and the `k`-th largest of the values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Interval {
    pub lo: f64,
    pub hi: f64,
    pub coverage: f64,
}

/// The distribution-free (order statistic) interval of the median of `values` with coverage
/// at least `level`, as narrow as the count allows: it assumes only that rounds are
/// independent draws, not any shape of their spread. Of `n` rounds, the `k`-th smallest and
/// `k`-th largest enclose the median unless at least `n − k + 1` rounds fall on one side of
/// it, so the coverage is `1 − 2·P(Binomial(n, ½) ≤ k − 1)`. `None` when even the whole range
/// does not reach `level` (fewer than 5 rounds for 90 %).
pub(crate) fn median_interval(values: &[f64], level: f64) -> Option<Interval> {
    let sorted = sorted(values);
    let n = sorted.len();
    let (k, coverage) = order_statistic(n, level)?;
    Some(Interval {
        lo: sorted[k - 1],
        hi: sorted[n - k],
        coverage,
    })
}

/// For `n` rounds, the largest `k` whose `k`-th smallest and `k`-th largest enclose the
/// median with probability at least `level`, and that probability; see [`median_interval`].
pub(crate) fn order_statistic(n: usize, level: f64) -> Option<(usize, f64)> {
    // P(Binomial(n, ½) ≤ j), for j = 0, 1, …, accumulated term by term.
    let mut term = 0.5f64.powi(i32::try_from(n).ok()?);
    let mut below = 0.0;
    let mut best = None;
    for k in 1..=n.div_ceil(2) {
        below += term;
        let coverage = 1.0 - 2.0 * below;
        if coverage < level {
            break;
        }
        best = Some((k, coverage));
        // C(n, k) from C(n, k − 1).
        term *= (n - (k - 1)) as f64 / k as f64;
    }
    best
}

/// What one run's interval says of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The whole interval is on the target's good side.
    Met,
    /// The whole interval is on its bad side.
    Missed,
    /// The target is inside the interval: this run cannot tell.
    Undecided,
}

impl Verdict {
    /// Judges `at_least` (the figure should be ≥ `target`) or at most.
    pub(crate) fn of(interval: Interval, target: f64, at_least: bool) -> Self {
        let (good, bad) = if at_least {
            (interval.lo >= target, interval.hi < target)
        } else {
            (interval.hi <= target, interval.lo > target)
        };
        match (good, bad) {
            (true, _) => Self::Met,
            (_, true) => Self::Missed,
            _ => Self::Undecided,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::Missed => "missed",
            Self::Undecided => "undecided",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Interval, Verdict, median, median_interval, range};

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(range(&[2.0, 5.0, 1.0]), (1.0, 5.0));
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn the_median_interval_takes_the_widest_order_statistics_the_level_needs() {
        // Eight rounds: the 2nd smallest and 2nd largest, 1 − 2·(1 + 8)/256.
        let eight = [0.972, 1.003, 1.018, 0.963, 1.155, 0.907, 0.924, 1.007];
        let interval = median_interval(&eight, 0.9).unwrap();
        assert_eq!((interval.lo, interval.hi), (0.924, 1.018));
        assert!(close(interval.coverage, 1.0 - 18.0 / 256.0));
        // At 95 % eight rounds need the whole range: 1 − 2/256.
        let interval = median_interval(&eight, 0.95).unwrap();
        assert_eq!((interval.lo, interval.hi), (0.907, 1.155));
        assert!(close(interval.coverage, 1.0 - 2.0 / 256.0));
        // Six rounds: the whole range, 1 − 2/64; four never reach 90 % (1 − 2/16).
        let six = [6.0, 1.0, 5.0, 2.0, 4.0, 3.0];
        let interval = median_interval(&six, 0.9).unwrap();
        assert_eq!((interval.lo, interval.hi), (1.0, 6.0));
        assert!(close(interval.coverage, 1.0 - 2.0 / 64.0));
        assert_eq!(median_interval(&[1.0, 2.0, 3.0, 4.0], 0.9), None);
        assert_eq!(median_interval(&[], 0.9), None);
        // Sixteen: P(B ≤ 4) = (1 + 16 + 120 + 560 + 1820) / 65536 = 0.0384, so the 5th.
        let sixteen: Vec<f64> = (1..=16).map(f64::from).collect();
        let interval = median_interval(&sixteen, 0.9).unwrap();
        assert_eq!((interval.lo, interval.hi), (5.0, 12.0));
        assert!(close(interval.coverage, 1.0 - 2.0 * 2517.0 / 65536.0));
        // NaN rounds are left out, as by `median`.
        let interval = median_interval(&[f64::NAN, 6.0, 1.0, 5.0, 2.0, 4.0, 3.0], 0.9).unwrap();
        assert_eq!((interval.lo, interval.hi), (1.0, 6.0));
    }

    #[test]
    fn a_verdict_is_given_only_when_the_interval_is_on_one_side() {
        let interval = |lo, hi| Interval {
            lo,
            hi,
            coverage: 0.93,
        };
        // (lo, hi, target, at least, verdict): both directions, both edges.
        let cases = [
            (0.90, 1.10, 0.85, true, Verdict::Met),
            (0.85, 1.10, 0.85, true, Verdict::Met),
            (0.70, 0.84, 0.85, true, Verdict::Missed),
            (0.80, 0.90, 0.85, true, Verdict::Undecided),
            (0.2, 1.0, 1.0, false, Verdict::Met),
            (1.01, 2.0, 1.0, false, Verdict::Missed),
            (0.5, 1.5, 1.0, false, Verdict::Undecided),
        ];
        for (lo, hi, target, at_least, verdict) in cases {
            assert_eq!(
                Verdict::of(interval(lo, hi), target, at_least),
                verdict,
                "[{lo}, {hi}] against {target} (at least: {at_least})"
            );
        }
    }
}
