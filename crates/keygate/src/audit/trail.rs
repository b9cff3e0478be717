//! Reading the audit trail back: [`AuditTrail`] (events by filter, usage per key per day), and
//! [`MemoryAuditTrail`], a sink that keeps both in memory.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{Action, AuditError, AuditEvent, AuditSink, Outcome, is_folded};
use crate::key::KeyId;
use crate::rejection::Reason;
use crate::store::StoreError;

/// Most events one [`AuditTrail::events`] call returns.
pub const MAX_EVENTS: usize = 10_000;

const DAY_SECS: u64 = 86_400;

/// Which events [`AuditTrail::events`] returns. Every filter is optional; the default is the
/// 50 newest events.
#[derive(Debug, Clone, PartialEq)]
pub struct EventQuery {
    /// Only events of this key.
    pub key_id: Option<KeyId>,
    /// Only requests with this outcome.
    pub outcome: Option<Outcome>,
    /// Only denied requests with this reason.
    pub reason: Option<Reason>,
    /// Only this action (e.g. [`Action::Request`], or one lifecycle action).
    pub action: Option<Action>,
    /// Only events at or after this time.
    pub since: Option<SystemTime>,
    /// Only events with a larger [`StoredEvent::id`] (for following: pass the last id seen).
    pub after_id: Option<i64>,
    /// Only events with a smaller [`StoredEvent::id`] (for paging back, newest first: pass the
    /// last id of the previous page).
    pub before_id: Option<i64>,
    /// At most this many (capped at [`MAX_EVENTS`]).
    pub limit: usize,
    /// Oldest first (by id) instead of newest first.
    pub oldest_first: bool,
}

impl Default for EventQuery {
    fn default() -> Self {
        Self {
            key_id: None,
            outcome: None,
            reason: None,
            action: None,
            since: None,
            after_id: None,
            before_id: None,
            limit: 50,
            oldest_first: false,
        }
    }
}

impl EventQuery {
    /// The limit capped at [`MAX_EVENTS`].
    #[must_use]
    pub fn clamped_limit(&self) -> usize {
        self.limit.min(MAX_EVENTS)
    }

    /// Whether `event`, stored with row id `id`, passes the query's filters (not its order or
    /// limit).
    #[must_use]
    pub fn matches(&self, id: i64, event: &AuditEvent) -> bool {
        self.key_id.is_none_or(|k| event.key_id == Some(k))
            && self.outcome.is_none_or(|o| event.outcome == Some(o))
            && self.reason.is_none_or(|r| event.reason == Some(r))
            && self.action.is_none_or(|a| event.action == a)
            && self.since.is_none_or(|since| event.at >= since)
            && self.after_id.is_none_or(|after| id > after)
            && self.before_id.is_none_or(|before| id < before)
    }
}

/// An event as stored, with its row id (ids only grow; see [`EventQuery::after_id`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The row id.
    pub id: i64,
    /// The event; times are kept to the microsecond.
    pub event: AuditEvent,
}

/// One key's requests on one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageDay {
    /// The key.
    pub key_id: KeyId,
    /// The day's start (00:00 UTC).
    pub day: SystemTime,
    /// Requests let in.
    pub allowed: u64,
    /// Requests refused.
    pub denied: u64,
}

/// An audit trail that can be read back: the events by filter, and requests per key per UTC
/// day. keygate-sqlx's `SqlAuditSink` keeps both in the key store's database;
/// [`MemoryAuditTrail`] in memory. Object safe (`Arc<dyn AuditTrail>`).
///
/// Usage counts only requests of keys that exist: a denial folded by the audit pipeline
/// ([`is_folded`]) is not counted.
#[async_trait]
pub trait AuditTrail: Send + Sync + 'static {
    /// Events matching `query`, at most [`EventQuery::clamped_limit`], ordered by id (newest
    /// first unless [`EventQuery::oldest_first`]).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the trail cannot be read.
    async fn events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError>;

    /// Requests per key per UTC day, from the day of `since` on (`key_id`: that key only),
    /// ordered by key id, then day.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the trail cannot be read.
    async fn usage(
        &self,
        key_id: Option<&KeyId>,
        since: SystemTime,
    ) -> Result<Vec<UsageDay>, StoreError>;
}

/// Days since 1970-01-01 (UTC) of `at` (0 before the epoch).
fn day_number(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / DAY_SECS)
}

/// An [`AuditSink`] that keeps the latest events (up to a capacity, oldest out first) and the
/// per-day usage counts in memory, and reads them back as an [`AuditTrail`]: for tests,
/// examples and services on the [`MemoryStore`](crate::MemoryStore). Clones share the trail.
#[derive(Debug, Clone)]
pub struct MemoryAuditTrail {
    inner: Arc<Mutex<Kept>>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Kept {
    events: VecDeque<StoredEvent>,
    next_id: i64,
    /// (key, day number) → (allowed, denied).
    usage: BTreeMap<(KeyId, u64), (u64, u64)>,
}

impl MemoryAuditTrail {
    /// Keeps up to 100 000 events.
    #[must_use]
    pub fn new() -> Self {
        Self::with_capacity(100_000)
    }

    /// Keeps up to `events` events (at least one); usage counts are kept whatever the number.
    #[must_use]
    pub fn with_capacity(events: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Kept {
                next_id: 1,
                ..Kept::default()
            })),
            capacity: events.max(1),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryAuditTrail {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl AuditSink for MemoryAuditTrail {
    async fn write(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        let mut kept = self.kept();
        for event in events {
            if let (Action::Request, Some(id), Some(outcome)) =
                (event.action, event.key_id, event.outcome)
                && !event.reason.is_some_and(is_folded)
            {
                let count = kept.usage.entry((id, day_number(event.at))).or_default();
                match outcome {
                    Outcome::Allowed => count.0 += 1,
                    Outcome::Denied => count.1 += 1,
                }
            }
            let id = kept.next_id;
            kept.next_id += 1;
            if kept.events.len() == self.capacity {
                kept.events.pop_front();
            }
            kept.events.push_back(StoredEvent {
                id,
                event: event.clone(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl AuditTrail for MemoryAuditTrail {
    async fn events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let kept = self.kept();
        let matching = |stored: &&StoredEvent| query.matches(stored.id, &stored.event);
        let limit = query.clamped_limit();
        Ok(if query.oldest_first {
            kept.events
                .iter()
                .filter(matching)
                .take(limit)
                .cloned()
                .collect()
        } else {
            kept.events
                .iter()
                .rev()
                .filter(matching)
                .take(limit)
                .cloned()
                .collect()
        })
    }

    async fn usage(
        &self,
        key_id: Option<&KeyId>,
        since: SystemTime,
    ) -> Result<Vec<UsageDay>, StoreError> {
        let first = day_number(since);
        Ok(self
            .kept()
            .usage
            .iter()
            .filter(|((key, day), _)| *day >= first && key_id.is_none_or(|k| k == key))
            .map(|(&(key_id, day), &(allowed, denied))| UsageDay {
                key_id,
                day: SystemTime::UNIX_EPOCH + Duration::from_secs(day * DAY_SECS),
                allowed,
                denied,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(at_secs: u64, key: KeyId, outcome: Outcome, reason: Option<Reason>) -> AuditEvent {
        AuditEvent::request(
            SystemTime::UNIX_EPOCH + Duration::from_secs(at_secs),
            outcome,
        )
        .key_id(Some(key))
        .reason(reason)
    }

    #[tokio::test]
    async fn events_filter_and_page_and_usage_counts_real_keys_per_day() {
        let trail = MemoryAuditTrail::with_capacity(4);
        let (a, b) = (KeyId::random(), KeyId::random());
        let day = 86_400 * 20_000;
        trail
            .write(&[
                request(day, a, Outcome::Allowed, None),
                request(day + 1, a, Outcome::Denied, Some(Reason::WrongSecret)),
                request(day + 2, b, Outcome::Denied, Some(Reason::UnknownKey)),
                request(day + DAY_SECS, a, Outcome::Allowed, None),
                AuditEvent::lifecycle(
                    SystemTime::UNIX_EPOCH + Duration::from_secs(day + DAY_SECS),
                    Action::Revoked,
                    a,
                ),
            ])
            .await
            .unwrap();
        // The oldest event went (capacity 4); ids keep growing.
        let all = trail.events(&EventQuery::default()).await.unwrap();
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), [5, 4, 3, 2]);
        let page = EventQuery {
            key_id: Some(a),
            before_id: Some(5),
            limit: 1,
            ..EventQuery::default()
        };
        let got = trail.events(&page).await.unwrap();
        assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), [4]);
        let revoked = EventQuery {
            action: Some(Action::Revoked),
            oldest_first: true,
            ..EventQuery::default()
        };
        assert_eq!(trail.events(&revoked).await.unwrap().len(), 1);

        let usage = trail
            .usage(None, SystemTime::UNIX_EPOCH + Duration::from_secs(day))
            .await
            .unwrap();
        let counts: Vec<(KeyId, u64, u64)> = usage
            .iter()
            .map(|u| (u.key_id, u.allowed, u.denied))
            .collect();
        // b's unknown-key denial is folded: no usage row for it.
        assert_eq!(counts, [(a, 1, 1), (a, 1, 0)]);
        let later = trail
            .usage(
                Some(&a),
                SystemTime::UNIX_EPOCH + Duration::from_secs(day + DAY_SECS),
            )
            .await
            .unwrap();
        assert_eq!(later.len(), 1);
        assert!(
            trail
                .usage(Some(&b), SystemTime::UNIX_EPOCH)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
