//! `train --from-node URL` and `export --node URL`: the model a running node serves, fetched
//! block by block (each checked by [`NodeClient`] and [`PayloadSource`]) and written as a
//! Hugging Face checkpoint, with the record of the blocks it came from ([`ChainOrigin`]).

use std::path::Path;

use anyhow::Context as _;

use blyan_chain::{BlockHash, BlockHeader};
use blyan_client::{ClientError as NodeError, NodeClient};
use blyan_moe::{
    Checkpoint, Config, EXPORT_SHARD_BYTES_DEFAULT, ModelDocument, MoeError, PayloadSource,
    PublishTarget as _, experts_of, export_checkpoint,
};

use crate::origin::ChainOrigin;

/// The model a node serves from its chain, located (meta block and document read and checked)
/// but not yet downloaded: enough to check a training run's arguments against its
/// configuration before anything is fetched or written.
pub(crate) struct NodeModel {
    target: NodeClient,
    meta_block: BlockHash,
    meta_header: BlockHeader,
    document: ModelDocument,
    config: Config,
}

impl NodeModel {
    /// Reads the current model's meta block and document from the node at `url`.
    pub(crate) fn locate(url: &str) -> Result<Self, NodeError> {
        let target = NodeClient::connect(url)?;
        let located = target.fetch_model().map_err(|source| match source {
            MoeError::Target(inner) => match inner.downcast::<NodeError>() {
                Ok(node) => *node,
                Err(other) => NodeError::BadBlock {
                    url: target.url("/model"),
                    source: Box::new(MoeError::Target(other)),
                },
            },
            other => NodeError::BadBlock {
                url: target.url("/model"),
                source: Box::new(other),
            },
        })?;
        let Some((meta_block, meta_header, document)) = located else {
            return Err(NodeError::NoModel {
                url: target.base().to_owned(),
            });
        };
        let config = Config::from_json(document.config_json.as_bytes()).map_err(|source| {
            NodeError::BadBlock {
                url: target.url(&format!("/blocks/{meta_block}/payload")),
                source: Box::new(source),
            }
        })?;
        Ok(Self {
            target,
            meta_block,
            meta_header,
            document,
            config,
        })
    }

    /// The model's configuration.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The meta block the model was read from.
    pub(crate) fn meta_block(&self) -> BlockHash {
        self.meta_block
    }

    /// Fetches every block of the model (each header checked against its hash, each payload
    /// against its header, each block against its place in the model) and writes it into `dir`
    /// as a Hugging Face checkpoint with its [`ChainOrigin`]. A checkpoint that an earlier
    /// download of the same blocks left in `dir` is reused as it is.
    pub(crate) fn download(&self, dir: &Path) -> anyhow::Result<(Checkpoint, ChainOrigin)> {
        let mut experts = Vec::new();
        for id in experts_of(&self.config) {
            let version = self
                .target
                .expert_current(id)?
                .ok_or_else(|| NodeError::BadAnswer {
                    url: self.target.url(&format!("/chain/experts/{id}")),
                    reason: format!("the node has no block of expert {id}"),
                })?;
            experts.push(version);
        }
        let fetched_from = ChainOrigin {
            meta_block: self.meta_block,
            description: ChainOrigin::description_of(&self.document),
            experts,
        };
        if ChainOrigin::read(dir).ok().flatten().as_ref() == Some(&fetched_from)
            && let Ok(checkpoint) = Checkpoint::open(dir)
        {
            tracing::info!(dir = %dir.display(), meta_block = %self.meta_block, "reusing the fetched model");
            return Ok((checkpoint, fetched_from));
        }
        // Whatever was there no longer says where it came from until the new one is complete.
        ChainOrigin::remove(dir)?;
        let mut shared = Vec::with_capacity(self.document.shared.len());
        for block in self.document.shared.values() {
            shared.push(self.target.tensor_block(*block)?);
        }
        let mut experts = Vec::with_capacity(fetched_from.experts.len());
        for version in &fetched_from.experts {
            experts.push((version.expert, self.target.tensor_block(version.hash)?));
        }
        let source = PayloadSource::new(
            self.meta_block,
            &self.meta_header,
            self.document.clone(),
            shared,
            experts,
        )
        .map_err(|source| NodeError::BadBlock {
            url: self.target.base().to_owned(),
            source: Box::new(source),
        })?;
        export_checkpoint(
            dir,
            source.config(),
            source.files(),
            &source,
            EXPORT_SHARD_BYTES_DEFAULT,
        )
        .with_context(|| format!("writing the fetched model into {}", dir.display()))?;
        let checkpoint = Checkpoint::open(dir)
            .with_context(|| format!("reading back the fetched model in {}", dir.display()))?;
        fetched_from.write(dir)?;
        Ok((checkpoint, fetched_from))
    }
}
