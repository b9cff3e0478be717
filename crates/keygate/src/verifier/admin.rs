//! Key management through a verifier: every change also evicts the key from its caches.

use async_trait::async_trait;

use super::Verifier;
use crate::key::KeyId;
use crate::record::{CreatedKey, KeyChange, KeyRecord, MintedKey, NewKey};
use crate::store::{KeyAdmin, KeyFilter, KeyPage, PageRequest, StoreError};

/// The verifier's management handle: its store's [`KeyAdmin`], plus cache invalidation, so a
/// revoke (or any change) is seen by the very next request in this process.
///
/// Get one with [`Verifier::admin`]. Every [`KeyAdmin`] method is available (`rename`,
/// `revoke`, `disable`, …); [`Admin::create_key`] mints and stores a new key in one step.
#[derive(Clone, Debug)]
pub struct Admin {
    verifier: Verifier,
}

impl Admin {
    pub(crate) fn new(verifier: Verifier) -> Self {
        Self { verifier }
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
}

#[async_trait]
impl KeyAdmin for Admin {
    async fn create(&self, key: MintedKey) -> Result<CreatedKey, StoreError> {
        let created = self.verifier.inner.admin.create(key).await?;
        // A guess of this id may sit in the negative cache.
        self.verifier.invalidate(created.record.id).await;
        Ok(created)
    }

    async fn get(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
        self.verifier.inner.admin.get(id).await
    }

    async fn list(&self, filter: &KeyFilter, page: PageRequest) -> Result<KeyPage, StoreError> {
        self.verifier.inner.admin.list(filter, page).await
    }

    async fn apply(&self, id: &KeyId, change: KeyChange) -> Result<KeyRecord, StoreError> {
        let result = self.verifier.inner.admin.apply(id, change).await;
        // Evict even on error: the store may have applied the change before failing to answer.
        self.verifier.invalidate(*id).await;
        result
    }

    async fn delete(&self, id: &KeyId) -> Result<(), StoreError> {
        let result = self.verifier.inner.admin.delete(id).await;
        self.verifier.invalidate(*id).await;
        result
    }
}
