//! Answers of the read routes that are costly to compute and change only when a block is
//! appended: the newest model on the chain (finding it reads, hashes and parses meta payloads
//! of up to 96 MiB) and every expert's current version (a scan of every expert head).
//!
//! Each answer is kept with the store's block count when it was computed; the store is
//! append-only, so the same count means the same blocks and the answer still holds, and any
//! append (by `POST /blocks`, a peer, the learner or Proof-of-Learning) invalidates it. A
//! count read before computing is stored with the answer, so an append racing the computation
//! makes the next read compute again rather than keep a stale answer.

use std::sync::{Arc, Mutex, PoisonError};

use blyan_chain::{BlockHash, ChainStore, ExpertVersion};
use blyan_moe::{ModelDocument, MoeError};

use crate::node::blocking;
use crate::{Error, Node, Result};

/// The newest model on the chain: its meta block and document; `None` when the chain holds
/// none.
pub type ModelOnChain = Option<(BlockHash, Arc<ModelDocument>)>;

/// An answer and the block count it was computed at.
#[derive(Debug)]
struct Cached<T> {
    blocks: u64,
    value: T,
}

/// The cached answers of one node.
#[derive(Debug, Default)]
pub(crate) struct ReadCache {
    model: Mutex<Option<Cached<ModelOnChain>>>,
    experts: Mutex<Option<Cached<Arc<Vec<ExpertVersion>>>>>,
}

fn fresh<T: Clone>(slot: &Mutex<Option<Cached<T>>>, blocks: u64) -> Option<T> {
    let slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
    slot.as_ref()
        .filter(|cached| cached.blocks == blocks)
        .map(|cached| cached.value.clone())
}

fn keep<T>(slot: &Mutex<Option<Cached<T>>>, blocks: u64, value: T) {
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(Cached { blocks, value });
}

impl Node {
    /// The newest model on the chain (its meta block and document), computed once per state
    /// of the store: repeated calls between appends return the same `Arc`.
    pub async fn newest_model_on_chain(&self) -> Result<ModelOnChain> {
        let chain = self.chain().cloned().ok_or(Error::ChainUnavailable)?;
        let blocks = chain.block_count();
        if let Some(model) = fresh(&self.read_cache().model, blocks) {
            return Ok(model);
        }
        let found = blocking("reading the meta chain", move || {
            blyan_moe::current_model(&chain)
        })
        .await?;
        let model = match found {
            Ok((block, document)) => Some((block, Arc::new(document))),
            Err(MoeError::NoModelOnChain) => None,
            Err(error) => return Err(Error::ModelLoad(error)),
        };
        keep(&self.read_cache().model, blocks, model.clone());
        Ok(model)
    }

    /// Every expert's current version on the parameters chain, in expert order, computed once
    /// per state of the store: repeated calls between appends return the same `Arc`.
    pub async fn expert_versions(&self) -> Result<Arc<Vec<ExpertVersion>>> {
        let chain = self.chain().cloned().ok_or(Error::ChainUnavailable)?;
        let blocks = chain.block_count();
        if let Some(versions) = fresh(&self.read_cache().experts, blocks) {
            return Ok(versions);
        }
        let versions = blocking("listing expert versions", move || {
            ChainStore::experts(&chain)
        })
        .await?
        .map_err(Error::ChainFailed)?;
        let versions = Arc::new(versions);
        keep(&self.read_cache().experts, blocks, Arc::clone(&versions));
        Ok(versions)
    }
}
