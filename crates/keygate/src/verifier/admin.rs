//! Key management through a verifier: every change also evicts the key from its caches.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::Verifier;
use crate::audit::{Action, AuditEvent};
use crate::invalidation::Invalidated;
use crate::key::KeyId;
use crate::record::{CreatedKey, KeyChange, KeyRecord, MintedKey, NewKey, RotatedKey, Rotation};
use crate::store::{KeyAdmin, KeyFilter, KeyPage, PageRequest, StoreError};

/// The verifier's management handle: its store's [`KeyAdmin`], plus cache invalidation, so a
/// revoke (or any change) is seen by the very next request in this process.
///
/// Get one with [`Verifier::admin`]. Every [`KeyAdmin`] method is available (`rename`,
/// `revoke`, `disable`, …); [`Admin::create_key`] mints and stores a new key in one step, and
/// [`Admin::rotate`] replaces a key with a fresh one.
///
/// Every successful change is also an [audit](crate::audit) event (created, renamed, …,
/// rotated, revoked, deleted), naming the actor given with [`Admin::actor`].
#[derive(Clone, Debug)]
pub struct Admin {
    verifier: Verifier,
    actor: Option<Arc<str>>,
}

impl Admin {
    pub(crate) fn new(verifier: Verifier) -> Self {
        Self {
            verifier,
            actor: None,
        }
    }

    /// The same handle, recording `actor` (a user or service name) in its audit events.
    #[must_use]
    pub fn actor(mut self, actor: &str) -> Self {
        self.actor = Some(crate::audit::label(actor.as_bytes()));
        self
    }

    fn audit(&self, action: Action, id: KeyId, detail: Option<String>) {
        let verifier = &self.verifier;
        if verifier.inner.auditor.enabled() {
            let mut event = AuditEvent::lifecycle(verifier.inner.clock.now(), action, id)
                .actor(self.actor.clone());
            event.detail = detail;
            verifier.inner.auditor.record(event);
        }
    }

    /// Evicts `ids` here and publishes them on the verifier's invalidation channel (unless the
    /// store publishes its changes itself), when the change happened or may have (the store
    /// failed to answer). A failed publish is retried twice, then logged and counted: the
    /// change stands, and other instances see it within their cache TTL.
    async fn changed<T>(&self, ids: &[KeyId], result: &Result<T, StoreError>) {
        for id in ids {
            self.verifier.invalidate(*id).await;
        }
        let may_have_changed = match result {
            Ok(_) => true,
            Err(error) => error.is_unavailable(),
        };
        let Some(subscriber) = &self.verifier.inner.subscriber else {
            return;
        };
        let channel = subscriber.source();
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
                        crate::metrics::invalidation_publish_failed();
                        tracing::warn!(target: "keygate", key_id = %id, %error, "could not publish a key change; other instances see it within their cache TTL");
                        break;
                    }
                }
            }
        }
    }

    /// Mints a key for `spec` with the verifier's keyring and stores it. The returned
    /// [`CreatedKey::key`] is the only copy of the plaintext.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] for a bad name, owner, scope list or expiry; store errors.
    pub async fn create_key(&self, spec: NewKey) -> Result<CreatedKey, StoreError> {
        let inner = &self.verifier.inner;
        let minted = inner.keyring.mint_at(spec, inner.clock.now())?;
        self.create(minted).await
    }

    /// Rotates key `id`: mints a new key with the verifier's keyring (current pepper) carrying
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
    /// # Errors
    /// [`StoreError::InvalidInput`] when `grace` exceeds
    /// [`MAX_ROTATION_GRACE`](crate::record::MAX_ROTATION_GRACE) (30 days);
    /// [`StoreError::NotFound`]; [`StoreError::Conflict`] when the key is revoked, disabled or
    /// expired; `Unavailable`.
    pub async fn rotate(&self, id: &KeyId, grace: Duration) -> Result<RotatedKey, StoreError> {
        let rotation = Rotation::new(grace)?;
        let inner = &self.verifier.inner;
        let old = inner.admin.get(id).await?;
        // The spec only carries the name so minting validates it; the store copies the rest
        // from the old record inside its transaction.
        let minted = inner
            .keyring
            .mint_at(NewKey::new(old.name), inner.clock.now())?;
        self.rotate_with(id, minted, rotation).await
    }
}

#[async_trait]
impl KeyAdmin for Admin {
    async fn create(&self, key: MintedKey) -> Result<CreatedKey, StoreError> {
        let inner = &*self.verifier.inner;
        inner.pepper_gate.ensure(inner).await?;
        let id = key.record().id;
        let created = self.verifier.inner.admin.create(key).await;
        // A guess of this id may sit in a negative cache, here or elsewhere.
        self.changed(&[id], &created).await;
        let created = created?;
        self.audit(Action::Created, id, None);
        Ok(created)
    }

    async fn get(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
        self.verifier.inner.admin.get(id).await
    }

    async fn list(&self, filter: &KeyFilter, page: PageRequest) -> Result<KeyPage, StoreError> {
        self.verifier.inner.admin.list(filter, page).await
    }

    async fn apply(&self, id: &KeyId, change: KeyChange) -> Result<KeyRecord, StoreError> {
        let action = Action::for_change(&change);
        let result = self.verifier.inner.admin.apply(id, change).await;
        // Evict even on error: the store may have applied the change before failing to answer.
        self.changed(&[*id], &result).await;
        if result.is_ok() {
            self.audit(action, *id, None);
        }
        result
    }

    async fn rotate_with(
        &self,
        id: &KeyId,
        replacement: MintedKey,
        rotation: Rotation,
    ) -> Result<RotatedKey, StoreError> {
        let inner = &*self.verifier.inner;
        inner.pepper_gate.ensure(inner).await?;
        let new_id = replacement.record().id;
        let result = self
            .verifier
            .inner
            .admin
            .rotate_with(id, replacement, rotation)
            .await;
        self.changed(&[*id, new_id], &result).await;
        if result.is_ok() {
            self.audit(Action::Rotated, *id, Some(format!("new key {new_id}")));
        }
        result
    }

    async fn pepper_versions(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        self.verifier.inner.admin.pepper_versions().await
    }

    async fn delete(&self, id: &KeyId) -> Result<(), StoreError> {
        let result = self.verifier.inner.admin.delete(id).await;
        self.changed(&[*id], &result).await;
        if result.is_ok() {
            self.audit(Action::Deleted, *id, None);
        }
        result
    }
}
