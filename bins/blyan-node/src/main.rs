//! `blyan-node`: parses arguments, loads `node.yaml`, and serves (or runs one subcommand).

use std::path::PathBuf;

use anyhow::Context as _;
use blyan_api::{AppState, NodeConfig, Server};
use clap::{Parser, Subcommand};

/// A Blyan node: stores the chain, serves the on-chain mixture-of-experts model over HTTP and
/// keeps the token ledger. With no subcommand it serves until interrupted.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// The node's YAML configuration; a missing file means the shipped defaults.
    #[arg(long, global = true, default_value = "config/node.yaml", value_name = "FILE")]
    config: PathBuf,
    /// Overrides `data_dir` of the config: where the chain store and ledger live.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Overrides `listen` of the config: the HTTP address.
    #[arg(long, global = true, value_name = "ADDR:PORT")]
    listen: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API and web page until interrupted (the default).
    Serve,
}

fn load_config(cli: &Cli) -> anyhow::Result<NodeConfig> {
    let mut config = NodeConfig::load(&cli.config)?;
    if let Some(data_dir) = &cli.data_dir {
        config.data_dir = data_dir.clone();
    }
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    config.validate(&cli.config)?;
    Ok(config)
}

async fn serve(config: NodeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let server = Server::bind(AppState::new(config)?).await?;
    server
        .serve(async {
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::error!(%error, "cannot listen for Ctrl-C; serving until killed");
                std::future::pending::<()>().await;
            }
            tracing::info!("shutting down");
        })
        .await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = load_config(&cli)?;
    blyan_api::init_logging(config.log.format, &config.log.filter)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => runtime.block_on(serve(config)),
    }
}
