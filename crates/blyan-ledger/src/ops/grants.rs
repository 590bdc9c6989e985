//! Grants from the treasury: the operator's (`GrantRequest`) and a test network's faucet's
//! (`FaucetClaimRequest`). Both lock the treasury, which serialises every grant, and only then
//! read what earlier grants used, so concurrent grants cannot together pass the treasury's
//! allocation nor the faucet's limits.

use blyan_primitives::Address;

use super::idempotency::idempotent;
use super::posting::{lock_set, post, require_funds, require_positive};
use crate::account::{AccountId, SystemAccount};
use crate::amount::Amount;
use crate::clock::UnixMillis;
use crate::error::{LedgerError, Result};
use crate::grant::{Grant, GrantSource};
use crate::request::{FaucetClaimRequest, GrantRequest, IdempotencyKey, check_memo};
use crate::store::{Command, Ctx, NewGrant, StoreTx};
use crate::transaction::TxKind;

const TREASURY: AccountId = AccountId::System(SystemAccount::Treasury);
/// Length of the faucet's day: limits count claims since the last UTC midnight.
const FAUCET_DAY_MS: UnixMillis = 24 * 3600 * 1000;
/// The memo of every faucet grant (what a wallet's history shows).
const FAUCET_MEMO: &str = "faucet";

/// A grant to record, checked.
struct Planned<'a> {
    key: &'a IdempotencyKey,
    to: Address,
    amount: Amount,
    memo: &'a str,
    source: GrantSource,
}

/// Locks the treasury and the wallet, checks the allocation (and, for the faucet, its limits
/// through `limits`, run under the same locks), and records the grant.
async fn grant_locked<T: StoreTx>(
    tx: &mut T,
    ctx: &Ctx,
    plan: Planned<'_>,
    now: UnixMillis,
    limits: Option<&FaucetClaimRequest>,
) -> Result<Grant> {
    let wallet = AccountId::User(plan.to);
    let (lock, create) = lock_set(&[TREASURY, wallet], &[wallet]);
    let mut balances = tx.lock_accounts(&lock, &create, now).await?;
    let allocation = ctx.tokenomics.treasury_allocation();
    let granted = Amount::from_units_i128(tx.granted_total().await?.into())?;
    let left = allocation.checked_sub(granted).unwrap_or(Amount::ZERO);
    if plan.amount > left {
        return Err(LedgerError::GrantAboveAllocation {
            requested: plan.amount,
            left,
            allocation,
        });
    }
    if let Some(claim) = limits {
        check_faucet_limits(tx, claim, now).await?;
    }
    require_funds(&balances, TREASURY, plan.amount)?;
    let amount = plan.amount.as_i64();
    let transaction = post(
        tx,
        &mut balances,
        TxKind::Grant,
        Some(plan.key),
        plan.memo,
        now,
        &[(TREASURY, -amount), (wallet, amount)],
    )
    .await?;
    tx.insert_grant(&NewGrant {
        tx: transaction.id,
        recipient: plan.to,
        amount: plan.amount,
        source: plan.source,
        created_at_ms: now,
    })
    .await?;
    let allocation_left = left
        .checked_sub(plan.amount)
        .expect("checked above: the grant is at most what is left");
    Ok(Grant {
        source: plan.source,
        transaction,
        allocation_left,
    })
}

/// The faucet's per-wallet and daily limits, counted since the last UTC midnight.
async fn check_faucet_limits<T: StoreTx>(
    tx: &mut T,
    claim: &FaucetClaimRequest,
    now: UnixMillis,
) -> Result<()> {
    let day_start = now - now % FAUCET_DAY_MS;
    let (claims, _) = tx
        .grants_since(GrantSource::Faucet, Some(&claim.to), day_start)
        .await?;
    if claims >= u64::from(claim.claims_per_wallet_per_day) {
        return Err(LedgerError::FaucetWalletLimit {
            wallet: claim.to,
            claims: u32::try_from(claims).unwrap_or(u32::MAX),
            max: claim.claims_per_wallet_per_day,
        });
    }
    let (_, total) = tx
        .grants_since(GrantSource::Faucet, None, day_start)
        .await?;
    let granted_today = Amount::from_units_i128(total.into())?;
    let after = granted_today.checked_add(claim.amount);
    if after.is_none_or(|after| after > claim.daily_total_max) {
        return Err(LedgerError::FaucetDailyCap {
            requested: claim.amount,
            granted_today,
            cap: claim.daily_total_max,
        });
    }
    Ok(())
}

impl Command for GrantRequest {
    type Output = Grant;

    fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "ledger.grant",
            key = %self.key,
            to = %self.to,
            amount = %self.amount,
        )
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Grant> {
        require_positive(self.amount, "amount", ctx)?;
        check_memo(&self.memo)?;
        idempotent!(tx, ctx, &self.key, "grant", &self, |now| {
            let plan = Planned {
                key: &self.key,
                to: self.to,
                amount: self.amount,
                memo: &self.memo,
                source: GrantSource::Operator,
            };
            grant_locked(tx, ctx, plan, now, None).await?
        })
    }
}

impl Command for FaucetClaimRequest {
    type Output = Grant;

    fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "ledger.faucet_claim",
            key = %self.key,
            to = %self.to,
            amount = %self.amount,
        )
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Grant> {
        require_positive(self.amount, "amount", ctx)?;
        if self.claims_per_wallet_per_day == 0 {
            return Err(LedgerError::Zero {
                field: "claims_per_wallet_per_day",
            });
        }
        idempotent!(tx, ctx, &self.key, "faucet_claim", &self, |now| {
            let plan = Planned {
                key: &self.key,
                to: self.to,
                amount: self.amount,
                memo: FAUCET_MEMO,
                source: GrantSource::Faucet,
            };
            grant_locked(tx, ctx, plan, now, Some(&self)).await?
        })
    }
}
