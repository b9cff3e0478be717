//! The audit tables in SQLite: times as INTEGER microseconds, days as INTEGER day numbers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use keygate::KeyId;
use keygate::audit::AuditEvent;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments, AssertSqlSafe, QueryBuilder, Row, Sqlite, SqlitePool};

use super::{
    Column, EVENT_CHUNK, EventQuery, PRUNE_LIMIT, RawEvent, RawUsage, Shape, USAGE_CHUNK,
    UsageDelta, chunks, day_of, event_query, folded_sample, latency_us,
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
    let mut texts = Texts::default();
    for chunk in chunks(events, EVENT_CHUNK) {
        let shape = Shape::of(chunk);
        // OR FAIL rather than the default ABORT: a failing row then need not undo the rows
        // before it in the statement, so SQLite keeps no statement journal for it (one page
        // image per page touched, spilled to a temporary file past 64 KiB: most of the cost of
        // a large insert into indexed tables). Any error still rolls back the whole
        // transaction.
        let sql = shape.insert_sql("INSERT OR FAIL", chunk.len(), false);
        let mut args = SqliteArguments::default();
        args.reserve(shape.shared.len() + chunk.len() * shape.per_row.len(), 0);
        let values = chunk
            .first()
            .map(|first| (&shape.shared, first))
            .into_iter()
            .chain(chunk.iter().map(|event| (&shape.per_row, event)));
        for (columns, event) in values {
            bind_event(&mut args, columns, event, &mut texts).map_err(sqlx::Error::Encode)?;
        }
        sqlx::query_with(AssertSqlSafe(sql), args)
            .execute(&mut *tx)
            .await?;
    }
    for chunk in chunks(usage, USAGE_CHUNK) {
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

/// Adds `event`'s values for `columns` to `args`.
fn bind_event<'a>(
    args: &mut SqliteArguments,
    columns: &[Column],
    e: &'a AuditEvent,
    texts: &mut Texts<'a>,
) -> Result<(), BoxDynError> {
    for column in columns {
        match column {
            Column::At => args.add(to_micros(e.at))?,
            Column::Action => args.add(texts.text(e.action.as_str()))?,
            Column::KeyId => args.add(e.key_id.map(|id| texts.key(id)))?,
            Column::Outcome => args.add(e.outcome.map(|o| texts.text(o.as_str())))?,
            Column::Reason => args.add(e.reason.map(|r| texts.text(r.as_str())))?,
            Column::Method => args.add(e.method.as_ref().map(|m| texts.text(m.as_str())))?,
            Column::Route => args.add(e.route.clone())?,
            Column::ClientIp => args.add(e.client_ip.map(|ip| texts.ip(ip)))?,
            Column::Status => args.add(e.status.map(i64::from))?,
            Column::LatencyUs => args.add(latency_us(e))?,
            Column::RequestId => args.add(e.request_id.clone())?,
            Column::Actor => args.add(e.actor.clone())?,
            Column::Detail => args.add(e.detail.clone())?,
            Column::FoldedCount => args.add(
                e.folded
                    .as_ref()
                    .map(|f| i64::try_from(f.count).unwrap_or(i64::MAX)),
            )?,
            Column::FoldedLastAt => args.add(e.folded.as_ref().map(|f| to_micros(f.last_at)))?,
            Column::FoldedSample => args.add(folded_sample(e))?,
            Column::FoldedOtherClients => args.add(e.folded.as_ref().map(|f| f.other_clients))?,
        }
    }
    Ok(())
}

/// A batch's repeated texts, each made once and shared: sqlx's SQLite driver copies a `&str`
/// bind into a fresh `Arc<String>` but takes an `Arc<str>` as it is. A batch of a busy service
/// names the same few actions, methods, keys and clients thousands of times.
#[derive(Default)]
struct Texts<'a> {
    /// Action, outcome, reason and method names: a handful, mostly `'static`.
    words: Vec<(&'a str, Arc<str>)>,
    keys: HashMap<KeyId, Arc<str>, foldhash::fast::RandomState>,
    ips: HashMap<IpAddr, Arc<str>, foldhash::fast::RandomState>,
}

/// Most distinct words kept per batch (custom methods could be many).
const MAX_WORDS: usize = 32;

impl<'a> Texts<'a> {
    fn text(&mut self, text: &'a str) -> Arc<str> {
        if let Some((_, shared)) = self.words.iter().find(|(word, _)| *word == text) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(text);
        if self.words.len() < MAX_WORDS {
            self.words.push((text, Arc::clone(&shared)));
        }
        shared
    }

    fn key(&mut self, id: KeyId) -> Arc<str> {
        Arc::clone(
            self.keys
                .entry(id)
                .or_insert_with(|| Arc::from(id.as_str())),
        )
    }

    fn ip(&mut self, ip: IpAddr) -> Arc<str> {
        Arc::clone(
            self.ips
                .entry(ip)
                .or_insert_with(|| Arc::from(ip.to_string())),
        )
    }
}

pub(super) async fn events(
    pool: &SqlitePool,
    query: &EventQuery,
    owner: Option<&str>,
) -> Result<Vec<RawEvent>, sqlx::Error> {
    let mut q = event_query::<Sqlite, _>(query, owner, query.since.map(to_micros));
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
    owner: Option<&str>,
    from_day: i64,
) -> Result<Vec<RawUsage>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT key_id, day, allowed, denied FROM keygate_usage \
         WHERE day >= ? AND (? IS NULL OR key_id = ?) \
         AND (? IS NULL OR key_id IN (SELECT id FROM keygate_keys WHERE owner = ?)) \
         ORDER BY key_id, day",
    )
    .bind(from_day)
    .bind(key_id.map(KeyId::as_str))
    .bind(key_id.map(KeyId::as_str))
    .bind(owner)
    .bind(owner)
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
