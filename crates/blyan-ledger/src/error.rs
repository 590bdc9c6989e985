//! The crate's one error type.

use std::path::PathBuf;

use blyan_primitives::Address;

use crate::account::AccountId;
use crate::amount::Amount;
use crate::bond::BondState;
use crate::payment::{HoldId, HoldStatus, QuoteId};
use crate::request::IdempotencyKey;

/// Everything the ledger can refuse or fail at.
///
/// Input and state errors (everything above `Postgres`) are refusals: when one is returned no
/// money moved. Storage errors may leave the outcome of a write unknown to the caller (a
/// connection that dropped during `COMMIT`); retrying with the same idempotency key then
/// returns the first outcome.
// Variant fields are not documented one by one: each variant's doc says what went wrong and
// its `#[error]` message names every field in context, which is what a reader of the error sees.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// An amount was given as a negative number.
    #[error("amount {input:?} is negative")]
    AmountNegative { input: String },
    /// An amount does not fit the ledger's integer range (see `AMOUNT_UNITS_MAX`).
    #[error("amount {input:?} is too large (at most {max_units} units)")]
    AmountOverflow { input: String, max_units: u64 },
    /// A decimal amount has more fractional digits than the token has decimals.
    #[error("amount {input:?} has more than {decimals} decimals")]
    AmountPrecision { input: String, decimals: u32 },
    /// An amount is not a decimal number.
    #[error("amount {input:?} is not a decimal number")]
    AmountSyntax { input: String },
    /// An amount or count that must be positive was zero.
    #[error("{field} must be greater than zero")]
    Zero { field: &'static str },
    /// A single amount is larger than the whole supply cap: it can never be valid.
    #[error("{field} {amount} exceeds the supply cap {cap}")]
    AmountAboveSupplyCap {
        field: &'static str,
        amount: Amount,
        cap: Amount,
    },
    /// A value is past its named bound.
    #[error("{what} is {value}, above the maximum {max}")]
    LimitExceeded {
        what: &'static str,
        value: u64,
        max: u64,
    },
    /// An Ethereum address (or another value `blyan-primitives` defines) does not parse:
    /// not `0x` + 40 hex digits, or mixed case with a wrong EIP-55 checksum.
    #[error(transparent)]
    Primitive(#[from] blyan_primitives::Error),
    /// An account id is neither an address nor a known system account.
    #[error("account id {input:?} is not an address (0x + 40 hex) nor a system account")]
    AccountIdFormat { input: String },
    /// An idempotency key is empty, too long or uses characters outside `[A-Za-z0-9._:-]`.
    #[error("idempotency key is invalid: {reason}")]
    IdempotencyKeyFormat { reason: String },
    /// A transfer whose source and destination are the same account.
    #[error("transfer from {account} to itself")]
    SelfTransfer { account: AccountId },
    /// A system account that only the ledger itself moves (mint, burn, fee escrow).
    #[error("account {account} cannot be used in {operation}")]
    ReservedAccount {
        account: AccountId,
        operation: &'static str,
    },

    /// An account that has never held funds was asked to pay.
    #[error("account {account} is unknown")]
    UnknownAccount { account: AccountId },
    /// The payer's balance does not cover the amount.
    #[error("account {account} holds {available}, needs {required}")]
    InsufficientFunds {
        account: AccountId,
        available: Amount,
        required: Amount,
    },
    /// No quote with this id.
    #[error("quote {quote} is unknown")]
    UnknownQuote { quote: QuoteId },
    /// The quote's time to live has passed.
    #[error("quote {quote} expired at {expired_at_ms} ms")]
    QuoteExpired { quote: QuoteId, expired_at_ms: u64 },
    /// A quote can be authorized once.
    #[error("quote {quote} is already authorized (hold {hold})")]
    QuoteAlreadyAuthorized { quote: QuoteId, hold: HoldId },
    /// No hold with this id.
    #[error("hold {hold} is unknown")]
    UnknownHold { hold: HoldId },
    /// The hold's time to live has passed; its funds are (or will be) released to the payer.
    #[error("hold {hold} expired at {expired_at_ms} ms")]
    HoldExpired { hold: HoldId, expired_at_ms: u64 },
    /// The hold was already captured, released or expired.
    #[error("hold {hold} is {status:?}, not authorized")]
    HoldNotAuthorized { hold: HoldId, status: HoldStatus },
    /// The actual cost exceeds the quote by more than the capture tolerance.
    #[error("hold {hold}: charge {charge} exceeds the maximum {max} (quote plus tolerance)")]
    CaptureAboveTolerance {
        hold: HoldId,
        charge: Amount,
        max: Amount,
    },
    /// No bond was locked under this key.
    #[error("bond {bond} is unknown")]
    UnknownBond { bond: IdempotencyKey },
    /// The bond was already refunded or burned (by another settlement).
    #[error("bond {bond} is already settled ({state:?})")]
    BondSettled {
        bond: IdempotencyKey,
        state: BondState,
    },
    /// The idempotency key was first used for a different request.
    /// A grant larger than what the treasury's genesis allocation has left after every earlier
    /// grant.
    #[error(
        "grant of {requested} exceeds what the treasury allocation has left: {left} of {allocation}"
    )]
    GrantAboveAllocation {
        requested: Amount,
        left: Amount,
        allocation: Amount,
    },
    /// A wallet already made its faucet claims for the day.
    #[error("wallet {wallet} made {claims} faucet claims today, at most {max} per day")]
    FaucetWalletLimit {
        wallet: Address,
        claims: u32,
        max: u32,
    },
    /// A faucet claim that would pass the faucet's daily total.
    #[error(
        "the faucet handed out {granted_today} today; {requested} more would pass its daily cap {cap}"
    )]
    FaucetDailyCap {
        requested: Amount,
        granted_today: Amount,
        cap: Amount,
    },
    #[error("idempotency key {key:?} was first used for a different request: {first_request}")]
    IdempotencyConflict { key: String, first_request: String },
    /// Minting would pass this inflation year's allowance.
    #[error(
        "inflation year {year}: minted {minted} + {requested} would exceed the allowance {allowance}"
    )]
    InflationCapExceeded {
        year: u64,
        minted: Amount,
        requested: Amount,
        allowance: Amount,
    },
    /// Minting would pass the total supply cap.
    #[error("total minted {minted} + {requested} would exceed the supply cap {cap}")]
    SupplyCapExceeded {
        minted: Amount,
        requested: Amount,
        cap: Amount,
    },
    /// The store holds a genesis different from the one in the tokenomics.
    #[error(
        "the ledger's genesis differs from tokenomics: stored {stored}, configured {configured}"
    )]
    GenesisMismatch { stored: String, configured: String },
    /// An idempotency retention shorter than the ledger accepts
    /// (`IDEMPOTENCY_RETENTION_MIN`).
    #[error("idempotency retention of {retention_ms} ms is below the minimum {min_ms} ms")]
    RetentionTooShort { retention_ms: u64, min_ms: u64 },
    /// One transfer of a batch failed; the whole batch was rolled back.
    #[error("batch item {index}: {source}")]
    BatchItem {
        index: u32,
        source: Box<LedgerError>,
    },

    /// PostgreSQL refused or failed a statement.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be had from the pool.
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The PostgreSQL connection string or pool settings are invalid.
    #[error("postgres configuration: {reason}")]
    PgConfig { reason: String },
    /// SQLite refused or failed a statement.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A previous write failed in a way that may have left the embedded store's connection in an
    /// unknown state; it refuses writes until reopened.
    #[error("the embedded store failed a write earlier and must be reopened")]
    StoreFailed,
    /// A blocking task running the embedded store panicked or was cancelled.
    #[error("embedded store task failed: {reason}")]
    Task { reason: String },
    /// SQLite would not put the embedded store in write-ahead-log mode, on which its
    /// durability rests.
    #[error("SQLite refused WAL mode (journal_mode is {journal_mode:?})")]
    WalRefused { journal_mode: String },
    /// A schema migration could not be applied, or the database's migration history differs
    /// from this build's migrations (edited after it was applied, or newer than this build).
    #[error("schema migration: {0}")]
    Migration(#[from] refinery::Error),
    /// The database records a migration under the ledger's pre-refinery history table
    /// (`ledger_migrations`) that this build cannot take over: unknown to it, or its SQL
    /// changed after it was applied.
    #[error("pre-refinery migration {version}: {reason}")]
    LegacyMigration { version: i64, reason: &'static str },
    /// Stored data breaks an invariant (found by `verify_integrity` or while reading a row).
    #[error("ledger integrity violated: {what}")]
    Integrity { what: String },

    /// The tokenomics file could not be read.
    #[error("cannot read {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The tokenomics file is not valid YAML for the expected shape; `field` is the path to the
    /// offending field (`rewards.validation_per_sample`).
    #[error("tokenomics field `{field}`: {message}")]
    ConfigParse { field: String, message: String },
    /// A tokenomics value is well-formed but not acceptable.
    #[error("tokenomics field `{field}`: {reason}")]
    ConfigInvalid { field: String, reason: String },
}

/// The crate's result type.
pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

impl LedgerError {
    /// Whether this error is a refusal of the request (bad input or a state that does not
    /// allow it) rather than a storage failure. Refusals moved no money.
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::BatchItem { source, .. } => source.is_refusal(),
            Self::Postgres(_)
            | Self::Pool(_)
            | Self::PgConfig { .. }
            | Self::Sqlite(_)
            | Self::StoreFailed
            | Self::Task { .. }
            | Self::WalRefused { .. }
            | Self::Migration(_)
            | Self::LegacyMigration { .. }
            | Self::Integrity { .. }
            | Self::ConfigRead { .. }
            | Self::ConfigParse { .. }
            | Self::ConfigInvalid { .. } => false,
            _ => true,
        }
    }
}
