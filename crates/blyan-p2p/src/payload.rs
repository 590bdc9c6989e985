//! Payload transfer between nodes (interim whole-payload form; replaced by verified ranges).

use std::sync::Arc;

use blyan_chain::{BlockHash, BlockHeader, ChainStore};
use libp2p::PeerId;

use crate::error::{NetworkError, Result};
use crate::network::{NetworkHandle, NetworkStats};
use crate::peers::Offence;
use crate::protocol::{PayloadRequest, PayloadResponse};

#[derive(Clone)]
pub(crate) struct PayloadServer {
    chain: Arc<ChainStore>,
}

impl PayloadServer {
    pub(crate) fn new(chain: Arc<ChainStore>) -> Self {
        Self { chain }
    }

    pub(crate) fn answer(&self, request: PayloadRequest) -> PayloadResponse {
        match self.chain.payload_verified(&request.block) {
            Ok(Some(payload)) => PayloadResponse::Ranges(payload.as_slice().to_vec()),
            Ok(None) => PayloadResponse::NotHeld,
            Err(error) => PayloadResponse::Refused(error.to_string()),
        }
    }
}

/// A payload fetched and verified, ready to append.
pub(crate) enum FetchedPayload {
    Bytes(Vec<u8>),
}

impl FetchedPayload {
    pub(crate) fn append(
        &self,
        chain: &ChainStore,
        header: &BlockHeader,
    ) -> blyan_chain::Result<BlockHash> {
        match self {
            FetchedPayload::Bytes(bytes) => chain.append(header, bytes),
        }
    }
}

pub(crate) async fn fetch_payload(
    net: &NetworkHandle,
    block: BlockHash,
    header: &BlockHeader,
    holders: &[PeerId],
) -> Result<FetchedPayload> {
    let mut failures = Vec::new();
    for holder in holders {
        let request = PayloadRequest {
            block,
            ranges: Vec::new(),
        };
        match net.payload_request(*holder, request).await {
            Ok(PayloadResponse::Ranges(bytes)) => {
                if bytes.len() as u64 == header.payload_bytes
                    && blyan_chain::hash_payload(&bytes) == header.payload_hash
                {
                    NetworkStats::add(&net.stats().payload_bytes_fetched, bytes.len() as u64);
                    return Ok(FetchedPayload::Bytes(bytes));
                }
                NetworkStats::add(&net.stats().bad_ranges, 1);
                net.penalize(
                    *holder,
                    Offence::BadRange,
                    format!("bad payload of {block}"),
                )
                .await;
                failures.push(format!("{holder}: bad bytes"));
            }
            Ok(PayloadResponse::NotHeld) => failures.push(format!("{holder}: not held")),
            Ok(PayloadResponse::Refused(reason)) => failures.push(format!("{holder}: {reason}")),
            Err(error) => failures.push(error.to_string()),
        }
    }
    Err(NetworkError::Fetch {
        block,
        reason: failures.join("; "),
    })
}
