//! The quota counter table (`keygate_quota_counters`, migration 10): where an in-process quota
//! meter saves its counters, write-behind ([`QuotaLedger`]). Written once for both dialects.

use std::collections::HashMap;

use keygate::StoreError;
use keygate::quota::{CounterKind, CounterState, QuotaSubject};
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Row, Type,
};

use crate::codec::{self, unavailable};
use crate::store::{Dialect, SqlStore};

type Connection<D> = <<D as Dialect>::DB as Database>::Connection;
type DbRow<D> = <<D as Dialect>::DB as Database>::Row;

/// Counters per statement: 6 parameters each, far below either database's limit (SQLite
/// 32 766, PostgreSQL 65 535). A meter saves at most this many in one statement; more (a
/// flush after a long outage) go in several statements of one transaction.
const ROWS_PER_STATEMENT: usize = 1_000;

/// Saves or replaces each subject's counter (the subject is the primary key).
const UPSERT: &str = "INSERT INTO keygate_quota_counters \
     (subject, kind, window_index, value, granted, updated_at) ";
const ON_CONFLICT: &str = " ON CONFLICT (subject) DO UPDATE SET kind = excluded.kind, \
     window_index = excluded.window_index, value = excluded.value, granted = excluded.granted, \
     updated_at = excluded.updated_at";
const SELECT: &str = "SELECT subject, kind, window_index, value, granted \
     FROM keygate_quota_counters WHERE subject IN (";

impl<D: Dialect> SqlStore<D>
where
    for<'c> &'c mut Connection<D>: Executor<'c, Database = D::DB>,
    <D::DB as Database>::Arguments: IntoArguments<D::DB>,
    for<'a> &'a str: ColumnIndex<DbRow<D>>,
    for<'a> String: Encode<'a, D::DB> + Decode<'a, D::DB> + Type<D::DB>,
    for<'a> i64: Encode<'a, D::DB> + Decode<'a, D::DB> + Type<D::DB>,
{
    /// One query (per 1 000 subjects) reading the saved counters of `subjects`.
    pub(crate) async fn load_counters(
        &self,
        subjects: &[QuotaSubject],
    ) -> Result<Vec<(QuotaSubject, CounterState)>, StoreError> {
        let by_text: HashMap<String, QuotaSubject> =
            subjects.iter().map(|s| (s.to_string(), *s)).collect();
        let texts: Vec<&String> = by_text.keys().collect();
        let mut found = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<D::DB>::new(SELECT);
            let mut list = q.separated(", ");
            for text in chunk {
                list.push_bind((*text).clone());
            }
            q.push(")");
            let rows = q.build().fetch_all(&self.pool).await.map_err(unavailable)?;
            for row in &rows {
                let text: String = row.try_get("subject").map_err(unavailable)?;
                let Some(subject) = by_text.get(&text) else {
                    continue;
                };
                found.push((*subject, Self::counter(row, &text)?));
            }
        }
        Ok(found)
    }

    /// Reads a counter row; a row this version cannot read is `Unavailable` (never a fresh
    /// counter, which would grant a quota again).
    fn counter(row: &DbRow<D>, subject: &str) -> Result<CounterState, StoreError> {
        let kind: String = row.try_get("kind").map_err(unavailable)?;
        let window: i64 = row.try_get("window_index").map_err(unavailable)?;
        let value: i64 = row.try_get("value").map_err(unavailable)?;
        let granted: i64 = row.try_get("granted").map_err(unavailable)?;
        let damaged = || {
            StoreError::unavailable(format!(
                "quota counter {subject:?} cannot be read (kind {kind:?}, window {window}, value {value}, granted {granted})"
            ))
        };
        Ok(CounterState {
            kind: kind.parse::<CounterKind>().map_err(|_| damaged())?,
            window: u64::try_from(window).map_err(|_| damaged())?,
            value: u64::try_from(value).map_err(|_| damaged())?,
            granted: u64::try_from(granted).map_err(|_| damaged())?,
        })
    }

    /// Saves `counters` as one upsert statement (per 1 000 counters; several in one
    /// transaction). A subject listed twice keeps its last counter.
    pub(crate) async fn save_counters(
        &self,
        counters: &[(QuotaSubject, CounterState)],
    ) -> Result<(), StoreError> {
        let mut latest: HashMap<QuotaSubject, CounterState> = HashMap::new();
        for (subject, state) in counters {
            latest.insert(*subject, *state);
        }
        let mut rows = Vec::with_capacity(latest.len());
        for (subject, state) in latest {
            let number = |n: u64| {
                i64::try_from(n).map_err(|_| {
                    StoreError::unavailable(format!(
                        "quota counter {subject}: {n} is beyond what the table keeps"
                    ))
                })
            };
            rows.push((
                subject.to_string(),
                state.kind.as_str(),
                number(state.window)?,
                number(state.value)?,
                number(state.granted)?,
            ));
        }
        if rows.is_empty() {
            return Ok(());
        }
        let now = codec::truncate(self.clock.now());
        let mut statements: Vec<_> = rows
            .chunks(ROWS_PER_STATEMENT)
            .map(|chunk| {
                let mut q = QueryBuilder::<D::DB>::new(UPSERT);
                q.push_values(chunk, |mut row, (subject, kind, window, value, granted)| {
                    row.push_bind(subject.clone())
                        .push_bind((*kind).to_owned())
                        .push_bind(*window)
                        .push_bind(*value)
                        .push_bind(*granted)
                        .push_bind(D::time(now));
                });
                q.push(ON_CONFLICT);
                q
            })
            .collect();
        if let [only] = statements.as_mut_slice() {
            // One statement is atomic on its own.
            only.build()
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
            return Ok(());
        }
        let mut tx = self
            .pool
            .begin_with(D::BEGIN_WRITE)
            .await
            .map_err(unavailable)?;
        for statement in &mut statements {
            statement
                .build()
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }
}

/// Implements [`QuotaLedger`](keygate::quota::QuotaLedger) for a public store type through its
/// `keys` field, a [`SqlStore`] (invoked where the field is visible).
macro_rules! ledger_of_sql_store {
    ($store:ty) => {
        const _: () = {
            use keygate::StoreError;
            use keygate::quota::{CounterState, QuotaLedger, QuotaSubject};

            #[async_trait::async_trait]
            impl QuotaLedger for $store {
                async fn load_counters(
                    &self,
                    subjects: &[QuotaSubject],
                ) -> Result<Vec<(QuotaSubject, CounterState)>, StoreError> {
                    self.keys.load_counters(subjects).await
                }

                async fn save_counters(
                    &self,
                    counters: &[(QuotaSubject, CounterState)],
                ) -> Result<(), StoreError> {
                    self.keys.save_counters(counters).await
                }
            }
        };
    };
}
pub(crate) use ledger_of_sql_store;
