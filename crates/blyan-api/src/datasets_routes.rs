//! The dataset routes (`docs/datasets.md`): contributors submit samples, signed-in wallets vote
//! on them (commit, then reveal), and anyone reads each sample's gate history and the L1
//! worker's progress. A refusal (L0 screen, schema, a vote outside its window, a reveal that
//! does not open its commitment, a stake that cannot be locked) is 422 with the refusal's code.

use std::sync::Arc;

use axum::extract::{Path, State};
use blyan_api_types::{
    DatasetList, DatasetProgressInfo, DatasetSample, DatasetSubmit, DatasetVoteCommit,
    DatasetVoteReveal, DatasetWritten,
};
use blyan_node_core::SampleInput;
use blyan_primitives::BlockHash;
use blyan_quality::{SampleContent, SampleState, VoteVerdict};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::extract::{ApiJson, ApiQuery, SignedIn};
use crate::server::AppState;
use crate::{Error, Result};

/// Samples listed when the query names no `limit`.
const DATASET_PAGE_DEFAULT: u32 = 20;

/// Query of `GET /datasets`.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct DatasetsQuery {
    /// Only samples in this state (`submitted`, `l1_refused`, `voting`, `revealing`, `refused`,
    /// `accepted`, `usable`, `review_refused`); all when absent.
    state: Option<String>,
    /// Samples to pass over (default 0).
    offset: Option<u64>,
    /// Samples in the page, 1 to 100 (default 20).
    limit: Option<u32>,
}

fn block_hash(field: &str, text: &str) -> Result<BlockHash> {
    text.parse().map_err(|_| Error::InvalidRequest {
        field: field.to_owned(),
        reason: "not a block hash (64 hex characters)".to_owned(),
    })
}

/// Submits a sample from the signed-in wallet (its contributor, paid when a certified
/// candidate uses it). The L0 screen runs first; the node signs the block.
#[utoipa::path(post, path = "/datasets", tag = "datasets", security(("bearer" = [])),
    request_body = DatasetSubmit,
    responses((status = 200, body = DatasetWritten), (status = 401, description = "token_missing"),
        (status = 422, description = "the L0 refusal's code: licence, text_too_short, …")))]
pub(crate) async fn submit(
    State(state): State<Arc<AppState>>,
    caller: SignedIn,
    ApiJson(request): ApiJson<DatasetSubmit>,
) -> Result<axum::Json<DatasetWritten>> {
    let content = match (request.text, request.prompt, request.response) {
        (Some(text), None, None) => SampleContent::Text { text },
        (None, Some(prompt), Some(response)) => SampleContent::Pair { prompt, response },
        _ => {
            return Err(Error::InvalidRequest {
                field: "text".to_owned(),
                reason: "give either text, or prompt and response".to_owned(),
            });
        }
    };
    let block = state
        .node()
        .submit_sample(
            caller.wallet,
            SampleInput {
                content,
                licence: request.licence,
                source: request.source,
                language: request.language,
            },
        )
        .await?;
    Ok(axum::Json(DatasetWritten { block }))
}

/// Samples and where they stand, in chain order, paged.
#[utoipa::path(get, path = "/datasets", tag = "datasets", params(DatasetsQuery),
    responses((status = 200, body = DatasetList), (status = 400, description = "invalid_request")))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<DatasetsQuery>,
) -> Result<axum::Json<DatasetList>> {
    let wanted = query
        .state
        .as_deref()
        .map(str::parse::<SampleState>)
        .transpose()
        .map_err(|reason| Error::InvalidRequest {
            field: "state".to_owned(),
            reason,
        })?;
    Ok(axum::Json(
        state
            .node()
            .dataset_list(
                wanted,
                query.offset.unwrap_or(0),
                query.limit.unwrap_or(DATASET_PAGE_DEFAULT),
            )
            .await?,
    ))
}

/// The L1 worker: samples scored, waiting, and samples per state.
#[utoipa::path(get, path = "/datasets/progress", tag = "datasets",
    responses((status = 200, body = DatasetProgressInfo)))]
pub(crate) async fn progress(
    State(state): State<Arc<AppState>>,
) -> Result<axum::Json<DatasetProgressInfo>> {
    Ok(axum::Json(state.node().dataset_progress_info().await?))
}

/// One sample, its votes and its gate history.
#[utoipa::path(get, path = "/datasets/{hash}", tag = "datasets",
    params(("hash" = String, Path, description = "The sample's block hash (hex)")),
    responses((status = 200, body = DatasetSample), (status = 404, description = "block_not_found")))]
pub(crate) async fn sample(
    State(state): State<Arc<AppState>>,
    Path(hash): Path<String>,
) -> Result<axum::Json<DatasetSample>> {
    let block = block_hash("hash", &hash)?;
    state
        .node()
        .dataset_sample(block)
        .await?
        .map(axum::Json)
        .ok_or(Error::BlockNotFound { hash })
}

/// Commits the signed-in wallet's hidden vote on a sample in its commit window, locking the
/// stake (given back at the tally when revealed, burned when not).
#[utoipa::path(post, path = "/datasets/{hash}/commit", tag = "datasets", security(("bearer" = [])),
    params(("hash" = String, Path, description = "The sample's block hash (hex)")),
    request_body = DatasetVoteCommit,
    responses((status = 200, body = DatasetWritten), (status = 401, description = "token_missing"),
        (status = 422, description = "wrong_state, own_sample, already_voted, stake_too_low, stake_unpaid, commitment")))]
pub(crate) async fn commit(
    State(state): State<Arc<AppState>>,
    caller: SignedIn,
    Path(hash): Path<String>,
    ApiJson(request): ApiJson<DatasetVoteCommit>,
) -> Result<axum::Json<DatasetWritten>> {
    let sample = block_hash("hash", &hash)?;
    let block = state
        .node()
        .commit_vote(caller.wallet, sample, request.commitment, request.stake)
        .await?;
    Ok(axum::Json(DatasetWritten { block }))
}

/// Reveals the signed-in wallet's vote in the reveal window.
#[utoipa::path(post, path = "/datasets/reveal", tag = "datasets", security(("bearer" = [])),
    request_body = DatasetVoteReveal,
    responses((status = 200, body = DatasetWritten), (status = 401, description = "token_missing"),
        (status = 422, description = "reveal_mismatch, wrong_state, unknown_commit, not_the_voter, already_revealed, salt")))]
pub(crate) async fn reveal(
    State(state): State<Arc<AppState>>,
    caller: SignedIn,
    ApiJson(request): ApiJson<DatasetVoteReveal>,
) -> Result<axum::Json<DatasetWritten>> {
    let verdict = match request.verdict.as_str() {
        "accept" => VoteVerdict::Accept,
        "refuse" => VoteVerdict::Refuse,
        other => {
            return Err(Error::InvalidRequest {
                field: "verdict".to_owned(),
                reason: format!("{other:?} is neither \"accept\" nor \"refuse\""),
            });
        }
    };
    let block = state
        .node()
        .reveal_vote(caller.wallet, request.commit, verdict, request.salt)
        .await?;
    Ok(axum::Json(DatasetWritten { block }))
}
