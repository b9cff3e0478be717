//! The keyring: a deployment's key format plus its peppers. It mints keys and checks them.

use std::sync::Arc;
use std::time::SystemTime;

use crate::key::{InvalidPrefix, KeyFormat, PresentedKey};
use crate::pepper::{Digest, Peppers};
use crate::record::{InvalidInput, KeyRecord, MintedKey, NewKey};

/// A deployment's [`KeyFormat`] and [`Peppers`]. Cheap to clone.
///
/// ```
/// use keygate::{Keyring, NewKey};
/// let keyring = Keyring::development("acme_test")?;
/// let minted = keyring.mint(NewKey::new("ci"))?;
/// assert!(minted.record().prefix == "acme_test");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Keyring {
    format: KeyFormat,
    peppers: Arc<Peppers>,
}

impl Keyring {
    /// A keyring from a format and peppers.
    #[must_use]
    pub fn new(format: KeyFormat, peppers: Peppers) -> Self {
        Self {
            format,
            peppers: Arc::new(peppers),
        }
    }

    /// A keyring for `prefix` on the public development pepper (logs a warning once).
    ///
    /// # Errors
    /// [`InvalidPrefix`] for a bad prefix.
    pub fn development(prefix: &str) -> Result<Self, InvalidPrefix> {
        Ok(Self::new(KeyFormat::new(prefix)?, Peppers::development()))
    }

    /// The key format.
    #[must_use]
    pub fn format(&self) -> &KeyFormat {
        &self.format
    }

    /// The peppers.
    #[must_use]
    pub fn peppers(&self) -> &Peppers {
        &self.peppers
    }

    /// Generates a key for `spec`: validates it, draws id and secret, hashes the key with the
    /// current pepper, and returns the record to store with the plaintext to show once.
    ///
    /// # Errors
    /// [`InvalidInput`] when the name, owner, scopes, ranges or expiry are unacceptable.
    pub fn mint(&self, spec: NewKey) -> Result<MintedKey, InvalidInput> {
        self.mint_at(spec, SystemTime::now())
    }

    /// [`Keyring::mint`] with an explicit creation time.
    ///
    /// # Errors
    /// As [`Keyring::mint`].
    pub fn mint_at(&self, spec: NewKey, now: SystemTime) -> Result<MintedKey, InvalidInput> {
        spec.validate(now)?;
        let (id, key) = self.format.generate();
        let (pepper_version, digest) = self
            .peppers
            .digest(crate::key::digest_input(key.expose_secret().as_bytes()));
        let record = KeyRecord {
            id,
            prefix: self.format.prefix().to_owned(),
            name: spec.name,
            owner: spec.owner,
            digest,
            pepper_version,
            scopes: spec.scopes,
            metadata: spec.metadata,
            allowed_ips: spec.allowed_ips,
            rate_limit: spec.rate_limit,
            created_at: now,
            updated_at: now,
            expires_at: spec.expires_at,
            disabled_at: None,
            revoked_at: None,
            rotated_from: None,
            last_used_at: None,
        };
        Ok(MintedKey { record, key })
    }

    /// Whether `presented` hashes to `digest` under pepper `version` (constant-time compare).
    #[must_use]
    pub fn matches(&self, presented: &PresentedKey, version: u32, digest: &Digest) -> bool {
        self.peppers
            .verify(version, presented.digest_input(), digest)
    }
}
