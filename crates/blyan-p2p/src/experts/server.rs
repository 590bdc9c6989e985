//! The serving side: a node computes the experts it serves ([`ExpertSelection`], plus those it
//! replicated) for its peers, with its own weights, read from its chain store exactly by block
//! hash. A call naming a block the node does not serve is refused ([`ExpertRefusal::NotServed`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use blyan_chain::{BlockHash, ChainStore, ExpertName};
use blyan_moe::{ChainSource, ExpertWeights, expert_from_block, experts_of};
use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::PeerId;
use tch::{Kind, Tensor};
use tokio::sync::{Semaphore, mpsc, watch};

use super::wire::{
    Answer, CallRequest, ExpertRefusal, decode_request, output_frame, read_frame, refusal_frame,
};
use blyan_moe::ExpertSelection;

/// Calls of one stream computed at once at most; more wait (backpressure on the stream).
pub const CALLS_IN_FLIGHT_PER_STREAM_MAX: usize = 64;
/// Answers queued for one stream's writer at most.
const ANSWERS_QUEUED_MAX: usize = 64;

/// The experts this node serves, their weights, and what it answered.
pub struct ExpertServer {
    chain: Arc<ChainStore>,
    selection: ExpertSelection,
    replicated: Mutex<HashSet<ExpertName>>,
    // Invariant: every block here is the current block of a selected or replicated expert whose
    // payload the store holds, as of the last refresh.
    served: RwLock<HashMap<BlockHash, ExpertName>>,
    weights: Mutex<HashMap<BlockHash, Arc<Mutex<ExpertWeights>>>>,
    answered: Mutex<HashMap<ExpertName, u64>>,
    refused: AtomicU64,
}

impl std::fmt::Debug for ExpertServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpertServer")
            .field("selection", &self.selection)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ExpertServer {
    /// A server of the experts `selection` names, from `chain`. Nothing is served until
    /// [`ExpertServer::refresh`] finds them on the chain.
    pub fn new(chain: Arc<ChainStore>, selection: ExpertSelection) -> Self {
        Self {
            chain,
            selection,
            replicated: Mutex::new(HashSet::new()),
            served: RwLock::new(HashMap::new()),
            weights: Mutex::new(HashMap::new()),
            answered: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
        }
    }

    /// Whether this node computes `expert` itself: selected, or replicated.
    pub fn computes(&self, expert: ExpertName) -> bool {
        self.selection.matches(expert) || lock(&self.replicated).contains(&expert)
    }

    /// Starts computing `expert` locally (a hot remote expert); it is served from the next
    /// refresh on. Returns whether it was new.
    pub fn replicate(&self, expert: ExpertName) -> bool {
        lock(&self.replicated).insert(expert)
    }

    /// The experts replicated so far.
    pub fn replicated(&self) -> Vec<ExpertName> {
        let mut experts: Vec<ExpertName> = lock(&self.replicated).iter().copied().collect();
        experts.sort();
        experts
    }

    /// The blocks served now, with their experts, in expert order.
    pub fn served(&self) -> Vec<(ExpertName, BlockHash)> {
        let served = self.served.read().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<(ExpertName, BlockHash)> = served
            .iter()
            .map(|(block, expert)| (*expert, *block))
            .collect();
        list.sort();
        list
    }

    /// Calls answered per expert, and calls refused.
    pub fn answered(&self) -> (HashMap<ExpertName, u64>, u64) {
        (
            lock(&self.answered).clone(),
            self.refused.load(Ordering::Relaxed),
        )
    }

    /// Looks up the current block of every expert this node computes, on the newest model of
    /// the chain, keeping those whose payload the store holds; drops the weights of blocks no
    /// longer served. Returns the blocks served now. A chain without a model serves nothing.
    pub fn refresh(&self) -> blyan_chain::Result<Vec<BlockHash>> {
        let config = match ChainSource::open(Arc::clone(&self.chain)) {
            Ok(source) => source.config().clone(),
            Err(error) => {
                tracing::debug!(%error, "no model to serve experts of yet");
                return Ok(Vec::new());
            }
        };
        let mut served = HashMap::new();
        for expert in experts_of(&config) {
            if !self.computes(expert) {
                continue;
            }
            let Some(version) = self.chain.expert_current(expert)? else {
                continue;
            };
            if self.chain.payload(&version.hash)?.is_some() {
                served.insert(version.hash, expert);
            }
        }
        lock(&self.weights).retain(|block, _| served.contains_key(block));
        let blocks = served.keys().copied().collect();
        *self.served.write().unwrap_or_else(PoisonError::into_inner) = served;
        Ok(blocks)
    }

    /// The weights of a served block, loaded once.
    fn weights(&self, block: BlockHash, expert: ExpertName) -> blyan_moe::Result<ExpertWeights> {
        let entry = Arc::clone(lock(&self.weights).entry(block).or_insert_with(|| {
            Arc::new(Mutex::new(ExpertWeights {
                w1: Tensor::new(),
                w2: Tensor::new(),
                w3: Tensor::new(),
            }))
        }));
        // Loading holds only this block's lock: other blocks are served meanwhile.
        let mut weights = lock(&entry);
        if !weights.w1.defined() {
            *weights = expert_from_block(&self.chain, block, expert)?;
        }
        Ok(weights.shallow_clone())
    }

    /// Computes one call (blocking: run it on a blocking thread).
    pub fn answer(&self, request: &CallRequest, data: &[u8]) -> Answer {
        let answer = self.compute(request, data);
        match &answer {
            Answer::Output { .. } => {
                *lock(&self.answered).entry(request.expert).or_default() += 1;
            }
            Answer::Refused(refusal) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(expert = %request.expert, block = %request.block, %refusal, "expert call refused");
            }
        }
        answer
    }

    fn compute(&self, request: &CallRequest, data: &[u8]) -> Answer {
        let served = self
            .served
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&request.block)
            .copied();
        if served != Some(request.expert) {
            return Answer::Refused(ExpertRefusal::NotServed {
                block: request.block.to_string(),
                expert: request.expert.to_string(),
            });
        }
        let failed = |error: &dyn std::fmt::Display| {
            Answer::Refused(ExpertRefusal::Failed {
                reason: error.to_string(),
            })
        };
        let weights = match self.weights(request.block, request.expert) {
            Ok(weights) => weights,
            Err(error) => return failed(&error),
        };
        let hidden = weights.w1.size().get(1).copied().unwrap_or(0);
        if i64::from(request.hidden) != hidden || request.rows == 0 {
            return Answer::Refused(ExpertRefusal::BadInput {
                reason: format!(
                    "{} rows of {} values; the expert takes rows of {hidden}",
                    request.rows, request.hidden
                ),
            });
        }
        let shape = [i64::from(request.rows), i64::from(request.hidden)];
        let output = Tensor::f_from_data_size(data, &shape, Kind::Float)
            .map_err(blyan_moe::MoeError::from)
            .and_then(|input| weights.forward(&input))
            .and_then(|output| Ok(output.f_to_kind(Kind::Float)?.f_contiguous()?));
        let output = match output {
            Ok(output) => output,
            Err(error) => return failed(&error),
        };
        let mut bytes = vec![0u8; data.len()];
        let values = data.len() / 4;
        if let Err(error) = output.f_copy_data_u8(&mut bytes, values) {
            return failed(&error);
        }
        Answer::Output {
            rows: request.rows,
            hidden: request.hidden,
            data: bytes,
        }
    }
}

/// Answers the calls of one peer's stream until it ends: each call computed on a blocking
/// thread (at most [`CALLS_IN_FLIGHT_PER_STREAM_MAX`] at once), answers written as they finish.
pub(crate) async fn serve_stream(
    server: Arc<ExpertServer>,
    peer: PeerId,
    stream: libp2p::Stream,
    mut stopped: watch::Receiver<bool>,
) {
    let (mut reader, mut writer) = stream.split();
    let (answers, mut queued) = mpsc::channel::<Vec<u8>>(ANSWERS_QUEUED_MAX);
    let writing = tokio::spawn(async move {
        while let Some(frame) = queued.recv().await {
            if writer.write_all(&frame).await.is_err() || writer.flush().await.is_err() {
                break;
            }
        }
        let _ = writer.close().await;
    });
    let permits = Arc::new(Semaphore::new(CALLS_IN_FLIGHT_PER_STREAM_MAX));
    loop {
        let read = tokio::select! {
            read = read_frame(&mut reader) => read,
            // The network stops: the stream closes with it, callers fail over.
            _ = stopped.changed() => break,
        };
        let body = match read {
            Ok(Some(body)) => body,
            Ok(None) => break,
            Err(error) => {
                tracing::debug!(%peer, %error, "expert stream ended");
                break;
            }
        };
        let request = match decode_request(&body) {
            Ok((request, _)) => request,
            Err(error) => {
                // A peer that breaks the framing loses the stream; its pending calls fail over.
                tracing::debug!(%peer, %error, "an expert request that does not decode");
                break;
            }
        };
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let server = Arc::clone(&server);
        let answers = answers.clone();
        tokio::spawn(async move {
            let computed = tokio::task::spawn_blocking(move || {
                let data = &body[body.len() - request.data_bytes() as usize..];
                match server.answer(&request, data) {
                    Answer::Output { rows, hidden, data } => {
                        output_frame(request.id, rows, hidden, &data)
                    }
                    Answer::Refused(refusal) => refusal_frame(request.id, &refusal),
                }
            })
            .await;
            drop(permit);
            if let Ok(frame) = computed {
                let _ = answers.send(frame).await;
            }
        });
    }
    drop(answers);
    let _ = writing.await;
}

/// Accepts every peer's expert stream and serves it, until `incoming` ends or the network
/// stops (which ends every stream).
pub(crate) async fn accept(
    server: Arc<ExpertServer>,
    mut incoming: libp2p_stream::IncomingStreams,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let next = tokio::select! {
            next = incoming.next() => next,
            _ = stopped.changed() => return,
        };
        let Some((peer, stream)) = next else { return };
        tracing::debug!(%peer, "expert stream opened");
        tokio::spawn(serve_stream(
            Arc::clone(&server),
            peer,
            stream,
            stopped.clone(),
        ));
    }
}
