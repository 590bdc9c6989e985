//! The evaluation a validator re-runs and an author cannot game: an evaluation pool (text every
//! validator holds; its blake3 is in every vote), a batch of windows drawn from it by a seed
//! taken from a beacon appended after the claim, and the mean next-token loss of the base
//! model and of the candidate on that batch.
//!
//! Both models are built from verified block payloads ([`BlockSource`]: the local chain store
//! or blocks fetched from a node), so an in-process validator and a remote one compute with the
//! same bytes. The loss is f32 arithmetic summed in f64 in window order: with the same build,
//! CPU kind and torch thread count it is bit-identical; across CPUs (another SIMD kernel) it may
//! differ in the last bits, which the certificate's loss tolerance absorbs (docs/pol.md).

use std::collections::BTreeMap;
use std::sync::Arc;

use blyan_chain::{BlockHash, BlockHeader, ChainStore};
use blyan_moe::{
    ExpertName, Model, ModelDocument, ModelOptions, PayloadSource, TextDocument, Tokenizer,
    VerifiedBlock, experts_of, windows_loss,
};

use crate::error::{PolError, Result};
use crate::record::{EvalSpec, LossMicros, Losses, loss_micros};

/// Windows scored per forward pass.
const EVAL_BATCH: usize = 8;

/// The text validators evaluate on. Its commitment (what votes name) is blake3 over each
/// document's length and text, in order; it is tokenized with the base model's tokenizer when
/// evaluated.
#[derive(Debug, Clone)]
pub struct EvalPool {
    documents: Vec<TextDocument>,
    bytes: u64,
    commitment: String,
}

impl EvalPool {
    /// The pool of `documents`, in order ([`PolError::Pool`] when it holds no text).
    pub fn new(documents: Vec<TextDocument>) -> Result<Self> {
        let mut hasher = blake3::Hasher::new_derive_key("blyan-pol 1 evaluation pool");
        let mut bytes = 0;
        for document in &documents {
            hasher.update(&(document.text.len() as u64).to_le_bytes());
            hasher.update(document.text.as_bytes());
            bytes += document.text.len() as u64;
        }
        if bytes == 0 {
            return Err(PolError::Pool {
                reason: "the evaluation pool holds no text".into(),
            });
        }
        Ok(Self {
            documents,
            bytes,
            commitment: hasher.finalize().to_hex().to_string(),
        })
    }

    /// blake3 (hex) of the pool's texts: what votes name.
    pub fn commitment(&self) -> &str {
        &self.commitment
    }

    /// Bytes of text in the pool.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The evaluation spec of this pool with `windows` windows of `positions` tokens.
    pub fn spec(&self, windows: u32, positions: u32) -> EvalSpec {
        EvalSpec {
            pool: self.commitment.clone(),
            windows,
            positions,
        }
    }

    /// The pool's tokens under `tokenizer`, each document followed by `end_of_text` when given.
    pub fn tokens(&self, tokenizer: &Tokenizer, end_of_text: Option<u32>) -> Result<Vec<u32>> {
        let mut tokens = Vec::new();
        for document in &self.documents {
            tokens.extend(tokenizer.encode_plain(&document.text)?);
            tokens.extend(end_of_text);
        }
        Ok(tokens)
    }
}

/// The start of each window `seed` draws from `tokens`: `spec.windows` offsets, each read from
/// blake3's output stream keyed by the seed, modulo the positions a window can start at.
pub fn draw(tokens: &[u32], seed: [u8; 32], spec: &EvalSpec) -> Result<Vec<usize>> {
    let positions = spec.positions as usize;
    if positions == 0 || spec.windows == 0 || tokens.len() <= positions + 1 {
        return Err(PolError::Pool {
            reason: format!("{} tokens cannot hold windows of {positions}", tokens.len()),
        });
    }
    let starts_possible = (tokens.len() - positions - 1) as u64;
    let mut stream = blake3::Hasher::new_keyed(&seed).finalize_xof();
    Ok((0..spec.windows)
        .map(|_| {
            let mut word = [0u8; 8];
            stream.fill(&mut word);
            (u64::from_le_bytes(word) % starts_possible) as usize
        })
        .collect())
}

/// A model as blocks: a meta block (its document names the shared blocks) and each expert's
/// block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelBlocks {
    /// The meta block.
    pub meta: BlockHash,
    /// Each expert's block.
    pub experts: BTreeMap<ExpertName, BlockHash>,
}

impl ModelBlocks {
    /// The model served by `store` now: its newest served model with every expert's current
    /// version.
    pub fn served(store: &ChainStore) -> Result<Self> {
        let (meta, _) = blyan_moe::current_model(store)?;
        let experts = store
            .experts()?
            .into_iter()
            .map(|version| (version.expert, version.hash))
            .collect();
        Ok(Self { meta, experts })
    }

    /// This model with `candidates` in place: expert blocks replace their experts' blocks, a
    /// meta block replaces the meta block. `headers` gives each candidate's kind and expert.
    pub fn with_candidates(&self, candidates: &[(BlockHash, BlockHeader)]) -> Self {
        let mut next = self.clone();
        for (hash, header) in candidates {
            match (header.kind, header.meta.expert) {
                (blyan_chain::BlockKind::Expert, Some(expert)) => {
                    next.experts.insert(expert, *hash);
                }
                (blyan_chain::BlockKind::Meta, _) => next.meta = *hash,
                _ => {}
            }
        }
        next
    }
}

/// Where blocks come from: the local store, or a node over the network. Whatever a source
/// returns is checked before use ([`verified_raw`], [`verified_tensors`]).
pub trait BlockSource {
    /// Block `hash`'s header and payload, as the source holds them.
    fn fetch(&self, hash: BlockHash) -> Result<(BlockHeader, Vec<u8>)>;
}

/// Blocks of a local chain store.
#[derive(Debug, Clone, Copy)]
pub struct StoreBlocks<'a>(pub &'a ChainStore);

impl BlockSource for StoreBlocks<'_> {
    fn fetch(&self, hash: BlockHash) -> Result<(BlockHeader, Vec<u8>)> {
        let missing = |reason: &str| PolError::Fetch {
            block: hash,
            reason: reason.to_owned(),
        };
        let header = self.0.header(&hash)?.ok_or_else(|| missing("not stored"))?;
        let payload = self
            .0
            .payload(&hash)?
            .ok_or_else(|| missing("payload not stored"))?;
        Ok((header, payload.as_ref().to_vec()))
    }
}

/// Block `hash` from `source`, its header hashing to `hash` and its payload to the header's
/// commitment ([`PolError::Fetch`] otherwise).
pub fn verified_raw(source: &dyn BlockSource, hash: BlockHash) -> Result<(BlockHeader, Vec<u8>)> {
    let (header, payload) = source.fetch(hash)?;
    let bad = |reason: String| PolError::Fetch {
        block: hash,
        reason,
    };
    if header.hash() != hash {
        return Err(bad(format!("its header hashes to {}", header.hash())));
    }
    if payload.len() as u64 != header.payload_bytes
        || blyan_chain::hash_payload(&payload) != header.payload_hash
    {
        return Err(bad("its payload does not match its header".into()));
    }
    Ok((header, payload))
}

/// Tensor block `hash` from `source`, checked as [`VerifiedBlock::new`] does.
pub fn verified_tensors(source: &dyn BlockSource, hash: BlockHash) -> Result<VerifiedBlock> {
    let (header, payload) = source.fetch(hash)?;
    Ok(VerifiedBlock::new(hash, header, payload)?)
}

/// Loads the model `blocks` names from `source` (every block verified), on the CPU.
pub fn load_model(source: &dyn BlockSource, blocks: &ModelBlocks) -> Result<(Model, Tokenizer)> {
    let (meta_header, meta_payload) = verified_raw(source, blocks.meta)?;
    let document = ModelDocument::from_payload(blocks.meta, &meta_payload)?.ok_or_else(|| {
        PolError::from(blyan_moe::MoeError::BadMetaBlock {
            block: blocks.meta.to_string(),
            reason: "not a model document".into(),
        })
    })?;
    let shared = document
        .shared
        .values()
        .map(|hash| verified_tensors(source, *hash))
        .collect::<Result<Vec<_>>>()?;
    let config = blyan_moe::Config::from_json(document.config_json.as_bytes())?;
    let mut experts = Vec::new();
    for expert in experts_of(&config) {
        let hash = blocks
            .experts
            .get(&expert)
            .ok_or_else(|| PolError::from(blyan_moe::MoeError::MissingExpert { expert }))?;
        experts.push((expert, verified_tensors(source, *hash)?));
    }
    let tokenizer = Tokenizer::from_json(document.tokenizer_json.as_bytes())?;
    let payloads = PayloadSource::new(blocks.meta, &meta_header, document, shared, experts)?;
    let model = Model::load(&config, Arc::new(payloads), ModelOptions::default())?;
    Ok((model, tokenizer))
}

/// Loss of the base model and of the candidate on the batch `seed` draws from `pool`
/// (tokenized with the base model's tokenizer). On failure, the base loss when it was measured
/// (so the caller can tell a candidate that does not load from a base that does not).
pub fn evaluate_pair(
    source: &dyn BlockSource,
    base: &ModelBlocks,
    candidate: &ModelBlocks,
    pool: &EvalPool,
    seed: [u8; 32],
    spec: &EvalSpec,
) -> Result<Losses, (Option<LossMicros>, PolError)> {
    let mut losses = evaluate_pair_on(source, base, candidate, &[pool], seed, spec)?;
    Ok(losses.remove(0))
}

/// [`evaluate_pair`] on each of `pools` (one batch per pool, each drawn by `seed`), loading
/// each model once. On failure, the base loss on the first pool when it was measured.
pub fn evaluate_pair_on(
    source: &dyn BlockSource,
    base: &ModelBlocks,
    candidate: &ModelBlocks,
    pools: &[&EvalPool],
    seed: [u8; 32],
    spec: &EvalSpec,
) -> Result<Vec<Losses>, (Option<LossMicros>, PolError)> {
    let (mut base_model, tokenizer) = load_model(source, base).map_err(|error| (None, error))?;
    let end_of_text = base_model.config().eos_token_ids().first().copied();
    let mut batches = Vec::with_capacity(pools.len());
    for pool in pools {
        let tokens = pool
            .tokens(&tokenizer, end_of_text)
            .map_err(|error| (None, error))?;
        let starts = draw(&tokens, seed, spec).map_err(|error| (None, error))?;
        batches.push((tokens, starts));
    }
    let positions = spec.positions as usize;
    let loss =
        |model: &mut Model, (tokens, starts): &(Vec<u32>, Vec<usize>)| -> Result<LossMicros> {
            Ok(loss_micros(windows_loss(
                model, tokens, starts, positions, EVAL_BATCH,
            )?))
        };
    let mut base_losses = Vec::with_capacity(batches.len());
    for batch in &batches {
        base_losses.push(loss(&mut base_model, batch).map_err(|error| (None, error))?);
    }
    drop(base_model);
    let first = base_losses.first().copied();
    let (mut candidate_model, _) = load_model(source, candidate).map_err(|error| (first, error))?;
    batches
        .iter()
        .zip(base_losses)
        .map(|(batch, base)| {
            Ok(Losses {
                base,
                candidate: loss(&mut candidate_model, batch).map_err(|error| (first, error))?,
            })
        })
        .collect()
}
