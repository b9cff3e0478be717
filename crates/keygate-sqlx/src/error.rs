use sqlx::migrate::MigrateError;

/// Why opening or migrating a key store (or configuring its notification channel) failed.
/// (Once open, store operations return [`keygate::StoreError`].)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database could not be reached or opened (bad URL, refused connection, missing file
    /// without `create_if_missing`, …).
    #[error("could not open the key store: {0}")]
    Connect(#[source] sqlx::Error),
    /// The database holds a keygate schema newer than this build knows: it was migrated by a
    /// newer keygate. Upgrade this service rather than run old code on a newer schema.
    #[error(
        "the key store's schema is at version {found}, newer than this build of keygate-sqlx knows (up to {known}); upgrade keygate-sqlx"
    )]
    SchemaTooNew {
        /// The newest migration applied to the database.
        found: i64,
        /// The newest migration this build embeds.
        known: i64,
    },
    /// Applying the embedded migrations failed.
    #[error("could not migrate the key store: {0}")]
    Migrate(#[source] MigrateError),
    /// A PostgreSQL notification channel name was refused: it must be 1 to 63 bytes of ASCII
    /// letters, digits and `_`, not starting with a digit.
    #[error(
        "invalid notification channel name {0:?}: use 1 to 63 ASCII letters, digits or '_', not starting with a digit"
    )]
    InvalidChannel(String),
}

impl From<Error> for keygate::StoreError {
    fn from(error: Error) -> Self {
        keygate::StoreError::unavailable(error)
    }
}
