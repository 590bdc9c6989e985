//! The steps every operation shares: checking amounts and accounts, choosing the accounts to
//! lock, and posting a balanced transaction.

use std::collections::BTreeMap;

use super::MINT;
use crate::account::AccountId;
use crate::amount::Amount;
use crate::clock::UnixMillis;
use crate::error::{LedgerError, Result};
use crate::request::IdempotencyKey;
use crate::store::{Ctx, StoreTx};
use crate::transaction::{Entry, Transaction, TxId, TxKind};

pub(super) fn require_positive(amount: Amount, field: &'static str, ctx: &Ctx) -> Result<()> {
    if amount.is_zero() {
        return Err(LedgerError::Zero { field });
    }
    let cap = ctx.tokenomics.supply.cap;
    if amount > cap {
        return Err(LedgerError::AmountAboveSupplyCap { field, amount, cap });
    }
    Ok(())
}

pub(super) fn refuse_reserved(account: &AccountId, operation: &'static str) -> Result<()> {
    if account.is_reserved() {
        return Err(LedgerError::ReservedAccount {
            account: *account,
            operation,
        });
    }
    Ok(())
}

/// Sorted, unique accounts to lock, and the user accounts among them to create if missing.
pub(super) fn lock_set(
    accounts: &[AccountId],
    credited: &[AccountId],
) -> (Vec<AccountId>, Vec<AccountId>) {
    let mut all: Vec<AccountId> = accounts.to_vec();
    all.sort();
    all.dedup();
    let mut create: Vec<AccountId> = credited
        .iter()
        .filter(|a| !a.is_system())
        .copied()
        .collect();
    create.sort();
    create.dedup();
    (all, create)
}

/// Checks `account` holds at least `amount`.
pub(super) fn require_funds(
    balances: &BTreeMap<AccountId, i64>,
    account: AccountId,
    amount: Amount,
) -> Result<()> {
    let Some(&balance) = balances.get(&account) else {
        return Err(LedgerError::UnknownAccount { account });
    };
    if balance < amount.as_i64() {
        let available = Amount::from_units(balance.max(0).unsigned_abs())?;
        return Err(LedgerError::InsufficientFunds {
            account,
            available,
            required: amount,
        });
    }
    Ok(())
}

/// A balanced transaction checked against the locked balances and applied to them, not yet
/// recorded: what [`post`] records at once and a batch records together with its siblings.
pub(super) struct Staged {
    pub kind: TxKind,
    /// One entry per account, zeros dropped, in ascending account order; sums to zero.
    pub entries: Vec<(AccountId, i64)>,
}

/// Merges `(account, signed delta)` pairs per account, drops zeros, checks the result is a
/// balanced transaction and applies the deltas to `balances`.
pub(super) fn stage(
    balances: &mut BTreeMap<AccountId, i64>,
    kind: TxKind,
    deltas: &[(AccountId, i64)],
) -> Result<Staged> {
    let mut merged: BTreeMap<AccountId, i64> = BTreeMap::new();
    for &(account, delta) in deltas {
        *merged.entry(account).or_default() += delta;
    }
    merged.retain(|_, delta| *delta != 0);
    let entries: Vec<(AccountId, i64)> = merged.into_iter().collect();
    // Invariant: the entries of a transaction sum to zero (checked again by the schema).
    let sum: i128 = entries.iter().map(|&(_, d)| i128::from(d)).sum();
    debug_assert_eq!(sum, 0, "unbalanced {kind:?}: {entries:?}");
    if sum != 0 || entries.len() < 2 {
        return Err(LedgerError::Integrity {
            what: format!("unbalanced {kind:?}: {entries:?}"),
        });
    }
    for &(account, delta) in &entries {
        let balance = balances.entry(account).or_default();
        *balance += delta;
        debug_assert!(
            *balance >= 0 || account == MINT,
            "{account} would go negative"
        );
    }
    Ok(Staged { kind, entries })
}

impl Staged {
    /// The transaction as recorded under `id`.
    pub(super) fn recorded(
        &self,
        id: TxId,
        key: Option<&IdempotencyKey>,
        memo: &str,
        now: UnixMillis,
    ) -> Result<Transaction> {
        Ok(Transaction {
            id,
            kind: self.kind,
            idempotency_key: key.map(|k| k.as_str().to_owned()),
            memo: memo.to_owned(),
            created_at_ms: now,
            entries: self
                .entries
                .iter()
                .map(|&(account, delta)| Entry::from_delta(account, delta))
                .collect::<Result<_>>()?,
        })
    }
}

/// Stages `deltas` (see [`stage`]) and records the transaction.
pub(super) async fn post<T: StoreTx>(
    tx: &mut T,
    balances: &mut BTreeMap<AccountId, i64>,
    kind: TxKind,
    key: Option<&IdempotencyKey>,
    memo: &str,
    now: UnixMillis,
    deltas: &[(AccountId, i64)],
) -> Result<Transaction> {
    let staged = stage(balances, kind, deltas)?;
    let key_text = key.map(IdempotencyKey::as_str);
    let id = tx
        .insert_transaction(kind, key_text, memo, now, &staged.entries)
        .await?;
    staged.recorded(id, key, memo, now)
}
