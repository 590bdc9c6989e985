//! The crate's one error type.

use std::path::PathBuf;

use crate::expert::ExpertName;

/// Everything that can go wrong loading, checking, running or publishing a model.
///
/// Variants carry the data that explains them: the tensor, the expert, the file or the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MoeError {
    /// libtorch refused an operation (shape mismatch inside a kernel, out of memory, …).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// A file is larger than this crate accepts for its kind.
    #[error("{path} is {bytes} bytes; at most {bytes_max} are accepted")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// The limit for this kind of file.
        bytes_max: u64,
    },

    /// `config.json` (or the meta block's copy of it) is not valid JSON of the expected shape.
    #[error("config.json: {0}")]
    ConfigJson(serde_json::Error),

    /// A configuration field has a value the model cannot run with.
    #[error("config field `{field}`: {reason}")]
    Config {
        /// The Hugging Face field name.
        field: &'static str,
        /// Why the value is refused.
        reason: String,
    },

    /// The checkpoint is not a Mixtral causal language model.
    #[error(
        "unsupported architecture {found:?} (model_type {model_type:?}): only MixtralForCausalLM is supported"
    )]
    UnsupportedArchitecture {
        /// The `architectures` list of the config.
        found: Vec<String>,
        /// The `model_type` of the config.
        model_type: String,
    },

    /// Training text that cannot be used: empty, not text, too small to split.
    #[error("corpus: {reason}")]
    Corpus {
        /// What is wrong with it.
        reason: String,
    },

    /// A training run that cannot start as asked: an unknown expert, a bad option.
    #[error("training: {reason}")]
    Training {
        /// What is wrong.
        reason: String,
    },

    /// A training state directory that cannot be resumed from.
    #[error("training state {path}: {reason}")]
    TrainState {
        /// The directory.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },

    /// The shipped-model directory holds no export files.
    #[error(
        "{dir} holds no shipped model (no .blyexp files); run `just train-default`, or start with the untrained random model"
    )]
    NoShippedModel {
        /// The directory.
        dir: PathBuf,
    },

    /// A tensor the architecture needs is absent.
    #[error("tensor `{name}` is missing")]
    MissingTensor {
        /// Hugging Face tensor name.
        name: String,
    },

    /// A tensor has a different shape than the configuration implies.
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    WrongShape {
        /// Hugging Face tensor name.
        name: String,
        /// Shape found.
        got: Vec<u64>,
        /// Shape the configuration implies.
        expected: Vec<u64>,
    },

    /// A tensor is stored in a dtype the model does not load.
    #[error("tensor `{name}` has dtype {dtype}; supported: F32, F16, BF16")]
    UnsupportedDtype {
        /// Hugging Face tensor name.
        name: String,
        /// The dtype as the file names it.
        dtype: String,
    },

    /// A compute device (`model.device`) that is neither `cpu` nor `cuda:N`.
    #[error("compute device {text:?}: {reason}")]
    InvalidComputeDevice {
        /// The text given.
        text: String,
        /// Why it is refused.
        reason: String,
    },

    /// A compute dtype (`model.dtype`) that is none of `f32`, `bf16`, `f16`.
    #[error("compute dtype {text:?}: expected f32, bf16 or f16")]
    InvalidComputeDtype {
        /// The text given.
        text: String,
    },

    /// The model was asked to compute on a CUDA device this machine cannot use: libtorch's CUDA
    /// backend does not load (a CPU-only libtorch, no driver), or there are fewer devices.
    #[error("compute device {device} is not available: {reason}")]
    CudaUnavailable {
        /// The device asked for, `cuda:N`.
        device: String,
        /// Why: the loader's message, or how many CUDA devices there are.
        reason: String,
    },

    /// The checkpoint holds a tensor that is no part of the architecture; exporting would drop it.
    #[error("tensor `{name}` is not part of the Mixtral architecture")]
    UnexpectedTensor {
        /// Hugging Face tensor name.
        name: String,
    },

    /// Two files of a checkpoint both hold the same tensor.
    #[error("tensor `{name}` is stored twice, in {first} and {second}")]
    DuplicateTensor {
        /// Hugging Face tensor name.
        name: String,
        /// One file holding it.
        first: PathBuf,
        /// The other file.
        second: PathBuf,
    },

    /// A safetensors file could not be parsed or written.
    #[error("safetensors {path}: {reason}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the safetensors library reported.
        reason: String,
    },

    /// A safetensors file's header is larger than [`crate::SAFETENSORS_HEADER_BYTES_MAX`];
    /// refused before it is read.
    #[error("safetensors {path}: header of {bytes} bytes; at most {bytes_max} are read")]
    SafetensorsHeaderTooLarge {
        /// The file.
        path: PathBuf,
        /// The header length the file's prefix declares.
        bytes: u64,
        /// [`crate::SAFETENSORS_HEADER_BYTES_MAX`].
        bytes_max: u64,
    },

    /// A safetensors file's length is not the one its header describes (truncated, or bytes
    /// after the last tensor).
    #[error("safetensors {path}: the header describes {expected} bytes, the file has {found}")]
    SafetensorsLength {
        /// The file.
        path: PathBuf,
        /// Length the prefix, header and tensors add up to.
        expected: u64,
        /// The file's length.
        found: u64,
    },

    /// `model.safetensors.index.json` is malformed or names files that are absent.
    #[error("shard index {path}: {reason}")]
    ShardIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A file a checkpoint must have is absent.
    #[error("{path} is missing")]
    MissingFile {
        /// The file expected.
        path: PathBuf,
    },

    /// A checkpoint directory has no weights at all.
    #[error("{dir}: no model.safetensors nor model.safetensors.index.json")]
    NoWeights {
        /// The checkpoint directory.
        dir: PathBuf,
    },

    /// An expert the request routed to is not available from the weight source.
    #[error("expert {expert} is missing from the model's weights")]
    MissingExpert {
        /// The expert.
        expert: ExpertName,
    },

    /// A remote expert ([`crate::RemoteExperts`]) could not be computed: no holder answered.
    #[error("remote expert {expert}: {reason}")]
    RemoteExpert {
        /// The expert.
        expert: ExpertName,
        /// Why (each holder's failure).
        reason: String,
    },

    /// A remote expert's answer has the wrong shape.
    #[error("remote expert {expert} answered shape {got:?}, expected {expected:?}")]
    RemoteShape {
        /// The expert.
        expert: ExpertName,
        /// The shape answered.
        got: Vec<i64>,
        /// The shape of its input.
        expected: Vec<i64>,
    },

    /// The tokenizer could not be built, or could not encode or decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The model's chat template (`tokenizer_config.json`) is malformed or does not compile.
    #[error("chat template: {reason}")]
    ChatTemplate {
        /// What is wrong (minijinja's syntax error names the line).
        reason: String,
    },

    /// The model's chat template refused a conversation (its `raise_exception`, e.g. roles
    /// that do not alternate).
    #[error("the chat template refused the conversation: {reason}")]
    ChatTemplateRefused {
        /// The template's message.
        reason: String,
    },

    /// A prompt tokenized to nothing.
    #[error("the prompt is empty after tokenization")]
    EmptyPrompt,

    /// Prompt plus requested tokens exceed what the model may attend to.
    #[error(
        "prompt of {prompt_tokens} tokens plus {max_tokens} new tokens exceeds the context of {context_tokens_max} tokens"
    )]
    ContextTooLong {
        /// Tokens in the prompt.
        prompt_tokens: u64,
        /// Tokens requested.
        max_tokens: u64,
        /// `max_position_embeddings` of the model.
        context_tokens_max: u64,
    },

    /// A token id outside the vocabulary was given to the model.
    #[error("token id {id} is outside the vocabulary of {vocab_size}")]
    TokenOutOfRange {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab_size: u32,
    },

    /// A sampling parameter is out of its range.
    #[error("sampling parameter `{field}` = {value}: {reason}")]
    InvalidSampling {
        /// Parameter name, as the HTTP API spells it.
        field: &'static str,
        /// The value given.
        value: String,
        /// The accepted range.
        reason: String,
    },

    /// A thread panicked while holding the model; the model's state can no longer be trusted.
    #[error("the model lock is poisoned by an earlier panic")]
    ModelPoisoned,

    /// The block store refused or failed an operation.
    #[error("chain: {0}")]
    Chain(#[from] blyan_chain::Error),

    /// A tensor block could not be encoded or viewed.
    #[error("tensor block: {0}")]
    TensorBlock(#[from] blyan_tensorblock::Error),

    /// The chain holds no model architecture block.
    #[error("the chain holds no model: no architecture block on the meta chain")]
    NoModelOnChain,

    /// A meta (architecture) block's payload is malformed.
    #[error("architecture block {block}: {reason}")]
    BadMetaBlock {
        /// Hex hash of the block.
        block: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A block publishing would write is larger than the target accepts; nothing was written.
    #[error("block `{name}` would be {bytes} bytes; the chain accepts at most {bytes_max}")]
    BlockTooLarge {
        /// The block's name (`embed`, `layer0.attention`, `layer3.expert5`, …).
        name: String,
        /// Its payload size.
        bytes: u64,
        /// The target's limit.
        bytes_max: u64,
    },

    /// Publishing would replace expert versions the checkpoint does not descend from (newer
    /// versions others published since it was exported); nothing was written. See
    /// [`crate::Lineage`].
    #[error(
        "{} expert(s) have newer versions on the chain than the checkpoint: {}",
        stale.len(),
        stale.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    StaleExperts {
        /// Each expert refused, with both versions.
        stale: Vec<crate::StaleExpert>,
    },

    /// Publishing only some experts needs the chain's current model to be the checkpoint's
    /// model (the experts join it); this part of it differs. Nothing was written.
    #[error(
        "the checkpoint's {part} differs from the chain's current model (meta block {meta_block}): \
         publishing only some experts needs the same model"
    )]
    NotTheCurrentModel {
        /// What differs: `config.json`, `tokenizer.json`, `generation_config.json` or a shared
        /// group (`shared weights layer0.attention`).
        part: String,
        /// The chain's current model.
        meta_block: blyan_chain::BlockHash,
    },

    /// A publish scope names an expert the model does not have.
    #[error("expert {expert} is not in the model ({layers} layers of {experts} experts)")]
    UnknownExpert {
        /// The expert named.
        expert: crate::ExpertName,
        /// The model's layers.
        layers: u32,
        /// The model's experts per layer.
        experts: u32,
    },

    /// Another writer appended to the chain while a block was being made on its old tip.
    #[error("chain {chain}: the tip moved while a block was being made on it")]
    TipMoved {
        /// The chain.
        chain: blyan_chain::ChainId,
    },

    /// The chain a model is published to (a node over HTTP) failed or refused a request.
    #[error("publish target: {0}")]
    Target(Box<dyn std::error::Error + Send + Sync>),

    /// A parameter block's header describes other tensors than its payload holds: the
    /// `index`-th entry of the header's list and of the payload's table differ (`None`: that
    /// list is shorter).
    #[error("block {block}: header tensor #{index} is {header:?} but the payload's is {payload:?}")]
    HeaderTensorMismatch {
        /// The block.
        block: blyan_chain::BlockHash,
        /// Position in the header's list and the payload's table.
        index: u64,
        /// The header's entry there, as `name dtype [shape]`.
        header: Option<String>,
        /// The payload's entry there, as `name dtype [shape]`.
        payload: Option<String>,
    },

    /// A shared-weight block the architecture lists is not on the chain.
    #[error("shared-weight block `{name}` is not on the chain")]
    MissingSharedBlock {
        /// The block's name, e.g. `layer0.attention`.
        name: String,
    },

    /// A block fetched from elsewhere (a node over HTTP) failed a check: its header does not
    /// hash to its hash, its payload does not match its header, or it is not the block the
    /// model document calls for.
    #[error("block {block}: {reason}")]
    BadBlock {
        /// The block.
        block: blyan_chain::BlockHash,
        /// What is wrong with it.
        reason: String,
    },
}

/// Result with the crate's error.
pub type Result<T, E = MoeError> = std::result::Result<T, E>;

impl MoeError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
