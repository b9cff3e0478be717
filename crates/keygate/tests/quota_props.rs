//! Property test of the balance read-out (`QuotaMeter::usage`, what `Admin::quota_balance`
//! shows operators): after any sequence of charges, top-ups and time passing (period resets,
//! refills), the balance it reports is exactly the largest cost a charge would be allowed to
//! spend now: that cost is allowed, one more is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, SystemTime};

use keygate::KeyId;
use keygate::quota::{InProcessMeter, QuotaLine, QuotaMeter, QuotaSubject};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// A request of this cost (allowed or refused).
    Charge(u64),
    /// An operator adds this many credits (counted on credits quotas only).
    TopUp(u64),
    /// The clock moves on this many seconds.
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..=4u64).prop_map(Op::Charge),
        1 => (1..=5u64).prop_map(Op::TopUp),
        2 => (0..=5_400u64).prop_map(Op::Advance),
    ]
}

fn quota() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("5/hour"),
        Just("3/minute"),
        Just("credits 4"),
        Just("credits 0"),
        Just("credits 2 refill 3 every 1h"),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn the_balance_shown_is_what_a_charge_may_spend(
        quota in quota(),
        start in 0..86_400u64,
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let runtime = runtime();
        let meter = InProcessMeter::new();
        let subject = QuotaSubject::Key(KeyId::random());
        let mut line = QuotaLine::new(subject, quota.parse().unwrap());
        let mut now = SystemTime::UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + start);
        for op in ops {
            match op {
                Op::Charge(cost) => {
                    meter.charge_now(&[line], cost, now).unwrap().unwrap();
                }
                Op::TopUp(credits) => line = line.granted(line.granted + credits),
                Op::Advance(secs) => now += Duration::from_secs(secs),
            }
            let shown = runtime.block_on(meter.usage(&line, now)).unwrap().remaining;
            let more = meter.charge_now(&[line], shown + 1, now).unwrap().unwrap();
            prop_assert!(!more.allowed, "{quota}: {} shown, {} allowed", shown, shown + 1);
            if shown > 0 {
                let all = meter.charge_now(&[line], shown, now).unwrap().unwrap();
                prop_assert!(all.allowed, "{quota}: {} shown, refused", shown);
                prop_assert_eq!(all.remaining, 0);
                runtime.block_on(meter.refund(&[line], shown, &all, now)).unwrap();
                let again = runtime.block_on(meter.usage(&line, now)).unwrap().remaining;
                prop_assert_eq!(again, shown, "the refund restored the balance");
            }
        }
    }
}
