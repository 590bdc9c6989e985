//! `blyan-validator run`: a validator daemon against a node's HTTP API. Each pass reads
//! `GET /pol/status`, seeds the claims still waiting for a beacon (fresh randomness appended
//! after them), and for every seeded claim it has not voted on: reads the claim
//! (`GET /pol/claims/{hash}`: the served model and the network's evaluation), fetches every
//! block it needs (each checked against its hash), re-runs the base and the candidate on the
//! batch the claim's beacon draws from its own copy of the evaluation pool (CPU, f32, a fixed
//! torch thread count), and sends a signed vote to `POST /blocks`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use blyan_api_types::{PolClaimDetail, PolStatus};
use blyan_chain::AuthorKey;
use blyan_client::{NodeBlocks, NodeClient};
use blyan_moe::{ExpertName, read_corpus};
use blyan_pol::{
    Beacon, EvalPool, ModelBlocks, PolMode, PolParams, PolRecord, Vote, evaluate_claim,
    fresh_randomness,
};
use clap::Args;

/// Arguments of `blyan-validator run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The node to validate for (`http://host:port`).
    #[arg(long, value_name = "URL")]
    node: String,
    /// The validator's key file (`blyan-miner keygen` writes one); its address must be in the
    /// node's validator set.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The public evaluation pool (files or directories); default: the shipped model's pool.
    #[arg(long = "eval-corpus", value_name = "PATH")]
    eval_corpus: Vec<PathBuf>,
    /// The validators' hidden evaluation set, added to the pool.
    #[arg(long = "eval-hidden", value_name = "PATH")]
    eval_hidden: Vec<PathBuf>,
    /// Torch threads the evaluation runs with (the network's `pol.eval.threads`).
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Milliseconds between passes.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Run one pass, print its votes as JSON lines, and exit.
    #[arg(long)]
    once: bool,
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<()> {
    let key = AuthorKey::read_file(&args.key)
        .with_context(|| format!("reading the key {}", args.key.display()))?;
    let mut paths = args.eval_corpus.clone();
    if paths.is_empty() {
        paths.push(blyan_moe::shipped_model_dir().join("eval"));
    }
    paths.extend(args.eval_hidden.iter().cloned());
    let pool = EvalPool::new(read_corpus(&paths)?.documents)?;
    tch::set_num_threads(i32::try_from(args.threads).context("--threads")?);
    let client = NodeClient::connect(&args.node)?;
    let blocks = NodeBlocks::new(&client);
    tracing::info!(address = %key.address(), node = %args.node, pool = pool.commitment(), "validator running");
    loop {
        match pass(&client, &blocks, &key, &pool) {
            Ok(votes) => {
                for vote in &votes {
                    tracing::info!(claim = %vote.claim, verdict = vote.verdict.name(), base = vote.losses.base, candidate = vote.losses.candidate, "voted");
                    if args.once {
                        println!(
                            "{}",
                            serde_json::json!({
                                "claim": vote.claim.to_string(),
                                "verdict": vote.verdict.name(),
                                "loss_base": vote.losses.base,
                                "loss_candidate": vote.losses.candidate,
                                "delta_bps": vote.losses.delta_bps(),
                            })
                        );
                    }
                }
            }
            Err(error) if args.once => return Err(error),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "validator pass failed; retrying")
            }
        }
        if args.once {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(args.interval_ms));
        // Blocks of models no longer served are not needed again.
        if blocks.len() > 4096 {
            blocks.clear();
        }
    }
}

/// One pass: a vote on every seeded claim this validator has not voted on.
fn pass(
    client: &NodeClient,
    blocks: &NodeBlocks<'_>,
    key: &AuthorKey,
    pool: &EvalPool,
) -> anyhow::Result<Vec<Vote>> {
    let me = key.address().to_string();
    let status: PolStatus = client
        .get_json("/pol/status")?
        .context("the node has no /pol/status: is it a Blyan node?")?;
    if !status
        .validators
        .iter()
        .any(|validator| validator.address == me)
    {
        bail!("{me} is not in the node's validator set");
    }
    // Seed the claims waiting for a beacon, then read the status again to vote on them.
    let unseeded: Vec<_> = status
        .claims
        .iter()
        .rev()
        .filter(|claim| claim.status == "awaiting_beacon")
        .map(|claim| claim.claim)
        .collect();
    let status = if unseeded.is_empty() {
        status
    } else {
        for claims in unseeded.chunks(blyan_pol::BEACON_CLAIMS_MAX) {
            let beacon = PolRecord::Beacon(Beacon {
                claims: claims.to_vec(),
                randomness: fresh_randomness(),
            });
            let hash = client.post_record(&beacon, key)?;
            tracing::info!(beacon = %hash, claims = claims.len(), "seeded claims");
        }
        client
            .get_json("/pol/status")?
            .context("the node has no /pol/status")?
    };
    let mut votes = Vec::new();
    for claim in status.claims.iter().rev() {
        if claim.status != "voting" || claim.votes.iter().any(|vote| vote.validator == me) {
            continue;
        }
        let detail: PolClaimDetail = client
            .get_json(&format!("/pol/claims/{}", claim.claim))?
            .with_context(|| format!("claim {} vanished", claim.claim))?;
        let vote = vote_on(client, blocks, key, pool, &status, &detail)?;
        votes.push(vote);
    }
    Ok(votes)
}

fn vote_on(
    client: &NodeClient,
    blocks: &NodeBlocks<'_>,
    key: &AuthorKey,
    pool: &EvalPool,
    status: &PolStatus,
    detail: &PolClaimDetail,
) -> anyhow::Result<Vote> {
    let eval = detail
        .eval
        .clone()
        .context("the node runs no Proof-of-Learning")?;
    if eval.pool != pool.commitment() {
        bail!(
            "this validator's evaluation pool ({}) is not the network's ({}): give the same --eval-corpus and --eval-hidden",
            pool.commitment(),
            eval.pool
        );
    }
    let claim_hash = detail.claim.claim;
    let beacon = detail.claim.beacon.context("the claim has no beacon yet")?;
    let (_, claim_payload) = blyan_pol::verified_raw(blocks, claim_hash)?;
    let PolRecord::Claim(claim) = PolRecord::from_payload(claim_hash, &claim_payload)? else {
        bail!("block {claim_hash} is not a claim");
    };
    let params = PolParams {
        mode: PolMode::Pol,
        validators: Vec::new(),
        threshold_bps: status.threshold_bps,
        tolerance_micros: status.loss_tolerance_micros,
        expiry_blocks: status.expiry_blocks,
        eval: pool.spec(eval.windows, eval.positions),
    };
    let mut experts = std::collections::BTreeMap::new();
    for (name, block) in &detail.served.experts {
        experts.insert(ExpertName::parse(name)?, *block);
    }
    let base = ModelBlocks {
        meta: detail.served.meta,
        experts,
    };
    let vote = evaluate_claim(blocks, &params, pool, claim_hash, &claim, beacon, &base)?;
    client.post_record(&PolRecord::Vote(vote.clone()), key)?;
    Ok(vote)
}
