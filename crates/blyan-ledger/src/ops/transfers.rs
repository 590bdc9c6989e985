//! Transfers between accounts (one, or a batch all-or-none) and burns.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::BURN;
use super::idempotency::{fingerprint, idempotent, outcome_text, replayed};
use super::posting::{lock_set, post, refuse_reserved, require_funds, require_positive, stage};
use crate::account::AccountId;
use crate::clock::UnixMillis;
use crate::error::{LedgerError, Result};
use crate::request::{BurnRequest, TRANSFER_BATCH_LEN_MAX, TransferRequest, check_memo};
use crate::store::{Command, Ctx, NewTransaction, StoreTx};
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
///
/// A batch costs a fixed number of store statements whatever its length: its keys are claimed
/// in one, its accounts locked in one (in ascending order, as every operation locks them), its
/// transactions and entries recorded in one, its outcomes in one. The transfers are checked
/// against the locked balances in the order given, so the first one the balances cannot cover
/// refuses the batch (`BatchItem` with its index) exactly as a loop of single transfers would
/// refuse it. A key repeated inside a batch is a replay of its first occurrence there (the same
/// transaction, money moved once), or `IdempotencyConflict` for a different request.
#[derive(Clone)]
pub(crate) struct TransferBatch(pub Vec<TransferRequest>);

/// What claiming a batch item's key found.
enum Claimed {
    /// Fresh: the item moves money.
    Fresh,
    /// Used by an earlier item of this batch (its index) for the same request.
    Repeat(usize),
    /// Used by an earlier request for the same request: its outcome.
    Replay(Transaction),
}

fn batch_item(index: usize, source: LedgerError) -> LedgerError {
    LedgerError::BatchItem {
        index: u32::try_from(index).unwrap_or(u32::MAX),
        source: Box::new(source),
    }
}

impl TransferBatch {
    /// Claims every key of the batch in one store call; a key's answer is for its first
    /// occurrence in the batch, the later ones repeat it.
    async fn claim<T: StoreTx>(&self, tx: &mut T, now: UnixMillis) -> Result<Vec<Claimed>> {
        let fingerprints = self
            .0
            .iter()
            .map(|request| fingerprint("transfer", request))
            .collect::<Result<Vec<String>>>()?;
        let mut first: HashMap<&str, usize> = HashMap::with_capacity(self.0.len());
        // Per item: `Ok(None)` claims its key, `Ok(Some(i))` repeats item i, `Err` conflicts.
        let mut seen: Vec<std::result::Result<Option<usize>, LedgerError>> =
            Vec::with_capacity(self.0.len());
        for (index, request) in self.0.iter().enumerate() {
            match first.entry(request.key.as_str()) {
                Entry::Vacant(slot) => {
                    slot.insert(index);
                    seen.push(Ok(None));
                }
                Entry::Occupied(slot) => {
                    let earlier = *slot.get();
                    seen.push(if fingerprints[earlier] == fingerprints[index] {
                        Ok(Some(earlier))
                    } else {
                        Err(LedgerError::IdempotencyConflict {
                            key: request.key.as_str().to_owned(),
                            first_request: fingerprints[earlier].clone(),
                        })
                    });
                }
            }
        }
        let claims: Vec<(&str, &str)> = self
            .0
            .iter()
            .zip(&fingerprints)
            .zip(&seen)
            .filter(|(_, seen)| matches!(seen, Ok(None)))
            .map(|((request, fingerprint), _)| (request.key.as_str(), fingerprint.as_str()))
            .collect();
        let mut rows = tx.claim_keys(&claims, now).await?.into_iter();
        let mut claimed = Vec::with_capacity(self.0.len());
        // Errors are reported for the first item in the given order, as claiming one key
        // after the other would.
        for (index, (request, seen)) in self.0.iter().zip(seen).enumerate() {
            let item = match seen.map_err(|e| batch_item(index, e))? {
                Some(earlier) => Claimed::Repeat(earlier),
                None => {
                    let row = rows.next().ok_or_else(|| LedgerError::Integrity {
                        what: "fewer claimed keys than asked".into(),
                    })?;
                    match row {
                        None => Claimed::Fresh,
                        Some(row) => Claimed::Replay(
                            replayed(&request.key, &fingerprints[index], row)
                                .map_err(|e| batch_item(index, e))?,
                        ),
                    }
                }
            };
            claimed.push(item);
        }
        Ok(claimed)
    }
}

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
        for (index, request) in self.0.iter().enumerate() {
            check_transfer(request, ctx).map_err(|e| batch_item(index, e))?;
        }
        let now = ctx.clock.now_ms();
        // Keys first, then every fresh transfer's accounts at once.
        let claimed = self.claim(tx, now).await?;
        let fresh: Vec<(usize, &TransferRequest)> = self
            .0
            .iter()
            .enumerate()
            .filter(|&(index, _)| matches!(claimed[index], Claimed::Fresh))
            .collect();
        let accounts: Vec<AccountId> = fresh.iter().flat_map(|(_, r)| [r.from, r.to]).collect();
        let credited: Vec<AccountId> = fresh.iter().map(|(_, r)| r.to).collect();
        let (lock, create) = lock_set(&accounts, &credited);
        let mut balances = tx.lock_accounts(&lock, &create, now).await?;
        // Checked and applied in the given order, then recorded together.
        let mut staged = Vec::with_capacity(fresh.len());
        for &(index, request) in &fresh {
            require_funds(&balances, request.from, request.amount)
                .map_err(|e| batch_item(index, e))?;
            let amount = request.amount.as_i64();
            let deltas = [(request.from, -amount), (request.to, amount)];
            staged.push(
                stage(&mut balances, TxKind::Transfer, &deltas)
                    .map_err(|e| batch_item(index, e))?,
            );
        }
        let rows: Vec<NewTransaction<'_>> = fresh
            .iter()
            .zip(&staged)
            .map(|(&(_, request), staged)| NewTransaction {
                kind: staged.kind,
                key: Some(request.key.as_str()),
                memo: &request.memo,
                entries: &staged.entries,
            })
            .collect();
        let ids = if rows.is_empty() {
            Vec::new()
        } else {
            tx.insert_transactions(&rows, now).await?
        };
        let mut recorded: HashMap<usize, Transaction> = HashMap::with_capacity(fresh.len());
        let mut outcomes: Vec<(usize, String)> = Vec::with_capacity(fresh.len());
        for ((&(index, request), staged), &id) in fresh.iter().zip(&staged).zip(&ids) {
            let transaction = staged.recorded(id, Some(&request.key), &request.memo, now)?;
            outcomes.push((index, outcome_text(&transaction)?));
            recorded.insert(index, transaction);
        }
        if !outcomes.is_empty() {
            let pairs: Vec<(&str, &str)> = outcomes
                .iter()
                .map(|(index, text)| (self.0[*index].key.as_str(), text.as_str()))
                .collect();
            tx.finish_keys(&pairs).await?;
        }
        let mut results: Vec<Transaction> = Vec::with_capacity(self.0.len());
        for (index, claimed) in claimed.into_iter().enumerate() {
            let outcome = match claimed {
                Claimed::Replay(first) => first,
                Claimed::Repeat(earlier) => {
                    results
                        .get(earlier)
                        .cloned()
                        .ok_or_else(|| LedgerError::Integrity {
                            what: format!("batch item {index} repeats a later item {earlier}"),
                        })?
                }
                Claimed::Fresh => {
                    recorded
                        .remove(&index)
                        .ok_or_else(|| LedgerError::Integrity {
                            what: format!("batch item {index} was not recorded"),
                        })?
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
