//! `blyan-miner`: makes a block-signing key (plain hex or an encrypted Ethereum keystore),
//! publishes a Hugging Face Mixtral checkpoint to a chain store or a running node (meta block,
//! shared-weight blocks, one block per expert, or only named experts) and exports a chain's or a
//! node's model back as a checkpoint, recording the expert versions it holds (`origin`); trains
//! the model or some of its experts on text (`train`); sends dataset samples to a node
//! (`dataset submit`).
//!
//! `upload` never reverts work silently: an expert whose version on the chain is newer than the
//! one the checkpoint came from is refused unless `--force` (see `blyan_moe::Lineage` for the
//! rule, and for a checkpoint that records no origin).

mod claim_cmd;
mod dataset_cmd;
mod keys;
mod node;
mod origin;
mod ship_cmd;
mod train_cmd;

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Context as _;
use blyan_chain::{ChainStore, ExpertName, StoreConfig};
use blyan_moe::{
    Checkpoint, Config, EXPORT_SHARD_BYTES_DEFAULT, ExpertQuantization, ExpertSelection, Lineage,
    MoeError, PublishEvent, PublishOptions, PublishScope, PublishTarget, experts_of,
    export_from_chain, publish_model_scoped,
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::keys::PasswordArgs;
use crate::origin::ChainOrigin;

/// Longest `--description`, in bytes: a few words shown by `/health` and `/model`.
const DESCRIPTION_BYTES_MAX: usize = 256;

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
        /// Write an encrypted Ethereum JSON keystore (version 3, scrypt), which wallets import,
        /// instead of the plain hex key; its password comes from `BLYAN_KEYSTORE_PASSWORD` or
        /// `--password-file`.
        #[arg(long)]
        keystore: bool,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Publishes a checkpoint (config.json, *.safetensors, tokenizer.json) as signed blocks;
    /// experts whose payload is already current are skipped. A bad checkpoint is refused before
    /// anything is written, and so is one that would replace expert versions newer than those
    /// it came from (unless `--force`).
    Upload(Box<UploadArgs>),
    /// Trains the whole model or named experts on text files and writes a checkpoint that
    /// `upload` publishes as it is (only the experts that changed get new blocks).
    Train(Box<train_cmd::TrainArgs>),
    /// Builds the shipped default model from a trained checkpoint: unsigned blocks trusted by
    /// their pinned hashes (`models/default`).
    Ship(ship_cmd::ShipArgs),
    /// Dataset samples for chain D (`docs/datasets.md`).
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Writes the current model of a node's data directory or of a running node as a Hugging
    /// Face checkpoint, with `fetched-from.json` recording the version of each expert (what
    /// `upload` checks against the chain).
    Export {
        #[command(flatten)]
        source: ExportSource,
        /// The checkpoint directory to write.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// `blyan-miner upload`'s arguments.
#[derive(Debug, Args)]
struct UploadArgs {
    /// The checkpoint directory.
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// The key file that signs the blocks: a plain hex key or an Ethereum JSON keystore.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    #[command(flatten)]
    password: PasswordArgs,
    /// Store expert matrices quantized.
    #[arg(long, value_enum)]
    quantize: Option<Quantize>,
    /// What the chain says the model is (at most 256 bytes; default: the description the
    /// checkpoint was exported with, else its model name from config.json).
    #[arg(long, value_name = "TEXT", conflicts_with = "experts")]
    description: Option<String>,
    /// Publish only these experts (`layer0.expert3,layer1.*`, `layer2-3.expert0-1`, `*`): they
    /// join the chain's current model, which must be the checkpoint's; no shared or meta block
    /// is written.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    experts: Vec<String>,
    /// Replace experts even where the chain holds a newer version than the checkpoint came
    /// from (reverting others' work).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    destination: Destination,
    /// What a node that certifies (Proof-of-Learning) is told about the candidate.
    #[command(flatten)]
    claim: claim_cmd::ClaimArgs,
}

/// What `export` reads: exactly one of a node's data directory and a running node.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct ExportSource {
    /// A node's data directory (no node may be running on it).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A running node (`http://host:port`): its model is fetched block by block, each checked
    /// against its hash.
    #[arg(long, value_name = "URL")]
    node: Option<String>,
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

/// The description `upload` publishes by default: the checkpoint's model name (`_name_or_path`
/// when it is a Hugging Face Hub id, not a local path) and architecture; never a local path.
fn default_description(config_json: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(config_json).unwrap_or_default();
    let architecture = value
        .get("architectures")
        .and_then(|list| list.get(0))
        .and_then(serde_json::Value::as_str)
        .unwrap_or(blyan_moe::ARCHITECTURE);
    match value
        .get("_name_or_path")
        .and_then(serde_json::Value::as_str)
        .filter(|name| is_hub_id(name))
    {
        Some(name) => format!("{name} ({architecture})"),
        None => format!("{architecture} checkpoint"),
    }
}

/// Whether `name` reads as a Hugging Face Hub id (`org/model` or `model`), not a path.
fn is_hub_id(name: &str) -> bool {
    let part = |part: &str| {
        part.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !part.contains("..")
    };
    name.len() <= 96 && name.split('/').count() <= 2 && name.split('/').all(part)
}

/// The experts `patterns` select among `config`'s; `None` when no pattern is given.
fn selected_experts(
    config: &Config,
    patterns: &[String],
) -> anyhow::Result<Option<BTreeSet<ExpertName>>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let selection = ExpertSelection::parse(patterns)?;
    let selected: BTreeSet<ExpertName> = experts_of(config)
        .into_iter()
        .filter(|expert| selection.matches(*expert))
        .collect();
    anyhow::ensure!(
        !selected.is_empty(),
        "--experts {} selects no expert of the model ({} layers of {} experts: layer0.expert0 \
         to layer{}.expert{})",
        patterns.join(","),
        config.num_hidden_layers,
        config.num_local_experts,
        config.num_hidden_layers.saturating_sub(1),
        config.num_local_experts.saturating_sub(1)
    );
    Ok(Some(selected))
}

/// A publish's refusal, with what the miner can do about it.
fn explain(error: MoeError, quantize: Option<Quantize>) -> anyhow::Error {
    let advice = match &error {
        MoeError::BlockTooLarge {
            name, bytes_max, ..
        } => Some(match quantize {
            None if ExpertName::parse(name).is_ok() => format!(
                "retry with `--quantize int8`: expert matrices at a quarter of their float32 size \
                 (half of bf16); this chain takes at most {bytes_max} bytes per block"
            ),
            _ => format!(
                "this chain takes at most {bytes_max} bytes per block (its `payload_bytes_max`, \
                 `GET /chain/B`) and shared weights are never quantized: publish to a chain whose \
                 limit is larger (at most {})",
                blyan_primitives::BLOCK_PAYLOAD_BYTES_MAX
            ),
        }),
        MoeError::StaleExperts { .. } => Some(
            "export the current model (`blyan-miner export --node URL --out DIR`) and redo your \
             changes on it, publish only your own experts (`--experts`), or pass `--force` to \
             replace the newer versions"
                .to_owned(),
        ),
        _ => None,
    };
    match advice {
        Some(advice) => anyhow::Error::new(error).context(format!("nothing was written: {advice}")),
        None => anyhow::Error::new(error),
    }
}

fn upload(args: &UploadArgs) -> anyhow::Result<()> {
    // Everything is checked before the destination is even opened.
    let checkpoint = Checkpoint::open(&args.checkpoint)
        .with_context(|| format!("refusing checkpoint {}", args.checkpoint.display()))?;
    let origin = ChainOrigin::read(checkpoint.dir())?;
    let description = match &args.description {
        Some(text) => text.clone(),
        None => match origin
            .as_ref()
            .and_then(|origin| origin.description.clone())
        {
            Some(recorded) => recorded,
            None => default_description(checkpoint.files().config_json),
        },
    };
    anyhow::ensure!(
        description.len() <= DESCRIPTION_BYTES_MAX,
        "--description is {} bytes; at most {DESCRIPTION_BYTES_MAX}",
        description.len()
    );
    let scope = PublishScope {
        experts: selected_experts(checkpoint.config(), &args.experts)?,
        lineage: match (&origin, args.force) {
            (_, true) => Lineage::Unchecked,
            (Some(origin), false) => origin.lineage(),
            (None, false) => Lineage::Unrecorded,
        },
    };
    let key = keys::read_key(&args.key, &args.password)?;
    let destination = &args.destination;
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
        expert_quantization: match args.quantize {
            Some(Quantize::Int8) => ExpertQuantization::Int8,
            None => ExpertQuantization::None,
        },
        untrained: false,
        description,
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
    let published = publish_model_scoped(
        target,
        &key,
        checkpoint.config(),
        files,
        &*checkpoint.weights(),
        &options,
        &scope,
        &mut progress,
    );
    bar.finish_and_clear();
    let summary = published.map_err(|error| explain(error, args.quantize))?;
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
    let claim = &args.claim;
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
        Command::Keygen {
            out,
            keystore,
            password,
        } => {
            let key = blyan_chain::AuthorKey::generate();
            if keystore {
                keys::write_keystore(&key, &out, &password.password()?)?;
            } else {
                key.write_file(&out)
                    .with_context(|| format!("writing the key file {}", out.display()))?;
            }
            println!("{}", key.address());
        }
        Command::Upload(args) => upload(&args)?,
        Command::Train(args) => train_cmd::train(&args)?,
        Command::Ship(args) => ship_cmd::ship(&args)?,
        Command::Dataset(DatasetCommand::Submit(args)) => dataset_cmd::submit(&args)?,
        Command::Export { source, out } => export(&source, &out)?,
    }
    Ok(())
}

/// `export`: the current model of a data directory or a node, with its [`ChainOrigin`].
fn export(source: &ExportSource, out: &std::path::Path) -> anyhow::Result<()> {
    if let Some(url) = &source.node {
        let model = node::NodeModel::locate(url)
            .with_context(|| format!("reading the current model of the node at {url}"))?;
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let (_, origin) = model
            .download(out)
            .with_context(|| format!("fetching the current model of the node at {url}"))?;
        println!(
            "wrote the model of meta block {} ({} experts) from {url} to {}",
            origin.meta_block,
            origin.experts.len(),
            out.display()
        );
        return Ok(());
    }
    let Some(data_dir) = &source.data_dir else {
        anyhow::bail!("export needs --data-dir DIR or --node URL");
    };
    let directory = store_dir(data_dir);
    if !directory.is_dir() {
        anyhow::bail!("{} holds no chain store", data_dir.display());
    }
    let store = std::sync::Arc::new(ChainStore::open(&directory, StoreConfig::default())?);
    let origin = ChainOrigin::of_store(&store)?;
    ChainOrigin::remove(out)?;
    let summary = export_from_chain(store, out, EXPORT_SHARD_BYTES_DEFAULT)?;
    origin.write(out)?;
    println!(
        "wrote {} tensors ({} bytes) in {} file(s) to {}",
        summary.tensors,
        summary.tensor_bytes,
        summary.shards,
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_default_description_is_a_model_name_never_a_local_path() {
        let check = |config: &str, expected: &str| {
            assert_eq!(default_description(config.as_bytes()), expected, "{config}");
        };
        check(
            r#"{"_name_or_path": "mistralai/Mixtral-8x7B-v0.1", "architectures": ["MixtralForCausalLM"]}"#,
            "mistralai/Mixtral-8x7B-v0.1 (MixtralForCausalLM)",
        );
        for path in [
            "/home/miner/checkpoints/mixtral",
            "./out",
            "../out/model",
            "~/model",
            "a/b/c",
            "C:\\models\\mixtral",
        ] {
            let config =
                serde_json::json!({"_name_or_path": path, "architectures": ["MixtralForCausalLM"]});
            check(&config.to_string(), "MixtralForCausalLM checkpoint");
        }
        check("{}", "MixtralForCausalLM checkpoint");
    }

    #[test]
    fn a_block_too_large_says_what_to_do() {
        let too_large = |name: &str| MoeError::BlockTooLarge {
            name: name.to_owned(),
            bytes: 100,
            bytes_max: 90,
        };
        let expert = format!("{:#}", explain(too_large("layer3.expert5"), None));
        assert!(expert.contains("--quantize int8"), "{expert}");
        assert!(expert.contains("at most 90 bytes"), "{expert}");
        assert!(expert.contains("layer3.expert5"), "{expert}");
        let quantized = format!(
            "{:#}",
            explain(too_large("layer3.expert5"), Some(Quantize::Int8))
        );
        assert!(!quantized.contains("--quantize"), "{quantized}");
        let shared = format!("{:#}", explain(too_large("embed"), None));
        assert!(
            shared.contains("shared weights are never quantized"),
            "{shared}"
        );
    }

    #[test]
    fn expert_patterns_select_among_the_model_s_experts() {
        let config = Config::seed();
        let selected = selected_experts(
            &config,
            &["layer0.expert3".to_owned(), "layer1.*".to_owned()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(selected.len(), 1 + config.num_local_experts as usize);
        assert!(selected.contains(&ExpertName::new(0, 3).unwrap()));
        assert!(selected.contains(&ExpertName::new(1, 0).unwrap()));
        assert!(selected_experts(&config, &[]).unwrap().is_none());
        let none = selected_experts(&config, &["layer99.*".to_owned()]).unwrap_err();
        assert!(none.to_string().contains("selects no expert"), "{none}");
        let bad = selected_experts(&config, &["layer0".to_owned()]).unwrap_err();
        assert!(bad.to_string().contains("\"layer0\""), "{bad}");
    }
}
