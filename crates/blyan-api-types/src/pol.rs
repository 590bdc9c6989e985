//! `GET /pol/status` and `GET /pol/claims/{hash}`: Proof-of-Learning's rules, its validators and
//! every claim with its beacon, votes, certificate and payments.

use std::collections::BTreeMap;

use blyan_primitives::BlockHash;
use serde::{Deserialize, Serialize};

/// Body of `GET /pol/status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolStatus {
    /// `pol`, `hybrid` or `pow` (`pol.mode`).
    pub mode: String,
    /// Least improvement a certificate accepts, basis points of the base loss.
    pub threshold_bps: i64,
    /// Largest difference between accepting votes' losses, micro-nats.
    pub loss_tolerance_micros: u64,
    /// Chain-D blocks after which an undecided claim may be expired.
    pub expiry_blocks: u64,
    /// The evaluation every vote runs (absent in `pow` mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<PolEvalInfo>,
    /// This node's address (its key signs beacons, votes and certificates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_address: Option<String>,
    /// Whether this node runs the validator.
    pub node_validates: bool,
    /// The bond a claim locks, BLY.
    pub candidate_bond: String,
    /// The validator set.
    pub validators: Vec<PolValidatorInfo>,
    /// The model served now, as blocks (what a new claim's candidate improves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served: Option<PolModelBlocks>,
    /// Every claim on the chain, newest first.
    pub claims: Vec<PolClaimInfo>,
    /// Length of a hidden-QA epoch, milliseconds of block time.
    #[serde(default)]
    pub qa_epoch_ms: u64,
    /// Every hidden-QA commitment, newest epoch first.
    #[serde(default)]
    pub qa: Vec<PolQaInfo>,
}

/// The evaluation validators run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolEvalInfo {
    /// blake3 of the evaluation pool's texts.
    pub pool: String,
    /// Windows per evaluation.
    pub windows: u32,
    /// Tokens per window.
    pub positions: u32,
}

/// One validator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolValidatorInfo {
    /// Its address.
    pub address: String,
    /// Its configured stake.
    pub stake: u64,
    /// Whether slashing evidence took its stake.
    pub slashed: bool,
}

/// Losses and the improvement they show.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolLosses {
    /// Base model's loss, micro-nats.
    pub base: u64,
    /// Candidate's loss, micro-nats.
    pub candidate: u64,
    /// Improvement, basis points of the base loss (negative: worse).
    pub delta_bps: i64,
}

/// One candidate block of a claim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolCandidate {
    /// The block.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub block: BlockHash,
    /// `expert` or `meta`.
    pub kind: String,
    /// The expert, for an expert block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert: Option<String>,
    /// The expert version it would become.
    pub version: u32,
    /// Whether the chain still holds it as a candidate (false once promoted).
    pub candidate: bool,
}

/// One vote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolVoteInfo {
    /// The vote's block.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub block: BlockHash,
    /// The validator.
    pub validator: String,
    /// `accept`, `below_threshold`, `not_reproduced` or `unloadable`.
    pub verdict: String,
    /// Losses measured on the drawn batch.
    pub losses: PolLosses,
    /// The validator's words on the verdict.
    pub detail: String,
    /// The same measurement on the validator's hidden QA set, when it keeps one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<PolHiddenInfo>,
}

/// A vote's measurement on its validator's hidden QA set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolHiddenInfo {
    /// The validator's `qa_commit` block for the epoch.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub commit: BlockHash,
    /// Losses on the batch drawn from the hidden set.
    pub losses: PolLosses,
    /// The commit's state: `open`, `revealed`, `mismatch`, `reused` or `overdue` (the last
    /// three void the vote).
    pub status: String,
}

/// A validator's hidden-QA commitment for one epoch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolQaInfo {
    /// The commit's block.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub commit: BlockHash,
    /// The validator.
    pub validator: String,
    /// The epoch (block time / `qa_epoch_ms`).
    pub epoch: u64,
    /// blake3 of the set.
    pub commitment: String,
    /// `open`, `revealed`, `mismatch`, `reused` or `overdue`.
    pub status: String,
    /// The reveal's block, once revealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub reveal: Option<BlockHash>,
    /// Documents and bytes of text revealed.
    pub documents: usize,
    /// Bytes of text revealed.
    pub bytes: u64,
}

/// One payment of a certificate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolPaymentInfo {
    /// `learning`, `validation` or `data`.
    pub kind: String,
    /// The account paid.
    pub to: String,
    /// BLY paid.
    pub amount: String,
    /// The ledger's idempotency key (starts with the certificate's hash).
    pub key: String,
}

/// How a claim ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolCertificateInfo {
    /// The certificate's block.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub block: BlockHash,
    /// `accepted`, `rejected` or `expired`.
    pub outcome: String,
    /// The votes it counts.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub votes: Vec<BlockHash>,
    /// The certified improvement, basis points (accepted only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub improvement_bps: Option<i64>,
    /// `refund` or `burn`.
    pub bond: String,
    /// What it pays.
    pub payments: Vec<PolPaymentInfo>,
}

/// One claim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolClaimInfo {
    /// The claim's block.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub claim: BlockHash,
    /// Its author.
    pub author: String,
    /// Its height on chain D.
    pub height: u64,
    /// `awaiting_beacon`, `voting`, `accepted`, `rejected` or `expired`.
    pub status: String,
    /// The candidate blocks.
    pub candidates: Vec<PolCandidate>,
    /// The model served when it was claimed.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub base_model: BlockHash,
    /// What the author measured on the public draw.
    pub claimed: PolLosses,
    /// blake3 of the training data.
    pub data_commitment: String,
    /// Dataset entries credited.
    pub data_blocks: usize,
    /// The beacon that seeded its evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub beacon: Option<BlockHash>,
    /// The evaluation seed (hex), once seeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
    /// Votes so far.
    pub votes: Vec<PolVoteInfo>,
    /// The certificate, once decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<PolCertificateInfo>,
}

/// A model as blocks: its meta block and each expert's block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolModelBlocks {
    /// The meta block.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub meta: BlockHash,
    /// Each expert's block, by expert name.
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub experts: BTreeMap<String, BlockHash>,
}

/// Body of `GET /pol/claims/{hash}`: one claim, and what a validator needs to re-run it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolClaimDetail {
    /// The claim.
    pub claim: PolClaimInfo,
    /// The model served now (the base a vote evaluates against).
    pub served: PolModelBlocks,
    /// The evaluation votes must run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<PolEvalInfo>,
}
