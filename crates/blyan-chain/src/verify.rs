//! Full verification: every header re-hashed and re-validated, every payload re-hashed, every
//! link and index entry checked, in append order, streaming, in memory independent of the
//! store's size. Stops at the first bad block and names it.

use crate::chain::{BlockKind, ChainId};
use crate::config::ForkRule;
use crate::error::{Error, Result, db_error};
use crate::hash::{BlockHash, hash_payload};
use crate::header::BlockHeader;
use crate::schema::{CF_BY_HEIGHT, CF_EXPERT_VERSIONS, CF_HEADERS, expert_version_key, height_key};
use crate::store::ChainStore;

/// How far a verification has come; passed to the progress callback after every block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VerifyProgress {
    /// Blocks verified so far.
    pub blocks: u64,
    /// Payload bytes hashed so far.
    pub payload_bytes: u64,
    /// Blocks in the store when verification started.
    pub blocks_total: u64,
}

/// The first block that failed verification, and why.
#[derive(Debug)]
pub struct BadBlock {
    /// Its position in append order.
    pub seq: u64,
    /// Its hash, when the index names one.
    pub hash: Option<BlockHash>,
    /// Its chain, when its header could be read.
    pub chain: Option<ChainId>,
    /// Its height, when its header could be read.
    pub height: Option<u64>,
    /// What is wrong: the same variant an append of this block would have been refused with,
    /// or [`Error::Corruption`] for an index that contradicts the blocks.
    pub error: Error,
}

/// Outcome of [`ChainStore::verify`].
#[derive(Debug)]
pub struct VerifyReport {
    /// Blocks that verified.
    pub blocks: u64,
    /// Payload bytes that were hashed and matched.
    pub payload_bytes: u64,
    /// The first bad block; `None` when the whole store verified.
    pub first_bad: Option<BadBlock>,
}

impl std::fmt::Display for BadBlock {
    /// `seq N hash 0x… chain B height H: <error>`, with `-` for what could not be read.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seq {} hash ", self.seq)?;
        match &self.hash {
            Some(hash) => write!(f, "{hash}")?,
            None => f.write_str("-")?,
        }
        f.write_str(" chain ")?;
        match &self.chain {
            Some(chain) => write!(f, "{chain}")?,
            None => f.write_str("-")?,
        }
        f.write_str(" height ")?;
        match &self.height {
            Some(height) => write!(f, "{height}")?,
            None => f.write_str("-")?,
        }
        write!(f, ": {}", self.error)
    }
}

impl VerifyReport {
    /// Whether every block verified.
    pub fn is_ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

impl ChainStore {
    /// Verifies the whole store against the rules it is opened with. `progress` is called after
    /// each block. Returns `Err` only when verification itself cannot go on (a database read
    /// fails); a bad block is reported in [`VerifyReport::first_bad`].
    pub fn verify(&self, mut progress: impl FnMut(&VerifyProgress)) -> Result<VerifyReport> {
        let blocks_total = self.block_count();
        let mut state = VerifyProgress {
            blocks: 0,
            payload_bytes: 0,
            blocks_total,
        };
        for item in self.hashes_by_seq(0) {
            let (seq, hash) = item?;
            let bad = |error, place: Option<(ChainId, u64)>| BadBlock {
                seq,
                hash: Some(hash),
                chain: place.map(|(chain, _)| chain),
                height: place.map(|(_, height)| height),
                error,
            };
            if seq != state.blocks {
                let error = Error::Corruption {
                    what: format!(
                        "append sequence jumps from {} to {seq}: blocks are missing",
                        state.blocks
                    ),
                };
                return Ok(report(state, Some(bad(error, None))));
            }
            match self.verify_block(seq, hash) {
                Ok(payload_bytes) => {
                    state.blocks += 1;
                    state.payload_bytes += payload_bytes;
                    progress(&state);
                }
                Err((error, place)) => return Ok(report(state, Some(bad(error, place)))),
            }
        }
        if state.blocks != blocks_total {
            let error = Error::Corruption {
                what: format!(
                    "chain records count {blocks_total} blocks, the append order holds {}",
                    state.blocks
                ),
            };
            let bad = BadBlock {
                seq: state.blocks,
                hash: None,
                chain: None,
                height: None,
                error,
            };
            return Ok(report(state, Some(bad)));
        }
        Ok(report(state, None))
    }

    /// Verifies one block; returns its payload size, or the error with the block's chain and
    /// height if its header was readable.
    fn verify_block(
        &self,
        seq: u64,
        block: BlockHash,
    ) -> std::result::Result<u64, (Error, Option<(ChainId, u64)>)> {
        let bytes = self
            .db
            .get_pinned_cf(self.cf(CF_HEADERS), block.as_bytes())
            .map_err(|source| (db_error("read header")(source), None))?
            .ok_or_else(|| {
                (
                    Error::Corruption {
                        what: format!("by_seq names {block}, which has no header"),
                    },
                    None,
                )
            })?;
        let header = BlockHeader::decode(&bytes).map_err(|error| (error, None))?;
        drop(bytes);
        let place = Some((header.chain, header.height));
        let got = header.hash();
        if got != block {
            return Err((
                Error::HeaderHashMismatch {
                    got,
                    expected: block,
                },
                place,
            ));
        }
        self.verify_decoded(seq, block, &header)
            .map_err(|error| (error, place))
    }

    fn verify_decoded(&self, seq: u64, block: BlockHash, header: &BlockHeader) -> Result<u64> {
        self.validator.check_header(header)?;

        let record = self
            .payload_record(&block)?
            .ok_or_else(|| Error::Corruption {
                what: format!("block {block} has no payload record"),
            })?;
        if record.seq != seq {
            return Err(Error::Corruption {
                what: format!(
                    "block {block} is at sequence {seq}, its payload record says {}",
                    record.seq
                ),
            });
        }
        if record.len != header.payload_bytes {
            return Err(Error::PayloadLengthMismatch {
                block,
                got: record.len,
                expected: header.payload_bytes,
            });
        }
        let payload = self
            .maps
            .handle(record.segment, record.offset, record.len)?;
        let got = hash_payload(&payload);
        if got != header.payload_hash {
            return Err(Error::PayloadHashMismatch {
                block,
                got,
                expected: header.payload_hash,
            });
        }

        if let Some(parent_hash) = header.prev_hash {
            let parent = self.linked(block, seq, parent_hash, header.timestamp_ms, Link::Parent)?;
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
        }
        for dependency in &header.depends_on {
            self.linked(
                block,
                seq,
                *dependency,
                header.timestamp_ms,
                Link::Dependency,
            )?;
        }

        let indexed = self
            .db
            .get_pinned_cf(
                self.cf(CF_BY_HEIGHT),
                height_key(header.chain, header.height, &block),
            )
            .map_err(db_error("read height index"))?;
        if indexed.is_none() {
            return Err(Error::Corruption {
                what: format!("block {block} is missing from the height index"),
            });
        }
        if self.validator.config().fork_rules.get(header.chain) == ForkRule::Linear {
            let at_height = self.block_hashes_at(header.chain, header.height)?;
            if let Some(existing) = at_height.iter().find(|hash| **hash != block) {
                return Err(Error::Fork {
                    block,
                    chain: header.chain,
                    height: header.height,
                    existing: *existing,
                });
            }
        }
        if header.kind == BlockKind::Expert {
            let expert = header.meta.expert.ok_or(Error::MetaInvalid {
                block,
                kind: header.kind,
                reason: "an expert block must name its expert",
            })?;
            let indexed = self
                .db
                .get_pinned_cf(
                    self.cf(CF_EXPERT_VERSIONS),
                    expert_version_key(expert.key_bytes(), header.meta.version),
                )
                .map_err(db_error("read expert index"))?;
            if indexed.as_deref() != Some(block.as_bytes().as_slice()) {
                return Err(Error::Corruption {
                    what: format!(
                        "{expert} version {} does not index block {block}",
                        header.meta.version
                    ),
                });
            }
        }
        Ok(record.len)
    }

    /// Checks a parent or dependency: stored, appended before `seq`, not stamped later.
    fn linked(
        &self,
        block: BlockHash,
        seq: u64,
        target: BlockHash,
        timestamp_ms: u64,
        link: Link,
    ) -> Result<BlockHeader> {
        let missing = || match link {
            Link::Parent => Error::UnknownParent {
                block,
                parent: target,
            },
            Link::Dependency => Error::UnknownDependency {
                block,
                dependency: target,
            },
        };
        let stored = self.header(&target)?.ok_or_else(missing)?;
        let record = self.payload_record(&target)?.ok_or_else(missing)?;
        if record.seq >= seq {
            return Err(Error::Corruption {
                what: format!(
                    "block {block} (sequence {seq}) links to {target}, appended later ({})",
                    record.seq
                ),
            });
        }
        if stored.timestamp_ms > timestamp_ms {
            return Err(match link {
                Link::Parent => Error::TimestampBeforeParent {
                    block,
                    parent: target,
                    parent_timestamp_ms: stored.timestamp_ms,
                    timestamp_ms,
                },
                Link::Dependency => Error::DependencyLater {
                    block,
                    dependency: target,
                    dependency_timestamp_ms: stored.timestamp_ms,
                    timestamp_ms,
                },
            });
        }
        Ok(stored)
    }
}

#[derive(Clone, Copy)]
enum Link {
    Parent,
    Dependency,
}

fn report(state: VerifyProgress, first_bad: Option<BadBlock>) -> VerifyReport {
    VerifyReport {
        blocks: state.blocks,
        payload_bytes: state.payload_bytes,
        first_bad,
    }
}
