//! `blyan-node generate`: runs the chain's model on one prompt, streaming only the generated
//! text to stdout (logs go to stderr).

use std::io::Write as _;
use std::sync::Arc;

use anyhow::Context as _;
use blyan_moe::{CancelToken, ComputeDevice, Generator, ModelOptions, SamplingParams};
use blyan_node_core::NodeConfig;
use clap::Args;

/// Sampling options of `blyan-node generate`.
#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64)]
    max_tokens: u32,
    /// 0 is greedy; above 0 samples from the logits divided by it.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sample only among the most likely tokens whose probabilities sum to at least P.
    #[arg(long, value_name = "P")]
    top_p: Option<f32>,
    /// Sample only among the K most likely tokens.
    #[arg(long, value_name = "K")]
    top_k: Option<u32>,
    /// Seed of the sampler: the same seed, prompt and model give the same text.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Compute on the first CUDA device (`cuda:0`) whatever `model.device` says; refused when
    /// the machine has none.
    #[arg(long)]
    cuda: bool,
}

/// Loads the model from the data dir's chain (writing the first model, `model.seed`, when the
/// chain holds none, as the server does) and streams one generation to stdout.
pub(crate) fn run(config: &NodeConfig, args: GenerateArgs) -> anyhow::Result<()> {
    let store = blyan_node_core::open_chain(config).context("opening the chain store")?;
    let key = blyan_node_core::node_key(&config.data_dir)?;
    // Logs what it writes (a warning for the untrained seed).
    blyan_moe::ensure_model(&store, &key, &config.model.seed_model())?;
    // `model.device` and `model.dtype` as the server uses them; `--cuda` overrides the device.
    // A CUDA device the machine lacks is refused when the model loads.
    let mut options: ModelOptions = config.model.options(config.cache.expert_bytes_max);
    if args.cuda {
        options.device = ComputeDevice::Cuda(0);
    }
    let generator = Generator::from_chain(Arc::new(store), options)
        .context("loading the model from the chain")?;
    if generator.info().untrained {
        tracing::warn!("this model is the untrained seed: its text is noise");
    }
    let params = SamplingParams {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        ..SamplingParams::default()
    };
    let mut stream = generator.stream(&args.prompt, params, CancelToken::new())?;
    let mut stdout = std::io::stdout().lock();
    for delta in stream.by_ref() {
        stdout.write_all(delta?.text.as_bytes())?;
        stdout.flush()?;
    }
    writeln!(stdout)?;
    tracing::info!(
        finish = ?stream.finish_reason(),
        tokens = stream.token_ids().len(),
        "generation finished"
    );
    Ok(())
}
