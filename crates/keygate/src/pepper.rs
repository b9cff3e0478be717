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
//! # Development default
//! With no pepper configured, [`Peppers::development`] uses the public, well-known pepper
//! [`DEVELOPMENT_PEPPER`] as version 0 and logs one warning. Digests made with it protect nothing:
//! never run production keys on it.

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
        self.0.ct_eq(&other.0).into()
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

    /// The public development pepper (version 0). Logs a warning, once per process.
    #[must_use]
    pub fn development() -> Self {
        static WARN: Once = Once::new();
        WARN.call_once(|| {
            tracing::warn!(
                target: "keygate",
                "no pepper configured: using the public development pepper; set {PEPPER_ENV} before storing real keys"
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

    /// Reads `KEYGATE_PEPPER` if set, else the development pepper (with its warning).
    ///
    /// # Errors
    /// The variable is set but malformed.
    pub fn from_env_or_development() -> Result<Self, PepperError> {
        match Self::from_env() {
            Err(PepperError::NotSet) => Ok(Self::development()),
            other => other,
        }
    }

    /// Parses `VERSION:SECRET[,VERSION:SECRET…]`; a single bare `SECRET` is version 1.
    ///
    /// # Errors
    /// A malformed entry, a short secret or a repeated version.
    pub fn parse(value: &str) -> Result<Self, PepperError> {
        let value = value.trim();
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

    const A: &str = "0123456789abcdef0123456789abcdef-a";
    const B: &str = "0123456789abcdef0123456789abcdef-b";

    #[test]
    fn old_versions_still_verify() {
        let old = Peppers::new(Pepper::new(1, A).unwrap_or_else(|e| panic!("{e}")));
        let (v, d) = old.digest(b"key");
        let rotated = Peppers::parse(&format!("2:{B},1:{A}")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rotated.current().version(), 2);
        assert!(rotated.verify(v, b"key", &d));
        assert!(!rotated.verify(v, b"kez", &d));
        assert!(!rotated.verify(7, b"key", &d));
        let (v2, d2) = rotated.digest(b"key");
        assert_eq!(v2, 2);
        assert_ne!(d2.as_bytes(), d.as_bytes());
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
