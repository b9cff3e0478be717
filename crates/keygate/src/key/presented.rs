use std::fmt;

use zeroize::Zeroize;

use super::{KeyId, MAX_KEY_LEN};

/// A well-formed key taken from a request: checksum verified, not yet checked against a store.
///
/// It owns a copy of the key in a fixed inline buffer (no heap allocation), so a verification
/// future can outlive the request headers. The buffer is zeroed on drop and `Debug` shows only
/// the id. It is neither `Clone` nor `Serialize`:
///
/// ```compile_fail
/// fn copy(key: &keygate::PresentedKey) -> keygate::PresentedKey {
///     key.clone()
/// }
/// ```
///
/// ```compile_fail
/// fn to_json(key: &keygate::PresentedKey) -> serde_json::Result<String> {
///     serde_json::to_string(key)
/// }
/// ```
pub struct PresentedKey {
    id: KeyId,
    len: u8,
    /// Which of the keyring's environments the key's prefix names (0 for one format): a claim,
    /// checked against the stored record's prefix when the key is verified.
    environment: u8,
    bytes: [u8; MAX_KEY_LEN],
}

impl PresentedKey {
    /// `key` must already have passed [`KeyFormat::parse`](super::KeyFormat::parse).
    pub(crate) fn new(id: KeyId, key: &[u8], environment: u8) -> Self {
        let mut bytes = [0u8; MAX_KEY_LEN];
        let len = key.len().min(MAX_KEY_LEN);
        bytes[..len].copy_from_slice(&key[..len]);
        Self {
            id,
            // MAX_KEY_LEN < 256, checked at compile time below.
            len: len as u8,
            environment,
            bytes,
        }
    }

    /// The key's public id.
    #[must_use]
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The position of the key's prefix among the keyring's environments (0 for one format).
    pub(crate) fn environment(&self) -> u8 {
        self.environment
    }

    /// The hashed part of the key (`{id}_{secret}`).
    #[inline]
    pub(crate) fn digest_input(&self) -> &[u8] {
        super::digest_input(&self.bytes[..usize::from(self.len)])
    }
}

const _: () = assert!(MAX_KEY_LEN < 256);

impl Drop for PresentedKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for PresentedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
