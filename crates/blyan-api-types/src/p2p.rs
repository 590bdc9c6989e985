//! `GET /p2p/peers`: the node's place in the network and every peer it has met.

use serde::{Deserialize, Serialize};

/// Body of `GET /p2p/peers`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NetworkPeers {
    /// Whether the node runs the network (`p2p.enabled`); everything below is empty when not.
    pub enabled: bool,
    /// This node's peer id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
    /// The multiaddrs it listens on, each ending in `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// Counters since the network started.
    pub stats: NetworkCounters,
    /// Every peer met, connected ones first.
    pub peers: Vec<PeerView>,
}

/// Counters of the network since it started.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NetworkCounters {
    /// Bytes received in sync and payload responses.
    pub bytes_in: u64,
    /// Bytes sent in answers to peers.
    pub bytes_out: u64,
    /// Headers this node announced by gossip.
    pub headers_announced: u64,
    /// Gossiped headers accepted and forwarded.
    pub headers_accepted: u64,
    /// Gossiped headers rejected (not forwarded; sender penalized).
    pub headers_rejected: u64,
    /// Blocks appended from peers.
    pub blocks_synced: u64,
    /// Blocks from peers the store refused.
    pub blocks_refused: u64,
    /// Verified payload bytes fetched.
    pub payload_bytes_fetched: u64,
    /// Payload ranges that failed verification.
    pub bad_ranges: u64,
    /// Requests to peers that failed.
    pub requests_failed: u64,
}

/// One peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerView {
    /// Its peer id.
    pub peer_id: String,
    /// The chain author address its peer id carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Whether a connection is open.
    pub connected: bool,
    /// Addresses it is known at.
    pub addresses: Vec<String>,
    /// Its agent string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Last measured round trip, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Seconds connected (this connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_seconds: Option<f64>,
    /// Bytes received from it.
    pub bytes_in: u64,
    /// Bytes sent to it.
    pub bytes_out: u64,
    /// Requests to it answered.
    pub requests_ok: u64,
    /// Requests to it that failed.
    pub requests_failed: u64,
    /// Invalid headers it gossiped.
    pub invalid_headers: u64,
    /// Payload ranges from it that failed verification.
    pub bad_ranges: u64,
    /// Offences in all.
    pub offences: u32,
    /// Seconds it stays banned, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banned_seconds: Option<f64>,
    /// Gossipsub's score of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gossip_score: Option<f64>,
    /// Why it was refused (another network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}
