//! Idempotency: claim the key first (waiting for a concurrent holder of the same key), run,
//! record the outcome in the same store transaction. A replay of the same request returns the
//! stored outcome; the same key with a different request is `IdempotencyConflict`.
//!
//! The request's fingerprint is its JSON together with the operation's name; requests
//! serialize addresses in their stored spelling (see `request.rs`), so a fingerprint does not
//! depend on how addresses are displayed.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::UnixMillis;
use crate::error::{LedgerError, Result};
use crate::request::IdempotencyKey;
use crate::store::{KeyRow, StoreTx};

#[derive(Serialize)]
struct Fingerprint<'a, R: Serialize> {
    operation: &'a str,
    request: &'a R,
}

/// The text stored beside an idempotency key: the operation and its request, as JSON.
pub(super) fn fingerprint<R: Serialize>(operation: &str, request: &R) -> Result<String> {
    serde_json::to_string(&Fingerprint { operation, request }).map_err(|e| LedgerError::Integrity {
        what: format!("cannot encode request: {e}"),
    })
}

/// `Some(first outcome)` when `key` was already used for this very request.
pub(super) async fn claim<T: StoreTx, O: DeserializeOwned>(
    tx: &mut T,
    key: &IdempotencyKey,
    request: &str,
    now: UnixMillis,
) -> Result<Option<O>> {
    match tx.claim_key(key.as_str(), request, now).await? {
        None => Ok(None),
        Some(row) => replayed(key, request, row).map(Some),
    }
}

/// The first outcome stored under `key`, which `row` found used: refused as
/// `IdempotencyConflict` when it was used for another request than `request`.
pub(super) fn replayed<O: DeserializeOwned>(
    key: &IdempotencyKey,
    request: &str,
    row: KeyRow,
) -> Result<O> {
    if row.request != request {
        return Err(LedgerError::IdempotencyConflict {
            key: key.as_str().to_owned(),
            first_request: row.request,
        });
    }
    let outcome = row.outcome.ok_or_else(|| LedgerError::Integrity {
        what: format!("idempotency key {key} committed without an outcome"),
    })?;
    serde_json::from_str(&outcome).map_err(|e| LedgerError::Integrity {
        what: format!("stored outcome of key {key} does not decode: {e}"),
    })
}

/// The text stored as a key's outcome.
pub(super) fn outcome_text<O: Serialize>(outcome: &O) -> Result<String> {
    serde_json::to_string(outcome).map_err(|e| LedgerError::Integrity {
        what: format!("cannot encode outcome: {e}"),
    })
}

/// Records `outcome` as the answer to every later replay of `key`.
pub(super) async fn finish<T: StoreTx, O: Serialize>(
    tx: &mut T,
    key: &IdempotencyKey,
    outcome: &O,
) -> Result<()> {
    tx.finish_key(key.as_str(), &outcome_text(outcome)?).await
}

/// Runs `$body` (an expression that may `.await` and `?`) once per idempotency key.
macro_rules! idempotent {
    ($tx:expr, $ctx:expr, $key:expr, $operation:expr, $request:expr, |$now:ident| $body:expr) => {{
        let $now = $ctx.clock.now_ms();
        let request = $crate::ops::idempotency::fingerprint($operation, $request)?;
        if let Some(first) = $crate::ops::idempotency::claim($tx, $key, &request, $now).await? {
            return Ok(first);
        }
        let outcome = $body;
        $crate::ops::idempotency::finish($tx, $key, &outcome).await?;
        Ok(outcome)
    }};
}

pub(super) use idempotent;
