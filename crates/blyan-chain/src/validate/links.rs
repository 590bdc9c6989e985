//! The rules a block must pass against the blocks already stored: links (parent, height,
//! timestamps, fork rule, dependencies) and expert versions. [`crate::ChainStore`] runs them
//! under its append lock, after the stateless checks of the parent module; a receiver runs them
//! on a header before taking its payload ([`Validator::check_links_now`]).

use blyan_primitives::BlockHash;

use super::Validator;
use crate::chain::BlockKind;
use crate::config::ForkRule;
use crate::error::{Error, Result};
use crate::header::BlockHeader;
use crate::store::{ChainRecords, ChainStore, ExpertVersion};

impl Validator {
    /// Every check of `header` (whose hash is `block`) against what `store` holds, given the
    /// chains' records `chains` as of the append lock: not already stored, parent stored and on
    /// this chain, height = parent's + 1, not stamped before the parent, no second child on a
    /// linear chain, every dependency stored and not stamped later, an expert's version =
    /// current + 1. Returns the expert's current version for expert blocks (the base a
    /// Proof-of-Learning candidate replaces). Each check is a point lookup or a seek.
    pub(crate) fn check_links(
        &self,
        store: &ChainStore,
        chains: &ChainRecords,
        header: &BlockHeader,
        block: BlockHash,
    ) -> Result<Option<ExpertVersion>> {
        self.check_links_at(store, chains[header.chain.index()].tip_hash, header, block)
    }

    /// [`Validator::check_links`] outside the append lock, against the store's tips as they
    /// are now: what a receiver runs on a header before taking its payload (`POST /blocks`
    /// streams a payload only after its header passed), so a block that cannot be appended is
    /// refused before its bytes arrive. The append runs the same checks again under its lock,
    /// since the store may change meanwhile. `block` is `header`'s hash.
    pub fn check_links_now(
        &self,
        store: &ChainStore,
        header: &BlockHeader,
        block: BlockHash,
    ) -> Result<()> {
        let tip_hash = store.tip(header.chain).hash;
        self.check_links_at(store, tip_hash, header, block)
            .map(|_| ())
    }

    /// The link checks with `tip_hash` as `header`'s chain's tip (for the linear fork rule).
    fn check_links_at(
        &self,
        store: &ChainStore,
        tip_hash: BlockHash,
        header: &BlockHeader,
        block: BlockHash,
    ) -> Result<Option<ExpertVersion>> {
        if store.contains(&block)? {
            return Err(Error::AlreadyExists { block });
        }
        let Some(parent_hash) = header.prev_hash else {
            // The validator accepts only this store's genesis, which is always stored.
            return Err(Error::AlreadyExists { block });
        };
        let parent = store.header(&parent_hash)?.ok_or(Error::UnknownParent {
            block,
            parent: parent_hash,
        })?;
        if parent.chain != header.chain {
            return Err(Error::ParentOnOtherChain {
                block,
                chain: header.chain,
                parent: parent_hash,
                parent_chain: parent.chain,
            });
        }
        if header.height != parent.height + 1 {
            return Err(Error::HeightGap {
                block,
                height: header.height,
                expected: parent.height + 1,
            });
        }
        if header.timestamp_ms < parent.timestamp_ms {
            return Err(Error::TimestampBeforeParent {
                block,
                parent: parent_hash,
                parent_timestamp_ms: parent.timestamp_ms,
                timestamp_ms: header.timestamp_ms,
            });
        }
        if self.config().fork_rules.get(header.chain) == ForkRule::Linear && tip_hash != parent_hash
        {
            let existing = store
                .block_hashes_at(header.chain, header.height)?
                .first()
                .copied();
            return Err(Error::Fork {
                block,
                chain: header.chain,
                height: header.height,
                existing: existing.unwrap_or(tip_hash),
            });
        }
        for dependency in &header.depends_on {
            let stored = store.header(dependency)?.ok_or(Error::UnknownDependency {
                block,
                dependency: *dependency,
            })?;
            if stored.timestamp_ms > header.timestamp_ms {
                return Err(Error::DependencyLater {
                    block,
                    dependency: *dependency,
                    dependency_timestamp_ms: stored.timestamp_ms,
                    timestamp_ms: header.timestamp_ms,
                });
            }
        }
        if header.kind != BlockKind::Expert {
            return Ok(None);
        }
        let expert = header.meta.expert.ok_or(Error::MetaInvalid {
            block,
            kind: header.kind,
            reason: "an expert block must name its expert",
        })?;
        let current = store.expert_current(expert)?;
        let expected = current.map_or(1, |current| current.version.saturating_add(1));
        if header.meta.version != expected {
            return Err(Error::ExpertVersionMismatch {
                block,
                expert,
                got: header.meta.version,
                expected,
            });
        }
        Ok(current)
    }
}
