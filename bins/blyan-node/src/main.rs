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
    DatasetService, HoldExpiry, Learner, NetworkService, Node, NodeConfig, PolService,
    ServedTeacher, Services,
};
use clap::{Parser, Subcommand};

/// A Blyan node: stores the chain, serves the on-chain mixture-of-experts model over HTTP and
/// keeps the token ledger. With no subcommand it serves until interrupted.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// The node's YAML configuration, over the shipped defaults; it must exist. Without the
    /// flag: `config/node.yaml` when present, else the shipped defaults. `BLYAN_*` environment
    /// variables override both (`BLYAN_LEDGER__POSTGRES_URL`; docs/config.md).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Overrides `data_dir` of the config: where the chain store and ledger live.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Overrides `listen` of the config: the HTTP address (`serve` only).
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

/// The config file read when `--config` is not given, if it exists.
const DEFAULT_CONFIG_PATH: &str = "config/node.yaml";

/// The configuration and where it came from (logged once logging runs).
fn load_config(cli: &Cli) -> anyhow::Result<(NodeConfig, String)> {
    let serving = matches!(cli.command, None | Some(Command::Serve));
    if !serving && (cli.listen.is_some() || !cli.p2p_listen.is_empty() || !cli.peers.is_empty()) {
        anyhow::bail!("--listen, --p2p-listen and --peer apply to `serve` only");
    }
    if cli.seed_model.is_some() && matches!(cli.command, Some(Command::Chain(_))) {
        anyhow::bail!("--seed-model applies to `serve` and `generate` only");
    }
    let path = match &cli.config {
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|path| path.is_file()),
    };
    let mut config = NodeConfig::load_with_env(path.as_deref(), std::env::vars())?;
    let source = path.map_or_else(
        || "the shipped defaults".to_owned(),
        |path| path.display().to_string(),
    );
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
    config.validate(std::path::Path::new("the command line"))?;
    Ok((config, source))
}

/// Opens the node (chain store, ledger), writes the first model (`model.seed`: the shipped
/// trained model by default) when the chain holds none, loads the chain's model, and runs the node's services until Ctrl-C or SIGTERM.
async fn serve(config: NodeConfig) -> anyhow::Result<()> {
    let key = blyan_node_core::node_key(&config.data_dir)?;
    // Operators are paid: the serving share goes to the node key unless configured elsewhere.
    let server_account = config
        .ledger
        .server_account
        .unwrap_or_else(|| key.address());
    tracing::info!(%server_account, "the serving share of fees is paid to this account");
    let node = Node::open(config)
        .await?
        .with_server_account(server_account);
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
    // The L1 teacher scores with the served model.
    services
        .node()
        .set_teacher(Arc::new(ServedTeacher(Arc::clone(services.node()))));
    services.spawn(DatasetService);
    if services.node().config().p2p.enabled {
        services.spawn(NetworkService);
    }
    services.run_until(stop_requested()).await?;
    Ok(())
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM (what systemd and container runtimes send): the
/// services then drain as they stop.
async fn stop_requested() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; stopping on Ctrl-C only");
                None
            }
        };
    let terminated = async {
        match terminate.as_mut() {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    let interrupted = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = terminated => tracing::info!("SIGTERM: shutting down"),
        () = interrupted => tracing::info!("interrupted: shutting down"),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (config, source) = load_config(&cli)?;
    blyan_node_core::init_logging(config.log.format, &config.log.filter)?;
    tracing::info!(config = %source, "configuration loaded");
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
