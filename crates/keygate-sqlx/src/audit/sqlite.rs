//! The audit tables in SQLite: times as INTEGER microseconds, days as INTEGER day numbers.

use std::time::SystemTime;

use keygate::KeyId;
use keygate::audit::AuditEvent;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::{
    EVENT_CHUNK, EventQuery, PRUNE_LIMIT, RawEvent, RawUsage, USAGE_CHUNK, UsageDelta, day_of,
    event_query, folded_sample, latency_us,
};
use crate::codec::to_micros;

/// Writes one batch in one transaction; returns how many events a prune deleted.
pub(super) async fn write(
    pool: &SqlitePool,
    events: &[AuditEvent],
    usage: &[UsageDelta],
    prune_before: Option<SystemTime>,
) -> Result<u64, sqlx::Error> {
    // The write lock up front, as every keygate write does: see SqliteStore.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    for chunk in events.chunks(EVENT_CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO keygate_audit_events (at, action, key_id, outcome, reason, method, \
             route, client_ip, status, latency_us, request_id, actor, detail, folded_count, \
             folded_last_at, folded_sample, folded_other_clients) ",
        );
        q.push_values(chunk, |mut row, e| {
            row.push_bind(to_micros(e.at))
                .push_bind(e.action.as_str())
                .push_bind(e.key_id.as_ref().map(KeyId::as_str))
                .push_bind(e.outcome.map(|o| o.as_str()))
                .push_bind(e.reason.map(keygate::Reason::as_str))
                .push_bind(e.method.as_ref().map(http::Method::as_str))
                .push_bind(e.route.as_deref())
                .push_bind(e.client_ip.map(|ip| ip.to_string()))
                .push_bind(e.status.map(i64::from))
                .push_bind(latency_us(e))
                .push_bind(e.request_id.as_deref())
                .push_bind(e.actor.as_deref())
                .push_bind(e.detail.as_deref())
                .push_bind(
                    e.folded
                        .as_ref()
                        .map(|f| i64::try_from(f.count).unwrap_or(i64::MAX)),
                )
                .push_bind(e.folded.as_ref().map(|f| to_micros(f.last_at)))
                .push_bind(folded_sample(e))
                .push_bind(e.folded.as_ref().map(|f| f.other_clients));
        });
        q.build().execute(&mut *tx).await?;
    }
    for chunk in usage.chunks(USAGE_CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO keygate_usage (key_id, day, allowed, denied) ",
        );
        q.push_values(chunk, |mut row, u| {
            row.push_bind(u.key_id.as_str())
                .push_bind(u.day)
                .push_bind(u.allowed)
                .push_bind(u.denied);
        });
        q.push(
            " ON CONFLICT (key_id, day) DO UPDATE SET allowed = allowed + excluded.allowed, \
             denied = denied + excluded.denied",
        );
        q.build().execute(&mut *tx).await?;
    }
    let mut deleted = 0;
    if let Some(before) = prune_before {
        deleted = sqlx::query(
            "DELETE FROM keygate_audit_events WHERE id IN \
             (SELECT id FROM keygate_audit_events WHERE at < ? ORDER BY at LIMIT ?)",
        )
        .bind(to_micros(before))
        .bind(PRUNE_LIMIT)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM keygate_usage WHERE day < ?")
            .bind(day_of(before))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(deleted)
}

pub(super) async fn events(
    pool: &SqlitePool,
    query: &EventQuery,
) -> Result<Vec<RawEvent>, sqlx::Error> {
    let mut q = event_query::<Sqlite, _>(query, query.since.map(to_micros));
    let rows = q.build().fetch_all(pool).await?;
    rows.iter().map(raw_event).collect()
}

fn raw_event(row: &SqliteRow) -> Result<RawEvent, sqlx::Error> {
    Ok(RawEvent {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        action: row.try_get("action")?,
        key_id: row.try_get("key_id")?,
        outcome: row.try_get("outcome")?,
        reason: row.try_get("reason")?,
        method: row.try_get("method")?,
        route: row.try_get("route")?,
        client_ip: row.try_get("client_ip")?,
        status: row.try_get("status")?,
        latency_us: row.try_get("latency_us")?,
        request_id: row.try_get("request_id")?,
        actor: row.try_get("actor")?,
        detail: row.try_get("detail")?,
        folded_count: row.try_get("folded_count")?,
        folded_last_at: row.try_get("folded_last_at")?,
        folded_sample: row.try_get("folded_sample")?,
        folded_other_clients: row.try_get("folded_other_clients")?,
    })
}

pub(super) async fn usage(
    pool: &SqlitePool,
    key_id: Option<&KeyId>,
    from_day: i64,
) -> Result<Vec<RawUsage>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT key_id, day, allowed, denied FROM keygate_usage \
         WHERE day >= ? AND (? IS NULL OR key_id = ?) ORDER BY key_id, day",
    )
    .bind(from_day)
    .bind(key_id.map(KeyId::as_str))
    .bind(key_id.map(KeyId::as_str))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(RawUsage {
                key_id: row.try_get("key_id")?,
                day: row.try_get("day")?,
                allowed: row.try_get("allowed")?,
                denied: row.try_get("denied")?,
            })
        })
        .collect()
}
