use std::fmt;
use std::sync::Arc;

use zeroize::Zeroize;

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
pub(crate) const DIGEST_INPUT_LEN: usize = KeyId::LEN + 1 + SECRET_LEN;

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

/// A key that passed [`KeyFormat::parse`] (or [`Keyring::parse`](crate::Keyring::parse)): it
/// borrows the input, nothing is copied.
#[derive(Clone, Copy)]
pub struct ParsedKey<'a> {
    id: KeyId,
    key: &'a [u8],
    /// The position of the key's prefix among its keyring's environments (0 for one format).
    environment: u8,
}

impl ParsedKey<'_> {
    /// The key's public id.
    #[must_use]
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The position of the key's prefix among the keyring's
    /// [environments](crate::Keyring::environments): 0 for a keyring of one format. Only a
    /// claim until the key is verified: the verifier accepts it only if the stored record has
    /// the same prefix.
    #[must_use]
    pub fn environment_index(&self) -> usize {
        usize::from(self.environment)
    }

    /// Copies the key into an owned [`PresentedKey`] (inline buffer, no allocation).
    #[must_use]
    pub fn to_presented(&self) -> PresentedKey {
        PresentedKey::new(self.id, self.key, self.environment)
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
        // Sized exactly, so the pushes below never reallocate: a reallocation would free a
        // buffer holding part of the secret without zeroing it.
        let mut key = String::with_capacity(self.key_len());
        key.push_str(&self.prefix);
        key.push('_');
        key.push_str(id.as_str());
        key.push('_');
        let mut secret = [0u8; SECRET_LEN];
        base62::fill_random(&mut secret);
        // The alphabet is ASCII, so every byte is a char.
        key.extend(secret.iter().map(|b| char::from(*b)));
        secret.zeroize();
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
    #[inline]
    pub fn parse<'a>(&self, key: &'a [u8]) -> Result<ParsedKey<'a>, FormatError> {
        let (prefix, id) = split(key)?;
        if prefix != self.prefix.as_bytes() {
            return Err(FormatError::WrongPrefix);
        }
        checksum(key)?;
        Ok(ParsedKey {
            id,
            key,
            environment: 0,
        })
    }

    /// [`KeyFormat::parse`] against several formats at once: the structure is checked once,
    /// then the prefix's bytes are matched against each format's, then the checksum. The
    /// parsed key records which format matched (its position in `formats`).
    ///
    /// `formats` holds at most 256 entries (the keyring checks).
    pub(crate) fn parse_among<'a, F>(
        formats: &[F],
        format_of: impl Fn(&F) -> &KeyFormat,
        key: &'a [u8],
    ) -> Result<ParsedKey<'a>, FormatError> {
        let (prefix, id) = split(key)?;
        let index = formats
            .iter()
            .position(|f| format_of(f).prefix.as_bytes() == prefix)
            .ok_or(FormatError::WrongPrefix)?;
        checksum(key)?;
        Ok(ParsedKey {
            id,
            key,
            environment: u8::try_from(index).map_err(|_| FormatError::WrongPrefix)?,
        })
    }
}

/// The structural checks of a presented key (length, separators, alphabet): its prefix bytes
/// and id. The prefix is not yet compared with any format, nor the checksum checked.
#[inline]
fn split(key: &[u8]) -> Result<(&[u8], KeyId), FormatError> {
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
    Ok((prefix, id))
}

/// Whether the trailing checksum is the CRC32 of everything before it.
#[inline]
fn checksum(key: &[u8]) -> Result<(), FormatError> {
    let (body, crc) = key.split_at(key.len() - CHECKSUM_LEN);
    if base62::encode_u32_6(crc32fast::hash(body)) == crc {
        Ok(())
    } else {
        Err(FormatError::BadChecksum)
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
        KeyFormat::new("acme_live").unwrap()
    }

    /// A key of `prefix` with the given middle parts and a correct checksum, whatever the parts
    /// are: so a refusal below can only come from the check under test, not the checksum.
    fn craft(prefix: &str, sep1: char, id: &str, sep2: char, secret: &str) -> Vec<u8> {
        let mut key = format!("{prefix}{sep1}{id}{sep2}{secret}").into_bytes();
        key.extend_from_slice(&base62::encode_u32_6(crc32fast::hash(&key)));
        key
    }

    const ID: &str = "4fT0qKb2mZ9x";
    const SECRET: &str = "Yh3kP0aQ9zLm2Xc7Vb1Nn8Rt5Ww6Ee";

    #[test]
    fn secret_has_at_least_128_bits_and_the_id_about_71() {
        // Every secret character is uniform over 62 symbols (see base62's χ² test), so a secret
        // carries SECRET_LEN × log₂ 62 bits: 30 × 5.954 ≈ 178.6.
        let bits_per_char = 62f64.log2();
        #[allow(clippy::cast_precision_loss)]
        let secret_bits = SECRET_LEN as f64 * bits_per_char;
        assert!(secret_bits >= 128.0, "secret has {secret_bits:.1} bits");
        // The id is public (a lookup handle, not a secret): ≈ 71.4 bits, so random ids collide
        // only after ~2³⁵ keys (birthday bound); a store refuses a duplicate id anyway.
        #[allow(clippy::cast_precision_loss)]
        let id_bits = KeyId::LEN as f64 * bits_per_char;
        assert!((71.0..72.0).contains(&id_bits), "id has {id_bits:.1} bits");
        assert_eq!(SECRET.len(), SECRET_LEN);
    }

    #[test]
    fn generated_key_buffer_is_sized_exactly() {
        // No reallocation while the key is built, so no freed buffer holds part of the secret.
        for prefix in ["a", "acme_live", &"a".repeat(MAX_PREFIX_LEN)] {
            let f = KeyFormat::new(prefix).unwrap();
            let (_, key) = f.generate();
            assert_eq!(key.expose_secret().len(), f.key_len());
            assert_eq!(key.capacity(), f.key_len());
            assert_eq!(f.key_len(), prefix.len() + 50);
        }
    }

    #[test]
    fn length_cap_is_the_longest_prefix_key() {
        assert_eq!(MAX_KEY_LEN, 82);
        let longest = KeyFormat::new(&"a".repeat(MAX_PREFIX_LEN)).unwrap();
        let (id, key) = longest.generate();
        assert_eq!(key.expose_secret().len(), MAX_KEY_LEN);
        let parsed = longest.parse(key.expose_secret().as_bytes()).unwrap();
        assert_eq!(parsed.id(), id);
        // One character more is refused as malformed by its length alone, before the prefix is
        // compared (a well-formed key of a 33-character prefix, correct checksum).
        let over = craft(&"a".repeat(MAX_PREFIX_LEN + 1), '_', ID, '_', SECRET);
        assert_eq!(over.len(), MAX_KEY_LEN + 1);
        assert_eq!(longest.parse(&over).err(), Some(FormatError::Malformed));
        assert_eq!(
            longest.parse(&vec![b'a'; 100_000]).err(),
            Some(FormatError::Malformed)
        );
        // At or below the tail's length there is no prefix: malformed, never "wrong prefix".
        let bare = craft("", '_', ID, '_', SECRET);
        assert_eq!(bare.len(), TAIL_LEN);
        assert_eq!(format().parse(&bare).err(), Some(FormatError::Malformed));
        assert_eq!(
            format().parse(&bare[1..]).err(),
            Some(FormatError::Malformed)
        );
    }

    #[test]
    fn each_structural_check_refuses_on_its_own() {
        let f = format();
        let good = craft("acme_live", '_', ID, '_', SECRET);
        assert_eq!(
            f.parse(&good).map(|p| p.id().to_string()),
            Ok(ID.to_owned())
        );
        // Each of these has a correct checksum, so only the named check can refuse it.
        let cases: [(&str, Vec<u8>); 6] = [
            ("first separator", craft("acme_live", 'x', ID, '_', SECRET)),
            ("second separator", craft("acme_live", '_', ID, 'x', SECRET)),
            (
                "secret alphabet",
                craft("acme_live", '_', ID, '_', &SECRET.replacen('Y', "-", 1)),
            ),
            (
                "id alphabet",
                craft("acme_live", '_', &ID.replacen('4', "-", 1), '_', SECRET),
            ),
            ("prefix case", craft("Acme_live", '_', ID, '_', SECRET)),
            ("prefix alphabet", craft("acme-live", '_', ID, '_', SECRET)),
        ];
        for (what, key) in cases {
            assert_eq!(f.parse(&key).err(), Some(FormatError::Malformed), "{what}");
        }
        // A non-base62 checksum character is malformed, not merely a checksum mismatch.
        let mut bad_crc = good.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] = b'-';
        assert_eq!(f.parse(&bad_crc).err(), Some(FormatError::Malformed));
        // Digits and '_' are prefix characters like lowercase letters.
        let digits = KeyFormat::new("a_b2").unwrap();
        assert!(digits.parse(&craft("a_b2", '_', ID, '_', SECRET)).is_ok());
    }

    #[test]
    fn scanner_regex_is_the_documented_one() {
        assert_eq!(
            format().scanner_regex(),
            r"\bacme_live_[0-9A-Za-z]{12}_[0-9A-Za-z]{36}\b"
        );
    }

    #[test]
    fn debug_shows_the_prefix_and_the_id_only() {
        let f = format();
        assert_eq!(f.prefix(), "acme_live");
        assert_eq!(format!("{f:?}"), r#"KeyFormat { prefix: "acme_live" }"#);
        let key = craft("acme_live", '_', ID, '_', SECRET);
        let parsed = f.parse(&key).unwrap();
        for shown in [format!("{parsed:?}"), format!("{parsed:#?}")] {
            assert!(shown.starts_with("ParsedKey"), "{shown}");
            assert!(shown.contains(ID), "{shown}");
            assert!(!shown.contains(&SECRET[..8]), "{shown}");
        }
        let presented = parsed.to_presented();
        assert_eq!(presented.id(), parsed.id());
        assert_eq!(presented.digest_input(), digest_input(&key));
        for shown in [format!("{presented:?}"), format!("{presented:#?}")] {
            assert!(shown.starts_with("PresentedKey"), "{shown}");
            assert!(shown.contains(ID), "{shown}");
            assert!(!shown.contains(&SECRET[..8]), "{shown}");
        }
        let (_, plain) = f.generate();
        let secret = &plain.expose_secret()[f.prefix().len() + 14..];
        assert_eq!(format!("{plain:?}"), "PlaintextKey([redacted])");
        assert_eq!(format!("{plain:#?}"), "PlaintextKey([redacted])");
        assert_eq!(format!("{plain}"), "[redacted]");
        assert!(!format!("{plain:?}{plain}").contains(&secret[..8]));
    }

    #[test]
    fn prefixes() {
        assert!(KeyFormat::new(&"a".repeat(MAX_PREFIX_LEN)).is_ok());
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
        let parsed = f.parse(text.as_bytes()).unwrap();
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
        let other = KeyFormat::new("acme_test").unwrap();
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
