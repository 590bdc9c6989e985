//! Faults: connections dropped and processes killed mid-transaction leave no partial
//! transaction; the schema itself refuses unbalanced and negative writes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use blyan_ledger::{
    Amount, AnyLedger, AuthorizeRequest, EmbeddedLedger, HoldStatus, Ledger, LedgerOptions,
    ManualClock, PgLedger, QuoteRequest, TransferRequest,
};

use crate::pg;
use crate::support::*;

const CHILD_DB_ENV: &str = "BLYAN_LEDGER_CHILD_DB";
const CHILD_MODE_ENV: &str = "BLYAN_LEDGER_CHILD_MODE";
const CHILD_BATCH_LEN: u32 = 50;

// ---- PostgreSQL -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_backend_terminated_mid_transaction_leaves_nothing() {
    let f = Fixture::new(Backend::Pg).await;
    let ledger = f.open().await;
    fund(&ledger, user(1), "100").await;
    let before = snapshot(&ledger, &[user(1), user(2), TREASURY]).await;

    // A transaction written by hand and not committed, then its backend is terminated.
    let victim = pg::connect(&f.location).await;
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    victim
        .batch_execute(
            "BEGIN;
             INSERT INTO transactions (id, kind, memo, created_at_ms) VALUES (900001, 'transfer', 'half', 0);
             INSERT INTO entries (tx_id, account, amount) VALUES (900001, (SELECT account FROM accounts WHERE account LIKE '0x%' LIMIT 1), -5000000), (900001, 'system:treasury', 5000000);",
        )
        .await
        .unwrap();
    let admin = pg::connect(&f.location).await;
    let terminated: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(terminated);
    assert!(
        victim.batch_execute("COMMIT").await.is_err(),
        "the connection is gone"
    );

    assert_eq!(
        snapshot(&ledger, &[user(1), user(2), TREASURY]).await,
        before
    );
    assert_eq!(
        ledger
            .transaction(blyan_ledger::TxId(900001))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_connections_killed_under_load_lose_and_duplicate_nothing() {
    const TASKS: u32 = 8;
    const TRANSFERS: u32 = 40;
    let f = Fixture::new(Backend::Pg).await;
    let ledger = Arc::new(f.open().await);
    fund(&*ledger, user(1), "1000").await;

    let killer_url = f.location.clone();
    let killer = tokio::spawn(async move {
        let admin = pg::connect(&killer_url).await;
        let mut killed = 0u64;
        for _ in 0..30 {
            tokio::time::sleep(std::time::Duration::from_millis(15)).await;
            let rows = admin
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap();
            killed += rows.len() as u64;
        }
        killed
    });
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let ledger = Arc::clone(&ledger);
        tasks.push(tokio::spawn(async move {
            let mut retries = 0u32;
            for i in 0..TRANSFERS {
                let request = TransferRequest {
                    key: key(format!("load-{t}-{i}")),
                    from: user(1),
                    to: user(10 + t),
                    amount: bly("1"),
                    memo: String::new(),
                };
                // The outcome of a request whose connection died is unknown: retry it with the
                // same key until the ledger answers.
                loop {
                    match ledger.transfer(request.clone()).await {
                        Ok(_) => break,
                        Err(e) if !e.is_refusal() && retries < 10_000 => retries += 1,
                        Err(e) => panic!("transfer {t}/{i}: {e}"),
                    }
                }
            }
            retries
        }));
    }
    let mut retries = 0;
    for task in tasks {
        retries += task.await.unwrap();
    }
    let killed = killer.await.unwrap();
    assert!(killed > 0, "the killer terminated some backends");
    for t in 0..TASKS {
        assert_eq!(
            available(&*ledger, user(10 + t)).await,
            bly(&TRANSFERS.to_string()),
            "once each"
        );
    }
    let spent = Amount::from_bly(u64::from(TASKS * TRANSFERS)).unwrap();
    assert_eq!(
        available(&*ledger, user(1)).await,
        bly("1000").checked_sub(spent).unwrap()
    );
    ledger.verify_integrity().await.unwrap();
    eprintln!("terminated {killed} backends; {retries} retried requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_schema_refuses_unbalanced_and_negative_writes() {
    let f = Fixture::new(Backend::Pg).await;
    let ledger = f.open().await;
    fund(&ledger, user(1), "1").await;
    let client = pg::connect(&f.location).await;
    let alice = user(1).key();
    // Unbalanced: refused by the statement check on entries.
    let unbalanced = format!(
        "BEGIN;
         INSERT INTO transactions (id, kind, memo, created_at_ms) VALUES (900001, 'transfer', '', 0);
         INSERT INTO entries (tx_id, account, amount) VALUES (900001, '{alice}', -1);
         COMMIT;"
    );
    let err = client.batch_execute(&unbalanced).await.unwrap_err();
    assert!(
        err.to_string().contains("unbalanced") || format!("{err:?}").contains("unbalanced"),
        "{err:?}"
    );
    client.batch_execute("ROLLBACK").await.ok();
    // Balanced but overdrawing a user: refused by the CHECK.
    let overdraw = format!(
        "BEGIN;
         INSERT INTO transactions (id, kind, memo, created_at_ms) VALUES (900002, 'transfer', '', 0);
         INSERT INTO entries (tx_id, account, amount) VALUES (900002, '{alice}', -2000000), (900002, 'system:treasury', 2000000);
         COMMIT;"
    );
    let err = client.batch_execute(&overdraw).await.unwrap_err();
    assert!(
        format!("{err:?}").contains("balance_not_negative"),
        "{err:?}"
    );
    client.batch_execute("ROLLBACK").await.ok();
    // Entries are append-only.
    let err = client
        .batch_execute("UPDATE entries SET amount = amount * 2")
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("append-only"), "{err:?}");
    // Entries naming an account or a transaction that does not exist.
    let unknown_account = format!(
        "BEGIN;
         INSERT INTO transactions (id, kind, memo, created_at_ms) VALUES (900003, 'transfer', '', 0);
         INSERT INTO entries (tx_id, account, amount) VALUES (900003, '{alice}', -1), (900003, '0x{}', 1);
         COMMIT;",
        "ab".repeat(20)
    );
    let err = client.batch_execute(&unknown_account).await.unwrap_err();
    assert!(format!("{err:?}").contains("does not exist"), "{err:?}");
    client.batch_execute("ROLLBACK").await.ok();
    let unknown_transaction = format!(
        "INSERT INTO entries (tx_id, account, amount) VALUES (900004, '{alice}', -1), (900004, 'system:treasury', 1);"
    );
    let err = client
        .batch_execute(&unknown_transaction)
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("900004"), "{err:?}");
    // A transaction row with no entries: refused at COMMIT.
    let empty = "BEGIN;
         INSERT INTO transactions (id, kind, memo, created_at_ms) VALUES (900005, 'transfer', '', 0);
         COMMIT;";
    let err = client.batch_execute(empty).await.unwrap_err();
    assert!(format!("{err:?}").contains("unbalanced"), "{err:?}");
    client.batch_execute("ROLLBACK").await.ok();
    // Accounts are never deleted (entries still name them).
    for statement in [
        format!("DELETE FROM accounts WHERE account = '{alice}'"),
        "TRUNCATE accounts CASCADE".to_owned(),
    ] {
        let err = client.batch_execute(&statement).await.unwrap_err();
        assert!(format!("{err:?}").contains("never deleted"), "{err:?}");
    }
    ledger.verify_integrity().await.unwrap();
    assert_eq!(available(&ledger, user(1)).await, bly("1"));
}

// ---- Embedded -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_schema_refuses_unbalanced_and_negative_writes() {
    let f = Fixture::new(Backend::Embedded).await;
    let ledger = f.open().await;
    fund(&ledger, user(1), "1").await;
    let alice = user(1).key();
    let connection = rusqlite::Connection::open(&f.location).unwrap();
    connection
        .execute_batch("PRAGMA foreign_keys = ON")
        .unwrap();
    // Entries with no transaction row: the deferred foreign key refuses the COMMIT.
    let orphan = format!(
        "BEGIN; INSERT INTO entries (tx_id, account, amount) VALUES (900001, '{alice}', -1); COMMIT;"
    );
    let err = connection.execute_batch(&orphan).unwrap_err();
    assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
    connection.execute_batch("ROLLBACK").unwrap();
    // A transaction row over unbalanced entries: refused by its trigger.
    let unbalanced = format!(
        "BEGIN;
         INSERT INTO entries (tx_id, account, amount) VALUES (900001, '{alice}', -1);
         INSERT INTO transactions (id, kind, memo, created_at_ms) VALUES (900001, 'transfer', '', 0);"
    );
    let err = connection.execute_batch(&unbalanced).unwrap_err();
    assert!(err.to_string().contains("unbalanced"), "{err}");
    connection.execute_batch("ROLLBACK").unwrap();
    let overdraw = format!(
        "BEGIN; INSERT INTO entries (tx_id, account, amount) VALUES (900002, '{alice}', -2000000);"
    );
    let err = connection.execute_batch(&overdraw).unwrap_err();
    assert!(err.to_string().contains("balance_not_negative"), "{err}");
    connection.execute_batch("ROLLBACK").unwrap();
    let err = connection
        .execute_batch("UPDATE entries SET amount = amount * 2")
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = connection
        .execute_batch("DELETE FROM accounts WHERE account = 'system:team'")
        .unwrap_err();
    assert!(err.to_string().contains("never deleted"), "{err}");
    drop(connection);
    ledger.verify_integrity().await.unwrap();
    assert_eq!(available(&ledger, user(1)).await, bly("1"));
}

/// Runs this test binary's `child_process` in `mode` on `db` (a file or a connection string);
/// kills it (SIGKILL) once it prints a line starting with `kill_at`. Returns the last
/// `committed` count it printed.
fn run_child_and_kill(db: &str, mode: &str, kill_at: &str) -> Option<u32> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "faults::child_process",
            "--nocapture",
        ])
        .env(CHILD_DB_ENV, db)
        .env(CHILD_MODE_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut last_committed = None;
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("CHILD committed ") {
            last_committed = Some(n.trim().parse().unwrap());
        }
        if line.starts_with(kill_at) {
            child.kill().unwrap();
            killed = true;
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed,
        "the child ended before printing {kill_at:?}: {status}"
    );
    last_committed
}

/// A process killed (SIGKILL) while holding a half-written transaction open, then another
/// killed while committing batches in a loop: the store keeps whole transactions only, and
/// the ledger reopened later has correct balances and has expired the stale hold.
async fn process_killed_mid_transaction_leaves_nothing(backend: Backend) {
    let f = Fixture::new(backend).await;
    let ledger = f.open().await;
    let (alice, bob) = (user(1), user(2));
    fund(&ledger, alice, "1000").await;
    let quote = ledger
        .quote(QuoteRequest {
            key: key("q"),
            payer: addr(1),
            estimated_tokens: 1000,
            prompt_tokens: 0,
        })
        .await
        .unwrap();
    let hold = ledger
        .authorize(AuthorizeRequest {
            key: key("a"),
            quote: quote.id,
        })
        .await
        .unwrap();
    let before = snapshot(&ledger, &[alice, bob, TREASURY, ESCROW]).await;
    drop(ledger);
    let prefix = match backend {
        Backend::Embedded => "embedded",
        Backend::Pg => "pg",
    };

    // 1. Killed while holding a hand-written half transaction open.
    run_child_and_kill(
        &f.location,
        &format!("{prefix}-raw"),
        "CHILD mid-transaction",
    );
    let ledger = f.open().await;
    assert_eq!(
        snapshot(&ledger, &[alice, bob, TREASURY, ESCROW]).await,
        before
    );
    assert_eq!(
        ledger
            .transaction(blyan_ledger::TxId(900_001))
            .await
            .unwrap(),
        None
    );
    drop(ledger);

    // 2. Killed while committing batches of transfers in a loop.
    let committed = run_child_and_kill(
        &f.location,
        &format!("{prefix}-ledger"),
        "CHILD committed 5",
    )
    .unwrap();
    assert!(committed >= 5);
    // Reopened ten minutes later: balances whole batches only, and the stale hold expired.
    f.clock.advance_ms(600_000);
    let ledger = f.open().await;
    ledger.verify_integrity().await.unwrap();
    let moved = available(&ledger, bob).await;
    let batch = Amount::from_units(u64::from(CHILD_BATCH_LEN) * 10_000).unwrap();
    assert_eq!(
        moved.units() % batch.units(),
        0,
        "whole batches only: {moved}"
    );
    assert!(moved.units() >= batch.units() * u64::from(committed));
    assert_eq!(
        available(&ledger, alice).await.checked_add(moved).unwrap(),
        bly("1000"),
        "nothing lost, nothing made"
    );
    assert_eq!(
        ledger.hold(hold.id).await.unwrap().unwrap().status,
        HoldStatus::Expired
    );
    assert_eq!(ledger.balance(alice).await.unwrap().held, Amount::ZERO);
    // Replaying the last acknowledged batch moves nothing.
    let replay = child_batch(committed);
    ledger.transfer_batch(replay).await.unwrap();
    assert_eq!(available(&ledger, bob).await, moved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_process_killed_mid_transaction_leaves_nothing() {
    process_killed_mid_transaction_leaves_nothing(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_process_killed_mid_transaction_leaves_nothing() {
    process_killed_mid_transaction_leaves_nothing(Backend::Pg).await;
}

fn child_batch(batch: u32) -> Vec<TransferRequest> {
    (0..CHILD_BATCH_LEN)
        .map(|i| TransferRequest {
            key: key(format!("child-{batch}-{i}")),
            from: user(1),
            to: user(2),
            amount: Amount::from_units(10_000).unwrap(),
            memo: String::new(),
        })
        .collect()
}

fn say(line: &str) {
    use std::io::Write;
    println!("{line}");
    std::io::stdout().flush().unwrap();
}

/// The process the fault tests kill; it does nothing unless started by them.
#[test]
#[ignore = "run as a child process by the process_killed_mid_transaction tests"]
fn child_process() {
    let (Ok(db), Ok(mode)) = (std::env::var(CHILD_DB_ENV), std::env::var(CHILD_MODE_ENV)) else {
        panic!("run by the fault tests only ({CHILD_DB_ENV} and {CHILD_MODE_ENV} unset)");
    };
    // Both halves of a balanced transfer's entries, without the transaction row (SQLite) or
    // before COMMIT (PostgreSQL).
    let half = |alice: &str| {
        let treasury = TREASURY.key();
        format!(
            "INSERT INTO entries (tx_id, account, amount)
                 VALUES (900001, '{alice}', -5000000), (900001, '{treasury}', 5000000);"
        )
    };
    let alice = user(1).key();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let options = LedgerOptions {
            clock: Arc::new(ManualClock::new(T0_MS)),
            pg_pool_size: 1,
        };
        let ledger = match mode.as_str() {
            "embedded-raw" => {
                let connection = rusqlite::Connection::open(&db).unwrap();
                connection
                    .execute_batch(&format!("BEGIN IMMEDIATE; {}", half(&alice)))
                    .unwrap();
                say("CHILD mid-transaction");
                std::thread::sleep(std::time::Duration::from_secs(120));
                panic!("the parent should have killed this process");
            }
            "pg-raw" => {
                let client = pg::connect(&db).await;
                client
                    .batch_execute(&format!(
                        "BEGIN;
                         INSERT INTO transactions (id, kind, memo, created_at_ms)
                             VALUES (900001, 'transfer', 'half', 0);
                         {}",
                        half(&alice)
                    ))
                    .await
                    .unwrap();
                say("CHILD mid-transaction");
                tokio::time::sleep(std::time::Duration::from_secs(120)).await;
                panic!("the parent should have killed this process");
            }
            "embedded-ledger" => AnyLedger::Embedded(
                EmbeddedLedger::open_with(&db, tokenomics(), options)
                    .await
                    .unwrap(),
            ),
            "pg-ledger" => AnyLedger::Pg(
                PgLedger::connect_with(&db, tokenomics(), options)
                    .await
                    .unwrap(),
            ),
            other => panic!("unknown child mode {other:?}"),
        };
        for batch in 1..100_000 {
            ledger.transfer_batch(child_batch(batch)).await.unwrap();
            say(&format!("CHILD committed {batch}"));
        }
    });
    panic!("the parent should have killed this process");
}
