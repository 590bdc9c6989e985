//! The record written beside a checkpoint that came from a chain (`export`, `train` from a
//! chain's model): which meta block and which version of each expert it holds. `upload` reads
//! it to refuse reverting experts others improved since ([`blyan_moe::Lineage`]), and to keep
//! the model's description; `train --from-node` reads it to reuse a download of the same blocks.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;

use anyhow::Context as _;
use blyan_chain::{BlockHash, ChainStore, ExpertVersion};
use blyan_moe::{Config, Lineage, ModelDocument, current_model, experts_of};

/// The file [`ChainOrigin`] is written to, last, inside the checkpoint directory.
pub(crate) const ORIGIN_FILE: &str = "fetched-from.json";
/// Largest [`ORIGIN_FILE`] read, in bytes (a record of 65,536 experts is about 8 MB).
const ORIGIN_FILE_BYTES_MAX: u64 = 16 << 20;

/// Where a checkpoint came from: a chain's model, block by block.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ChainOrigin {
    /// The model's meta block.
    pub meta_block: BlockHash,
    /// The model's description on the chain, what `upload` publishes by default (`None` for
    /// the untrained seed model, whose description would be false of any trained copy).
    #[serde(default)]
    pub description: Option<String>,
    /// The version of every expert the checkpoint holds.
    pub experts: Vec<ExpertVersion>,
}

impl ChainOrigin {
    /// The current model of `store` and the current version of each of its experts.
    pub(crate) fn of_store(store: &ChainStore) -> anyhow::Result<Self> {
        let (meta_block, document) = current_model(store)?;
        let config = Config::from_json(document.config_json.as_bytes())
            .with_context(|| format!("the configuration in meta block {meta_block}"))?;
        let mut experts = Vec::new();
        for expert in experts_of(&config) {
            let version = store
                .expert_current(expert)?
                .with_context(|| format!("the chain holds no block of expert {expert}"))?;
            experts.push(version);
        }
        Ok(Self {
            meta_block,
            description: Self::description_of(&document),
            experts,
        })
    }

    /// What a copy of the model `document` describes says it is.
    pub(crate) fn description_of(document: &ModelDocument) -> Option<String> {
        (!document.untrained).then(|| document.description.clone())
    }

    /// The record in checkpoint `dir`; `None` when it has none. A record that cannot be read is
    /// an error: a checkpoint must not lose its lineage silently.
    pub(crate) fn read(dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = dir.join(ORIGIN_FILE);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error).with_context(|| format!("opening {}", path.display())),
        };
        let mut bytes = Vec::new();
        file.take(ORIGIN_FILE_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        anyhow::ensure!(
            bytes.len() as u64 <= ORIGIN_FILE_BYTES_MAX,
            "{} is larger than {ORIGIN_FILE_BYTES_MAX} bytes",
            path.display()
        );
        let origin = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a record of chain versions", path.display()))?;
        Ok(Some(origin))
    }

    /// Writes the record into checkpoint `dir` (last, once the checkpoint is complete).
    pub(crate) fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(ORIGIN_FILE);
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// Removes checkpoint `dir`'s record, if any: what it held no longer says where the
    /// checkpoint came from.
    pub(crate) fn remove(dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(ORIGIN_FILE);
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(error).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        }
    }

    /// The lineage a publish of this checkpoint checks against.
    pub(crate) fn lineage(&self) -> Lineage {
        Lineage::ExportedFrom(
            self.experts
                .iter()
                .map(|version| (version.expert, *version))
                .collect::<BTreeMap<_, _>>(),
        )
    }
}
