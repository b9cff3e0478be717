//! Reading the audit trail back: [`AuditTrail`] (events by filter, usage per key per day), and
//! [`MemoryAuditTrail`], a sink that keeps both in memory.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{Action, AuditError, AuditEvent, AuditSink, Outcome, is_folded};
use crate::key::KeyId;
use crate::rejection::Reason;
use crate::store::{KeyAdmin, KeyFilter, PageRequest, StoreError};

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

    /// [`AuditTrail::events`] of owner `owner`: the changes to the owner itself
    /// ([`Action::OwnerCreated`], `OwnerChanged`, `OwnerDeleted`, whose
    /// [`owner`](AuditEvent::owner) names it) and the events of the keys that belong to it (as
    /// the key store records them, including keys deleted since: a key never changes owner,
    /// and its tombstone keeps it, [`KeyAdmin::deleted_owner_keys`]): an owner's roll-up, as
    /// `keygate audit --owner` and the admin API's `GET /audit?owner=` show it. Callers that must tell an unknown owner apart check it
    /// first with [`owner_on_record`] (which also finds a deleted owner by its deletion).
    ///
    /// The default refuses ([`StoreError::Unsupported`]): a trail must know which keys an
    /// owner has. keygate-sqlx's `SqlAuditSink` reads the key store in its own database;
    /// [`MemoryAuditTrail`] the store given to [`MemoryAuditTrail::key_store`].
    ///
    /// # Errors
    /// [`StoreError::Unsupported`] (see above), [`StoreError::Unavailable`].
    async fn owner_events(
        &self,
        query: &EventQuery,
        owner: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let _ = (query, owner);
        Err(StoreError::Unsupported("reading the audit trail by owner"))
    }

    /// [`AuditTrail::usage`] of the keys that belong or belonged to owner `owner` (as for
    /// [`AuditTrail::owner_events`]), one row per key and day, ordered by key id, then day: sum them for the
    /// owner's total. Like [`AuditTrail::owner_events`], the default refuses.
    ///
    /// # Errors
    /// [`StoreError::Unsupported`], [`StoreError::Unavailable`].
    async fn owner_usage(
        &self,
        owner: &str,
        since: SystemTime,
    ) -> Result<Vec<UsageDay>, StoreError> {
        let _ = (owner, since);
        Err(StoreError::Unsupported("reading usage by owner"))
    }
}

/// Whether `owner` can be read by owner from `trail`: the key store has it, or the trail holds
/// its [`Action::OwnerDeleted`] event (a deleted owner's own events stay in the trail, and an
/// operator asks for them by its id). The check `keygate audit --owner` and the admin API's
/// `GET /audit?owner=` make first, so an id that never was an owner is an error, not an empty
/// answer.
///
/// # Errors
/// [`StoreError::OwnerNotFound`] when neither knows `owner`; the store's or the trail's
/// `Unavailable`.
pub async fn owner_on_record(
    admin: &dyn KeyAdmin,
    trail: &dyn AuditTrail,
    owner: &str,
) -> Result<(), StoreError> {
    let missing = match admin.get_owner(owner).await {
        Ok(_) => return Ok(()),
        Err(missing @ StoreError::OwnerNotFound(_)) => missing,
        Err(other) => return Err(other),
    };
    let deletion = EventQuery {
        action: Some(Action::OwnerDeleted),
        limit: 1,
        ..EventQuery::default()
    };
    match trail.owner_events(&deletion, owner).await {
        Ok(events) if !events.is_empty() => Ok(()),
        // Never deleted under audit, or a trail that cannot tell: the store's answer stands.
        Ok(_) | Err(StoreError::Unsupported(_)) => Err(missing),
        Err(other) => Err(other),
    }
}

/// Days since 1970-01-01 (UTC) of `at` (0 before the epoch).
fn day_number(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / DAY_SECS)
}

/// An [`AuditSink`] that keeps the latest events (up to a capacity, oldest out first) and the
/// per-day usage counts in memory, and reads them back as an [`AuditTrail`]: for tests,
/// examples and services on the [`MemoryStore`](crate::MemoryStore). Clones share the trail.
///
/// It reads by owner ([`AuditTrail::owner_events`], [`AuditTrail::owner_usage`]) once given
/// the key store with [`MemoryAuditTrail::key_store`].
#[derive(Clone)]
pub struct MemoryAuditTrail {
    inner: Arc<Mutex<Kept>>,
    capacity: usize,
    /// Where an owner's keys are looked up.
    keys: Option<Arc<dyn KeyAdmin>>,
}

impl std::fmt::Debug for MemoryAuditTrail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryAuditTrail")
            .field("capacity", &self.capacity)
            .field("key_store", &self.keys.is_some())
            .finish_non_exhaustive()
    }
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
            keys: None,
        }
    }

    /// Reads owners' keys from `store` (the one the verifiers writing here use), so the trail
    /// answers [`AuditTrail::owner_events`] and [`AuditTrail::owner_usage`]. Clones made
    /// before share the events but not the store.
    #[must_use]
    pub fn key_store(mut self, store: impl KeyAdmin) -> Self {
        self.keys = Some(Arc::new(store));
        self
    }

    /// The ids of owner `owner`'s keys: those the key store holds now, and those it deleted
    /// ([`KeyAdmin::deleted_owner_keys`]; none from a store that does not keep them).
    async fn owner_keys(&self, owner: &str) -> Result<HashSet<KeyId>, StoreError> {
        let Some(keys) = &self.keys else {
            return Err(StoreError::Unsupported(
                "reading by owner without a key store (MemoryAuditTrail::key_store)",
            ));
        };
        let mut ids: HashSet<KeyId> = match keys.deleted_owner_keys(owner).await {
            Ok(deleted) => deleted.into_iter().collect(),
            Err(StoreError::Unsupported(_)) => {
                // Said once per process: a wrapper that forgot to hand the call on would
                // otherwise lose the deleted keys' history silently.
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    tracing::warn!(target: "keygate", "the key store keeps no owners of deleted keys (KeyAdmin::deleted_owner_keys): owner roll-ups leave their requests and changes out");
                });
                HashSet::new()
            }
            Err(e) => return Err(e),
        };
        let filter = KeyFilter::default().owner(owner);
        let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
        loop {
            let got = keys.list(&filter, page).await?;
            ids.extend(got.keys.iter().map(|r| r.id));
            match got.next {
                Some(next) => page.after = Some(next),
                None => return Ok(ids),
            }
        }
    }

    /// The events matching `query` that pass `keep`, as [`AuditTrail::events`] orders and
    /// limits them.
    fn events_where(
        &self,
        query: &EventQuery,
        keep: impl Fn(&AuditEvent) -> bool,
    ) -> Vec<StoredEvent> {
        let kept = self.kept();
        let matching =
            |stored: &&StoredEvent| query.matches(stored.id, &stored.event) && keep(&stored.event);
        let limit = query.clamped_limit();
        if query.oldest_first {
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
        }
    }

    /// The usage days from the day of `since` on whose key passes `key`.
    fn usage_where(&self, since: SystemTime, key: impl Fn(&KeyId) -> bool) -> Vec<UsageDay> {
        let first = day_number(since);
        self.kept()
            .usage
            .iter()
            .filter(|((id, day), _)| *day >= first && key(id))
            .map(|(&(key_id, day), &(allowed, denied))| UsageDay {
                key_id,
                day: SystemTime::UNIX_EPOCH + Duration::from_secs(day * DAY_SECS),
                allowed,
                denied,
            })
            .collect()
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
        Ok(self.events_where(query, |_| true))
    }

    async fn usage(
        &self,
        key_id: Option<&KeyId>,
        since: SystemTime,
    ) -> Result<Vec<UsageDay>, StoreError> {
        Ok(self.usage_where(since, |key| key_id.is_none_or(|k| k == key)))
    }

    async fn owner_events(
        &self,
        query: &EventQuery,
        owner: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let keys = self.owner_keys(owner).await?;
        Ok(self.events_where(query, |event| {
            event.owner.as_deref() == Some(owner) || event.key_id.is_some_and(|k| keys.contains(&k))
        }))
    }

    async fn owner_usage(
        &self,
        owner: &str,
        since: SystemTime,
    ) -> Result<Vec<UsageDay>, StoreError> {
        let keys = self.owner_keys(owner).await?;
        Ok(self.usage_where(since, |key| keys.contains(key)))
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

    /// A store that keeps the default [`KeyAdmin::deleted_owner_keys`]: it forwards the
    /// required methods to a [`MemoryStore`](crate::MemoryStore) and nothing else.
    struct NoTombstoneOwners(crate::MemoryStore);

    #[async_trait]
    impl KeyAdmin for NoTombstoneOwners {
        async fn create(
            &self,
            key: crate::record::MintedKey,
        ) -> Result<crate::record::CreatedKey, StoreError> {
            self.0.create(key).await
        }
        async fn get(&self, id: &KeyId) -> Result<crate::KeyRecord, StoreError> {
            self.0.get(id).await
        }
        async fn list(
            &self,
            filter: &KeyFilter,
            page: PageRequest,
        ) -> Result<crate::store::KeyPage, StoreError> {
            self.0.list(filter, page).await
        }
        async fn apply(
            &self,
            id: &KeyId,
            change: crate::record::KeyChange,
        ) -> Result<crate::KeyRecord, StoreError> {
            self.0.apply(id, change).await
        }
        async fn rotate_with(
            &self,
            id: &KeyId,
            replacement: crate::record::MintedKey,
            rotation: crate::record::Rotation,
        ) -> Result<crate::record::RotatedKey, StoreError> {
            self.0.rotate_with(id, replacement, rotation).await
        }
        async fn delete(&self, id: &KeyId) -> Result<(), StoreError> {
            self.0.delete(id).await
        }
    }

    /// A store whose tombstones keep no owner says so (rather than answering "none"), and the
    /// trail then reads an owner's live keys only, as documented.
    #[tokio::test]
    async fn without_tombstone_owners_an_owner_reads_its_live_keys() {
        use crate::{Keyring, MemoryStore, NewKey};
        let store = NoTombstoneOwners(MemoryStore::new());
        assert!(matches!(
            store.deleted_owner_keys("acme").await,
            Err(StoreError::Unsupported(_))
        ));
        let keyring = Keyring::development("trail_test").unwrap();
        let mut ids = Vec::new();
        for _ in 0..2 {
            let minted = keyring.mint(NewKey::new("k").owner("acme")).unwrap();
            ids.push(store.create(minted).await.unwrap().record.id);
        }
        store.delete(&ids[1]).await.unwrap();
        let trail = MemoryAuditTrail::new().key_store(store);
        let events: Vec<_> = ids
            .iter()
            .map(|id| request(86_400, *id, Outcome::Allowed, None))
            .collect();
        trail.write(&events).await.unwrap();
        let got = trail
            .owner_events(&EventQuery::default(), "acme")
            .await
            .unwrap();
        assert_eq!(
            got.iter().map(|e| e.event.key_id).collect::<Vec<_>>(),
            [Some(ids[0])]
        );
    }

    #[tokio::test]
    async fn reads_by_owner_through_the_key_store_given() {
        use crate::{Keyring, MemoryStore, NewKey};
        let store = MemoryStore::new();
        let keyring = Keyring::development("trail_test").unwrap();
        let mut ids = Vec::new();
        for owner in ["acme", "acme", "globex"] {
            let minted = keyring.mint(NewKey::new("k").owner(owner)).unwrap();
            ids.push(store.create(minted).await.unwrap().record.id);
        }
        let (a1, a2, g) = (ids[0], ids[1], ids[2]);
        let day = 86_400 * 20_000;
        let events = [
            request(day, a1, Outcome::Allowed, None),
            request(day + 1, g, Outcome::Allowed, None),
            request(day + 2, a2, Outcome::Denied, Some(Reason::Revoked)),
            AuditEvent::lifecycle(
                SystemTime::UNIX_EPOCH + Duration::from_secs(day + 3),
                Action::Disabled,
                a1,
            ),
        ];
        let unlinked = MemoryAuditTrail::new();
        unlinked.write(&events).await.unwrap();
        assert!(matches!(
            unlinked.owner_events(&EventQuery::default(), "acme").await,
            Err(StoreError::Unsupported(_))
        ));
        assert!(matches!(
            unlinked.owner_usage("acme", SystemTime::UNIX_EPOCH).await,
            Err(StoreError::Unsupported(_))
        ));

        let trail = MemoryAuditTrail::new().key_store(store.clone());
        trail.write(&events).await.unwrap();
        let acme = trail
            .owner_events(&EventQuery::default(), "acme")
            .await
            .unwrap();
        assert_eq!(acme.iter().map(|e| e.id).collect::<Vec<_>>(), [4, 3, 1]);
        // The query's own filters apply too.
        let requests = EventQuery {
            action: Some(Action::Request),
            oldest_first: true,
            ..EventQuery::default()
        };
        let got = trail.owner_events(&requests, "acme").await.unwrap();
        assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 3]);
        let globex = trail
            .owner_events(&EventQuery::default(), "globex")
            .await
            .unwrap();
        assert_eq!(
            globex.iter().map(|e| e.event.key_id).collect::<Vec<_>>(),
            [Some(g)]
        );
        assert!(
            trail
                .owner_events(&EventQuery::default(), "nobody")
                .await
                .unwrap()
                .is_empty()
        );

        let usage = trail
            .owner_usage("acme", SystemTime::UNIX_EPOCH)
            .await
            .unwrap();
        let mut expected = vec![(a1, 1, 0), (a2, 0, 1)];
        expected.sort();
        let counts: Vec<(KeyId, u64, u64)> = usage
            .iter()
            .map(|u| (u.key_id, u.allowed, u.denied))
            .collect();
        assert_eq!(counts, expected);
        // A deleted key stays in its owner's roll-up (its tombstone keeps the owner), and
        // only in its owner's.
        store.delete(&a2).await.unwrap();
        store.delete(&g).await.unwrap();
        let after = trail
            .owner_usage("acme", SystemTime::UNIX_EPOCH)
            .await
            .unwrap();
        assert_eq!(after, usage);
        let acme_after = trail
            .owner_events(&EventQuery::default(), "acme")
            .await
            .unwrap();
        assert_eq!(
            acme_after.iter().map(|e| e.id).collect::<Vec<_>>(),
            [4, 3, 1]
        );
        let globex_after = trail
            .owner_events(&EventQuery::default(), "globex")
            .await
            .unwrap();
        assert_eq!(globex_after.iter().map(|e| e.id).collect::<Vec<_>>(), [2]);
    }
}
