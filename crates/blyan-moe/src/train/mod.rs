//! Training: the model's own forward pass ([`Model::forward_sequences`]) under libtorch's
//! autograd, AdamW, clipping, a warm-up + cosine schedule, gradient accumulation, Mixtral's
//! router load-balancing loss, held-out evaluation in bits per byte, and a state directory
//! from which a run resumes exactly.
//!
//! # Scopes
//! [`TrainScope::Model`] trains every tensor (pre-training). [`TrainScope::Experts`] trains
//! only the named experts and, optionally, their layers' routers; every other tensor is read
//! from the base [`WeightSource`] as it is (zero-copy views of the chain's mappings) and never
//! written. What is trained is copied into float32 leaves first ([`optim`]'s `Parameter`), so
//! an update can never write through a mapped view.
//!
//! # Determinism
//! On the CPU, the same base weights, corpus, options and seed, on the same machine with the
//! same number of libtorch threads, give bit-identical weights, and a resumed run matches an
//! uninterrupted one bit for bit: batches are drawn from a stream fixed by `(seed, step,
//! micro-step)`, routing ties go to the lower expert, and the state directory holds the
//! weights, both AdamW moments and the step. Across machines the float32 results differ in
//! the last bits (the BLAS kernel chosen for the CPU's vector width, the number of threads
//! splitting a reduction, a GPU's kernels); a routing decision near a tie can then flip, so
//! two machines agree on a loss to a tolerance, never bit for bit.

mod data;
mod dataset;
mod optim;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use blyan_tensorblock::{Dtype, TensorSpec};
use tch::{Kind, Tensor};

pub use data::{
    CORPUS_BYTES_MAX, CorpusRead, HELD_OUT_PER_MILLE_DEFAULT, PIECE_BYTES_MAX, TextDocument,
    TextSplit, TokenCorpus, read_corpus, split_texts, text_pieces,
};
pub use dataset::{DatasetRead, read_dataset, read_dataset_selected};
pub use optim::{AdamWSettings, learning_rate};
use optim::{Parameter, adamw_step, clip_gradients};

use crate::checkpoint::{CheckpointExportSummary, CheckpointFiles, export_checkpoint};
use crate::config::Config;
use crate::error::{MoeError, Result};
use crate::expert::{
    ExpertMatrix, ExpertName, ExpertWeights, SharedGroup, TensorRole, expert_tensor_name,
    parameter_layout,
};
use crate::model::{ExpertUsage, Model, ModelOptions};
use crate::weights::WeightSource;

/// What a run trains.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "scope")]
pub enum TrainScope {
    /// Every tensor of the model.
    Model,
    /// Only these experts, and with `router` their layers' routers; the rest stays frozen.
    Experts {
        /// The experts to train, e.g. `layer2.expert5`.
        experts: Vec<ExpertName>,
        /// Whether the routers of the experts' layers train too.
        router: bool,
    },
}

/// The knobs of a training run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainOptions {
    /// What trains.
    pub scope: TrainScope,
    /// Fixes the batches drawn.
    pub seed: u64,
    /// Length of the learning-rate schedule, in optimizer steps.
    pub steps: u64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Tokens per sequence.
    pub positions: usize,
    /// Micro-batches whose gradients add up to one optimizer step.
    pub accumulation: u32,
    /// Peak learning rate, reached after the warm-up.
    pub learning_rate: f64,
    /// Learning rate at the end of the cosine decay.
    pub min_learning_rate: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: u64,
    /// AdamW's hyper-parameters.
    pub adamw: AdamWSettings,
    /// Largest global gradient norm; larger gradients are scaled down.
    pub clip_norm: f64,
    /// Weight of Mixtral's router load-balancing loss (`router_aux_loss_coef`).
    pub router_aux_loss_coef: f64,
    /// Most held-out tokens one evaluation scores.
    pub eval_tokens_max: usize,
}

impl TrainOptions {
    /// Sensible defaults for `scope`: batches of 16 × 128 tokens, peak learning rate 3e-3
    /// (1e-3 for a fine-tune), 5% warm-up.
    pub fn new(scope: TrainScope, steps: u64) -> Self {
        let fine_tune = matches!(scope, TrainScope::Experts { .. });
        Self {
            scope,
            seed: 0,
            steps,
            batch_size: 16,
            positions: 128,
            accumulation: 1,
            learning_rate: if fine_tune { 1e-3 } else { 3e-3 },
            min_learning_rate: if fine_tune { 1e-4 } else { 3e-4 },
            warmup_steps: (steps / 20).max(1),
            adamw: AdamWSettings::default(),
            clip_norm: 1.0,
            router_aux_loss_coef: 0.01,
            eval_tokens_max: 32 * 1024,
        }
    }

    fn check(&self, config: &Config) -> Result<()> {
        let refuse = |reason: String| Err(MoeError::Training { reason });
        if self.steps == 0 || self.batch_size == 0 || self.positions == 0 || self.accumulation == 0
        {
            return refuse("steps, batch size, positions and accumulation must be positive".into());
        }
        if self.positions > config.max_position_embeddings as usize {
            return refuse(format!(
                "{} positions exceed the model's context of {}",
                self.positions, config.max_position_embeddings
            ));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return refuse(format!(
                "learning rate {} is not positive",
                self.learning_rate
            ));
        }
        if let TrainScope::Experts { experts, .. } = &self.scope {
            if experts.is_empty() {
                return refuse("an expert fine-tune needs at least one expert".into());
            }
            if let Some(unknown) = experts.iter().find(|id| {
                id.layer() >= config.num_hidden_layers || id.expert() >= config.num_local_experts
            }) {
                return refuse(format!(
                    "the model has no expert {unknown}: {} layers of {} experts",
                    config.num_hidden_layers, config.num_local_experts
                ));
            }
        }
        Ok(())
    }

    fn trains(&self, role: &TensorRole) -> bool {
        match (&self.scope, role) {
            (TrainScope::Model, _) => true,
            (TrainScope::Experts { experts, .. }, TensorRole::Expert { id, .. }) => {
                experts.contains(id)
            }
            (
                TrainScope::Experts { experts, router },
                TensorRole::Shared(SharedGroup::Router { layer }),
            ) => *router && experts.iter().any(|id| id.layer() == *layer),
            (TrainScope::Experts { .. }, TensorRole::Shared(_)) => false,
        }
    }
}

/// One optimizer step's figures.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct StepReport {
    /// Optimizer steps done, this one included.
    pub step: u64,
    /// Mean cross-entropy of the step's tokens, in nats.
    pub loss: f64,
    /// The router load-balancing loss (1.0 when the routing is perfectly even).
    pub aux_loss: f64,
    /// The learning rate applied.
    pub learning_rate: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens the step trained on.
    pub tokens: u64,
}

/// One held-out evaluation.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EvalReport {
    /// Optimizer steps done when it ran.
    pub step: u64,
    /// Mean cross-entropy per held-out token, in nats.
    pub loss: f64,
    /// The same in bits per byte of held-out text.
    pub bits_per_byte: f64,
    /// Held-out tokens scored.
    pub tokens: u64,
}

/// Some tensors held here over a base [`WeightSource`] that supplies the rest. While a run
/// trains, the model computes through one whose tensors are shared handles of the parameters;
/// [`Trainer::weights`] returns one whose tensors are copies in the base's dtypes: the weights
/// reached, what [`Trainer::export`] writes and what a node serves after a run.
pub struct TrainedWeights {
    base: Arc<dyn WeightSource>,
    // libtorch tensors are `Send` but not `Sync`; the lock makes the source shareable.
    trained: Mutex<HashMap<String, Tensor>>,
    description: String,
}

impl TrainedWeights {
    fn trained(&self, name: &str) -> Option<Tensor> {
        self.trained
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .map(Tensor::shallow_clone)
    }
}

impl WeightSource for TrainedWeights {
    fn tensor(&self, name: &str) -> Result<Tensor> {
        match self.trained(name) {
            Some(tensor) => Ok(tensor),
            None => self.base.tensor(name),
        }
    }

    fn expert(&self, id: ExpertName) -> Result<ExpertWeights> {
        let names = ExpertMatrix::ALL.map(|matrix| expert_tensor_name(id, matrix));
        match names.each_ref().map(|name| self.trained(name)) {
            [Some(w1), Some(w2), Some(w3)] => Ok(ExpertWeights { w1, w2, w3 }),
            _ => self.base.expert(id),
        }
    }

    fn tensor_spec(&self, name: &str) -> Result<TensorSpec> {
        self.base.tensor_spec(name)
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

/// Name of the training state's tensors file inside a state directory.
pub const STATE_TENSORS_FILE: &str = "state.safetensors";
/// Name of the training state's description inside a state directory.
pub const STATE_FILE: &str = "trainer.json";
const STATE_FORMAT: u32 = 1;

/// What `trainer.json` records.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct StateDocument {
    format: u32,
    options: TrainOptions,
    step: u64,
    tokens: u64,
    corpus: String,
    config: serde_json::Value,
    parameters: Vec<String>,
    usage: Vec<Vec<u64>>,
}

/// A training run: the model computing with trainable copies of what it trains, their
/// optimizer state, and the run's position.
pub struct Trainer {
    config: Config,
    options: TrainOptions,
    model: Model,
    parameters: Vec<Parameter>,
    base: Arc<dyn WeightSource>,
    step: u64,
    tokens: u64,
    usage: Vec<Vec<u64>>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("scope", &self.options.scope)
            .field("step", &self.step)
            .field("parameters", &self.parameters.len())
            .finish()
    }
}

impl Trainer {
    /// A run over `base` as `options` say. Every option and expert name is checked before
    /// anything is copied.
    pub fn new(
        config: &Config,
        base: Arc<dyn WeightSource>,
        options: TrainOptions,
    ) -> Result<Self> {
        options.check(config)?;
        let mut parameters = Vec::new();
        for spec in parameter_layout(config)? {
            if !options.trains(&spec.role) {
                continue;
            }
            let initial = base.tensor(&spec.name)?;
            let got = crate::weights::shape_of(&initial);
            if got != spec.shape {
                return Err(MoeError::WrongShape {
                    name: spec.name,
                    got,
                    expected: spec.shape,
                });
            }
            parameters.push(Parameter::new(spec.name, &initial)?);
        }
        let trained = parameters
            .iter()
            .map(|parameter| (parameter.name.clone(), parameter.value.shallow_clone()))
            .collect();
        let source = Arc::new(TrainedWeights {
            base: Arc::clone(&base),
            trained: Mutex::new(trained),
            description: format!("training over {}", base.describe()),
        });
        // Every expert stays resident: a trained one must remain the same leaf tensor.
        let model = Model::load(config, source, ModelOptions::default())?;
        let usage =
            vec![vec![0; config.num_local_experts as usize]; config.num_hidden_layers as usize];
        Ok(Self {
            config: config.clone(),
            options,
            model,
            parameters,
            base,
            step: 0,
            tokens: 0,
            usage,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The run's options.
    pub fn options(&self) -> &TrainOptions {
        &self.options
    }

    /// Changes the length of the learning-rate schedule (e.g. to end a resumed run sooner or
    /// later than first planned); the cosine decay continues from the current step towards
    /// the new end. A run changed so no longer matches an unchanged one bit for bit.
    pub fn set_schedule_steps(&mut self, steps: u64) -> Result<()> {
        if steps < self.step {
            return Err(MoeError::Training {
                reason: format!("{steps} steps is fewer than the {} already done", self.step),
            });
        }
        self.options.steps = steps;
        Ok(())
    }

    /// Optimizer steps done.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// Training tokens consumed.
    pub fn tokens_seen(&self) -> u64 {
        self.tokens
    }

    /// Names of the tensors being trained, in the architecture's order.
    pub fn trained_tensors(&self) -> Vec<&str> {
        self.parameters
            .iter()
            .map(|parameter| parameter.name.as_str())
            .collect()
    }

    /// Number of trained scalars.
    pub fn trained_scalars(&self) -> u64 {
        self.parameters
            .iter()
            .map(|parameter| u64::try_from(parameter.value.numel()).unwrap_or(u64::MAX))
            .sum()
    }

    /// Each expert's share of its layer's routed tokens since the run began (`[layer][expert]`,
    /// each layer summing to 1 once it has seen tokens; an even router gives `1 / experts`).
    pub fn expert_shares(&self) -> Vec<Vec<f64>> {
        self.usage
            .iter()
            .map(|counts| {
                let total: u64 = counts.iter().sum();
                counts
                    .iter()
                    .map(|count| {
                        if total == 0 {
                            0.0
                        } else {
                            *count as f64 / total as f64
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// One optimizer step: `accumulation` micro-batches forward and backward, clipping, AdamW.
    pub fn step(&mut self, corpus: &TokenCorpus) -> Result<StepReport> {
        let options = self.options.clone();
        let rate = learning_rate(
            self.step,
            options.warmup_steps,
            options.steps,
            options.learning_rate,
            options.min_learning_rate,
        );
        let (batch, positions, accumulation) =
            (options.batch_size, options.positions, options.accumulation);
        let mut loss_sum = 0.0;
        let mut aux_sum = 0.0;
        for micro in 0..accumulation {
            let (inputs, targets) = corpus.batch(options.seed, self.step, micro, batch, positions);
            let (loss, aux) = self.micro_step(&inputs, &targets, batch)?;
            let total = loss
                .f_add(&aux.f_mul_scalar(self.options.router_aux_loss_coef)?)?
                .f_div_scalar(f64::from(accumulation))?;
            // A batch that routes no token to a trained expert (and trains no router) has no
            // gradient: nothing to learn from it, and nothing to do but count it.
            if total.requires_grad() {
                total.f_backward()?;
            }
            loss_sum += loss.f_double_value(&[])?;
            aux_sum += aux.f_double_value(&[])?;
        }
        let grad_norm = clip_gradients(&self.parameters, self.options.clip_norm)?;
        self.step += 1;
        adamw_step(&mut self.parameters, &self.options.adamw, rate, self.step)?;
        let tokens = (batch * positions) as u64 * u64::from(accumulation);
        self.tokens += tokens;
        Ok(StepReport {
            step: self.step,
            loss: loss_sum / f64::from(accumulation),
            aux_loss: aux_sum / f64::from(accumulation),
            learning_rate: rate,
            grad_norm,
            tokens,
        })
    }

    /// The language-model loss and the load-balancing loss of one micro-batch.
    fn micro_step(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        batch: usize,
    ) -> Result<(Tensor, Tensor)> {
        let mut usage = ExpertUsage::new(&self.config);
        let output = self.model.forward_sequences(inputs, batch, &mut usage)?;
        let targets: Vec<i64> = targets.iter().map(|id| i64::from(*id)).collect();
        let targets = Tensor::f_from_slice(&targets)?;
        let loss = output.logits.f_cross_entropy_loss::<Tensor>(
            &targets,
            None,
            tch::Reduction::Mean,
            -100,
            0.0,
        )?;

        // transformers' load_balancing_loss_func over every layer's router at once:
        // E · Σₑ (share of routed slots to e) · (mean router probability of e).
        let experts = f64::from(self.config.num_local_experts);
        let rows = (output.probabilities.len() * inputs.len()) as f64;
        let mut slots = vec![0f32; self.config.num_local_experts as usize];
        for (layer, counts) in usage.tokens.iter().enumerate() {
            for (expert, count) in counts.iter().enumerate() {
                slots[expert] += *count as f32 / rows as f32;
                self.usage[layer][expert] += u64::from(*count);
            }
        }
        let mean_probability =
            Tensor::f_cat(&output.probabilities, 0)?.f_mean_dim(0, false, Kind::Float)?;
        let aux = mean_probability
            .f_mul(&Tensor::f_from_slice(&slots)?)?
            .f_sum(Kind::Float)?
            .f_mul_scalar(experts)?;
        Ok((loss, aux))
    }

    /// Scores held-out text: windows of `positions + 1` tokens, evenly spread over the
    /// held-out split, at most `eval_tokens_max` predicted tokens, the same windows every time.
    pub fn evaluate(&mut self, corpus: &TokenCorpus) -> Result<EvalReport> {
        let positions = self.options.positions;
        let held_out = corpus.held_out();
        let available = (held_out.len().saturating_sub(1) / positions).max(1);
        let windows = (self.options.eval_tokens_max / positions).clamp(1, available);
        let starts: Vec<usize> = (0..windows)
            .map(|index| index * available / windows * positions)
            .collect();
        let window_len = positions.min(held_out.len() - 1);
        let (loss_sum, scored) = windows_loss_sum(
            &mut self.model,
            held_out,
            &starts,
            window_len,
            self.options.batch_size,
        )?;
        let loss = loss_sum / scored.max(1) as f64;
        let tokens_per_byte = held_out.len() as f64 / corpus.held_out_bytes().max(1) as f64;
        Ok(EvalReport {
            step: self.step,
            loss,
            bits_per_byte: loss / std::f64::consts::LN_2 * tokens_per_byte,
            tokens: scored,
        })
    }

    /// The weights reached so far: trained tensors copied out and converted to the dtype the
    /// base stores them in, the rest as the base holds it.
    pub fn weights(&self) -> Result<TrainedWeights> {
        let mut trained = HashMap::with_capacity(self.parameters.len());
        for parameter in &self.parameters {
            let dtype = self.base.tensor_spec(&parameter.name)?.dtype;
            let kind = match dtype {
                Dtype::F16 => Kind::Half,
                Dtype::BF16 => Kind::BFloat16,
                _ => Kind::Float,
            };
            let value = parameter
                .value
                .f_detach()?
                .f_to_kind(kind)?
                .f_detach_copy()?;
            trained.insert(parameter.name.clone(), value);
        }
        Ok(TrainedWeights {
            base: Arc::clone(&self.base),
            trained: Mutex::new(trained),
            description: format!(
                "{} after {} training steps",
                self.base.describe(),
                self.step
            ),
        })
    }

    /// Writes the weights reached as a Hugging Face checkpoint (`config.json`,
    /// `tokenizer.json`, safetensors) that `blyan-miner upload` takes as it is.
    pub fn export(
        &self,
        dir: &Path,
        files: CheckpointFiles<'_>,
    ) -> Result<CheckpointExportSummary> {
        export_checkpoint(
            dir,
            &self.config,
            files,
            &self.weights()?,
            crate::checkpoint::EXPORT_SHARD_BYTES_DEFAULT,
        )
    }

    /// Saves everything a resume needs into `dir` (created if absent): the trained tensors,
    /// both AdamW moments, the step, the options and the corpus fingerprint. Written to a
    /// temporary name and renamed, so a crash leaves the previous state whole.
    pub fn save(&self, dir: &Path, corpus: &TokenCorpus) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|error| MoeError::io(dir, error))?;
        let mut named: Vec<(String, Tensor)> = Vec::with_capacity(self.parameters.len() * 3);
        for parameter in &self.parameters {
            named.push((
                format!("param/{}", parameter.name),
                parameter.value.f_detach()?,
            ));
            named.push((format!("m/{}", parameter.name), parameter.m.shallow_clone()));
            named.push((format!("v/{}", parameter.name), parameter.v.shallow_clone()));
        }
        let tensors_tmp = dir.join(format!("{STATE_TENSORS_FILE}.tmp"));
        Tensor::write_safetensors(&named, &tensors_tmp)?;
        let document = StateDocument {
            format: STATE_FORMAT,
            options: self.options.clone(),
            step: self.step,
            tokens: self.tokens,
            corpus: corpus.fingerprint().to_owned(),
            config: serde_json::from_slice(&self.config.to_json()?)
                .map_err(MoeError::ConfigJson)?,
            parameters: self
                .parameters
                .iter()
                .map(|parameter| parameter.name.clone())
                .collect(),
            usage: self.usage.clone(),
        };
        let json = serde_json::to_vec_pretty(&document).map_err(MoeError::ConfigJson)?;
        let json_tmp = dir.join(format!("{STATE_FILE}.tmp"));
        std::fs::write(&json_tmp, json).map_err(|error| MoeError::io(&json_tmp, error))?;
        for (from, to) in [(&tensors_tmp, STATE_TENSORS_FILE), (&json_tmp, STATE_FILE)] {
            let to = dir.join(to);
            std::fs::rename(from, &to).map_err(|error| MoeError::io(&to, error))?;
        }
        Ok(())
    }

    /// Continues the run saved in `dir` over `base`, refusing a state of another model, of
    /// another corpus, or with missing tensors.
    pub fn resume(
        dir: &Path,
        config: &Config,
        base: Arc<dyn WeightSource>,
        corpus: &TokenCorpus,
    ) -> Result<Self> {
        let refuse = |reason: String| MoeError::TrainState {
            path: dir.to_owned(),
            reason,
        };
        let json_path = dir.join(STATE_FILE);
        let json = crate::weights::read_bounded(&json_path, 16 << 20)?;
        let document: StateDocument = serde_json::from_slice(&json)
            .map_err(|error| refuse(format!("{STATE_FILE}: {error}")))?;
        if document.format != STATE_FORMAT {
            return Err(refuse(format!(
                "format {} is not {STATE_FORMAT}",
                document.format
            )));
        }
        let saved_config: Config = serde_json::from_value(document.config)
            .map_err(|error| refuse(format!("config: {error}")))?;
        if saved_config.to_json()? != config.to_json()? {
            return Err(refuse(
                "it was trained on a model of another configuration".into(),
            ));
        }
        if document.corpus != corpus.fingerprint() {
            return Err(refuse(format!(
                "it was trained on corpus {}, not on this one ({})",
                document.corpus,
                corpus.fingerprint()
            )));
        }
        let mut trainer = Self::new(config, base, document.options)?;
        let names: Vec<String> = trainer
            .parameters
            .iter()
            .map(|parameter| parameter.name.clone())
            .collect();
        if names != document.parameters {
            return Err(refuse(
                "it trains other tensors than its options imply".into(),
            ));
        }
        let mut saved: HashMap<String, Tensor> =
            Tensor::read_safetensors(dir.join(STATE_TENSORS_FILE))?
                .into_iter()
                .collect();
        tch::no_grad(|| -> Result<()> {
            for parameter in &mut trainer.parameters {
                for (prefix, target) in [
                    ("param", &mut parameter.value),
                    ("m", &mut parameter.m),
                    ("v", &mut parameter.v),
                ] {
                    let key = format!("{prefix}/{}", parameter.name);
                    let tensor = saved
                        .remove(&key)
                        .ok_or_else(|| refuse(format!("{key} is missing")))?;
                    if tensor.size() != target.size() || tensor.kind() != Kind::Float {
                        return Err(refuse(format!(
                            "{key} has shape {:?} {:?}",
                            tensor.size(),
                            tensor.kind()
                        )));
                    }
                    target.f_copy_(&tensor)?;
                }
            }
            Ok(())
        })?;
        trainer.step = document.step;
        trainer.tokens = document.tokens;
        if document.usage.len() == trainer.usage.len() {
            trainer.usage = document.usage;
        }
        Ok(trainer)
    }
}

/// Mean next-token cross-entropy (nats) of `model` over the windows of `tokens` starting at
/// `starts`, each `positions` tokens predicting the `positions` that follow by one, run
/// `batch` windows per forward pass without gradients. The sum is taken in f64 in window
/// order, so the same model, tokens and thread count give the same bits. Every window must fit:
/// `start + positions < tokens.len()` ([`MoeError::Corpus`] otherwise).
pub fn windows_loss(
    model: &mut Model,
    tokens: &[u32],
    starts: &[usize],
    positions: usize,
    batch: usize,
) -> Result<f64> {
    let (sum, scored) = windows_loss_sum(model, tokens, starts, positions, batch)?;
    if scored == 0 {
        return Err(MoeError::Corpus {
            reason: "no window to evaluate".into(),
        });
    }
    Ok(sum / scored as f64)
}

/// The summed cross-entropy and the count of scored tokens behind [`windows_loss`].
fn windows_loss_sum(
    model: &mut Model,
    tokens: &[u32],
    starts: &[usize],
    positions: usize,
    batch: usize,
) -> Result<(f64, u64)> {
    if let Some(start) = starts
        .iter()
        .find(|start| positions == 0 || **start + positions >= tokens.len())
    {
        return Err(MoeError::Corpus {
            reason: format!(
                "a window of {positions} tokens at {start} does not fit {} tokens",
                tokens.len()
            ),
        });
    }
    let config = model.config().clone();
    let mut loss_sum = 0.0;
    let mut scored = 0u64;
    tch::no_grad(|| -> Result<()> {
        for group in starts.chunks(batch.max(1)) {
            let mut inputs = Vec::with_capacity(group.len() * positions);
            let mut targets = Vec::with_capacity(group.len() * positions);
            for start in group {
                inputs.extend_from_slice(&tokens[*start..start + positions]);
                targets.extend(
                    tokens[start + 1..start + 1 + positions]
                        .iter()
                        .map(|id| i64::from(*id)),
                );
            }
            let mut usage = ExpertUsage::new(&config);
            let output = model.forward_sequences(&inputs, group.len(), &mut usage)?;
            let targets = Tensor::f_from_slice(&targets)?;
            let losses = output
                .logits
                .f_log_softmax(-1, Kind::Float)?
                .f_gather(1, &targets.f_unsqueeze(1)?, false)?
                .f_neg()?;
            loss_sum += losses.f_sum(Kind::Double)?.f_double_value(&[])?;
            scored += targets.numel() as u64;
        }
        Ok(())
    })?;
    Ok((loss_sum, scored))
}

/// Where a run's state directory keeps itself, for callers that name only an output.
pub fn state_dir(out: &Path) -> PathBuf {
    out.join("train-state")
}
