//! Deployment settings a store keeps, and the start-up check of a keyring's peppers against
//! them.

use std::collections::BTreeMap;

use super::{KeyAdmin, KeyStore, StoreError};
use crate::pepper::{Peppers, development_fingerprint};

/// The deployment settings a key store records, as names and values (SQL stores: table
/// `keygate_settings`). They are written on first use and never overwritten; none is a
/// secret.
///
/// | name | value |
/// | --- | --- |
/// | `pepper.<version>.fingerprint` | the [fingerprint](crate::Pepper::fingerprint) of the pepper of that version (never the pepper) |
/// | `development` | `true` for a store first used with the public development pepper, on purpose |
///
/// [`check_peppers`] compares a keyring's peppers with them, and records what is missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSettings {
    entries: BTreeMap<String, String>,
}

/// The setting that marks a development store.
pub const DEVELOPMENT_SETTING: &str = "development";

/// The setting that holds the fingerprint of pepper `version`.
#[must_use]
pub fn fingerprint_setting(version: u32) -> String {
    format!("pepper.{version}.fingerprint")
}

impl StoreSettings {
    /// Settings from name/value pairs (as a store reads them).
    #[must_use]
    pub fn from_entries(entries: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            entries: entries.into_iter().collect(),
        }
    }

    /// Whether nothing is recorded yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of setting `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries.get(name).map(String::as_str)
    }

    /// Every setting, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether the store was first used with the development pepper.
    #[must_use]
    pub fn is_development(&self) -> bool {
        self.get(DEVELOPMENT_SETTING) == Some("true")
    }

    /// The recorded fingerprint of pepper `version`.
    #[must_use]
    pub fn fingerprint(&self, version: u32) -> Option<&str> {
        self.get(&fingerprint_setting(version))
    }

    /// Every recorded pepper fingerprint, by version.
    #[must_use]
    pub fn fingerprints(&self) -> BTreeMap<u32, &str> {
        self.entries
            .iter()
            .filter_map(|(name, value)| {
                let version = name.strip_prefix("pepper.")?.strip_suffix(".fingerprint")?;
                Some((version.parse().ok()?, value.as_str()))
            })
            .collect()
    }
}

/// Why a keyring's peppers were refused for a store. Messages name versions and fingerprints,
/// never a pepper.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The store's keys under this version were hashed with another pepper.
    #[error(
        "pepper version {version} does not match the key store: the store's keys under version {version} were hashed with the pepper whose fingerprint is {recorded}, the one given has fingerprint {given} (check KEYGATE_PEPPER, or give this pepper another version number)"
    )]
    WrongPepper {
        /// The pepper version concerned.
        version: u32,
        /// The fingerprint the store recorded for it.
        recorded: String,
        /// The fingerprint of the pepper given.
        given: String,
    },
    /// A real pepper was given for a development store.
    #[error(
        "the key store is a development store (its keys are hashed with the public development pepper, which protects nothing): refusing a real pepper here; use a new store for real keys"
    )]
    DevelopmentStore,
    /// The development pepper was given for a store that is not a development store.
    #[error(
        "the public development pepper is refused: this key store is not a development store{}",
        if *.has_keys { " (it holds keys made with real peppers)" } else { "" }
    )]
    NotDevelopmentStore {
        /// Whether the store holds keys (or records real pepper fingerprints).
        has_keys: bool,
    },
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SettingsError {
    /// A copy (a store error becomes its message).
    pub(crate) fn copy(&self) -> Self {
        match self {
            Self::WrongPepper {
                version,
                recorded,
                given,
            } => Self::WrongPepper {
                version: *version,
                recorded: recorded.clone(),
                given: given.clone(),
            },
            Self::DevelopmentStore => Self::DevelopmentStore,
            Self::NotDevelopmentStore { has_keys } => Self::NotDevelopmentStore {
                has_keys: *has_keys,
            },
            Self::Store(error) => Self::Store(StoreError::unavailable(error.to_string())),
        }
    }
}

/// What [`check_peppers`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PepperCheck {
    /// The peppers match what the store recorded (missing fingerprints were recorded now).
    Matched,
    /// The store keeps no settings ([`KeyStore::settings`] is `None`): nothing was checked.
    Unsupported,
}

/// Checks `peppers` against the settings `store` recorded, and records what is missing (first
/// use): each pepper version's fingerprint, and for the development pepper on a fresh store,
/// that it is a development store.
///
/// Refused, with nothing written: a version whose recorded fingerprint differs
/// ([`SettingsError::WrongPepper`]); any real pepper on a development store
/// ([`SettingsError::DevelopmentStore`]); the development pepper on a store that has recorded
/// real peppers or holds keys without any settings (a store from before settings were kept)
/// under versions other than the development pepper's ([`SettingsError::NotDevelopmentStore`]).
///
/// Safe to run concurrently from several processes: settings are only ever added, never
/// overwritten, and the result is checked again after writing.
///
/// # Errors
/// A [`SettingsError`]; [`SettingsError::Store`] when the store cannot answer.
pub async fn check_peppers(
    store: &dyn KeyStore,
    admin: &dyn KeyAdmin,
    peppers: &Peppers,
) -> Result<PepperCheck, SettingsError> {
    let Some(settings) = store.settings().await? else {
        return Ok(PepperCheck::Unsupported);
    };
    let development = peppers.is_development();
    if development && settings.is_empty() {
        // A store from before settings were kept may hold real keys: look before marking it.
        let real_keys = admin
            .pepper_versions()
            .await?
            .iter()
            .any(|(version, keys)| *keys > 0 && peppers.get(*version).is_none());
        if real_keys {
            return Err(SettingsError::NotDevelopmentStore { has_keys: true });
        }
    }
    let missing = compare(&settings, peppers)?;
    if missing.is_empty() {
        return Ok(PepperCheck::Matched);
    }
    store.add_settings(&missing).await?;
    // Another process may have recorded different values meanwhile: theirs stand.
    let settings = store.settings().await?.unwrap_or_default();
    let still_missing = compare(&settings, peppers)?;
    if still_missing.is_empty() {
        Ok(PepperCheck::Matched)
    } else {
        Err(SettingsError::Store(StoreError::unavailable(
            "the key store did not keep the pepper fingerprints written",
        )))
    }
}

/// Refusals, else the settings to add.
fn compare(
    settings: &StoreSettings,
    peppers: &Peppers,
) -> Result<Vec<(String, String)>, SettingsError> {
    let development = peppers.is_development();
    if settings.is_development() {
        let dev = development_fingerprint();
        if peppers.iter().any(|p| p.fingerprint() != dev) {
            return Err(SettingsError::DevelopmentStore);
        }
    } else if development && !settings.is_empty() {
        return Err(SettingsError::NotDevelopmentStore {
            has_keys: !settings.fingerprints().is_empty(),
        });
    }
    let mut missing = Vec::new();
    for pepper in peppers.iter() {
        let given = pepper.fingerprint();
        match settings.fingerprint(pepper.version()) {
            Some(recorded) if recorded == given => {}
            Some(recorded) => {
                return Err(SettingsError::WrongPepper {
                    version: pepper.version(),
                    recorded: recorded.to_owned(),
                    given,
                });
            }
            None => missing.push((fingerprint_setting(pepper.version()), given)),
        }
    }
    if development && settings.is_empty() {
        missing.push((DEVELOPMENT_SETTING.to_owned(), "true".to_owned()));
    }
    Ok(missing)
}
