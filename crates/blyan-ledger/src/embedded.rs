//! The embedded store: SQLite (bundled) in WAL mode with `synchronous=FULL`, one writer.
//!
//! Why SQLite: it is the best-kept embedded database with real transactions, `CHECK`s,
//! triggers and deferred foreign keys, so the embedded store enforces the same invariants in
//! its schema as PostgreSQL does; WAL + `synchronous=FULL` makes every acknowledged commit
//! durable and every interrupted one vanish on reopen. The node is one process and the ledger
//! is not its hot path, so one writer connection is enough.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blyan_primitives::Address;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, params};

use crate::account::AccountId;
use crate::bond::{Bond, BondState};
use crate::clock::UnixMillis;
use crate::error::{LedgerError, Result};
use crate::grant::GrantSource;
use crate::ledger::{Core, HasCore, LedgerOptions};
use crate::migrate::migrate_sqlite;
use crate::payment::{Hold, HoldId, HoldStatus, Quote, QuoteId};
use crate::pg::{stored_account, stored_address, stored_amount, stored_bond_key};
use crate::store::{
    AuditFacts, Command, Ctx, KeyRow, NewBond, NewGrant, NewHold, NewQuote, NewTransaction, Store,
    StoreTx,
};
use crate::tokenomics::Tokenomics;
use crate::transaction::{Entry, EntryId, HistoryItem, Transaction, TxId, TxKind};

/// How long a writer waits for another process holding the database's write lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Prepared statements kept per connection.
const SQLITE_STATEMENT_CACHE_LEN: usize = 64;

/// The ledger in one SQLite file, for a node run with no database server.
///
/// `open` applies the migrations, records the genesis once, and expires holds that went stale
/// while the node was down. Cloning is cheap and every clone shares the connection.
#[derive(Clone)]
pub struct EmbeddedLedger {
    core: Core<SqliteStore>,
}

impl EmbeddedLedger {
    /// Opens (creating if needed) the ledger file at `path`, with the system clock.
    pub async fn open(path: impl AsRef<Path>, tokenomics: Tokenomics) -> Result<EmbeddedLedger> {
        EmbeddedLedger::open_with(path, tokenomics, LedgerOptions::default()).await
    }

    /// Like [`EmbeddedLedger::open`], with a clock of the caller's choosing.
    pub async fn open_with(
        path: impl AsRef<Path>,
        tokenomics: Tokenomics,
        options: LedgerOptions,
    ) -> Result<EmbeddedLedger> {
        tokenomics.validate()?;
        let path = path.as_ref().to_owned();
        let connection = tokio::task::spawn_blocking(move || open_connection(&path))
            .await
            .map_err(|e| LedgerError::Task {
                reason: e.to_string(),
            })??;
        let store = SqliteStore {
            connection: Arc::new(Mutex::new(connection)),
            failed: Arc::new(AtomicBool::new(false)),
        };
        let core = Core::start(store, tokenomics, options.clock).await?;
        Ok(EmbeddedLedger { core })
    }
}

impl HasCore for EmbeddedLedger {
    type S = SqliteStore;
    fn core(&self) -> &Core<SqliteStore> {
        &self.core
    }
}

/// Opens the file with the store's settings and applies pending migrations.
fn open_connection(path: &Path) -> Result<Connection> {
    create_owner_only(path)?;
    let mut connection = Connection::open(path)?;
    connection.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
    connection.set_prepared_statement_cache_capacity(SQLITE_STATEMENT_CACHE_LEN);
    let mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(LedgerError::WalRefused { journal_mode: mode });
    }
    connection.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    migrate_sqlite(&mut connection)?;
    Ok(connection)
}

/// `blyan_primitives::create_owner_only`, failing as SQLite itself does for a file it cannot
/// create.
fn create_owner_only(path: &Path) -> Result<()> {
    blyan_primitives::create_owner_only(path).map_err(|error| {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!("cannot create {}: {error}", path.display())),
        )
        .into()
    })
}

/// Runs commands on the one connection, off the async threads.
#[derive(Clone)]
pub(crate) struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
    /// Set when a COMMIT or ROLLBACK failed for a reason other than a constraint: the file's
    /// state is then unknown to this connection, so writes are refused until reopened.
    failed: Arc<AtomicBool>,
}

fn is_storage_failure(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(
            ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::NotADatabase
                | ErrorCode::CannotOpen
        )
    )
}

fn run_blocking<C: Command>(
    connection: &mut Connection,
    ctx: &Ctx,
    command: C,
    failed: &AtomicBool,
) -> Result<C::Output> {
    connection.execute_batch(if C::READ_ONLY {
        "BEGIN DEFERRED"
    } else {
        "BEGIN IMMEDIATE"
    })?;
    let result = {
        let mut tx = SqliteTx {
            connection: &mut *connection,
        };
        // Every SqliteTx future is ready at once (rusqlite is synchronous), so this never
        // parks the blocking thread.
        futures::executor::block_on(command.apply(&mut tx, ctx))
    };
    let finished = match &result {
        Ok(_) => connection.execute_batch("COMMIT"),
        Err(_) => connection.execute_batch("ROLLBACK"),
    };
    if let Err(error) = finished {
        if is_storage_failure(&error) {
            failed.store(true, Ordering::SeqCst);
        }
        // A COMMIT refused by a deferred constraint leaves the transaction open.
        if !connection.is_autocommit() && connection.execute_batch("ROLLBACK").is_err() {
            failed.store(true, Ordering::SeqCst);
        }
        return Err(error.into());
    }
    result
}

impl Store for SqliteStore {
    async fn run<C: Command>(&self, ctx: &Arc<Ctx>, command: C) -> Result<C::Output> {
        let connection = Arc::clone(&self.connection);
        let failed = Arc::clone(&self.failed);
        let ctx = Arc::clone(ctx);
        // The blocking thread does not inherit the caller's span: carry it over.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            if !C::READ_ONLY && failed.load(Ordering::SeqCst) {
                return Err(LedgerError::StoreFailed);
            }
            // A panic while holding the lock poisons it; the connection's transaction state
            // is then unknown.
            let mut connection = connection.lock().map_err(|_| LedgerError::StoreFailed)?;
            run_blocking(&mut connection, &ctx, command, &failed)
        })
        .await
        .map_err(|e| LedgerError::Task {
            reason: e.to_string(),
        })?
    }
}

struct SqliteTx<'a> {
    connection: &'a mut Connection,
}

fn ms(value: UnixMillis) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unms(value: i64) -> UnixMillis {
    u64::try_from(value).unwrap_or(0)
}

fn id_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn signed(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

const QUOTE_COLUMNS: &str =
    "id, payer, estimated_tokens, amount, hold_amount, created_at_ms, expires_at_ms";
const HOLD_COLUMNS: &str = "id, quote_id, payer, quoted, amount, status, created_at_ms, \
                            expires_at_ms, authorize_tx, settle_tx";

const BOND_COLUMNS: &str =
    "key, owner, amount, state, locked_at_ms, lock_tx, settled_at_ms, settle_tx";

fn bond_row(row: &Row<'_>) -> Result<Bond> {
    Ok(Bond {
        key: stored_bond_key(&row.get::<_, String>(0)?)?,
        owner: stored_address(&row.get::<_, String>(1)?)?,
        amount: stored_amount(row.get(2)?)?,
        state: BondState::parse(&row.get::<_, String>(3)?)?,
        locked_at_ms: unms(row.get(4)?),
        lock_tx: TxId(id_of(row.get(5)?)),
        settled_at_ms: row.get::<_, Option<i64>>(6)?.map(unms),
        settle_tx: row.get::<_, Option<i64>>(7)?.map(|id| TxId(id_of(id))),
    })
}

fn quote_row(row: &Row<'_>) -> Result<Quote> {
    Ok(Quote {
        id: QuoteId(id_of(row.get(0)?)),
        payer: stored_address(&row.get::<_, String>(1)?)?,
        estimated_tokens: id_of(row.get(2)?),
        amount: stored_amount(row.get(3)?)?,
        hold_amount: stored_amount(row.get(4)?)?,
        created_at_ms: unms(row.get(5)?),
        expires_at_ms: unms(row.get(6)?),
    })
}

fn hold_row(row: &Row<'_>) -> Result<Hold> {
    Ok(Hold {
        id: HoldId(id_of(row.get(0)?)),
        quote: QuoteId(id_of(row.get(1)?)),
        payer: stored_address(&row.get::<_, String>(2)?)?,
        quoted: stored_amount(row.get(3)?)?,
        amount: stored_amount(row.get(4)?)?,
        status: HoldStatus::parse(&row.get::<_, String>(5)?)?,
        created_at_ms: unms(row.get(6)?),
        expires_at_ms: unms(row.get(7)?),
        authorize_tx: TxId(id_of(row.get(8)?)),
        settle_tx: row.get::<_, Option<i64>>(9)?.map(|id| TxId(id_of(id))),
    })
}

impl SqliteTx<'_> {
    fn scalar_i64(&self, sql: &str, params: impl rusqlite::Params) -> Result<i64> {
        let mut statement = self.connection.prepare_cached(sql)?;
        Ok(statement.query_row(params, |r| r.get(0))?)
    }

    fn strings(&self, sql: &str) -> Result<Vec<String>> {
        let mut statement = self.connection.prepare_cached(sql)?;
        let rows = statement.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

impl StoreTx for SqliteTx<'_> {
    async fn claim_key(
        &mut self,
        key: &str,
        request: &str,
        now: UnixMillis,
    ) -> Result<Option<KeyRow>> {
        let inserted = self
            .connection
            .prepare_cached(
                "INSERT INTO idempotency_keys (key, request, created_at_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (key) DO NOTHING",
            )?
            .execute(params![key, request, ms(now)])?;
        if inserted == 1 {
            return Ok(None);
        }
        let mut statement = self
            .connection
            .prepare_cached("SELECT request, outcome FROM idempotency_keys WHERE key = ?1")?;
        let row = statement
            .query_row([key], |r| {
                Ok(KeyRow {
                    request: r.get(0)?,
                    outcome: r.get(1)?,
                })
            })
            .optional()?
            .ok_or_else(|| LedgerError::Integrity {
                what: format!("key {key} vanished"),
            })?;
        Ok(Some(row))
    }

    async fn finish_key(&mut self, key: &str, outcome: &str) -> Result<()> {
        self.connection
            .prepare_cached("UPDATE idempotency_keys SET outcome = ?2 WHERE key = ?1")?
            .execute(params![key, outcome])?;
        Ok(())
    }

    async fn claim_keys(
        &mut self,
        claims: &[(&str, &str)],
        now: UnixMillis,
    ) -> Result<Vec<Option<KeyRow>>> {
        // One writer at a time: the order of the claims cannot deadlock here.
        let mut rows = Vec::with_capacity(claims.len());
        for &(key, request) in claims {
            rows.push(self.claim_key(key, request, now).await?);
        }
        Ok(rows)
    }

    async fn finish_keys(&mut self, outcomes: &[(&str, &str)]) -> Result<()> {
        for &(key, outcome) in outcomes {
            self.finish_key(key, outcome).await?;
        }
        Ok(())
    }

    async fn lock_accounts(
        &mut self,
        accounts: &[AccountId],
        create: &[AccountId],
        now: UnixMillis,
    ) -> Result<BTreeMap<AccountId, i64>> {
        // The IMMEDIATE transaction already holds the database's single write lock.
        for account in create {
            self.connection
                .prepare_cached(
                    "INSERT INTO accounts (account, created_at_ms) VALUES (?1, ?2) \
                     ON CONFLICT (account) DO NOTHING",
                )?
                .execute(params![account.key(), ms(now)])?;
        }
        let mut balances = BTreeMap::new();
        let mut statement = self
            .connection
            .prepare_cached("SELECT balance FROM accounts WHERE account = ?1")?;
        for account in accounts {
            if let Some(balance) = statement
                .query_row([account.key()], |r| r.get::<_, i64>(0))
                .optional()?
            {
                balances.insert(*account, balance);
            }
        }
        Ok(balances)
    }

    async fn insert_transaction(
        &mut self,
        kind: TxKind,
        key: Option<&str>,
        memo: &str,
        now: UnixMillis,
        entries: &[(AccountId, i64)],
    ) -> Result<TxId> {
        // Entries first, then the transaction row, whose trigger checks they balance.
        let id = self.scalar_i64("SELECT COALESCE(MAX(id), 0) + 1 FROM transactions", [])?;
        {
            let mut statement = self.connection.prepare_cached(
                "INSERT INTO entries (tx_id, account, amount) VALUES (?1, ?2, ?3)",
            )?;
            for (account, delta) in entries {
                statement.execute(params![id, account.key(), delta])?;
            }
        }
        self.connection
            .prepare_cached(
                "INSERT INTO transactions (id, kind, idempotency_key, memo, created_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![id, kind.as_str(), key, memo, ms(now)])?;
        Ok(TxId(id_of(id)))
    }

    async fn insert_transactions(
        &mut self,
        transactions: &[NewTransaction<'_>],
        now: UnixMillis,
    ) -> Result<Vec<TxId>> {
        let mut ids = Vec::with_capacity(transactions.len());
        for t in transactions {
            ids.push(
                self.insert_transaction(t.kind, t.key, t.memo, now, t.entries)
                    .await?,
            );
        }
        Ok(ids)
    }

    async fn insert_quote(&mut self, quote: &NewQuote) -> Result<QuoteId> {
        self.connection
            .prepare_cached(
                "INSERT INTO quotes (payer, estimated_tokens, amount, hold_amount, created_at_ms, \
                 expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                quote.payer.to_lower_hex(),
                signed(quote.estimated_tokens),
                quote.amount.as_i64(),
                quote.hold_amount.as_i64(),
                ms(quote.created_at_ms),
                ms(quote.expires_at_ms),
            ])?;
        Ok(QuoteId(id_of(self.connection.last_insert_rowid())))
    }

    async fn quote(&mut self, id: QuoteId, _lock: bool) -> Result<Option<(Quote, Option<HoldId>)>> {
        let sql = format!("SELECT {QUOTE_COLUMNS} FROM quotes WHERE id = ?1");
        let quote = {
            let mut statement = self.connection.prepare_cached(&sql)?;
            let mut rows = statement.query([signed(id.0)])?;
            match rows.next()? {
                Some(row) => quote_row(row)?,
                None => return Ok(None),
            }
        };
        let hold = self
            .connection
            .prepare_cached("SELECT id FROM holds WHERE quote_id = ?1")?
            .query_row([signed(id.0)], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|h| HoldId(id_of(h)));
        Ok(Some((quote, hold)))
    }

    async fn insert_hold(&mut self, hold: &NewHold) -> Result<HoldId> {
        self.connection
            .prepare_cached(
                "INSERT INTO holds (quote_id, payer, quoted, amount, status, created_at_ms, \
                 expires_at_ms, authorize_tx) VALUES (?1, ?2, ?3, ?4, 'authorized', ?5, ?6, ?7)",
            )?
            .execute(params![
                signed(hold.quote.0),
                hold.payer.to_lower_hex(),
                hold.quoted.as_i64(),
                hold.amount.as_i64(),
                ms(hold.created_at_ms),
                ms(hold.expires_at_ms),
                signed(hold.authorize_tx.0),
            ])?;
        Ok(HoldId(id_of(self.connection.last_insert_rowid())))
    }

    async fn hold(&mut self, id: HoldId, _lock: bool) -> Result<Option<Hold>> {
        let sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE id = ?1");
        let mut statement = self.connection.prepare_cached(&sql)?;
        let mut rows = statement.query([signed(id.0)])?;
        rows.next()?.map(hold_row).transpose()
    }

    async fn settle_hold(&mut self, id: HoldId, status: HoldStatus, settle_tx: TxId) -> Result<()> {
        self.connection
            .prepare_cached("UPDATE holds SET status = ?2, settle_tx = ?3 WHERE id = ?1")?
            .execute(params![signed(id.0), status.as_str(), signed(settle_tx.0)])?;
        Ok(())
    }

    async fn lock_stale_holds(&mut self, now: UnixMillis, limit: u32) -> Result<Vec<Hold>> {
        let sql = format!(
            "SELECT {HOLD_COLUMNS} FROM holds WHERE status = 'authorized' AND expires_at_ms <= ?1 \
             ORDER BY expires_at_ms, id LIMIT ?2"
        );
        let mut statement = self.connection.prepare_cached(&sql)?;
        let mut rows = statement.query(params![ms(now), limit])?;
        let mut holds = Vec::new();
        while let Some(row) = rows.next()? {
            holds.push(hold_row(row)?);
        }
        Ok(holds)
    }

    async fn insert_bond(&mut self, bond: &NewBond<'_>) -> Result<()> {
        self.connection
            .prepare_cached(
                "INSERT INTO bonds (key, owner, amount, state, locked_at_ms, lock_tx) \
                 VALUES (?1, ?2, ?3, 'locked', ?4, ?5)",
            )?
            .execute(params![
                bond.key,
                bond.owner.to_lower_hex(),
                bond.amount.as_i64(),
                ms(bond.locked_at_ms),
                signed(bond.lock_tx.0),
            ])?;
        Ok(())
    }

    async fn bond(&mut self, key: &str, _lock: bool) -> Result<Option<Bond>> {
        let sql = format!("SELECT {BOND_COLUMNS} FROM bonds WHERE key = ?1");
        let mut statement = self.connection.prepare_cached(&sql)?;
        let mut rows = statement.query([key])?;
        rows.next()?.map(bond_row).transpose()
    }

    async fn settle_bond(
        &mut self,
        key: &str,
        state: BondState,
        settle_tx: TxId,
        now: UnixMillis,
    ) -> Result<()> {
        self.connection
            .prepare_cached(
                "UPDATE bonds SET state = ?2, settle_tx = ?3, settled_at_ms = ?4 WHERE key = ?1",
            )?
            .execute(params![key, state.as_str(), signed(settle_tx.0), ms(now)])?;
        Ok(())
    }

    async fn insert_grant(&mut self, grant: &NewGrant) -> Result<()> {
        self.connection
            .prepare_cached(
                "INSERT INTO grants (tx_id, recipient, amount, source, created_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                signed(grant.tx.0),
                grant.recipient.to_lower_hex(),
                grant.amount.as_i64(),
                grant.source.as_str(),
                ms(grant.created_at_ms),
            ])?;
        Ok(())
    }

    async fn granted_total(&mut self) -> Result<i64> {
        self.scalar_i64("SELECT COALESCE(SUM(amount), 0) FROM grants", [])
    }

    async fn grants_since(
        &mut self,
        source: GrantSource,
        recipient: Option<&Address>,
        since: UnixMillis,
    ) -> Result<(u64, i64)> {
        let recipient = recipient.map(Address::to_lower_hex);
        let mut statement = self.connection.prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM grants \
             WHERE source = ?1 AND created_at_ms >= ?2 AND (?3 IS NULL OR recipient = ?3)",
        )?;
        let (count, sum) = statement
            .query_row(params![source.as_str(), ms(since), recipient], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })?;
        Ok((id_of(count), sum))
    }

    async fn prune_keys(&mut self, before: UnixMillis) -> Result<u64> {
        let deleted = self
            .connection
            .prepare_cached(
                "DELETE FROM idempotency_keys WHERE created_at_ms < ?1 \
                 AND key NOT LIKE 'ledger/%' \
                 AND NOT EXISTS (SELECT 1 FROM bonds b WHERE b.key = idempotency_keys.key)",
            )?
            .execute([ms(before)])?;
        Ok(deleted as u64)
    }

    async fn prune_quotes(&mut self, from: UnixMillis, before: UnixMillis) -> Result<u64> {
        let deleted = self
            .connection
            .prepare_cached(
                "DELETE FROM quotes WHERE expires_at_ms >= ?1 AND expires_at_ms < ?2 \
                 AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.quote_id = quotes.id)",
            )?
            .execute([ms(from), ms(before)])?;
        Ok(deleted as u64)
    }

    async fn meta(&mut self, key: &str) -> Result<Option<String>> {
        Ok(self
            .connection
            .prepare_cached("SELECT value FROM ledger_meta WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    async fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.connection
            .prepare_cached(
                "INSERT INTO ledger_meta (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([key, value])?;
        Ok(())
    }

    async fn inflation_year(&mut self, year: u64) -> Result<Option<(i64, i64)>> {
        Ok(self
            .connection
            .prepare_cached("SELECT base_supply, minted FROM inflation_years WHERE year = ?1")?
            .query_row([signed(year)], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    async fn put_inflation_year(&mut self, year: u64, base: i64, minted: i64) -> Result<()> {
        self.connection
            .prepare_cached(
                "INSERT INTO inflation_years (year, base_supply, minted) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (year) DO UPDATE SET minted = excluded.minted",
            )?
            .execute(params![signed(year), base, minted])?;
        Ok(())
    }

    async fn circulating_at(&mut self, at: UnixMillis) -> Result<i64> {
        let sum = self.scalar_i64(
            "SELECT COALESCE(SUM(e.amount), 0) FROM entries e \
             JOIN transactions t ON t.id = e.tx_id \
             WHERE e.account IN ('system:mint', 'system:burn') AND t.created_at_ms <= ?1",
            [ms(at)],
        )?;
        // mint's entries are minus the minted, burn's plus the burned.
        Ok(-sum)
    }

    async fn balance(&mut self, account: &AccountId) -> Result<Option<i64>> {
        Ok(self
            .connection
            .prepare_cached("SELECT balance FROM accounts WHERE account = ?1")?
            .query_row([account.key()], |r| r.get(0))
            .optional()?)
    }

    async fn held(&mut self, payer: &Address) -> Result<i64> {
        self.scalar_i64(
            "SELECT (SELECT COALESCE(SUM(amount), 0) FROM holds \
                     WHERE payer = ?1 AND status = 'authorized') \
                  + (SELECT COALESCE(SUM(amount), 0) FROM bonds \
                     WHERE owner = ?1 AND state = 'locked')",
            [payer.to_lower_hex()],
        )
    }

    async fn transaction(&mut self, id: TxId) -> Result<Option<Transaction>> {
        let header = self
            .connection
            .prepare_cached(
                "SELECT kind, idempotency_key, memo, created_at_ms FROM transactions WHERE id = ?1",
            )?
            .query_row([signed(id.0)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .optional()?;
        let Some((kind, idempotency_key, memo, created_at_ms)) = header else {
            return Ok(None);
        };
        let mut statement = self
            .connection
            .prepare_cached("SELECT account, amount FROM entries WHERE tx_id = ?1 ORDER BY id")?;
        let rows = statement.query_map([signed(id.0)], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut entries = Vec::new();
        for row in rows {
            let (account, delta) = row?;
            entries.push(Entry::from_delta(stored_account(&account)?, delta)?);
        }
        Ok(Some(Transaction {
            id,
            kind: TxKind::parse(&kind)?,
            idempotency_key,
            memo,
            created_at_ms: unms(created_at_ms),
            entries,
        }))
    }

    async fn history(
        &mut self,
        account: &AccountId,
        before: Option<EntryId>,
        limit: u32,
    ) -> Result<Vec<HistoryItem>> {
        let before = before.map_or(i64::MAX, |e| signed(e.0));
        let mut statement = self.connection.prepare_cached(
            "SELECT e.id, e.tx_id, t.kind, e.amount, t.memo, t.created_at_ms \
             FROM entries e JOIN transactions t ON t.id = e.tx_id \
             WHERE e.account = ?1 AND e.id < ?2 ORDER BY e.id DESC LIMIT ?3",
        )?;
        let mut rows = statement.query(params![account.key(), before, limit])?;
        let mut items = Vec::new();
        while let Some(r) = rows.next()? {
            let entry = Entry::from_delta(*account, r.get(3)?)?;
            items.push(HistoryItem {
                entry_id: EntryId(id_of(r.get(0)?)),
                tx_id: TxId(id_of(r.get(1)?)),
                kind: TxKind::parse(&r.get::<_, String>(2)?)?,
                direction: entry.direction,
                amount: entry.amount,
                memo: r.get(4)?,
                created_at_ms: unms(r.get(5)?),
            });
        }
        Ok(items)
    }

    async fn audit(&mut self) -> Result<AuditFacts> {
        let count = |tx: &Self, sql: &str| tx.scalar_i64(sql, []).map(id_of);
        let mut facts = AuditFacts {
            accounts: count(self, "SELECT COUNT(*) FROM accounts")?,
            transactions: count(self, "SELECT COUNT(*) FROM transactions")?,
            entries: count(self, "SELECT COUNT(*) FROM entries")?,
            ..AuditFacts::default()
        };
        facts.unbalanced = {
            let mut statement = self.connection.prepare_cached(
                "SELECT t.id FROM transactions t LEFT JOIN entries e ON e.tx_id = t.id \
                 GROUP BY t.id HAVING COALESCE(SUM(e.amount), 0) <> 0 OR COUNT(e.id) < 2 \
                 ORDER BY t.id LIMIT 20",
            )?;
            let rows = statement.query_map([], |r| r.get::<_, i64>(0))?;
            rows.map(|r| r.map(id_of))
                .collect::<rusqlite::Result<_>>()?
        };
        facts.orphan_entries = count(
            self,
            "SELECT COUNT(*) FROM entries e LEFT JOIN transactions t ON t.id = e.tx_id \
             WHERE t.id IS NULL",
        )?;
        facts.drifted = self.strings(
            "SELECT a.account FROM accounts a LEFT JOIN \
             (SELECT account, SUM(amount) AS total FROM entries GROUP BY account) x \
             ON x.account = a.account WHERE a.balance <> COALESCE(x.total, 0) LIMIT 20",
        )?;
        facts.negative = self.strings(
            "SELECT account FROM accounts WHERE balance < 0 AND account <> 'system:mint' LIMIT 20",
        )?;
        // Bounded by the supply cap, so SQLite's 64-bit SUM cannot overflow.
        facts.balance_sum =
            i128::from(self.scalar_i64("SELECT COALESCE(SUM(balance), 0) FROM accounts", [])?);
        let balance_of = |tx: &Self, name: &str| {
            tx.scalar_i64(
                "SELECT COALESCE((SELECT balance FROM accounts WHERE account = ?1), 0)",
                [name],
            )
        };
        facts.escrow = balance_of(self, "system:fee_escrow")?;
        facts.mint = balance_of(self, "system:mint")?;
        facts.burn = balance_of(self, "system:burn")?;
        facts.held = self.scalar_i64(
            "SELECT COALESCE(SUM(amount), 0) FROM holds WHERE status = 'authorized'",
            [],
        )?;
        facts.bond_escrow = balance_of(self, "system:bond_escrow")?;
        facts.bonded = self.scalar_i64(
            "SELECT COALESCE(SUM(amount), 0) FROM bonds WHERE state = 'locked'",
            [],
        )?;
        Ok(facts)
    }
}
