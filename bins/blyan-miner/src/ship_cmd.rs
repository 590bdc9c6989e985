//! `blyan-miner ship`: turns a checkpoint into the shipped default model: blocks built without a
//! key (unsigned, at the genesis timestamp), written as export files with the list of their
//! hashes, which the node library builds in and trusts as it trusts genesis.

use std::path::PathBuf;

use anyhow::Context as _;
use blyan_chain::Dtype;
use blyan_moe::{
    CastWeights, Checkpoint, ExpertQuantization, PublishOptions, build_pinned_model,
    write_shipped_model,
};
use clap::Args;

/// `blyan-miner ship`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct ShipArgs {
    /// The trained checkpoint to ship.
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// The shipped-model directory to (re)write: its `*.blyexp` files and `blocks.txt`.
    #[arg(long, value_name = "DIR", default_value = blyan_moe::SHIPPED_MODEL_DIR)]
    out: PathBuf,
    /// Stored dtype of every tensor (f16 halves a float32 checkpoint).
    #[arg(long, default_value = "f16")]
    dtype: Dtype,
    /// Store the experts as INT8 per output channel instead.
    #[arg(long)]
    int8: bool,
    /// What `/health` and `/model` say the model is.
    #[arg(long)]
    description: String,
}

pub(crate) fn ship(args: &ShipArgs) -> anyhow::Result<()> {
    let checkpoint = Checkpoint::open(&args.checkpoint)
        .with_context(|| format!("refusing checkpoint {}", args.checkpoint.display()))?;
    let weights = CastWeights::new(checkpoint.weights(), args.dtype)?;
    let options = PublishOptions {
        expert_quantization: if args.int8 {
            ExpertQuantization::Int8
        } else {
            ExpertQuantization::None
        },
        untrained: false,
        description: args.description.clone(),
    };
    let model = build_pinned_model(checkpoint.config(), checkpoint.files(), &weights, &options)?;
    let comment = format!(
        "The shipped default model's blocks, trusted by their hashes as the genesis blocks are\n\
         (one blake3 block hash per line, in publish order). Written by `blyan-miner ship`;\n\
         compiled into blyan-chain. Model: {}",
        args.description
    );
    let files = write_shipped_model(&args.out, &model, &comment)?;
    println!(
        "{} blocks ({} bytes in {} files) written to {}; meta block {}. Rebuild the node to pin them.",
        model.blocks.len(),
        files.bytes,
        files.segments.len(),
        args.out.display(),
        model.summary.meta_block
    );
    Ok(())
}
