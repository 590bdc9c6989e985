//! Cold start from process start: a new `blyan-node generate --max-tokens 1` process (empty
//! expert cache) until its first byte on stdout, which it writes once the first token is
//! generated. Measured in one run against two baselines:
//! - the floor of starting the same binary, `blyan-node --version` (exec and dynamic linking of
//!   libtorch, the cost every libtorch process pays before doing anything);
//! - Python `transformers` loading the same checkpoint (`MixtralForCausalLM.from_pretrained`)
//!   and generating one token, from its own process start.
//!
//! Two models: the parity fixture's tiny Mixtral (published to a chain store, for the
//! comparison with transformers) and the node's default untrained seed model (4 layers of 8
//! experts, what a fresh node serves). Each with the data directory's pages in the page cache
//! (warm) and evicted with `posix_fadvise(DONTNEED)` before every run (cold). Shared libraries
//! stay in the page cache in every variant.
//!
//! `source scripts/env.sh && cargo bench -p blyan-node --bench cold_start`. To measure the
//! release binary without a release build of the bench itself (whose RocksDB compile is long):
//! `cargo build --release --bins && BLYAN_NODE_BIN=target/release/blyan-node cargo bench
//! -p blyan-node --profile test --bench cold_start`. Needs the project's Python environment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read as _;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blyan_chain::{AuthorKey, ChainStore, StoreConfig};
use blyan_moe::{Checkpoint, PublishOptions, publish_model};
use criterion::{Criterion, SamplingMode};

const PROMPT: &str = "the quick brown fox jumps over the lazy dog";

/// transformers from process start to its first generated token on stdout.
const TRANSFORMERS_FIRST_TOKEN: &str = r#"
import sys
import torch
from transformers import MixtralForCausalLM, PreTrainedTokenizerFast
torch.set_grad_enabled(False)
checkpoint, prompt = sys.argv[1], sys.argv[2]
model = MixtralForCausalLM.from_pretrained(checkpoint, dtype=torch.float32, attn_implementation="eager").eval()
tokenizer = PreTrainedTokenizerFast(tokenizer_file=checkpoint + "/tokenizer.json")
ids = tokenizer(prompt, return_tensors="pt").input_ids
token = model(input_ids=ids, logits_to_keep=1).logits[0, -1].argmax().item()
sys.stdout.write(tokenizer.decode([token]) + "\n")
sys.stdout.flush()
"#;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    let venv = std::env::var_os("BLYAN_VENV").map_or_else(|| root().join(".venv"), PathBuf::from);
    venv.join("bin/python")
}

/// The binary measured: `BLYAN_NODE_BIN` (e.g. `target/release/blyan-node`, the build
/// `scripts/start.sh` runs) or the one cargo built for this bench.
fn node_binary() -> PathBuf {
    std::env::var_os("BLYAN_NODE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_blyan-node")),
        PathBuf::from,
    )
}

fn node() -> Command {
    let mut command = Command::new(node_binary());
    // The shipped configuration; logs only for warnings, on stderr (discarded).
    command
        .current_dir(root())
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null());
    command
}

fn generate(data_dir: &Path) -> Command {
    let mut command = node();
    command.arg("--data-dir").arg(data_dir).args([
        "generate",
        "--prompt",
        PROMPT,
        "--max-tokens",
        "1",
    ]);
    command
}

/// Time from spawning `command` to the first byte on its stdout; the process must succeed.
fn first_byte(command: &mut Command) -> Duration {
    let started = Instant::now();
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut byte = [0_u8; 1];
    stdout.read_exact(&mut byte).unwrap();
    let elapsed = started.elapsed();
    std::io::copy(&mut stdout, &mut std::io::sink()).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{command:?} failed: {status}");
    elapsed
}

/// Evicts every file under `dir` from the page cache.
fn evict(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            evict(&path);
        } else if path.is_file() {
            let file = std::fs::File::open(&path).unwrap();
            file.sync_all().unwrap();
            // SAFETY: `posix_fadvise` only reads its integer arguments; the descriptor is open.
            let code =
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            assert_eq!(code, 0, "posix_fadvise({}) failed", path.display());
        }
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// The parity fixture's checkpoint, made by the reference implementation.
fn fixture(out: &Path) -> PathBuf {
    let output = Command::new(python())
        .arg(root().join("scripts/fixtures/make_tiny_mixtral.py"))
        .arg("--out")
        .arg(out)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("the project's Python environment (scripts/setup.sh)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out.join("checkpoint")
}

/// A node data directory whose chain holds `checkpoint`.
fn publish(checkpoint_dir: &Path, data_dir: &Path) {
    let checkpoint = Checkpoint::open(checkpoint_dir).unwrap();
    let store = ChainStore::open(
        data_dir.join(blyan_node_core::CHAIN_DIR_NAME),
        StoreConfig::default(),
    )
    .unwrap();
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

fn main() {
    let temp = tempfile::tempdir().unwrap();
    let checkpoint = fixture(&temp.path().join("fixture"));
    let fixture_data = temp.path().join("fixture-node");
    publish(&checkpoint, &fixture_data);
    // A fresh node writes the seed model on its first start; later starts only read it.
    let seed_data = temp.path().join("seed-node");
    first_byte(&mut generate(&seed_data));

    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args();
    let mut group = criterion.benchmark_group("cold_start");
    group.sampling_mode(SamplingMode::Flat);
    let samples: Arc<Mutex<Vec<(&'static str, Duration)>>> = Arc::default();
    let mut measure = |name: &'static str, run: &dyn Fn() -> Duration| {
        let samples = Arc::clone(&samples);
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let elapsed = run();
                    samples.lock().unwrap().push((name, elapsed));
                    total += elapsed;
                }
                total
            });
        });
    };
    measure("process_floor", &|| first_byte(node().arg("--version")));
    measure("fixture_warm", &|| first_byte(&mut generate(&fixture_data)));
    measure("fixture_cold", &|| {
        evict(&fixture_data);
        first_byte(&mut generate(&fixture_data))
    });
    measure("seed_warm", &|| first_byte(&mut generate(&seed_data)));
    measure("seed_cold", &|| {
        evict(&seed_data);
        first_byte(&mut generate(&seed_data))
    });
    measure("transformers_fixture", &|| {
        first_byte(
            Command::new(python())
                .args(["-c", TRANSFORMERS_FIRST_TOKEN])
                .arg(&checkpoint)
                .arg(PROMPT)
                .env("HF_HUB_OFFLINE", "1")
                .env("TRANSFORMERS_VERBOSITY", "error")
                .stderr(Stdio::null()),
        )
    });
    group.finish();

    let samples = samples.lock().unwrap();
    let median_of = |name: &str| {
        median(
            samples
                .iter()
                .filter(|(sample, _)| *sample == name)
                .map(|(_, elapsed)| *elapsed)
                .collect(),
        )
    };
    let floor = median_of("process_floor");
    let transformers = median_of("transformers_fixture");
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    println!(
        "\n== cold start: process start → first token on stdout (medians), {} ==",
        node_binary().display()
    );
    println!("process floor (blyan-node --version): {:.0} ms", ms(floor));
    println!(
        "transformers, tiny fixture:           {:.0} ms",
        ms(transformers)
    );
    for name in ["fixture_warm", "fixture_cold", "seed_warm", "seed_cold"] {
        let ours = median_of(name);
        println!(
            "{name:<13} {:>6.0} ms: {:.2}x the process floor, {:.0} ms above it; {:.2}x transformers' time",
            ms(ours),
            ms(ours) / ms(floor),
            ms(ours) - ms(floor),
            ms(ours) / ms(transformers),
        );
    }
    criterion.final_summary();
}
