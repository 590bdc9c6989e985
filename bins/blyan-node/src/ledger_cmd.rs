//! `blyan-node ledger …`: operator commands on the node's ledger (the embedded file under the
//! data dir, or PostgreSQL, as `ledger.backend` says). They may run beside a serving node: the
//! stores serialise writers.

use std::io::Write as _;

use anyhow::Context as _;
use blyan_ledger::{Address, Amount, GrantRequest, IdempotencyKey, Ledger as _};
use blyan_node_core::NodeConfig;
use clap::Subcommand;

/// Operator commands on the node's ledger.
#[derive(Debug, Subcommand)]
pub(crate) enum LedgerCommand {
    /// Grant BLY from the treasury to a wallet, within what the treasury's genesis allocation
    /// (config/tokenomics.yaml) has left after every earlier grant. Recorded as a transaction
    /// of kind `grant` that the wallet's history shows; prints it as JSON.
    Grant {
        /// The wallet funded (0x + 40 hex digits).
        #[arg(value_name = "ADDRESS")]
        address: Address,
        /// BLY to grant (a decimal with at most 6 decimals: `100`, `0.5`).
        #[arg(value_name = "AMOUNT")]
        amount: Amount,
        /// Why it was granted (at most 256 bytes), shown in the wallet's history.
        #[arg(long, default_value = "operator grant")]
        memo: String,
        /// Makes the command safe to retry: a second run with the same key and the same
        /// arguments grants nothing more and prints the first grant. Without it every run is
        /// a new grant.
        #[arg(long, value_name = "KEY", value_parser = parse_key)]
        idempotency_key: Option<IdempotencyKey>,
    },
}

/// `--idempotency-key`: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`.
fn parse_key(text: &str) -> blyan_ledger::Result<IdempotencyKey> {
    IdempotencyKey::new(text)
}

/// A key for a grant run without `--idempotency-key`: unique per run (time and process).
fn fresh_key() -> anyhow::Result<IdempotencyKey> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("reading the clock")?;
    Ok(IdempotencyKey::new(format!(
        "grant-cli:{}:{}",
        now.as_nanos(),
        std::process::id()
    ))?)
}

/// Runs one ledger subcommand.
pub(crate) fn run(config: &NodeConfig, command: LedgerCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let ledger = blyan_node_core::open_ledger(config).await?;
        match command {
            LedgerCommand::Grant {
                address,
                amount,
                memo,
                idempotency_key,
            } => {
                let key = match idempotency_key {
                    Some(key) => key,
                    None => fresh_key()?,
                };
                let grant = ledger
                    .grant(GrantRequest {
                        key,
                        to: address,
                        amount,
                        memo,
                    })
                    .await
                    .with_context(|| format!("granting {amount} BLY to {address}"))?;
                let mut stdout = std::io::stdout().lock();
                serde_json::to_writer_pretty(&mut stdout, &grant)?;
                writeln!(stdout)?;
            }
        }
        Ok(())
    })
}
