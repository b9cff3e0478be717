use std::fmt;
use std::str::FromStr;

use crate::base62;

/// The public half of a key: a random base62 handle used for lookup, audit and display.
///
/// A `KeyId` is not secret. It is `Copy`, twelve ASCII bytes, and never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; KeyId::LEN]);

impl KeyId {
    /// Number of base62 characters in an id (≈ 71 bits).
    pub const LEN: usize = 12;

    /// Parses an id from bytes; `None` unless exactly [`KeyId::LEN`] base62 characters.
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let array: [u8; Self::LEN] = bytes.try_into().ok()?;
        base62::all_base62(&array).then_some(Self(array))
    }

    /// An id from bytes the caller has checked already (a parsed key's): no second check.
    #[inline]
    pub(crate) fn from_checked(bytes: [u8; Self::LEN]) -> Self {
        debug_assert!(base62::all_base62(&bytes));
        Self(bytes)
    }

    /// A fresh random id from the operating system's CSPRNG.
    #[must_use]
    pub fn random() -> Self {
        let mut id = [0u8; Self::LEN];
        base62::fill_random(&mut id);
        Self(id)
    }

    /// The id's bytes (ASCII), without the UTF-8 check of [`KeyId::as_str`].
    pub(crate) fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Construction guarantees ASCII, so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.as_str())
    }
}

/// Error returned when text is not a valid [`KeyId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid key id: expected {len} base62 characters (0-9, A-Z, a-z)", len = KeyId::LEN)]
pub struct InvalidKeyId;

impl FromStr for KeyId {
    type Err = InvalidKeyId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_bytes(s.as_bytes()).ok_or(InvalidKeyId)
    }
}

impl AsRef<str> for KeyId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_are_the_id_itself() {
        let id: KeyId = "4fT0qKb2mZ9x".parse().unwrap();
        assert_eq!(id.as_str(), "4fT0qKb2mZ9x");
        assert_eq!(id.as_bytes(), b"4fT0qKb2mZ9x");
        assert_eq!(id.to_string(), "4fT0qKb2mZ9x");
        assert_eq!(AsRef::<str>::as_ref(&id), "4fT0qKb2mZ9x");
        assert_eq!(format!("{id:?}"), "KeyId(4fT0qKb2mZ9x)");
        for bad in [
            "",
            "4fT0qKb2mZ9",
            "4fT0qKb2mZ9x0",
            "4fT0qKb2mZ9-",
            "4fT0qKb2mZ_x",
        ] {
            assert_eq!(bad.parse::<KeyId>(), Err(InvalidKeyId), "{bad:?}");
        }
    }

    #[test]
    fn random_ids_are_base62_and_differ() {
        let a = KeyId::random();
        let b = KeyId::random();
        assert!(base62::all_base62(a.as_bytes()));
        assert_ne!(a, b, "two random ids collide with probability 2⁻⁷¹");
    }
}
