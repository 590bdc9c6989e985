//! Schema migrations of both stores, through refinery.
//!
//! The SQL lives in this crate's `migrations/postgres/` and `migrations/sqlite/` as
//! `V{version}__{name}.sql` (the same versions in both, each store in its own dialect) and is
//! embedded at build time. Opening a store applies the pending migrations in order, all of them
//! in one transaction (a database is at one schema version or the next, never between), and
//! refinery records each in `ledger_schema_history` with a checksum. A migration edited after it
//! was applied, or a database holding migrations this build does not know (newer code), is
//! refused with [`LedgerError::Migration`].
//!
//! Several openers at once: on PostgreSQL a session advisory lock serialises them; on SQLite,
//! where refinery's check and apply are two transactions, an opener whose apply lost the race
//! to another finds the other's migrations recorded and runs again (only then).
//!
//! # Databases from before refinery
//! The ledger used to record its migrations itself, in `ledger_migrations` (version, name,
//! keccak-256 of the SQL). Opening such a database takes that history over: every recorded
//! version must be one this build knows, recorded with the checksum of the SQL that version
//! shipped with ([`LedgerError::LegacyMigration`] otherwise); refinery then records those
//! versions as applied without running them (`Target::FakeVersion`), the old table is dropped,
//! and later migrations apply as usual. Each step can be repeated, so an interrupted takeover
//! completes at the next open.

use refinery::{Report, Runner, Target};
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior};

use crate::error::{LedgerError, Result};

mod sqlite {
    refinery::embed_migrations!("migrations/sqlite");
}

mod postgres {
    refinery::embed_migrations!("migrations/postgres");
}

/// The newest schema version, the same in both stores.
pub const SCHEMA_VERSION: u32 = 5;

/// Where refinery records the ledger's migrations. Named for the ledger rather than refinery's
/// default, so a PostgreSQL database the ledger shares with other software keeps the two
/// histories apart.
pub(crate) const MIGRATION_TABLE: &str = "ledger_schema_history";

/// The history table of the ledger's own pre-refinery migrator.
const LEGACY_TABLE: &str = "ledger_migrations";

/// What the pre-refinery migrator recorded for each version it applied: keccak-256 (hex) of
/// that version's SQL as it shipped then. Frozen: a database recording anything else was
/// migrated by other code.
const LEGACY_CHECKSUMS_POSTGRES: &[(i32, &str)] = &[(
    1,
    "d384306af98de2391ba8e40b00f758d5a119ae32f5aa4bc5d8dd8aae2284b599",
)];
const LEGACY_CHECKSUMS_SQLITE: &[(i32, &str)] = &[(
    1,
    "9d3abc7bda96d6319b6e907a805f16568f4efabf1ca0fd5e2813804431c65cc6",
)];

/// Key of the PostgreSQL advisory lock that serialises migrators ("BLYLEDGR" in ASCII).
const PG_MIGRATION_LOCK_KEY: i64 = 0x424C_594C_4544_4752;

/// The two stores' migration sets.
#[derive(Clone, Copy, Debug)]
enum Dialect {
    Postgres,
    Sqlite,
}

/// A runner over `dialect`'s migrations, all pending ones in one transaction.
fn runner(dialect: Dialect, target: Target) -> Runner {
    let runner = match dialect {
        Dialect::Postgres => postgres::migrations::runner(),
        Dialect::Sqlite => sqlite::migrations::runner(),
    };
    let mut runner = runner.set_grouped(true).set_target(target);
    runner.set_migration_table_name(MIGRATION_TABLE);
    runner
}

/// Checks the pre-refinery history `recorded` (version, checksum) against `known`; returns the
/// newest version it records, which refinery is to take as applied.
fn legacy_baseline(known: &[(i32, &str)], recorded: &[(i64, String)]) -> Result<Option<i32>> {
    let mut newest = None;
    for (version, checksum) in recorded {
        let Some(&(known_version, expected)) =
            known.iter().find(|(v, _)| i64::from(*v) == *version)
        else {
            return Err(LedgerError::LegacyMigration {
                version: *version,
                reason: "unknown to this build",
            });
        };
        if expected != checksum {
            return Err(LedgerError::LegacyMigration {
                version: *version,
                reason: "its SQL differs from the one this version shipped with",
            });
        }
        newest = newest.max(Some(known_version));
    }
    Ok(newest)
}

fn log_applied(report: &Report) {
    for migration in report.applied_migrations() {
        tracing::info!(
            version = migration.version(),
            name = migration.name(),
            table = MIGRATION_TABLE,
            "applied migration"
        );
    }
}

// ---- SQLite ---------------------------------------------------------------------------------

/// Brings the embedded store's schema up to date (see the module documentation).
pub(crate) fn migrate_sqlite(connection: &mut Connection) -> Result<()> {
    // refinery opens its transactions with the connection's default behaviour: take the write
    // lock at BEGIN, waiting for another writer, instead of failing on a stale read snapshot.
    connection.set_transaction_behavior(TransactionBehavior::Immediate);
    let result = migrate_sqlite_until_settled(connection);
    connection.set_transaction_behavior(TransactionBehavior::Deferred);
    result
}

fn migrate_sqlite_until_settled(connection: &mut Connection) -> Result<()> {
    loop {
        let recorded_before = sqlite_recorded(connection)?;
        match migrate_sqlite_once(connection) {
            Ok(()) => return Ok(()),
            // Another opener applied migrations between our check and our apply, which made
            // ours fail (the tables exist); its migrations are recorded now, so run again.
            // Terminates: each further round needs strictly more recorded migrations.
            Err(error) if sqlite_recorded(connection)? > recorded_before => {
                tracing::debug!(%error, "another opener migrated concurrently; checking again");
            }
            Err(error) => return Err(error),
        }
    }
}

fn migrate_sqlite_once(connection: &mut Connection) -> Result<()> {
    if let Some(version) = sqlite_legacy_history(connection)? {
        runner(Dialect::Sqlite, Target::FakeVersion(version)).run(connection)?;
        connection.execute_batch(&format!("DROP TABLE IF EXISTS {LEGACY_TABLE}"))?;
        tracing::info!(version, "took over the pre-refinery migration history");
    }
    log_applied(&runner(Dialect::Sqlite, Target::Latest).run(connection)?);
    Ok(())
}

/// How many migrations refinery has recorded (0 before its table exists).
fn sqlite_recorded(connection: &mut Connection) -> Result<usize> {
    if !sqlite_table_exists(connection, MIGRATION_TABLE)? {
        return Ok(0);
    }
    Ok(runner(Dialect::Sqlite, Target::Latest)
        .get_applied_migrations(connection)?
        .len())
}

fn sqlite_table_exists(connection: &Connection, table: &str) -> Result<bool> {
    Ok(connection
        .query_row(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [table],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// The checked pre-refinery history's newest version, if the database has that history. Read
/// in one snapshot, so a concurrent opener dropping the table cannot split the read.
fn sqlite_legacy_history(connection: &mut Connection) -> Result<Option<i32>> {
    let snapshot = connection.transaction_with_behavior(TransactionBehavior::Deferred)?;
    if !sqlite_table_exists(&snapshot, LEGACY_TABLE)? {
        return Ok(None);
    }
    let recorded: Vec<(i64, String)> = {
        let mut statement = snapshot.prepare(&format!(
            "SELECT version, checksum FROM {LEGACY_TABLE} ORDER BY version"
        ))?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    snapshot.commit()?;
    legacy_baseline(LEGACY_CHECKSUMS_SQLITE, &recorded)
}

// ---- PostgreSQL -----------------------------------------------------------------------------

/// Brings a PostgreSQL database's schema up to date (see the module documentation), holding
/// the migrators' advisory lock on `client`'s session throughout.
pub(crate) async fn migrate_postgres(client: &mut tokio_postgres::Client) -> Result<()> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&PG_MIGRATION_LOCK_KEY])
        .await?;
    let result = migrate_postgres_locked(client).await;
    // Released on error too; a dropped connection releases it as well.
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&PG_MIGRATION_LOCK_KEY])
        .await?;
    result
}

async fn migrate_postgres_locked(client: &mut tokio_postgres::Client) -> Result<()> {
    if let Some(version) = postgres_legacy_history(client).await? {
        runner(Dialect::Postgres, Target::FakeVersion(version))
            .run_async(client)
            .await?;
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {LEGACY_TABLE}"))
            .await?;
        tracing::info!(version, "took over the pre-refinery migration history");
    }
    log_applied(
        &runner(Dialect::Postgres, Target::Latest)
            .run_async(client)
            .await?,
    );
    Ok(())
}

/// The checked pre-refinery history's newest version, if the database has that history.
async fn postgres_legacy_history(client: &tokio_postgres::Client) -> Result<Option<i32>> {
    let exists: bool = client
        .query_one(
            &format!("SELECT to_regclass('{LEGACY_TABLE}') IS NOT NULL"),
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let recorded: Vec<(i64, String)> = client
        .query(
            &format!("SELECT version::BIGINT, checksum FROM {LEGACY_TABLE} ORDER BY version"),
            &[],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    legacy_baseline(LEGACY_CHECKSUMS_POSTGRES, &recorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_stores_have_the_same_versions_up_to_schema_version() {
        // `get_migrations` lists them in the order the files were found; refinery sorts them
        // by version when it runs them.
        let versions = |dialect| {
            let mut versions = runner(dialect, Target::Latest)
                .get_migrations()
                .iter()
                .map(|m| m.version())
                .collect::<Vec<_>>();
            versions.sort_unstable();
            versions
        };
        let postgres = versions(Dialect::Postgres);
        assert_eq!(postgres, versions(Dialect::Sqlite));
        let expected: Vec<i32> = (1..=SCHEMA_VERSION as i32).collect();
        assert_eq!(postgres, expected);
    }

    #[test]
    fn legacy_history_is_taken_over_only_when_known() {
        let recorded = |version: i64, checksum: &str| vec![(version, checksum.to_owned())];
        let (known_version, known_checksum) = LEGACY_CHECKSUMS_SQLITE[0];
        assert_eq!(legacy_baseline(LEGACY_CHECKSUMS_SQLITE, &[]).unwrap(), None);
        assert_eq!(
            legacy_baseline(
                LEGACY_CHECKSUMS_SQLITE,
                &recorded(known_version.into(), known_checksum)
            )
            .unwrap(),
            Some(1)
        );
        assert!(matches!(
            legacy_baseline(
                LEGACY_CHECKSUMS_SQLITE,
                &recorded(known_version.into(), "00")
            ),
            Err(LedgerError::LegacyMigration { version: 1, .. })
        ));
        assert!(matches!(
            legacy_baseline(LEGACY_CHECKSUMS_SQLITE, &recorded(99, known_checksum)),
            Err(LedgerError::LegacyMigration { version: 99, .. })
        ));
    }
}
