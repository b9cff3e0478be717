//! The audit tables in SQLite: times as INTEGER microseconds, days as INTEGER day numbers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use keygate::audit::{Action, AuditEvent, Outcome, StoredEvent};
use keygate::{KeyId, StoreError};
use sqlx::error::BoxDynError;
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqliteRow};
use sqlx::{Arguments, AssertSqlSafe, QueryBuilder, Row, Sqlite, SqlitePool};

use super::block::{self, Block, Bloom, MAX_BLOCK_EVENTS, Malformed};
use super::{
    Column, EVENT_CHUNK, EventQuery, PRUNE_LIMIT, RawEvent, RawUsage, Shape, USAGE_CHUNK,
    UsageDelta, chunks, corrupt, day_of, event_query, folded_sample, latency_us,
};
use crate::codec::{to_micros, unavailable};

/// Writes one batch in one transaction; returns whether a prune left events behind (it
/// deletes at most [`PRUNE_LIMIT`] rows and [`PRUNE_BLOCKS`] blocks).
///
/// Every event gets the next id of `keygate_audit_events`' sequence, in the batch's order:
/// request events go into blocks ([`block`]), the others into rows, and a read merges both.
pub(super) async fn write(
    pool: &SqlitePool,
    events: &[AuditEvent],
    usage: &[UsageDelta],
    prune_before: Option<SystemTime>,
) -> Result<bool, sqlx::Error> {
    // The write lock up front, as every keygate write does: see SqliteStore.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    if !events.is_empty() {
        let first = next_id(&mut tx).await?;
        let mut row_ids = Vec::new();
        let mut rows = Vec::new();
        let mut compact = Vec::new();
        for (id, event) in (first..).zip(events) {
            if block::is_compact(event) {
                compact.push((id, event));
            } else {
                row_ids.push(id);
                rows.push(event);
            }
        }
        insert_rows(&mut tx, &row_ids, &rows).await?;
        for chunk in compact.chunks(MAX_BLOCK_EVENTS) {
            insert_block(&mut tx, &block::encode(chunk)).await?;
        }
        // Ids are never reused: the sequence moves past the blocks' ids too (a row's own id
        // moves it already), so another writer's next row, and the next batch, come after.
        let last = first + i64::try_from(events.len()).unwrap_or(i64::MAX) - 1;
        sqlx::query("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?")
            .bind(last)
            .bind(EVENTS_TABLE)
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
    let mut more = false;
    if let Some(before) = prune_before {
        more = prune(&mut tx, before).await?;
    }
    tx.commit().await?;
    Ok(more)
}

/// The table whose sequence numbers every event, row or block.
const EVENTS_TABLE: &str = "keygate_audit_events";

/// Most blocks one prune deletes.
pub(super) const PRUNE_BLOCKS: i64 = 64;

/// The first id of a batch: one past the largest ever given, to a row or a block event.
async fn next_id(tx: &mut SqliteConnection) -> Result<i64, sqlx::Error> {
    // An empty table has no sequence row yet; the writes below expect one.
    sqlx::query(
        "INSERT INTO sqlite_sequence (name, seq) SELECT ?1, 0 \
         WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?1)",
    )
    .bind(EVENTS_TABLE)
    .execute(&mut *tx)
    .await?;
    let last: i64 = sqlx::query_scalar(
        "SELECT max((SELECT seq FROM sqlite_sequence WHERE name = ?), \
         coalesce((SELECT max(last_id) FROM keygate_audit_blocks), 0), \
         coalesce((SELECT max(id) FROM keygate_audit_events), 0))",
    )
    .bind(EVENTS_TABLE)
    .fetch_one(&mut *tx)
    .await?;
    Ok(last + 1)
}

/// Inserts `events` as rows, with their ids.
async fn insert_rows(
    tx: &mut SqliteConnection,
    ids: &[i64],
    events: &[&AuditEvent],
) -> Result<(), sqlx::Error> {
    let mut texts = Texts::default();
    for (ids, chunk) in chunks(ids, EVENT_CHUNK).zip(chunks(events, EVENT_CHUNK)) {
        let mut shape = Shape::of(chunk);
        shape.per_row.insert(0, Column::Id);
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
            .map(|first| (&shape.shared, 0, *first))
            .into_iter()
            .chain(
                ids.iter()
                    .zip(chunk)
                    .map(|(id, event)| (&shape.per_row, *id, *event)),
            );
        for (columns, id, event) in values {
            bind_event(&mut args, columns, id, event, &mut texts).map_err(sqlx::Error::Encode)?;
        }
        sqlx::query_with(AssertSqlSafe(sql), args)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

async fn insert_block(tx: &mut SqliteConnection, block: &Block) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO keygate_audit_blocks \
         (first_id, last_id, first_at, last_at, count, denied, keys, events) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(block.first_id)
    .bind(block.last_id)
    .bind(block.first_at)
    .bind(block.last_at)
    .bind(block.count)
    .bind(block.denied)
    .bind(block.keys.as_slice())
    .bind(block.events.as_slice())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Deletes events before `before`, oldest first: up to [`PRUNE_LIMIT`] rows and
/// [`PRUNE_BLOCKS`] whole blocks (a block goes once its last event is older). Returns whether
/// either limit was reached.
async fn prune(tx: &mut SqliteConnection, before: SystemTime) -> Result<bool, sqlx::Error> {
    let cutoff = to_micros(before);
    let rows = sqlx::query(
        "DELETE FROM keygate_audit_events WHERE id IN \
         (SELECT id FROM keygate_audit_events WHERE at < ? ORDER BY at LIMIT ?)",
    )
    .bind(cutoff)
    .bind(PRUNE_LIMIT)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let blocks = sqlx::query(
        "DELETE FROM keygate_audit_blocks WHERE first_id IN \
         (SELECT first_id FROM keygate_audit_blocks WHERE last_at < ? ORDER BY last_at LIMIT ?)",
    )
    .bind(cutoff)
    .bind(PRUNE_BLOCKS)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // A block with events on both sides of the cutoff keeps only the later ones: retention is
    // per event, as for rows.
    let straddling: Vec<(i64, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT first_id, first_at, events FROM keygate_audit_blocks \
         WHERE first_at < ? AND last_at >= ? ORDER BY first_id LIMIT ?",
    )
    .bind(cutoff)
    .bind(cutoff)
    .bind(PRUNE_BLOCKS)
    .fetch_all(&mut *tx)
    .await?;
    for (first_id, first_at, blob) in &straddling {
        // An undecodable block is left as it is (reads report it): pruning must not fail
        // every write over it.
        let Ok(events) = block::decode(*first_id, *first_at, blob) else {
            continue;
        };
        let kept: Vec<(i64, &AuditEvent)> = events
            .iter()
            .filter(|stored| to_micros(stored.event.at) >= cutoff)
            .map(|stored| (stored.id, &stored.event))
            .collect();
        sqlx::query("DELETE FROM keygate_audit_blocks WHERE first_id = ?")
            .bind(first_id)
            .execute(&mut *tx)
            .await?;
        if !kept.is_empty() {
            insert_block(tx, &block::encode(&kept)).await?;
        }
    }
    sqlx::query("DELETE FROM keygate_usage WHERE day < ?")
        .bind(day_of(before))
        .execute(&mut *tx)
        .await?;
    let limit = PRUNE_BLOCKS.unsigned_abs();
    Ok(rows >= PRUNE_LIMIT.unsigned_abs() || blocks >= limit || straddling.len() as u64 >= limit)
}

/// Adds `event`'s values for `columns` to `args`.
fn bind_event<'a>(
    args: &mut SqliteArguments,
    columns: &[Column],
    id: i64,
    e: &'a AuditEvent,
    texts: &mut Texts<'a>,
) -> Result<(), BoxDynError> {
    for column in columns {
        match column {
            Column::Id => args.add(id)?,
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
            Column::Owner => args.add(e.owner.as_deref().map(str::to_owned))?,
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

/// The events matching `query`: rows and block events, read in one transaction (one
/// snapshot: a batch written meanwhile is wholly in or wholly out, so a follower that resumes
/// after the last id it saw misses nothing), merged by id.
pub(super) async fn events(
    pool: &SqlitePool,
    query: &EventQuery,
    owner: Option<&str>,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut tx = pool.begin().await.map_err(unavailable)?;
    let mut q = event_query::<Sqlite, _>(query, owner, query.since.map(to_micros));
    let rows = q.build().fetch_all(&mut *tx).await.map_err(unavailable)?;
    let mut events = rows
        .iter()
        .map(|row| raw_event(row).map_err(unavailable)?.into_event())
        .collect::<Result<Vec<_>, _>>()?;
    let from_blocks = block_events(&mut tx, query, owner).await?;
    tx.rollback().await.map_err(unavailable)?;
    if !from_blocks.is_empty() {
        events.extend(from_blocks);
        if query.oldest_first {
            events.sort_unstable_by_key(|e| e.id);
        } else {
            events.sort_unstable_by_key(|e| std::cmp::Reverse(e.id));
        }
        events.truncate(query.clamped_limit());
    }
    Ok(events)
}

/// Block headers read at a time.
const HEADER_PAGE: i64 = 64;

/// The block events matching `query`, in its order, at most its limit: blocks are read in id
/// order (their id ranges do not overlap), skipped without decoding when their summary rules
/// them out (time, ids, no denial, no key of the filter in their Bloom filter), and decoded
/// until the limit is reached.
async fn block_events(
    conn: &mut SqliteConnection,
    query: &EventQuery,
    owner: Option<&str>,
) -> Result<Vec<StoredEvent>, StoreError> {
    if query.action.is_some_and(|action| action != Action::Request) {
        return Ok(Vec::new());
    }
    let keys: Option<Vec<KeyId>> = match owner {
        Some(owner) => {
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM keygate_keys WHERE owner = ?1 \
                     UNION ALL SELECT id FROM keygate_deleted_keys WHERE owner = ?1",
            )
            .bind(owner)
            .fetch_all(&mut *conn)
            .await
            .map_err(unavailable)?;
            Some(
                ids.iter()
                    .filter_map(|id| id.parse().ok())
                    .filter(|id| query.key_id.is_none_or(|wanted| wanted == *id))
                    .collect(),
            )
        }
        None => query.key_id.map(|id| vec![id]),
    };
    if keys.as_ref().is_some_and(Vec::is_empty) {
        return Ok(Vec::new());
    }
    let wants_denied = query.outcome == Some(Outcome::Denied) || query.reason.is_some();
    let wants_allowed = query.outcome == Some(Outcome::Allowed);
    let since = query.since.map(to_micros);
    let limit = query.clamped_limit();
    let mut found = Vec::new();
    let mut cursor: Option<i64> = None;
    loop {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT first_id, first_at, count, denied, keys FROM keygate_audit_blocks WHERE 1 = 1",
        );
        if let Some(since) = since {
            q.push(" AND last_at >= ").push_bind(since);
        }
        if let Some(after) = query.after_id {
            q.push(" AND last_id > ").push_bind(after);
        }
        if let Some(before) = query.before_id {
            q.push(" AND first_id < ").push_bind(before);
        }
        if let Some(cursor) = cursor {
            q.push(if query.oldest_first {
                " AND first_id > "
            } else {
                " AND first_id < "
            })
            .push_bind(cursor);
        }
        q.push(if query.oldest_first {
            " ORDER BY first_id ASC LIMIT "
        } else {
            " ORDER BY first_id DESC LIMIT "
        })
        .push_bind(HEADER_PAGE);
        let headers = q.build().fetch_all(&mut *conn).await.map_err(unavailable)?;
        let full_page = headers.len() >= HEADER_PAGE.unsigned_abs() as usize;
        for header in &headers {
            let first_id: i64 = header.try_get("first_id").map_err(unavailable)?;
            cursor = Some(first_id);
            let count: i64 = header.try_get("count").map_err(unavailable)?;
            let denied: i64 = header.try_get("denied").map_err(unavailable)?;
            if (wants_denied && denied == 0) || (wants_allowed && denied >= count) {
                continue;
            }
            if let Some(keys) = &keys {
                let bloom = Bloom::from_bytes(header.try_get("keys").map_err(unavailable)?);
                if !keys.iter().any(|key| bloom.may_contain(*key)) {
                    continue;
                }
            }
            let first_at: i64 = header.try_get("first_at").map_err(unavailable)?;
            let blob: Vec<u8> =
                sqlx::query_scalar("SELECT events FROM keygate_audit_blocks WHERE first_id = ?")
                    .bind(first_id)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(unavailable)?;
            let mut events = block::decode(first_id, first_at, &blob)
                .map_err(|Malformed(what)| corrupt(first_id, what))?;
            if !query.oldest_first {
                events.reverse();
            }
            for stored in events {
                if matches(query, keys.as_deref(), since, &stored) {
                    found.push(stored);
                    if found.len() >= limit {
                        return Ok(found);
                    }
                }
            }
        }
        if !full_page {
            return Ok(found);
        }
    }
}

/// Whether a block event passes `query`'s filters (its action is a request's).
fn matches(
    query: &EventQuery,
    keys: Option<&[KeyId]>,
    since: Option<i64>,
    stored: &StoredEvent,
) -> bool {
    let e = &stored.event;
    keys.is_none_or(|keys| e.key_id.is_some_and(|id| keys.contains(&id)))
        && query.outcome.is_none_or(|o| e.outcome == Some(o))
        && query.reason.is_none_or(|r| e.reason == Some(r))
        && since.is_none_or(|since| to_micros(e.at) >= since)
        && query.after_id.is_none_or(|after| stored.id > after)
        && query.before_id.is_none_or(|before| stored.id < before)
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
        owner: row.try_get("owner")?,
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
         WHERE day >= ?1 AND (?2 IS NULL OR key_id = ?2) \
         AND (?3 IS NULL OR key_id IN (SELECT id FROM keygate_keys WHERE owner = ?3 \
         UNION ALL SELECT id FROM keygate_deleted_keys WHERE owner = ?3)) \
         ORDER BY key_id, day",
    )
    .bind(from_day)
    .bind(key_id.map(KeyId::as_str))
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
