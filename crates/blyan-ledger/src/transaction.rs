//! What the ledger records: transactions of entries that sum to zero, and the views over them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::account::AccountId;
use crate::amount::Amount;
use crate::clock::UnixMillis;
use crate::error::{LedgerError, Result};

/// Id of a recorded transaction (assigned by the store, increasing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TxId(pub u64);

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tx#{}", self.0)
    }
}

/// Id of one entry (assigned by the store, increasing): the cursor of history pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntryId(pub u64);

/// Why a transaction was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TxKind {
    /// The genesis supply, minted once.
    Genesis,
    /// Account to account.
    Transfer,
    /// New issuance within the caps.
    Mint,
    /// Tokens destroyed.
    Burn,
    /// Validation, learning or data-contribution reward.
    Reward,
    /// An inference payment's hold moved into escrow.
    Authorize,
    /// An inference payment charged: fee burned and paid out, remainder released.
    Capture,
    /// A hold voided before capture.
    Release,
    /// A hold past its time to live returned to the payer.
    Expiry,
    /// A Proof-of-Learning candidate's bond moved from its author into the bond escrow.
    BondLock,
    /// A bond returned to its author (the candidate was accepted).
    BondRefund,
    /// A bond burned (the candidate was rejected or expired).
    BondBurn,
    /// BLY granted from the treasury to a wallet: by the operator, or by a test network's
    /// faucet.
    Grant,
}

impl TxKind {
    const ALL: [TxKind; 13] = [
        TxKind::Genesis,
        TxKind::Transfer,
        TxKind::Mint,
        TxKind::Burn,
        TxKind::Reward,
        TxKind::Authorize,
        TxKind::Capture,
        TxKind::Release,
        TxKind::Expiry,
        TxKind::BondLock,
        TxKind::BondRefund,
        TxKind::BondBurn,
        TxKind::Grant,
    ];

    /// The stored name (`transfer`).
    pub fn as_str(self) -> &'static str {
        match self {
            TxKind::Genesis => "genesis",
            TxKind::Transfer => "transfer",
            TxKind::Mint => "mint",
            TxKind::Burn => "burn",
            TxKind::Reward => "reward",
            TxKind::Authorize => "authorize",
            TxKind::Capture => "capture",
            TxKind::Release => "release",
            TxKind::Expiry => "expiry",
            TxKind::BondLock => "bond_lock",
            TxKind::BondRefund => "bond_refund",
            TxKind::BondBurn => "bond_burn",
            TxKind::Grant => "grant",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<TxKind> {
        TxKind::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| LedgerError::Integrity {
                what: format!("unknown kind {text:?}"),
            })
    }
}

/// Which side of the ledger an entry is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Money leaves the account.
    Debit,
    /// Money enters the account.
    Credit,
}

/// One line of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// Whose balance moves.
    pub account: AccountId,
    /// Debit or credit.
    pub direction: Direction,
    /// How much (never zero).
    pub amount: Amount,
}

impl Entry {
    pub(crate) fn debit(account: AccountId, amount: Amount) -> Entry {
        Entry {
            account,
            direction: Direction::Debit,
            amount,
        }
    }

    pub(crate) fn credit(account: AccountId, amount: Amount) -> Entry {
        Entry {
            account,
            direction: Direction::Credit,
            amount,
        }
    }

    /// The signed change to the account's balance in units (debits negative), as stored.
    pub fn delta(&self) -> i64 {
        match self.direction {
            Direction::Debit => -self.amount.as_i64(),
            Direction::Credit => self.amount.as_i64(),
        }
    }

    pub(crate) fn from_delta(account: AccountId, delta: i64) -> Result<Entry> {
        let amount = Amount::from_units(delta.unsigned_abs())?;
        match delta.signum() {
            -1 => Ok(Entry::debit(account, amount)),
            1 => Ok(Entry::credit(account, amount)),
            _ => Err(LedgerError::Integrity {
                what: format!("zero entry for {account}"),
            }),
        }
    }
}

/// A recorded transaction. Invariant: its entries' deltas sum to zero.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Transaction {
    /// Store-assigned id.
    pub id: TxId,
    /// Why it was recorded.
    pub kind: TxKind,
    /// The idempotency key of the request that made it (none for expiry sweeps).
    pub idempotency_key: Option<String>,
    /// Free text (at most `MEMO_BYTES_MAX` bytes).
    pub memo: String,
    /// When it was recorded.
    pub created_at_ms: UnixMillis,
    /// At least two entries summing to zero.
    pub entries: Vec<Entry>,
}

/// One row of an account's history: an entry with its transaction's context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryItem {
    /// The entry's id (the page cursor).
    pub entry_id: EntryId,
    /// Its transaction.
    pub tx_id: TxId,
    /// The transaction's kind.
    pub kind: TxKind,
    /// Debit or credit of this account.
    pub direction: Direction,
    /// How much.
    pub amount: Amount,
    /// The transaction's memo.
    pub memo: String,
    /// When.
    pub created_at_ms: UnixMillis,
}

/// A page of history, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// At most the requested number of items.
    pub items: Vec<HistoryItem>,
    /// Pass as `before` to get the next (older) page; `None` on the last page.
    pub next: Option<EntryId>,
}

/// An account's balance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// Spendable now.
    pub available: Amount,
    /// In escrow, not part of `available`: authorized inference payments and locked
    /// Proof-of-Learning candidate bonds.
    pub held: Amount,
}

/// Supply figures, all derived from the mint and burn accounts' balances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supply {
    /// The supply cap from tokenomics.
    pub cap: Amount,
    /// Minted at genesis.
    pub genesis: Amount,
    /// Ever minted, genesis included.
    pub minted: Amount,
    /// Ever burned.
    pub burned: Amount,
    /// `minted - burned`: the sum of every other account's balance.
    pub circulating: Amount,
}

/// What `verify_integrity` checked, when all checks passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrityReport {
    /// Accounts checked.
    pub accounts: u64,
    /// Transactions checked.
    pub transactions: u64,
    /// Entries checked.
    pub entries: u64,
    /// Supply figures at the time of the check.
    pub supply: Supply,
}
