//! Training tokens/s of blyan-moe's [`Trainer`] on the default model configuration
//! (`models/default/config.json`) against transformers' `MixtralForCausalLM` in PyTorch eager
//! mode, on this CPU, in one run: same config, float32, same thread count, same batch and
//! sequence length, AdamW with the same hyper-parameters, the same gradient clipping and the same
//! router load-balancing loss weight (`output_router_logits=True`, `router_aux_loss_coef`).
//!
//! Two baselines, each a long-lived `scripts/bench/train_speed.py --serve` process: transformers
//! with eager attention and its per-expert loop (`eager`/`eager`, what the parity tests compare
//! against), and transformers' own defaults on this version (`sdpa` attention, `grouped_mm`
//! experts). After warm-up steps on every side, each round times `BLYAN_BENCH_STEPS` optimizer
//! steps of ours, then of each baseline, so a change in the machine's load hits all of them
//! alike; the figures are medians over `BLYAN_BENCH_ROUNDS` rounds.
//!
//! `source scripts/env.sh && nice -n 15 cargo bench -p blyan-moe --bench train --profile test`
//! (threads: `BLYAN_BENCH_THREADS`, default 2; shapes: `BLYAN_BENCH_SHAPES`, default
//! `8x256,16x128`). The text trained on is the repository's own `docs/` and `crates/` sources,
//! tokenized with the model's byte-level tokenizer; the baseline draws its windows from the same
//! training tokens. Needs the project's Python environment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use blyan_moe::{
    Config, RandomInit, TokenCorpus, Tokenizer, TrainOptions, TrainScope, Trainer, read_corpus,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    let venv = std::env::var_os("BLYAN_VENV").map_or_else(|| root().join(".venv"), PathBuf::from);
    venv.join("bin/python")
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One transformers baseline, built once and asked for timed steps line by line.
struct Baseline {
    label: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    description: serde_json::Value,
}

impl Baseline {
    fn start(label: &str, args: &[String]) -> Self {
        let script = root().join("scripts/bench/train_speed.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(args)
            .arg("--serve")
            .env("HF_HUB_OFFLINE", "1")
            .env("TRANSFORMERS_VERBOSITY", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the project's Python environment (scripts/setup.sh)");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut baseline = Self {
            label: label.to_owned(),
            child,
            stdin,
            stdout,
            description: serde_json::Value::Null,
        };
        baseline.description = baseline.read_line();
        baseline
    }

    fn read_line(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(
            !line.is_empty(),
            "{}: the baseline exited (its stderr is above)",
            self.label
        );
        serde_json::from_str(&line).unwrap()
    }

    /// Tokens/s of `steps` optimizer steps.
    fn timed(&mut self, steps: u32) -> f64 {
        writeln!(self.stdin, "{steps}").unwrap();
        self.stdin.flush().unwrap();
        self.read_line()["tokens_per_second"].as_f64().unwrap()
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let threads: i32 = env_or("BLYAN_BENCH_THREADS", 2);
    let rounds: usize = env_or("BLYAN_BENCH_ROUNDS", 5);
    let steps: u32 = env_or("BLYAN_BENCH_STEPS", 2);
    let warmup: u32 = env_or("BLYAN_BENCH_WARMUP", 3);
    let shapes: Vec<(usize, usize)> = env_or("BLYAN_BENCH_SHAPES", "8x256,16x128".to_owned())
        .split(',')
        .map(|shape| {
            let (batch, positions) = shape.split_once('x').expect("shapes like 8x256");
            (batch.parse().unwrap(), positions.parse().unwrap())
        })
        .collect();
    tch::set_num_threads(threads);

    let config_path = root().join("models/default/config.json");
    let config = Config::from_json(&std::fs::read(&config_path).unwrap()).unwrap();
    let read = read_corpus(&[root().join("docs"), root().join("crates")]).unwrap();
    let corpus = TokenCorpus::new(
        &Tokenizer::byte_level(),
        &read.documents,
        blyan_moe::HELD_OUT_PER_MILLE_DEFAULT,
        config.eos_token_ids().first().copied(),
    )
    .unwrap();
    let temp = tempfile::tempdir().unwrap();
    let tokens_path = temp.path().join("train.u32");
    let bytes: Vec<u8> = corpus
        .train()
        .iter()
        .flat_map(|token| token.to_le_bytes())
        .collect();
    std::fs::write(&tokens_path, bytes).unwrap();
    println!(
        "== training tokens/s: default config ({} layers × {} experts, top-{}, hidden {}), float32, {threads} thread(s), {} training tokens; medians of {rounds} rounds of {steps} steps after {warmup} warm-up steps ==",
        config.num_hidden_layers,
        config.num_local_experts,
        config.num_experts_per_tok,
        config.hidden_size,
        corpus.train().len()
    );

    for (batch, positions) in shapes {
        let mut options = TrainOptions::new(TrainScope::Model, 1_000_000);
        options.batch_size = batch;
        options.positions = positions;
        let base = Arc::new(RandomInit::new(&config, 1).unwrap());
        let mut trainer = Trainer::new(&config, base, options.clone()).unwrap();
        let args: Vec<String> = [
            ("--config", config_path.display().to_string()),
            ("--tokens", tokens_path.display().to_string()),
            ("--threads", threads.to_string()),
            ("--batch-size", batch.to_string()),
            ("--positions", positions.to_string()),
            ("--learning-rate", options.learning_rate.to_string()),
            ("--beta1", options.adamw.beta1.to_string()),
            ("--beta2", options.adamw.beta2.to_string()),
            ("--eps", options.adamw.eps.to_string()),
            ("--weight-decay", options.adamw.weight_decay.to_string()),
            ("--clip-norm", options.clip_norm.to_string()),
            (
                "--router-aux-loss-coef",
                options.router_aux_loss_coef.to_string(),
            ),
            ("--warmup", warmup.to_string()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value])
        .collect();
        let with = |attention: &str, experts: &str| -> Vec<String> {
            let mut args = args.clone();
            args.extend([
                "--attn-implementation".into(),
                attention.into(),
                "--experts-implementation".into(),
                experts.into(),
            ]);
            args
        };
        let mut baselines = [
            Baseline::start("eager", &with("eager", "eager")),
            Baseline::start("default", &with("sdpa", "grouped_mm")),
        ];
        for _ in 0..warmup {
            trainer.step(&corpus).unwrap();
        }
        let mut ours = Vec::with_capacity(rounds);
        let mut loss = f64::NAN;
        let mut theirs = vec![Vec::with_capacity(rounds); baselines.len()];
        for _ in 0..rounds {
            let started = Instant::now();
            for _ in 0..steps {
                loss = trainer.step(&corpus).unwrap().loss;
            }
            ours.push(
                f64::from(steps) * (batch * positions) as f64 / started.elapsed().as_secs_f64(),
            );
            for (baseline, figures) in baselines.iter_mut().zip(&mut theirs) {
                figures.push(baseline.timed(steps));
            }
        }
        let ours = median(ours);
        println!(
            "\n{batch} × {positions}: blyan-moe Trainer {ours:.0} tok/s (training loss at step {}: {loss:.3})",
            trainer.steps_done()
        );
        for (baseline, figures) in baselines.iter().zip(theirs) {
            let theirs = median(figures);
            println!(
                "  vs transformers {} ({} attention, {} experts, torch {}): {theirs:.0} tok/s, ratio {:.2}x",
                baseline.label,
                baseline.description["attn_implementation"],
                baseline.description["experts_implementation"],
                baseline.description["torch"],
                ours / theirs
            );
        }
    }
}
