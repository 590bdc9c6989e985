//! What a publish may overwrite: the experts it writes ([`PublishScope::experts`]) and the
//! versions its checkpoint descends from ([`Lineage`]).
//!
//! A checkpoint is a copy of some versions of the experts; while it sat on a disk, others may
//! have published better ones. Publishing it as it is would silently revert their work: every
//! expert whose payload differs from the current one gets a new version. So, before anything is
//! written (`check_lineage`, between publishing's phase 1 and phase 2), every expert the publish
//! would write is compared with the chain's current version, and the publish is refused
//! ([`MoeError::StaleExperts`], naming each one) when that version is not the one the checkpoint
//! descends from:
//! - [`Lineage::ExportedFrom`]: the checkpoint records which version of each expert it was
//!   exported from (`blyan-miner export` writes the record beside it); an expert whose current
//!   version is another one (a newer version on the same chain) is refused.
//! - [`Lineage::Unrecorded`]: a checkpoint with no record (a fresh Hugging Face checkpoint) is a
//!   new lineage. It may replace only *placeholders*, versions nobody improved by hand: the
//!   unsigned shipped default model (author zero, trusted by its pinned hash) and the untrained
//!   seed model a node writes into an empty chain; and versions signed by the publishing key
//!   itself (an author replacing their own publication, e.g. re-uploading it quantized). Any
//!   other version is newer than a checkpoint that records nothing, so it is refused.
//! - [`Lineage::Unchecked`]: no check (the seed and shipped models, `--force`).
//!
//! An expert whose payload already is the current one is never a conflict: nothing would be
//! written for it.

use std::collections::{BTreeMap, BTreeSet};

use blyan_chain::{Address, BlockHash, ExpertVersion, hash_payload};
use tch::Tensor;

use crate::error::{MoeError, Result};
use crate::expert::{ExpertMatrix, ExpertName, expert_tensor_name};
use crate::model_doc::ModelDocument;
use crate::publish::{PublishTarget, encode_payload};
use crate::weights::WeightSource;

/// Which experts a publish writes, and which versions it may replace. The default publishes
/// every expert and checks nothing (what the node's seed model and the shipped model use).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishScope {
    /// Only these experts (`None`: every expert of the model). A publish of some experts writes
    /// no shared-weight block and no meta block: its experts join the chain's current model,
    /// which must therefore be the checkpoint's model (same `config.json`, tokenizer and shared
    /// weights; [`MoeError::NotTheCurrentModel`] otherwise).
    pub experts: Option<BTreeSet<ExpertName>>,
    /// The versions the checkpoint descends from.
    pub lineage: Lineage,
}

/// The versions of the experts a checkpoint descends from (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lineage {
    /// Replaces whatever the chain holds.
    #[default]
    Unchecked,
    /// Exported from these versions: an expert whose current version on the chain is another
    /// one is refused. An expert the record does not name is checked as [`Lineage::Unrecorded`].
    ExportedFrom(BTreeMap<ExpertName, ExpertVersion>),
    /// No record: only placeholders and the publishing key's own versions may be replaced.
    Unrecorded,
}

/// An expert a publish would write over a version its checkpoint does not descend from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleExpert {
    /// The expert.
    pub expert: ExpertName,
    /// The version the checkpoint was exported from (`None`: the checkpoint records none).
    pub exported: Option<ExpertVersion>,
    /// The chain's current version.
    pub current: ExpertVersion,
    /// Who signed the current version.
    pub current_author: Address,
}

impl std::fmt::Display for StaleExpert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is at version {} on the chain (block {}, by {})",
            self.expert, self.current.version, self.current.hash, self.current_author
        )?;
        match &self.exported {
            Some(exported) => write!(
                f,
                ", the checkpoint was exported from version {} (block {})",
                exported.version, exported.hash
            ),
            None => f.write_str(", the checkpoint records no version it came from"),
        }
    }
}

/// The experts of `experts` (those the publish would write) that the chain holds in a version
/// `lineage` does not allow to replace, and whose payload in `source` differs from it. `author`
/// signs the publish (`None`: unsigned); `current` is the chain's current model.
pub(crate) fn check_lineage(
    target: &dyn PublishTarget,
    experts: &[ExpertName],
    lineage: &Lineage,
    author: Option<Address>,
    current: Option<&(BlockHash, ModelDocument)>,
    source: &dyn WeightSource,
    quantize: bool,
) -> Result<()> {
    if *lineage == Lineage::Unchecked {
        return Ok(());
    }
    // The untrained seed model's experts depend on its meta block: placeholders.
    let untrained_meta = current
        .filter(|(_, document)| document.untrained)
        .map(|(block, _)| *block);
    let mut stale = Vec::new();
    for expert in experts {
        let Some(version) = target.expert_current(*expert)? else {
            continue;
        };
        let exported = match lineage {
            Lineage::ExportedFrom(record) => record.get(expert).copied(),
            Lineage::Unrecorded | Lineage::Unchecked => None,
        };
        if exported.is_some_and(|from| from.hash == version.hash) {
            continue;
        }
        let header = target
            .header(&version.hash)?
            .ok_or_else(|| MoeError::BadBlock {
                block: version.hash,
                reason: format!("the current version of {expert} is not on the chain"),
            })?;
        if exported.is_none() {
            let placeholder = header.author == Address::ZERO
                || untrained_meta.is_some_and(|meta| header.depends_on.contains(&meta));
            if placeholder || author == Some(header.author) {
                continue;
            }
        }
        // Not a version it may replace: a conflict unless nothing would be written.
        let tensors = ExpertMatrix::ALL
            .iter()
            .map(|matrix| -> Result<(String, Tensor)> {
                let name = expert_tensor_name(*expert, *matrix);
                let tensor = source.tensor(&name)?;
                Ok((name, tensor))
            })
            .collect::<Result<Vec<_>>>()?;
        let (payload, _) = encode_payload(&tensors, quantize)?;
        if hash_payload(&payload) == header.payload_hash {
            continue;
        }
        stale.push(StaleExpert {
            expert: *expert,
            exported,
            current: version,
            current_author: header.author,
        });
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(MoeError::StaleExperts { stale })
    }
}
