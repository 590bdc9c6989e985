//! Lookups: headers (re-hashed on read), payloads (mapped; re-hashed on request), chain tips
//! and summaries, pages by height, expert versions, dependents, and the append order.

use std::path::Path;
use std::sync::PoisonError;

use blyan_primitives::{BlockHash, ExpertName};
use rocksdb::{Direction, IteratorMode, ReadOptions};

use super::records::parse_expert_head;
use super::{ChainInfo, ChainStore, Dependent, ExpertVersion, StoreInfo};
use crate::chain::ChainId;
use crate::config::StoreConfig;
use crate::error::{Error, Result, db_error};
use crate::hash::hash_payload;
use crate::header::{BlockHeader, ChainTip, SealedHeader};
use crate::schema::{
    CF_BY_HEIGHT, CF_BY_SEQ, CF_DEPENDENTS, CF_EXPERT_HEADS, CF_EXPERT_VERSIONS, CF_HEADERS,
    CF_PAYLOADS, PayloadRecord, Relation, STORE_FORMAT_VERSION, decode_record, expert_version_key,
    hash_from_bytes, height_prefix, pair_key, parse_height_key,
};
use crate::segment::PayloadHandle;
use crate::validate::Validator;

/// A RocksDB entry as an iterator yields it.
type KeyValue = (Box<[u8]>, Box<[u8]>);

/// Most headers one [`ChainStore::blocks`] call returns.
pub const BLOCKS_PAGE_COUNT_MAX: u32 = 1000;

impl ChainStore {
    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The stateless rules this store applies (config and genesis), usable without the store.
    pub fn validator(&self) -> &Validator {
        &self.validator
    }

    /// The store's config.
    pub fn config(&self) -> &StoreConfig {
        self.validator.config()
    }

    /// Whether a block is stored.
    pub fn contains(&self, block: &BlockHash) -> Result<bool> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_HEADERS), block.as_bytes())
            .map_err(db_error("read header"))?
            .is_some())
    }

    /// A stored header, re-hashed on read (a mismatch is [`Error::Corruption`]).
    pub fn header(&self, block: &BlockHash) -> Result<Option<BlockHeader>> {
        let Some(bytes) = self
            .db
            .get_pinned_cf(self.cf(CF_HEADERS), block.as_bytes())
            .map_err(db_error("read header"))?
        else {
            return Ok(None);
        };
        let header = BlockHeader::decode(&bytes).map_err(|error| Error::Corruption {
            what: format!("stored header {block}: {error}"),
        })?;
        let hash = header.hash();
        if hash != *block {
            return Err(Error::Corruption {
                what: format!("header stored under {block} hashes to {hash}"),
            });
        }
        Ok(Some(header))
    }

    /// A stored header with its hash (the API's JSON form).
    pub fn sealed_header(&self, block: &BlockHash) -> Result<Option<SealedHeader>> {
        Ok(self.header(block)?.map(|header| SealedHeader {
            hash: *block,
            header,
        }))
    }

    pub(crate) fn payload_record(&self, block: &BlockHash) -> Result<Option<PayloadRecord>> {
        let Some(bytes) = self
            .db
            .get_pinned_cf(self.cf(CF_PAYLOADS), block.as_bytes())
            .map_err(db_error("read payload record"))?
        else {
            return Ok(None);
        };
        decode_record(&bytes, "payload record").map(Some)
    }

    /// The payload of a stored block, mapped, not copied; `None` if the block is not stored.
    ///
    /// The bytes are not re-hashed here (they were on append, and are by
    /// [`ChainStore::verify`]): a bit flipped on disk since is served as is. Use
    /// [`ChainStore::payload_verified`] where that matters.
    pub fn payload(&self, block: &BlockHash) -> Result<Option<PayloadHandle>> {
        let Some(record) = self.payload_record(block)? else {
            return Ok(None);
        };
        self.maps
            .handle(record.segment, record.offset, record.len)
            .map(Some)
    }

    /// Like [`ChainStore::payload`], but hashes the bytes first and refuses them when they no
    /// longer match the hash their header commits (kept beside the payload's location), with
    /// [`Error::StoredPayloadCorrupt`]: bytes changed on disk after the append are never
    /// served by this read. Costs one blake3 pass (~6 GB/s on two cores).
    pub fn payload_verified(&self, block: &BlockHash) -> Result<Option<PayloadHandle>> {
        let Some(record) = self.payload_record(block)? else {
            return Ok(None);
        };
        let handle = self
            .maps
            .handle(record.segment, record.offset, record.len)?;
        let got = hash_payload(&handle);
        if got != record.hash {
            tracing::error!(block = %block, %got, expected = %record.hash, "stored payload is corrupt");
            return Err(Error::StoredPayloadCorrupt {
                block: *block,
                got,
                expected: record.hash,
            });
        }
        Ok(Some(handle))
    }

    /// The tip of `chain`.
    pub fn tip(&self, chain: ChainId) -> ChainTip {
        let record = self.chains.read().unwrap_or_else(PoisonError::into_inner)[chain.index()];
        ChainTip {
            chain,
            height: record.tip_height,
            hash: record.tip_hash,
        }
    }

    /// Summary of `chain`.
    pub fn chain_info(&self, chain: ChainId) -> ChainInfo {
        let record = self.chains.read().unwrap_or_else(PoisonError::into_inner)[chain.index()];
        ChainInfo {
            chain,
            genesis: record.genesis,
            tip: ChainTip {
                chain,
                height: record.tip_height,
                hash: record.tip_hash,
            },
            blocks: record.blocks,
            payload_bytes: record.payload_bytes,
            fork_rule: self.validator.config().fork_rules.get(chain),
        }
    }

    /// Summary of the store and each chain.
    pub fn info(&self) -> StoreInfo {
        StoreInfo {
            path: self.root.clone(),
            format: STORE_FORMAT_VERSION,
            covenant_hash: self.covenant_hash,
            config: self.validator.config().clone(),
            chains: ChainId::ALL
                .iter()
                .map(|chain| self.chain_info(*chain))
                .collect(),
        }
    }

    /// Iterates `cf` over keys in `[start, end)`.
    pub(crate) fn scan<'a>(
        &'a self,
        cf: &'static str,
        start: &[u8],
        end: &[u8],
    ) -> impl Iterator<Item = Result<KeyValue>> + use<'a> {
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(end.to_vec());
        self.db
            .iterator_cf_opt(
                self.cf(cf),
                options,
                IteratorMode::From(start, Direction::Forward),
            )
            .map(|item| item.map_err(db_error("scan")))
    }

    /// Hashes of the blocks at `height` on `chain` (one on a linear chain; more where forks are
    /// allowed), in hash order.
    pub fn block_hashes_at(&self, chain: ChainId, height: u64) -> Result<Vec<BlockHash>> {
        let start = height_prefix(chain, height);
        let end = match height.checked_add(1) {
            Some(next) => height_prefix(chain, next).to_vec(),
            None => vec![chain.letter() + 1],
        };
        self.scan(CF_BY_HEIGHT, &start, &end)
            .map(|item| item.and_then(|(key, _)| parse_height_key(&key).map(|(_, _, hash)| hash)))
            .collect()
    }

    /// Every header of `chain` from height `from_height` upwards, in (height, hash) order, read
    /// one at a time from the height index: what replays a whole chain (Proof-of-Learning
    /// records, dataset gates) use instead of paging through [`ChainStore::blocks`].
    pub fn headers_from(
        &self,
        chain: ChainId,
        from_height: u64,
    ) -> impl Iterator<Item = Result<SealedHeader>> + '_ {
        let start = height_prefix(chain, from_height);
        let end = [chain.letter() + 1];
        self.scan(CF_BY_HEIGHT, &start, &end).map(move |item| {
            let (key, _) = item?;
            let (_, _, hash) = parse_height_key(&key)?;
            let header = self.header(&hash)?.ok_or_else(|| Error::Corruption {
                what: format!("by_height names {hash}, which has no header"),
            })?;
            Ok(SealedHeader { hash, header })
        })
    }

    /// Up to `limit` headers of `chain` from height `from_height` upwards, in (height, hash)
    /// order: the explorer's page. `limit` above [`BLOCKS_PAGE_COUNT_MAX`] is
    /// [`Error::LimitExceeded`].
    pub fn blocks(
        &self,
        chain: ChainId,
        from_height: u64,
        limit: u32,
    ) -> Result<Vec<SealedHeader>> {
        if limit > BLOCKS_PAGE_COUNT_MAX {
            return Err(Error::LimitExceeded {
                what: "blocks per page",
                got: u64::from(limit),
                max: u64::from(BLOCKS_PAGE_COUNT_MAX),
            });
        }
        let start = height_prefix(chain, from_height);
        let end = [chain.letter() + 1];
        let mut page = Vec::with_capacity(limit as usize);
        for item in self.scan(CF_BY_HEIGHT, &start, &end).take(limit as usize) {
            let (key, _) = item?;
            let (_, _, hash) = parse_height_key(&key)?;
            let header = self.header(&hash)?.ok_or_else(|| Error::Corruption {
                what: format!("by_height names {hash}, which has no header"),
            })?;
            page.push(SealedHeader { hash, header });
        }
        Ok(page)
    }

    /// The current version of `expert`: the last one appended.
    pub fn expert_current(&self, expert: ExpertName) -> Result<Option<ExpertVersion>> {
        let Some(bytes) = self
            .db
            .get_pinned_cf(self.cf(CF_EXPERT_HEADS), expert.to_key_bytes())
            .map_err(db_error("read expert head"))?
        else {
            return Ok(None);
        };
        parse_expert_head(expert, &bytes).map(Some)
    }

    /// Every version of `expert`, oldest first.
    pub fn expert_versions(&self, expert: ExpertName) -> Result<Vec<ExpertVersion>> {
        let name = expert.to_key_bytes();
        let start = expert_version_key(name, 0);
        let mut end = [0u8; 13];
        end[..12].copy_from_slice(&expert_version_key(name, u32::MAX));
        self.scan(CF_EXPERT_VERSIONS, &start, &end)
            .map(|item| {
                let (key, value) = item?;
                let version_bytes: [u8; 4] =
                    key[8..].try_into().map_err(|_| Error::Corruption {
                        what: "expert version key".into(),
                    })?;
                Ok(ExpertVersion {
                    expert,
                    version: u32::from_be_bytes(version_bytes),
                    hash: hash_from_bytes(&value, "expert version")?,
                })
            })
            .collect()
    }

    /// The current version of every expert, ordered by layer then expert index.
    pub fn experts(&self) -> Result<Vec<ExpertVersion>> {
        self.scan(CF_EXPERT_HEADS, &[], &[0xff; 9])
            .map(|item| {
                let (key, value) = item?;
                let expert = ExpertName::from_key_bytes(&key).ok_or_else(|| Error::Corruption {
                    what: "expert head key".into(),
                })?;
                parse_expert_head(expert, &value)
            })
            .collect()
    }

    /// Blocks that name `block` as parent or dependency, in hash order.
    pub fn dependents(&self, block: &BlockHash) -> Result<Vec<Dependent>> {
        let start = pair_key(block, &BlockHash::ZERO);
        let mut end = [0u8; 65];
        end[..64].copy_from_slice(&pair_key(block, &BlockHash([0xff; 32])));
        self.scan(CF_DEPENDENTS, &start, &end)
            .map(|item| {
                let (key, value) = item?;
                decode_dependent(&key, &value)
            })
            .collect()
    }

    /// Number of blocks in the store (all chains).
    pub fn block_count(&self) -> u64 {
        self.chains
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|c| c.blocks)
            .sum()
    }

    /// Blocks appended with sequence numbers from `from_seq` on, in append order, at most
    /// `limit`: how a reader follows what was appended since it last looked (the network
    /// announces new blocks this way, whichever path appended them).
    pub fn appended_since(&self, from_seq: u64, limit: usize) -> Result<Vec<(u64, BlockHash)>> {
        self.hashes_by_seq(from_seq).take(limit).collect()
    }

    /// The sequence number the next appended block gets (0 on an empty store).
    pub fn next_sequence(&self) -> Result<u64> {
        let mut last = self.db.iterator_cf(self.cf(CF_BY_SEQ), IteratorMode::End);
        match last.next() {
            None => Ok(0),
            Some(item) => {
                let (key, _) = item.map_err(db_error("read the last append sequence"))?;
                let seq_bytes: [u8; 8] = (*key).try_into().map_err(|_| Error::Corruption {
                    what: "by_seq key".into(),
                })?;
                Ok(u64::from_be_bytes(seq_bytes) + 1)
            }
        }
    }

    /// Iterates block hashes in append order from sequence number `from_seq`.
    pub(crate) fn hashes_by_seq(
        &self,
        from_seq: u64,
    ) -> impl Iterator<Item = Result<(u64, BlockHash)>> + '_ {
        self.scan(CF_BY_SEQ, &from_seq.to_be_bytes(), &[0xff; 9])
            .map(|item| {
                let (key, value) = item?;
                let seq_bytes: [u8; 8] = (*key).try_into().map_err(|_| Error::Corruption {
                    what: "by_seq key".into(),
                })?;
                Ok((
                    u64::from_be_bytes(seq_bytes),
                    hash_from_bytes(&value, "by_seq value")?,
                ))
            })
    }
}

/// A `dependents` column-family entry: the key's second hash and the relation byte.
pub(crate) fn decode_dependent(key: &[u8], value: &[u8]) -> Result<Dependent> {
    let relation = value
        .first()
        .copied()
        .and_then(Relation::from_byte)
        .ok_or_else(|| Error::Corruption {
            what: "dependent relation byte".into(),
        })?;
    Ok(Dependent {
        block: hash_from_bytes(&key[32..], "dependent key")?,
        relation,
    })
}
