//! The RocksDB records one block writes, and the expert-head record read back. The key and
//! record encodings are `schema.rs`'s; this module decides which records a block has.

use blyan_primitives::{BlockHash, ExpertName};
use rocksdb::WriteBatch;

use super::{ChainStore, ExpertVersion};
use crate::chain::BlockKind;
use crate::error::{Error, Result};
use crate::header::BlockHeader;
use crate::schema::{
    CF_BY_HEIGHT, CF_BY_SEQ, CF_CANDIDATES, CF_DEPENDENTS, CF_EXPERT_HEADS, CF_EXPERT_VERSIONS,
    CF_HEADERS, CF_PAYLOADS, ChainRecord, MetaKey, PayloadRecord, Relation, encode_record,
    expert_version_key, hash_from_bytes, height_key, pair_key,
};
use crate::segment::Placement;

/// Bytes of an `expert_heads` value: version (u32 BE) ‖ block hash.
const EXPERT_HEAD_BYTES: usize = 4 + 32;

impl ChainStore {
    /// Puts every record of one block into `batch`: header, payload record, `by_seq`,
    /// `by_height`, `dependents`, expert indices (or, for a `candidate`, the candidate mark
    /// instead) and the chain's record, which it returns. `chain_before` is the chain's record
    /// before the block (`None` for genesis).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn put_block(
        &self,
        batch: &mut WriteBatch,
        header: &BlockHeader,
        block: BlockHash,
        placement: Placement,
        seq: u64,
        chain_before: Option<ChainRecord>,
        candidate: bool,
    ) -> ChainRecord {
        batch.put_cf(self.cf(CF_HEADERS), block.as_bytes(), header.encode());
        let payload = PayloadRecord {
            seq,
            segment: placement.segment,
            offset: placement.offset,
            len: placement.len,
            hash: header.payload_hash,
        };
        batch.put_cf(
            self.cf(CF_PAYLOADS),
            block.as_bytes(),
            encode_record(&payload),
        );
        batch.put_cf(self.cf(CF_BY_SEQ), seq.to_be_bytes(), block.as_bytes());
        batch.put_cf(
            self.cf(CF_BY_HEIGHT),
            height_key(header.chain, header.height, &block),
            [],
        );
        if let Some(parent) = header.prev_hash {
            batch.put_cf(
                self.cf(CF_DEPENDENTS),
                pair_key(&parent, &block),
                [Relation::Child.byte()],
            );
        }
        for dependency in &header.depends_on {
            batch.put_cf(
                self.cf(CF_DEPENDENTS),
                pair_key(dependency, &block),
                [Relation::DependsOn.byte()],
            );
        }
        if candidate {
            batch.put_cf(self.cf(CF_CANDIDATES), block.as_bytes(), []);
        } else {
            self.put_expert_head(batch, header, block);
        }
        let record = match chain_before {
            None => ChainRecord {
                genesis: block,
                tip_height: header.height,
                tip_hash: block,
                blocks: 1,
                payload_bytes: placement.len,
            },
            Some(before) => {
                // The greatest height wins; at equal heights (forks) the smaller hash, so every
                // node holding the same blocks picks the same tip whatever order they came in.
                let new_tip = header.height > before.tip_height
                    || (header.height == before.tip_height && block < before.tip_hash);
                ChainRecord {
                    genesis: before.genesis,
                    tip_height: if new_tip {
                        header.height
                    } else {
                        before.tip_height
                    },
                    tip_hash: if new_tip { block } else { before.tip_hash },
                    blocks: before.blocks + 1,
                    payload_bytes: before.payload_bytes + placement.len,
                }
            }
        };
        batch.put(MetaKey::chain(header.chain), encode_record(&record));
        record
    }
}

impl ChainStore {
    /// For an expert block: its `expert_versions` entry and its expert's new head.
    fn put_expert_head(&self, batch: &mut WriteBatch, header: &BlockHeader, block: BlockHash) {
        if header.kind == BlockKind::Expert
            && let Some(expert) = header.meta.expert
        {
            let name = expert.to_key_bytes();
            batch.put_cf(
                self.cf(CF_EXPERT_VERSIONS),
                expert_version_key(name, header.meta.version),
                block.as_bytes(),
            );
            let mut head = [0u8; EXPERT_HEAD_BYTES];
            head[..4].copy_from_slice(&header.meta.version.to_be_bytes());
            head[4..].copy_from_slice(block.as_bytes());
            batch.put_cf(self.cf(CF_EXPERT_HEADS), name, head);
        }
    }

    /// Puts a promotion of stored candidate `candidate` into `batch`: its candidate mark goes,
    /// and an expert block becomes its expert's current version. The caller checked the
    /// promotion under the append lock.
    pub(super) fn put_promotion(&self, batch: &mut WriteBatch, candidate: BlockHash) -> Result<()> {
        let header = self.header(&candidate)?.ok_or_else(|| Error::Corruption {
            what: format!("promoted candidate {candidate} has no header"),
        })?;
        batch.delete_cf(self.cf(CF_CANDIDATES), candidate.as_bytes());
        self.put_expert_head(batch, &header, candidate);
        Ok(())
    }

    /// Whether `block` is stored as a candidate: appended, not served, not (yet) promoted (see
    /// [`crate::Admission`]). False for a block not stored.
    pub fn is_candidate(&self, block: &BlockHash) -> Result<bool> {
        // A store of the previous format opened read-only has no `candidates` family, and no
        // candidate.
        let Some(family) = self.db.cf_handle(CF_CANDIDATES) else {
            return Ok(false);
        };
        Ok(self
            .db
            .get_pinned_cf(family, block.as_bytes())
            .map_err(crate::error::db_error("read candidate mark"))?
            .is_some())
    }
}

/// Decodes an `expert_heads` value of `expert`.
pub(super) fn parse_expert_head(expert: ExpertName, bytes: &[u8]) -> Result<ExpertVersion> {
    if bytes.len() != EXPERT_HEAD_BYTES {
        return Err(Error::Corruption {
            what: format!("expert head of {} bytes", bytes.len()),
        });
    }
    let version_bytes: [u8; 4] = bytes[..4].try_into().map_err(|_| Error::Corruption {
        what: "expert head".into(),
    })?;
    Ok(ExpertVersion {
        expert,
        version: u32::from_be_bytes(version_bytes),
        hash: hash_from_bytes(&bytes[4..], "expert head")?,
    })
}
