//! The chat and billing session, free of any transport: a request is checked and tokenized
//! ([`Node::plan_chat`]), paid for ([`ChatPlan::start`]: quote → authorize, a hold in escrow),
//! generated on a blocking thread that streams deltas through a bounded channel
//! ([`ChatRun`]), then settled: the completion tokens actually generated are captured, or the
//! hold is released when generation fails or the receiver goes away. A failed request is never
//! charged. Callers that are not signed in use the free tier: no ledger, a smaller budget.
//!
//! The HTTP routes (`/chat`, `/chat/stream`, `/v1/chat/completions`) are thin wrappers over
//! this session; its tests drive it without HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use blyan_api_types::{CacheDelta, ChatDone, ChatRequest, Cost, LayerExperts, MODEL_ID, Usage};
use blyan_ledger::{
    Address as LedgerAddress, AuthorizeRequest, CaptureRequest, Hold, IdempotencyKey, Ledger as _,
    LedgerError, QuoteRequest, ReleaseRequest,
};
use blyan_moe::{
    CancelToken, ChatRole, ChatTurn, Delta, FinishReason, Generator, MoeError, SamplingParams,
    TokenStream, format_chat_prompt,
};
use blyan_primitives::Address;
use rand::RngCore as _;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::error::ChatError;
use crate::learner::InferenceGuard;
use crate::node::Node;

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

/// Deltas buffered between the generating thread and the receiver of a [`ChatRun`].
pub const CHAT_DELTAS_DEPTH: usize = 32;

const _: () = assert!(
    CHAT_COMPLETION_TOKENS_DEFAULT <= CHAT_COMPLETION_TOKENS_MAX,
    "the default budget must be one a request could ask for"
);

/// Who pays for a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payer {
    /// Nobody: the free tier (its quota is the caller's to check, per client).
    Free,
    /// A signed-in wallet, charged through the ledger.
    Wallet(Address),
}

impl Payer {
    /// `free` or `paid`, as costs and metrics name the tier.
    pub fn tier(&self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Wallet(_) => "paid",
        }
    }
}

/// Outcome of one ledger call, for [`ChatObserver::ledger_operation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LedgerOutcome {
    /// Done.
    Ok,
    /// Refused for the caller's reason (nothing moved).
    Refused,
    /// The ledger failed.
    Failed,
}

impl LedgerOutcome {
    /// `ok`, `refused` or `failed`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

/// What a chat reports while it runs, for metrics. Every method does nothing by default.
pub trait ChatObserver: Send + Sync {
    /// A ledger call (`quote`, `authorize`, `capture`, `release`) ended with `outcome`.
    fn ledger_operation(&self, operation: &'static str, outcome: LedgerOutcome) {
        let _ = (operation, outcome);
    }
    /// The first token of a chat arrived `elapsed` after its request.
    fn first_token(&self, elapsed: Duration) {
        let _ = elapsed;
    }
    /// A generation started (`running` true) or ended (false).
    fn generating(&self, running: bool) {
        let _ = running;
    }
    /// A finished generation processed these tokens, in `tier` (`free` or `paid`).
    fn tokens(&self, tier: &'static str, prompt: u64, completion: u64) {
        let _ = (tier, prompt, completion);
    }
}

/// An observer that records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl ChatObserver for NoObserver {}

/// A piece of a running chat.
#[derive(Debug)]
#[non_exhaustive]
pub enum ChatEvent {
    /// Generated text.
    Delta(String),
    /// The end, with the settled cost.
    Done(Box<ChatDone>),
    /// A failure after the chat started; nothing was charged.
    Failed(ChatError),
}

fn invalid(field: &str, reason: impl Into<String>) -> ChatError {
    ChatError::InvalidRequest {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn message_text(index: usize, content: &serde_json::Value) -> Result<String, ChatError> {
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

/// The conversation as the model reads it (`blyan_moe::format_chat_prompt`), after checking
/// the number of messages, their roles and their sizes.
pub fn chat_prompt(messages: &[blyan_api_types::ChatMessage]) -> Result<String, ChatError> {
    if messages.is_empty() {
        return Err(invalid("messages", "must not be empty"));
    }
    if messages.len() > CHAT_MESSAGES_MAX {
        return Err(invalid(
            "messages",
            format!("at most {CHAT_MESSAGES_MAX} messages"),
        ));
    }
    let mut texts = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter().enumerate() {
        let role = ChatRole::from_name(&message.role).ok_or_else(|| {
            invalid(
                &format!("messages[{index}].role"),
                "must be system, user or assistant",
            )
        })?;
        texts.push((role, message_text(index, &message.content)?));
    }
    let turns: Vec<ChatTurn<'_>> = texts
        .iter()
        .map(|(role, text)| ChatTurn { role: *role, text })
        .collect();
    Ok(format_chat_prompt(&turns))
}

fn sampling_error(error: MoeError) -> ChatError {
    match error {
        MoeError::InvalidSampling { field, reason, .. } => invalid(field, reason),
        MoeError::ContextTooLong {
            prompt_tokens,
            context_tokens_max,
            ..
        } => ChatError::PromptTooLong {
            tokens: prompt_tokens,
            max: context_tokens_max.saturating_sub(1),
        },
        MoeError::EmptyPrompt => invalid("messages", "the prompt is empty"),
        error => ChatError::Generation {
            reason: error.to_string(),
        },
    }
}

fn random_chat_id() -> String {
    let mut bytes = [0_u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A chat checked and tokenized, not yet paid for: [`ChatPlan::start`] takes the payment hold
/// and starts generating. Dropping a plan costs nothing.
pub struct ChatPlan {
    id: String,
    payer: Payer,
    /// The model the chat runs on (the node may switch to a newer one meanwhile).
    generator: Generator,
    prompt_ids: Vec<u32>,
    params: SamplingParams,
    max_tokens: u32,
    started: Instant,
    /// A place in the generation pool taken before starting ([`ChatPlan::admit`]).
    admitted: Option<InferenceGuard>,
}

impl std::fmt::Debug for ChatPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatPlan")
            .field("id", &self.id)
            .field("payer", &self.payer)
            .field("prompt_tokens", &self.prompt_ids.len())
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Checks `request` for `payer` and tokenizes its prompt: the model it names, the messages
    /// ([`chat_prompt`]), the token budget (a paid request may ask up to
    /// [`CHAT_COMPLETION_TOKENS_MAX`]; the free tier answers within
    /// `api.free_tier.completion_tokens_max` rather than refusing), the prompt's length
    /// ([`PROMPT_TOKENS_MAX`] or the model's context) and the sampling parameters. Nothing is
    /// held or charged.
    pub fn plan_chat(&self, payer: Payer, request: &ChatRequest) -> Result<ChatPlan, ChatError> {
        let started = Instant::now();
        if let Some(model) = request.model.as_ref().filter(|model| *model != MODEL_ID) {
            return Err(ChatError::UnknownModel {
                model: model.chars().take(64).collect(),
                served: MODEL_ID,
            });
        }
        let generator = self.generator().ok_or(ChatError::ModelUnavailable)?;
        let prompt = chat_prompt(&request.messages)?;
        let free_tier = &self.config().api.free_tier;
        let max_tokens = match (payer, request.max_tokens) {
            (_, Some(0)) => return Err(invalid("max_tokens", "must be at least 1")),
            (Payer::Wallet(_), Some(asked)) if asked > CHAT_COMPLETION_TOKENS_MAX => {
                return Err(invalid(
                    "max_tokens",
                    format!("at most {CHAT_COMPLETION_TOKENS_MAX}"),
                ));
            }
            (Payer::Wallet(_), asked) => asked.unwrap_or(CHAT_COMPLETION_TOKENS_DEFAULT),
            // The free tier answers within its budget rather than refusing: `length` says so.
            (Payer::Free, asked) => asked
                .unwrap_or(CHAT_COMPLETION_TOKENS_DEFAULT)
                .min(free_tier.completion_tokens_max),
        };
        let prompt_ids = generator
            .tokenizer()
            .encode(&prompt)
            .map_err(|error| invalid("messages", error.to_string()))?;
        let context = generator.info().config.max_position_embeddings;
        let prompt_tokens_max = PROMPT_TOKENS_MAX.min(context.saturating_sub(1));
        let prompt_tokens = u32::try_from(prompt_ids.len()).unwrap_or(u32::MAX);
        if prompt_tokens > prompt_tokens_max {
            return Err(ChatError::PromptTooLong {
                tokens: u64::from(prompt_tokens),
                max: u64::from(prompt_tokens_max),
            });
        }
        let params = SamplingParams {
            max_tokens,
            temperature: request.temperature.unwrap_or(1.0),
            top_p: request.top_p,
            seed: request.seed.unwrap_or_else(|| rand::rngs::OsRng.next_u64()),
            ..SamplingParams::default()
        };
        params
            .validate(generator.info().config.vocab_size)
            .map_err(sampling_error)?;
        if payer == Payer::Free && !free_tier.enabled {
            return Err(ChatError::FreeTierDisabled);
        }
        Ok(ChatPlan {
            id: random_chat_id(),
            payer,
            generator,
            prompt_ids,
            params,
            max_tokens,
            started,
            admitted: None,
        })
    }
}

fn key(id: &str, step: &str) -> Result<IdempotencyKey, ChatError> {
    IdempotencyKey::new(format!("chat:{id}:{step}")).map_err(|error| ChatError::LedgerUnavailable {
        reason: error.to_string(),
    })
}

/// The ledger and the observer a chat settles through.
struct Billing {
    node: Arc<Node>,
    observer: Arc<dyn ChatObserver>,
}

impl Billing {
    /// A ledger error as the payer sees it: refusals are the payer's (nothing moved), anything
    /// else is the node's.
    fn ledger_error(&self, operation: &'static str, error: LedgerError) -> ChatError {
        let outcome = if error.is_refusal() {
            LedgerOutcome::Refused
        } else {
            LedgerOutcome::Failed
        };
        self.observer.ledger_operation(operation, outcome);
        match error {
            LedgerError::InsufficientFunds {
                available,
                required,
                ..
            } => ChatError::InsufficientBalance {
                available: available.to_string(),
                required: required.to_string(),
            },
            // A wallet that never received BLY holds nothing: for its owner that is a balance
            // of 0.
            LedgerError::UnknownAccount { .. } => ChatError::InsufficientBalance {
                available: "0".to_owned(),
                required: "more than 0".to_owned(),
            },
            error if error.is_refusal() => ChatError::PaymentRefused {
                reason: error.to_string(),
            },
            error => {
                tracing::error!(%error, operation, "ledger failed");
                ChatError::LedgerUnavailable {
                    reason: format!("{operation} failed"),
                }
            }
        }
    }

    fn ledger_ok(&self, operation: &'static str) {
        self.observer.ledger_operation(operation, LedgerOutcome::Ok);
    }

    /// Quotes `max_tokens` for `wallet` and holds the quote in escrow.
    async fn authorize(
        &self,
        id: &str,
        wallet: Address,
        max_tokens: u32,
    ) -> Result<Hold, ChatError> {
        let ledger = self
            .node
            .ledger()
            .ok_or_else(|| ChatError::LedgerUnavailable {
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
            .map_err(|error| self.ledger_error("quote", error))?;
        self.ledger_ok("quote");
        let hold = ledger
            .authorize(AuthorizeRequest {
                key: key(id, "authorize")?,
                quote: quote.id,
            })
            .await
            .map_err(|error| self.ledger_error("authorize", error))?;
        self.ledger_ok("authorize");
        Ok(hold)
    }

    /// Gives a paid request's hold back. A failure is logged: the ledger's expiry releases the
    /// hold later in any case.
    async fn release(&self, id: &str, hold: Option<&Hold>) {
        let (Some(hold), Some(ledger)) = (hold, self.node.ledger()) else {
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
            Ok(_) => self.ledger_ok("release"),
            Err(error) => {
                self.ledger_error("release", error);
            }
        }
    }

    /// Charges a finished request for its completion tokens.
    async fn settle(
        &self,
        id: &str,
        payer: Payer,
        hold: Option<&Hold>,
        completion_tokens: u64,
    ) -> Result<Cost, ChatError> {
        let zero = || "0".to_owned();
        let (Payer::Wallet(wallet), Some(hold)) = (payer, hold) else {
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
            self.release(id, Some(hold)).await;
            return Ok(Cost {
                tier: "paid".to_owned(),
                tokens_charged: 0,
                charged: zero(),
                burned: zero(),
                released: hold.amount.to_string(),
                unit: "BLY".to_owned(),
            });
        }
        let ledger = self
            .node
            .ledger()
            .ok_or_else(|| ChatError::LedgerUnavailable {
                reason: "the ledger went away".to_owned(),
            })?;
        let capture = ledger
            .capture(CaptureRequest {
                key: key(id, "capture")?,
                hold: hold.id,
                actual_tokens: completion_tokens,
                server: self.node.server_account(),
            })
            .await
            .map_err(|error| self.ledger_error("capture", error))?;
        self.ledger_ok("capture");
        tracing::info!(%wallet, tokens = completion_tokens, charged = %capture.charged, "chat charged");
        Ok(Cost {
            tier: "paid".to_owned(),
            tokens_charged: completion_tokens,
            charged: capture.charged.to_string(),
            burned: capture.burned.to_string(),
            released: capture.released.to_string(),
            unit: "BLY".to_owned(),
        })
    }
}

impl ChatPlan {
    /// The chat's id: in its [`ChatDone`], its log span and the ledger's idempotency keys.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Who pays.
    pub fn payer(&self) -> Payer {
        self.payer
    }

    /// Tokens of the formatted prompt.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_ids.len()
    }

    /// The completion token budget (what a paid chat holds payment for).
    pub fn max_tokens(&self) -> u32 {
        self.max_tokens
    }

    /// Starts this chat in a place of the generation pool the caller already took
    /// ([`crate::InferenceGate::try_enter`]), so that a bounded pool is never overrun by checking and
    /// entering separately. The place is kept until the generation's thread ends; without it
    /// [`ChatPlan::start`] enters the gate unbounded.
    pub fn admit(&mut self, place: InferenceGuard) {
        self.admitted = Some(place);
    }

    /// Takes the payment hold (a paid chat) and starts generating in the background, in a
    /// `chat` span carrying the chat's id (a child of the caller's span). The chat's events
    /// arrive on the returned [`ChatRun`]; dropping it cancels the generation and releases the
    /// hold.
    pub async fn start(
        self,
        node: Arc<Node>,
        observer: Arc<dyn ChatObserver>,
    ) -> Result<ChatRun, ChatError> {
        let span = tracing::info_span!("chat", chat_id = %self.id, tier = self.payer.tier());
        let billing = Billing { node, observer };
        let hold = match self.payer {
            Payer::Free => None,
            Payer::Wallet(wallet) => Some(
                billing
                    .authorize(&self.id, wallet, self.max_tokens)
                    .instrument(span.clone())
                    .await?,
            ),
        };
        let cancel = CancelToken::new();
        // From here until its generation ends, the learner waits for this chat.
        let in_flight = match self.admitted {
            Some(place) => place,
            None => billing.node.inference_gate().enter(),
        };
        let stream = match self
            .generator
            .stream_ids(self.prompt_ids, self.params, cancel.clone())
        {
            Ok(stream) => stream,
            Err(error) => {
                billing
                    .release(&self.id, hold.as_ref())
                    .instrument(span)
                    .await;
                return Err(sampling_error(error));
            }
        };
        let (events, receiver) = mpsc::channel(CHAT_DELTAS_DEPTH);
        let running = Running {
            id: self.id.clone(),
            payer: self.payer,
            hold,
            generator: self.generator,
            stream,
            cancel,
            started: self.started,
            in_flight,
        };
        tokio::spawn(drive(billing, running, events).instrument(span));
        Ok(ChatRun {
            id: self.id,
            events: receiver,
        })
    }
}

/// A chat generating in the background: its events, in order, end with one
/// [`ChatEvent::Done`] or [`ChatEvent::Failed`].
#[derive(Debug)]
pub struct ChatRun {
    id: String,
    events: mpsc::Receiver<ChatEvent>,
}

impl ChatRun {
    /// The chat's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next event; `None` after the last.
    pub async fn next_event(&mut self) -> Option<ChatEvent> {
        self.events.recv().await
    }

    /// The events as a channel (for a response that streams them).
    pub fn into_events(self) -> mpsc::Receiver<ChatEvent> {
        self.events
    }

    /// Waits for the end: the final answer, or why it failed.
    pub async fn finish(mut self) -> Result<ChatDone, ChatError> {
        while let Some(event) = self.events.recv().await {
            match event {
                ChatEvent::Delta(_) => {}
                ChatEvent::Done(done) => return Ok(*done),
                ChatEvent::Failed(error) => return Err(error),
            }
        }
        Err(ChatError::Generation {
            reason: "the chat ended without a result".to_owned(),
        })
    }
}

/// What the background task of a started chat owns.
struct Running {
    id: String,
    payer: Payer,
    hold: Option<Hold>,
    generator: Generator,
    stream: TokenStream,
    cancel: CancelToken,
    started: Instant,
    in_flight: InferenceGuard,
}

struct Generated {
    stream: TokenStream,
    failure: Option<ChatError>,
    receiver_gone: bool,
    text: String,
}

/// Streams deltas from a blocking generation thread to `events` until the end, a model error,
/// or the receiver going away (which cancels the generation).
async fn generate(
    observer: &dyn ChatObserver,
    stream: TokenStream,
    cancel: &CancelToken,
    started: Instant,
    events: &mpsc::Sender<ChatEvent>,
) -> Result<Generated, ChatError> {
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
    let mut receiver_gone = false;
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
                        observer.first_token(started.elapsed());
                        first_token = false;
                    }
                    text.push_str(&delta.text);
                    if events.send(ChatEvent::Delta(delta.text)).await.is_err() {
                        receiver_gone = true;
                        break;
                    }
                }
                Some(Err(error)) => {
                    failure = Some(ChatError::Generation { reason: error.to_string() });
                    break;
                }
            },
            () = events.closed() => {
                receiver_gone = true;
                break;
            }
        }
    }
    if receiver_gone {
        cancel.cancel();
    }
    // Dropping the receiver also unblocks a thread waiting to send.
    drop(receiver);
    let stream = thread.await.map_err(|error| ChatError::Generation {
        reason: format!("generation thread failed: {error}"),
    })?;
    Ok(Generated {
        stream,
        failure,
        receiver_gone,
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
async fn drive(billing: Billing, chat: Running, events: mpsc::Sender<ChatEvent>) {
    let Running {
        id,
        payer,
        hold,
        generator,
        stream,
        cancel,
        started,
        in_flight,
    } = chat;
    let observer = Arc::clone(&billing.observer);
    observer.generating(true);
    let cache_before = generator.cache_stats();
    let outcome = generate(observer.as_ref(), stream, &cancel, started, &events).await;
    observer.generating(false);
    drop(in_flight);
    let generated = match outcome {
        Ok(generated) => generated,
        Err(error) => {
            billing.release(&id, hold.as_ref()).await;
            let _ = events.send(ChatEvent::Failed(error)).await;
            return;
        }
    };
    let prompt_tokens = u64::from(generated.stream.prompt_tokens());
    let completion_tokens = u64::try_from(generated.stream.token_ids().len()).unwrap_or(u64::MAX);
    let usage_by_expert = generated.stream.expert_usage().clone();
    billing.node.record_expert_usage(&usage_by_expert);
    observer.tokens(payer.tier(), prompt_tokens, completion_tokens);
    if let Some(failure) = generated.failure {
        billing.release(&id, hold.as_ref()).await;
        let _ = events.send(ChatEvent::Failed(failure)).await;
        return;
    }
    if generated.receiver_gone {
        tracing::debug!("the receiver went away: hold released");
        billing.release(&id, hold.as_ref()).await;
        return;
    }
    let cost = match billing
        .settle(&id, payer, hold.as_ref(), completion_tokens)
        .await
    {
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

#[cfg(test)]
mod tests {
    use blyan_api_types::ChatMessage;

    use super::*;

    fn message(role: &str, content: serde_json::Value) -> ChatMessage {
        ChatMessage {
            role: role.to_owned(),
            content,
        }
    }

    #[test]
    fn prompts_are_formatted_per_role() {
        let prompt = chat_prompt(&[
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
            |messages: Vec<ChatMessage>, field: &str| match chat_prompt(&messages).unwrap_err() {
                ChatError::InvalidRequest { field: got, .. } => assert_eq!(got, field),
                other => panic!("{other:?}"),
            };
        check(Vec::new(), "messages");
        check(vec![message("tool", "x".into())], "messages[0].role");
        check(vec![message("user", 5.into())], "messages[0].content");
        let at_bound = "x".repeat(CHAT_MESSAGE_BYTES_MAX);
        chat_prompt(&[message("user", at_bound.into())]).unwrap();
        let past_bound = "x".repeat(CHAT_MESSAGE_BYTES_MAX + 1);
        check(
            vec![message("user", past_bound.into())],
            "messages[0].content",
        );
        let many = vec![message("user", "x".into()); CHAT_MESSAGES_MAX];
        chat_prompt(&many).unwrap();
        let too_many = vec![message("user", "x".into()); CHAT_MESSAGES_MAX + 1];
        check(too_many, "messages");
    }
}
