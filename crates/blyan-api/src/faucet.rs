//! `POST /faucet`: a test network's faucet. A signed-in wallet claims `faucet.amount_per_claim`
//! BLY from the treasury through the ledger's grant path; the per-wallet and daily limits are
//! counted by the ledger in the claim's own store transaction, so concurrent claims (and
//! several nodes on one PostgreSQL ledger) cannot pass them. Off by default
//! (`faucet.enabled: false`): the route then answers 403 `faucet_disabled`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use blyan_api_types::FaucetResponse;
use blyan_ledger::LedgerError;
use blyan_ledger::{Address as LedgerAddress, FaucetClaimRequest, IdempotencyKey, Ledger as _};

use crate::extract::SignedIn;
use crate::server::AppState;
use crate::{Error, Result};

/// Length of the faucet's day, in seconds (its limits reset at UTC midnight).
const FAUCET_DAY_SECONDS: u64 = 24 * 3600;

/// Seconds until the next UTC midnight, when the faucet's limits reset.
fn seconds_to_next_day() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    FAUCET_DAY_SECONDS - now % FAUCET_DAY_SECONDS
}

/// A fresh idempotency key per claim: one HTTP request, one claim (a client's retry is a new
/// claim, which the per-wallet limit bounds).
fn claim_key(wallet: &LedgerAddress) -> Result<IdempotencyKey> {
    static CLAIMS: AtomicU64 = AtomicU64::new(0);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let sequence = CLAIMS.fetch_add(1, Ordering::Relaxed);
    IdempotencyKey::new(format!(
        "faucet:{}:{now_ms}:{sequence}",
        wallet.to_lower_hex()
    ))
    .map_err(|error| Error::Internal {
        reason: format!("faucet key: {error}"),
    })
}

/// The ledger's refusal as the API's.
fn refusal(error: LedgerError, cap: &blyan_ledger::Amount) -> Error {
    match error {
        LedgerError::FaucetWalletLimit { claims, max, .. } => Error::FaucetWalletLimit {
            claims,
            max,
            retry_after_seconds: seconds_to_next_day(),
        },
        LedgerError::FaucetDailyCap { .. } => Error::FaucetDailyCap {
            cap: cap.to_string(),
            retry_after_seconds: seconds_to_next_day(),
        },
        error @ (LedgerError::GrantAboveAllocation { .. }
        | LedgerError::InsufficientFunds { .. }) => Error::FaucetEmpty {
            reason: error.to_string(),
        },
        error => {
            tracing::error!(%error, "faucet claim failed");
            Error::LedgerUnavailable {
                reason: "cannot record the faucet claim".to_owned(),
            }
        }
    }
}

/// Funds the signed-in wallet from the treasury (test networks only: `faucet.enabled`). The
/// grant appears in `GET /wallet/history` as kind `grant`, memo `faucet`.
#[utoipa::path(post, path = "/faucet", tag = "wallet", security(("bearer" = [])),
    responses((status = 200, body = FaucetResponse), (status = 401, description = "token_missing"),
        (status = 403, description = "faucet_disabled, faucet_empty"),
        (status = 429, description = "faucet_wallet_limit, faucet_daily_cap (with Retry-After)"),
        (status = 503, description = "ledger_unavailable")))]
pub(crate) async fn claim(
    State(state): State<Arc<AppState>>,
    caller: SignedIn,
) -> Result<axum::Json<FaucetResponse>> {
    let faucet = &state.node().config().faucet;
    if !faucet.enabled {
        return Err(Error::FaucetDisabled);
    }
    let ledger = state
        .node()
        .ledger()
        .ok_or_else(|| Error::LedgerUnavailable {
            reason: "this node runs without a ledger".to_owned(),
        })?;
    let wallet = LedgerAddress::from_bytes(*caller.wallet.as_bytes());
    let grant = ledger
        .claim_faucet(FaucetClaimRequest {
            key: claim_key(&wallet)?,
            to: wallet,
            amount: faucet.amount_per_claim,
            claims_per_wallet_per_day: faucet.claims_per_wallet_per_day,
            daily_total_max: faucet.daily_total_max,
        })
        .await
        .map_err(|error| refusal(error, &faucet.daily_total_max))?;
    tracing::info!(wallet = %caller.wallet, amount = %faucet.amount_per_claim, tx = %grant.transaction.id, "faucet claim");
    Ok(axum::Json(FaucetResponse {
        wallet: caller.wallet,
        granted: faucet.amount_per_claim.to_string(),
        tx_id: grant.transaction.id.0,
        unit: "BLY".to_owned(),
    }))
}
