//! The network's settings.

use std::time::Duration;

use libp2p::Multiaddr;

use crate::experts::{ExpertOptions, ExpertSelection};

/// Default listen addresses: QUIC and TCP on every interface, port 4801.
pub const DEFAULT_LISTEN: [&str; 2] = ["/ip4/0.0.0.0/udp/4801/quic-v1", "/ip4/0.0.0.0/tcp/4801"];

/// How a node joins the network.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Addresses to listen on (QUIC `/udp/N/quic-v1`, TCP `/tcp/N`; port 0 picks a free one).
    pub listen: Vec<Multiaddr>,
    /// Peers to connect to at start and whenever the node has no peer; an address may end in
    /// `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// How often the node asks each connected peer for its tips (anti-entropy besides gossip).
    pub sync_interval: Duration,
    /// How long a request to a peer may take.
    pub request_timeout: Duration,
    /// How often the node looks for blocks appended locally to announce.
    pub announce_interval: Duration,
    /// How long a peer that misbehaved (bad payload bytes, invalid headers, another network)
    /// is avoided first; doubles with each offence.
    pub ban: Duration,
    /// The experts this node computes and serves to its peers (`p2p.serve_experts`, parsed by
    /// [`ExpertSelection::parse`]); empty serves none.
    pub serve_experts: ExpertSelection,
    /// How experts are announced, called and replicated.
    pub experts: ExpertOptions,
    /// How long a payload download may sit unfinished and untouched in the store's staging
    /// directory before it is discarded (checked every `sync_interval`); a younger one resumes.
    pub stage_idle_max: Duration,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .iter()
                .map(|address| address.parse().expect("the default listen addresses parse"))
                .collect(),
            bootstrap: Vec::new(),
            sync_interval: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            announce_interval: Duration::from_millis(200),
            ban: Duration::from_secs(15),
            serve_experts: ExpertSelection::none(),
            experts: ExpertOptions::default(),
            stage_idle_max: Duration::from_secs(24 * 3600),
        }
    }
}
