//! The RocksDB layout: column families, key encodings and the small records stored in them.
//! Multi-byte integers in keys are big endian so RocksDB's byte order is numeric order.
//!
//! | column family     | key                                   | value                         |
//! |-------------------|---------------------------------------|-------------------------------|
//! | `headers`         | block hash (32)                       | canonical header              |
//! | `payloads`        | block hash (32)                       | [`PayloadRecord`] (64 bytes)  |
//! | `by_seq`          | append sequence (u64)                 | block hash                    |
//! | `by_height`       | chain letter (1) ‖ height (u64) ‖ hash | empty                        |
//! | `dependents`      | target hash ‖ dependent hash          | [`Relation`] byte             |
//! | `expert_versions` | expert (8) ‖ version (u32)            | block hash                    |
//! | `expert_heads`    | expert (8)                            | version (u32) ‖ block hash    |
//! | `candidates`      | block hash (32)                       | empty                         |
//! | `default`         | `format`, `next_seq`, `active_segment`, `chain/<letter>` | see [`MetaKey`] |

use blyan_primitives::{BlockHash, PayloadHash};

use crate::chain::ChainId;
use crate::error::{Error, Result};
use crate::header::canonical_config;

/// Version of this layout and of the headers it holds, stored under `format`; a store of
/// another version is refused with [`crate::Error::StoreFormat`].
///
/// Version 2: headers of [`crate::HEADER_FORMAT_VERSION`] 2 (one-byte tensor dtypes). The
/// RocksDB layout is version 1's; a version-1 store's headers no longer decode, so it is refused
/// at open rather than block by block.
///
/// Version 3: the `candidates` column family (blocks stored but not served, see
/// [`crate::Admission`]). A version-2 store has no candidate, so opening it read-write adds the
/// empty column family and records version 3; nothing else changes.
pub const STORE_FORMAT_VERSION: u32 = 3;

/// The previous format, upgraded in place when opened read-write.
pub(crate) const STORE_FORMAT_VERSION_UPGRADABLE: u32 = 2;

pub(crate) const CF_HEADERS: &str = "headers";
pub(crate) const CF_PAYLOADS: &str = "payloads";
pub(crate) const CF_BY_SEQ: &str = "by_seq";
pub(crate) const CF_BY_HEIGHT: &str = "by_height";
pub(crate) const CF_DEPENDENTS: &str = "dependents";
pub(crate) const CF_EXPERT_VERSIONS: &str = "expert_versions";
pub(crate) const CF_EXPERT_HEADS: &str = "expert_heads";
pub(crate) const CF_CANDIDATES: &str = "candidates";

/// Every column family but `default`, in creation order.
pub(crate) const COLUMN_FAMILIES: [&str; 8] = [
    CF_HEADERS,
    CF_PAYLOADS,
    CF_BY_SEQ,
    CF_BY_HEIGHT,
    CF_DEPENDENTS,
    CF_EXPERT_VERSIONS,
    CF_EXPERT_HEADS,
    CF_CANDIDATES,
];

/// Keys of the `default` column family.
pub(crate) struct MetaKey;

impl MetaKey {
    pub(crate) const FORMAT: &'static [u8] = b"format";
    pub(crate) const NEXT_SEQ: &'static [u8] = b"next_seq";
    pub(crate) const ACTIVE_SEGMENT: &'static [u8] = b"active_segment";

    /// The candidates `block` promoted (a bincode `Vec<BlockHash>`), kept so that a roll-back
    /// of `block` after a power loss (`store/repair.rs`) makes them candidates again. Stores
    /// written before it have no such record: their promotions cannot be undone.
    pub(crate) fn promoted(block: &BlockHash) -> [u8; 41] {
        let mut key = [0u8; 41];
        key[..9].copy_from_slice(b"promoted/");
        key[9..].copy_from_slice(block.as_bytes());
        key
    }

    pub(crate) fn chain(chain: ChainId) -> [u8; 7] {
        let mut key = *b"chain/?";
        key[6] = chain.letter();
        key
    }
}

/// Where a payload lives and what it hashes to, stored per block. The blake3 is the header's
/// `payload_hash`, kept here too so the index can be checked against the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub(crate) struct PayloadRecord {
    /// Position of the block in append order; a block's parent and dependencies always have a
    /// smaller one.
    pub(crate) seq: u64,
    pub(crate) segment: u64,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) hash: PayloadHash,
}

/// The active payload segment and its committed end: every byte below `end` is either a
/// segment header, an indexed payload, or alignment padding, and never changes again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub(crate) struct ActiveSegment {
    pub(crate) id: u64,
    pub(crate) end: u64,
}

/// Per-chain totals and tip, updated in every append's batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub(crate) struct ChainRecord {
    pub(crate) genesis: BlockHash,
    pub(crate) tip_height: u64,
    pub(crate) tip_hash: BlockHash,
    pub(crate) blocks: u64,
    pub(crate) payload_bytes: u64,
}

/// How a dependent refers to its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Relation {
    /// The dependent's `prev_hash` is the target.
    Child,
    /// The target is in the dependent's `depends_on`.
    DependsOn,
}

impl Relation {
    pub(crate) fn byte(self) -> u8 {
        match self {
            Relation::Child => 0,
            Relation::DependsOn => 1,
        }
    }

    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Relation::Child),
            1 => Some(Relation::DependsOn),
            _ => None,
        }
    }
}

pub(crate) fn height_key(chain: ChainId, height: u64, hash: &BlockHash) -> [u8; 41] {
    let mut key = [0u8; 41];
    key[0] = chain.letter();
    key[1..9].copy_from_slice(&height.to_be_bytes());
    key[9..].copy_from_slice(hash.as_bytes());
    key
}

pub(crate) fn height_prefix(chain: ChainId, height: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = chain.letter();
    key[1..9].copy_from_slice(&height.to_be_bytes());
    key
}

/// Splits a `by_height` key into height and hash.
pub(crate) fn parse_height_key(key: &[u8]) -> Result<(ChainId, u64, BlockHash)> {
    let corrupt = || Error::Corruption {
        what: format!("by_height key of {} bytes", key.len()),
    };
    if key.len() != 41 {
        return Err(corrupt());
    }
    let chain = ChainId::from_letter(key[0]).ok_or_else(corrupt)?;
    let height = u64::from_be_bytes(key[1..9].try_into().map_err(|_| corrupt())?);
    let hash = BlockHash(key[9..].try_into().map_err(|_| corrupt())?);
    Ok((chain, height, hash))
}

pub(crate) fn pair_key(first: &BlockHash, second: &BlockHash) -> [u8; 64] {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(first.as_bytes());
    key[32..].copy_from_slice(second.as_bytes());
    key
}

pub(crate) fn expert_version_key(expert: [u8; 8], version: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&expert);
    key[8..].copy_from_slice(&version.to_be_bytes());
    key
}

pub(crate) fn hash_from_bytes(bytes: &[u8], what: &str) -> Result<BlockHash> {
    let array: [u8; 32] = bytes.try_into().map_err(|_| Error::Corruption {
        what: format!("{what}: {} bytes, not a hash", bytes.len()),
    })?;
    Ok(BlockHash(array))
}

/// Encodes a stored record with the canonical configuration.
pub(crate) fn encode_record<T: bincode::Encode>(record: &T) -> Vec<u8> {
    bincode::encode_to_vec(record, canonical_config()).expect("encoding into a Vec cannot fail")
}

/// Decodes a stored record; a failure is corruption (the store wrote it).
pub(crate) fn decode_record<T: bincode::Decode<()>>(bytes: &[u8], what: &str) -> Result<T> {
    let (record, read): (T, usize) = bincode::decode_from_slice(bytes, canonical_config())
        .map_err(|error| Error::Corruption {
            what: format!("{what}: {error}"),
        })?;
    if read != bytes.len() {
        return Err(Error::Corruption {
            what: format!("{what}: {} trailing bytes", bytes.len() - read),
        });
    }
    Ok(record)
}
