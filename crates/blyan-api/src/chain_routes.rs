//! The chain explorer and block submission: pages of headers per chain, one header as JSON, a
//! payload's raw bytes, and `POST /blocks` for a signed block in its wire form.
//!
//! Store calls (RocksDB reads, hashing, fsync on append) run on blocking threads. A payload is
//! answered straight from its mapped segment: the response body owns the [`PayloadHandle`], so
//! no byte of it is copied into an intermediate buffer. A submitted block is streamed in a
//! `submit_block` span carrying its hash: its header read and checked first
//! (`blyan_node_core::Node::begin_upload`), under the bounds of [`crate::uploads`] (a permit,
//! the author's quota, the body's idle timeout), then its payload written as it arrives and the
//! block appended with the model's reaction (`blyan_node_core::Node::finish_upload`). No upload
//! is buffered whole: a payload larger than `blyan_node_core::UPLOAD_MEMORY_BYTES_MAX` goes to a
//! staging file that the store adopts as a segment.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use blyan_api_types::{BlocksPage, ChainSummary, ExpertVersionInfo, SubmittedBlock};
use blyan_chain::{
    BLOCKS_PAGE_COUNT_MAX, BlockHash, ChainId, ChainStore, DEPENDENTS_PAGE_COUNT_MAX, ExpertName,
    PayloadHandle,
};
use blyan_node_core::WireHeaderReader;
use serde::Deserialize;
use tracing::Instrument as _;
use utoipa::IntoParams;

use crate::extract::ApiQuery;
use crate::server::AppState;
use crate::{Error, Result};

/// Dependents per `GET /blocks/{hash}` page when the request does not say.
pub const DEPENDENTS_PAGE_COUNT_DEFAULT: u32 = 100;

const _: () = assert!(
    DEPENDENTS_PAGE_COUNT_DEFAULT <= DEPENDENTS_PAGE_COUNT_MAX,
    "the default page must be one the store serves"
);

/// Headers per explorer page when the request does not say.
pub const BLOCKS_PAGE_COUNT_DEFAULT: u32 = 50;

const _: () = assert!(
    BLOCKS_PAGE_COUNT_DEFAULT <= BLOCKS_PAGE_COUNT_MAX,
    "the default page must be one the store serves"
);

/// Query of `GET /chain/{chain}/blocks`.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct BlocksQuery {
    /// First height of the page (default 0).
    from: Option<u64>,
    /// Headers in the page, 1 to 1000 (default 50).
    limit: Option<u32>,
}

fn store(state: &AppState) -> Result<Arc<ChainStore>> {
    state.node().chain().cloned().ok_or(Error::ChainUnavailable)
}

fn store_failed(error: blyan_chain::Error) -> Error {
    tracing::error!(%error, "chain store failed");
    Error::ChainFailed
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| Error::Internal {
            reason: format!("chain task failed: {error}"),
        })?
}

fn parse_chain(text: &str) -> Result<ChainId> {
    ChainId::parse(text).map_err(|error| Error::InvalidRequest {
        field: "chain".to_owned(),
        reason: error.to_string(),
    })
}

fn parse_hash(text: &str) -> Result<BlockHash> {
    BlockHash::parse(text).map_err(|error| Error::InvalidRequest {
        field: "hash".to_owned(),
        reason: error.to_string(),
    })
}

/// A header as the explorer shows it: its fields plus `hash`.
fn header_json(hash: BlockHash, header: &blyan_chain::BlockHeader) -> serde_json::Value {
    let mut value = serde_json::to_value(header).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "hash".to_owned(),
            serde_json::Value::String(hash.to_string()),
        );
    }
    value
}

/// Headers of one chain from a height upwards.
#[utoipa::path(get, path = "/chain/{chain}/blocks", tag = "chain",
    params(("chain" = String, Path, description = "A (meta), B (parameters) or D (dataset)"), BlocksQuery),
    responses((status = 200, body = BlocksPage),
        (status = 400, description = "invalid_request (unknown chain, limit out of range)"),
        (status = 503, description = "chain_unavailable")))]
pub(crate) async fn blocks(
    State(state): State<Arc<AppState>>,
    Path(chain): Path<String>,
    ApiQuery(query): ApiQuery<BlocksQuery>,
) -> Result<axum::Json<BlocksPage>> {
    let chain = parse_chain(&chain)?;
    let limit = query.limit.unwrap_or(BLOCKS_PAGE_COUNT_DEFAULT);
    if !(1..=BLOCKS_PAGE_COUNT_MAX).contains(&limit) {
        return Err(Error::InvalidRequest {
            field: "limit".to_owned(),
            reason: format!("must be within 1..={BLOCKS_PAGE_COUNT_MAX}"),
        });
    }
    let from = query.from.unwrap_or(0);
    let store = store(&state)?;
    let (page, tip) = blocking(move || {
        let page = store.blocks(chain, from, limit).map_err(store_failed)?;
        Ok((page, store.tip(chain).height))
    })
    .await?;
    let next = page
        .last()
        .map(|last| last.header.height + 1)
        .filter(|next| *next <= tip);
    Ok(axum::Json(BlocksPage {
        chain: chain.to_string(),
        blocks: page
            .iter()
            .map(|sealed| header_json(sealed.hash, &sealed.header))
            .collect(),
        next,
    }))
}

/// One chain's summary: its tip, size, fork rule and what a new block must satisfy.
#[utoipa::path(get, path = "/chain/{chain}", tag = "chain",
    params(("chain" = String, Path, description = "A (meta), B (parameters) or D (dataset)")),
    responses((status = 200, body = ChainSummary),
        (status = 400, description = "invalid_request (unknown chain)"),
        (status = 503, description = "chain_unavailable")))]
pub(crate) async fn chain_summary(
    State(state): State<Arc<AppState>>,
    Path(chain): Path<String>,
) -> Result<axum::Json<ChainSummary>> {
    let chain = parse_chain(&chain)?;
    let store = store(&state)?;
    let info = store.chain_info(chain);
    let config = store.config();
    Ok(axum::Json(ChainSummary {
        chain: chain.to_string(),
        genesis: info.genesis,
        tip_height: info.tip.height,
        tip_hash: info.tip.hash,
        blocks: info.blocks,
        payload_bytes: info.payload_bytes,
        fork_rule: match info.fork_rule {
            blyan_chain::ForkRule::AllowForks => "allow_forks",
            _ => "linear",
        }
        .to_owned(),
        pow_difficulty_bits: config.pow_difficulty_bits,
        payload_bytes_max: config.payload_bytes_max,
    }))
}

/// An expert's current version on the parameters chain, whichever model it belongs to.
#[utoipa::path(get, path = "/chain/experts/{id}", tag = "chain",
    params(("id" = String, Path, description = "layer{L}.expert{E}")),
    responses((status = 200, body = ExpertVersionInfo),
        (status = 400, description = "invalid_request (malformed id)"),
        (status = 404, description = "unknown_expert: no version on the chain"),
        (status = 503, description = "chain_unavailable")))]
pub(crate) async fn expert_version(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<axum::Json<ExpertVersionInfo>> {
    let expert = ExpertName::parse(&id).map_err(|error| Error::InvalidRequest {
        field: "id".to_owned(),
        reason: error.to_string(),
    })?;
    let store = store(&state)?;
    let version = blocking(move || store.expert_current(expert).map_err(store_failed)).await?;
    let version = version.ok_or_else(|| Error::UnknownExpert {
        id: expert.to_string(),
    })?;
    Ok(axum::Json(ExpertVersionInfo {
        expert: version.expert,
        version: version.version,
        block: version.hash,
    }))
}

/// Query of `GET /blocks/{hash}`: the page of dependents.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct BlockQuery {
    /// Dependents in the page, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// The page starts after this dependent's hash (the previous page's `dependents_next`).
    after: Option<String>,
}

/// One block's header as JSON, with a page of the blocks that refer to it (in hash order;
/// `dependents_next` is the `after` of the next page, `null` on the last).
#[utoipa::path(get, path = "/blocks/{hash}", tag = "chain",
    params(("hash" = String, Path, description = "The block hash, 64 hex digits"), BlockQuery),
    responses((status = 200, description = "The header's fields, `hash`, `dependents` and `dependents_next`"),
        (status = 400, description = "invalid_request"), (status = 404, description = "block_not_found")))]
pub(crate) async fn block(
    State(state): State<Arc<AppState>>,
    Path(hash): Path<String>,
    ApiQuery(query): ApiQuery<BlockQuery>,
) -> Result<axum::Json<serde_json::Value>> {
    let hash = parse_hash(&hash)?;
    let limit = query.limit.unwrap_or(DEPENDENTS_PAGE_COUNT_DEFAULT);
    if !(1..=DEPENDENTS_PAGE_COUNT_MAX).contains(&limit) {
        return Err(Error::InvalidRequest {
            field: "limit".to_owned(),
            reason: format!("must be within 1..={DEPENDENTS_PAGE_COUNT_MAX}"),
        });
    }
    let after = query
        .after
        .as_deref()
        .map(|after| {
            BlockHash::parse(after).map_err(|error| Error::InvalidRequest {
                field: "after".to_owned(),
                reason: error.to_string(),
            })
        })
        .transpose()?;
    let store = store(&state)?;
    let (header, dependents) = blocking(move || {
        let header = store.header(&hash).map_err(store_failed)?;
        let dependents = match header {
            Some(_) => store
                .dependents_page(&hash, after.as_ref(), limit)
                .map_err(store_failed)?,
            None => Vec::new(),
        };
        Ok((header, dependents))
    })
    .await?;
    let header = header.ok_or_else(|| Error::BlockNotFound {
        hash: hash.to_string(),
    })?;
    // A full page may have a successor; a shorter one is the last.
    let next = dependents
        .last()
        .filter(|_| dependents.len() == limit as usize)
        .map(|last| last.block.to_string());
    let mut value = header_json(hash, &header);
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "dependents".to_owned(),
            serde_json::to_value(&dependents).unwrap_or_default(),
        );
        object.insert("dependents_next".to_owned(), serde_json::json!(next));
    }
    Ok(axum::Json(value))
}

/// A block's payload, raw.
#[utoipa::path(get, path = "/blocks/{hash}/payload", tag = "chain",
    params(("hash" = String, Path, description = "The block hash, 64 hex digits")),
    responses((status = 200, description = "The payload bytes", content_type = "application/octet-stream"),
        (status = 400, description = "invalid_request"), (status = 404, description = "block_not_found")))]
pub(crate) async fn payload(
    State(state): State<Arc<AppState>>,
    Path(hash): Path<String>,
) -> Result<Response> {
    let hash = parse_hash(&hash)?;
    let store = store(&state)?;
    let handle: Option<PayloadHandle> =
        blocking(move || store.payload(&hash).map_err(store_failed)).await?;
    let handle = handle.ok_or_else(|| Error::BlockNotFound {
        hash: hash.to_string(),
    })?;
    let length = handle.len();
    // The body owns the mapping: hyper writes straight from the mapped segment.
    let mut response = Body::from(Bytes::from_owner(handle)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    Ok(response)
}

/// Appends a signed block sent in its wire form (`hash ‖ header length (u32 LE) ‖ header ‖
/// payload`, as `blyan_chain::encode_block` writes it), streamed: the header is read and
/// checked (signature, limits, links) before any payload byte is taken, then the payload goes
/// into the store as it arrives.
#[utoipa::path(post, path = "/blocks", tag = "chain",
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "An encoded block"),
    responses((status = 201, body = SubmittedBlock),
        (status = 400, description = "upload_truncated, upload_overrun, upload_interrupted: the body is not the block its header announced"),
        (status = 408, description = "upload_timeout: the body sent nothing for api.uploads.body_idle_timeout_seconds"),
        (status = 409, description = "block_exists, block_fork, block_expert_version_mismatch, upload_in_progress"),
        (status = 422, description = "block_* : the validation rule the block breaks"),
        (status = 429, description = "upload_quota_exceeded: the author's hourly bytes are used up (Retry-After)"),
        (status = 503, description = "chain_unavailable, uploads_busy (Retry-After)")))]
pub(crate) async fn submit(
    State(state): State<Arc<AppState>>,
    body: Body,
) -> Result<(StatusCode, axum::Json<SubmittedBlock>)> {
    let span = tracing::info_span!("submit_block", block = tracing::field::Empty);
    let hash = upload(&state, body, &span).instrument(span.clone()).await?;
    Ok((StatusCode::CREATED, axum::Json(SubmittedBlock { hash })))
}

/// The body of a `POST /blocks`, read piece by piece (the server cuts it when it idles).
struct UploadBody {
    frames: axum::body::BodyDataStream,
    received_bytes: u64,
}

impl UploadBody {
    /// The next piece of the body; `None` at its end.
    async fn next(&mut self, state: &AppState) -> Result<Option<Bytes>> {
        use futures::StreamExt as _;
        match self.frames.next().await {
            None => Ok(None),
            Some(Err(error)) if timed_out(&error) => Err(Error::UploadIdle {
                idle_seconds: state.config().api.server.body_idle_timeout_seconds,
                received_bytes: self.received_bytes,
            }),
            Some(Err(error)) => Err(Error::UploadInterrupted {
                received_bytes: self.received_bytes,
                reason: error.to_string(),
            }),
            Some(Ok(frame)) => {
                self.received_bytes += frame.len() as u64;
                Ok(Some(frame))
            }
        }
    }
}

/// Whether a body error is the server's idle timeout.
fn timed_out(error: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Reads the header, takes an upload permit, checks the header and charges the author's quota,
/// then streams the payload into the node; returns the appended block's hash.
async fn upload(state: &AppState, body: Body, span: &tracing::Span) -> Result<BlockHash> {
    let limits = &state.uploads;
    let mut body = UploadBody {
        frames: body.into_data_stream(),
        received_bytes: 0,
    };
    let mut reader = WireHeaderReader::new();
    let (header, first) = loop {
        let frame = body.next(state).await?.ok_or_else(|| reader.ended())?;
        if let Some((header, used)) = reader.push(&frame)? {
            break (header, frame.slice(used..));
        }
    };
    span.record("block", tracing::field::display(header.hash()));
    let _permit = limits.permit()?;
    let node = state.node();
    let mut upload = node.begin_upload(header).await?;
    let header = upload.header();
    if let Err(error) = limits.charge(header.author, header.payload_bytes) {
        upload.discard().await;
        return Err(error);
    }
    let mut frame = first;
    loop {
        if let Err(error) = upload.write(&frame).await {
            upload.discard().await;
            return Err(error.into());
        }
        frame = match body.next(state).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(error) => {
                upload.discard().await;
                return Err(error);
            }
        };
    }
    let (hash, _) = node.finish_upload(upload).await?;
    Ok(hash)
}
