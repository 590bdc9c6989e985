//! Chat: from a request to the model and the ledger, shared by `/chat`, `/chat/stream` and the
//! OpenAI-compatible `/v1/chat/completions`.
//!
//! A paid request (a signed-in wallet) goes quote → authorize (hold) → generate → capture of
//! the completion tokens actually generated. The hold is released instead when generation fails
//! or the client goes away before the end, so a failed request is never charged. Anonymous
//! callers use the free tier: no ledger, a per-IP quota and a smaller token budget.
//!
//! Generation runs on a blocking thread (each step is one forward pass of the model) and sends
//! its deltas through a bounded channel to a driver task, which forwards them to the response
//! and settles the payment. The driver outlives the response, so a client that disconnects
//! still gets its hold released.

use std::sync::Arc;
use std::time::Instant;

use blyan_ledger::{
    Address as LedgerAddress, AuthorizeRequest, CaptureRequest, Hold, IdempotencyKey, Ledger as _,
    LedgerError, QuoteRequest, ReleaseRequest,
};
use blyan_moe::{CancelToken, Delta, FinishReason, MoeError, SamplingParams, TokenStream};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::ToSchema;

use crate::extract::{Caller, rate_limit};
use crate::server::AppState;
use crate::signin::WalletAddress;
use crate::{Error, Result};

/// The model name this node serves (the OpenAI `model` field).
pub const MODEL_ID: &str = "blyan-moe";

/// Most messages in one chat request.
pub const CHAT_MESSAGES_MAX: usize = 64;

/// Longest message content, in bytes.
pub const CHAT_MESSAGE_BYTES_MAX: usize = 16 * 1024;

/// Most prompt tokens (the formatted conversation) one request may send; the model's context
/// may lower it further.
pub const PROMPT_TOKENS_MAX: u32 = 1536;

/// Most completion tokens a paid request may ask for. Bounded so that a generation ends well
/// within the ledger's hold lifetime.
pub const CHAT_COMPLETION_TOKENS_MAX: u32 = 1024;

/// Completion tokens when a request does not say.
pub const CHAT_COMPLETION_TOKENS_DEFAULT: u32 = 128;

/// Deltas buffered between the generating thread and the response.
const CHAT_DELTAS_DEPTH: usize = 32;

const _: () = assert!(
    CHAT_COMPLETION_TOKENS_DEFAULT <= CHAT_COMPLETION_TOKENS_MAX,
    "the default budget must be one a request could ask for"
);

/// One message of a conversation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Text, or (as OpenAI clients may send) an array of `{"type": "text", "text": ...}` parts.
    #[schema(value_type = String)]
    pub content: serde_json::Value,
}

/// Body of `POST /chat` and `POST /chat/stream`; `/v1/chat/completions` is mapped onto it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
}

/// Token counts of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// Tokens of the formatted prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
}

/// Experts of one layer that processed the request's tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LayerExperts {
    /// Decoder layer, from 0.
    pub layer: u32,
    /// Experts that processed at least one token, ascending.
    pub experts: Vec<u32>,
    /// Token positions each of `experts` processed.
    pub tokens: Vec<u32>,
}

/// What a request cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CacheDelta {
    /// Lookups answered from memory.
    pub hits: u64,
    /// Lookups that loaded an expert.
    pub misses: u64,
}

/// The end of a chat: the last SSE event of `/chat/stream`, and the body of `/chat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatDone {
    /// Request id (also in the ledger's idempotency keys).
    pub id: String,
    /// [`MODEL_ID`].
    pub model: String,
    /// The whole generated text.
    pub text: String,
    /// `stop` (end of sequence), `length` (token budget) or `cancelled`.
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

/// A piece of a running chat, as the driver hands it to the response.
#[derive(Debug)]
pub(crate) enum ChatEvent {
    /// Generated text.
    Delta(String),
    /// The end, with the settled cost.
    Done(Box<ChatDone>),
    /// A failure after the response started; nothing was charged.
    Failed(Error),
}

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::InvalidRequest {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn message_text(index: usize, content: &serde_json::Value) -> Result<String> {
    let field = || format!("messages[{index}].content");
    let text = match content {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("text"), Some(piece)) => text.push_str(piece),
                    _ => return Err(invalid(&field(), "only text parts are supported")),
                }
            }
            text
        }
        _ => {
            return Err(invalid(
                &field(),
                "must be a string or an array of text parts",
            ));
        }
    };
    if text.len() > CHAT_MESSAGE_BYTES_MAX {
        return Err(invalid(
            &field(),
            format!("longer than {CHAT_MESSAGE_BYTES_MAX} bytes"),
        ));
    }
    Ok(text)
}

/// The conversation as the model reads it: one `<|role|>` block per message, then the
/// assistant's turn.
pub(crate) fn format_prompt(messages: &[ChatMessage]) -> Result<String> {
    if messages.is_empty() {
        return Err(invalid("messages", "must not be empty"));
    }
    if messages.len() > CHAT_MESSAGES_MAX {
        return Err(invalid(
            "messages",
            format!("at most {CHAT_MESSAGES_MAX} messages"),
        ));
    }
    let mut prompt = String::new();
    for (index, message) in messages.iter().enumerate() {
        if !matches!(message.role.as_str(), "system" | "user" | "assistant") {
            return Err(invalid(
                &format!("messages[{index}].role"),
                "must be system, user or assistant",
            ));
        }
        let text = message_text(index, &message.content)?;
        prompt.push_str(&format!("<|{}|>\n{text}\n", message.role));
    }
    prompt.push_str("<|assistant|>\n");
    Ok(prompt)
}

/// Whether and how a request pays.
#[derive(Debug)]
enum Payment {
    Free,
    Paid { wallet: WalletAddress, hold: Hold },
}

/// A chat ready to run: validated, paid for (held), its stream created.
pub(crate) struct PreparedChat {
    id: String,
    /// The model the stream runs on (the node may switch to a newer one meanwhile).
    generator: blyan_moe::Generator,
    stream: TokenStream,
    cancel: CancelToken,
    payment: Payment,
    started: Instant,
}

impl PreparedChat {
    /// The request's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }
}

fn random_request_id() -> String {
    let mut bytes = [0_u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn key(id: &str, step: &str) -> Result<IdempotencyKey> {
    IdempotencyKey::new(format!("chat:{id}:{step}")).map_err(|error| Error::LedgerUnavailable {
        reason: error.to_string(),
    })
}

/// A ledger error as the caller sees it: refusals are the caller's (nothing moved), anything
/// else is the node's.
fn ledger_error(state: &AppState, operation: &str, error: LedgerError) -> Error {
    state
        .metrics
        .ledger_operations
        .with_label_values(&[
            operation,
            if error.is_refusal() {
                "refused"
            } else {
                "failed"
            },
        ])
        .inc();
    match error {
        LedgerError::InsufficientFunds {
            available,
            required,
            ..
        } => Error::InsufficientBalance {
            available: available.to_string(),
            required: required.to_string(),
        },
        // A wallet that never received BLY holds nothing: for its owner that is a balance of 0.
        LedgerError::UnknownAccount { .. } => Error::InsufficientBalance {
            available: "0".to_owned(),
            required: "more than 0".to_owned(),
        },
        error if error.is_refusal() => Error::PaymentRefused {
            reason: error.to_string(),
        },
        error => {
            tracing::error!(%error, operation, "ledger failed");
            Error::LedgerUnavailable {
                reason: format!("{operation} failed"),
            }
        }
    }
}

fn ledger_ok(state: &AppState, operation: &str) {
    state
        .metrics
        .ledger_operations
        .with_label_values(&[operation, "ok"])
        .inc();
}

fn sampling_error(error: MoeError) -> Error {
    match error {
        MoeError::InvalidSampling { field, reason, .. } => invalid(field, reason),
        MoeError::ContextTooLong {
            prompt_tokens,
            context_tokens_max,
            ..
        } => Error::PromptTooLong {
            tokens: prompt_tokens,
            max: context_tokens_max.saturating_sub(1),
        },
        MoeError::EmptyPrompt => invalid("messages", "the prompt is empty"),
        error => Error::Generation {
            reason: error.to_string(),
        },
    }
}

/// Validates `input`, takes the caller's quota or payment hold, and creates the token stream.
pub(crate) async fn prepare(
    state: &AppState,
    caller: &Caller,
    input: ChatRequest,
) -> Result<PreparedChat> {
    let started = Instant::now();
    rate_limit(state, caller)?;
    if let Some(model) = input.model.as_ref().filter(|model| *model != MODEL_ID) {
        return Err(Error::UnknownModel {
            model: model.chars().take(64).collect(),
            served: MODEL_ID,
        });
    }
    let generator = state.generator().ok_or(Error::ModelUnavailable)?;
    let prompt = format_prompt(&input.messages)?;
    let max_tokens = match (caller.wallet(), input.max_tokens) {
        (_, Some(0)) => return Err(invalid("max_tokens", "must be at least 1")),
        (Some(_), Some(asked)) if asked > CHAT_COMPLETION_TOKENS_MAX => {
            return Err(invalid(
                "max_tokens",
                format!("at most {CHAT_COMPLETION_TOKENS_MAX}"),
            ));
        }
        (Some(_), asked) => asked.unwrap_or(CHAT_COMPLETION_TOKENS_DEFAULT),
        // The free tier answers within its budget rather than refusing: `length` says so.
        (None, asked) => asked
            .unwrap_or(CHAT_COMPLETION_TOKENS_DEFAULT)
            .min(state.config.api.free_tier.completion_tokens_max),
    };
    let ids = generator
        .tokenizer()
        .encode(&prompt)
        .map_err(|error| invalid("messages", error.to_string()))?;
    let context = generator.info().config.max_position_embeddings;
    let prompt_tokens_max = PROMPT_TOKENS_MAX.min(context.saturating_sub(1));
    let prompt_tokens = u32::try_from(ids.len()).unwrap_or(u32::MAX);
    if prompt_tokens > prompt_tokens_max {
        return Err(Error::PromptTooLong {
            tokens: u64::from(prompt_tokens),
            max: u64::from(prompt_tokens_max),
        });
    }
    let params = SamplingParams {
        max_tokens,
        temperature: input.temperature.unwrap_or(1.0),
        top_p: input.top_p,
        seed: input.seed.unwrap_or_else(|| rand::rngs::OsRng.next_u64()),
        ..SamplingParams::default()
    };
    params
        .validate(generator.info().config.vocab_size)
        .map_err(sampling_error)?;

    let id = random_request_id();
    let payment = match caller.wallet() {
        None => {
            if !state.config.api.free_tier.enabled {
                return Err(Error::FreeTierDisabled);
            }
            state
                .limits
                .free_tier
                .check(&caller.ip(), Instant::now())
                .map_err(|retry_after_seconds| Error::FreeTierExhausted {
                    retry_after_seconds,
                })?;
            Payment::Free
        }
        Some(wallet) => Payment::Paid {
            wallet: *wallet,
            hold: authorize(state, &id, wallet, max_tokens).await?,
        },
    };
    let cancel = CancelToken::new();
    match generator.stream_ids(ids, params, cancel.clone()) {
        Ok(stream) => Ok(PreparedChat {
            id,
            generator,
            stream,
            cancel,
            payment,
            started,
        }),
        Err(error) => {
            release(state, &id, &payment).await;
            Err(sampling_error(error))
        }
    }
}

async fn authorize(
    state: &AppState,
    id: &str,
    wallet: &WalletAddress,
    max_tokens: u32,
) -> Result<Hold> {
    let ledger = state
        .ledger
        .as_ref()
        .ok_or_else(|| Error::LedgerUnavailable {
            reason: "this node runs without a ledger: only the free tier is served".to_owned(),
        })?;
    let payer = LedgerAddress::from_bytes(*wallet.as_bytes());
    let quote = ledger
        .quote(QuoteRequest {
            key: key(id, "quote")?,
            payer,
            estimated_tokens: u64::from(max_tokens),
        })
        .await
        .map_err(|error| ledger_error(state, "quote", error))?;
    ledger_ok(state, "quote");
    let hold = ledger
        .authorize(AuthorizeRequest {
            key: key(id, "authorize")?,
            quote: quote.id,
        })
        .await
        .map_err(|error| ledger_error(state, "authorize", error))?;
    ledger_ok(state, "authorize");
    Ok(hold)
}

/// Gives a paid request's hold back. A failure is logged: the ledger's expiry releases the hold
/// later in any case.
async fn release(state: &AppState, id: &str, payment: &Payment) {
    let (Payment::Paid { hold, .. }, Some(ledger)) = (payment, state.ledger.as_ref()) else {
        return;
    };
    let request = match key(id, "release") {
        Ok(key) => ReleaseRequest { key, hold: hold.id },
        Err(error) => {
            tracing::error!(%error, "cannot name the release");
            return;
        }
    };
    match ledger.release(request).await {
        Ok(_) => ledger_ok(state, "release"),
        Err(error) => {
            ledger_error(state, "release", error);
        }
    }
}

/// Runs a prepared chat in the background; its events arrive on the returned channel. Dropping
/// the receiver cancels the generation and releases the hold.
pub(crate) fn run(state: Arc<AppState>, chat: PreparedChat) -> mpsc::Receiver<ChatEvent> {
    let (events, receiver) = mpsc::channel(CHAT_DELTAS_DEPTH);
    tokio::spawn(drive(state, chat, events));
    receiver
}

struct Generated {
    stream: TokenStream,
    failure: Option<Error>,
    client_gone: bool,
    text: String,
}

/// Streams deltas from a blocking generation thread to `events` until the end, a model error,
/// or the client going away (which cancels the generation).
async fn generate(
    state: &AppState,
    stream: TokenStream,
    cancel: &CancelToken,
    started: Instant,
    events: &mpsc::Sender<ChatEvent>,
) -> Result<Generated> {
    let (deltas, mut receiver) =
        mpsc::channel::<std::result::Result<Delta, MoeError>>(CHAT_DELTAS_DEPTH);
    let thread = tokio::task::spawn_blocking(move || {
        let mut stream = stream;
        for item in stream.by_ref() {
            let failed = item.is_err();
            if deltas.blocking_send(item).is_err() || failed {
                break;
            }
        }
        stream
    });
    let mut failure = None;
    let mut client_gone = false;
    let mut first_token = true;
    let mut text = String::new();
    loop {
        tokio::select! {
            item = receiver.recv() => match item {
                None => break,
                Some(Ok(delta)) => {
                    if delta.text.is_empty() {
                        continue;
                    }
                    if first_token {
                        state.metrics.first_token_seconds.observe(started.elapsed().as_secs_f64());
                        first_token = false;
                    }
                    text.push_str(&delta.text);
                    if events.send(ChatEvent::Delta(delta.text)).await.is_err() {
                        client_gone = true;
                        break;
                    }
                }
                Some(Err(error)) => {
                    failure = Some(Error::Generation { reason: error.to_string() });
                    break;
                }
            },
            () = events.closed() => {
                client_gone = true;
                break;
            }
        }
    }
    if client_gone {
        cancel.cancel();
    }
    // Dropping the receiver also unblocks a thread waiting to send.
    drop(receiver);
    let stream = thread.await.map_err(|error| Error::Generation {
        reason: format!("generation thread failed: {error}"),
    })?;
    Ok(Generated {
        stream,
        failure,
        client_gone,
        text,
    })
}

fn finish_reason_name(reason: Option<FinishReason>) -> &'static str {
    match reason {
        Some(FinishReason::Stop { .. }) => "stop",
        Some(FinishReason::Length) => "length",
        Some(FinishReason::Cancelled) | None => "cancelled",
        Some(_) => "stop",
    }
}

fn layer_experts(usage: &blyan_moe::ExpertUsage) -> Vec<LayerExperts> {
    usage
        .tokens
        .iter()
        .enumerate()
        .map(|(layer, counts)| {
            let (experts, tokens) = counts
                .iter()
                .enumerate()
                .filter(|(_, count)| **count > 0)
                .map(|(expert, count)| (u32::try_from(expert).unwrap_or(u32::MAX), *count))
                .unzip();
            LayerExperts {
                layer: u32::try_from(layer).unwrap_or(u32::MAX),
                experts,
                tokens,
            }
        })
        .collect()
}

/// Runs the generation, then settles: capture on success, release otherwise.
async fn drive(state: Arc<AppState>, chat: PreparedChat, events: mpsc::Sender<ChatEvent>) {
    let PreparedChat {
        id,
        generator,
        stream,
        cancel,
        payment,
        started,
    } = chat;
    state.metrics.chats_active.inc();
    let cache_before = generator.cache_stats();
    let outcome = generate(&state, stream, &cancel, started, &events).await;
    state.metrics.chats_active.dec();
    let generated = match outcome {
        Ok(generated) => generated,
        Err(error) => {
            release(&state, &id, &payment).await;
            let _ = events.send(ChatEvent::Failed(error)).await;
            return;
        }
    };
    let prompt_tokens = u64::from(generated.stream.prompt_tokens());
    let completion_tokens = u64::try_from(generated.stream.token_ids().len()).unwrap_or(u64::MAX);
    let usage_by_expert = generated.stream.expert_usage().clone();
    state.record_expert_usage(&usage_by_expert);
    let tier = if matches!(payment, Payment::Free) {
        "free"
    } else {
        "paid"
    };
    state
        .metrics
        .tokens
        .with_label_values(&["prompt", tier])
        .inc_by(prompt_tokens);
    state
        .metrics
        .tokens
        .with_label_values(&["completion", tier])
        .inc_by(completion_tokens);
    if let Some(failure) = generated.failure {
        release(&state, &id, &payment).await;
        let _ = events.send(ChatEvent::Failed(failure)).await;
        return;
    }
    if generated.client_gone {
        tracing::debug!(%id, "client went away: hold released");
        release(&state, &id, &payment).await;
        return;
    }
    let cost = match settle(&state, &id, &payment, completion_tokens).await {
        Ok(cost) => cost,
        Err(error) => {
            let _ = events.send(ChatEvent::Failed(error)).await;
            return;
        }
    };
    let cache_after = generator.cache_stats();
    let cache = CacheDelta {
        hits: cache_after.hits.saturating_sub(cache_before.hits),
        misses: cache_after.misses.saturating_sub(cache_before.misses),
    };
    let done = ChatDone {
        id,
        model: MODEL_ID.to_owned(),
        text: generated.text,
        finish_reason: finish_reason_name(generated.stream.finish_reason()).to_owned(),
        usage: Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        },
        experts: layer_experts(&usage_by_expert),
        cost,
        cache,
    };
    let _ = events.send(ChatEvent::Done(Box::new(done))).await;
}

/// Charges a finished request for its completion tokens.
async fn settle(
    state: &AppState,
    id: &str,
    payment: &Payment,
    completion_tokens: u64,
) -> Result<Cost> {
    let zero = || "0".to_owned();
    let Payment::Paid { wallet, hold } = payment else {
        return Ok(Cost {
            tier: "free".to_owned(),
            tokens_charged: 0,
            charged: zero(),
            burned: zero(),
            released: zero(),
            unit: "BLY".to_owned(),
        });
    };
    if completion_tokens == 0 {
        release(state, id, payment).await;
        return Ok(Cost {
            tier: "paid".to_owned(),
            tokens_charged: 0,
            charged: zero(),
            burned: zero(),
            released: hold.amount.to_string(),
            unit: "BLY".to_owned(),
        });
    }
    let ledger = state
        .ledger
        .as_ref()
        .ok_or_else(|| Error::LedgerUnavailable {
            reason: "the ledger went away".to_owned(),
        })?;
    let capture = ledger
        .capture(CaptureRequest {
            key: key(id, "capture")?,
            hold: hold.id,
            actual_tokens: completion_tokens,
            server: state.server_account,
        })
        .await
        .map_err(|error| ledger_error(state, "capture", error))?;
    ledger_ok(state, "capture");
    tracing::info!(%wallet, %id, tokens = completion_tokens, charged = %capture.charged, "chat charged");
    Ok(Cost {
        tier: "paid".to_owned(),
        tokens_charged: completion_tokens,
        charged: capture.charged.to_string(),
        burned: capture.burned.to_string(),
        released: capture.released.to_string(),
        unit: "BLY".to_owned(),
    })
}

/// Collects a chat's events into its final answer (for the non-streaming endpoints).
pub(crate) async fn collect(mut events: mpsc::Receiver<ChatEvent>) -> Result<ChatDone> {
    while let Some(event) = events.recv().await {
        match event {
            ChatEvent::Delta(_) => {}
            ChatEvent::Done(done) => return Ok(*done),
            ChatEvent::Failed(error) => return Err(error),
        }
    }
    Err(Error::Generation {
        reason: "the chat ended without a result".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: &str, content: serde_json::Value) -> ChatMessage {
        ChatMessage {
            role: role.to_owned(),
            content,
        }
    }

    #[test]
    fn prompts_are_formatted_per_role() {
        let prompt = format_prompt(&[
            message("system", "be brief".into()),
            message("user", serde_json::json!([{"type": "text", "text": "hi"}])),
        ])
        .unwrap();
        assert_eq!(
            prompt,
            "<|system|>\nbe brief\n<|user|>\nhi\n<|assistant|>\n"
        );
    }

    #[test]
    fn bad_conversations_are_refused_with_the_field() {
        let check =
            |messages: Vec<ChatMessage>, field: &str| match format_prompt(&messages).unwrap_err() {
                Error::InvalidRequest { field: got, .. } => assert_eq!(got, field),
                other => panic!("{other:?}"),
            };
        check(Vec::new(), "messages");
        check(vec![message("tool", "x".into())], "messages[0].role");
        check(vec![message("user", 5.into())], "messages[0].content");
        let at_bound = "x".repeat(CHAT_MESSAGE_BYTES_MAX);
        format_prompt(&[message("user", at_bound.into())]).unwrap();
        let past_bound = "x".repeat(CHAT_MESSAGE_BYTES_MAX + 1);
        check(
            vec![message("user", past_bound.into())],
            "messages[0].content",
        );
        let many = vec![message("user", "x".into()); CHAT_MESSAGES_MAX];
        format_prompt(&many).unwrap();
        let too_many = vec![message("user", "x".into()); CHAT_MESSAGES_MAX + 1];
        check(too_many, "messages");
    }
}
