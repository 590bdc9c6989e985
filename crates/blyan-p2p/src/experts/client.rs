//! The calling side: [`ExpertClient`] implements `blyan_moe::RemoteExperts`, so a model asks
//! the peers that serve an expert to compute it.
//!
//! Holders are found as Kademlia providers of the expert's current block hash (cached for
//! [`ExpertOptions::providers_ttl`]) and tried fastest first by their measured call latency.
//! Each call has a deadline derived from the holder's latencies; one that runs past the
//! holder's usual p95 gets a hedged second request to the next holder; one that fails (refusal,
//! deadline, a broken stream) goes to the next holder, and the failing holder is avoided for a
//! while (doubling, as Petals does). Every holder computes the same block with the same kernel,
//! so whichever answers, the output is the same.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use blyan_chain::{BlockHash, ChainStore, ExpertName};
use blyan_moe::{ExpertCall, MoeError, RemoteExperts};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use libp2p::PeerId;
use tch::{Kind, Tensor};

use super::link::Link;
use super::server::ExpertServer;
use super::wire::{Answer, CallRequest};
use super::{ExpertOptions, ExpertPeerView, ExpertsSnapshot, RemoteExpertView, ServedExpert};
use crate::error::{NetworkError, Result};
use crate::network::NetworkHandle;

/// Latency samples kept per holder.
const LATENCY_SAMPLES_MAX: usize = 128;
/// Samples a holder needs before its latencies set deadlines and hedges.
const LATENCY_SAMPLES_MIN: usize = 8;
/// How long a provider lookup waits for more holders after the first were found.
const PROVIDER_LOOKUP_GRACE: Duration = Duration::from_millis(50);
/// How long a provider lookup may take.
const PROVIDER_LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a failing holder is avoided.
const AVOID_MAX: Duration = Duration::from_secs(300);
/// The window over which an expert's remote-call rate is measured for replication.
const RATE_WINDOW: Duration = Duration::from_secs(60);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The stream to one peer, opened by the first caller that needs it while the others wait.
type LinkSlot = Arc<tokio::sync::Mutex<Option<Arc<Link>>>>;

/// Calls to one holder and how they went.
#[derive(Debug, Default)]
struct HolderStats {
    samples: VecDeque<Duration>,
    calls: u64,
    failures: u64,
    avoid_until: Option<Instant>,
    avoid_for: Duration,
}

impl HolderStats {
    fn quantile(&self, q: f64) -> Option<Duration> {
        if self.samples.len() < LATENCY_SAMPLES_MIN {
            return None;
        }
        let mut sorted: Vec<Duration> = self.samples.iter().copied().collect();
        sorted.sort();
        let index = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted.get(index).copied()
    }

    fn mean(&self) -> Option<Duration> {
        if self.samples.is_empty() {
            return None;
        }
        Some(self.samples.iter().sum::<Duration>() / self.samples.len() as u32)
    }

    fn avoided(&self, now: Instant) -> bool {
        self.avoid_until.is_some_and(|until| until > now)
    }
}

/// Counters of the client since the network started.
#[derive(Debug, Default)]
struct Counters {
    layer_calls: AtomicU64,
    calls: AtomicU64,
    failures: AtomicU64,
    failovers: AtomicU64,
    hedges: AtomicU64,
    latency_nanos_total: AtomicU64,
}

/// One expert's share of a layer, ready to send.
struct Prepared {
    expert: ExpertName,
    block: BlockHash,
    rows: u32,
    hidden: u32,
    data: Arc<Vec<u8>>,
}

/// Computes experts on the peers that serve them. Install it on a model with
/// `Generator::set_remote_experts(Some(client))`: it claims every expert this node does not
/// compute itself ([`ExpertServer::computes`]).
///
/// `call_layer` blocks its thread until the layer's answers are in: call the model from a
/// blocking thread (as the node does), never from an async task.
pub struct ExpertClient {
    network: NetworkHandle,
    control: libp2p_stream::Control,
    chain: Arc<ChainStore>,
    server: Arc<ExpertServer>,
    runtime: tokio::runtime::Handle,
    options: ExpertOptions,
    links: Mutex<HashMap<PeerId, LinkSlot>>,
    providers: Mutex<HashMap<BlockHash, (Instant, Vec<PeerId>)>>,
    holders: Mutex<HashMap<PeerId, HolderStats>>,
    rates: Mutex<HashMap<ExpertName, VecDeque<Instant>>>,
    replicated: tokio::sync::Notify,
    counters: Counters,
}

impl std::fmt::Debug for ExpertClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpertClient")
            .field("local_peer", &self.network.local_peer())
            .finish_non_exhaustive()
    }
}

impl ExpertClient {
    pub(crate) fn new(
        network: NetworkHandle,
        control: libp2p_stream::Control,
        chain: Arc<ChainStore>,
        server: Arc<ExpertServer>,
        runtime: tokio::runtime::Handle,
        options: ExpertOptions,
    ) -> Self {
        Self {
            network,
            control,
            chain,
            server,
            runtime,
            options,
            links: Mutex::new(HashMap::new()),
            providers: Mutex::new(HashMap::new()),
            holders: Mutex::new(HashMap::new()),
            rates: Mutex::new(HashMap::new()),
            replicated: tokio::sync::Notify::new(),
            counters: Counters::default(),
        }
    }

    /// The server of this node's own experts.
    pub fn server(&self) -> &Arc<ExpertServer> {
        &self.server
    }

    /// Woken when an expert was replicated, to announce it at once.
    pub(crate) fn replicated_notify(&self) -> &tokio::sync::Notify {
        &self.replicated
    }

    /// The current block of `expert` on this node's chain: what a holder is asked to compute.
    pub fn current_block(&self, expert: ExpertName) -> Result<BlockHash> {
        let version =
            self.chain
                .expert_current(expert)?
                .ok_or_else(|| NetworkError::ExpertUnavailable {
                    expert,
                    reason: "the chain has no block of this expert".into(),
                })?;
        Ok(version.hash)
    }

    /// The peers announcing `block`, fastest first (those avoided after failures last); looked
    /// up on the network when the cached answer is older than the TTL or empty. A lookup that
    /// finds nobody keeps the previous holders (a failing one is avoided by its own record).
    pub async fn holders(&self, block: BlockHash) -> Result<Vec<PeerId>> {
        let cached = lock(&self.providers).get(&block).cloned();
        let mut peers = match cached {
            Some((found, peers))
                if !peers.is_empty() && found.elapsed() < self.options.providers_ttl =>
            {
                peers
            }
            cached => {
                let local = self.network.local_peer();
                let found: Vec<PeerId> = tokio::time::timeout(
                    PROVIDER_LOOKUP_TIMEOUT,
                    self.network.get_providers(block, PROVIDER_LOOKUP_GRACE),
                )
                .await
                .unwrap_or_else(|_| Ok(Vec::new()))?
                .into_iter()
                .filter(|peer| *peer != local)
                .collect();
                let peers = match cached {
                    Some((_, previous)) if found.is_empty() => previous,
                    _ => found,
                };
                lock(&self.providers).insert(block, (Instant::now(), peers.clone()));
                peers
            }
        };
        let now = Instant::now();
        let holders = lock(&self.holders);
        peers.sort_by_key(|peer| {
            let stats = holders.get(peer);
            let avoided = stats.is_some_and(|stats| stats.avoided(now));
            let latency = stats.and_then(HolderStats::mean).unwrap_or(Duration::ZERO);
            (avoided, latency)
        });
        Ok(peers)
    }

    /// The stream to `peer`, opened on first use and again after it broke.
    async fn link(&self, peer: PeerId) -> std::result::Result<Arc<Link>, String> {
        let slot = Arc::clone(lock(&self.links).entry(peer).or_default());
        let mut slot = slot.lock().await;
        if let Some(link) = slot.as_ref()
            && link.is_alive()
        {
            return Ok(Arc::clone(link));
        }
        let mut control = self.control.clone();
        let link = Link::open(&mut control, peer).await?;
        *slot = Some(Arc::clone(&link));
        Ok(link)
    }

    /// How long a call to `peer` may take: four times its slowest recent call (at least
    /// `deadline_min`), or `call_timeout` before it has a history.
    fn deadline(&self, peer: &PeerId) -> Duration {
        let holders = lock(&self.holders);
        match holders.get(peer).and_then(|stats| stats.quantile(1.0)) {
            Some(slowest) => (slowest * 4)
                .max(self.options.deadline_min)
                .min(self.options.call_timeout),
            None => self.options.call_timeout,
        }
    }

    /// When to send a hedged request if `peer` has not answered: its p95 (at least
    /// `hedge_min`); never before it has a history.
    fn hedge_after(&self, peer: &PeerId) -> Option<Duration> {
        let holders = lock(&self.holders);
        holders
            .get(peer)
            .and_then(|stats| stats.quantile(0.95))
            .map(|p95| p95.max(self.options.hedge_min))
    }

    fn succeeded(&self, peer: PeerId, latency: Duration) {
        let mut holders = lock(&self.holders);
        let stats = holders.entry(peer).or_default();
        stats.calls += 1;
        if stats.samples.len() == LATENCY_SAMPLES_MAX {
            stats.samples.pop_front();
        }
        stats.samples.push_back(latency);
        stats.avoid_for = Duration::ZERO;
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counters
            .latency_nanos_total
            .fetch_add(nanos, Ordering::Relaxed);
    }

    fn failed(&self, peer: PeerId, block: BlockHash, reason: &str) {
        tracing::warn!(%peer, %block, reason, "expert call failed");
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        let mut holders = lock(&self.holders);
        let stats = holders.entry(peer).or_default();
        stats.calls += 1;
        stats.failures += 1;
        stats.avoid_for = (stats.avoid_for * 2)
            .max(self.options.failure_avoid)
            .min(AVOID_MAX);
        stats.avoid_until = Some(Instant::now() + stats.avoid_for);
    }

    /// One attempt at `peer`, within its deadline.
    async fn attempt(
        &self,
        peer: PeerId,
        call: &Prepared,
    ) -> (PeerId, Instant, std::result::Result<Answer, String>) {
        let started = Instant::now();
        let deadline = self.deadline(&peer);
        let request = CallRequest {
            id: 0,
            block: call.block,
            expert: call.expert,
            rows: call.rows,
            hidden: call.hidden,
        };
        let result = tokio::time::timeout(deadline, async {
            let link = self.link(peer).await?;
            link.call(request, Arc::clone(&call.data)).await
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {deadline:?}")));
        (peer, started, result)
    }

    /// One expert's output from the first holder that answers: fastest holder first, a hedged
    /// request past its p95, the next holder after a failure.
    async fn call_one(&self, call: &Prepared) -> Result<Vec<u8>> {
        let holders = self.holders(call.block).await?;
        if holders.is_empty() {
            return Err(NetworkError::ExpertUnavailable {
                expert: call.expert,
                reason: format!("no peer announces block {}", call.block),
            });
        }
        let mut running = FuturesUnordered::new();
        running.push(self.attempt(holders[0], call));
        let mut next = 1;
        let mut hedged = false;
        let mut failures = Vec::new();
        loop {
            let hedge = match (hedged, holders.get(next)) {
                (false, Some(_)) => self.hedge_after(&holders[next - 1]),
                _ => None,
            };
            tokio::select! {
                Some((peer, started, result)) = running.next() => {
                    match result {
                        Ok(Answer::Output { rows, hidden, data })
                            if rows == call.rows && hidden == call.hidden =>
                        {
                            self.succeeded(peer, started.elapsed());
                            return Ok(data);
                        }
                        Ok(Answer::Output { rows, hidden, .. }) => {
                            let reason = format!("answered {rows} × {hidden} values");
                            self.failed(peer, call.block, &reason);
                            failures.push(format!("{peer}: {reason}"));
                        }
                        Ok(Answer::Refused(refusal)) => {
                            let reason = refusal.to_string();
                            self.failed(peer, call.block, &reason);
                            failures.push(format!("{peer}: {reason}"));
                        }
                        Err(reason) => {
                            self.failed(peer, call.block, &reason);
                            failures.push(format!("{peer}: {reason}"));
                        }
                    }
                    if running.is_empty() {
                        let Some(peer) = holders.get(next) else {
                            return Err(NetworkError::ExpertUnavailable {
                                expert: call.expert,
                                reason: failures.join("; "),
                            });
                        };
                        self.counters.failovers.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(expert = %call.expert, to = %peer, "expert call failed over");
                        running.push(self.attempt(*peer, call));
                        next += 1;
                    }
                }
                () = tokio::time::sleep(hedge.unwrap_or(Duration::MAX)), if hedge.is_some() => {
                    self.counters.hedges.fetch_add(1, Ordering::Relaxed);
                    running.push(self.attempt(holders[next], call));
                    next += 1;
                    hedged = true;
                }
            }
        }
    }

    /// Asks `peer` to compute `block` (expert `expert`) on `rows × hidden` float32 values
    /// (`data`, little-endian), once, with no failover: a refusal is
    /// [`NetworkError::ExpertRefused`]. For tools and tests; the model goes through
    /// `RemoteExperts`.
    pub async fn call(
        &self,
        peer: PeerId,
        block: BlockHash,
        expert: ExpertName,
        rows: u32,
        hidden: u32,
        data: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let call = Prepared {
            expert,
            block,
            rows,
            hidden,
            data: Arc::new(data),
        };
        match self.attempt(peer, &call).await.2 {
            Ok(Answer::Output { data, .. }) => Ok(data),
            Ok(Answer::Refused(refusal)) => Err(NetworkError::ExpertRefused {
                peer,
                refusal: Box::new(refusal),
            }),
            Err(reason) => Err(NetworkError::Request { peer, reason }),
        }
    }

    /// Counts a remote call of `expert`; past the replication threshold (calls per minute),
    /// starts computing it locally when this node holds its payload.
    fn count_for_replication(&self, expert: ExpertName, block: BlockHash) {
        let threshold = self.options.replicate_calls_per_minute;
        if threshold == 0 {
            return;
        }
        let now = Instant::now();
        let hot = {
            let mut rates = lock(&self.rates);
            let calls = rates.entry(expert).or_default();
            calls.push_back(now);
            while calls
                .front()
                .is_some_and(|first| now.duration_since(*first) > RATE_WINDOW)
            {
                calls.pop_front();
            }
            calls.len() as u64 >= u64::from(threshold)
        };
        if hot && matches!(self.chain.payload(&block), Ok(Some(_))) && self.server.replicate(expert)
        {
            tracing::info!(%expert, %block, "hot remote expert: computing and serving it locally");
            self.replicated.notify_one();
        }
    }

    /// What `GET /p2p/experts` shows: what this node serves, which peers serve what it asked
    /// for, their latencies and failures, and the counters.
    pub fn snapshot(&self) -> ExpertsSnapshot {
        let (answered, refused) = self.server.answered();
        let serving = self
            .server
            .served()
            .into_iter()
            .map(|(expert, block)| ServedExpert {
                expert: expert.to_string(),
                block: block.to_string(),
                calls_answered: answered.get(&expert).copied().unwrap_or(0),
            })
            .collect();
        let now = Instant::now();
        let mut remote: Vec<RemoteExpertView> = lock(&self.providers)
            .iter()
            .map(|(block, (found, peers))| RemoteExpertView {
                block: block.to_string(),
                holders: peers.iter().map(ToString::to_string).collect(),
                looked_up_ms_ago: now.duration_since(*found).as_millis() as u64,
            })
            .collect();
        remote.sort_by(|a, b| a.block.cmp(&b.block));
        let millis = |duration: Option<Duration>| duration.map(|d| d.as_secs_f64() * 1e3);
        let mut peers: Vec<ExpertPeerView> = lock(&self.holders)
            .iter()
            .map(|(peer, stats)| ExpertPeerView {
                peer: peer.to_string(),
                calls: stats.calls,
                failures: stats.failures,
                latency_ms_mean: millis(stats.mean()),
                latency_ms_p95: millis(stats.quantile(0.95)),
                avoided_for_ms: stats
                    .avoid_until
                    .filter(|until| *until > now)
                    .map(|until| until.duration_since(now).as_millis() as u64),
            })
            .collect();
        peers.sort_by(|a, b| a.peer.cmp(&b.peer));
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ExpertsSnapshot {
            local_peer: self.network.local_peer().to_string(),
            serving,
            refused,
            replicated: self
                .server
                .replicated()
                .iter()
                .map(ToString::to_string)
                .collect(),
            remote,
            peers,
            layer_calls: load(&self.counters.layer_calls),
            calls: load(&self.counters.calls),
            failures: load(&self.counters.failures),
            failovers: load(&self.counters.failovers),
            hedges: load(&self.counters.hedges),
            latency_seconds_total: load(&self.counters.latency_nanos_total) as f64 * 1e-9,
        }
    }

    /// Prepares a layer's calls: each expert's current block and its input as bytes.
    fn prepare(&self, calls: &[ExpertCall]) -> std::result::Result<Vec<Prepared>, MoeError> {
        calls
            .iter()
            .map(|call| {
                let remote_error = |reason: String| MoeError::RemoteExpert {
                    expert: call.expert,
                    reason,
                };
                let block = self
                    .current_block(call.expert)
                    .map_err(|error| remote_error(error.to_string()))?;
                let hidden = call
                    .hidden
                    .f_detach()?
                    .f_to_device(tch::Device::Cpu)?
                    .f_to_kind(Kind::Float)?
                    .f_contiguous()?;
                let size = hidden.size();
                let [rows, width] = size[..] else {
                    return Err(remote_error(format!(
                        "input of shape {size:?}, not [rows, hidden]"
                    )));
                };
                let values = (rows * width) as usize;
                let mut data = vec![0u8; values * 4];
                hidden.f_copy_data_u8(&mut data, values)?;
                let request = CallRequest {
                    id: 0,
                    block,
                    expert: call.expert,
                    rows: rows as u32,
                    hidden: width as u32,
                };
                if !request.fits() {
                    return Err(remote_error(format!(
                        "{rows} rows of {width} values exceed one expert frame"
                    )));
                }
                Ok(Prepared {
                    expert: call.expert,
                    block,
                    rows: rows as u32,
                    hidden: width as u32,
                    data: Arc::new(data),
                })
            })
            .collect()
    }
}

impl RemoteExperts for ExpertClient {
    fn is_remote(&self, expert: ExpertName) -> bool {
        !self.server.computes(expert)
    }

    fn call_layer(
        &self,
        layer: u32,
        calls: Vec<ExpertCall>,
    ) -> std::result::Result<Vec<Tensor>, MoeError> {
        let prepared = self.prepare(&calls)?;
        self.counters.layer_calls.fetch_add(1, Ordering::Relaxed);
        let span = tracing::debug_span!("expert_layer_call", layer, experts = prepared.len());
        let _entered = span.enter();
        // The links' tasks and timers need the network's runtime; this thread only waits.
        let _runtime = self.runtime.enter();
        let answers = futures::executor::block_on(futures::future::join_all(
            prepared.iter().map(|call| self.call_one(call)),
        ));
        let mut outputs = Vec::with_capacity(answers.len());
        for (call, answer) in prepared.iter().zip(answers) {
            let data = answer.map_err(|error| MoeError::RemoteExpert {
                expert: call.expert,
                reason: error.to_string(),
            })?;
            self.count_for_replication(call.expert, call.block);
            let shape = [i64::from(call.rows), i64::from(call.hidden)];
            outputs.push(Tensor::f_from_data_size(&data, &shape, Kind::Float)?);
        }
        Ok(outputs)
    }
}
