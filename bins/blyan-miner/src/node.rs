//! `upload --node URL`: a running node's chain, over its HTTP API, as a [`PublishTarget`].
//!
//! Reads go through the node's chain endpoints (`GET /chain/{chain}`, `GET /blocks/{hash}`,
//! `GET /blocks/{hash}/payload`, `GET /chain/experts/{id}`, `GET /model`); blocks are signed
//! here and sent in their wire form to `POST /blocks`. Nothing the node answers is taken on
//! faith where it can be checked: a header must hash to the hash asked for, and a model
//! document must hash to its header's payload hash. The answers' shapes are the server's own
//! (`blyan-api-types`), so a field the node renames breaks this client at compile time.

use std::time::Duration;

use blyan_api_types::{ChainSummary, ErrorBody, ExpertVersionInfo, ModelStatus, SubmittedBlock};
use blyan_chain::{
    BlockHash, BlockHeader, ChainId, ChainTip, ExpertName, ExpertVersion, encode_block,
    hash_payload,
};
use blyan_moe::{MODEL_DOCUMENT_BYTES_MAX, ModelDocument, MoeError, PublishTarget};
use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};

/// How long one request may take; a block upload of a few hundred megabytes fits well within.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// How long connecting to the node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request to the node failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The request could not be made or its answer not read.
    #[error("{url}: {source}")]
    Http {
        /// The URL asked.
        url: String,
        /// What the HTTP client reported.
        source: reqwest::Error,
    },
    /// The node answered with an error (its `{"error": {"code", "message"}}` body).
    #[error("{url}: the node answered {status} {code}: {message}")]
    Refused {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The API's stable error code (`block_bad_signature`, …).
        code: String,
        /// The node's explanation.
        message: String,
    },
    /// The node's answer is not what its API promises, or fails a check.
    #[error("{url}: {reason}")]
    BadAnswer {
        /// The URL asked.
        url: String,
        /// What is wrong with the answer.
        reason: String,
    },
}

impl From<NodeError> for MoeError {
    fn from(error: NodeError) -> Self {
        MoeError::Target(Box::new(error))
    }
}

/// A node's chain as a publishing target.
#[derive(Debug)]
pub(crate) struct NodeTarget {
    base: String,
    http: Client,
    pow_difficulty_bits: u32,
    payload_bytes_max: u64,
}

impl NodeTarget {
    /// Connects to the node at `url` (`http://host:port`) and reads what its chains demand of a
    /// block.
    pub(crate) fn connect(url: &str) -> Result<Self, NodeError> {
        let base = url.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base).map_err(|error| NodeError::BadAnswer {
            url: base.clone(),
            reason: format!("not a node URL: {error}"),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(NodeError::BadAnswer {
                url: base,
                reason: "a node URL starts with http:// or https://".to_owned(),
            });
        }
        let built = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("blyan-miner/", env!("CARGO_PKG_VERSION")))
            .build();
        let http = built.map_err(|source| NodeError::Http {
            url: base.clone(),
            source,
        })?;
        let mut target = Self {
            base,
            http,
            pow_difficulty_bits: 0,
            payload_bytes_max: 0,
        };
        let parameters = target.chain(ChainId::Parameters)?;
        let meta = target.chain(ChainId::Meta)?;
        target.pow_difficulty_bits = parameters.pow_difficulty_bits.max(meta.pow_difficulty_bits);
        target.payload_bytes_max = parameters.payload_bytes_max.min(meta.payload_bytes_max);
        Ok(target)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path`: `Ok(None)` on 404, the response on success, [`NodeError::Refused`] otherwise.
    fn get(&self, path: &str) -> Result<Option<Response>, NodeError> {
        let url = self.url(path);
        let response = self
            .http
            .get(&url)
            .send()
            .map_err(|source| NodeError::Http {
                url: url.clone(),
                source,
            })?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(checked(url, response)?))
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Option<T>, NodeError> {
        let Some(response) = self.get(path)? else {
            return Ok(None);
        };
        let url = self.url(path);
        response
            .json::<T>()
            .map(Some)
            .map_err(|error| NodeError::BadAnswer {
                url,
                reason: format!("unexpected JSON: {error}"),
            })
    }

    fn chain(&self, chain: ChainId) -> Result<ChainSummary, NodeError> {
        let path = format!("/chain/{chain}");
        self.get_json(&path)?.ok_or_else(|| NodeError::BadAnswer {
            url: self.url(&path),
            reason: "no such route: is this a Blyan node?".to_owned(),
        })
    }

    fn fetch_header(&self, block: &BlockHash) -> Result<Option<BlockHeader>, NodeError> {
        let path = format!("/blocks/{block}");
        let Some(header) = self.get_json::<BlockHeader>(&path)? else {
            return Ok(None);
        };
        if header.hash() != *block {
            return Err(NodeError::BadAnswer {
                url: self.url(&path),
                reason: format!("the header hashes to {}, not {block}", header.hash()),
            });
        }
        Ok(Some(header))
    }

    fn fetch_model(&self) -> Result<Option<(BlockHash, ModelDocument)>, MoeError> {
        let Some(status) = self.get_json::<ModelStatus>("/model")? else {
            return Err(NodeError::BadAnswer {
                url: self.url("/model"),
                reason: "no such route: is this a Blyan node?".to_owned(),
            }
            .into());
        };
        let Some(summary) = status.chain else {
            return Ok(None);
        };
        let block = summary.meta_block;
        let path = format!("/blocks/{block}/payload");
        let bad = |reason: String| NodeError::BadAnswer {
            url: self.url(&path),
            reason,
        };
        let header = self
            .fetch_header(&block)?
            .ok_or_else(|| bad("the model's meta block is not on the node".to_owned()))?;
        if header.payload_bytes > MODEL_DOCUMENT_BYTES_MAX {
            return Err(bad(format!(
                "the model document is {} bytes; at most {MODEL_DOCUMENT_BYTES_MAX} are read",
                header.payload_bytes
            ))
            .into());
        }
        let response = self
            .get(&path)?
            .ok_or_else(|| bad("the meta block has no payload".to_owned()))?;
        let payload = response.bytes().map_err(|source| NodeError::Http {
            url: self.url(&path),
            source,
        })?;
        if hash_payload(&payload) != header.payload_hash {
            return Err(bad("the payload does not match its header's hash".to_owned()).into());
        }
        let document = ModelDocument::from_payload(block, &payload)?
            .ok_or_else(|| bad("the meta block holds no model document".to_owned()))?;
        Ok(Some((block, document)))
    }
}

/// The response if its status is a success, else the node's error as [`NodeError::Refused`].
fn checked(url: String, response: Response) -> Result<Response, NodeError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().unwrap_or_default();
    let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => (body.error.code, body.error.message),
        Err(_) => (
            "unknown".to_owned(),
            text.chars().take(512).collect::<String>(),
        ),
    };
    Err(NodeError::Refused {
        url,
        status: status.as_u16(),
        code,
        message,
    })
}

impl PublishTarget for NodeTarget {
    fn tip(&self, chain: ChainId) -> blyan_moe::Result<ChainTip> {
        let summary = self.chain(chain)?;
        Ok(ChainTip {
            chain,
            height: summary.tip_height,
            hash: summary.tip_hash,
        })
    }

    fn header(&self, block: &BlockHash) -> blyan_moe::Result<Option<BlockHeader>> {
        Ok(self.fetch_header(block)?)
    }

    fn expert_current(&self, expert: ExpertName) -> blyan_moe::Result<Option<ExpertVersion>> {
        let path = format!("/chain/experts/{expert}");
        let Some(info) = self.get_json::<ExpertVersionInfo>(&path)? else {
            return Ok(None);
        };
        if (info.expert.layer(), info.expert.expert()) != (expert.layer(), expert.expert()) {
            return Err(NodeError::BadAnswer {
                url: self.url(&path),
                reason: format!("asked for {expert}, answered {}", info.expert),
            }
            .into());
        }
        Ok(Some(ExpertVersion {
            expert,
            version: info.version,
            hash: info.block,
        }))
    }

    fn current_model(&self) -> blyan_moe::Result<Option<(BlockHash, ModelDocument)>> {
        self.fetch_model()
    }

    fn pow_difficulty_bits(&self) -> u32 {
        self.pow_difficulty_bits
    }

    fn payload_bytes_max(&self) -> u64 {
        self.payload_bytes_max
    }

    fn append(&self, header: &BlockHeader, payload: &[u8]) -> blyan_moe::Result<BlockHash> {
        let url = self.url("/blocks");
        let response = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(encode_block(header, payload))
            .send()
            .map_err(|source| NodeError::Http {
                url: url.clone(),
                source,
            })?;
        let response = match checked(url.clone(), response) {
            Ok(response) => response,
            Err(NodeError::Refused { code, .. }) if code == "block_fork" => {
                return Err(MoeError::TipMoved {
                    chain: header.chain,
                });
            }
            Err(other) => return Err(other.into()),
        };
        let submitted: SubmittedBlock = response.json().map_err(|error| NodeError::BadAnswer {
            url: url.clone(),
            reason: format!("unexpected JSON: {error}"),
        })?;
        let stored = submitted.hash;
        if stored != header.hash() {
            return Err(NodeError::BadAnswer {
                url,
                reason: format!("the node stored {stored} for block {}", header.hash()),
            }
            .into());
        }
        Ok(stored)
    }
}

/// Fetches the current model of the node at `url` into `dir` as a Hugging Face checkpoint,
/// every block checked against its header's payload hash.
pub(crate) fn fetch_checkpoint(
    url: &str,
    dir: &std::path::Path,
) -> anyhow::Result<blyan_moe::Checkpoint> {
    let _ = (url, dir);
    anyhow::bail!("fetching a model from a node is not built yet")
}
