//! A model assembled from block payloads held in memory (fetched from a node over HTTP), checked
//! the way chain reads are checked, as a [`WeightSource`]: [`PayloadSource`].
//!
//! A [`VerifiedBlock`] exists only for a header that hashes to the hash it was asked for and a
//! payload whose blake3 and length match that header and whose tensor table matches the
//! header's tensor list (`block_tensors.rs`). A [`PayloadSource`] then takes exactly the blocks a
//! [`ModelDocument`] names: each shared group's block, of its group's kind, and one `Expert`
//! block per expert of the configuration, naming that expert. Tensors are decoded on demand into
//! owned tensors (INT8 experts dequantized to float32, as [`crate::ChainSource`] hands them out).

use std::collections::HashMap;
use std::sync::Arc;

use blyan_chain::{BlockHash, BlockHeader, BlockKind, hash_payload};
use blyan_tensorblock::{
    BlockRef, Dtype, Quantization, TensorSpec, dequantize_int8_per_channel, kind_of,
};
use tch::Tensor;

use crate::block_tensors::check_header_tensors;
use crate::checkpoint::CheckpointFiles;
use crate::config::Config;
use crate::error::{MoeError, Result};
use crate::expert::{ExpertName, experts_of};
use crate::model_doc::{ModelDocument, shared_block_kind, shared_groups};
use crate::weights::WeightSource;

/// A block whose header and payload passed every check that needs no chain: the header hashes
/// to the block's hash, the payload matches the header's hash and length, and the payload is a
/// tensor block holding exactly the tensors the header lists.
#[derive(Debug, Clone)]
pub struct VerifiedBlock {
    hash: BlockHash,
    header: BlockHeader,
    payload: Arc<Vec<u8>>,
}

impl VerifiedBlock {
    /// Checks `header` and `payload` as block `hash` ([`MoeError::BadBlock`] naming the block,
    /// or [`MoeError::HeaderTensorMismatch`], otherwise).
    pub fn new(hash: BlockHash, header: BlockHeader, payload: Vec<u8>) -> Result<Self> {
        let bad = |reason: String| MoeError::BadBlock {
            block: hash,
            reason,
        };
        let got = header.hash();
        if got != hash {
            return Err(bad(format!("its header hashes to {got}")));
        }
        if payload.len() as u64 != header.payload_bytes {
            return Err(bad(format!(
                "the payload is {} bytes, the header says {}",
                payload.len(),
                header.payload_bytes
            )));
        }
        let got = hash_payload(&payload);
        if got != header.payload_hash {
            return Err(bad(format!(
                "the payload hashes to {got}, the header says {}",
                header.payload_hash
            )));
        }
        let parsed = BlockRef::parse(&payload)?;
        check_header_tensors(hash, &header.meta.tensors, parsed.layout())?;
        Ok(Self {
            hash,
            header,
            payload: Arc::new(payload),
        })
    }

    /// The block's hash.
    pub fn hash(&self) -> BlockHash {
        self.hash
    }

    /// The block's header.
    pub fn header(&self) -> &BlockHeader {
        &self.header
    }

    fn block_ref(&self) -> Result<BlockRef<'_>> {
        Ok(BlockRef::parse(&self.payload)?)
    }
}

/// A whole model from verified in-memory blocks: the [`ModelDocument`] of a meta block, its
/// shared blocks and one current block per expert.
pub struct PayloadSource {
    meta_block: BlockHash,
    document: ModelDocument,
    config: Config,
    /// Every tensor of the model, by Hugging Face name, to the block holding it.
    tensors: HashMap<String, VerifiedBlock>,
}

impl std::fmt::Debug for PayloadSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadSource")
            .field("meta_block", &self.meta_block)
            .field("tensors", &self.tensors.len())
            .finish_non_exhaustive()
    }
}

impl PayloadSource {
    /// The model of meta block `meta_block` (whose header is `meta_header` and payload
    /// `document`), from `shared` (the blocks the document lists, by group name) and `experts`
    /// (each expert's current block). Refuses a meta header that depends on a block the document
    /// does not list, a missing or extra block, a shared block of the wrong kind, an expert
    /// block of another expert, and a tensor held twice.
    pub fn new(
        meta_block: BlockHash,
        meta_header: &BlockHeader,
        document: ModelDocument,
        shared: Vec<VerifiedBlock>,
        experts: Vec<(ExpertName, VerifiedBlock)>,
    ) -> Result<Self> {
        document.check_depends_on(meta_block, &meta_header.depends_on)?;
        let config = Config::from_json(document.config_json.as_bytes())?;
        let mut shared: HashMap<BlockHash, VerifiedBlock> = shared
            .into_iter()
            .map(|block| (block.hash, block))
            .collect();
        let mut tensors = HashMap::new();
        for group in shared_groups(&config) {
            let name = group.name();
            let missing = || MoeError::MissingSharedBlock { name: name.clone() };
            let hash = *document.shared.get(&name).ok_or_else(missing)?;
            let block = shared.remove(&hash).ok_or_else(missing)?;
            let (kind, _) = shared_block_kind(group);
            if block.header.kind != kind {
                return Err(MoeError::BadBlock {
                    block: hash,
                    reason: format!(
                        "shared group `{name}` is a block of kind {:?}, not {kind:?}",
                        block.header.kind
                    ),
                });
            }
            index_tensors(&mut tensors, block)?;
        }
        if let Some(extra) = shared.keys().next() {
            return Err(MoeError::BadBlock {
                block: *extra,
                reason: "not a shared block of the model document".to_owned(),
            });
        }
        let mut experts: HashMap<ExpertName, VerifiedBlock> = experts.into_iter().collect();
        for id in experts_of(&config) {
            let block = experts
                .remove(&id)
                .ok_or(MoeError::MissingExpert { expert: id })?;
            if block.header.kind != BlockKind::Expert || block.header.meta.expert != Some(id) {
                return Err(MoeError::BadBlock {
                    block: block.hash,
                    reason: format!(
                        "given as expert {id}, it is a {:?} block of expert {:?}",
                        block.header.kind, block.header.meta.expert
                    ),
                });
            }
            index_tensors(&mut tensors, block)?;
        }
        if let Some((id, block)) = experts.iter().next() {
            return Err(MoeError::BadBlock {
                block: block.hash,
                reason: format!("given as expert {id}, which the model does not have"),
            });
        }
        Ok(Self {
            meta_block,
            document,
            config,
            tensors,
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

    /// The model's JSON files as published, for export.
    pub fn files(&self) -> CheckpointFiles<'_> {
        self.document.files()
    }

    fn block(&self, name: &str) -> Result<&VerifiedBlock> {
        self.tensors
            .get(name)
            .ok_or_else(|| MoeError::MissingTensor {
                name: name.to_owned(),
            })
    }
}

/// Adds every tensor of `block` to `tensors` ([`MoeError::BadBlock`] for one already there).
fn index_tensors(tensors: &mut HashMap<String, VerifiedBlock>, block: VerifiedBlock) -> Result<()> {
    let names: Vec<String> = block
        .block_ref()?
        .layout()
        .tensors()
        .iter()
        .map(|info| info.name().to_owned())
        .collect();
    for name in names {
        if let Some(first) = tensors.get(&name) {
            return Err(MoeError::BadBlock {
                block: block.hash,
                reason: format!("tensor `{name}` is held by block {} too", first.hash),
            });
        }
        tensors.insert(name, block.clone());
    }
    Ok(())
}

impl WeightSource for PayloadSource {
    fn tensor(&self, name: &str) -> Result<Tensor> {
        let block = self.block(name)?;
        let parsed = block.block_ref()?;
        let info = parsed.layout().require(name)?;
        let shape: Vec<i64> = info.shape().iter().map(|dim| *dim as i64).collect();
        let data = parsed.data(name)?;
        match info.quantization() {
            Quantization::None => {
                let kind = kind_of(info.dtype()).ok_or_else(|| MoeError::UnsupportedDtype {
                    name: name.to_owned(),
                    dtype: info.dtype().name().to_owned(),
                })?;
                Ok(Tensor::f_from_data_size(data, &shape, kind)?)
            }
            _ => {
                let cols = info.shape().last().copied().unwrap_or(0) as usize;
                let values = dequantize_int8_per_channel(data, &parsed.scales(name)?, cols);
                Ok(Tensor::from_slice(&values).f_reshape(shape.as_slice())?)
            }
        }
    }

    fn tensor_spec(&self, name: &str) -> Result<TensorSpec> {
        let block = self.block(name)?;
        let parsed = block.block_ref()?;
        let info = parsed.layout().require(name)?;
        let dtype = match info.quantization() {
            Quantization::None => info.dtype(),
            _ => Dtype::F32,
        };
        Ok(TensorSpec::new(name, dtype, info.shape()))
    }

    fn describe(&self) -> String {
        let label = if self.document.untrained {
            "UNTRAINED "
        } else {
            ""
        };
        format!(
            "{label}model of meta block {} ({}), fetched",
            self.meta_block, self.document.description
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blyan_chain::{ChainId, ChainStore, StoreConfig};
    use blyan_tensorblock::{BlockLayout, EncodeTensor, encode_tensors_to_vec};

    use crate::block_tensors::tensor_metas;

    /// An INT8 expert-like block: its hash, header and payload.
    fn block() -> (BlockHash, BlockHeader, Vec<u8>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ChainStore::open(dir.path(), StoreConfig::default()).expect("store");
        let weight = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5]).reshape([2, 2]);
        let payload =
            encode_tensors_to_vec(&[EncodeTensor::int8("w", &weight)]).expect("encodable");
        let layout = BlockLayout::parse(&payload).expect("parsable");
        let mut header = BlockHeader::new_child(
            &store.tip(ChainId::Parameters),
            BlockKind::Expert,
            &payload,
            1_770_000_000_000,
        );
        header.meta.tensors = tensor_metas(&layout);
        (header.hash(), header, payload)
    }

    #[test]
    fn a_verified_block_is_the_block_asked_for_with_its_own_payload() {
        let (hash, header, payload) = block();
        let verified =
            VerifiedBlock::new(hash, header.clone(), payload.clone()).expect("consistent");
        assert_eq!(verified.hash(), hash);

        let other = BlockHash([9; 32]);
        match VerifiedBlock::new(other, header.clone(), payload.clone()) {
            Err(MoeError::BadBlock { block, reason }) => {
                assert_eq!(block, other);
                assert!(reason.contains("header hashes to"), "{reason}");
            }
            got => panic!("expected another hash to be refused, got {got:?}"),
        }
        let mut changed = payload.clone();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        match VerifiedBlock::new(hash, header.clone(), changed) {
            Err(MoeError::BadBlock { block, reason }) => {
                assert_eq!(block, hash);
                assert!(reason.contains("payload hashes to"), "{reason}");
            }
            got => panic!("expected a changed payload to be refused, got {got:?}"),
        }
        match VerifiedBlock::new(hash, header.clone(), payload[..payload.len() - 1].to_vec()) {
            Err(MoeError::BadBlock { reason, .. }) => {
                assert!(reason.contains("bytes, the header says"), "{reason}");
            }
            got => panic!("expected a short payload to be refused, got {got:?}"),
        }
        let mut renamed = header;
        renamed.meta.tensors[0].name = "v".into();
        let renamed_hash = renamed.hash();
        assert!(matches!(
            VerifiedBlock::new(renamed_hash, renamed, payload),
            Err(MoeError::HeaderTensorMismatch { block, index: 0, .. }) if block == renamed_hash
        ));
    }
}
