//! Inference payments: quote → authorize (hold in escrow) → capture, release or expiry.

use std::fmt;

use blyan_primitives::Address;
use serde::{Deserialize, Serialize};

use crate::account::AccountId;
use crate::amount::Amount;
use crate::clock::UnixMillis;
use crate::error::{LedgerError, Result};
use crate::transaction::TxId;

/// Id of a quote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QuoteId(pub u64);

impl fmt::Display for QuoteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "quote#{}", self.0)
    }
}

/// Id of a hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HoldId(pub u64);

impl fmt::Display for HoldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hold#{}", self.0)
    }
}

/// A price for an estimated number of inference tokens, valid until `expires_at_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// Store-assigned id.
    pub id: QuoteId,
    /// Who will pay.
    pub payer: Address,
    /// Tokens the price is for.
    pub estimated_tokens: u64,
    /// The price of `estimated_tokens`.
    pub amount: Amount,
    /// What an authorization will hold: `amount` plus the capture tolerance.
    pub hold_amount: Amount,
    /// When it was made.
    pub created_at_ms: UnixMillis,
    /// Authorizations at or after this instant are refused.
    pub expires_at_ms: UnixMillis,
}

/// Where a hold stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HoldStatus {
    /// Funds are in escrow, awaiting capture or release.
    Authorized,
    /// Charged; the remainder went back to the payer.
    Captured,
    /// Voided; everything went back to the payer.
    Released,
    /// Its time to live passed; everything went back to the payer.
    Expired,
}

impl HoldStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Authorized => "authorized",
            HoldStatus::Captured => "captured",
            HoldStatus::Released => "released",
            HoldStatus::Expired => "expired",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<HoldStatus> {
        [
            HoldStatus::Authorized,
            HoldStatus::Captured,
            HoldStatus::Released,
            HoldStatus::Expired,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| LedgerError::Integrity {
            what: format!("unknown hold status {text:?}"),
        })
    }
}

/// Funds of one authorized quote, held in escrow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Store-assigned id.
    pub id: HoldId,
    /// The quote it authorizes.
    pub quote: QuoteId,
    /// Who pays.
    pub payer: Address,
    /// The quoted price.
    pub quoted: Amount,
    /// Held in escrow: the quote plus the capture tolerance; the most a capture may charge.
    pub amount: Amount,
    /// Where it stands (at the time this value was read or first returned).
    pub status: HoldStatus,
    /// When it was authorized.
    pub created_at_ms: UnixMillis,
    /// Captures at or after this instant are refused, and the hold is released by expiry.
    pub expires_at_ms: UnixMillis,
    /// The transaction that moved the funds into escrow.
    pub authorize_tx: TxId,
    /// The transaction that settled it (capture, release or expiry), once settled.
    pub settle_tx: Option<TxId>,
}

/// The outcome of a capture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capture {
    /// The hold, now captured.
    pub hold: Hold,
    /// Charged to the payer: the price of the actual tokens.
    pub charged: Amount,
    /// Part of the charge burned.
    pub burned: Amount,
    /// Part of the charge paid to `paid_to`.
    pub served: Amount,
    /// Who received `served`: the serving node, or the reward pool.
    pub paid_to: AccountId,
    /// Returned to the payer: `hold.amount - charged`.
    pub released: Amount,
    /// The capture transaction.
    pub transaction: TxId,
}
