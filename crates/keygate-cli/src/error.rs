//! The CLI's errors: one line on stderr and a documented exit code.
//!
//! | code | meaning |
//! | --- | --- |
//! | 1 | usage or invalid input (bad duration, CIDR, scope, name, malformed id, …); `scan`: an active key was found |
//! | 2 | no key (or owner) with that id |
//! | 3 | the key store is unavailable (unreachable, locked, failed) |
//! | 4 | the change conflicts with the key's state (e.g. enabling a revoked key), or the owner's (creating one that exists, deleting one that has keys) |
//! | 5 | the key store's schema is newer than this keygate |
//! | 6 | refused by the store's settings: no pepper given (and not a development store), a pepper that is not the store's, or a key prefix that is not the store's |
//! | 7 | refused by the deployment's lifetime policy (`keygate policy show`): the message names the rule |
//!
//! Messages never contain a key or a secret: inputs that might be one (ids) are not echoed.

use std::fmt;
use std::process::ExitCode;

use keygate::StoreError;

/// A failed command.
#[derive(Debug)]
pub(crate) enum CliError {
    Usage(String),
    NotFound(String),
    Unavailable(String),
    Conflict(String),
    SchemaTooNew(String),
    /// Refused by the store's settings (pepper or key prefix); nothing was written.
    Settings(String),
    /// `scan` found active keys (exit 1, like a failed check).
    ActiveKeysFound(String),
    /// Refused by the lifetime policy; nothing was written.
    Policy(String),
}

impl CliError {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::Usage(message.into())
    }

    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Self::Usage(_) | Self::ActiveKeysFound(_) => 1,
            Self::NotFound(_) => 2,
            Self::Unavailable(_) => 3,
            Self::Conflict(_) => 4,
            Self::SchemaTooNew(_) => 5,
            Self::Settings(_) => 6,
            Self::Policy(_) => 7,
        })
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(m)
            | Self::NotFound(m)
            | Self::Conflict(m)
            | Self::SchemaTooNew(m)
            | Self::Settings(m)
            | Self::Policy(m)
            | Self::ActiveKeysFound(m) => f.write_str(m),
            Self::Unavailable(m) => write!(
                f,
                "{m} (check --database-url / KEYGATE_DATABASE_URL, that the database is running, and that no other process holds a write lock; then retry)"
            ),
        }
    }
}

impl From<StoreError> for CliError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(id) => Self::NotFound(format!(
                "no key with id {id} (run `keygate list` to see the ids)"
            )),
            StoreError::InvalidInput(invalid) => Self::Usage(invalid.to_string()),
            StoreError::Conflict { id, reason } => Self::Conflict(format!("key {id}: {reason}")),
            StoreError::OwnerNotFound(owner) => Self::NotFound(format!(
                "no owner with id {owner:?} (run `keygate owners list` to see the ids)"
            )),
            StoreError::OwnerConflict { owner, reason } => {
                Self::Conflict(format!("owner {owner:?}: {reason}"))
            }
            StoreError::Unavailable(source) => {
                Self::Unavailable(format!("key store unavailable: {source}"))
            }
            StoreError::Policy(violation) => Self::Policy(format!(
                "{violation} (see `keygate policy show`); nothing was written"
            )),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl From<keygate_sqlx::Error> for CliError {
    fn from(error: keygate_sqlx::Error) -> Self {
        match error {
            keygate_sqlx::Error::SchemaTooNew { .. } => Self::SchemaTooNew(format!(
                "{error} (this keygate CLI is older than the services that migrated the store: install the newer CLI)"
            )),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl From<keygate::store::SettingsError> for CliError {
    fn from(error: keygate::store::SettingsError) -> Self {
        match error {
            keygate::store::SettingsError::Store(error) => error.into(),
            refused => Self::Settings(format!("{refused}; nothing was written")),
        }
    }
}
