//! The chat and billing session, free of any transport: a request is checked and tokenized
//! ([`Node::plan_chat`]), paid for ([`ChatPlan::start`]: a quote for the prompt plus the most
//! tokens it may generate, each at its rate in `tokenomics.yaml`, then authorize: a hold in
//! escrow), generated on a blocking thread that streams deltas through a bounded channel
//! ([`ChatRun`]), then settled. Billing charges what was delivered:
//!
//! - a chat that ends while its receiver takes every delta is charged its prompt and every
//!   completion token;
//! - a receiver that goes away (a client that disconnects) is charged its prompt and the
//!   completion tokens of the deltas [`ChatRun::next_event`] handed it, and the rest of the hold
//!   is released; nothing delivered, nothing charged;
//! - a paid chat's generation stops at a deadline `ledger.settle_margin_ms` before its hold
//!   expires (finish reason `time_limit`), so the capture always lands on a live hold;
//! - a free chat's generation stops `api.free_tier.generation_seconds_max` after it started
//!   (finish reason `time_limit`), so a client that reads slowly cannot hold a generation
//!   thread and a place in the pool without a time bound;
//! - a failed generation (a missing expert, a model error) is never charged: the hold is
//!   released.
//!
//! A paid chat's turns on the model (its prefill, then its decoding steps) are at
//! [`Priority::High`], before free chats' prefills and decoding batches waiting for it, so a
//! free-tier flood delays a paying user's first token by about the forward pass in flight (and
//! paid work ahead of it), not by the queue of free work.
//!
//! Callers that are not signed in use the free tier: no ledger, a smaller budget.
//!
//! The HTTP routes (`/chat`, `/chat/stream`, `/v1/chat/completions`) are thin wrappers over
//! this session; its tests drive it without HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use blyan_api_types::{CacheDelta, ChatDone, ChatRequest, Cost, LayerExperts, MODEL_ID, Usage};
use blyan_ledger::{
    Address as LedgerAddress, AuthorizeRequest, CaptureRequest, Clock as _, Hold, IdempotencyKey,
    Ledger as _, LedgerError, QuoteRequest, ReleaseRequest, SystemClock,
};
use blyan_moe::{
    CancelToken, ChatFormat, ChatRole, ChatTurn, Delta, FinishReason, Generator, MoeError,
    Priority, SamplingParams, TokenStream,
};
use blyan_primitives::Address;
use rand::RngCore as _;
use tokio::sync::{Notify, mpsc};
use tracing::Instrument as _;

use crate::error::ChatError;
use crate::learner::InferenceGuard;
use crate::node::Node;
use crate::stop::StopMatcher;

/// Most messages in one chat request.
pub const CHAT_MESSAGES_MAX: usize = 64;

/// Longest message content, in bytes.
pub const CHAT_MESSAGE_BYTES_MAX: usize = 16 * 1024;

/// Completion tokens when a request does not say (fewer when the context has less room).
/// Prompt plus completion are bounded by `api.context_tokens_max`
/// ([`Node::context_tokens_max`]); a paid generation also stops at its hold's deadline.
pub const CHAT_COMPLETION_TOKENS_DEFAULT: u32 = 128;

/// Deltas buffered between the generating thread and the receiver of a [`ChatRun`].
pub const CHAT_DELTAS_DEPTH: usize = 32;

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

    /// The priority this payer's turns on the model take: a paid chat's work goes before free
    /// chats' work waiting for the model.
    pub fn priority(&self) -> Priority {
        match self {
            Self::Free => Priority::Normal,
            Self::Wallet(_) => Priority::High,
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
    Delta {
        /// The text.
        text: String,
        /// Completion tokens this text completes (a character spanning several tokens arrives
        /// with its last one): what its delivery is charged.
        tokens: u32,
    },
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

/// The conversation as the built-in format writes it ([`chat_prompt_in`] with
/// `blyan_moe::ChatFormat::Builtin`).
pub fn chat_prompt(messages: &[blyan_api_types::ChatMessage]) -> Result<String, ChatError> {
    chat_prompt_in(&ChatFormat::Builtin, messages)
}

/// The conversation as the model reads it, in the model's `format` (its chat template, else
/// the built-in one), after checking the number of messages, their roles and their sizes. A
/// conversation the template refuses (roles that do not alternate, …) is an invalid
/// `messages`.
pub fn chat_prompt_in(
    format: &ChatFormat,
    messages: &[blyan_api_types::ChatMessage],
) -> Result<String, ChatError> {
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
    format.prompt(&turns).map_err(|error| match error {
        MoeError::ChatTemplateRefused { reason } => invalid("messages", reason),
        error => ChatError::Generation {
            reason: error.to_string(),
        },
    })
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
    /// The request's stop sequences.
    stop: StopMatcher,
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
    /// ([`chat_prompt`]), the stop sequences, the prompt's length (it must leave one token of
    /// [`Node::context_tokens_max`]), the token budget (a paid request may ask for what the
    /// context has left, else [`ChatError::ContextTooLong`]; the free tier answers within
    /// `api.free_tier.completion_tokens_max` and the context rather than refusing) and the
    /// sampling parameters. Nothing is held or charged.
    pub fn plan_chat(&self, payer: Payer, request: &ChatRequest) -> Result<ChatPlan, ChatError> {
        let started = Instant::now();
        if let Some(model) = request.model.as_ref().filter(|model| *model != MODEL_ID) {
            return Err(ChatError::UnknownModel {
                model: model.chars().take(64).collect(),
                served: MODEL_ID,
            });
        }
        let generator = self.generator().ok_or(ChatError::ModelUnavailable)?;
        let prompt = chat_prompt_in(generator.chat_format(), &request.messages)?;
        let stop = StopMatcher::new(request.stop.as_deref())?;
        let free_tier = &self.config().api.free_tier;
        if request.max_tokens == Some(0) {
            return Err(invalid("max_tokens", "must be at least 1"));
        }
        let prompt_ids = generator
            .tokenizer()
            .encode(&prompt)
            .map_err(|error| invalid("messages", error.to_string()))?;
        let context = self.context_tokens_max(&generator);
        let prompt_tokens = u32::try_from(prompt_ids.len()).unwrap_or(u32::MAX);
        if prompt_tokens >= context {
            return Err(ChatError::PromptTooLong {
                tokens: u64::from(prompt_tokens),
                max: u64::from(context.saturating_sub(1)),
            });
        }
        let room = context - prompt_tokens;
        let max_tokens = match (payer, request.max_tokens) {
            (Payer::Wallet(_), Some(asked)) if asked > room => {
                return Err(ChatError::ContextTooLong {
                    prompt_tokens: u64::from(prompt_tokens),
                    completion_tokens: u64::from(asked),
                    context_tokens_max: u64::from(context),
                });
            }
            (Payer::Wallet(_), asked) => asked.unwrap_or(CHAT_COMPLETION_TOKENS_DEFAULT.min(room)),
            // The free tier answers within its budget rather than refusing: `length` says so.
            (Payer::Free, asked) => asked
                .unwrap_or(CHAT_COMPLETION_TOKENS_DEFAULT)
                .min(free_tier.completion_tokens_max)
                .min(room),
        };
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
            stop,
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

    /// Quotes `prompt_tokens` and at most `max_tokens` completion tokens for `wallet` and
    /// holds the quote in escrow.
    async fn authorize(
        &self,
        id: &str,
        wallet: Address,
        prompt_tokens: u64,
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
                prompt_tokens,
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

    /// Charges a request for its prompt and the `completion_tokens` it delivered; with none
    /// delivered, nothing is charged and the hold is released.
    async fn settle(
        &self,
        id: &str,
        payer: Payer,
        hold: Option<&Hold>,
        prompt_tokens: u64,
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
                prompt_tokens,
                server: self.node.server_account(),
            })
            .await
            .map_err(|error| self.ledger_error("capture", error))?;
        self.ledger_ok("capture");
        tracing::info!(
            %wallet,
            prompt_tokens,
            tokens = completion_tokens,
            charged = %capture.charged,
            "chat charged"
        );
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

    /// The completion token budget (what a paid chat holds payment for, with its prompt).
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
    /// arrive on the returned [`ChatRun`]; dropping it cancels the generation and charges what
    /// it delivered (releasing the rest of the hold).
    pub async fn start(
        self,
        node: Arc<Node>,
        observer: Arc<dyn ChatObserver>,
    ) -> Result<ChatRun, ChatError> {
        let span = tracing::info_span!("chat", chat_id = %self.id, tier = self.payer.tier());
        let billing = Billing { node, observer };
        let prompt_tokens = u64::try_from(self.prompt_ids.len()).unwrap_or(u64::MAX);
        let hold = match self.payer {
            Payer::Free => None,
            Payer::Wallet(wallet) => Some(
                billing
                    .authorize(&self.id, wallet, prompt_tokens, self.max_tokens)
                    .instrument(span.clone())
                    .await?,
            ),
        };
        let margin = Duration::from_millis(billing.node.config().ledger.settle_margin_ms);
        let deadlines = hold.as_ref().map(|hold| Deadlines::before(hold, margin));
        let free_seconds = billing.node.config().api.free_tier.generation_seconds_max;
        let generate_until = match deadlines {
            Some(deadlines) => deadlines.generate,
            None => Instant::now() + Duration::from_secs(free_seconds),
        };
        let cancel = CancelToken::new();
        // From here until its generation ends, the learner waits for this chat.
        let in_flight = match self.admitted {
            Some(place) => place,
            None => billing.node.inference_gate().enter(),
        };
        let priority = self.payer.priority();
        let stream = match self
            .generator
            .stream_ids(self.prompt_ids, self.params, cancel.clone())
        {
            Ok(stream) => stream.with_priority(priority),
            Err(error) => {
                billing
                    .release(&self.id, hold.as_ref())
                    .instrument(span)
                    .await;
                return Err(sampling_error(error));
            }
        };
        let (events, receiver) = mpsc::channel(CHAT_DELTAS_DEPTH);
        let delivery = Arc::new(Delivery::default());
        let running = Running {
            id: self.id.clone(),
            payer: self.payer,
            hold,
            deadlines,
            generate_until,
            delivery: Arc::clone(&delivery),
            prompt_tokens,
            generator: self.generator,
            stream,
            stop: self.stop,
            cancel,
            started: self.started,
            in_flight,
        };
        tokio::spawn(drive(billing, running, events).instrument(span));
        Ok(ChatRun {
            id: self.id,
            events: receiver,
            delivery,
        })
    }
}

/// When a paid chat must stop, counted back from its hold's expiry.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    /// Generation stops here (finish reason `time_limit`): `margin` before the expiry.
    generate: Instant,
    /// Waiting for the receiver to take the last deltas stops here (`margin / 2` before the
    /// expiry), leaving the rest of the margin to the capture itself.
    settle: Instant,
}

impl Deadlines {
    /// The deadlines of `hold`, whose expiry is on the ledger's wall clock.
    fn before(hold: &Hold, margin: Duration) -> Deadlines {
        let now = Instant::now();
        let left = Duration::from_millis(hold.expires_at_ms.saturating_sub(SystemClock.now_ms()));
        Deadlines {
            generate: now + left.saturating_sub(margin),
            settle: now + left.saturating_sub(margin / 2),
        }
    }
}

/// What the receiver of a running chat took: shared by the [`ChatRun`] and the task that
/// settles the chat.
#[derive(Debug, Default)]
struct Delivery {
    /// Completion tokens of the deltas [`ChatRun::next_event`] returned.
    tokens: AtomicU64,
    /// Signalled each time the receiver takes an event off the channel.
    taken: Notify,
}

/// A chat generating in the background: its events, in order, end with one
/// [`ChatEvent::Done`] or [`ChatEvent::Failed`].
///
/// A transport that streams deltas to a client reads them with [`ChatRun::next_event`]: each
/// delta it returns counts as delivered, and a run dropped before its end (the client went
/// away) is charged for exactly those. [`ChatRun::finish`] delivers nothing until the whole
/// answer.
#[derive(Debug)]
pub struct ChatRun {
    id: String,
    events: mpsc::Receiver<ChatEvent>,
    delivery: Arc<Delivery>,
}

impl ChatRun {
    /// The chat's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next event; `None` after the last. A delta returned here counts as delivered to
    /// the client: call this when the transport is ready to send it on.
    pub async fn next_event(&mut self) -> Option<ChatEvent> {
        let event = self.events.recv().await;
        if let Some(ChatEvent::Delta { tokens, .. }) = &event {
            self.delivery
                .tokens
                .fetch_add(u64::from(*tokens), Ordering::SeqCst);
        }
        self.delivery.taken.notify_one();
        event
    }

    /// Waits for the end: the final answer, or why it failed. Nothing is delivered before the
    /// answer, so a run dropped while waiting here is charged nothing.
    pub async fn finish(mut self) -> Result<ChatDone, ChatError> {
        while let Some(event) = self.events.recv().await {
            self.delivery.taken.notify_one();
            match event {
                ChatEvent::Delta { .. } => {}
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
    /// A paid chat's deadlines.
    deadlines: Option<Deadlines>,
    /// When generation stops: a paid chat's [`Deadlines::generate`], a free chat's
    /// `api.free_tier.generation_seconds_max` after it started.
    generate_until: Instant,
    delivery: Arc<Delivery>,
    prompt_tokens: u64,
    generator: Generator,
    stream: TokenStream,
    stop: StopMatcher,
    cancel: CancelToken,
    started: Instant,
    in_flight: InferenceGuard,
}

/// How the generation loop ended.
enum End {
    /// The model finished (a stop token or the token budget).
    Finished,
    /// A stop sequence of the request was generated; the generation was cancelled. Every
    /// token up to the one completing it was sent (the last delta carries them).
    Stopped,
    /// The receiver went away; the generation was cancelled.
    ReceiverGone,
    /// The generation deadline passed; the generation was cancelled.
    TimeLimit,
    /// The model failed.
    Failed(ChatError),
}

struct Generated {
    /// The generation thread; it ends soon after a cancellation (at its next token), but a
    /// paid chat settles without waiting for it.
    thread: tokio::task::JoinHandle<TokenStream>,
    end: End,
    /// Completion tokens of the deltas sent to the receiver.
    sent_tokens: u64,
    text: String,
}

/// Sends one delta on `events` unless the receiver goes away or `deadline` passes first.
async fn send_delta(
    events: &mpsc::Sender<ChatEvent>,
    deadline: Instant,
    text: String,
    tokens: u32,
) -> Result<(), End> {
    tokio::select! {
        sent = events.send(ChatEvent::Delta { text, tokens }) => {
            sent.map_err(|_| End::ReceiverGone)
        }
        () = tokio::time::sleep_until(deadline.into()) => Err(End::TimeLimit),
    }
}

/// Streams deltas from a blocking generation thread to `events` until the end, a stop
/// sequence, a model error, the receiver going away or `deadline` (all but the end and a model
/// error cancel the generation). Text that could begin a stop sequence is held back
/// ([`StopMatcher`]) with its tokens, which travel with the next delta sent.
#[allow(clippy::too_many_lines)] // one select loop; its arms read best together
async fn generate(
    observer: &dyn ChatObserver,
    stream: TokenStream,
    mut stop: StopMatcher,
    cancel: &CancelToken,
    started: Instant,
    deadline: Instant,
    events: &mpsc::Sender<ChatEvent>,
) -> Generated {
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
    let mut end = End::Finished;
    let mut first_token = true;
    let mut text = String::new();
    // Tokens whose text has not been sent yet (a character spanning several tokens, or text
    // held back as the possible start of a stop sequence).
    let mut pending_tokens: u32 = 0;
    let mut sent_tokens: u64 = 0;
    loop {
        tokio::select! {
            item = receiver.recv() => match item {
                None => {
                    // The model finished: what was held back is part of the answer.
                    let rest = stop.finish();
                    if !rest.is_empty() {
                        if let Err(cut) = send_delta(events, deadline, rest.clone(), pending_tokens).await {
                            end = cut;
                            break;
                        }
                        text.push_str(&rest);
                        sent_tokens += u64::from(pending_tokens);
                    }
                    break;
                }
                Some(Ok(delta)) => {
                    if delta.token_id.is_some() {
                        pending_tokens = pending_tokens.saturating_add(1);
                    }
                    if delta.text.is_empty() {
                        continue;
                    }
                    if first_token {
                        observer.first_token(started.elapsed());
                        first_token = false;
                    }
                    let step = stop.push(&delta.text);
                    if step.stopped {
                        end = End::Stopped;
                    }
                    if step.send.is_empty() {
                        if step.stopped {
                            // The stop sequence's tokens were generated: they count with
                            // those sent.
                            sent_tokens += u64::from(pending_tokens);
                            break;
                        }
                        continue;
                    }
                    if let Err(cut) = send_delta(events, deadline, step.send.clone(), pending_tokens).await {
                        end = cut;
                        break;
                    }
                    text.push_str(&step.send);
                    sent_tokens += u64::from(pending_tokens);
                    pending_tokens = 0;
                    if step.stopped {
                        break;
                    }
                }
                Some(Err(error)) => {
                    end = End::Failed(ChatError::Generation { reason: error.to_string() });
                    break;
                }
            },
            () = events.closed() => {
                end = End::ReceiverGone;
                break;
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                end = End::TimeLimit;
                break;
            }
        }
    }
    if matches!(end, End::ReceiverGone | End::TimeLimit | End::Stopped) {
        cancel.cancel();
    }
    // Dropping the receiver also unblocks a thread waiting to send.
    drop(receiver);
    Generated {
        thread,
        end,
        sent_tokens,
        text,
    }
}

/// The generation thread's stream once it ended.
async fn join(thread: tokio::task::JoinHandle<TokenStream>) -> Result<TokenStream, ChatError> {
    thread.await.map_err(|error| ChatError::Generation {
        reason: format!("generation thread failed: {error}"),
    })
}

/// How waiting for the receiver to take the last deltas ended.
enum Drain {
    /// It took every event sent.
    Drained,
    /// It went away first.
    Gone,
    /// The settle deadline passed first.
    Deadline,
}

/// Waits until the receiver has taken every event sent on `events`, goes away, or `deadline`
/// passes.
async fn drained(
    events: &mpsc::Sender<ChatEvent>,
    delivery: &Delivery,
    deadline: Instant,
) -> Drain {
    loop {
        // `notify_one` keeps a permit when nobody waits, so a take between the check and the
        // wait is not lost.
        if events.is_closed() {
            return Drain::Gone;
        }
        if events.capacity() == events.max_capacity() {
            return Drain::Drained;
        }
        tokio::select! {
            () = delivery.taken.notified() => {}
            () = events.closed() => return Drain::Gone,
            () = tokio::time::sleep_until(deadline.into()) => return Drain::Deadline,
        }
    }
}

fn finish_reason_name(time_limited: bool, reason: Option<FinishReason>) -> &'static str {
    if time_limited {
        return "time_limit";
    }
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

/// What a finished generation used, recorded once its thread ended.
struct Used {
    generated_tokens: u64,
    finish_reason: Option<FinishReason>,
    experts: blyan_moe::ExpertUsage,
}

/// Waits for the generation thread, then records what it used (expert uses, token counts).
async fn used(
    billing: &Billing,
    payer: Payer,
    prompt_tokens: u64,
    thread: tokio::task::JoinHandle<TokenStream>,
) -> Result<Used, ChatError> {
    let stream = join(thread).await?;
    let generated_tokens = u64::try_from(stream.token_ids().len()).unwrap_or(u64::MAX);
    let experts = stream.expert_usage().clone();
    billing.node.record_expert_usage(&experts);
    billing
        .observer
        .tokens(payer.tier(), prompt_tokens, generated_tokens);
    Ok(Used {
        generated_tokens,
        finish_reason: stream.finish_reason(),
        experts,
    })
}

/// Runs the generation, then settles: the prompt and the delivered tokens are captured, or the
/// hold is released when generation failed or nothing was delivered.
#[allow(clippy::too_many_lines)] // the settlement's cases, in order
async fn drive(billing: Billing, chat: Running, events: mpsc::Sender<ChatEvent>) {
    let Running {
        id,
        payer,
        hold,
        deadlines,
        generate_until,
        delivery,
        prompt_tokens,
        generator,
        stream,
        stop,
        cancel,
        started,
        in_flight,
    } = chat;
    let mut in_flight = Some(in_flight);
    let observer = Arc::clone(&billing.observer);
    observer.generating(true);
    let cache_before = generator.cache_stats();
    let generated = generate(
        observer.as_ref(),
        stream,
        stop,
        &cancel,
        started,
        generate_until,
        &events,
    )
    .await;
    let Generated {
        thread,
        end,
        sent_tokens,
        text,
    } = generated;
    let cut = matches!(end, End::TimeLimit);
    let stopped = matches!(end, End::Stopped);
    let (completion_tokens, used) = match end {
        End::Failed(failure) => {
            billing.release(&id, hold.as_ref()).await;
            let _ = used(&billing, payer, prompt_tokens, thread).await;
            observer.generating(false);
            let _ = events.send(ChatEvent::Failed(failure)).await;
            return;
        }
        End::ReceiverGone => {
            let delivered = delivery.tokens.load(Ordering::SeqCst);
            tracing::debug!(delivered, "the receiver went away: charging what it took");
            // Nobody reads the cost; the ledger records it.
            let _ = billing
                .settle(&id, payer, hold.as_ref(), prompt_tokens, delivered)
                .await;
            let _ = used(&billing, payer, prompt_tokens, thread).await;
            observer.generating(false);
            return;
        }
        // The thread ended (a stop sequence cancelled it: it ends at its next token). The
        // answer's tokens: every token generated, or those up to the stop sequence.
        End::Finished | End::Stopped => match used(&billing, payer, prompt_tokens, thread).await {
            Ok(used) => {
                // Generation is over: the learner need not wait while the receiver reads.
                observer.generating(false);
                in_flight.take();
                let tokens = if stopped {
                    sent_tokens
                } else {
                    used.generated_tokens
                };
                (tokens, Ok(used))
            }
            Err(error) => {
                billing.release(&id, hold.as_ref()).await;
                observer.generating(false);
                let _ = events.send(ChatEvent::Failed(error)).await;
                return;
            }
        },
        // The thread stops at its next token; the chat settles without waiting for it.
        End::TimeLimit => (sent_tokens, Err(thread)),
    };
    // A paid chat is charged once its receiver took every delta; one that goes away first, or
    // is still reading at the settle deadline, is charged for what it took.
    let charged_tokens = match deadlines {
        None => completion_tokens,
        Some(deadlines) => match drained(&events, &delivery, deadlines.settle).await {
            Drain::Drained => completion_tokens,
            Drain::Gone => {
                let delivered = delivery.tokens.load(Ordering::SeqCst);
                tracing::debug!(delivered, "the receiver went away at the end");
                let _ = billing
                    .settle(&id, payer, hold.as_ref(), prompt_tokens, delivered)
                    .await;
                if let Err(thread) = used {
                    let _ = used_after(&billing, payer, prompt_tokens, thread).await;
                }
                if in_flight.take().is_some() {
                    observer.generating(false);
                }
                return;
            }
            Drain::Deadline => {
                let delivered = delivery.tokens.load(Ordering::SeqCst);
                tracing::warn!(
                    delivered,
                    "the receiver was still reading at the settle deadline"
                );
                delivered
            }
        },
    };
    let settled = billing
        .settle(&id, payer, hold.as_ref(), prompt_tokens, charged_tokens)
        .await;
    let used = match used {
        Ok(used) => Some(used),
        Err(thread) => used_after(&billing, payer, prompt_tokens, thread).await,
    };
    if in_flight.take().is_some() {
        observer.generating(false);
    }
    let cost = match settled {
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
    let finish_reason = if stopped {
        "stop"
    } else {
        finish_reason_name(cut, used.as_ref().and_then(|used| used.finish_reason))
    };
    let experts = used
        .as_ref()
        .map(|used| layer_experts(&used.experts))
        .unwrap_or_default();
    let done = ChatDone {
        id,
        model: MODEL_ID.to_owned(),
        text,
        finish_reason: finish_reason.to_owned(),
        usage: Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        },
        experts,
        cost,
        cache,
    };
    let _ = events.send(ChatEvent::Done(Box::new(done))).await;
}

/// [`used`] for a generation cut short, after its chat settled: a thread that failed is
/// logged (the chat was already charged for what it delivered).
async fn used_after(
    billing: &Billing,
    payer: Payer,
    prompt_tokens: u64,
    thread: tokio::task::JoinHandle<TokenStream>,
) -> Option<Used> {
    match used(billing, payer, prompt_tokens, thread).await {
        Ok(used) => Some(used),
        Err(error) => {
            tracing::error!(%error, "the generation thread failed after the chat settled");
            None
        }
    }
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
    fn paid_chats_take_the_model_first_and_free_ones_do_not() {
        assert_eq!(Payer::Wallet(Address::ZERO).priority(), Priority::High);
        assert_eq!(Payer::Free.priority(), Priority::Normal);
        assert!(Priority::High > Priority::Normal);
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
