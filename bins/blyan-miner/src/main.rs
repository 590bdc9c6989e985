//! `blyan-miner`: makes a block-signing key, publishes a Hugging Face Mixtral checkpoint to a
//! chain store or a running node (meta block, shared-weight blocks, one block per expert) and
//! exports it back; trains the model or some of its experts on text (`train`); sends dataset
//! samples to a node (`dataset submit`).

mod claim_cmd;
mod dataset_cmd;
mod node;
mod ship_cmd;
mod train_cmd;

use std::path::PathBuf;

use anyhow::Context as _;
use blyan_chain::{AuthorKey, ChainStore, ExpertName, StoreConfig};
use blyan_moe::{
    Checkpoint, EXPORT_SHARD_BYTES_DEFAULT, ExpertQuantization, PublishEvent, PublishOptions,
    PublishTarget, export_from_chain, publish_model,
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

/// Publishes mixture-of-experts checkpoints to a Blyan chain, expert by expert.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Quantize {
    /// INT8 per output channel (a quarter of float32).
    Int8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Creates a secp256k1 key file (mode 0600, never over an existing file) and prints its
    /// Ethereum address.
    Keygen {
        /// The key file to create.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Publishes a checkpoint (config.json, *.safetensors, tokenizer.json) as signed blocks;
    /// experts whose payload is already current are skipped. A bad checkpoint is refused before
    /// anything is written.
    Upload {
        /// The checkpoint directory.
        #[arg(long, value_name = "DIR")]
        checkpoint: PathBuf,
        /// The key file that signs the blocks.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Store expert matrices quantized.
        #[arg(long, value_enum)]
        quantize: Option<Quantize>,
        #[command(flatten)]
        destination: Destination,
        /// What a node that certifies (Proof-of-Learning) is told about the candidate.
        #[command(flatten)]
        claim: claim_cmd::ClaimArgs,
    },
    /// Trains the whole model or named experts on text files and writes a checkpoint that
    /// `upload` publishes as it is (only the experts that changed get new blocks).
    Train(Box<train_cmd::TrainArgs>),
    /// Builds the shipped default model from a trained checkpoint: unsigned blocks trusted by
    /// their pinned hashes (`models/default`).
    Ship(ship_cmd::ShipArgs),
    /// Dataset samples for chain D (`docs/datasets.md`).
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Writes the newest model of a chain store as a Hugging Face checkpoint.
    Export {
        /// The chain store to read.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The checkpoint directory to write.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// `blyan-miner dataset …`.
#[derive(Debug, Subcommand)]
enum DatasetCommand {
    /// Sends samples from JSONL files ({"text"} or {"prompt","response"} per line) or plain
    /// text files (one sample per paragraph) to a node, each in a block signed by `--key`
    /// (the contributor paid when a certified candidate uses it).
    Submit(dataset_cmd::SubmitArgs),
}

/// Where `upload` publishes: exactly one of a running node and a local data directory.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Destination {
    /// A running node to publish to over HTTP (`http://host:port`): blocks are signed here and
    /// sent to its `POST /blocks`. A node in `pow` mode serves them at once; one that certifies
    /// stores new expert versions and models as candidates, and `upload` then claims them (a
    /// bond is locked) for its validators to evaluate.
    #[arg(long, value_name = "URL")]
    node: Option<String>,
    /// A node's data directory to write into directly (its chain store is created if absent);
    /// no node may be running on it.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

fn store_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("chain")
}

fn upload(
    checkpoint: &std::path::Path,
    key: &std::path::Path,
    quantize: Option<Quantize>,
    destination: &Destination,
    claim: &claim_cmd::ClaimArgs,
) -> anyhow::Result<()> {
    // Everything is checked before the destination is even opened.
    let checkpoint = Checkpoint::open(checkpoint)
        .with_context(|| format!("refusing checkpoint {}", checkpoint.display()))?;
    let key = AuthorKey::read_file(key)?;
    let mut local = None;
    let mut remote = None;
    let target: &dyn PublishTarget = match (&destination.node, &destination.data_dir) {
        (Some(url), _) => {
            let client = blyan_client::NodeClient::connect(url)
                .with_context(|| format!("connecting to the node at {url}"))?;
            &*remote.insert(client)
        }
        (None, Some(data_dir)) => {
            let store = ChainStore::open(store_dir(data_dir), StoreConfig::default())
                .with_context(|| format!("opening the chain store in {}", data_dir.display()))?;
            &*local.insert(store)
        }
        (None, None) => anyhow::bail!("upload needs --node URL or --data-dir DIR"),
    };
    let options = PublishOptions {
        expert_quantization: match quantize {
            Some(Quantize::Int8) => ExpertQuantization::Int8,
            None => ExpertQuantization::None,
        },
        untrained: false,
        description: format!("checkpoint {}", checkpoint.dir().display()),
    };
    let files = checkpoint.files();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} blocks {bytes_per_sec} {msg}")
            .context("progress bar template")?,
    );
    // Expert versions and the meta block: what a node that certifies holds as candidates.
    let mut candidates = Vec::new();
    let mut progress = |event: &PublishEvent| match event {
        PublishEvent::Checked { blocks } => bar.set_length(*blocks),
        PublishEvent::Written { name, block, .. } => {
            if name == "meta" || ExpertName::parse(name).is_ok() {
                candidates.push(*block);
            }
            bar.set_message(format!("wrote {name}"));
            bar.inc(1);
        }
        PublishEvent::Unchanged { name } => {
            bar.set_message(format!("{name} unchanged"));
            bar.inc(1);
        }
        _ => {}
    };
    let summary = publish_model(
        target,
        &key,
        checkpoint.config(),
        files,
        &*checkpoint.weights(),
        &options,
        &mut progress,
    )?;
    bar.finish_and_clear();
    if let Some(store) = &local {
        store.flush()?;
    }
    println!(
        "meta block {} ({}); shared blocks: {} written, {} unchanged; experts: {} written, {} \
         unchanged; {} bytes written; author {}",
        summary.meta_block,
        if summary.meta_written {
            "new"
        } else {
            "unchanged"
        },
        summary.shared_written,
        summary.shared_unchanged,
        summary.experts_written,
        summary.experts_unchanged,
        summary.bytes_written,
        key.address(),
    );
    let Some(client) = &remote else {
        return Ok(());
    };
    let Some(hash) = claim_cmd::claim(client, &key, candidates, claim)? else {
        return Ok(());
    };
    if let Some(seconds) = claim.wait {
        let decided = claim_cmd::wait(client, hash, seconds)?;
        claim_cmd::report(&decided);
        if decided.status != "accepted" {
            anyhow::bail!("claim {hash} was {}", decided.status);
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match Cli::parse().command {
        Command::Keygen { out } => {
            let key = AuthorKey::generate();
            key.write_file(&out)
                .with_context(|| format!("writing the key file {}", out.display()))?;
            println!("{}", key.address());
        }
        Command::Upload {
            checkpoint,
            key,
            quantize,
            destination,
            claim,
        } => upload(&checkpoint, &key, quantize, &destination, &claim)?,
        Command::Train(args) => train_cmd::train(&args)?,
        Command::Ship(args) => ship_cmd::ship(&args)?,
        Command::Dataset(DatasetCommand::Submit(args)) => dataset_cmd::submit(&args)?,
        Command::Export { data_dir, out } => {
            let directory = store_dir(&data_dir);
            if !directory.is_dir() {
                anyhow::bail!("{} holds no chain store", data_dir.display());
            }
            let store = std::sync::Arc::new(ChainStore::open(&directory, StoreConfig::default())?);
            let summary = export_from_chain(store, &out, EXPORT_SHARD_BYTES_DEFAULT)?;
            println!(
                "wrote {} tensors ({} bytes) in {} file(s) to {}",
                summary.tensors,
                summary.tensor_bytes,
                summary.shards,
                out.display()
            );
        }
    }
    Ok(())
}
