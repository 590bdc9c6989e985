//! Proof-of-Learning candidate bonds: BLY an author locks when submitting a candidate, held in
//! `system:bond_escrow` until the candidate is decided: refunded on acceptance, burned on
//! rejection or expiry. Spam then costs money.

use blyan_primitives::Address;
use serde::{Deserialize, Serialize};

use crate::amount::Amount;
use crate::clock::UnixMillis;
use crate::error::{LedgerError, Result};
use crate::request::IdempotencyKey;
use crate::transaction::TxId;

/// Where a bond stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BondState {
    /// In the bond escrow, awaiting the candidate's outcome.
    Locked,
    /// Returned to its owner.
    Refunded,
    /// Burned (counted in the burned supply).
    Burned,
}

impl BondState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            BondState::Locked => "locked",
            BondState::Refunded => "refunded",
            BondState::Burned => "burned",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<BondState> {
        [BondState::Locked, BondState::Refunded, BondState::Burned]
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| LedgerError::Integrity {
                what: format!("unknown bond state {text:?}"),
            })
    }
}

/// How a locked bond is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BondOutcome {
    /// Back to the owner: the candidate was accepted.
    Refund,
    /// Destroyed: the candidate was rejected or expired.
    Burn,
}

impl BondOutcome {
    /// The state a bond settled this way ends in.
    pub fn state(self) -> BondState {
        match self {
            BondOutcome::Refund => BondState::Refunded,
            BondOutcome::Burn => BondState::Burned,
        }
    }
}

/// A candidate bond, named by the idempotency key of the request that locked it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bond {
    /// The lock request's idempotency key: the bond's name.
    pub key: IdempotencyKey,
    /// Whose BLY it is.
    pub owner: Address,
    /// How much is (or was) locked.
    pub amount: Amount,
    /// Where it stands (at the time this value was read or first returned).
    pub state: BondState,
    /// When it was locked.
    pub locked_at_ms: UnixMillis,
    /// The transaction that moved it into the bond escrow.
    pub lock_tx: TxId,
    /// When it was refunded or burned, once settled.
    pub settled_at_ms: Option<UnixMillis>,
    /// The transaction that refunded or burned it, once settled.
    pub settle_tx: Option<TxId>,
}
