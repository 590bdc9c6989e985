//! The shipped model served in each compute dtype (f32, bf16, f16) from payloads stored in that
//! dtype (the zero-copy case): decode tokens/s and the process's memory, one process per dtype
//! so each peak is its own. The numbers of `docs/hardware.md`.
//!
//! `source scripts/env.sh && cargo bench -p blyan-moe --bench dtype` (threads:
//! BLYAN_BENCH_THREADS, default 1). The parent prepares one chain store per dtype, then runs
//! itself once per dtype with `BLYAN_BENCH_STORE` and `BLYAN_BENCH_DTYPE` set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use blyan_chain::{AuthorKey, ChainStore, Durability, GenesisSpec, StoreConfig};
use blyan_moe::{
    CastWeights, ChainSource, ComputeDtype, ExpertUsage, Generator, Logits, ModelOptions,
    PublishOptions, SHIPPED_MODEL_DIR, WeightSource, import_shipped_model, publish_model,
};

const PROMPT: &str = "The chain holds the experts, and the node";
const DECODE_TOKENS: usize = 64;
const ROUNDS: usize = 5;
const DTYPES: [ComputeDtype; 3] = [ComputeDtype::F32, ComputeDtype::BF16, ComputeDtype::F16];

fn store_config() -> StoreConfig {
    StoreConfig {
        durability: Durability::Unsynced,
        ..StoreConfig::default()
    }
}

fn open(dir: &Path) -> Arc<ChainStore> {
    Arc::new(ChainStore::open_with(dir, store_config(), &GenesisSpec::shipped(), None).unwrap())
}

/// A store in `dir` holding the shipped model with every tensor stored as `dtype`.
fn prepare(shipped: &Arc<ChainStore>, dtype: ComputeDtype, dir: &Path) {
    let source = Arc::new(ChainSource::open(Arc::clone(shipped)).unwrap());
    let weights =
        CastWeights::new(Arc::clone(&source) as Arc<dyn WeightSource>, dtype.dtype()).unwrap();
    let store = open(dir);
    publish_model(
        &*store,
        &AuthorKey::generate(),
        source.config(),
        source.files(),
        &weights,
        &PublishOptions {
            description: format!("the shipped model stored as {dtype}"),
            ..PublishOptions::default()
        },
        &mut |_| {},
    )
    .unwrap();
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// One dtype, in this process: load, decode, report one line of JSON.
fn measure(store_dir: &Path, dtype: ComputeDtype) {
    let rss_before = status_kib("VmRSS");
    let store = open(store_dir);
    let generator = Generator::from_chain(
        store,
        ModelOptions {
            dtype,
            ..ModelOptions::default()
        },
    )
    .unwrap();
    let ids = generator.tokenizer().encode(PROMPT).unwrap();
    let mut rates = Vec::with_capacity(ROUNDS);
    for round in 0..=ROUNDS {
        let seconds = generator
            .with_model(|model| {
                let mut cache = model.new_kv_cache();
                let mut usage = ExpertUsage::new(model.config());
                let logits = model
                    .forward(&ids, &mut cache, &mut usage, Logits::Last)
                    .unwrap();
                let mut token = logits.argmax(-1, false).int64_value(&[0]) as u32;
                let started = Instant::now();
                for _ in 0..DECODE_TOKENS {
                    let logits = model
                        .forward(&[token], &mut cache, &mut usage, Logits::Last)
                        .unwrap();
                    token = logits.argmax(-1, false).int64_value(&[0]) as u32;
                }
                started.elapsed().as_secs_f64()
            })
            .unwrap();
        // Round 0 warms the cache and the kernels.
        if round > 0 {
            rates.push(DECODE_TOKENS as f64 / seconds);
        }
    }
    rates.sort_by(f64::total_cmp);
    let stats = generator
        .with_model(|model| model.expert_cache().stats())
        .unwrap();
    println!(
        "{}",
        serde_json::json!({
            "dtype": dtype.to_string(),
            "decode_tokens_per_second": rates[rates.len() / 2],
            "rss_mib": status_kib("VmRSS") as f64 / 1024.0,
            "rss_peak_mib": status_kib("VmHWM") as f64 / 1024.0,
            "rss_model_mib": (status_kib("VmRSS").saturating_sub(rss_before)) as f64 / 1024.0,
            "expert_cache_mib": stats.bytes_resident as f64 / (1024.0 * 1024.0),
        })
    );
}

fn main() {
    let threads: i32 = std::env::var("BLYAN_BENCH_THREADS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1);
    tch::set_num_threads(threads);
    if let (Some(store), Some(dtype)) = (
        std::env::var_os("BLYAN_BENCH_STORE"),
        std::env::var("BLYAN_BENCH_DTYPE").ok(),
    ) {
        measure(Path::new(&store), dtype.parse().unwrap());
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let shipped = open(&temp.path().join("shipped"));
    import_shipped_model(&shipped, Path::new(SHIPPED_MODEL_DIR)).unwrap();
    for dtype in DTYPES {
        prepare(&shipped, dtype, &temp.path().join(dtype.to_string()));
    }
    drop(shipped);
    println!(
        "== the shipped model ({SHIPPED_MODEL_DIR}), payloads stored in the compute dtype, CPU, {threads} thread(s): greedy decode of {DECODE_TOKENS} tokens after a {}-byte prompt, median of {ROUNDS} rounds; memory of the process (RSS) after the rounds ==",
        PROMPT.len()
    );
    for dtype in DTYPES {
        let output = Command::new(std::env::current_exe().unwrap())
            .env("BLYAN_BENCH_STORE", temp.path().join(dtype.to_string()))
            .env("BLYAN_BENCH_DTYPE", dtype.to_string())
            .env("BLYAN_BENCH_THREADS", threads.to_string())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = String::from_utf8(output.stdout).unwrap();
        let report: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        println!(
            "{dtype:>4}: {:>7.1} tokens/s decode, RSS {:>6.1} MiB (peak {:.1}, of which model load {:.1}), expert cache {:.1} MiB",
            report["decode_tokens_per_second"].as_f64().unwrap(),
            report["rss_mib"].as_f64().unwrap(),
            report["rss_peak_mib"].as_f64().unwrap(),
            report["rss_model_mib"].as_f64().unwrap(),
            report["expert_cache_mib"].as_f64().unwrap(),
        );
    }
}
