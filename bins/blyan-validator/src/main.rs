//! `blyan-validator`: re-checks what others published.
//!
//! - `verify`: the chain itself: every header re-hashed, every payload re-hashed against its
//!   commitment, every link and signature checked, in bounded memory, with the first bad block
//!   named. The store is opened read-only: verifying changes no byte of it (payload bytes a
//!   crash left past the committed end are reported, not removed).
//! - `run`: a Proof-of-Learning validator against a node (`run_cmd.rs`): re-runs each seeded
//!   claim's evaluation and sends a signed vote.

mod run_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use blyan_chain::ChainStore;
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
    /// Fully verify a chain store without changing it: exit status 0 when every block verifies,
    /// 1 with the first bad block named otherwise. Payload bytes no block uses (left by a crash)
    /// are reported and do not fail verification. Safe beside a running node, whose store it
    /// sees as of the moment it opens.
    Verify {
        /// The chain store: a node's data directory (holding `chain/`) or the `chain/`
        /// directory itself.
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        /// Print the report as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Validate Proof-of-Learning claims for a node: re-run each seeded claim's evaluation on
    /// the drawn batch and send a signed vote, until stopped (or once, with `--once`).
    Run(run_cmd::RunArgs),
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
        Command::Run(args) => run_cmd::run(args).map(|()| ExitCode::SUCCESS),
    }
}

fn verify(dir: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let path = ChainStore::locate(dir)?;
    let store = ChainStore::open_read_only(&path)
        .with_context(|| format!("opening the chain store in {} read-only", path.display()))?;
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
            "store": path,
            "ok": report.is_ok(),
            "blocks": report.blocks,
            "payload_bytes": report.payload_bytes,
            "seconds": seconds,
            "first_bad": bad,
            "unacknowledged_tail": report.unacknowledged_tail,
        });
        println!("{out}");
    } else {
        if let Some(bad) = &report.first_bad {
            println!("bad block: {bad}");
            println!("{} blocks verified before it", report.blocks);
        } else {
            println!(
                "ok: {} blocks, {} payload bytes verified in {seconds:.2} s",
                report.blocks, report.payload_bytes
            );
        }
        if let Some(tail) = &report.unacknowledged_tail {
            println!("note: {tail}");
        }
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
