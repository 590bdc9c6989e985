//! The node's dataset service: what a contributor, a voter and a validator touch, from a
//! sample's submission to its contributor's payment (`docs/datasets.md`).
//!
//! - [`Node::submit_sample`]: builds the sample for a signed-in wallet (its `contributor`), runs
//!   the L0 screen against the node's kept index ([`GateState::screen_new`], equal to
//!   [`screen_l0`] over a fresh replay) and appends a `DatasetEntry` block signed by the node's
//!   key. A sample sent as a whole block ([`Node::submit_block`], `POST /blocks`) meets the same
//!   screen before it is appended.
//! - [`Node::commit_vote`] / [`Node::reveal_vote`]: L2 commit-reveal votes. A commit locks its
//!   stake in the ledger as a bond (`data-vote:<commit>`) before it is appended; the worker
//!   settles it once the reveal window closed: back to the voter when revealed, burned when not
//!   (a vote withheld or that does not open its commitment costs its stake).
//! - [`Node::submit_review`]: an L3 review signed by the node's key, refused unless that key is
//!   in the Proof-of-Learning validator set in force.
//! - [`DatasetService`]: scores new samples with the L1 [`Teacher`] in batches, off the request
//!   path, appending one teacher result per sample, and settles vote stakes; its progress is
//!   [`Node::dataset_progress`].
//! - [`DatasetContext::with_gates`]: chain D's gate state the node keeps ([`GateState`], module
//!   `gate_cache`), advanced from the last height read rather than replayed; [`gate_view`] is the
//!   replay from genesis it equals. Learners read only usable samples ([`usable_dataset`]), and
//!   certificates pay for usable samples only ([`UsableSamples`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use blyan_api_types::{DatasetEvent, DatasetList, DatasetProgressInfo, DatasetSample, DatasetVote};
use blyan_chain::{
    AuthorKey, BlockHash, BlockHeader, BlockKind, ChainId, ChainStore, encode_block,
};
use blyan_ledger::{
    Amount, BondLockRequest, BondOutcome, BondSettleRequest, IdempotencyKey, Ledger,
};
use blyan_moe::{DatasetRead, read_dataset_selected};
use blyan_pol::{DataContributors, PolRecord, ValidatorStake, now_ms, scan_records};
use blyan_primitives::Address;
use blyan_quality::{
    DataBlock, DataRecord, GateError, GateParams, GateView, L1Outcome, Review, ReviewVerdict,
    Sample, SampleContent, SampleState, SchemaError, TeacherResult, VoteCommit, VoteReveal,
    VoteVerdict, decode_record, encode_record,
};

use crate::config::{DatasetsConfig, NodeConfig};
use crate::error::BoxError;
use crate::gate_cache::{GateCache, GateState};
use crate::node::{Node, blocking};
use crate::service::{Service, Shutdown};
use crate::{Error, Result};

/// The gate settings of `config` (shared by every node of a network).
pub fn gate_params(config: &DatasetsConfig) -> GateParams {
    GateParams {
        commit_window_ms: config.commit_window_ms,
        reveal_window_ms: config.reveal_window_ms,
        accept_bps: (config.accept_share * 10_000.0).round() as u32,
        quorum_stake: config.quorum_stake,
        vote_stake_min: config.vote_stake_min,
        reviews_required: config.reviews_required,
    }
}

/// The validator sets chain D put in force, by height: `is_validator(address, height)`.
#[derive(Debug)]
pub struct ValidatorHistory {
    configured: Vec<ValidatorStake>,
    /// (height of the `validators` record, the set it put in force), in chain order.
    changes: Vec<(u64, Vec<ValidatorStake>)>,
}

impl ValidatorHistory {
    /// Reads the `validators` records of chain D over the `configured` set.
    pub fn read(chain: &ChainStore, configured: &[ValidatorStake]) -> Result<Self> {
        let mut history = ValidatorHistory::empty(configured);
        history.advance(chain, 1, u64::MAX)?;
        Ok(history)
    }

    /// The `configured` set, before any `validators` record is read.
    pub fn empty(configured: &[ValidatorStake]) -> Self {
        ValidatorHistory {
            configured: configured.to_vec(),
            changes: Vec::new(),
        }
    }

    /// Adds the `validators` records of chain D at heights `from_height..=to_height` (above
    /// every height read before).
    pub fn advance(&mut self, chain: &ChainStore, from_height: u64, to_height: u64) -> Result<()> {
        let records = scan_records(chain, from_height).map_err(|error| Error::Task {
            what: "reading the validator sets",
            reason: error.to_string(),
        })?;
        self.changes.extend(
            records
                .into_iter()
                .filter(|record| record.height <= to_height)
                .filter_map(|record| match record.record {
                    PolRecord::Validators(set) => Some((record.height, set.validators)),
                    _ => None,
                }),
        );
        Ok(())
    }

    /// Whether `address` held stake in the set in force at chain D height `height`.
    pub fn is_validator(&self, address: Address, height: u64) -> bool {
        let set = self
            .changes
            .iter()
            .rev()
            .find(|(changed, _)| *changed < height)
            .map_or(&self.configured, |(_, set)| set);
        set.iter()
            .any(|validator| validator.address == address && validator.stake > 0)
    }
}

/// Chain D replayed under `params`, with the validator sets of chain D over `configured`.
pub fn gate_view(
    chain: &ChainStore,
    params: GateParams,
    configured: &[ValidatorStake],
) -> Result<GateView> {
    let validators = ValidatorHistory::read(chain, configured)?;
    let blocks = DataBlock::scan(chain).map_err(Error::ChainFailed)?;
    Ok(GateView::replay(params, &blocks, &|address, height| {
        validators.is_validator(address, height)
    }))
}

/// The samples a certificate pays for: those usable when the claim was made, to their
/// contributor.
pub struct UsableSamples<'a>(pub &'a GateView);

impl DataContributors for UsableSamples<'_> {
    fn contributor(&self, block: BlockHash, at_ms: u64) -> Option<Address> {
        self.0
            .is_usable(&block, at_ms)
            .then(|| self.0.sample(&block).map(|view| view.sample.contributor))
            .flatten()
    }
}

/// Chain D replayed with `node`'s gate settings and Proof-of-Learning validator set, for
/// settlements (`None` without a dataset service).
pub(crate) fn node_gate_view(node: &Node, chain: &ChainStore) -> Result<Option<GateView>> {
    let Some(datasets) = node.dataset_context() else {
        return Ok(None);
    };
    datasets
        .with_gates(chain, |gates| gates.view().clone())
        .map(Some)
}

/// Settles with the usable samples of `view`, or pays no sample without one.
pub(crate) fn with_credit<T>(
    view: Option<&GateView>,
    run: impl FnOnce(&dyn DataContributors) -> T,
) -> T {
    match view {
        Some(view) => run(&UsableSamples(view)),
        None => run(&()),
    }
}

/// The training text of chain D's usable samples, in chain order (everything else skipped).
pub fn usable_dataset(
    chain: &ChainStore,
    params: GateParams,
    configured: &[ValidatorStake],
) -> Result<blyan_moe::Result<DatasetRead>> {
    let view = gate_view(chain, params, configured)?;
    let now = now_ms();
    Ok(read_dataset_selected(chain, &|block, payload| {
        if !view.is_usable(&block, now) {
            return None;
        }
        match decode_record(payload) {
            Ok(DataRecord::Sample(sample)) => Some(sample.training_text()),
            _ => None,
        }
    }))
}

/// The L1 teacher: bits per byte of UTF-8 text of each text under the served model.
pub trait Teacher: Send + Sync + 'static {
    /// Scores `texts` in one batch.
    fn bits_per_byte(&self, texts: &[String]) -> std::result::Result<Vec<f64>, BoxError>;
}

/// The L1 teacher of a running node: `blyan-quality`'s batched scorer
/// ([`blyan_quality::score_bits_per_byte`]) under the served model, in bits per byte of each
/// text's UTF-8, over the model's training-length windows.
pub struct ServedTeacher(pub Arc<Node>);

impl Teacher for ServedTeacher {
    fn bits_per_byte(&self, texts: &[String]) -> std::result::Result<Vec<f64>, BoxError> {
        let generator = self.0.generator().ok_or("no model is served")?;
        let tokenizer = generator.tokenizer().clone();
        let options = blyan_quality::ScoreOptions::default();
        let scores = generator.with_model(|model| {
            blyan_quality::score_bits_per_byte(model, &tokenizer, texts, &options, &mut |_| {})
        })??;
        Ok(scores)
    }
}

/// The L0 screen ([`blyan_quality::screen_l0`]) of a new `sample` against every sample of
/// `view` that is not refused, with an index built for this one screen (the node screens
/// against the index it keeps, [`GateState::screen_new`]; this is the reference it equals).
pub fn screen_l0(
    sample: &Sample,
    view: &GateView,
    now_ms: u64,
) -> std::result::Result<(), Refusal> {
    let mut index = blyan_quality::AcceptedIndex::new();
    for other in view.samples() {
        if !crate::gate_cache::refused(other.state(view.params(), now_ms)) {
            index.insert(&other.sample, other.hash);
        }
    }
    blyan_quality::screen_l0(sample, &index, &blyan_quality::L0Config::default())
        .map_err(Refusal::L0)
}

/// Why a dataset request is refused: the API answers 422 with [`Refusal::code`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The sample breaks the schema.
    #[error("{0}")]
    Schema(SchemaError),
    /// The L0 screen refused the sample.
    #[error("{0}")]
    L0(blyan_quality::Refusal),
    /// A gate record would not count.
    #[error("{0}")]
    Gate(GateError),
    /// The stake could not be locked (the wallet's available balance does not cover it).
    #[error("the vote's stake of {stake} BLY could not be locked: {reason}")]
    StakeUnpaid {
        /// The stake.
        stake: u64,
        /// The ledger's reason.
        reason: String,
    },
}

impl Refusal {
    /// A stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Schema(error) => error.code(),
            Refusal::L0(refusal) => refusal.code(),
            Refusal::Gate(error) => error.code(),
            Refusal::StakeUnpaid { .. } => "stake_unpaid",
        }
    }
}

/// The ledger key of a vote's locked stake.
pub fn vote_bond_key(commit: BlockHash) -> String {
    format!("data-vote:{commit}")
}

/// The L1 worker's progress.
#[derive(Debug, Default)]
pub struct DatasetProgress {
    scored: AtomicU64,
    passes: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl DatasetProgress {
    /// Samples scored since the node started.
    pub fn scored(&self) -> u64 {
        self.scored.load(Ordering::Relaxed)
    }

    /// Worker passes since the node started.
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// The last pass's failure, if it failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What the node's dataset service holds: its key, the gate settings, the teacher.
pub struct DatasetContext {
    /// The gate settings.
    pub params: GateParams,
    /// The validator set configured (chain D's `validators` records replace it).
    pub validators: Vec<ValidatorStake>,
    /// The key that signs the node's dataset blocks.
    pub key: AuthorKey,
    /// The L1 band, bits per byte.
    pub band: (f64, f64),
    /// The languages the band judges (`datasets.l1_languages`); samples in others pass L1 on
    /// to the vote with their score recorded.
    pub languages: Vec<String>,
    /// The L1 teacher, once one is set ([`Node::set_teacher`]); until then samples wait in
    /// `submitted`.
    pub teacher: std::sync::OnceLock<Arc<dyn Teacher>>,
    /// The worker's progress.
    pub progress: DatasetProgress,
    /// Chain D's gate state, advanced as chain D grows ([`DatasetContext::with_gates`]).
    gates: GateCache,
    /// Held from a sample's L0 screen to its append, so two copies submitted at once cannot both
    /// pass the duplicate check.
    submissions: Arc<tokio::sync::Mutex<()>>,
}

impl DatasetContext {
    /// The context of `config`: its key (`data_dir/node.key`) and the validator set the
    /// Proof-of-Learning rules name.
    pub fn load(config: &NodeConfig, validators: Vec<ValidatorStake>) -> Result<Self> {
        Ok(DatasetContext {
            params: gate_params(&config.datasets),
            validators,
            key: crate::pol::node_key(&config.data_dir)?,
            band: (
                config.datasets.l1_min_bits_per_byte,
                config.datasets.l1_max_bits_per_byte,
            ),
            languages: config.datasets.l1_languages.clone(),
            teacher: std::sync::OnceLock::new(),
            progress: DatasetProgress::default(),
            gates: GateCache::default(),
            submissions: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Runs `read` on chain D's gate state brought up to date with `chain` (blocking: call it
    /// off the async threads). The state is advanced from the last height read, not replayed
    /// (`gate_cache`).
    pub fn with_gates<T>(
        &self,
        chain: &ChainStore,
        read: impl FnOnce(&GateState) -> T,
    ) -> Result<T> {
        self.gates.with(chain, &self.params, &self.validators, read)
    }

    /// Replays of chain D from genesis since the node started: one at the first read, then one
    /// per stale state (a fork beside blocks already read).
    pub fn gate_replays(&self) -> u64 {
        self.gates.replays()
    }

    /// The L1 outcome of `bits_per_byte` for a sample in `language`: judged by the band when
    /// the band covers that language (the served model's loss on a language it was not trained
    /// on says nothing about the text), a pass otherwise.
    pub fn judge(&self, bits_per_byte: f64, language: &str) -> L1Outcome {
        if !self.languages.iter().any(|judged| judged == language) {
            L1Outcome::Pass
        } else if !bits_per_byte.is_finite() || bits_per_byte > self.band.1 {
            L1Outcome::TooHigh
        } else if bits_per_byte < self.band.0 {
            L1Outcome::TooLow
        } else {
            L1Outcome::Pass
        }
    }
}

/// What a contributor submits: the text and its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleInput {
    /// Text, or a prompt/response pair.
    pub content: SampleContent,
    /// A licence of [`blyan_quality::Licence::ALL`].
    pub licence: String,
    /// Where the text came from.
    pub source: String,
    /// ISO 639-1 language code.
    pub language: String,
}

fn micros(bits: f64) -> u64 {
    if bits.is_finite() && bits > 0.0 {
        (bits * 1e6).round() as u64
    } else {
        0
    }
}

impl Node {
    fn datasets(&self) -> Result<&Arc<DatasetContext>> {
        self.dataset_context().ok_or(Error::ChainUnavailable)
    }

    /// Chain D's gate view now (a copy of the node's, brought up to date).
    pub async fn gate_view(&self) -> Result<GateView> {
        self.with_gates("reading chain D's gates", |gates| gates.view().clone())
            .await
    }

    /// Runs `read` on chain D's gate state brought up to date, off the async threads.
    pub async fn with_gates<T: Send + 'static>(
        &self,
        what: &'static str,
        read: impl FnOnce(&GateState) -> T + Send + 'static,
    ) -> Result<T> {
        let chain = self.chain().cloned().ok_or(Error::ChainUnavailable)?;
        let context = Arc::clone(self.datasets()?);
        blocking(what, move || context.with_gates(&chain, read)).await?
    }

    /// Appends `record` in a `DatasetEntry` block signed by the node's key, after checking it
    /// would count ([`GateView::check`]).
    async fn append_data_record(&self, record: DataRecord) -> Result<BlockHash> {
        let chain = self.chain().cloned().ok_or(Error::ChainUnavailable)?;
        let context = Arc::clone(self.datasets()?);
        let pow_bits = self.config().chain.pow_difficulty_bits;
        for _ in 0..8 {
            let chain = Arc::clone(&chain);
            let context = Arc::clone(&context);
            let attempt = record.clone();
            let wire = blocking("writing a dataset block", move || {
                let record = attempt;
                let parent = chain.tip(ChainId::Dataset);
                let parent_ms = chain
                    .header(&parent.hash)
                    .map_err(Error::ChainFailed)?
                    .map_or(0, |header| header.timestamp_ms);
                let payload = encode_record(&record);
                let mut header = BlockHeader::new_child(
                    &parent,
                    BlockKind::DatasetEntry,
                    &payload,
                    now_ms().max(parent_ms),
                );
                header.author = context.key.address();
                let block = DataBlock {
                    hash: BlockHash::ZERO,
                    author: header.author,
                    height: header.height,
                    timestamp_ms: header.timestamp_ms,
                    record: record.clone(),
                };
                context
                    .with_gates(&chain, |gates| {
                        gates.view().check(&block, &|address, height| {
                            gates.is_validator(address, height)
                        })
                    })?
                    .map_err(|error| Error::DatasetRefused(Refusal::Gate(error)))?;
                if pow_bits > 0 {
                    header.mine(pow_bits);
                }
                header.sign(&context.key);
                Ok::<_, Error>((header.hash(), encode_block(&header, &payload)))
            })
            .await??;
            let (hash, wire) = wire;
            if let DataRecord::VoteCommit(commit) = &record {
                self.lock_vote_stake(hash, commit).await?;
            }
            // The record was checked just above (a sample by its submission's L0 screen).
            match self.submit_block_screened(wire).await {
                Err(Error::BlockRefused(
                    blyan_chain::Error::Fork { .. }
                    | blyan_chain::Error::TimestampBeforeParent { .. },
                )) => {
                    self.settle_vote_stake(hash, BondOutcome::Refund).await;
                    continue;
                }
                Err(error) => {
                    self.settle_vote_stake(hash, BondOutcome::Refund).await;
                    return Err(error);
                }
                Ok((hash, _)) => return Ok(hash),
            }
        }
        Err(Error::Task {
            what: "writing a dataset block",
            reason: "chain D's tip kept moving".into(),
        })
    }

    async fn lock_vote_stake(&self, commit: BlockHash, vote: &VoteCommit) -> Result<()> {
        let Some(ledger) = self.ledger() else {
            return Ok(());
        };
        let amount: Amount = vote.stake.to_string().parse().map_err(|_| {
            Error::DatasetRefused(Refusal::StakeUnpaid {
                stake: vote.stake,
                reason: "not an amount".into(),
            })
        })?;
        ledger
            .lock_bond(BondLockRequest {
                key: ledger_key(vote_bond_key(commit))?,
                owner: vote.voter,
                amount,
                memo: format!("stake of vote {commit}"),
            })
            .await
            .map(|_| ())
            .map_err(|error| {
                if error.is_refusal() {
                    Error::DatasetRefused(Refusal::StakeUnpaid {
                        stake: vote.stake,
                        reason: error.to_string(),
                    })
                } else {
                    Error::Ledger {
                        what: "locking a vote's stake",
                        source: Box::new(error),
                    }
                }
            })
    }

    /// Refunds or burns a vote's stake; a bond this node never locked is nothing to do.
    async fn settle_vote_stake(&self, commit: BlockHash, outcome: BondOutcome) {
        let Some(ledger) = self.ledger() else {
            return;
        };
        let (Ok(key), Ok(bond)) = (
            ledger_key(format!("{}:settle", vote_bond_key(commit))),
            ledger_key(vote_bond_key(commit)),
        ) else {
            return;
        };
        if let Err(error) = ledger
            .settle_bond(BondSettleRequest {
                key,
                bond,
                outcome,
                memo: format!("stake of vote {commit}"),
            })
            .await
            && !matches!(
                error,
                blyan_ledger::LedgerError::UnknownBond { .. }
                    | blyan_ledger::LedgerError::BondSettled { .. }
            )
        {
            tracing::warn!(%commit, %error, "a vote's stake was not settled");
        }
    }

    /// `POST /datasets`: screens the sample of `contributor` (L0) and appends it.
    pub async fn submit_sample(
        &self,
        contributor: Address,
        input: SampleInput,
    ) -> Result<BlockHash> {
        let licence = input
            .licence
            .parse()
            .map_err(|error| Error::DatasetRefused(Refusal::Schema(error)))?;
        let sample = Sample::new(
            input.content,
            licence,
            input.source,
            input.language,
            contributor,
        )
        .map_err(|error| Error::DatasetRefused(Refusal::Schema(error)))?;
        let context = Arc::clone(self.datasets()?);
        let _screened = context.submissions.lock().await;
        let now = now_ms();
        let sample = self
            .with_gates("screening a sample (L0)", move |gates| {
                gates.screen_new(&sample, now).map(|()| sample)
            })
            .await?
            .map_err(Error::DatasetRefused)?;
        self.append_data_record(DataRecord::Sample(sample)).await
    }

    /// The L0 screen of a `DatasetEntry` block submitted whole (`POST /blocks`,
    /// [`Node::submit_block`]): a `blyan-data/1` document that does not decode is refused with
    /// its schema reason, a sample is screened as [`Node::submit_sample`] screens one; gate
    /// records are judged when chain D is replayed, and payloads that are no dataset document at
    /// all are left to the chain's rules (they never count as samples). Returns the guard that keeps other submissions from
    /// screening until this block is appended (`None` when nothing was screened).
    pub(crate) async fn screen_submitted(
        &self,
        header: &BlockHeader,
        payload: &[u8],
    ) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>> {
        if header.kind != BlockKind::DatasetEntry || header.chain != ChainId::Dataset {
            return Ok(None);
        }
        let Some(context) = self.dataset_context() else {
            return Ok(None);
        };
        let record = blyan_quality::decode_submitted(payload)
            .map_err(|refusal| Error::DatasetRefused(Refusal::L0(refusal)))?;
        let Some(DataRecord::Sample(sample)) = record else {
            return Ok(None);
        };
        let guard = Arc::clone(&context.submissions).lock_owned().await;
        let now = now_ms();
        self.with_gates("screening a sample (L0)", move |gates| {
            gates.screen_new(&sample, now)
        })
        .await?
        .map_err(Error::DatasetRefused)?;
        Ok(Some(guard))
    }

    /// `POST /datasets/{sample}/commit`: a hidden vote of `voter`, its stake locked.
    pub async fn commit_vote(
        &self,
        voter: Address,
        sample: BlockHash,
        commitment: String,
        stake: u64,
    ) -> Result<BlockHash> {
        self.append_data_record(DataRecord::VoteCommit(VoteCommit {
            sample,
            voter,
            commitment,
            stake,
        }))
        .await
    }

    /// `POST /datasets/reveal`: opens commit `commit` of `voter`.
    pub async fn reveal_vote(
        &self,
        voter: Address,
        commit: BlockHash,
        verdict: VoteVerdict,
        salt: String,
    ) -> Result<BlockHash> {
        let owner = self
            .with_gates("reading a vote", move |gates| {
                gates.view().commit(&commit).map(|(_, vote)| vote.voter)
            })
            .await?
            .ok_or(Error::DatasetRefused(Refusal::Gate(
                GateError::UnknownCommit { block: commit },
            )))?;
        if owner != voter {
            return Err(Error::DatasetRefused(Refusal::Gate(
                GateError::NotTheVoter {
                    commit,
                    voter: owner,
                    caller: voter,
                },
            )));
        }
        self.append_data_record(DataRecord::VoteReveal(VoteReveal {
            commit,
            verdict,
            salt,
        }))
        .await
    }

    /// An L3 review signed by the node's key (refused unless it is a validator's).
    pub async fn submit_review(
        &self,
        samples: Vec<BlockHash>,
        verdict: ReviewVerdict,
        note: String,
    ) -> Result<BlockHash> {
        self.append_data_record(DataRecord::Review(Review {
            samples,
            verdict,
            note,
        }))
        .await
    }

    /// The L1 worker's progress.
    pub fn dataset_progress(&self) -> Option<&DatasetProgress> {
        self.dataset_context().map(|context| &context.progress)
    }

    /// Sets the L1 teacher the worker scores with (once; `false` when one was already set or
    /// the node has no dataset service).
    pub fn set_teacher(&self, teacher: Arc<dyn Teacher>) -> bool {
        self.dataset_context()
            .is_some_and(|context| context.teacher.set(teacher).is_ok())
    }
}

fn ledger_key(text: String) -> Result<IdempotencyKey> {
    IdempotencyKey::new(text).map_err(|source| Error::Ledger {
        what: "building an idempotency key",
        source: Box::new(source),
    })
}

/// The node's dataset worker: L1 scoring in batches and vote stake settlement.
#[derive(Debug, Default)]
pub struct DatasetService;

impl Service for DatasetService {
    fn name(&self) -> &'static str {
        "datasets"
    }

    async fn run(self, node: Arc<Node>, shutdown: Shutdown) -> std::result::Result<(), BoxError> {
        let Some(context) = node
            .dataset_context()
            .cloned()
            .filter(|_| node.config().datasets.worker)
        else {
            shutdown.requested().await;
            return Ok(());
        };
        let period = Duration::from_millis(node.config().datasets.interval_ms);
        let mut settled = BTreeSet::new();
        loop {
            if shutdown.is_requested() {
                return Ok(());
            }
            let pass = dataset_tick(&node, &mut settled).await;
            context.progress.passes.fetch_add(1, Ordering::Relaxed);
            *context
                .progress
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = pass.as_ref().err().map(|error| {
                tracing::warn!(%error, "dataset pass failed; retrying");
                error.to_string()
            });
            tokio::select! {
                () = shutdown.clone().requested() => return Ok(()),
                () = tokio::time::sleep(period) => {}
            }
        }
    }
}

/// One pass of [`DatasetService`]: scores up to `datasets.l1_batch` samples waiting for L1 and
/// settles the stakes of votes whose reveal window closed (`settled`: commits this process
/// already settled). Returns the samples scored.
pub async fn dataset_tick(node: &Arc<Node>, settled: &mut BTreeSet<BlockHash>) -> Result<usize> {
    let Some(context) = node.dataset_context().cloned() else {
        return Ok(0);
    };
    let now = now_ms();
    let batch = node.config().datasets.l1_batch as usize;
    let scoring = context.teacher.get().is_some();
    let already: BTreeSet<BlockHash> = settled.clone();
    let pass = node
        .with_gates("reading chain D's gates", move |gates| {
            tick_plan(gates, &already, scoring, batch, now)
        })
        .await?;
    // Stakes: revealed votes get theirs back, the others lose it.
    for (commit, outcome) in pass.stakes {
        if settled.insert(commit) {
            node.settle_vote_stake(commit, outcome).await;
        }
    }
    let Some(teacher) = context.teacher.get().cloned() else {
        return Ok(0);
    };
    let mut screened = pass.screened;
    let mut waiting_scored = Vec::with_capacity(pass.waiting.len());
    let mut scored = 0;
    for (sample, text, language) in pass.waiting {
        let outcome = screened.remove(&sample).unwrap_or(Ok(()));
        match outcome {
            Ok(()) => waiting_scored.push((sample, text, language)),
            Err(refusal) => {
                let record = DataRecord::TeacherResult(TeacherResult {
                    sample,
                    bits_per_byte_micros: 0,
                    band_min_micros: micros(context.band.0),
                    band_max_micros: micros(context.band.1),
                    outcome: L1Outcome::Screened {
                        code: refusal.code().to_owned(),
                    },
                });
                match node.append_data_record(record).await {
                    Ok(_) => scored += 1,
                    Err(Error::DatasetRefused(_)) => {}
                    Err(error) => return Err(error),
                }
            }
        }
    }
    let waiting = waiting_scored;
    if waiting.is_empty() {
        return Ok(scored);
    }
    let texts: Vec<String> = waiting.iter().map(|(_, text, _)| text.clone()).collect();
    let scores = blocking("scoring samples", move || teacher.bits_per_byte(&texts))
        .await?
        .map_err(|error| Error::Task {
            what: "scoring samples (L1)",
            reason: error.to_string(),
        })?;
    for ((sample, _, language), bits) in waiting.into_iter().zip(scores) {
        let record = DataRecord::TeacherResult(TeacherResult {
            sample,
            bits_per_byte_micros: micros(bits),
            band_min_micros: micros(context.band.0),
            band_max_micros: micros(context.band.1),
            outcome: context.judge(bits, &language),
        });
        match node.append_data_record(record).await {
            Ok(_) => scored += 1,
            // Another node scored it first: its result counts.
            Err(Error::DatasetRefused(_)) => {}
            Err(error) => return Err(error),
        }
    }
    context
        .progress
        .scored
        .fetch_add(scored as u64, Ordering::Relaxed);
    Ok(scored)
}

/// What one worker pass does, read from the gate state in one go.
struct TickPlan {
    /// Vote stakes to settle: commit, refund or burn.
    stakes: Vec<(BlockHash, BondOutcome)>,
    /// Samples waiting for L1 (up to a batch, chain order): block, training text, language.
    waiting: Vec<(BlockHash, String, String)>,
    /// The L0 screen of the waiting samples (a sample appended straight to chain D meets it
    /// here; the refused are recorded as screened and never scored).
    screened: BTreeMap<BlockHash, std::result::Result<(), Refusal>>,
}

fn tick_plan(
    gates: &GateState,
    settled: &BTreeSet<BlockHash>,
    scoring: bool,
    batch: usize,
    now: u64,
) -> TickPlan {
    let view = gates.view();
    let mut stakes = Vec::new();
    for sample in view.samples() {
        if !matches!(
            sample.state(view.params(), now),
            SampleState::Refused
                | SampleState::Accepted
                | SampleState::Usable
                | SampleState::ReviewRefused
        ) {
            continue;
        }
        for vote in &sample.votes {
            if !settled.contains(&vote.commit) {
                let outcome = if vote.reveal.is_some() {
                    BondOutcome::Refund
                } else {
                    BondOutcome::Burn
                };
                stakes.push((vote.commit, outcome));
            }
        }
    }
    if !scoring {
        return TickPlan {
            stakes,
            waiting: Vec::new(),
            screened: BTreeMap::new(),
        };
    }
    let waiting: Vec<(BlockHash, String, String)> = gates
        .in_state(SampleState::Submitted, now)
        .into_iter()
        .filter(|sample| sample.teacher.is_none())
        .take(batch)
        .map(|sample| {
            (
                sample.hash,
                sample.sample.training_text(),
                sample.sample.language.clone(),
            )
        })
        .collect();
    let hashes: Vec<BlockHash> = waiting.iter().map(|(hash, ..)| *hash).collect();
    let screened = gates.screen_on_chain(&hashes, now);
    TickPlan {
        stakes,
        waiting,
        screened,
    }
}

/// Most samples one `GET /datasets` page lists.
pub const DATASET_PAGE_MAX: u32 = 100;

fn sample_info(view: &blyan_quality::SampleView, params: &GateParams, now: u64) -> DatasetSample {
    let windows = view.windows(params);
    DatasetSample {
        hash: view.hash,
        height: view.height,
        timestamp_ms: view.timestamp_ms,
        contributor: view.sample.contributor.to_string(),
        licence: view.sample.licence.to_string(),
        source: view.sample.source.clone(),
        language: view.sample.language.clone(),
        content_hash: view.sample.content_hash.clone(),
        text: view.sample.training_text(),
        state: view.state(params, now).name().to_owned(),
        bits_per_byte: view
            .teacher
            .as_ref()
            .filter(|(_, result)| !matches!(result.outcome, L1Outcome::Screened { .. }))
            .map(|(_, result)| result.bits_per_byte_micros as f64 / 1e6),
        commit_closes_ms: windows.map(|(commit, _)| commit),
        reveal_closes_ms: windows.map(|(_, reveal)| reveal),
        votes: view
            .votes
            .iter()
            .map(|vote| DatasetVote {
                commit: vote.commit,
                voter: vote.voter.to_string(),
                stake: vote.stake,
                verdict: vote.reveal.map(|(_, verdict)| verdict.name().to_owned()),
            })
            .collect(),
        history: view
            .history_at(params, now)
            .into_iter()
            .map(|event| DatasetEvent {
                block: event.block,
                timestamp_ms: event.timestamp_ms,
                event: event.event,
                counted: event.counted,
                detail: event.detail,
            })
            .collect(),
    }
}

/// One page of `GET /datasets` from `view`.
fn dataset_page(
    view: &GateView,
    state: Option<SampleState>,
    offset: u64,
    limit: u32,
    now: u64,
) -> DatasetList {
    let matching: Vec<_> = view
        .samples()
        .filter(|sample| state.is_none_or(|state| sample.state(view.params(), now) == state))
        .collect();
    let total = matching.len() as u64;
    let limit = u64::from(limit.clamp(1, DATASET_PAGE_MAX));
    let samples: Vec<_> = matching
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(limit as usize)
        .map(|sample| sample_info(sample, view.params(), now))
        .collect();
    let next = offset.saturating_add(samples.len() as u64);
    DatasetList {
        samples,
        total,
        next_offset: (next < total).then_some(next),
    }
}

impl Node {
    /// `GET /datasets/{hash}`: one sample and its gate history; `None` when `hash` is no sample.
    pub async fn dataset_sample(&self, hash: BlockHash) -> Result<Option<DatasetSample>> {
        let now = now_ms();
        self.with_gates("reading a sample", move |gates| {
            let view = gates.view();
            view.sample(&hash)
                .map(|sample| sample_info(sample, view.params(), now))
        })
        .await
    }

    /// `GET /datasets`: samples in `state` (all when `None`), `limit` from `offset`, in chain
    /// order.
    pub async fn dataset_list(
        &self,
        state: Option<SampleState>,
        offset: u64,
        limit: u32,
    ) -> Result<DatasetList> {
        let now = now_ms();
        self.with_gates("listing samples", move |gates| {
            dataset_page(gates.view(), state, offset, limit, now)
        })
        .await
    }

    /// `GET /datasets/progress`: the L1 worker's progress and samples per state.
    pub async fn dataset_progress_info(&self) -> Result<DatasetProgressInfo> {
        let now = now_ms();
        let states = self
            .with_gates("counting samples", move |gates| {
                let view = gates.view();
                let mut states: BTreeMap<String, u64> = SampleState::ALL
                    .iter()
                    .map(|state| (state.name().to_owned(), 0))
                    .collect();
                for sample in view.samples() {
                    *states
                        .entry(sample.state(view.params(), now).name().to_owned())
                        .or_default() += 1;
                }
                states
            })
            .await?;
        let context = self.datasets()?;
        Ok(DatasetProgressInfo {
            worker: self.config().datasets.worker,
            teacher: context.teacher.get().is_some(),
            scored: context.progress.scored(),
            passes: context.progress.passes(),
            waiting: states
                .get(SampleState::Submitted.name())
                .copied()
                .unwrap_or(0),
            last_error: context.progress.last_error(),
            states,
        })
    }
}
