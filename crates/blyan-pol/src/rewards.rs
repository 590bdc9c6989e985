//! What a certificate pays, derived from the chain alone so every node credits the same: the
//! author's bond back (accepted) or burned (rejected, expired), the author's learning reward per
//! basis point of certified improvement, each counted voter's validation reward per evaluated
//! window, and each dataset contributor's reward per sample the claim used. Every payment's
//! idempotency key starts with the certificate's hash, so replaying the chain pays nothing twice.
//! The node turns these into ledger operations; this crate knows nothing of the ledger.

use std::collections::BTreeMap;

use blyan_chain::{BlockHash, ChainStore};
use blyan_primitives::Address;

use crate::error::{PolError, Result};
use crate::params::PolParams;
use crate::record::{Certificate, Outcome, PolRecord, RecordBlock};
#[cfg(doc)]
use crate::view::scan_records;
use crate::view::{ClaimState, Tally, params_after, slashed_validators};

/// What to do with a claim's bond.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BondAction {
    /// Back to the author (accepted).
    Refund,
    /// Burned (rejected or expired).
    Burn,
}

/// One payment a certificate makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payment {
    /// The author, per basis point of certified improvement.
    Learning {
        /// Idempotency key.
        key: String,
        /// The author.
        to: Address,
        /// Certified improvement.
        improvement_bps: u32,
    },
    /// A validator whose vote the certificate counts, per evaluated window.
    Validation {
        /// Idempotency key.
        key: String,
        /// The validator.
        to: Address,
        /// Windows it evaluated.
        samples: u64,
    },
    /// A dataset contributor, per sample of theirs the claim used.
    Data {
        /// Idempotency key.
        key: String,
        /// The contributor.
        to: Address,
        /// Samples used.
        samples: u64,
    },
}

/// Everything one certificate settles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// The certificate's block.
    pub certificate: BlockHash,
    /// The claim it decides.
    pub claim: BlockHash,
    /// The claim's author (the bond's owner).
    pub author: Address,
    /// How the claim ended.
    pub outcome: Outcome,
    /// The certified improvement (accepted only).
    pub improvement_bps: Option<i64>,
    /// The bond's fate.
    pub bond: BondAction,
    /// The payments, in a fixed order.
    pub payments: Vec<Payment>,
}

/// The idempotency key of claim `claim`'s bond: what locks it.
pub fn bond_key(claim: BlockHash) -> String {
    format!("pol-bond:{claim}")
}

/// What certificate `block` settles.
///
/// `records` are chain D's records in chain order ([`scan_records`]), at least up to the
/// certificate: the slashes and validator set before it are the ones its gate counted. Callers
/// settling many certificates pass one scan for all of them.
pub fn settlement(
    store: &ChainStore,
    params: &PolParams,
    block: &RecordBlock,
    records: &[RecordBlock],
) -> Result<Settlement> {
    let PolRecord::Certificate(certificate) = &block.record else {
        return Err(PolError::refused(
            "not_a_certificate",
            format!("block {} is a {}", block.hash, block.record.type_name()),
        ));
    };
    let state = ClaimState::read(store, certificate.claim)?.ok_or_else(|| {
        PolError::refused(
            "unknown_claim",
            format!("block {} is not a claim", certificate.claim),
        )
    })?;
    let before: Vec<_> = records
        .iter()
        .filter(|record| record.height < block.height)
        .cloned()
        .collect();
    let slashed = slashed_validators(&before);
    let params = params_after(params, &before);
    Ok(settle(&params, block.hash, certificate, &state, &slashed))
}

fn settle(
    params: &PolParams,
    hash: BlockHash,
    certificate: &Certificate,
    state: &ClaimState,
    slashed: &std::collections::BTreeSet<Address>,
) -> Settlement {
    let listed: Vec<_> = state
        .votes
        .iter()
        .filter(|(vote_block, _)| certificate.votes.contains(&vote_block.hash))
        .cloned()
        .collect();
    let tally = Tally::count(params, &listed, slashed);
    let author = state.block.author;
    let mut payments = Vec::new();
    let improvement_bps = (certificate.outcome == Outcome::Accepted)
        .then_some(tally.delta_bps)
        .flatten();
    if let Some(delta) = improvement_bps {
        payments.push(Payment::Learning {
            key: format!("pol:{hash}:learn"),
            to: author,
            improvement_bps: u32::try_from(delta.max(0)).unwrap_or(u32::MAX),
        });
    }
    let mut voters: Vec<Address> = tally
        .accepts
        .iter()
        .map(|vote| vote.1)
        .chain(tally.refusals.iter().map(|vote| vote.1))
        .collect();
    voters.sort();
    for validator in voters {
        payments.push(Payment::Validation {
            key: format!("pol:{hash}:val:{}", validator.to_lower_hex()),
            to: validator,
            samples: u64::from(params.eval.windows),
        });
    }
    if certificate.outcome == Outcome::Accepted {
        let mut contributors: BTreeMap<Address, u64> = BTreeMap::new();
        for data in &state.claim.data_blocks {
            if let Some(entry) = state_data_author(state, *data) {
                *contributors.entry(entry).or_default() += 1;
            }
        }
        for (contributor, samples) in contributors {
            payments.push(Payment::Data {
                key: format!("pol:{hash}:data:{}", contributor.to_lower_hex()),
                to: contributor,
                samples,
            });
        }
    }
    Settlement {
        certificate: hash,
        claim: state.hash(),
        author,
        outcome: certificate.outcome,
        improvement_bps,
        bond: if certificate.outcome == Outcome::Accepted {
            BondAction::Refund
        } else {
            BondAction::Burn
        },
        payments,
    }
}

/// The author of a claim's data block, resolved when the claim state was read.
fn state_data_author(state: &ClaimState, block: BlockHash) -> Option<Address> {
    state.data_authors.get(&block).copied()
}
