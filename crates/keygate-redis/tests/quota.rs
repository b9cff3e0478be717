//! `RedisQuotaMeter` against a live Redis (`KEYGATE_TEST_REDIS_URL`; skipped when unset), each
//! test under a prefix of its own: the same decisions as the in-process meter, UTC months,
//! credit refills, refunds, expiry, two instances sharing one quota exactly, and an outage
//! answering `MeterError`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{
    PrivateRedis, UNDER_LOAD, connection, ok, query, redis_url, script_calls, unique_prefix,
};
use keygate::KeyId;
use keygate::owner::OwnerTag;
use keygate::quota::{InProcessMeter, QuotaDecision, QuotaLine, QuotaMeter, QuotaSubject};
use keygate_redis::{PERIOD_KEY_MARGIN, RedisQuotaMeter, redis};

fn line(subject: QuotaSubject, quota: &str) -> QuotaLine {
    QuotaLine::new(subject, ok(quota.parse(), quota))
}

fn key() -> QuotaSubject {
    QuotaSubject::Key(KeyId::random())
}

fn owner(id: &str) -> QuotaSubject {
    QuotaSubject::Owner(OwnerTag::of(id))
}

/// Seconds since the epoch of `y-m-d h:00:00` UTC.
fn at(days_since_epoch: u64, hour: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(days_since_epoch * 86_400 + hour * 3_600)
}

/// 2026-01-31, days since the epoch.
const JAN_31_2026: u64 = 20_484;
/// 2028-02-29 (a leap day), days since the epoch.
const FEB_29_2028: u64 = 21_243;

async fn meter(url: &str, prefix: &str) -> RedisQuotaMeter {
    ok(
        RedisQuotaMeter::builder(url)
            .prefix(prefix)
            .response_timeout(UNDER_LOAD)
            .build()
            .await,
        "build the meter",
    )
}

async fn charge(
    meter: &dyn QuotaMeter,
    lines: &[QuotaLine],
    cost: u64,
    now: SystemTime,
) -> QuotaDecision {
    ok(meter.charge(lines, cost, now).await, "charge")
}

async fn remaining(meter: &dyn QuotaMeter, line: &QuotaLine, now: SystemTime) -> u64 {
    ok(meter.usage(line, now).await, "usage").remaining
}

/// A small deterministic generator (no dependency), so a failing sequence can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

#[tokio::test]
async fn decides_exactly_as_the_in_process_meter() {
    let Some(url) = redis_url("decides_exactly_as_the_in_process_meter") else {
        return;
    };
    for seed in [1_u64, 7, 42] {
        let redis = meter(&url, &unique_prefix("quota-diff")).await;
        let local = InProcessMeter::new();
        let team = owner(&format!("team-{seed}"));
        let (a, b) = (key(), key());
        let key_a = line(a, "7/day");
        let key_b = line(b, "credits 4 refill 3 every 1h");
        let owner_line = line(team, "20/month");
        let monthly = line(key(), "credits 10");
        // Top-ups of the credit lines: running totals that grow now and then, and are
        // sometimes presented as an older, lower total (a record read before the top-up).
        let mut grants = [0_u64; 2];
        let mut rng = Lcg(seed);
        // From 2026-01-31 18:00 UTC through February: days, a month boundary, refills.
        let mut now = at(JAN_31_2026, 18);
        for step in 0..600 {
            now += Duration::from_secs(
                match rng.next(4) {
                    0 => 1,
                    1 => 600,
                    2 => 3_600,
                    _ => 4 * 3_600,
                } * u64::from(rng.next(10) < 3),
            );
            if rng.next(8) == 0 {
                grants[usize::try_from(rng.next(2)).unwrap()] += 1 + rng.next(5);
            }
            let stale = rng.next(6) == 0;
            let seen = grants.map(|g| if stale { g.saturating_sub(1) } else { g });
            let (key_b, monthly) = (key_b.granted(seen[0]), monthly.granted(seen[1]));
            let sets: [Vec<QuotaLine>; 4] = [
                vec![key_a, owner_line],
                vec![key_b, owner_line],
                vec![key_a],
                vec![monthly],
            ];
            let lines = &sets[usize::try_from(rng.next(4)).unwrap()];
            let cost = rng.next(4);
            let on_redis = charge(&redis, lines, cost, now).await;
            let in_process = charge(&local, lines, cost, now).await;
            assert_eq!(on_redis, in_process, "seed {seed} step {step} at {now:?}");
            if on_redis.allowed && rng.next(5) == 0 {
                // Refunded at once, or an hour later (the window may have moved on).
                now += Duration::from_secs(rng.next(2) * 3_600);
                ok(redis.refund(lines, cost, &on_redis, now).await, "refund");
                ok(local.refund(lines, cost, &in_process, now).await, "refund");
            }
            for line in [key_a, key_b, owner_line, monthly] {
                assert_eq!(
                    remaining(&redis, &line, now).await,
                    remaining(&local, &line, now).await,
                    "seed {seed} step {step}: {}",
                    line.quota
                );
            }
        }
    }
}

#[tokio::test]
async fn calendar_months_begin_at_midnight_utc() {
    let Some(url) = redis_url("calendar_months_begin_at_midnight_utc") else {
        return;
    };
    let meter = meter(&url, &unique_prefix("quota-month")).await;
    let monthly = [line(key(), "3/month")];
    let last_second = at(JAN_31_2026 + 1, 0) - Duration::from_secs(1);
    assert!(charge(&meter, &monthly, 3, last_second).await.allowed);
    let refused = charge(&meter, &monthly, 1, last_second).await;
    assert!(!refused.allowed);
    assert_eq!(
        refused.reset,
        Some(Duration::from_secs(1)),
        "February begins"
    );
    let february = at(JAN_31_2026 + 1, 0);
    let allowed = charge(&meter, &monthly, 1, february).await;
    assert_eq!((allowed.allowed, allowed.remaining), (true, 2));
    assert_eq!(allowed.reset, Some(Duration::from_secs(28 * 86_400)));

    // A leap February: the 29th is still February, March 1st is a new month.
    let leap = [line(key(), "2/month")];
    assert!(charge(&meter, &leap, 2, at(FEB_29_2028, 23)).await.allowed);
    assert!(!charge(&meter, &leap, 1, at(FEB_29_2028, 23)).await.allowed);
    assert!(
        charge(&meter, &leap, 2, at(FEB_29_2028 + 1, 0))
            .await
            .allowed
    );
}

#[tokio::test]
async fn credits_refill_on_schedule_keeping_a_higher_balance() {
    let Some(url) = redis_url("credits_refill_on_schedule_keeping_a_higher_balance") else {
        return;
    };
    let meter = meter(&url, &unique_prefix("quota-credits")).await;
    let noon = at(JAN_31_2026, 12);
    let low = [line(key(), "credits 2 refill 5 every 1d")];
    assert!(charge(&meter, &low, 2, noon).await.allowed);
    let refused = charge(&meter, &low, 1, noon).await;
    assert_eq!((refused.allowed, refused.remaining), (false, 0));
    assert_eq!(refused.reset, Some(Duration::from_secs(12 * 3_600)));
    let tomorrow = at(JAN_31_2026 + 1, 0);
    assert_eq!(remaining(&meter, &low[0], tomorrow).await, 5, "refilled");
    assert_eq!(charge(&meter, &low, 1, tomorrow).await.remaining, 4);

    let high = [line(key(), "credits 9 refill 5 every 1d")];
    assert_eq!(charge(&meter, &high, 1, noon).await.remaining, 8);
    assert_eq!(
        charge(&meter, &high, 1, tomorrow).await.remaining,
        7,
        "a balance above the refill amount is kept"
    );

    let once = [line(key(), "credits 1")];
    assert!(charge(&meter, &once, 1, noon).await.allowed);
    let never = charge(&meter, &once, 1, noon + Duration::from_secs(400 * 86_400)).await;
    assert_eq!((never.allowed, never.reset), (false, None), "never refills");
}

#[tokio::test]
async fn refunds_give_back_within_the_charged_window_only() {
    let Some(url) = redis_url("refunds_give_back_within_the_charged_window_only") else {
        return;
    };
    let meter = meter(&url, &unique_prefix("quota-refund")).await;
    let noon = at(JAN_31_2026 - 10, 12);
    let lines = [line(key(), "5/day"), line(owner("refund"), "credits 6")];
    let spent = charge(&meter, &lines, 4, noon).await;
    assert!(spent.allowed);
    ok(meter.refund(&lines, 3, &spent, noon).await, "refund");
    assert_eq!(remaining(&meter, &lines[0], noon).await, 4);
    assert_eq!(remaining(&meter, &lines[1], noon).await, 5);
    let refused = charge(&meter, &lines, 6, noon).await;
    assert!(!refused.allowed);
    ok(
        meter.refund(&lines, 3, &refused, noon).await,
        "a refusal spent nothing",
    );
    assert_eq!(remaining(&meter, &lines[0], noon).await, 4);

    // The next day the key's count restarted: nothing to give back to it; the credits'
    // window (no refill: always 0) is the same, so they get theirs back.
    let spent = charge(&meter, &lines, 2, noon).await;
    let tomorrow = noon + Duration::from_secs(86_400);
    ok(meter.refund(&lines, 2, &spent, tomorrow).await, "refund");
    assert_eq!(remaining(&meter, &lines[0], tomorrow).await, 5);
    assert_eq!(remaining(&meter, &lines[1], tomorrow).await, 5);
}

#[tokio::test]
async fn period_counters_expire_after_their_window_and_credits_never() {
    let Some(url) = redis_url("period_counters_expire_after_their_window_and_credits_never") else {
        return;
    };
    let meter = meter(&url, &unique_prefix("quota-expiry")).await;
    let mut redis = connection(&url).await;
    let now = SystemTime::now();
    let daily = [line(key(), "10/day")];
    assert!(charge(&meter, &daily, 1, now).await.allowed);
    let ttl: i64 = query(
        &mut redis,
        redis::cmd("PTTL").arg(meter.state_key(&daily[0].subject)),
    )
    .await;
    let expected = daily[0].quota.reset_after(now).unwrap() + PERIOD_KEY_MARGIN;
    let ttl = Duration::from_millis(u64::try_from(ttl).unwrap());
    assert!(
        ttl <= expected && expected - ttl < Duration::from_secs(5),
        "{ttl:?} vs {expected:?}"
    );
    let credits = [line(key(), "credits 3 refill 3 every 1d")];
    assert!(charge(&meter, &credits, 1, now).await.allowed);
    let ttl: i64 = query(
        &mut redis,
        redis::cmd("PTTL").arg(meter.state_key(&credits[0].subject)),
    )
    .await;
    assert_eq!(ttl, -1, "a balance never expires");
}

/// 1,200 concurrent charges through two meters (two instances: separate connections) on lines
/// that allow 1,000 in total: exactly 1,000 are allowed.
async fn shared_exactly(
    url: &str,
    test: &str,
    lines_of: &(dyn Fn(usize) -> Vec<QuotaLine> + Sync),
) -> (usize, RedisQuotaMeter) {
    let prefix = unique_prefix(test);
    let first = meter(url, &prefix).await;
    let second = meter(url, &prefix).await;
    let now = SystemTime::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..1_200 {
        let meter = if n % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let lines = lines_of(n);
        tasks.spawn(async move { meter.charge(&lines, 1, now).await });
    }
    let mut allowed = 0;
    while let Some(done) = tasks.join_next().await {
        if ok(ok(done, "task"), "charge").allowed {
            allowed += 1;
        }
    }
    (allowed, first)
}

/// A top-up reaches the script as the line's running total: two instances presenting the same
/// total add it once between them, a lower (stale) total adds nothing, and the counter keeps
/// the counted total in a fourth field only once there is one.
#[tokio::test]
async fn a_top_up_is_added_once_across_instances() {
    let Some(url) = redis_url("a_top_up_is_added_once_across_instances") else {
        return;
    };
    let prefix = unique_prefix("quota-top-up");
    let (first, second) = (meter(&url, &prefix).await, meter(&url, &prefix).await);
    let now = at(JAN_31_2026, 12);
    let bare = line(key(), "credits 1");
    assert!(charge(&first, &[bare], 1, now).await.allowed);
    let mut conn = ok(
        ok(redis::Client::open(url.as_str()), "client")
            .get_multiplexed_async_connection()
            .await,
        "connect",
    );
    let counter = |conn: &mut redis::aio::MultiplexedConnection| {
        let key = first.state_key(&bare.subject);
        let mut conn = conn.clone();
        async move {
            ok(
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<String>(&mut conn)
                    .await,
                "GET",
            )
        }
    };
    assert_eq!(counter(&mut conn).await, "credits:0:0", "the older format");
    assert!(!charge(&second, &[bare], 1, now).await.allowed);
    let topped = bare.granted(3);
    for (meter, left) in [(&first, 2), (&second, 1), (&first, 0)] {
        let decision = charge(meter, &[topped], 1, now).await;
        assert_eq!((decision.allowed, decision.remaining), (true, left));
    }
    assert_eq!(counter(&mut conn).await, "credits:0:0:3");
    assert!(!charge(&second, &[topped], 1, now).await.allowed);
    assert!(!charge(&first, &[bare.granted(2)], 1, now).await.allowed);
    assert_eq!(remaining(&second, &topped, now).await, 0);
    // A usage read of a newer total shows it added, without spending or saving it.
    assert_eq!(remaining(&first, &bare.granted(10), now).await, 7);
    assert_eq!(counter(&mut conn).await, "credits:0:0:3");
    // A refund past the quota's size keeps what top-ups made the balance.
    let more = bare.granted(13);
    let decision = charge(&first, &[more], 4, now).await;
    assert_eq!(decision.remaining, 6);
    ok(first.refund(&[more], 4, &decision, now).await, "refund");
    assert_eq!(remaining(&second, &more, now).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_quota_exactly() {
    let Some(url) = redis_url("two_instances_share_one_quota_exactly") else {
        return;
    };
    let daily = line(key(), "1000/day");
    let (allowed, meter) = shared_exactly(&url, "quota-shared", &|_| vec![daily]).await;
    assert_eq!(allowed, 1_000, "no over-grant, no under-grant");
    assert_eq!(remaining(&meter, &daily, SystemTime::now()).await, 0);

    // A key and its owner: two keys of one owner, each allowed 700 a day, the owner 1,000.
    let team = line(owner("shared-team"), "1000/day");
    let keys = [line(key(), "700/day"), line(key(), "700/day")];
    let (allowed, meter) =
        shared_exactly(&url, "quota-shared-owner", &|n| vec![keys[n % 2], team]).await;
    assert_eq!(allowed, 1_000);
    let now = SystemTime::now();
    assert_eq!(remaining(&meter, &team, now).await, 0);
    let used: u64 =
        1_400 - remaining(&meter, &keys[0], now).await - remaining(&meter, &keys[1], now).await;
    assert_eq!(
        used, 1_000,
        "refused charges spent nothing from the keys' lines"
    );
}

#[tokio::test]
async fn an_outage_answers_meter_error_promptly() {
    // A closed port: connections are refused. Needs no Redis at all.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap();
    let meter = ok(
        RedisQuotaMeter::builder(format!("redis://127.0.0.1:{port}"))
            .response_timeout(Duration::from_millis(250))
            .build()
            .await,
        "build",
    );
    let lines = [line(key(), "10/day")];
    let now = SystemTime::now();
    let started = Instant::now();
    assert!(meter.charge(&lines, 1, now).await.is_err());
    assert!(meter.usage(&lines[0], now).await.is_err());
    let allowed = QuotaDecision {
        allowed: true,
        line: 0,
        remaining: 9,
        size: 10,
        reset: None,
        windows: [lines[0].quota.window_at(now), 0],
    };
    assert!(meter.refund(&lines, 1, &allowed, now).await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "three calls took {:?}",
        started.elapsed()
    );
    assert!(!meter.decides_now());
}

#[tokio::test]
async fn one_round_trip_per_call_and_back_after_a_restart_or_a_hang() {
    let Some(_) = redis_url("one_round_trip_per_call_and_back_after_a_restart_or_a_hang") else {
        return;
    };
    let mut server = PrivateRedis::start().await;
    let meter = ok(
        RedisQuotaMeter::builder(server.url())
            .prefix(unique_prefix("quota-trips"))
            .response_timeout(Duration::from_millis(250))
            .build()
            .await,
        "build the meter on the private redis",
    );
    let mut inspect = connection(&server.url()).await;
    let lines = [line(key(), "100/day"), line(owner("trips"), "credits 100")];
    let now = SystemTime::now();
    assert!(
        charge(&meter, &lines, 1, now).await.allowed,
        "loads the script"
    );

    let (scripts, commands) = (
        script_calls(&mut inspect).await,
        all_calls(&mut inspect).await,
    );
    for _ in 0..20 {
        let decision = charge(&meter, &lines, 2, now).await;
        ok(meter.refund(&lines, 1, &decision, now).await, "refund");
    }
    assert_eq!(
        script_calls(&mut inspect).await - scripts,
        40,
        "one script per call"
    );
    // Commands but GET and SET (which the script runs): the 40 calls and this test's INFO
    // (whether the INFO reading the count counts itself depends on the Redis version).
    let sent = all_calls(&mut inspect).await - commands;
    assert!((41..=42).contains(&sent), "{sent} commands for 40 calls");
    assert_eq!(remaining(&meter, &lines[0], now).await, 100 - 1 - 20);

    // Restarted empty (the script unloaded, counts gone): back without rebuilding.
    server.stop();
    assert!(
        meter.charge(&lines, 1, now).await.is_err(),
        "down: an error, never an allow"
    );
    server.restart().await;
    let mut back = None;
    for _ in 0..20 {
        if let Ok(decision) = meter.charge(&lines, 1, now).await {
            back = Some(decision);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        back.map(|d| d.remaining),
        Some(99),
        "counting again after the restart"
    );

    // Hung: answered within the response timeout, as an error.
    server.freeze();
    let started = Instant::now();
    assert!(meter.charge(&lines, 1, now).await.is_err());
    assert!(
        started.elapsed() < Duration::from_millis(250 + 500),
        "{:?}",
        started.elapsed()
    );
    server.thaw();
}

/// Commands Redis has run but `GET` and `SET`, from `INFO commandstats`: what a client sent,
/// when the only `GET`s and `SET`s are the script's own.
async fn all_calls(redis: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = query(redis, redis::cmd("INFO").arg("commandstats")).await;
    info.lines()
        .filter(|line| line.starts_with("cmdstat_"))
        .filter(|line| !line.starts_with("cmdstat_get:") && !line.starts_with("cmdstat_set:"))
        .filter_map(|line| {
            let calls = line.split(':').nth(1)?.split(',').next()?;
            calls.strip_prefix("calls=")?.parse::<u64>().ok()
        })
        .sum()
}
