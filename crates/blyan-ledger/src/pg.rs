//! The PostgreSQL store: `tokio-postgres` behind a `deadpool-postgres` pool, READ COMMITTED,
//! row locks in ascending account order, invariants also enforced by the schema.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use blyan_primitives::Address;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row};

use crate::account::AccountId;
use crate::amount::Amount;
use crate::bond::{Bond, BondState};
use crate::clock::UnixMillis;
use crate::error::{LedgerError, Result};
use crate::grant::GrantSource;
use crate::ledger::{Core, HasCore, LedgerOptions};
use crate::payment::{Hold, HoldId, HoldStatus, Quote, QuoteId};
use crate::request::IdempotencyKey;
use crate::store::{
    AuditFacts, Command, Ctx, KeyRow, NewBond, NewGrant, NewHold, NewQuote, NewTransaction, Store,
    StoreTx,
};
use crate::tokenomics::Tokenomics;
use crate::transaction::{EntryId, HistoryItem, Transaction, TxId, TxKind};

/// How often a transaction rolled back by a deadlock or serialization failure is retried.
const PG_RETRIES_MAX: u32 = 8;

/// The ledger on PostgreSQL.
///
/// `connect` applies the migrations (safe when several processes start at once), records the
/// genesis once, and expires holds that went stale while no node was running. Cloning is
/// cheap and every clone shares the pool.
#[derive(Clone)]
pub struct PgLedger {
    core: Core<PgStore>,
    pool: Pool,
}

impl PgLedger {
    /// Connects to `url` (a `postgresql://` URL or a `host=… dbname=…` string) with the system
    /// clock and default pool size. TLS as the string's `sslmode` asks: `require`,
    /// `verify-ca` or `verify-full` connect with TLS or not at all (a server without TLS is
    /// refused, never used in plaintext); `sslrootcert` names the roots of `verify-*`.
    pub async fn connect(url: &str, tokenomics: Tokenomics) -> Result<PgLedger> {
        PgLedger::connect_with(url, tokenomics, LedgerOptions::default()).await
    }

    /// Like [`PgLedger::connect`], with a clock and pool size of the caller's choosing.
    pub async fn connect_with(
        url: &str,
        tokenomics: Tokenomics,
        options: LedgerOptions,
    ) -> Result<PgLedger> {
        tokenomics.validate()?;
        let pool = pg_pool(url, options.pg_pool_size)?;
        migrate_pg(&pool).await?;
        let store = PgStore { pool: pool.clone() };
        let core = Core::start(store, tokenomics, options.clock).await?;
        Ok(PgLedger { core, pool })
    }

    /// The connection pool (for operational queries and tests).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl HasCore for PgLedger {
    type S = PgStore;
    fn core(&self) -> &Core<PgStore> {
        &self.core
    }
}

/// A pool for `url` with at most `size` connections.
fn pg_pool(url: &str, size: usize) -> Result<Pool> {
    let target = crate::pg_tls::parse(url)?;
    tracing::debug!(tls = ?target.mode, pool_size = size, "PostgreSQL pool");
    let manager = Manager::from_config(
        target.config,
        target.tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .build()
        .map_err(|e| LedgerError::PgConfig {
            reason: format!("{e}"),
        })
}

/// Applies the PostgreSQL migrations to the database at `url`, each once, in order, taking
/// over a pre-refinery migration history first (see the crate documentation). Several
/// processes may call this at once: an advisory lock serialises them.
pub async fn migrate_postgres(url: &str) -> Result<()> {
    let pool = pg_pool(url, 1)?;
    migrate_pg(&pool).await
}

async fn migrate_pg(pool: &Pool) -> Result<()> {
    let mut client = pool.get().await?;
    let client: &mut tokio_postgres::Client = &mut client;
    crate::migrate::migrate_postgres(client).await
}

/// Runs commands on pooled connections.
#[derive(Clone)]
pub(crate) struct PgStore {
    pool: Pool,
}

fn retryable(error: &LedgerError) -> bool {
    match error {
        LedgerError::Postgres(e) => matches!(
            e.code(),
            Some(&SqlState::T_R_DEADLOCK_DETECTED) | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
        ),
        _ => false,
    }
}

impl Store for PgStore {
    async fn run<C: Command>(&self, ctx: &Arc<Ctx>, command: C) -> Result<C::Output> {
        let mut attempt = 0;
        loop {
            let mut client = self.pool.get().await?;
            // Reads run on one snapshot (consistent figures); writes use READ COMMITTED with
            // explicit row locks.
            let isolation = if C::READ_ONLY {
                IsolationLevel::RepeatableRead
            } else {
                IsolationLevel::ReadCommitted
            };
            let tx = client
                .build_transaction()
                .isolation_level(isolation)
                .read_only(C::READ_ONLY)
                .start()
                .await?;
            let mut store_tx = PgTx { tx };
            let result = match command.clone().apply(&mut store_tx, ctx).await {
                Ok(output) => store_tx
                    .tx
                    .commit()
                    .await
                    .map(|()| output)
                    .map_err(Into::into),
                Err(error) => {
                    // Dropping the transaction would roll back too; do it now so the
                    // connection returns to the pool clean.
                    let _ = store_tx.tx.rollback().await;
                    Err(error)
                }
            };
            match result {
                Err(error) if retryable(&error) && attempt < PG_RETRIES_MAX => {
                    attempt += 1;
                    tracing::debug!(attempt, %error, "retrying ledger transaction");
                }
                other => return other,
            }
        }
    }
}

struct PgTx<'a> {
    tx: deadpool_postgres::Transaction<'a>,
}

impl PgTx<'_> {
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let statement = self.tx.prepare_cached(sql).await?;
        Ok(self.tx.query(&statement, params).await?)
    }

    async fn query_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
        let statement = self.tx.prepare_cached(sql).await?;
        Ok(self.tx.query_opt(&statement, params).await?)
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let statement = self.tx.prepare_cached(sql).await?;
        Ok(self.tx.execute(&statement, params).await?)
    }
}

/// Milliseconds as a BIGINT (exact until the year 292 million).
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

pub(crate) fn stored_amount(units: i64) -> Result<Amount> {
    u64::try_from(units)
        .ok()
        .and_then(|u| Amount::from_units(u).ok())
        .ok_or_else(|| LedgerError::Integrity {
            what: format!("stored amount {units} < 0"),
        })
}

pub(crate) fn stored_account(text: &str) -> Result<AccountId> {
    text.parse().map_err(|e| LedgerError::Integrity {
        what: format!("stored account: {e}"),
    })
}

pub(crate) fn stored_address(text: &str) -> Result<Address> {
    text.parse().map_err(|e| LedgerError::Integrity {
        what: format!("stored address: {e}"),
    })
}

pub(crate) fn stored_bond_key(text: &str) -> Result<IdempotencyKey> {
    IdempotencyKey::new(text).map_err(|e| LedgerError::Integrity {
        what: format!("stored bond key: {e}"),
    })
}

const QUOTE_COLUMNS: &str =
    "id, payer, estimated_tokens, amount, hold_amount, created_at_ms, expires_at_ms";
const HOLD_COLUMNS: &str = "id, quote_id, payer, quoted, amount, status, created_at_ms, \
                            expires_at_ms, authorize_tx, settle_tx";
const BOND_COLUMNS: &str =
    "key, owner, amount, state, locked_at_ms, lock_tx, settled_at_ms, settle_tx";

fn bond_row(row: &Row) -> Result<Bond> {
    Ok(Bond {
        key: stored_bond_key(row.get(0))?,
        owner: stored_address(row.get(1))?,
        amount: stored_amount(row.get(2))?,
        state: BondState::parse(row.get(3))?,
        locked_at_ms: unms(row.get(4)),
        lock_tx: TxId(id_of(row.get(5))),
        settled_at_ms: row.get::<_, Option<i64>>(6).map(unms),
        settle_tx: row.get::<_, Option<i64>>(7).map(|id| TxId(id_of(id))),
    })
}

fn quote_row(row: &Row) -> Result<Quote> {
    Ok(Quote {
        id: QuoteId(id_of(row.get(0))),
        payer: stored_address(row.get(1))?,
        estimated_tokens: id_of(row.get(2)),
        amount: stored_amount(row.get(3))?,
        hold_amount: stored_amount(row.get(4))?,
        created_at_ms: unms(row.get(5)),
        expires_at_ms: unms(row.get(6)),
    })
}

fn hold_row(row: &Row) -> Result<Hold> {
    Ok(Hold {
        id: HoldId(id_of(row.get(0))),
        quote: QuoteId(id_of(row.get(1))),
        payer: stored_address(row.get(2))?,
        quoted: stored_amount(row.get(3))?,
        amount: stored_amount(row.get(4))?,
        status: HoldStatus::parse(row.get(5))?,
        created_at_ms: unms(row.get(6)),
        expires_at_ms: unms(row.get(7)),
        authorize_tx: TxId(id_of(row.get(8))),
        settle_tx: row.get::<_, Option<i64>>(9).map(|id| TxId(id_of(id))),
    })
}

impl StoreTx for PgTx<'_> {
    async fn claim_key(
        &mut self,
        key: &str,
        request: &str,
        now: UnixMillis,
    ) -> Result<Option<KeyRow>> {
        // Waits on the unique index while another transaction holds the same key.
        let inserted = self
            .execute(
                "INSERT INTO idempotency_keys (key, request, created_at_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO NOTHING",
                &[&key, &request, &ms(now)],
            )
            .await?;
        if inserted == 1 {
            return Ok(None);
        }
        let row = self
            .query_opt(
                "SELECT request, outcome FROM idempotency_keys WHERE key = $1",
                &[&key],
            )
            .await?
            .ok_or_else(|| LedgerError::Integrity {
                what: format!("key {key} vanished"),
            })?;
        Ok(Some(KeyRow {
            request: row.get(0),
            outcome: row.get(1),
        }))
    }

    async fn finish_key(&mut self, key: &str, outcome: &str) -> Result<()> {
        self.execute(
            "UPDATE idempotency_keys SET outcome = $2 WHERE key = $1",
            &[&key, &outcome],
        )
        .await?;
        Ok(())
    }

    async fn claim_keys(
        &mut self,
        claims: &[(&str, &str)],
        now: UnixMillis,
    ) -> Result<Vec<Option<KeyRow>>> {
        let keys: Vec<&str> = claims.iter().map(|&(key, _)| key).collect();
        let requests: Vec<&str> = claims.iter().map(|&(_, request)| request).collect();
        // Inserted in ascending key order, each waiting on the unique index while another
        // transaction holds the same key (as `claim_key` does).
        let inserted: HashSet<String> = self
            .query(
                "INSERT INTO idempotency_keys (key, request, created_at_ms) \
                 SELECT u.key, u.request, $3 FROM unnest($1::text[], $2::text[]) AS u(key, request) \
                 ORDER BY u.key \
                 ON CONFLICT (key) DO NOTHING RETURNING key",
                &[&keys, &requests, &ms(now)],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let used: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|key| !inserted.contains(*key))
            .collect();
        let mut rows: HashMap<String, KeyRow> = HashMap::new();
        if !used.is_empty() {
            // A new statement: it sees the rows committed by the holders it waited for.
            for row in self
                .query(
                    "SELECT key, request, outcome FROM idempotency_keys WHERE key = ANY($1)",
                    &[&used],
                )
                .await?
            {
                rows.insert(
                    row.get(0),
                    KeyRow {
                        request: row.get(1),
                        outcome: row.get(2),
                    },
                );
            }
        }
        keys.iter()
            .map(|&key| {
                if inserted.contains(key) {
                    return Ok(None);
                }
                rows.remove(key)
                    .map(Some)
                    .ok_or_else(|| LedgerError::Integrity {
                        what: format!("key {key} vanished"),
                    })
            })
            .collect()
    }

    async fn finish_keys(&mut self, outcomes: &[(&str, &str)]) -> Result<()> {
        let keys: Vec<&str> = outcomes.iter().map(|&(key, _)| key).collect();
        let texts: Vec<&str> = outcomes.iter().map(|&(_, outcome)| outcome).collect();
        self.execute(
            "UPDATE idempotency_keys k SET outcome = u.outcome \
             FROM unnest($1::text[], $2::text[]) AS u(key, outcome) WHERE k.key = u.key",
            &[&keys, &texts],
        )
        .await?;
        Ok(())
    }

    async fn lock_accounts(
        &mut self,
        accounts: &[AccountId],
        create: &[AccountId],
        now: UnixMillis,
    ) -> Result<BTreeMap<AccountId, i64>> {
        const LOCK: &str = "SELECT account, balance FROM accounts WHERE account = ANY($1) \
                            ORDER BY account FOR UPDATE";
        let keys: Vec<String> = accounts.iter().map(AccountId::key).collect();
        let mut balances = BTreeMap::new();
        for row in self.query(LOCK, &[&keys]).await? {
            balances.insert(stored_account(row.get(0))?, row.get::<_, i64>(1));
        }
        let missing: Vec<String> = create
            .iter()
            .filter(|a| !balances.contains_key(a))
            .map(AccountId::key)
            .collect();
        if !missing.is_empty() {
            // New accounts are rare; creating them after the first lock keeps the common
            // case to one statement. A row this transaction inserted is invisible to others
            // until it commits, so taking its lock out of order cannot close a cycle.
            self.execute(
                "INSERT INTO accounts (account, created_at_ms) SELECT unnest($1::text[]), $2 \
                 ON CONFLICT (account) DO NOTHING",
                &[&missing, &ms(now)],
            )
            .await?;
            for row in self.query(LOCK, &[&missing]).await? {
                balances.insert(stored_account(row.get(0))?, row.get::<_, i64>(1));
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
        let accounts: Vec<String> = entries.iter().map(|(a, _)| a.key()).collect();
        let amounts: Vec<i64> = entries.iter().map(|&(_, d)| d).collect();
        let row = self
            .query_opt(
                "WITH t AS (INSERT INTO transactions (kind, idempotency_key, memo, created_at_ms) \
                            VALUES ($1, $2, $3, $4) RETURNING id), \
                      e AS (INSERT INTO entries (tx_id, account, amount) \
                            SELECT t.id, u.account, u.amount \
                            FROM t, unnest($5::text[], $6::bigint[]) AS u(account, amount)) \
                 SELECT id FROM t",
                &[&kind.as_str(), &key, &memo, &ms(now), &accounts, &amounts],
            )
            .await?
            .ok_or_else(|| LedgerError::Integrity {
                what: "insert returned no id".into(),
            })?;
        Ok(TxId(id_of(row.get(0))))
    }

    async fn insert_transactions(
        &mut self,
        transactions: &[NewTransaction<'_>],
        now: UnixMillis,
    ) -> Result<Vec<TxId>> {
        let kinds: Vec<&str> = transactions.iter().map(|t| t.kind.as_str()).collect();
        let keys: Vec<Option<&str>> = transactions.iter().map(|t| t.key).collect();
        let memos: Vec<&str> = transactions.iter().map(|t| t.memo).collect();
        let mut owners: Vec<i64> = Vec::new();
        let mut accounts: Vec<String> = Vec::new();
        let mut amounts: Vec<i64> = Vec::new();
        for (ordinal, transaction) in (1_i64..).zip(transactions) {
            for (account, delta) in transaction.entries {
                owners.push(ordinal);
                accounts.push(account.key());
                amounts.push(*delta);
            }
        }
        // Ids are drawn first (in the order given, so they ascend like single inserts) to
        // join each entry to its transaction; entries are inserted in the order given too.
        let rows = self
            .query(
                "WITH t AS (SELECT nextval(pg_get_serial_sequence('transactions', 'id')) AS id, \
                                   u.kind, u.key, u.memo, u.ordinal \
                            FROM unnest($1::text[], $2::text[], $3::text[]) \
                                 WITH ORDINALITY AS u(kind, key, memo, ordinal)), \
                      tx AS (INSERT INTO transactions (id, kind, idempotency_key, memo, \
                                                       created_at_ms) \
                             SELECT id, kind, key, memo, $4 FROM t ORDER BY ordinal), \
                      e AS (INSERT INTO entries (tx_id, account, amount) \
                            SELECT t.id, x.account, x.amount \
                            FROM unnest($5::bigint[], $6::text[], $7::bigint[]) \
                                 WITH ORDINALITY AS x(owner, account, amount, n) \
                            JOIN t ON t.ordinal = x.owner ORDER BY x.n) \
                 SELECT id FROM t ORDER BY ordinal",
                &[
                    &kinds,
                    &keys,
                    &memos,
                    &ms(now),
                    &owners,
                    &accounts,
                    &amounts,
                ],
            )
            .await?;
        if rows.len() != transactions.len() {
            return Err(LedgerError::Integrity {
                what: format!(
                    "inserting {} transactions returned {} ids",
                    transactions.len(),
                    rows.len()
                ),
            });
        }
        Ok(rows.iter().map(|row| TxId(id_of(row.get(0)))).collect())
    }

    async fn insert_quote(&mut self, quote: &NewQuote) -> Result<QuoteId> {
        let row = self
            .query_opt(
                "INSERT INTO quotes (payer, estimated_tokens, amount, hold_amount, created_at_ms, \
                 expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[
                    &quote.payer.to_lower_hex(),
                    &signed(quote.estimated_tokens),
                    &quote.amount.as_i64(),
                    &quote.hold_amount.as_i64(),
                    &ms(quote.created_at_ms),
                    &ms(quote.expires_at_ms),
                ],
            )
            .await?
            .ok_or_else(|| LedgerError::Integrity {
                what: "insert returned no id".into(),
            })?;
        Ok(QuoteId(id_of(row.get(0))))
    }

    async fn quote(&mut self, id: QuoteId, lock: bool) -> Result<Option<(Quote, Option<HoldId>)>> {
        let sql = if lock {
            format!("SELECT {QUOTE_COLUMNS} FROM quotes WHERE id = $1 FOR UPDATE")
        } else {
            format!("SELECT {QUOTE_COLUMNS} FROM quotes WHERE id = $1")
        };
        let Some(row) = self.query_opt(&sql, &[&signed(id.0)]).await? else {
            return Ok(None);
        };
        let quote = quote_row(&row)?;
        // A separate statement: after waiting for the quote's lock it sees a hold committed
        // meanwhile (a join in the locking statement would not).
        let hold = self
            .query_opt("SELECT id FROM holds WHERE quote_id = $1", &[&signed(id.0)])
            .await?
            .map(|row| HoldId(id_of(row.get(0))));
        Ok(Some((quote, hold)))
    }

    async fn insert_hold(&mut self, hold: &NewHold) -> Result<HoldId> {
        let row = self
            .query_opt(
                "INSERT INTO holds (quote_id, payer, quoted, amount, status, created_at_ms, \
                 expires_at_ms, authorize_tx) VALUES ($1, $2, $3, $4, 'authorized', $5, $6, $7) \
                 RETURNING id",
                &[
                    &signed(hold.quote.0),
                    &hold.payer.to_lower_hex(),
                    &hold.quoted.as_i64(),
                    &hold.amount.as_i64(),
                    &ms(hold.created_at_ms),
                    &ms(hold.expires_at_ms),
                    &signed(hold.authorize_tx.0),
                ],
            )
            .await?
            .ok_or_else(|| LedgerError::Integrity {
                what: "insert returned no id".into(),
            })?;
        Ok(HoldId(id_of(row.get(0))))
    }

    async fn hold(&mut self, id: HoldId, lock: bool) -> Result<Option<Hold>> {
        let sql = if lock {
            format!("SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1 FOR UPDATE")
        } else {
            format!("SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1")
        };
        self.query_opt(&sql, &[&signed(id.0)])
            .await?
            .as_ref()
            .map(hold_row)
            .transpose()
    }

    async fn settle_hold(&mut self, id: HoldId, status: HoldStatus, settle_tx: TxId) -> Result<()> {
        self.execute(
            "UPDATE holds SET status = $2, settle_tx = $3 WHERE id = $1",
            &[&signed(id.0), &status.as_str(), &signed(settle_tx.0)],
        )
        .await?;
        Ok(())
    }

    async fn lock_stale_holds(&mut self, now: UnixMillis, limit: u32) -> Result<Vec<Hold>> {
        let sql = format!(
            "SELECT {HOLD_COLUMNS} FROM holds WHERE status = 'authorized' AND expires_at_ms <= $1 \
             ORDER BY expires_at_ms, id LIMIT $2 FOR UPDATE SKIP LOCKED"
        );
        let rows = self.query(&sql, &[&ms(now), &i64::from(limit)]).await?;
        rows.iter().map(hold_row).collect()
    }

    async fn insert_bond(&mut self, bond: &NewBond<'_>) -> Result<()> {
        self.execute(
            "INSERT INTO bonds (key, owner, amount, state, locked_at_ms, lock_tx) \
             VALUES ($1, $2, $3, 'locked', $4, $5)",
            &[
                &bond.key,
                &bond.owner.to_lower_hex(),
                &bond.amount.as_i64(),
                &ms(bond.locked_at_ms),
                &signed(bond.lock_tx.0),
            ],
        )
        .await?;
        Ok(())
    }

    async fn bond(&mut self, key: &str, lock: bool) -> Result<Option<Bond>> {
        let sql = if lock {
            format!("SELECT {BOND_COLUMNS} FROM bonds WHERE key = $1 FOR UPDATE")
        } else {
            format!("SELECT {BOND_COLUMNS} FROM bonds WHERE key = $1")
        };
        self.query_opt(&sql, &[&key])
            .await?
            .as_ref()
            .map(bond_row)
            .transpose()
    }

    async fn settle_bond(
        &mut self,
        key: &str,
        state: BondState,
        settle_tx: TxId,
        now: UnixMillis,
    ) -> Result<()> {
        self.execute(
            "UPDATE bonds SET state = $2, settle_tx = $3, settled_at_ms = $4 WHERE key = $1",
            &[&key, &state.as_str(), &signed(settle_tx.0), &ms(now)],
        )
        .await?;
        Ok(())
    }

    async fn insert_grant(&mut self, grant: &NewGrant) -> Result<()> {
        self.execute(
            "INSERT INTO grants (tx_id, recipient, amount, source, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &signed(grant.tx.0),
                &grant.recipient.to_lower_hex(),
                &grant.amount.as_i64(),
                &grant.source.as_str(),
                &ms(grant.created_at_ms),
            ],
        )
        .await?;
        Ok(())
    }

    async fn granted_total(&mut self) -> Result<i64> {
        let row = self
            .query_opt("SELECT COALESCE(SUM(amount), 0)::BIGINT FROM grants", &[])
            .await?;
        Ok(row.map_or(0, |r| r.get(0)))
    }

    async fn grants_since(
        &mut self,
        source: GrantSource,
        recipient: Option<&Address>,
        since: UnixMillis,
    ) -> Result<(u64, i64)> {
        let recipient = recipient.map(Address::to_lower_hex);
        let row = self
            .query_opt(
                "SELECT COUNT(*)::BIGINT, COALESCE(SUM(amount), 0)::BIGINT FROM grants \
                 WHERE source = $1 AND created_at_ms >= $2 \
                   AND ($3::TEXT IS NULL OR recipient = $3)",
                &[&source.as_str(), &ms(since), &recipient],
            )
            .await?;
        Ok(row.map_or((0, 0), |r| (id_of(r.get(0)), r.get(1))))
    }

    async fn prune_keys(&mut self, before: UnixMillis) -> Result<u64> {
        self.execute(
            "DELETE FROM idempotency_keys k WHERE k.created_at_ms < $1 \
             AND k.key NOT LIKE 'ledger/%' \
             AND NOT EXISTS (SELECT 1 FROM bonds b WHERE b.key = k.key)",
            &[&ms(before)],
        )
        .await
    }

    async fn prune_quotes(&mut self, from: UnixMillis, before: UnixMillis) -> Result<u64> {
        self.execute(
            "DELETE FROM quotes q WHERE q.expires_at_ms >= $1 AND q.expires_at_ms < $2 \
             AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.quote_id = q.id)",
            &[&ms(from), &ms(before)],
        )
        .await
    }

    async fn meta(&mut self, key: &str) -> Result<Option<String>> {
        let row = self
            .query_opt("SELECT value FROM ledger_meta WHERE key = $1", &[&key])
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.execute(
            "INSERT INTO ledger_meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&key, &value],
        )
        .await?;
        Ok(())
    }

    async fn inflation_year(&mut self, year: u64) -> Result<Option<(i64, i64)>> {
        let row = self
            .query_opt(
                "SELECT base_supply, minted FROM inflation_years WHERE year = $1",
                &[&signed(year)],
            )
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    async fn put_inflation_year(&mut self, year: u64, base: i64, minted: i64) -> Result<()> {
        self.execute(
            "INSERT INTO inflation_years (year, base_supply, minted) VALUES ($1, $2, $3) \
             ON CONFLICT (year) DO UPDATE SET minted = EXCLUDED.minted",
            &[&signed(year), &base, &minted],
        )
        .await?;
        Ok(())
    }

    async fn circulating_at(&mut self, at: UnixMillis) -> Result<i64> {
        let row = self
            .query_opt(
                "SELECT COALESCE(SUM(e.amount), 0)::BIGINT FROM entries e \
                 JOIN transactions t ON t.id = e.tx_id \
                 WHERE e.account IN ('system:mint', 'system:burn') AND t.created_at_ms <= $1",
                &[&ms(at)],
            )
            .await?;
        // mint's entries are minus the minted, burn's plus the burned.
        Ok(-row.map_or(0, |r| r.get::<_, i64>(0)))
    }

    async fn balance(&mut self, account: &AccountId) -> Result<Option<i64>> {
        let row = self
            .query_opt(
                "SELECT balance FROM accounts WHERE account = $1",
                &[&account.key()],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn held(&mut self, payer: &Address) -> Result<i64> {
        let row = self
            .query_opt(
                "SELECT ((SELECT COALESCE(SUM(amount), 0) FROM holds \
                          WHERE payer = $1 AND status = 'authorized') \
                       + (SELECT COALESCE(SUM(amount), 0) FROM bonds \
                          WHERE owner = $1 AND state = 'locked'))::BIGINT",
                &[&payer.to_lower_hex()],
            )
            .await?;
        Ok(row.map_or(0, |r| r.get(0)))
    }

    async fn transaction(&mut self, id: TxId) -> Result<Option<Transaction>> {
        let Some(row) = self
            .query_opt(
                "SELECT kind, idempotency_key, memo, created_at_ms FROM transactions WHERE id = $1",
                &[&signed(id.0)],
            )
            .await?
        else {
            return Ok(None);
        };
        let entries = self
            .query(
                "SELECT account, amount FROM entries WHERE tx_id = $1 ORDER BY id",
                &[&signed(id.0)],
            )
            .await?
            .iter()
            .map(|r| crate::transaction::Entry::from_delta(stored_account(r.get(0))?, r.get(1)))
            .collect::<Result<_>>()?;
        Ok(Some(Transaction {
            id,
            kind: TxKind::parse(row.get(0))?,
            idempotency_key: row.get(1),
            memo: row.get(2),
            created_at_ms: unms(row.get(3)),
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
        let rows = self
            .query(
                "SELECT e.id, e.tx_id, t.kind, e.amount, t.memo, t.created_at_ms \
                 FROM entries e JOIN transactions t ON t.id = e.tx_id \
                 WHERE e.account = $1 AND e.id < $2 ORDER BY e.id DESC LIMIT $3",
                &[&account.key(), &before, &i64::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let entry = crate::transaction::Entry::from_delta(*account, r.get(3))?;
                Ok(HistoryItem {
                    entry_id: EntryId(id_of(r.get(0))),
                    tx_id: TxId(id_of(r.get(1))),
                    kind: TxKind::parse(r.get(2))?,
                    direction: entry.direction,
                    amount: entry.amount,
                    memo: r.get(4),
                    created_at_ms: unms(r.get(5)),
                })
            })
            .collect()
    }

    async fn audit(&mut self) -> Result<AuditFacts> {
        let count = |row: Option<Row>| row.map_or(0, |r| id_of(r.get::<_, i64>(0)));
        let mut facts = AuditFacts {
            accounts: count(self.query_opt("SELECT COUNT(*) FROM accounts", &[]).await?),
            transactions: count(
                self.query_opt("SELECT COUNT(*) FROM transactions", &[])
                    .await?,
            ),
            entries: count(self.query_opt("SELECT COUNT(*) FROM entries", &[]).await?),
            ..AuditFacts::default()
        };
        facts.unbalanced = self
            .query(
                "SELECT t.id FROM transactions t LEFT JOIN entries e ON e.tx_id = t.id \
                 GROUP BY t.id HAVING COALESCE(SUM(e.amount), 0) <> 0 OR COUNT(e.id) < 2 \
                 ORDER BY t.id LIMIT 20",
                &[],
            )
            .await?
            .iter()
            .map(|r| id_of(r.get(0)))
            .collect();
        facts.orphan_entries = count(
            self.query_opt(
                "SELECT COUNT(*) FROM entries e LEFT JOIN transactions t ON t.id = e.tx_id \
                 WHERE t.id IS NULL",
                &[],
            )
            .await?,
        );
        facts.drifted = self
            .query(
                "SELECT a.account FROM accounts a LEFT JOIN \
                 (SELECT account, SUM(amount) AS total FROM entries GROUP BY account) x \
                 ON x.account = a.account WHERE a.balance <> COALESCE(x.total, 0) LIMIT 20",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        facts.negative = self
            .query(
                "SELECT account FROM accounts WHERE balance < 0 AND account <> 'system:mint' \
                 LIMIT 20",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let sum = self
            .query_opt("SELECT COALESCE(SUM(balance), 0)::TEXT FROM accounts", &[])
            .await?
            .map_or_else(|| "0".to_owned(), |r| r.get(0));
        facts.balance_sum = sum.parse().map_err(|_| LedgerError::Integrity {
            what: format!("balance sum {sum:?} is not an integer"),
        })?;
        facts.escrow = self
            .balance(&AccountId::System(crate::SystemAccount::FeeEscrow))
            .await?
            .unwrap_or(0);
        facts.mint = self
            .balance(&AccountId::System(crate::SystemAccount::Mint))
            .await?
            .unwrap_or(0);
        facts.burn = self
            .balance(&AccountId::System(crate::SystemAccount::Burn))
            .await?
            .unwrap_or(0);
        facts.held = self
            .query_opt(
                "SELECT COALESCE(SUM(amount), 0)::BIGINT FROM holds WHERE status = 'authorized'",
                &[],
            )
            .await?
            .map_or(0, |r| r.get(0));
        facts.bond_escrow = self
            .balance(&AccountId::System(crate::SystemAccount::BondEscrow))
            .await?
            .unwrap_or(0);
        facts.bonded = self
            .query_opt(
                "SELECT COALESCE(SUM(amount), 0)::BIGINT FROM bonds WHERE state = 'locked'",
                &[],
            )
            .await?
            .map_or(0, |r| r.get(0));
        Ok(facts)
    }
}
