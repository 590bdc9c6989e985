//! Pruning: idempotency keys older than the retention, and the quotes that expired before it
//! without ever being authorized.
//!
//! A key recorded less than the retention ago is never deleted, so a request replayed within
//! the retention is recognised (its first outcome returned, money moved once); a replay later
//! than that is a new request. Kept whatever their age: the ledger's own keys (`ledger/…`, the
//! genesis, which a restart checks against the tokenomics) and the keys naming a bond (its lock
//! request's key: a bond is named by it, so a late replay of its lock is still recognised).
//! Holds, and the quotes they authorized, are the record of a payment and are never deleted.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;
use crate::error::{LedgerError, Result};
use crate::store::{Command, Ctx, StoreTx};

/// Shortest idempotency retention [`Ledger::prune`](crate::Ledger::prune) accepts: one hour.
pub const IDEMPOTENCY_RETENTION_MIN: Duration = Duration::from_secs(3600);

/// `ledger_meta` key: every never-authorized quote that expired before this instant (ms) is
/// pruned already, so each run only looks at the quotes that expired since the last one.
const QUOTES_PRUNED_BEFORE: &str = "quotes_pruned_before_ms";

/// What one [`Ledger::prune`](crate::Ledger::prune) deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pruned {
    /// Idempotency keys recorded before the cutoff.
    pub idempotency_keys: u64,
    /// Quotes that expired before the cutoff and were never authorized.
    pub quotes: u64,
    /// The cutoff: now minus the retention (Unix ms).
    pub before_ms: UnixMillis,
}

/// Deletes what is older than `retention` (see the module documentation).
#[derive(Clone)]
pub(crate) struct Prune {
    pub retention: Duration,
}

impl Command for Prune {
    type Output = Pruned;

    fn span(&self) -> tracing::Span {
        tracing::info_span!("ledger.prune", retention_s = self.retention.as_secs(),)
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Pruned> {
        let retention_ms = u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX);
        let min_ms = u64::try_from(IDEMPOTENCY_RETENTION_MIN.as_millis()).unwrap_or(u64::MAX);
        if retention_ms < min_ms {
            return Err(LedgerError::RetentionTooShort {
                retention_ms,
                min_ms,
            });
        }
        let before_ms = ctx.clock.now_ms().saturating_sub(retention_ms);
        let idempotency_keys = tx.prune_keys(before_ms).await?;
        let from_ms = match tx.meta(QUOTES_PRUNED_BEFORE).await? {
            None => 0,
            Some(text) => text.parse().map_err(|_| LedgerError::Integrity {
                what: format!("ledger_meta {QUOTES_PRUNED_BEFORE} is {text:?}, not a time"),
            })?,
        };
        let quotes = if from_ms < before_ms {
            let quotes = tx.prune_quotes(from_ms, before_ms).await?;
            tx.set_meta(QUOTES_PRUNED_BEFORE, &before_ms.to_string())
                .await?;
            quotes
        } else {
            0
        };
        Ok(Pruned {
            idempotency_keys,
            quotes,
            before_ms,
        })
    }
}
