//! `blyan-miner train`: trains the whole model or named experts on text (files, or the dataset
//! entries of chain D), and writes a Hugging Face checkpoint that `upload` takes as it is.
//!
//! Everything that can be wrong with the input (no text, an unknown expert, a state directory
//! of another model or corpus, an unreadable file, a data directory without a chain) is found
//! before the first step and before `--out` is written; with `--from-node` the model is fetched
//! into `OUT/base-model` only after the experts were checked against its configuration. The run's
//! state is saved into `OUT/train-state` at every evaluation and at the end, so `--resume
//! OUT/train-state` continues it exactly. A run that starts from a chain's model records, beside
//! the checkpoint, the expert versions it started from ([`ChainOrigin`]), so that `upload`
//! refuses to revert versions others published meanwhile.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use blyan_chain::{AuthorKey, ChainStore, ExpertName};
use blyan_moe::{
    ChainSource, CheckpointFiles, Config, EvalReport, RandomInit, TextDocument, TokenCorpus,
    Tokenizer, TrainOptions, TrainScope, Trainer, WeightSource, read_corpus, state_dir,
};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::origin::ChainOrigin;

/// `blyan-miner train`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct TrainArgs {
    #[command(flatten)]
    text: Text,
    #[command(flatten)]
    start: Start,
    /// Experts to fine-tune, e.g. `layer2.expert5,layer0.expert1`; absent: the whole model.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    experts: Vec<ExpertName>,
    /// With `--experts`: train the routers of their layers too.
    #[arg(long, requires = "experts")]
    router: bool,
    /// Optimizer steps to run (the learning-rate schedule's length; with `--resume`, a new
    /// end for the resumed run's schedule).
    #[arg(long, value_name = "N", conflicts_with = "minutes")]
    steps: Option<u64>,
    /// Train for about this many minutes: the step count is estimated from a timed first step.
    #[arg(long, value_name = "M")]
    minutes: Option<f64>,
    /// Fixes the batches drawn (and the initialisation with `--init`).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where the trained checkpoint goes (config.json, tokenizer.json, model.safetensors).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Continue the run saved in this state directory (e.g. `OUT/train-state`): its model,
    /// options, schedule, optimizer state and step; only the text must be the same.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Stop after this many steps of this invocation, the schedule staying `--steps` long: the
    /// state and checkpoint are written as at the end, and `--resume` continues the run.
    #[arg(long, value_name = "N")]
    stop_after: Option<u64>,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    positions: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    accumulation: u32,
    /// Peak learning rate (default: 3e-3 for the whole model, 1e-3 for experts).
    #[arg(long)]
    learning_rate: Option<f64>,
    /// Evaluate on held-out text (and save the state) every this many steps.
    #[arg(long, default_value_t = 200)]
    eval_every: u64,
    /// Most held-out tokens one evaluation scores.
    #[arg(long, default_value_t = 32 * 1024)]
    eval_tokens: usize,
    /// Held-out share of the corpus, in thousandths.
    #[arg(long, default_value_t = blyan_moe::HELD_OUT_PER_MILLE_DEFAULT)]
    held_out_per_mille: u32,
    /// libtorch threads (the same count, machine and seed give bit-identical weights).
    #[arg(long)]
    threads: Option<i32>,
    /// Print one JSON object per evaluation and a final one, instead of a progress bar.
    #[arg(long)]
    json: bool,
}

/// What the run learns from: text files, chain D's dataset entries, or both. A share of the
/// text (`--held-out-per-mille`) is held out for evaluation.
#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
struct Text {
    /// Text files or directories to learn from (directories are walked; non-text files are
    /// skipped).
    #[arg(long, value_name = "PATH", num_args = 1..)]
    corpus: Vec<PathBuf>,
    /// A node's data directory (or chain store) whose dataset chain (D) holds the text: the
    /// samples usable under the shipped dataset gates (`docs/datasets.md`; L3 reviews count
    /// when signed by the node's own key, `node.key`, or a validator set on chain D), read-only
    /// (a node may be running on it).
    #[arg(long, value_name = "DIR")]
    dataset: Option<PathBuf>,
}

/// Where the weights to train start from: exactly one.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Start {
    /// The current model of a running node (`http://host:port`), fetched and verified block by
    /// block.
    #[arg(long, value_name = "URL")]
    from_node: Option<String>,
    /// The current model of a node's data directory (read-only; a node may be running on it).
    #[arg(long, value_name = "DIR")]
    from_data_dir: Option<PathBuf>,
    /// A fresh random initialisation of this `config.json` (with the byte-level tokenizer, or
    /// `tokenizer.json` beside it when there is one).
    #[arg(long, value_name = "CONFIG")]
    init: Option<PathBuf>,
}

/// The weights a run starts from, with the files a checkpoint of them carries.
struct Base {
    config: Config,
    config_json: Vec<u8>,
    tokenizer_json: Vec<u8>,
    generation_config_json: Option<Vec<u8>>,
    weights: Arc<dyn WeightSource>,
    description: String,
    /// The chain versions the weights are (`None`: a random initialisation).
    origin: Option<ChainOrigin>,
}

/// Where `--from-node` keeps the fetched model: beside the output, reused by a resume.
fn fetch_dir(out: &Path) -> anyhow::Result<PathBuf> {
    let dir = out.join("base-model");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The weights a run starts from, checked against the experts it is to train before anything is
/// fetched or written.
fn base(start: &Start, seed: u64, experts: &[ExpertName], out: &Path) -> anyhow::Result<Base> {
    if let Some(config_path) = &start.init {
        let bytes = std::fs::read(config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let config = Config::from_json(&bytes)
            .with_context(|| format!("refusing {}", config_path.display()))?;
        let beside = config_path.with_file_name(blyan_moe::TOKENIZER_FILE_NAME);
        let tokenizer_json = if beside.is_file() {
            std::fs::read(&beside).with_context(|| format!("reading {}", beside.display()))?
        } else {
            Tokenizer::byte_level_json()
        };
        check_experts(&config, experts)?;
        let weights = Arc::new(RandomInit::new(&config, seed)?);
        return Ok(Base {
            config_json: config.to_json()?,
            config,
            tokenizer_json,
            generation_config_json: None,
            weights,
            origin: None,
            description: format!(
                "a random initialisation of {} (seed {seed})",
                config_path.display()
            ),
        });
    }
    if let Some(data_dir) = &start.from_data_dir {
        let store = ChainStore::locate(data_dir)
            .and_then(ChainStore::open_read_only)
            .with_context(|| format!("opening the chain store in {}", data_dir.display()))?;
        let origin = ChainOrigin::of_store(&store)
            .with_context(|| format!("reading the current model of {}", data_dir.display()))?;
        let source = ChainSource::open(Arc::new(store))
            .with_context(|| format!("reading the current model of {}", data_dir.display()))?;
        check_experts(source.config(), experts)?;
        return from_source(
            source,
            format!("the current model of {}", data_dir.display()),
            origin,
        );
    }
    if let Some(url) = &start.from_node {
        let model = crate::node::NodeModel::locate(url)
            .with_context(|| format!("reading the current model of the node at {url}"))?;
        check_experts(model.config(), experts)?;
        let dir = fetch_dir(out)?;
        let (checkpoint, origin) = model
            .download(&dir)
            .with_context(|| format!("fetching the current model of the node at {url}"))?;
        let files = checkpoint.files();
        return Ok(Base {
            config: checkpoint.config().clone(),
            config_json: files.config_json.to_vec(),
            tokenizer_json: files.tokenizer_json.to_vec(),
            generation_config_json: files.generation_config_json.map(<[u8]>::to_vec),
            weights: checkpoint.weights(),
            origin: Some(origin),
            description: format!(
                "the current model of {url} (meta block {}, fetched into {})",
                model.meta_block(),
                dir.display()
            ),
        });
    }
    anyhow::bail!("train needs --from-node URL, --from-data-dir DIR or --init CONFIG")
}

/// Refuses an expert the model does not have, naming it and the model's shape.
fn check_experts(config: &Config, experts: &[ExpertName]) -> anyhow::Result<()> {
    for expert in experts {
        anyhow::ensure!(
            expert.layer() < config.num_hidden_layers && expert.expert() < config.num_local_experts,
            "unknown expert {expert}: the model has {} layers of {} experts (layer0.expert0 to \
             layer{}.expert{})",
            config.num_hidden_layers,
            config.num_local_experts,
            config.num_hidden_layers.saturating_sub(1),
            config.num_local_experts.saturating_sub(1)
        );
    }
    Ok(())
}

/// The run's text: the corpus files and chain D's entries, read and checked before the model
/// is even opened.
fn read_text(text: &Text) -> anyhow::Result<(Vec<TextDocument>, usize)> {
    let mut documents = Vec::new();
    let mut skipped = 0;
    if !text.corpus.is_empty() {
        let read = read_corpus(&text.corpus)?;
        skipped += read.skipped.len();
        documents.extend(read.documents);
    }
    if let Some(dir) = &text.dataset {
        let store = ChainStore::locate(dir)
            .and_then(ChainStore::open_read_only)
            .with_context(|| format!("opening the chain store in {}", dir.display()))?;
        let read = usable_dataset(&store, dir)
            .with_context(|| format!("reading the dataset of {}", dir.display()))?;
        skipped += read.skipped.len();
        documents.extend(read.documents);
    }
    Ok((documents, skipped))
}

/// The training text of chain D's usable samples (everything else skipped), replayed under the
/// shipped gate settings; the configured validator is the node's own key in `dir` (a node
/// without `pol.validators` validates alone), replaced by chain D's `validators` records.
fn usable_dataset(
    store: &ChainStore,
    dir: &std::path::Path,
) -> anyhow::Result<blyan_moe::DatasetRead> {
    use blyan_quality::{DataBlock, DataRecord, GateParams, GateView, decode_record};
    let configured: Vec<blyan_pol::ValidatorStake> =
        [dir.join("node.key"), dir.join("../node.key")]
            .iter()
            .find(|path| path.is_file())
            .and_then(|path| AuthorKey::read_file(path).ok())
            .map(|key| blyan_pol::ValidatorStake {
                address: key.address(),
                stake: 1,
            })
            .into_iter()
            .collect();
    let records = blyan_pol::scan_records(store, 1)?;
    let changes: Vec<_> = records
        .iter()
        .filter_map(|record| match &record.record {
            blyan_pol::PolRecord::Validators(set) => Some((record.height, &set.validators)),
            _ => None,
        })
        .collect();
    let is_validator = |address, height| {
        changes
            .iter()
            .rev()
            .find(|(changed, _)| *changed < height)
            .map_or(&configured, |(_, set)| *set)
            .iter()
            .any(|validator| validator.address == address && validator.stake > 0)
    };
    let view = GateView::replay(
        GateParams::default(),
        &DataBlock::scan(store)?,
        &is_validator,
    );
    let now = blyan_pol::now_ms();
    Ok(blyan_moe::read_dataset_selected(
        store,
        &|block, payload| {
            if !view.is_usable(&block, now) {
                return None;
            }
            match decode_record(payload) {
                Ok(DataRecord::Sample(sample)) => Some(sample.training_text()),
                _ => None,
            }
        },
    )?)
}

fn from_source(
    source: ChainSource,
    description: String,
    origin: ChainOrigin,
) -> anyhow::Result<Base> {
    let files = source.files();
    let (config_json, tokenizer_json) = (files.config_json.to_vec(), files.tokenizer_json.to_vec());
    let generation_config_json = files.generation_config_json.map(<[u8]>::to_vec);
    Ok(Base {
        config: source.config().clone(),
        config_json,
        tokenizer_json,
        generation_config_json,
        weights: Arc::new(source),
        description,
        origin: Some(origin),
    })
}

/// What one line of `--json` output says.
#[derive(serde::Serialize)]
struct EvalLine<'a> {
    event: &'a str,
    step: u64,
    eval_loss: f64,
    eval_bits_per_byte: f64,
    train_loss: Option<f64>,
    tokens: u64,
    seconds: f64,
    tokens_per_second: f64,
}

/// The final `--json` object.
#[derive(serde::Serialize)]
struct FinalLine {
    event: &'static str,
    steps: u64,
    eval_loss_before: f64,
    eval_loss_after: f64,
    eval_bits_per_byte_before: f64,
    eval_bits_per_byte_after: f64,
    tokens: u64,
    seconds: f64,
    tokens_per_second: f64,
    trained_tensors: usize,
    trained_scalars: u64,
    expert_shares: Vec<Vec<f64>>,
    corpus_fingerprint: String,
    train_bytes: u64,
    held_out_bytes: u64,
    out: PathBuf,
}

pub(crate) fn train(args: &TrainArgs) -> anyhow::Result<()> {
    if let Some(threads) = args.threads {
        anyhow::ensure!(threads > 0, "--threads must be positive");
        tch::set_num_threads(threads);
    }
    // Everything is read and checked before the first step, and before `--out` is written.
    let (documents, skipped) = read_text(&args.text)?;
    let base = base(&args.start, args.seed, &args.experts, &args.out)?;
    let tokenizer = Tokenizer::from_json(&base.tokenizer_json).context("the model's tokenizer")?;
    let corpus = TokenCorpus::new(
        &tokenizer,
        &documents,
        args.held_out_per_mille,
        base.config.eos_token_ids().first().copied(),
    )?;
    if !args.json {
        eprintln!(
            "corpus: {} documents ({} skipped), {} training and {} held-out tokens, fingerprint {}",
            documents.len(),
            skipped,
            corpus.train().len(),
            corpus.held_out().len(),
            corpus.fingerprint()
        );
        eprintln!("starting from {}", base.description);
    }
    let scope = if args.experts.is_empty() {
        TrainScope::Model
    } else {
        TrainScope::Experts {
            experts: args.experts.clone(),
            router: args.router,
        }
    };
    let options = |steps: u64| {
        let mut options = TrainOptions::new(scope.clone(), steps);
        options.seed = args.seed;
        options.batch_size = args.batch_size;
        options.positions = args.positions;
        options.accumulation = args.accumulation;
        options.eval_tokens_max = args.eval_tokens;
        if let Some(rate) = args.learning_rate {
            options.learning_rate = rate;
            options.min_learning_rate = rate / 10.0;
        }
        options
    };
    let mut trainer = match &args.resume {
        Some(dir) => {
            let mut trainer =
                Trainer::resume(dir, &base.config, Arc::clone(&base.weights), &corpus)?;
            // `--steps` on a resume moves the end of the schedule.
            if let Some(steps) = args.steps {
                trainer.set_schedule_steps(steps)?;
            }
            trainer
        }
        None => {
            let steps = match (args.steps, args.minutes) {
                (Some(steps), _) => steps,
                (None, Some(minutes)) => estimate_steps(&base, &corpus, &options(1), minutes)?,
                (None, None) => anyhow::bail!("train needs --steps N or --minutes M"),
            };
            Trainer::new(&base.config, Arc::clone(&base.weights), options(steps))?
        }
    };
    let total_steps = trainer.options().steps;
    let state = state_dir(&args.out);
    let started = Instant::now();
    let tokens_at_start = trainer.tokens_seen();
    let before = trainer.evaluate(&corpus)?;
    let report = |line: &EvalLine<'_>| -> anyhow::Result<()> {
        if args.json {
            println!("{}", serde_json::to_string(line)?);
        }
        Ok(())
    };
    let eval_line = |event, eval: &EvalReport, train_loss, trainer: &Trainer| {
        let seconds = started.elapsed().as_secs_f64();
        let tokens = trainer.tokens_seen() - tokens_at_start;
        EvalLine {
            event,
            step: eval.step,
            eval_loss: eval.loss,
            eval_bits_per_byte: eval.bits_per_byte,
            train_loss,
            tokens,
            seconds,
            tokens_per_second: tokens as f64 / seconds.max(1e-9),
        }
    };
    report(&eval_line("eval", &before, None, &trainer))?;

    let bar = if args.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total_steps)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps {msg} [{elapsed_precise} elapsed, ETA {eta_precise}]",
        )
        .context("progress bar template")?,
    );
    bar.set_position(trainer.steps_done());
    let mut last_loss = None;
    let mut smoothed: Option<f64> = None;
    let stop_at = args.stop_after.map_or(total_steps, |steps| {
        trainer.steps_done().saturating_add(steps).min(total_steps)
    });
    while trainer.steps_done() < stop_at {
        let step = trainer.step(&corpus)?;
        last_loss = Some(step.loss);
        let average = smoothed.map_or(step.loss, |value| 0.9 * value + 0.1 * step.loss);
        smoothed = Some(average);
        let seconds = started.elapsed().as_secs_f64();
        bar.set_position(step.step);
        bar.set_message(format!(
            "loss {average:.3}, {:.0} tokens/s",
            (trainer.tokens_seen() - tokens_at_start) as f64 / seconds.max(1e-9)
        ));
        if step.step % args.eval_every.max(1) == 0 && step.step < stop_at {
            let eval = trainer.evaluate(&corpus)?;
            trainer.save(&state, &corpus)?;
            report(&eval_line("eval", &eval, Some(average), &trainer))?;
            bar.println(format!(
                "step {}: held-out loss {:.4} ({:.3} bits/byte), train loss {average:.4}",
                eval.step, eval.loss, eval.bits_per_byte
            ));
        }
    }
    bar.finish_and_clear();
    let after = trainer.evaluate(&corpus)?;
    trainer.save(&state, &corpus)?;
    report(&eval_line("eval", &after, last_loss, &trainer))?;
    let files = CheckpointFiles {
        config_json: &base.config_json,
        generation_config_json: base.generation_config_json.as_deref(),
        tokenizer_json: &base.tokenizer_json,
        tokenizer_config_json: None,
    };
    trainer.export(&args.out, files)?;
    match &base.origin {
        Some(origin) => origin.write(&args.out)?,
        None => ChainOrigin::remove(&args.out)?,
    }
    let seconds = started.elapsed().as_secs_f64();
    let tokens = trainer.tokens_seen() - tokens_at_start;
    let summary = FinalLine {
        event: "done",
        steps: trainer.steps_done(),
        eval_loss_before: before.loss,
        eval_loss_after: after.loss,
        eval_bits_per_byte_before: before.bits_per_byte,
        eval_bits_per_byte_after: after.bits_per_byte,
        tokens,
        seconds,
        tokens_per_second: tokens as f64 / seconds.max(1e-9),
        trained_tensors: trainer.trained_tensors().len(),
        trained_scalars: trainer.trained_scalars(),
        expert_shares: trainer.expert_shares(),
        corpus_fingerprint: corpus.fingerprint().to_owned(),
        train_bytes: corpus.train_bytes(),
        held_out_bytes: corpus.held_out_bytes(),
        out: args.out.clone(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "trained {} steps ({} tokens, {:.0} s): held-out loss {:.4} → {:.4}, {:.3} bits/byte; \
             checkpoint in {}",
            summary.steps,
            summary.tokens,
            seconds,
            before.loss,
            after.loss,
            after.bits_per_byte,
            args.out.display()
        );
    }
    Ok(())
}

/// Steps that fit in `minutes`, from one timed step of a throwaway run.
fn estimate_steps(
    base: &Base,
    corpus: &TokenCorpus,
    options: &TrainOptions,
    minutes: f64,
) -> anyhow::Result<u64> {
    anyhow::ensure!(
        minutes > 0.0 && minutes.is_finite(),
        "--minutes must be positive"
    );
    let mut probe = Trainer::new(&base.config, Arc::clone(&base.weights), options.clone())?;
    let started = Instant::now();
    let _ = probe.step(corpus)?;
    let per_step = started.elapsed().max(Duration::from_millis(1));
    Ok(((minutes * 60.0) / per_step.as_secs_f64()).max(1.0) as u64)
}
