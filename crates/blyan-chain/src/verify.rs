//! Full verification: every header re-hashed and re-validated, every payload re-hashed, every
//! link and index entry checked, in append order, streaming, in memory independent of the
//! store's size. Stops at the first bad block and names it. Also reports, without touching it,
//! any unacknowledged tail: payload bytes on disk that no index names.

use blyan_primitives::BlockHash;

use crate::chain::{BlockKind, ChainId};
use crate::config::ForkRule;
use crate::error::{Error, Result, db_error};
use crate::hash::hash_payload;
use crate::header::BlockHeader;
use crate::schema::{CF_BY_HEIGHT, CF_EXPERT_VERSIONS, CF_HEADERS, expert_version_key, height_key};
use crate::segment::scan_tail;
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

/// Payload bytes on disk that no index names: bytes past the committed end of the newest
/// segment the index names, and segment files newer than it.
///
/// Not corruption: it is what a crash between a payload write and the index batch that would
/// have named it leaves behind (the block was never acknowledged), or a payload refused while
/// it was being written by a store that then could not cut it off. On a store opened read-only
/// beside a running node, it may also be payloads the node appended after this store opened.
/// Every block stays readable and verifiable. A read-write open removes these bytes (recovery);
/// verification only reports them, so that verifying a store never changes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UnacknowledgedTail {
    /// Id of the newest segment the index names (file `segments/<id, 10 digits>.seg`).
    pub segment: u64,
    /// Its committed end: the first byte no index entry covers.
    pub committed_end: u64,
    /// Bytes of that segment past its committed end.
    pub tail_bytes: u64,
    /// Segment files newer than it, in id order.
    pub newer_segments: Vec<NewerSegment>,
}

/// A segment file newer than any the index names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NewerSegment {
    /// Its id.
    pub segment: u64,
    /// Its length.
    pub bytes: u64,
}

impl std::fmt::Display for UnacknowledgedTail {
    /// One line for people: what is there, and that it is not an error.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unacknowledged tail: {} bytes past the committed end ({}) of segment {}",
            self.tail_bytes, self.committed_end, self.segment
        )?;
        if !self.newer_segments.is_empty() {
            let newer: Vec<String> = self
                .newer_segments
                .iter()
                .map(|newer| format!("{} ({} bytes)", newer.segment, newer.bytes))
                .collect();
            write!(f, ", and newer segment files {}", newer.join(", "))?;
        }
        f.write_str(
            "; no indexed block uses them (an append cut short by a crash leaves such bytes, \
             and a read-write open removes them): not an error",
        )
    }
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
    /// Payload bytes on disk that no block uses, if any: a finding, not a bad block
    /// ([`VerifyReport::is_ok`] does not look at it). Looked for only on a store opened
    /// read-only: a read-write open removed them.
    pub unacknowledged_tail: Option<UnacknowledgedTail>,
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
    /// Whether every block verified. An [`UnacknowledgedTail`] does not make a store bad.
    pub fn is_ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

impl ChainStore {
    /// Verifies the whole store against the rules it is opened with. `progress` is called after
    /// each block. Returns `Err` only when verification itself cannot go on (a database read
    /// fails); a bad block is reported in [`VerifyReport::first_bad`], payload bytes no block
    /// uses in [`VerifyReport::unacknowledged_tail`]. Writes nothing: open the store with
    /// [`ChainStore::open_read_only`] to verify it exactly as it lies on disk.
    pub fn verify(&self, mut progress: impl FnMut(&VerifyProgress)) -> Result<VerifyReport> {
        let _span = tracing::info_span!("verify", path = %self.path().display()).entered();
        let unacknowledged_tail = self.unacknowledged_tail()?;
        if let Some(tail) = &unacknowledged_tail {
            tracing::warn!(%tail, "found payload bytes no block uses");
        }
        let report = |state: VerifyProgress, first_bad: Option<BadBlock>| VerifyReport {
            blocks: state.blocks,
            payload_bytes: state.payload_bytes,
            first_bad,
            unacknowledged_tail: unacknowledged_tail.clone(),
        };
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

    /// Payload bytes past the committed state of the segment directory, on a read-only store.
    /// A read-write store removed them when it opened, and what lies past its committed end
    /// since is a payload being appended (looking under the append lock instead would deadlock
    /// a Proof-of-Learning hook that verifies), so it reports none.
    fn unacknowledged_tail(&self) -> Result<Option<UnacknowledgedTail>> {
        if !self.is_read_only() {
            return Ok(None);
        }
        let active = self.maps.active();
        let scan = scan_tail(self.maps.dir(), active)?;
        if scan.tail_bytes == 0 && scan.newer_segments.is_empty() {
            return Ok(None);
        }
        Ok(Some(UnacknowledgedTail {
            segment: active.id,
            committed_end: active.end,
            tail_bytes: scan.tail_bytes,
            newer_segments: scan
                .newer_segments
                .into_iter()
                .map(|(segment, bytes)| NewerSegment { segment, bytes })
                .collect(),
        }))
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
        // A candidate (stored, never promoted) is not in the expert index; a promoted one is.
        if header.kind == BlockKind::Expert && !self.is_candidate(&block)? {
            let expert = header.meta.expert.ok_or(Error::MetaInvalid {
                block,
                kind: header.kind,
                reason: "an expert block must name its expert",
            })?;
            let indexed = self
                .db
                .get_pinned_cf(
                    self.cf(CF_EXPERT_VERSIONS),
                    expert_version_key(expert.to_key_bytes(), header.meta.version),
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
