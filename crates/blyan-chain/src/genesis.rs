//! Genesis blocks: fixed, unsigned, computed from the covenant, so every node that ships the
//! same covenant starts from the same three blocks (as Bitcoin and Ethereum hard-code theirs).
//!
//! Chain A's genesis carries the covenant text as its payload, so its header commits the
//! covenant's blake3 hash; the genesis blocks of B and D have empty payloads and depend on A's.

use std::borrow::Cow;

use blyan_primitives::{Address, BlockHash, PayloadHash};

use crate::chain::{BlockKind, ChainId};
use crate::hash::hash_payload;
use crate::header::{BlockHeader, BlockMeta, HEADER_FORMAT_VERSION};

/// The project's founding rules, built into the library so a node cannot drift from the network
/// by editing a file. The text is the crate's `genesis/covenant.md` (`config/covenant.md` in the
/// repository is a link to it).
pub const COVENANT_TEXT: &str = include_str!("../genesis/covenant.md");

/// Timestamp of the shipped genesis blocks: 2026-01-01T00:00:00Z.
pub const GENESIS_TIMESTAMP_MS: u64 = 1_767_225_600_000;

/// The hashes of the shipped default model's blocks (one hex block hash per line, `#` comments),
/// built into the library like the covenant. A node trusts these blocks by their hashes, as it
/// trusts the genesis blocks, without a signature. The text is the crate's
/// `genesis/pinned-blocks.txt`; the repository's `models/default/blocks.txt`, which
/// `blyan-miner ship` writes, is a link to it.
pub const SHIPPED_BLOCKS_TEXT: &str = include_str!("../genesis/pinned-blocks.txt");

/// Parses a pinned-hash list: one hex block hash per line; blank lines and `#` comments are
/// skipped. A malformed line is [`blyan_primitives::Error`] naming it.
pub fn parse_pinned_blocks(text: &str) -> Result<Vec<BlockHash>, blyan_primitives::Error> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::parse)
        .collect()
}

/// What the genesis blocks are made from. Two stores agree on genesis exactly when their specs
/// are equal. [`GenesisSpec::shipped`] is the network's; tests and private networks may use
/// another covenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenesisSpec {
    /// The covenant text committed by chain A's genesis.
    pub covenant: Cow<'static, [u8]>,
    /// Timestamp written into all three genesis headers.
    pub timestamp_ms: u64,
    /// Blocks after genesis trusted by their hash alone (unsigned, author zero): the shipped
    /// default model ([`SHIPPED_BLOCKS_TEXT`]). Anything else needs its author's signature.
    pub pinned: Cow<'static, [BlockHash]>,
}

impl Default for GenesisSpec {
    fn default() -> Self {
        Self::shipped()
    }
}

/// One genesis block: its header and payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenesisBlock {
    /// The header (unsigned, author zero).
    pub header: BlockHeader,
    /// The payload: the covenant on chain A, empty elsewhere.
    pub payload: Vec<u8>,
}

impl GenesisSpec {
    /// The network's genesis: [`COVENANT_TEXT`] at [`GENESIS_TIMESTAMP_MS`], with the shipped
    /// model's blocks pinned ([`SHIPPED_BLOCKS_TEXT`]).
    pub fn shipped() -> Self {
        Self {
            covenant: Cow::Borrowed(COVENANT_TEXT.as_bytes()),
            timestamp_ms: GENESIS_TIMESTAMP_MS,
            pinned: Cow::Owned(
                parse_pinned_blocks(SHIPPED_BLOCKS_TEXT)
                    .expect("genesis/pinned-blocks.txt is checked by a unit test"),
            ),
        }
    }

    /// blake3 of the covenant, as chain A's genesis header commits it.
    pub fn covenant_hash(&self) -> PayloadHash {
        hash_payload(&self.covenant)
    }

    /// The genesis block of `chain`.
    pub fn block(&self, chain: ChainId) -> GenesisBlock {
        let payload = if chain == ChainId::Meta {
            self.covenant.to_vec()
        } else {
            Vec::new()
        };
        let depends_on = if chain == ChainId::Meta {
            Vec::new()
        } else {
            vec![self.meta_genesis_hash()]
        };
        let header = BlockHeader {
            format_version: HEADER_FORMAT_VERSION,
            chain,
            height: 0,
            prev_hash: None,
            depends_on,
            kind: BlockKind::Genesis,
            payload_hash: hash_payload(&payload),
            payload_bytes: payload.len() as u64,
            timestamp_ms: self.timestamp_ms,
            author: Address::ZERO,
            pow_nonce: 0,
            meta: BlockMeta::default(),
            signature: None,
        };
        GenesisBlock { header, payload }
    }

    /// The hash of chain A's genesis block.
    pub fn meta_genesis_hash(&self) -> BlockHash {
        let header = BlockHeader {
            format_version: HEADER_FORMAT_VERSION,
            chain: ChainId::Meta,
            height: 0,
            prev_hash: None,
            depends_on: Vec::new(),
            kind: BlockKind::Genesis,
            payload_hash: self.covenant_hash(),
            payload_bytes: self.covenant.len() as u64,
            timestamp_ms: self.timestamp_ms,
            author: Address::ZERO,
            pow_nonce: 0,
            meta: BlockMeta::default(),
            signature: None,
        };
        header.hash()
    }

    /// The genesis hash of every chain, indexed like [`ChainId::ALL`].
    pub fn hashes(&self) -> [BlockHash; ChainId::ALL.len()] {
        ChainId::ALL.map(|chain| self.block(chain).header.hash())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_genesis_commits_the_covenant_and_others_depend_on_it() {
        let spec = GenesisSpec::shipped();
        let meta = spec.block(ChainId::Meta);
        assert_eq!(meta.header.payload_hash, spec.covenant_hash());
        assert_eq!(meta.payload, COVENANT_TEXT.as_bytes());
        assert_eq!(meta.header.hash(), spec.meta_genesis_hash());
        for chain in [ChainId::Parameters, ChainId::Dataset] {
            let block = spec.block(chain);
            assert_eq!(block.header.depends_on, vec![spec.meta_genesis_hash()]);
            assert_eq!(block.header.payload_bytes, 0);
        }
    }

    #[test]
    fn the_shipped_pinned_list_parses_and_comments_are_skipped() {
        assert!(parse_pinned_blocks(SHIPPED_BLOCKS_TEXT).is_ok());
        let hash = GenesisSpec::shipped().meta_genesis_hash();
        let text = format!("# a comment\n\n{hash}\n  {hash}  \n");
        assert_eq!(
            parse_pinned_blocks(&text).expect("parses"),
            vec![hash, hash]
        );
        assert!(parse_pinned_blocks("not a hash\n").is_err());
    }

    #[test]
    fn another_covenant_is_another_network() {
        let shipped = GenesisSpec::shipped();
        let other = GenesisSpec {
            covenant: Cow::Borrowed(b"other rules"),
            ..GenesisSpec::shipped()
        };
        let (a, b) = (shipped.hashes(), other.hashes());
        for index in 0..a.len() {
            assert_ne!(a[index], b[index]);
        }
    }
}
