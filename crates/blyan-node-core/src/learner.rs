//! Micro-step learning inside the node: a background learner that fine-tunes named experts of
//! the chain's model between inference requests, and the gate through which it yields to them.
//!
//! The learner ([`Learner`], a [`Service`]) runs on its own OS thread with its own
//! [`blyan_moe::Trainer`] over a [`ChainSource`] of the node's chain: it never takes the
//! served model's lock. It works in slices: one slice is one optimizer step whose batch was
//! halved at start until a step fits `learning.slice_ms`. Before every slice it waits while
//! any chat is generating ([`InferenceGate`]), so a chat arriving mid-slice shares the CPU with
//! at most that one slice. Every `eval_every` steps it scores held-out text, saves its state
//! into `<data_dir>/learning/` (resumed at the next start when it matches), and when the
//! held-out loss improved by `min_improvement` over the served weights (or the last candidate)
//! it exports the trained experts as a candidate, published to the chain and served only with
//! `learning.publish: true`. What it does is visible through [`Node::learning_status`].
//!
//! A learner failure (an unreadable corpus, an expert the model lacks) is logged and shown as
//! state `failed`; the node keeps serving.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use blyan_api_types::{LearningCandidate, LearningEval, LearningPoint, LearningStatus};
use blyan_chain::AuthorKey;
use blyan_moe::{
    ChainSource, EvalReport, ExpertName, ExpertQuantization, PublishEvent, PublishOptions,
    TokenCorpus, TrainOptions, TrainScope, Trainer, WeightSource, read_corpus,
};

use crate::config::LearningConfig;
use crate::error::BoxError;
use crate::node::Node;
use crate::service::{Service, Shutdown};
use crate::{Error, Result};

/// Directory of the learner's state and candidates under `data_dir`.
pub const LEARNING_DIR_NAME: &str = "learning";

/// Points of the loss curve kept (the oldest are dropped beyond it).
pub const LEARNING_HISTORY_POINTS_MAX: usize = 512;

/// Candidate checkpoints kept on disk (the oldest are removed beyond it).
pub const LEARNING_CANDIDATES_KEPT: usize = 4;

/// Length of the learning-rate schedule: the learner runs for as long as the node does, so
/// the cosine decays over this many steps and then stays at its floor.
pub const LEARNING_SCHEDULE_STEPS: u64 = 100_000;

/// Warm-up steps of the learning rate.
pub const LEARNING_WARMUP_STEPS: u64 = 10;

/// How long the learner sleeps between two looks at the gate or the stop flag.
const GATE_POLL: Duration = Duration::from_millis(20);

/// Name of the trainer's state directory under [`LEARNING_DIR_NAME`].
const STATE_DIR_NAME: &str = "state";

/// Name of the learner's own record (history, baseline, candidates) beside the state.
const RECORD_FILE_NAME: &str = "learner.json";

const RECORD_FORMAT: u32 = 1;

const _: () = assert!(
    LEARNING_WARMUP_STEPS < LEARNING_SCHEDULE_STEPS,
    "the warm-up is a part of the schedule"
);

/// Counts the inference requests in flight, so the learner can wait until there are none, and
/// bounds them: the whole pool, and the free tier's share of it.
///
/// A chat holds an [`InferenceGuard`] from the moment it starts generating until its
/// generation ends; the learner checks [`InferenceGate::wait_idle`] before every slice.
#[derive(Debug, Default)]
pub struct InferenceGate {
    in_flight: Mutex<InFlight>,
    changed: Condvar,
}

/// Requests in flight, and how many of them are free-tier chats.
#[derive(Debug, Default, Clone, Copy)]
struct InFlight {
    all: u64,
    // Invariant: `free <= all`.
    free: u64,
}

impl InferenceGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A request is in flight until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InferenceGuard {
        self.lock().all += 1;
        InferenceGuard {
            gate: Arc::clone(self),
            free: false,
        }
    }

    /// A request is in flight until the returned guard is dropped, if fewer than `limit` are
    /// now (checked and counted under one lock, so concurrent callers never exceed it).
    pub fn try_enter(self: &Arc<Self>, limit: u64) -> Option<InferenceGuard> {
        let mut in_flight = self.lock();
        if in_flight.all >= limit {
            return None;
        }
        in_flight.all += 1;
        Some(InferenceGuard {
            gate: Arc::clone(self),
            free: false,
        })
    }

    /// A free-tier request is in flight until the returned guard is dropped, if fewer than
    /// `limit` requests and fewer than `free_limit` free-tier ones are now: the places above
    /// `free_limit` stay for paid chats, so a flood of anonymous chats cannot turn paying
    /// users away.
    pub fn try_enter_free(self: &Arc<Self>, limit: u64, free_limit: u64) -> Option<InferenceGuard> {
        let mut in_flight = self.lock();
        if in_flight.all >= limit || in_flight.free >= free_limit {
            return None;
        }
        in_flight.all += 1;
        in_flight.free += 1;
        Some(InferenceGuard {
            gate: Arc::clone(self),
            free: true,
        })
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u64 {
        self.lock().all
    }

    /// Free-tier requests in flight now.
    pub fn free_in_flight(&self) -> u64 {
        self.lock().free
    }

    /// Waits up to `timeout` for no request to be in flight; true when none is.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let count = self.lock();
        let (count, _) = self
            .changed
            .wait_timeout_while(count, timeout, |count| count.all > 0)
            .unwrap_or_else(PoisonError::into_inner);
        count.all == 0
    }

    fn leave(&self, free: bool) {
        let mut count = self.lock();
        // Invariant: every leave follows its enter.
        debug_assert!(count.all > 0, "an inference guard left twice");
        debug_assert!(!free || count.free > 0, "a free-tier guard left twice");
        count.all = count.all.saturating_sub(1);
        if free {
            count.free = count.free.saturating_sub(1);
        }
        debug_assert!(count.free <= count.all, "free requests are requests");
        self.changed.notify_all();
    }
}

/// One inference request in flight; dropping it ends it.
#[derive(Debug)]
pub struct InferenceGuard {
    gate: Arc<InferenceGate>,
    /// Whether it counts against the free tier's share of the pool.
    free: bool,
}

impl Drop for InferenceGuard {
    fn drop(&mut self) {
        self.gate.leave(self.free);
    }
}

/// The learner's status as `GET /learning` shows it, before the learner ran.
pub(crate) fn initial_status(config: &LearningConfig) -> LearningStatus {
    if !config.enabled {
        return LearningStatus {
            enabled: false,
            state: "disabled".to_owned(),
            ..LearningStatus::default()
        };
    }
    LearningStatus {
        enabled: true,
        state: "not_started".to_owned(),
        experts: config.experts.clone(),
        router: config.router,
        batch_size: config.batch_size,
        positions: config.positions,
        slice_ms: config.slice_ms,
        ..LearningStatus::default()
    }
}

/// The background learner, as one of the node's services. Without `learning.enabled` it only
/// waits for shutdown.
#[derive(Debug, Default)]
pub struct Learner {
    key: Option<AuthorKey>,
}

impl Learner {
    /// A learner that never publishes (candidates are only exported).
    pub fn new() -> Self {
        Self { key: None }
    }

    /// A learner that signs the candidates it publishes (with `learning.publish: true`) with
    /// `key`, the node's own key.
    pub fn with_key(key: AuthorKey) -> Self {
        Self { key: Some(key) }
    }
}

impl Service for Learner {
    fn name(&self) -> &'static str {
        "learner"
    }

    async fn run(self, node: Arc<Node>, shutdown: Shutdown) -> std::result::Result<(), BoxError> {
        if !node.config().learning.enabled {
            shutdown.requested().await;
            return Ok(());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let context = Context {
            node: Arc::clone(&node),
            key: self.key,
            stop: Arc::clone(&stop),
            runtime: tokio::runtime::Handle::current(),
        };
        let thread = std::thread::Builder::new()
            .name("learner".to_owned())
            .spawn(move || context.run())
            .map_err(|error| Error::Task {
                what: "starting the learner thread",
                reason: error.to_string(),
            })?;
        shutdown.requested().await;
        stop.store(true, Ordering::SeqCst);
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|error| Error::Task {
                what: "stopping the learner",
                reason: error.to_string(),
            })?
            .map_err(|_| Error::Task {
                what: "the learner thread",
                reason: "it panicked".to_owned(),
            })?;
        Ok(())
    }
}

/// What the learner's thread works with.
struct Context {
    node: Arc<Node>,
    key: Option<AuthorKey>,
    stop: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
}

/// The learner's own record, saved beside the trainer's state: what `GET /learning` shows
/// across restarts.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Record {
    format: u32,
    experts: Vec<ExpertName>,
    router: bool,
    /// Held-out loss a new candidate must improve on.
    reference_loss: f64,
    history: Vec<LearningPoint>,
    candidates_made: u64,
    last_candidate: Option<LearningCandidate>,
}

/// The data and weights a run needs, read once at start.
struct Inputs {
    source: Arc<ChainSource>,
    corpus: TokenCorpus,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

fn learning_error(what: &'static str) -> impl FnOnce(blyan_moe::MoeError) -> Error {
    move |source| Error::Learning { what, source }
}

/// The trainer's options for `config` with `batch_size` sequences per step.
fn train_options(config: &LearningConfig, batch_size: usize) -> TrainOptions {
    let scope = TrainScope::Experts {
        experts: config.experts.clone(),
        router: config.router,
    };
    let mut options = TrainOptions::new(scope, LEARNING_SCHEDULE_STEPS);
    options.seed = config.seed;
    options.batch_size = batch_size;
    options.positions = config.positions as usize;
    options.learning_rate = config.learning_rate;
    options.min_learning_rate = config.learning_rate / 10.0;
    options.warmup_steps = LEARNING_WARMUP_STEPS;
    options.eval_tokens_max = config.eval_tokens as usize;
    options
}

/// Whether a saved run's options are the ones `expected` asks for. Rates are compared to a
/// relative 1e-9: they went through JSON, whose float parsing may differ in the last bit.
fn same_settings(saved: &TrainOptions, expected: &TrainOptions) -> bool {
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
    saved.scope == expected.scope
        && saved.seed == expected.seed
        && saved.steps == expected.steps
        && saved.batch_size == expected.batch_size
        && saved.positions == expected.positions
        && saved.accumulation == expected.accumulation
        && saved.warmup_steps == expected.warmup_steps
        && saved.eval_tokens_max == expected.eval_tokens_max
        && close(saved.learning_rate, expected.learning_rate)
        && close(saved.min_learning_rate, expected.min_learning_rate)
}

fn eval_of(report: &EvalReport) -> LearningEval {
    LearningEval {
        step: report.step,
        eval_loss: report.loss,
        bits_per_byte: report.bits_per_byte,
    }
}

/// A running learner: the trainer, its data and its record.
struct Run {
    trainer: Trainer,
    inputs: Inputs,
    record: Record,
    /// Training losses since the last point of the curve.
    pending_losses: Vec<f64>,
    /// Steps done when the state was last saved.
    saved_step: u64,
}

impl Context {
    fn config(&self) -> &LearningConfig {
        &self.node.config().learning
    }

    fn learning_dir(&self) -> PathBuf {
        self.node.config().data_dir.join(LEARNING_DIR_NAME)
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn update(&self, change: impl FnOnce(&mut LearningStatus)) {
        self.node.update_learning_status(change);
    }

    /// The thread's body: prepare, then slices until the node stops; any failure ends in
    /// state `failed`.
    fn run(self) {
        let _span = tracing::info_span!("learner").entered();
        self.update(|status| status.state = "starting".to_owned());
        let outcome = self.prepare().and_then(|run| match run {
            Some(run) => self.slices(run),
            None => Ok(()),
        });
        match outcome {
            Ok(()) => {
                tracing::info!("the learner stopped");
                self.update(|status| {
                    status.state = "stopped".to_owned();
                    status.paused_for_inference = false;
                });
            }
            Err(error) => {
                tracing::error!(%error, "the learner failed; the node keeps serving without it");
                self.update(|status| {
                    status.state = "failed".to_owned();
                    status.paused_for_inference = false;
                    status.error = Some(error.to_string());
                });
            }
        }
    }

    /// Reads the model and the text, scores the served weights, fits a step into the slice,
    /// and resumes the saved run when it matches. `None` when the node stopped meanwhile.
    fn prepare(&self) -> Result<Option<Run>> {
        let inputs = self.inputs()?;
        self.update(|status| {
            status.train_tokens = inputs.corpus.train().len() as u64;
            status.held_out_tokens = inputs.corpus.held_out().len() as u64;
        });
        let config = self.config();
        let base: Arc<dyn WeightSource> = inputs.source.clone();
        let model_config = inputs.source.config().clone();
        // The served weights' held-out loss: a trainer that has not stepped computes with them.
        let mut probe = Trainer::new(
            &model_config,
            Arc::clone(&base),
            train_options(config, config.batch_size as usize),
        )
        .map_err(learning_error("starting a trainer"))?;
        let baseline = eval_of(
            &probe
                .evaluate(&inputs.corpus)
                .map_err(learning_error("scoring the served weights"))?,
        );
        tracing::info!(
            eval_loss = baseline.eval_loss,
            bits_per_byte = baseline.bits_per_byte,
            "held-out loss of the served weights"
        );
        self.update(|status| {
            status.baseline = Some(baseline);
            status.last_eval_loss = Some(baseline.eval_loss);
        });
        if self.stopping() {
            return Ok(None);
        }
        let resumed = self.resume(&inputs, &base)?;
        let (trainer, record) = match resumed {
            Some((trainer, mut record)) => {
                record.reference_loss = record.reference_loss.min(baseline.eval_loss);
                (trainer, record)
            }
            None => {
                let batch_size = self.fit_batch(probe, &base, &inputs.corpus)?;
                let trainer = Trainer::new(
                    &model_config,
                    Arc::clone(&base),
                    train_options(config, batch_size),
                )
                .map_err(learning_error("starting a trainer"))?;
                let record = Record {
                    format: RECORD_FORMAT,
                    experts: config.experts.clone(),
                    router: config.router,
                    reference_loss: baseline.eval_loss,
                    history: vec![LearningPoint {
                        step: 0,
                        train_loss: None,
                        eval_loss: baseline.eval_loss,
                        time_ms: now_ms(),
                    }],
                    candidates_made: 0,
                    last_candidate: None,
                };
                (trainer, record)
            }
        };
        let batch_size = u32::try_from(trainer.options().batch_size).unwrap_or(u32::MAX);
        let (steps, tokens) = (trainer.steps_done(), trainer.tokens_seen());
        let shares = trainer.expert_shares();
        self.update(|status| {
            status.batch_size = batch_size;
            status.steps = steps;
            status.tokens = tokens;
            status.expert_shares = shares;
            status.history = record.history.clone();
            status.candidates_made = record.candidates_made;
            status.last_candidate = record.last_candidate.clone();
            if let Some(last) = record.history.last() {
                status.last_eval_loss = Some(last.eval_loss);
            }
        });
        Ok(Some(Run {
            saved_step: trainer.steps_done(),
            trainer,
            inputs,
            record,
            pending_losses: Vec::new(),
        }))
    }

    /// The chain's newest model and the text to learn from, tokenized with its tokenizer.
    fn inputs(&self) -> Result<Inputs> {
        let chain = self.node.chain().cloned().ok_or(Error::ChainUnavailable)?;
        let source = ChainSource::open(Arc::clone(&chain))
            .map_err(learning_error("reading the chain's model"))?;
        let tokenizer = source
            .tokenizer()
            .map_err(learning_error("reading the model's tokenizer"))?;
        let config = self.config();
        let mut documents = Vec::new();
        if !config.corpus.is_empty() {
            let read = read_corpus(&config.corpus).map_err(learning_error("reading the corpus"))?;
            documents.extend(read.documents);
        }
        if config.dataset {
            // Only samples through every dataset gate (usable) are learned from.
            let gates = crate::datasets::gate_params(&self.node.config().datasets);
            let validators = self
                .node
                .pol()
                .map(|context| context.params.validators.clone())
                .unwrap_or_default();
            match crate::datasets::usable_dataset(&chain, gates, &validators)? {
                Ok(read) => documents.extend(read.documents),
                // With a corpus beside it, a chain D without text is nothing to add yet.
                Err(error) if !config.corpus.is_empty() => {
                    tracing::warn!(%error, "chain D adds no text to the learning corpus");
                }
                Err(error) => return Err(learning_error("reading chain D")(error)),
            }
        }
        let eos = source.config().eos_token_ids().first().copied();
        let corpus = TokenCorpus::new(&tokenizer, &documents, config.held_out_per_mille, eos)
            .map_err(learning_error("splitting the corpus"))?;
        tracing::info!(
            documents = documents.len(),
            train_tokens = corpus.train().len(),
            held_out_tokens = corpus.held_out().len(),
            fingerprint = corpus.fingerprint(),
            "learning corpus read"
        );
        Ok(Inputs {
            source: Arc::new(source),
            corpus,
        })
    }

    /// The saved run, when there is one and it matches this configuration, model and corpus;
    /// otherwise `None`, with a log line saying why.
    fn resume(
        &self,
        inputs: &Inputs,
        base: &Arc<dyn WeightSource>,
    ) -> Result<Option<(Trainer, Record)>> {
        let dir = self.learning_dir();
        let state = dir.join(STATE_DIR_NAME);
        if !state.join(blyan_moe::STATE_FILE).is_file() {
            tracing::info!("no saved learner state: starting fresh");
            return Ok(None);
        }
        let trainer = match Trainer::resume(
            &state,
            inputs.source.config(),
            Arc::clone(base),
            &inputs.corpus,
        ) {
            Ok(trainer) => trainer,
            Err(error) => {
                tracing::warn!(%error, "the saved learner state does not match: starting fresh");
                return Ok(None);
            }
        };
        let config = self.config();
        let saved = trainer.options();
        // The batch was fitted to the slice when the run began: keep it if it is within the
        // configured one.
        let expected = train_options(config, saved.batch_size);
        if !same_settings(saved, &expected) || saved.batch_size > config.batch_size as usize {
            tracing::warn!(
                "the saved learner state was made with other learning settings: starting fresh"
            );
            return Ok(None);
        }
        let record = match read_record(&dir.join(RECORD_FILE_NAME)) {
            Ok(record)
                if record.format == RECORD_FORMAT
                    && record.experts == config.experts
                    && record.router == config.router =>
            {
                record
            }
            Ok(_) => {
                tracing::warn!("the saved learner record is of other experts: starting fresh");
                return Ok(None);
            }
            Err(error) => {
                tracing::warn!(%error, "the saved learner record is unreadable: starting fresh");
                return Ok(None);
            }
        };
        tracing::info!(
            step = trainer.steps_done(),
            "resumed the learner from its saved state"
        );
        Ok(Some((trainer, record)))
    }

    /// Halves the batch until one step fits the slice, timing the second step of a throwaway
    /// trainer (the first pays for one-time set-up). Returns the batch size that fits (at
    /// least 1).
    fn fit_batch(
        &self,
        mut probe: Trainer,
        base: &Arc<dyn WeightSource>,
        corpus: &TokenCorpus,
    ) -> Result<usize> {
        let config = self.config();
        let slice = Duration::from_millis(u64::from(config.slice_ms));
        let mut batch_size = config.batch_size as usize;
        loop {
            let _ = probe
                .step(corpus)
                .map_err(learning_error("timing a step"))?;
            let started = Instant::now();
            let _ = probe
                .step(corpus)
                .map_err(learning_error("timing a step"))?;
            let took = started.elapsed();
            if took <= slice || batch_size == 1 {
                if took > slice {
                    tracing::warn!(
                        took_ms = took.as_millis() as u64,
                        slice_ms = config.slice_ms,
                        "one sequence per step still overruns the slice: slices will be longer"
                    );
                }
                tracing::info!(
                    batch_size,
                    took_ms = took.as_millis() as u64,
                    "step fitted to the slice"
                );
                return Ok(batch_size);
            }
            batch_size = (batch_size / 2).max(1);
            let model_config = probe.config().clone();
            probe = Trainer::new(
                &model_config,
                Arc::clone(base),
                train_options(config, batch_size),
            )
            .map_err(learning_error("starting a trainer"))?;
        }
    }

    /// Slices until the node stops; the state is saved at the end.
    fn slices(&self, mut run: Run) -> Result<()> {
        let config = self.config().clone();
        let slice = Duration::from_millis(u64::from(config.slice_ms));
        self.update(|status| status.state = "running".to_owned());
        while !self.stopping() {
            if !self.yield_to_inference() {
                break;
            }
            let started = Instant::now();
            let report = run
                .trainer
                .step(&run.inputs.corpus)
                .map_err(learning_error("a training step"))?;
            let took = started.elapsed();
            run.pending_losses.push(report.loss);
            let tokens = run.trainer.tokens_seen();
            self.update(|status| {
                status.steps = report.step;
                status.tokens = tokens;
                status.last_train_loss = Some(report.loss);
                status.last_slice_ms = Some(took.as_secs_f64() * 1000.0);
                if took > slice {
                    status.slices_over_budget += 1;
                }
            });
            if report.step % config.eval_every == 0 {
                if !self.yield_to_inference() {
                    break;
                }
                self.evaluate(&mut run)?;
            }
        }
        if run.trainer.steps_done() != run.saved_step {
            self.save(&mut run)?;
        }
        Ok(())
    }

    /// Waits while a chat is generating; false when the node stops meanwhile.
    fn yield_to_inference(&self) -> bool {
        let gate = self.node.inference_gate();
        if gate.in_flight() == 0 {
            return !self.stopping();
        }
        self.update(|status| {
            status.state = "paused".to_owned();
            status.paused_for_inference = true;
        });
        while !gate.wait_idle(GATE_POLL) {
            if self.stopping() {
                return false;
            }
        }
        self.update(|status| {
            status.state = "running".to_owned();
            status.paused_for_inference = false;
        });
        !self.stopping()
    }

    /// Scores held-out text, adds a point to the curve, saves the state, and makes a
    /// candidate when the loss improved enough.
    fn evaluate(&self, run: &mut Run) -> Result<()> {
        let report = run
            .trainer
            .evaluate(&run.inputs.corpus)
            .map_err(learning_error("a held-out evaluation"))?;
        let train_loss = (!run.pending_losses.is_empty())
            .then(|| run.pending_losses.iter().sum::<f64>() / run.pending_losses.len() as f64);
        run.pending_losses.clear();
        let point = LearningPoint {
            step: report.step,
            train_loss,
            eval_loss: report.loss,
            time_ms: now_ms(),
        };
        run.record.history.push(point);
        if run.record.history.len() > LEARNING_HISTORY_POINTS_MAX {
            let excess = run.record.history.len() - LEARNING_HISTORY_POINTS_MAX;
            run.record.history = run.record.history.split_off(excess);
        }
        tracing::info!(
            step = report.step,
            eval_loss = report.loss,
            train_loss,
            "held-out evaluation"
        );
        let shares = run.trainer.expert_shares();
        self.update(|status| {
            status.last_eval_loss = Some(report.loss);
            status.history = run.record.history.clone();
            status.expert_shares = shares;
        });
        let improved =
            report.loss <= run.record.reference_loss * (1.0 - self.config().min_improvement);
        if improved {
            self.candidate(run, &report)?;
        }
        self.save(run)
    }

    fn save(&self, run: &mut Run) -> Result<()> {
        let dir = self.learning_dir();
        run.trainer
            .save(&dir.join(STATE_DIR_NAME), &run.inputs.corpus)
            .map_err(learning_error("saving the learner's state"))?;
        write_record(&dir.join(RECORD_FILE_NAME), &run.record)?;
        run.saved_step = run.trainer.steps_done();
        Ok(())
    }

    /// Exports the trained experts as a candidate, publishes it with `learning.publish`, and
    /// records it.
    fn candidate(&self, run: &mut Run, report: &EvalReport) -> Result<()> {
        let dir = self
            .learning_dir()
            .join(format!("candidate-{}", report.step));
        run.trainer
            .export(&dir, run.inputs.source.files())
            .map_err(learning_error("exporting a candidate"))?;
        let mut candidate = LearningCandidate {
            experts: self.config().experts.clone(),
            eval_loss_before: run.record.reference_loss,
            eval_loss_after: report.loss,
            step: report.step,
            time_ms: now_ms(),
            dir: dir.display().to_string(),
            published: false,
            meta_block: None,
        };
        tracing::info!(
            step = report.step,
            before = candidate.eval_loss_before,
            after = candidate.eval_loss_after,
            dir = %dir.display(),
            "candidate made"
        );
        if self.config().publish {
            candidate.meta_block = Some(self.publish(run)?);
            candidate.published = true;
        }
        run.record.reference_loss = report.loss;
        run.record.candidates_made += 1;
        run.record.last_candidate = Some(candidate.clone());
        let made = run.record.candidates_made;
        self.update(|status| {
            status.candidates_made = made;
            status.last_candidate = Some(candidate);
        });
        prune_candidates(&self.learning_dir())
    }

    /// Writes the trained experts' new versions to the node's chain (only changed blocks are
    /// written) and makes the node serve them; when the node certifies (Proof-of-Learning),
    /// they are candidates and the learner claims them with its key (which pays the bond).
    fn publish(&self, run: &Run) -> Result<blyan_chain::BlockHash> {
        let chain = self.node.chain().cloned().ok_or(Error::ChainUnavailable)?;
        let key = self.key.as_ref().ok_or_else(|| Error::Task {
            what: "publishing a candidate",
            reason: "learning.publish is set but the learner was given no signing key".to_owned(),
        })?;
        let weights = run
            .trainer
            .weights()
            .map_err(learning_error("reading the trained weights"))?;
        let source = &run.inputs.source;
        // The model's document stays as it is, so only the changed blocks are written: the
        // trained experts (and with `router`, their layers' router group and a new meta block).
        // Experts are stored as the chain stores them now: an INT8 model stays INT8 (the
        // current block's header lists its tensors in their stored dtype).
        let mut quantized = false;
        if let Some(expert) = self.config().experts.first()
            && let Some(version) = chain.expert_current(*expert).map_err(Error::ChainFailed)?
            && let Some(header) = chain.header(&version.hash).map_err(Error::ChainFailed)?
        {
            quantized = header
                .meta
                .tensors
                .iter()
                .any(|tensor| tensor.dtype == blyan_primitives::Dtype::I8);
        }
        let options = PublishOptions {
            description: source.document().description.clone(),
            untrained: source.untrained(),
            expert_quantization: if quantized {
                ExpertQuantization::Int8
            } else {
                ExpertQuantization::None
            },
        };
        let mut written_experts = Vec::new();
        let mut candidates = Vec::new();
        let summary = blyan_moe::publish_model(
            &*chain,
            key,
            source.config(),
            source.files(),
            &weights,
            &options,
            &mut |event: &PublishEvent| {
                if let PublishEvent::Written { name, block, .. } = event {
                    if let Ok(expert) = name.parse::<ExpertName>() {
                        written_experts.push(expert);
                        candidates.push(*block);
                    } else if name == "meta" {
                        candidates.push(*block);
                    }
                }
            },
        )
        .map_err(learning_error("publishing a candidate"))?;
        tracing::info!(
            meta_block = %summary.meta_block,
            experts_written = summary.experts_written,
            meta_written = summary.meta_written,
            "candidate published"
        );
        if self.node.pol().is_some() {
            // The node certifies: what was written is a candidate until validators accept it.
            let commitment = run.inputs.corpus.fingerprint().to_owned();
            match self.runtime.block_on(crate::pol::claim_candidates(
                &self.node, key, candidates, commitment,
            )) {
                Ok(claim) => tracing::info!(%claim, "candidate claimed for Proof-of-Learning"),
                Err(error) => {
                    tracing::warn!(%error, "the candidate was published but could not be claimed")
                }
            }
            return Ok(summary.meta_block);
        }
        if summary.meta_written {
            self.runtime.block_on(self.node.reload_model());
        }
        for expert in written_experts {
            self.runtime.block_on(self.node.forget_expert(expert));
        }
        Ok(summary.meta_block)
    }
}

fn read_record(path: &Path) -> Result<Record> {
    let bytes = std::fs::read(path).map_err(|source| Error::DataFile {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|error| Error::DataFile {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, error),
    })
}

/// Writes `record` to a temporary name and renames it, so a crash leaves the previous whole.
fn write_record(path: &Path, record: &Record) -> Result<()> {
    let data_error = |source| Error::DataFile {
        path: path.to_owned(),
        source,
    };
    let json = serde_json::to_vec_pretty(record)
        .map_err(|error| data_error(std::io::Error::other(error)))?;
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, json).map_err(data_error)?;
    std::fs::rename(&temporary, path).map_err(data_error)
}

/// Removes all but the newest [`LEARNING_CANDIDATES_KEPT`] candidate directories.
fn prune_candidates(dir: &Path) -> Result<()> {
    let data_error = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::DataFile { path, source }
    };
    let mut candidates: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map_err(data_error(dir))?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let step = name.to_str()?.strip_prefix("candidate-")?.parse().ok()?;
            Some((step, entry.path()))
        })
        .collect();
    candidates.sort();
    let excess = candidates.len().saturating_sub(LEARNING_CANDIDATES_KEPT);
    for (_, path) in candidates.drain(..excess) {
        std::fs::remove_dir_all(&path).map_err(data_error(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_requests_take_at_most_their_share_and_leave_the_rest_to_paid_ones() {
        let gate = Arc::new(InferenceGate::default());
        let free: Vec<_> = (0..2)
            .map(|_| gate.try_enter_free(4, 2).expect("within the free share"))
            .collect();
        assert!(
            gate.try_enter_free(4, 2).is_none(),
            "the free share is full"
        );
        assert_eq!((gate.in_flight(), gate.free_in_flight()), (2, 2));
        // The places above the free share are the paid ones'.
        let paid: Vec<_> = (0..2)
            .map(|_| gate.try_enter(4).expect("a place kept for paid"))
            .collect();
        assert!(gate.try_enter(4).is_none(), "the pool is full");
        drop(free);
        assert_eq!((gate.in_flight(), gate.free_in_flight()), (2, 0));
        // A free request is refused while the whole pool is full, whatever its share.
        let third = gate.try_enter(3).expect("a third place");
        assert!(gate.try_enter_free(3, 2).is_none());
        drop(paid);
        drop(third);
        assert_eq!((gate.in_flight(), gate.free_in_flight()), (0, 0));
        assert!(gate.wait_idle(Duration::ZERO));
    }
}
