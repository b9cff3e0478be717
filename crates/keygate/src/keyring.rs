//! The keyring: a deployment's key formats (one, or one per environment) plus its peppers. It
//! mints keys and checks them.
//!
//! # Environments
//! One service can accept keys of several formats, each naming an *environment*, like Stripe's
//! `sk_live_…` and `sk_test_…`: build the keyring with [`Keyring::builder`], one
//! [`environment`](KeyringBuilder::environment) per prefix. The first is the default, in which
//! keys are minted unless [`NewKey::environment`] names another.
//!
//! ```
//! use keygate::{KeyFormat, Keyring, NewKey, Peppers};
//!
//! let keyring = Keyring::builder()
//!     .environment("live", KeyFormat::new("acme_live")?)
//!     .environment("test", KeyFormat::new("acme_test")?)
//!     .build(Peppers::development())?;
//! let live = keyring.mint(NewKey::new("billing"))?;
//! assert_eq!(live.record().prefix, "acme_live");
//! let test = keyring.mint(NewKey::new("ci").environment("test"))?;
//! assert_eq!(test.record().prefix, "acme_test");
//! assert_eq!(keyring.environment_of("acme_test").map(|e| e.name()), Some("test"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A key's environment is bound to the key, not to what the client presents: the stored record
//! keeps the prefix the key was minted with, and the verifier refuses a key presented with
//! another prefix than its record's (as an invalid key, `401`) even though the prefix is not
//! part of the hashed secret. Handlers read it with
//! [`Identity::environment`](crate::Identity::environment); routes require one with
//! [`RequireEnvironment`](crate::RequireEnvironment); the verifier gives each environment a
//! default rate limit with
//! [`VerifierBuilder::environment_rate_limit`](crate::VerifierBuilder::environment_rate_limit).
//!
//! [`NewKey::environment`]: crate::NewKey::environment

use std::sync::Arc;
use std::time::SystemTime;

use crate::key::{FormatError, InvalidPrefix, KeyFormat, ParsedKey, PresentedKey};
use crate::pepper::{Digest, Peppers};
use crate::record::{InvalidInput, KeyRecord, MintedKey, NewKey};

/// Most environments one keyring holds.
pub const MAX_ENVIRONMENTS: usize = 16;
/// Longest environment name, in characters.
pub const MAX_ENVIRONMENT_NAME_LEN: usize = 32;

/// A deployment's key format(s) and [`Peppers`]. Cheap to clone.
///
/// Made with [`Keyring::new`] (one format, no named environment) or [`Keyring::builder`] (one
/// or more named environments, each with its own prefix; see the [module docs](self)).
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
    /// The default environment's format (the only one without environments).
    format: KeyFormat,
    /// The named environments, the default first; empty for [`Keyring::new`].
    environments: Arc<[Environment]>,
    /// More than one format: keys are parsed against each prefix.
    several: bool,
    peppers: Arc<Peppers>,
}

/// One environment of a [`Keyring`]: a name (`live`, `test`) and the key format of its keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Environment {
    name: Arc<str>,
    format: KeyFormat,
}

impl Environment {
    /// The environment's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared (what [`Identity::environment`](crate::Identity::environment) holds).
    pub(crate) fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    /// The key format of its keys.
    #[must_use]
    pub fn format(&self) -> &KeyFormat {
        &self.format
    }

    /// The prefix of its keys.
    #[must_use]
    pub fn prefix(&self) -> &str {
        self.format.prefix()
    }
}

/// Why [`KeyringBuilder::build`] refused the environments. Messages name environments and
/// prefixes (public), never a pepper.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// No environment was given.
    #[error("a keyring needs at least one environment")]
    NoEnvironment,
    /// More than [`MAX_ENVIRONMENTS`] environments.
    #[error("too many environments: at most {MAX_ENVIRONMENTS}")]
    TooManyEnvironments,
    /// A name that is not 1 to 32 lowercase letters, digits, `_` or `-`, starting with a letter.
    #[error(
        "invalid environment name {0:?}: use 1 to {MAX_ENVIRONMENT_NAME_LEN} lowercase letters, digits, '_' or '-', starting with a letter"
    )]
    InvalidName(String),
    /// Two environments share a name.
    #[error("environment {0:?} is configured twice")]
    DuplicateName(String),
    /// Two environments share a prefix: a key's environment would be ambiguous.
    #[error("prefix `{0}` is given to two environments")]
    DuplicatePrefix(String),
}

/// Builds a [`Keyring`] of named environments; see the [module docs](self).
#[derive(Debug, Default)]
#[must_use]
pub struct KeyringBuilder {
    environments: Vec<(String, KeyFormat)>,
}

impl KeyringBuilder {
    /// Adds environment `name`, whose keys have `format`. The first one added is the default:
    /// keys are minted there unless [`NewKey::environment`](crate::NewKey::environment) names
    /// another.
    pub fn environment(mut self, name: &str, format: KeyFormat) -> Self {
        self.environments.push((name.to_owned(), format));
        self
    }

    /// The keyring, hashing with `peppers`.
    ///
    /// # Errors
    /// A [`KeyringError`]: no environment, more than [`MAX_ENVIRONMENTS`], an invalid name, or
    /// a name or prefix given twice.
    pub fn build(self, peppers: Peppers) -> Result<Keyring, KeyringError> {
        if self.environments.len() > MAX_ENVIRONMENTS {
            return Err(KeyringError::TooManyEnvironments);
        }
        let mut environments: Vec<Environment> = Vec::with_capacity(self.environments.len());
        for (name, format) in self.environments {
            if !valid_environment_name(&name) {
                return Err(KeyringError::InvalidName(name.chars().take(64).collect()));
            }
            if environments.iter().any(|e| *e.name == *name) {
                return Err(KeyringError::DuplicateName(name));
            }
            if environments.iter().any(|e| e.format == format) {
                return Err(KeyringError::DuplicatePrefix(format.prefix().to_owned()));
            }
            environments.push(Environment {
                name: Arc::from(name),
                format,
            });
        }
        let format = environments
            .first()
            .map(|e| e.format.clone())
            .ok_or(KeyringError::NoEnvironment)?;
        Ok(Keyring {
            format,
            several: environments.len() > 1,
            environments: environments.into(),
            peppers: Arc::new(peppers),
        })
    }
}

/// Whether `name` may name an environment: 1 to [`MAX_ENVIRONMENT_NAME_LEN`] lowercase ASCII
/// letters, digits, `_` or `-`, starting with a letter.
#[must_use]
pub fn valid_environment_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_ENVIRONMENT_NAME_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

impl Keyring {
    /// A keyring of one format, without named environments
    /// ([`Identity::environment`](crate::Identity::environment) is `None` for its keys).
    #[must_use]
    pub fn new(format: KeyFormat, peppers: Peppers) -> Self {
        Self {
            format,
            environments: Arc::new([]),
            several: false,
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

    /// Starts a keyring of named environments (see the [module docs](self)).
    pub fn builder() -> KeyringBuilder {
        KeyringBuilder::default()
    }

    /// The key format of the default environment (the only format of a [`Keyring::new`]).
    #[must_use]
    pub fn format(&self) -> &KeyFormat {
        &self.format
    }

    /// The named environments, the default first; empty for a keyring made by
    /// [`Keyring::new`].
    #[must_use]
    pub fn environments(&self) -> &[Environment] {
        &self.environments
    }

    /// The environment named `name`.
    #[must_use]
    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.name() == name)
    }

    /// The environment whose keys have `prefix`.
    #[must_use]
    pub fn environment_of(&self, prefix: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.prefix() == prefix)
    }

    /// Every prefix this keyring accepts, the default first.
    pub fn prefixes(&self) -> impl Iterator<Item = &str> {
        let own = self.environments.is_empty().then(|| self.format.prefix());
        own.into_iter()
            .chain(self.environments.iter().map(Environment::prefix))
    }

    /// The position of `prefix` among the accepted formats (0 for a keyring of one format),
    /// or `None` when this keyring does not accept it.
    #[inline]
    pub(crate) fn position_of(&self, prefix: &str) -> Option<u8> {
        if self.several {
            let index = self
                .environments
                .iter()
                .position(|e| e.prefix() == prefix)?;
            u8::try_from(index).ok()
        } else {
            (prefix == self.format.prefix()).then_some(0)
        }
    }

    /// The environment at `position` (see [`ParsedKey::environment_index`]); `None` without
    /// named environments.
    pub(crate) fn environment_at(&self, position: u8) -> Option<&Environment> {
        self.environments.get(usize::from(position))
    }

    /// The peppers.
    #[must_use]
    pub fn peppers(&self) -> &Peppers {
        &self.peppers
    }

    /// Checks a presented key's length, separators, alphabet, prefix and checksum, against the
    /// keyring's format (or each environment's). With one format this is
    /// [`KeyFormat::parse`]; with several, the structure is checked once and the prefix's bytes
    /// matched against each environment's.
    ///
    /// It allocates nothing and never touches a cache or store.
    ///
    /// # Errors
    /// [`FormatError`]: [`FormatError::WrongPrefix`] when no environment has the prefix.
    #[inline]
    pub fn parse<'a>(&self, key: &'a [u8]) -> Result<ParsedKey<'a>, FormatError> {
        if self.several {
            KeyFormat::parse_among(&self.environments, |e| &e.format, key)
        } else {
            self.format.parse(key)
        }
    }

    /// Generates a key for `spec`: validates it, draws id and secret, hashes the key with the
    /// current pepper, and returns the record to store with the plaintext to show once. The
    /// key gets the prefix of the environment `spec` names, else the default one.
    ///
    /// # Errors
    /// [`InvalidInput`] when the name, owner, scopes, ranges or expiry are unacceptable, or
    /// the environment is not one of this keyring's ([`InvalidInput::UnknownEnvironment`]).
    pub fn mint(&self, spec: NewKey) -> Result<MintedKey, InvalidInput> {
        self.mint_at(spec, SystemTime::now())
    }

    /// [`Keyring::mint`] with an explicit creation time.
    ///
    /// # Errors
    /// As [`Keyring::mint`].
    pub fn mint_at(&self, spec: NewKey, now: SystemTime) -> Result<MintedKey, InvalidInput> {
        let format = match spec.environment.as_deref() {
            None => &self.format,
            Some(name) => self
                .environment(name)
                .map(Environment::format)
                .ok_or_else(|| InvalidInput::UnknownEnvironment(name.chars().take(64).collect()))?,
        };
        Self::mint_with(format, &self.peppers, spec, now)
    }

    /// A key of `spec` in the environment of `prefix` when this keyring has one, else in the
    /// default one (rotation keeps a key's environment).
    pub(crate) fn mint_like(
        &self,
        prefix: &str,
        spec: NewKey,
        now: SystemTime,
    ) -> Result<MintedKey, InvalidInput> {
        let format = self
            .environment_of(prefix)
            .map_or(&self.format, Environment::format);
        Self::mint_with(format, &self.peppers, spec, now)
    }

    fn mint_with(
        format: &KeyFormat,
        peppers: &Peppers,
        spec: NewKey,
        now: SystemTime,
    ) -> Result<MintedKey, InvalidInput> {
        spec.validate(now)?;
        let (id, key) = format.generate();
        let (pepper_version, digest) =
            peppers.digest(crate::key::digest_input(key.expose_secret().as_bytes()));
        let record = KeyRecord {
            id,
            prefix: format.prefix().to_owned(),
            name: spec.name,
            owner: spec.owner,
            digest,
            pepper_version,
            scopes: spec.scopes,
            metadata: spec.metadata,
            allowed_ips: spec.allowed_ips,
            rate_limit: spec.rate_limit,
            limits: spec.limits,
            quota: spec.quota,
            lineage: id,
            quota_granted: 0,
            created_at: now,
            updated_at: now,
            expires_at: spec.expires_at,
            disabled_at: None,
            revoked_at: None,
            rotated_from: None,
            last_used_at: None,
            canary: spec.canary,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn format(prefix: &str) -> KeyFormat {
        KeyFormat::new(prefix).unwrap()
    }

    fn two() -> Keyring {
        Keyring::builder()
            .environment("live", format("acme_live"))
            .environment("test", format("acme_test"))
            .build(Peppers::development())
            .unwrap()
    }

    #[test]
    fn keys_parse_into_the_environment_of_their_prefix() {
        let keyring = two();
        assert_eq!(
            keyring.prefixes().collect::<Vec<_>>(),
            ["acme_live", "acme_test"]
        );
        for (name, position) in [("live", 0), ("test", 1)] {
            let minted = keyring.mint(NewKey::new("k").environment(name)).unwrap();
            let text = minted.key.expose_secret().as_bytes();
            let parsed = keyring.parse(text).unwrap();
            assert_eq!(parsed.environment_index(), position);
            assert_eq!(parsed.id(), minted.record().id);
            assert_eq!(
                keyring.position_of(&minted.record().prefix),
                Some(position as u8)
            );
            assert_eq!(
                keyring
                    .environment_at(position as u8)
                    .map(Environment::name),
                Some(name)
            );
        }
        // The default environment is the first.
        let default = keyring.mint(NewKey::new("k")).unwrap();
        assert_eq!(default.record().prefix, "acme_live");
        // Another prefix, a bad checksum and a malformed key are refused as before.
        let other = format("acme_other").generate().1;
        assert_eq!(
            keyring.parse(other.expose_secret().as_bytes()).err(),
            Some(FormatError::WrongPrefix)
        );
        let mut typo = default.key.expose_secret().as_bytes().to_vec();
        let last = typo.len() - 1;
        typo[last] = if typo[last] == b'a' { b'b' } else { b'a' };
        assert_eq!(keyring.parse(&typo).err(), Some(FormatError::BadChecksum));
        assert_eq!(
            keyring.parse(b"acme_live").err(),
            Some(FormatError::Malformed)
        );
        assert_eq!(keyring.position_of("acme_other"), None);
    }

    #[test]
    fn an_unknown_environment_is_a_typed_error() {
        assert_eq!(
            two().mint(NewKey::new("k").environment("staging")).err(),
            Some(InvalidInput::UnknownEnvironment("staging".into()))
        );
        let single = Keyring::development("acme_live").unwrap();
        assert!(single.environments().is_empty());
        assert_eq!(
            single.mint(NewKey::new("k").environment("live")).err(),
            Some(InvalidInput::UnknownEnvironment("live".into()))
        );
    }

    #[test]
    fn one_format_keeps_the_plain_path() {
        let single = Keyring::development("acme_live").unwrap();
        assert_eq!(single.prefixes().collect::<Vec<_>>(), ["acme_live"]);
        assert_eq!(single.position_of("acme_live"), Some(0));
        assert_eq!(single.position_of("acme_test"), None);
        assert!(single.environment_at(0).is_none());
        // One named environment: parsed like one format, but named.
        let named = Keyring::builder()
            .environment("live", format("acme_live"))
            .build(Peppers::development())
            .unwrap();
        assert!(!named.several);
        assert_eq!(named.environment_at(0).map(Environment::name), Some("live"));
    }

    #[test]
    fn the_builder_refuses_ambiguous_environments() {
        let build = |envs: &[(&str, &str)]| {
            envs.iter()
                .fold(Keyring::builder(), |b, (name, prefix)| {
                    b.environment(name, format(prefix))
                })
                .build(Peppers::development())
                .err()
        };
        assert_eq!(build(&[]), Some(KeyringError::NoEnvironment));
        assert_eq!(
            build(&[("live", "a"), ("live", "b")]),
            Some(KeyringError::DuplicateName("live".into()))
        );
        assert_eq!(
            build(&[("live", "a"), ("test", "a")]),
            Some(KeyringError::DuplicatePrefix("a".into()))
        );
        for bad in ["", "Live", "1live", "li ve", "live.x", &"a".repeat(33)] {
            assert_eq!(
                build(&[(bad, "a")]),
                Some(KeyringError::InvalidName(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(build(&[("pre-prod_2", "a")]), None);
        let many: Vec<(String, String)> = (0..=MAX_ENVIRONMENTS)
            .map(|i| (format!("e{i}"), format!("p{i}")))
            .collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(build(&refs), Some(KeyringError::TooManyEnvironments));
        assert_eq!(build(&refs[..MAX_ENVIRONMENTS]), None);
    }
}
