//! The network: nodes find each other, gossip block headers, sync their chains and transfer
//! payloads, on rust-libp2p.
//!
//! A node's peer id is derived from its chain key ([`keypair_of`], [`peer_address`]), so a peer
//! id names a chain author. [`Network::start`] runs one task that owns the libp2p swarm (QUIC,
//! and TCP + noise + yamux; identify, Kademlia, gossipsub, request-response, ping) and a syncer:
//!
//! - **Gossip**: every block appended to the local store, by any path, is announced as its
//!   header on the network's headers topic (Proof-of-Learning records on their own topic).
//!   A received header is validated as a header alone (format, signature, work, limits) before
//!   gossipsub forwards it; an invalid one is not forwarded and its sender is penalized
//!   (gossipsub's score and a ban). Payloads never travel over gossip.
//! - **Sync** ([`protocol`]): on connect, periodically, and on a header it lacks, a node asks
//!   the peer for its status (a peer of another genesis is refused: [`NetworkError::GenesisMismatch`]),
//!   walks back from unknown tips and dependencies, and appends what it fetched in dependency
//!   order through the store's full validation (`ChainStore::append`, Proof-of-Learning gate
//!   included). Each block appended this way is reported ([`Network::next_appended`]) so the
//!   node can react as to `POST /blocks`.
//! - **Payloads**: fetched from the peers that hold them.
//! - **Remote experts** ([`experts`]): a node serves the experts of `serve_experts`, announced
//!   as Kademlia provider records of their block hashes, over one long-lived stream per peer;
//!   its [`ExpertClient`] (a `blyan_moe::RemoteExperts`) computes the other experts on their
//!   holders, with deadlines, hedging, failover and replication of hot experts.
//!
//! Start reading at [`Network`] and [`NetworkHandle`].
//!
//! Must not depend on: HTTP routes, the ledger.
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![forbid(unsafe_code)]

// A dependency only so its build script's `DEP_TCH_LIBTORCH_LIB` reaches ours, which embeds
// libtorch's directory as an rpath (build.rs).
use torch_sys as _;

mod config;
mod error;
pub mod experts;
mod identity;
mod network;
mod payload;
mod peers;
pub mod protocol;
mod serve;
mod sync;
pub mod transfer;

pub use config::{DEFAULT_LISTEN, NetworkConfig};
pub use error::{GenesisMismatch, NetworkError, Result};
pub use experts::{ExpertClient, ExpertOptions, ExpertSelection, ExpertsSnapshot};
pub use identity::{address_of_public, keypair_of, peer_address};
pub use libp2p::{Multiaddr, PeerId};
pub use network::{
    APPENDED_QUEUED_MAX, GOSSIP_MESSAGE_BYTES_MAX, Network, NetworkHandle, NetworkStats,
};
pub use payload::PAYLOAD_IN_MEMORY_BYTES_MAX;
pub use peers::{BAN_MAX, Offence, PeerInfo};
pub use sync::{Appended, SYNC_HEADERS_MAX};
