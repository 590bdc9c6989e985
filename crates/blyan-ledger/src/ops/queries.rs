//! Reads: balances, history, transactions, holds, bonds, supply, and the integrity audit.

use super::{BURN, MINT};
use crate::account::AccountId;
use crate::amount::Amount;
use crate::bond::Bond;
use crate::error::{LedgerError, Result};
use crate::payment::{Hold, HoldId};
use crate::request::IdempotencyKey;
use crate::request::{HISTORY_PAGE_LEN_MAX, HistoryQuery};
use crate::store::{Command, Ctx, StoreTx};
use crate::tokenomics::check_limit;
use crate::transaction::{Balance, HistoryPage, IntegrityReport, Supply, Transaction, TxId};

#[derive(Clone)]
pub(crate) struct GetBalance(pub AccountId);

impl Command for GetBalance {
    type Output = Balance;
    const READ_ONLY: bool = true;

    fn span(&self) -> tracing::Span {
        tracing::debug_span!("ledger.balance", account = %self.0)
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, _ctx: &Ctx) -> Result<Balance> {
        if self.0 == MINT {
            return Err(LedgerError::ReservedAccount {
                account: MINT,
                operation: "balance",
            });
        }
        let stored = tx.balance(&self.0).await?.unwrap_or(0);
        let available = Amount::from_units(stored.max(0).unsigned_abs())?;
        let held = match self.0 {
            AccountId::User(address) => tx.held(&address).await?,
            AccountId::System(_) => 0,
        };
        Ok(Balance {
            available,
            held: Amount::from_units(held.max(0).unsigned_abs())?,
        })
    }
}

#[derive(Clone)]
pub(crate) struct GetHistory(pub AccountId, pub HistoryQuery);

impl Command for GetHistory {
    type Output = HistoryPage;
    const READ_ONLY: bool = true;

    fn span(&self) -> tracing::Span {
        tracing::debug_span!("ledger.history", account = %self.0, before = ?self.1.before)
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, _ctx: &Ctx) -> Result<HistoryPage> {
        let GetHistory(account, query) = self;
        if query.limit == 0 {
            return Err(LedgerError::Zero {
                field: "history limit",
            });
        }
        check_limit(
            "history limit",
            query.limit.into(),
            HISTORY_PAGE_LEN_MAX.into(),
        )?;
        let items = tx.history(&account, query.before, query.limit).await?;
        let next = if items.len() == query.limit as usize {
            items.last().map(|item| item.entry_id)
        } else {
            None
        };
        Ok(HistoryPage { items, next })
    }
}

#[derive(Clone)]
pub(crate) struct GetTransaction(pub TxId);

impl Command for GetTransaction {
    type Output = Option<Transaction>;
    const READ_ONLY: bool = true;

    fn span(&self) -> tracing::Span {
        tracing::debug_span!("ledger.transaction", transaction = %self.0)
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, _ctx: &Ctx) -> Result<Option<Transaction>> {
        tx.transaction(self.0).await
    }
}

#[derive(Clone)]
pub(crate) struct GetHold(pub HoldId);

impl Command for GetHold {
    type Output = Option<Hold>;
    const READ_ONLY: bool = true;

    fn span(&self) -> tracing::Span {
        tracing::debug_span!("ledger.hold", hold = %self.0)
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, _ctx: &Ctx) -> Result<Option<Hold>> {
        tx.hold(self.0, false).await
    }
}

#[derive(Clone)]
pub(crate) struct GetBond(pub IdempotencyKey);

impl Command for GetBond {
    type Output = Option<Bond>;
    const READ_ONLY: bool = true;

    fn span(&self) -> tracing::Span {
        tracing::debug_span!("ledger.bond", bond = %self.0)
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, _ctx: &Ctx) -> Result<Option<Bond>> {
        tx.bond(self.0.as_str(), false).await
    }
}

async fn supply_of<T: StoreTx>(tx: &mut T, ctx: &Ctx) -> Result<Supply> {
    let mint = tx.balance(&MINT).await?.unwrap_or(0);
    let burn = tx.balance(&BURN).await?.unwrap_or(0);
    supply_from(ctx, mint, burn)
}

fn supply_from(ctx: &Ctx, mint: i64, burn: i64) -> Result<Supply> {
    let minted = Amount::from_units(mint.min(0).unsigned_abs())?;
    let burned = Amount::from_units(burn.max(0).unsigned_abs())?;
    let circulating = minted
        .checked_sub(burned)
        .ok_or_else(|| LedgerError::Integrity {
            what: format!("burned {burned} exceeds minted {minted}"),
        })?;
    Ok(Supply {
        cap: ctx.tokenomics.supply.cap,
        genesis: ctx.tokenomics.supply.genesis,
        minted,
        burned,
        circulating,
    })
}

#[derive(Clone)]
pub(crate) struct GetSupply;

impl Command for GetSupply {
    type Output = Supply;
    const READ_ONLY: bool = true;

    fn span(&self) -> tracing::Span {
        tracing::debug_span!("ledger.supply")
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Supply> {
        supply_of(tx, ctx).await
    }
}

#[derive(Clone)]
pub(crate) struct VerifyIntegrity;

impl Command for VerifyIntegrity {
    type Output = IntegrityReport;
    const READ_ONLY: bool = true;

    fn span(&self) -> tracing::Span {
        tracing::debug_span!("ledger.verify_integrity")
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<IntegrityReport> {
        let facts = tx.audit().await?;
        let mut problems = Vec::new();
        if !facts.unbalanced.is_empty() {
            problems.push(format!("unbalanced transactions {:?}", facts.unbalanced));
        }
        if facts.orphan_entries != 0 {
            problems.push(format!(
                "{} entries without a transaction",
                facts.orphan_entries
            ));
        }
        if !facts.drifted.is_empty() {
            problems.push(format!(
                "balances differ from their entries: {:?}",
                facts.drifted
            ));
        }
        if !facts.negative.is_empty() {
            problems.push(format!("negative balances: {:?}", facts.negative));
        }
        if facts.balance_sum != 0 {
            problems.push(format!("balances sum to {}, not 0", facts.balance_sum));
        }
        if facts.escrow != facts.held {
            problems.push(format!(
                "escrow {} != authorized holds {}",
                facts.escrow, facts.held
            ));
        }
        if facts.bond_escrow != facts.bonded {
            problems.push(format!(
                "bond escrow {} != locked bonds {}",
                facts.bond_escrow, facts.bonded
            ));
        }
        if !problems.is_empty() {
            return Err(LedgerError::Integrity {
                what: problems.join("; "),
            });
        }
        Ok(IntegrityReport {
            accounts: facts.accounts,
            transactions: facts.transactions,
            entries: facts.entries,
            supply: supply_from(ctx, facts.mint, facts.burn)?,
        })
    }
}
