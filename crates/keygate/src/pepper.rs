//! Hashing at rest: HMAC-SHA256 keyed by a server pepper, with versions so peppers can rotate.
//!
//! A store keeps, per key, the [`Digest`] of the key's `{id}_{secret}` part and the version of
//! the pepper that made it. [`Peppers`] holds the current pepper (used for new keys) and any number of older ones, so
//! records made under an older pepper keep verifying after a new one becomes current.
//!
//! # Configuring peppers
//! `KEYGATE_PEPPER` (read by [`Peppers::from_env`]) holds one or more comma-separated entries
//! `VERSION:SECRET`; the first is current. A bare `SECRET` means version 1. Each secret must be at
//! least 32 bytes; generate one with `openssl rand -base64 48`.
//!
//! # The development pepper
//! [`Peppers::development`] (or `KEYGATE_PEPPER=development`) uses the public, well-known pepper
//! [`DEVELOPMENT_PEPPER`] as version 0 and logs one warning. Digests made with it protect
//! nothing: it is only ever used when asked for by name, never as a fallback for a missing
//! pepper. A store first used with it records that it is a development store; real peppers are
//! refused there, and the development pepper is refused on any other store.
//!
//! # Fingerprints
//! [`Pepper::fingerprint`] is a short, public HMAC of a fixed label under the pepper. Stores
//! record one per pepper version they have keys under (never the pepper), so a verifier
//! ([`VerifierBuilder::start`](crate::VerifierBuilder::start)) or the CLI given a different
//! pepper for that version refuses to start instead of answering 401 to every key.

use std::fmt;
use std::sync::Once;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

type HmacSha256 = Hmac<Sha256>;

/// The public development pepper, used as version 0 when nothing else is configured.
pub const DEVELOPMENT_PEPPER: &str =
    "keygate-development-pepper-not-secret-do-not-use-in-production";
/// The version number of [`DEVELOPMENT_PEPPER`].
pub const DEVELOPMENT_PEPPER_VERSION: u32 = 0;
/// Shortest accepted pepper secret, in bytes.
pub const MIN_PEPPER_LEN: usize = 32;
/// The environment variable read by [`Peppers::from_env`].
pub const PEPPER_ENV: &str = "KEYGATE_PEPPER";
/// The value of [`PEPPER_ENV`] (or a pepper file) that asks for [`Peppers::development`].
pub const DEVELOPMENT_VALUE: &str = "development";

/// An HMAC-SHA256 digest of a key. Stores keep this, never the key.
///
/// `Debug` is redacted: a digest is not a secret in the same sense as the key, but it is an
/// offline-guessing target if the pepper leaks, so it stays out of logs and audit events.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Wraps 32 bytes read from a store.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Reads a digest from a slice; `None` unless it is exactly 32 bytes.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The raw bytes, for writing to a store.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time equality: the time taken does not depend on where the digests differ.
    #[must_use]
    pub fn ct_eq(&self, other: &Digest) -> bool {
        // Word by word: the four 64-bit differences are ORed together, each step through an
        // optimisation barrier (so no early exit can be compiled in), and the result compared
        // with zero in constant time. Every byte is read whatever the others hold. subtle's
        // byte-wise compare does the same with a barrier per byte: ~300 instructions a
        // compare on the hot path, against ~30 here.
        let (ours, _) = self.0.as_chunks::<8>();
        let (theirs, _) = other.0.as_chunks::<8>();
        let mut difference = 0u64;
        for (a, b) in ours.iter().zip(theirs) {
            difference = std::hint::black_box(
                difference | (u64::from_ne_bytes(*a) ^ u64::from_ne_bytes(*b)),
            );
        }
        difference.ct_eq(&0).into()
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest([redacted])")
    }
}

/// Why a pepper configuration was refused. Messages never contain the pepper.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PepperError {
    /// The secret is shorter than [`MIN_PEPPER_LEN`].
    #[error("pepper version {version} is too short: use at least {MIN_PEPPER_LEN} bytes")]
    TooShort {
        /// The version of the offending entry.
        version: u32,
    },
    /// Two peppers share a version.
    #[error("pepper version {version} is configured twice")]
    DuplicateVersion {
        /// The repeated version.
        version: u32,
    },
    /// An entry of `KEYGATE_PEPPER` could not be read.
    #[error(
        "{PEPPER_ENV} entry {position} is not `VERSION:SECRET` with a numeric version (entries are comma-separated)"
    )]
    BadEntry {
        /// 1-based position of the entry.
        position: usize,
    },
    /// The environment variable is not set or not UTF-8.
    #[error("{PEPPER_ENV} is not set (or not valid UTF-8)")]
    NotSet,
}

/// One pepper: a version and an HMAC state keyed once, cloned per digest.
#[derive(Clone)]
pub struct Pepper {
    version: u32,
    mac: HmacSha256,
}

impl Pepper {
    /// A pepper with the given version and secret (≥ [`MIN_PEPPER_LEN`] bytes).
    ///
    /// # Errors
    /// [`PepperError::TooShort`] for a short secret.
    pub fn new(version: u32, secret: impl AsRef<[u8]>) -> Result<Self, PepperError> {
        let secret = secret.as_ref();
        if secret.len() < MIN_PEPPER_LEN {
            return Err(PepperError::TooShort { version });
        }
        Ok(Self::keyed(version, secret))
    }

    fn keyed(version: u32, secret: &[u8]) -> Self {
        // RFC 2104 turns any key into one 64-byte block (hashed first if longer, zero-padded),
        // which is what `new_from_slice` does inside. Doing it here lets us use the infallible
        // `new`: there is no error path, so no fallback key that could silently be weak. The
        // block is a copy of the secret, wiped before returning. (The keyed HMAC state itself
        // lives in `hmac`, whose 0.12 release has no `zeroize` support.)
        let mut block = [0u8; 64];
        if secret.len() > block.len() {
            use sha2::Digest as _;
            let mut hashed: [u8; 32] = Sha256::digest(secret).into();
            block[..hashed.len()].copy_from_slice(&hashed);
            hashed.zeroize();
        } else {
            block[..secret.len()].copy_from_slice(secret);
        }
        let mac = <HmacSha256 as Mac>::new(&block.into());
        block.zeroize();
        Self { version, mac }
    }

    /// The pepper's version.
    #[must_use]
    pub fn version(&self) -> u32 {
        self.version
    }

    fn digest(&self, key: &[u8]) -> Digest {
        let mut mac = self.mac.clone();
        mac.update(key);
        Digest(mac.finalize().into_bytes().into())
    }

    /// A short public fingerprint of this pepper: the first [`FINGERPRINT_LEN`] bytes of
    /// HMAC-SHA256(pepper, `"keygate pepper fingerprint v1"`), in hex. Stores record it per
    /// version so a service or CLI given another pepper refuses to start; it tells peppers
    /// apart without revealing them. (Like a digest, it lets someone who holds it test guesses
    /// of the pepper offline: use a random pepper.) The label has spaces, so it can never be
    /// the `{id}_{secret}` input of a key's digest.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        let digest = self.digest(FINGERPRINT_LABEL);
        digest.0[..FINGERPRINT_LEN]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// Whether this is the public [`DEVELOPMENT_PEPPER`] (under any version).
    #[must_use]
    pub fn is_development(&self) -> bool {
        self.fingerprint() == development_fingerprint()
    }
}

/// The input HMAC'd by [`Pepper::fingerprint`].
const FINGERPRINT_LABEL: &[u8] = b"keygate pepper fingerprint v1";
/// Bytes of HMAC output a [`Pepper::fingerprint`] keeps (16 hex characters).
pub const FINGERPRINT_LEN: usize = 8;

/// The fingerprint of [`DEVELOPMENT_PEPPER`].
#[must_use]
pub fn development_fingerprint() -> String {
    Pepper::keyed(DEVELOPMENT_PEPPER_VERSION, DEVELOPMENT_PEPPER.as_bytes()).fingerprint()
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pepper")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The current pepper plus older ones still accepted for verification.
#[derive(Clone, Debug)]
pub struct Peppers {
    // Current first. Few entries, so a linear scan beats a map.
    all: Vec<Pepper>,
}

impl Peppers {
    /// Peppers with `current` used for new digests.
    #[must_use]
    pub fn new(current: Pepper) -> Self {
        Self { all: vec![current] }
    }

    /// Adds an older pepper that still verifies existing records.
    ///
    /// # Errors
    /// [`PepperError::DuplicateVersion`] if the version is already present.
    pub fn with_previous(mut self, pepper: Pepper) -> Result<Self, PepperError> {
        if self.get(pepper.version).is_some() {
            return Err(PepperError::DuplicateVersion {
                version: pepper.version,
            });
        }
        self.all.push(pepper);
        Ok(self)
    }

    /// The public development pepper (version 0), asked for by name: for quickstarts, demos
    /// and tests. Logs a warning, once per process (target `keygate::development_pepper`, so a
    /// program that says so itself can turn it off). A store first used with it records that it
    /// is a development store, and refuses real peppers from then on (see
    /// [`crate::store::StoreSettings`]).
    #[must_use]
    pub fn development() -> Self {
        static WARN: Once = Once::new();
        WARN.call_once(|| {
            tracing::warn!(
                target: "keygate::development_pepper",
                "using the public development pepper: keys hashed with it protect nothing; set {PEPPER_ENV} to a secret for real keys"
            );
        });
        Self::new(Pepper::keyed(
            DEVELOPMENT_PEPPER_VERSION,
            DEVELOPMENT_PEPPER.as_bytes(),
        ))
    }

    /// Reads peppers from `KEYGATE_PEPPER` (see the [module docs](self)).
    ///
    /// # Errors
    /// [`PepperError::NotSet`] when the variable is absent, or the error of a bad entry.
    pub fn from_env() -> Result<Self, PepperError> {
        let mut value = std::env::var(PEPPER_ENV).map_err(|_| PepperError::NotSet)?;
        let peppers = Self::parse(&value);
        // Our copy of the secret; the process environment keeps its own, out of our reach.
        value.zeroize();
        peppers
    }

    /// Parses `VERSION:SECRET[,VERSION:SECRET…]`; a single bare `SECRET` is version 1. The
    /// exact value [`DEVELOPMENT_VALUE`] (`development`) asks for [`Peppers::development`] by
    /// name.
    ///
    /// # Errors
    /// A malformed entry, a short secret or a repeated version.
    pub fn parse(value: &str) -> Result<Self, PepperError> {
        let value = value.trim();
        if value == DEVELOPMENT_VALUE {
            return Ok(Self::development());
        }
        let versioned = value
            .split_once(':')
            .is_some_and(|(v, _)| v.trim().parse::<u32>().is_ok());
        if !value.contains(',') && !versioned {
            return Ok(Self::new(Pepper::new(1, value)?));
        }
        let mut peppers: Option<Self> = None;
        for (index, entry) in value.split(',').enumerate() {
            let (version, secret) = entry
                .trim()
                .split_once(':')
                .and_then(|(v, s)| Some((v.trim().parse::<u32>().ok()?, s)))
                .ok_or(PepperError::BadEntry {
                    position: index + 1,
                })?;
            let pepper = Pepper::new(version, secret)?;
            peppers = Some(match peppers {
                None => Self::new(pepper),
                Some(p) => p.with_previous(pepper)?,
            });
        }
        peppers.ok_or(PepperError::BadEntry { position: 1 })
    }

    /// The pepper new keys are hashed with.
    #[must_use]
    pub fn current(&self) -> &Pepper {
        &self.all[0]
    }

    /// Every pepper, the current one first.
    pub fn iter(&self) -> impl Iterator<Item = &Pepper> {
        self.all.iter()
    }

    /// Whether any of these peppers is the public [`DEVELOPMENT_PEPPER`].
    #[must_use]
    pub fn is_development(&self) -> bool {
        let development = development_fingerprint();
        self.all.iter().any(|p| p.fingerprint() == development)
    }

    /// The pepper of a given version, if loaded.
    #[must_use]
    pub fn get(&self, version: u32) -> Option<&Pepper> {
        self.all.iter().find(|p| p.version == version)
    }

    /// Digest of `key` under the current pepper, with that pepper's version.
    #[must_use]
    pub fn digest(&self, key: &[u8]) -> (u32, Digest) {
        let current = self.current();
        (current.version, current.digest(key))
    }

    /// Whether `key` hashes to `expected` under pepper `version`, compared in constant time.
    /// An unknown version never matches.
    #[must_use]
    pub fn verify(&self, version: u32, key: &[u8], expected: &Digest) -> bool {
        match self.get(version) {
            Some(pepper) => pepper.digest(key).ct_eq(expected),
            None => {
                tracing::warn!(target: "keygate", pepper_version = version, "record hashed with a pepper version that is not loaded");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_tells_every_difference() {
        let base: [u8; 32] = std::array::from_fn(|i| u8::try_from(i * 7 + 3).unwrap_or(0));
        let digest = Digest::from_bytes(base);
        assert!(digest.ct_eq(&Digest::from_bytes(base)));
        // Every single bit, in every byte.
        for byte in 0..32 {
            for bit in 0..8 {
                let mut other = base;
                other[byte] ^= 1 << bit;
                assert!(
                    !digest.ct_eq(&Digest::from_bytes(other)),
                    "byte {byte} bit {bit}"
                );
            }
        }
        // The same difference in two words (XOR-accumulating would cancel it), and in all four.
        for words in [[0usize, 1].as_slice(), &[2, 3], &[0, 3], &[0, 1, 2, 3]] {
            let mut other = base;
            for word in words {
                other[word * 8] ^= 0x5a;
            }
            assert!(!digest.ct_eq(&Digest::from_bytes(other)), "words {words:?}");
        }
        // Differences the two sides share cancel only when the digests are equal.
        let zero = Digest::from_bytes([0; 32]);
        assert!(zero.ct_eq(&Digest::from_bytes([0; 32])));
        assert!(!zero.ct_eq(&Digest::from_bytes([0xff; 32])));
    }

    const A: &str = "0123456789abcdef0123456789abcdef-a";
    const B: &str = "0123456789abcdef0123456789abcdef-b";

    #[test]
    fn old_versions_still_verify() {
        let old = Peppers::new(Pepper::new(1, A).unwrap());
        let (v, d) = old.digest(b"key");
        let rotated = Peppers::parse(&format!("2:{B},1:{A}")).unwrap();
        assert_eq!(rotated.current().version(), 2);
        assert!(rotated.verify(v, b"key", &d));
        assert!(!rotated.verify(v, b"kez", &d));
        assert!(!rotated.verify(7, b"key", &d));
        let (v2, d2) = rotated.digest(b"key");
        assert_eq!(v2, 2);
        assert_ne!(d2.as_bytes(), d.as_bytes());
    }

    #[test]
    fn fingerprints_tell_peppers_apart_and_hide_them() {
        let a = Pepper::new(1, A).unwrap();
        let b = Pepper::new(1, B).unwrap();
        let fingerprint = a.fingerprint();
        assert_eq!(fingerprint.len(), 2 * FINGERPRINT_LEN);
        assert!(fingerprint.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(fingerprint, b.fingerprint());
        // The version is not part of it: the same secret under another version is recognised.
        let a7 = Pepper::new(7, A).unwrap();
        assert_eq!(fingerprint, a7.fingerprint());
        assert!(!a.is_development());
        assert!(!Peppers::new(a).is_development());
    }

    #[test]
    fn the_development_pepper_only_by_name() {
        let named = Peppers::parse(DEVELOPMENT_VALUE).unwrap();
        assert!(named.is_development());
        assert_eq!(named.current().version(), DEVELOPMENT_PEPPER_VERSION);
        assert_eq!(named.current().fingerprint(), development_fingerprint());
        assert!(Peppers::development().is_development());
        let by_value = Peppers::parse(&format!("3:{A},0:{DEVELOPMENT_PEPPER}")).unwrap();
        assert!(
            by_value.is_development(),
            "the public pepper under any entry"
        );
        assert!(!Peppers::parse(A).unwrap().is_development());
        // A look-alike is an ordinary (too short) pepper, never the development one.
        assert!(Peppers::parse("Development").is_err());
    }

    #[test]
    fn parse_errors_do_not_leak() {
        assert_eq!(
            Peppers::parse("short").err(),
            Some(PepperError::TooShort { version: 1 })
        );
        let err = Peppers::parse(&format!("1:{A},x:{B}")).err();
        assert_eq!(err, Some(PepperError::BadEntry { position: 2 }));
        assert!(!format!("{err:?}").contains("0123456789"));
        assert_eq!(
            Peppers::parse(&format!("1:{A},1:{B}")).err(),
            Some(PepperError::DuplicateVersion { version: 1 })
        );
        assert_eq!(Peppers::parse(A).map(|p| p.current().version()), Ok(1));
    }
}
