//! Migrations through refinery: applied once, in order, recorded in `ledger_schema_history`;
//! concurrent migrators do not conflict; an edited or unknown migration is refused; and a
//! database written by the ledger before refinery (fixtures below) opens, keeps its money and
//! answers replays of its recorded requests with their first outcomes.

use std::sync::Arc;

use blyan_ledger::{
    AccountId, Address, Amount, AnyLedger, AuthorizeRequest, BondLockRequest, BondOutcome,
    BondSettleRequest, BondState, BurnRequest, CaptureRequest, EmbeddedLedger, HoldId, HoldStatus,
    LearningRewardRequest, Ledger, LedgerError, LedgerOptions, ManualClock, MintRequest, PgLedger,
    QuoteId, QuoteRequest, SCHEMA_VERSION, TransferRequest, TxId, ValidationRewardRequest,
};
use refinery::error::Kind;

use crate::pg;
use crate::support::*;

const HISTORY_TABLE: &str = "ledger_schema_history";
const LEGACY_TABLE: &str = "ledger_migrations";

fn options(pg_pool_size: usize) -> LedgerOptions {
    LedgerOptions {
        clock: Arc::new(ManualClock::new(T0_MS)),
        pg_pool_size,
    }
}

fn all_versions() -> Vec<i32> {
    (1..=SCHEMA_VERSION as i32).collect()
}

/// The refinery error inside `error`, or a panic naming what came instead.
fn refinery_kind(error: &LedgerError) -> &Kind {
    match error {
        LedgerError::Migration(error) => error.kind(),
        other => panic!("expected a migration error, got {other:?}"),
    }
}

// ---- PostgreSQL -----------------------------------------------------------------------------

async fn pg_recorded_versions(url: &str) -> Vec<i32> {
    let client = pg::connect(url).await;
    client
        .query(
            &format!("SELECT version FROM {HISTORY_TABLE} ORDER BY version"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

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
    assert_eq!(pg_recorded_versions(&url).await, all_versions());

    // Two nodes starting at once on the same database: one genesis.
    let (a, b) = tokio::join!(
        PgLedger::connect_with(&url, tokenomics(), options(4)),
        PgLedger::connect_with(&url, tokenomics(), options(4)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.verify_integrity().await.unwrap().transactions, 1);
    assert_eq!(
        b.supply().await.unwrap().minted,
        tokenomics().supply.genesis
    );
    assert_eq!(pg_recorded_versions(&url).await, all_versions());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_migration_edited_after_apply_is_refused() {
    let url = pg::server().fresh_database().await;
    blyan_ledger::migrate_postgres(&url).await.unwrap();
    let client = pg::connect(&url).await;
    client
        .execute(
            &format!("UPDATE {HISTORY_TABLE} SET checksum = '1' WHERE version = 1"),
            &[],
        )
        .await
        .unwrap();
    let err = blyan_ledger::migrate_postgres(&url).await.unwrap_err();
    assert!(
        matches!(refinery_kind(&err), Kind::DivergentVersion(applied, _) if applied.version() == 1),
        "{err}"
    );
    assert!(!err.is_refusal());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_database_migrated_by_newer_code_is_refused() {
    let url = pg::server().fresh_database().await;
    blyan_ledger::migrate_postgres(&url).await.unwrap();
    let future = SCHEMA_VERSION as i32 + 1;
    pg::connect(&url)
        .await
        .execute(
            &format!(
                "INSERT INTO {HISTORY_TABLE} (version, name, applied_on, checksum) \
                 VALUES ($1, 'from_the_future', '2030-01-01T00:00:00Z', '1')"
            ),
            &[&future],
        )
        .await
        .unwrap();
    let err = PgLedger::connect_with(&url, tokenomics(), options(2))
        .await
        .err()
        .expect("a database with an unknown migration is refused");
    assert!(
        matches!(refinery_kind(&err), Kind::MissingVersion(m) if m.version() == future),
        "{err}"
    );
}

// ---- Embedded -------------------------------------------------------------------------------

fn sqlite_recorded_versions(path: &std::path::Path) -> Vec<i32> {
    let connection = rusqlite::Connection::open(path).unwrap();
    let mut statement = connection
        .prepare(&format!(
            "SELECT version FROM {HISTORY_TABLE} ORDER BY version"
        ))
        .unwrap();
    statement
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_embedded_opens_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let opens: Vec<_> = (0..4)
        .map(|_| EmbeddedLedger::open_with(&path, tokenomics(), options(1)))
        .collect();
    let ledgers = futures::future::join_all(opens).await;
    for ledger in ledgers {
        assert_eq!(
            ledger
                .unwrap()
                .verify_integrity()
                .await
                .unwrap()
                .transactions,
            1
        );
    }
    assert_eq!(sqlite_recorded_versions(&path), all_versions());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_migration_edited_after_apply_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    drop(
        EmbeddedLedger::open_with(&path, tokenomics(), options(1))
            .await
            .unwrap(),
    );
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            &format!("UPDATE {HISTORY_TABLE} SET checksum = '1' WHERE version = 1"),
            [],
        )
        .unwrap();
    let err = EmbeddedLedger::open_with(&path, tokenomics(), options(1))
        .await
        .err()
        .expect("an edited migration is refused");
    assert!(
        matches!(refinery_kind(&err), Kind::DivergentVersion(applied, _) if applied.version() == 1),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_database_migrated_by_newer_code_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    drop(
        EmbeddedLedger::open_with(&path, tokenomics(), options(1))
            .await
            .unwrap(),
    );
    let future = SCHEMA_VERSION as i32 + 1;
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            &format!(
                "INSERT INTO {HISTORY_TABLE} (version, name, applied_on, checksum) \
                 VALUES (?1, 'from_the_future', '2030-01-01T00:00:00Z', '1')"
            ),
            [future],
        )
        .unwrap();
    let err = EmbeddedLedger::open_with(&path, tokenomics(), options(1))
        .await
        .err()
        .expect("a database with an unknown migration is refused");
    assert!(
        matches!(refinery_kind(&err), Kind::MissingVersion(m) if m.version() == future),
        "{err}"
    );
}

// ---- Databases from before refinery ---------------------------------------------------------
//
// `fixtures/pre_refinery.{sqlite,postgres}.sql` are dumps (`sqlite3 .dump`, `pg_dump --inserts`)
// of ledgers written by the last version of the ledger that migrated itself: the schema, its
// `ledger_migrations` history, and the requests below, made at `T0_MS` with the shipped
// tokenomics. Their idempotency keys hold the request fingerprints that code wrote.

const SQLITE_FIXTURE: &str = include_str!("fixtures/pre_refinery.sqlite.sql");
const POSTGRES_FIXTURE: &str = include_str!("fixtures/pre_refinery.postgres.sql");

fn address(text: &str) -> Address {
    text.parse().unwrap()
}

fn alice() -> Address {
    address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
}
fn bob() -> Address {
    address("0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359")
}
fn carol() -> Address {
    address("0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB")
}
fn dave() -> Address {
    address("0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb")
}

/// Replays every request the fixture recorded (same keys, same requests): each returns the
/// outcome recorded then, nothing moves; then a new operation on the old rows works.
async fn check_pre_refinery_ledger(ledger: &AnyLedger) {
    let before = ledger.verify_integrity().await.unwrap();
    assert_eq!(before.transactions, 11);
    let expect = [
        (AccountId::User(alice()), "94.9", "2.2"),
        (AccountId::User(bob()), "1.72", "0"),
        (AccountId::User(carol()), "40", "0"),
        (AccountId::User(dave()), "20000", "0"),
        (TREASURY, "29999905", "0"),
        (REWARD_POOL, "39979960", "0"),
        (BURN, "1.18", "0"),
        (ESCROW, "2.2", "0"),
    ];
    for (account, available, held) in expect {
        let balance = ledger.balance(account).await.unwrap();
        assert_eq!(
            (balance.available, balance.held),
            (bly(available), bly(held)),
            "{account}"
        );
    }

    let transfer = ledger
        .transfer(TransferRequest {
            key: key("fixture-transfer"),
            from: TREASURY,
            to: AccountId::User(alice()),
            amount: bly("100"),
            memo: "welcome".into(),
        })
        .await
        .unwrap();
    assert_eq!(transfer.id, TxId(2));
    let quote = ledger
        .quote(QuoteRequest {
            key: key("fixture-quote-1"),
            payer: alice(),
            estimated_tokens: 1000,
            prompt_tokens: 0,
        })
        .await
        .unwrap();
    assert_eq!((quote.id, quote.payer), (QuoteId(1), alice()));
    let hold = ledger
        .authorize(AuthorizeRequest {
            key: key("fixture-authorize-1"),
            quote: QuoteId(1),
        })
        .await
        .unwrap();
    assert_eq!((hold.id, hold.authorize_tx), (HoldId(1), TxId(3)));
    let capture = ledger
        .capture(CaptureRequest {
            key: key("fixture-capture-1"),
            hold: HoldId(1),
            actual_tokens: 900,
            prompt_tokens: 0,
            server: Some(bob()),
        })
        .await
        .unwrap();
    assert_eq!(
        (capture.transaction, capture.paid_to),
        (TxId(4), AccountId::User(bob()))
    );
    let quote = ledger
        .quote(QuoteRequest {
            key: key("fixture-quote-2"),
            payer: alice(),
            estimated_tokens: 2000,
            prompt_tokens: 0,
        })
        .await
        .unwrap();
    assert_eq!(quote.id, QuoteId(2));
    let open_hold = ledger
        .authorize(AuthorizeRequest {
            key: key("fixture-authorize-2"),
            quote: QuoteId(2),
        })
        .await
        .unwrap();
    assert_eq!((open_hold.id, open_hold.authorize_tx), (HoldId(2), TxId(5)));
    let validation = ledger
        .reward_validation(ValidationRewardRequest {
            key: key("fixture-validation"),
            validator: carol(),
            samples: 2,
        })
        .await
        .unwrap();
    assert_eq!(validation.id, TxId(6));
    let burn = ledger
        .burn(BurnRequest {
            key: key("fixture-burn"),
            from: AccountId::User(alice()),
            amount: bly("1"),
            memo: "burn".into(),
        })
        .await
        .unwrap();
    assert_eq!(burn.id, TxId(7));
    let mint = ledger
        .mint(MintRequest {
            key: key("fixture-mint"),
            to: TREASURY,
            amount: bly("5"),
            memo: "issuance".into(),
        })
        .await
        .unwrap();
    assert_eq!(mint.id, TxId(8));
    let batch: Vec<TransferRequest> = (0..2)
        .map(|i| TransferRequest {
            key: key(format!("fixture-batch-{i}")),
            from: AccountId::User(alice()),
            to: AccountId::User(bob()),
            amount: bly("0.5"),
            memo: format!("batch {i}"),
        })
        .collect();
    let batch: Vec<TxId> = ledger
        .transfer_batch(batch)
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(batch, [TxId(9), TxId(10)]);
    let learning = ledger
        .reward_learning(LearningRewardRequest {
            key: key("fixture-learning"),
            learner: dave(),
            improvement_bps: 100,
        })
        .await
        .unwrap();
    assert_eq!(learning.id, TxId(11));
    assert_eq!(
        ledger.verify_integrity().await.unwrap(),
        before,
        "the replays moved nothing"
    );

    // The hold left open by the old code is captured by the new one.
    let capture = ledger
        .capture(CaptureRequest {
            key: key("after-refinery-capture"),
            hold: HoldId(2),
            actual_tokens: 2000,
            prompt_tokens: 0,
            server: None,
        })
        .await
        .unwrap();
    assert_eq!(capture.hold.status, HoldStatus::Captured);
    assert_eq!((capture.charged, capture.released), (bly("2"), bly("0.2")));
    let balance = ledger.balance(AccountId::User(alice())).await.unwrap();
    assert_eq!((balance.available, balance.held), (bly("95.1"), bly("0")));
    assert_eq!(ledger.verify_integrity().await.unwrap().transactions, 12);

    // V2 applied to this V1 database: the bond escrow exists, empty, and bonds work on the
    // old accounts.
    assert_eq!(available(ledger, BOND_ESCROW).await, Amount::ZERO);
    let bond = ledger
        .lock_bond(BondLockRequest {
            key: key("after-v2-bond"),
            owner: alice(),
            amount: bly("10"),
            memo: "candidate".into(),
        })
        .await
        .unwrap();
    assert_eq!(bond.lock_tx, TxId(13));
    let burned = ledger
        .settle_bond(BondSettleRequest {
            key: key("after-v2-bond-burn"),
            bond: bond.key,
            outcome: BondOutcome::Burn,
            memo: "rejected".into(),
        })
        .await
        .unwrap();
    assert_eq!(burned.state, BondState::Burned);
    assert_eq!(
        available(ledger, AccountId::User(alice())).await,
        bly("85.1")
    );
    assert_eq!(available(ledger, BURN).await, bly("11.58"));
    assert_eq!(ledger.verify_integrity().await.unwrap().transactions, 14);
}

fn load_sqlite_fixture(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("ledger.sqlite");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(SQLITE_FIXTURE)
        .unwrap();
    path
}

fn sqlite_has_table(path: &std::path::Path, table: &str) -> bool {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [table],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
        == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_database_from_before_refinery_opens_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    let path = load_sqlite_fixture(&dir);
    assert!(sqlite_has_table(&path, LEGACY_TABLE));
    let ledger = AnyLedger::Embedded(
        EmbeddedLedger::open_with(&path, tokenomics(), options(1))
            .await
            .unwrap(),
    );
    // The old history became refinery's, and the old table is gone.
    assert_eq!(sqlite_recorded_versions(&path), all_versions());
    assert!(!sqlite_has_table(&path, LEGACY_TABLE));
    check_pre_refinery_ledger(&ledger).await;
    drop(ledger);
    // Opening again is an ordinary open.
    let ledger = EmbeddedLedger::open_with(&path, tokenomics(), options(1))
        .await
        .unwrap();
    assert_eq!(ledger.verify_integrity().await.unwrap().transactions, 14);
    assert_eq!(sqlite_recorded_versions(&path), all_versions());
}

/// Locks a bond for the fixture's alice and burns it, so the V2 tables hold a settled bond.
async fn lock_and_burn_a_bond(ledger: &impl Ledger) {
    ledger
        .lock_bond(BondLockRequest {
            key: key("v2-bond"),
            owner: alice(),
            amount: bly("1"),
            memo: String::new(),
        })
        .await
        .unwrap();
    ledger
        .settle_bond(BondSettleRequest {
            key: key("v2-bond-burn"),
            bond: key("v2-bond"),
            outcome: BondOutcome::Burn,
            memo: String::new(),
        })
        .await
        .unwrap();
}

/// V2 rebuilds `accounts` and `transactions` to widen their CHECKs: the rebuilt tables keep
/// every V1 invariant (CHECKs, triggers, the genesis index, foreign keys), a settled bond can
/// neither change nor vanish, and the helper indexes of the rebuild are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_v2_rebuild_keeps_the_v1_invariants() {
    let dir = tempfile::tempdir().unwrap();
    let path = load_sqlite_fixture(&dir);
    let ledger = EmbeddedLedger::open_with(&path, tokenomics(), options(1))
        .await
        .unwrap();
    lock_and_burn_a_bond(&ledger).await;
    drop(ledger);
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection
        .execute_batch("PRAGMA foreign_keys = ON")
        .unwrap();
    let refused = [
        "UPDATE transactions SET memo = 'x' WHERE id = 1",
        "DELETE FROM transactions WHERE id = 1",
        "INSERT INTO transactions (id, kind, memo, created_at_ms) VALUES (100, 'transfer', '', 0)",
        "INSERT INTO entries (tx_id, account, amount) VALUES (1, 'system:treasury', 1)",
        "INSERT INTO accounts (account, created_at_ms) VALUES ('system:nobody', 0)",
        "UPDATE accounts SET balance = -1 WHERE account = 'system:treasury'",
        "UPDATE accounts SET balance = 1 WHERE account = 'system:mint'",
        "DELETE FROM accounts WHERE account = 'system:treasury'",
        "DELETE FROM bonds",
        "UPDATE bonds SET state = 'locked', settle_tx = NULL, settled_at_ms = NULL",
        "UPDATE bonds SET amount = 1",
    ];
    for sql in refused {
        assert!(connection.execute(sql, []).is_err(), "{sql} was accepted");
    }
    let names: Vec<String> = connection
        .prepare("SELECT name FROM sqlite_schema WHERE type IN ('index', 'trigger') ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    for expected in [
        "transactions_one_genesis",
        "transactions_balanced",
        "transactions_no_update",
        "transactions_no_delete",
        "bonds_settle_once",
        "bonds_no_delete",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.starts_with("v2_")),
        "rebuild helpers left: {names:?}"
    );
    let violations: i64 = connection
        .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(violations, 0);
    let bond_escrow: i64 = connection
        .query_row(
            "SELECT balance FROM accounts WHERE account = 'system:bond_escrow'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(bond_escrow, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_pre_refinery_history_with_an_edited_migration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = load_sqlite_fixture(&dir);
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(&format!("UPDATE {LEGACY_TABLE} SET checksum = '00'"), [])
        .unwrap();
    let err = EmbeddedLedger::open_with(&path, tokenomics(), options(1))
        .await
        .err()
        .expect("an unknown pre-refinery migration is refused");
    assert!(
        matches!(err, LedgerError::LegacyMigration { version: 1, .. }),
        "{err}"
    );
    // Refused before refinery wrote anything.
    assert!(sqlite_has_table(&path, LEGACY_TABLE));
    assert!(!sqlite_has_table(&path, HISTORY_TABLE));
}

async fn load_postgres_fixture() -> String {
    let url = pg::server().fresh_database().await;
    pg::connect(&url)
        .await
        .batch_execute(POSTGRES_FIXTURE)
        .await
        .unwrap();
    url
}

async fn pg_has_table(url: &str, table: &str) -> bool {
    pg::connect(url)
        .await
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_database_from_before_refinery_opens_and_replays() {
    let url = load_postgres_fixture().await;
    assert!(pg_has_table(&url, LEGACY_TABLE).await);
    let ledger = AnyLedger::Pg(
        PgLedger::connect_with(&url, tokenomics(), options(4))
            .await
            .unwrap(),
    );
    assert_eq!(pg_recorded_versions(&url).await, all_versions());
    assert!(!pg_has_table(&url, LEGACY_TABLE).await);
    check_pre_refinery_ledger(&ledger).await;
    drop(ledger);
    let ledger = PgLedger::connect_with(&url, tokenomics(), options(4))
        .await
        .unwrap();
    assert_eq!(ledger.verify_integrity().await.unwrap().transactions, 14);
    assert_eq!(pg_recorded_versions(&url).await, all_versions());
}

/// V2 widens `accounts`' and `transactions`' CHECKs on PostgreSQL: the new account and kinds
/// are admitted, anything else is still refused, the V1 triggers still hold, and a settled
/// bond can neither change nor vanish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_v2_keeps_the_v1_invariants() {
    let url = load_postgres_fixture().await;
    let ledger = PgLedger::connect_with(&url, tokenomics(), options(2))
        .await
        .unwrap();
    lock_and_burn_a_bond(&ledger).await;
    drop(ledger);
    let client = pg::connect(&url).await;
    let refused = [
        "UPDATE transactions SET memo = 'x' WHERE id = 1",
        "INSERT INTO accounts (account, created_at_ms) VALUES ('system:nobody', 0)",
        "INSERT INTO transactions (kind, memo, created_at_ms) VALUES ('bond_nonsense', '', 0)",
        "UPDATE accounts SET balance = -1 WHERE account = 'system:bond_escrow'",
        "DELETE FROM bonds",
    ];
    for sql in refused {
        assert!(
            client.batch_execute(sql).await.is_err(),
            "{sql} was accepted"
        );
    }
    let bond_escrow: i64 = client
        .query_one(
            "SELECT balance FROM accounts WHERE account = 'system:bond_escrow'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(bond_escrow, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_pre_refinery_history_with_an_unknown_version_is_refused() {
    let url = load_postgres_fixture().await;
    pg::connect(&url)
        .await
        .batch_execute(&format!(
            "INSERT INTO {LEGACY_TABLE} (version, name, checksum) VALUES (7, 'unknown', '00')"
        ))
        .await
        .unwrap();
    let err = PgLedger::connect_with(&url, tokenomics(), options(2))
        .await
        .err()
        .expect("an unknown pre-refinery migration is refused");
    assert!(
        matches!(err, LedgerError::LegacyMigration { version: 7, .. }),
        "{err}"
    );
    assert!(pg_has_table(&url, LEGACY_TABLE).await);
    assert!(!pg_has_table(&url, HISTORY_TABLE).await);
}
