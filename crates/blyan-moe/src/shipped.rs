//! The shipped default model: blocks built without a key, trusted by their hashes.
//!
//! [`build_pinned_model`] publishes a checkpoint into memory as a fresh chain would hold it
//! (right after the genesis blocks), every block unsigned, author zero, at one fixed timestamp,
//! so the same checkpoint gives the same block hashes on every machine. [`write_shipped_model`]
//! writes those blocks as export files (`NN-<chain>.blyexp`, one per run of consecutive blocks
//! of one chain, in publish order) and their hashes as `blocks.txt`, which blyan-chain builds in
//! ([`blyan_chain::SHIPPED_BLOCKS_TEXT`]): a node accepts exactly those unsigned blocks, as it
//! accepts the genesis blocks. [`import_shipped_model`] is what a node runs on its first start.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use blyan_chain::{
    BlockHash, BlockHeader, ChainId, ChainStore, ChainTip, ExpertVersion, ExportWriter,
    GENESIS_TIMESTAMP_MS, GenesisSpec,
};

use crate::checkpoint::CheckpointFiles;
use crate::config::Config;
use crate::error::{MoeError, Result};
use crate::expert::ExpertName;
use crate::lineage::PublishScope;
use crate::model_doc::{ModelDocument, current_model};
use crate::publish::{Authority, PublishOptions, PublishSummary, PublishTarget, publish_as};
use crate::weights::WeightSource;

/// Where the repository keeps the shipped default model (export files, `blocks.txt`,
/// provenance), as built into this library.
pub const SHIPPED_MODEL_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/default");
/// Where an installed copy keeps the shipped model, relative to the directory of the running
/// binary (`scripts/install.sh` puts binaries in `PREFIX/bin`, the model in
/// `PREFIX/share/blyan/models/default`).
pub const INSTALLED_MODEL_DIR: &str = "../share/blyan/models/default";

/// The shipped model's directory: beside the running binary when it is an installed copy
/// ([`INSTALLED_MODEL_DIR`]), else the repository's ([`SHIPPED_MODEL_DIR`]).
pub fn shipped_model_dir() -> std::path::PathBuf {
    let installed = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(INSTALLED_MODEL_DIR)))
        .filter(|dir| dir.join(PINNED_BLOCKS_FILE).is_file());
    installed.unwrap_or_else(|| std::path::PathBuf::from(SHIPPED_MODEL_DIR))
}

/// The list of pinned block hashes inside a shipped-model directory.
pub const PINNED_BLOCKS_FILE: &str = "blocks.txt";
/// Extension of the export files of a shipped model.
pub const SHIPPED_SEGMENT_EXTENSION: &str = "blyexp";
/// The timestamp every pinned block carries: the genesis timestamp, so that a rebuild of the
/// same checkpoint gives the same hashes.
pub const PINNED_TIMESTAMP_MS: u64 = GENESIS_TIMESTAMP_MS;

/// Another source's weights converted to one floating-point dtype (e.g. float16 to ship a
/// float32 checkpoint in half the bytes).
pub struct CastWeights {
    base: std::sync::Arc<dyn WeightSource>,
    dtype: blyan_tensorblock::Dtype,
}

impl CastWeights {
    /// `base`'s tensors in `dtype`, which must be a model dtype (f32, f16, bf16).
    pub fn new(
        base: std::sync::Arc<dyn WeightSource>,
        dtype: blyan_tensorblock::Dtype,
    ) -> Result<Self> {
        if !crate::weights::is_model_dtype(dtype) {
            return Err(MoeError::UnsupportedDtype {
                name: "the cast target".to_owned(),
                dtype: dtype.to_string(),
            });
        }
        Ok(Self { base, dtype })
    }
}

impl WeightSource for CastWeights {
    fn tensor(&self, name: &str) -> Result<tch::Tensor> {
        let kind =
            blyan_tensorblock::kind_of(self.dtype).ok_or_else(|| MoeError::UnsupportedDtype {
                name: name.to_owned(),
                dtype: self.dtype.to_string(),
            })?;
        Ok(self.base.tensor(name)?.f_to_kind(kind)?)
    }

    fn tensor_spec(&self, name: &str) -> Result<blyan_tensorblock::TensorSpec> {
        let spec = self.base.tensor_spec(name)?;
        Ok(blyan_tensorblock::TensorSpec::new(
            name,
            self.dtype,
            &spec.shape,
        ))
    }

    fn describe(&self) -> String {
        format!("{} as {}", self.base.describe(), self.dtype)
    }
}

/// A model's blocks built for pinning, in publish order (parents and dependencies first).
#[derive(Debug, Clone)]
pub struct PinnedModel {
    /// Every block with its payload.
    pub blocks: Vec<(BlockHeader, Vec<u8>)>,
    /// What the publish wrote.
    pub summary: PublishSummary,
}

/// A chain in memory that starts at the shipped genesis blocks: what [`build_pinned_model`]
/// publishes into.
struct MemoryChain {
    tips: RefCell<HashMap<ChainId, ChainTip>>,
    headers: RefCell<HashMap<BlockHash, BlockHeader>>,
    blocks: RefCell<Vec<(BlockHeader, Vec<u8>)>>,
}

impl MemoryChain {
    fn new() -> Self {
        let genesis = GenesisSpec::shipped();
        let mut tips = HashMap::new();
        let mut headers = HashMap::new();
        for chain in ChainId::ALL {
            let block = genesis.block(chain);
            let hash = block.header.hash();
            tips.insert(
                chain,
                ChainTip {
                    chain,
                    height: 0,
                    hash,
                },
            );
            headers.insert(hash, block.header);
        }
        Self {
            tips: RefCell::new(tips),
            headers: RefCell::new(headers),
            blocks: RefCell::new(Vec::new()),
        }
    }
}

impl PublishTarget for MemoryChain {
    fn tip(&self, chain: ChainId) -> Result<ChainTip> {
        Ok(self.tips.borrow()[&chain])
    }

    fn header(&self, block: &BlockHash) -> Result<Option<BlockHeader>> {
        Ok(self.headers.borrow().get(block).cloned())
    }

    fn expert_current(&self, _expert: ExpertName) -> Result<Option<ExpertVersion>> {
        // A fresh chain: no expert has a version before this publish writes one.
        Ok(None)
    }

    fn current_model(&self) -> Result<Option<(BlockHash, ModelDocument)>> {
        Ok(None)
    }

    fn pow_difficulty_bits(&self) -> u32 {
        0
    }

    fn payload_bytes_max(&self) -> u64 {
        blyan_chain::BLOCK_PAYLOAD_BYTES_MAX
    }

    fn append(&self, header: &BlockHeader, payload: &[u8]) -> Result<BlockHash> {
        let hash = header.hash();
        self.tips.borrow_mut().insert(
            header.chain,
            ChainTip {
                chain: header.chain,
                height: header.height,
                hash,
            },
        );
        self.headers.borrow_mut().insert(hash, header.clone());
        self.blocks
            .borrow_mut()
            .push((header.clone(), payload.to_vec()));
        Ok(hash)
    }
}

/// Builds the blocks of a model for pinning: published as onto a fresh chain, unsigned, at
/// [`PINNED_TIMESTAMP_MS`]. Everything [`crate::publish_model`] checks is checked.
pub fn build_pinned_model(
    config: &Config,
    files: CheckpointFiles<'_>,
    source: &dyn WeightSource,
    options: &PublishOptions,
) -> Result<PinnedModel> {
    let chain = MemoryChain::new();
    let summary = publish_as(
        &chain,
        Authority::Pinned {
            timestamp_ms: PINNED_TIMESTAMP_MS,
        },
        config,
        files,
        source,
        options,
        &PublishScope::default(),
        &mut |_| {},
    )?;
    Ok(PinnedModel {
        blocks: chain.blocks.into_inner(),
        summary,
    })
}

/// What [`write_shipped_model`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedFiles {
    /// The export files, in import order.
    pub segments: Vec<PathBuf>,
    /// The pinned-hash list.
    pub pinned_list: PathBuf,
    /// Bytes of all export files together.
    pub bytes: u64,
}

fn segment_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(MoeError::io(dir, error)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|error| MoeError::io(dir, error))?.path();
        if path
            .extension()
            .is_some_and(|extension| extension == SHIPPED_SEGMENT_EXTENSION)
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Writes `model` into `dir`: its blocks as export files, replacing any there, and
/// `blocks.txt` listing every block hash (with `header_comment` as `#` lines above them).
pub fn write_shipped_model(
    dir: &Path,
    model: &PinnedModel,
    header_comment: &str,
) -> Result<ShippedFiles> {
    std::fs::create_dir_all(dir).map_err(|error| MoeError::io(dir, error))?;
    for old in segment_files(dir)? {
        std::fs::remove_file(&old).map_err(|error| MoeError::io(&old, error))?;
    }
    let mut segments = Vec::new();
    let mut bytes = 0;
    let mut runs: Vec<&[(BlockHeader, Vec<u8>)]> = Vec::new();
    let mut rest = model.blocks.as_slice();
    while let Some((first, _)) = rest.first() {
        let length = rest
            .iter()
            .take_while(|(header, _)| header.chain == first.chain)
            .count();
        let (run, tail) = rest.split_at(length);
        runs.push(run);
        rest = tail;
    }
    for (index, run) in runs.iter().enumerate() {
        let chain = run[0].0.chain;
        let path = dir.join(format!(
            "{:02}-{}.{SHIPPED_SEGMENT_EXTENSION}",
            index + 1,
            chain.name()
        ));
        let file = std::fs::File::create(&path).map_err(|error| MoeError::io(&path, error))?;
        let first = run[0].0.height;
        let last = run[run.len() - 1].0.height;
        let mut writer = ExportWriter::new(BufWriter::new(file), chain, first, last)?;
        for (header, payload) in *run {
            writer.block(header, payload)?;
        }
        writer.finish()?;
        bytes += std::fs::metadata(&path)
            .map_err(|error| MoeError::io(&path, error))?
            .len();
        segments.push(path);
    }
    let mut list = String::new();
    for line in header_comment.lines() {
        list.push_str("# ");
        list.push_str(line);
        list.push('\n');
    }
    for (header, _) in &model.blocks {
        list.push_str(&header.hash().to_string());
        list.push('\n');
    }
    let pinned_list = dir.join(PINNED_BLOCKS_FILE);
    std::fs::write(&pinned_list, list).map_err(|error| MoeError::io(&pinned_list, error))?;
    Ok(ShippedFiles {
        segments,
        pinned_list,
        bytes,
    })
}

/// Imports the shipped model in `dir` into `store` (its export files, in name order) and
/// returns the meta block of the model it holds. The store accepts the unsigned blocks only
/// if its genesis pins their hashes (the library's built-in `blocks.txt`); a file changed by a
/// single byte is refused.
///
/// A directory without export files is [`MoeError::NoShippedModel`].
pub fn import_shipped_model(store: &ChainStore, dir: &Path) -> Result<BlockHash> {
    let segments = segment_files(dir)?;
    if segments.is_empty() {
        return Err(MoeError::NoShippedModel {
            dir: dir.to_owned(),
        });
    }
    for segment in &segments {
        let summary = store.import_file(segment)?;
        tracing::info!(
            file = %segment.display(),
            imported = summary.imported,
            already_present = summary.already_present,
            "shipped model segment imported"
        );
    }
    store.flush()?;
    let (meta, _) = current_model(store)?;
    Ok(meta)
}
