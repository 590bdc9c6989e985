//! Issuance: the genesis supply (minted once), mints, and rewards (paid from the reward pool,
//! any shortfall minted), all within the supply cap and the yearly inflation allowance.

use std::collections::BTreeMap;

use super::idempotency::{claim, fingerprint, finish, idempotent};
use super::posting::{lock_set, post, refuse_reserved, require_positive};
use super::{INFLATION_YEAR_MS, MINT, REWARD_POOL};
use crate::account::AccountId;
use crate::amount::Amount;
use crate::clock::UnixMillis;
use crate::error::{LedgerError, Result};
use crate::request::{
    DataRewardRequest, IdempotencyKey, LearningRewardRequest, MintRequest, ValidationRewardRequest,
    check_memo,
};
use crate::store::{Command, Ctx, StoreTx};
use crate::transaction::{Transaction, TxKind};

/// Where the genesis records its time: inflation years count from it.
const GENESIS_AT_META: &str = "genesis_at_ms";

/// Checks that `requested` new tokens fit the supply cap and this inflation year's allowance,
/// and records them against the year. The caller holds the mint account's lock.
async fn admit_issuance<T: StoreTx>(
    tx: &mut T,
    ctx: &Ctx,
    balances: &BTreeMap<AccountId, i64>,
    requested: Amount,
    now: UnixMillis,
) -> Result<()> {
    let supply = &ctx.tokenomics.supply;
    let minted_units = balances.get(&MINT).copied().unwrap_or(0).unsigned_abs();
    let minted = Amount::from_units(minted_units)?;
    if minted
        .checked_add(requested)
        .is_none_or(|total| total > supply.cap)
    {
        return Err(LedgerError::SupplyCapExceeded {
            minted,
            requested,
            cap: supply.cap,
        });
    }
    let genesis_at: UnixMillis = tx
        .meta(GENESIS_AT_META)
        .await?
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| LedgerError::Integrity {
            what: "no genesis time recorded".into(),
        })?;
    let year = now.saturating_sub(genesis_at) / INFLATION_YEAR_MS;
    let (base, minted_in_year) = match tx.inflation_year(year).await? {
        Some(row) => row,
        None => {
            let year_start = genesis_at + year * INFLATION_YEAR_MS;
            (tx.circulating_at(year_start).await?, 0)
        }
    };
    let base = Amount::from_units(base.max(0).unsigned_abs())?;
    let minted_in_year = Amount::from_units(minted_in_year.max(0).unsigned_abs())?;
    let allowance = base.share_bps_floor(supply.inflation_yearly_bps_max);
    match minted_in_year.checked_add(requested) {
        Some(total) if total <= allowance => {
            tx.put_inflation_year(year, base.as_i64(), total.as_i64())
                .await
        }
        _ => Err(LedgerError::InflationCapExceeded {
            year,
            minted: minted_in_year,
            requested,
            allowance,
        }),
    }
}

#[derive(Clone)]
pub(crate) struct Genesis;

impl Command for Genesis {
    type Output = Transaction;

    fn span(&self) -> tracing::Span {
        tracing::info_span!("ledger.genesis")
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Transaction> {
        let key = IdempotencyKey::internal("genesis");
        let allocations: Vec<(AccountId, Amount)> = ctx
            .tokenomics
            .genesis_allocations
            .iter()
            .map(|a| (a.account, a.amount))
            .collect();
        // Fingerprinted by stored account keys, like every request (see `request.rs`).
        let stored: Vec<(String, Amount)> = allocations
            .iter()
            .map(|(account, amount)| (account.key(), *amount))
            .collect();
        let configured = fingerprint("genesis", &stored)?;
        let now = ctx.clock.now_ms();
        match claim::<T, Transaction>(tx, &key, &configured, now).await {
            Ok(Some(first)) => return Ok(first),
            Ok(None) => {}
            Err(LedgerError::IdempotencyConflict { first_request, .. }) => {
                return Err(LedgerError::GenesisMismatch {
                    stored: first_request,
                    configured,
                });
            }
            Err(other) => return Err(other),
        }
        let accounts: Vec<AccountId> = allocations.iter().map(|(a, _)| *a).chain([MINT]).collect();
        let credited: Vec<AccountId> = allocations.iter().map(|(a, _)| *a).collect();
        let (lock, create) = lock_set(&accounts, &credited);
        let mut balances = tx.lock_accounts(&lock, &create, now).await?;
        let mut deltas = vec![(MINT, -ctx.tokenomics.supply.genesis.as_i64())];
        deltas.extend(
            allocations
                .iter()
                .map(|&(account, amount)| (account, amount.as_i64())),
        );
        let outcome = post(
            tx,
            &mut balances,
            TxKind::Genesis,
            Some(&key),
            "genesis",
            now,
            &deltas,
        )
        .await?;
        tx.set_meta(GENESIS_AT_META, &now.to_string()).await?;
        finish(tx, &key, &outcome).await?;
        Ok(outcome)
    }
}

impl Command for MintRequest {
    type Output = Transaction;

    fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "ledger.mint",
            key = %self.key,
            to = %self.to,
            amount = %self.amount,
        )
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Transaction> {
        require_positive(self.amount, "amount", ctx)?;
        check_memo(&self.memo)?;
        refuse_reserved(&self.to, "mint")?;
        idempotent!(tx, ctx, &self.key, "mint", &self, |now| {
            let (lock, create) = lock_set(&[self.to, MINT], &[self.to]);
            let mut balances = tx.lock_accounts(&lock, &create, now).await?;
            admit_issuance(tx, ctx, &balances, self.amount, now).await?;
            let amount = self.amount.as_i64();
            let deltas = [(MINT, -amount), (self.to, amount)];
            post(
                tx,
                &mut balances,
                TxKind::Mint,
                Some(&self.key),
                &self.memo,
                now,
                &deltas,
            )
            .await?
        })
    }
}

// Rewards: from the reward pool; any shortfall minted within the caps.

async fn pay_reward<T: StoreTx>(
    tx: &mut T,
    ctx: &Ctx,
    key: &IdempotencyKey,
    recipient: AccountId,
    amount: Amount,
    memo: &str,
    now: UnixMillis,
) -> Result<Transaction> {
    let (lock, create) = lock_set(&[recipient, REWARD_POOL, MINT], &[recipient]);
    let mut balances = tx.lock_accounts(&lock, &create, now).await?;
    let pool = Amount::from_units(
        balances
            .get(&REWARD_POOL)
            .copied()
            .unwrap_or(0)
            .max(0)
            .unsigned_abs(),
    )?;
    let from_pool = pool.min(amount);
    let minted = amount.checked_sub(from_pool).unwrap_or(Amount::ZERO);
    if !minted.is_zero() {
        admit_issuance(tx, ctx, &balances, minted, now).await?;
    }
    let deltas = [
        (REWARD_POOL, -from_pool.as_i64()),
        (MINT, -minted.as_i64()),
        (recipient, amount.as_i64()),
    ];
    post(
        tx,
        &mut balances,
        TxKind::Reward,
        Some(key),
        memo,
        now,
        &deltas,
    )
    .await
}

impl Command for ValidationRewardRequest {
    type Output = Transaction;

    fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "ledger.reward_validation",
            key = %self.key,
            validator = %self.validator,
            samples = self.samples,
        )
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Transaction> {
        let amount = ctx.tokenomics.validation_reward(self.samples)?;
        idempotent!(tx, ctx, &self.key, "validation_reward", &self, |now| {
            let memo = format!("validation reward: {} samples", self.samples);
            pay_reward(
                tx,
                ctx,
                &self.key,
                self.validator.into(),
                amount,
                &memo,
                now,
            )
            .await?
        })
    }
}

impl Command for LearningRewardRequest {
    type Output = Transaction;

    fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "ledger.reward_learning",
            key = %self.key,
            learner = %self.learner,
            improvement_bps = self.improvement_bps,
        )
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Transaction> {
        let amount = ctx.tokenomics.learning_reward(self.improvement_bps)?;
        idempotent!(tx, ctx, &self.key, "learning_reward", &self, |now| {
            let memo = format!("learning reward: {} bps improvement", self.improvement_bps);
            pay_reward(tx, ctx, &self.key, self.learner.into(), amount, &memo, now).await?
        })
    }
}

impl Command for DataRewardRequest {
    type Output = Transaction;

    fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "ledger.reward_data",
            key = %self.key,
            contributor = %self.contributor,
            samples = self.samples,
        )
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Transaction> {
        let amount = ctx.tokenomics.data_reward(self.samples)?;
        check_memo(&self.memo)?;
        idempotent!(tx, ctx, &self.key, "data_reward", &self, |now| {
            let memo = if self.memo.is_empty() {
                format!("data reward: {} samples", self.samples)
            } else {
                self.memo.clone()
            };
            pay_reward(
                tx,
                ctx,
                &self.key,
                self.contributor.into(),
                amount,
                &memo,
                now,
            )
            .await?
        })
    }
}
