//! The swarm: one task owns the libp2p [`Swarm`] and everything that touches it; the rest of
//! the node talks to it through a [`NetworkHandle`].
//!
//! Behaviours: identify (agent, listen addresses), Kademlia (`/blyan/kad/1`, discovery of the
//! other peers of a network), gossipsub (block headers and Proof-of-Learning records, validated
//! before they are forwarded), two request-response protocols ([`crate::protocol`]: chain sync
//! and payload ranges) and ping (round trips). Transports: QUIC, and TCP + noise + yamux.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use blyan_chain::{AuthorKey, BlockHash, BlockHeader, BlockKind, ChainId, ChainStore};
use futures::StreamExt as _;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageAuthenticity, MessageId};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad, noise, ping, tcp, yamux};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::NetworkConfig;
use crate::error::{NetworkError, Result};
use crate::experts::ExpertClient;
use crate::identity::keypair_of;
use crate::peers::{Offence, PeerInfo, PeerTable};
use crate::protocol::{
    BincodeCodec, KAD_PROTOCOL, PAYLOAD_PROTOCOL, PROTOCOL_VERSION, PayloadCodec, PayloadRequest,
    PayloadResponse, SYNC_PROTOCOL, SYNC_REQUEST_BYTES_MAX, SYNC_RESPONSE_BYTES_MAX, SyncRequest,
    SyncResponse,
};
use crate::serve::Server;
use crate::sync::{Appended, Syncer, Trigger};

/// Largest gossip message: a header (libp2p's default cap is 64 KiB; headers are ≤ 2 KiB).
pub const GOSSIP_MESSAGE_BYTES_MAX: usize = 64 * 1024;
/// Batches of providers queued for one lookup at most (more are dropped).
const PROVIDER_BATCHES_QUEUED_MAX: usize = 64;
/// Commands queued to the swarm task at most.
const COMMANDS_QUEUED_MAX: usize = 1024;
/// Sync triggers queued at most; more are dropped (the periodic sync catches up).
const TRIGGERS_QUEUED_MAX: usize = 1024;
/// Appended-block events queued for the node at most.
pub const APPENDED_QUEUED_MAX: usize = 1024;
/// Blocks announced per tick at most.
const ANNOUNCED_PER_TICK_MAX: usize = 256;
/// Connections the node opens to peers it discovers, at most.
const DISCOVERED_DIALS_MAX: usize = 50;
/// How often a node without peers dials its bootstrap addresses again.
const BOOTSTRAP_RETRY: Duration = Duration::from_secs(3);

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    sync: request_response::Behaviour<BincodeCodec<SyncRequest, SyncResponse>>,
    payload: request_response::Behaviour<PayloadCodec>,
    ping: ping::Behaviour,
    // Remote experts: one long-lived stream per peer (`crate::experts`).
    experts: libp2p_stream::Behaviour,
}

/// The gossip topics of one network, named after its meta-chain genesis block so that two
/// networks never mix.
#[derive(Debug, Clone)]
pub(crate) struct Topics {
    pub(crate) headers: IdentTopic,
    pub(crate) pol: IdentTopic,
}

impl Topics {
    fn new(genesis: BlockHash) -> Self {
        Self {
            headers: IdentTopic::new(crate::protocol::headers_topic(genesis)),
            pol: IdentTopic::new(crate::protocol::pol_topic(genesis)),
        }
    }

    fn for_kind(&self, kind: BlockKind) -> &IdentTopic {
        if kind == BlockKind::PolProof {
            &self.pol
        } else {
            &self.headers
        }
    }
}

/// Counters since the network started, for `/metrics`.
#[derive(Debug, Default)]
pub struct NetworkStats {
    /// Peers connected now.
    pub connected_peers: AtomicU64,
    /// Bytes received in sync and payload responses.
    pub bytes_in: AtomicU64,
    /// Bytes sent in answers to peers' requests.
    pub bytes_out: AtomicU64,
    /// Headers announced by gossip.
    pub headers_announced: AtomicU64,
    /// Gossiped headers accepted (and forwarded).
    pub headers_accepted: AtomicU64,
    /// Gossiped headers rejected (not forwarded, sender penalized).
    pub headers_rejected: AtomicU64,
    /// Blocks appended from peers.
    pub blocks_synced: AtomicU64,
    /// Blocks a peer offered that the store refused.
    pub blocks_refused: AtomicU64,
    /// Payload bytes fetched from peers (verified).
    pub payload_bytes_fetched: AtomicU64,
    /// Payload ranges that failed verification.
    pub bad_ranges: AtomicU64,
    /// Requests to peers that failed.
    pub requests_failed: AtomicU64,
}

impl NetworkStats {
    pub(crate) fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }
}

enum Command {
    Sync {
        peer: PeerId,
        request: SyncRequest,
        reply: oneshot::Sender<Result<SyncResponse>>,
    },
    Payload {
        peer: PeerId,
        request: PayloadRequest,
        reply: oneshot::Sender<Result<PayloadResponse>>,
    },
    RespondSync {
        peer: PeerId,
        channel: ResponseChannel<SyncResponse>,
        response: SyncResponse,
        bytes: u64,
    },
    RespondPayload {
        peer: PeerId,
        channel: ResponseChannel<PayloadResponse>,
        response: PayloadResponse,
        bytes: u64,
    },
    Dial(Multiaddr),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Connected(oneshot::Sender<Vec<PeerId>>),
    Penalize {
        peer: PeerId,
        offence: Offence,
        reason: String,
    },
    // Remote experts: announce a served expert block, find its holders.
    StartProviding(BlockHash),
    GetProviders {
        block: BlockHash,
        found: mpsc::Sender<Vec<PeerId>>,
    },
}

/// How the rest of the node reaches the network. Cheap to clone.
#[derive(Clone)]
pub struct NetworkHandle {
    commands: mpsc::Sender<Command>,
    local_peer: PeerId,
    listening: watch::Receiver<Vec<Multiaddr>>,
    stats: Arc<NetworkStats>,
}

impl std::fmt::Debug for NetworkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkHandle")
            .field("local_peer", &self.local_peer)
            .finish_non_exhaustive()
    }
}

impl NetworkHandle {
    /// This node's peer id.
    pub fn local_peer(&self) -> PeerId {
        self.local_peer
    }

    /// The addresses the node listens on now, each ending in `/p2p/<peer id>` (what another
    /// node's `--peer` takes).
    pub fn listen_addresses(&self) -> Vec<Multiaddr> {
        self.listening.borrow().clone()
    }

    /// Counters since the network started.
    pub fn stats(&self) -> &NetworkStats {
        &self.stats
    }

    async fn send(&self, command: Command) -> Result<()> {
        self.commands
            .send(command)
            .await
            .map_err(|_| NetworkError::Stopped)
    }

    /// Every peer the node has met.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Peers(reply)).await?;
        answer.await.map_err(|_| NetworkError::Stopped)
    }

    /// The peers connected now.
    pub async fn connected(&self) -> Result<Vec<PeerId>> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Connected(reply)).await?;
        answer.await.map_err(|_| NetworkError::Stopped)
    }

    /// Dials `address` (a bootstrap peer, a peer added by hand).
    pub async fn dial(&self, address: Multiaddr) -> Result<()> {
        self.send(Command::Dial(address)).await
    }

    /// Sends a sync request to `peer` and waits for its answer.
    pub async fn sync_request(&self, peer: PeerId, request: SyncRequest) -> Result<SyncResponse> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Sync {
            peer,
            request,
            reply,
        })
        .await?;
        answer.await.map_err(|_| NetworkError::Stopped)?
    }

    /// Sends a payload request to `peer` and waits for its answer.
    pub async fn payload_request(
        &self,
        peer: PeerId,
        request: PayloadRequest,
    ) -> Result<PayloadResponse> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Payload {
            peer,
            request,
            reply,
        })
        .await?;
        answer.await.map_err(|_| NetworkError::Stopped)?
    }

    /// Announces that this node serves expert block `block` (a Kademlia provider record).
    pub async fn start_providing(&self, block: BlockHash) -> Result<()> {
        self.send(Command::StartProviding(block)).await
    }

    /// The peers announcing expert block `block` (a Kademlia provider lookup): those found
    /// until the lookup ends, or until `grace` after the first were found (a lookup waits for
    /// every peer it asked, a dead one included; the first answers carry the holders).
    pub async fn get_providers(&self, block: BlockHash, grace: Duration) -> Result<Vec<PeerId>> {
        let (found, mut answers) = mpsc::channel(PROVIDER_BATCHES_QUEUED_MAX);
        self.send(Command::GetProviders { block, found }).await?;
        let mut providers: Vec<PeerId> = Vec::new();
        let mut until: Option<tokio::time::Instant> = None;
        loop {
            let batch = match until {
                Some(until) => match tokio::time::timeout_at(until, answers.recv()).await {
                    Ok(batch) => batch,
                    Err(_) => break,
                },
                None => answers.recv().await,
            };
            let Some(batch) = batch else { break };
            for peer in batch {
                if !providers.contains(&peer) {
                    providers.push(peer);
                }
            }
            if until.is_none() && !providers.is_empty() {
                until = Some(tokio::time::Instant::now() + grace);
            }
        }
        Ok(providers)
    }

    /// Records that `peer` misbehaved: it is banned (disconnected, refused) for a while.
    pub async fn penalize(&self, peer: PeerId, offence: Offence, reason: String) {
        let _ = self
            .send(Command::Penalize {
                peer,
                offence,
                reason,
            })
            .await;
    }
}

/// A running network: the swarm task and the syncer, until [`Network::stop`].
pub struct Network {
    handle: NetworkHandle,
    experts: Arc<ExpertClient>,
    expert_tasks: Vec<JoinHandle<()>>,
    appended: mpsc::Receiver<Appended>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl Network {
    /// Starts the network for `chain` with the identity of `key`: listens on
    /// `config.listen` (returns once every address is bound, so
    /// [`NetworkHandle::listen_addresses`] is complete), dials the bootstrap peers, and syncs
    /// with every peer it connects to. Must run inside a tokio runtime.
    pub async fn start(
        config: NetworkConfig,
        key: &AuthorKey,
        chain: Arc<ChainStore>,
    ) -> Result<Self> {
        let keypair = keypair_of(key)?;
        let local_peer = keypair.public().to_peer_id();
        let genesis = chain.validator().genesis_hash(ChainId::Meta);
        let topics = Topics::new(genesis);
        let start_error = |reason: String| NetworkError::Start { reason };
        let request_timeout = config.request_timeout;
        let behaviour_topics = topics.clone();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|error| start_error(error.to_string()))?
            .with_quic()
            .with_behaviour(|key| build_behaviour(key, &behaviour_topics, request_timeout))
            .map_err(|error| start_error(error.to_string()))?
            .with_swarm_config(|swarm| swarm.with_idle_connection_timeout(Duration::from_secs(300)))
            .build();
        for address in &config.listen {
            swarm
                .listen_on(address.clone())
                .map_err(|error| NetworkError::Address {
                    address: address.to_string(),
                    reason: error.to_string(),
                })?;
        }
        // Wait until every listener is bound so the addresses are known (port 0 resolved).
        let mut bound: Vec<Multiaddr> = Vec::new();
        while bound.len() < config.listen.len() {
            match tokio::time::timeout(Duration::from_secs(10), swarm.select_next_some()).await {
                Ok(SwarmEvent::NewListenAddr { address, .. }) => bound.push(address),
                Ok(SwarmEvent::ListenerError { error, .. }) => {
                    return Err(start_error(format!("listener failed: {error}")));
                }
                Ok(SwarmEvent::ListenerClosed { reason, .. }) => {
                    return Err(start_error(format!("listener closed: {reason:?}")));
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(start_error(
                        "listen addresses were not bound within 10 s".into(),
                    ));
                }
            }
        }
        let with_peer = |address: &Multiaddr| {
            address
                .clone()
                .with(libp2p::multiaddr::Protocol::P2p(local_peer))
        };
        let (listening_tx, listening) = watch::channel(bound.iter().map(with_peer).collect());
        tracing::info!(peer = %local_peer, addresses = ?bound, "network listening");

        let (commands, command_rx) = mpsc::channel(COMMANDS_QUEUED_MAX);
        let (triggers, trigger_rx) = mpsc::channel(TRIGGERS_QUEUED_MAX);
        let (appended_tx, appended) = mpsc::channel(APPENDED_QUEUED_MAX);
        let (stop, stopped) = watch::channel(false);
        let stats = Arc::new(NetworkStats::default());
        let handle = NetworkHandle {
            commands,
            local_peer,
            listening,
            stats: Arc::clone(&stats),
        };
        let announce_from = chain.next_sequence()?;
        let server = Server::new(Arc::clone(&chain));
        for address in &config.bootstrap {
            if let Err(error) = swarm.dial(address.clone()) {
                tracing::warn!(%address, %error, "cannot dial a bootstrap peer");
            }
        }
        let swarm_task = SwarmTask {
            swarm,
            config: config.clone(),
            chain: Arc::clone(&chain),
            topics,
            local_peer,
            peers: PeerTable::new(config.ban),
            pending_sync: HashMap::new(),
            pending_payload: HashMap::new(),
            commands: handle.commands.clone(),
            triggers,
            announce_from,
            listening: listening_tx,
            server,
            stats: Arc::clone(&stats),
            pending_providers: HashMap::new(),
        };
        // Remote experts: serve, announce, and call through one stream per peer.
        let control = swarm_task.swarm.behaviour().experts.new_control();
        let (experts, expert_tasks) = crate::experts::start(
            handle.clone(),
            control,
            Arc::clone(&chain),
            config.serve_experts.clone(),
            config.experts.clone(),
            stopped.clone(),
        )?;
        let syncer = Syncer::new(handle.clone(), Arc::clone(&chain), appended_tx);
        let tasks = vec![
            tokio::spawn(swarm_task.run(command_rx, stopped.clone())),
            tokio::spawn(syncer.run(trigger_rx, stopped)),
        ];
        Ok(Self {
            handle,
            experts,
            expert_tasks,
            appended,
            stop,
            tasks,
        })
    }

    /// The handle to this network.
    pub fn handle(&self) -> &NetworkHandle {
        &self.handle
    }

    /// The client of remote experts: install it on the model
    /// (`Generator::set_remote_experts(Some(client))`) to compute the experts this node does
    /// not serve on the peers that do; its [`ExpertClient::snapshot`] is `GET /p2p/experts`.
    pub fn experts(&self) -> &Arc<ExpertClient> {
        &self.experts
    }

    /// The next block appended from a peer (for the node to react: a new model, a new expert
    /// version). `None` once the network has stopped.
    pub async fn next_appended(&mut self) -> Option<Appended> {
        self.appended.recv().await
    }

    /// Stops the swarm and the syncer and waits for them.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for task in &self.expert_tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

fn encoded_bytes(response: &PayloadResponse) -> u64 {
    match &response.0 {
        crate::transfer::RangeResponse::Encoded(bytes) => bytes.len() as u64,
        _ => 0,
    }
}

fn build_behaviour(
    key: &libp2p::identity::Keypair,
    topics: &Topics,
    request_timeout: Duration,
) -> std::result::Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let peer = key.public().to_peer_id();
    let identify = identify::Behaviour::new(
        identify::Config::new(PROTOCOL_VERSION.to_owned(), key.public())
            .with_agent_version(format!("blyan-node/{}", env!("CARGO_PKG_VERSION"))),
    );
    let mut kad = kad::Behaviour::with_config(
        peer,
        kad::store::MemoryStore::new(peer),
        kad::Config::new(KAD_PROTOCOL),
    );
    kad.set_mode(Some(kad::Mode::Server));
    let gossip_config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(GOSSIP_MESSAGE_BYTES_MAX)
        .heartbeat_interval(Duration::from_millis(500))
        // The same header announced by two nodes is one message.
        .message_id_fn(|message: &gossipsub::Message| {
            MessageId::from(blake3::hash(&message.data).as_bytes()[..20].to_vec())
        })
        .build()?;
    let mut gossipsub =
        gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), gossip_config)?;
    let mut score = gossipsub::PeerScoreParams::default();
    for topic in [&topics.headers, &topics.pol] {
        score.topics.insert(
            topic.hash(),
            gossipsub::TopicScoreParams {
                // Each invalid header costs its sender; the penalty decays slowly.
                invalid_message_deliveries_weight: -100.0,
                invalid_message_deliveries_decay: 0.9,
                ..gossipsub::TopicScoreParams::default()
            },
        );
    }
    gossipsub.with_peer_score(score, gossipsub::PeerScoreThresholds::default())?;
    gossipsub.subscribe(&topics.headers)?;
    gossipsub.subscribe(&topics.pol)?;
    let request_config = request_response::Config::default().with_request_timeout(request_timeout);
    let sync = request_response::Behaviour::with_codec(
        BincodeCodec::new(SYNC_REQUEST_BYTES_MAX, SYNC_RESPONSE_BYTES_MAX),
        [(SYNC_PROTOCOL, ProtocolSupport::Full)],
        request_config.clone(),
    );
    let payload = request_response::Behaviour::with_codec(
        PayloadCodec,
        [(PAYLOAD_PROTOCOL, ProtocolSupport::Full)],
        request_config,
    );
    Ok(Behaviour {
        identify,
        kad,
        gossipsub,
        sync,
        payload,
        ping: ping::Behaviour::new(ping::Config::new()),
        experts: libp2p_stream::Behaviour::new(),
    })
}

struct SwarmTask {
    swarm: Swarm<Behaviour>,
    config: NetworkConfig,
    chain: Arc<ChainStore>,
    topics: Topics,
    local_peer: PeerId,
    peers: PeerTable,
    pending_sync: HashMap<OutboundRequestId, (PeerId, oneshot::Sender<Result<SyncResponse>>)>,
    pending_payload: HashMap<OutboundRequestId, (PeerId, oneshot::Sender<Result<PayloadResponse>>)>,
    commands: mpsc::Sender<Command>,
    triggers: mpsc::Sender<Trigger>,
    announce_from: u64,
    listening: watch::Sender<Vec<Multiaddr>>,
    server: Server,
    stats: Arc<NetworkStats>,
    // Remote experts: provider lookups in flight, with the holders found so far.
    pending_providers: HashMap<kad::QueryId, mpsc::Sender<Vec<PeerId>>>,
}

impl SwarmTask {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, mut stop: watch::Receiver<bool>) {
        let mut announce = tokio::time::interval(self.config.announce_interval);
        let mut resync = tokio::time::interval(self.config.sync_interval);
        let mut bootstrap = tokio::time::interval(BOOTSTRAP_RETRY);
        announce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                Some(command) = commands.recv() => self.on_command(command),
                _ = announce.tick() => self.announce(),
                _ = resync.tick() => {
                    for peer in self.peers.connected_peers() {
                        let _ = self.triggers.try_send(Trigger::Peer(peer));
                    }
                    self.prune_stages();
                }
                _ = bootstrap.tick() => self.redial_bootstrap(),
                _ = stop.changed() => break,
            }
        }
        tracing::info!("network stopped");
    }

    /// Discards payload downloads abandoned for `stage_idle_max`, off the swarm's task.
    fn prune_stages(&self) {
        let (chain, idle) = (Arc::clone(&self.chain), self.config.stage_idle_max);
        tokio::task::spawn_blocking(move || {
            if let Err(error) = chain.prune_stages(idle) {
                tracing::warn!(%error, "pruning abandoned payload stages failed");
            }
        });
    }

    fn redial_bootstrap(&mut self) {
        if !self.peers.connected_peers().is_empty() {
            return;
        }
        for address in &self.config.bootstrap {
            if let Err(error) = self.swarm.dial(address.clone()) {
                tracing::debug!(%address, %error, "bootstrap dial failed");
            }
        }
    }

    /// Announces the headers of blocks appended since the last look, whoever appended them.
    fn announce(&mut self) {
        let appended = match self
            .chain
            .appended_since(self.announce_from, ANNOUNCED_PER_TICK_MAX)
        {
            Ok(appended) => appended,
            Err(error) => {
                tracing::error!(%error, "cannot read the blocks to announce");
                return;
            }
        };
        for (seq, block) in appended {
            self.announce_from = seq + 1;
            let header = match self.chain.header(&block) {
                Ok(Some(header)) => header,
                Ok(None) => continue,
                Err(error) => {
                    tracing::error!(%error, %block, "cannot read a header to announce");
                    continue;
                }
            };
            let topic = self.topics.for_kind(header.kind).clone();
            match self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(topic, header.encode())
            {
                Ok(_) => {
                    NetworkStats::add(&self.stats.headers_announced, 1);
                    tracing::debug!(%block, "header announced");
                }
                // Already seen from a peer, or nobody to tell yet: peers sync on connect.
                Err(gossipsub::PublishError::Duplicate)
                | Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
                Err(error) => tracing::warn!(%error, %block, "cannot announce a header"),
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Sync {
                peer,
                request,
                reply,
            } => {
                if self.peers.is_banned(&peer) {
                    let _ = reply.send(Err(NetworkError::Request {
                        peer,
                        reason: "the peer is banned".into(),
                    }));
                    return;
                }
                self.add_known_addresses(&peer);
                let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
                self.pending_sync.insert(id, (peer, reply));
            }
            Command::Payload {
                peer,
                request,
                reply,
            } => {
                if self.peers.is_banned(&peer) {
                    let _ = reply.send(Err(NetworkError::Request {
                        peer,
                        reason: "the peer is banned".into(),
                    }));
                    return;
                }
                self.add_known_addresses(&peer);
                let id = self
                    .swarm
                    .behaviour_mut()
                    .payload
                    .send_request(&peer, request);
                self.pending_payload.insert(id, (peer, reply));
            }
            Command::RespondSync {
                peer,
                channel,
                response,
                bytes,
            } => {
                if self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response)
                    .is_ok()
                {
                    self.served(peer, bytes);
                }
            }
            Command::RespondPayload {
                peer,
                channel,
                response,
                bytes,
            } => {
                if self
                    .swarm
                    .behaviour_mut()
                    .payload
                    .send_response(channel, response)
                    .is_ok()
                {
                    self.served(peer, bytes);
                }
            }
            Command::Dial(address) => {
                if let Err(error) = self.swarm.dial(address.clone()) {
                    tracing::warn!(%address, %error, "dial failed");
                }
            }
            Command::Peers(reply) => {
                let gossip = &self.swarm.behaviour().gossipsub;
                let _ = reply.send(self.peers.snapshot(|peer| gossip.peer_score(peer)));
            }
            Command::Connected(reply) => {
                let _ = reply.send(self.peers.connected_peers());
            }
            Command::Penalize {
                peer,
                offence,
                reason,
            } => self.penalize(peer, offence, &reason),
            Command::StartProviding(block) => {
                let key = kad::RecordKey::new(&block.0);
                if let Err(error) = self.swarm.behaviour_mut().kad.start_providing(key) {
                    tracing::warn!(%block, %error, "cannot announce an expert block");
                }
            }
            Command::GetProviders { block, found } => {
                let key = kad::RecordKey::new(&block.0);
                let id = self.swarm.behaviour_mut().kad.get_providers(key);
                self.pending_providers.insert(id, found);
            }
        }
    }

    /// Remote experts: hands the holders a provider lookup finds to its caller as they come;
    /// the lookup's end closes the channel.
    fn on_providers(
        &mut self,
        id: kad::QueryId,
        result: kad::GetProvidersResult,
        step: &kad::ProgressStep,
    ) {
        if let (Some(found), Ok(kad::GetProvidersOk::FoundProviders { providers, .. })) =
            (self.pending_providers.get(&id), result)
        {
            let _ = found.try_send(providers.into_iter().collect());
        }
        if step.last {
            self.pending_providers.remove(&id);
        }
    }

    fn served(&mut self, peer: PeerId, bytes: u64) {
        self.peers.served(peer, bytes);
        NetworkStats::add(&self.stats.bytes_out, bytes);
    }

    /// Request-response dials a peer that is not connected with the addresses the swarm knows
    /// of it; make sure it knows ours.
    fn add_known_addresses(&mut self, peer: &PeerId) {
        if self.swarm.is_connected(peer) {
            return;
        }
        for address in self.peers.addresses(peer) {
            self.swarm.add_peer_address(*peer, address);
        }
    }

    fn penalize(&mut self, peer: PeerId, offence: Offence, reason: &str) {
        let ban = self.peers.offend(peer, offence, reason);
        tracing::warn!(%peer, ?offence, reason, ban_s = ban.as_secs(), "peer penalized");
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let local = self.local_peer;
                self.listening.send_modify(|addresses| {
                    let address = address.with(libp2p::multiaddr::Protocol::P2p(local));
                    if !addresses.contains(&address) {
                        addresses.push(address);
                    }
                });
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                if self.peers.is_banned(&peer_id) {
                    tracing::debug!(peer = %peer_id, "refusing a banned peer");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                let address = endpoint.get_remote_address().clone();
                if endpoint.is_dialer() {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, address.clone());
                }
                self.peers.connected(peer_id, address);
                self.stats
                    .connected_peers
                    .store(self.peers.connected_count() as u64, Ordering::Relaxed);
                if num_established.get() == 1 {
                    tracing::info!(peer = %peer_id, "peer connected");
                    let _ = self.triggers.try_send(Trigger::Peer(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                tracing::info!(peer = %peer_id, "peer disconnected");
                self.peers.disconnected(peer_id);
                self.stats
                    .connected_peers
                    .store(self.peers.connected_count() as u64, Ordering::Relaxed);
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, %error, "outgoing connection failed");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour(event),
            _ => {}
        }
    }

    fn on_behaviour(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.protocol_version != PROTOCOL_VERSION {
                    tracing::debug!(peer = %peer_id, version = info.protocol_version, "not a Blyan peer");
                    return;
                }
                for address in &info.listen_addrs {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, address.clone());
                }
                self.peers
                    .identified(peer_id, info.agent_version, &info.listen_addrs);
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, .. }) => {
                let connected = self.peers.connected_count();
                if peer != self.local_peer
                    && !self.swarm.is_connected(&peer)
                    && !self.peers.is_banned(&peer)
                    && connected < DISCOVERED_DIALS_MAX
                {
                    // Discovered through another peer: connect, so gossip reaches it directly.
                    let _ = self.swarm.dial(peer);
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(result),
                step,
                ..
            }) => self.on_providers(id, result, &step),
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => self.peers.rtt(peer, rtt),
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip(propagation_source, message_id, message),
            BehaviourEvent::Sync(event) => self.on_sync(event),
            BehaviourEvent::Payload(event) => self.on_payload(event),
            _ => {}
        }
    }

    /// Validates a gossiped header before gossipsub forwards it: it must decode, be on its
    /// topic and pass every check a header can pass alone (format, signature, work, limits).
    fn on_gossip(&mut self, from: PeerId, id: MessageId, message: gossipsub::Message) {
        let verdict = BlockHeader::decode(&message.data)
            .map_err(|error| error.to_string())
            .and_then(|header| {
                if self.topics.for_kind(header.kind).hash() != message.topic {
                    return Err(format!("a {} header on the wrong topic", header.kind));
                }
                let block = self
                    .chain
                    .validator()
                    .check_header(&header)
                    .map_err(|error| error.to_string())?;
                Ok((block, header))
            });
        let gossip = &mut self.swarm.behaviour_mut().gossipsub;
        match verdict {
            Ok((block, header)) => {
                gossip.report_message_validation_result(&id, &from, MessageAcceptance::Accept);
                NetworkStats::add(&self.stats.headers_accepted, 1);
                if !self.chain.contains(&block).unwrap_or(true) {
                    let _ = self.triggers.try_send(Trigger::Announced {
                        from,
                        origin: message.source,
                        block,
                        header: Box::new(header),
                    });
                }
            }
            Err(reason) => {
                gossip.report_message_validation_result(&id, &from, MessageAcceptance::Reject);
                NetworkStats::add(&self.stats.headers_rejected, 1);
                self.penalize(from, Offence::InvalidHeader, &reason);
            }
        }
    }

    fn on_sync(&mut self, event: request_response::Event<SyncRequest, SyncResponse>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let server = self.server.clone();
                self.answer_off_thread(
                    peer,
                    move || server.answer_sync(request),
                    |error| SyncResponse::Refused(format!("the answer failed: {error}")),
                    move |response| {
                        let bytes = crate::sync::response_bytes(&response);
                        Command::RespondSync {
                            peer,
                            channel,
                            response,
                            bytes,
                        }
                    },
                );
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let bytes = crate::sync::response_bytes(&response);
                let pending = self.pending_sync.remove(&request_id);
                self.settle(peer, pending, Ok((response, bytes)));
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let pending = self.pending_sync.remove(&request_id);
                self.settle(peer, pending, Err(error.to_string()));
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound sync request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_payload(&mut self, event: request_response::Event<PayloadRequest, PayloadResponse>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let server = self.server.clone();
                self.answer_off_thread(
                    peer,
                    move || server.answer_payload(request),
                    |error| {
                        tracing::error!(%error, "a payload answer failed");
                        PayloadResponse(crate::transfer::RangeResponse::not_held())
                    },
                    move |response| {
                        let bytes = encoded_bytes(&response);
                        Command::RespondPayload {
                            peer,
                            channel,
                            response,
                            bytes,
                        }
                    },
                );
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let bytes = encoded_bytes(&response);
                let pending = self.pending_payload.remove(&request_id);
                self.settle(peer, pending, Ok((response, bytes)));
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let pending = self.pending_payload.remove(&request_id);
                self.settle(peer, pending, Err(error.to_string()));
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound payload request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Answers a peer's request on a blocking thread (store reads, hashing) and hands the
    /// answer back to the swarm task; a banned peer gets no answer.
    fn answer_off_thread<R: Send + 'static>(
        &self,
        peer: PeerId,
        answer: impl FnOnce() -> R + Send + 'static,
        on_panic: impl FnOnce(tokio::task::JoinError) -> R + Send + 'static,
        respond: impl FnOnce(R) -> Command + Send + 'static,
    ) {
        if self.peers.is_banned(&peer) {
            return;
        }
        let commands = self.commands.clone();
        tokio::spawn(async move {
            let response = tokio::task::spawn_blocking(answer)
                .await
                .unwrap_or_else(on_panic);
            let _ = commands.send(respond(response)).await;
        });
    }

    /// Hands an outbound request's answer (and the bytes it carried) or failure to its caller,
    /// counting it for the peer.
    fn settle<R>(
        &mut self,
        peer: PeerId,
        pending: Option<(PeerId, oneshot::Sender<Result<R>>)>,
        outcome: std::result::Result<(R, u64), String>,
    ) {
        let Some((_, reply)) = pending else {
            return;
        };
        let _ = match outcome {
            Ok((response, bytes)) => {
                self.peers.answered(peer, bytes);
                NetworkStats::add(&self.stats.bytes_in, bytes);
                reply.send(Ok(response))
            }
            Err(reason) => {
                self.peers.failed(peer);
                NetworkStats::add(&self.stats.requests_failed, 1);
                reply.send(Err(NetworkError::Request { peer, reason }))
            }
        };
    }
}
