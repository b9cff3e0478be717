//! The audit tables in PostgreSQL: times as `timestamptz`, days as `date`.

use std::time::SystemTime;

use keygate::KeyId;
use keygate::audit::AuditEvent;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Arguments, AssertSqlSafe, PgPool, Postgres, QueryBuilder, Row};
use time::{Date, OffsetDateTime};

use super::{
    Column, EVENT_CHUNK, EventQuery, PRUNE_LIMIT, RawEvent, RawUsage, Shape, USAGE_CHUNK,
    UsageDelta, chunks, day_of, event_query, folded_sample, latency_us,
};
use crate::postgres::{micros, timestamp};

/// The `date` of a day number (days since 1970-01-01).
fn date(day: i64) -> Date {
    let epoch = OffsetDateTime::UNIX_EPOCH.date();
    epoch
        .checked_add(time::Duration::days(day))
        .unwrap_or(if day < 0 { Date::MIN } else { Date::MAX })
}

fn day_number(date: Date) -> i64 {
    (date - OffsetDateTime::UNIX_EPOCH.date()).whole_days()
}

/// Writes one batch in one transaction; returns how many events a prune deleted.
pub(super) async fn write(
    pool: &PgPool,
    events: &[AuditEvent],
    usage: &[UsageDelta],
    prune_before: Option<SystemTime>,
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    for chunk in chunks(events, EVENT_CHUNK) {
        let shape = Shape::of(chunk);
        let sql = shape.insert_sql("INSERT", chunk.len(), true);
        let binds = shape.shared.len() + chunk.len() * shape.per_row.len();
        let mut args = PgArguments::default();
        args.reserve(binds, binds * 8);
        let values = chunk
            .first()
            .map(|first| (&shape.shared, first))
            .into_iter()
            .chain(chunk.iter().map(|event| (&shape.per_row, event)));
        for (columns, event) in values {
            bind_event(&mut args, columns, event).map_err(sqlx::Error::Encode)?;
        }
        sqlx::query_with(AssertSqlSafe(sql), args)
            .execute(&mut *tx)
            .await?;
    }
    for chunk in chunks(usage, USAGE_CHUNK) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO keygate_usage AS u (key_id, day, allowed, denied) ",
        );
        q.push_values(chunk, |mut row, u| {
            row.push_bind(u.key_id.as_str())
                .push_bind(date(u.day))
                .push_bind(u.allowed)
                .push_bind(u.denied);
        });
        q.push(
            " ON CONFLICT (key_id, day) DO UPDATE SET allowed = u.allowed + EXCLUDED.allowed, \
             denied = u.denied + EXCLUDED.denied",
        );
        q.build().execute(&mut *tx).await?;
    }
    let mut deleted = 0;
    if let Some(before) = prune_before {
        deleted = sqlx::query(
            "DELETE FROM keygate_audit_events WHERE id IN \
             (SELECT id FROM keygate_audit_events WHERE at < $1 ORDER BY at LIMIT $2)",
        )
        .bind(timestamp(before))
        .bind(PRUNE_LIMIT)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM keygate_usage WHERE day < $1")
            .bind(date(day_of(before)))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(deleted)
}

/// Adds `event`'s values for `columns` to `args`.
fn bind_event(
    args: &mut PgArguments,
    columns: &[Column],
    e: &AuditEvent,
) -> Result<(), BoxDynError> {
    for column in columns {
        match column {
            // PostgreSQL numbers its events itself; no shape here binds ids.
            Column::Id => return Err("PostgreSQL numbers audit events itself".into()),
            Column::At => args.add(timestamp(e.at))?,
            Column::Action => args.add(e.action.as_str())?,
            Column::KeyId => args.add(e.key_id.as_ref().map(KeyId::as_str))?,
            Column::Outcome => args.add(e.outcome.map(|o| o.as_str()))?,
            Column::Reason => args.add(e.reason.map(keygate::Reason::as_str))?,
            Column::Method => args.add(e.method.as_ref().map(http::Method::as_str))?,
            Column::Route => args.add(e.route.as_deref())?,
            Column::ClientIp => args.add(e.client_ip.map(|ip| ip.to_string()))?,
            Column::Status => args.add(e.status.map(i32::from))?,
            Column::LatencyUs => args.add(latency_us(e))?,
            Column::RequestId => args.add(e.request_id.as_deref())?,
            Column::Actor => args.add(e.actor.as_deref())?,
            Column::Detail => args.add(e.detail.as_deref())?,
            Column::Owner => args.add(e.owner.as_deref())?,
            Column::FoldedCount => args.add(
                e.folded
                    .as_ref()
                    .map(|f| i64::try_from(f.count).unwrap_or(i64::MAX)),
            )?,
            Column::FoldedLastAt => args.add(e.folded.as_ref().map(|f| timestamp(f.last_at)))?,
            Column::FoldedSample => args.add(folded_sample(e))?,
            Column::FoldedOtherClients => args.add(e.folded.as_ref().map(|f| f.other_clients))?,
        }
    }
    Ok(())
}

pub(super) async fn events(
    pool: &PgPool,
    query: &EventQuery,
    owner: Option<&str>,
) -> Result<Vec<RawEvent>, sqlx::Error> {
    let mut q = event_query::<Postgres, _>(query, owner, query.since.map(timestamp));
    let rows = q.build().fetch_all(pool).await?;
    rows.iter().map(raw_event).collect()
}

fn raw_event(row: &PgRow) -> Result<RawEvent, sqlx::Error> {
    Ok(RawEvent {
        id: row.try_get("id")?,
        at: micros(row.try_get::<OffsetDateTime, _>("at")?),
        action: row.try_get("action")?,
        key_id: row.try_get("key_id")?,
        outcome: row.try_get("outcome")?,
        reason: row.try_get("reason")?,
        method: row.try_get("method")?,
        route: row.try_get("route")?,
        client_ip: row.try_get("client_ip")?,
        status: row.try_get::<Option<i32>, _>("status")?.map(i64::from),
        latency_us: row.try_get("latency_us")?,
        request_id: row.try_get("request_id")?,
        actor: row.try_get("actor")?,
        detail: row.try_get("detail")?,
        folded_count: row.try_get("folded_count")?,
        folded_last_at: row
            .try_get::<Option<OffsetDateTime>, _>("folded_last_at")?
            .map(micros),
        folded_sample: row.try_get("folded_sample")?,
        folded_other_clients: row.try_get("folded_other_clients")?,
        owner: row.try_get("owner")?,
    })
}

pub(super) async fn usage(
    pool: &PgPool,
    key_id: Option<&KeyId>,
    owner: Option<&str>,
    from_day: i64,
) -> Result<Vec<RawUsage>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT key_id, day, allowed, denied FROM keygate_usage \
         WHERE day >= $1 AND ($2::text IS NULL OR key_id = $2) \
         AND ($3::text IS NULL OR key_id IN (SELECT id FROM keygate_keys WHERE owner = $3 \
         UNION ALL SELECT id FROM keygate_deleted_keys WHERE owner = $3)) \
         ORDER BY key_id, day",
    )
    .bind(date(from_day))
    .bind(key_id.map(KeyId::as_str))
    .bind(owner)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(RawUsage {
                key_id: row.try_get("key_id")?,
                day: day_number(row.try_get::<Date, _>("day")?),
                allowed: row.try_get("allowed")?,
                denied: row.try_get("denied")?,
            })
        })
        .collect()
}
