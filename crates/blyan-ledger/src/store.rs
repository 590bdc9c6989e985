//! The seam between the ledger's rules (`ops/`, written once) and the two stores.
//!
//! A store runs a [`Command`] inside one database transaction and gives it a [`StoreTx`]: the
//! few primitive reads and writes the rules are written against. Both backends implement the
//! same primitives with the same locking discipline, so the rules, the idempotency protocol and
//! the invariants are shared, and the schema of each backend enforces the invariants again.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use blyan_primitives::Address;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::account::AccountId;
use crate::amount::Amount;
use crate::bond::{Bond, BondState};
use crate::clock::{Clock, UnixMillis};
use crate::error::Result;
use crate::grant::GrantSource;
use crate::payment::{Hold, HoldId, HoldStatus, Quote, QuoteId};
use crate::tokenomics::Tokenomics;
use crate::transaction::{EntryId, HistoryItem, Transaction, TxKind};

/// What every command sees besides the store: the rules' parameters and the time.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub tokenomics: Tokenomics,
    pub clock: Arc<dyn Clock>,
}

/// One unit of work run inside one store transaction. `Clone` so a store can run it again
/// after a deadlock or serialization failure that rolled the first attempt back.
pub(crate) trait Command: Clone + Send + Sync + 'static {
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Whether the command only reads (stores may run it without write locks).
    const READ_ONLY: bool = false;

    /// The span the command runs in (both stores enter it, retries included): the operation's
    /// name and what a user would search the logs for — the idempotency key, the quote or hold,
    /// the accounts.
    fn span(&self) -> tracing::Span;

    fn apply<T: StoreTx>(
        self,
        tx: &mut T,
        ctx: &Ctx,
    ) -> impl Future<Output = Result<Self::Output>> + Send;
}

/// Runs commands. Implemented by the PostgreSQL and SQLite stores.
pub(crate) trait Store: Send + Sync + 'static {
    fn run<C: Command>(
        &self,
        ctx: &Arc<Ctx>,
        command: C,
    ) -> impl Future<Output = Result<C::Output>> + Send;
}

/// An idempotency key already used.
pub(crate) struct KeyRow {
    pub request: String,
    pub outcome: Option<String>,
}

/// A transaction to record with its siblings in one statement (see
/// [`StoreTx::insert_transactions`]).
pub(crate) struct NewTransaction<'a> {
    pub kind: TxKind,
    pub key: Option<&'a str>,
    pub memo: &'a str,
    /// Signed deltas summing to zero, one per account.
    pub entries: &'a [(AccountId, i64)],
}

/// A quote to store.
pub(crate) struct NewQuote {
    pub payer: Address,
    pub estimated_tokens: u64,
    pub amount: Amount,
    pub hold_amount: Amount,
    pub created_at_ms: UnixMillis,
    pub expires_at_ms: UnixMillis,
}

/// A hold to store.
pub(crate) struct NewHold {
    pub quote: QuoteId,
    pub payer: Address,
    pub quoted: Amount,
    pub amount: Amount,
    pub created_at_ms: UnixMillis,
    pub expires_at_ms: UnixMillis,
    pub authorize_tx: crate::transaction::TxId,
}

/// A bond to store (state `locked`).
pub(crate) struct NewBond<'a> {
    pub key: &'a str,
    pub owner: Address,
    pub amount: Amount,
    pub locked_at_ms: UnixMillis,
    pub lock_tx: crate::transaction::TxId,
}

/// A grant to store, beside its transaction.
pub(crate) struct NewGrant {
    pub tx: crate::transaction::TxId,
    pub recipient: Address,
    pub amount: Amount,
    pub source: GrantSource,
    pub created_at_ms: UnixMillis,
}

/// Raw facts `verify_integrity` judges.
#[derive(Debug, Default)]
pub(crate) struct AuditFacts {
    pub accounts: u64,
    pub transactions: u64,
    pub entries: u64,
    /// Transactions whose entries do not sum to zero, or that have fewer than two entries.
    pub unbalanced: Vec<u64>,
    /// Entries whose transaction row is missing.
    pub orphan_entries: u64,
    /// Accounts whose stored balance differs from the sum of their entries.
    pub drifted: Vec<String>,
    /// Accounts below zero other than the mint.
    pub negative: Vec<String>,
    /// Sum of all balances (zero in a double-entry ledger).
    pub balance_sum: i128,
    /// Balance of the fee escrow.
    pub escrow: i64,
    /// Sum of authorized holds.
    pub held: i64,
    /// Balance of the bond escrow.
    pub bond_escrow: i64,
    /// Sum of locked bonds.
    pub bonded: i64,
    /// Balance of the mint account (minus the total ever minted).
    pub mint: i64,
    /// Balance of the burn account.
    pub burn: i64,
}

/// The primitives the rules need, inside one store transaction.
///
/// Locking discipline, the same in both stores (SQLite has one writer, so its locks are
/// trivially held; PostgreSQL takes row locks): an idempotency key first, then at most one
/// quote, one bond or a set of holds, then accounts in ascending key order in one statement.
pub(crate) trait StoreTx: Send {
    /// Reserves `key` for `request`. `None` when reserved now; the stored row when the key was
    /// used before (waits for a concurrent holder of the key to finish).
    fn claim_key(
        &mut self,
        key: &str,
        request: &str,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Option<KeyRow>>> + Send;

    /// Records the outcome of the request that reserved `key`.
    fn finish_key(&mut self, key: &str, outcome: &str) -> impl Future<Output = Result<()>> + Send;

    /// [`StoreTx::claim_key`] for several `(key, request)` pairs (keys unique) at once, in
    /// ascending key order whatever the order given (so two batches sharing keys wait for
    /// each other instead of deadlocking); the answers follow the order given. On PostgreSQL
    /// one statement, and a second only when some key was used before.
    fn claim_keys(
        &mut self,
        claims: &[(&str, &str)],
        now: UnixMillis,
    ) -> impl Future<Output = Result<Vec<Option<KeyRow>>>> + Send;

    /// [`StoreTx::finish_key`] for several `(key, outcome)` pairs at once (one statement on
    /// PostgreSQL).
    fn finish_keys(&mut self, outcomes: &[(&str, &str)])
    -> impl Future<Output = Result<()>> + Send;

    /// Locks `accounts` (sorted, unique) for update, first creating the user accounts among
    /// `create` that do not exist. Returns the balances of the accounts that exist.
    fn lock_accounts(
        &mut self,
        accounts: &[AccountId],
        create: &[AccountId],
        now: UnixMillis,
    ) -> impl Future<Output = Result<BTreeMap<AccountId, i64>>> + Send;

    /// Records a transaction with its entries (signed deltas summing to zero); the stores'
    /// triggers apply the deltas to the balances.
    fn insert_transaction(
        &mut self,
        kind: TxKind,
        key: Option<&str>,
        memo: &str,
        now: UnixMillis,
        entries: &[(AccountId, i64)],
    ) -> impl Future<Output = Result<crate::transaction::TxId>> + Send;

    /// [`StoreTx::insert_transaction`] for several transactions at once (one statement on
    /// PostgreSQL); the ids ascend in the order given.
    fn insert_transactions(
        &mut self,
        transactions: &[NewTransaction<'_>],
        now: UnixMillis,
    ) -> impl Future<Output = Result<Vec<crate::transaction::TxId>>> + Send;

    fn insert_quote(&mut self, quote: &NewQuote) -> impl Future<Output = Result<QuoteId>> + Send;

    /// The quote and the hold that authorized it, if any; locked when `lock`.
    fn quote(
        &mut self,
        id: QuoteId,
        lock: bool,
    ) -> impl Future<Output = Result<Option<(Quote, Option<HoldId>)>>> + Send;

    fn insert_hold(&mut self, hold: &NewHold) -> impl Future<Output = Result<HoldId>> + Send;

    /// The hold; locked when `lock`.
    fn hold(&mut self, id: HoldId, lock: bool)
    -> impl Future<Output = Result<Option<Hold>>> + Send;

    fn settle_hold(
        &mut self,
        id: HoldId,
        status: HoldStatus,
        settle_tx: crate::transaction::TxId,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Authorized holds expired at `now`, oldest first, locked (skipping ones locked by
    /// others).
    fn lock_stale_holds(
        &mut self,
        now: UnixMillis,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Hold>>> + Send;

    fn insert_bond(&mut self, bond: &NewBond<'_>) -> impl Future<Output = Result<()>> + Send;

    /// The bond locked under `key`; locked when `lock`.
    fn bond(&mut self, key: &str, lock: bool) -> impl Future<Output = Result<Option<Bond>>> + Send;

    /// Marks a locked bond refunded or burned by `settle_tx` at `now`.
    fn settle_bond(
        &mut self,
        key: &str,
        state: BondState,
        settle_tx: crate::transaction::TxId,
        now: UnixMillis,
    ) -> impl Future<Output = Result<()>> + Send;

    fn insert_grant(&mut self, grant: &NewGrant) -> impl Future<Output = Result<()>> + Send;

    /// Sum of every grant ever recorded, in units. Callers hold the treasury's lock, which
    /// serialises every grant.
    fn granted_total(&mut self) -> impl Future<Output = Result<i64>> + Send;

    /// `(count, sum in units)` of the grants from `source` recorded at or after `since`, to
    /// `recipient` only when given. Callers hold the treasury's lock.
    fn grants_since(
        &mut self,
        source: GrantSource,
        recipient: Option<&Address>,
        since: UnixMillis,
    ) -> impl Future<Output = Result<(u64, i64)>> + Send;

    /// Deletes the idempotency keys recorded before `before`, except the ledger's own
    /// (`ledger/…`: the genesis) and those naming a bond (a bond is named by its lock request's
    /// key for as long as it exists). Returns how many.
    fn prune_keys(&mut self, before: UnixMillis) -> impl Future<Output = Result<u64>> + Send;

    /// Deletes the quotes that expired in `[from, before)` and were never authorized (a held
    /// quote stays beside its hold, the payment's record). Returns how many.
    fn prune_quotes(
        &mut self,
        from: UnixMillis,
        before: UnixMillis,
    ) -> impl Future<Output = Result<u64>> + Send;

    fn meta(&mut self, key: &str) -> impl Future<Output = Result<Option<String>>> + Send;

    fn set_meta(&mut self, key: &str, value: &str) -> impl Future<Output = Result<()>> + Send;

    /// `(base circulating supply, minted so far)` of an inflation year. Callers hold the mint
    /// account's lock, which serialises every issuance.
    fn inflation_year(
        &mut self,
        year: u64,
    ) -> impl Future<Output = Result<Option<(i64, i64)>>> + Send;

    fn put_inflation_year(
        &mut self,
        year: u64,
        base: i64,
        minted: i64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Circulating supply counting only transactions recorded at or before `at`.
    fn circulating_at(&mut self, at: UnixMillis) -> impl Future<Output = Result<i64>> + Send;

    /// An account's stored balance, `None` when it does not exist.
    fn balance(&mut self, account: &AccountId) -> impl Future<Output = Result<Option<i64>>> + Send;

    /// Sum of a payer's authorized holds and of the bonds they have locked.
    fn held(&mut self, payer: &Address) -> impl Future<Output = Result<i64>> + Send;

    fn transaction(
        &mut self,
        id: crate::transaction::TxId,
    ) -> impl Future<Output = Result<Option<Transaction>>> + Send;

    /// Entries of `account` older than `before`, newest first.
    fn history(
        &mut self,
        account: &AccountId,
        before: Option<EntryId>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<HistoryItem>>> + Send;

    fn audit(&mut self) -> impl Future<Output = Result<AuditFacts>> + Send;
}
