//! `blyan-node`: parses arguments, loads `node.yaml`, and serves (or runs one subcommand:
//! `chain`, `generate`, `ledger`).
//!
//! Serving is composition only: the node library (`blyan-node-core`) opens the node, and its
//! services run on it: the HTTP API (`blyan-api`), the release of expired payment holds, the
//! learner (idle unless `learning.enabled`), Proof-of-Learning, and the network (with
//! `p2p.enabled`, `--p2p-listen` or `--peer`).

mod chain_cmd;
mod generate_cmd;
mod ledger_cmd;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use blyan_api::{AppState, HttpService, Server};
use blyan_node_core::{
    HoldExpiry, Learner, NetworkService, Node, NodeConfig, PolService, Services,
};
use clap::{Parser, Subcommand};

/// A Blyan node: stores the chain, serves the on-chain mixture-of-experts model over HTTP and
/// keeps the token ledger. With no subcommand it serves until interrupted.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// The node's YAML configuration; a missing file means the shipped defaults.
    #[arg(
        long,
        global = true,
        default_value = "config/node.yaml",
        value_name = "FILE"
    )]
    config: PathBuf,
    /// Overrides `data_dir` of the config: where the chain store and ledger live.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Overrides `listen` of the config: the HTTP address.
    #[arg(long, global = true, value_name = "ADDR:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// Overrides `model.seed` of the config: what a chain without a model starts with
    /// (`shipped`: the trained default model; `random`: an untrained initialisation).
    #[arg(long, global = true, value_name = "shipped|random")]
    seed_model: Option<SeedChoiceArg>,
    /// Joins the network listening on this multiaddr (repeatable; replaces `p2p.listen`), e.g.
    /// `/ip4/0.0.0.0/udp/4801/quic-v1` or `/ip4/0.0.0.0/tcp/4801`.
    #[arg(long = "p2p-listen", global = true, value_name = "MULTIADDR")]
    p2p_listen: Vec<String>,
    /// Joins the network through this peer (repeatable; added to `p2p.bootstrap`), e.g.
    /// `/ip4/192.0.2.7/udp/4801/quic-v1/p2p/16Uiu2HAm…`.
    #[arg(long = "peer", global = true, value_name = "MULTIADDR")]
    peers: Vec<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// `--seed-model`'s values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SeedChoiceArg {
    /// The trained default model shipped with the node.
    Shipped,
    /// An untrained random initialisation (its chat is noise).
    Random,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API and web page until interrupted (the default).
    Serve,
    /// Inspect, verify, export or import the chain store (offline: not while serving).
    #[command(subcommand)]
    Chain(chain_cmd::ChainCommand),
    /// Run the chain's model on one prompt, streaming the generated text to stdout.
    Generate(generate_cmd::GenerateArgs),
    /// Operator commands on the ledger (`grant`: fund a wallet from the treasury).
    #[command(subcommand)]
    Ledger(ledger_cmd::LedgerCommand),
}

fn load_config(cli: &Cli) -> anyhow::Result<NodeConfig> {
    let mut config = NodeConfig::load(&cli.config)?;
    if let Some(data_dir) = &cli.data_dir {
        config.data_dir = data_dir.clone();
    }
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(seed) = cli.seed_model {
        config.model.seed = match seed {
            SeedChoiceArg::Shipped => blyan_node_core::SeedChoice::Shipped,
            SeedChoiceArg::Random => blyan_node_core::SeedChoice::Random,
        };
    }
    if !cli.p2p_listen.is_empty() {
        config.p2p.listen = cli.p2p_listen.clone();
        config.p2p.enabled = true;
    }
    if !cli.peers.is_empty() {
        config.p2p.bootstrap.extend(cli.peers.iter().cloned());
        config.p2p.enabled = true;
    }
    config.validate(&cli.config)?;
    Ok(config)
}

/// Opens the node (chain store, ledger), writes the first model (`model.seed`: the shipped
/// trained model by default) when the chain holds none, loads the chain's model, and runs the node's services until Ctrl-C.
async fn serve(config: NodeConfig) -> anyhow::Result<()> {
    let key = blyan_node_core::node_key(&config.data_dir)?;
    let node = Node::open(config).await?;
    node.ensure_seed_model(&key).await?;
    // The node's key signs what its learner publishes (with `learning.publish: true`).
    let learner = Learner::with_key(key);
    let node = Arc::new(node.load_model().await?);
    let server = Server::bind(AppState::new(Arc::clone(&node))?).await?;
    let mut services = Services::new(node);
    services.spawn(HoldExpiry::default());
    services.spawn(HttpService::new(server));
    services.spawn(learner);
    services.spawn(PolService);
    if services.node().config().p2p.enabled {
        services.spawn(NetworkService);
    }
    services
        .run_until(async {
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
    blyan_node_core::init_logging(config.log.format, &config.log.filter)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(serve(config))
        }
        Command::Generate(args) => generate_cmd::run(&config, args),
        Command::Ledger(command) => ledger_cmd::run(&config, command),
        Command::Chain(command) => {
            let status = chain_cmd::run(&config, command)?;
            if status != 0 {
                std::process::exit(status);
            }
            Ok(())
        }
    }
}
