//! The `Ledger` trait both stores implement, and what they share.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument as _;

use crate::account::AccountId;
use crate::bond::Bond;
use crate::clock::{Clock, SystemClock};
use crate::embedded::EmbeddedLedger;
use crate::error::Result;
use crate::grant::Grant;
use crate::ops::{self, EXPIRY_BATCH_LEN, Pruned};
use crate::payment::{Capture, Hold, HoldId, Quote};
use crate::pg::PgLedger;
use crate::request::{
    AuthorizeRequest, BondLockRequest, BondSettleRequest, BurnRequest, CaptureRequest,
    DataRewardRequest, FaucetClaimRequest, GrantRequest, HistoryQuery, IdempotencyKey,
    LearningRewardRequest, MintRequest, QuoteRequest, ReleaseRequest, TransferRequest,
    ValidationRewardRequest,
};
use crate::store::{Command, Ctx, Store};
use crate::tokenomics::Tokenomics;
use crate::transaction::{Balance, HistoryPage, IntegrityReport, Supply, Transaction, TxId};

/// Default size of the PostgreSQL connection pool.
pub const PG_POOL_SIZE_DEFAULT: usize = 16;

/// Settings shared by both stores' constructors.
#[derive(Clone, Debug)]
pub struct LedgerOptions {
    /// Where the ledger reads the time (a [`crate::ManualClock`] in tests).
    pub clock: Arc<dyn Clock>,
    /// Most PostgreSQL connections (ignored by the embedded store).
    pub pg_pool_size: usize,
}

impl Default for LedgerOptions {
    fn default() -> LedgerOptions {
        LedgerOptions {
            clock: Arc::new(SystemClock),
            pg_pool_size: PG_POOL_SIZE_DEFAULT,
        }
    }
}

/// A double-entry BLY ledger. Every method that moves money takes a request carrying an
/// idempotency key; a refusal (`LedgerError::is_refusal`) moved nothing.
///
/// Implemented by [`PgLedger`], [`EmbeddedLedger`] and [`AnyLedger`]; the futures are `Send`,
/// so handlers can `.await` them on any runtime thread.
pub trait Ledger: Send + Sync {
    /// Moves `amount` between two accounts.
    fn transfer(
        &self,
        request: TransferRequest,
    ) -> impl Future<Output = Result<Transaction>> + Send;

    /// Several transfers in one store transaction: all recorded, or none
    /// (`LedgerError::BatchItem` names the one that failed). They are checked in the order
    /// given, each against the balances the earlier ones left, so the first transfer a balance
    /// cannot cover refuses the batch. A key used again later in the same batch is a replay of
    /// its first use there (the same transaction; money moves once), or
    /// `LedgerError::IdempotencyConflict` for a different request. On PostgreSQL a batch costs
    /// the same few statements whatever its length.
    fn transfer_batch(
        &self,
        requests: Vec<TransferRequest>,
    ) -> impl Future<Output = Result<Vec<Transaction>>> + Send;

    /// Grants BLY from the treasury to a wallet (the operator's `blyan-node ledger grant`): a
    /// transaction of kind `grant`, refused with `LedgerError::GrantAboveAllocation` past what
    /// the treasury's genesis allocation has left after every earlier grant.
    fn grant(&self, request: GrantRequest) -> impl Future<Output = Result<Grant>> + Send;

    /// A test network's faucet claim: a grant (source `faucet`) within the treasury allocation
    /// and the claim's per-wallet and daily limits (`LedgerError::FaucetWalletLimit`,
    /// `LedgerError::FaucetDailyCap`), counted in the same store transaction.
    fn claim_faucet(
        &self,
        request: FaucetClaimRequest,
    ) -> impl Future<Output = Result<Grant>> + Send;

    /// Destroys tokens of an account.
    fn burn(&self, request: BurnRequest) -> impl Future<Output = Result<Transaction>> + Send;

    /// Issues new tokens within the yearly inflation allowance and the supply cap.
    fn mint(&self, request: MintRequest) -> impl Future<Output = Result<Transaction>> + Send;

    /// Pays a validator per validated sample (from the reward pool; shortfall minted).
    fn reward_validation(
        &self,
        request: ValidationRewardRequest,
    ) -> impl Future<Output = Result<Transaction>> + Send;

    /// Pays a learner per accepted improvement (from the reward pool; shortfall minted).
    fn reward_learning(
        &self,
        request: LearningRewardRequest,
    ) -> impl Future<Output = Result<Transaction>> + Send;

    /// Pays a dataset contributor per committed sample a certified candidate used (from the
    /// reward pool; shortfall minted).
    fn reward_data(
        &self,
        request: DataRewardRequest,
    ) -> impl Future<Output = Result<Transaction>> + Send;

    /// Locks a Proof-of-Learning candidate's bond: `amount` moves from the owner's available
    /// balance into `system:bond_escrow` (`LedgerError::InsufficientFunds` when it does not
    /// cover it). The request's key names the bond.
    fn lock_bond(&self, request: BondLockRequest) -> impl Future<Output = Result<Bond>> + Send;

    /// Settles a locked bond once: refunds it to its owner or burns it. A bond already settled
    /// by another request is `LedgerError::BondSettled`; an unknown one `LedgerError::UnknownBond`.
    fn settle_bond(&self, request: BondSettleRequest) -> impl Future<Output = Result<Bond>> + Send;

    /// The bond locked under `key` (its lock request's key), as it stands now.
    fn bond(&self, key: IdempotencyKey) -> impl Future<Output = Result<Option<Bond>>> + Send;

    /// Prices estimated inference tokens; valid for the quote TTL.
    fn quote(&self, request: QuoteRequest) -> impl Future<Output = Result<Quote>> + Send;

    /// Holds a quote's amount plus tolerance from the payer in escrow.
    fn authorize(&self, request: AuthorizeRequest) -> impl Future<Output = Result<Hold>> + Send;

    /// Charges a hold for the actual tokens: fee burned and paid out, remainder released.
    fn capture(&self, request: CaptureRequest) -> impl Future<Output = Result<Capture>> + Send;

    /// Voids a hold: everything returns to the payer.
    fn release(&self, request: ReleaseRequest) -> impl Future<Output = Result<Hold>> + Send;

    /// Releases every hold past its TTL to its payer; returns their ids. The node calls this
    /// periodically; constructors call it at start.
    fn expire_holds(&self) -> impl Future<Output = Result<Vec<HoldId>>> + Send;

    /// Deletes the idempotency keys recorded more than `idempotency_retention` ago and the
    /// quotes that expired that long ago without being authorized; returns how many of each.
    /// A request replayed within the retention is still recognised (its first outcome, money
    /// moved once); replayed later, it is a new request. The ledger's own keys (the genesis),
    /// keys naming a bond, and holds with the quotes they authorized, are kept. A retention below
    /// [`IDEMPOTENCY_RETENTION_MIN`](crate::IDEMPOTENCY_RETENTION_MIN) is refused
    /// (`LedgerError::RetentionTooShort`). The node calls this hourly.
    fn prune(&self, idempotency_retention: Duration)
    -> impl Future<Output = Result<Pruned>> + Send;

    /// An account's available and held balance (zero for an account never seen).
    fn balance(&self, account: AccountId) -> impl Future<Output = Result<Balance>> + Send;

    /// A page of an account's entries, newest first.
    fn history(
        &self,
        account: AccountId,
        query: HistoryQuery,
    ) -> impl Future<Output = Result<HistoryPage>> + Send;

    /// A transaction by id.
    fn transaction(&self, id: TxId) -> impl Future<Output = Result<Option<Transaction>>> + Send;

    /// A hold by id, as it stands now.
    fn hold(&self, id: HoldId) -> impl Future<Output = Result<Option<Hold>>> + Send;

    /// Minted, burned and circulating supply.
    fn supply(&self) -> impl Future<Output = Result<Supply>> + Send;

    /// Checks every invariant against the stored data (balanced transactions, balances equal
    /// to their entries, no negative balance, balances summing to zero, the fee escrow equal to
    /// the authorized holds, the bond escrow equal to the locked bonds);
    /// `LedgerError::Integrity` lists what is broken.
    fn verify_integrity(&self) -> impl Future<Output = Result<IntegrityReport>> + Send;

    /// The tokenomics this ledger applies.
    fn tokenomics(&self) -> &Tokenomics;
}

/// The shared half of each store's ledger: the rules' context and the store. Cloning is
/// cheap: both stores are handles to a shared pool or connection.
#[derive(Clone)]
pub(crate) struct Core<S> {
    store: S,
    ctx: Arc<Ctx>,
}

impl<S: Store> Core<S> {
    /// Records the genesis (once: a second start finds it and checks it matches) and expires
    /// holds that went stale while the ledger was closed.
    pub(crate) async fn start(
        store: S,
        tokenomics: Tokenomics,
        clock: Arc<dyn Clock>,
    ) -> Result<Core<S>> {
        let core = Core {
            store,
            ctx: Arc::new(Ctx { tokenomics, clock }),
        };
        core.run(ops::Genesis).await?;
        let expired = core.expire_all().await?;
        if !expired.is_empty() {
            tracing::info!(count = expired.len(), "expired stale holds at start");
        }
        Ok(core)
    }

    /// Runs `command` in its span; a refusal is logged at debug level, a failure at warn.
    pub(crate) fn run<C: Command>(
        &self,
        command: C,
    ) -> impl Future<Output = Result<C::Output>> + Send + '_ {
        let span = command.span();
        async move {
            let result = self.store.run(&self.ctx, command).await;
            match &result {
                Err(error) if error.is_refusal() => tracing::debug!(%error, "refused"),
                Err(error) => tracing::warn!(%error, "failed"),
                Ok(_) => {}
            }
            result
        }
        .instrument(span)
    }

    async fn expire_all(&self) -> Result<Vec<HoldId>> {
        let mut expired = Vec::new();
        loop {
            let batch = self.run(ops::ExpireHolds).await?;
            let done = batch.len() < EXPIRY_BATCH_LEN as usize;
            expired.extend(batch);
            if done {
                return Ok(expired);
            }
        }
    }
}

/// Gives the blanket [`Ledger`] implementation access to a store's [`Core`].
pub(crate) trait HasCore: Send + Sync {
    type S: Store;
    fn core(&self) -> &Core<Self::S>;
}

// The two stores' ledgers share every method through their `Core`.
macro_rules! ledger_via_core {
    ($($ty:ty),*) => {$(
        impl Ledger for $ty {
            fn transfer(&self, request: TransferRequest) -> impl Future<Output = Result<Transaction>> + Send {
                self.core().run(request)
            }
            fn transfer_batch(&self, requests: Vec<TransferRequest>) -> impl Future<Output = Result<Vec<Transaction>>> + Send {
                self.core().run(ops::TransferBatch(requests))
            }
            fn grant(&self, request: GrantRequest) -> impl Future<Output = Result<Grant>> + Send {
                self.core().run(request)
            }
            fn claim_faucet(&self, request: FaucetClaimRequest) -> impl Future<Output = Result<Grant>> + Send {
                self.core().run(request)
            }
            fn burn(&self, request: BurnRequest) -> impl Future<Output = Result<Transaction>> + Send {
                self.core().run(request)
            }
            fn mint(&self, request: MintRequest) -> impl Future<Output = Result<Transaction>> + Send {
                self.core().run(request)
            }
            fn reward_validation(&self, request: ValidationRewardRequest) -> impl Future<Output = Result<Transaction>> + Send {
                self.core().run(request)
            }
            fn reward_learning(&self, request: LearningRewardRequest) -> impl Future<Output = Result<Transaction>> + Send {
                self.core().run(request)
            }
            fn reward_data(&self, request: DataRewardRequest) -> impl Future<Output = Result<Transaction>> + Send {
                self.core().run(request)
            }
            fn lock_bond(&self, request: BondLockRequest) -> impl Future<Output = Result<Bond>> + Send {
                self.core().run(request)
            }
            fn settle_bond(&self, request: BondSettleRequest) -> impl Future<Output = Result<Bond>> + Send {
                self.core().run(request)
            }
            fn bond(&self, key: IdempotencyKey) -> impl Future<Output = Result<Option<Bond>>> + Send {
                self.core().run(ops::GetBond(key))
            }
            fn quote(&self, request: QuoteRequest) -> impl Future<Output = Result<Quote>> + Send {
                self.core().run(request)
            }
            fn authorize(&self, request: AuthorizeRequest) -> impl Future<Output = Result<Hold>> + Send {
                self.core().run(request)
            }
            fn capture(&self, request: CaptureRequest) -> impl Future<Output = Result<Capture>> + Send {
                self.core().run(request)
            }
            fn release(&self, request: ReleaseRequest) -> impl Future<Output = Result<Hold>> + Send {
                self.core().run(request)
            }
            fn expire_holds(&self) -> impl Future<Output = Result<Vec<HoldId>>> + Send {
                self.core().expire_all()
            }
            fn prune(&self, idempotency_retention: Duration) -> impl Future<Output = Result<Pruned>> + Send {
                self.core().run(ops::Prune { retention: idempotency_retention })
            }
            fn balance(&self, account: AccountId) -> impl Future<Output = Result<Balance>> + Send {
                self.core().run(ops::GetBalance(account))
            }
            fn history(&self, account: AccountId, query: HistoryQuery) -> impl Future<Output = Result<HistoryPage>> + Send {
                self.core().run(ops::GetHistory(account, query))
            }
            fn transaction(&self, id: TxId) -> impl Future<Output = Result<Option<Transaction>>> + Send {
                self.core().run(ops::GetTransaction(id))
            }
            fn hold(&self, id: HoldId) -> impl Future<Output = Result<Option<Hold>>> + Send {
                self.core().run(ops::GetHold(id))
            }
            fn supply(&self) -> impl Future<Output = Result<Supply>> + Send {
                self.core().run(ops::GetSupply)
            }
            fn verify_integrity(&self) -> impl Future<Output = Result<IntegrityReport>> + Send {
                self.core().run(ops::VerifyIntegrity)
            }
            fn tokenomics(&self) -> &Tokenomics {
                &self.core().ctx.tokenomics
            }
        }
    )*};
}

ledger_via_core!(PgLedger, EmbeddedLedger);

/// Either store, chosen at run time (by the node's configuration): what the node's HTTP
/// handlers hold. `Send + Sync`, and cloning is cheap (every clone shares the store), so it can
/// sit in an axum state as is.
#[derive(Clone)]
pub enum AnyLedger {
    /// PostgreSQL.
    Pg(PgLedger),
    /// The embedded SQLite file.
    Embedded(EmbeddedLedger),
}

impl AnyLedger {
    /// Opens (creating if needed) the embedded ledger file at `path`: applies the migrations,
    /// records the genesis once, expires stale holds.
    pub async fn embedded(path: impl AsRef<Path>, tokenomics: Tokenomics) -> Result<AnyLedger> {
        Ok(AnyLedger::Embedded(
            EmbeddedLedger::open(path, tokenomics).await?,
        ))
    }

    /// Connects to PostgreSQL at `url` (`postgresql://…` or `host=… dbname=…`): applies the
    /// migrations, records the genesis once, expires stale holds.
    pub async fn postgres(url: &str, tokenomics: Tokenomics) -> Result<AnyLedger> {
        Ok(AnyLedger::Pg(PgLedger::connect(url, tokenomics).await?))
    }

    /// [`AnyLedger::embedded`] with a clock of the caller's choosing.
    pub async fn embedded_with(
        path: impl AsRef<Path>,
        tokenomics: Tokenomics,
        options: LedgerOptions,
    ) -> Result<AnyLedger> {
        Ok(AnyLedger::Embedded(
            EmbeddedLedger::open_with(path, tokenomics, options).await?,
        ))
    }

    /// [`AnyLedger::postgres`] with a clock and pool size of the caller's choosing.
    pub async fn postgres_with(
        url: &str,
        tokenomics: Tokenomics,
        options: LedgerOptions,
    ) -> Result<AnyLedger> {
        Ok(AnyLedger::Pg(
            PgLedger::connect_with(url, tokenomics, options).await?,
        ))
    }
}

macro_rules! any_ledger {
    ($self:ident, $ledger:ident => $call:expr) => {
        match $self {
            AnyLedger::Pg($ledger) => $call.await,
            AnyLedger::Embedded($ledger) => $call.await,
        }
    };
}

impl Ledger for AnyLedger {
    async fn transfer(&self, request: TransferRequest) -> Result<Transaction> {
        any_ledger!(self, l => l.transfer(request))
    }
    async fn transfer_batch(&self, requests: Vec<TransferRequest>) -> Result<Vec<Transaction>> {
        any_ledger!(self, l => l.transfer_batch(requests))
    }
    async fn grant(&self, request: GrantRequest) -> Result<Grant> {
        any_ledger!(self, l => l.grant(request))
    }
    async fn claim_faucet(&self, request: FaucetClaimRequest) -> Result<Grant> {
        any_ledger!(self, l => l.claim_faucet(request))
    }
    async fn burn(&self, request: BurnRequest) -> Result<Transaction> {
        any_ledger!(self, l => l.burn(request))
    }
    async fn mint(&self, request: MintRequest) -> Result<Transaction> {
        any_ledger!(self, l => l.mint(request))
    }
    async fn reward_validation(&self, request: ValidationRewardRequest) -> Result<Transaction> {
        any_ledger!(self, l => l.reward_validation(request))
    }
    async fn reward_learning(&self, request: LearningRewardRequest) -> Result<Transaction> {
        any_ledger!(self, l => l.reward_learning(request))
    }
    async fn reward_data(&self, request: DataRewardRequest) -> Result<Transaction> {
        any_ledger!(self, l => l.reward_data(request))
    }
    async fn lock_bond(&self, request: BondLockRequest) -> Result<Bond> {
        any_ledger!(self, l => l.lock_bond(request))
    }
    async fn settle_bond(&self, request: BondSettleRequest) -> Result<Bond> {
        any_ledger!(self, l => l.settle_bond(request))
    }
    async fn bond(&self, key: IdempotencyKey) -> Result<Option<Bond>> {
        any_ledger!(self, l => l.bond(key))
    }
    async fn quote(&self, request: QuoteRequest) -> Result<Quote> {
        any_ledger!(self, l => l.quote(request))
    }
    async fn authorize(&self, request: AuthorizeRequest) -> Result<Hold> {
        any_ledger!(self, l => l.authorize(request))
    }
    async fn capture(&self, request: CaptureRequest) -> Result<Capture> {
        any_ledger!(self, l => l.capture(request))
    }
    async fn release(&self, request: ReleaseRequest) -> Result<Hold> {
        any_ledger!(self, l => l.release(request))
    }
    async fn expire_holds(&self) -> Result<Vec<HoldId>> {
        any_ledger!(self, l => l.expire_holds())
    }
    async fn prune(&self, idempotency_retention: Duration) -> Result<Pruned> {
        any_ledger!(self, l => l.prune(idempotency_retention))
    }
    async fn balance(&self, account: AccountId) -> Result<Balance> {
        any_ledger!(self, l => l.balance(account))
    }
    async fn history(&self, account: AccountId, query: HistoryQuery) -> Result<HistoryPage> {
        any_ledger!(self, l => l.history(account, query))
    }
    async fn transaction(&self, id: TxId) -> Result<Option<Transaction>> {
        any_ledger!(self, l => l.transaction(id))
    }
    async fn hold(&self, id: HoldId) -> Result<Option<Hold>> {
        any_ledger!(self, l => l.hold(id))
    }
    async fn supply(&self) -> Result<Supply> {
        any_ledger!(self, l => l.supply())
    }
    async fn verify_integrity(&self) -> Result<IntegrityReport> {
        any_ledger!(self, l => l.verify_integrity())
    }
    fn tokenomics(&self) -> &Tokenomics {
        match self {
            AnyLedger::Pg(l) => l.tokenomics(),
            AnyLedger::Embedded(l) => l.tokenomics(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler_state<T: Clone + Send + Sync + 'static>() {}
    fn send<F: Future + Send>(future: F) -> F {
        future
    }

    // What the node's axum handlers need: a cheaply cloned, shareable state whose calls
    // return `Send` futures. Compiling is the test.
    #[test]
    fn any_ledger_fits_an_async_handler() {
        handler_state::<AnyLedger>();
        handler_state::<PgLedger>();
        handler_state::<EmbeddedLedger>();
        #[allow(dead_code)]
        async fn calls(ledger: AnyLedger) {
            let _ = send(ledger.supply()).await;
            let _ =
                send(ledger.balance(AccountId::System(crate::account::SystemAccount::Treasury)))
                    .await;
            let _ = send(AnyLedger::embedded("x", Tokenomics::shipped().unwrap())).await;
        }
    }
}
