//! The chain explorer and block submission: `GET /chain/{chain}`, `GET /chain/{chain}/blocks`,
//! `GET /chain/experts/{id}`, `POST /blocks`. (`GET /blocks/{hash}` answers a block header's
//! own serde form plus `hash` and `dependents`: its type is `blyan_chain::BlockHeader`.)

use blyan_primitives::{BlockHash, ExpertName};
use serde::{Deserialize, Serialize};

/// A page of the explorer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlocksPage {
    /// The chain's letter.
    pub chain: String,
    /// Headers in (height, hash) order; each is the header's fields plus its `hash`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub blocks: Vec<serde_json::Value>,
    /// `from` of the next page; absent when this page reached the chain's tip.
    pub next: Option<u64>,
}

/// Body of `POST /blocks` when the block was appended.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubmittedBlock {
    /// The block's hash.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hash: BlockHash,
}

/// Body of `GET /chain/{chain}`: what a publisher needs to build the chain's next block.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChainSummary {
    /// The chain's letter.
    pub chain: String,
    /// Its genesis block.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub genesis: BlockHash,
    /// Height of its tip (genesis is 0).
    pub tip_height: u64,
    /// Hash of its tip: the parent of the next block.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub tip_hash: BlockHash,
    /// Blocks stored, genesis included.
    pub blocks: u64,
    /// Sum of its payload sizes.
    pub payload_bytes: u64,
    /// `linear` (one block per height) or `allow_forks`.
    pub fork_rule: String,
    /// Leading zero bits of work each block hash needs (0: none).
    pub pow_difficulty_bits: u32,
    /// Largest payload `POST /blocks` takes in one block: the store's limit, or what fits the
    /// request body limit, whichever is smaller.
    pub payload_bytes_max: u64,
}

/// Body of `GET /chain/experts/{id}`: an expert's current version on the chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExpertVersionInfo {
    /// `layer{L}.expert{E}`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub expert: ExpertName,
    /// Its version number, 1 for the first.
    pub version: u32,
    /// The block holding that version.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub block: BlockHash,
}
