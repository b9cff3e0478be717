use std::fmt;

use zeroize::Zeroize;

use super::KeyId;
use super::format::DIGEST_INPUT_LEN;

/// A well-formed key taken from a request: checksum verified, not yet checked against a store.
///
/// It owns a copy of the key's hashed part in a fixed inline buffer (no heap allocation), so a
/// verification future can outlive the request headers. The buffer is zeroed on drop and
/// `Debug` shows only the id. It is neither `Clone` nor `Serialize`:
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
    /// Which of the keyring's environments the key's prefix names (0 for one format): a claim,
    /// checked against the stored record's prefix when the key is verified.
    environment: u8,
    /// The hashed part, `{id}_{secret}`, and nothing else: the prefix was checked against the
    /// keyring and the checksum against the key when it was parsed, and neither is read again.
    /// 43 bytes instead of the whole key's up to 82 keep every value that carries a presented
    /// key (a check waiting for the store, the adapters' admissions) a cache line smaller.
    input: [u8; DIGEST_INPUT_LEN],
}

impl PresentedKey {
    /// `key` must already have passed [`KeyFormat::parse`](super::KeyFormat::parse).
    pub(crate) fn new(id: KeyId, key: &[u8], environment: u8) -> Self {
        let mut input = [0u8; DIGEST_INPUT_LEN];
        let hashed = super::digest_input(key);
        let len = hashed.len().min(DIGEST_INPUT_LEN);
        input[..len].copy_from_slice(&hashed[..len]);
        debug_assert_eq!(&input[..KeyId::LEN], id.as_bytes());
        Self { environment, input }
    }

    /// The key's public id.
    #[must_use]
    pub fn id(&self) -> KeyId {
        let mut id = [0u8; KeyId::LEN];
        id.copy_from_slice(&self.input[..KeyId::LEN]);
        // The input starts with the id, which the parser checked (base62, `KeyId::LEN` long).
        KeyId::from_checked(id)
    }

    /// The position of the key's prefix among the keyring's environments (0 for one format).
    pub(crate) fn environment(&self) -> u8 {
        self.environment
    }

    /// The hashed part of the key (`{id}_{secret}`).
    #[inline]
    pub(crate) fn digest_input(&self) -> &[u8] {
        &self.input
    }
}

impl Drop for PresentedKey {
    fn drop(&mut self) {
        self.input.zeroize();
    }
}

impl fmt::Debug for PresentedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedKey")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}
