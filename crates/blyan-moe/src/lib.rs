//! blyan-moe: the Mixtral-style mixture-of-experts model whose experts are chain blocks.
//!
//! This crate owns the model (embedding, decoder layers with RMSNorm, rotary grouped-query
//! attention and a KV cache, a router choosing the top-k of E SwiGLU experts, final norm, LM
//! head), the expert cache, text generation, training ([`Trainer`], through the same forward
//! pass), the shipped default model ([`build_pinned_model`], [`import_shipped_model`]), and the
//! conversions between a Hugging Face checkpoint and chain blocks.
//!
//! # Invariants
//! - The model never knows where its bytes come from: every weight arrives through
//!   [`WeightSource`] by its Hugging Face name (a safetensors checkpoint, the chain, a seeded
//!   random initialisation).
//! - Hyper-parameters are a [`Config`] with the field names of Hugging Face's `config.json`,
//!   and the forward pass mirrors transformers' `modeling_mixtral.py` step by step: our logits
//!   match the reference's in float32 (the parity test runs the reference in CI).
//! - Routing is deterministic: top-k by `total_cmp`, ties to the lower expert index, experts
//!   applied in ascending order. The same prompt, seed and weights give the same tokens.
//! - Experts are loaded on demand through an [`ExpertCache`] with a byte budget; an expert the
//!   weights lack is [`MoeError::MissingExpert`] naming it, never a silent zero.
//! - Experts claimed by a [`RemoteExperts`] hook are computed through it (one call per layer)
//!   and never loaded; their outputs are mixed exactly as local ones, so a faithful hook changes
//!   no bit of the logits. Without a hook every expert is local.
//! - Concurrent streams' decoding steps are batched ([`Model::forward_batch`]); a lone step runs
//!   the unbatched [`Model::forward`], a batched one agrees with it within float rounding, and a
//!   failed batch changes no request's state. A stream's prefill may ask for the model at
//!   [`Priority::High`] ([`TokenStream::with_priority`]): it then goes before every prefill and
//!   decoding batch waiting at normal priority.
//! - Import and publishing check a model completely (architecture, tokenizer, every tensor,
//!   shapes, dtypes) before anything is written; export writes the same tensor bytes back.
//! - On the chain, one block per expert, shared groups and routers in their own blocks, and a
//!   meta block ([`ModelDocument`]) carrying `config.json` and `tokenizer.json` and listing
//!   every shared block; a block whose payload is already current is never written again. The
//!   untrained seed model says so ([`ModelInfo::untrained`]). See `docs/moe.md`.
//! - A block read from the chain is used only after its payload matched its hash and its
//!   header's tensor list matched the payload's layout ([`MoeError::HeaderTensorMismatch`]
//!   otherwise); on the CPU, tensors of unquantized blocks stored in the compute dtype
//!   ([`ComputeDtype`], `model.dtype`) are views of the mapped segment, never copies; others are
//!   converted once, when loaded.
//! - The model computes in one [`ComputeDtype`] on one [`ComputeDevice`] ([`ModelOptions`]);
//!   in bf16 and f16 the steps transformers runs in float32 (norms' variance, softmaxes, rotary
//!   angles, routing weights) run in float32 too, and the logits are float32 whatever the dtype.
//!   A CUDA device the machine lacks is refused when the model loads.
//!
//! It must not depend on the node, the HTTP layer or the ledger; it speaks no network.
//!
//! # Where to start reading
//! [`Model`] (the forward pass), [`Generator`] and [`TokenStream`] (generation),
//! [`WeightSource`] (where weights come from), [`ExpertCache`] (experts on demand),
//! [`publish_model`] and [`ChainSource`] (the model on the chain).
//!
//! # Modules
//! `model_doc` (how a model lies on the chain), `publish` (writing it, in phases), `lineage`
//! (what a publish may overwrite: [`PublishScope`]), `expert_selection` (sets of experts by
//! pattern: [`ExpertSelection`]),
//! `chain_source` (reading it), `block_payloads` (a model from block payloads fetched over
//! HTTP, checked like chain reads), `block_tensors` (a block header's tensor list against its
//! payload), `weights` (the [`WeightSource`] trait, safetensors and random initialisation),
//! `checkpoint` (Hugging Face import and export), `device` (compute device and dtype), `model`,
//! `cache`, `batch`, `generate`,
//! `train` (the training engine, its data and optimizer), `shipped` (the pinned default model),
//! `remote` (the hook for experts computed elsewhere).
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use blyan_moe::{CancelToken, Config, Generator, Model, ModelOptions, RandomInit, SamplingParams, Tokenizer};
//!
//! let config = Config::seed();
//! let weights = Arc::new(RandomInit::new(&config, 7)?);
//! let model = Model::load(&config, weights, ModelOptions::default())?;
//! let generator = Generator::new(model, Tokenizer::byte_level(), true);
//! let mut text = String::new();
//! for delta in generator.stream("hello", SamplingParams::greedy(8), CancelToken::new())? {
//!     text.push_str(&delta?.text);
//! }
//! # Ok::<(), blyan_moe::MoeError>(())
//! ```
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![forbid(unsafe_code)]

// A dependency only so its build script's `DEP_TCH_LIBTORCH_LIB` reaches ours, which embeds
// libtorch's directory as an rpath (build.rs).
use torch_sys as _;

mod batch;
mod block_payloads;
mod block_tensors;
mod cache;
mod chain_source;
mod chat_template;
mod checkpoint;
mod config;
mod device;
mod error;
mod expert;
mod expert_selection;
mod generate;
mod lineage;
mod model;
mod model_doc;
mod publish;
mod remote;
mod rng;
mod shipped;
mod tokenizer;
mod train;
mod weights;

pub use batch::{DECODE_BATCH_MAX, DecodeStats, HIGH_BATCHES_IN_A_ROW_MAX, Priority};
pub use block_payloads::{PayloadSource, VerifiedBlock};
pub use blyan_tensorblock::load_cuda_backend;
pub use cache::{ExpertCache, ExpertCacheMetrics, ExpertCacheStats};
pub use chain_source::{ChainSource, expert_from_block, export_from_chain};
pub use chat_template::{
    CHAT_TEMPLATE_BYTES_MAX, ChatFormat, ChatRole, ChatTemplate, ChatTurn,
    TOKENIZER_CONFIG_FILE_NAME, TOKENIZER_CONFIG_JSON_BYTES_MAX, format_chat_prompt,
};
pub use checkpoint::{
    CONFIG_FILE_NAME, Checkpoint, CheckpointExportSummary, CheckpointFiles,
    EXPORT_SHARD_BYTES_DEFAULT, GENERATION_CONFIG_FILE_NAME, TOKENIZER_FILE_NAME,
    export_checkpoint,
};
pub use config::{
    ARCHITECTURE, CONFIG_JSON_BYTES_MAX, CONTEXT_TOKENS_MAX, Config, EXPERTS_MAX, HEADS_MAX,
    HIDDEN_SIZE_MAX, INTERMEDIATE_SIZE_MAX, LAYERS_MAX, MODEL_TYPE, RopeParameters, TokenIds,
    VOCAB_SIZE_MAX,
};
pub use device::{CUDA_DEVICE_INDEX_MAX, ComputeDevice, ComputeDtype};
pub use error::{MoeError, Result};
pub use expert::{
    ExpertMatrix, ExpertName, ExpertWeights, ParameterSpec, SharedGroup, TensorRole,
    expert_tensor_name, experts_of, parameter_layout, parse_expert_tensor_name,
};
pub use expert_selection::{
    EXPERT_PATTERNS_MAX, ExpertPattern, ExpertPatternError, ExpertSelection,
};
pub use generate::{
    CancelToken, Delta, FinishReason, GENERATED_TOKENS_MAX, Generation, Generator, ModelInfo,
    STOP_TOKENS_MAX, SamplingParams, TEMPERATURE_MAX, TokenStream,
};
pub use lineage::{Lineage, PublishScope, StaleExpert};
pub use model::{DecodeStep, ExpertUsage, KvCache, Logits, Model, ModelOptions, SequencesOutput};
pub use model_doc::{
    MODEL_DOCUMENT_BYTES_MAX, MODEL_DOCUMENT_FORMAT, ModelDocument, current_model, served_models,
};
pub use publish::{
    DEFAULT_SEED, ExpertQuantization, PublishEvent, PublishOptions, PublishSummary, PublishTarget,
    SeedModel, SeedWritten, ensure_model, publish_model, publish_model_scoped, publish_seed_model,
};
pub use remote::{ExpertCall, RemoteExperts};
pub use shipped::{
    CastWeights, INSTALLED_MODEL_DIR, PINNED_BLOCKS_FILE, PINNED_TIMESTAMP_MS, PinnedModel,
    SHIPPED_MODEL_DIR, SHIPPED_SEGMENT_EXTENSION, ShippedFiles, build_pinned_model,
    import_shipped_model, shipped_model_dir, write_shipped_model,
};
pub use tokenizer::{
    BYTE_LEVEL_BOS_ID, BYTE_LEVEL_EOS_ID, BYTE_LEVEL_VOCAB_SIZE, PROMPT_BYTES_MAX,
    TOKENIZER_JSON_BYTES_MAX, Tokenizer,
};
pub use train::{
    AdamWSettings, CORPUS_BYTES_MAX, CorpusRead, DatasetRead, EvalReport,
    HELD_OUT_PER_MILLE_DEFAULT, PIECE_BYTES_MAX, STATE_FILE, STATE_TENSORS_FILE, StepReport,
    TextDocument, TextSplit, TokenCorpus, TrainOptions, TrainScope, TrainedWeights, Trainer,
    learning_rate, read_corpus, read_dataset, read_dataset_selected, split_texts, state_dir,
    text_pieces, windows_loss,
};
pub use weights::{
    RandomInit, SAFETENSORS_HEADER_BYTES_MAX, SHARD_FILES_MAX, SHARD_INDEX_BYTES_MAX,
    SHARD_INDEX_NAME, SINGLE_FILE_NAME, SafetensorsSource, WeightSource, is_model_dtype,
    model_dtype_of, safetensors_dtype, tensor_to_bytes,
};
