//! Held-out bits per byte of a trained model against `xz -9e` given the training text as
//! context, on the split the trainer uses ([`TokenCorpus::new`], [`split_texts`]).
//!
//! - xz's cost of the held-out text: `size(xz -9e (train ‖ held_out)) − size(xz -9e (train))`
//!   bytes, times 8, per held-out byte: what the held-out text costs a strong general-purpose
//!   compressor that has seen the training text (its 64 MiB dictionary holds it whole).
//! - The model's: the cross-entropy of every held-out token after the first (end-of-text tokens
//!   included, as the trainer scores them), in bits, per held-out byte. Tokens are scored in
//!   sliding windows of `--window` tokens (default: the positions the checkpoint was trained
//!   with, else 256) moved by `--stride` (default half a window), so every token but those of
//!   the first window sees at least `window − stride` tokens of context.
//!
//! ```sh
//! source scripts/env.sh
//! nice -n 15 cargo bench -p blyan-moe --bench heldout --profile test -- \
//!     --checkpoint /path/to/checkpoint [--corpus ~/.cache/blyan/corpus/text]
//! ```
//! `--data-dir DIR` scores the current model of a node's data directory instead (opened read-only).
//! Other flags: `--held-out-per-mille N` (default 50, the trainer's), `--threads N` (default 2),
//! `--batch-size N` (windows per forward pass, default 16), `--xz-only` (the compressor's figure
//! alone). It prints both figures, their ratio
//! (goal ≤ 0.9), and one JSON line with everything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use blyan_chain::ChainStore;
use blyan_moe::{
    ChainSource, Checkpoint, Config, ExpertUsage, HELD_OUT_PER_MILLE_DEFAULT, Model, ModelOptions,
    STATE_FILE, TokenCorpus, Tokenizer, read_corpus, split_texts, state_dir,
};
use tch::{Kind, Tensor};

struct Args {
    checkpoint: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    corpus: Vec<PathBuf>,
    held_out_per_mille: u32,
    window: Option<usize>,
    stride: Option<usize>,
    threads: i32,
    batch_size: usize,
    xz_only: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        checkpoint: None,
        data_dir: None,
        corpus: Vec::new(),
        held_out_per_mille: HELD_OUT_PER_MILLE_DEFAULT,
        window: None,
        stride: None,
        threads: 2,
        batch_size: 16,
        xz_only: false,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = || {
            words
                .next()
                .unwrap_or_else(|| panic!("{word} needs a value"))
        };
        match word.as_str() {
            // What `cargo bench` passes to every bench binary.
            "--bench" => {}
            "--checkpoint" => args.checkpoint = Some(value().into()),
            "--data-dir" => args.data_dir = Some(value().into()),
            "--corpus" => args.corpus.push(value().into()),
            "--held-out-per-mille" => args.held_out_per_mille = value().parse().unwrap(),
            "--window" => args.window = Some(value().parse().unwrap()),
            "--stride" => args.stride = Some(value().parse().unwrap()),
            "--threads" => args.threads = value().parse().unwrap(),
            "--batch-size" => args.batch_size = value().parse().unwrap(),
            "--xz-only" => args.xz_only = true,
            other => panic!(
                "unknown argument {other}: --checkpoint DIR | --data-dir DIR, [--corpus PATH]..., \
                 --held-out-per-mille N, --window N, --stride N, --threads N, --batch-size N"
            ),
        }
    }
    if args.corpus.is_empty() {
        let home = std::env::var_os("HOME").expect("HOME, for the default corpus");
        args.corpus
            .push(PathBuf::from(home).join(".cache/blyan/corpus/text"));
    }
    args
}

/// The model, its tokenizer, a description, and the positions it was trained with when the
/// checkpoint keeps its training state.
fn load(args: &Args) -> (Model, Tokenizer, String, Option<usize>) {
    match (&args.checkpoint, &args.data_dir) {
        (Some(dir), None) => {
            let checkpoint = Checkpoint::open(dir).unwrap();
            let trained_positions = std::fs::read(state_dir(dir).join(STATE_FILE))
                .ok()
                .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
                .and_then(|state| state["options"]["positions"].as_u64())
                .map(|positions| positions as usize);
            (
                checkpoint.load_model(ModelOptions::default()).unwrap(),
                checkpoint.tokenizer().unwrap(),
                format!("checkpoint {}", dir.display()),
                trained_positions,
            )
        }
        (None, Some(dir)) => {
            let store = ChainStore::locate(dir)
                .and_then(ChainStore::open_read_only)
                .unwrap();
            let source = ChainSource::open(Arc::new(store)).unwrap();
            let config: Config = source.config().clone();
            let tokenizer = source.tokenizer().unwrap();
            let model = Model::load(&config, Arc::new(source), ModelOptions::default()).unwrap();
            (
                model,
                tokenizer,
                format!("the current model of {}", dir.display()),
                None,
            )
        }
        _ => panic!("give exactly one of --checkpoint DIR and --data-dir DIR"),
    }
}

/// Bytes of `xz -9e` output for `parts` fed one after the other.
fn xz_size(parts: Vec<Arc<String>>) -> u64 {
    let mut child = Command::new("xz")
        .args(["-9e", "-T1", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("xz on the PATH");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for part in parts {
            stdin.write_all(part.as_bytes()).unwrap();
        }
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut buffer = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let read = stdout.read(&mut buffer).unwrap();
        if read == 0 {
            break;
        }
        size += read as u64;
    }
    writer.join().unwrap();
    assert!(child.wait().unwrap().success(), "xz failed");
    size
}

/// One forward pass's worth of held-out text: inputs `tokens[start..start + len]`, targets one
/// further, scoring only the targets from `scored_from` (window-relative) on.
struct Window {
    start: usize,
    len: usize,
    scored_from: usize,
}

/// Sliding windows that score every target `tokens[1..]` exactly once.
fn windows(count: usize, window: usize, stride: usize) -> Vec<Window> {
    let mut windows = Vec::new();
    // The next target index (into `tokens`) not yet scored.
    let mut next = 1;
    while next < count {
        let end = (next + stride).max(window + 1).min(count);
        let start = end.saturating_sub(window + 1);
        let len = end - 1 - start;
        windows.push(Window {
            start,
            len,
            scored_from: next - (start + 1),
        });
        next = end;
    }
    windows
}

/// Total cross-entropy in nats of the targets the windows score, and how many they score.
fn score(model: &mut Model, tokens: &[u32], windows: &[Window], batch_size: usize) -> (f64, u64) {
    let mut nats = 0.0;
    let mut scored = 0u64;
    let started = Instant::now();
    let mut done = 0;
    let mut index = 0;
    while index < windows.len() {
        // Consecutive windows of one length form a batch.
        let len = windows[index].len;
        let group_end = (index..windows.len())
            .take(batch_size)
            .take_while(|at| windows[*at].len == len)
            .last()
            .unwrap()
            + 1;
        let group = &windows[index..group_end];
        let mut inputs = Vec::with_capacity(group.len() * len);
        let mut targets = Vec::with_capacity(group.len() * len);
        let mut weights = Vec::with_capacity(group.len() * len);
        for window in group {
            inputs.extend_from_slice(&tokens[window.start..window.start + len]);
            targets.extend(
                tokens[window.start + 1..window.start + 1 + len]
                    .iter()
                    .map(|id| i64::from(*id)),
            );
            weights.extend((0..len).map(|at| f64::from(u8::from(at >= window.scored_from))));
            scored += (len - window.scored_from) as u64;
        }
        let mut usage = ExpertUsage::new(model.config());
        let group_nats = tch::no_grad(|| {
            let output = model
                .forward_sequences(&inputs, group.len(), &mut usage)
                .unwrap();
            let targets = Tensor::from_slice(&targets);
            let losses = output
                .logits
                .log_softmax(-1, Kind::Double)
                .gather(1, &targets.unsqueeze(1), false)
                .neg()
                .squeeze_dim(1);
            (losses * Tensor::from_slice(&weights))
                .sum(Kind::Double)
                .double_value(&[])
        });
        nats += group_nats;
        done += group.len();
        index = group_end;
        if done % (batch_size * 64) < group.len() {
            let fraction = done as f64 / windows.len() as f64;
            let seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "scored {done}/{} windows, {:.0} s left",
                windows.len(),
                seconds / fraction * (1.0 - fraction)
            );
        }
    }
    (nats, scored)
}

fn main() {
    let args = parse_args();
    tch::set_num_threads(args.threads);
    let (mut model, tokenizer, description, trained_positions) = load(&args);
    let window = args.window.or(trained_positions).unwrap_or(256);
    let stride = args.stride.unwrap_or(window / 2).clamp(1, window);

    let read = read_corpus(&args.corpus).unwrap();
    let end_of_text = model.config().eos_token_ids().first().copied();
    let corpus = TokenCorpus::new(
        &tokenizer,
        &read.documents,
        args.held_out_per_mille,
        end_of_text,
    )
    .unwrap();
    let split = split_texts(&read.documents, args.held_out_per_mille).unwrap();
    assert_eq!(split.held_out.len() as u64, corpus.held_out_bytes());
    let held_out_bytes = corpus.held_out_bytes();
    eprintln!(
        "{description}: corpus {} ({} training bytes, {held_out_bytes} held-out bytes, {} held-out tokens); window {window}, stride {stride}",
        corpus.fingerprint(),
        corpus.train_bytes(),
        corpus.held_out().len()
    );

    // xz runs beside the model's scoring: two compressions of the training text's size.
    let train = Arc::new(split.train);
    let held_out = Arc::new(split.held_out);
    let xz = {
        let (train, held_out) = (Arc::clone(&train), Arc::clone(&held_out));
        std::thread::spawn(move || {
            let started = Instant::now();
            let both = {
                let (train, held_out) = (Arc::clone(&train), Arc::clone(&held_out));
                std::thread::spawn(move || xz_size(vec![train, held_out]))
            };
            let alone = xz_size(vec![train]);
            let held_out_alone = xz_size(vec![held_out]);
            let both = both.join().unwrap();
            (both, alone, held_out_alone, started.elapsed().as_secs_f64())
        })
    };

    if args.xz_only {
        let (both, alone, held_out_alone, xz_seconds) = xz.join().unwrap();
        println!(
            "xz -9e given the training text: {:.4} bits/byte ({both} − {alone} bytes; held-out text alone: {:.4} bits/byte; {xz_seconds:.0} s)",
            both.saturating_sub(alone) as f64 * 8.0 / held_out_bytes as f64,
            held_out_alone as f64 * 8.0 / held_out_bytes as f64
        );
        return;
    }
    let started = Instant::now();
    let windows = windows(corpus.held_out().len(), window, stride);
    let (nats, scored) = score(&mut model, corpus.held_out(), &windows, args.batch_size);
    let model_seconds = started.elapsed().as_secs_f64();
    assert_eq!(scored, corpus.held_out().len() as u64 - 1);
    let model_bits_per_byte = nats / std::f64::consts::LN_2 / held_out_bytes as f64;

    let (both, alone, held_out_alone, xz_seconds) = xz.join().unwrap();
    let xz_bits_per_byte = both.saturating_sub(alone) as f64 * 8.0 / held_out_bytes as f64;
    let xz_alone_bits_per_byte = held_out_alone as f64 * 8.0 / held_out_bytes as f64;
    let ratio = model_bits_per_byte / xz_bits_per_byte;
    println!("== held-out bits per byte, {description} ==");
    println!(
        "corpus {} ({} documents), held out {}‰: {} training bytes, {held_out_bytes} held-out bytes, {} held-out tokens",
        corpus.fingerprint(),
        read.documents.len(),
        args.held_out_per_mille,
        corpus.train_bytes(),
        corpus.held_out().len()
    );
    println!(
        "model: {model_bits_per_byte:.4} bits/byte over every held-out token ({scored} scored, window {window}, stride {stride}, {model_seconds:.0} s)"
    );
    println!(
        "xz -9e given the training text: {xz_bits_per_byte:.4} bits/byte ({both} − {alone} bytes; held-out text alone: {xz_alone_bits_per_byte:.4} bits/byte; {xz_seconds:.0} s)"
    );
    println!("ratio model / xz: {ratio:.3}x (goal ≤ 0.9x)");
    println!(
        "{}",
        serde_json::json!({
            "model": description,
            "corpus_fingerprint": corpus.fingerprint(),
            "held_out_per_mille": args.held_out_per_mille,
            "train_bytes": corpus.train_bytes(),
            "held_out_bytes": held_out_bytes,
            "held_out_tokens": corpus.held_out().len(),
            "window": window,
            "stride": stride,
            "model_bits_per_byte": model_bits_per_byte,
            "xz_bits_per_byte": xz_bits_per_byte,
            "xz_train_bytes": alone,
            "xz_train_and_held_out_bytes": both,
            "xz_held_out_alone_bits_per_byte": xz_alone_bits_per_byte,
            "ratio": ratio,
        })
    );
}
