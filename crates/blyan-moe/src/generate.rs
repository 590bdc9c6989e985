//! Text generation: sampling (greedy, temperature, top-k, top-p, seeded), stop tokens, a token
//! budget, cancellation, and a streaming iterator of text deltas.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use blyan_chain::ChainStore;

use crate::batch::{DecodeStats, Engine, Priority};
use crate::cache::{ExpertCacheMetrics, ExpertCacheStats};
use crate::chain_source::ChainSource;
use crate::chat_template::ChatFormat;
use crate::config::Config;
use crate::error::{MoeError, Result};
use crate::expert::ExpertName;
use crate::model::{ExpertUsage, KvCache, Model, ModelOptions};
use crate::rng::Rng;
use crate::tokenizer::{IncrementalDecoder, Tokenizer};

/// Most tokens one request may generate.
pub const GENERATED_TOKENS_MAX: u32 = 8192;
/// Most stop tokens one request may name.
pub const STOP_TOKENS_MAX: usize = 64;
/// Highest sampling temperature accepted.
pub const TEMPERATURE_MAX: f32 = 100.0;

/// How to pick each next token, and when to stop.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Most tokens to generate (`1..=GENERATED_TOKENS_MAX`), fewer if the context fills.
    pub max_tokens: u32,
    /// 0 picks the most likely token (greedy); above 0 divides the logits before sampling.
    pub temperature: f32,
    /// Sample only among the `top_k` most likely tokens.
    pub top_k: Option<u32>,
    /// Sample only among the most likely tokens whose probabilities sum to at least `top_p`.
    pub top_p: Option<f32>,
    /// Seed of the sampler: the same seed, prompt and model give the same tokens.
    pub seed: u64,
    /// Token ids that end generation (besides the model's end-of-sequence tokens).
    pub stop_token_ids: Vec<u32>,
    /// Keep generating through the model's end-of-sequence tokens.
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            max_tokens: 128,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
            stop_token_ids: Vec::new(),
            ignore_eos: false,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of at most `max_tokens` tokens.
    pub fn greedy(max_tokens: u32) -> Self {
        Self {
            max_tokens,
            ..Self::default()
        }
    }

    /// Checks every field against its range for a vocabulary of `vocab_size`.
    pub fn validate(&self, vocab_size: u32) -> Result<()> {
        let invalid = |field, value: String, reason: String| MoeError::InvalidSampling {
            field,
            value,
            reason,
        };
        if self.max_tokens == 0 || self.max_tokens > GENERATED_TOKENS_MAX {
            return Err(invalid(
                "max_tokens",
                self.max_tokens.to_string(),
                format!("must be within 1..={GENERATED_TOKENS_MAX}"),
            ));
        }
        if !(self.temperature.is_finite() && (0.0..=TEMPERATURE_MAX).contains(&self.temperature)) {
            return Err(invalid(
                "temperature",
                self.temperature.to_string(),
                format!("must be within 0..={TEMPERATURE_MAX}"),
            ));
        }
        if let Some(top_k) = self.top_k
            && top_k == 0
        {
            return Err(invalid("top_k", "0".into(), "must be at least 1".into()));
        }
        if let Some(top_p) = self.top_p
            && !(top_p.is_finite() && top_p > 0.0 && top_p <= 1.0)
        {
            return Err(invalid(
                "top_p",
                top_p.to_string(),
                "must be within (0, 1]".into(),
            ));
        }
        if self.stop_token_ids.len() > STOP_TOKENS_MAX {
            return Err(invalid(
                "stop_token_ids",
                format!("{} ids", self.stop_token_ids.len()),
                format!("at most {STOP_TOKENS_MAX}"),
            ));
        }
        if let Some(id) = self.stop_token_ids.iter().find(|id| **id >= vocab_size) {
            return Err(invalid(
                "stop_token_ids",
                id.to_string(),
                format!("must be below the vocabulary size {vocab_size}"),
            ));
        }
        Ok(())
    }
}

/// Picks tokens from logits as [`SamplingParams`] say, from its own seeded stream.
#[derive(Debug, Clone)]
pub(crate) struct Sampler {
    temperature: f32,
    top_k: Option<u32>,
    top_p: Option<f32>,
    rng: Rng,
    order: Vec<u32>,
    probabilities: Vec<f64>,
}

impl Sampler {
    pub(crate) fn new(params: &SamplingParams) -> Self {
        Self {
            temperature: params.temperature,
            top_k: params.top_k,
            top_p: params.top_p,
            rng: Rng::new(params.seed),
            order: Vec::new(),
            probabilities: Vec::new(),
        }
    }

    /// The next token for one row of logits.
    pub(crate) fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature == 0.0 {
            return argmax(logits);
        }
        // Candidates by descending logit, ties to the lower id (stable sort).
        self.order.clear();
        self.order.extend(0..logits.len() as u32);
        self.order
            .sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
        if let Some(top_k) = self.top_k {
            self.order.truncate((top_k as usize).max(1));
        }
        // scores = scores / temperature; softmax in f64 from the largest down.
        let scaled = |id: u32| f64::from(logits[id as usize] / self.temperature);
        let largest = scaled(self.order[0]);
        self.probabilities.clear();
        self.probabilities
            .extend(self.order.iter().map(|id| (scaled(*id) - largest).exp()));
        let total: f64 = self.probabilities.iter().sum();
        let mut kept = self.probabilities.len();
        if let Some(top_p) = self.top_p {
            let threshold = f64::from(top_p) * total;
            let mut cumulative = 0.0;
            for (index, probability) in self.probabilities.iter().enumerate() {
                cumulative += probability;
                if cumulative >= threshold {
                    kept = index + 1;
                    break;
                }
            }
        }
        let kept_total: f64 = self.probabilities[..kept].iter().sum();
        let mut target = self.rng.next_f64() * kept_total;
        for (id, probability) in self.order[..kept].iter().zip(&self.probabilities) {
            if target < *probability {
                return *id;
            }
            target -= probability;
        }
        // Rounding left a sliver past the last candidate: it belongs to the last one.
        self.order[kept - 1]
    }
}

/// Index of the largest value, the lowest index among equals (as `torch.argmax`).
pub(crate) fn argmax(values: &[f32]) -> u32 {
    let mut best = 0usize;
    for (index, value) in values.iter().enumerate().skip(1) {
        if value.total_cmp(&values[best]).is_gt() {
            best = index;
        }
    }
    best as u32
}

/// Stops a generation from another thread (a closed HTTP connection, a user's cancel).
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every stream holding a clone of this token to stop before its next token.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
#[non_exhaustive]
pub enum FinishReason {
    /// A stop token (or the model's end-of-sequence token) was produced; it is not in the text.
    Stop {
        /// The token.
        token_id: u32,
    },
    /// `max_tokens` were generated, or the context is full.
    Length,
    /// The [`CancelToken`] was cancelled.
    Cancelled,
}

/// A piece of a streamed generation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Delta {
    /// The token generated; `None` for the final piece of text held back while it ended inside
    /// a character.
    pub token_id: Option<u32>,
    /// Text this token completes; may be empty while a character spans several tokens.
    pub text: String,
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Generation {
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Generated token ids (the stop token excluded).
    pub token_ids: Vec<u32>,
    /// Generated text: the concatenation of the stream's deltas.
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Experts that processed the prompt and the generated tokens.
    pub expert_usage: ExpertUsage,
}

/// What the HTTP layer shows about the model being served.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelInfo {
    /// The model's configuration.
    pub config: Config,
    /// True for a seeded random initialisation that was never trained.
    pub untrained: bool,
    /// What the weights are and where they come from.
    pub description: String,
    /// The meta block the model was read from, when it comes from the chain.
    pub meta_block: Option<blyan_chain::BlockHash>,
}

/// Serves generations from one model to any number of threads. Concurrent streams' decoding
/// steps are batched: a step that finds others waiting runs with them in one forward pass (at
/// most [`crate::DECODE_BATCH_MAX`] by default), so each expert's weights are read once for
/// all of them.
#[derive(Clone)]
pub struct Generator {
    engine: Arc<Engine>,
    tokenizer: Arc<Tokenizer>,
    chat_format: ChatFormat,
    metrics: Arc<ExpertCacheMetrics>,
    info: Arc<ModelInfo>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Generator {
    /// Serves `model` with `tokenizer`; `untrained` marks a random initialisation.
    pub fn new(model: Model, tokenizer: Tokenizer, untrained: bool) -> Self {
        Self::with_meta_block(model, tokenizer, untrained, None)
    }

    /// Serves the newest served model on `store` that loads: shared weights loaded once,
    /// experts on demand through the cache of `options`. A newer model that does not load is
    /// logged and skipped (see [`ChainSource::open`]). The generator's
    /// [`ModelInfo::untrained`] says whether it is the untrained seed.
    pub fn from_chain(store: Arc<ChainStore>, options: ModelOptions) -> Result<Self> {
        crate::chain_source::first_that_loads(&store, |meta_block, _| {
            Self::from_meta_block(Arc::clone(&store), meta_block, options)
        })
    }

    /// Serves the model of meta block `meta_block` on `store`.
    pub fn from_meta_block(
        store: Arc<ChainStore>,
        meta_block: blyan_chain::BlockHash,
        options: ModelOptions,
    ) -> Result<Self> {
        let source = ChainSource::open_at(store, meta_block)?;
        let config = source.config().clone();
        let tokenizer = source.tokenizer()?;
        let chat_format = source.chat_format()?;
        let untrained = source.untrained();
        let model = Model::load(&config, Arc::new(source), options)?;
        Ok(
            Self::with_meta_block(model, tokenizer, untrained, Some(meta_block))
                .with_chat_format(chat_format),
        )
    }

    /// [`Generator::new`] for a model read from the chain's meta block `meta_block`.
    fn with_meta_block(
        model: Model,
        tokenizer: Tokenizer,
        untrained: bool,
        meta_block: Option<blyan_chain::BlockHash>,
    ) -> Self {
        let info = ModelInfo {
            config: model.config().clone(),
            untrained,
            description: model.source_description().to_owned(),
            meta_block,
        };
        Self {
            metrics: model.expert_cache().metrics(),
            engine: Arc::new(Engine::new(model)),
            tokenizer: Arc::new(tokenizer),
            chat_format: ChatFormat::Builtin,
            info: Arc::new(info),
        }
    }

    /// This generator with chats formatted by `chat_format` (the built-in format unless set:
    /// [`Generator::from_chain`] sets the model's published template).
    #[must_use]
    pub fn with_chat_format(mut self, chat_format: ChatFormat) -> Self {
        self.chat_format = chat_format;
        self
    }

    /// How chats become prompts for this model.
    pub fn chat_format(&self) -> &ChatFormat {
        &self.chat_format
    }

    /// The model's configuration and origin.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Expert cache counters, read without waiting for the model.
    pub fn cache_stats(&self) -> ExpertCacheStats {
        self.metrics.snapshot()
    }

    /// Drops `expert` from the expert cache (after a new version of it was published), so the
    /// next request that routes to it loads its current version. Waits for the model between
    /// two forward passes; returns whether the expert was cached.
    pub fn forget_expert(&self, expert: ExpertName) -> Result<bool> {
        self.with_model(|model| model.expert_cache_mut().forget(expert))
    }

    /// Sets the hook computing remote experts ([`Model::set_remote_experts`]); waits for the
    /// model between two forward passes.
    pub fn set_remote_experts(&self, remote: Option<Arc<dyn crate::RemoteExperts>>) -> Result<()> {
        self.with_model(|model| model.set_remote_experts(remote))
    }

    /// Runs `f` with the model locked: to change the cache budget, clear it, or score text.
    pub fn with_model<T>(&self, f: impl FnOnce(&mut Model) -> T) -> Result<T> {
        let mut model = self.engine.model()?;
        Ok(f(&mut model))
    }

    /// Most decoding steps of concurrent streams run in one forward pass (at least 1; 1 turns
    /// batching off: every step runs alone, one after the other).
    pub fn set_decode_batch_max(&self, steps: usize) {
        self.engine.set_batch_max(steps);
    }

    /// Decoding steps run so far and the forward passes they took.
    pub fn decode_stats(&self) -> DecodeStats {
        self.engine.stats()
    }

    /// Starts streaming a generation for `prompt`. Nothing runs until the first `next()`; the
    /// first item then carries the prefill's error if there is one (e.g. a missing expert).
    pub fn stream(
        &self,
        prompt: &str,
        params: SamplingParams,
        cancel: CancelToken,
    ) -> Result<TokenStream> {
        let ids = self.tokenizer.encode(prompt)?;
        self.stream_ids(ids, params, cancel)
    }

    /// As [`Generator::stream`], from prompt token ids.
    pub fn stream_ids(
        &self,
        prompt: Vec<u32>,
        params: SamplingParams,
        cancel: CancelToken,
    ) -> Result<TokenStream> {
        let config = &self.info.config;
        params.validate(config.vocab_size)?;
        if prompt.is_empty() {
            return Err(MoeError::EmptyPrompt);
        }
        if let Some(id) = prompt.iter().find(|id| **id >= config.vocab_size) {
            return Err(MoeError::TokenOutOfRange {
                id: *id,
                vocab_size: config.vocab_size,
            });
        }
        let context = config.max_position_embeddings;
        let prompt_tokens = u32::try_from(prompt.len()).unwrap_or(u32::MAX);
        if prompt_tokens >= context {
            return Err(MoeError::ContextTooLong {
                prompt_tokens: u64::from(prompt_tokens),
                max_tokens: u64::from(params.max_tokens),
                context_tokens_max: u64::from(context),
            });
        }
        let mut stop_token_ids = params.stop_token_ids.clone();
        if !params.ignore_eos {
            stop_token_ids.extend(config.eos_token_ids());
        }
        stop_token_ids.sort_unstable();
        stop_token_ids.dedup();
        Ok(TokenStream {
            engine: Arc::clone(&self.engine),
            decoding: false,
            priority: Priority::Normal,
            tokenizer: Arc::clone(&self.tokenizer),
            // Room for the prompt plus every generated token but the last, which is never fed.
            max_tokens: params.max_tokens.min(context - prompt_tokens + 1),
            sampler: Sampler::new(&params),
            stop_token_ids,
            cancel,
            prompt,
            kv_cache: None,
            usage: ExpertUsage::new(config),
            generated: Vec::new(),
            decoder: self.tokenizer.incremental(),
            text: String::new(),
            finish_reason: None,
            failed: false,
            flushed: false,
        })
    }

    /// Generates to the end and returns the whole result.
    pub fn generate(
        &self,
        prompt: &str,
        params: SamplingParams,
        cancel: CancelToken,
    ) -> Result<Generation> {
        self.stream(prompt, params, cancel)?.finish()
    }
}

/// A generation in progress: an iterator of [`Delta`]s whose texts concatenate to the full
/// generated text. Each `next()` runs one forward pass, batched with other streams' steps. After the last delta,
/// [`TokenStream::finish_reason`] says why it ended.
///
/// The stream owns its state and is `Send`: the HTTP layer moves it to a blocking thread and
/// forwards deltas through a bounded channel.
pub struct TokenStream {
    engine: Arc<Engine>,
    /// Registered with the engine as a decoding stream (batches wait for its steps).
    decoding: bool,
    /// The turn its prefill asks for on the model.
    priority: Priority,
    tokenizer: Arc<Tokenizer>,
    max_tokens: u32,
    sampler: Sampler,
    stop_token_ids: Vec<u32>,
    cancel: CancelToken,
    prompt: Vec<u32>,
    kv_cache: Option<KvCache>,
    usage: ExpertUsage,
    generated: Vec<u32>,
    decoder: IncrementalDecoder,
    text: String,
    finish_reason: Option<FinishReason>,
    failed: bool,
    flushed: bool,
}

impl std::fmt::Debug for TokenStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStream")
            .field("prompt_tokens", &self.prompt.len())
            .field("generated", &self.generated.len())
            .field("finish_reason", &self.finish_reason)
            .finish_non_exhaustive()
    }
}

impl TokenStream {
    /// This stream's turns on the model at `priority`: at [`Priority::High`] its prefill (the
    /// first token) takes the model as soon as the forward pass in flight ends, before other
    /// streams' prefills and the next decoding batch that wait at [`Priority::Normal`] (the
    /// default), and its decoding steps run in batches of high steps ahead of normal ones
    /// (which still run at least every [`crate::HIGH_BATCHES_IN_A_ROW_MAX`] + 1 batches). Set
    /// it before the first `next()`.
    #[must_use]
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Why the stream ended; `None` while it runs or after an error.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish_reason
    }

    /// Experts used so far, prompt included.
    pub fn expert_usage(&self) -> &ExpertUsage {
        &self.usage
    }

    /// Tokens generated so far.
    pub fn token_ids(&self) -> &[u32] {
        &self.generated
    }

    /// Text streamed so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Tokens in the prompt.
    pub fn prompt_tokens(&self) -> u32 {
        u32::try_from(self.prompt.len()).unwrap_or(u32::MAX)
    }

    /// Runs the stream to its end and returns the result.
    pub fn finish(mut self) -> Result<Generation> {
        for delta in self.by_ref() {
            delta?;
        }
        let finish_reason = self
            .finish_reason
            .expect("a stream that ended without an error has a finish reason");
        Ok(Generation {
            prompt_tokens: self.prompt_tokens(),
            token_ids: std::mem::take(&mut self.generated),
            text: std::mem::take(&mut self.text),
            finish_reason,
            expert_usage: std::mem::take(&mut self.usage),
        })
    }

    fn next_token(&mut self) -> Result<u32> {
        let logits = match (self.generated.last(), self.kv_cache.take()) {
            (None, _) => {
                let (logits, cache) =
                    self.engine
                        .prefill(&self.prompt, &mut self.usage, self.priority)?;
                self.kv_cache = Some(cache);
                logits
            }
            (Some(last), Some(cache)) => {
                if !self.decoding {
                    self.decoding = true;
                    self.engine.start_decoding(self.priority);
                }
                let usage = std::mem::take(&mut self.usage);
                let (logits, cache, usage) = self.engine.decode(*last, cache, usage, self.priority);
                self.kv_cache = Some(cache);
                self.usage = usage;
                logits?
            }
            // A stream whose step failed has stopped: it never asks again.
            (Some(_), None) => return Err(MoeError::ModelPoisoned),
        };
        Ok(self.sampler.sample(&logits))
    }

    /// Batches stop waiting for this stream's steps.
    fn stop_decoding(&mut self) {
        if std::mem::take(&mut self.decoding) {
            self.engine.stop_decoding(self.priority);
        }
    }

    /// Text held back at the end because it ended inside a character, if any.
    fn flush(&mut self) -> Result<Option<Delta>> {
        self.flushed = true;
        let full = self.tokenizer.decode(&self.generated)?;
        match full.strip_prefix(self.text.as_str()) {
            Some(rest) if !rest.is_empty() => {
                let rest = rest.to_owned();
                self.text.push_str(&rest);
                Ok(Some(Delta {
                    token_id: None,
                    text: rest,
                }))
            }
            Some(_) => Ok(None),
            None => {
                tracing::warn!("streamed text is not a prefix of the decoded text");
                Ok(None)
            }
        }
    }
}

impl Drop for TokenStream {
    fn drop(&mut self) {
        self.stop_decoding();
    }
}

impl Iterator for TokenStream {
    type Item = Result<Delta>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.step();
        let done = item.is_none()
            || self.failed
            || self.finish_reason.is_some()
            || self.generated.len() >= self.max_tokens as usize;
        if done {
            self.stop_decoding();
        }
        item
    }
}

impl TokenStream {
    /// [`Iterator::next`], before the engine hears whether the stream goes on.
    fn step(&mut self) -> Option<Result<Delta>> {
        if self.failed {
            return None;
        }
        if self.finish_reason.is_none() {
            if self.cancel.is_cancelled() {
                self.finish_reason = Some(FinishReason::Cancelled);
            } else if self.generated.len() >= self.max_tokens as usize {
                self.finish_reason = Some(FinishReason::Length);
            } else {
                let token = match self.next_token() {
                    Ok(token) => token,
                    Err(error) => {
                        self.failed = true;
                        return Some(Err(error));
                    }
                };
                if self.stop_token_ids.binary_search(&token).is_ok() {
                    self.finish_reason = Some(FinishReason::Stop { token_id: token });
                } else {
                    self.generated.push(token);
                    let text = match self.tokenizer.step(&mut self.decoder, token) {
                        Ok(text) => text.unwrap_or_default(),
                        Err(error) => {
                            self.failed = true;
                            return Some(Err(error));
                        }
                    };
                    self.text.push_str(&text);
                    return Some(Ok(Delta {
                        token_id: Some(token),
                        text,
                    }));
                }
            }
        }
        if self.flushed {
            return None;
        }
        match self.flush() {
            Ok(delta) => delta.map(Ok),
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_of_equals() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, -5.0]), 1);
    }

    #[test]
    fn sampling_is_reproducible_and_respects_top_k_and_top_p() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let params = SamplingParams {
            temperature: 0.8,
            seed: 9,
            ..SamplingParams::default()
        };
        let draw = |params: &SamplingParams| {
            let mut sampler = Sampler::new(params);
            (0..200)
                .map(|_| sampler.sample(&logits))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(&params), draw(&params));
        assert_ne!(
            draw(&params),
            draw(&SamplingParams {
                seed: 10,
                ..params.clone()
            })
        );
        let mut ranked: Vec<u32> = (0..50).collect();
        ranked.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
        let top3 = draw(&SamplingParams {
            top_k: Some(3),
            ..params.clone()
        });
        assert!(top3.iter().all(|id| ranked[..3].contains(id)));
        // A tiny top_p keeps only the most likely token.
        let nucleus = draw(&SamplingParams {
            top_p: Some(1e-6),
            ..params.clone()
        });
        assert!(nucleus.iter().all(|id| *id == ranked[0]));
    }

    #[test]
    fn parameters_are_checked_at_their_bounds() {
        let vocab = 100;
        let ok = |params: SamplingParams| params.validate(vocab).is_ok();
        assert!(ok(SamplingParams::greedy(GENERATED_TOKENS_MAX)));
        assert!(!ok(SamplingParams::greedy(GENERATED_TOKENS_MAX + 1)));
        assert!(!ok(SamplingParams::greedy(0)));
        let with = |f: fn(&mut SamplingParams)| {
            let mut params = SamplingParams::default();
            f(&mut params);
            params
        };
        assert!(ok(with(|p| p.temperature = TEMPERATURE_MAX)));
        assert!(!ok(with(|p| p.temperature = TEMPERATURE_MAX + 1.0)));
        assert!(!ok(with(|p| p.temperature = f32::NAN)));
        assert!(!ok(with(|p| p.temperature = -0.1)));
        assert!(ok(with(|p| p.top_p = Some(1.0))));
        assert!(!ok(with(|p| p.top_p = Some(0.0))));
        assert!(!ok(with(|p| p.top_p = Some(1.01))));
        assert!(!ok(with(|p| p.top_k = Some(0))));
        assert!(ok(with(|p| p.stop_token_ids = vec![99; STOP_TOKENS_MAX])));
        assert!(!ok(with(
            |p| p.stop_token_ids = vec![1; STOP_TOKENS_MAX + 1]
        )));
        assert!(!ok(with(|p| p.stop_token_ids = vec![100])));
    }
}
