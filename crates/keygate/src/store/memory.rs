use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use async_trait::async_trait;

use super::{
    KeyAdmin, KeyFilter, KeyPage, KeyRehash, KeyStore, MAX_OWNERS_PAGE, PageRequest, StoreError,
    StoreSettings,
};
use crate::clock::{Clock, SystemClock};
use crate::key::KeyId;
use crate::owner::{NewOwner, OwnerKeysChange, OwnerRecord, OwnerUpdate};
use crate::quota::{CounterState, QuotaLedger, QuotaSubject};
use crate::record::{CreatedKey, KeyChange, KeyRecord, MintedKey, RotatedKey, Rotation};

/// An in-process store: a map behind a lock. Clones share the same keys.
///
/// For tests, examples and single-process tools; keys are lost when the process exits.
/// Deleted ids are remembered so they are never reused.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    inner: Arc<RwLock<Inner>>,
    clock: Arc<dyn Clock>,
}

#[derive(Debug, Default)]
struct Inner {
    keys: BTreeMap<KeyId, KeyRecord>,
    /// Deleted ids (never reused), with the owner each key had.
    deleted: BTreeMap<KeyId, Option<String>>,
    /// Deployment settings (see [`StoreSettings`]), written on first use.
    settings: BTreeMap<String, String>,
    /// Owner records by id.
    owners: BTreeMap<String, OwnerRecord>,
    /// Saved quota counters (see [`QuotaLedger`]): about a thousand saved a second under load,
    /// so hashed with foldhash (randomly seeded; subjects are existing keys and owners) rather
    /// than SipHash.
    quota_counters: HashMap<QuotaSubject, CounterState, foldhash::fast::RandomState>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    #[must_use]
    pub fn new() -> Self {
        Self::with_clock(SystemClock)
    }

    /// An empty store whose change times and state filters use `clock`.
    #[must_use]
    pub fn with_clock(clock: impl Clock) -> Self {
        Self {
            inner: Arc::default(),
            clock: Arc::new(clock),
        }
    }

    /// Number of keys stored.
    #[must_use]
    pub fn len(&self) -> usize {
        self.read(|inner| inner.keys.len())
    }

    /// Whether the store holds no keys.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read<T>(&self, f: impl FnOnce(&Inner) -> T) -> T {
        f(&self.inner.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn write<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.write().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Keeps an in-process meter's counters for as long as the store lives (a restarted meter on
/// the same store starts from them; nothing survives the process).
#[async_trait]
impl QuotaLedger for MemoryStore {
    async fn load_counters(
        &self,
        subjects: &[QuotaSubject],
    ) -> Result<Vec<(QuotaSubject, CounterState)>, StoreError> {
        Ok(self.read(|inner| {
            subjects
                .iter()
                .filter_map(|s| inner.quota_counters.get(s).map(|state| (*s, *state)))
                .collect()
        }))
    }

    async fn save_counters(
        &self,
        counters: &[(QuotaSubject, CounterState)],
    ) -> Result<(), StoreError> {
        self.write(|inner| inner.quota_counters.extend(counters.iter().copied()));
        Ok(())
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    fn quota_ledger(self: Arc<Self>) -> Option<Arc<dyn QuotaLedger>> {
        Some(self)
    }

    async fn find(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.read(|inner| inner.keys.get(id).cloned()))
    }

    async fn record_last_used(&self, used: &[(KeyId, SystemTime)]) -> Result<(), StoreError> {
        self.write(|inner| {
            for (id, at) in used {
                if let Some(record) = inner.keys.get_mut(id)
                    && record.last_used_at.is_none_or(|last| last < *at)
                {
                    record.last_used_at = Some(*at);
                }
            }
        });
        Ok(())
    }

    async fn settings(&self) -> Result<Option<StoreSettings>, StoreError> {
        Ok(Some(self.read(|inner| {
            StoreSettings::from_entries(inner.settings.clone())
        })))
    }

    async fn add_settings(&self, entries: &[(String, String)]) -> Result<(), StoreError> {
        self.write(|inner| {
            for (name, value) in entries {
                inner
                    .settings
                    .entry(name.clone())
                    .or_insert_with(|| value.clone());
            }
        });
        Ok(())
    }

    async fn replace_policy_settings(
        &self,
        entries: &[(String, String)],
    ) -> Result<(), StoreError> {
        super::check_policy_settings(entries)?;
        self.write(|inner| {
            inner
                .settings
                .retain(|name, _| !name.starts_with(crate::policy::POLICY_SETTING_PREFIX));
            for (name, value) in entries {
                inner.settings.insert(name.clone(), value.clone());
            }
        });
        Ok(())
    }

    async fn rehash(&self, keys: &[KeyRehash]) -> Result<(), StoreError> {
        self.write(|inner| {
            for rehash in keys {
                if let Some(record) = inner.keys.get_mut(&rehash.id)
                    && record.pepper_version == rehash.from_version
                {
                    record.digest = rehash.digest;
                    record.pepper_version = rehash.to_version;
                }
            }
        });
        Ok(())
    }

    async fn find_owner(&self, id: &str) -> Result<Option<OwnerRecord>, StoreError> {
        Ok(self.read(|inner| inner.owners.get(id).cloned()))
    }
}

#[async_trait]
impl KeyAdmin for MemoryStore {
    async fn create(&self, key: MintedKey) -> Result<CreatedKey, StoreError> {
        let record = key.record().clone();
        let id = record.id;
        let owner_created = self.write(|inner| {
            if inner.keys.contains_key(&id) || inner.deleted.contains_key(&id) {
                return Err(StoreError::Conflict {
                    id,
                    reason: "a key with this id exists or existed",
                });
            }
            // A key naming an owner the store does not know creates its bare record.
            let owner_created = match &record.owner {
                Some(owner) if !inner.owners.contains_key(owner) => {
                    let bare = OwnerRecord::bare(owner, record.created_at);
                    inner.owners.insert(owner.clone(), bare);
                    true
                }
                _ => false,
            };
            inner.keys.insert(id, record.clone());
            Ok(owner_created)
        })?;
        Ok(key.into_created_with_owner(record, owner_created))
    }

    async fn get(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
        self.read(|inner| inner.keys.get(id).cloned())
            .ok_or(StoreError::NotFound(*id))
    }

    async fn list(&self, filter: &KeyFilter, page: PageRequest) -> Result<KeyPage, StoreError> {
        let now = self.clock.now();
        let limit = page.clamped_limit();
        let needle = filter.name_contains.as_deref().map(str::to_lowercase);
        Ok(self.read(|inner| {
            let range = match page.after {
                Some(after) => inner
                    .keys
                    .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
                None => inner.keys.range(..),
            };
            let keys: Vec<KeyRecord> = range
                .map(|(_, record)| record)
                .filter(|r| filter.owner.is_none() || r.owner == filter.owner)
                .filter(|r| filter.state.is_none_or(|s| r.state(now) == s))
                .filter(|r| filter.prefix.as_deref().is_none_or(|p| r.prefix == p))
                .filter(|r| filter.lineage.is_none_or(|l| r.lineage == l))
                .filter(|r| {
                    needle
                        .as_deref()
                        .is_none_or(|n| r.name.to_lowercase().contains(n))
                })
                .take(limit + 1)
                .cloned()
                .collect();
            KeyPage::from_overfetch(keys, limit)
        }))
    }

    async fn apply(&self, id: &KeyId, change: KeyChange) -> Result<KeyRecord, StoreError> {
        change.validate()?;
        let now = self.clock.now();
        self.write(|inner| {
            let record = inner.keys.get_mut(id).ok_or(StoreError::NotFound(*id))?;
            // Apply to a copy so a refused change leaves the record untouched.
            let mut updated = record.clone();
            let top_up = matches!(change, KeyChange::AddCredits(_));
            change
                .apply_to(&mut updated, now)
                .map_err(|refused| StoreError::refused(*id, refused))?;
            *record = updated.clone();
            if top_up {
                // Every key of the lineage spends one balance: they carry one total.
                for other in inner.keys.values_mut() {
                    if other.lineage == updated.lineage && other.id != updated.id {
                        other.quota_granted = updated.quota_granted;
                        other.updated_at = now;
                    }
                }
            }
            Ok(updated)
        })
    }

    async fn rotate_with(
        &self,
        id: &KeyId,
        replacement: MintedKey,
        rotation: Rotation,
    ) -> Result<RotatedKey, StoreError> {
        let now = self.clock.now();
        let (old, new) = self.write(|inner| {
            let new_id = replacement.record().id;
            if inner.keys.contains_key(&new_id) || inner.deleted.contains_key(&new_id) {
                return Err(StoreError::Conflict {
                    id: new_id,
                    reason: "a key with this id exists or existed",
                });
            }
            let record = inner.keys.get_mut(id).ok_or(StoreError::NotFound(*id))?;
            let mut old = record.clone();
            let new = rotation
                .apply_to(&mut old, replacement.record(), now)
                .map_err(|refused| StoreError::refused(*id, refused))?;
            *record = old.clone();
            inner.keys.insert(new_id, new.clone());
            Ok((old, new))
        })?;
        Ok(RotatedKey {
            old,
            new: replacement.into_created(new),
        })
    }

    async fn delete(&self, id: &KeyId) -> Result<(), StoreError> {
        self.write(|inner| {
            let record = inner.keys.remove(id).ok_or(StoreError::NotFound(*id))?;
            inner.deleted.insert(*id, record.owner);
            Ok(())
        })
    }

    async fn create_owner(&self, owner: NewOwner) -> Result<OwnerRecord, StoreError> {
        let record = owner.into_record(self.clock.now())?;
        self.write(|inner| {
            if inner.owners.contains_key(&record.id) {
                return Err(StoreError::owner_exists(&record.id));
            }
            inner.owners.insert(record.id.clone(), record.clone());
            Ok(record)
        })
    }

    async fn get_owner(&self, id: &str) -> Result<OwnerRecord, StoreError> {
        self.read(|inner| inner.owners.get(id).cloned())
            .ok_or_else(|| StoreError::OwnerNotFound(id.to_owned()))
    }

    async fn list_owners(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OwnerRecord>, StoreError> {
        let limit = limit.clamp(1, MAX_OWNERS_PAGE);
        Ok(self.read(|inner| {
            inner
                .owners
                .values()
                .filter(|o| after.is_none_or(|after| o.id.as_str() > after))
                .take(limit)
                .cloned()
                .collect()
        }))
    }

    async fn update_owner(&self, id: &str, update: OwnerUpdate) -> Result<OwnerRecord, StoreError> {
        update.validate()?;
        let now = self.clock.now();
        self.write(|inner| {
            let record = inner
                .owners
                .get_mut(id)
                .ok_or_else(|| StoreError::OwnerNotFound(id.to_owned()))?;
            update
                .apply_to(record, now)
                .map_err(|refused| StoreError::owner_refused(id, refused))?;
            Ok(record.clone())
        })
    }

    async fn delete_owner(&self, id: &str) -> Result<(), StoreError> {
        self.write(|inner| {
            if !inner.owners.contains_key(id) {
                return Err(StoreError::OwnerNotFound(id.to_owned()));
            }
            if inner.keys.values().any(|k| k.owner.as_deref() == Some(id)) {
                return Err(StoreError::owner_has_keys(id));
            }
            inner.owners.remove(id);
            Ok(())
        })
    }

    async fn change_owner_keys(
        &self,
        id: &str,
        change: OwnerKeysChange,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let now = self.clock.now();
        self.write(|inner| {
            if !inner.owners.contains_key(id) {
                return Err(StoreError::OwnerNotFound(id.to_owned()));
            }
            let mut changed = Vec::new();
            for record in inner.keys.values_mut() {
                if record.owner.as_deref() == Some(id) && change.applies_to(record) {
                    change
                        .key_change()
                        .apply_to(record, now)
                        .map_err(|refused| StoreError::refused(record.id, refused))?;
                    changed.push(record.clone());
                }
            }
            Ok(changed)
        })
    }

    async fn deleted_owner_keys(&self, id: &str) -> Result<Vec<KeyId>, StoreError> {
        Ok(self.read(|inner| {
            inner
                .deleted
                .iter()
                .filter(|(_, owner)| owner.as_deref() == Some(id))
                .map(|(key, _)| *key)
                .collect()
        }))
    }
}
