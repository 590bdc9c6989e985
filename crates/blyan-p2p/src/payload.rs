//! Payloads between nodes: served as verified ranges from the store's mapped bytes, fetched
//! from several holders at once with every 16 KiB group checked against the header's blake3
//! hash as it arrives ([`crate::transfer`]).
//!
//! A payload of at most [`PAYLOAD_IN_MEMORY_BYTES_MAX`] is fetched into memory and appended
//! with `ChainStore::append`. A larger one (an expert: 10–350 MB) is written straight into a
//! staging file of the store (`ChainStore::stage_payload`), which becomes a payload segment when
//! the block is appended (`append_staged`): never a second copy. A fetch cut short keeps its
//! verified groups on disk and resumes with only the missing ones. A holder that sends a bad
//! group is reported as an offender and banned by the network.

use std::sync::{Arc, Mutex, PoisonError};

use blyan_chain::{BlockHash, BlockHeader, ChainStore, PayloadStage};
use libp2p::PeerId;

use crate::error::{NetworkError, Result};
use crate::network::{NetworkHandle, NetworkStats};
use crate::peers::Offence;
use crate::protocol::PayloadRequest;
use crate::transfer::{
    self, FetchOptions, FetchReport, OUTBOARD_CACHE_BYTES_DEFAULT, OutboardCache, RangeRequest,
    RangeResponse, RangeSink, RangeSource, SinkError, SourceError,
};

/// Payloads up to this size are fetched into memory; larger ones into a staging file.
pub const PAYLOAD_IN_MEMORY_BYTES_MAX: u64 = 8 * 1024 * 1024;

/// Answers payload requests from the store. Cheap to clone.
#[derive(Clone)]
pub(crate) struct PayloadServer {
    chain: Arc<ChainStore>,
    outboards: Arc<OutboardCache>,
}

impl PayloadServer {
    pub(crate) fn new(chain: Arc<ChainStore>) -> Self {
        Self {
            chain,
            outboards: Arc::new(OutboardCache::new(OUTBOARD_CACHE_BYTES_DEFAULT)),
        }
    }

    /// The ranges asked for, or a refusal. A store failure or bytes that do not hash to the
    /// header (corrupted on disk) answer "not held": the asker goes to another holder.
    pub(crate) fn answer(&self, request: PayloadRequest) -> RangeResponse {
        match self.ranges(&request) {
            Ok(response) => response,
            Err(reason) => {
                tracing::warn!(block = %request.block, reason, "cannot serve a payload");
                RangeResponse::not_held()
            }
        }
    }

    fn ranges(&self, request: &PayloadRequest) -> std::result::Result<RangeResponse, String> {
        let Some(header) = self
            .chain
            .header(&request.block)
            .map_err(|error| error.to_string())?
        else {
            return Ok(RangeResponse::not_held());
        };
        if header.payload_hash != request.range.payload {
            return Ok(RangeResponse::not_held());
        }
        let Some(payload) = self
            .chain
            .payload(&request.block)
            .map_err(|error| error.to_string())?
        else {
            return Ok(RangeResponse::not_held());
        };
        // The tree is computed from the stored bytes and checked against the header's hash, so
        // bytes corrupted on disk are never served as if they were the payload.
        let outboard = self
            .outboards
            .get_or_compute(header.payload_hash, payload.as_slice())
            .map_err(|error| error.to_string())?;
        transfer::respond(&request.range, payload.as_slice(), &outboard)
            .map_err(|error| error.to_string())
    }
}

/// A payload fetched and verified, ready to append.
pub(crate) enum FetchedPayload {
    Bytes(Vec<u8>),
    Staged(Box<PayloadStage>),
}

impl FetchedPayload {
    /// Appends `header` with this payload (blocking: run it off the async threads).
    pub(crate) fn append(
        self,
        chain: &ChainStore,
        header: &BlockHeader,
    ) -> blyan_chain::Result<BlockHash> {
        match self {
            FetchedPayload::Bytes(bytes) => chain.append(header, &bytes),
            FetchedPayload::Staged(stage) => chain.append_staged(header, *stage),
        }
    }
}

/// The network as the transfer's source of ranges for one block.
struct Holders<'a> {
    net: &'a NetworkHandle,
    block: BlockHash,
}

impl RangeSource<PeerId> for Holders<'_> {
    async fn request(
        &self,
        holder: &PeerId,
        request: RangeRequest,
    ) -> std::result::Result<RangeResponse, SourceError> {
        let request = PayloadRequest {
            block: self.block,
            range: request,
        };
        self.net
            .payload_request(*holder, request)
            .await
            .map(|response| response.0)
            .map_err(|error| SourceError::Failed {
                reason: error.to_string(),
            })
    }
}

/// An in-memory sink for small payloads.
struct MemorySink(Mutex<Vec<u8>>);

impl RangeSink for MemorySink {
    fn write_at(&self, offset: u64, bytes: &[u8]) -> std::result::Result<(), SinkError> {
        let mut buffer = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let start = offset as usize;
        let end = start + bytes.len();
        if end > buffer.len() {
            return Err(SinkError::new(
                offset,
                bytes.len() as u64,
                format!("past the payload's {} bytes", buffer.len()),
            ));
        }
        buffer[start..end].copy_from_slice(bytes);
        Ok(())
    }
}

/// A store staging file as the transfer's sink.
struct StageSink<'a>(&'a PayloadStage);

impl RangeSink for StageSink<'_> {
    fn write_at(&self, offset: u64, bytes: &[u8]) -> std::result::Result<(), SinkError> {
        self.0
            .write_at(offset, bytes)
            .map_err(|error| SinkError::new(offset, bytes.len() as u64, error))
    }
}

/// Fetches the payload of `block` (whose header is `header`) from `holders`, verified group by
/// group; penalizes every holder caught sending bad bytes.
pub(crate) async fn fetch_payload(
    net: &NetworkHandle,
    chain: &Arc<ChainStore>,
    block: BlockHash,
    header: &BlockHeader,
    holders: &[PeerId],
) -> Result<FetchedPayload> {
    let size = header.payload_bytes;
    if size == 0 {
        return Ok(FetchedPayload::Bytes(Vec::new()));
    }
    let source = Holders { net, block };
    let fetch_error = |reason: String| NetworkError::Fetch { block, reason };
    if size <= PAYLOAD_IN_MEMORY_BYTES_MAX {
        let sink = MemorySink(Mutex::new(vec![0; size as usize]));
        let fetched = transfer::fetch(
            header.payload_hash,
            size,
            std::iter::once(0..size).collect(),
            holders.to_vec(),
            &source,
            &sink,
            FetchOptions::default(),
        )
        .await;
        settle(net, block, &fetched).await;
        fetched.map_err(|failed| fetch_error(failed.error.to_string()))?;
        return Ok(FetchedPayload::Bytes(
            sink.0.into_inner().unwrap_or_else(PoisonError::into_inner),
        ));
    }
    let stage = {
        let chain = Arc::clone(chain);
        let header = header.clone();
        tokio::task::spawn_blocking(move || chain.stage_payload(&header))
            .await
            .map_err(|error| fetch_error(format!("the staging task failed: {error}")))??
    };
    let missing = stage.missing();
    tracing::info!(%block, size, missing_bytes = stage.missing_bytes(), "fetching a payload into the store");
    let fetched = transfer::fetch(
        header.payload_hash,
        size,
        missing,
        holders.to_vec(),
        &source,
        &StageSink(&stage),
        FetchOptions::default(),
    )
    .await;
    settle(net, block, &fetched).await;
    // Keep what was verified, whatever happened: a later fetch resumes from it.
    let stage = tokio::task::spawn_blocking(move || stage.flush().map(|()| stage))
        .await
        .map_err(|error| fetch_error(format!("the flush task failed: {error}")))??;
    fetched.map_err(|failed| fetch_error(failed.error.to_string()))?;
    Ok(FetchedPayload::Staged(Box::new(stage)))
}

/// Counts what a fetch moved and penalizes the holders it caught sending bad bytes.
async fn settle(
    net: &NetworkHandle,
    block: BlockHash,
    fetched: &std::result::Result<FetchReport<PeerId>, transfer::FetchError<PeerId>>,
) {
    let report = match fetched {
        Ok(report) => report,
        Err(failed) => &failed.report,
    };
    NetworkStats::add(&net.stats().payload_bytes_fetched, report.bytes_written);
    // Responses already in flight when a holder is caught may be bad too: one offence per
    // holder per fetch, named by its first bad range.
    let mut caught: Vec<PeerId> = Vec::new();
    for offense in &report.offenses {
        if caught.contains(&offense.holder) {
            continue;
        }
        caught.push(offense.holder);
        NetworkStats::add(&net.stats().bad_ranges, 1);
        net.penalize(
            offense.holder,
            Offence::BadRange,
            format!(
                "payload of {block}: bad bytes at offset {} ({:?})",
                offense.offset, offense.reason
            ),
        )
        .await;
    }
}
