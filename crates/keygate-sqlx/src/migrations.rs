//! The embedded migrations, tracked in `keygate_migrations` (not sqlx's default table, so an
//! application's own sqlx migrations in the same database never mix with keygate's).

use sqlx::migrate::Migrator;

const TABLE: &str = "keygate_migrations";

#[cfg(feature = "sqlite")]
pub(crate) fn sqlite() -> Migrator {
    let mut migrator = sqlx::migrate!("migrations/sqlite");
    migrator.dangerous_set_table_name(TABLE);
    migrator
}

#[cfg(feature = "postgres")]
pub(crate) fn postgres() -> Migrator {
    let mut migrator = sqlx::migrate!("migrations/postgres");
    migrator.dangerous_set_table_name(TABLE);
    migrator
}

/// The newest version a migrator embeds.
pub(crate) fn latest(migrator: &Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}
