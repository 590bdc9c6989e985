//! Grants: BLY moved from `system:treasury` to a wallet, by the operator (`blyan-node ledger
//! grant`) or by a test network's faucet. Every grant is a transaction of kind `grant` and a
//! row of the stores' `grants` table; together they never pass the treasury's genesis
//! allocation (`Tokenomics::treasury_allocation`).

use serde::{Deserialize, Serialize};

use crate::amount::Amount;
use crate::transaction::Transaction;

/// Who granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GrantSource {
    /// The node's operator, from the command line.
    Operator,
    /// A test network's faucet, claimed by a signed-in wallet.
    Faucet,
}

impl GrantSource {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantSource::Operator => "operator",
            GrantSource::Faucet => "faucet",
        }
    }
}

/// A recorded grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Who granted.
    pub source: GrantSource,
    /// The `grant` transaction: the treasury debited, the wallet credited.
    pub transaction: Transaction,
    /// What the treasury allocation had left for grants once this one was recorded.
    pub allocation_left: Amount,
}
