//! The model on the chain: publishing a checkpoint (or the seed initialisation) as blocks, and
//! reading it back as a [`WeightSource`] whose tensors are zero-copy views of the blocks.
//!
//! Layout:
//! - Parameters chain (B): one `SharedWeights` block per shared group (`embed`,
//!   `layer{L}.attention` with its norms, `head`), one `Router` block per layer
//!   (`layer{L}.router`), and one `Expert` block per expert (`layer{L}.expert{E}`, versions
//!   counted by the chain). Every payload is a tensor block whose tensors carry their Hugging
//!   Face names, so a block describes itself.
//! - Meta chain (A): one `Meta` block per model version. Its payload is a [`ModelDocument`]
//!   (JSON): the architecture as Hugging Face's `config.json` (parsed, and its exact text),
//!   `tokenizer.json`, the optional `generation_config.json`, whether the weights are an
//!   untrained seed, and the hash of each shared-group block by name.
//!
//! Publishing writes shared blocks first, then the meta block listing them (and depending on
//! them), then experts (each depending on the meta block). A block whose payload is already the
//! current one is not written again: re-publishing an unchanged checkpoint writes nothing, and
//! changing one expert writes one block.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use blyan_chain::{
    AuthorKey, BlockHash, BlockHeader, BlockKind, BlockMeta, ChainId, ChainStore, ChainTip,
    DEPENDS_ON_COUNT_MAX, Dtype, ExpertVersion, PayloadHandle, TensorMeta, hash_payload,
};
use blyan_tensorblock::{EncodeTensor, Quantization, TensorBlock, encode_tensors_to_vec};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::checkpoint::{CheckpointFiles, check_tokenizer_fits};
use crate::config::Config;
use crate::error::{MoeError, Result};
use crate::expert::{
    ExpertMatrix, ExpertName, ExpertWeights, SharedGroup, TensorRole, TensorSpec,
    expert_tensor_name, experts_of, parameter_layout, parse_expert_tensor_name,
};
use crate::generate::Generator;
use crate::model::{Model, ModelOptions};
use crate::tokenizer::Tokenizer;
use crate::weights::{RandomInit, TensorInfo, WeightSource, shape_of};

/// The `format` tag of a model document; a meta block without it is not a model.
pub const MODEL_DOCUMENT_FORMAT: &str = "blyan-model/1";
/// Largest model document (meta block payload) read, in bytes.
pub const MODEL_DOCUMENT_BYTES_MAX: u64 = 96 << 20;
/// Seed of the default untrained model a node writes into an empty chain.
pub const DEFAULT_SEED: u64 = 0x0b1a_5eed;

/// The payload of a model's meta block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDocument {
    /// Always [`MODEL_DOCUMENT_FORMAT`].
    pub format: String,
    /// The architecture: `config.json` parsed, with Hugging Face's field names.
    pub architecture: serde_json::Value,
    /// True for a seeded random initialisation that was never trained.
    pub untrained: bool,
    /// A few words on where the weights came from.
    pub description: String,
    /// `config.json`, exactly as published (what export writes back).
    pub config_json: String,
    /// `generation_config.json`, exactly as published, when there was one.
    pub generation_config_json: Option<String>,
    /// `tokenizer.json`, exactly as published.
    pub tokenizer_json: String,
    /// Block of each shared group, by group name (`embed`, `layer0.attention`, …).
    pub shared: BTreeMap<String, BlockHash>,
}

/// How expert matrices are stored in their blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ExpertQuantization {
    /// In the dtype the source holds them (bit-exact).
    #[default]
    None,
    /// INT8 per output channel (a quarter of f32), dequantized when loaded.
    Int8,
}

/// What to publish besides the weights.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// How expert matrices are stored.
    pub expert_quantization: ExpertQuantization,
    /// Marks the weights as an untrained seed initialisation.
    pub untrained: bool,
    /// A few words on where the weights came from (shown by the node).
    pub description: String,
}

/// Progress of [`publish_model`], for a progress bar.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishEvent {
    /// Everything is checked; `blocks` blocks (shared groups, meta, experts) will be considered.
    Checked {
        /// Blocks to consider.
        blocks: u64,
    },
    /// A block was written.
    Written {
        /// Its name: a group name, `meta`, or an expert name.
        name: String,
        /// Its hash.
        block: BlockHash,
        /// Its payload size.
        bytes: u64,
    },
    /// A block's payload is already the current one on the chain: nothing written.
    Unchanged {
        /// Its name.
        name: String,
    },
}

/// What [`publish_model`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSummary {
    /// The meta block of the published model (new or unchanged).
    pub meta_block: BlockHash,
    /// Whether a new meta block was written.
    pub meta_written: bool,
    /// Shared-group blocks written.
    pub shared_written: u32,
    /// Shared-group blocks already current.
    pub shared_unchanged: u32,
    /// Expert blocks written.
    pub experts_written: u32,
    /// Expert blocks already current.
    pub experts_unchanged: u32,
    /// Payload bytes written.
    pub bytes_written: u64,
}

/// The shared groups of a configuration, in publishing order.
fn shared_groups(config: &Config) -> Vec<SharedGroup> {
    let mut groups = vec![SharedGroup::Embedding];
    for layer in 0..config.num_hidden_layers {
        groups.push(SharedGroup::Attention { layer });
        groups.push(SharedGroup::Router { layer });
    }
    groups.push(SharedGroup::Head);
    groups
}

fn tensor_dtype(kind: Kind, quantized: bool) -> Option<Dtype> {
    if quantized {
        return Some(Dtype::I8);
    }
    match kind {
        Kind::Float => Some(Dtype::F32),
        Kind::Half => Some(Dtype::F16),
        Kind::BFloat16 => Some(Dtype::BF16),
        _ => None,
    }
}

/// Checks every tensor `source` holds for `config`: present, right shape, float dtype. Returns
/// the layout with each tensor's dtype in the source.
fn check_source(config: &Config, source: &dyn WeightSource) -> Result<Vec<(TensorSpec, Kind)>> {
    let layout = parameter_layout(config)?;
    let mut checked = Vec::with_capacity(layout.len());
    for spec in layout {
        let info = source
            .tensor_info(&spec.name)
            .map_err(|error| match error {
                MoeError::MissingExpert { .. } => MoeError::MissingTensor {
                    name: spec.name.clone(),
                },
                other => other,
            })?;
        if tensor_dtype(info.kind, false).is_none() {
            return Err(MoeError::UnsupportedDtype {
                name: spec.name.clone(),
                dtype: format!("{:?}", info.kind),
            });
        }
        if info.shape != spec.shape {
            return Err(MoeError::WrongShape {
                name: spec.name.clone(),
                got: info.shape,
                expected: spec.shape.clone(),
            });
        }
        checked.push((spec, info.kind));
    }
    Ok(checked)
}

/// Checks that every block publishing would write fits `payload_bytes_max`, from the tensors'
/// shapes and dtypes alone (nothing is encoded): an oversized block is refused before the first
/// block is written, not half-way through an upload.
fn check_block_sizes(
    layout: &[(TensorSpec, Kind)],
    quantize_experts: bool,
    payload_bytes_max: u64,
) -> Result<()> {
    let mut blocks: BTreeMap<String, Vec<blyan_tensorblock::TensorSpec>> = BTreeMap::new();
    for (spec, kind) in layout {
        let (block, quantized) = match spec.role {
            TensorRole::Shared(group) => (group.name(), false),
            TensorRole::Expert { id, .. } => (id.to_string(), quantize_experts),
        };
        let planned = match (quantized, spec.shape.as_slice()) {
            (true, [rows, cols]) => {
                blyan_tensorblock::TensorSpec::int8_per_channel(&spec.name, *rows, *cols)
            }
            _ => {
                let dtype = blyan_tensorblock::dtype_of(*kind).ok_or_else(|| {
                    MoeError::UnsupportedDtype {
                        name: spec.name.clone(),
                        dtype: format!("{kind:?}"),
                    }
                })?;
                blyan_tensorblock::TensorSpec::new(&spec.name, dtype, &spec.shape)
            }
        };
        blocks.entry(block).or_default().push(planned);
    }
    for (name, specs) in blocks {
        let bytes = blyan_tensorblock::BlockLayout::plan(&specs)?.payload_bytes();
        if bytes > payload_bytes_max {
            return Err(MoeError::BlockTooLarge {
                name,
                bytes,
                bytes_max: payload_bytes_max,
            });
        }
    }
    Ok(())
}

/// Encodes named tensors into a tensor-block payload, with the header's tensor list.
fn encode_payload(
    tensors: &[(String, Tensor)],
    quantize: bool,
) -> Result<(Vec<u8>, Vec<TensorMeta>)> {
    let encode: Vec<EncodeTensor<'_>> = tensors
        .iter()
        .map(|(name, tensor)| {
            if quantize {
                EncodeTensor::int8(name, tensor)
            } else {
                EncodeTensor::as_is(name, tensor)
            }
        })
        .collect();
    let payload = encode_tensors_to_vec(&encode)?;
    let metas = tensors
        .iter()
        .map(|(name, tensor)| -> Result<TensorMeta> {
            let dtype = tensor_dtype(tensor.kind(), quantize).ok_or_else(|| {
                MoeError::UnsupportedDtype {
                    name: name.clone(),
                    dtype: format!("{:?}", tensor.kind()),
                }
            })?;
            Ok(TensorMeta {
                name: name.clone(),
                dtype,
                shape: shape_of(tensor),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((payload, metas))
}

/// Where [`publish_model`] writes: a local [`ChainStore`], or a node over HTTP (the miner's
/// `upload --node`). Everything publishing needs to decide what to write, and to write it.
pub trait PublishTarget {
    /// The newest block of `chain`.
    fn tip(&self, chain: ChainId) -> Result<ChainTip>;
    /// A stored block's header.
    fn header(&self, block: &BlockHash) -> Result<Option<BlockHeader>>;
    /// The current version of an expert, if it has one.
    fn expert_current(&self, expert: ExpertName) -> Result<Option<ExpertVersion>>;
    /// The newest model on the meta chain, if any ([`current_model`] on a store).
    fn current_model(&self) -> Result<Option<(BlockHash, ModelDocument)>>;
    /// Leading zero bits of work the target demands of a block hash (0: none).
    fn pow_difficulty_bits(&self) -> u32;
    /// Largest payload the target accepts in one block.
    fn payload_bytes_max(&self) -> u64;
    /// Appends a signed block. [`MoeError::TipMoved`] when another writer took the parent's
    /// place first: the caller rebuilds the block on the new tip.
    fn append(&self, header: &BlockHeader, payload: &[u8]) -> Result<BlockHash>;
}

impl PublishTarget for ChainStore {
    fn tip(&self, chain: ChainId) -> Result<ChainTip> {
        Ok(ChainStore::tip(self, chain))
    }

    fn header(&self, block: &BlockHash) -> Result<Option<BlockHeader>> {
        Ok(ChainStore::header(self, block)?)
    }

    fn expert_current(&self, expert: ExpertName) -> Result<Option<ExpertVersion>> {
        Ok(ChainStore::expert_current(self, expert)?)
    }

    fn current_model(&self) -> Result<Option<(BlockHash, ModelDocument)>> {
        match current_model(self) {
            Ok(found) => Ok(Some(found)),
            Err(MoeError::NoModelOnChain) => Ok(None),
            Err(other) => Err(other),
        }
    }

    fn pow_difficulty_bits(&self) -> u32 {
        self.config().pow_difficulty_bits
    }

    fn payload_bytes_max(&self) -> u64 {
        self.config().payload_bytes_max
    }

    fn append(&self, header: &BlockHeader, payload: &[u8]) -> Result<BlockHash> {
        match ChainStore::append(self, header, payload) {
            Ok(block) => Ok(block),
            Err(blyan_chain::Error::Fork { chain, .. }) => Err(MoeError::TipMoved { chain }),
            Err(other) => Err(other.into()),
        }
    }
}

/// Times a block is rebuilt on a moved tip before publishing gives up.
const TIP_RETRIES_MAX: u32 = 8;

/// Appends signed blocks with timestamps that never go backwards.
struct BlockAppender<'a> {
    target: &'a dyn PublishTarget,
    key: &'a AuthorKey,
    clock_ms: u64,
}

impl BlockAppender<'_> {
    fn append(
        &mut self,
        chain: ChainId,
        kind: BlockKind,
        meta: BlockMeta,
        depends_on: Vec<BlockHash>,
        payload: &[u8],
    ) -> Result<BlockHash> {
        let mut attempt = 0;
        loop {
            let tip = self.target.tip(chain)?;
            let parent_ms = self
                .target
                .header(&tip.hash)?
                .map_or(0, |parent| parent.timestamp_ms);
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| {
                    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
                });
            self.clock_ms = self.clock_ms.max(parent_ms).max(now_ms);
            let mut header = BlockHeader::new_child(&tip, kind, payload, self.clock_ms);
            header.meta = meta.clone();
            header.depends_on = depends_on.clone();
            header.author = self.key.address();
            let difficulty_bits = self.target.pow_difficulty_bits();
            if difficulty_bits > 0 {
                header.mine(difficulty_bits);
            }
            header.sign(self.key);
            match self.target.append(&header, payload) {
                Err(MoeError::TipMoved { chain }) if attempt < TIP_RETRIES_MAX => {
                    attempt += 1;
                    tracing::info!(%chain, attempt, "the tip moved under the block: rebuilding it");
                }
                outcome => return outcome,
            }
        }
    }
}

/// Publishes a model into `target` (a [`ChainStore`], or a node), signed by `key`: shared-group
/// blocks, the meta block, one block per expert, skipping those whose payload is already current.
///
/// Everything is checked first (configuration, tokenizer, every tensor's presence, shape and
/// dtype, every block's size against the target's limit); a bad model is refused before any
/// block is written.
pub fn publish_model(
    target: &dyn PublishTarget,
    key: &AuthorKey,
    config: &Config,
    files: CheckpointFiles<'_>,
    source: &dyn WeightSource,
    options: &PublishOptions,
    progress: &mut dyn FnMut(&PublishEvent),
) -> Result<PublishSummary> {
    // Checks, before anything is written.
    let parsed = Config::from_json(files.config_json)?;
    if parsed != *config {
        return Err(MoeError::Config {
            field: "config.json",
            reason: "the file differs from the configuration being published".into(),
        });
    }
    let text = |bytes: &[u8], what: &str| -> Result<String> {
        String::from_utf8(bytes.to_vec())
            .map_err(|_| MoeError::Tokenizer(format!("{what} is not UTF-8 text")))
    };
    let config_json = text(files.config_json, "config.json")?;
    let tokenizer_json = text(files.tokenizer_json, "tokenizer.json")?;
    let generation_config_json = files
        .generation_config_json
        .map(|bytes| text(bytes, "generation_config.json"))
        .transpose()?;
    let tokenizer = Tokenizer::from_json(files.tokenizer_json)?;
    check_tokenizer_fits(&tokenizer, config)?;
    let layout = check_source(config, source)?;
    let groups = shared_groups(config);
    let experts = experts_of(config);
    let quantize = options.expert_quantization == ExpertQuantization::Int8;
    check_block_sizes(&layout, quantize, target.payload_bytes_max())?;
    progress(&PublishEvent::Checked {
        blocks: (groups.len() + 1 + experts.len()) as u64,
    });

    let current = target.current_model()?;
    let mut summary = PublishSummary {
        meta_block: BlockHash::ZERO,
        meta_written: false,
        shared_written: 0,
        shared_unchanged: 0,
        experts_written: 0,
        experts_unchanged: 0,
        bytes_written: 0,
    };
    let mut appender = BlockAppender {
        target,
        key,
        clock_ms: 0,
    };

    // Shared groups.
    let mut shared = BTreeMap::new();
    for group in &groups {
        let name = group.name();
        let tensors = layout
            .iter()
            .map(|(spec, _)| spec)
            .filter(|spec| spec.role == TensorRole::Shared(*group))
            .map(|spec| -> Result<(String, Tensor)> {
                Ok((spec.name.clone(), source.tensor(&spec.name)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let (payload, metas) = encode_payload(&tensors, false)?;
        let payload_hash = hash_payload(&payload);
        let existing = match current
            .as_ref()
            .and_then(|(_, document)| document.shared.get(&name))
        {
            Some(block) => target
                .header(block)?
                .filter(|header| header.payload_hash == payload_hash)
                .map(|_| *block),
            None => None,
        };
        let block = match existing {
            Some(block) => {
                summary.shared_unchanged += 1;
                progress(&PublishEvent::Unchanged { name: name.clone() });
                block
            }
            None => {
                let (kind, layer) = match group {
                    SharedGroup::Router { layer } => (BlockKind::Router, Some(*layer)),
                    SharedGroup::Attention { layer } => (BlockKind::SharedWeights, Some(*layer)),
                    SharedGroup::Embedding | SharedGroup::Head => (BlockKind::SharedWeights, None),
                };
                let meta = BlockMeta {
                    expert: None,
                    layer,
                    version: 0,
                    tensors: metas,
                };
                let block =
                    appender.append(ChainId::Parameters, kind, meta, Vec::new(), &payload)?;
                summary.shared_written += 1;
                summary.bytes_written += payload.len() as u64;
                progress(&PublishEvent::Written {
                    name: name.clone(),
                    block,
                    bytes: payload.len() as u64,
                });
                block
            }
        };
        shared.insert(name, block);
    }

    // The meta block.
    let architecture: serde_json::Value =
        serde_json::from_slice(files.config_json).map_err(MoeError::ConfigJson)?;
    let document = ModelDocument {
        format: MODEL_DOCUMENT_FORMAT.to_owned(),
        architecture,
        untrained: options.untrained,
        description: options.description.clone(),
        config_json,
        generation_config_json,
        tokenizer_json,
        shared,
    };
    let meta_block = match &current {
        Some((block, existing)) if *existing == document => {
            progress(&PublishEvent::Unchanged {
                name: "meta".to_owned(),
            });
            *block
        }
        _ => {
            let payload =
                serde_json::to_vec(&document).map_err(|error| MoeError::BadMetaBlock {
                    block: "new".to_owned(),
                    reason: error.to_string(),
                })?;
            let depends_on: Vec<BlockHash> =
                if document.shared.len() <= DEPENDS_ON_COUNT_MAX as usize {
                    let mut blocks: Vec<BlockHash> = document.shared.values().copied().collect();
                    blocks.sort_unstable();
                    blocks.dedup();
                    blocks
                } else {
                    Vec::new()
                };
            let block = appender.append(
                ChainId::Meta,
                BlockKind::Meta,
                BlockMeta::default(),
                depends_on,
                &payload,
            )?;
            summary.meta_written = true;
            summary.bytes_written += payload.len() as u64;
            progress(&PublishEvent::Written {
                name: "meta".to_owned(),
                block,
                bytes: payload.len() as u64,
            });
            block
        }
    };
    summary.meta_block = meta_block;

    // Experts.
    for id in experts {
        let tensors = ExpertMatrix::ALL
            .iter()
            .map(|matrix| -> Result<(String, Tensor)> {
                let name = expert_tensor_name(id, *matrix);
                let tensor = source.tensor(&name)?;
                Ok((name, tensor))
            })
            .collect::<Result<Vec<_>>>()?;
        let (payload, metas) = encode_payload(&tensors, quantize)?;
        let payload_hash = hash_payload(&payload);
        let current_version = target.expert_current(id)?;
        if let Some(version) = current_version
            && target
                .header(&version.hash)?
                .is_some_and(|header| header.payload_hash == payload_hash)
        {
            summary.experts_unchanged += 1;
            progress(&PublishEvent::Unchanged {
                name: id.to_string(),
            });
            continue;
        }
        let meta = BlockMeta {
            expert: Some(id),
            layer: Some(id.layer()),
            version: current_version.map_or(1, |version| version.version + 1),
            tensors: metas,
        };
        let block = appender.append(
            ChainId::Parameters,
            BlockKind::Expert,
            meta,
            vec![meta_block],
            &payload,
        )?;
        summary.experts_written += 1;
        summary.bytes_written += payload.len() as u64;
        progress(&PublishEvent::Written {
            name: id.to_string(),
            block,
            bytes: payload.len() as u64,
        });
    }
    tracing::info!(
        meta = %summary.meta_block,
        shared_written = summary.shared_written,
        experts_written = summary.experts_written,
        experts_unchanged = summary.experts_unchanged,
        bytes = summary.bytes_written,
        "model published"
    );
    Ok(summary)
}

/// Publishes the seed configuration ([`Config::seed`]) with the byte-level tokenizer and the
/// seeded random initialisation of `seed`, marked untrained. Writes nothing that is already
/// current (publishing the same seed twice writes nothing the second time).
pub fn publish_seed_model(
    store: &ChainStore,
    key: &AuthorKey,
    seed: u64,
) -> Result<PublishSummary> {
    let config = Config::seed();
    let config_json = config.to_json()?;
    let tokenizer_json = Tokenizer::byte_level_json();
    let source = RandomInit::new(&config, seed)?;
    let files = CheckpointFiles {
        config_json: &config_json,
        generation_config_json: None,
        tokenizer_json: &tokenizer_json,
    };
    let options = PublishOptions {
        expert_quantization: ExpertQuantization::None,
        untrained: true,
        description: format!("untrained seed initialisation (seed {seed})"),
    };
    publish_model(store, key, &config, files, &source, &options, &mut |_| {})
}

/// On a chain that holds no model yet, publishes the untrained seed model
/// ([`publish_seed_model`] with [`DEFAULT_SEED`]) and returns what it wrote; on a chain that
/// holds one, writes nothing and returns `None`. What a node calls on its first start.
pub fn ensure_model(store: &ChainStore, key: &AuthorKey) -> Result<Option<PublishSummary>> {
    match current_model(store) {
        Ok(_) => Ok(None),
        Err(MoeError::NoModelOnChain) => {
            let summary = publish_seed_model(store, key, DEFAULT_SEED)?;
            tracing::warn!(
                meta = %summary.meta_block,
                seed = DEFAULT_SEED,
                "the chain held no model: wrote the UNTRAINED seed model"
            );
            Ok(Some(summary))
        }
        Err(other) => Err(other),
    }
}

impl ModelDocument {
    /// Parses the payload of meta block `block`: `Ok(None)` when it is not a model document at
    /// all, [`MoeError::BadMetaBlock`] when it claims to be one and is malformed.
    pub fn from_payload(block: BlockHash, payload: &[u8]) -> Result<Option<Self>> {
        parse_document(block, payload)
    }
}

/// Parses a meta block's payload; `Ok(None)` when it is not a model document at all.
fn parse_document(block: BlockHash, payload: &[u8]) -> Result<Option<ModelDocument>> {
    let bad = |reason: String| MoeError::BadMetaBlock {
        block: block.to_string(),
        reason,
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return Ok(None);
    };
    if value.get("format").and_then(serde_json::Value::as_str) != Some(MODEL_DOCUMENT_FORMAT) {
        return Ok(None);
    }
    let document: ModelDocument =
        serde_json::from_value(value).map_err(|error| bad(error.to_string()))?;
    let architecture: serde_json::Value = serde_json::from_str(&document.config_json)
        .map_err(|error| bad(format!("config_json: {error}")))?;
    if architecture != document.architecture {
        return Err(bad("architecture differs from config_json".into()));
    }
    Ok(Some(document))
}

/// The newest model document on the meta chain, with its block.
pub fn current_model(store: &ChainStore) -> Result<(BlockHash, ModelDocument)> {
    let tip = store.tip(ChainId::Meta);
    for height in (1..=tip.height).rev() {
        for block in store
            .block_hashes_at(ChainId::Meta, height)?
            .into_iter()
            .rev()
        {
            let Some(header) = store.header(&block)? else {
                continue;
            };
            if header.kind != BlockKind::Meta || header.payload_bytes > MODEL_DOCUMENT_BYTES_MAX {
                continue;
            }
            let Some(payload) = store.payload_verified(&block)? else {
                continue;
            };
            if let Some(document) = parse_document(block, &payload)? {
                return Ok((block, document));
            }
        }
    }
    Err(MoeError::NoModelOnChain)
}

/// A model on the chain as a [`WeightSource`]: shared tensors are zero-copy views of their
/// blocks, mapped once at open; experts are looked up by name (their current version) and
/// viewed on demand, INT8 ones dequantized.
pub struct ChainSource {
    store: Arc<ChainStore>,
    meta_block: BlockHash,
    document: ModelDocument,
    config: Config,
    shared: HashMap<String, Arc<TensorBlock<PayloadHandle>>>,
}

impl std::fmt::Debug for ChainSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainSource")
            .field("meta_block", &self.meta_block)
            .field("untrained", &self.document.untrained)
            .finish_non_exhaustive()
    }
}

impl ChainSource {
    /// The newest model on `store`'s meta chain ([`MoeError::NoModelOnChain`] if none).
    pub fn open(store: Arc<ChainStore>) -> Result<Self> {
        let (meta_block, document) = current_model(&store)?;
        Self::from_document(store, meta_block, document)
    }

    /// The model of meta block `meta_block`.
    pub fn open_at(store: Arc<ChainStore>, meta_block: BlockHash) -> Result<Self> {
        let payload =
            store
                .payload_verified(&meta_block)?
                .ok_or_else(|| MoeError::BadMetaBlock {
                    block: meta_block.to_string(),
                    reason: "not on the chain".into(),
                })?;
        let document =
            parse_document(meta_block, &payload)?.ok_or_else(|| MoeError::BadMetaBlock {
                block: meta_block.to_string(),
                reason: format!("not a {MODEL_DOCUMENT_FORMAT} document"),
            })?;
        Self::from_document(store, meta_block, document)
    }

    fn from_document(
        store: Arc<ChainStore>,
        meta_block: BlockHash,
        document: ModelDocument,
    ) -> Result<Self> {
        let config = Config::from_json(document.config_json.as_bytes())?;
        let mut shared = HashMap::new();
        for group in shared_groups(&config) {
            let name = group.name();
            let block = document
                .shared
                .get(&name)
                .ok_or_else(|| MoeError::MissingSharedBlock { name: name.clone() })?;
            let payload = store
                .payload_verified(block)?
                .ok_or_else(|| MoeError::MissingSharedBlock { name: name.clone() })?;
            let tensors = Arc::new(TensorBlock::new(payload)?);
            for info in tensors.layout().tensors() {
                shared.insert(info.name().to_owned(), Arc::clone(&tensors));
            }
        }
        Ok(Self {
            store,
            meta_block,
            document,
            config,
            shared,
        })
    }

    /// The configuration of the model.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The meta block the model was read from.
    pub fn meta_block(&self) -> BlockHash {
        self.meta_block
    }

    /// The model document of the meta block.
    pub fn document(&self) -> &ModelDocument {
        &self.document
    }

    /// True for the seeded random initialisation, never trained.
    pub fn untrained(&self) -> bool {
        self.document.untrained
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        Tokenizer::from_json(self.document.tokenizer_json.as_bytes())
    }

    /// The model's JSON files as published, for export.
    pub fn files(&self) -> CheckpointFiles<'_> {
        CheckpointFiles {
            config_json: self.document.config_json.as_bytes(),
            generation_config_json: self
                .document
                .generation_config_json
                .as_deref()
                .map(str::as_bytes),
            tokenizer_json: self.document.tokenizer_json.as_bytes(),
        }
    }

    /// The store the model is read from.
    pub fn store(&self) -> &Arc<ChainStore> {
        &self.store
    }

    /// The current block of an expert, as a tensor block.
    fn expert_block(&self, id: ExpertName) -> Result<TensorBlock<PayloadHandle>> {
        let missing = || MoeError::MissingExpert { expert: id };
        let version = self.store.expert_current(id)?.ok_or_else(missing)?;
        let payload = self
            .store
            .payload_verified(&version.hash)?
            .ok_or_else(missing)?;
        Ok(TensorBlock::new(payload)?)
    }

    /// A tensor of a block: the stored tensor without a copy, or an INT8 one dequantized.
    fn view(block: &TensorBlock<PayloadHandle>, name: &str) -> Result<Tensor> {
        let info = block.layout().require(name)?;
        Ok(match info.quantization() {
            Quantization::None => block.tensor(name)?,
            _ => block.load_f32(name)?,
        })
    }
}

impl WeightSource for ChainSource {
    fn tensor(&self, name: &str) -> Result<Tensor> {
        if let Some(block) = self.shared.get(name) {
            return Self::view(block, name);
        }
        if let Some((id, _)) = parse_expert_tensor_name(name)
            && id.layer() < self.config.num_hidden_layers
            && id.expert() < self.config.num_local_experts
        {
            let block = match self.expert_block(id) {
                Err(MoeError::MissingExpert { .. }) => {
                    return Err(MoeError::MissingTensor {
                        name: name.to_owned(),
                    });
                }
                other => other?,
            };
            return Self::view(&block, name);
        }
        Err(MoeError::MissingTensor {
            name: name.to_owned(),
        })
    }

    fn expert(&self, id: ExpertName) -> Result<ExpertWeights> {
        if id.layer() >= self.config.num_hidden_layers
            || id.expert() >= self.config.num_local_experts
        {
            return Err(MoeError::MissingExpert { expert: id });
        }
        let block = self.expert_block(id)?;
        let matrix = |matrix| Self::view(&block, &expert_tensor_name(id, matrix));
        Ok(ExpertWeights {
            w1: matrix(ExpertMatrix::W1)?,
            w2: matrix(ExpertMatrix::W2)?,
            w3: matrix(ExpertMatrix::W3)?,
        })
    }

    fn tensor_info(&self, name: &str) -> Result<TensorInfo> {
        let from_layout = |block: &TensorBlock<PayloadHandle>| -> Result<TensorInfo> {
            let info = block.layout().require(name)?;
            let kind = match info.quantization() {
                Quantization::None => blyan_tensorblock::kind_of(info.dtype()),
                _ => Kind::Float,
            };
            Ok(TensorInfo {
                kind,
                shape: info.shape().to_vec(),
            })
        };
        if let Some(block) = self.shared.get(name) {
            return from_layout(block);
        }
        match parse_expert_tensor_name(name) {
            Some((id, _)) => match self.expert_block(id) {
                Ok(block) => from_layout(&block),
                Err(MoeError::MissingExpert { .. }) => Err(MoeError::MissingTensor {
                    name: name.to_owned(),
                }),
                Err(other) => Err(other),
            },
            None => Err(MoeError::MissingTensor {
                name: name.to_owned(),
            }),
        }
    }

    fn describe(&self) -> String {
        let label = if self.document.untrained {
            "UNTRAINED "
        } else {
            ""
        };
        format!(
            "{label}model of meta block {} ({})",
            self.meta_block, self.document.description
        )
    }
}

impl Generator {
    /// Serves the newest model on `store`: shared weights loaded once, experts on demand
    /// through the cache of `options`. The generator's [`crate::ModelInfo::untrained`] says
    /// whether it is the untrained seed.
    pub fn from_chain(store: Arc<ChainStore>, options: ModelOptions) -> Result<Self> {
        let source = ChainSource::open(store)?;
        let config = source.config().clone();
        let tokenizer = source.tokenizer()?;
        let untrained = source.untrained();
        let meta_block = source.meta_block();
        let model = Model::load(&config, Arc::new(source), options)?;
        Ok(Self::with_meta_block(
            model,
            tokenizer,
            untrained,
            Some(meta_block),
        ))
    }
}

/// Writes the newest model on `store` as a Hugging Face checkpoint into `dir` (shards of at most
/// `shard_bytes_max`). Bit-exact for experts published without quantization; INT8 experts are
/// written dequantized, in float32.
pub fn export_from_chain(
    store: Arc<ChainStore>,
    dir: &std::path::Path,
    shard_bytes_max: u64,
) -> Result<crate::checkpoint::ExportSummary> {
    let source = ChainSource::open(store)?;
    crate::checkpoint::export_checkpoint(
        dir,
        source.config(),
        source.files(),
        &source,
        shard_bytes_max,
    )
}
