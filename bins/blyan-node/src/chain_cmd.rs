//! `blyan-node chain …`: inspect, verify, export and import the node's chain store offline.
//!
//! `info`, `verify` and `export` open the store read-only: they change no byte of it, create
//! nothing, and may run beside a serving node (they see the store as of the moment they open).
//! `import` opens it read-write, creating it with its genesis blocks if the data dir has none.
//! `--data-dir` may name the node's data directory (which holds `chain/`) or the `chain/`
//! directory itself.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use blyan_chain::{ChainId, ChainStore, GenesisSpec, VerifyProgress};
use blyan_node_core::NodeConfig;
use clap::Subcommand;

/// Offline operations on the chain store in the data dir (`import` must not run while the node
/// serves it).
#[derive(Debug, Subcommand)]
pub(crate) enum ChainCommand {
    /// Print the store's summary (chains, tips, block counts, payload bytes) as JSON. Read-only.
    Info,
    /// Re-hash every header and payload and check every link and signature; exits with status 1
    /// and names the first bad block when the store does not verify. Read-only: payload bytes a
    /// crash left past the committed end are reported, not removed.
    Verify,
    /// Write the blocks of one chain, heights FROM..=TO, to a segment file. Read-only on the
    /// store.
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
    /// Verify and append the blocks of a segment file written by `chain export` (the file's
    /// framing is checked whole first: a truncated file changes nothing).
    Import {
        /// The segment file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// The existing store `--data-dir` names, opened read-only under the node's chain rules.
fn open_read_only(config: &NodeConfig) -> anyhow::Result<ChainStore> {
    let path = ChainStore::locate(&config.data_dir)?;
    ChainStore::open_read_only_with(
        &path,
        blyan_node_core::store_config(config),
        &GenesisSpec::shipped(),
    )
    .with_context(|| format!("opening the chain store in {} read-only", path.display()))
}

/// The store `--data-dir` names, opened read-write: the data dir itself when it is a store,
/// otherwise its `chain/` (created with genesis when absent).
fn open_for_import(config: &NodeConfig) -> anyhow::Result<ChainStore> {
    let data_dir: &Path = &config.data_dir;
    let path =
        ChainStore::locate(data_dir).unwrap_or_else(|_| data_dir.join(blyan_chain::CHAIN_DIR_NAME));
    blyan_node_core::open_chain_at(config, &path)
        .with_context(|| format!("opening the chain store in {}", path.display()))
}

/// Runs one chain subcommand; returns the process exit status.
pub(crate) fn run(config: &NodeConfig, command: ChainCommand) -> anyhow::Result<i32> {
    let mut stdout = std::io::stdout().lock();
    match command {
        ChainCommand::Info => {
            let store = open_read_only(config)?;
            serde_json::to_writer_pretty(&mut stdout, &store.info())?;
            writeln!(stdout)?;
        }
        ChainCommand::Verify => {
            let store = open_read_only(config)?;
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
                }
            }
            if let Some(tail) = &report.unacknowledged_tail {
                writeln!(stdout, "note: {tail}")?;
            }
            if !report.is_ok() {
                return Ok(1);
            }
        }
        ChainCommand::Export {
            chain,
            from,
            to,
            out,
        } => {
            let store = open_read_only(config)?;
            let to = to.unwrap_or_else(|| store.tip(chain).height);
            let summary = store
                .export_file(chain, from, to, &out)
                .with_context(|| format!("exporting chain {chain} to {}", out.display()))?;
            serde_json::to_writer_pretty(&mut stdout, &summary)?;
            writeln!(stdout)?;
        }
        ChainCommand::Import { file } => {
            let store = open_for_import(config)?;
            let summary = store
                .import_file(&file)
                .with_context(|| format!("importing {}", file.display()))?;
            serde_json::to_writer_pretty(&mut stdout, &summary)?;
            writeln!(stdout)?;
        }
    }
    Ok(0)
}
