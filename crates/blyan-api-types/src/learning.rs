//! `GET /learning`: what the node's background learner is doing and how its held-out loss moved.

use blyan_primitives::{BlockHash, ExpertName};
use serde::{Deserialize, Serialize};

/// Body of `GET /learning`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LearningStatus {
    /// `learning.enabled` of the node's configuration; everything else is empty when false.
    pub enabled: bool,
    /// `disabled`, `starting`, `running`, `paused` (waiting for inference to finish),
    /// `stopped` or `failed`.
    pub state: String,
    /// True while the learner waits for chat requests in flight.
    pub paused_for_inference: bool,
    /// Why the learner stopped, when `state` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The experts being fine-tuned.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub experts: Vec<ExpertName>,
    /// Whether their layers' routers train too.
    pub router: bool,
    /// Optimizer steps done (across restarts).
    pub steps: u64,
    /// Training tokens consumed (across restarts).
    pub tokens: u64,
    /// Sequences per step, after fitting a step into the slice.
    pub batch_size: u32,
    /// Tokens per sequence.
    pub positions: u32,
    /// Target slice length, milliseconds.
    pub slice_ms: u32,
    /// Duration of the last slice, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_slice_ms: Option<f64>,
    /// Slices (since start) that took longer than `slice_ms`.
    pub slices_over_budget: u64,
    /// Training tokens in the corpus.
    pub train_tokens: u64,
    /// Held-out tokens in the corpus.
    pub held_out_tokens: u64,
    /// The last step's training loss, nats per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_train_loss: Option<f64>,
    /// The last held-out loss, nats per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_eval_loss: Option<f64>,
    /// The served weights' held-out loss when the learner started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<LearningEval>,
    /// Loss over time, oldest first, at most `LEARNING_HISTORY_POINTS_MAX` points.
    pub history: Vec<LearningPoint>,
    /// Each expert's share of its layer's routed training tokens, `[layer][expert]`.
    pub expert_shares: Vec<Vec<f64>>,
    /// Candidates made since learning began.
    pub candidates_made: u64,
    /// The newest candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_candidate: Option<LearningCandidate>,
}

/// A held-out evaluation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LearningEval {
    /// Optimizer steps done when it ran.
    pub step: u64,
    /// Held-out loss, nats per token.
    pub eval_loss: f64,
    /// The same in bits per byte of held-out text.
    pub bits_per_byte: f64,
}

/// One point of the loss curve.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LearningPoint {
    /// Optimizer steps done.
    pub step: u64,
    /// Mean training loss of the steps since the previous point (absent at the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_loss: Option<f64>,
    /// Held-out loss at `step`.
    pub eval_loss: f64,
    /// When, in milliseconds since the Unix epoch.
    pub time_ms: u64,
}

/// Trained experts exported (and perhaps published) because the held-out loss improved enough.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LearningCandidate {
    /// The experts it changes.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub experts: Vec<ExpertName>,
    /// Held-out loss of the weights it improves on (the served ones or the previous candidate).
    pub eval_loss_before: f64,
    /// Its held-out loss.
    pub eval_loss_after: f64,
    /// Optimizer steps done when it was made.
    pub step: u64,
    /// When, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The checkpoint directory it was exported to.
    pub dir: String,
    /// Whether it was written to the node's chain.
    pub published: bool,
    /// The model's meta block after publishing, when it was published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub meta_block: Option<BlockHash>,
}
