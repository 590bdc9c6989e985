//! blyan-moe against transformers' eager `MixtralForCausalLM` on the parity fixture's tiny
//! Mixtral (same checkpoint, same thread count, same prompt): prefill and decode tokens/s and
//! their ratios; the expert cache's hit rate and decode speed with budgets of 25, 50 and 100 %
//! of the experts; batched decoding of concurrent streams against the same streams stepped one
//! at a time (on the tiny model and on a wider one whose experts are 44 MB each); and cold start
//! (store open to first token, empty cache).
//!
//! `source scripts/env.sh && cargo bench -p blyan-moe --bench moe` (threads: BLYAN_BENCH_THREADS,
//! default 1). Needs the project's Python environment for the fixture and the baseline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blyan_chain::{AuthorKey, ChainStore, Durability, StoreConfig};
use blyan_moe::{
    CancelToken, Checkpoint, Config, ExpertUsage, Generator, Logits, Model, ModelOptions,
    PublishOptions, RandomInit, SamplingParams, Tokenizer, publish_model,
};
use criterion::Criterion;

const PROMPT: &str = "the quick brown fox jumps over the lazy dog and the chain holds the experts";
const DECODE_TOKENS: usize = 64;
const PROMPT_SET: [&str; 4] = [
    "the chain holds the experts",
    "a block of the model",
    "the quick brown fox jumps over the lazy dog",
    "miners upload experts and validators check the proof of learning",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    let venv = std::env::var_os("BLYAN_VENV").map_or_else(|| root().join(".venv"), PathBuf::from);
    venv.join("bin/python")
}

fn run_python(args: &[&std::ffi::OsStr]) -> String {
    let output = Command::new(python())
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .output()
        .expect("the project's Python environment (scripts/setup.sh)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn prefill(model: &mut Model, ids: &[u32]) -> u32 {
    let mut cache = model.new_kv_cache();
    let mut usage = ExpertUsage::new(model.config());
    let logits = model
        .forward(ids, &mut cache, &mut usage, Logits::Last)
        .unwrap();
    logits.argmax(-1, false).int64_value(&[0]) as u32
}

/// Seconds for `DECODE_TOKENS` greedy single-token steps after a prefill.
fn decode(model: &mut Model, ids: &[u32]) -> Duration {
    let mut cache = model.new_kv_cache();
    let mut usage = ExpertUsage::new(model.config());
    let logits = model
        .forward(ids, &mut cache, &mut usage, Logits::Last)
        .unwrap();
    let mut token = logits.argmax(-1, false).int64_value(&[0]) as u32;
    let started = Instant::now();
    for _ in 0..DECODE_TOKENS {
        let logits = model
            .forward(&[token], &mut cache, &mut usage, Logits::Last)
            .unwrap();
        token = logits.argmax(-1, false).int64_value(&[0]) as u32;
    }
    started.elapsed()
}

/// Aggregate tokens/s of `streams` concurrent greedy generations of `tokens` tokens each
/// (prefills included), every stream on its own thread.
fn concurrent_decode(generator: &Generator, streams: usize, tokens: u32) -> f64 {
    let barrier = Arc::new(std::sync::Barrier::new(streams));
    let started = Instant::now();
    let handles: Vec<_> = (0..streams)
        .map(|stream| {
            let generator = generator.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let params = SamplingParams {
                    ignore_eos: true,
                    ..SamplingParams::greedy(tokens)
                };
                let prompt = PROMPT_SET[stream % PROMPT_SET.len()];
                generator
                    .generate(prompt, params, CancelToken::new())
                    .unwrap()
                    .token_ids
                    .len()
            })
        })
        .collect();
    let generated: usize = handles
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .sum();
    generated as f64 / started.elapsed().as_secs_f64()
}

/// Batched against one-step-at-a-time decoding of 1, 8 and 16 concurrent streams.
fn batched_decoding(label: &str, generator: &Generator) {
    println!(
        "\n== batched decoding, {label}: aggregate tokens/s of concurrent streams (48 tokens each, prefill included; medians of 3) =="
    );
    for streams in [1usize, 8, 16] {
        let mut batched = Vec::new();
        let mut alone = Vec::new();
        let (mut steps, mut passes) = (0, 0);
        for _ in 0..3 {
            generator.set_decode_batch_max(blyan_moe::DECODE_BATCH_MAX);
            let before = generator.decode_stats();
            batched.push(concurrent_decode(generator, streams, 48));
            let after = generator.decode_stats();
            steps += after.steps - before.steps;
            passes += after.batches - before.batches;
            generator.set_decode_batch_max(1);
            alone.push(concurrent_decode(generator, streams, 48));
        }
        generator.set_decode_batch_max(blyan_moe::DECODE_BATCH_MAX);
        let median = |mut values: Vec<f64>| {
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let (batched, alone) = (median(batched), median(alone));
        println!(
            "{streams:>2} stream(s): batched {batched:.1} tok/s, one step at a time {alone:.1} tok/s, ratio {:.2}x (batched: {:.2} steps per forward pass)",
            batched / alone,
            steps as f64 / passes.max(1) as f64
        );
    }
}

fn main() {
    let threads: i32 = std::env::var("BLYAN_BENCH_THREADS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1);
    tch::set_num_threads(threads);
    let temp = tempfile::tempdir().unwrap();
    let script = root().join("scripts/fixtures/make_tiny_mixtral.py");
    run_python(&[
        script.as_os_str(),
        "--out".as_ref(),
        temp.path().as_os_str(),
    ]);
    let checkpoint_dir = temp.path().join("checkpoint");
    let checkpoint = Checkpoint::open(&checkpoint_dir).unwrap();
    let ids = checkpoint.tokenizer().unwrap().encode(PROMPT).unwrap();
    let mut model = checkpoint.load_model(ModelOptions::default()).unwrap();

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("tiny_mixtral");
    group.bench_function("prefill", |b| b.iter(|| prefill(&mut model, &ids)));
    group.bench_function("decode_64", |b| b.iter(|| decode(&mut model, &ids)));
    group.finish();

    // Ratios against transformers, measured now on the same machine and thread count.
    for _ in 0..3 {
        prefill(&mut model, &ids);
    }
    let ours_prefill = median(
        (0..30)
            .map(|_| {
                let started = Instant::now();
                prefill(&mut model, &ids);
                started.elapsed()
            })
            .collect(),
    );
    let ours_decode = median((0..7).map(|_| decode(&mut model, &ids)).collect());
    let ids_text: Vec<String> = ids.iter().map(u32::to_string).collect();
    let baseline_script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/reference_speed.py");
    let baseline: serde_json::Value = serde_json::from_str(&run_python(&[
        baseline_script.as_os_str(),
        "--checkpoint".as_ref(),
        checkpoint_dir.as_os_str(),
        "--threads".as_ref(),
        threads.to_string().as_ref(),
        "--prompt-ids".as_ref(),
        ids_text.join(",").as_ref(),
        "--decode-tokens".as_ref(),
        DECODE_TOKENS.to_string().as_ref(),
        "--repeats".as_ref(),
        "30".as_ref(),
    ]))
    .unwrap();
    let ours_prefill_tps = ids.len() as f64 / ours_prefill.as_secs_f64();
    let ours_decode_tps = DECODE_TOKENS as f64 / ours_decode.as_secs_f64();
    let theirs_prefill_tps = baseline["prefill_tokens_per_second"].as_f64().unwrap();
    let theirs_decode_tps = baseline["decode_tokens_per_second"].as_f64().unwrap();
    println!(
        "\n== blyan-moe vs transformers {} eager, {threads} thread(s), prompt {} tokens ==",
        baseline["torch"],
        ids.len()
    );
    println!(
        "prefill: ours {ours_prefill_tps:.0} tok/s, transformers {theirs_prefill_tps:.0} tok/s, ratio {:.2}x",
        ours_prefill_tps / theirs_prefill_tps
    );
    println!(
        "decode:  ours {ours_decode_tps:.0} tok/s, transformers {theirs_decode_tps:.0} tok/s, ratio {:.2}x",
        ours_decode_tps / theirs_decode_tps
    );

    // The model published to a chain store: the budgets and cold start run from its blocks.
    let data = tempfile::tempdir().unwrap();
    let store_config = StoreConfig {
        durability: Durability::Unsynced,
        ..StoreConfig::default()
    };
    {
        let store = ChainStore::open(data.path(), store_config.clone()).unwrap();
        let files = checkpoint.files();
        publish_model(
            &store,
            &AuthorKey::generate(),
            checkpoint.config(),
            files,
            &*checkpoint.weights(),
            &PublishOptions::default(),
            &mut |_| {},
        )
        .unwrap();
        store.flush().unwrap();
    }
    // Expert cache under budgets, on a fixed prompt set.
    let config = checkpoint.config();
    let all_experts = u64::from(config.num_hidden_layers * config.num_local_experts)
        * 3
        * u64::from(config.hidden_size)
        * u64::from(config.intermediate_size)
        * 4;
    println!(
        "\n== expert cache (model on a chain store), {} prompts × 32 greedy tokens ==",
        PROMPT_SET.len()
    );
    for percent in [25u64, 50, 100] {
        let store = Arc::new(ChainStore::open(data.path(), store_config.clone()).unwrap());
        let options = ModelOptions {
            expert_bytes_max: all_experts * percent / 100,
            ..ModelOptions::default()
        };
        let generator = Generator::from_chain(store, options).unwrap();
        let started = Instant::now();
        let mut tokens = 0;
        for prompt in PROMPT_SET {
            let params = SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(32)
            };
            tokens += generator
                .generate(prompt, params, CancelToken::new())
                .unwrap()
                .token_ids
                .len();
        }
        let seconds = started.elapsed().as_secs_f64();
        let stats = generator.cache_stats();
        println!(
            "budget {percent:>3} %: hit rate {:.3}, {} evictions, {:.0} tok/s (prefill included)",
            stats.hit_rate(),
            stats.evictions,
            tokens as f64 / seconds
        );
    }

    // Batched decoding: the tiny model, then a wider one where reading expert weights dominates.
    batched_decoding(
        "tiny fixture",
        &checkpoint.load_generator(ModelOptions::default()).unwrap(),
    );
    let mut wide = Config::seed();
    wide.hidden_size = 1024;
    wide.intermediate_size = 3584;
    wide.num_attention_heads = 8;
    let wide_model = Model::load(
        &wide,
        Arc::new(RandomInit::new(&wide, 5).unwrap()),
        ModelOptions::default(),
    )
    .unwrap();
    batched_decoding(
        "wide seed config (hidden 1024, intermediate 3584, 4 layers × 8 experts of 44 MB, top-2)",
        &Generator::new(wide_model, Tokenizer::byte_level(), true),
    );

    // Cold start: store open → first token.
    let cold: Vec<Duration> = (0..5)
        .map(|_| {
            let started = Instant::now();
            let store = Arc::new(ChainStore::open(data.path(), store_config.clone()).unwrap());
            let generator = Generator::from_chain(store, ModelOptions::default()).unwrap();
            let mut stream = generator
                .stream(PROMPT, SamplingParams::greedy(1), CancelToken::new())
                .unwrap();
            stream.next().unwrap().unwrap();
            started.elapsed()
        })
        .collect();
    println!(
        "\n== cold start (chain store open → first token, empty expert cache): median {:.1} ms ==",
        median(cold).as_secs_f64() * 1e3
    );
    criterion.final_summary();
}
