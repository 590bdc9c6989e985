//! `blyan-node chain …`: inspect, verify, export and import the node's chain store offline.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use blyan_api::NodeConfig;
use blyan_chain::{ChainId, ChainStore, VerifyProgress};
use clap::Subcommand;

/// Offline operations on the chain store in the data dir (the node must not be serving it).
#[derive(Debug, Subcommand)]
pub enum ChainCommand {
    /// Print the store's summary (chains, tips, block counts, payload bytes) as JSON.
    Info,
    /// Re-hash every header and payload and check every link and signature; exits with status 1
    /// and names the first bad block when the store does not verify.
    Verify,
    /// Write the blocks of one chain, heights FROM..=TO, to a segment file.
    Export {
        /// The chain: A (meta), B (parameters) or D (dataset).
        #[arg(long)]
        chain: ChainId,
        /// First height (inclusive).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Last height (inclusive); defaults to the chain's tip.
        #[arg(long)]
        to: Option<u64>,
        /// The file to write (replaced if it exists).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Verify and append the blocks of a segment file written by `chain export`.
    Import {
        /// The segment file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

fn open(config: &NodeConfig) -> anyhow::Result<ChainStore> {
    blyan_api::open_chain(config).with_context(|| {
        format!(
            "opening the chain store in {}",
            config.data_dir.join(blyan_api::CHAIN_DIR_NAME).display()
        )
    })
}

/// Runs one chain subcommand; returns the process exit status.
pub fn run(config: &NodeConfig, command: ChainCommand) -> anyhow::Result<i32> {
    let store = open(config)?;
    let mut stdout = std::io::stdout().lock();
    match command {
        ChainCommand::Info => {
            serde_json::to_writer_pretty(&mut stdout, &store.info())?;
            writeln!(stdout)?;
        }
        ChainCommand::Verify => {
            let started = std::time::Instant::now();
            let mut last_report = started;
            let report = store.verify(|progress: &VerifyProgress| {
                if last_report.elapsed().as_secs() >= 2 {
                    last_report = std::time::Instant::now();
                    tracing::info!(
                        blocks = progress.blocks,
                        of = progress.blocks_total,
                        payload_bytes = progress.payload_bytes,
                        "verifying"
                    );
                }
            })?;
            let seconds = started.elapsed().as_secs_f64();
            match &report.first_bad {
                None => {
                    writeln!(
                        stdout,
                        "ok: {} blocks, {} payload bytes verified in {seconds:.2} s",
                        report.blocks, report.payload_bytes
                    )?;
                }
                Some(bad) => {
                    writeln!(stdout, "bad block: {bad}")?;
                    writeln!(stdout, "{} blocks verified before it", report.blocks)?;
                    return Ok(1);
                }
            }
        }
        ChainCommand::Export {
            chain,
            from,
            to,
            out,
        } => {
            let to = to.unwrap_or_else(|| store.tip(chain).height);
            let summary = store
                .export_file(chain, from, to, &out)
                .with_context(|| format!("exporting chain {chain} to {}", out.display()))?;
            serde_json::to_writer_pretty(&mut stdout, &summary)?;
            writeln!(stdout)?;
        }
        ChainCommand::Import { file } => {
            let summary = store
                .import_file(&file)
                .with_context(|| format!("importing {}", file.display()))?;
            serde_json::to_writer_pretty(&mut stdout, &summary)?;
            writeln!(stdout)?;
        }
    }
    Ok(0)
}
