//! Read endpoints: experts with versions, use counts and cache state; Proof-of-Learning status;
//! the background learner's progress; the signed-in wallet's balance and history.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use blyan_api_types::{
    BalanceResponse, CacheInfo, ChatLimits, ExpertInfo, ExpertsResponse, HistoryEntry,
    HistoryResponse, LearningStatus, ModelStatus, ModelSummary, NetworkPeers, PolClaimDetail,
    PolStatus,
};
use blyan_chain::ExpertVersion;
use blyan_ledger::{
    AccountId, Address as LedgerAddress, EntryId, HISTORY_PAGE_LEN_MAX, HistoryQuery, Ledger as _,
};
use blyan_node_core::model_label;
use blyan_primitives::Address;
use blyan_primitives::BlockHash;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::extract::{ApiQuery, SignedIn};
use crate::server::AppState;
use crate::{Error, Result};

/// The newest model on the chain, and the one served.
#[utoipa::path(get, path = "/model", tag = "node",
    responses((status = 200, body = ModelStatus), (status = 503, description = "chain_unavailable")))]
pub(crate) async fn model(State(state): State<Arc<AppState>>) -> Result<axum::Json<ModelStatus>> {
    let newest = state.node().newest_model_on_chain().await?;
    // Cached by the node until the next append: no meta payload is read per request.
    let chain = newest.map(|(block, document)| ModelSummary {
        meta_block: block,
        model: model_label(document.untrained).to_owned(),
        description: document.description.clone(),
    });
    let serving = state.node().generator().and_then(|generator| {
        let info = generator.info();
        info.meta_block.map(|block| ModelSummary {
            meta_block: block,
            model: model_label(info.untrained).to_owned(),
            description: info.description.clone(),
        })
    });
    let limits = state.node().generator().map(|generator| ChatLimits {
        context_tokens_max: state.node().context_tokens_max(&generator),
        completion_tokens_default: blyan_node_core::CHAT_COMPLETION_TOKENS_DEFAULT,
        free_tier_completion_tokens_max: state.config().api.free_tier.completion_tokens_max,
    });
    Ok(axum::Json(ModelStatus {
        chain,
        serving,
        limits,
    }))
}

fn experts_of(state: &AppState, versions: &[ExpertVersion]) -> Result<ExpertsResponse> {
    let node = state.node();
    let generator = node.generator().ok_or(Error::ModelUnavailable)?;
    let info = generator.info();
    let versions: HashMap<(u32, u32), &ExpertVersion> = versions
        .iter()
        .map(|version| {
            let expert = version.expert;
            ((expert.layer(), expert.expert()), version)
        })
        .collect();
    let resident = generator
        .with_model(|model| model.expert_cache().resident())
        .map_err(|error| Error::Generation {
            reason: error.to_string(),
        })?;
    let uses = node.expert_uses();
    let mut experts = Vec::new();
    for layer in 0..info.config.num_hidden_layers {
        for expert in 0..info.config.num_local_experts {
            let id = format!("layer{layer}.expert{expert}");
            let version = versions.get(&(layer, expert));
            experts.push(ExpertInfo {
                version: version.map(|v| v.version),
                block: version.map(|v| v.hash),
                uses: uses
                    .get(layer as usize)
                    .and_then(|row| row.get(expert as usize))
                    .copied()
                    .unwrap_or(0),
                cached: resident
                    .iter()
                    .any(|r| r.layer() == layer && r.expert() == expert),
                id,
                layer,
                expert,
            });
        }
    }
    let stats = generator.cache_stats();
    Ok(ExpertsResponse {
        model: model_label(info.untrained).to_owned(),
        source: info.description.clone(),
        experts,
        cache: CacheInfo {
            hits: stats.hits,
            misses: stats.misses,
            hit_rate: stats.hit_rate(),
            evictions: stats.evictions,
            resident_bytes: stats.bytes_resident,
            capacity_bytes: stats.expert_bytes_max,
        },
    })
}

/// The served model's experts: versions on chain, use counts, cache state.
#[utoipa::path(get, path = "/experts", tag = "experts",
    responses((status = 200, body = ExpertsResponse), (status = 503, description = "model_unavailable")))]
pub(crate) async fn experts(
    State(state): State<Arc<AppState>>,
) -> Result<axum::Json<ExpertsResponse>> {
    Ok(axum::Json(list_experts(state).await?))
}

/// [`experts_of`] off the async runtime (listing resident experts waits for the model between
/// two forward passes), with the versions the node keeps until the next append: no request
/// scans the expert heads.
async fn list_experts(state: Arc<AppState>) -> Result<ExpertsResponse> {
    let versions = match state.node().chain() {
        Some(_) => state.node().expert_versions().await?,
        None => Arc::new(Vec::new()),
    };
    tokio::task::spawn_blocking(move || experts_of(&state, &versions))
        .await
        .map_err(|error| Error::Generation {
            reason: error.to_string(),
        })?
}

/// One expert by id (`layer{L}.expert{E}`).
#[utoipa::path(get, path = "/experts/{id}", tag = "experts",
    params(("id" = String, Path, description = "layer{L}.expert{E}")),
    responses((status = 200, body = ExpertInfo), (status = 404, description = "unknown_expert")))]
pub(crate) async fn expert(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<axum::Json<ExpertInfo>> {
    list_experts(state)
        .await?
        .experts
        .into_iter()
        .find(|expert| expert.id == id)
        .map(axum::Json)
        .ok_or(Error::UnknownExpert {
            id: id.chars().take(64).collect(),
        })
}

/// Proof-of-Learning status.
/// Proof-of-Learning: the mode, threshold, evaluation and validator set, and every claim with
/// its candidates, beacon, votes, certificate and the payments it made, newest first.
#[utoipa::path(get, path = "/pol/status", tag = "experts",
    responses((status = 200, body = PolStatus), (status = 503, description = "chain_unavailable")))]
pub(crate) async fn pol_status(
    State(state): State<Arc<AppState>>,
) -> Result<axum::Json<PolStatus>> {
    Ok(axum::Json(state.node().pol_status().await?))
}

/// The node's place in the network: its peer id and addresses, counters, and every peer it met
/// (round trip, traffic, offences, bans). `enabled: false` when the node runs no network.
#[utoipa::path(get, path = "/p2p/peers", tag = "network", responses((status = 200, body = NetworkPeers)))]
pub(crate) async fn p2p_peers(
    State(state): State<Arc<AppState>>,
) -> Result<axum::Json<NetworkPeers>> {
    Ok(axum::Json(state.node().network_peers().await?))
}

/// Remote experts: what this node serves, the holders of the experts it calls, per-peer
/// latency and failures, failovers and hedges (`blyan_p2p::ExpertsSnapshot`). 503
/// `network_unavailable` when the node runs no network.
#[utoipa::path(get, path = "/p2p/experts", tag = "network",
    responses((status = 200, description = "blyan_p2p::ExpertsSnapshot as JSON"), (status = 503, description = "network_unavailable")))]
pub(crate) async fn p2p_experts(
    State(state): State<Arc<AppState>>,
) -> Result<axum::Json<serde_json::Value>> {
    let snapshot = state
        .node()
        .network_experts()
        .ok_or(Error::NetworkUnavailable)?;
    serde_json::to_value(snapshot)
        .map(axum::Json)
        .map_err(|error| Error::Internal {
            reason: error.to_string(),
        })
}

/// One claim, and the served model a validator evaluates it against (what
/// `blyan-validator run` reads).
#[utoipa::path(get, path = "/pol/claims/{hash}", tag = "experts",
    params(("hash" = String, Path, description = "The claim's block hash (hex)")),
    responses((status = 200, body = PolClaimDetail), (status = 404, description = "block_not_found")))]
pub(crate) async fn pol_claim(
    State(state): State<Arc<AppState>>,
    Path(hash): Path<String>,
) -> Result<axum::Json<PolClaimDetail>> {
    let block: BlockHash = hash.parse().map_err(|_| Error::InvalidRequest {
        field: "hash".to_owned(),
        reason: "not a block hash (64 hex characters)".to_owned(),
    })?;
    state
        .node()
        .pol_claim(block)
        .await?
        .map(axum::Json)
        .ok_or(Error::BlockNotFound { hash })
}

/// The background learner: its state, steps, tokens, the loss curve, per-expert usage shares,
/// the served weights' baseline and the last candidate. `enabled: false` when learning is off.
#[utoipa::path(get, path = "/learning", tag = "experts", responses((status = 200, body = LearningStatus)))]
pub(crate) async fn learning(State(state): State<Arc<AppState>>) -> axum::Json<LearningStatus> {
    axum::Json(state.node().learning_status())
}

fn ledger_account(wallet: &Address) -> AccountId {
    AccountId::User(LedgerAddress::from_bytes(*wallet.as_bytes()))
}

fn ledger_read_error(error: blyan_ledger::LedgerError) -> Error {
    tracing::error!(%error, "ledger read failed");
    Error::LedgerUnavailable {
        reason: "cannot read the ledger".to_owned(),
    }
}

/// The signed-in wallet's balance.
#[utoipa::path(get, path = "/wallet/balance", tag = "wallet", security(("bearer" = [])),
    responses((status = 200, body = BalanceResponse), (status = 401, description = "token_missing"),
        (status = 503, description = "ledger_unavailable")))]
pub(crate) async fn balance(
    State(state): State<Arc<AppState>>,
    caller: SignedIn,
) -> Result<axum::Json<BalanceResponse>> {
    let ledger = state
        .node()
        .ledger()
        .ok_or_else(|| Error::LedgerUnavailable {
            reason: "this node runs without a ledger".to_owned(),
        })?;
    let balance = ledger
        .balance(ledger_account(&caller.wallet))
        .await
        .map_err(ledger_read_error)?;
    Ok(axum::Json(BalanceResponse {
        wallet: caller.wallet,
        available: balance.available.to_string(),
        held: balance.held.to_string(),
        unit: "BLY".to_owned(),
    }))
}

/// Query of `GET /wallet/history`.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct HistoryParams {
    /// Entries older than this entry id (the `next` of the previous page).
    before: Option<u64>,
    /// Page length, 1 to 500 (default 50).
    limit: Option<u32>,
}

fn json_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// The signed-in wallet's ledger entries, newest first.
#[utoipa::path(get, path = "/wallet/history", tag = "wallet", security(("bearer" = [])), params(HistoryParams),
    responses((status = 200, body = HistoryResponse), (status = 401, description = "token_missing"),
        (status = 400, description = "invalid_request")))]
pub(crate) async fn history(
    State(state): State<Arc<AppState>>,
    caller: SignedIn,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> Result<axum::Json<HistoryResponse>> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=HISTORY_PAGE_LEN_MAX).contains(&limit) {
        return Err(Error::InvalidRequest {
            field: "limit".to_owned(),
            reason: format!("must be within 1..={HISTORY_PAGE_LEN_MAX}"),
        });
    }
    let ledger = state
        .node()
        .ledger()
        .ok_or_else(|| Error::LedgerUnavailable {
            reason: "this node runs without a ledger".to_owned(),
        })?;
    let page = ledger
        .history(
            ledger_account(&caller.wallet),
            HistoryQuery {
                before: params.before.map(EntryId),
                limit,
            },
        )
        .await
        .map_err(ledger_read_error)?;
    Ok(axum::Json(HistoryResponse {
        items: page
            .items
            .iter()
            .map(|item| HistoryEntry {
                entry_id: item.entry_id.0,
                kind: json_name(&item.kind),
                direction: json_name(&item.direction),
                amount: item.amount.to_string(),
                memo: item.memo.clone(),
                created_at_ms: item.created_at_ms,
            })
            .collect(),
        next: page.next.map(|next| next.0),
    }))
}
