//! The Proof-of-Learning claim `upload --node` makes after it wrote candidate blocks to a node
//! that certifies: the author's own evaluation of the candidate against the served model on
//! the public draw of the evaluation pool, the data commitment, and the claim block; with
//! `--wait`, the claim's outcome.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use blyan_api_types::{PolClaimDetail, PolClaimInfo, PolStatus};
use blyan_chain::{AuthorKey, BlockHash};
use blyan_client::{NodeBlocks, NodeClient};
use blyan_moe::{ExpertName, read_corpus};
use blyan_pol::{EvalPool, ModelBlocks, PolRecord, build_claim};
use clap::Args;

/// How `upload --node` claims what it wrote.
#[derive(Debug, Args)]
pub(crate) struct ClaimArgs {
    /// The training data the candidate was trained on (files or directories): the claim
    /// commits to its blake3. Without it, the claim commits to no data.
    #[arg(long = "data", value_name = "PATH")]
    data: Vec<PathBuf>,
    /// The public evaluation pool (the node's `pol.eval.corpus`); default: the shipped pool.
    #[arg(long = "eval-corpus", value_name = "PATH")]
    eval_corpus: Vec<PathBuf>,
    /// After claiming, wait for the outcome (up to this many seconds) and exit 0 only when the
    /// candidate is accepted.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "600")]
    pub(crate) wait: Option<u64>,
}

/// The blake3 (hex) of the texts under `paths`, in the order `read_corpus` reads them (each
/// text's length, then its bytes); of nothing when `paths` is empty.
fn data_commitment(paths: &[PathBuf]) -> anyhow::Result<String> {
    let mut hasher = blake3::Hasher::new_derive_key("blyan-pol 1 training data");
    if !paths.is_empty() {
        for document in read_corpus(paths)?.documents {
            hasher.update(&(document.text.len() as u64).to_le_bytes());
            hasher.update(document.text.as_bytes());
        }
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// Claims `candidates` (blocks `upload` just wrote to the node) when the node certifies;
/// `Ok(None)` when it does not (its mode is `pow`: the blocks are served already).
pub(crate) fn claim(
    client: &NodeClient,
    key: &AuthorKey,
    candidates: Vec<BlockHash>,
    args: &ClaimArgs,
) -> anyhow::Result<Option<BlockHash>> {
    let status: PolStatus = client
        .get_json("/pol/status")?
        .context("the node has no /pol/status")?;
    let Some(eval) = status.eval.clone() else {
        return Ok(None);
    };
    if candidates.is_empty() {
        return Ok(None);
    }
    let served = status
        .served
        .clone()
        .context("the node serves no model to improve")?;
    let mut paths = args.eval_corpus.clone();
    if paths.is_empty() {
        paths.push(blyan_moe::shipped_model_dir().join("eval"));
    }
    let pool = EvalPool::new(read_corpus(&paths)?.documents)?;
    let mut experts = std::collections::BTreeMap::new();
    for (name, block) in &served.experts {
        experts.insert(ExpertName::parse(name)?, *block);
    }
    let base = ModelBlocks {
        meta: served.meta,
        experts,
    };
    let blocks = NodeBlocks::new(client);
    // The author's pool may be only the public part of the network's: its claim is what it can
    // measure; validators measure on the whole pool.
    let spec = pool.spec(eval.windows, eval.positions);
    let claim = build_claim(
        &blocks,
        &base,
        candidates,
        &pool,
        &spec,
        data_commitment(&args.data)?,
    )
    .context("evaluating the candidate against the served model")?;
    let hash = client
        .post_record(&PolRecord::Claim(claim.clone()), key)
        .context("sending the claim")?;
    println!(
        "claim {hash}: {} candidate block(s) on model {}; claimed loss {} -> {} micro-nats ({} bps); bond {} BLY locked",
        claim.candidates.len(),
        claim.base_model,
        claim.claimed.base,
        claim.claimed.candidate,
        claim.claimed.delta_bps(),
        status.candidate_bond,
    );
    Ok(Some(hash))
}

/// Waits up to `seconds` for claim `claim` to be decided; its final state.
pub(crate) fn wait(
    client: &NodeClient,
    claim: BlockHash,
    seconds: u64,
) -> anyhow::Result<PolClaimInfo> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let detail: PolClaimDetail = client
            .get_json(&format!("/pol/claims/{claim}"))?
            .with_context(|| format!("the node does not know claim {claim}"))?;
        if detail.claim.certificate.is_some() {
            return Ok(detail.claim);
        }
        if Instant::now() >= deadline {
            bail!(
                "claim {claim} is still `{}` after {seconds} s",
                detail.claim.status
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Prints a decided claim: outcome, votes and payments.
pub(crate) fn report(claim: &PolClaimInfo) {
    println!("claim {}: {}", claim.claim, claim.status);
    for vote in &claim.votes {
        println!(
            "  vote by {}: {} (loss {} -> {}, {} bps)",
            vote.validator,
            vote.verdict,
            vote.losses.base,
            vote.losses.candidate,
            vote.losses.delta_bps
        );
    }
    if let Some(certificate) = &claim.certificate {
        println!(
            "  certificate {}: bond {}; improvement {} bps",
            certificate.block,
            certificate.bond,
            certificate
                .improvement_bps
                .map_or("-".to_owned(), |bps| bps.to_string())
        );
        for payment in &certificate.payments {
            println!(
                "  paid {} BLY to {} ({})",
                payment.amount, payment.to, payment.kind
            );
        }
    }
}
