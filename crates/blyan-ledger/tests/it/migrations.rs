//! Migrations: applied once, in order, recorded; concurrent migrators do not conflict.

use std::sync::Arc;

use blyan_ledger::{EmbeddedLedger, Ledger, LedgerOptions, ManualClock, PG_MIGRATIONS, PgLedger};

use crate::pg;
use crate::support::{T0_MS, tokenomics};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pg_migrators_apply_each_migration_once() {
    let url = pg::server().fresh_database().await;
    let mut migrators = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        migrators.push(tokio::spawn(async move {
            blyan_ledger::migrate_postgres(&url).await
        }));
    }
    for migrator in migrators {
        migrator.await.unwrap().unwrap();
    }
    let client = pg::connect(&url).await;
    let rows = client
        .query(
            "SELECT version FROM ledger_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    let expected: Vec<i32> = PG_MIGRATIONS.iter().map(|m| m.version as i32).collect();
    assert_eq!(versions, expected);

    // Two nodes starting at once on the same database: one genesis.
    let clock = Arc::new(ManualClock::new(T0_MS));
    let options = LedgerOptions {
        clock,
        pg_pool_size: 4,
    };
    let (a, b) = tokio::join!(
        PgLedger::connect_with(&url, tokenomics(), options.clone()),
        PgLedger::connect_with(&url, tokenomics(), options.clone()),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.verify_integrity().await.unwrap().transactions, 1);
    assert_eq!(
        b.supply().await.unwrap().minted,
        tokenomics().supply.genesis
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_migration_edited_after_apply_is_refused() {
    let url = pg::server().fresh_database().await;
    blyan_ledger::migrate_postgres(&url).await.unwrap();
    let client = pg::connect(&url).await;
    client
        .execute("UPDATE ledger_migrations SET checksum = 'edited'", &[])
        .await
        .unwrap();
    let err = blyan_ledger::migrate_postgres(&url).await.unwrap_err();
    assert!(
        matches!(err, blyan_ledger::LedgerError::Migration { version: 1, .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_embedded_opens_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let clock = Arc::new(ManualClock::new(T0_MS));
    let options = LedgerOptions {
        clock,
        pg_pool_size: 1,
    };
    let (a, b) = tokio::join!(
        EmbeddedLedger::open_with(&path, tokenomics(), options.clone()),
        EmbeddedLedger::open_with(&path, tokenomics(), options.clone()),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.verify_integrity().await.unwrap().transactions, 1);
    assert_eq!(b.verify_integrity().await.unwrap().transactions, 1);
    drop((a, b));
    let connection = rusqlite::Connection::open(&path).unwrap();
    let count: i64 = connection
        .query_row("SELECT COUNT(*) FROM ledger_migrations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, PG_MIGRATIONS.len() as i64);
}
