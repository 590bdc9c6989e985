//! What a certificate pays, derived from the chain alone so every node credits the same: the
//! author's bond back (accepted) or burned (rejected, expired), the author's learning reward per
//! basis point of certified improvement, each counted voter's validation reward per evaluated
//! window, and each dataset contributor's reward per sample the claim used. Every payment's
//! idempotency key starts with the certificate's hash, except a sample's, which is keyed by the
//! sample alone (`pol-data:<sample>`): a sample pays its contributor once, for the first
//! accepted claim that used it while it was usable, whatever later claims use it again. Which
//! samples are usable and who contributed them is the dataset gates' to say
//! ([`DataContributors`]), so this crate reads no dataset document. Replaying the chain pays
//! nothing twice.
//! The node turns these into ledger operations; this crate knows nothing of the ledger.

use std::collections::{BTreeMap, BTreeSet};

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
    /// A dataset contributor, for one usable sample of theirs the claim used (paid once per
    /// sample: the key is [`data_payment_key`]).
    Data {
        /// Idempotency key.
        key: String,
        /// The contributor.
        to: Address,
        /// Samples used (one).
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

/// Who is paid for a dataset block a claim used: the contributor of a sample that was usable
/// at `at_ms` (the claim's timestamp), `None` for anything else (earns nothing).
pub trait DataContributors {
    /// The contributor to pay for `block`, if it was a usable sample at `at_ms`.
    fn contributor(&self, block: BlockHash, at_ms: u64) -> Option<Address>;
}

/// No dataset gate: no dataset block earns anything.
impl DataContributors for () {
    fn contributor(&self, _block: BlockHash, _at_ms: u64) -> Option<Address> {
        None
    }
}

/// The idempotency key of the payment for dataset sample `sample`: one per sample, ever.
pub fn data_payment_key(sample: BlockHash) -> String {
    format!("pol-data:{sample}")
}

/// The idempotency key of claim `claim`'s bond: what locks it.
pub fn bond_key(claim: BlockHash) -> String {
    format!("pol-bond:{claim}")
}

/// What certificate `block` settles.
///
/// `records` are chain D's records in chain order ([`scan_records`]), at least up to the
/// certificate: the slashes and validator set before it are the ones its gate counted. Callers
/// settling many certificates pass one scan for all of them. `data` says which dataset blocks
/// were usable samples and whom they pay; a sample an earlier accepted certificate already paid
/// for is left out.
pub fn settlement(
    store: &ChainStore,
    params: &PolParams,
    block: &RecordBlock,
    records: &[RecordBlock],
    data: &dyn DataContributors,
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
    let paid = paid_samples(&before, data);
    Ok(settle(
        &params,
        block.hash,
        certificate,
        &state,
        &slashed,
        &DataCredit { data, paid: &paid },
    ))
}

/// Samples accepted certificates in `before` already paid for.
fn paid_samples(before: &[RecordBlock], data: &dyn DataContributors) -> BTreeSet<BlockHash> {
    let claims: BTreeMap<BlockHash, (&Vec<BlockHash>, u64)> = before
        .iter()
        .filter_map(|record| match &record.record {
            PolRecord::Claim(claim) => {
                Some((record.hash, (&claim.data_blocks, record.timestamp_ms)))
            }
            _ => None,
        })
        .collect();
    let mut paid = BTreeSet::new();
    for record in before {
        if let PolRecord::Certificate(certificate) = &record.record
            && certificate.outcome == Outcome::Accepted
            && let Some((blocks, at_ms)) = claims.get(&certificate.claim)
        {
            for block in *blocks {
                if data.contributor(*block, *at_ms).is_some() {
                    paid.insert(*block);
                }
            }
        }
    }
    paid
}

struct DataCredit<'a> {
    data: &'a dyn DataContributors,
    paid: &'a BTreeSet<BlockHash>,
}

fn settle(
    params: &PolParams,
    hash: BlockHash,
    certificate: &Certificate,
    state: &ClaimState,
    slashed: &BTreeSet<Address>,
    credit: &DataCredit<'_>,
) -> Settlement {
    let listed: Vec<_> = state
        .votes
        .iter()
        .filter(|(vote_block, _)| certificate.votes.contains(&vote_block.hash))
        .cloned()
        .collect();
    // The gate admitted the certificate only with votes whose hidden QA sets held then.
    let tally = Tally::count(params, &listed, slashed, &BTreeSet::new());
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
        let mut seen = BTreeSet::new();
        for data in &state.claim.data_blocks {
            if credit.paid.contains(data) || !seen.insert(*data) {
                continue;
            }
            if let Some(contributor) = credit.data.contributor(*data, state.block.timestamp_ms) {
                payments.push(Payment::Data {
                    key: data_payment_key(*data),
                    to: contributor,
                    samples: 1,
                });
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Claim, Losses};

    /// Sample 1 is usable from time 100 on, sample 2 never; both contributed by wallet 9.
    struct Usable;

    impl DataContributors for Usable {
        fn contributor(&self, block: BlockHash, at_ms: u64) -> Option<Address> {
            (block == BlockHash([1; 32]) && at_ms >= 100).then_some(Address([9; 20]))
        }
    }

    fn block(byte: u8, at_ms: u64, record: PolRecord) -> RecordBlock {
        RecordBlock {
            hash: BlockHash([byte; 32]),
            author: Address([byte; 20]),
            height: u64::from(byte),
            timestamp_ms: at_ms,
            record,
        }
    }

    fn claim(data: &[u8]) -> PolRecord {
        PolRecord::Claim(Claim {
            candidates: vec![],
            base_model: BlockHash::ZERO,
            claimed: Losses {
                base: 2,
                candidate: 1,
            },
            data_commitment: String::new(),
            data_blocks: data.iter().map(|byte| BlockHash([*byte; 32])).collect(),
        })
    }

    fn certificate(claim: u8, outcome: Outcome) -> PolRecord {
        PolRecord::Certificate(Certificate {
            claim: BlockHash([claim; 32]),
            outcome,
            votes: vec![],
        })
    }

    #[test]
    fn a_sample_counts_as_paid_only_after_an_accepted_claim_used_it_while_usable() {
        // Claim 10 used sample 1 before it was usable; claim 11 used it after, but was
        // rejected; claim 12 used it after and was accepted.
        let records = [
            block(10, 50, claim(&[1, 2])),
            block(20, 60, certificate(10, Outcome::Accepted)),
            block(11, 150, claim(&[1])),
            block(21, 160, certificate(11, Outcome::Rejected)),
        ];
        assert!(paid_samples(&records, &Usable).is_empty());
        let mut records = records.to_vec();
        records.push(block(12, 170, claim(&[1, 2])));
        records.push(block(22, 180, certificate(12, Outcome::Accepted)));
        assert_eq!(
            paid_samples(&records, &Usable),
            BTreeSet::from([BlockHash([1; 32])])
        );
        assert!(paid_samples(&records, &()).is_empty());
        assert_eq!(
            data_payment_key(BlockHash([1; 32])),
            format!("pol-data:{}", BlockHash([1; 32]))
        );
    }
}
