//! `keygate audit` and `keygate usage`: the store's audit trail and per-day request counts.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use keygate::audit::{Action, Outcome, owner_on_record};
use keygate::{KeyId, Reason};
use keygate_sqlx::audit::{EventQuery, MAX_EVENTS, StoredEvent, UsageDay};
use serde_json::{Value, json};

use crate::cli::{AuditArgs, OutcomeArg, UsageArgs};
use crate::commands::{duration, key_id};
use crate::error::CliError;
use crate::output::Output;
use crate::store::Store;

const DAY: Duration = Duration::from_secs(86_400);
const MAX_DAYS: u32 = 3_660;
/// How often `--follow` looks for new events.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// The query `keygate audit` runs, validated without touching the store.
pub(crate) fn audit_query(args: &AuditArgs, now: SystemTime) -> Result<EventQuery, CliError> {
    if args.limit == 0 || args.limit > MAX_EVENTS {
        return Err(CliError::usage(format!(
            "bad --limit {}: use 1 to {MAX_EVENTS}",
            args.limit
        )));
    }
    let reason = named(
        args.reason.as_deref(),
        "--reason",
        Reason::ALL.map(Reason::as_str),
    )?;
    let action = named(
        args.action.as_deref(),
        "--action",
        Action::ALL.map(Action::as_str),
    )?;
    let since = args
        .since
        .as_deref()
        .map(|text| duration(text, "--since"))
        .transpose()?
        .map(|ago| now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH));
    Ok(EventQuery {
        key_id: args.key.as_deref().map(key_id).transpose()?,
        outcome: args.outcome.map(|o| match o {
            OutcomeArg::Allowed => Outcome::Allowed,
            OutcomeArg::Denied => Outcome::Denied,
        }),
        reason,
        action,
        since,
        after_id: None,
        before_id: None,
        limit: args.limit,
        oldest_first: false,
    })
}

/// `text` (when given) parsed as one of the names in `all`, else a usage error listing them.
fn named<T: std::str::FromStr, const N: usize>(
    text: Option<&str>,
    flag: &str,
    all: [&str; N],
) -> Result<Option<T>, CliError> {
    text.map(|text| {
        text.trim().parse::<T>().map_err(|_| {
            CliError::usage(format!(
                "unknown {flag} {text:?}: use one of {}",
                all.join(", ")
            ))
        })
    })
    .transpose()
}

/// `keygate audit`: the latest events, oldest first, then (with `--follow`) new ones.
pub(crate) async fn audit(
    store: &Store,
    args: &AuditArgs,
    out: Output<'_>,
    now: SystemTime,
) -> Result<(), CliError> {
    let mut query = audit_query(args, now)?;
    let sink = store.audit();
    let owner = args.owner.as_deref();
    if let Some(owner) = owner {
        // An unknown owner is an error (exit 2), not an empty trail; a deleted one is read
        // from the trail.
        owner_on_record(store.admin(), &sink, owner).await?;
    }
    let events_of = |query: &EventQuery| {
        let sink = sink.clone();
        let query = query.clone();
        async move {
            match owner {
                Some(owner) => sink.owner_events(&query, owner).await,
                None => sink.events(&query).await,
            }
        }
    };
    // The latest `limit` written, printed in the order they happened: a service writes its
    // request events in batches (up to a second late), so a change made meanwhile by the CLI
    // can be written before a request that came first.
    let mut events = events_of(&query).await?;
    in_time_order(&mut events);
    if !out.is_json() {
        out.line(&header());
    }
    print(out, &events);
    if !args.follow {
        return Ok(());
    }
    let mut last = events.iter().map(|e| e.id).max();
    if last.is_none() {
        // Nothing matched yet: follow from the newest event of any kind.
        last = sink
            .events(&EventQuery {
                limit: 1,
                ..EventQuery::default()
            })
            .await?
            .first()
            .map(|e| e.id);
    }
    query.oldest_first = true;
    query.limit = MAX_EVENTS;
    // `--since` only chose the first page; from here on, everything new is shown.
    query.since = None;
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        query.after_id = last.or(Some(0));
        let mut new = events_of(&query).await?;
        in_time_order(&mut new);
        print(out, &new);
        if let Some(newest) = new.iter().map(|e| e.id).max() {
            last = Some(newest);
        }
    }
}

/// Sorts events by the time they happened; events of the same microsecond stay in the order
/// they were written.
fn in_time_order(events: &mut [StoredEvent]) {
    events.sort_by_key(|stored| (stored.event.at, stored.id));
}

fn header() -> String {
    row([
        "TIME",
        "KEY",
        "EVENT",
        "REASON",
        "METHOD",
        "ROUTE",
        "STATUS",
        "CLIENT",
        "LATENCY",
        "ACTOR / DETAIL",
    ])
}

fn row(cells: [&str; 10]) -> String {
    let [
        time,
        key,
        event,
        reason,
        method,
        route,
        status,
        client,
        latency,
        extra,
    ] = cells;
    format!(
        "{time:<24} {key:<12} {event:<19} {reason:<19} {method:<7} {route:<24} {status:>6} {client:<15} {latency:>9}  {extra}"
    )
    .trim_end()
    .to_owned()
}

fn print(out: Output<'_>, events: &[StoredEvent]) {
    for stored in events {
        if out.is_json() {
            out.json_line(&event_json(stored));
        } else {
            out.line(&event_row(stored));
        }
    }
}

fn event_row(stored: &StoredEvent) -> String {
    let e = &stored.event;
    let dash = |s: Option<String>| s.unwrap_or_else(|| "-".into());
    let event = match (e.action, e.outcome, &e.folded) {
        // Many denials in one row: say how many.
        (_, _, Some(folded)) => format!("denied ×{}", folded.count),
        (Action::Request, Some(outcome), None) => outcome.as_str().to_owned(),
        // An unrecognized action shows the name it was stored under (a newer keygate's).
        (_, _, None) => e.action_name().to_owned(),
    };
    let extra = match (&e.actor, &e.detail, &e.folded) {
        (_, _, Some(folded)) => {
            let mut text = format!("until {}", humantime::format_rfc3339_millis(folded.last_at));
            if !folded.sample.is_empty() {
                let ids: Vec<_> = folded.sample.iter().map(KeyId::as_str).collect();
                text.push_str(&format!("; ids {}", ids.join(" ")));
                if folded.count > folded.sample.len() as u64 {
                    text.push_str(" …");
                }
            }
            text
        }
        (Some(actor), Some(detail), None) => format!("{actor:?}: {detail:?}"),
        (Some(actor), None, None) => format!("{actor:?}"),
        (None, Some(detail), None) => format!("{detail:?}"),
        (None, None, None) => String::new(),
    };
    let client = match &e.folded {
        Some(folded) if folded.other_clients => Some("other clients".to_owned()),
        _ => e.client_ip.map(|ip| ip.to_string()),
    };
    row([
        &humantime::format_rfc3339_millis(e.at).to_string(),
        // An owner event names no key: the owner stands in its column.
        &dash(
            e.key_id
                .as_ref()
                .map(ToString::to_string)
                .or_else(|| e.owner.as_deref().map(|owner| format!("owner {owner}"))),
        ),
        &event,
        &dash(e.reason_name().map(str::to_owned)),
        &dash(e.method.as_ref().map(ToString::to_string)),
        // Debug-quoted: a route or request id can never carry a control character to the
        // terminal.
        &dash(e.route.as_deref().map(|r| format!("{r:?}"))),
        &dash(e.status.map(|s| s.to_string())),
        &dash(client),
        &dash(e.latency.map(latency_text)),
        &extra,
    ])
}

fn latency_text(latency: Duration) -> String {
    let micros = latency.as_micros();
    if micros < 1_000 {
        format!("{micros}µs")
    } else if micros < 1_000_000 {
        format!("{:.1}ms", latency.as_secs_f64() * 1e3)
    } else {
        format!("{:.2}s", latency.as_secs_f64())
    }
}

fn event_json(stored: &StoredEvent) -> Value {
    let e = &stored.event;
    json!({
        "id": stored.id,
        "at": humantime::format_rfc3339_micros(e.at).to_string(),
        "action": e.action_name(),
        "key_id": e.key_id.as_ref().map(KeyId::as_str),
        "outcome": e.outcome.map(Outcome::as_str),
        "reason": e.reason_name(),
        "method": e.method.as_ref().map(http::Method::as_str),
        "route": e.route.as_deref(),
        "client_ip": e.client_ip.map(|ip| ip.to_string()),
        "status": e.status,
        "latency_us": e.latency.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        "request_id": e.request_id.as_deref(),
        "actor": e.actor.as_deref(),
        "detail": e.detail.as_deref(),
        "owner": e.owner.as_deref(),
        // Folded denials: how many, until when, a sample of ids; null for a single event.
        "folded": e.folded.as_ref().map(|f| json!({
            "count": f.count,
            "last_at": humantime::format_rfc3339_micros(f.last_at).to_string(),
            "sample": f.sample.iter().map(KeyId::as_str).collect::<Vec<_>>(),
            "other_clients": f.other_clients,
        })),
    })
}

/// The key and first day `keygate usage` shows, validated without touching the store.
pub(crate) fn usage_range(
    args: &UsageArgs,
    now: SystemTime,
) -> Result<(Option<KeyId>, SystemTime), CliError> {
    if args.days == 0 || args.days > MAX_DAYS {
        return Err(CliError::usage(format!(
            "bad --days {}: use 1 to {MAX_DAYS}",
            args.days
        )));
    }
    let key = args.key.as_deref().map(key_id).transpose()?;
    let since = now
        .checked_sub(DAY * (args.days - 1))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    Ok((key, since))
}

/// `keygate usage`: requests per key per day, and a bar of the daily totals per key.
pub(crate) async fn usage(
    store: &Store,
    args: &UsageArgs,
    out: Output<'_>,
    now: SystemTime,
) -> Result<(), CliError> {
    let (key, since) = usage_range(args, now)?;
    let days = match args.owner.as_deref() {
        Some(owner) => {
            // An unknown owner is an error (exit 2), not an empty table.
            let trail = store.audit();
            owner_on_record(store.admin(), &trail, owner).await?;
            trail.owner_usage(owner, since).await?
        }
        None => store.audit().usage(key.as_ref(), since).await?,
    };
    if out.is_json() {
        for d in &days {
            out.json_line(&json!({
                "key_id": d.key_id.as_str(),
                "day": day_text(d.day),
                "allowed": d.allowed,
                "denied": d.denied,
            }));
        }
        return Ok(());
    }
    if days.is_empty() {
        out.line(&format!(
            "no requests recorded in the last {} days (services record usage when their verifier uses the store's audit sink)",
            args.days
        ));
        return Ok(());
    }
    out.line(&format!(
        "{:<12}  {:<10}  {:>9}  {:>9}",
        "KEY", "DAY", "ALLOWED", "DENIED"
    ));
    for d in &days {
        out.line(&format!(
            "{:<12}  {:<10}  {:>9}  {:>9}",
            d.key_id.as_str(),
            day_text(d.day),
            d.allowed,
            d.denied
        ));
    }
    out.line("");
    let first = day_number(since);
    let span = usize::try_from(day_number(now) - first + 1).unwrap_or(1);
    out.line(&format!(
        "{:<12}  {:<width$}  {:>9}  {:>9}",
        "KEY",
        format!("LAST {} DAYS", args.days),
        "ALLOWED",
        "DENIED",
        width = span.max(12)
    ));
    let mut per_key: BTreeMap<KeyId, Vec<&UsageDay>> = BTreeMap::new();
    for d in &days {
        per_key.entry(d.key_id).or_default().push(d);
    }
    for (key, days) in per_key {
        let mut totals = vec![0_u64; span];
        for d in &days {
            if let Some(slot) = usize::try_from(day_number(d.day) - first)
                .ok()
                .and_then(|i| totals.get_mut(i))
            {
                *slot += d.allowed + d.denied;
            }
        }
        out.line(&format!(
            "{:<12}  {:<width$}  {:>9}  {:>9}",
            key.as_str(),
            sparkline(&totals),
            days.iter().map(|d| d.allowed).sum::<u64>(),
            days.iter().map(|d| d.denied).sum::<u64>(),
            width = span.max(12)
        ));
    }
    if let Some(owner) = args.owner.as_deref() {
        owner_totals(out, owner, &days, first, span, args.days);
    }
    Ok(())
}

/// The owner's roll-up: its keys' requests added up, per day and in all.
fn owner_totals(
    out: Output<'_>,
    owner: &str,
    days: &[UsageDay],
    first: i64,
    span: usize,
    shown: u32,
) {
    let mut totals = vec![0_u64; span];
    for d in days {
        if let Some(slot) = usize::try_from(day_number(d.day) - first)
            .ok()
            .and_then(|i| totals.get_mut(i))
        {
            *slot += d.allowed + d.denied;
        }
    }
    out.line("");
    out.line(&format!(
        "owner {owner:?}, last {shown} days: {} allowed, {} denied  {}",
        days.iter().map(|d| d.allowed).sum::<u64>(),
        days.iter().map(|d| d.denied).sum::<u64>(),
        sparkline(&totals)
    ));
}

/// One character per day, scaled to the busiest day: `·` for none, `▁` to `█`.
fn sparkline(totals: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = totals.iter().copied().max().unwrap_or(0).max(1);
    totals
        .iter()
        .map(|&n| {
            if n == 0 {
                '·'
            } else {
                let level = (n.saturating_mul(8) - 1) / max;
                BARS[usize::try_from(level).unwrap_or(7).min(7)]
            }
        })
        .collect()
}

fn day_number(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| {
        i64::try_from(d.as_secs() / 86_400).unwrap_or(i64::MAX)
    })
}

fn day_text(day: SystemTime) -> String {
    humantime::format_rfc3339_seconds(day)
        .to_string()
        .chars()
        .take(10)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fold_reads_as_a_count_of_denials_from_one_client() {
        use keygate::audit::{AuditEvent, Folded};
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ids: Vec<KeyId> = ["zzzzzz000000", "zzzzzz000001"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        let mut fold = AuditEvent::new(at, Action::Denials).reason(Some(Reason::UnknownKey));
        fold.outcome = Some(Outcome::Denied);
        fold.client_ip = Some([203, 0, 113, 9].into());
        fold.folded = Some(Box::new(Folded::new(
            100_000,
            at + Duration::from_secs(59),
            ids,
            false,
        )));
        let stored = StoredEvent { id: 7, event: fold };
        let text = event_row(&stored);
        for part in [
            "denied ×100000",
            "unknown_key",
            "203.0.113.9",
            "until 2027-01-15T08:00:59.000Z",
            "ids zzzzzz000000 zzzzzz000001 …",
        ] {
            assert!(text.contains(part), "{part:?} in {text}");
        }
        let json = event_json(&stored);
        assert_eq!(json["action"], "denials");
        assert_eq!(json["folded"]["count"], 100_000);
        assert_eq!(json["folded"]["sample"][1], "zzzzzz000001");
        assert_eq!(json["folded"]["other_clients"], false);

        let mut other = stored.clone();
        other.event.client_ip = None;
        if let Some(f) = other.event.folded.as_mut() {
            f.other_clients = true;
        }
        assert!(event_row(&other).contains("other clients"));
    }

    #[test]
    fn sparklines_scale_to_the_busiest_day() {
        assert_eq!(sparkline(&[0, 1, 4, 8]), "·▁▄█");
        assert_eq!(sparkline(&[0, 0]), "··");
        assert_eq!(sparkline(&[3]), "█");
    }
}
