//! The typed hook through which Proof-of-Learning decides whether an expert block is accepted.
//!
//! `blyan-chain` knows nothing of training or evaluation: a higher crate (`blyan-pol`)
//! implements [`PolAcceptance`] and hands it to [`crate::ChainStore::open_with`]. When the
//! store's config has `proof_of_learning` off, the hook is never called.

use std::fmt;

use blyan_primitives::{BlockHash, ExpertName};

use crate::header::BlockHeader;
use crate::store::{ChainStore, ExpertVersion};

/// An expert block offered for append, as the hook sees it. Everything the store checks without
/// Proof-of-Learning has already passed: signature, hashes, payload, links are valid.
pub struct ExpertCandidate<'a> {
    /// Hash of the candidate block.
    pub hash: BlockHash,
    /// Its header (`meta.expert` is `expert`).
    pub header: &'a BlockHeader,
    /// The expert the block is a new version of.
    pub expert: ExpertName,
    /// The version this block would replace as current, if the expert has one.
    pub base: Option<ExpertVersion>,
    /// The payload bytes (already checked against the header's hash).
    pub payload: &'a [u8],
}

impl fmt::Debug for ExpertCandidate<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpertCandidate")
            .field("hash", &self.hash)
            .field("expert", &self.expert)
            .field("base", &self.base)
            .field("payload_bytes", &self.payload.len())
            .finish_non_exhaustive()
    }
}

/// Why Proof-of-Learning refused a candidate; becomes [`crate::Error::PolRejected`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolRejection {
    /// Human-readable reason, recorded with the refusal.
    pub reason: String,
}

/// Decides whether an expert block may be appended.
///
/// Called by [`ChainStore::append`] before the store's append lock is taken (so a slow
/// evaluation does not stop other appends), and by [`ChainStore::append_reader`] with the lock
/// held. The store re-checks the expert's version under the lock, so a candidate whose base was
/// replaced meanwhile is still refused. The hook may read the store; it must not append to it.
pub trait PolAcceptance: Send + Sync + 'static {
    /// `Ok(())` to accept `candidate`, or the reason it is refused.
    fn accept_expert(
        &self,
        store: &ChainStore,
        candidate: &ExpertCandidate<'_>,
    ) -> std::result::Result<(), PolRejection>;
}
