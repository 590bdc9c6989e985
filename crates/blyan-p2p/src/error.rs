//! The network's errors.

use blyan_chain::BlockHash;
use libp2p::PeerId;

/// What can go wrong on the network.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// The node key cannot be a libp2p identity.
    #[error("the node key is not a usable network identity: {reason}")]
    Identity {
        /// Why.
        reason: String,
    },
    /// A listen or bootstrap address that does not parse or cannot be used.
    #[error("network address {address:?}: {reason}")]
    Address {
        /// The address as given.
        address: String,
        /// Why it is refused.
        reason: String,
    },
    /// The transport or the swarm could not be built.
    #[error("cannot start the network: {reason}")]
    Start {
        /// Why.
        reason: String,
    },
    /// The network task has stopped (the node is shutting down).
    #[error("the network has stopped")]
    Stopped,
    /// A request to a peer failed (dial failure, timeout, connection closed, bad encoding).
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// The peer.
        peer: PeerId,
        /// What failed.
        reason: String,
    },
    /// A peer is on another network: its genesis blocks differ from ours.
    #[error("{0}")]
    GenesisMismatch(Box<GenesisMismatch>),
    /// A peer broke the protocol (a header whose hash is not the one asked for, a chain of
    /// ancestors that does not link, a status without every chain).
    #[error("peer {peer} broke the protocol: {reason}")]
    Protocol {
        /// The peer.
        peer: PeerId,
        /// What it did.
        reason: String,
    },
    /// A payload could not be fetched from any holder.
    #[error("payload of block {block} could not be fetched: {reason}")]
    Fetch {
        /// The block.
        block: BlockHash,
        /// Why (the last failure of each holder tried).
        reason: String,
    },
    /// A remote expert's holder refused a call.
    #[error("peer {peer} refused the expert call: {refusal}")]
    ExpertRefused {
        /// The holder.
        peer: PeerId,
        /// Why.
        refusal: Box<crate::experts::ExpertRefusal>,
    },
    /// A remote expert could not be computed by any holder.
    #[error("remote expert {expert}: {reason}")]
    ExpertUnavailable {
        /// The expert.
        expert: blyan_chain::ExpertName,
        /// Why (each holder's failure).
        reason: String,
    },
    /// The chain store failed (not a refused block: the store itself).
    #[error("chain store: {0}")]
    Chain(#[from] blyan_chain::Error),
}

/// A peer whose genesis blocks differ from ours: it is on another network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer {peer} is on another network: its genesis {theirs} differs from ours {ours}")]
pub struct GenesisMismatch {
    /// The peer.
    pub peer: PeerId,
    /// Our meta-chain genesis block.
    pub ours: BlockHash,
    /// Theirs.
    pub theirs: BlockHash,
}

/// The network's result type.
pub type Result<T, E = NetworkError> = std::result::Result<T, E>;
