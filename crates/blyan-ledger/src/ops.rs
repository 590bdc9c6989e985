//! The ledger's rules, written once against [`StoreTx`] and run by both stores.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::account::{AccountId, SystemAccount};
use crate::amount::Amount;
use crate::clock::UnixMillis;
use crate::error::{LedgerError, Result};
use crate::payment::{Capture, Hold, HoldId, HoldStatus, Quote};
use crate::request::{
    AuthorizeRequest, BurnRequest, CaptureRequest, HISTORY_PAGE_LEN_MAX, HistoryQuery,
    IdempotencyKey, LearningRewardRequest, MintRequest, QuoteRequest, ReleaseRequest,
    TRANSFER_BATCH_LEN_MAX, TransferRequest, ValidationRewardRequest, check_memo,
};
use crate::store::{Command, Ctx, NewHold, NewQuote, StoreTx};
use crate::tokenomics::check_limit;
use crate::transaction::{
    Balance, Entry, HistoryPage, IntegrityReport, Supply, Transaction, TxId, TxKind,
};

/// Length of an inflation year, counted from genesis.
pub(crate) const INFLATION_YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
/// Holds expired per store transaction by the expiry sweep.
pub(crate) const EXPIRY_BATCH_LEN: u32 = 100;

const MINT: AccountId = AccountId::System(SystemAccount::Mint);
const BURN: AccountId = AccountId::System(SystemAccount::Burn);
const ESCROW: AccountId = AccountId::System(SystemAccount::FeeEscrow);
const REWARD_POOL: AccountId = AccountId::System(SystemAccount::RewardPool);
const GENESIS_AT_META: &str = "genesis_at_ms";

// ---------------------------------------------------------------------------------------------
// Idempotency: claim the key first (waiting for a concurrent holder), run, record the outcome
// in the same store transaction. A replay of the same request returns the stored outcome.

#[derive(Serialize)]
struct Fingerprint<'a, R: Serialize> {
    operation: &'a str,
    request: &'a R,
}

fn fingerprint<R: Serialize>(operation: &str, request: &R) -> Result<String> {
    serde_json::to_string(&Fingerprint { operation, request }).map_err(|e| LedgerError::Integrity {
        what: format!("cannot encode request: {e}"),
    })
}

/// `Some(first outcome)` when `key` was already used for this very request.
async fn claim<T: StoreTx, O: DeserializeOwned>(
    tx: &mut T,
    key: &IdempotencyKey,
    request: &str,
    now: UnixMillis,
) -> Result<Option<O>> {
    let Some(row) = tx.claim_key(key.as_str(), request, now).await? else {
        return Ok(None);
    };
    if row.request != request {
        return Err(LedgerError::IdempotencyConflict {
            key: key.as_str().to_owned(),
            first_request: row.request,
        });
    }
    let outcome = row.outcome.ok_or_else(|| LedgerError::Integrity {
        what: format!("idempotency key {key} committed without an outcome"),
    })?;
    serde_json::from_str(&outcome)
        .map(Some)
        .map_err(|e| LedgerError::Integrity {
            what: format!("stored outcome of key {key} does not decode: {e}"),
        })
}

async fn finish<T: StoreTx, O: Serialize>(
    tx: &mut T,
    key: &IdempotencyKey,
    outcome: &O,
) -> Result<()> {
    let text = serde_json::to_string(outcome).map_err(|e| LedgerError::Integrity {
        what: format!("cannot encode outcome: {e}"),
    })?;
    tx.finish_key(key.as_str(), &text).await
}

/// Runs `$body` (an expression that may `.await` and `?`) once per idempotency key.
macro_rules! idempotent {
    ($tx:expr, $ctx:expr, $key:expr, $operation:expr, $request:expr, |$now:ident| $body:expr) => {{
        let $now = $ctx.clock.now_ms();
        let request = fingerprint($operation, $request)?;
        if let Some(first) = claim($tx, $key, &request, $now).await? {
            return Ok(first);
        }
        let outcome = $body;
        finish($tx, $key, &outcome).await?;
        Ok(outcome)
    }};
}

// ---------------------------------------------------------------------------------------------
// Shared steps.

fn require_positive(amount: Amount, field: &'static str, ctx: &Ctx) -> Result<()> {
    if amount.is_zero() {
        return Err(LedgerError::Zero { field });
    }
    let cap = ctx.tokenomics.supply.cap;
    if amount > cap {
        return Err(LedgerError::AmountAboveSupplyCap { field, amount, cap });
    }
    Ok(())
}

fn refuse_reserved(account: &AccountId, operation: &'static str) -> Result<()> {
    if account.is_reserved() {
        return Err(LedgerError::ReservedAccount {
            account: *account,
            operation,
        });
    }
    Ok(())
}

/// Sorted, unique accounts to lock, and the user accounts among them to create if missing.
fn lock_set(accounts: &[AccountId], credited: &[AccountId]) -> (Vec<AccountId>, Vec<AccountId>) {
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
fn require_funds(
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

/// Merges `(account, signed delta)` pairs per account, drops zeros, records the transaction
/// and applies the deltas to `balances`.
async fn post<T: StoreTx>(
    tx: &mut T,
    balances: &mut BTreeMap<AccountId, i64>,
    kind: TxKind,
    key: Option<&IdempotencyKey>,
    memo: &str,
    now: UnixMillis,
    deltas: &[(AccountId, i64)],
) -> Result<Transaction> {
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
    let key_text = key.map(IdempotencyKey::as_str);
    let id = tx
        .insert_transaction(kind, key_text, memo, now, &entries)
        .await?;
    Ok(Transaction {
        id,
        kind,
        idempotency_key: key_text.map(str::to_owned),
        memo: memo.to_owned(),
        created_at_ms: now,
        entries: entries
            .iter()
            .map(|&(account, delta)| Entry::from_delta(account, delta))
            .collect::<Result<_>>()?,
    })
}

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

// ---------------------------------------------------------------------------------------------
// Genesis.

#[derive(Clone)]
pub(crate) struct Genesis;

impl Command for Genesis {
    type Output = Transaction;

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

// ---------------------------------------------------------------------------------------------
// Transfers, burns, mints.

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

impl Command for MintRequest {
    type Output = Transaction;

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

// ---------------------------------------------------------------------------------------------
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

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Transaction> {
        let amount = ctx.tokenomics.learning_reward(self.improvement_bps)?;
        idempotent!(tx, ctx, &self.key, "learning_reward", &self, |now| {
            let memo = format!("learning reward: {} bps improvement", self.improvement_bps);
            pay_reward(tx, ctx, &self.key, self.learner.into(), amount, &memo, now).await?
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Inference payments.

impl Command for QuoteRequest {
    type Output = Quote;

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Quote> {
        if self.estimated_tokens == 0 {
            return Err(LedgerError::Zero {
                field: "estimated_tokens",
            });
        }
        let amount = ctx.tokenomics.inference_fee(self.estimated_tokens)?;
        let hold_amount = ctx.tokenomics.hold_amount(amount)?;
        idempotent!(tx, ctx, &self.key, "quote", &self, |now| {
            let new = NewQuote {
                payer: self.payer,
                estimated_tokens: self.estimated_tokens,
                amount,
                hold_amount,
                created_at_ms: now,
                expires_at_ms: now + ctx.tokenomics.quote_ttl_ms(),
            };
            let id = tx.insert_quote(&new).await?;
            Quote {
                id,
                payer: new.payer,
                estimated_tokens: new.estimated_tokens,
                amount,
                hold_amount,
                created_at_ms: new.created_at_ms,
                expires_at_ms: new.expires_at_ms,
            }
        })
    }
}

impl Command for AuthorizeRequest {
    type Output = Hold;

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Hold> {
        idempotent!(tx, ctx, &self.key, "authorize", &self, |now| {
            let Some((quote, hold)) = tx.quote(self.quote, true).await? else {
                return Err(LedgerError::UnknownQuote { quote: self.quote });
            };
            if let Some(hold) = hold {
                return Err(LedgerError::QuoteAlreadyAuthorized {
                    quote: quote.id,
                    hold,
                });
            }
            if now >= quote.expires_at_ms {
                return Err(LedgerError::QuoteExpired {
                    quote: quote.id,
                    expired_at_ms: quote.expires_at_ms,
                });
            }
            let payer = AccountId::User(quote.payer);
            let (lock, create) = lock_set(&[payer, ESCROW], &[]);
            let mut balances = tx.lock_accounts(&lock, &create, now).await?;
            require_funds(&balances, payer, quote.hold_amount)?;
            let amount = quote.hold_amount.as_i64();
            let memo = format!("hold for {}", quote.id);
            let deltas = [(payer, -amount), (ESCROW, amount)];
            let authorize_tx = post(
                tx,
                &mut balances,
                TxKind::Authorize,
                Some(&self.key),
                &memo,
                now,
                &deltas,
            )
            .await?
            .id;
            let new = NewHold {
                quote: quote.id,
                payer: quote.payer,
                quoted: quote.amount,
                amount: quote.hold_amount,
                created_at_ms: now,
                expires_at_ms: now + ctx.tokenomics.hold_ttl_ms(),
                authorize_tx,
            };
            let id = tx.insert_hold(&new).await?;
            Hold {
                id,
                quote: new.quote,
                payer: new.payer,
                quoted: new.quoted,
                amount: new.amount,
                status: HoldStatus::Authorized,
                created_at_ms: new.created_at_ms,
                expires_at_ms: new.expires_at_ms,
                authorize_tx,
                settle_tx: None,
            }
        })
    }
}

/// The authorized hold `id`, locked.
async fn authorized_hold<T: StoreTx>(tx: &mut T, id: HoldId) -> Result<Hold> {
    let hold = tx
        .hold(id, true)
        .await?
        .ok_or(LedgerError::UnknownHold { hold: id })?;
    if hold.status != HoldStatus::Authorized {
        return Err(LedgerError::HoldNotAuthorized {
            hold: id,
            status: hold.status,
        });
    }
    Ok(hold)
}

/// Moves `hold.amount` out of escrow: `charge` split into burn and `paid_to`, the rest back to
/// the payer; marks the hold `status`.
/// How a hold is settled.
struct Settlement<'a> {
    kind: TxKind,
    status: HoldStatus,
    key: Option<&'a IdempotencyKey>,
    charge: Amount,
    paid_to: AccountId,
}

impl Settlement<'_> {
    /// Everything back to the payer.
    fn refund(kind: TxKind, status: HoldStatus, key: Option<&IdempotencyKey>) -> Settlement<'_> {
        Settlement {
            kind,
            status,
            key,
            charge: Amount::ZERO,
            paid_to: REWARD_POOL,
        }
    }
}

async fn settle<T: StoreTx>(
    tx: &mut T,
    ctx: &Ctx,
    hold: &mut Hold,
    settlement: Settlement<'_>,
    now: UnixMillis,
) -> Result<(Transaction, Amount)> {
    let Settlement {
        kind,
        status,
        key,
        charge,
        paid_to,
    } = settlement;
    let payer = AccountId::User(hold.payer);
    let burned = ctx.tokenomics.burn_share(charge);
    let served = charge.checked_sub(burned).expect("burn share <= charge");
    let released = hold
        .amount
        .checked_sub(charge)
        .expect("charge <= hold amount, checked");
    let (lock, create) = lock_set(&[payer, ESCROW, BURN, paid_to], &[paid_to]);
    let mut balances = tx.lock_accounts(&lock, &create, now).await?;
    if balances.get(&ESCROW).copied().unwrap_or(0) < hold.amount.as_i64() {
        return Err(LedgerError::Integrity {
            what: format!("escrow lacks {}", hold.id),
        });
    }
    let deltas = [
        (ESCROW, -hold.amount.as_i64()),
        (BURN, burned.as_i64()),
        (paid_to, served.as_i64()),
        (payer, released.as_i64()),
    ];
    let memo = format!("{} of {}", status.as_str(), hold.id);
    let transaction = post(tx, &mut balances, kind, key, &memo, now, &deltas).await?;
    tx.settle_hold(hold.id, status, transaction.id).await?;
    hold.status = status;
    hold.settle_tx = Some(transaction.id);
    Ok((transaction, burned))
}

impl Command for CaptureRequest {
    type Output = Capture;

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Capture> {
        let charged = ctx.tokenomics.inference_fee(self.actual_tokens)?;
        idempotent!(tx, ctx, &self.key, "capture", &self, |now| {
            let mut hold = authorized_hold(tx, self.hold).await?;
            if now >= hold.expires_at_ms {
                return Err(LedgerError::HoldExpired {
                    hold: hold.id,
                    expired_at_ms: hold.expires_at_ms,
                });
            }
            if charged > hold.amount {
                return Err(LedgerError::CaptureAboveTolerance {
                    hold: hold.id,
                    charge: charged,
                    max: hold.amount,
                });
            }
            let paid_to = self.server.map_or(REWARD_POOL, AccountId::User);
            let settlement = Settlement {
                kind: TxKind::Capture,
                status: HoldStatus::Captured,
                key: Some(&self.key),
                charge: charged,
                paid_to,
            };
            let (transaction, burned) = settle(tx, ctx, &mut hold, settlement, now).await?;
            let released = hold.amount.checked_sub(charged).expect("checked above");
            Capture {
                served: charged.checked_sub(burned).expect("burn share <= charge"),
                hold,
                charged,
                burned,
                paid_to,
                released,
                transaction: transaction.id,
            }
        })
    }
}

impl Command for ReleaseRequest {
    type Output = Hold;

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Hold> {
        idempotent!(tx, ctx, &self.key, "release", &self, |now| {
            let mut hold = authorized_hold(tx, self.hold).await?;
            let settlement =
                Settlement::refund(TxKind::Release, HoldStatus::Released, Some(&self.key));
            settle(tx, ctx, &mut hold, settlement, now).await?;
            hold
        })
    }
}

/// Releases up to `EXPIRY_BATCH_LEN` expired holds back to their payers.
#[derive(Clone)]
pub(crate) struct ExpireHolds;

impl Command for ExpireHolds {
    type Output = Vec<HoldId>;

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Vec<HoldId>> {
        let now = ctx.clock.now_ms();
        let stale = tx.lock_stale_holds(now, EXPIRY_BATCH_LEN).await?;
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        // Every account the batch touches, locked at once in ascending order: settling the
        // holds one by one would take payers' locks out of order and could deadlock with a
        // concurrent transfer.
        let accounts: Vec<AccountId> = stale
            .iter()
            .map(|hold| AccountId::User(hold.payer))
            .chain([ESCROW, BURN, REWARD_POOL])
            .collect();
        let (lock, create) = lock_set(&accounts, &[]);
        tx.lock_accounts(&lock, &create, now).await?;
        let mut expired = Vec::with_capacity(stale.len());
        for mut hold in stale {
            debug_assert!(hold.status == HoldStatus::Authorized && hold.expires_at_ms <= now);
            let settlement = Settlement::refund(TxKind::Expiry, HoldStatus::Expired, None);
            settle(tx, ctx, &mut hold, settlement, now).await?;
            expired.push(hold.id);
        }
        Ok(expired)
    }
}

// ---------------------------------------------------------------------------------------------
// Queries.

#[derive(Clone)]
pub(crate) struct GetBalance(pub AccountId);

impl Command for GetBalance {
    type Output = Balance;
    const READ_ONLY: bool = true;

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

    async fn apply<T: StoreTx>(self, tx: &mut T, _ctx: &Ctx) -> Result<Option<Transaction>> {
        tx.transaction(self.0).await
    }
}

#[derive(Clone)]
pub(crate) struct GetHold(pub HoldId);

impl Command for GetHold {
    type Output = Option<Hold>;
    const READ_ONLY: bool = true;

    async fn apply<T: StoreTx>(self, tx: &mut T, _ctx: &Ctx) -> Result<Option<Hold>> {
        tx.hold(self.0, false).await
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

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Supply> {
        supply_of(tx, ctx).await
    }
}

#[derive(Clone)]
pub(crate) struct VerifyIntegrity;

impl Command for VerifyIntegrity {
    type Output = IntegrityReport;
    const READ_ONLY: bool = true;

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
