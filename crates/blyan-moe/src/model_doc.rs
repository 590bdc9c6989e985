//! How a model lies on the chain, and the document that names its blocks.
//!
//! - Parameters chain (B): one `SharedWeights` block per shared group (`embed`,
//!   `layer{L}.attention` with its norms, `head`), one `Router` block per layer
//!   (`layer{L}.router`), and one `Expert` block per expert (`layer{L}.expert{E}`, versions
//!   counted by the chain). Every payload is a tensor block whose tensors carry their Hugging
//!   Face names, so a block describes itself; its header's tensor list says the same
//!   (`block_tensors.rs`).
//! - Meta chain (A): one `Meta` block per model version. Its payload is a [`ModelDocument`]
//!   (JSON): the architecture as Hugging Face's `config.json` (parsed, and its exact text),
//!   `tokenizer.json`, the optional `generation_config.json` and `tokenizer_config.json` (its chat
//!   template), whether the weights are an
//!   untrained seed, and the hash of each shared-group block by name.
//!
//! The document is the complete list of a model's shared blocks: the reader loads and checks
//! every block it names. The meta block's `depends_on` names the same blocks while they fit the
//! chain's `DEPENDS_ON_COUNT_MAX`, and a bounded subset of them beyond (Mixtral-8x7B has 66
//! groups; see `publish.rs`); it never names a block the document does not list.

use std::collections::BTreeMap;

use blyan_chain::{BlockHash, BlockKind, ChainId, ChainStore};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{MoeError, Result};
use crate::expert::SharedGroup;

/// The `format` tag of a model document; a meta block without it is not a model.
pub const MODEL_DOCUMENT_FORMAT: &str = "blyan-model/1";
/// Largest model document (meta block payload) read, in bytes.
pub const MODEL_DOCUMENT_BYTES_MAX: u64 = 96 << 20;

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
    /// `tokenizer_config.json` (its `chat_template` prompts chats), exactly as published, when
    /// the checkpoint had one. Absent from documents that lack it, so theirs hash as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_config_json: Option<String>,
    /// Block of each shared group, by group name (`embed`, `layer0.attention`, …): every
    /// shared block of the model.
    pub shared: BTreeMap<String, BlockHash>,
}

impl ModelDocument {
    /// The model's JSON files as published, for export.
    pub fn files(&self) -> crate::checkpoint::CheckpointFiles<'_> {
        crate::checkpoint::CheckpointFiles {
            config_json: self.config_json.as_bytes(),
            generation_config_json: self.generation_config_json.as_deref().map(str::as_bytes),
            tokenizer_json: self.tokenizer_json.as_bytes(),
            tokenizer_config_json: self.tokenizer_config_json.as_deref().map(str::as_bytes),
        }
    }

    /// Parses the payload of meta block `block`: `Ok(None)` when it is not a model document at
    /// all, [`MoeError::BadMetaBlock`] when it claims to be one and is malformed.
    pub fn from_payload(block: BlockHash, payload: &[u8]) -> Result<Option<Self>> {
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

    /// Checks a meta block's `depends_on` against the document: every block it names must be
    /// one the document lists ([`MoeError::BadMetaBlock`] naming the stray one otherwise).
    pub(crate) fn check_depends_on(
        &self,
        block: BlockHash,
        depends_on: &[BlockHash],
    ) -> Result<()> {
        let listed: std::collections::BTreeSet<&BlockHash> = self.shared.values().collect();
        match depends_on
            .iter()
            .find(|dependency| !listed.contains(dependency))
        {
            Some(stray) => Err(MoeError::BadMetaBlock {
                block: block.to_string(),
                reason: format!("depends on block {stray}, which the model document does not list"),
            }),
            None => Ok(()),
        }
    }
}

/// The newest model document on the meta chain that is served, with its block.
///
/// Skipped, newest first: meta blocks that are not model documents, candidates that
/// Proof-of-Learning has not promoted ([`ChainStore::is_candidate`]), and meta blocks whose
/// document is malformed (logged: a bad meta block never stops a node from serving the last good
/// model). See [`served_models`] for the same walk yielding every served model.
pub fn current_model(store: &ChainStore) -> Result<(BlockHash, ModelDocument)> {
    served_models(store)?
        .next()
        .transpose()?
        .ok_or(MoeError::NoModelOnChain)
}

/// Every served model on the meta chain, newest first, skipping what [`current_model`] skips.
/// A store failure ends the walk with its error.
pub fn served_models(
    store: &ChainStore,
) -> Result<impl Iterator<Item = Result<(BlockHash, ModelDocument)>> + '_> {
    let tip = store.tip(ChainId::Meta);
    let blocks = (1..=tip.height).rev().flat_map(move |height| {
        match store.block_hashes_at(ChainId::Meta, height) {
            // Forks: the smallest hash first, as the store picks its tip.
            Ok(blocks) => blocks.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(error) => vec![Err(MoeError::from(error))],
        }
    });
    Ok(blocks.filter_map(move |block| {
        let block = match block {
            Ok(block) => block,
            Err(error) => return Some(Err(error)),
        };
        match served_document(store, block) {
            Ok(Some(document)) => Some(Ok((block, document))),
            Ok(None) => None,
            Err(MoeError::BadMetaBlock { block, reason }) => {
                tracing::warn!(%block, %reason, "skipping a meta block whose model document is malformed");
                None
            }
            Err(error) => Some(Err(error)),
        }
    }))
}

/// The model document of meta block `block` when it is one and is served; `None` for another
/// kind of block, a candidate, or a payload that is not a model document.
fn served_document(store: &ChainStore, block: BlockHash) -> Result<Option<ModelDocument>> {
    let Some(header) = store.header(&block)? else {
        return Ok(None);
    };
    if header.kind != BlockKind::Meta
        || header.payload_bytes > MODEL_DOCUMENT_BYTES_MAX
        || store.is_candidate(&block)?
    {
        return Ok(None);
    }
    let Some(payload) = store.payload_verified(&block)? else {
        return Ok(None);
    };
    ModelDocument::from_payload(block, &payload)
}

/// The shared groups of a configuration, in publishing order.
pub(crate) fn shared_groups(config: &Config) -> Vec<SharedGroup> {
    let mut groups = vec![SharedGroup::Embedding];
    for layer in 0..config.num_hidden_layers {
        groups.push(SharedGroup::Attention { layer });
        groups.push(SharedGroup::Router { layer });
    }
    groups.push(SharedGroup::Head);
    groups
}

/// The kind and layer of a shared group's block.
pub(crate) fn shared_block_kind(group: SharedGroup) -> (BlockKind, Option<u32>) {
    match group {
        SharedGroup::Router { layer } => (BlockKind::Router, Some(layer)),
        SharedGroup::Attention { layer } => (BlockKind::SharedWeights, Some(layer)),
        SharedGroup::Embedding | SharedGroup::Head => (BlockKind::SharedWeights, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(tokenizer_config_json: Option<&str>) -> ModelDocument {
        let config_json = r#"{"model_type": "mixtral"}"#.to_owned();
        ModelDocument {
            format: MODEL_DOCUMENT_FORMAT.to_owned(),
            architecture: serde_json::from_str(&config_json).unwrap(),
            untrained: false,
            description: "test".to_owned(),
            config_json,
            generation_config_json: None,
            tokenizer_json: "{}".to_owned(),
            tokenizer_config_json: tokenizer_config_json.map(str::to_owned),
            shared: BTreeMap::new(),
        }
    }

    #[test]
    fn the_tokenizer_config_travels_in_the_document_and_back_to_the_files() {
        let config = r#"{"chat_template": "{{ bos_token }}"}"#;
        let payload = serde_json::to_vec(&document(Some(config))).unwrap();
        let read = ModelDocument::from_payload(BlockHash::ZERO, &payload)
            .unwrap()
            .unwrap();
        assert_eq!(read.tokenizer_config_json.as_deref(), Some(config));
        assert_eq!(read.files().tokenizer_config_json, Some(config.as_bytes()));
    }

    #[test]
    fn a_document_without_a_tokenizer_config_is_written_as_before() {
        let payload = serde_json::to_string(&document(None)).unwrap();
        assert!(!payload.contains("tokenizer_config_json"), "{payload}");
        let read = ModelDocument::from_payload(BlockHash::ZERO, payload.as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(read.tokenizer_config_json, None);
        assert_eq!(read.files().tokenizer_config_json, None);
    }
}
