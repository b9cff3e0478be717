//! [`SqlAuditSink`]: the audit trail and per-day usage counts, kept in the key store's database.

#[cfg(feature = "sqlite")]
mod block;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use keygate::audit::{
    Action, AuditError, AuditEvent, AuditSink, AuditTrail, Folded, Outcome, is_folded,
};
use keygate::clock::Clock;
use keygate::{KeyId, StoreError};

use crate::codec::{from_micros, to_micros};

/// How long events are kept by default: 90 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// How often, at most, old events are pruned by default: hourly.
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
pub use keygate::audit::{EventQuery, MAX_EVENTS, StoredEvent, UsageDay};

/// Most rows per multi-row insert: 17 binds each, 8 704 a statement, well under SQLite's 32 766
/// and PostgreSQL's 65 535 bind parameters. A power of two: see [`chunks`].
const EVENT_CHUNK: usize = 512;
/// Most rows per usage upsert (4 binds each). A power of two.
const USAGE_CHUNK: usize = 2_048;
/// Most (key, day) counts held in memory between flushes; a write that would hold more
/// carries them into its own transaction.
const MAX_PENDING_USAGE: usize = 10_000;
/// Most events one prune deletes, so a first prune over a long backlog does not hold the
/// database's write lock for long; the next write continues.
const PRUNE_LIMIT: i64 = 10_000;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Keeps audit events in the key store's database (table `keygate_audit_events`) and counts
/// requests per key per UTC day (table `keygate_usage`), for `keygate audit` and
/// `keygate usage`.
///
/// Contents: [set-up](#set-up), [what is written](#what-is-written), [retention](#retention),
/// [reading](#reading). Clones share the pool.
///
/// # Set-up
/// Get one from [`SqliteStore::audit_sink`](crate::SqliteStore::audit_sink) or
/// [`PostgresStore::audit_sink`](crate::PostgresStore::audit_sink) and give it to the
/// verifier; it replaces the default tracing sink (add
/// [`TracingSink`](keygate::audit::TracingSink) too to keep both).
///
/// ```
/// use keygate::{Keyring, Verifier};
/// use keygate_sqlx::SqliteStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = SqliteStore::in_memory().await?;
/// let audit = store.audit_sink(); // 90 days of events, pruned hourly
/// let verifier = Verifier::builder(Keyring::development("acme_test")?, store)
///     .audit_sink(audit.clone())
///     .build();
/// // … serve …
/// verifier.flush_audit().await; // on shutdown
/// let recent = audit.events(&Default::default()).await?;
/// # assert!(recent.is_empty());
/// # Ok(())
/// # }
/// ```
///
/// # What is written
/// Each batch is one transaction. On PostgreSQL every event is a row of
/// `keygate_audit_events`, written by multi-row inserts. On SQLite request events (allowed or
/// denied, not folded) are kept many to a row instead, in `keygate_audit_blocks`: up to 16 384
/// of a batch's events encoded in one blob, with each event's own id, time and values (a
/// dictionary of the texts they repeat; a few bytes an event), so that keeping every request
/// costs a small fraction of an indexed row's CPU; key changes, folded denials and events with
/// an actor or an unusual detail stay rows. Every event takes its id from the same sequence,
/// in the order it was recorded, and reads merge both ([`SqlAuditSink::events`]): nothing in
/// what you read tells a block's event from a row's. The batch's requests
/// are counted per (key, UTC day) as allowed or denied in memory, and the counts are added to
/// `keygate_usage` when the sink is flushed: the verifier's audit task does so about once a
/// second while events flow ([`FLUSH_INTERVAL`](keygate::audit::FLUSH_INTERVAL)), on
/// [`Verifier::flush_audit`](keygate::Verifier::flush_audit) and when the last verifier handle
/// is dropped; a batch carries them itself when more than 10 000 (key, day) counts are
/// waiting. So under load a key costs one usage upsert a second, not one per request, and
/// usage trails the events by about a second. Counts are added only once their batch is
/// written, and kept for the next flush when a flush fails, so a retried batch is counted once.
/// (Calling [`AuditSink::write`] yourself, call [`AuditSink::flush`] before reading usage.)
///
/// Only keys that exist are counted. The verifier folds the denials that do not establish
/// that the presented key exists (unknown id, malformed, bad checksum, missing credential, a
/// locked-out client, store or limiter unavailable: [`keygate::audit::is_folded`]) into one
/// [`Action::Denials`] row per client address, reason and minute, with the count, the first
/// and last time and a sample of at most five ids (columns `folded_*`); see
/// [keygate's audit module](keygate::audit#forged-ids-cost-no-storage). So 10⁵ forged ids from
/// one address add a handful of rows, and no usage row: the sink never counts a folded reason
/// in `keygate_usage`, even for an event written to it directly. Denials of real keys (wrong
/// secret, revoked, expired, …) stay one row each and count as denied in the key's usage. A
/// folded row has no `key_id`: [`EventQuery::key_id`] does not find ids in its sample.
///
/// Writes run on the verifier's audit task, never on the request path (give that task a
/// runtime of its own with
/// [`VerifierBuilder::audit_runtime`](keygate::VerifierBuilder::audit_runtime) to keep it off
/// the request threads too); when the database is slow, the verifier's buffer fills and events
/// are dropped and counted ([`Verifier::audit_stats`](keygate::Verifier::audit_stats)). Events
/// never carry a secret or a digest.
///
/// # Retention
/// Events older than [`SqlAuditSink::retention`] (default [`DEFAULT_RETENTION`], 90 days) and
/// usage days before it are deleted by the sink's own writes, at most once per
/// [`SqlAuditSink::prune_interval`] (default hourly) and at most 10 000 rows (and on SQLite 64
/// blocks) at a time; a block with events on both sides of the cutoff keeps the later ones.
/// `None` keeps everything. Clones share the prune schedule; configuring a sink starts a new
/// one (the first write after it prunes).
///
/// # Reading
/// [`SqlAuditSink::events`] lists events by filter (newest or oldest first, or after an id
/// for following); [`SqlAuditSink::usage`] lists daily counts.
///
/// # Errors
/// A failed write is an [`AuditError`]: the verifier retries the batch with the next one.
/// Reads return [`StoreError::Unavailable`] when the database fails or a row cannot be read
/// back (the table was damaged or written by something else).
#[derive(Clone)]
pub struct SqlAuditSink {
    backend: Backend,
    clock: Arc<dyn Clock>,
    retention: Option<Duration>,
    prune_interval: Duration,
    /// When the next prune is due; `None`: at the next write.
    next_prune: Arc<Mutex<Option<Instant>>>,
    /// Whether allowed requests are kept as rows (else only counted in usage).
    allowed_rows: bool,
    /// Usage counted from written batches, not yet in the database. Shared by clones.
    pending: Arc<Mutex<Usage>>,
}

/// Requests per (key, UTC day): (allowed, denied). Hashed, not ordered: every event of a
/// batch is counted here, on the writer's thread, and an ordered map cost several times more
/// per event; [`SqlAuditSink::usage_rows`] orders the rows it writes.
type Usage = HashMap<(KeyId, i64), (i64, i64), foldhash::fast::RandomState>;

#[derive(Clone)]
enum Backend {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

impl SqlAuditSink {
    #[cfg(feature = "sqlite")]
    pub(crate) fn sqlite(pool: sqlx::SqlitePool, clock: Arc<dyn Clock>) -> Self {
        Self::new(Backend::Sqlite(pool), clock)
    }

    #[cfg(feature = "postgres")]
    pub(crate) fn postgres(pool: sqlx::PgPool, clock: Arc<dyn Clock>) -> Self {
        Self::new(Backend::Postgres(pool), clock)
    }

    fn new(backend: Backend, clock: Arc<dyn Clock>) -> Self {
        Self {
            backend,
            clock,
            retention: Some(DEFAULT_RETENTION),
            prune_interval: DEFAULT_PRUNE_INTERVAL,
            next_prune: Arc::new(Mutex::new(None)),
            allowed_rows: true,
            pending: Arc::new(Mutex::new(Usage::default())),
        }
    }

    /// Whether allowed requests are kept as events (default `true`). With `false` they are
    /// only counted in the per-day usage; denied requests and lifecycle events are still kept.
    /// On PostgreSQL, where every event is a row, allowed requests are most of the sink's cost
    /// at high request rates; on SQLite, which keeps requests in blocks, they cost little: see
    /// docs/benchmarks.md.
    #[must_use]
    pub fn allowed_rows(mut self, keep: bool) -> Self {
        self.allowed_rows = keep;
        self
    }

    /// Keeps events (and usage days) for `max_age`; `None` keeps them forever. Default
    /// [`DEFAULT_RETENTION`] (90 days).
    #[must_use]
    pub fn retention(mut self, max_age: Option<Duration>) -> Self {
        self.retention = max_age;
        self.next_prune = Arc::new(Mutex::new(None));
        self
    }

    /// Prunes at most once per `interval` (default [`DEFAULT_PRUNE_INTERVAL`], an hour).
    #[must_use]
    pub fn prune_interval(mut self, interval: Duration) -> Self {
        self.prune_interval = interval;
        self.next_prune = Arc::new(Mutex::new(None));
        self
    }

    /// Events matching `query`, at most [`EventQuery::limit`] (capped at [`MAX_EVENTS`]).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database fails or a row cannot be read back.
    pub async fn events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        self.filtered_events(query, None).await
    }

    /// [`SqlAuditSink::events`] of the keys that belong to owner `owner` in the key store of
    /// the sink's database, and of those deleted from it (a key never changes owner, and its
    /// tombstone keeps it from schema 14 on), with the owner's own events: an owner's roll-up.
    ///
    /// # Errors
    /// As [`SqlAuditSink::events`].
    pub async fn owner_events(
        &self,
        query: &EventQuery,
        owner: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.filtered_events(query, Some(owner)).await
    }

    async fn filtered_events(
        &self,
        query: &EventQuery,
        owner: Option<&str>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        match &self.backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(pool) => sqlite::events(pool, query, owner).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(pool) => postgres::events(pool, query, owner)
                .await
                .map_err(StoreError::unavailable)?
                .into_iter()
                .map(RawEvent::into_event)
                .collect(),
        }
    }

    /// Requests per key per UTC day, from the day of `since` on (`key_id`: that key only),
    /// ordered by key id, then day.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database fails or a row cannot be read back.
    pub async fn usage(
        &self,
        key_id: Option<&KeyId>,
        since: SystemTime,
    ) -> Result<Vec<UsageDay>, StoreError> {
        self.filtered_usage(key_id, None, since).await
    }

    /// [`SqlAuditSink::usage`] of the keys that belong or belonged to owner `owner` (as for
    /// [`SqlAuditSink::owner_events`]), one row per key and day: sum them for the
    /// owner's total.
    ///
    /// # Errors
    /// As [`SqlAuditSink::usage`].
    pub async fn owner_usage(
        &self,
        owner: &str,
        since: SystemTime,
    ) -> Result<Vec<UsageDay>, StoreError> {
        self.filtered_usage(None, Some(owner), since).await
    }

    async fn filtered_usage(
        &self,
        key_id: Option<&KeyId>,
        owner: Option<&str>,
        since: SystemTime,
    ) -> Result<Vec<UsageDay>, StoreError> {
        let from = day_of(since);
        let rows = match &self.backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(pool) => sqlite::usage(pool, key_id, owner, from).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(pool) => postgres::usage(pool, key_id, owner, from).await,
        }
        .map_err(StoreError::unavailable)?;
        rows.into_iter().map(RawUsage::into_usage).collect()
    }

    /// The cutoff to prune before, when a prune is due.
    fn prune_due(&self) -> Option<SystemTime> {
        let max_age = self.retention?;
        let next = *self
            .next_prune
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if next.is_some_and(|next| Instant::now() < next) {
            return None;
        }
        self.clock.now().checked_sub(max_age)
    }

    /// The first UTC day whose usage is kept: days before the retention are pruned, so
    /// counts for them are not written back.
    fn first_kept_day(&self) -> Option<i64> {
        let max_age = self.retention?;
        Some(day_of(self.clock.now().checked_sub(max_age)?))
    }

    /// `usage` as rows to add, without days before the retention.
    /// The rows to add for `usage`, within retention, ordered by key, then day, so concurrent
    /// writers lock usage rows in the same order.
    fn usage_rows(&self, usage: &Usage) -> Vec<UsageDelta> {
        let first = self.first_kept_day().unwrap_or(i64::MIN);
        let mut rows: Vec<UsageDelta> = usage
            .iter()
            .filter(|((_, day), _)| *day >= first)
            .map(|(&(key_id, day), &(allowed, denied))| UsageDelta {
                key_id,
                day,
                allowed,
                denied,
            })
            .collect();
        rows.sort_unstable_by_key(|row| (row.key_id, row.day));
        rows
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Usage> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes events and usage in one transaction, and prunes if `prune` is given: whether
    /// the prune left events behind (it deletes a bounded number at a time).
    async fn write_rows(
        &self,
        events: &[AuditEvent],
        usage: &[UsageDelta],
        prune: Option<SystemTime>,
    ) -> Result<bool, sqlx::Error> {
        match &self.backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(pool) => sqlite::write(pool, events, usage, prune).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(pool) => postgres::write(pool, events, usage, prune)
                .await
                .map(|deleted| deleted >= PRUNE_LIMIT.unsigned_abs()),
        }
    }

    fn pruned(&self, more: bool) {
        // A full prune left more behind: continue with the next write.
        if !more {
            *self
                .next_prune
                .lock()
                .unwrap_or_else(PoisonError::into_inner) =
                Some(Instant::now() + self.prune_interval);
        }
    }
}

#[async_trait]
impl AuditSink for SqlAuditSink {
    async fn write(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        if events.is_empty() {
            return Ok(());
        }
        let counted = tally(events);
        let kept: Vec<AuditEvent>;
        let events = if self.allowed_rows {
            events
        } else {
            kept = events
                .iter()
                .filter(|e| !(e.action == Action::Request && e.outcome == Some(Outcome::Allowed)))
                .cloned()
                .collect();
            &kept
        };
        let prune = self.prune_due();
        // Too many counts would wait: this batch writes them, its own included (those taken
        // from the pending ones are put back if it fails).
        let carried = {
            let mut pending = self.pending();
            (pending.len() + counted.len() > MAX_PENDING_USAGE)
                .then(|| std::mem::take(&mut *pending))
        };
        let usage = match &carried {
            Some(carried) => {
                let mut all = carried.clone();
                add(&mut all, &counted);
                self.usage_rows(&all)
            }
            None => Vec::new(),
        };
        match self.write_rows(events, &usage, prune).await {
            Ok(more) => {
                if carried.is_none() {
                    add(&mut self.pending(), &counted);
                }
                if prune.is_some() {
                    self.pruned(more);
                }
                Ok(())
            }
            Err(error) => {
                // The batch is retried by the pipeline; its counts are added then.
                if let Some(carried) = carried {
                    add(&mut self.pending(), &carried);
                }
                Err(AuditError(Box::new(error)))
            }
        }
    }

    /// Adds the usage counted since the last flush to `keygate_usage`, in one transaction.
    async fn flush(&self) -> Result<(), AuditError> {
        let taken = std::mem::take(&mut *self.pending());
        if taken.is_empty() {
            return Ok(());
        }
        let rows = self.usage_rows(&taken);
        if rows.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.write_rows(&[], &rows, None).await {
            add(&mut self.pending(), &taken);
            return Err(AuditError(Box::new(error)));
        }
        Ok(())
    }
}

/// The same reads as [`SqlAuditSink::events`], [`SqlAuditSink::usage`],
/// [`SqlAuditSink::owner_events`] and [`SqlAuditSink::owner_usage`] (what `keygate audit` and
/// `keygate usage` run), for code that takes any trail (keygate-admin).
#[async_trait]
impl AuditTrail for SqlAuditSink {
    async fn events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        SqlAuditSink::events(self, query).await
    }

    async fn usage(
        &self,
        key_id: Option<&KeyId>,
        since: SystemTime,
    ) -> Result<Vec<UsageDay>, StoreError> {
        SqlAuditSink::usage(self, key_id, since).await
    }

    async fn owner_events(
        &self,
        query: &EventQuery,
        owner: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        SqlAuditSink::owner_events(self, query, owner).await
    }

    async fn owner_usage(
        &self,
        owner: &str,
        since: SystemTime,
    ) -> Result<Vec<UsageDay>, StoreError> {
        SqlAuditSink::owner_usage(self, owner, since).await
    }
}

impl std::fmt::Debug for SqlAuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => "postgres",
        };
        f.debug_struct("SqlAuditSink")
            .field("backend", &backend)
            .field("retention", &self.retention)
            .field("prune_interval", &self.prune_interval)
            .finish_non_exhaustive()
    }
}

/// Days since 1970-01-01 (UTC) of `at`.
pub(crate) fn day_of(at: SystemTime) -> i64 {
    to_micros(at).div_euclid(MICROS_PER_DAY)
}

/// One (key, day) count to add to `keygate_usage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UsageDelta {
    pub(crate) key_id: KeyId,
    pub(crate) day: i64,
    pub(crate) allowed: i64,
    pub(crate) denied: i64,
}

/// The batch's request events per (key, day). A denial whose reason does not establish that
/// the key exists ([`is_folded`]) is not counted: a forged id must not cost a usage row.
fn tally(events: &[AuditEvent]) -> Usage {
    let mut counts = Usage::default();
    for event in events {
        let (Action::Request, Some(id), Some(outcome)) =
            (event.action, event.key_id, event.outcome)
        else {
            continue;
        };
        if event.reason.is_some_and(is_folded) {
            continue;
        }
        let count = counts.entry((id, day_of(event.at))).or_default();
        match outcome {
            Outcome::Allowed => count.0 += 1,
            Outcome::Denied => count.1 += 1,
        }
    }
    counts
}

/// Adds `more` into `into`.
fn add(into: &mut Usage, more: &Usage) {
    for (&key, &(allowed, denied)) in more {
        match into.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert((allowed, denied));
            }
            Entry::Occupied(mut slot) => {
                let count = slot.get_mut();
                count.0 = count.0.saturating_add(allowed);
                count.1 = count.1.saturating_add(denied);
            }
        }
    }
}

/// A column of `keygate_audit_events` an insert may bind, in the table's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Column {
    /// Bound only by writers that number their events (SQLite): never chosen by
    /// [`Shape::of`].
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Id,
    At,
    Action,
    KeyId,
    Outcome,
    Reason,
    Method,
    Route,
    ClientIp,
    Status,
    LatencyUs,
    RequestId,
    Actor,
    Detail,
    FoldedCount,
    FoldedLastAt,
    FoldedSample,
    FoldedOtherClients,
    Owner,
}

impl Column {
    const ALL: [Self; 18] = [
        Self::At,
        Self::Action,
        Self::KeyId,
        Self::Outcome,
        Self::Reason,
        Self::Method,
        Self::Route,
        Self::ClientIp,
        Self::Status,
        Self::LatencyUs,
        Self::RequestId,
        Self::Actor,
        Self::Detail,
        Self::FoldedCount,
        Self::FoldedLastAt,
        Self::FoldedSample,
        Self::FoldedOtherClients,
        Self::Owner,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::At => "at",
            Self::Action => "action",
            Self::KeyId => "key_id",
            Self::Outcome => "outcome",
            Self::Reason => "reason",
            Self::Method => "method",
            Self::Route => "route",
            Self::ClientIp => "client_ip",
            Self::Status => "status",
            Self::LatencyUs => "latency_us",
            Self::RequestId => "request_id",
            Self::Actor => "actor",
            Self::Detail => "detail",
            Self::FoldedCount => "folded_count",
            Self::FoldedLastAt => "folded_last_at",
            Self::FoldedSample => "folded_sample",
            Self::FoldedOtherClients => "folded_other_clients",
            Self::Owner => "owner",
        }
    }

    /// Whether `event` has a value for this column (else it is NULL).
    fn is_set(self, e: &AuditEvent) -> bool {
        match self {
            Self::Id | Self::At | Self::Action => true,
            Self::KeyId => e.key_id.is_some(),
            Self::Outcome => e.outcome.is_some(),
            Self::Reason => e.reason.is_some(),
            Self::Method => e.method.is_some(),
            Self::Route => e.route.is_some(),
            Self::ClientIp => e.client_ip.is_some(),
            Self::Status => e.status.is_some(),
            Self::LatencyUs => e.latency.is_some(),
            Self::RequestId => e.request_id.is_some(),
            Self::Actor => e.actor.is_some(),
            Self::Detail => e.detail.is_some(),
            Self::Owner => e.owner.is_some(),
            Self::FoldedCount
            | Self::FoldedLastAt
            | Self::FoldedSample
            | Self::FoldedOtherClients => e.folded.is_some(),
        }
    }

    /// Whether `a` and `b` have the same value in this column, for the columns a busy
    /// service repeats from row to row (the others are always bound per row).
    fn same(self, a: &AuditEvent, b: &AuditEvent) -> bool {
        match self {
            Self::Action => a.action == b.action,
            Self::KeyId => a.key_id == b.key_id,
            Self::Outcome => a.outcome == b.outcome,
            Self::Reason => a.reason == b.reason,
            Self::Method => a.method == b.method,
            Self::Route => a.route == b.route,
            Self::ClientIp => a.client_ip == b.client_ip,
            Self::Status => a.status == b.status,
            _ => false,
        }
    }
}

/// How a chunk of events is inserted: which columns are bound (those some event of the chunk
/// has a value for; the others are left to their default, NULL), and of those, which hold the
/// same value in every row and are bound once for the statement. A chunk of a busy service's
/// allowed requests binds 3 values a row (time, key, latency) and 6 once, instead of 17 a
/// row: binding a parameter (and clearing it again) is much of SQLite's work per row, a text
/// one most of all (it is copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Bound once, in this order, before the rows.
    pub(crate) shared: Vec<Column>,
    /// Bound for each row, in this order.
    pub(crate) per_row: Vec<Column>,
}

impl Shape {
    pub(crate) fn of<E: Borrow<AuditEvent>>(events: &[E]) -> Self {
        let mut shape = Self {
            shared: Vec::new(),
            per_row: Vec::new(),
        };
        let Some(first) = events.first().map(Borrow::borrow) else {
            return shape;
        };
        for column in Column::ALL {
            if !events.iter().any(|e| column.is_set(e.borrow())) {
                continue;
            }
            if events.len() > 1 && events.iter().all(|e| column.same(first, e.borrow())) {
                shape.shared.push(column);
            } else {
                shape.per_row.push(column);
            }
        }
        shape
    }

    /// The statement for `rows` rows, with `?` parameters (SQLite) or numbered `$n` ones
    /// (PostgreSQL), numbered in the order they appear: the shared values, then row by row.
    /// `INSERT … INTO keygate_audit_events (columns) SELECT …, v.column1, … FROM (VALUES …)
    /// AS v`, the shared values in the select list. Written directly rather than through `QueryBuilder`, which
    /// formats every placeholder on its own.
    pub(crate) fn insert_sql(&self, insert: &str, rows: usize, numbered: bool) -> String {
        let per_row = self.per_row.len();
        let mut sql = String::with_capacity(insert.len() + 400 + rows * per_row * 7);
        let mut n = 0_usize;
        let mut placeholder = |sql: &mut String| {
            n += 1;
            if numbered {
                sql.push('$');
                sql.push_str(&n.to_string());
            } else {
                sql.push('?');
            }
        };
        sql.push_str(insert);
        sql.push_str(" INTO keygate_audit_events (");
        let names: Vec<&str> = self
            .shared
            .iter()
            .chain(&self.per_row)
            .map(|c| c.name())
            .collect();
        sql.push_str(&names.join(", "));
        sql.push_str(") SELECT ");
        for (i, _) in self.shared.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            placeholder(&mut sql);
        }
        // A VALUES list's columns are `column1`, `column2`, … in both dialects. `at` is
        // never shared, so there is at least one.
        debug_assert!(per_row > 0);
        for i in 1..=per_row {
            if i > 1 || !self.shared.is_empty() {
                sql.push_str(", ");
            }
            sql.push_str("v.column");
            sql.push_str(&i.to_string());
        }
        sql.push_str(" FROM (");
        sql.push_str("VALUES ");
        for row in 0..rows {
            if row > 0 {
                sql.push(',');
            }
            sql.push('(');
            for i in 0..per_row {
                if i > 0 {
                    sql.push(',');
                }
                placeholder(&mut sql);
            }
            sql.push(')');
        }
        sql.push_str(") AS v");
        sql
    }
}

/// `items` split into statements of few distinct sizes: whole chunks of `max` (a power of
/// two), then the rest by descending powers of two (a rest of 300 is 256 + 32 + 8 + 4). Each
/// size is one SQL text, so a connection prepares each shape once and reuses it from its
/// statement cache, instead of preparing a new text for every batch's last chunk.
pub(crate) fn chunks<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    debug_assert!(max.is_power_of_two());
    let rest = items.len() % max;
    let sizes = std::iter::repeat_n(max, items.len() / max).chain(
        (0..max.trailing_zeros())
            .rev()
            .map(|bit| 1 << bit)
            .filter(move |size| rest & size != 0),
    );
    let mut left = items;
    sizes.map(move |size| {
        let (chunk, tail) = left.split_at(size);
        left = tail;
        chunk
    })
}

/// A row of `keygate_audit_events` as read, before parsing.
pub(crate) struct RawEvent {
    pub(crate) id: i64,
    pub(crate) at: i64,
    pub(crate) action: String,
    pub(crate) key_id: Option<String>,
    pub(crate) outcome: Option<String>,
    pub(crate) reason: Option<String>,
    pub(crate) method: Option<String>,
    pub(crate) route: Option<String>,
    pub(crate) client_ip: Option<String>,
    pub(crate) status: Option<i64>,
    pub(crate) latency_us: Option<i64>,
    pub(crate) request_id: Option<String>,
    pub(crate) actor: Option<String>,
    pub(crate) detail: Option<String>,
    pub(crate) folded_count: Option<i64>,
    /// Microseconds, as `at`.
    pub(crate) folded_last_at: Option<i64>,
    pub(crate) folded_sample: Option<String>,
    pub(crate) folded_other_clients: Option<bool>,
    pub(crate) owner: Option<String>,
}

/// The columns every event read selects, in [`RawEvent`] order (`at` as the backend keeps it).
pub(crate) const EVENT_COLUMNS: &str = "id, at, action, key_id, outcome, reason, method, route, \
     client_ip, status, latency_us, request_id, actor, detail, folded_count, folded_last_at, \
     folded_sample, folded_other_clients, owner";

/// A stored audit row keygate cannot read back. Reported as `Unavailable`.
#[derive(Debug, thiserror::Error)]
#[error("audit store returned a malformed {column} in row {row}")]
struct Corrupt {
    row: i64,
    column: &'static str,
}

fn parse<T: std::str::FromStr>(
    row: i64,
    column: &'static str,
    text: Option<&str>,
) -> Result<Option<T>, StoreError> {
    text.map(str::parse)
        .transpose()
        .map_err(|_| StoreError::unavailable(Corrupt { row, column }))
}

fn corrupt(row: i64, column: &'static str) -> StoreError {
    StoreError::unavailable(Corrupt { row, column })
}

impl RawEvent {
    fn into_event(self) -> Result<StoredEvent, StoreError> {
        let row = self.id;
        let at = from_micros(self.at);
        // A name a newer keygate wrote is kept as it was stored, not a failed read.
        let mut event = AuditEvent::stored(at, &self.action).map_err(|_| corrupt(row, "action"))?;
        event.outcome = parse(row, "outcome", self.outcome.as_deref())?;
        event.key_id = parse(row, "key_id", self.key_id.as_deref())?;
        if let Some(name) = self.reason.as_deref() {
            event = event
                .stored_reason(name)
                .map_err(|_| corrupt(row, "reason"))?;
        }
        event.method = parse(row, "method", self.method.as_deref())?;
        event.route = self.route.map(Arc::from);
        event.client_ip = parse::<IpAddr>(row, "client_ip", self.client_ip.as_deref())?;
        event.status = self
            .status
            .map(u16::try_from)
            .transpose()
            .map_err(|_| corrupt(row, "status"))?;
        event.latency = self
            .latency_us
            .map(u64::try_from)
            .transpose()
            .map_err(|_| corrupt(row, "latency_us"))?
            .map(Duration::from_micros);
        event.request_id = self.request_id.map(Arc::from);
        event.actor = self.actor.map(Arc::from);
        event.detail = self.detail;
        event.owner = self.owner.map(Arc::from);
        if let Some(count) = self.folded_count {
            let count = u64::try_from(count).map_err(|_| corrupt(row, "folded_count"))?;
            let sample = self
                .folded_sample
                .as_deref()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<Vec<KeyId>, _>>()
                .map_err(|_| corrupt(row, "folded_sample"))?;
            event.folded = Some(Box::new(Folded::new(
                count,
                from_micros(self.folded_last_at.unwrap_or(self.at)),
                sample,
                self.folded_other_clients.unwrap_or(false),
            )));
        }
        Ok(StoredEvent { id: row, event })
    }
}

/// A folded event's sample as stored: its key ids, space-separated.
pub(crate) fn folded_sample(event: &AuditEvent) -> Option<String> {
    event.folded.as_ref().map(|f| {
        f.sample
            .iter()
            .map(KeyId::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// Latency as stored: whole microseconds.
pub(crate) fn latency_us(event: &AuditEvent) -> Option<i64> {
    event
        .latency
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A row of `keygate_usage` as read.
pub(crate) struct RawUsage {
    pub(crate) key_id: String,
    pub(crate) day: i64,
    pub(crate) allowed: i64,
    pub(crate) denied: i64,
}

impl RawUsage {
    fn into_usage(self) -> Result<UsageDay, StoreError> {
        let bad = |column| StoreError::unavailable(CorruptUsage { column });
        Ok(UsageDay {
            key_id: self.key_id.parse().map_err(|_| bad("key_id"))?,
            day: from_micros(self.day.saturating_mul(MICROS_PER_DAY)),
            allowed: u64::try_from(self.allowed).map_err(|_| bad("allowed"))?,
            denied: u64::try_from(self.denied).map_err(|_| bad("denied"))?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("audit store returned a malformed usage {column}")]
struct CorruptUsage {
    column: &'static str,
}

/// The event listing both dialects run: filters, order and limit. `since` is the query's
/// time already encoded in the dialect's time type.
pub(crate) fn event_query<DB, T>(
    query: &EventQuery,
    owner: Option<&str>,
    since: Option<T>,
) -> sqlx::QueryBuilder<DB>
where
    DB: sqlx::Database,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> &'static str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> T: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let mut q = sqlx::QueryBuilder::<DB>::new("SELECT ");
    q.push(EVENT_COLUMNS)
        .push(" FROM keygate_audit_events WHERE 1 = 1");
    if let Some(id) = &query.key_id {
        q.push(" AND key_id = ").push_bind(id.as_str().to_owned());
    }
    if let Some(owner) = owner {
        // The owner's own changes, and the events of its keys, deleted ones too.
        q.push(" AND (owner = ")
            .push_bind(owner.to_owned())
            .push(" OR key_id IN (SELECT id FROM keygate_keys WHERE owner = ")
            .push_bind(owner.to_owned())
            .push(" UNION ALL SELECT id FROM keygate_deleted_keys WHERE owner = ")
            .push_bind(owner.to_owned())
            .push("))");
    }
    if let Some(outcome) = query.outcome {
        q.push(" AND outcome = ").push_bind(outcome.as_str());
    }
    if let Some(reason) = query.reason {
        q.push(" AND reason = ").push_bind(reason.as_str());
    }
    if let Some(action) = query.action {
        q.push(" AND action = ").push_bind(action.as_str());
    }
    if let Some(since) = since {
        q.push(" AND at >= ").push_bind(since);
    }
    if let Some(after) = query.after_id {
        q.push(" AND id > ").push_bind(after);
    }
    if let Some(before) = query.before_id {
        q.push(" AND id < ").push_bind(before);
    }
    q.push(if query.oldest_first {
        " ORDER BY id ASC LIMIT "
    } else {
        " ORDER BY id DESC LIMIT "
    })
    .push_bind(i64::try_from(query.clamped_limit()).unwrap_or(0));
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_whole_maxima_then_powers_of_two_in_order() {
        let items: Vec<usize> = (0..1_300).collect();
        let sizes: Vec<usize> = chunks(&items, 512).map(<[usize]>::len).collect();
        assert_eq!(sizes, [512, 512, 256, 16, 4]);
        let rejoined: Vec<usize> = chunks(&items, 512).flatten().copied().collect();
        assert_eq!(rejoined, items, "every item once, in order");
        for n in [0, 1, 2, 3, 511, 512, 513, 1_023, 5_000] {
            let items: Vec<usize> = (0..n).collect();
            let sizes: Vec<usize> = chunks(&items, 512).map(<[usize]>::len).collect();
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(
                sizes.iter().all(|s| s.is_power_of_two() && *s <= 512),
                "{n}: {sizes:?}"
            );
            assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{n}: {sizes:?}");
        }
    }

    fn allowed(at_us: u64, key: &str) -> AuditEvent {
        let mut e = AuditEvent::request(
            SystemTime::UNIX_EPOCH + Duration::from_micros(at_us),
            Outcome::Allowed,
        )
        .key_id(Some(key.parse().unwrap()));
        e.method = Some(http::Method::GET);
        e.route = Some(Arc::from("/hello"));
        e.client_ip = Some(IpAddr::from([127, 0, 0, 1]));
        e.status = Some(200);
        e.latency = Some(Duration::from_micros(at_us));
        e
    }

    #[test]
    fn a_shape_binds_set_columns_and_shares_repeated_values() {
        let mut events = vec![allowed(1, "AAAAAAAAAAAA"), allowed(2, "BBBBBBBBBBBB")];
        let shape = Shape::of(&events);
        assert_eq!(
            shape.shared,
            [
                Column::Action,
                Column::Outcome,
                Column::Method,
                Column::Route,
                Column::ClientIp,
                Column::Status
            ]
        );
        assert_eq!(
            shape.per_row,
            [Column::At, Column::KeyId, Column::LatencyUs]
        );
        assert_eq!(
            shape.insert_sql("INSERT", 2, true),
            "INSERT INTO keygate_audit_events (action, outcome, method, route, client_ip, \
             status, at, key_id, latency_us) SELECT $1, $2, $3, $4, $5, $6, v.column1, \
             v.column2, v.column3 FROM (VALUES ($7,$8,$9),($10,$11,$12)) AS v"
        );
        assert_eq!(
            shape.insert_sql("INSERT OR FAIL", 1, false),
            "INSERT OR FAIL INTO keygate_audit_events (action, outcome, method, route, \
             client_ip, status, at, key_id, latency_us) SELECT ?, ?, ?, ?, ?, ?, v.column1, \
             v.column2, v.column3 FROM (VALUES (?,?,?)) AS v"
        );

        // A value set in one row only is bound per row (NULL in the others); one row shares
        // nothing.
        events[1].request_id = Some(Arc::from("r"));
        events[1].method = Some(http::Method::POST);
        let shape = Shape::of(&events);
        assert!(shape.per_row.contains(&Column::RequestId));
        assert!(shape.per_row.contains(&Column::Method));
        assert!(!shape.shared.contains(&Column::Method));
        assert!(
            !shape.per_row.contains(&Column::Detail) && !shape.shared.contains(&Column::Detail)
        );
        let one = Shape::of(&events[..1]);
        assert!(one.shared.is_empty());
        assert_eq!(one.per_row.len(), 9);
    }

    #[test]
    fn days_are_utc_and_floor_before_the_epoch() {
        let day = Duration::from_secs(86_400);
        assert_eq!(day_of(SystemTime::UNIX_EPOCH), 0);
        assert_eq!(
            day_of(SystemTime::UNIX_EPOCH + day - Duration::from_micros(1)),
            0
        );
        assert_eq!(day_of(SystemTime::UNIX_EPOCH + day), 1);
        assert_eq!(
            day_of(SystemTime::UNIX_EPOCH - Duration::from_micros(1)),
            -1
        );
    }
}
