//! Publishing a model as blocks (`model_doc.rs` says how it lies on the chain), in named
//! phases:
//! 1. `plan`: check everything before anything is written (configuration, tokenizer, every
//!    tensor's presence, shape and dtype, every block's planned size against the target's
//!    limit);
//!    then `check_lineage` (`lineage.rs`): no expert it would write replaces a version the
//!    checkpoint does not descend from;
//! 2. `Publisher::write_shared_weights`: one block per shared group;
//! 3. `Publisher::write_meta`: the meta block, whose [`ModelDocument`] lists every shared
//!    block, and which depends on them (up to `DEPENDS_ON_COUNT_MAX` of them, see
//!    `meta_depends_on`);
//! 4. `Publisher::write_experts`: one block per expert, each depending on the meta block.
//!
//! A block whose payload is already the current one is not written again: re-publishing an
//! unchanged checkpoint writes nothing, and changing one expert writes one block. A publish of
//! some experts ([`PublishScope::experts`]) writes only their blocks, attached to the chain's
//! current model, after checking that model is the checkpoint's. Each block a phase considers
//! runs in a `publish_block` tracing span naming it.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use blyan_chain::{
    AuthorKey, BlockHash, BlockHeader, BlockKind, BlockMeta, ChainId, ChainStore, ChainTip,
    DEPENDS_ON_COUNT_MAX, ExpertVersion, TensorMeta, hash_payload,
};
use blyan_tensorblock::{BlockLayout, Dtype, EncodeTensor, TensorSpec, encode_tensors_to_vec};
use tch::Tensor;

use crate::block_tensors::tensor_metas;
use crate::chat_template::ChatFormat;
use crate::checkpoint::{CheckpointFiles, check_tokenizer_fits};
use crate::config::Config;
use crate::error::{MoeError, Result};
use crate::expert::{
    ExpertMatrix, ExpertName, ParameterSpec, SharedGroup, TensorRole, expert_tensor_name,
    experts_of, parameter_layout,
};
use crate::lineage::{PublishScope, check_lineage};
use crate::model_doc::{
    MODEL_DOCUMENT_FORMAT, ModelDocument, current_model, shared_block_kind, shared_groups,
};
use crate::tokenizer::Tokenizer;
use crate::weights::{RandomInit, WeightSource, is_model_dtype};

/// Seed of the default untrained model a node writes into an empty chain.
pub const DEFAULT_SEED: u64 = 0x0b1a_5eed;

/// Times a block is rebuilt on a moved tip before publishing gives up.
const TIP_RETRIES_MAX: u32 = 8;

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

/// Publishes a model into `target` (a [`ChainStore`], or a node), signed by `key`: shared-group
/// blocks, the meta block, one block per expert, skipping those whose payload is already current.
///
/// Everything is checked first (configuration, tokenizer, every tensor's presence, shape and
/// dtype, every block's size against the target's limit); a bad model is refused before any
/// block is written. Every expert is published and any current version replaced: see
/// [`publish_model_scoped`] to publish some experts, or to refuse to revert newer versions.
pub fn publish_model(
    target: &dyn PublishTarget,
    key: &AuthorKey,
    config: &Config,
    files: CheckpointFiles<'_>,
    source: &dyn WeightSource,
    options: &PublishOptions,
    progress: &mut dyn FnMut(&PublishEvent),
) -> Result<PublishSummary> {
    publish_as(
        target,
        Authority::Key(key),
        config,
        files,
        source,
        options,
        &PublishScope::default(),
        progress,
    )
}

/// [`publish_model`] limited to `scope`: only its experts (attached to the chain's current
/// model, which must be the checkpoint's), and none that would replace a version its lineage
/// does not descend from ([`MoeError::StaleExperts`], before any block is written).
#[allow(clippy::too_many_arguments)] // publish_model's arguments and the scope
pub fn publish_model_scoped(
    target: &dyn PublishTarget,
    key: &AuthorKey,
    config: &Config,
    files: CheckpointFiles<'_>,
    source: &dyn WeightSource,
    options: &PublishOptions,
    scope: &PublishScope,
    progress: &mut dyn FnMut(&PublishEvent),
) -> Result<PublishSummary> {
    publish_as(
        target,
        Authority::Key(key),
        config,
        files,
        source,
        options,
        scope,
        progress,
    )
}

/// [`publish_model_scoped`] with blocks vouched for by `authority`.
#[allow(clippy::too_many_arguments)] // publish_model_scoped's arguments, the key an authority
pub(crate) fn publish_as(
    target: &dyn PublishTarget,
    authority: Authority<'_>,
    config: &Config,
    files: CheckpointFiles<'_>,
    source: &dyn WeightSource,
    options: &PublishOptions,
    scope: &PublishScope,
    progress: &mut dyn FnMut(&PublishEvent),
) -> Result<PublishSummary> {
    let plan = plan(target, config, files, source, options, scope)?;
    let current = target.current_model()?;
    let author = match authority {
        Authority::Key(key) => Some(key.address()),
        Authority::Pinned { .. } => None,
    };
    check_lineage(
        target,
        &plan.experts,
        &scope.lineage,
        author,
        current.as_ref(),
        source,
        plan.quantize_experts,
    )?;
    progress(&PublishEvent::Checked {
        blocks: (plan.groups.len() + 1 + plan.experts.len()) as u64,
    });
    let mut publisher = Publisher {
        target,
        source,
        appender: BlockAppender {
            target,
            authority,
            clock_ms: 0,
        },
        progress,
        summary: PublishSummary {
            meta_block: BlockHash::ZERO,
            meta_written: false,
            shared_written: 0,
            shared_unchanged: 0,
            experts_written: 0,
            experts_unchanged: 0,
            bytes_written: 0,
        },
    };
    let meta_block = if scope.experts.is_some() {
        // Some experts: they join the current model, which must be the checkpoint's.
        let current = current.as_ref().ok_or(MoeError::NoModelOnChain)?;
        plan.check_current_model(current)?;
        publisher.check_shared_weights(&plan, current)?;
        (publisher.progress)(&PublishEvent::Unchanged {
            name: "meta".to_owned(),
        });
        publisher.summary.meta_block = current.0;
        current.0
    } else {
        let shared = publisher.write_shared_weights(&plan, current.as_ref())?;
        publisher.write_meta(plan.document(options, shared), current.as_ref())?
    };
    publisher.write_experts(&plan, meta_block)?;
    let summary = publisher.summary;
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

/// What phase 1 found: the checked files and the layout, ready to write.
struct PublishPlan {
    config_json: String,
    generation_config_json: Option<String>,
    tokenizer_json: String,
    tokenizer_config_json: Option<String>,
    architecture: serde_json::Value,
    /// Every parameter with the dtype the source holds it in.
    layout: Vec<(ParameterSpec, Dtype)>,
    groups: Vec<SharedGroup>,
    /// The experts to publish: the model's, or the scope's.
    experts: Vec<ExpertName>,
    quantize_experts: bool,
}

impl PublishPlan {
    /// The model document listing `shared`, the blocks phase 2 wrote or found current.
    fn document(
        &self,
        options: &PublishOptions,
        shared: BTreeMap<String, BlockHash>,
    ) -> ModelDocument {
        ModelDocument {
            format: MODEL_DOCUMENT_FORMAT.to_owned(),
            architecture: self.architecture.clone(),
            untrained: options.untrained,
            description: options.description.clone(),
            config_json: self.config_json.clone(),
            generation_config_json: self.generation_config_json.clone(),
            tokenizer_json: self.tokenizer_json.clone(),
            tokenizer_config_json: self.tokenizer_config_json.clone(),
            shared,
        }
    }

    /// Checks that `current`, the chain's current model, has the checkpoint's configuration and
    /// tokenizer (what a publish of some experts needs).
    fn check_current_model(&self, current: &(BlockHash, ModelDocument)) -> Result<()> {
        let (meta_block, document) = current;
        let differs = |part: &str| MoeError::NotTheCurrentModel {
            part: part.to_owned(),
            meta_block: *meta_block,
        };
        if document.config_json != self.config_json {
            return Err(differs("config.json"));
        }
        if document.tokenizer_json != self.tokenizer_json {
            return Err(differs("tokenizer.json"));
        }
        if document.generation_config_json != self.generation_config_json {
            return Err(differs("generation_config.json"));
        }
        Ok(())
    }
}

/// Phase 1: checks the files, the tokenizer, every tensor of the source and every block's size,
/// before anything is written.
fn plan(
    target: &dyn PublishTarget,
    config: &Config,
    files: CheckpointFiles<'_>,
    source: &dyn WeightSource,
    options: &PublishOptions,
    scope: &PublishScope,
) -> Result<PublishPlan> {
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
    let tokenizer_config_json = files
        .tokenizer_config_json
        .map(|bytes| text(bytes, "tokenizer_config.json"))
        .transpose()?;
    // A chat template that does not compile would stop every node loading the model.
    ChatFormat::from_tokenizer_config(files.tokenizer_config_json)?;
    let architecture: serde_json::Value =
        serde_json::from_slice(files.config_json).map_err(MoeError::ConfigJson)?;
    let tokenizer = Tokenizer::from_json(files.tokenizer_json)?;
    check_tokenizer_fits(&tokenizer, config)?;
    let layout = check_source(config, source)?;
    let quantize_experts = options.expert_quantization == ExpertQuantization::Int8;
    check_block_sizes(&layout, quantize_experts, target.payload_bytes_max())?;
    let mut experts = experts_of(config);
    if let Some(selected) = &scope.experts {
        if let Some(unknown) = selected.iter().find(|expert| !experts.contains(expert)) {
            return Err(MoeError::UnknownExpert {
                expert: *unknown,
                layers: config.num_hidden_layers,
                experts: config.num_local_experts,
            });
        }
        experts.retain(|expert| selected.contains(expert));
    }
    Ok(PublishPlan {
        config_json,
        generation_config_json,
        tokenizer_json,
        tokenizer_config_json,
        architecture,
        layout,
        groups: shared_groups(config),
        experts,
        quantize_experts,
    })
}

/// Checks every tensor `source` holds for `config`: present, right shape, float dtype. Returns
/// the layout with each tensor's dtype in the source.
fn check_source(config: &Config, source: &dyn WeightSource) -> Result<Vec<(ParameterSpec, Dtype)>> {
    let layout = parameter_layout(config)?;
    let mut checked = Vec::with_capacity(layout.len());
    for spec in layout {
        let stored = source
            .tensor_spec(&spec.name)
            .map_err(|error| match error {
                MoeError::MissingExpert { .. } => MoeError::MissingTensor {
                    name: spec.name.clone(),
                },
                other => other,
            })?;
        if !is_model_dtype(stored.dtype) {
            return Err(MoeError::UnsupportedDtype {
                name: spec.name.clone(),
                dtype: stored.dtype.name().to_owned(),
            });
        }
        if stored.shape != spec.shape {
            return Err(MoeError::WrongShape {
                name: spec.name.clone(),
                got: stored.shape,
                expected: spec.shape.clone(),
            });
        }
        checked.push((spec, stored.dtype));
    }
    Ok(checked)
}

/// Checks that every block publishing would write fits `payload_bytes_max`, from the tensors'
/// shapes and dtypes alone (nothing is encoded): an oversized block is refused before the first
/// block is written, not half-way through an upload.
fn check_block_sizes(
    layout: &[(ParameterSpec, Dtype)],
    quantize_experts: bool,
    payload_bytes_max: u64,
) -> Result<()> {
    let mut blocks: BTreeMap<String, Vec<TensorSpec>> = BTreeMap::new();
    for (spec, dtype) in layout {
        let (block, quantized) = match spec.role {
            TensorRole::Shared(group) => (group.name(), false),
            TensorRole::Expert { id, .. } => (id.to_string(), quantize_experts),
        };
        let planned = match (quantized, spec.shape.as_slice()) {
            (true, [rows, cols]) => TensorSpec::int8_per_channel(&spec.name, *rows, *cols),
            _ => TensorSpec::new(&spec.name, *dtype, &spec.shape),
        };
        blocks.entry(block).or_default().push(planned);
    }
    for (name, specs) in blocks {
        let bytes = BlockLayout::plan(&specs)?.payload_bytes();
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

/// Phases 2 to 4: writes the blocks of a checked plan, counting what it did.
struct Publisher<'a, 'p> {
    target: &'a dyn PublishTarget,
    source: &'a dyn WeightSource,
    appender: BlockAppender<'a>,
    progress: &'p mut dyn FnMut(&PublishEvent),
    summary: PublishSummary,
}

impl Publisher<'_, '_> {
    /// Phase 2: one block per shared group, unless the current model's block for that group
    /// already holds the same payload. Returns every group's block, by name.
    fn write_shared_weights(
        &mut self,
        plan: &PublishPlan,
        current: Option<&(BlockHash, ModelDocument)>,
    ) -> Result<BTreeMap<String, BlockHash>> {
        let mut shared = BTreeMap::new();
        for group in &plan.groups {
            let name = group.name();
            let _span = tracing::info_span!("publish_block", block = %name).entered();
            let (payload, metas) = self.shared_payload(plan, *group)?;
            let existing = self.current_shared_block(&name, &payload, current)?;
            let block = match existing {
                Some(block) => {
                    self.summary.shared_unchanged += 1;
                    (self.progress)(&PublishEvent::Unchanged { name: name.clone() });
                    block
                }
                None => {
                    let (kind, layer) = shared_block_kind(*group);
                    let meta = BlockMeta {
                        expert: None,
                        layer,
                        version: 0,
                        tensors: metas,
                    };
                    let block = self.appender.append(
                        ChainId::Parameters,
                        kind,
                        meta,
                        Vec::new(),
                        &payload,
                    )?;
                    self.summary.shared_written += 1;
                    self.written(name.clone(), block, &payload);
                    block
                }
            };
            shared.insert(name, block);
        }
        Ok(shared)
    }

    /// Instead of phase 2 when publishing some experts: checks that every shared group of the
    /// checkpoint is the block the current model lists, writing nothing.
    fn check_shared_weights(
        &mut self,
        plan: &PublishPlan,
        current: &(BlockHash, ModelDocument),
    ) -> Result<()> {
        for group in &plan.groups {
            let name = group.name();
            let (payload, _) = self.shared_payload(plan, *group)?;
            if self
                .current_shared_block(&name, &payload, Some(current))?
                .is_none()
            {
                return Err(MoeError::NotTheCurrentModel {
                    part: format!("shared weights `{name}`"),
                    meta_block: current.0,
                });
            }
            self.summary.shared_unchanged += 1;
            (self.progress)(&PublishEvent::Unchanged { name });
        }
        Ok(())
    }

    /// Group `group`'s payload, with its header's tensor list.
    fn shared_payload(
        &self,
        plan: &PublishPlan,
        group: SharedGroup,
    ) -> Result<(Vec<u8>, Vec<TensorMeta>)> {
        let tensors = plan
            .layout
            .iter()
            .map(|(spec, _)| spec)
            .filter(|spec| spec.role == TensorRole::Shared(group))
            .map(|spec| -> Result<(String, Tensor)> {
                Ok((spec.name.clone(), self.source.tensor(&spec.name)?))
            })
            .collect::<Result<Vec<_>>>()?;
        encode_payload(&tensors, false)
    }

    /// The current model's block for group `name` when it holds `payload`.
    fn current_shared_block(
        &self,
        name: &str,
        payload: &[u8],
        current: Option<&(BlockHash, ModelDocument)>,
    ) -> Result<Option<BlockHash>> {
        let Some(block) = current.and_then(|(_, document)| document.shared.get(name)) else {
            return Ok(None);
        };
        let payload_hash = hash_payload(payload);
        Ok(self
            .target
            .header(block)?
            .filter(|header| header.payload_hash == payload_hash)
            .map(|_| *block))
    }

    /// Phase 3: the meta block carrying `document`, unless the current model's document is the
    /// same. Returns the model's meta block.
    fn write_meta(
        &mut self,
        document: ModelDocument,
        current: Option<&(BlockHash, ModelDocument)>,
    ) -> Result<BlockHash> {
        let _span = tracing::info_span!("publish_block", block = "meta").entered();
        if let Some((block, existing)) = current
            && *existing == document
        {
            (self.progress)(&PublishEvent::Unchanged {
                name: "meta".to_owned(),
            });
            self.summary.meta_block = *block;
            return Ok(*block);
        }
        let payload = serde_json::to_vec(&document).map_err(|error| MoeError::BadMetaBlock {
            block: "new".to_owned(),
            reason: error.to_string(),
        })?;
        let depends_on = meta_depends_on(&document);
        if depends_on.len() < document.shared.len() {
            tracing::info!(
                shared_blocks = document.shared.len(),
                depends_on = depends_on.len(),
                "more shared blocks than a header may depend on: the meta block depends on a \
                 bounded subset, its document lists them all"
            );
        }
        let block = self.appender.append(
            ChainId::Meta,
            BlockKind::Meta,
            BlockMeta::default(),
            depends_on,
            &payload,
        )?;
        self.summary.meta_written = true;
        self.summary.meta_block = block;
        self.written("meta".to_owned(), block, &payload);
        Ok(block)
    }

    /// Phase 4: one block per expert, each depending on `meta_block`, unless the expert's
    /// current version already holds the same payload.
    fn write_experts(&mut self, plan: &PublishPlan, meta_block: BlockHash) -> Result<()> {
        for id in &plan.experts {
            let id = *id;
            let _span = tracing::info_span!("publish_block", block = %id).entered();
            let tensors = ExpertMatrix::ALL
                .iter()
                .map(|matrix| -> Result<(String, Tensor)> {
                    let name = expert_tensor_name(id, *matrix);
                    let tensor = self.source.tensor(&name)?;
                    Ok((name, tensor))
                })
                .collect::<Result<Vec<_>>>()?;
            let (payload, metas) = encode_payload(&tensors, plan.quantize_experts)?;
            let payload_hash = hash_payload(&payload);
            let current_version = self.target.expert_current(id)?;
            if let Some(version) = current_version
                && self
                    .target
                    .header(&version.hash)?
                    .is_some_and(|header| header.payload_hash == payload_hash)
            {
                self.summary.experts_unchanged += 1;
                (self.progress)(&PublishEvent::Unchanged {
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
            let block = self.appender.append(
                ChainId::Parameters,
                BlockKind::Expert,
                meta,
                vec![meta_block],
                &payload,
            )?;
            self.summary.experts_written += 1;
            self.written(id.to_string(), block, &payload);
        }
        Ok(())
    }

    /// Counts a written block and reports it.
    fn written(&mut self, name: String, block: BlockHash, payload: &[u8]) {
        let bytes = payload.len() as u64;
        self.summary.bytes_written += bytes;
        tracing::debug!(%block, bytes, "block written");
        (self.progress)(&PublishEvent::Written { name, block, bytes });
    }
}

/// The blocks a meta block depends on: the document's shared blocks, sorted and deduplicated,
/// and at most the chain's `DEPENDS_ON_COUNT_MAX` of them (the smallest hashes: a rule of the
/// set alone). Beyond that bound the document is the complete list, and the reader loads and
/// checks every block it names; `depends_on` never names a block the document does not list.
fn meta_depends_on(document: &ModelDocument) -> Vec<BlockHash> {
    let mut blocks: Vec<BlockHash> = document.shared.values().copied().collect();
    blocks.sort_unstable();
    blocks.dedup();
    blocks.truncate(DEPENDS_ON_COUNT_MAX as usize);
    blocks
}

/// Encodes named tensors into a tensor-block payload, with the header's list of its tensors,
/// taken from the layout of the very bytes encoded.
pub(crate) fn encode_payload(
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
    let metas = tensor_metas(&BlockLayout::parse(&payload)?);
    Ok((payload, metas))
}

/// Who vouches for the blocks a publish writes.
#[derive(Clone, Copy)]
pub(crate) enum Authority<'a> {
    /// Signed by this key, timestamped with the clock (never before the parent).
    Key(&'a AuthorKey),
    /// Unsigned, author zero, every block at this timestamp: blocks trusted by their hashes
    /// (the shipped model, [`crate::shipped`]), the same bytes wherever they are built.
    Pinned {
        /// The timestamp every block carries.
        timestamp_ms: u64,
    },
}

/// Appends blocks with timestamps that never go backwards.
struct BlockAppender<'a> {
    target: &'a dyn PublishTarget,
    authority: Authority<'a>,
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
            self.clock_ms = match self.authority {
                Authority::Key(_) => self.clock_ms.max(parent_ms).max(now_ms),
                Authority::Pinned { timestamp_ms } => timestamp_ms,
            };
            let mut header = BlockHeader::new_child(&tip, kind, payload, self.clock_ms);
            header.meta = meta.clone();
            header.depends_on = depends_on.clone();
            if let Authority::Key(key) = self.authority {
                header.author = key.address();
                let difficulty_bits = self.target.pow_difficulty_bits();
                if difficulty_bits > 0 {
                    header.mine(difficulty_bits);
                }
                header.sign(key);
            }
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
        tokenizer_config_json: None,
    };
    let options = PublishOptions {
        expert_quantization: ExpertQuantization::None,
        untrained: true,
        description: format!("untrained seed initialisation (seed {seed})"),
    };
    publish_model(store, key, &config, files, &source, &options, &mut |_| {})
}

/// What a node puts on a chain that holds no model yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedModel {
    /// The shipped trained model in this directory ([`crate::import_shipped_model`]); by
    /// default [`crate::shipped_model_dir`].
    Shipped(std::path::PathBuf),
    /// The untrained random initialisation of [`Config::seed`] under this seed (chat is noise).
    Random(u64),
}

impl Default for SeedModel {
    fn default() -> Self {
        Self::Shipped(crate::shipped::shipped_model_dir())
    }
}

/// What [`ensure_model`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedWritten {
    /// The shipped model was imported; its meta block.
    Shipped(BlockHash),
    /// The untrained random model was published.
    Random(PublishSummary),
}

/// On a chain that holds no model yet, writes `seed`: the shipped trained model, or the
/// untrained random one ([`publish_seed_model`], signed by `key`); returns what it wrote. On
/// a chain that holds a model, writes nothing and returns `None`. What a node calls on its
/// first start.
pub fn ensure_model(
    store: &ChainStore,
    key: &AuthorKey,
    seed: &SeedModel,
) -> Result<Option<SeedWritten>> {
    match current_model(store) {
        Ok(_) => Ok(None),
        Err(MoeError::NoModelOnChain) => match seed {
            SeedModel::Shipped(dir) => {
                let meta = crate::shipped::import_shipped_model(store, dir)?;
                tracing::info!(%meta, dir = %dir.display(), "the chain held no model: imported the shipped model");
                Ok(Some(SeedWritten::Shipped(meta)))
            }
            SeedModel::Random(seed) => {
                let summary = publish_seed_model(store, key, *seed)?;
                tracing::warn!(
                    meta = %summary.meta_block,
                    seed,
                    "the chain held no model: wrote the UNTRAINED seed model"
                );
                Ok(Some(SeedWritten::Random(summary)))
            }
        },
        Err(other) => Err(other),
    }
}
