//! The node itself: `GET /health`, `GET /model`, the expert dashboard, Proof-of-Learning status
//! and the signed-in wallet's balance and history.

use blyan_primitives::{Address, BlockHash};
use serde::{Deserialize, Serialize};

/// Body of `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok` while the node serves.
    pub status: String,
    /// The node's version.
    pub version: String,
    /// Seconds since the node started.
    pub uptime_seconds: u64,
    /// `untrained seed` or `trained`; absent when no model is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// What the served model is (its meta block's description, e.g. the shipped default
    /// model's name); absent when no model is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_description: Option<String>,
}

/// One model: its meta block and what it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelSummary {
    /// The model's meta block (its `config.json`, tokenizer and shared-weight blocks).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub meta_block: BlockHash,
    /// `untrained seed` or `trained`.
    pub model: String,
    /// Where the weights come from.
    pub description: String,
}

/// Body of `GET /model`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelStatus {
    /// The newest model on the chain; absent when the chain holds none.
    pub chain: Option<ModelSummary>,
    /// The model this node serves; absent when it serves none. It differs from `chain` only
    /// while a newly published model loads, or when that model failed to load (see the log).
    pub serving: Option<ModelSummary>,
    /// The token limits of a chat on the served model; absent when it serves none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ChatLimits>,
}

/// The token limits of one chat, as `GET /model` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatLimits {
    /// Most tokens of one chat, prompt plus completion (`api.context_tokens_max`, lowered to
    /// the model's `max_position_embeddings`). A longer prompt is refused with
    /// `prompt_too_long`; a paid `max_tokens` past what the prompt leaves, with
    /// `context_length_exceeded`.
    pub context_tokens_max: u32,
    /// Completion tokens when a request gives no `max_tokens` (fewer when the context has less
    /// room).
    pub completion_tokens_default: u32,
    /// Most completion tokens the free tier generates (`api.free_tier.completion_tokens_max`):
    /// it answers within it rather than refusing.
    pub free_tier_completion_tokens_max: u32,
}

/// One expert of the served model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExpertInfo {
    /// `layer{L}.expert{E}`.
    pub id: String,
    /// Decoder layer.
    pub layer: u32,
    /// Expert within the layer.
    pub expert: u32,
    /// Current version on the parameter chain, if the chain holds one.
    pub version: Option<u32>,
    /// Hash of the block holding that version.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub block: Option<BlockHash>,
    /// Token positions this expert processed since the node started.
    pub uses: u64,
    /// Whether its weights are in the expert cache now.
    pub cached: bool,
}

/// Expert cache counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CacheInfo {
    /// Lookups answered from memory.
    pub hits: u64,
    /// Lookups that loaded an expert.
    pub misses: u64,
    /// hits / (hits + misses).
    pub hit_rate: f64,
    /// Experts dropped to stay in budget.
    pub evictions: u64,
    /// Bytes of expert weights held.
    pub resident_bytes: u64,
    /// The cache's byte budget.
    pub capacity_bytes: u64,
}

/// Body of `GET /experts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExpertsResponse {
    /// `untrained seed` or `trained`.
    pub model: String,
    /// Where the weights come from.
    pub source: String,
    /// Experts, layer by layer.
    pub experts: Vec<ExpertInfo>,
    /// The expert cache.
    pub cache: CacheInfo,
}

/// Body of `GET /wallet/balance`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BalanceResponse {
    /// The wallet.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub wallet: Address,
    /// Spendable, BLY.
    pub available: String,
    /// Held for chats in progress, BLY.
    pub held: String,
    /// Always `BLY`.
    pub unit: String,
}

/// Body of `POST /faucet`: what the claim granted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FaucetResponse {
    /// The wallet funded.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub wallet: Address,
    /// BLY granted by this claim.
    pub granted: String,
    /// The ledger transaction (kind `grant`, memo `faucet`) that the wallet's history shows.
    pub tx_id: u64,
    /// Always `BLY`.
    pub unit: String,
}

/// One entry of the wallet's history.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryEntry {
    /// The entry id (page cursor).
    pub entry_id: u64,
    /// The transaction's kind.
    pub kind: String,
    /// `debit` or `credit`.
    pub direction: String,
    /// BLY.
    pub amount: String,
    /// The transaction's memo.
    pub memo: String,
    /// Unix milliseconds.
    pub created_at_ms: u64,
}

/// Body of `GET /wallet/history`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryResponse {
    /// Newest first.
    pub items: Vec<HistoryEntry>,
    /// `before` for the next page; absent on the last page.
    pub next: Option<u64>,
}
