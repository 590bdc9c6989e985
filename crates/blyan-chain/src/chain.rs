//! Chain identities and block kinds, and which kinds each chain accepts.

use std::fmt;
use std::str::FromStr;

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};

use crate::error::{Error, Result};

/// One chain of the DAG. Encoded as its ASCII letter, so the letters are the stable on-disk
/// identity; a new chain takes a new letter.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
#[non_exhaustive]
pub enum ChainId {
    /// Chain A: model architecture, routing rules, versions, the genesis covenant.
    Meta,
    /// Chain B: one block per expert version, router and shared weights.
    Parameters,
    /// Chain D: data entries, quality records, proofs of learning.
    Dataset,
}

impl ChainId {
    /// Every chain, in the order genesis blocks are created (A first: the others depend on it).
    pub const ALL: [ChainId; 3] = [ChainId::Meta, ChainId::Parameters, ChainId::Dataset];

    /// The chain's letter, its identity on disk and on the wire.
    pub const fn letter(self) -> u8 {
        match self {
            ChainId::Meta => b'A',
            ChainId::Parameters => b'B',
            ChainId::Dataset => b'D',
        }
    }

    /// The chain with this letter, if it exists.
    pub const fn from_letter(letter: u8) -> Option<Self> {
        match letter {
            b'A' => Some(ChainId::Meta),
            b'B' => Some(ChainId::Parameters),
            b'D' => Some(ChainId::Dataset),
            _ => None,
        }
    }

    /// Position in [`ChainId::ALL`], for per-chain arrays.
    pub(crate) const fn index(self) -> usize {
        match self {
            ChainId::Meta => 0,
            ChainId::Parameters => 1,
            ChainId::Dataset => 2,
        }
    }

    /// A lower-case name for logs and command lines.
    pub const fn name(self) -> &'static str {
        match self {
            ChainId::Meta => "meta",
            ChainId::Parameters => "parameters",
            ChainId::Dataset => "dataset",
        }
    }

    /// Whether a block of `kind` may live on this chain.
    pub fn allows(self, kind: BlockKind) -> bool {
        use BlockKind as K;
        match self {
            ChainId::Meta => matches!(kind, K::Genesis | K::Meta | K::Migration),
            ChainId::Parameters => {
                matches!(
                    kind,
                    K::Genesis | K::Expert | K::Router | K::SharedWeights | K::Migration
                )
            }
            ChainId::Dataset => {
                matches!(
                    kind,
                    K::Genesis | K::DatasetEntry | K::PolProof | K::Migration
                )
            }
        }
    }

    /// Parses a letter (`A`, `b`) or a name (`meta`, `parameters`, `dataset`).
    pub fn parse(input: &str) -> Result<Self> {
        let found = match input.to_ascii_lowercase().as_str() {
            "a" | "meta" => Some(ChainId::Meta),
            "b" | "parameters" => Some(ChainId::Parameters),
            "d" | "dataset" => Some(ChainId::Dataset),
            _ => None,
        };
        found.ok_or_else(|| Error::InvalidChain {
            input: input.chars().take(40).collect(),
        })
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", char::from(self.letter()))
    }
}

impl FromStr for ChainId {
    type Err = Error;
    fn from_str(input: &str) -> Result<Self> {
        Self::parse(input)
    }
}

impl bincode::Encode for ChainId {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> std::result::Result<(), EncodeError> {
        bincode::Encode::encode(&self.letter(), encoder)
    }
}

impl<Context> bincode::Decode<Context> for ChainId {
    fn decode<D: Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> std::result::Result<Self, DecodeError> {
        let letter: u8 = bincode::Decode::decode(decoder)?;
        ChainId::from_letter(letter).ok_or(DecodeError::Other("unknown chain letter"))
    }
}
bincode::impl_borrow_decode!(ChainId);

impl serde::Serialize for ChainId {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ChainId {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// What a block holds. Encoded by variant index: new kinds are only ever appended.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Debug,
    bincode::Encode,
    bincode::Decode,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BlockKind {
    /// The first block of a chain; on chain A its payload is the covenant.
    Genesis,
    /// Model architecture, routing rules, version records (chain A).
    Meta,
    /// One version of one expert's weights (chain B).
    Expert,
    /// A layer's router weights (chain B).
    Router,
    /// Weights every expert shares: embeddings, attention, norms (chain B).
    SharedWeights,
    /// A data entry with its quality record (chain D).
    DatasetEntry,
    /// A Proof-of-Learning claim or verdict (chain D).
    PolProof,
    /// A format or schema migration record (any chain).
    Migration,
}

impl fmt::Display for BlockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            BlockKind::Genesis => "genesis",
            BlockKind::Meta => "meta",
            BlockKind::Expert => "expert",
            BlockKind::Router => "router",
            BlockKind::SharedWeights => "shared_weights",
            BlockKind::DatasetEntry => "dataset_entry",
            BlockKind::PolProof => "pol_proof",
            BlockKind::Migration => "migration",
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_round_trip() {
        for chain in ChainId::ALL {
            assert_eq!(ChainId::from_letter(chain.letter()), Some(chain));
            assert_eq!(ChainId::parse(&chain.to_string()).unwrap(), chain);
            assert_eq!(ChainId::parse(chain.name()).unwrap(), chain);
            assert_eq!(ChainId::ALL[chain.index()], chain);
        }
        assert_eq!(ChainId::from_letter(b'C'), None);
        assert!(matches!(
            ChainId::parse("C"),
            Err(Error::InvalidChain { .. })
        ));
    }

    #[test]
    fn kinds_live_on_their_chains() {
        assert!(ChainId::Parameters.allows(BlockKind::Expert));
        assert!(!ChainId::Meta.allows(BlockKind::Expert));
        assert!(!ChainId::Dataset.allows(BlockKind::Router));
        assert!(ChainId::Dataset.allows(BlockKind::PolProof));
        for chain in ChainId::ALL {
            assert!(chain.allows(BlockKind::Genesis));
            assert!(chain.allows(BlockKind::Migration));
        }
    }
}
