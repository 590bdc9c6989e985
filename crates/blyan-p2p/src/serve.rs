//! Answers to peers' requests, read from the chain store (run on blocking threads: every
//! answer is RocksDB reads, and a payload answer hashes and encodes megabytes).

use std::sync::Arc;

use blyan_chain::{ChainId, ChainStore};

use crate::protocol::{
    ChainStatus, HEADERS_PER_RESPONSE_MAX, PayloadRequest, PayloadResponse, SyncRequest,
    SyncResponse, WireTip, genesis_hashes,
};

/// Reads what peers ask for. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Server {
    chain: Arc<ChainStore>,
    payloads: crate::payload::PayloadServer,
}

impl Server {
    pub(crate) fn new(chain: Arc<ChainStore>) -> Self {
        Self {
            payloads: crate::payload::PayloadServer::new(Arc::clone(&chain)),
            chain,
        }
    }

    pub(crate) fn answer_sync(&self, request: SyncRequest) -> SyncResponse {
        match self.sync(request) {
            Ok(response) => response,
            Err(error) => {
                tracing::error!(%error, "cannot answer a sync request");
                SyncResponse::Refused(format!("the store failed: {error}"))
            }
        }
    }

    fn sync(&self, request: SyncRequest) -> blyan_chain::Result<SyncResponse> {
        Ok(match request {
            SyncRequest::Status => SyncResponse::Status(self.status()),
            SyncRequest::Headers { blocks } => {
                if blocks.len() > HEADERS_PER_RESPONSE_MAX as usize {
                    return Ok(SyncResponse::Refused(format!(
                        "{} headers asked, at most {HEADERS_PER_RESPONSE_MAX} per request",
                        blocks.len()
                    )));
                }
                let mut headers = Vec::with_capacity(blocks.len());
                for block in blocks {
                    if let Some(header) = self.chain.header(&block)? {
                        headers.push(header.encode());
                    }
                }
                SyncResponse::Headers(headers)
            }
            SyncRequest::Ancestors { from, max } => {
                let max = max.min(HEADERS_PER_RESPONSE_MAX);
                let mut headers = Vec::new();
                let mut next = Some(from);
                while let Some(block) = next {
                    if headers.len() >= max as usize {
                        break;
                    }
                    let Some(header) = self.chain.header(&block)? else {
                        break;
                    };
                    next = header.prev_hash;
                    headers.push(header.encode());
                }
                SyncResponse::Headers(headers)
            }
        })
    }

    /// This node's genesis blocks and tips.
    pub(crate) fn status(&self) -> ChainStatus {
        ChainStatus {
            genesis: genesis_hashes(&self.chain),
            tips: ChainId::ALL
                .iter()
                .map(|chain| {
                    let tip = self.chain.tip(*chain);
                    WireTip {
                        chain: chain.letter(),
                        height: tip.height,
                        hash: tip.hash,
                    }
                })
                .collect(),
            blocks: self.chain.block_count(),
        }
    }

    pub(crate) fn answer_payload(&self, request: PayloadRequest) -> PayloadResponse {
        PayloadResponse(self.payloads.answer(request))
    }
}
