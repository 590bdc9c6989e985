//! Reading a model from the chain: [`ChainSource`], a [`WeightSource`] whose tensors are
//! zero-copy views of the blocks (`model_doc.rs` says how the model lies there), and export
//! back to a Hugging Face checkpoint.
//!
//! Every block read is checked before its tensors are used: the payload against its hash
//! (`payload_verified`), the header's tensor list against the payload's layout
//! (`block_tensors.rs`), a shared block's kind against its group, and the meta block's
//! `depends_on` against the document's list.

use std::collections::HashMap;
use std::sync::Arc;

use blyan_chain::{BlockHash, BlockHeader, ChainStore, PayloadHandle};
use blyan_tensorblock::{Dtype, Quantization, TensorBlock, TensorSpec};
use tch::Tensor;

use crate::block_tensors::check_header_tensors;
use crate::chat_template::ChatFormat;
use crate::checkpoint::{CheckpointExportSummary, CheckpointFiles, export_checkpoint};
use crate::config::Config;
use crate::error::{MoeError, Result};
use crate::expert::{
    ExpertMatrix, ExpertName, ExpertWeights, expert_tensor_name, parse_expert_tensor_name,
};
use crate::model_doc::{
    MODEL_DOCUMENT_FORMAT, ModelDocument, served_models, shared_block_kind, shared_groups,
};
use crate::tokenizer::Tokenizer;
use crate::weights::WeightSource;

/// A model on the chain as a [`WeightSource`]: shared tensors are zero-copy views of their
/// blocks, mapped once at open; experts are looked up by name (their current version) and
/// viewed on demand, INT8 ones dequantized (to f32; the model converts them once more to its
/// compute dtype).
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

/// A block's header and its payload as a tensor block, the header's tensor list checked
/// against the payload. `None` when the store lacks the block.
fn read_tensor_block(
    store: &ChainStore,
    block: BlockHash,
) -> Result<Option<(BlockHeader, TensorBlock<PayloadHandle>)>> {
    let Some(header) = store.header(&block)? else {
        return Ok(None);
    };
    let Some(payload) = store.payload_verified(&block)? else {
        return Ok(None);
    };
    let tensors = TensorBlock::new(payload)?;
    check_header_tensors(block, &header.meta.tensors, tensors.layout())?;
    Ok(Some((header, tensors)))
}

impl ChainSource {
    /// The newest served model on `store`'s meta chain that opens ([`MoeError::NoModelOnChain`]
    /// if none is served). A newer model that does not open (a shared block missing or of the
    /// wrong kind, a stray dependency) is logged and skipped; if none opens, the newest one's
    /// error. A store failure is returned as it happens.
    pub fn open(store: Arc<ChainStore>) -> Result<Self> {
        first_that_loads(&store, |meta_block, document| {
            Self::from_document(Arc::clone(&store), meta_block, document)
        })
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
        let document = ModelDocument::from_payload(meta_block, &payload)?.ok_or_else(|| {
            MoeError::BadMetaBlock {
                block: meta_block.to_string(),
                reason: format!("not a {MODEL_DOCUMENT_FORMAT} document"),
            }
        })?;
        Self::from_document(store, meta_block, document)
    }

    fn from_document(
        store: Arc<ChainStore>,
        meta_block: BlockHash,
        document: ModelDocument,
    ) -> Result<Self> {
        let meta_header = store
            .header(&meta_block)?
            .ok_or_else(|| MoeError::BadMetaBlock {
                block: meta_block.to_string(),
                reason: "not on the chain".into(),
            })?;
        document.check_depends_on(meta_block, &meta_header.depends_on)?;
        let config = Config::from_json(document.config_json.as_bytes())?;
        let mut shared = HashMap::new();
        for group in shared_groups(&config) {
            let name = group.name();
            let missing = || MoeError::MissingSharedBlock { name: name.clone() };
            let block = *document.shared.get(&name).ok_or_else(missing)?;
            let _span = tracing::info_span!("shared_load", group = %name, %block).entered();
            let (header, tensors) = read_tensor_block(&store, block)?.ok_or_else(missing)?;
            let (kind, _) = shared_block_kind(group);
            if header.kind != kind {
                return Err(MoeError::BadMetaBlock {
                    block: meta_block.to_string(),
                    reason: format!(
                        "shared group `{name}` names block {block} of kind {:?}, not {kind:?}",
                        header.kind
                    ),
                });
            }
            let tensors = Arc::new(tensors);
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

    /// How the model's chats become prompts: its published chat template, else the built-in
    /// format. A template that does not compile is [`MoeError::ChatTemplate`].
    pub fn chat_format(&self) -> Result<ChatFormat> {
        ChatFormat::from_tokenizer_config(
            self.document
                .tokenizer_config_json
                .as_deref()
                .map(str::as_bytes),
        )
    }

    /// The model's JSON files as published, for export.
    pub fn files(&self) -> CheckpointFiles<'_> {
        self.document.files()
    }

    /// The store the model is read from.
    pub fn store(&self) -> &Arc<ChainStore> {
        &self.store
    }

    /// The current block of an expert, as a tensor block.
    fn expert_block(&self, id: ExpertName) -> Result<TensorBlock<PayloadHandle>> {
        let missing = || MoeError::MissingExpert { expert: id };
        let version = self.store.expert_current(id)?.ok_or_else(missing)?;
        let _span =
            tracing::info_span!("expert_block", expert = %id, block = %version.hash).entered();
        let (_, tensors) = read_tensor_block(&self.store, version.hash)?.ok_or_else(missing)?;
        Ok(tensors)
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

    fn tensor_spec(&self, name: &str) -> Result<TensorSpec> {
        // What `tensor` hands out: a quantized tensor dequantized, in f32.
        let from_layout = |block: &TensorBlock<PayloadHandle>| -> Result<TensorSpec> {
            let info = block.layout().require(name)?;
            let dtype = match info.quantization() {
                Quantization::None => info.dtype(),
                _ => Dtype::F32,
            };
            Ok(TensorSpec::new(name, dtype, info.shape()))
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

/// The weights of expert `id` in block `block` exactly (not its current version), checked as
/// every chain read is, converted to float32 on the CPU: what a node serving the expert to
/// peers computes with (in float32 whatever its own `model.dtype`, as the hidden states of a
/// remote call travel in float32). A block the store lacks, or one that is
/// not `id`'s, is [`MoeError::MissingExpert`].
pub fn expert_from_block(
    store: &ChainStore,
    block: BlockHash,
    id: ExpertName,
) -> Result<ExpertWeights> {
    let missing = || MoeError::MissingExpert { expert: id };
    let (header, tensors) = read_tensor_block(store, block)?.ok_or_else(missing)?;
    if header.meta.expert != Some(id) {
        return Err(missing());
    }
    let matrix = |matrix| -> Result<Tensor> {
        Ok(
            ChainSource::view(&tensors, &expert_tensor_name(id, matrix))?
                .f_to_kind(tch::Kind::Float)?,
        )
    };
    Ok(ExpertWeights {
        w1: matrix(ExpertMatrix::W1)?,
        w2: matrix(ExpertMatrix::W2)?,
        w3: matrix(ExpertMatrix::W3)?,
    })
}

/// `load` applied to the served models of `store`, newest first, until one succeeds: the
/// failures before are logged; if every model fails, the newest one's error; without a served
/// model, [`MoeError::NoModelOnChain`]. A store failure ends the walk with its error.
pub(crate) fn first_that_loads<T>(
    store: &ChainStore,
    mut load: impl FnMut(BlockHash, ModelDocument) -> Result<T>,
) -> Result<T> {
    let mut newest_error = None;
    for found in served_models(store)? {
        let (meta_block, document) = found?;
        match load(meta_block, document) {
            Ok(loaded) => return Ok(loaded),
            Err(error @ MoeError::Chain(_)) => return Err(error),
            Err(error) => {
                tracing::warn!(%meta_block, %error, "skipping a model that does not load");
                newest_error.get_or_insert(error);
            }
        }
    }
    Err(newest_error.unwrap_or(MoeError::NoModelOnChain))
}

/// Writes the newest model on `store` as a Hugging Face checkpoint into `dir` (shards of at most
/// `shard_bytes_max`). Bit-exact for experts published without quantization; INT8 experts are
/// written dequantized, in float32.
pub fn export_from_chain(
    store: Arc<ChainStore>,
    dir: &std::path::Path,
    shard_bytes_max: u64,
) -> Result<CheckpointExportSummary> {
    let source = ChainSource::open(store)?;
    export_checkpoint(
        dir,
        source.config(),
        source.files(),
        &source,
        shard_bytes_max,
    )
}
