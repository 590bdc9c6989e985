//! Reading Proof-of-Learning state from the chain: a claim with its beacon, votes and
//! certificate (through the chain's dependents index, so O(records of the claim)), the tally of
//! its votes, and the whole of chain D's records for status pages.

use std::collections::{BTreeMap, BTreeSet};

use blyan_chain::{BlockHash, BlockKind, ChainId, ChainStore};
use blyan_moe::ExpertName;
use blyan_primitives::Address;

use crate::error::Result;
use crate::params::{PolParams, ValidatorStake};
use crate::record::{Certificate, Claim, Losses, Outcome, PolRecord, RecordBlock, Vote};

/// A claim and every record that refers to it.
#[derive(Clone, Debug)]
pub struct ClaimState {
    /// The claim's block.
    pub block: RecordBlock,
    /// The claim.
    pub claim: Claim,
    /// The beacon that seeded it, once one did.
    pub beacon: Option<RecordBlock>,
    /// Votes on it, in hash order.
    pub votes: Vec<(RecordBlock, Vote)>,
    /// Its certificate, once decided.
    pub certificate: Option<(RecordBlock, Certificate)>,
}

/// Where a claim stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimStatus {
    /// Waiting for a validator's beacon (its evaluation seed).
    AwaitingBeacon,
    /// Seeded; validators are voting.
    Voting,
    /// Decided.
    Decided(Outcome),
}

impl ClaimStatus {
    /// The snake_case name (`awaiting_beacon`, `voting`, `accepted`, …).
    pub fn name(self) -> &'static str {
        match self {
            ClaimStatus::AwaitingBeacon => "awaiting_beacon",
            ClaimStatus::Voting => "voting",
            ClaimStatus::Decided(outcome) => outcome.name(),
        }
    }
}

impl ClaimState {
    /// Reads claim `claim` and its records; `None` when `claim` is not a stored claim.
    pub fn read(store: &ChainStore, claim: BlockHash) -> Result<Option<Self>> {
        let Some(block) = RecordBlock::read(store, claim)? else {
            return Ok(None);
        };
        let PolRecord::Claim(record) = block.record.clone() else {
            return Ok(None);
        };
        let mut state = ClaimState {
            block,
            claim: record,
            beacon: None,
            votes: Vec::new(),
            certificate: None,
        };
        for dependent in store.dependents(&claim)? {
            let Some(found) = read_record_lenient(store, dependent.block)? else {
                continue;
            };
            match found.record.clone() {
                PolRecord::Beacon(beacon) if beacon.claims.contains(&claim) => {
                    state.beacon = Some(found);
                }
                PolRecord::Vote(vote) if vote.claim == claim => state.votes.push((found, vote)),
                PolRecord::Certificate(certificate) if certificate.claim == claim => {
                    state.certificate = Some((found, certificate));
                }
                _ => {}
            }
        }
        Ok(Some(state))
    }

    /// Where the claim stands.
    pub fn status(&self) -> ClaimStatus {
        match (&self.certificate, &self.beacon) {
            (Some((_, certificate)), _) => ClaimStatus::Decided(certificate.outcome),
            (None, None) => ClaimStatus::AwaitingBeacon,
            (None, Some(_)) => ClaimStatus::Voting,
        }
    }

    /// The hash of the claim's block.
    pub fn hash(&self) -> BlockHash {
        self.block.hash
    }

    /// The experts the claim's candidate replaces, read from the candidate blocks' headers.
    pub fn experts(&self, store: &ChainStore) -> Result<BTreeSet<ExpertName>> {
        let mut experts = BTreeSet::new();
        for candidate in &self.claim.candidates {
            if let Some(header) = store.header(candidate)?
                && header.kind == BlockKind::Expert
                && let Some(expert) = header.meta.expert
            {
                experts.insert(expert);
            }
        }
        Ok(experts)
    }

    /// Whether the candidate includes a new model (a meta block).
    pub fn has_model(&self, store: &ChainStore) -> Result<bool> {
        for candidate in &self.claim.candidates {
            if store.header(candidate)?.map(|header| header.kind) == Some(BlockKind::Meta) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// A record block that does not parse reads as `None` here: the gate never admits one, so
/// only a chain written without the gate holds one.
fn read_record_lenient(store: &ChainStore, block: BlockHash) -> Result<Option<RecordBlock>> {
    match RecordBlock::read(store, block) {
        Ok(found) => Ok(found),
        Err(crate::PolError::Malformed { block, reason }) => {
            tracing::warn!(%block, %reason, "ignoring a malformed Proof-of-Learning block");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// How the votes on one claim count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Accepting votes that agree with the median accepting vote (within the tolerance), one per
    /// counted validator, with their stake.
    pub accepts: Vec<(BlockHash, Address, u64, Losses)>,
    /// Refusing votes of counted validators, with their stake.
    pub refusals: Vec<(BlockHash, Address, u64)>,
    /// Validators that voted twice with different content: none of their votes count.
    pub equivocators: Vec<Address>,
    /// Stake of `accepts`.
    pub accept_stake: u64,
    /// Stake of `refusals`.
    pub refusal_stake: u64,
    /// The improvement the certificate would state: the least among `accepts`.
    pub delta_bps: Option<i64>,
}

impl Tally {
    /// Counts `votes` under `params`, ignoring `slashed` validators and votes measured on a
    /// hidden QA set whose commit is in `invalid_qa` (`qa.rs`).
    pub fn count(
        params: &PolParams,
        votes: &[(RecordBlock, Vote)],
        slashed: &BTreeSet<Address>,
        invalid_qa: &BTreeSet<BlockHash>,
    ) -> Self {
        let mut by_validator: BTreeMap<Address, Vec<&(RecordBlock, Vote)>> = BTreeMap::new();
        for vote in votes {
            if vote
                .1
                .hidden
                .is_some_and(|hidden| invalid_qa.contains(&hidden.commit))
            {
                continue;
            }
            by_validator.entry(vote.0.author).or_default().push(vote);
        }
        let mut tally = Tally::default();
        let mut accepting = Vec::new();
        for (validator, cast) in by_validator {
            let stake = params.stake_of(validator);
            if stake == 0 || slashed.contains(&validator) {
                continue;
            }
            if cast.iter().any(|other| !same_vote(&other.1, &cast[0].1)) {
                tally.equivocators.push(validator);
                continue;
            }
            let (block, vote) = cast[0];
            if vote.verdict.accepts() {
                accepting.push((block.hash, validator, stake, vote.losses));
            } else {
                tally.refusals.push((block.hash, validator, stake));
                tally.refusal_stake += stake;
            }
        }
        if !accepting.is_empty() {
            let mut ordered: Vec<_> = accepting.iter().map(|(_, _, _, losses)| *losses).collect();
            ordered.sort_by_key(|losses| (losses.candidate, losses.base));
            let median = ordered[(ordered.len() - 1) / 2];
            for vote in accepting {
                if agree(&vote.3, &median, params.tolerance_micros) {
                    tally.accept_stake += vote.2;
                    tally.delta_bps =
                        Some(tally.delta_bps.map_or(vote.3.delta_bps(), |least: i64| {
                            least.min(vote.3.delta_bps())
                        }));
                    tally.accepts.push(vote);
                }
            }
        }
        tally
    }

    /// The outcome the votes reach, if any: accepted needs > 2/3 of the stake agreeing on an
    /// improvement at or above the threshold; rejected needs > 1/3 refusing.
    pub fn outcome(&self, params: &PolParams) -> Option<Outcome> {
        let total = params.total_stake();
        if PolParams::is_supermajority(self.accept_stake, total)
            && self
                .delta_bps
                .is_some_and(|delta| delta >= params.threshold_bps)
        {
            Some(Outcome::Accepted)
        } else if PolParams::is_blocking(self.refusal_stake, total) {
            Some(Outcome::Rejected)
        } else {
            None
        }
    }

    /// The candidate loss the certificate stands on: the median of the agreeing accepts.
    pub fn candidate_loss(&self) -> Option<u64> {
        let mut losses: Vec<u64> = self.accepts.iter().map(|vote| vote.3.candidate).collect();
        losses.sort_unstable();
        losses.get(losses.len().checked_sub(1)? / 2).copied()
    }
}

/// Whether two losses agree within `tolerance` micro-nats, base and candidate each.
pub fn agree(a: &Losses, b: &Losses, tolerance: u64) -> bool {
    a.base.abs_diff(b.base) <= tolerance && a.candidate.abs_diff(b.candidate) <= tolerance
}

/// Whether two votes say the same (same evaluation, losses and verdict).
pub fn same_vote(a: &Vote, b: &Vote) -> bool {
    a.claim == b.claim
        && a.beacon == b.beacon
        && a.eval == b.eval
        && a.losses == b.losses
        && a.verdict == b.verdict
        && a.hidden == b.hidden
}

/// Every Proof-of-Learning record on chain D, in chain order.
pub fn scan_records(store: &ChainStore, from_height: u64) -> Result<Vec<RecordBlock>> {
    let mut records = Vec::new();
    for sealed in store.headers_from(ChainId::Dataset, from_height.max(1)) {
        let sealed = sealed?;
        if sealed.header.kind != BlockKind::PolProof {
            continue;
        }
        if let Some(record) = read_record_lenient(store, sealed.hash)? {
            records.push(record);
        }
    }
    Ok(records)
}

/// The validators a `Slash` record on chain D names (their stake counts for nothing from then on).
pub fn slashed_validators(records: &[RecordBlock]) -> BTreeSet<Address> {
    records
        .iter()
        .filter_map(|record| match &record.record {
            PolRecord::Slash(slash) => Some(slash.validator),
            _ => None,
        })
        .collect()
}

/// Every claim on chain D with its records, oldest first.
pub fn all_claims(store: &ChainStore) -> Result<Vec<ClaimState>> {
    let mut claims = Vec::new();
    for record in scan_records(store, 1)? {
        if matches!(record.record, PolRecord::Claim(_))
            && let Some(state) = ClaimState::read(store, record.hash)?
        {
            claims.push(state);
        }
    }
    Ok(claims)
}

/// The validator set in force after `records` (chain order): the last `validators` record's
/// set and its block, or `configured` and the zero hash when there is none.
pub fn current_validators(
    configured: &[ValidatorStake],
    records: &[RecordBlock],
) -> (Vec<ValidatorStake>, BlockHash) {
    records
        .iter()
        .rev()
        .find_map(|record| match &record.record {
            PolRecord::Validators(set) => Some((set.validators.clone(), record.hash)),
            _ => None,
        })
        .unwrap_or_else(|| (configured.to_vec(), BlockHash::ZERO))
}

/// `params` with the validator set in force after `records`.
pub fn params_after(params: &PolParams, records: &[RecordBlock]) -> PolParams {
    PolParams {
        validators: current_validators(&params.validators, records).0,
        ..params.clone()
    }
}
