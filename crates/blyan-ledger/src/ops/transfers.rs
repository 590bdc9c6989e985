//! Transfers between accounts (one, or a batch all-or-none) and burns.

use std::collections::BTreeMap;

use super::BURN;
use super::idempotency::{claim, fingerprint, finish, idempotent};
use super::posting::{lock_set, post, refuse_reserved, require_funds, require_positive};
use crate::account::AccountId;
use crate::clock::UnixMillis;
use crate::error::{LedgerError, Result};
use crate::request::{BurnRequest, TRANSFER_BATCH_LEN_MAX, TransferRequest, check_memo};
use crate::store::{Command, Ctx, StoreTx};
use crate::tokenomics::check_limit;
use crate::transaction::{Transaction, TxKind};

fn check_transfer(request: &TransferRequest, ctx: &Ctx) -> Result<()> {
    require_positive(request.amount, "amount", ctx)?;
    check_memo(&request.memo)?;
    refuse_reserved(&request.from, "transfer")?;
    refuse_reserved(&request.to, "transfer")?;
    if request.from == request.to {
        return Err(LedgerError::SelfTransfer {
            account: request.from,
        });
    }
    Ok(())
}

/// A checked transfer whose accounts are already locked into `balances`.
async fn transfer_locked<T: StoreTx>(
    tx: &mut T,
    balances: &mut BTreeMap<AccountId, i64>,
    request: &TransferRequest,
    now: UnixMillis,
) -> Result<Transaction> {
    require_funds(balances, request.from, request.amount)?;
    let amount = request.amount.as_i64();
    let deltas = [(request.from, -amount), (request.to, amount)];
    post(
        tx,
        balances,
        TxKind::Transfer,
        Some(&request.key),
        &request.memo,
        now,
        &deltas,
    )
    .await
}

impl Command for TransferRequest {
    type Output = Transaction;

    fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "ledger.transfer",
            key = %self.key,
            from = %self.from,
            to = %self.to,
            amount = %self.amount,
        )
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Transaction> {
        check_transfer(&self, ctx)?;
        idempotent!(tx, ctx, &self.key, "transfer", &self, |now| {
            let (lock, create) = lock_set(&[self.from, self.to], &[self.to]);
            let mut balances = tx.lock_accounts(&lock, &create, now).await?;
            transfer_locked(tx, &mut balances, &self, now).await?
        })
    }
}

/// Several transfers in one store transaction: all or none.
#[derive(Clone)]
pub(crate) struct TransferBatch(pub Vec<TransferRequest>);

impl Command for TransferBatch {
    type Output = Vec<Transaction>;

    fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "ledger.transfer_batch",
            transfers = self.0.len(),
            first_key = self.0.first().map_or("", |request| request.key.as_str()),
        )
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Vec<Transaction>> {
        check_limit(
            "transfer batch length",
            self.0.len() as u64,
            TRANSFER_BATCH_LEN_MAX as u64,
        )?;
        let item = |index: usize, source: LedgerError| LedgerError::BatchItem {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            source: Box::new(source),
        };
        for (index, request) in self.0.iter().enumerate() {
            check_transfer(request, ctx).map_err(|e| item(index, e))?;
        }
        let now = ctx.clock.now_ms();
        // Keys first (in the given order), then every fresh transfer's accounts at once.
        let mut outcomes: Vec<Option<Transaction>> = Vec::with_capacity(self.0.len());
        for (index, request) in self.0.iter().enumerate() {
            let fingerprint = fingerprint("transfer", request)?;
            let first = claim(tx, &request.key, &fingerprint, now)
                .await
                .map_err(|e| item(index, e))?;
            outcomes.push(first);
        }
        let fresh: Vec<&TransferRequest> = self
            .0
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| o.is_none())
            .map(|(r, _)| r)
            .collect();
        let accounts: Vec<AccountId> = fresh.iter().flat_map(|r| [r.from, r.to]).collect();
        let credited: Vec<AccountId> = fresh.iter().map(|r| r.to).collect();
        let (lock, create) = lock_set(&accounts, &credited);
        let mut balances = tx.lock_accounts(&lock, &create, now).await?;
        let mut results = Vec::with_capacity(self.0.len());
        for (index, (request, first)) in self.0.iter().zip(outcomes).enumerate() {
            let outcome = match first {
                Some(first) => first,
                None => {
                    let outcome = transfer_locked(tx, &mut balances, request, now)
                        .await
                        .map_err(|e| item(index, e))?;
                    finish(tx, &request.key, &outcome).await?;
                    outcome
                }
            };
            results.push(outcome);
        }
        Ok(results)
    }
}

impl Command for BurnRequest {
    type Output = Transaction;

    fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "ledger.burn",
            key = %self.key,
            from = %self.from,
            amount = %self.amount,
        )
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Transaction> {
        require_positive(self.amount, "amount", ctx)?;
        check_memo(&self.memo)?;
        refuse_reserved(&self.from, "burn")?;
        idempotent!(tx, ctx, &self.key, "burn", &self, |now| {
            let (lock, create) = lock_set(&[self.from, BURN], &[]);
            let mut balances = tx.lock_accounts(&lock, &create, now).await?;
            require_funds(&balances, self.from, self.amount)?;
            let amount = self.amount.as_i64();
            let deltas = [(self.from, -amount), (BURN, amount)];
            post(
                tx,
                &mut balances,
                TxKind::Burn,
                Some(&self.key),
                &self.memo,
                now,
                &deltas,
            )
            .await?
        })
    }
}
