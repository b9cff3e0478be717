//! Key stores: the read path ([`KeyStore`]) and management ([`KeyAdmin`]).
//!
//! Both traits are object safe (`Arc<dyn KeyStore>`), built with `#[async_trait]`.
//! [`MemoryStore`] implements both, for tests and examples; `keygate-sqlx` adds SQLite and
//! PostgreSQL.
//!
//! # Errors
//! [`StoreError`] separates what the caller did wrong ([`StoreError::NotFound`],
//! [`StoreError::InvalidInput`], [`StoreError::Conflict`]) from the store being unreachable
//! ([`StoreError::Unavailable`]). The verifier turns `Unavailable` into 503, never 401.

mod memory;
mod settings;

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use ipnet::IpNet;

pub use memory::MemoryStore;
pub use settings::{
    DEVELOPMENT_SETTING, ENVIRONMENT_SETTING_PREFIX, PREFIX_SETTING, PepperCheck, SettingsError,
    StoreSettings, check_keyring, check_peppers, check_policy_settings, environment_setting,
    fingerprint_setting,
};

use crate::identity::Metadata;
use crate::key::KeyId;
use crate::owner::{NewOwner, OwnerKeysChange, OwnerRecord, OwnerUpdate};
use crate::pepper::Digest;
use crate::rate::RateLimit;
use crate::record::{
    ChangeRefused, CreatedKey, InvalidInput, KeyChange, KeyRecord, KeyState, MintedKey, RotatedKey,
    Rotation,
};
use crate::scope::Scope;

/// A boxed error from a store's driver.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No key has this id.
    #[error("no key with id {0}")]
    NotFound(KeyId),
    /// The input was refused before reaching storage.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// The change conflicts with the key's state (e.g. enabling a revoked key) or an existing id.
    #[error("key {id}: {reason}")]
    Conflict {
        /// The key concerned.
        id: KeyId,
        /// What conflicts, in words.
        reason: &'static str,
    },
    /// No owner has this id.
    #[error("no owner with id {0:?}")]
    OwnerNotFound(String),
    /// The change conflicts with an owner's state: the id exists, or keys still belong to it.
    #[error("owner {owner:?}: {reason}")]
    OwnerConflict {
        /// The owner concerned.
        owner: String,
        /// What conflicts, in words.
        reason: &'static str,
    },
    /// This store does not support the operation (e.g. a store that keeps no owner records).
    #[error("this key store does not support {0}")]
    Unsupported(&'static str),
    /// The store could not be reached or failed; the operation may be retried.
    #[error("key store unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The deployment's [lifetime policy](crate::policy) refuses the change (raised by
    /// [`Admin`](crate::Admin), never by a store); nothing was changed.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyViolation),
}

impl StoreError {
    /// Wraps a driver error as [`StoreError::Unavailable`].
    pub fn unavailable(error: impl Into<BoxError>) -> Self {
        Self::Unavailable(error.into())
    }

    /// The [`StoreError::Conflict`] for a change `id`'s state refuses.
    #[must_use]
    pub fn refused(id: KeyId, refused: ChangeRefused) -> Self {
        Self::Conflict {
            id,
            reason: refused.reason(),
        }
    }

    /// The [`StoreError::OwnerConflict`] for a change owner `id`'s state refuses.
    #[must_use]
    pub fn owner_refused(id: &str, refused: crate::owner::OwnerChangeRefused) -> Self {
        Self::OwnerConflict {
            owner: id.to_owned(),
            reason: refused.reason(),
        }
    }

    /// The [`StoreError::OwnerConflict`] of creating owner `id`, which exists.
    #[must_use]
    pub fn owner_exists(id: &str) -> Self {
        Self::OwnerConflict {
            owner: id.to_owned(),
            reason: "an owner with this id exists",
        }
    }

    /// The [`StoreError::OwnerConflict`] of deleting owner `id`, which still has keys.
    #[must_use]
    pub fn owner_has_keys(id: &str) -> Self {
        Self::OwnerConflict {
            owner: id.to_owned(),
            reason: "keys still belong to this owner; delete them first",
        }
    }

    /// Whether this is [`StoreError::Unavailable`].
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// The hot-path read: find a key's record by id.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// The record for `id`, `Ok(None)` when no key has that id.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot answer. Never "not found".
    async fn find(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError>;

    /// Records when keys were last used: for each `(id, at)`, sets the key's
    /// [`KeyRecord::last_used_at`] to `at` unless it already holds a later time. Ids with no key
    /// are skipped. This is not a management change: `updated_at` stays as it is.
    ///
    /// Called by the verifier's write-behind flusher, in batches, at most once per key per flush
    /// interval. The default does nothing, for stores that do not track usage.
    ///
    /// # Errors
    /// `Unavailable`; the verifier keeps the batch and retries at the next flush.
    async fn record_last_used(&self, used: &[(KeyId, SystemTime)]) -> Result<(), StoreError> {
        let _ = used;
        Ok(())
    }

    /// This store's quota counter table, for an in-process quota meter to persist its counters
    /// to, write-behind ([`InProcessMeter`](crate::quota::InProcessMeter)); `None` (the
    /// default) for a store that keeps none: counters then live in memory only.
    fn quota_ledger(self: Arc<Self>) -> Option<Arc<dyn crate::quota::QuotaLedger>> {
        None
    }

    /// The deployment settings this store recorded (see [`StoreSettings`]); `None` for a store
    /// that keeps none (the default), whose peppers and key prefix are then not checked.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn settings(&self) -> Result<Option<StoreSettings>, StoreError> {
        Ok(None)
    }

    /// Records each `(name, value)` whose name is not recorded yet; a recorded setting is
    /// never overwritten (several processes may start at once: the first write wins, and
    /// [`check_peppers`] reads the result back). The default does nothing.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn add_settings(&self, entries: &[(String, String)]) -> Result<(), StoreError> {
        let _ = entries;
        Ok(())
    }

    /// Replaces the deployment's policy settings (names starting with
    /// [`POLICY_SETTING_PREFIX`](crate::policy::POLICY_SETTING_PREFIX), `policy.`) with
    /// `entries`, in one step: every recorded `policy.*` setting is removed, then `entries`
    /// are recorded. The only way a setting changes: peppers, prefixes and the development
    /// mark can never be overwritten through it. Use
    /// [`write_policy`](crate::policy::write_policy), which validates the policy first.
    ///
    /// The default refuses (`Unavailable`): a store that keeps no settings cannot hold a
    /// policy.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] ([`InvalidInput::SettingName`]) when a name does not start
    /// with `policy.`, with nothing written; `Unavailable`.
    async fn replace_policy_settings(
        &self,
        entries: &[(String, String)],
    ) -> Result<(), StoreError> {
        check_policy_settings(entries)?;
        Err(StoreError::unavailable(
            "this key store keeps no settings: it cannot hold a lifetime policy",
        ))
    }

    /// Re-hashes keys under the current pepper: for each [`KeyRehash`], sets the key's digest
    /// and pepper version to the new ones if the key is still under `from_version` (otherwise,
    /// or when the key is gone, skips it). Not a management change: `updated_at` stays.
    ///
    /// Called by the verifier's write-behind flusher, batched with last-used times, after a
    /// key stored under an older pepper verified. The default does nothing (keys then stay
    /// under their old pepper, which must stay configured).
    ///
    /// # Errors
    /// `Unavailable`; the verifier keeps the batch and retries at the next flush.
    async fn rehash(&self, keys: &[KeyRehash]) -> Result<(), StoreError> {
        let _ = keys;
        Ok(())
    }

    /// The record of owner `id`, `Ok(None)` when there is none. The verifier reads it when it
    /// caches a key that has an owner, for the owner's shared rate limit. The default (a
    /// store that keeps no owner records) answers `None`: no owner limit applies.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn find_owner(&self, id: &str) -> Result<Option<OwnerRecord>, StoreError> {
        let _ = id;
        Ok(None)
    }

    /// The record for `id` with its owner's rate limit and quota ([`OwnerLimits`]; empty: no
    /// owner, or an owner with neither): what the verifier reads on a cache miss. The default
    /// calls [`KeyStore::find`], then [`KeyStore::find_owner`] for a key that has an owner;
    /// the SQL stores read both in one statement.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn find_with_owner_limit(
        &self,
        id: &KeyId,
    ) -> Result<Option<(KeyRecord, OwnerLimits)>, StoreError> {
        let Some(record) = self.find(id).await? else {
            return Ok(None);
        };
        let limits = match record.owner.as_deref() {
            Some(owner) => self
                .find_owner(owner)
                .await?
                .map(|o| {
                    OwnerLimits::new(o.rate_limit, o.quota)
                        .with_limits(o.limits)
                        .with_quota_granted(o.quota_granted)
                })
                .unwrap_or_default(),
            None => OwnerLimits::default(),
        };
        Ok(Some((record, limits)))
    }
}

/// What a key's owner imposes on all its keys, read with the key
/// ([`KeyStore::find_with_owner_limit`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OwnerLimits {
    /// The owner's shared rate limit.
    pub rate_limit: Option<RateLimit>,
    /// The owner's shared quota.
    pub quota: Option<crate::quota::Quota>,
    /// The owner's shared named limits.
    pub limits: crate::rate::NamedLimits,
    /// The credits added to the owner's shared credit balance in all
    /// ([`OwnerRecord::quota_granted`]).
    pub quota_granted: u64,
}

impl OwnerLimits {
    /// An owner's rate limit and quota.
    #[must_use]
    pub fn new(rate_limit: Option<RateLimit>, quota: Option<crate::quota::Quota>) -> Self {
        Self {
            rate_limit,
            quota,
            limits: crate::rate::NamedLimits::new(),
            quota_granted: 0,
        }
    }

    /// The same with the owner's named limits.
    #[must_use]
    pub fn with_limits(mut self, limits: crate::rate::NamedLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The same with the credits added to the owner's shared balance in all.
    #[must_use]
    pub fn with_quota_granted(mut self, granted: u64) -> Self {
        self.quota_granted = granted;
        self
    }
}

/// One key to move to the current pepper, for [`KeyStore::rehash`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyRehash {
    /// The key.
    pub id: KeyId,
    /// The pepper version the key must still be under.
    pub from_version: u32,
    /// The new pepper version.
    pub to_version: u32,
    /// The key's digest under the new pepper.
    pub digest: Digest,
}

impl KeyRehash {
    /// Moves key `id` from `from_version` to `to_version`, with `digest` made under the latter.
    #[must_use]
    pub fn new(id: KeyId, from_version: u32, to_version: u32, digest: Digest) -> Self {
        Self {
            id,
            from_version,
            to_version,
            digest,
        }
    }
}

/// Which keys [`KeyAdmin::list`] returns: every filter set must hold (the default lists all).
///
/// Built from the default with the builder methods, or by setting the public fields:
///
/// ```
/// use keygate::{KeyFilter, KeyState};
/// let filter = KeyFilter::default()
///     .owner("team-billing")
///     .state(KeyState::Active)
///     .prefix("acme_test");
/// assert_eq!(filter.prefix.as_deref(), Some("acme_test"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyFilter {
    /// Only keys of this owner.
    pub owner: Option<String>,
    /// Only keys in this state (at the store's current time); `None` for all.
    pub state: Option<KeyState>,
    /// Only keys whose name contains this text, case-insensitively.
    pub name_contains: Option<String>,
    /// Only keys minted with this prefix ([`KeyRecord::prefix`]): one environment's keys (see
    /// [`Keyring::environment`](crate::Keyring::environment) for an environment's prefix).
    pub prefix: Option<String>,
    /// Only keys of this rotation lineage ([`KeyRecord::lineage`](crate::KeyRecord::lineage)):
    /// a key and the keys that replaced it or that it replaced.
    pub lineage: Option<KeyId>,
}

impl KeyFilter {
    /// Only keys of owner `owner`.
    #[must_use]
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Only keys in `state` (at the store's current time).
    #[must_use]
    pub fn state(mut self, state: KeyState) -> Self {
        self.state = Some(state);
        self
    }

    /// Only keys whose name contains `text`, case-insensitively.
    #[must_use]
    pub fn name_contains(mut self, text: impl Into<String>) -> Self {
        self.name_contains = Some(text.into());
        self
    }

    /// Only keys minted with `prefix` (an environment's, like `acme_test`).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Only keys of lineage `lineage` (the id of the lineage's first key).
    #[must_use]
    pub fn lineage(mut self, lineage: KeyId) -> Self {
        self.lineage = Some(lineage);
        self
    }
}

/// Most owners one [`KeyAdmin::list_owners`] call returns.
pub const MAX_OWNERS_PAGE: usize = 1000;

/// One page request for [`KeyAdmin::list`]: keyset paging by id, so pages are stable while
/// keys are created or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Return keys with ids strictly after this one (the previous page's `next`).
    pub after: Option<KeyId>,
    /// At most this many keys (clamped to 1..=[`PageRequest::MAX_LIMIT`]).
    pub limit: usize,
}

impl PageRequest {
    /// Largest page size.
    pub const MAX_LIMIT: usize = 1000;

    /// The first page of `limit` keys.
    #[must_use]
    pub fn first(limit: usize) -> Self {
        Self { after: None, limit }
    }

    /// The limit clamped to 1..=[`PageRequest::MAX_LIMIT`].
    #[must_use]
    pub fn clamped_limit(&self) -> usize {
        self.limit.clamp(1, Self::MAX_LIMIT)
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self::first(100)
    }
}

/// One page of keys, ordered by id.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyPage {
    /// The keys.
    pub keys: Vec<KeyRecord>,
    /// Pass as [`PageRequest::after`] for the next page; `None` on the last page.
    pub next: Option<KeyId>,
}

impl KeyPage {
    /// A page from up to `limit + 1` keys fetched in id order: the extra key only says that
    /// another page follows, and `next` is then the last id kept. Stores fetch one more than
    /// [`PageRequest::clamped_limit`] and call this.
    #[must_use]
    pub fn from_overfetch(mut keys: Vec<KeyRecord>, limit: usize) -> Self {
        let next = if keys.len() > limit {
            keys.truncate(limit);
            keys.last().map(|r| r.id)
        } else {
            None
        };
        Self { keys, next }
    }
}

/// Key management. Creation takes a [`MintedKey`] (from [`Keyring::mint`](crate::Keyring::mint))
/// and hands its plaintext back exactly once.
///
/// Implementors provide `create`, `get`, `list`, `apply`, `rotate_with` and `delete`; the named
/// operations (`rename`, `revoke`, …) are provided on top of `apply`. Implementations must call
/// [`KeyChange::validate`] before applying and follow [`KeyChange::apply_to`]'s rules, and apply
/// [`Rotation::apply_to`] atomically in `rotate_with`. The workspace's conformance suite
/// (`tests/tests/store_conformance.rs`) shows what every store must do.
///
/// Manage keys through an [`Admin`](crate::Admin) (standalone, or from
/// [`Verifier::admin`](crate::Verifier::admin), which also evicts changed keys from the
/// verifier's cache at once): it records each change in the audit trail and publishes it.
#[async_trait]
pub trait KeyAdmin: Send + Sync + 'static {
    /// Stores a minted key and returns it with its plaintext, once.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if the id exists (ids are never reused), or `Unavailable`.
    async fn create(&self, key: MintedKey) -> Result<CreatedKey, StoreError>;

    /// The record of `id`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] or `Unavailable`.
    async fn get(&self, id: &KeyId) -> Result<KeyRecord, StoreError>;

    /// Keys matching `filter`, one page at a time, ordered by id.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn list(&self, filter: &KeyFilter, page: PageRequest) -> Result<KeyPage, StoreError>;

    /// Applies one change and returns the updated record.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::InvalidInput`], [`StoreError::Conflict`] (enable or
    /// disable a revoked key) or `Unavailable`.
    async fn apply(&self, id: &KeyId, change: KeyChange) -> Result<KeyRecord, StoreError>;

    /// Rotates key `id` to `replacement` (freshly minted; see [`Rotation::apply_to`] for the rules),
    /// in one atomic step: the successor is stored, linked to the old key, and the old key expires
    /// after the rotation's grace period (or is revoked at once for a zero grace).
    ///
    /// Stores never generate secrets: use [`Admin::rotate`](crate::Admin::rotate), which mints
    /// the replacement with its keyring, records the change and publishes it.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::Conflict`] when the old key is revoked, disabled
    /// or expired, or the replacement's id exists or existed; `Unavailable`.
    async fn rotate_with(
        &self,
        id: &KeyId,
        replacement: MintedKey,
        rotation: Rotation,
    ) -> Result<RotatedKey, StoreError>;

    /// Deletes a key for good. Its id is never reused.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] or `Unavailable`.
    async fn delete(&self, id: &KeyId) -> Result<(), StoreError>;

    /// How many keys (in any state) the store holds under each pepper version, by version, so
    /// an old pepper can be retired once none is left under it (`keygate peppers`). The default
    /// pages through [`KeyAdmin::list`]; SQL stores count in one query.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn pepper_versions(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        let mut counts = std::collections::BTreeMap::<u32, u64>::new();
        let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
        loop {
            let got = self.list(&KeyFilter::default(), page).await?;
            for key in &got.keys {
                *counts.entry(key.pepper_version).or_default() += 1;
            }
            match got.next {
                Some(next) => page.after = Some(next),
                None => break,
            }
        }
        Ok(counts.into_iter().collect())
    }

    /// Creates an owner record.
    ///
    /// The default (a store that keeps no owner records) refuses with
    /// [`StoreError::Unsupported`]; [`MemoryStore`] and the SQL stores keep owners.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`]; [`StoreError::OwnerConflict`] when the id exists;
    /// `Unavailable`.
    async fn create_owner(&self, owner: NewOwner) -> Result<OwnerRecord, StoreError> {
        let _ = owner;
        Err(StoreError::Unsupported("owner records"))
    }

    /// The record of owner `id`.
    ///
    /// # Errors
    /// [`StoreError::OwnerNotFound`], `Unsupported` (the default) or `Unavailable`.
    async fn get_owner(&self, id: &str) -> Result<OwnerRecord, StoreError> {
        let _ = id;
        Err(StoreError::Unsupported("owner records"))
    }

    /// Up to `limit` owners (clamped to 1..=[`MAX_OWNERS_PAGE`]) with ids after `after`,
    /// ordered by id (bytewise). Page on by passing the last id returned.
    ///
    /// # Errors
    /// `Unsupported` (the default) or `Unavailable`.
    async fn list_owners(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OwnerRecord>, StoreError> {
        let _ = (after, limit);
        Err(StoreError::Unsupported("owner records"))
    }

    /// Changes owner `id`'s record and returns it. A changed rate limit is announced for each
    /// of the owner's keys (their cached entries hold the owner limit), in the same
    /// transaction.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`], [`StoreError::OwnerNotFound`], `Unsupported` (the
    /// default) or `Unavailable`.
    async fn update_owner(&self, id: &str, update: OwnerUpdate) -> Result<OwnerRecord, StoreError> {
        let _ = (id, update);
        Err(StoreError::Unsupported("owner records"))
    }

    /// Deletes owner `id`'s record. Refused while keys (in any state) still belong to it:
    /// delete them first (revoked keys too: their records name the owner).
    ///
    /// # Errors
    /// [`StoreError::OwnerNotFound`]; [`StoreError::OwnerConflict`] while it has keys;
    /// `Unsupported` (the default) or `Unavailable`.
    async fn delete_owner(&self, id: &str) -> Result<(), StoreError> {
        let _ = id;
        Err(StoreError::Unsupported("owner records"))
    }

    /// Applies `change` to every key of owner `id` it applies to
    /// ([`OwnerKeysChange::applies_to`]), in one transaction, announcing each changed key in
    /// it; returns the changed records, ordered by id. Keys the change does not apply to are
    /// left alone (so a bulk action never fails on one revoked key).
    ///
    /// # Errors
    /// [`StoreError::OwnerNotFound`], `Unsupported` (the default) or `Unavailable`.
    async fn change_owner_keys(
        &self,
        id: &str,
        change: OwnerKeysChange,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let _ = (id, change);
        Err(StoreError::Unsupported("owner records"))
    }

    /// How many keys (in any state) belong to owner `id`. The default pages through
    /// [`KeyAdmin::list`].
    ///
    /// # Errors
    /// `Unavailable`.
    async fn owner_key_count(&self, id: &str) -> Result<u64, StoreError> {
        let filter = KeyFilter {
            owner: Some(id.to_owned()),
            ..KeyFilter::default()
        };
        let mut count = 0_u64;
        let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
        loop {
            let got = self.list(&filter, page).await?;
            count += got.keys.len() as u64;
            match got.next {
                Some(next) => page.after = Some(next),
                None => break,
            }
        }
        Ok(count)
    }

    /// The ids of owner `id`'s deleted keys ([`KeyAdmin::delete`]), ordered by id. A key
    /// never changes owner, and its tombstone keeps the owner, so the owner's audit roll-up
    /// ([`AuditTrail::owner_events`](crate::audit::AuditTrail::owner_events),
    /// [`owner_usage`](crate::audit::AuditTrail::owner_usage)) still finds the requests and
    /// changes of the keys it had, also once the owner itself is deleted.
    ///
    /// The default (a store whose tombstones keep no owner) answers [`StoreError::Unsupported`];
    /// [`MemoryStore`] and the SQL stores keep it (the SQL stores from their schema 14 on: a
    /// key deleted before is not found). A store that wraps another must hand this on, or its
    /// owners' roll-ups lose their deleted keys.
    ///
    /// # Errors
    /// `Unsupported` (the default) or `Unavailable`.
    async fn deleted_owner_keys(&self, id: &str) -> Result<Vec<KeyId>, StoreError> {
        let _ = id;
        Err(StoreError::Unsupported("the owners of deleted keys"))
    }

    /// Renames a key.
    ///
    /// # Errors
    /// As [`KeyAdmin::apply`].
    async fn rename(&self, id: &KeyId, name: &str) -> Result<KeyRecord, StoreError> {
        self.apply(id, KeyChange::Rename(name.to_owned())).await
    }

    /// Replaces a key's scopes.
    ///
    /// # Errors
    /// As [`KeyAdmin::apply`].
    async fn set_scopes(&self, id: &KeyId, scopes: Vec<Scope>) -> Result<KeyRecord, StoreError> {
        self.apply(id, KeyChange::SetScopes(scopes)).await
    }

    /// Sets or clears a key's expiry.
    ///
    /// # Errors
    /// As [`KeyAdmin::apply`].
    async fn set_expiry(
        &self,
        id: &KeyId,
        at: Option<SystemTime>,
    ) -> Result<KeyRecord, StoreError> {
        self.apply(id, KeyChange::SetExpiry(at)).await
    }

    /// Replaces a key's metadata.
    ///
    /// # Errors
    /// As [`KeyAdmin::apply`].
    async fn set_metadata(&self, id: &KeyId, metadata: Metadata) -> Result<KeyRecord, StoreError> {
        self.apply(id, KeyChange::SetMetadata(metadata)).await
    }

    /// Replaces a key's allowed client IP ranges.
    ///
    /// # Errors
    /// As [`KeyAdmin::apply`].
    async fn set_allowed_ips(&self, id: &KeyId, ips: Vec<IpNet>) -> Result<KeyRecord, StoreError> {
        self.apply(id, KeyChange::SetAllowedIps(ips)).await
    }

    /// Sets a key's rate limit, or clears it (`None`: the verifier's default applies).
    ///
    /// # Errors
    /// As [`KeyAdmin::apply`].
    async fn set_rate_limit(
        &self,
        id: &KeyId,
        limit: Option<RateLimit>,
    ) -> Result<KeyRecord, StoreError> {
        self.apply(id, KeyChange::SetRateLimit(limit)).await
    }

    /// Sets a key's [quota](crate::quota), or clears it (`None`: no key quota).
    ///
    /// # Errors
    /// As [`KeyAdmin::apply`].
    async fn set_quota(
        &self,
        id: &KeyId,
        quota: Option<crate::quota::Quota>,
    ) -> Result<KeyRecord, StoreError> {
        self.apply(id, KeyChange::SetQuota(quota)).await
    }

    /// Adds `credits` to a key's credit balance (a top-up, [`KeyChange::AddCredits`]): the
    /// record's [`quota_granted`](KeyRecord::quota_granted) grows by `credits` on every key of
    /// its lineage, and the verifiers add them to the balance once, when they next read the
    /// record (at once through the [`Admin`](crate::Admin) that made the change, else within
    /// the revocation bound).
    ///
    /// # Errors
    /// As [`KeyAdmin::apply`]: [`StoreError::InvalidInput`] for 0 or more than
    /// [`MAX_QUOTA`](crate::quota::MAX_QUOTA) credits, [`StoreError::Conflict`] when the key's
    /// own quota is not credits.
    async fn add_credits(&self, id: &KeyId, credits: u64) -> Result<KeyRecord, StoreError> {
        self.apply(id, KeyChange::AddCredits(credits)).await
    }

    /// Replaces a key's [named limits](crate::rate::NamedLimits) (empty: none).
    ///
    /// # Errors
    /// As [`KeyAdmin::apply`].
    async fn set_limits(
        &self,
        id: &KeyId,
        limits: crate::rate::NamedLimits,
    ) -> Result<KeyRecord, StoreError> {
        self.apply(id, KeyChange::SetLimits(limits)).await
    }

    /// Disables a key (reversible).
    ///
    /// # Errors
    /// As [`KeyAdmin::apply`].
    async fn disable(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
        self.apply(id, KeyChange::Disable).await
    }

    /// Enables a disabled key.
    ///
    /// # Errors
    /// As [`KeyAdmin::apply`]; `Conflict` for a revoked key.
    async fn enable(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
        self.apply(id, KeyChange::Enable).await
    }

    /// Revokes a key for good; it never authenticates again.
    ///
    /// # Errors
    /// As [`KeyAdmin::apply`].
    async fn revoke(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
        self.apply(id, KeyChange::Revoke).await
    }
}
