//! What the gates after L0 write on chain D: each decision is a `DatasetEntry` block holding a
//! `blyan-data/1` document ([`DataRecord`](crate::DataRecord)) beside the samples it judges.
//!
//! - [`TeacherResult`] (`teacher_result`): the L1 teacher's bits per byte for one sample and
//!   what the band made of it, written (and signed) by the node that scored it.
//! - [`VoteCommit`] (`vote_commit`): an L2 vote, hidden: `commitment` is
//!   [`vote_commitment`]`(sample, verdict, salt, voter)`, so nobody can copy a vote before the
//!   commit window closes; `stake` whole BLY is locked with it.
//! - [`VoteReveal`] (`vote_reveal`): the verdict and salt of a commit, in the reveal window; one
//!   that does not hash to its commitment is [`GateError::RevealMismatch`].
//! - [`Review`] (`review`): an L3 sign-off (or refusal) of samples that passed L2, signed by a
//!   validator of the Proof-of-Learning validator set in force.
//!
//! How these records add up to a sample's state is [`GateView`](crate::GateView).

use blyan_chain::BlockHash;
use blyan_primitives::Address;
use serde::{Deserialize, Serialize};

/// Most samples one L3 review names.
pub const REVIEW_SAMPLES_MAX: usize = 256;

/// Most bytes of a review's note.
pub const REVIEW_NOTE_BYTES_MAX: usize = 1024;

/// Bytes of a vote's salt (hex-encoded in documents).
pub const VOTE_SALT_BYTES: usize = 32;

/// What the L1 band made of a sample's score.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum L1Outcome {
    /// Inside the band: the sample goes on to the vote.
    Pass,
    /// Above the band's maximum: gibberish or noise to the model.
    TooHigh,
    /// Below the band's minimum: likely memorized or generated text.
    TooLow,
    /// Refused by the L0 screen when the scorer re-ran it (a sample appended without going
    /// through a node's submission); `code` is the refusal's code.
    Screened {
        /// The L0 refusal's stable code.
        code: String,
    },
}

impl L1Outcome {
    /// Whether the sample goes on to L2.
    pub fn passes(&self) -> bool {
        matches!(self, L1Outcome::Pass)
    }

    /// The snake_case name.
    pub fn name(&self) -> &'static str {
        match self {
            L1Outcome::Pass => "pass",
            L1Outcome::TooHigh => "too_high",
            L1Outcome::TooLow => "too_low",
            L1Outcome::Screened { .. } => "screened",
        }
    }
}

/// The L1 teacher's judgement of one sample.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherResult {
    /// The sample's block.
    pub sample: BlockHash,
    /// The served model's loss on the sample, in millionths of a bit per byte of UTF-8 text
    /// (zero when the L0 screen refused it first).
    pub bits_per_byte_micros: u64,
    /// The band's lower edge then, in millionths of a bit per byte.
    pub band_min_micros: u64,
    /// The band's upper edge then, in millionths of a bit per byte.
    pub band_max_micros: u64,
    /// What the band made of it.
    pub outcome: L1Outcome,
}

/// A community vote's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteVerdict {
    /// The network should learn from the sample.
    Accept,
    /// It should not.
    Refuse,
}

impl VoteVerdict {
    /// The snake_case name (also what the commitment hashes).
    pub fn name(self) -> &'static str {
        match self {
            VoteVerdict::Accept => "accept",
            VoteVerdict::Refuse => "refuse",
        }
    }
}

/// A hidden L2 vote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteCommit {
    /// The sample voted on.
    pub sample: BlockHash,
    /// The wallet voting (the block's signer, or the signed-in wallet of the node that signed).
    pub voter: Address,
    /// [`vote_commitment`] of the vote (lower-case hex, 64 digits).
    pub commitment: String,
    /// Whole BLY the voter locks with the vote: its weight.
    pub stake: u64,
}

/// The opening of a [`VoteCommit`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteReveal {
    /// The commit's block.
    pub commit: BlockHash,
    /// The verdict committed to.
    pub verdict: VoteVerdict,
    /// The salt committed to (lower-case hex, [`VOTE_SALT_BYTES`] bytes).
    pub salt: String,
}

/// What an L3 reviewer decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewVerdict {
    /// Signed off: the samples are usable.
    Approve,
    /// Refused: the samples are never used.
    Refuse,
}

impl ReviewVerdict {
    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            ReviewVerdict::Approve => "approve",
            ReviewVerdict::Refuse => "refuse",
        }
    }
}

/// A validator's L3 review of samples that passed L2.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Review {
    /// The samples reviewed (at most [`REVIEW_SAMPLES_MAX`]).
    pub samples: Vec<BlockHash>,
    /// The decision, for all of them.
    pub verdict: ReviewVerdict,
    /// Why, in a few words (at most [`REVIEW_NOTE_BYTES_MAX`] bytes).
    #[serde(default)]
    pub note: String,
}

/// The commitment of a vote: blake3 of `sample ‖ verdict ‖ salt ‖ voter` (hash bytes, the
/// verdict's name, the salt's bytes, the address's bytes), domain-separated, lower-case hex.
pub fn vote_commitment(
    sample: BlockHash,
    verdict: VoteVerdict,
    salt: &[u8; VOTE_SALT_BYTES],
    voter: Address,
) -> String {
    let mut hasher = blake3::Hasher::new_derive_key("blyan-data 1 vote commitment");
    hasher.update(sample.as_bytes());
    hasher.update(verdict.name().as_bytes());
    hasher.update(salt);
    hasher.update(&voter.0);
    hasher.finalize().to_hex().to_string()
}

/// Parses a reveal's salt.
pub fn parse_salt(salt: &str) -> Result<[u8; VOTE_SALT_BYTES], GateError> {
    let mut bytes = [0u8; VOTE_SALT_BYTES];
    if salt.len() != 2 * VOTE_SALT_BYTES || hex::decode_to_slice(salt, &mut bytes).is_err() {
        return Err(GateError::Salt {
            given: salt.chars().take(80).collect(),
        });
    }
    Ok(bytes)
}

/// Checks that `reveal` opens `commit`: [`GateError::RevealMismatch`] when the verdict and salt
/// do not hash to the commitment.
pub fn check_reveal(commit: &VoteCommit, reveal: &VoteReveal) -> Result<(), GateError> {
    let salt = parse_salt(&reveal.salt)?;
    let computed = vote_commitment(commit.sample, reveal.verdict, &salt, commit.voter);
    if computed != commit.commitment {
        return Err(GateError::RevealMismatch {
            commit: reveal.commit,
            committed: commit.commitment.clone(),
            computed,
        });
    }
    Ok(())
}

pub(crate) fn is_hex64(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// Checks a gate record's own limits (what can be judged without the chain).
pub(crate) fn validate_gate_record(record: &crate::DataRecord) -> Result<(), GateError> {
    use crate::DataRecord;
    match record {
        DataRecord::Sample(_) => Ok(()),
        DataRecord::TeacherResult(result) => {
            if result.band_min_micros > result.band_max_micros {
                return Err(GateError::Band {
                    min_micros: result.band_min_micros,
                    max_micros: result.band_max_micros,
                });
            }
            Ok(())
        }
        DataRecord::VoteCommit(commit) => {
            if !is_hex64(&commit.commitment) {
                return Err(GateError::Commitment {
                    given: commit.commitment.chars().take(80).collect(),
                });
            }
            Ok(())
        }
        DataRecord::VoteReveal(reveal) => parse_salt(&reveal.salt).map(|_| ()),
        DataRecord::Review(review) => {
            if review.samples.is_empty() || review.samples.len() > REVIEW_SAMPLES_MAX {
                return Err(GateError::ReviewSamples {
                    count: review.samples.len(),
                    max: REVIEW_SAMPLES_MAX,
                });
            }
            if review.note.len() > REVIEW_NOTE_BYTES_MAX {
                return Err(GateError::ReviewNote {
                    bytes: review.note.len(),
                    max: REVIEW_NOTE_BYTES_MAX,
                });
            }
            Ok(())
        }
    }
}

/// Why a gate record is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GateError {
    /// A reveal's salt is not [`VOTE_SALT_BYTES`] bytes of lower-case hex.
    #[error("salt {given:?} is not {VOTE_SALT_BYTES} bytes of lower-case hex")]
    Salt {
        /// The salt given.
        given: String,
    },
    /// A commitment is not 64 lower-case hex digits.
    #[error("commitment {given:?} is not 64 lower-case hex digits")]
    Commitment {
        /// The commitment given.
        given: String,
    },
    /// A reveal's verdict and salt do not hash to its commit's commitment.
    #[error(
        "the reveal does not match commit {commit}: committed {committed}, revealed {computed}"
    )]
    RevealMismatch {
        /// The commit block.
        commit: BlockHash,
        /// What the commit holds.
        committed: String,
        /// What the reveal hashes to.
        computed: String,
    },
    /// A teacher result's band is upside down.
    #[error("band [{min_micros}, {max_micros}] µbit/byte is empty")]
    Band {
        /// Its lower edge.
        min_micros: u64,
        /// Its upper edge.
        max_micros: u64,
    },
    /// A review names no samples or too many.
    #[error("a review names 1 to {max} samples, not {count}")]
    ReviewSamples {
        /// Samples named.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A review's note is too long.
    #[error("review note of {bytes} bytes is over the {max}-byte limit")]
    ReviewNote {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The block a record names is not a sample on chain D.
    #[error("{block} is not a sample on chain D")]
    UnknownSample {
        /// The block named.
        block: BlockHash,
    },
    /// The block a reveal names is not a vote commit.
    #[error("{block} is not a vote commit on chain D")]
    UnknownCommit {
        /// The block named.
        block: BlockHash,
    },
    /// The sample is not in the state the record needs (voting for a commit, revealing for a
    /// reveal, accepted for a review).
    #[error("sample {sample} is {state}, not {needed}")]
    WrongState {
        /// The sample.
        sample: BlockHash,
        /// Its state now.
        state: &'static str,
        /// The state needed.
        needed: &'static str,
    },
    /// The wallet already committed a vote on the sample.
    #[error("{voter} already voted on sample {sample}")]
    AlreadyVoted {
        /// The sample.
        sample: BlockHash,
        /// The voter.
        voter: Address,
    },
    /// The commit was already revealed.
    #[error("commit {commit} is already revealed")]
    AlreadyRevealed {
        /// The commit.
        commit: BlockHash,
    },
    /// A contributor voting on their own sample.
    #[error("{voter} contributed sample {sample} and cannot vote on it")]
    OwnSample {
        /// The sample.
        sample: BlockHash,
        /// The voter.
        voter: Address,
    },
    /// A vote's stake is under the minimum.
    #[error("a stake of {stake} BLY is under the minimum of {min} BLY")]
    StakeTooLow {
        /// The stake given.
        stake: u64,
        /// The minimum.
        min: u64,
    },
    /// A reveal by another wallet than the commit's voter.
    #[error("commit {commit} is {voter}'s, not {caller}'s")]
    NotTheVoter {
        /// The commit.
        commit: BlockHash,
        /// Its voter.
        voter: Address,
        /// Who tried to reveal it.
        caller: Address,
    },
    /// An L3 review signed by a wallet outside the validator set in force.
    #[error("{author} is not a validator of the current set")]
    NotAValidator {
        /// The review's signer.
        author: Address,
    },
}

impl GateError {
    /// A stable snake_case code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            GateError::Salt { .. } => "salt",
            GateError::Commitment { .. } => "commitment",
            GateError::RevealMismatch { .. } => "reveal_mismatch",
            GateError::Band { .. } => "band",
            GateError::ReviewSamples { .. } => "review_samples",
            GateError::ReviewNote { .. } => "review_note",
            GateError::UnknownSample { .. } => "unknown_sample",
            GateError::UnknownCommit { .. } => "unknown_commit",
            GateError::WrongState { .. } => "wrong_state",
            GateError::AlreadyVoted { .. } => "already_voted",
            GateError::AlreadyRevealed { .. } => "already_revealed",
            GateError::OwnSample { .. } => "own_sample",
            GateError::StakeTooLow { .. } => "stake_too_low",
            GateError::NotTheVoter { .. } => "not_the_voter",
            GateError::NotAValidator { .. } => "not_a_validator",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataRecord, decode_record, encode_record};

    fn voter() -> Address {
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
            .parse()
            .unwrap()
    }

    #[test]
    fn gate_records_round_trip_through_their_documents() {
        let records = [
            DataRecord::TeacherResult(TeacherResult {
                sample: BlockHash([1; 32]),
                bits_per_byte_micros: 2_100_000,
                band_min_micros: 500_000,
                band_max_micros: 6_000_000,
                outcome: L1Outcome::Pass,
            }),
            DataRecord::TeacherResult(TeacherResult {
                sample: BlockHash([1; 32]),
                bits_per_byte_micros: 0,
                band_min_micros: 500_000,
                band_max_micros: 6_000_000,
                outcome: L1Outcome::Screened {
                    code: "secret".into(),
                },
            }),
            DataRecord::VoteCommit(VoteCommit {
                sample: BlockHash([1; 32]),
                voter: voter(),
                commitment: vote_commitment(
                    BlockHash([1; 32]),
                    VoteVerdict::Accept,
                    &[3; 32],
                    voter(),
                ),
                stake: 10,
            }),
            DataRecord::VoteReveal(VoteReveal {
                commit: BlockHash([2; 32]),
                verdict: VoteVerdict::Refuse,
                salt: hex::encode([3; 32]),
            }),
            DataRecord::Review(Review {
                samples: vec![BlockHash([1; 32])],
                verdict: ReviewVerdict::Approve,
                note: "read it".into(),
            }),
        ];
        for record in records {
            let bytes = encode_record(&record);
            assert_eq!(decode_record(&bytes).unwrap(), record);
        }
        let text = String::from_utf8(encode_record(&DataRecord::VoteReveal(VoteReveal {
            commit: BlockHash([2; 32]),
            verdict: VoteVerdict::Accept,
            salt: hex::encode([3; 32]),
        })))
        .unwrap();
        assert!(text.starts_with(r#"{"format":"blyan-data/1","record":{"type":"vote_reveal","#));
    }

    #[test]
    fn a_reveal_that_does_not_open_its_commitment_is_refused() {
        let salt = [9u8; 32];
        let commit = VoteCommit {
            sample: BlockHash([1; 32]),
            voter: voter(),
            commitment: vote_commitment(BlockHash([1; 32]), VoteVerdict::Accept, &salt, voter()),
            stake: 5,
        };
        let reveal = |verdict, salt: [u8; 32]| VoteReveal {
            commit: BlockHash([2; 32]),
            verdict,
            salt: hex::encode(salt),
        };
        check_reveal(&commit, &reveal(VoteVerdict::Accept, salt)).unwrap();
        assert!(matches!(
            check_reveal(&commit, &reveal(VoteVerdict::Refuse, salt)),
            Err(GateError::RevealMismatch { commit, .. }) if commit == BlockHash([2; 32])
        ));
        assert_eq!(
            check_reveal(&commit, &reveal(VoteVerdict::Accept, [8; 32]))
                .unwrap_err()
                .code(),
            "reveal_mismatch"
        );
        let mut short = reveal(VoteVerdict::Accept, salt);
        short.salt.truncate(10);
        assert!(matches!(
            check_reveal(&commit, &short),
            Err(GateError::Salt { .. })
        ));
        // Another voter with the same verdict and salt commits to something else.
        let other: Address = "0x0000000000000000000000000000000000000001"
            .parse()
            .unwrap();
        assert_ne!(
            vote_commitment(BlockHash([1; 32]), VoteVerdict::Accept, &salt, other),
            commit.commitment
        );
    }

    #[test]
    fn malformed_gate_records_are_refused_when_decoded() {
        let review = |samples: usize, note: usize| {
            DataRecord::Review(Review {
                samples: vec![BlockHash([1; 32]); samples],
                verdict: ReviewVerdict::Refuse,
                note: "n".repeat(note),
            })
        };
        assert!(decode_record(&encode_record(&review(REVIEW_SAMPLES_MAX, 0))).is_ok());
        for (record, code) in [
            (review(0, 0), "review_samples"),
            (review(REVIEW_SAMPLES_MAX + 1, 0), "review_samples"),
            (review(1, REVIEW_NOTE_BYTES_MAX + 1), "review_note"),
            (
                DataRecord::VoteCommit(VoteCommit {
                    sample: BlockHash([1; 32]),
                    voter: voter(),
                    commitment: "ABC".into(),
                    stake: 1,
                }),
                "commitment",
            ),
            (
                DataRecord::TeacherResult(TeacherResult {
                    sample: BlockHash([1; 32]),
                    bits_per_byte_micros: 1,
                    band_min_micros: 7,
                    band_max_micros: 6,
                    outcome: L1Outcome::Pass,
                }),
                "band",
            ),
        ] {
            let error = decode_record(&encode_record(&record)).unwrap_err();
            assert!(
                matches!(&error, crate::SchemaError::Gate(gate) if gate.code() == code),
                "{error}"
            );
        }
    }
}
