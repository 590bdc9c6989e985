//! The network service: joins the node to its peers ([`blyan_p2p::Network`]) with the node's
//! key as its identity, and reacts to every block a peer brings as to one sent to
//! `POST /blocks` ([`Node::block_appended`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use blyan_api_types::{NetworkCounters, NetworkPeers, PeerView};
use blyan_p2p::{Network, NetworkStats, PeerInfo};

use crate::error::BoxError;
use crate::node::{Node, blocking};
use crate::service::{Service, Shutdown};
use crate::{Error, Result};

/// Runs the network for as long as the node runs: listens on `p2p.listen`, joins through
/// `p2p.bootstrap`, syncs the chain with every peer, gossips new blocks, serves payloads.
#[derive(Debug, Default, Clone, Copy)]
pub struct NetworkService;

impl NetworkService {
    async fn start(node: &Node) -> Result<Network> {
        let chain = Arc::clone(node.chain().ok_or(Error::ChainUnavailable)?);
        let config = node.config().p2p.network_config()?;
        let data_dir = node.config().data_dir.clone();
        let key = blocking("reading the node key", move || {
            crate::pol::node_key(&data_dir)
        })
        .await??;
        Network::start(config, &key, chain)
            .await
            .map_err(|error| Error::Network(Box::new(error)))
    }
}

/// File under `data_dir` listing the node's network addresses, one multiaddr per line (each
/// ending in `/p2p/<peer id>`: what another node's `--peer` takes).
pub const P2P_ADDRESSES_FILE: &str = "p2p-addresses.txt";

async fn write_addresses(node: &Node, addresses: &[blyan_p2p::Multiaddr]) {
    let path = node.config().data_dir.join(P2P_ADDRESSES_FILE);
    let text: String = addresses
        .iter()
        .map(|address| format!("{address}\n"))
        .collect();
    if let Err(error) = tokio::fs::write(&path, text).await {
        tracing::warn!(%error, path = %path.display(), "cannot write the network addresses");
    }
}

impl Service for NetworkService {
    fn name(&self) -> &'static str {
        "network"
    }

    async fn run(self, node: Arc<Node>, shutdown: Shutdown) -> std::result::Result<(), BoxError> {
        let mut network = Self::start(&node).await?;
        let handle = network.handle().clone();
        tracing::info!(
            peer = %handle.local_peer(),
            addresses = ?handle.listen_addresses(),
            "joined the network"
        );
        write_addresses(&node, &handle.listen_addresses()).await;
        node.set_network(handle);
        node.set_expert_client(Arc::clone(network.experts())).await;
        let stopping = shutdown.requested();
        tokio::pin!(stopping);
        loop {
            tokio::select! {
                () = &mut stopping => break,
                appended = network.next_appended() => match appended {
                    Some(appended) => {
                        node.block_appended(appended.block, &appended.header, appended.candidate)
                            .await;
                    }
                    None => break,
                },
            }
        }
        network.stop().await;
        Ok(())
    }
}

impl Node {
    /// The node's place in the network and every peer it met (`GET /p2p/peers`); `enabled:
    /// false` and empty lists when the node runs no network.
    pub async fn network_peers(&self) -> Result<NetworkPeers> {
        let Some(network) = self.network() else {
            return Ok(NetworkPeers {
                enabled: false,
                peer_id: None,
                listen: Vec::new(),
                stats: NetworkCounters::default(),
                peers: Vec::new(),
            });
        };
        let peers = network
            .peers()
            .await
            .map_err(|error| Error::Network(Box::new(error)))?;
        Ok(NetworkPeers {
            enabled: true,
            peer_id: Some(network.local_peer().to_string()),
            listen: network
                .listen_addresses()
                .iter()
                .map(ToString::to_string)
                .collect(),
            stats: counters(network.stats()),
            peers: peers.into_iter().map(peer_view).collect(),
        })
    }
}

impl Node {
    /// Who serves which expert, latencies, failures, failovers and hedges
    /// (`GET /p2p/experts`); `None` when the node runs no network.
    pub fn network_experts(&self) -> Option<blyan_p2p::ExpertsSnapshot> {
        self.expert_client().map(|client| client.snapshot())
    }

    /// Peers connected now, without waiting on the network task (`None` without a network).
    pub fn network_peers_now(&self) -> Option<usize> {
        self.network()
            .map(|network| network.stats().connected_peers.load(Ordering::Relaxed) as usize)
    }
}

/// The network's counters as the API reports them.
pub fn counters(stats: &NetworkStats) -> NetworkCounters {
    let read = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    NetworkCounters {
        bytes_in: read(&stats.bytes_in),
        bytes_out: read(&stats.bytes_out),
        headers_announced: read(&stats.headers_announced),
        headers_accepted: read(&stats.headers_accepted),
        headers_rejected: read(&stats.headers_rejected),
        blocks_synced: read(&stats.blocks_synced),
        blocks_refused: read(&stats.blocks_refused),
        payload_bytes_fetched: read(&stats.payload_bytes_fetched),
        bad_ranges: read(&stats.bad_ranges),
        requests_failed: read(&stats.requests_failed),
    }
}

fn peer_view(info: PeerInfo) -> PeerView {
    PeerView {
        peer_id: info.peer.to_string(),
        address: info.address.map(|address| address.to_checksummed()),
        connected: info.connected,
        addresses: info.addresses.iter().map(ToString::to_string).collect(),
        agent: info.agent,
        rtt_ms: info.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
        connected_seconds: info.connected_for.map(|time| time.as_secs_f64()),
        bytes_in: info.bytes_in,
        bytes_out: info.bytes_out,
        requests_ok: info.requests_ok,
        requests_failed: info.requests_failed,
        invalid_headers: info.invalid_headers,
        bad_ranges: info.bad_ranges,
        offences: info.offences,
        banned_seconds: info.banned_for.map(|time| time.as_secs_f64()),
        gossip_score: info.gossip_score,
        refused: info.refused,
    }
}
