//! blyan-ledger: the double-entry BLY ledger that pays Blyan's contributors and charges its
//! users.
//!
//! # What it owns
//! Accounts (user wallets by Ethereum address, and the system accounts: mint, burn, fee escrow,
//! bond escrow, treasury, reward pool, team, foundation), transactions made of entries, grants
//! from the treasury to wallets (by the operator, or a test network's faucet),
//! inference payments (quote → authorize → capture / release / expiry), Proof-of-Learning
//! candidate bonds (lock → refund on acceptance / burn on rejection or expiry), rewards
//! (validation per sample, learning per basis point of improvement, data contribution per
//! sample) and burns as set by `config/tokenomics.yaml`, issuance within the yearly inflation
//! allowance and the supply cap, and the schema migrations of its two stores: PostgreSQL for
//! production (over TLS when the URL's `sslmode` asks for it: `require`, `verify-ca`,
//! `verify-full`; a server without TLS is then refused, never used in plaintext) and an
//! embedded SQLite file for a node run with no database server.
//!
//! # Invariants
//! - The entries of every transaction sum to zero; balances are changed only by entries, in
//!   the same database transaction, and always equal the sum of their entries.
//! - No balance goes below zero except the mint's, which is minus everything ever minted; so
//!   the sum of all other balances is `minted − burned`.
//! - Amounts are integers of 10^-6 BLY ([`Amount`]); there are no floats anywhere.
//! - A request retried with the same idempotency key returns its first outcome and moves money
//!   once; the same key with a different request is `LedgerError::IdempotencyConflict`. This
//!   holds for as long as the key is kept: [`Ledger::prune`] deletes keys older than the
//!   retention it is given (the node's `ledger.idempotency_retention_hours`), after which a
//!   replay is a new request; the ledger's own genesis key and a bond's key are never pruned.
//! - A batch of transfers is all or none, checked in the order given; on PostgreSQL it costs
//!   the same few statements whatever its length.
//! - The fee escrow holds exactly the authorized holds, the bond escrow exactly the locked
//!   bonds; a bond (named by its lock request's key) settles once, refunded or burned.
//! - Grants from the treasury (operator's and faucet's together) never pass the treasury's
//!   genesis allocation; a faucet claim also stays within its per-wallet and daily limits,
//!   counted in the ledger under the treasury's lock.
//! - Issuance never passes the supply cap nor the year's inflation allowance; the genesis
//!   supply is minted once.
//! - Wallet accounts are stored under their lower-case address (`AccountId::key`) and requests
//!   are fingerprinted with it, so a database and its idempotency keys read the same whatever
//!   the display spelling; `Display` and JSON show the EIP-55 form, as everywhere in Blyan.
//!
//! The rules are written once (`ops/`, a module per operation family: transfers, payments,
//! grants, bonds, issuance, queries, pruning) against a small store interface (`store.rs`); each store's schema
//! enforces the invariants again with `CHECK`s, triggers and foreign keys (on PostgreSQL, the
//! references and balance of entries are checked by one statement trigger per insert rather
//! than per row), and one conformance
//! suite runs against both. Every operation runs in a `tracing` span named `ledger.<operation>`
//! carrying its idempotency key and the quote, hold or accounts it concerns.
//!
//! # Schema migrations
//! This crate's `migrations/postgres/` and `migrations/sqlite/` hold `V{n}__{name}.sql`, the
//! same versions in both dialects, embedded at build time and applied through refinery when a
//! store opens: all pending ones in one transaction, each recorded in `ledger_schema_history`;
//! [`SCHEMA_VERSION`] is the newest. A migration edited after it was applied, or a database
//! migrated by newer code, is refused (`LedgerError::Migration`). A database from before
//! refinery (its history in `ledger_migrations`) is taken over on first open: the versions it
//! records, checked against the SQL they shipped with (`LedgerError::LegacyMigration`), are
//! recorded as applied without running again, and the old table is dropped.
//!
//! # What it must not depend on
//! No Blyan crate but `blyan-primitives` (the one Ethereum [`Address`]): it knows nothing of
//! tensors, RocksDB or the chain.
//!
//! # Where to start reading
//! [`Ledger`] (the operations), [`EmbeddedLedger`] and [`PgLedger`] (the stores),
//! [`AnyLedger`] (either store, chosen at run time: `AnyLedger::embedded(path, tokenomics)` or
//! `AnyLedger::postgres(url, tokenomics)`; cheap to clone, `Send + Sync`, so an HTTP handler's
//! state can hold it), [`Tokenomics`] (the numbers), [`Amount`] and [`AccountId`] (the values),
//! [`Bond`] (a Proof-of-Learning candidate's stake).
//!
//! # Example
//! ```no_run
//! use blyan_ledger::{
//!     AccountId, Amount, AuthorizeRequest, BondLockRequest, BondOutcome, BondSettleRequest,
//!     BondState, CaptureRequest, EmbeddedLedger, IdempotencyKey, Ledger, QuoteRequest,
//!     SystemAccount, Tokenomics, TransferRequest,
//! };
//!
//! # async fn run() -> blyan_ledger::Result<()> {
//! let tokenomics = Tokenomics::load("config/tokenomics.yaml")?;
//! let ledger = EmbeddedLedger::open("ledger.sqlite", tokenomics).await?;
//! let alice = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".parse()?;
//! ledger
//!     .transfer(TransferRequest {
//!         key: IdempotencyKey::new("welcome-alice")?,
//!         from: SystemAccount::Treasury.into(),
//!         to: AccountId::User(alice),
//!         amount: "100".parse::<Amount>()?,
//!         memo: "welcome".into(),
//!     })
//!     .await?;
//! let quote = ledger
//!     .quote(QuoteRequest {
//!         key: IdempotencyKey::new("q-1")?,
//!         payer: alice,
//!         estimated_tokens: 500,
//!         prompt_tokens: 0,
//!     })
//!     .await?;
//! let hold = ledger
//!     .authorize(AuthorizeRequest { key: IdempotencyKey::new("a-1")?, quote: quote.id })
//!     .await?;
//! let capture = ledger
//!     .capture(CaptureRequest {
//!         key: IdempotencyKey::new("c-1")?,
//!         hold: hold.id,
//!         actual_tokens: 420,
//!         prompt_tokens: 0,
//!         server: None,
//!     })
//!     .await?;
//! assert_eq!(capture.charged, "0.42".parse()?);
//!
//! // A Proof-of-Learning candidate's bond: locked on submission, burned on rejection.
//! let bond = ledger
//!     .lock_bond(BondLockRequest {
//!         key: IdempotencyKey::new("bond-candidate-1")?,
//!         owner: alice,
//!         amount: ledger.tokenomics().pol.candidate_bond,
//!         memo: "candidate 1".into(),
//!     })
//!     .await?;
//! let burned = ledger
//!     .settle_bond(BondSettleRequest {
//!         key: IdempotencyKey::new("bond-candidate-1-rejected")?,
//!         bond: bond.key,
//!         outcome: BondOutcome::Burn,
//!         memo: "rejected".into(),
//!     })
//!     .await?;
//! assert_eq!(burned.state, BondState::Burned);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![forbid(unsafe_code)]

mod account;
mod amount;
mod bond;
mod clock;
mod embedded;
mod error;
mod grant;
mod ledger;
mod migrate;
mod ops;
mod payment;
mod pg;
mod pg_tls;
mod request;
mod store;
mod tokenomics;
mod transaction;

pub use account::{AccountId, SystemAccount};
pub use amount::{
    AMOUNT_DECIMALS, AMOUNT_UNITS_MAX, Amount, BPS_PER_WHOLE, UNITS_PER_BLY, deserialize_bly,
    serialize_bly,
};
pub use blyan_primitives::Address;
pub use bond::{Bond, BondOutcome, BondState};
pub use clock::{Clock, ManualClock, SystemClock, UnixMillis};
pub use embedded::EmbeddedLedger;
pub use error::{LedgerError, Result};
pub use grant::{Grant, GrantSource};
pub use ledger::{AnyLedger, Ledger, LedgerOptions, PG_POOL_SIZE_DEFAULT};
pub use migrate::SCHEMA_VERSION;
pub use payment::{Capture, Hold, HoldId, HoldStatus, Quote, QuoteId};
pub use pg::{PgLedger, migrate_postgres};
pub use request::{
    AuthorizeRequest, BondLockRequest, BondSettleRequest, BurnRequest, CaptureRequest,
    DataRewardRequest, FaucetClaimRequest, GrantRequest, HISTORY_PAGE_LEN_MAX, HistoryQuery,
    IDEMPOTENCY_KEY_BYTES_MAX, IdempotencyKey, LearningRewardRequest, MEMO_BYTES_MAX, MintRequest,
    QuoteRequest, ReleaseRequest, TRANSFER_BATCH_LEN_MAX, TransferRequest, ValidationRewardRequest,
};
pub use tokenomics::{
    Allocation, DATA_SAMPLES_MAX, GENESIS_ALLOCATIONS_MAX, IMPROVEMENT_BPS_MAX,
    INFERENCE_TOKENS_MAX, InferenceConfig, PAYMENT_TTL_SECONDS_MAX, PaymentsConfig, PolConfig,
    RewardsConfig, SHIPPED_TOKENOMICS_YAML, SupplyConfig, Tokenomics, VALIDATION_SAMPLES_MAX,
};
pub use transaction::{
    Balance, Direction, Entry, EntryId, HistoryItem, HistoryPage, IntegrityReport, Supply,
    Transaction, TxId, TxKind,
};

pub use ops::{IDEMPOTENCY_RETENTION_MIN, INFLATION_YEAR_MS, Pruned};
