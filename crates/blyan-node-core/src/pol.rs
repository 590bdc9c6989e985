//! Proof-of-Learning in the node (`docs/pol.md`): the node's key, the evaluation pool and the
//! rules ([`PolParams`]) the chain store's gate applies, and [`PolService`], which keeps claims
//! moving: as a validator (when the node's key is in the set) it seeds claims with beacons and
//! votes on them; as any node it appends the certificate once the votes decide, the expiry once
//! a claim is too old, the slashing evidence of a validator that voted twice; and it settles
//! every certificate in the ledger (bond refund or burn, rewards) by keys derived from the
//! certificate's hash, so a restart or a replay pays nothing twice.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use blyan_chain::{AuthorKey, BlockHash, ChainId, ChainStore, encode_block};
use blyan_ledger::{
    Address as LedgerAddress, Amount, BondOutcome, BondSettleRequest, DataRewardRequest,
    IdempotencyKey, LearningRewardRequest, Ledger as _, LedgerError, ValidationRewardRequest,
};
use blyan_moe::{TextDocument, read_corpus};
use blyan_pol::{
    Beacon, Certificate, ClaimState, EvalPool, HiddenSet, ModelBlocks, Outcome, Payment, PolParams,
    PolRecord, QaBook, QaCommit, QaKeeper, QaReveal, RecordBlock, Settlement, Slash, StoreBlocks,
    Tally, ValidatorStake, all_claims, evaluate_claim, fresh_randomness, now_ms, params_after,
    qa_epoch, qa_pool, record_block, reveal_opens, scan_records, settlement, slashed_validators,
};
use blyan_primitives::Address;

use crate::config::NodeConfig;
use crate::error::BoxError;
use crate::node::{Node, blocking};
use crate::service::{Service, Shutdown};
use crate::{Error, Result};

/// File of the node's own signing key under `data_dir`: it signs the blocks the node writes (an
/// untrained random model, beacons, votes, certificates, what the learner publishes).
pub const NODE_KEY_FILE: &str = "node.key";

/// Directory of the shipped evaluation pool inside the shipped model's directory.
pub const SHIPPED_EVAL_DIR: &str = "eval";

/// Reads the node's key from `data_dir`, creating it (owner-only) on first use.
pub fn node_key(data_dir: &Path) -> Result<AuthorKey> {
    std::fs::create_dir_all(data_dir).map_err(|source| Error::DataFile {
        path: data_dir.to_owned(),
        source,
    })?;
    let path = data_dir.join(NODE_KEY_FILE);
    let key_error = |source| Error::NodeKey {
        path: path.clone(),
        source: Box::new(source),
    };
    if path.exists() {
        return AuthorKey::read_file(&path).map_err(key_error);
    }
    let key = AuthorKey::generate();
    key.write_file(&path).map_err(key_error)?;
    tracing::info!(address = %key.address(), path = %path.display(), "created the node's key");
    Ok(key)
}

/// Directory under `data_dir` where a validator keeps each epoch's hidden QA set.
pub const QA_DIR: &str = "qa";

/// The public evaluation pool `pol.eval` names: its corpus (the shipped pool when empty), files
/// in name order within directories.
pub fn eval_pool(config: &NodeConfig) -> Result<EvalPool> {
    let eval = &config.pol.eval;
    let mut paths = eval.corpus.clone();
    if paths.is_empty() {
        let shipped = config
            .model
            .shipped_dir
            .clone()
            .unwrap_or_else(blyan_moe::shipped_model_dir);
        paths.push(shipped.join(SHIPPED_EVAL_DIR));
    }
    let read = read_corpus(&paths).map_err(|source| Error::Learning {
        what: "reading the evaluation pool",
        source,
    })?;
    let documents: Vec<TextDocument> = read.documents;
    EvalPool::new(documents).map_err(|source| Error::Pol {
        what: "building the evaluation pool",
        source: Box::new(source),
    })
}

/// The rules of `config` with the validator set it names (the node's own address with stake 1
/// when empty) and the evaluation of `pool`.
pub fn pol_params(config: &NodeConfig, node: Address, pool: &EvalPool) -> PolParams {
    let pol = &config.pol;
    let validators = if pol.validators.is_empty() {
        vec![ValidatorStake {
            address: node,
            stake: 1,
        }]
    } else {
        pol.validators.clone()
    };
    PolParams {
        mode: pol.mode,
        validators,
        threshold_bps: pol.threshold_bps(),
        tolerance_micros: pol.tolerance_micros(),
        expiry_blocks: pol.expiry_blocks,
        eval: pool.spec(pol.eval.windows, pol.eval.positions),
        qa_epoch_ms: pol.qa.epoch_ms,
    }
}

/// The validator's hidden QA documents `pol.qa` names, kept under `data_dir/qa`; `None` when
/// it names none.
pub fn qa_keeper(config: &NodeConfig) -> Result<Option<QaKeeper>> {
    let qa = &config.pol.qa;
    if qa.documents.is_empty() {
        return Ok(None);
    }
    let read = read_corpus(&qa.documents).map_err(|source| Error::Learning {
        what: "reading the hidden QA documents",
        source,
    })?;
    let keeper = QaKeeper::new(
        &read.documents,
        config.data_dir.join(QA_DIR),
        usize::try_from(qa.set_bytes).unwrap_or(usize::MAX),
    )
    .map_err(pol_error("reading the hidden QA documents"))?;
    Ok(Some(keeper))
}

/// What the node needs to take part in Proof-of-Learning.
#[derive(Debug)]
pub struct PolContext {
    /// The rules (the chain store's gate applies the same).
    pub params: PolParams,
    /// The evaluation pool.
    pub pool: EvalPool,
    /// The node's key.
    pub key: AuthorKey,
    /// Proof-of-work bits the node's blocks need.
    pub pow_bits: u32,
    /// Torch threads evaluations run with.
    pub threads: u32,
    /// The validator's hidden QA documents and sets, when it keeps them.
    pub qa: Option<QaKeeper>,
}

impl PolContext {
    /// Reads the pool and the key of `config`; `None` in `pow` mode, where nothing is
    /// certified.
    pub fn load(config: &NodeConfig) -> Result<Option<Self>> {
        if !config.pol.mode.certifies() {
            return Ok(None);
        }
        let key = node_key(&config.data_dir)?;
        let pool = eval_pool(config)?;
        let params = pol_params(config, key.address(), &pool);
        Ok(Some(Self {
            params,
            pool,
            key,
            pow_bits: config.chain.pow_difficulty_bits,
            threads: config.pol.eval.threads,
            qa: qa_keeper(config)?,
        }))
    }

    /// Whether the node's key is a validator with stake.
    pub fn is_validator(&self) -> bool {
        self.params.stake_of(self.key.address()) > 0
    }
}

/// What one pass of the service did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PolTick {
    /// Beacons appended.
    pub beacons: usize,
    /// Votes appended.
    pub votes: usize,
    /// Certificates appended.
    pub certificates: usize,
    /// Slashing evidence appended.
    pub slashes: usize,
    /// Certificates settled in the ledger this pass.
    pub settled: usize,
    /// Hidden-QA commits and reveals appended.
    pub qa_records: usize,
}

/// The node's Proof-of-Learning service: see the module documentation.
#[derive(Debug, Default)]
pub struct PolService;

impl Service for PolService {
    fn name(&self) -> &'static str {
        "pol"
    }

    async fn run(self, node: Arc<Node>, shutdown: Shutdown) -> std::result::Result<(), BoxError> {
        let Some(context) = node.pol().cloned() else {
            shutdown.requested().await;
            return Ok(());
        };
        let period = Duration::from_millis(node.config().pol.interval_ms);
        let mut settled = BTreeSet::new();
        tracing::info!(
            validator = context.is_validator(),
            address = %context.key.address(),
            pool = context.pool.commitment(),
            "proof of learning running"
        );
        loop {
            if shutdown.is_requested() {
                return Ok(());
            }
            if let Err(error) = tick(&node, &context, &mut settled).await {
                tracing::warn!(%error, "proof-of-learning pass failed; retrying");
            }
            tokio::select! {
                () = shutdown.clone().requested() => return Ok(()),
                () = tokio::time::sleep(period) => {}
            }
        }
    }
}

/// One pass of [`PolService`]: seed, vote, certify, expire, slash, settle. `settled` holds the
/// certificates this process already settled (the ledger's idempotency keys make a repeat
/// harmless anyway). Tests and tools drive Proof-of-Learning step by step with it.
pub async fn tick(
    node: &Arc<Node>,
    context: &Arc<PolContext>,
    settled: &mut BTreeSet<BlockHash>,
) -> Result<PolTick> {
    let mut done = PolTick::default();
    let chain = node.chain().cloned().ok_or(Error::ChainUnavailable)?;
    if context.qa.is_some() {
        let qa_records = {
            let chain = Arc::clone(&chain);
            let context = Arc::clone(context);
            blocking("planning hidden QA sets", move || {
                plan_qa(&chain, &context, now_ms())
            })
            .await??
        };
        for record in qa_records {
            let kind = record.type_name();
            submit_record(node, &chain, context, &record).await?;
            tracing::info!(kind, "hidden QA set record appended");
            done.qa_records += 1;
        }
    }
    let planned = {
        let chain = Arc::clone(&chain);
        let context = Arc::clone(context);
        blocking("planning proof of learning", move || plan(&chain, &context)).await??
    };
    let mut plan_now = planned;
    if !plan_now.beacons.is_empty() {
        for record in std::mem::take(&mut plan_now.beacons) {
            submit_record(node, &chain, context, &record).await?;
            done.beacons += 1;
        }
        // The claims just seeded are to vote on in this pass too.
        let chain = Arc::clone(&chain);
        let context = Arc::clone(context);
        plan_now = blocking("planning proof of learning", move || plan(&chain, &context)).await??;
    }
    let plan = plan_now;
    {
        for (claim, state) in plan.to_vote {
            let chain_for_eval = Arc::clone(&chain);
            let context_for_eval = Arc::clone(context);
            let hidden = plan.hidden.clone();
            let vote = blocking("evaluating a claim", move || {
                let _threads = EvalThreads::set(context_for_eval.params_threads());
                let base = ModelBlocks::served(&chain_for_eval)?;
                let beacon = state
                    .beacon
                    .as_ref()
                    .map(|beacon| beacon.hash)
                    .unwrap_or(BlockHash::ZERO);
                evaluate_claim(
                    &StoreBlocks(&chain_for_eval),
                    &context_for_eval.params,
                    &context_for_eval.pool,
                    hidden.as_ref().map(|(commit, pool)| HiddenSet {
                        commit: *commit,
                        pool,
                    }),
                    claim,
                    &state.claim,
                    beacon,
                    &base,
                )
            })
            .await?
            .map_err(pol_error("evaluating a claim"))?;
            tracing::info!(%claim, verdict = vote.verdict.name(), base = vote.losses.base, candidate = vote.losses.candidate, "voting");
            submit_record(node, &chain, context, &PolRecord::Vote(vote)).await?;
            done.votes += 1;
        }
    }
    // Decide what the votes on chain now decide (including the votes just appended).
    let decisions = {
        let chain = Arc::clone(&chain);
        let context = Arc::clone(context);
        blocking("deciding claims", move || decide(&chain, &context)).await??
    };
    for record in decisions.certificates {
        match submit_record(node, &chain, context, &record).await {
            Ok(_) => done.certificates += 1,
            Err(Error::BlockRefused(error)) => {
                tracing::info!(%error, "a certificate was refused (another decided first?)");
            }
            Err(error) => return Err(error),
        }
    }
    for record in decisions.slashes {
        submit_record(node, &chain, context, &record).await?;
        done.slashes += 1;
    }
    done.settled = settle_all(node, &chain, context, settled).await?;
    Ok(done)
}

/// Torch's thread count set for an evaluation (results are bit-exact at one count only) and
/// put back when dropped, so chat keeps the node's own count. Torch's pool is process-wide:
/// a chat generating meanwhile runs with the evaluation's count.
struct EvalThreads(i32);

impl EvalThreads {
    fn set(threads: i32) -> Self {
        let previous = tch::get_num_threads();
        tch::set_num_threads(threads);
        Self(previous)
    }
}

impl Drop for EvalThreads {
    fn drop(&mut self) {
        tch::set_num_threads(self.0);
    }
}

impl PolContext {
    fn params_threads(&self) -> i32 {
        // `pol.eval.threads` is validated to 1..=256.
        i32::try_from(self.threads).unwrap_or(1)
    }
}

/// What a pass will append before evaluating.
struct Plan {
    beacons: Vec<PolRecord>,
    to_vote: Vec<(BlockHash, ClaimState)>,
    /// The validator's hidden QA set for the epoch: its commit and text.
    hidden: Option<(BlockHash, EvalPool)>,
}

/// Whether the node's key validates under the set in force after `records` (it may have
/// changed on the chain since the node started) and is not slashed.
fn validating(context: &PolContext, records: &[RecordBlock]) -> bool {
    let me = context.key.address();
    params_after(&context.params, records).stake_of(me) > 0
        && !slashed_validators(records).contains(&me)
}

/// The hidden-QA records a validator owes at block time `now_ms`: the reveal of every epoch of
/// its that closed (its set read back from `data_dir/qa`), and the commit of the epoch now when
/// it has none (the set drawn and stored first, so a crash after the commit still reveals).
fn plan_qa(chain: &ChainStore, context: &PolContext, now_ms: u64) -> Result<Vec<PolRecord>> {
    let Some(keeper) = &context.qa else {
        return Ok(Vec::new());
    };
    let records = scan_records(chain, 1).map_err(pol_error("reading records"))?;
    let me = context.key.address();
    let book = QaBook::from_records(&records);
    let epoch_ms = context.params.qa_epoch_ms;
    let mut planned = Vec::new();
    for state in book.commits().filter(|state| state.author == me) {
        if state.reveal.is_some() || now_ms < reveal_opens(state.commit.epoch, epoch_ms) {
            continue;
        }
        match keeper.stored(state.commit.epoch) {
            Ok(Some(set)) if set.commitment == state.commit.commitment => {
                planned.push(PolRecord::QaReveal(QaReveal {
                    commit: state.block,
                    documents: set.documents,
                }));
            }
            Ok(_) => tracing::error!(
                commit = %state.block,
                epoch = state.commit.epoch,
                "the hidden QA set of this commit is not stored here: it cannot be revealed, and the epoch's votes will not count"
            ),
            Err(error) => tracing::error!(commit = %state.block, %error, "reading a hidden QA set"),
        }
    }
    let epoch = qa_epoch(now_ms, epoch_ms);
    if validating(context, &records) && book.commit_of(me, epoch).is_none() {
        match keeper
            .set_for(epoch, &book)
            .map_err(pol_error("drawing a hidden QA set"))?
        {
            Some(set) => planned.push(PolRecord::QaCommit(QaCommit {
                epoch,
                commitment: set.commitment,
            })),
            None => tracing::warn!(
                epoch,
                "the hidden QA documents are used up: votes measure the public pool only"
            ),
        }
    }
    Ok(planned)
}

/// The validator's hidden set for votes appended at `now_ms`: its commit of the epoch (or of
/// the one before, not revealed yet) and the stored text.
fn hidden_set(
    context: &PolContext,
    book: &QaBook,
    now_ms: u64,
) -> Result<Option<(BlockHash, EvalPool)>> {
    let Some(keeper) = &context.qa else {
        return Ok(None);
    };
    let me = context.key.address();
    let epoch = qa_epoch(now_ms, context.params.qa_epoch_ms);
    let commit = [epoch, epoch.saturating_sub(1)]
        .into_iter()
        .filter_map(|epoch| book.commit_of(me, epoch))
        .find(|state| state.reveal.is_none());
    let Some(commit) = commit else {
        return Ok(None);
    };
    let Some(set) = keeper
        .stored(commit.commit.epoch)
        .map_err(pol_error("reading a hidden QA set"))?
        .filter(|set| set.commitment == commit.commit.commitment)
    else {
        return Ok(None);
    };
    let pool = qa_pool(&set.documents).map_err(pol_error("reading a hidden QA set"))?;
    Ok(Some((commit.block, pool)))
}

fn plan(chain: &ChainStore, context: &PolContext) -> Result<Plan> {
    let records = scan_records(chain, 1).map_err(pol_error("reading records"))?;
    let me = context.key.address();
    if !validating(context, &records) {
        return Ok(Plan {
            beacons: Vec::new(),
            to_vote: Vec::new(),
            hidden: None,
        });
    }
    let claims = all_claims(chain).map_err(pol_error("reading claims"))?;
    let mut unseeded = Vec::new();
    let mut to_vote = Vec::new();
    for state in claims {
        if state.certificate.is_some() {
            continue;
        }
        match &state.beacon {
            None => unseeded.push(state.hash()),
            Some(_) => {
                if !state.votes.iter().any(|(block, _)| block.author == me) {
                    to_vote.push((state.hash(), state));
                }
            }
        }
    }
    let beacons = unseeded
        .chunks(blyan_pol::BEACON_CLAIMS_MAX)
        .map(|claims| {
            PolRecord::Beacon(Beacon {
                claims: claims.to_vec(),
                randomness: fresh_randomness(),
            })
        })
        .collect();
    let hidden = if to_vote.is_empty() {
        None
    } else {
        hidden_set(context, &QaBook::from_records(&records), now_ms())?
    };
    Ok(Plan {
        beacons,
        to_vote,
        hidden,
    })
}

/// Certificates and slashing evidence the chain's records now call for.
struct Decisions {
    certificates: Vec<PolRecord>,
    slashes: Vec<PolRecord>,
}

fn decide(chain: &ChainStore, context: &PolContext) -> Result<Decisions> {
    let records = scan_records(chain, 1).map_err(pol_error("reading records"))?;
    let params = &params_after(&context.params, &records);
    let slashed = slashed_validators(&records);
    let invalid = QaBook::from_records(&records).invalid_commits(now_ms(), params.qa_epoch_ms);
    let claims = all_claims(chain).map_err(pol_error("reading claims"))?;
    let tip = chain.tip(ChainId::Dataset).height;
    let mut accepted = Vec::new();
    let mut certificates = Vec::new();
    let mut slashes = Vec::new();
    for state in &claims {
        if state.certificate.is_some() {
            continue;
        }
        let tally = Tally::count(params, &state.votes, &slashed, &invalid);
        for validator in &tally.equivocators {
            let mut theirs = state
                .votes
                .iter()
                .filter(|(block, _)| block.author == *validator)
                .map(|(block, _)| block.hash);
            if let (Some(first), Some(second)) = (theirs.next(), theirs.next()) {
                slashes.push(PolRecord::Slash(Slash {
                    validator: *validator,
                    claim: state.hash(),
                    votes: [first, second],
                }));
            }
        }
        match tally.outcome(params) {
            Some(Outcome::Accepted) => accepted.push((
                tally.candidate_loss().unwrap_or(u64::MAX),
                state.hash(),
                tally.accepts.iter().map(|vote| vote.0).collect::<Vec<_>>(),
            )),
            Some(outcome) => certificates.push(PolRecord::Certificate(Certificate {
                claim: state.hash(),
                outcome,
                votes: tally.refusals.iter().map(|vote| vote.0).collect(),
            })),
            None if tip.saturating_sub(state.block.height) + 1 >= params.expiry_blocks => {
                certificates.push(PolRecord::Certificate(Certificate {
                    claim: state.hash(),
                    outcome: Outcome::Expired,
                    votes: Vec::new(),
                }));
            }
            None => {}
        }
    }
    // The best accepted candidate first: lowest loss, then lowest hash.
    accepted.sort();
    let mut certificates: Vec<PolRecord> = accepted
        .into_iter()
        .map(|(_, claim, votes)| {
            PolRecord::Certificate(Certificate {
                claim,
                outcome: Outcome::Accepted,
                votes,
            })
        })
        .chain(certificates)
        .collect();
    certificates.dedup();
    let mut seen = BTreeSet::new();
    slashes.retain(|record| match record {
        PolRecord::Slash(slash) => {
            !slashed.contains(&slash.validator) && seen.insert(slash.validator)
        }
        _ => false,
    });
    Ok(Decisions {
        certificates,
        slashes,
    })
}

/// Writes `record` in a block signed by the node's key on chain D's tip and submits it like
/// any block (so the node reacts to it as to one received), retrying on a moved tip.
async fn submit_record(
    node: &Arc<Node>,
    chain: &Arc<ChainStore>,
    context: &Arc<PolContext>,
    record: &PolRecord,
) -> Result<BlockHash> {
    for _ in 0..8 {
        let wire = {
            let chain = Arc::clone(chain);
            let context = Arc::clone(context);
            let record = record.clone();
            blocking("writing a proof-of-learning block", move || {
                let parent = chain.tip(ChainId::Dataset);
                let mut not_before = 0;
                for dependency in record
                    .required_dependencies()
                    .into_iter()
                    .chain(std::iter::once(parent.hash))
                {
                    if let Some(header) = chain.header(&dependency)? {
                        not_before = not_before.max(header.timestamp_ms);
                    }
                }
                let (header, payload) =
                    record_block(&parent, not_before, &record, &context.key, context.pow_bits);
                Ok::<_, blyan_chain::Error>(encode_block(&header, &payload))
            })
            .await?
            .map_err(Error::ChainFailed)?
        };
        match node.submit_block(wire).await {
            Err(Error::BlockRefused(blyan_chain::Error::Fork { .. })) => continue,
            Err(Error::BlockRefused(blyan_chain::Error::TimestampBeforeParent { .. })) => continue,
            other => return other.map(|(hash, _)| hash),
        }
    }
    Err(Error::Task {
        what: "writing a proof-of-learning block",
        reason: "chain D's tip kept moving".into(),
    })
}

/// Settles every certificate on chain not yet settled by this process.
async fn settle_all(
    node: &Arc<Node>,
    chain: &Arc<ChainStore>,
    context: &Arc<PolContext>,
    settled: &mut BTreeSet<BlockHash>,
) -> Result<usize> {
    let Some(ledger) = node.ledger().cloned() else {
        return Ok(0);
    };
    let pending = {
        let chain = Arc::clone(chain);
        let context = Arc::clone(context);
        let known = settled.clone();
        let node = Arc::clone(node);
        blocking("reading certificates", move || {
            let mut pending = Vec::new();
            let records = scan_records(&chain, 1).map_err(pol_error("reading certificates"))?;
            let view = crate::datasets::node_gate_view(&node, &chain)?;
            for record in &records {
                if matches!(record.record, PolRecord::Certificate(_))
                    && !known.contains(&record.hash)
                {
                    let plan = crate::datasets::with_credit(view.as_ref(), |credit| {
                        settlement(&chain, &context.params, record, &records, credit)
                    });
                    pending.push(plan.map_err(pol_error("reading certificates"))?);
                }
            }
            Ok::<_, Error>(pending)
        })
        .await??
    };
    let mut count = 0;
    for plan in pending {
        apply_settlement(&ledger, &plan).await?;
        settled.insert(plan.certificate);
        count += 1;
    }
    Ok(count)
}

fn key(text: String) -> Result<IdempotencyKey> {
    IdempotencyKey::new(text).map_err(|source| Error::Ledger {
        what: "building an idempotency key",
        source: Box::new(source),
    })
}

/// Applies one certificate's bond settlement and payments; each is idempotent by its key.
pub async fn apply_settlement(ledger: &blyan_ledger::AnyLedger, plan: &Settlement) -> Result<()> {
    let outcome = match plan.bond {
        blyan_pol::BondAction::Refund => BondOutcome::Refund,
        blyan_pol::BondAction::Burn => BondOutcome::Burn,
    };
    let bond = ledger
        .settle_bond(BondSettleRequest {
            key: key(format!("pol-settle:{}", plan.certificate))?,
            bond: key(blyan_pol::bond_key(plan.claim))?,
            outcome,
            memo: format!("claim {} {}", plan.claim, plan.outcome.name()),
        })
        .await;
    match bond {
        Ok(_) => {}
        Err(LedgerError::UnknownBond { .. }) => {
            tracing::info!(claim = %plan.claim, "no bond was locked for this claim on this node");
        }
        Err(error) if error.is_refusal() => {
            tracing::warn!(claim = %plan.claim, %error, "the claim's bond was not settled");
        }
        Err(error) => return Err(ledger_failed(error)),
    }
    for payment in &plan.payments {
        let paid = match payment {
            Payment::Learning {
                key: text,
                to,
                improvement_bps,
            } => ledger
                .reward_learning(LearningRewardRequest {
                    key: key(text.clone())?,
                    learner: *to,
                    improvement_bps: *improvement_bps,
                })
                .await
                .map(|_| ()),
            Payment::Validation {
                key: text,
                to,
                samples,
            } => ledger
                .reward_validation(ValidationRewardRequest {
                    key: key(text.clone())?,
                    validator: *to,
                    samples: *samples,
                })
                .await
                .map(|_| ()),
            Payment::Data {
                key: text,
                to,
                samples,
            } => ledger
                .reward_data(DataRewardRequest {
                    key: key(text.clone())?,
                    contributor: *to,
                    samples: *samples,
                    memo: format!("data used by claim {}", plan.claim),
                })
                .await
                .map(|_| ()),
        };
        match paid {
            Ok(()) => {}
            Err(error) if error.is_refusal() => {
                tracing::warn!(certificate = %plan.certificate, %error, "a reward was refused");
            }
            Err(error) => return Err(ledger_failed(error)),
        }
    }
    tracing::info!(
        certificate = %plan.certificate,
        claim = %plan.claim,
        outcome = plan.outcome.name(),
        payments = plan.payments.len(),
        "certificate settled"
    );
    Ok(())
}

fn ledger_failed(source: LedgerError) -> Error {
    Error::Ledger {
        what: "settling proof of learning",
        source: Box::new(source),
    }
}

fn pol_error(what: &'static str) -> impl Fn(blyan_pol::PolError) -> Error {
    move |source| Error::Pol {
        what,
        source: Box::new(source),
    }
}

/// Locks the bond of claim `claim` by `author` (`tokenomics.pol.candidate_bond`), before the
/// claim is appended. A refusal (insufficient funds) is [`Error::BondUnpaid`].
pub(crate) async fn lock_bond(
    ledger: &blyan_ledger::AnyLedger,
    claim: BlockHash,
    author: LedgerAddress,
) -> Result<()> {
    let amount: Amount = ledger.tokenomics().pol.candidate_bond;
    ledger
        .lock_bond(blyan_ledger::BondLockRequest {
            key: key(blyan_pol::bond_key(claim))?,
            owner: author,
            amount,
            memo: format!("bond of claim {claim}"),
        })
        .await
        .map(|_| ())
        .map_err(|source| {
            if source.is_refusal() {
                Error::BondUnpaid {
                    claim,
                    source: Box::new(source),
                }
            } else {
                ledger_failed(source)
            }
        })
}

/// Gives back the bond of a claim the chain then refused.
pub(crate) async fn undo_bond(ledger: &blyan_ledger::AnyLedger, claim: BlockHash) {
    let undo = async {
        ledger
            .settle_bond(BondSettleRequest {
                key: key(format!("pol-undo:{claim}"))?,
                bond: key(blyan_pol::bond_key(claim))?,
                outcome: BondOutcome::Refund,
                memo: format!("claim {claim} was not stored"),
            })
            .await
            .map_err(ledger_failed)
    };
    if let Err(error) = undo.await {
        tracing::error!(%claim, %error, "could not give back the bond of a refused claim");
    }
}

/// Claims `candidates` (blocks just stored as candidates on the node's chain) for `key`: the
/// author's own evaluation on the node's pool (public draw), then the claim, submitted like any
/// block (so the bond is locked from `key`'s account, [`Error::BondUnpaid`] when it cannot be).
/// What the learner does with what it publishes when the node certifies.
pub async fn claim_candidates(
    node: &Arc<Node>,
    key: &AuthorKey,
    candidates: Vec<BlockHash>,
    data_commitment: String,
) -> Result<BlockHash> {
    let context = node.pol().cloned().ok_or_else(|| Error::Task {
        what: "claiming candidates",
        reason: "the node runs no Proof-of-Learning (pol.mode is pow)".to_owned(),
    })?;
    let chain = node.chain().cloned().ok_or(Error::ChainUnavailable)?;
    let record = {
        let context = Arc::clone(&context);
        blocking("evaluating candidates", move || {
            let _threads = EvalThreads::set(context.params_threads());
            let base = ModelBlocks::served(&chain)?;
            let claim = blyan_pol::build_claim(
                &StoreBlocks(&chain),
                &base,
                candidates,
                &context.pool,
                &context.params.eval,
                data_commitment,
            )?;
            Ok::<_, blyan_pol::PolError>(PolRecord::Claim(claim))
        })
        .await?
        .map_err(pol_error("evaluating candidates"))?
    };
    let author = Arc::new(PolContext {
        params: context.params.clone(),
        pool: context.pool.clone(),
        key: key.clone(),
        pow_bits: context.pow_bits,
        threads: context.threads,
        qa: None,
    });
    let chain = node.chain().cloned().ok_or(Error::ChainUnavailable)?;
    submit_record(node, &chain, &author, &record).await
}
