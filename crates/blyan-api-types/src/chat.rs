//! Chat: `POST /chat`, `POST /chat/stream` (its final `done` event) and the OpenAI-compatible
//! `POST /v1/chat/completions`.

use serde::{Deserialize, Serialize};

/// The model name a node serves (the OpenAI `model` field).
pub const MODEL_ID: &str = "blyan-moe";

/// One message of a conversation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Text, or (as OpenAI clients may send) an array of `{"type": "text", "text": ...}` parts.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub content: serde_json::Value,
}

/// Body of `POST /chat` and `POST /chat/stream`; `/v1/chat/completions` is mapped onto it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatRequest {
    /// The conversation so far, oldest first.
    pub messages: Vec<ChatMessage>,
    /// Most tokens to generate (free tier: capped by `api.free_tier.completion_tokens_max`).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature, 0 for greedy; default 1.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Sampler seed, for reproducible answers.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Must be [`MODEL_ID`] when given.
    #[serde(default)]
    pub model: Option<String>,
    /// Stop sequences (OpenAI's `stop`: one string or up to [`STOP_SEQUENCES_MAX`]): the answer
    /// ends before the first occurrence of any of them, which is not part of the text, and its
    /// finish reason is `stop`.
    #[serde(
        default,
        deserialize_with = "stop_sequences",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<String>>))]
    pub stop: Option<Vec<String>>,
}

/// Most stop sequences one request may give (as OpenAI).
pub const STOP_SEQUENCES_MAX: usize = 4;

/// Longest stop sequence, in bytes.
pub const STOP_SEQUENCE_BYTES_MAX: usize = 256;

/// `stop` as OpenAI accepts it: `null`, one string, or an array of strings.
fn stop_sequences<'de, D>(deserializer: D) -> Result<Option<Vec<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stop {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Stop>::deserialize(deserializer)? {
        None => None,
        Some(Stop::One(one)) => Some(vec![one]),
        Some(Stop::Many(many)) => Some(many),
    })
}

/// Token counts of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    /// Tokens of the formatted prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
}

/// Experts of one layer that processed the request's tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LayerExperts {
    /// Decoder layer, from 0.
    pub layer: u32,
    /// Experts that processed at least one token, ascending.
    pub experts: Vec<u32>,
    /// Token positions each of `experts` processed.
    pub tokens: Vec<u32>,
}

/// What a request cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Cost {
    /// `free` (anonymous) or `paid` (a signed-in wallet).
    pub tier: String,
    /// Tokens charged: the completion tokens of a paid request, 0 otherwise.
    pub tokens_charged: u64,
    /// BLY charged to the wallet.
    pub charged: String,
    /// Part of the charge burned, BLY.
    pub burned: String,
    /// Held and given back to the wallet, BLY.
    pub released: String,
    /// Always `BLY`.
    pub unit: String,
}

/// Expert cache counters during the request (node-wide: concurrent requests share the cache).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CacheDelta {
    /// Lookups answered from memory.
    pub hits: u64,
    /// Lookups that loaded an expert.
    pub misses: u64,
}

/// The end of a chat: the last SSE event of `/chat/stream`, and the body of `/chat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatDone {
    /// Request id (also in the ledger's idempotency keys).
    pub id: String,
    /// [`MODEL_ID`].
    pub model: String,
    /// The whole generated text.
    pub text: String,
    /// `stop` (end of sequence or a stop sequence), `length` (token budget), `time_limit` or
    /// `cancelled`.
    pub finish_reason: String,
    /// Token counts.
    pub usage: Usage,
    /// Experts used per layer.
    pub experts: Vec<LayerExperts>,
    /// What it cost.
    pub cost: Cost,
    /// Expert cache activity while it ran.
    pub cache: CacheDelta,
}

/// `stream_options` of an OpenAI request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamOptions {
    /// Send a last chunk with the usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// Body of `POST /v1/chat/completions` (the OpenAI fields a node implements; others are
/// ignored).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompletionRequest {
    /// Must be [`MODEL_ID`].
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Most tokens to generate (older name).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Most tokens to generate.
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature (0 greedy).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Sampler seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Stream chunks as Server-Sent Events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Number of choices; only 1 is supported.
    #[serde(default)]
    pub n: Option<u32>,
    /// Stop sequences: one string or up to [`STOP_SEQUENCES_MAX`].
    #[serde(
        default,
        deserialize_with = "stop_sequences",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<String>>))]
    pub stop: Option<Vec<String>>,
}

impl CompletionRequest {
    /// The chat this OpenAI request asks for (`max_completion_tokens` over the older
    /// `max_tokens`).
    pub fn to_chat_request(&self) -> ChatRequest {
        ChatRequest {
            messages: self.messages.clone(),
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            model: Some(self.model.clone()),
            stop: self.stop.clone(),
        }
    }
}
