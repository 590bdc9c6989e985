//! Remote experts: a node computes the experts it serves (`p2p.serve_experts`, see
//! [`ExpertSelection`]) for its peers, and asks peers for the experts it does not compute.
//!
//! - **Announcement**: each served expert's current block hash is a Kademlia provider record
//!   (so an announcement names exact weights), re-announced every
//!   [`ExpertOptions::announce_interval`] and at once when an expert is replicated.
//! - **Calls** ([`wire`]): one long-lived `libp2p-stream` stream per peer (no per-call protocol
//!   negotiation), framed requests with ids multiplexed on it, raw little-endian float32 bytes.
//!   `libp2p-stream` is alpha with a known yamux deadlock (rust-libp2p #5410): expert peers
//!   should connect over QUIC, which is what a node dials first when given both addresses.
//! - **Serving** ([`ExpertServer`]): the expert's forward pass with the node's own weights,
//!   loaded by block hash from its store, on blocking threads; a block it does not serve is
//!   refused ([`ExpertRefusal::NotServed`]).
//! - **Calling** ([`ExpertClient`], a `blyan_moe::RemoteExperts`): one call per layer fanned out
//!   to the holders at once, holders by measured latency, per-call deadlines, hedging past p95,
//!   failover, counters ([`ExpertsSnapshot`] for `GET /p2p/experts`), and replication of hot
//!   experts ([`ExpertOptions::replicate_calls_per_minute`]).

mod client;
mod link;
mod server;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use blyan_chain::ChainStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use blyan_moe::{EXPERT_PATTERNS_MAX, ExpertPattern, ExpertPatternError, ExpertSelection};
pub use client::ExpertClient;
pub use server::{CALLS_IN_FLIGHT_PER_STREAM_MAX, ExpertServer};
pub use wire::{EXPERT_FRAME_BYTES_MAX, EXPERT_PROTOCOL, ExpertRefusal};

use crate::network::NetworkHandle;

/// How a node announces, calls and replicates experts.
#[derive(Debug, Clone)]
pub struct ExpertOptions {
    /// How often served experts are announced again (hivemind announces every 30 s).
    pub announce_interval: Duration,
    /// How long a provider lookup is trusted before it is made again.
    pub providers_ttl: Duration,
    /// Deadline of a call to a holder without a latency history, and the longest deadline.
    pub call_timeout: Duration,
    /// The shortest deadline derived from a holder's latencies.
    pub deadline_min: Duration,
    /// The earliest a hedged second request is sent.
    pub hedge_min: Duration,
    /// How long a holder that failed a call is tried last; doubles with each failure.
    pub failure_avoid: Duration,
    /// Remote calls per minute of one expert past which the node computes and serves it
    /// itself (when it holds its payload); 0 never replicates.
    pub replicate_calls_per_minute: u32,
}

impl Default for ExpertOptions {
    fn default() -> Self {
        Self {
            announce_interval: Duration::from_secs(30),
            providers_ttl: Duration::from_secs(60),
            call_timeout: Duration::from_secs(10),
            deadline_min: Duration::from_millis(500),
            hedge_min: Duration::from_millis(5),
            failure_avoid: Duration::from_secs(15),
            replicate_calls_per_minute: 0,
        }
    }
}

/// One expert this node serves.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ServedExpert {
    /// `layer{L}.expert{E}`.
    pub expert: String,
    /// The block served (its current version).
    pub block: String,
    /// Calls answered.
    pub calls_answered: u64,
}

/// The holders found for one expert block this node called.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RemoteExpertView {
    /// The block.
    pub block: String,
    /// The peers announcing it.
    pub holders: Vec<String>,
    /// How long ago they were looked up.
    pub looked_up_ms_ago: u64,
}

/// Calls to one holder.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExpertPeerView {
    /// The peer.
    pub peer: String,
    /// Calls made to it.
    pub calls: u64,
    /// Calls that failed (refusal, deadline, broken stream).
    pub failures: u64,
    /// Mean latency of its recent answered calls.
    pub latency_ms_mean: Option<f64>,
    /// Their 95th percentile (after a few calls).
    pub latency_ms_p95: Option<f64>,
    /// How much longer it is tried last after a failure.
    pub avoided_for_ms: Option<u64>,
}

/// Who serves what, latencies and failures: what `GET /p2p/experts` shows.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExpertsSnapshot {
    /// This node.
    pub local_peer: String,
    /// The experts this node serves.
    pub serving: Vec<ServedExpert>,
    /// Calls this node refused.
    pub refused: u64,
    /// Experts replicated here because they were hot.
    pub replicated: Vec<String>,
    /// Holders found for the blocks this node called.
    pub remote: Vec<RemoteExpertView>,
    /// Each holder called.
    pub peers: Vec<ExpertPeerView>,
    /// Layers computed remotely (one call each, fanned out).
    pub layer_calls: u64,
    /// Expert calls answered.
    pub calls: u64,
    /// Expert calls that failed at one holder.
    pub failures: u64,
    /// Calls sent to another holder after a failure.
    pub failovers: u64,
    /// Hedged second requests sent.
    pub hedges: u64,
    /// Seconds spent in answered calls, in total.
    pub latency_seconds_total: f64,
}

/// Starts serving and announcing: accepts expert streams, announces served blocks. Returns the
/// client and the tasks (aborted when the network stops).
pub(crate) fn start(
    network: NetworkHandle,
    mut control: libp2p_stream::Control,
    chain: Arc<ChainStore>,
    selection: ExpertSelection,
    options: ExpertOptions,
    stopped: watch::Receiver<bool>,
) -> crate::Result<(Arc<ExpertClient>, Vec<JoinHandle<()>>)> {
    let incoming = control
        .accept(EXPERT_PROTOCOL)
        .map_err(|error| crate::NetworkError::Start {
            reason: error.to_string(),
        })?;
    let server = Arc::new(ExpertServer::new(Arc::clone(&chain), selection));
    let client = Arc::new(ExpertClient::new(
        network.clone(),
        control,
        chain,
        Arc::clone(&server),
        tokio::runtime::Handle::current(),
        options.clone(),
    ));
    let tasks = vec![
        tokio::spawn(server::accept(
            Arc::clone(&server),
            incoming,
            stopped.clone(),
        )),
        tokio::spawn(announce(
            network,
            Arc::clone(&client),
            options.announce_interval,
            stopped,
        )),
    ];
    Ok((client, tasks))
}

/// Announces the served blocks every `interval`, and at once after a replication.
async fn announce(
    network: NetworkHandle,
    client: Arc<ExpertClient>,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = client.replicated_notify().notified() => {}
            _ = stopped.changed() => return,
        }
        let server = Arc::clone(client.server());
        let blocks = match tokio::task::spawn_blocking(move || server.refresh()).await {
            Ok(Ok(blocks)) => blocks,
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot read the experts to serve");
                continue;
            }
            Err(error) => {
                tracing::error!(%error, "the expert refresh failed");
                continue;
            }
        };
        for block in blocks {
            if network.start_providing(block).await.is_err() {
                return;
            }
        }
    }
}
