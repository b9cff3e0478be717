//! Key management: [`Admin`], on its own ([`Admin::builder`]) or through a verifier
//! ([`Verifier::admin`]), whose cache it then also evicts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::Verifier;
use super::pepper_check::PepperGate;
use crate::audit::{Action, AuditEvent, AuditSink, AuditStats, Auditor, PipelineConfig};
use crate::clock::{Clock, SystemClock};
use crate::invalidation::{Invalidated, Invalidation};
use crate::key::KeyId;
use crate::keyring::Keyring;
use crate::owner::{NewOwner, OwnerKeysChange, OwnerRecord, OwnerUpdate};
use crate::policy::LifetimePolicy;
use crate::quota::{QuotaBalance, QuotaLine, QuotaMeter, QuotaUsage};
use crate::record::{CreatedKey, KeyChange, KeyRecord, MintedKey, NewKey, RotatedKey, Rotation};
use crate::store::{KeyAdmin, KeyFilter, KeyPage, KeyStore, PageRequest, StoreError};

/// Manages keys in a store: every [`KeyAdmin`] operation, plus an [audit](crate::audit) event
/// per change and the change published on an [invalidation](crate::invalidation) channel, so
/// the services' verifiers drop their cached copy at once.
///
/// Contents: [getting one](#getting-one), [what a change does](#what-a-change-does),
/// [minting](#minting). Cheap to clone (clones share everything).
///
/// # Getting one
/// - [`Admin::builder`]: on its own, from the store, an optional keyring (to create and rotate
///   keys), audit sinks and an invalidation channel. For tools and admin services that verify
///   no key themselves (the `keygate` CLI, `keygate-admin`).
/// - [`Verifier::admin`]: through a verifier, with its store, keyring, clock, audit pipeline
///   and invalidation channel; a change also evicts the key from that verifier's own cache,
///   so the very next request in this process sees it.
///
/// ```
/// use keygate::{Admin, KeyAdmin, Keyring, MemoryStore, NewKey};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryStore::new();
/// let admin = Admin::builder(store.clone())
///     .keyring(Keyring::development("acme_test")?)
///     .build()
///     .actor("ops-alice");
/// let created = admin.create_key(NewKey::new("billing")).await?;
/// admin.revoke(&created.record.id).await?;
/// admin.flush_audit().await; // before exiting
/// # Ok(())
/// # }
/// ```
///
/// # What a change does
/// Every [`KeyAdmin`] method is available (`rename`, `revoke`, `disable`, …). After a change
/// (or a store failure, when the change may have happened), the handle
/// 1. evicts the key from the verifier's cache, when it came from [`Verifier::admin`];
/// 2. publishes the key's id on the invalidation channel, unless the store publishes its
///    changes itself ([`Invalidation::published_by_store`]). A failed publish is retried
///    twice, then logged and counted ([`Admin::failed_publishes`]): the change stands, and
///    other instances see it within their cache TTL;
/// 3. records one audit event (created, renamed, …, rotated, revoked, deleted) naming the
///    actor given with [`Admin::actor`], when the change succeeded.
///
/// # Minting
/// [`Admin::create_key`] mints and stores a new key in one step, and [`Admin::rotate`]
/// replaces a key with a fresh one, both with the handle's keyring, whose peppers are first
/// checked against the store's settings (see [`check_peppers`](crate::store::check_peppers)).
/// A standalone handle built without a keyring changes and deletes keys but refuses to
/// create or rotate them.
///
/// # Lifetime policy
/// Creates ([`KeyAdmin::create`], [`Admin::create_key`]), expiry changes
/// ([`KeyAdmin::set_expiry`], [`KeyChange::SetExpiry`], clearing included) and rotations
/// ([`Admin::rotate`], [`KeyAdmin::rotate_with`]) go through the deployment's
/// [lifetime policy](crate::policy), read from the store's settings at each of these
/// operations (so a changed policy applies at once in every process): a missing expiry gets
/// the default lifetime, and a change the policy refuses fails with [`StoreError::Policy`],
/// naming the rule, with nothing changed. Canary keys are exempt.
#[derive(Clone)]
pub struct Admin {
    source: Source,
    actor: Option<Arc<str>>,
    /// Changes this handle and its clones could not publish.
    failed_publishes: Arc<AtomicU64>,
}

#[derive(Clone)]
enum Source {
    /// The verifier's store, keyring, clock, audit pipeline and channel; its cache is evicted.
    Verifier(Verifier),
    /// A handle of its own.
    Own(Arc<Parts>),
}

struct Parts {
    keyring: Option<Keyring>,
    store: Arc<dyn KeyStore>,
    admin: Arc<dyn KeyAdmin>,
    clock: Arc<dyn Clock>,
    auditor: Auditor,
    channel: Option<Arc<dyn Invalidation>>,
    pepper_gate: PepperGate,
    /// The services' quota meter, for balance read-outs; `None`: read the store's saved
    /// counters.
    quota_meter: Option<Arc<dyn QuotaMeter>>,
}

/// The error of a standalone [`Admin`] asked to mint without a keyring: a misconfiguration,
/// answered as [`StoreError::Unavailable`] (the operation cannot be done here).
#[derive(Debug, thiserror::Error)]
#[error(
    "this keygate::Admin has no keyring: build it with AdminBuilder::keyring to create or rotate keys"
)]
pub struct NoKeyring;

impl Admin {
    /// Starts configuring a standalone management handle over `store`.
    pub fn builder<S>(store: S) -> AdminBuilder
    where
        S: KeyStore + KeyAdmin,
    {
        let store = Arc::new(store);
        AdminBuilder {
            store: store.clone(),
            admin: store,
            keyring: None,
            clock: Arc::new(SystemClock),
            audit_sinks: Vec::new(),
            channel: None,
            quota_meter: None,
        }
    }

    pub(crate) fn new(verifier: Verifier) -> Self {
        Self {
            source: Source::Verifier(verifier),
            actor: None,
            failed_publishes: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The same handle, recording `actor` (a user or service name, or an admin key's id) in
    /// its audit events.
    #[must_use]
    pub fn actor(mut self, actor: &str) -> Self {
        self.actor = Some(crate::audit::label(actor.as_bytes()));
        self
    }

    /// The keyring new keys are minted with: the verifier's, or the one given to
    /// [`AdminBuilder::keyring`] (`None` without one).
    #[must_use]
    pub fn keyring(&self) -> Option<&Keyring> {
        match &self.source {
            Source::Verifier(verifier) => Some(&verifier.inner.keyring),
            Source::Own(parts) => parts.keyring.as_ref(),
        }
    }

    /// The clock changes are timed by (expiry, audit events).
    #[must_use]
    pub fn clock(&self) -> &dyn Clock {
        match &self.source {
            Source::Verifier(verifier) => &*verifier.inner.clock,
            Source::Own(parts) => &*parts.clock,
        }
    }

    /// How many changes made through this handle (and its clones) could not be published on
    /// the invalidation channel, after retries. Other instances see those changes within
    /// their cache TTL.
    #[must_use]
    pub fn failed_publishes(&self) -> u64 {
        self.failed_publishes.load(Ordering::Relaxed)
    }

    /// Waits until every audit event recorded so far has been handed to the sinks, and returns
    /// the pipeline's counters (for a handle from [`Verifier::admin`]:
    /// [`Verifier::flush_audit`]). Call it before exiting so the last events are not lost.
    pub async fn flush_audit(&self) -> AuditStats {
        match &self.source {
            Source::Verifier(verifier) => verifier.flush_audit().await,
            Source::Own(parts) => {
                parts.auditor.flush().await;
                parts.auditor.stats()
            }
        }
    }

    /// Counters of the audit pipeline the handle records to.
    #[must_use]
    pub fn audit_stats(&self) -> AuditStats {
        match &self.source {
            Source::Verifier(verifier) => verifier.audit_stats(),
            Source::Own(parts) => parts.auditor.stats(),
        }
    }

    /// The store's read side (its settings hold the lifetime policy).
    fn key_store(&self) -> &dyn KeyStore {
        match &self.source {
            Source::Verifier(verifier) => &*verifier.inner.store,
            Source::Own(parts) => &*parts.store,
        }
    }

    /// The deployment's lifetime policy, as recorded in the store's settings now.
    ///
    /// # Errors
    /// `Unavailable` when the store cannot answer or the recorded policy is unreadable.
    pub async fn lifetime_policy(&self) -> Result<LifetimePolicy, StoreError> {
        crate::policy::read_policy(self.key_store()).await
    }

    /// What key `id`'s quotas have left now, without spending: its own quota's balance
    /// (shared by its rotation lineage, with the credits added to it) and its owner's. The
    /// lines are the ones requests spend from; a key without either has `None` for it.
    ///
    /// Who counts:
    /// - through [`Verifier::admin`], the verifier's meter: exact for the balances this
    ///   process spends (the in-process meter) or every instance spends (a shared meter);
    /// - a standalone handle, the meter given to [`AdminBuilder::quota_meter`]; without one,
    ///   the counters the services' in-process meters save in the store, read afresh: at most
    ///   their flush interval (1 s by default) behind.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::Unavailable`] when the store or the meter
    /// cannot answer; [`StoreError::Unsupported`] for a standalone handle without a meter
    /// over a store that keeps no counters.
    pub async fn quota_balance(&self, id: &KeyId) -> Result<QuotaBalance, StoreError> {
        let (record, owner) = self
            .key_store()
            .find_with_owner_limit(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(*id))?;
        let now = self.clock().now();
        let (key, owner) = crate::quota::record_lines(&record, &owner);
        let key = match key {
            Some(line) => Some((line, self.usage(&line, now).await?)),
            None => None,
        };
        let owner = match owner {
            Some(line) => Some((line, self.usage(&line, now).await?)),
            None => None,
        };
        Ok(QuotaBalance::new(now, key, owner))
    }

    /// What owner `id`'s shared quota has left now, without spending (with the credits added
    /// to it): the balance every key of the owner spends from, counted as
    /// [`Admin::quota_balance`] counts it. The balance's `key` line is always `None`; its
    /// `owner` line is `None` when the owner has no quota.
    ///
    /// # Errors
    /// [`StoreError::OwnerNotFound`]; otherwise as [`Admin::quota_balance`].
    pub async fn owner_quota_balance(&self, id: &str) -> Result<QuotaBalance, StoreError> {
        let owner = self.store().get_owner(id).await?;
        let now = self.clock().now();
        let line = match owner.quota {
            Some(quota) => {
                let line = crate::quota::owner_line(&owner.id, quota, owner.quota_granted);
                Some((line, self.usage(&line, now).await?))
            }
            None => None,
        };
        Ok(QuotaBalance::new(now, None, line))
    }

    /// One line's balance from the meter, or from the store's saved counters.
    async fn usage(&self, line: &QuotaLine, now: SystemTime) -> Result<QuotaUsage, StoreError> {
        let parts = match &self.source {
            Source::Verifier(verifier) => {
                return verifier
                    .quota_meter()
                    .usage(line, now)
                    .await
                    .map_err(StoreError::unavailable);
            }
            Source::Own(parts) => parts,
        };
        if let Some(meter) = &parts.quota_meter {
            return meter
                .usage(line, now)
                .await
                .map_err(StoreError::unavailable);
        }
        let ledger = Arc::clone(&parts.store)
            .quota_ledger()
            .ok_or(StoreError::Unsupported(
                "quota balances without a quota meter (AdminBuilder::quota_meter)",
            ))?;
        let saved = ledger.load_counter(&line.subject).await?;
        Ok(QuotaUsage::of(line, saved, now))
    }

    /// Replaces the deployment's lifetime policy in the store's settings (an empty policy
    /// clears it): every process applies it from its next operation. Audited as one
    /// [`Action::PolicyChanged`] event with the handle's actor and the new policy as its
    /// detail, and logged (target `keygate`, info). A policy refused as invalid writes and
    /// records nothing; a store failure records nothing either (whether it was written is not
    /// known: read it back).
    ///
    /// # Errors
    /// As [`write_policy`](crate::policy::write_policy): the policy is invalid (nothing
    /// written), or the store cannot keep it.
    pub async fn set_lifetime_policy(
        &self,
        policy: &LifetimePolicy,
    ) -> Result<(), crate::policy::WritePolicyError> {
        crate::policy::write_policy(self.key_store(), policy).await?;
        tracing::info!(target: "keygate", actor = self.actor.as_deref(), %policy, "lifetime policy set");
        self.record_change(
            |at| AuditEvent::new(at, Action::PolicyChanged),
            Some(policy.to_string()),
        );
        Ok(())
    }

    /// The expiry a key asking for `at` gets under the lifetime policy (canaries are exempt).
    async fn policy_expiry(
        &self,
        at: Option<SystemTime>,
        canary: bool,
    ) -> Result<Option<SystemTime>, StoreError> {
        if canary {
            return Ok(at);
        }
        let policy = self.lifetime_policy().await?;
        Ok(policy.expiry_for(at, self.clock().now())?)
    }

    fn store(&self) -> &dyn KeyAdmin {
        match &self.source {
            Source::Verifier(verifier) => &*verifier.inner.admin,
            Source::Own(parts) => &*parts.admin,
        }
    }

    fn auditor(&self) -> &Auditor {
        match &self.source {
            Source::Verifier(verifier) => &verifier.inner.auditor,
            Source::Own(parts) => &parts.auditor,
        }
    }

    fn channel(&self) -> Option<&Arc<dyn Invalidation>> {
        match &self.source {
            Source::Verifier(verifier) => verifier.inner.subscriber.as_ref().map(|s| s.source()),
            Source::Own(parts) => parts.channel.as_ref(),
        }
    }

    /// The keyring to mint with, once its peppers passed the check against the store.
    async fn minting_keyring(&self) -> Result<&Keyring, StoreError> {
        match &self.source {
            Source::Verifier(verifier) => {
                let inner = &*verifier.inner;
                inner.pepper_gate.ensure(inner).await?;
                Ok(&inner.keyring)
            }
            Source::Own(parts) => {
                let keyring = parts
                    .keyring
                    .as_ref()
                    .ok_or_else(|| StoreError::unavailable(NoKeyring))?;
                parts
                    .pepper_gate
                    .ensure_for(&*parts.store, &*parts.admin, keyring)
                    .await?;
                Ok(keyring)
            }
        }
    }

    fn audit(&self, action: Action, id: KeyId, detail: Option<String>) {
        self.record_change(|at| AuditEvent::lifecycle(at, action, id), detail);
    }

    /// Records a change to owner `id`.
    fn audit_owner(&self, action: Action, id: &str, detail: Option<String>) {
        self.record_change(|at| AuditEvent::owner_change(at, action, id), detail);
    }

    /// Records the change `event` makes at the clock's now (only while audit is on: the
    /// event is not built otherwise), with the handle's actor and `detail`.
    fn record_change(&self, event: impl FnOnce(SystemTime) -> AuditEvent, detail: Option<String>) {
        let auditor = self.auditor();
        if auditor.enabled() {
            let mut event = event(self.clock().now()).actor(self.actor.clone());
            event.detail = detail;
            auditor.record(event);
        }
    }

    /// Evicts `ids` from the verifier's cache (for a handle from [`Verifier::admin`]) and
    /// publishes them on the invalidation channel (unless the store publishes its changes
    /// itself), when the change happened or may have (the store failed to answer).
    async fn changed<T>(&self, ids: &[KeyId], result: &Result<T, StoreError>) {
        if let Source::Verifier(verifier) = &self.source {
            for id in ids {
                verifier.invalidate(*id).await;
            }
        }
        let may_have_changed = match result {
            Ok(_) => true,
            Err(error) => error.is_unavailable(),
        };
        let Some(channel) = self.channel() else {
            return;
        };
        if !may_have_changed || channel.published_by_store() {
            return;
        }
        for id in ids {
            let mut attempt = 0_u32;
            loop {
                match channel.publish(Invalidated::Key(*id)).await {
                    Ok(()) => break,
                    Err(_) if attempt < 2 => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(50) * attempt).await;
                    }
                    Err(error) => {
                        self.failed_publishes.fetch_add(1, Ordering::Relaxed);
                        crate::metrics::invalidation_publish_failed();
                        tracing::warn!(target: "keygate", key_id = %id, %error, "could not publish a key change; other instances see it within their cache TTL");
                        break;
                    }
                }
            }
        }
    }

    /// Mints a key for `spec` with the handle's keyring and stores it. The returned
    /// [`CreatedKey::key`] is the only copy of the plaintext.
    ///
    /// Without an expiry in `spec`, the key gets the [lifetime policy](#lifetime-policy)'s
    /// default lifetime, if it has one.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] for a bad name, owner, scope list or expiry;
    /// [`StoreError::Policy`] when the lifetime policy refuses the expiry (or its absence);
    /// store errors ([`StoreError::Unavailable`] also when the keyring's peppers do not match
    /// the store's, or a standalone handle has no keyring: [`NoKeyring`]).
    pub async fn create_key(&self, spec: NewKey) -> Result<CreatedKey, StoreError> {
        let keyring = self.minting_keyring().await?;
        let minted = keyring.mint_at(spec, self.clock().now())?;
        self.create(minted).await
    }

    /// Rotates key `id`: mints a new key with the handle's keyring (current pepper), in the old
    /// key's environment, carrying
    /// the old key's name, owner, scopes, metadata, allowed IP ranges and rate limit, links it to the old
    /// key (`rotated_from`), and makes the old key expire `grace` from now — all in one store
    /// transaction. A zero `grace` revokes the old key at once. The new key's
    /// [`CreatedKey::key`] is the only copy of its plaintext.
    ///
    /// ```
    /// use std::time::Duration;
    /// use keygate::{KeyAdmin, Keyring, MemoryStore, NewKey, Verifier};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let verifier = Verifier::builder(Keyring::development("acme_test")?, MemoryStore::new()).build();
    /// let admin = verifier.admin();
    /// let old = admin.create_key(NewKey::new("billing")).await?;
    /// let rotated = admin.rotate(&old.record.id, Duration::from_secs(3600)).await?;
    /// assert_eq!(rotated.new.record.name, "billing");
    /// assert_eq!(rotated.new.record.rotated_from, Some(old.record.id));
    /// assert!(rotated.old.expires_at.is_some());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// The new key does not inherit the old key's expiry: under a
    /// [lifetime policy](#lifetime-policy) it gets `now + default_lifetime`, else
    /// `now + max_lifetime` (see [`LifetimePolicy::rotation_expiry`]); without one, none.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] when `grace` exceeds
    /// [`MAX_ROTATION_GRACE`](crate::record::MAX_ROTATION_GRACE) (30 days);
    /// [`StoreError::NotFound`]; [`StoreError::Conflict`] when the key is revoked, disabled or
    /// expired; [`StoreError::Policy`] when the policy requires an expiry and gives no default
    /// or maximum lifetime; `Unavailable` (as for [`Admin::create_key`]).
    pub async fn rotate(&self, id: &KeyId, grace: Duration) -> Result<RotatedKey, StoreError> {
        let rotation = Rotation::new(grace)?;
        let old = self.store().get(id).await?;
        let keyring = self.minting_keyring().await?;
        let now = self.clock().now();
        // The spec only carries the name (and the policy's expiry) so minting validates it;
        // the store copies the rest from the old record inside its transaction. The new key
        // keeps the old one's environment (its prefix), when the keyring has it.
        let mut spec = NewKey::new(old.name);
        if !old.canary
            && let Some(at) = self.lifetime_policy().await?.rotation_expiry(now)?
        {
            spec = spec.expires_at(at);
        }
        let minted = keyring.mint_like(&old.prefix, spec, now)?;
        self.rotate_recorded(id, minted, rotation).await
    }

    async fn rotate_recorded(
        &self,
        id: &KeyId,
        replacement: MintedKey,
        rotation: Rotation,
    ) -> Result<RotatedKey, StoreError> {
        self.minting_keyring().await?;
        let new_id = replacement.record().id;
        let result = self.store().rotate_with(id, replacement, rotation).await;
        self.changed(&[*id, new_id], &result).await;
        if result.is_ok() {
            self.audit(Action::Rotated, *id, Some(format!("new key {new_id}")));
        }
        result
    }
}

impl Admin {
    /// After a top-up of `record`'s key: the other keys of its lineage got the same total
    /// (the stores' contract). Evicts them from this handle's verifier, whether or not the
    /// store announces them to subscribers, and publishes them when it does not, so every
    /// instance reads the new balance at once rather than after its cache TTL.
    async fn lineage_changed(&self, record: &KeyRecord) {
        if let Source::Verifier(verifier) = &self.source {
            verifier
                .invalidate_spending_from(&record.quota_subject())
                .await;
        }
        if self.channel().is_none_or(|c| c.published_by_store()) {
            return;
        }
        let lineage = KeyFilter::default().lineage(record.lineage);
        // A store that does not know the lineage filter lists every key: keep the lineage's.
        let others = self
            .key_ids_where(&lineage, |k| {
                k.lineage == record.lineage && k.id != record.id
            })
            .await;
        match others {
            Ok(others) => self.changed(&others, &Ok::<(), StoreError>(())).await,
            Err(error) => {
                tracing::warn!(target: "keygate", key_id = %record.id, %error, "could not list a key's lineage to announce a top-up; its other keys show the new balance on other instances within their cache TTL");
            }
        }
    }

    /// [`KeyAdmin::apply`], with `detail` (why the change was made, e.g. where a leaked key
    /// was found) recorded in the change's audit event. The detail must hold no secret.
    ///
    /// # Errors
    /// As [`KeyAdmin::apply`].
    pub async fn apply_with_detail(
        &self,
        id: &KeyId,
        change: KeyChange,
        detail: String,
    ) -> Result<KeyRecord, StoreError> {
        self.apply_recorded(id, change, Some(detail)).await
    }

    /// Records an audit event about key `id` that changes nothing, with `detail` (which must
    /// hold no secret): for example [`Action::LeakReported`] when a leak reporter configured
    /// to report only finds the key. A no-op without an audit trail.
    pub fn record_unchanged(&self, action: Action, id: KeyId, detail: String) {
        self.audit(action, id, Some(detail));
    }

    async fn apply_recorded(
        &self,
        id: &KeyId,
        mut change: KeyChange,
        detail: Option<String>,
    ) -> Result<KeyRecord, StoreError> {
        if let KeyChange::SetExpiry(at) = change {
            let canary = self.store().get(id).await?.canary;
            change = KeyChange::SetExpiry(self.policy_expiry(at, canary).await?);
        }
        let action = Action::for_change(&change);
        let added = match change {
            KeyChange::AddCredits(credits) => Some(credits),
            _ => None,
        };
        let result = self.store().apply(id, change).await;
        // Evict even on error: the store may have applied the change before failing to answer.
        self.changed(&[*id], &result).await;
        if let (Some(_), Ok(record)) = (added, &result) {
            self.lineage_changed(record).await;
        }
        if let Ok(record) = &result {
            let detail = detail.or_else(|| {
                added.map(|credits| {
                    format!(
                        "{} ({} added in all)",
                        crate::owner::credits_text(credits),
                        record.quota_granted
                    )
                })
            });
            self.audit(action, *id, detail);
        }
        result
    }
}

#[async_trait]
impl KeyAdmin for Admin {
    async fn create(&self, mut key: MintedKey) -> Result<CreatedKey, StoreError> {
        self.minting_keyring().await?;
        key.record.expires_at = self
            .policy_expiry(key.record.expires_at, key.record.canary)
            .await?;
        let id = key.record().id;
        let created = self.store().create(key).await;
        // A guess of this id may sit in a negative cache, here or elsewhere.
        self.changed(&[id], &created).await;
        let created = created?;
        if created.owner_created
            && let Some(owner) = created.record.owner.as_deref()
        {
            // The owner's first key made it: its creation comes first in the trail.
            let bare = OwnerRecord::bare(owner, created.record.created_at);
            self.audit_owner(Action::OwnerCreated, owner, Some(bare.summary()));
        }
        self.audit(Action::Created, id, None);
        Ok(created)
    }

    async fn get(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
        self.store().get(id).await
    }

    async fn list(&self, filter: &KeyFilter, page: PageRequest) -> Result<KeyPage, StoreError> {
        self.store().list(filter, page).await
    }

    async fn apply(&self, id: &KeyId, change: KeyChange) -> Result<KeyRecord, StoreError> {
        self.apply_recorded(id, change, None).await
    }

    async fn rotate_with(
        &self,
        id: &KeyId,
        replacement: MintedKey,
        rotation: Rotation,
    ) -> Result<RotatedKey, StoreError> {
        let mut replacement = replacement;
        // The successor is a canary when the old key is: exempt from the policy then.
        let canary = self.store().get(id).await?.canary;
        replacement.record.expires_at = self
            .policy_expiry(replacement.record.expires_at, canary)
            .await?;
        self.rotate_recorded(id, replacement, rotation).await
    }

    async fn pepper_versions(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        self.store().pepper_versions().await
    }

    async fn delete(&self, id: &KeyId) -> Result<(), StoreError> {
        let result = self.store().delete(id).await;
        self.changed(&[*id], &result).await;
        if result.is_ok() {
            self.audit(Action::Deleted, *id, None);
        }
        result
    }

    async fn create_owner(&self, owner: NewOwner) -> Result<OwnerRecord, StoreError> {
        let created = self.store().create_owner(owner).await?;
        self.audit_owner(Action::OwnerCreated, &created.id, Some(created.summary()));
        Ok(created)
    }

    async fn get_owner(&self, id: &str) -> Result<OwnerRecord, StoreError> {
        self.store().get_owner(id).await
    }

    async fn list_owners(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OwnerRecord>, StoreError> {
        self.store().list_owners(after, limit).await
    }

    async fn update_owner(&self, id: &str, update: OwnerUpdate) -> Result<OwnerRecord, StoreError> {
        let limit_changed = update.changes_rate_limit();
        let action = if update.only_adds_credits() {
            Action::CreditsAdded
        } else {
            Action::OwnerChanged
        };
        let summary = update.summary();
        let added_credits = update.add_credits.is_some();
        let result = self.store().update_owner(id, update).await;
        if limit_changed
            && (result.is_ok() || result.as_ref().is_err_and(StoreError::is_unavailable))
        {
            // Cached entries hold the owner's limit: drop the owner's keys (the store announced
            // them already when it publishes its changes itself).
            match self.owner_key_ids(id).await {
                Ok(ids) => self.changed(&ids, &result).await,
                Err(error) => {
                    tracing::warn!(target: "keygate", %error, "could not list an owner's keys to evict them after its limit changed; they pick up the new limit within the cache TTL");
                }
            }
        }
        if let Ok(owner) = &result {
            let detail = if added_credits {
                format!("{summary} ({} added in all)", owner.quota_granted)
            } else {
                summary
            };
            self.audit_owner(action, id, Some(detail));
        }
        result
    }

    async fn delete_owner(&self, id: &str) -> Result<(), StoreError> {
        self.store().delete_owner(id).await?;
        self.audit_owner(Action::OwnerDeleted, id, None);
        Ok(())
    }

    async fn change_owner_keys(
        &self,
        id: &str,
        change: OwnerKeysChange,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let result = self.store().change_owner_keys(id, change).await;
        let ids: Vec<KeyId> = match &result {
            Ok(changed) => changed.iter().map(|r| r.id).collect(),
            // The store may have applied the change before failing to answer: evict every key
            // of the owner that can be listed.
            Err(error) if error.is_unavailable() => {
                self.owner_key_ids(id).await.unwrap_or_default()
            }
            Err(_) => Vec::new(),
        };
        self.changed(&ids, &result).await;
        if result.is_ok() {
            let action = Action::for_change(&change.key_change());
            for key in &ids {
                self.audit(
                    action,
                    *key,
                    Some(format!("{} of owner {id}", change.as_str())),
                );
            }
        }
        result
    }

    async fn owner_key_count(&self, id: &str) -> Result<u64, StoreError> {
        self.store().owner_key_count(id).await
    }

    async fn deleted_owner_keys(&self, id: &str) -> Result<Vec<KeyId>, StoreError> {
        self.store().deleted_owner_keys(id).await
    }
}

impl Admin {
    /// Disables every key of owner `id` that is not disabled or revoked, in one store
    /// transaction; evicts them all here, announces them to every instance at once, and
    /// records one `disabled` audit event per key. Returns the changed keys.
    ///
    /// # Errors
    /// As [`KeyAdmin::change_owner_keys`].
    pub async fn disable_owner(&self, id: &str) -> Result<Vec<KeyRecord>, StoreError> {
        self.change_owner_keys(id, OwnerKeysChange::Disable).await
    }

    /// Enables every disabled key of owner `id` (revoked keys stay revoked), as
    /// [`Admin::disable_owner`] does.
    ///
    /// # Errors
    /// As [`KeyAdmin::change_owner_keys`].
    pub async fn enable_owner(&self, id: &str) -> Result<Vec<KeyRecord>, StoreError> {
        self.change_owner_keys(id, OwnerKeysChange::Enable).await
    }

    /// Revokes every key of owner `id` for good, as [`Admin::disable_owner`] does: one
    /// transaction, one `revoked` audit event per key, and every instance refuses them within
    /// its [revocation bound](crate::Verifier::revocation_bound).
    ///
    /// ```
    /// use keygate::{KeyAdmin, Keyring, MemoryStore, NewKey, Verifier};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let verifier = Verifier::builder(Keyring::development("acme_test")?, MemoryStore::new()).build();
    /// let admin = verifier.admin();
    /// admin.create_key(NewKey::new("a").owner("team-x")).await?;
    /// admin.create_key(NewKey::new("b").owner("team-x")).await?;
    /// assert_eq!(admin.revoke_owner("team-x").await?.len(), 2);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`KeyAdmin::change_owner_keys`].
    pub async fn revoke_owner(&self, id: &str) -> Result<Vec<KeyRecord>, StoreError> {
        self.change_owner_keys(id, OwnerKeysChange::Revoke).await
    }

    /// The ids of every key of owner `id`.
    async fn owner_key_ids(&self, id: &str) -> Result<Vec<KeyId>, StoreError> {
        self.key_ids(&KeyFilter::default().owner(id)).await
    }

    /// The ids of every key `filter` lets through, page by page.
    async fn key_ids(&self, filter: &KeyFilter) -> Result<Vec<KeyId>, StoreError> {
        self.key_ids_where(filter, |_| true).await
    }

    /// The ids of the keys `filter` lets through and `keep` keeps, page by page.
    async fn key_ids_where(
        &self,
        filter: &KeyFilter,
        keep: impl Fn(&KeyRecord) -> bool,
    ) -> Result<Vec<KeyId>, StoreError> {
        let mut ids = Vec::new();
        let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
        loop {
            let got = self.store().list(filter, page).await?;
            ids.extend(got.keys.iter().filter(|k| keep(k)).map(|k| k.id));
            match got.next {
                Some(next) => page.after = Some(next),
                None => break,
            }
        }
        Ok(ids)
    }
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("Admin");
        match &self.source {
            Source::Verifier(verifier) => s.field("verifier", verifier),
            Source::Own(parts) => s
                .field("keyring", &parts.keyring)
                .field("invalidation", &parts.channel.is_some()),
        };
        s.field("actor", &self.actor).finish_non_exhaustive()
    }
}

/// Configures a standalone [`Admin`] (see [`Admin::builder`]). Defaults:
///
/// | setting | default |
/// | --- | --- |
/// | keyring | none: keys can be changed and deleted, not created or rotated |
/// | clock | system clock |
/// | audit sinks | [`TracingSink`](crate::audit::TracingSink) |
/// | invalidation channel | none: services see changes within their cache TTL (unless the store publishes changes itself, as PostgreSQL's and SQLite's channels read them from the store) |
#[must_use]
pub struct AdminBuilder {
    store: Arc<dyn KeyStore>,
    admin: Arc<dyn KeyAdmin>,
    keyring: Option<Keyring>,
    clock: Arc<dyn Clock>,
    audit_sinks: Vec<Arc<dyn AuditSink>>,
    channel: Option<Arc<dyn Invalidation>>,
    quota_meter: Option<Arc<dyn QuotaMeter>>,
}

/// Events a standalone handle's audit pipeline holds before dropping (changes are few).
const ADMIN_AUDIT_BUFFER: usize = 4_096;

impl AdminBuilder {
    /// The keyring new keys are minted with ([`Admin::create_key`], [`Admin::rotate`]). Its
    /// peppers are checked against the store's settings before the first key is minted.
    pub fn keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// The clock (use [`ManualClock`](crate::clock::ManualClock) in tests).
    pub fn clock(self, clock: impl Clock) -> Self {
        self.shared_clock(Arc::new(clock))
    }

    /// [`AdminBuilder::clock`] with a clock already shared.
    pub fn shared_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Adds an audit sink for the change events. Without any, events go to
    /// [`TracingSink`](crate::audit::TracingSink).
    pub fn audit_sink(self, sink: impl AuditSink) -> Self {
        self.shared_audit_sink(Arc::new(sink))
    }

    /// [`AdminBuilder::audit_sink`] with a sink already shared.
    pub fn shared_audit_sink(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit_sinks.push(sink);
        self
    }

    /// Publishes every change on `channel` (see [`crate::invalidation`]), so the services'
    /// verifiers subscribed to it evict the key at once.
    pub fn invalidation(self, channel: impl Invalidation) -> Self {
        self.shared_invalidation(Arc::new(channel))
    }

    /// [`AdminBuilder::invalidation`] with a channel already shared.
    pub fn shared_invalidation(mut self, channel: Arc<dyn Invalidation>) -> Self {
        self.channel = Some(channel);
        self
    }

    /// The services' shared quota meter (for example keygate-redis's), which
    /// [`Admin::quota_balance`] reads balances from. Without one, a standalone handle reads
    /// the counters the services' in-process meters save in the store
    /// ([`KeyStore::quota_ledger`]).
    pub fn quota_meter(mut self, meter: Arc<dyn QuotaMeter>) -> Self {
        self.quota_meter = Some(meter);
        self
    }

    /// Builds the handle. No I/O: the peppers are checked before the first key is minted, and
    /// the audit pipeline starts on the tokio runtime of the first change.
    pub fn build(self) -> Admin {
        Admin {
            source: Source::Own(Arc::new(Parts {
                keyring: self.keyring,
                store: self.store,
                admin: self.admin,
                clock: self.clock,
                auditor: Auditor::or_tracing(
                    self.audit_sinks,
                    PipelineConfig {
                        buffer: ADMIN_AUDIT_BUFFER,
                        batch: ADMIN_AUDIT_BUFFER,
                        // Changes come one at a time: each is written at once.
                        linger: Duration::ZERO,
                        runtime: None,
                    },
                ),
                channel: self.channel,
                pepper_gate: PepperGate::default(),
                quota_meter: self.quota_meter,
            })),
            actor: None,
            failed_publishes: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl std::fmt::Debug for AdminBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminBuilder")
            .field("keyring", &self.keyring)
            .field("audit_sinks", &self.audit_sinks.len())
            .field("invalidation", &self.channel.is_some())
            .field("quota_meter", &self.quota_meter.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::audit::AuditError;
    use crate::invalidation::{InvalidationError, Subscription};
    use crate::{MemoryStore, NewKey};

    #[derive(Clone, Default)]
    struct Events(Arc<Mutex<Vec<AuditEvent>>>);

    /// A builder's `Debug` names what it was given (and never a pepper or a meter's state).
    #[test]
    fn a_builder_shows_what_it_was_given() {
        let plain = format!("{:?}", Admin::builder(MemoryStore::new()));
        assert!(plain.contains("quota_meter: false"), "{plain}");
        assert!(plain.contains("invalidation: false"), "{plain}");
        let metered = format!(
            "{:?}",
            Admin::builder(MemoryStore::new())
                .quota_meter(Arc::new(crate::quota::InProcessMeter::new()))
        );
        assert!(metered.contains("quota_meter: true"), "{metered}");
    }

    #[async_trait]
    impl AuditSink for Events {
        async fn write(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
            self.0.lock().unwrap().extend_from_slice(events);
            Ok(())
        }
    }

    /// A channel that records what is published, or fails every publish.
    #[derive(Clone, Default)]
    struct Channel {
        published: Arc<Mutex<Vec<Invalidated>>>,
        fail: bool,
        by_store: bool,
    }

    #[async_trait]
    impl Invalidation for Channel {
        async fn publish(&self, what: Invalidated) -> Result<(), InvalidationError> {
            if self.fail {
                return Err(InvalidationError::new("down"));
            }
            self.published.lock().unwrap().push(what);
            Ok(())
        }

        async fn subscribe(&self) -> Result<Box<dyn Subscription>, InvalidationError> {
            Err(InvalidationError::new("not in this test"))
        }

        fn published_by_store(&self) -> bool {
            self.by_store
        }
    }

    fn keyring() -> Keyring {
        Keyring::development("admin_test").unwrap()
    }

    #[tokio::test]
    async fn a_standalone_admin_audits_and_publishes_every_change_with_its_actor() {
        let store = MemoryStore::new();
        let events = Events::default();
        let channel = Channel::default();
        let admin = Admin::builder(store.clone())
            .keyring(keyring())
            .audit_sink(events.clone())
            .invalidation(channel.clone())
            .build()
            .actor("ops");
        let created = admin.create_key(NewKey::new("one")).await.unwrap();
        let id = created.record.id;
        admin.rename(&id, "two").await.unwrap();
        let rotated = admin.rotate(&id, Duration::from_secs(60)).await.unwrap();
        let new_id = rotated.new.record.id;
        admin.delete(&new_id).await.unwrap();
        // A failed change is neither audited nor published.
        assert!(admin.rename(&new_id, "gone").await.is_err());
        let stats = admin.flush_audit().await;
        assert_eq!(stats.written, 4);

        let events = events.0.lock().unwrap().clone();
        let seen: Vec<(Action, KeyId, Option<&str>)> = events
            .iter()
            .map(|e| (e.action, e.key_id.unwrap(), e.actor.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                (Action::Created, id, Some("ops")),
                (Action::Renamed, id, Some("ops")),
                (Action::Rotated, id, Some("ops")),
                (Action::Deleted, new_id, Some("ops")),
            ]
        );
        let published = channel.published.lock().unwrap().clone();
        let keys = |ids: &[KeyId]| {
            ids.iter()
                .map(|id| Invalidated::Key(*id))
                .collect::<Vec<_>>()
        };
        assert_eq!(published, keys(&[id, id, id, new_id, new_id]));
        assert_eq!(admin.failed_publishes(), 0);
        // The store holds what the handle did.
        assert_eq!(store.get(&id).await.unwrap().name, "two");
    }

    /// An owner's shared credits take top-ups as a key's do: every key of the owner spends
    /// them at once (the cached keys are evicted), once, and the owner's read-out and each
    /// key's owner line show the same balance. Audited as `credits_added`, naming the owner.
    #[tokio::test]
    async fn an_owner_top_up_reaches_every_key_of_the_owner_once()
    -> Result<(), Box<dyn std::error::Error>> {
        use crate::HttpRequestView;
        use crate::owner::NewOwner;
        use crate::rejection::Reason;
        let events = Events::default();
        let verifier = crate::Verifier::builder(keyring(), MemoryStore::new())
            .audit_sink(events.clone())
            .build();
        let admin = verifier.admin();
        admin
            .create_owner(NewOwner::new("acme").quota("credits 2".parse()?))
            .await?;
        let mut views = Vec::new();
        let mut ids = Vec::new();
        for name in ["a", "b"] {
            let key = admin.create_key(NewKey::new(name).owner("acme")).await?;
            let mut headers = http::HeaderMap::new();
            headers.insert("x-api-key", key.key.expose_secret().parse()?);
            views.push(headers);
            ids.push(key.record.id);
        }
        let verify = async |headers: &http::HeaderMap| {
            let uri = http::Uri::from_static("/");
            let view = HttpRequestView::new(headers, &uri, None);
            verifier.verify_request(&view).await.map(|_| ())
        };
        verify(&views[0]).await?;
        verify(&views[1]).await?;
        let refused = verify(&views[0])
            .await
            .err()
            .ok_or("the owner's credits are spent")?;
        assert_eq!(refused.reason(), Reason::QuotaExhausted);
        let left = |balance: crate::quota::QuotaBalance| {
            assert!(balance.key.is_none(), "an owner's read-out has no key line");
            balance
                .owner
                .map(|(line, usage)| (line.granted, usage.remaining))
        };
        assert_eq!(left(admin.owner_quota_balance("acme").await?), Some((0, 0)));

        let owner = admin
            .update_owner("acme", OwnerUpdate::new().add_credits(3))
            .await?;
        assert_eq!(owner.quota_granted, 3);
        let shared = admin.owner_quota_balance("acme").await?;
        assert_eq!(left(shared), Some((3, 3)));
        // Each key's own read-out names the very same line and balance.
        for id in &ids {
            assert_eq!(admin.quota_balance(id).await?.owner, shared.owner);
        }
        // Both keys' cached entries held the old total: both spend the new one, three in all.
        verify(&views[1]).await?;
        verify(&views[0]).await?;
        verify(&views[1]).await?;
        assert_eq!(
            verify(&views[0]).await.err().map(|r| r.reason()),
            Some(Reason::QuotaExhausted),
            "the top-up was added once"
        );
        verifier.flush_audit().await;
        let added: Vec<_> = events
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.action == Action::CreditsAdded)
            .cloned()
            .collect();
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].owner.as_deref(), Some("acme"));
        assert_eq!(added[0].key_id, None);
        assert_eq!(
            added[0].detail.as_deref(),
            Some("3 credits added (3 added in all)")
        );

        // A changed owner is audited as such, the credits named in its detail.
        admin
            .update_owner("acme", OwnerUpdate::new().name("ACME").add_credits(1))
            .await?;
        verifier.flush_audit().await;
        let last = events.0.lock().unwrap().pop().ok_or("an event")?;
        assert_eq!(last.action, Action::OwnerChanged);
        assert_eq!(
            last.detail.as_deref(),
            Some(r#"name "ACME"; 1 credit added (4 added in all)"#)
        );

        // An owner without a quota reads as none; an unknown owner is not found.
        admin.create_owner(NewOwner::new("free")).await?;
        assert_eq!(left(admin.owner_quota_balance("free").await?), None);
        assert!(matches!(
            admin.owner_quota_balance("nobody").await,
            Err(StoreError::OwnerNotFound(_))
        ));
        Ok(())
    }

    /// A [`MemoryStore`] whose listing ignores the lineage filter, as a store written before
    /// the filter existed would.
    #[derive(Clone)]
    struct NoLineageFilter(MemoryStore);

    #[async_trait]
    impl KeyStore for NoLineageFilter {
        async fn find(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
            self.0.find(id).await
        }
    }

    #[async_trait]
    impl KeyAdmin for NoLineageFilter {
        async fn create(&self, key: MintedKey) -> Result<CreatedKey, StoreError> {
            self.0.create(key).await
        }
        async fn get(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
            self.0.get(id).await
        }
        async fn list(&self, filter: &KeyFilter, page: PageRequest) -> Result<KeyPage, StoreError> {
            let mut filter = filter.clone();
            filter.lineage = None;
            self.0.list(&filter, page).await
        }
        async fn apply(&self, id: &KeyId, change: KeyChange) -> Result<KeyRecord, StoreError> {
            self.0.apply(id, change).await
        }
        async fn rotate_with(
            &self,
            id: &KeyId,
            replacement: MintedKey,
            rotation: crate::record::Rotation,
        ) -> Result<RotatedKey, StoreError> {
            self.0.rotate_with(id, replacement, rotation).await
        }
        async fn delete(&self, id: &KeyId) -> Result<(), StoreError> {
            self.0.delete(id).await
        }
    }

    /// A new key with one credit, by `admin`: its id.
    async fn prepaid(admin: &Admin) -> Result<KeyId, Box<dyn std::error::Error>> {
        let created = admin
            .create_key(NewKey::new("prepaid").quota("credits 1".parse()?))
            .await?;
        Ok(created.record.id)
    }

    /// A top-up changes every key of the lineage: with a channel the store does not publish
    /// to itself (Redis), the admin announces each of them, so other instances drop their
    /// cached totals at once; keys of other lineages are not announced, even from a store
    /// that lists them all.
    #[tokio::test]
    async fn a_top_up_announces_every_key_of_the_lineage() -> Result<(), Box<dyn std::error::Error>>
    {
        for store in [
            Admin::builder(MemoryStore::new()),
            Admin::builder(NoLineageFilter(MemoryStore::new())),
        ] {
            let channel = Channel::default();
            let admin = store
                .keyring(keyring())
                .invalidation(channel.clone())
                .build();
            let first = prepaid(&admin).await?;
            let second = admin
                .rotate(&first, Duration::from_secs(3600))
                .await?
                .new
                .record
                .id;
            let third = admin
                .rotate(&second, Duration::from_secs(3600))
                .await?
                .new
                .record
                .id;
            admin
                .create_key(NewKey::new("other").quota("credits 5".parse()?))
                .await?;
            channel.published.lock().unwrap().clear();

            admin.add_credits(&second, 2).await?;
            let mut published = channel.published.lock().unwrap().clone();
            assert_eq!(published.first(), Some(&Invalidated::Key(second)));
            published.sort_by_key(|p| p.to_message());
            let mut expected = vec![
                Invalidated::Key(first),
                Invalidated::Key(second),
                Invalidated::Key(third),
            ];
            expected.sort_by_key(|p| p.to_message());
            assert_eq!(published, expected);

            // Other changes announce the changed key alone.
            channel.published.lock().unwrap().clear();
            admin.rename(&second, "renamed").await?;
            assert_eq!(
                *channel.published.lock().unwrap(),
                [Invalidated::Key(second)]
            );
        }

        // A store that announces its changes itself announced the lineage already.
        let channel = Channel {
            by_store: true,
            ..Channel::default()
        };
        let admin = Admin::builder(MemoryStore::new())
            .keyring(keyring())
            .invalidation(channel.clone())
            .build();
        let first = prepaid(&admin).await?;
        admin.rotate(&first, Duration::from_secs(3600)).await?;
        admin.add_credits(&first, 2).await?;
        assert!(channel.published.lock().unwrap().is_empty());
        Ok(())
    }

    /// A top-up of a rotated key reaches its successor's cached entry at once through the
    /// verifier's own handle, over a store that announces nothing (the memory store): both
    /// keys spend one balance, and both carry its new total.
    #[tokio::test]
    async fn a_top_up_evicts_every_cached_key_of_the_lineage()
    -> Result<(), Box<dyn std::error::Error>> {
        use crate::HttpRequestView;
        use crate::rejection::Reason;
        let verifier = crate::Verifier::builder(keyring(), MemoryStore::new()).build();
        let admin = verifier.admin();
        let old = admin
            .create_key(NewKey::new("prepaid").quota("credits 1".parse()?))
            .await?;
        let new = admin
            .rotate(&old.record.id, Duration::from_secs(3600))
            .await?
            .new;
        let bystander = admin
            .create_key(NewKey::new("other").quota("credits 5".parse()?))
            .await?;
        let verify = async |key: &crate::record::CreatedKey| {
            let mut headers = http::HeaderMap::new();
            headers.insert("x-api-key", key.key.expose_secret().parse().unwrap());
            let uri = http::Uri::from_static("/");
            let view = HttpRequestView::new(&headers, &uri, None);
            verifier
                .verify_request(&view)
                .await
                .map(|_| ())
                .map_err(|r| r.reason())
        };
        assert_eq!(verify(&new).await, Ok(()));
        assert_eq!(verify(&bystander).await, Ok(()));
        // Both keys of the lineage are cached now, the balance spent.
        assert_eq!(verify(&old).await, Err(Reason::QuotaExhausted));
        assert_eq!(verify(&new).await, Err(Reason::QuotaExhausted));
        let cached = |id| {
            verifier
                .inner
                .cache
                .ids_spending_from(&old.record.quota_subject())
                .contains(&id)
        };
        assert!(cached(new.record.id) && cached(old.record.id));

        admin.add_credits(&old.record.id, 2).await?;
        assert!(
            !cached(new.record.id),
            "the successor's entry held the old total"
        );
        assert_eq!(verify(&new).await, Ok(()));
        assert_eq!(verify(&old).await, Ok(()));
        assert_eq!(
            verify(&new).await,
            Err(Reason::QuotaExhausted),
            "added once"
        );
        // Another lineage's cached key was left alone.
        assert_eq!(
            verifier
                .inner
                .cache
                .ids_spending_from(&bystander.record.quota_subject()),
            [bystander.record.id]
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_change_with_a_detail_records_it_in_its_event() {
        let store = MemoryStore::new();
        let events = Events::default();
        let admin = Admin::builder(store.clone())
            .keyring(keyring())
            .audit_sink(events.clone())
            .build()
            .actor("scanner");
        let id = admin
            .create_key(NewKey::new("one"))
            .await
            .unwrap()
            .record
            .id;
        let record = admin
            .apply_with_detail(
                &id,
                KeyChange::Revoke,
                "found at https://example.test/a".into(),
            )
            .await
            .unwrap();
        assert!(record.revoked_at.is_some());
        // A refused change records nothing.
        assert!(
            admin
                .apply_with_detail(&id, KeyChange::Disable, "again".into())
                .await
                .is_err()
        );
        admin.flush_audit().await;
        let events = events.0.lock().unwrap().clone();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].action, Action::Revoked);
        assert_eq!(events[1].actor.as_deref(), Some("scanner"));
        assert_eq!(
            events[1].detail.as_deref(),
            Some("found at https://example.test/a")
        );
    }

    #[tokio::test]
    async fn a_store_that_publishes_itself_is_not_published_to_again() {
        let channel = Channel {
            by_store: true,
            ..Channel::default()
        };
        let admin = Admin::builder(MemoryStore::new())
            .keyring(keyring())
            .invalidation(channel.clone())
            .build();
        admin.create_key(NewKey::new("one")).await.unwrap();
        assert!(channel.published.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_failed_publish_is_counted_and_the_change_stands() {
        let store = MemoryStore::new();
        let admin = Admin::builder(store.clone())
            .keyring(keyring())
            .invalidation(Channel {
                fail: true,
                ..Channel::default()
            })
            .build();
        let created = admin.create_key(NewKey::new("one")).await.unwrap();
        assert_eq!(admin.failed_publishes(), 1);
        assert!(store.get(&created.record.id).await.is_ok());
    }

    #[tokio::test]
    async fn without_a_keyring_keys_change_but_none_is_minted() {
        let store = MemoryStore::new();
        let minting = Admin::builder(store.clone()).keyring(keyring()).build();
        let id = minting
            .create_key(NewKey::new("one"))
            .await
            .unwrap()
            .record
            .id;
        let admin = Admin::builder(store.clone()).build();
        assert!(admin.keyring().is_none());
        admin.disable(&id).await.unwrap();
        let refused = admin.create_key(NewKey::new("two")).await.unwrap_err();
        assert!(refused.to_string().contains("no keyring"), "{refused}");
        assert!(admin.rotate(&id, Duration::ZERO).await.is_err());
        let all = store
            .list(&KeyFilter::default(), PageRequest::default())
            .await
            .unwrap();
        assert_eq!(all.keys.len(), 1);
    }
}
