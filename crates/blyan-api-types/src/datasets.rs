//! The dataset routes (`docs/datasets.md`): `POST /datasets` (a sample from the signed-in
//! wallet), `GET /datasets` (samples by state, paged), `GET /datasets/{hash}` (one sample's gate
//! history), `GET /datasets/progress` (the L1 worker), and the L2 vote routes
//! `POST /datasets/{hash}/commit` and `POST /datasets/reveal`.

use std::collections::BTreeMap;

use blyan_primitives::BlockHash;
use serde::{Deserialize, Serialize};

/// Body of `POST /datasets`: `text`, or `prompt` and `response`, with licence, source, language.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DatasetSubmit {
    /// Plain text to learn from (or `prompt` and `response`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// What is asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// What should be answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// `CC0-1.0`, `CC-BY-4.0`, `CC-BY-SA-4.0`, `MIT`, `Apache-2.0` or `public-domain`.
    pub licence: String,
    /// Where the text came from.
    pub source: String,
    /// Lower-case ISO 639-1 code (`en`).
    pub language: String,
}

/// A dataset block the node wrote: a sample, a vote commit or a reveal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DatasetWritten {
    /// The block's hash.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub block: BlockHash,
}

/// Body of `POST /datasets/{hash}/commit`: a hidden vote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DatasetVoteCommit {
    /// blake3 commitment of `sample ‖ verdict ‖ salt ‖ voter` (64 lower-case hex digits,
    /// `docs/datasets.md`).
    pub commitment: String,
    /// Whole BLY locked with the vote: its weight.
    pub stake: u64,
}

/// Body of `POST /datasets/reveal`: the opening of a commit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DatasetVoteReveal {
    /// The commit's block.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub commit: BlockHash,
    /// `accept` or `refuse`.
    pub verdict: String,
    /// The salt (64 lower-case hex digits).
    pub salt: String,
}

/// One event of a sample's gate history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DatasetEvent {
    /// The block (none for a window closing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub block: Option<BlockHash>,
    /// When, ms since the epoch.
    pub timestamp_ms: u64,
    /// `sample`, `teacher_result`, `vote_commit`, `vote_reveal`, `tally` or `review`.
    pub event: String,
    /// Whether it counted.
    pub counted: bool,
    /// Details, or why it did not count.
    pub detail: String,
}

/// One L2 vote on a sample.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DatasetVote {
    /// The commit's block.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub commit: BlockHash,
    /// The voter.
    pub voter: String,
    /// Stake, whole BLY.
    pub stake: u64,
    /// The revealed verdict, once revealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
}

/// A sample and where it stands.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DatasetSample {
    /// The sample's block.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hash: BlockHash,
    /// Height on chain D.
    pub height: u64,
    /// When it was appended, ms since the epoch.
    pub timestamp_ms: u64,
    /// The wallet paid when a certified candidate uses it.
    pub contributor: String,
    /// Its licence.
    pub licence: String,
    /// Where it came from.
    pub source: String,
    /// Its language.
    pub language: String,
    /// blake3 of the normalized text.
    pub content_hash: String,
    /// The text a model trains on.
    pub text: String,
    /// `submitted`, `l1_refused`, `voting`, `revealing`, `refused`, `accepted`, `usable` or
    /// `review_refused`.
    pub state: String,
    /// The L1 score, bits per byte, once scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits_per_byte: Option<f64>,
    /// When the commit window closes, once voting opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_closes_ms: Option<u64>,
    /// When the reveal window closes, once voting opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reveal_closes_ms: Option<u64>,
    /// Counted votes.
    pub votes: Vec<DatasetVote>,
    /// Every record about the sample and the tally, in time order.
    pub history: Vec<DatasetEvent>,
}

/// Body of `GET /datasets`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DatasetList {
    /// The page, in chain order.
    pub samples: Vec<DatasetSample>,
    /// Samples matching in all.
    pub total: u64,
    /// The `offset` of the next page, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u64>,
}

/// Body of `GET /datasets/progress`: the L1 worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DatasetProgressInfo {
    /// Whether the worker runs (`datasets.worker`).
    pub worker: bool,
    /// Whether it has an L1 teacher to score with.
    pub teacher: bool,
    /// Samples it scored since the node started.
    pub scored: u64,
    /// Its passes since the node started.
    pub passes: u64,
    /// Samples waiting for L1.
    pub waiting: u64,
    /// The last pass's failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Samples per state.
    pub states: BTreeMap<String, u64>,
}
