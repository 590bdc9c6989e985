//! The typed hook through which Proof-of-Learning decides what an appended block does to what
//! the chain serves.
//!
//! `blyan-chain` knows nothing of training, evaluation or votes: a higher crate (`blyan-pol`)
//! implements [`PolAcceptance`] and hands it to [`crate::ChainStore::open_with`]. When the
//! store's config has `proof_of_learning` off, the hook is never called and every block is
//! served as it lands (an expert block becomes its expert's current version at once).
//!
//! With the hook, each block's [`Admission`] says one of three things: it is served at once
//! ([`Admission::Serve`]), it is stored as a *candidate* that is not served
//! ([`Admission::Candidate`]: an expert block does not become its expert's current version, and
//! [`crate::ChainStore::is_candidate`] says so for any kind), or it promotes earlier candidates
//! ([`Admission::Promote`]: in the same write batch as the block, the candidates stop being
//! candidates and each expert block among them becomes its expert's current version). The
//! decision is taken under the store's append lock, from the stored chain only, so every store
//! that appends the same blocks in the same order reaches the same state.

use std::fmt;

use blyan_primitives::BlockHash;

use crate::header::BlockHeader;
use crate::store::{ChainStore, ExpertVersion};

/// A block offered for append, as the hook sees it. Everything the store checks without
/// Proof-of-Learning has already passed: signature, hashes, payload, links are valid.
pub struct OfferedBlock<'a> {
    /// Hash of the block.
    pub hash: BlockHash,
    /// Its header.
    pub header: &'a BlockHeader,
    /// For an expert block, its expert's current version (the version it would replace).
    pub base: Option<ExpertVersion>,
    /// The payload bytes (already checked against the header's hash).
    pub payload: &'a [u8],
}

impl fmt::Debug for OfferedBlock<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OfferedBlock")
            .field("hash", &self.hash)
            .field("kind", &self.header.kind)
            .field("base", &self.base)
            .field("payload_bytes", &self.payload.len())
            .finish_non_exhaustive()
    }
}

/// What appending a block does to what the chain serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Served as it lands: an expert block becomes its expert's current version.
    Serve,
    /// Stored, not served, until a later block promotes it.
    Candidate,
    /// Stored, and the listed candidates become served in the same write batch. The store
    /// refuses the block ([`crate::Error::PromotionInvalid`]) if one of them is not a stored
    /// candidate, or is an expert block whose version is no longer its expert's current + 1.
    Promote(Vec<BlockHash>),
}

/// Why Proof-of-Learning refused a block; becomes [`crate::Error::PolRejected`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolRejection {
    /// A stable snake_case name of the reason (`not_a_validator`, `bond_unpaid`, …).
    pub code: &'static str,
    /// Human-readable reason, recorded with the refusal.
    pub reason: String,
}

/// Decides what each appended block does to what the chain serves.
///
/// Called by [`ChainStore::append`] and [`ChainStore::append_reader`] for every block but
/// genesis, under the store's append lock, after every other check passed. It may read the
/// store; it must not append to it, and must decide from the stored chain and the offered block
/// only, so that every store holding the same chain decides the same.
pub trait PolAcceptance: Send + Sync + 'static {
    /// How `block` is admitted, or the reason it is refused.
    fn admit(
        &self,
        store: &ChainStore,
        block: &OfferedBlock<'_>,
    ) -> std::result::Result<Admission, PolRejection>;
}
