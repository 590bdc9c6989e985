//! Expert nodes: who holds which experts, and calling an expert another node holds.
//!
//! Expert nodes announce the experts they hold; a node that lacks an expert calls a node that
//! has it, load-balanced across holders, retried on another holder when one fails, with results
//! checked. Nodes also sync blocks with each other: headers are gossiped, payloads streamed
//! (libp2p's gossipsub caps messages at 64 KiB). The engine is libp2p, not a home-made network.
//!
//! Status: this crate holds the vocabulary of the network ([`NodeId`], [`ExpertAnnouncement`]).
//! The network itself is not built yet; a node today serves every expert from its own store.
//!
//! Must not depend on: HTTP routes, the ledger.
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![forbid(unsafe_code)]

pub mod transfer;

use blyan_chain::{BlockHash, ExpertName};

/// A node's identity on the network: the hash of its public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 32]);

/// One expert version a node offers to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldExpert {
    /// The expert.
    pub expert: ExpertName,
    /// The exact version (block) held.
    pub block: BlockHash,
}

/// What a node tells the network it can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpertAnnouncement {
    /// Who announces.
    pub node: NodeId,
    /// What it holds.
    pub experts: Vec<HeldExpert>,
}
