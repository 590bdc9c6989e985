//! Data quality gates: which dataset entries the model may learn from, and why.
//!
//! A dataset entry (a block on chain D) passes up to five gates before it counts: **L0** cheap
//! filters (length, format, duplicates, banned content), **L1** a model-based gate (teacher
//! perplexity or score), **L2** community votes, **L3** optional human reviewers, and **L4** the
//! Proof-of-Learning outcome of training on it. Every decision is recorded with its reason, so a
//! rejected entry can always say why.
//!
//! What an entry holds is [`Sample`] (module `sample`): one sample per `DatasetEntry` block, as a
//! `blyan-data/1` JSON document ([`DataRecord`], [`encode_record`], [`decode_record`]), with its
//! licence, source, language, contributor and the blake3 of its normalized text.
//!
//! **L0** ([`screen_l0`], [`screen_document`]) judges a sample against an [`AcceptedIndex`] of
//! everything accepted: schema and limits, exact duplicates by normalized-text hash, near
//! duplicates by MinHash over word shingles with LSH banding (module `minhash`), characters and
//! the declared language's script and language (module `charset`), secrets and personal data
//! (module `patterns`). A refusal is a typed [`Refusal`] with a stable [`Refusal::code`].
//!
//! **L1** ([`score_bits_per_byte`], [`judge_l1`]) scores samples under the served model, in bits
//! per byte of training text, batched with progress, and a [`TeacherBand`] refuses gibberish
//! (too surprising) and memorized or generated copies (too predictable).
//!
//! # Invariants
//! - L0 is deterministic: the same sample, index and [`L0Config`] give the same answer on every
//!   machine (fixed hash seeds, no clock, no randomness).
//! - A refusal never echoes a secret or personal datum it found, only its kind and offset.
//!
//! The gates after L0 write their decisions on chain D beside the samples (module
//! `gate_record`: [`TeacherResult`], [`VoteCommit`]/[`VoteReveal`] commit-reveal votes weighted by
//! stake, validator [`Review`]s), and [`GateView`] (module `gate_state`) replays chain D into each
//! sample's [`SampleState`] and history, the same on every node. Learners read only
//! [`SampleState::Usable`] samples, and only those pay their contributor when a certified
//! Proof-of-Learning candidate used them.
//!
//! ```
//! use blyan_chain::BlockHash;
//! use blyan_quality::{VoteCommit, VoteReveal, VoteVerdict, check_reveal, vote_commitment};
//!
//! let voter = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".parse().unwrap();
//! let (sample, salt) = (BlockHash([1; 32]), [7u8; 32]);
//! let commit = VoteCommit {
//!     sample,
//!     voter,
//!     commitment: vote_commitment(sample, VoteVerdict::Accept, &salt, voter),
//!     stake: 10,
//! };
//! let reveal = |verdict| VoteReveal { commit: BlockHash([2; 32]), verdict, salt: hex::encode(salt) };
//! assert!(check_reveal(&commit, &reveal(VoteVerdict::Accept)).is_ok());
//! assert_eq!(check_reveal(&commit, &reveal(VoteVerdict::Refuse)).unwrap_err().code(), "reveal_mismatch");
//! ```
//!
//! Must not depend on: HTTP, the ledger, `blyan-pol` (the validator set reaches [`GateView`] as a
//! function, so `blyan-pol` may read samples). It depends on `blyan-chain` (entries are blocks) and
//! `blyan-moe` (the L1 teacher model).
//!
//! # Example
//! ```
//! use blyan_quality::{AcceptedIndex, L0Config, Licence, Sample, SampleContent, screen_l0};
//! use blyan_chain::{Address, BlockHash};
//!
//! let sample = Sample::new(
//!     SampleContent::Text { text: "The sea was calm and the sky was clear all morning.".into() },
//!     Licence::Cc0,
//!     "own writing",
//!     "en",
//!     Address::ZERO,
//! )?;
//! let mut index = AcceptedIndex::new();
//! screen_l0(&sample, &index, &L0Config::default())?;
//! index.insert(&sample, BlockHash([1; 32]));
//! let again = screen_l0(&sample, &index, &L0Config::default()).unwrap_err();
//! assert_eq!(again.code(), "exact_duplicate");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![forbid(unsafe_code)]

// A dependency only so its build script's `DEP_TCH_LIBTORCH_LIB` reaches ours, which embeds
// libtorch's directory as an rpath (build/torch_rpath.rs).
use torch_sys as _;

mod charset;
mod gate_record;
mod gate_state;
mod l0;
mod l1;
mod minhash;
mod patterns;
mod sample;

pub use charset::{LANGUAGES, Script};
pub use gate_record::{
    GateError, L1Outcome, REVIEW_NOTE_BYTES_MAX, REVIEW_SAMPLES_MAX, Review, ReviewVerdict,
    TeacherResult, VOTE_SALT_BYTES, VoteCommit, VoteReveal, VoteVerdict, check_reveal, parse_salt,
    vote_commitment,
};
pub use gate_state::{
    DataBlock, GateEvent, GateParams, GateView, SampleState, SampleView, TallyView, VoteView,
};
pub use l0::{
    CharsetProblem, L0Config, L0ConfigError, Refusal, decode_submitted, screen_document, screen_l0,
    screen_signed, screen_signed_where,
};
pub use l1::{
    L1Verdict, QualityError, SCORE_BATCH_TOKENS_MAX, ScoreOptions, ScorePlan, ScoreProgress,
    TeacherBand, Window, judge_l1, score_bits_per_byte, score_plan,
};
pub use minhash::{
    ACCEPTED_SAMPLES_MAX, AcceptedIndex, LSH_BANDS, LSH_ROWS, MINHASH_PERMUTATIONS, NearMatch,
    SHINGLE_CHARS, SHINGLE_WORDS, Signature,
};
pub use patterns::{PersonalDataKind, SecretKind};
pub use sample::{
    DATA_RECORD_BYTES_MAX, DATA_RECORD_FORMAT, DataRecord, Licence, SAMPLE_SOURCE_BYTES_MAX,
    SAMPLE_TEXT_BYTES_MAX, SAMPLE_TEXT_CHARS_MIN, Sample, SampleContent, SchemaError, content_hash,
    decode_record, encode_record, normalize,
};

use blyan_chain::BlockHash;

/// The gates, in the order an entry meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum GateLevel {
    /// Cheap filters: length, format, duplicates, banned content.
    L0Filter,
    /// A model-based score (teacher perplexity).
    L1Model,
    /// Community votes.
    L2Community,
    /// Optional reviewers.
    L3Review,
    /// The Proof-of-Learning outcome of training on the entry.
    L4Learning,
}

/// What one gate decided.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// The entry goes on to the next gate.
    Pass,
    /// The entry stops here.
    Reject,
    /// The gate has not decided yet (votes or reviews outstanding).
    Pending,
}

/// One recorded decision about one dataset entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateDecision {
    /// The dataset entry's block.
    pub entry: BlockHash,
    /// Which gate decided.
    pub level: GateLevel,
    /// What it decided.
    pub verdict: Verdict,
    /// Why, in words a contributor can act on.
    pub reason: String,
}
