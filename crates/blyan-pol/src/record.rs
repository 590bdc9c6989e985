//! What Proof-of-Learning writes on the chain: one JSON document per `PolProof` block on chain D
//! (`{"format":"blyan-pol/1","record":{"type":…}}`), each block signed by the one it speaks for.
//!
//! - [`Claim`]: a candidate (expert versions and/or one meta block, already stored as chain
//!   candidates) with its base model, the author's own losses and the training data commitment.
//!   Signed by the candidate blocks' author, who locks the bond.
//! - [`Beacon`]: fresh randomness appended by a validator *after* the claims it names; each
//!   claim's evaluation seed is `blake3(claim ‖ beacon)`, unknown when the claim was committed.
//! - [`Vote`]: a validator's re-evaluation of a claim on the drawn batch, with its verdict.
//! - [`Certificate`]: the outcome of a claim (accepted, rejected, expired) with the votes that
//!   decide it; an accepted one promotes the candidate, and every payment is keyed by its hash.
//! - [`Slash`]: two conflicting votes by one validator on one claim: the evidence that takes its
//!   stake away.
//! - [`ValidatorSet`]: a new validator set, approved by signatures of validators holding more
//!   than 2/3 of the current set's stake.
//! - [`QaCommit`]: a validator's commitment (blake3) to the hidden QA set it evaluates with in
//!   one epoch; [`QaReveal`]: that set's text, published once the epoch closed (`qa.rs`).

use blyan_chain::{BlockHash, BlockHeader, BlockKind};
use blyan_primitives::Address;
use serde::{Deserialize, Serialize};

use crate::error::{PolError, Result};
use crate::params::ValidatorStake;

/// The `format` of every Proof-of-Learning document.
pub const POL_RECORD_FORMAT: &str = "blyan-pol/1";

/// Largest Proof-of-Learning document read, in bytes.
pub const POL_RECORD_BYTES_MAX: u64 = 1 << 20;

/// Most candidate blocks one claim names (a whole model of 8 × 32 experts and its meta block
/// fits).
pub const CLAIM_CANDIDATES_MAX: usize = 1024;

/// Most dataset blocks one claim credits.
pub const CLAIM_DATA_BLOCKS_MAX: usize = 4096;

/// Most claims one beacon seeds (a header's dependency limit, less one spare).
pub const BEACON_CLAIMS_MAX: usize = 63;

/// Most votes one certificate carries.
pub const CERTIFICATE_VOTES_MAX: usize = 63;

/// A loss in millionths of a nat, so it encodes, compares and agrees exactly.
pub type LossMicros = u64;

/// A loss in nats as [`LossMicros`] (rounded to the nearest millionth).
pub fn loss_micros(loss: f64) -> LossMicros {
    if loss.is_finite() && loss > 0.0 {
        (loss * 1e6).round() as u64
    } else {
        0
    }
}

/// Improvement of `candidate` over `base`, in basis points of `base`: `(base − candidate) /
/// base × 10 000`, rounded toward minus infinity; negative when the candidate is worse.
pub fn delta_bps(base: LossMicros, candidate: LossMicros) -> i64 {
    if base == 0 {
        return 0;
    }
    let difference = i128::from(base) - i128::from(candidate);
    (difference * 10_000).div_euclid(i128::from(base)) as i64
}

/// Losses of the base and of the candidate on one evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Losses {
    /// Loss of the model served when the claim was made.
    pub base: LossMicros,
    /// Loss of the model with the candidate in place.
    pub candidate: LossMicros,
}

impl Losses {
    /// The improvement these losses show, in basis points.
    pub fn delta_bps(&self) -> i64 {
        delta_bps(self.base, self.candidate)
    }
}

/// A candidate for what the network serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// The candidate blocks: new expert versions, and at most one meta block (a new model).
    pub candidates: Vec<BlockHash>,
    /// Meta block of the model served when the claim was made: what the candidate improves.
    pub base_model: BlockHash,
    /// The author's own losses, on the public evaluation pool (what it claims).
    pub claimed: Losses,
    /// blake3 (hex) of the training data: of the dataset blocks' hashes in order when
    /// `data_blocks` is not empty, of the corpus otherwise.
    pub data_commitment: String,
    /// Dataset entries (chain D) the training used, one sample each, in order.
    #[serde(default)]
    pub data_blocks: Vec<BlockHash>,
}

/// Fresh randomness after the claims it seeds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Beacon {
    /// The claims this beacon seeds (each is also in the block's `depends_on`).
    pub claims: Vec<BlockHash>,
    /// 32 random bytes (hex) drawn by the validator when it wrote the beacon.
    pub randomness: String,
}

/// What a validator concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Reproduced improvement at or above the threshold.
    Accept,
    /// The candidate does not improve by the threshold on the drawn batch.
    BelowThreshold,
    /// The author claimed an improvement at or above the threshold that the drawn batch does
    /// not reproduce (measured below half the claim).
    NotReproduced,
    /// The candidate does not load (missing or malformed blocks, wrong shapes).
    Unloadable,
    /// The drawn public batch shows the threshold, but the validator's hidden QA set (text
    /// no author could have trained on) shows less than half of it: the candidate learned the
    /// public pool rather than the language.
    Overfit,
}

impl Verdict {
    /// Whether this verdict accepts.
    pub fn accepts(self) -> bool {
        self == Verdict::Accept
    }

    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::BelowThreshold => "below_threshold",
            Verdict::NotReproduced => "not_reproduced",
            Verdict::Unloadable => "unloadable",
            Verdict::Overfit => "overfit",
        }
    }
}

/// The evaluation a vote ran: every validator must run the same one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// blake3 (hex) of the evaluation pool's texts.
    pub pool: String,
    /// Windows drawn per evaluation.
    pub windows: u32,
    /// Tokens per window.
    pub positions: u32,
}

/// A validator's re-evaluation of a claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vote {
    /// The claim evaluated.
    pub claim: BlockHash,
    /// The beacon whose randomness drew the batch (the epoch).
    pub beacon: BlockHash,
    /// The evaluation run.
    pub eval: EvalSpec,
    /// Losses measured on the drawn batch (zero when the candidate did not load).
    pub losses: Losses,
    /// The conclusion.
    pub verdict: Verdict,
    /// A few words on the verdict.
    #[serde(default)]
    pub detail: String,
    /// The same measurement on the validator's hidden QA set of the epoch, when it keeps one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<HiddenEval>,
}

/// A vote's measurement on the voter's hidden QA set: the batch drawn from that set by the
/// claim's seed, with the network's window count and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HiddenEval {
    /// The voter's [`QaCommit`] block for the epoch (the vote depends on it).
    pub commit: BlockHash,
    /// Losses of the base and of the candidate on that set.
    pub losses: Losses,
}

/// A validator's commitment to the hidden QA set it evaluates with during `epoch` (epochs are
/// `timestamp_ms / qa_epoch_ms`). The set stays off chain until the epoch closed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QaCommit {
    /// The epoch.
    pub epoch: u64,
    /// blake3 (hex) of the set, as [`crate::qa_commitment`] computes it.
    pub commitment: String,
}

/// The hidden QA set of a closed epoch, published: anyone can check it against its
/// commitment, and none of its documents may be used for evaluation again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QaReveal {
    /// The [`QaCommit`] block revealed (the reveal depends on it).
    pub commit: BlockHash,
    /// The set's documents, in the committed order.
    pub documents: Vec<String>,
}

/// How a claim ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Validators holding more than 2/3 of the stake accepted: the candidate is served.
    Accepted,
    /// Validators holding more than 1/3 of the stake refused: never served, bond burned.
    Rejected,
    /// No quorum within the expiry: never served, bond burned.
    Expired,
}

impl Outcome {
    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Rejected => "rejected",
            Outcome::Expired => "expired",
        }
    }
}

/// The outcome of a claim and the votes deciding it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// The claim decided.
    pub claim: BlockHash,
    /// How it ended.
    pub outcome: Outcome,
    /// The votes (blocks) deciding it; empty for an expiry.
    pub votes: Vec<BlockHash>,
}

/// Two conflicting votes of one validator on one claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slash {
    /// The validator that voted twice.
    pub validator: Address,
    /// The claim it voted on.
    pub claim: BlockHash,
    /// The two vote blocks.
    pub votes: [BlockHash; 2],
}

/// A new validator set, approved by validators holding more than 2/3 of the current set's
/// stake, each signing [`validator_set_message`] with its key (EIP-191, as blocks are signed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorSet {
    /// The set this one replaces: the block of the previous `validators` record, or the zero
    /// hash for the configured set.
    pub previous: BlockHash,
    /// The new set.
    pub validators: Vec<ValidatorStake>,
    /// Signatures (hex) of current validators over [`validator_set_message`].
    pub approvals: Vec<String>,
}

/// What a validator signs to approve `validators` replacing the set of `previous`.
pub fn validator_set_message(previous: BlockHash, validators: &[ValidatorStake]) -> Vec<u8> {
    let mut message = format!("blyan-pol 1 validator set\nprevious {previous}\n").into_bytes();
    for validator in validators {
        message
            .extend(format!("{} {}\n", validator.address.to_lower_hex(), validator.stake).bytes());
    }
    message
}

/// One Proof-of-Learning document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PolRecord {
    /// See [`Claim`].
    Claim(Claim),
    /// See [`Beacon`].
    Beacon(Beacon),
    /// See [`Vote`].
    Vote(Vote),
    /// See [`Certificate`].
    Certificate(Certificate),
    /// See [`Slash`].
    Slash(Slash),
    /// See [`ValidatorSet`].
    Validators(ValidatorSet),
    /// See [`QaCommit`].
    QaCommit(QaCommit),
    /// See [`QaReveal`].
    QaReveal(QaReveal),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    format: String,
    record: PolRecord,
}

impl PolRecord {
    /// The JSON payload of a `PolProof` block holding this record.
    pub fn to_payload(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct EnvelopeRef<'a> {
            format: &'static str,
            record: &'a PolRecord,
        }
        serde_json::to_vec(&EnvelopeRef {
            format: POL_RECORD_FORMAT,
            record: self,
        })
        .expect("a record always serializes")
    }

    /// Parses a `PolProof` block's payload ([`PolError::Malformed`] naming `block`).
    pub fn from_payload(block: BlockHash, payload: &[u8]) -> Result<Self> {
        let malformed = |reason: String| PolError::Malformed { block, reason };
        if payload.len() as u64 > POL_RECORD_BYTES_MAX {
            return Err(malformed(format!(
                "{} bytes, above {POL_RECORD_BYTES_MAX}",
                payload.len()
            )));
        }
        let envelope: Envelope =
            serde_json::from_slice(payload).map_err(|error| malformed(error.to_string()))?;
        if envelope.format != POL_RECORD_FORMAT {
            return Err(malformed(format!(
                "format {:?}, not {POL_RECORD_FORMAT:?}",
                envelope.format
            )));
        }
        Ok(envelope.record)
    }

    /// The record's type name (`claim`, `vote`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            PolRecord::Claim(_) => "claim",
            PolRecord::Beacon(_) => "beacon",
            PolRecord::Vote(_) => "vote",
            PolRecord::Certificate(_) => "certificate",
            PolRecord::Slash(_) => "slash",
            PolRecord::Validators(_) => "validators",
            PolRecord::QaCommit(_) => "qa_commit",
            PolRecord::QaReveal(_) => "qa_reveal",
        }
    }

    /// The blocks a record's block must list in `depends_on` (the rest of the record's links
    /// are checked by the gate).
    pub fn required_dependencies(&self) -> Vec<BlockHash> {
        match self {
            PolRecord::Claim(claim) => claim
                .candidates
                .iter()
                .take(BEACON_CLAIMS_MAX)
                .copied()
                .collect(),
            PolRecord::Beacon(beacon) => beacon.claims.clone(),
            PolRecord::Vote(vote) => {
                let mut dependencies = vec![vote.claim, vote.beacon];
                dependencies.extend(vote.hidden.map(|hidden| hidden.commit));
                dependencies
            }
            PolRecord::Certificate(certificate) => {
                let mut dependencies = vec![certificate.claim];
                dependencies.extend(&certificate.votes);
                dependencies
            }
            PolRecord::Slash(slash) => slash.votes.to_vec(),
            PolRecord::Validators(set) if set.previous != BlockHash::ZERO => vec![set.previous],
            PolRecord::Validators(_) | PolRecord::QaCommit(_) => Vec::new(),
            PolRecord::QaReveal(reveal) => vec![reveal.commit],
        }
    }
}

/// A stored record with its block: hash, author, height on chain D, append order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordBlock {
    /// The block holding the record.
    pub hash: BlockHash,
    /// Its signer.
    pub author: Address,
    /// Its height on chain D.
    pub height: u64,
    /// Its timestamp.
    pub timestamp_ms: u64,
    /// The record.
    pub record: PolRecord,
}

impl RecordBlock {
    /// The record of a stored `PolProof` block (`None` for another kind).
    pub fn read(store: &blyan_chain::ChainStore, hash: BlockHash) -> Result<Option<Self>> {
        let Some(header) = store.header(&hash)? else {
            return Ok(None);
        };
        Self::from_stored(store, hash, &header)
    }

    fn from_stored(
        store: &blyan_chain::ChainStore,
        hash: BlockHash,
        header: &BlockHeader,
    ) -> Result<Option<Self>> {
        if header.kind != BlockKind::PolProof {
            return Ok(None);
        }
        let Some(payload) = store.payload_verified(&hash)? else {
            return Ok(None);
        };
        Ok(Some(Self {
            hash,
            author: header.author,
            height: header.height,
            timestamp_ms: header.timestamp_ms,
            record: PolRecord::from_payload(hash, &payload)?,
        }))
    }
}

/// The evaluation seed of a claim under a beacon: blake3 of both hashes, domain-separated.
pub fn eval_seed(claim: BlockHash, beacon: BlockHash) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key("blyan-pol 1 evaluation seed");
    hasher.update(claim.as_bytes());
    hasher.update(beacon.as_bytes());
    *hasher.finalize().as_bytes()
}

/// The data commitment of dataset blocks: blake3 of their hashes in order.
pub fn data_blocks_commitment(blocks: &[BlockHash]) -> String {
    let mut hasher = blake3::Hasher::new();
    for block in blocks {
        hasher.update(block.as_bytes());
    }
    hasher.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_is_basis_points_of_the_base_rounded_down() {
        assert_eq!(delta_bps(2_000_000, 1_980_000), 100);
        assert_eq!(delta_bps(2_000_000, 2_000_000), 0);
        assert_eq!(delta_bps(2_000_000, 1_980_001), 99);
        assert_eq!(delta_bps(2_000_000, 2_000_001), -1);
        assert_eq!(delta_bps(0, 5), 0);
    }

    #[test]
    fn records_round_trip_and_refuse_other_formats() {
        let record = PolRecord::Certificate(Certificate {
            claim: BlockHash([7; 32]),
            outcome: Outcome::Expired,
            votes: vec![],
        });
        let payload = record.to_payload();
        assert_eq!(
            PolRecord::from_payload(BlockHash::ZERO, &payload).unwrap(),
            record
        );
        let other = String::from_utf8(payload)
            .unwrap()
            .replace(POL_RECORD_FORMAT, "blyan-pol/0");
        assert!(matches!(
            PolRecord::from_payload(BlockHash::ZERO, other.as_bytes()),
            Err(PolError::Malformed { .. })
        ));
        assert!(matches!(
            PolRecord::from_payload(BlockHash::ZERO, b"{}"),
            Err(PolError::Malformed { .. })
        ));
    }
}
