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

#[cfg(test)]
mod known {
    /// The highest number among the files of `migrations/{dir}`.
    fn newest_file(dir: &str) -> i64 {
        let path = format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_dir(&path)
            .unwrap()
            .map(|entry| {
                let name = entry.unwrap().file_name();
                name.to_string_lossy()[..4].parse::<i64>().unwrap()
            })
            .max()
            .unwrap()
    }

    /// What the stores report as known is the newest migration file, for each driver: a test
    /// comparing a migrated database with it compares with the files, not with itself.
    #[test]
    fn the_known_schema_version_is_the_newest_migration_file() {
        #[cfg(feature = "sqlite")]
        assert_eq!(
            crate::SqliteStore::known_schema_version(),
            newest_file("sqlite")
        );
        #[cfg(feature = "postgres")]
        assert_eq!(
            crate::PostgresStore::known_schema_version(),
            newest_file("postgres")
        );
        assert!(
            newest_file("sqlite") >= 14,
            "a schema as new as the owner roll-up's"
        );
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use sqlx::migrate::Migrator;

    use crate::SqliteStore;

    /// Migrations may be written on two branches at once (issue 17: 9 and 10), and the higher
    /// one may ship first: a database that has the newest migration but not the one before
    /// takes it when it arrives, instead of refusing it.
    #[tokio::test]
    async fn a_migration_numbered_below_an_applied_one_is_applied_when_it_arrives()
    -> Result<(), Box<dyn std::error::Error>> {
        let embedded = super::sqlite();
        let newest = super::latest(&embedded);
        let before = embedded
            .iter()
            .map(|m| m.version)
            .filter(|v| *v < newest)
            .max()
            .unwrap_or_default();

        // A database migrated by a build that had every migration but `before`.
        let dir = tempfile::tempdir()?;
        let without = dir.path().join("without");
        std::fs::create_dir(&without)?;
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))? {
            let entry = entry?;
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with(&format!("{before:04}_")) {
                std::fs::copy(entry.path(), without.join(name))?;
            }
        }
        let store =
            SqliteStore::connect_with(SqliteStore::options(dir.path().join("keygate.db"))).await?;
        let mut first = Migrator::new(without.as_path()).await?;
        first.dangerous_set_table_name(super::TABLE);
        first.run(store.pool()).await?;
        assert_eq!(store.schema_version().await?, Some(newest));

        // Now the build with every migration: `before` is applied, nothing is refused.
        store.migrate().await?;
        let applied: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM keygate_migrations WHERE version = $1 AND success",
        )
        .bind(before)
        .fetch_one(store.pool())
        .await?;
        assert_eq!(applied, 1, "migration {before} applied after {newest}");
        Ok(())
    }

    /// Migration 9 gives existing keys their lineage: the first key of their rotation chain,
    /// followed back through `rotated_from`; a key whose predecessor was deleted starts its own.
    #[tokio::test]
    async fn migration_9_backfills_each_key_s_lineage_from_its_rotation_chain()
    -> Result<(), Box<dyn std::error::Error>> {
        // A database at schema 8, as a build before quotas left it.
        let dir = tempfile::tempdir()?;
        let old = dir.path().join("old");
        std::fs::create_dir(&old)?;
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))? {
            let entry = entry?;
            let name = entry.file_name();
            let version: i64 = name.to_string_lossy()[..4].parse()?;
            if version <= 8 {
                std::fs::copy(entry.path(), old.join(name))?;
            }
        }
        let store =
            SqliteStore::connect_with(SqliteStore::options(dir.path().join("keygate.db"))).await?;
        let mut first = Migrator::new(old.as_path()).await?;
        first.dangerous_set_table_name(super::TABLE);
        first.run(store.pool()).await?;
        assert_eq!(store.schema_version().await?, Some(8));
        // a <- b <- c is one chain; d's predecessor was deleted; e stands alone.
        for (id, from) in [
            ("aaaaaaaaaaaa", None),
            ("bbbbbbbbbbbb", Some("aaaaaaaaaaaa")),
            ("cccccccccccc", Some("bbbbbbbbbbbb")),
            ("dddddddddddd", Some("gonegonegone")),
            ("eeeeeeeeeeee", None),
        ] {
            sqlx::query(
                "INSERT INTO keygate_keys (id, prefix, name, name_folded, digest, \
                 pepper_version, rotated_from, created_at, updated_at) \
                 VALUES ($1, 'acme_test', $1, $1, zeroblob(32), 1, $2, 0, 0)",
            )
            .bind(id)
            .bind(from)
            .execute(store.pool())
            .await?;
        }

        store.migrate().await?;
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id, lineage FROM keygate_keys ORDER BY id")
                .fetch_all(store.pool())
                .await?;
        let want = [
            ("aaaaaaaaaaaa", "aaaaaaaaaaaa"),
            ("bbbbbbbbbbbb", "aaaaaaaaaaaa"),
            ("cccccccccccc", "aaaaaaaaaaaa"),
            ("dddddddddddd", "dddddddddddd"),
            ("eeeeeeeeeeee", "eeeeeeeeeeee"),
        ];
        let got: Vec<(&str, &str)> = rows.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(got, want);
        Ok(())
    }

    /// Migration 17: a top-up's lineage lookups (the other keys it records the total on, and
    /// the listing the admin announces) use the lineage index, not a scan of every key.
    #[tokio::test]
    async fn lineage_lookups_use_the_lineage_index() -> Result<(), Box<dyn std::error::Error>> {
        use sqlx::Row;
        let dir = tempfile::tempdir()?;
        let store =
            SqliteStore::connect_with(SqliteStore::options(dir.path().join("keygate.db"))).await?;
        store.migrate().await?;
        for query in [
            crate::store::SELECT_LINEAGE_OTHERS,
            // A page of the admin's listing (`KeyFilter::lineage`), after the first.
            &format!(
                "{} AND id > $2 AND lineage = $1 ORDER BY id LIMIT 101",
                crate::store::SELECT_ALL
            ),
        ] {
            let plan = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {query}")))
                .bind("a")
                .bind("b")
                .fetch_all(store.pool())
                .await?
                .iter()
                .map(|row| row.try_get::<String, _>("detail"))
                .collect::<Result<Vec<_>, _>>()?;
            assert!(
                plan.iter().any(|d| d.contains("keygate_keys_lineage")),
                "{query}: {plan:?}"
            );
            assert!(
                !plan.iter().any(|d| d.contains("SCAN")),
                "{query}: {plan:?}"
            );
        }
        Ok(())
    }
}
