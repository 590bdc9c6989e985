//! Proof-of-Learning candidate bonds: lock (author → bond escrow), then settle once: refund
//! (escrow → author) or burn (escrow → burn).

use std::collections::BTreeMap;

use super::idempotency::idempotent;
use super::posting::{lock_set, post, require_positive};
use super::{BOND_ESCROW, BURN};
use crate::account::AccountId;
use crate::amount::Amount;
use crate::bond::{Bond, BondOutcome, BondState};
use crate::error::{LedgerError, Result};
use crate::request::{BondLockRequest, BondSettleRequest, check_memo};
use crate::store::{Command, Ctx, NewBond, StoreTx};
use crate::transaction::TxKind;

/// Checks `owner` can pay `amount`; an owner who never held BLY has nothing available (the
/// same refusal as a short balance: an author who cannot pay the bond).
fn require_bond_funds(
    balances: &BTreeMap<AccountId, i64>,
    owner: AccountId,
    amount: Amount,
) -> Result<()> {
    let balance = balances.get(&owner).copied().unwrap_or(0);
    if balance < amount.as_i64() {
        return Err(LedgerError::InsufficientFunds {
            account: owner,
            available: Amount::from_units(balance.max(0).unsigned_abs())?,
            required: amount,
        });
    }
    Ok(())
}

impl Command for BondLockRequest {
    type Output = Bond;

    fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "ledger.lock_bond",
            key = %self.key,
            owner = %self.owner,
            amount = %self.amount,
        )
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Bond> {
        require_positive(self.amount, "amount", ctx)?;
        check_memo(&self.memo)?;
        idempotent!(tx, ctx, &self.key, "lock_bond", &self, |now| {
            let owner = AccountId::User(self.owner);
            let (lock, create) = lock_set(&[owner, BOND_ESCROW], &[]);
            let mut balances = tx.lock_accounts(&lock, &create, now).await?;
            require_bond_funds(&balances, owner, self.amount)?;
            let amount = self.amount.as_i64();
            let deltas = [(owner, -amount), (BOND_ESCROW, amount)];
            let lock_tx = post(
                tx,
                &mut balances,
                TxKind::BondLock,
                Some(&self.key),
                &self.memo,
                now,
                &deltas,
            )
            .await?
            .id;
            tx.insert_bond(&NewBond {
                key: self.key.as_str(),
                owner: self.owner,
                amount: self.amount,
                locked_at_ms: now,
                lock_tx,
            })
            .await?;
            Bond {
                key: self.key.clone(),
                owner: self.owner,
                amount: self.amount,
                state: BondState::Locked,
                locked_at_ms: now,
                lock_tx,
                settled_at_ms: None,
                settle_tx: None,
            }
        })
    }
}

impl Command for BondSettleRequest {
    type Output = Bond;

    fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "ledger.settle_bond",
            key = %self.key,
            bond = %self.bond,
            outcome = ?self.outcome,
        )
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Bond> {
        check_memo(&self.memo)?;
        idempotent!(tx, ctx, &self.key, "settle_bond", &self, |now| {
            let mut bond = tx.bond(self.bond.as_str(), true).await?.ok_or_else(|| {
                LedgerError::UnknownBond {
                    bond: self.bond.clone(),
                }
            })?;
            if bond.state != BondState::Locked {
                return Err(LedgerError::BondSettled {
                    bond: self.bond.clone(),
                    state: bond.state,
                });
            }
            let owner = AccountId::User(bond.owner);
            let (to, kind) = match self.outcome {
                BondOutcome::Refund => (owner, TxKind::BondRefund),
                BondOutcome::Burn => (BURN, TxKind::BondBurn),
            };
            let (lock, create) = lock_set(&[to, BOND_ESCROW], &[]);
            let mut balances = tx.lock_accounts(&lock, &create, now).await?;
            let amount = bond.amount.as_i64();
            if balances.get(&BOND_ESCROW).copied().unwrap_or(0) < amount {
                return Err(LedgerError::Integrity {
                    what: format!("bond escrow lacks bond {}", bond.key),
                });
            }
            let deltas = [(BOND_ESCROW, -amount), (to, amount)];
            let settle_tx = post(
                tx,
                &mut balances,
                kind,
                Some(&self.key),
                &self.memo,
                now,
                &deltas,
            )
            .await?
            .id;
            let state = self.outcome.state();
            tx.settle_bond(bond.key.as_str(), state, settle_tx, now)
                .await?;
            bond.state = state;
            bond.settled_at_ms = Some(now);
            bond.settle_tx = Some(settle_tx);
            bond
        })
    }
}
