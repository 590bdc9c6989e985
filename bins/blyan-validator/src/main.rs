//! `blyan-validator`: re-checks what others published. Today that is the chain itself: every
//! header re-hashed, every payload re-hashed against its commitment, every link and signature
//! checked, in bounded memory, with the first bad block named. Re-running Proof-of-Learning
//! claims lands with the learning crate.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use blyan_chain::{ChainStore, StoreConfig};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Re-checks a Blyan chain store independently of the node that wrote it.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fully verify a chain store: exit status 0 when every block verifies, 1 with the first bad
    /// block named otherwise. The store must not be open in a running node.
    Verify {
        /// Directory of the chain store (a node's `<data_dir>/chain`).
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        /// Print the report as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Verify { store, json } => verify(&store, json),
    }
}

fn verify(dir: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    if !dir.join("db").join("CURRENT").exists() {
        anyhow::bail!("{} holds no chain store", dir.display());
    }
    let store = ChainStore::open(dir, StoreConfig::default())
        .with_context(|| format!("opening the chain store in {}", dir.display()))?;
    let started = std::time::Instant::now();
    let report = store.verify(|_| {})?;
    let seconds = started.elapsed().as_secs_f64();
    let bad = report.first_bad.as_ref().map(|bad| {
        serde_json::json!({
            "seq": bad.seq,
            "hash": bad.hash.map(|hash| hash.to_string()),
            "chain": bad.chain.map(|chain| chain.to_string()),
            "height": bad.height,
            "error": bad.error.to_string(),
        })
    });
    if json {
        let out = serde_json::json!({
            "ok": report.is_ok(),
            "blocks": report.blocks,
            "payload_bytes": report.payload_bytes,
            "seconds": seconds,
            "first_bad": bad,
        });
        println!("{out}");
    } else if let Some(bad) = &report.first_bad {
        println!("bad block: {bad}");
        println!("{} blocks verified before it", report.blocks);
    } else {
        println!(
            "ok: {} blocks, {} payload bytes verified in {seconds:.2} s",
            report.blocks, report.payload_bytes
        );
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
