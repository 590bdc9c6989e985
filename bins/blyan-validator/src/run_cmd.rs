//! `blyan-validator run`: a validator daemon against a node's HTTP API. Each pass reads
//! `GET /pol/status`, seeds the claims still waiting for a beacon (fresh randomness appended
//! after them), and for every seeded claim it has not voted on: reads the claim
//! (`GET /pol/claims/{hash}`: the served model and the network's evaluation), fetches every
//! block it needs (each checked against its hash), re-runs the base and the candidate on the
//! batch the claim's beacon draws from its own copy of the evaluation pool (CPU, f32, a fixed
//! torch thread count), and sends a signed vote to `POST /blocks`. With `--qa-documents` it
//! keeps a hidden QA set per epoch as the node's validator does (`docs/pol.md`): commits it,
//! measures every claim on it too, and reveals it once the epoch closed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use blyan_api_types::{PolClaimDetail, PolStatus};
use blyan_chain::{AuthorKey, BlockHash};
use blyan_client::{NodeBlocks, NodeClient};
use blyan_moe::{ExpertName, read_corpus};
use blyan_pol::{
    Beacon, EvalPool, HiddenSet, ModelBlocks, PolMode, PolParams, PolRecord, QaBook, QaCommit,
    QaKeeper, QaReveal, RecordBlock, Vote, evaluate_claim, fresh_randomness, now_ms, qa_epoch,
    qa_pool, reveal_opens,
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
    /// The validator's hidden QA documents (files or directories), kept off chain: a set per
    /// epoch is committed, evaluated with and revealed once the epoch closed.
    #[arg(long = "qa-documents", value_name = "PATH")]
    qa_documents: Vec<PathBuf>,
    /// Where each epoch's hidden set is kept until it is revealed.
    #[arg(long = "qa-dir", value_name = "DIR", default_value = "qa")]
    qa_dir: PathBuf,
    /// Bytes of text per epoch's hidden set.
    #[arg(long = "qa-set-bytes", default_value_t = 32768)]
    qa_set_bytes: usize,
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
    let pool = EvalPool::new(read_corpus(&paths)?.documents)?;
    let qa = if args.qa_documents.is_empty() {
        None
    } else {
        let documents = read_corpus(&args.qa_documents)?.documents;
        Some(QaKeeper::new(
            &documents,
            args.qa_dir.clone(),
            args.qa_set_bytes,
        )?)
    };
    tch::set_num_threads(i32::try_from(args.threads).context("--threads")?);
    let client = NodeClient::connect(&args.node)?;
    let blocks = NodeBlocks::new(&client);
    tracing::info!(address = %key.address(), node = %args.node, pool = pool.commitment(), "validator running");
    loop {
        match pass(&client, &blocks, &key, &pool, qa.as_ref()) {
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
                                "hidden_commit": vote.hidden.map(|hidden| hidden.commit.to_string()),
                                "hidden_delta_bps": vote.hidden.map(|hidden| hidden.losses.delta_bps()),
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

/// One pass: the hidden-QA records it owes, then a vote on every seeded claim this validator
/// has not voted on.
fn pass(
    client: &NodeClient,
    blocks: &NodeBlocks<'_>,
    key: &AuthorKey,
    pool: &EvalPool,
    qa: Option<&QaKeeper>,
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
    let to_vote = status.claims.iter().any(|claim| {
        claim.status == "voting" && !claim.votes.iter().any(|vote| vote.validator == me)
    });
    let hidden = match qa {
        Some(keeper) => qa_pass(client, blocks, key, keeper, &status, to_vote)?,
        None => None,
    };
    let mut votes = Vec::new();
    for claim in status.claims.iter().rev() {
        if claim.status != "voting" || claim.votes.iter().any(|vote| vote.validator == me) {
            continue;
        }
        let detail: PolClaimDetail = client
            .get_json(&format!("/pol/claims/{}", claim.claim))?
            .with_context(|| format!("claim {} vanished", claim.claim))?;
        let vote = vote_on(client, blocks, key, pool, hidden.as_ref(), &status, &detail)?;
        votes.push(vote);
    }
    Ok(votes)
}

/// A QA record block read from the node (hash-checked), for the book of what was revealed.
fn record_from(blocks: &NodeBlocks<'_>, block: BlockHash) -> anyhow::Result<RecordBlock> {
    let (header, payload) = blyan_pol::verified_raw(blocks, block)?;
    Ok(RecordBlock {
        hash: block,
        author: header.author,
        height: header.height,
        timestamp_ms: header.timestamp_ms,
        record: PolRecord::from_payload(block, &payload)?,
    })
}

/// The hidden-QA records this validator owes now (the reveal of each closed epoch, the commit of
/// the epoch now), appended; returns the set its votes measure on (when `to_vote`).
fn qa_pass(
    client: &NodeClient,
    blocks: &NodeBlocks<'_>,
    key: &AuthorKey,
    keeper: &QaKeeper,
    status: &PolStatus,
    to_vote: bool,
) -> anyhow::Result<Option<(BlockHash, EvalPool)>> {
    let me = key.address().to_string();
    let epoch_ms = status.qa_epoch_ms;
    if epoch_ms == 0 {
        bail!("the node reports no hidden-QA epoch: is it too old for --qa-documents?");
    }
    let now = now_ms();
    let mine: Vec<_> = status
        .qa
        .iter()
        .filter(|info| info.validator == me)
        .collect();
    for info in &mine {
        if info.reveal.is_some() || now < reveal_opens(info.epoch, epoch_ms) {
            continue;
        }
        match keeper.stored(info.epoch)? {
            Some(set) if set.commitment == info.commitment => {
                let reveal = PolRecord::QaReveal(QaReveal {
                    commit: info.commit,
                    documents: set.documents,
                });
                let hash = client.post_record(&reveal, key)?;
                tracing::info!(epoch = info.epoch, reveal = %hash, "revealed a hidden QA set");
            }
            _ => tracing::error!(
                epoch = info.epoch,
                commit = %info.commit,
                "this commit's hidden QA set is not stored here: it cannot be revealed"
            ),
        }
    }
    let epoch = qa_epoch(now, epoch_ms);
    let open = |info: &&&blyan_api_types::PolQaInfo| {
        info.reveal.is_none() && (info.epoch == epoch || info.epoch + 1 == epoch)
    };
    if let Some(info) = mine.iter().find(|info| info.epoch == epoch) {
        if !to_vote || !open(&info) {
            return Ok(None);
        }
    } else {
        // What anyone revealed is never drawn again.
        let mut records = Vec::new();
        for info in status.qa.iter().filter(|info| info.reveal.is_some()) {
            records.push(record_from(blocks, info.commit)?);
            records.push(record_from(blocks, info.reveal.expect("filtered"))?);
        }
        records.sort_by_key(|record| record.height);
        let book = QaBook::from_records(&records);
        match keeper.set_for(epoch, &book)? {
            Some(set) => {
                let commit = PolRecord::QaCommit(QaCommit {
                    epoch,
                    commitment: set.commitment.clone(),
                });
                let hash = client.post_record(&commit, key)?;
                tracing::info!(epoch, commit = %hash, "committed a hidden QA set");
                return Ok(if to_vote {
                    Some((hash, qa_pool(&set.documents)?))
                } else {
                    None
                });
            }
            None => {
                tracing::warn!(epoch, "the hidden QA documents are used up");
            }
        }
    }
    if !to_vote {
        return Ok(None);
    }
    let Some(info) = mine.iter().find(open) else {
        return Ok(None);
    };
    Ok(keeper
        .stored(info.epoch)?
        .filter(|set| set.commitment == info.commitment)
        .map(|set| qa_pool(&set.documents).map(|pool| (info.commit, pool)))
        .transpose()?)
}

fn vote_on(
    client: &NodeClient,
    blocks: &NodeBlocks<'_>,
    key: &AuthorKey,
    pool: &EvalPool,
    hidden: Option<&(BlockHash, EvalPool)>,
    status: &PolStatus,
    detail: &PolClaimDetail,
) -> anyhow::Result<Vote> {
    let eval = detail
        .eval
        .clone()
        .context("the node runs no Proof-of-Learning")?;
    if eval.pool != pool.commitment() {
        bail!(
            "this validator's evaluation pool ({}) is not the network's ({}): give the same --eval-corpus",
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
        qa_epoch_ms: status.qa_epoch_ms,
    };
    let mut experts = std::collections::BTreeMap::new();
    for (name, block) in &detail.served.experts {
        experts.insert(ExpertName::parse(name)?, *block);
    }
    let base = ModelBlocks {
        meta: detail.served.meta,
        experts,
    };
    let hidden = hidden.map(|(commit, pool)| HiddenSet {
        commit: *commit,
        pool,
    });
    let vote = evaluate_claim(
        blocks, &params, pool, hidden, claim_hash, &claim, beacon, &base,
    )?;
    client.post_record(&PolRecord::Vote(vote.clone()), key)?;
    Ok(vote)
}
