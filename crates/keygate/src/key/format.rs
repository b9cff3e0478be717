use std::fmt;
use std::sync::Arc;

use super::{KeyId, PlaintextKey, PresentedKey};
use crate::base62;

/// Number of base62 characters of secret in a key: 30 × log₂(62) ≈ 178 bits.
pub const SECRET_LEN: usize = 30;
/// Number of base62 characters of the trailing CRC32 checksum.
pub const CHECKSUM_LEN: usize = 6;
/// Longest accepted deployment prefix.
pub const MAX_PREFIX_LEN: usize = 32;
/// Longest possible key: `{prefix}_{id}_{secret}{crc}` with the longest prefix.
pub const MAX_KEY_LEN: usize = MAX_PREFIX_LEN + 1 + KeyId::LEN + 1 + SECRET_LEN + CHECKSUM_LEN;

/// Length of everything after the prefix: `_{id}_{secret}{crc}`.
const TAIL_LEN: usize = 1 + KeyId::LEN + 1 + SECRET_LEN + CHECKSUM_LEN;
/// Length of the part of a key that is hashed: `{id}_{secret}`.
const DIGEST_INPUT_LEN: usize = KeyId::LEN + 1 + SECRET_LEN;

/// The part of a well-formed key that is hashed at rest: `{id}_{secret}`.
///
/// The prefix and checksum are public or derived, checked in clear (the prefix is also stored
/// with the record and compared on load), so hashing them adds nothing but work: 43 bytes fit
/// one SHA-256 block, so HMAC's inner hash takes one compression instead of two, whatever the
/// prefix's length.
pub(crate) fn digest_input(key: &[u8]) -> &[u8] {
    let end = key.len().saturating_sub(CHECKSUM_LEN);
    &key[end.saturating_sub(DIGEST_INPUT_LEN)..end]
}

/// The key format of one deployment: `{prefix}_{id}_{secret}{crc}`.
///
/// - `prefix` names the deployment (`acme_live`): lowercase ASCII letters, digits and `_`,
///   starting with a letter, not ending with `_`, at most 32 characters. It makes leaked keys easy
///   to attribute and lets secret scanners find them.
/// - `id` is [`KeyId::LEN`] random base62 characters: the public handle used for lookup.
/// - `secret` is [`SECRET_LEN`] base62 characters from the OS CSPRNG (≈ 178 bits).
/// - `crc` is the CRC32 of everything before it, as [`CHECKSUM_LEN`] base62 characters, so typos
///   and truncated keys are refused without touching any cache or store.
///
/// A secret scanner finds keys of prefix `acme_live` with the regular expression
/// [`KeyFormat::scanner_regex`]:
///
/// ```text
/// \bacme_live_[0-9A-Za-z]{12}_[0-9A-Za-z]{36}\b
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct KeyFormat {
    prefix: Arc<str>,
}

/// Why a deployment prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid key prefix {prefix:?}: use 1 to {max} lowercase letters, digits or '_', starting with a letter and not ending with '_'",
    max = MAX_PREFIX_LEN
)]
pub struct InvalidPrefix {
    prefix: String,
}

/// Why a presented key was refused by [`KeyFormat::parse`]. None of these touch a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Wrong length, wrong separators or a character outside the alphabet.
    #[error("malformed key")]
    Malformed,
    /// Well-formed, but for another deployment's prefix.
    #[error("key prefix does not match this deployment")]
    WrongPrefix,
    /// The checksum does not match: a typo, a truncated or a forged key.
    #[error("key checksum mismatch")]
    BadChecksum,
}

/// A key that passed [`KeyFormat::parse`]: it borrows the input, nothing is copied.
#[derive(Clone, Copy)]
pub struct ParsedKey<'a> {
    id: KeyId,
    key: &'a [u8],
}

impl ParsedKey<'_> {
    /// The key's public id.
    #[must_use]
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Copies the key into an owned [`PresentedKey`] (inline buffer, no allocation).
    #[must_use]
    pub fn to_presented(&self) -> PresentedKey {
        PresentedKey::new(self.id, self.key)
    }
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl KeyFormat {
    /// A key format for `prefix`.
    ///
    /// # Errors
    /// [`InvalidPrefix`] unless the prefix follows the rules above.
    pub fn new(prefix: &str) -> Result<Self, InvalidPrefix> {
        let bytes = prefix.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= MAX_PREFIX_LEN
            && bytes[0].is_ascii_lowercase()
            && bytes[bytes.len() - 1] != b'_'
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
        if valid {
            Ok(Self {
                prefix: Arc::from(prefix),
            })
        } else {
            Err(InvalidPrefix {
                prefix: prefix.chars().take(64).collect(),
            })
        }
    }

    /// The deployment prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The exact length of every key of this format.
    #[must_use]
    pub fn key_len(&self) -> usize {
        self.prefix.len() + TAIL_LEN
    }

    /// The regular expression a secret scanner uses to find leaked keys of this format.
    #[must_use]
    pub fn scanner_regex(&self) -> String {
        format!(
            r"\b{}_[0-9A-Za-z]{{{}}}_[0-9A-Za-z]{{{}}}\b",
            self.prefix,
            KeyId::LEN,
            SECRET_LEN + CHECKSUM_LEN
        )
    }

    /// Generates a new key: a random id and secret from the OS CSPRNG, plus its checksum.
    #[must_use]
    pub fn generate(&self) -> (KeyId, PlaintextKey) {
        let id = KeyId::random();
        let mut key = String::with_capacity(self.key_len());
        key.push_str(&self.prefix);
        key.push('_');
        key.push_str(id.as_str());
        key.push('_');
        let mut secret = [0u8; SECRET_LEN];
        base62::fill_random(&mut secret);
        // The alphabet is ASCII, so every byte is a char.
        key.extend(secret.iter().map(|b| char::from(*b)));
        secret.fill(0);
        let crc = base62::encode_u32_6(crc32fast::hash(key.as_bytes()));
        key.extend(crc.iter().map(|b| char::from(*b)));
        (id, PlaintextKey::new(key))
    }

    /// Checks a presented key's length, separators, alphabet, prefix and checksum.
    ///
    /// It reads the input once, allocates nothing and never touches a cache or store.
    ///
    /// # Errors
    /// [`FormatError`] says which check failed (kept for the audit log; clients see one answer).
    pub fn parse<'a>(&self, key: &'a [u8]) -> Result<ParsedKey<'a>, FormatError> {
        if key.len() > MAX_KEY_LEN || key.len() <= TAIL_LEN {
            return Err(FormatError::Malformed);
        }
        // Parse from the right: id, secret and checksum are base62 (no '_'), so the split is
        // unambiguous even though the prefix may contain '_'.
        let split = key.len() - TAIL_LEN;
        let (prefix, tail) = key.split_at(split);
        let id_bytes = &tail[1..=KeyId::LEN];
        let rest = &tail[KeyId::LEN + 2..];
        if tail[0] != b'_'
            || tail[KeyId::LEN + 1] != b'_'
            || !base62::all_base62(rest)
            || !prefix
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
        {
            return Err(FormatError::Malformed);
        }
        let id = KeyId::from_bytes(id_bytes).ok_or(FormatError::Malformed)?;
        if prefix != self.prefix.as_bytes() {
            return Err(FormatError::WrongPrefix);
        }
        let (body, crc) = key.split_at(key.len() - CHECKSUM_LEN);
        if base62::encode_u32_6(crc32fast::hash(body)) != crc {
            return Err(FormatError::BadChecksum);
        }
        Ok(ParsedKey { id, key })
    }
}

impl fmt::Debug for KeyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFormat")
            .field("prefix", &self.prefix)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format() -> KeyFormat {
        KeyFormat::new("acme_live").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn prefixes() {
        for ok in ["a", "acme_live", "kg2", "a_b_c"] {
            assert!(KeyFormat::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Acme",
            "1abc",
            "acme_",
            "acme-live",
            "acme live",
            &"a".repeat(33),
        ] {
            assert!(KeyFormat::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_key_parses_back() {
        let f = format();
        let (id, key) = f.generate();
        let text = key.expose_secret();
        assert_eq!(text.len(), f.key_len());
        assert!(text.starts_with("acme_live_"));
        let parsed = f.parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.id(), id);
    }

    #[test]
    fn digest_input_is_id_and_secret() {
        let f = format();
        let (id, key) = f.generate();
        let text = key.expose_secret();
        let input = digest_input(text.as_bytes());
        assert_eq!(input.len(), DIGEST_INPUT_LEN);
        assert!(input.starts_with(id.as_str().as_bytes()));
        assert_eq!(
            input,
            &text.as_bytes()[f.prefix().len() + 1..text.len() - CHECKSUM_LEN]
        );
    }

    #[test]
    fn refusals() {
        let f = format();
        let (_, key) = f.generate();
        let text = key.expose_secret().to_owned();
        let other = KeyFormat::new("acme_test").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            other.parse(text.as_bytes()).err(),
            Some(FormatError::WrongPrefix)
        );
        assert_eq!(f.parse(b"").err(), Some(FormatError::Malformed));
        assert_eq!(
            f.parse(&text.as_bytes()[1..]).err(),
            Some(FormatError::WrongPrefix)
        );
        assert_eq!(
            f.parse(&text.as_bytes()[..text.len() - 1]).err(),
            Some(FormatError::Malformed)
        );
        let mut typo = text.into_bytes();
        let last = typo.len() - 1;
        typo[last] = if typo[last] == b'a' { b'b' } else { b'a' };
        assert_eq!(f.parse(&typo).err(), Some(FormatError::BadChecksum));
    }
}
