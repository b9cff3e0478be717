//! Deployment settings a store keeps, and the start-up check of a keyring (its peppers, key
//! prefix and environments) against them.

use std::collections::BTreeMap;

use super::{KeyAdmin, KeyStore, StoreError};
use crate::keyring::Keyring;
use crate::pepper::{Peppers, development_fingerprint};
use crate::record::InvalidInput;

/// The deployment settings a key store records, as names and values (SQL stores: table
/// `keygate_settings`). They are written on first use and never overwritten, except the
/// lifetime policy's `policy.*` settings (see [`crate::policy`]), which
/// [`KeyStore::replace_policy_settings`] replaces; none is a secret.
///
/// | name | value |
/// | --- | --- |
/// | `pepper.<version>.fingerprint` | the [fingerprint](crate::Pepper::fingerprint) of the pepper of that version (never the pepper) |
/// | `development` | `true` for a store first used with the public development pepper, on purpose |
/// | `key.prefix` | the [prefix](crate::KeyFormat::prefix) of the deployment's keys (of its default environment, when it has several) |
/// | `key.environment.<name>` | the prefix of the keys of [environment](crate::keyring) `<name>` (one setting per environment) |
/// | `policy.require_expiry`, `policy.default_lifetime_seconds`, `policy.max_lifetime_seconds`, `policy.max_idle_seconds` | the [lifetime policy](crate::policy::LifetimePolicy) (replaceable) |
///
/// [`check_peppers`] compares a keyring's peppers with them, and records what is missing;
/// [`check_keyring`] (run by [`VerifierBuilder::start`](crate::VerifierBuilder::start), and by
/// the CLI when it creates a key) compares the key prefix and environments too, and records
/// them on first use. Together `key.prefix` and the `key.environment.*` settings list the
/// prefixes the deployment accepts ([`StoreSettings::prefixes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSettings {
    entries: BTreeMap<String, String>,
}

/// The setting that marks a development store.
pub const DEVELOPMENT_SETTING: &str = "development";

/// The setting that holds the prefix of the deployment's keys.
pub const PREFIX_SETTING: &str = "key.prefix";

/// The start of the settings that hold each environment's prefix (`key.environment.live`).
pub const ENVIRONMENT_SETTING_PREFIX: &str = "key.environment.";

/// The setting that holds the prefix of environment `name`.
#[must_use]
pub fn environment_setting(name: &str) -> String {
    format!("{ENVIRONMENT_SETTING_PREFIX}{name}")
}

/// Refuses settings [`KeyStore::replace_policy_settings`] may not write: any whose name does
/// not start with `policy.` (stores call it before writing anything).
///
/// # Errors
/// [`StoreError::InvalidInput`] with [`InvalidInput::SettingName`].
pub fn check_policy_settings(entries: &[(String, String)]) -> Result<(), StoreError> {
    if entries.iter().all(|(name, _)| {
        name.strip_prefix(crate::policy::POLICY_SETTING_PREFIX)
            .is_some_and(|rest| !rest.is_empty())
    }) {
        Ok(())
    } else {
        Err(StoreError::InvalidInput(InvalidInput::SettingName))
    }
}

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

    /// The recorded prefix of the deployment's keys.
    #[must_use]
    pub fn prefix(&self) -> Option<&str> {
        self.get(PREFIX_SETTING)
    }

    /// The recorded environments: name → prefix (empty when the deployment's keyring has no
    /// named environments, or no service with one has started on the store yet).
    #[must_use]
    pub fn environments(&self) -> BTreeMap<&str, &str> {
        self.entries
            .iter()
            .filter_map(|(name, value)| {
                Some((
                    name.strip_prefix(ENVIRONMENT_SETTING_PREFIX)?,
                    value.as_str(),
                ))
            })
            .collect()
    }

    /// The recorded environment whose keys have `prefix`.
    #[must_use]
    pub fn environment_of(&self, prefix: &str) -> Option<&str> {
        self.environments()
            .into_iter()
            .find_map(|(name, recorded)| (recorded == prefix).then_some(name))
    }

    /// Every prefix the deployment accepts, as recorded: `key.prefix` first, then each
    /// environment's (without repeats).
    #[must_use]
    pub fn prefixes(&self) -> Vec<&str> {
        let mut prefixes: Vec<&str> = self.prefix().into_iter().collect();
        for prefix in self.environments().into_values() {
            if !prefixes.contains(&prefix) {
                prefixes.push(prefix);
            }
        }
        prefixes
    }

    /// Whether anything about peppers is recorded (a fingerprint, or the development mark).
    fn records_peppers(&self) -> bool {
        self.is_development() || !self.fingerprints().is_empty()
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

/// Why a keyring's peppers or key prefix were refused for a store. Messages name versions,
/// fingerprints and prefixes, never a pepper.
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
    /// The store's keys use another prefix than the keyring's (checked by
    /// [`check_keyring`], so by [`VerifierBuilder::start`](crate::VerifierBuilder::start)).
    #[error(
        "key prefix `{given}` does not match the key store: the store's keys use prefix `{recorded}`, this keyring was configured with `{given}` (configure the key format with `{recorded}`, or give keys with prefix `{given}` a key store of their own)"
    )]
    WrongPrefix {
        /// The prefix the store recorded.
        recorded: String,
        /// The prefix of the keyring given.
        given: String,
    },
    /// An environment of the keyring has another prefix in the store's settings, or the
    /// keyring gives a recorded environment's prefix to another environment (checked by
    /// [`check_keyring`]).
    #[error(
        "environment `{name}` does not match the key store: the store records {recorded}, this keyring gives environment `{name}` prefix `{given}` (configure the keyring's environments as the store records them; a key's environment never changes)"
    )]
    WrongEnvironment {
        /// The environment concerned.
        name: String,
        /// What the store recorded, in words: the prefix it records for the environment, or
        /// the other environment it records the prefix for.
        recorded: String,
        /// The prefix the keyring gives it.
        given: String,
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
            Self::WrongPrefix { recorded, given } => Self::WrongPrefix {
                recorded: recorded.clone(),
                given: given.clone(),
            },
            Self::WrongEnvironment {
                name,
                recorded,
                given,
            } => Self::WrongEnvironment {
                name: name.clone(),
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

/// What [`check_peppers`] or [`check_keyring`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PepperCheck {
    /// The peppers (and prefix) match what the store recorded (what was missing was recorded
    /// now).
    Matched,
    /// The store keeps no settings ([`KeyStore::settings`] is `None`): nothing was checked.
    Unsupported,
}

/// Checks `peppers` against the settings `store` recorded, and records what is missing (first
/// use): each pepper version's fingerprint, and for the development pepper on a fresh store,
/// that it is a development store. The key prefix is neither checked nor recorded (see
/// [`check_keyring`]).
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
    check_settings(store, admin, peppers, None).await
}

/// [`check_peppers`] for the keyring's peppers, and the same for its key prefix: refused when
/// the store recorded another prefix ([`SettingsError::WrongPrefix`], nothing written),
/// recorded (with the pepper fingerprints, in one write) when the store has none. For a keyring
/// of [environments](crate::keyring), the prefix is the default environment's, and each
/// environment is checked the same way: refused when the store records another prefix for its
/// name, or its prefix for another name ([`SettingsError::WrongEnvironment`]); recorded when
/// missing. Environments the store records and the keyring lacks are no error (a service may
/// accept fewer), and new ones are added: settings are never overwritten.
///
/// This binds the store to one prefix. A store shared by deployments of several prefixes can
/// still be used by verifiers that skip this check
/// ([`VerifierBuilder::build`](crate::VerifierBuilder::build)): a verifier treats a key of
/// another prefix as unknown.
///
/// # Errors
/// As [`check_peppers`], [`SettingsError::WrongPrefix`] and
/// [`SettingsError::WrongEnvironment`].
pub async fn check_keyring(
    store: &dyn KeyStore,
    admin: &dyn KeyAdmin,
    keyring: &Keyring,
) -> Result<PepperCheck, SettingsError> {
    check_settings(store, admin, keyring.peppers(), Some(keyring)).await
}

/// The check of [`check_peppers`], and of the key prefix and environments when a keyring is
/// given.
async fn check_settings(
    store: &dyn KeyStore,
    admin: &dyn KeyAdmin,
    peppers: &Peppers,
    keyring: Option<&Keyring>,
) -> Result<PepperCheck, SettingsError> {
    let Some(settings) = store.settings().await? else {
        return Ok(PepperCheck::Unsupported);
    };
    let development = peppers.is_development();
    if development && !settings.records_peppers() {
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
    let missing = compare(&settings, peppers, keyring)?;
    if missing.is_empty() {
        return Ok(PepperCheck::Matched);
    }
    store.add_settings(&missing).await?;
    // Another process may have recorded different values meanwhile: theirs stand.
    let settings = store.settings().await?.unwrap_or_default();
    let still_missing = compare(&settings, peppers, keyring)?;
    if still_missing.is_empty() {
        Ok(PepperCheck::Matched)
    } else {
        Err(SettingsError::Store(StoreError::unavailable(
            "the key store did not keep the settings written",
        )))
    }
}

/// Refusals, else the settings to add.
fn compare(
    settings: &StoreSettings,
    peppers: &Peppers,
    keyring: Option<&Keyring>,
) -> Result<Vec<(String, String)>, SettingsError> {
    let mut missing = Vec::new();
    // The prefix first: a store of another deployment is the likelier mistake.
    if let Some(keyring) = keyring {
        let given = keyring.format().prefix();
        match settings.prefix() {
            Some(recorded) if recorded == given => {}
            Some(recorded) => {
                return Err(SettingsError::WrongPrefix {
                    recorded: recorded.to_owned(),
                    given: given.to_owned(),
                });
            }
            None => missing.push((PREFIX_SETTING.to_owned(), given.to_owned())),
        }
        compare_environments(settings, keyring, &mut missing)?;
    }
    let development = peppers.is_development();
    let records_peppers = settings.records_peppers();
    if settings.is_development() {
        let dev = development_fingerprint();
        if peppers.iter().any(|p| p.fingerprint() != dev) {
            return Err(SettingsError::DevelopmentStore);
        }
    } else if development && records_peppers {
        return Err(SettingsError::NotDevelopmentStore {
            has_keys: !settings.fingerprints().is_empty(),
        });
    }
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
    if development && !records_peppers {
        missing.push((DEVELOPMENT_SETTING.to_owned(), "true".to_owned()));
    }
    Ok(missing)
}

/// The keyring's environments against the recorded ones; adds the missing ones to `missing`.
fn compare_environments(
    settings: &StoreSettings,
    keyring: &Keyring,
    missing: &mut Vec<(String, String)>,
) -> Result<(), SettingsError> {
    let recorded = settings.environments();
    for environment in keyring.environments() {
        let (name, given) = (environment.name(), environment.prefix());
        let refused = |recorded: String| SettingsError::WrongEnvironment {
            name: name.to_owned(),
            recorded,
            given: given.to_owned(),
        };
        match recorded.get(name) {
            Some(prefix) if *prefix == given => {}
            Some(prefix) => return Err(refused(format!("prefix `{prefix}` for it"))),
            None => {
                if let Some((other, _)) = recorded.iter().find(|(_, prefix)| **prefix == given) {
                    return Err(refused(format!(
                        "prefix `{given}` for environment `{other}`"
                    )));
                }
                missing.push((environment_setting(name), given.to_owned()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use crate::{KeyFormat, Pepper};

    fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
        result.unwrap_or_else(|e| panic!("{e}"))
    }

    fn keyring(prefix: &str, peppers: Peppers) -> Keyring {
        Keyring::new(ok(KeyFormat::new(prefix)), peppers)
    }

    fn real() -> Peppers {
        Peppers::new(ok(Pepper::new(
            1,
            "settings-unit-test-pepper-0123456789abcdef",
        )))
    }

    async fn recorded(store: &MemoryStore) -> StoreSettings {
        ok(store.settings().await).unwrap_or_else(|| panic!("MemoryStore keeps settings"))
    }

    #[tokio::test]
    async fn check_keyring_records_the_prefix_with_the_peppers() {
        let store = MemoryStore::new();
        let outcome = ok(check_keyring(&store, &store, &keyring("acme_live", real())).await);
        assert_eq!(outcome, PepperCheck::Matched);
        let settings = recorded(&store).await;
        assert_eq!(settings.prefix(), Some("acme_live"));
        assert_eq!(settings.get(PREFIX_SETTING), Some("acme_live"));
        assert!(settings.fingerprint(1).is_some());
        // The same keyring passes again, writing nothing new.
        ok(check_keyring(&store, &store, &keyring("acme_live", real())).await);
        assert_eq!(recorded(&store).await, settings);
    }

    #[tokio::test]
    async fn check_keyring_refuses_another_prefix_and_writes_nothing() {
        let store = MemoryStore::new();
        ok(check_keyring(
            &store,
            &store,
            &keyring("demo_test", Peppers::development()),
        )
        .await);
        let before = recorded(&store).await;
        let Err(error) =
            check_keyring(&store, &store, &keyring("kg", Peppers::development())).await
        else {
            panic!("another prefix passed");
        };
        match &error {
            SettingsError::WrongPrefix { recorded, given } => {
                assert_eq!((recorded.as_str(), given.as_str()), ("demo_test", "kg"));
            }
            other => panic!("{other:?}"),
        }
        let message = error.to_string();
        assert!(
            message.contains("`demo_test`") && message.contains("`kg`"),
            "{message}"
        );
        assert!(matches!(error.copy(), SettingsError::WrongPrefix { .. }));
        assert_eq!(recorded(&store).await, before);
    }

    #[tokio::test]
    async fn check_peppers_neither_checks_nor_records_the_prefix() {
        let store = MemoryStore::new();
        ok(check_peppers(&store, &store, &real()).await);
        assert_eq!(recorded(&store).await.prefix(), None);
        ok(check_keyring(&store, &store, &keyring("acme_live", real())).await);
        ok(check_peppers(&store, &store, &real()).await);
        assert_eq!(recorded(&store).await.prefix(), Some("acme_live"));
    }

    /// A recorded prefix alone says nothing about peppers: the development pepper may still
    /// make such a store a development store, and a real pepper is not refused there.
    #[tokio::test]
    async fn a_prefix_alone_is_not_a_pepper_record() {
        let store = MemoryStore::new();
        ok(store
            .add_settings(&[(PREFIX_SETTING.to_owned(), "demo_test".to_owned())])
            .await);
        ok(check_keyring(
            &store,
            &store,
            &keyring("demo_test", Peppers::development()),
        )
        .await);
        assert!(recorded(&store).await.is_development());

        let store = MemoryStore::new();
        ok(store
            .add_settings(&[(PREFIX_SETTING.to_owned(), "acme_live".to_owned())])
            .await);
        ok(check_keyring(&store, &store, &keyring("acme_live", real())).await);
        let settings = recorded(&store).await;
        assert!(!settings.is_development());
        assert!(settings.fingerprint(1).is_some());
    }
}
