//! What a validator does with a claim, and the blocks every Proof-of-Learning actor writes:
//! the verdict rule, a vote from a re-evaluation, the author's own (claimed) evaluation, and
//! signed record blocks.

use std::time::{SystemTime, UNIX_EPOCH};

use blyan_chain::{AuthorKey, BlockHash, BlockHeader, BlockKind, ChainStore, ChainTip};
use blyan_moe::{
    Config, ExpertName, ExpertQuantization, PublishEvent, PublishOptions, WeightSource,
    publish_model,
};

use crate::error::Result;
use crate::eval::{
    BlockSource, EvalPool, ModelBlocks, evaluate_pair, evaluate_pair_on, verified_raw,
};
use crate::params::PolParams;
use crate::record::{Claim, EvalSpec, HiddenEval, Losses, PolRecord, Verdict, Vote, eval_seed};

/// The verdict on `measured` losses of a claim that claimed `claimed`: accept at or above the
/// threshold; below it, `not_reproduced` when the author claimed the threshold and
/// `below_threshold` when it did not.
pub fn verdict(params: &PolParams, claimed: &Losses, measured: &Losses) -> (Verdict, String) {
    let measured_bps = measured.delta_bps();
    let claimed_bps = claimed.delta_bps();
    let threshold = params.threshold_bps;
    if measured_bps >= threshold {
        (
            Verdict::Accept,
            format!("improvement {measured_bps} bps ≥ threshold {threshold} bps"),
        )
    } else if claimed_bps >= threshold {
        (
            Verdict::NotReproduced,
            format!(
                "claimed {claimed_bps} bps; the drawn batch shows {measured_bps} bps, below the threshold {threshold} bps"
            ),
        )
    } else {
        (
            Verdict::BelowThreshold,
            format!("improvement {measured_bps} bps < threshold {threshold} bps"),
        )
    }
}

/// The verdict of [`verdict`], checked against the validator's hidden QA set: an accepting
/// verdict becomes `overfit` when the hidden set shows less than half the threshold.
pub fn hidden_verdict(
    params: &PolParams,
    claimed: &Losses,
    measured: &Losses,
    hidden: Option<&Losses>,
) -> (Verdict, String) {
    let (public, detail) = verdict(params, claimed, measured);
    match hidden {
        Some(hidden) if public.accepts() => {
            let hidden_bps = hidden.delta_bps();
            let least = params.threshold_bps / 2;
            if hidden_bps < least {
                (
                    Verdict::Overfit,
                    format!(
                        "the drawn public batch shows {} bps, the hidden QA set {hidden_bps} bps, below half the threshold ({least} bps)",
                        measured.delta_bps()
                    ),
                )
            } else {
                (
                    public,
                    format!("{detail}; the hidden QA set shows {hidden_bps} bps"),
                )
            }
        }
        _ => (public, detail),
    }
}

/// A validator's hidden QA set for the epoch: its commit block and its text.
#[derive(Debug, Clone, Copy)]
pub struct HiddenSet<'a> {
    /// The validator's `qa_commit` block for the epoch.
    pub commit: BlockHash,
    /// The set, as an evaluation pool.
    pub pool: &'a EvalPool,
}

/// A claim's candidate blocks with their headers, fetched and verified from `source`.
pub fn candidate_headers(
    source: &dyn BlockSource,
    claim: &Claim,
) -> Result<Vec<(BlockHash, BlockHeader)>> {
    claim
        .candidates
        .iter()
        .map(|hash| Ok((*hash, verified_raw(source, *hash)?.0)))
        .collect()
}

/// Re-evaluates claim `claim_hash` as seeded by `beacon` on `pool` (and on the validator's
/// `hidden` QA set when it keeps one), against `base` (the model served), and writes the vote.
/// A candidate that does not load is voted `unloadable`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_claim(
    source: &dyn BlockSource,
    params: &PolParams,
    pool: &EvalPool,
    hidden: Option<HiddenSet<'_>>,
    claim_hash: BlockHash,
    claim: &Claim,
    beacon: BlockHash,
    base: &ModelBlocks,
) -> Result<Vote> {
    let spec = params.eval.clone();
    let seed = eval_seed(claim_hash, beacon);
    let candidate = match candidate_headers(source, claim) {
        Ok(headers) => base.with_candidates(&headers),
        Err(error) => {
            return Ok(unloadable(
                claim_hash,
                beacon,
                spec,
                None,
                &error.to_string(),
            ));
        }
    };
    let mut pools = vec![pool];
    pools.extend(hidden.map(|hidden| hidden.pool));
    match evaluate_pair_on(source, base, &candidate, &pools, seed, &spec) {
        Ok(measured) => {
            let losses = measured[0];
            let hidden = hidden.zip(measured.get(1)).map(|(set, losses)| HiddenEval {
                commit: set.commit,
                losses: *losses,
            });
            let (verdict, detail) = hidden_verdict(
                params,
                &claim.claimed,
                &losses,
                hidden.as_ref().map(|hidden| &hidden.losses),
            );
            Ok(Vote {
                claim: claim_hash,
                beacon,
                eval: spec,
                losses,
                verdict,
                detail,
                hidden,
            })
        }
        // The base must load: a validator that cannot run the served model has nothing to say.
        Err((None, error)) => Err(error),
        Err((Some(base_loss), error)) => Ok(unloadable(
            claim_hash,
            beacon,
            spec,
            Some(base_loss),
            &error.to_string(),
        )),
    }
}

fn unloadable(
    claim: BlockHash,
    beacon: BlockHash,
    eval: EvalSpec,
    base_loss: Option<u64>,
    reason: &str,
) -> Vote {
    Vote {
        claim,
        beacon,
        eval,
        losses: Losses {
            base: base_loss.unwrap_or(0),
            candidate: 0,
        },
        verdict: Verdict::Unloadable,
        detail: format!("the candidate does not load: {reason}"),
        hidden: None,
    }
}

/// The seed of an author's own evaluation of a candidate on base model `base_model`: public,
/// so anyone can re-run what a claim claims; validators use the beacon's seed instead.
pub fn claimed_seed(base_model: BlockHash) -> [u8; 32] {
    eval_seed(base_model, BlockHash::ZERO)
}

/// The author's evaluation of `candidate` against `base` on `pool` with the public seed of
/// [`claimed_seed`]: the `claimed` losses of a claim.
pub fn evaluate_for_claim(
    source: &dyn BlockSource,
    pool: &EvalPool,
    spec: &EvalSpec,
    base: &ModelBlocks,
    candidate: &ModelBlocks,
) -> Result<Losses> {
    evaluate_pair(source, base, candidate, pool, claimed_seed(base.meta), spec)
        .map_err(|(_, error)| error)
}

/// The claim of `candidates` (stored blocks) on the served model `base`: its losses as the
/// author measures them ([`evaluate_for_claim`] on `pool` under `spec`), and
/// `data_commitment`. What `blyan-miner upload` and the node's learner send.
pub fn build_claim(
    source: &dyn BlockSource,
    base: &ModelBlocks,
    candidates: Vec<BlockHash>,
    pool: &EvalPool,
    spec: &EvalSpec,
    data_commitment: String,
) -> Result<Claim> {
    let mut claim = Claim {
        candidates,
        base_model: base.meta,
        claimed: Losses {
            base: 0,
            candidate: 0,
        },
        data_commitment,
        data_blocks: Vec::new(),
    };
    let candidate = base.with_candidates(&candidate_headers(source, &claim)?);
    claim.claimed = evaluate_for_claim(source, pool, spec, base, &candidate)?;
    Ok(claim)
}

/// Publishes `weights` over the model `store` serves, keeping its model document, so only the
/// blocks whose payload changed are written (with the gate, expert versions and a meta block
/// are candidates). Returns the expert and meta blocks written: what a claim names.
pub fn publish_over_served(
    store: &ChainStore,
    key: &AuthorKey,
    weights: &dyn WeightSource,
    quantization: ExpertQuantization,
) -> Result<Vec<BlockHash>> {
    let (_, document) = blyan_moe::current_model(store)?;
    let config = Config::from_json(document.config_json.as_bytes())?;
    let mut written = Vec::new();
    publish_model(
        store,
        key,
        &config,
        document.files(),
        weights,
        &PublishOptions {
            expert_quantization: quantization,
            untrained: document.untrained,
            description: document.description.clone(),
        },
        &mut |event| {
            if let PublishEvent::Written { name, block, .. } = event
                && (name == "meta" || name.parse::<ExpertName>().is_ok())
            {
                written.push(*block);
            }
        },
    )?;
    Ok(written)
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// A signed `PolProof` block holding `record`, on chain D after `parent`, depending on the
/// record's required blocks, stamped now or at `not_before_ms` (the newest timestamp of the
/// parent and the dependencies), whichever is later, with proof of work of `pow_bits` when the
/// chain asks for it.
pub fn record_block(
    parent: &ChainTip,
    not_before_ms: u64,
    record: &PolRecord,
    key: &AuthorKey,
    pow_bits: u32,
) -> (BlockHeader, Vec<u8>) {
    let payload = record.to_payload();
    let mut header = BlockHeader::new_child(
        parent,
        BlockKind::PolProof,
        &payload,
        now_ms().max(not_before_ms),
    );
    header.depends_on = record.required_dependencies();
    header.author = key.address();
    if pow_bits > 0 {
        header.mine(pow_bits);
    }
    header.sign(key);
    (header, payload)
}

/// 32 fresh random bytes, hex: a beacon's randomness.
pub fn fresh_randomness() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}
