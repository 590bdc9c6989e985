//! Proof-of-Learning: how a new expert version earns its place on the chain.
//!
//! A node fine-tunes selected experts on accepted data and publishes a candidate expert block
//! with a proof: the base block it started from, a commitment to the training data, the
//! hyper-parameters and seed, and the loss before and after on a held-out set whose answers were
//! committed on chain before they were revealed. Validators re-run the evaluation
//! deterministically and accept only a real improvement above the threshold; a spoofed claim is
//! rejected and its author can be penalised. The chain store asks for this acceptance through
//! `blyan_chain::PolAcceptance` when the node's `pol.enabled` is set.
//!
//! Status: this crate holds the shape of a claim ([`PolClaim`]) and of a validator's answer
//! ([`PolVerdict`]). Training, proof building and re-evaluation are not built yet, so the node
//! runs with Proof-of-Learning off and says so.
//!
//! Must not depend on: HTTP, the ledger (rewards are paid by the node from a verdict).
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![forbid(unsafe_code)]

use blyan_chain::{BlockHash, ExpertName};

/// Losses are fixed-point (millionths of a nat) so a claim encodes and compares exactly and a
/// validator's re-run reproduces it bit for bit.
pub type LossMicros = u64;

/// What a learner claims about a candidate expert version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolClaim {
    /// The expert that was trained.
    pub expert: ExpertName,
    /// The version training started from.
    pub base_block: BlockHash,
    /// The candidate version.
    pub candidate_block: BlockHash,
    /// blake3 commitment to the training data (the dataset entries' block hashes, in order).
    pub data_commitment: [u8; 32],
    /// The held-out evaluation set, committed on chain before its answers were revealed.
    pub held_out_block: BlockHash,
    /// Seed of every random choice in training and evaluation.
    pub seed: u64,
    /// Held-out loss of the base version.
    pub loss_before: LossMicros,
    /// Held-out loss of the candidate version.
    pub loss_after: LossMicros,
}

/// A validator's answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolVerdict {
    /// The re-run reproduced the claim and the improvement clears the threshold.
    Accepted {
        /// Improvement in basis points of the base loss.
        improvement_basis_points: u32,
    },
    /// The re-run's losses differ from the claim's.
    NotReproduced {
        /// Loss before, as re-measured.
        loss_before: LossMicros,
        /// Loss after, as re-measured.
        loss_after: LossMicros,
    },
    /// Reproduced, but the improvement is below the threshold.
    BelowThreshold {
        /// Improvement in basis points of the base loss.
        improvement_basis_points: u32,
        /// The threshold in basis points.
        threshold_basis_points: u32,
    },
}
