//! The rules every node and validator of one network must share: mode, validator set and
//! stakes, threshold, loss tolerance, expiry, the evaluation and the hidden-QA epoch.

use blyan_primitives::Address;
use serde::{Deserialize, Serialize};

use crate::record::EvalSpec;

/// How new versions become what is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolMode {
    /// A certificate of the validators (this crate) decides.
    Pol,
    /// Both the chain's proof of work on every block and a certificate.
    Hybrid,
    /// Proof of work only: every valid block is served as it lands.
    Pow,
}

impl PolMode {
    /// Whether certificates decide what is served.
    pub fn certifies(self) -> bool {
        self != PolMode::Pow
    }
}

/// One validator and its stake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorStake {
    /// The validator's address (the key that signs its votes).
    pub address: Address,
    /// Its voting weight, > 0.
    pub stake: u64,
}

/// The shared rules of Proof-of-Learning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolParams {
    /// How new versions become served.
    pub mode: PolMode,
    /// The validator set with stakes.
    pub validators: Vec<ValidatorStake>,
    /// Least improvement accepted, in basis points of the base loss (100 = 1 %).
    pub threshold_bps: i64,
    /// Largest difference, in micro-nats, between two accepting votes' losses (base and
    /// candidate each) for a certificate to count them together.
    pub tolerance_micros: u64,
    /// A claim without a certificate this many chain-D blocks after it may be expired.
    pub expiry_blocks: u64,
    /// The evaluation every vote must have run.
    pub eval: EvalSpec,
    /// Length of a hidden-QA epoch in milliseconds of block time (`qa.rs`).
    pub qa_epoch_ms: u64,
}

impl PolParams {
    /// The stake of `address` in the configured set (0 when not a validator).
    pub fn stake_of(&self, address: Address) -> u64 {
        self.validators
            .iter()
            .filter(|validator| validator.address == address)
            .map(|validator| validator.stake)
            .sum()
    }

    /// The set's total stake.
    pub fn total_stake(&self) -> u64 {
        self.validators
            .iter()
            .map(|validator| validator.stake)
            .sum()
    }

    /// Whether `stake` is more than 2/3 of `total`.
    pub fn is_supermajority(stake: u64, total: u64) -> bool {
        u128::from(stake) * 3 > u128::from(total) * 2
    }

    /// Whether `stake` is more than 1/3 of `total`.
    pub fn is_blocking(stake: u64, total: u64) -> bool {
        u128::from(stake) * 3 > u128::from(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_thresholds_are_strict() {
        assert!(!PolParams::is_supermajority(2, 3));
        assert!(PolParams::is_supermajority(3, 3));
        assert!(PolParams::is_supermajority(67, 100));
        assert!(!PolParams::is_supermajority(66, 99));
        assert!(!PolParams::is_blocking(1, 3));
        assert!(PolParams::is_blocking(2, 3));
        assert!(PolParams::is_blocking(34, 100));
    }
}
