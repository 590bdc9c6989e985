//! A running node's chain over its HTTP API: as a [`PublishTarget`] for `upload --node URL`,
//! and as the source of `train --from-node URL` ([`NodeModel`]: the current model fetched block
//! by block and written as a Hugging Face checkpoint).
//!
//! Reads go through the node's chain endpoints (`GET /chain/{chain}`, `GET /blocks/{hash}`,
//! `GET /blocks/{hash}/payload`, `GET /chain/experts/{id}`, `GET /model`); blocks are signed
//! here and sent in their wire form to `POST /blocks`. Nothing the node answers is taken on
//! faith where it can be checked: a header must hash to the hash asked for, a model document
//! must hash to its header's payload hash, and a fetched parameter block must match its header
//! (payload hash and length, tensor list) and its place in the model ([`VerifiedBlock`],
//! [`PayloadSource`]). The answers' shapes are the server's own
//! (`blyan-api-types`), so a field the node renames breaks this client at compile time.

use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use blyan_api_types::{ChainSummary, ErrorBody, ExpertVersionInfo, ModelStatus, SubmittedBlock};
use blyan_chain::{
    BlockHash, BlockHeader, ChainId, ChainTip, ExpertName, ExpertVersion, encode_block,
    hash_payload,
};
use blyan_moe::{
    Checkpoint, Config, EXPORT_SHARD_BYTES_DEFAULT, MODEL_DOCUMENT_BYTES_MAX, ModelDocument,
    MoeError, PayloadSource, PublishTarget, VerifiedBlock, experts_of, export_checkpoint,
};
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

    /// A block the node served fails a check (its header, payload or place in the model).
    #[error("{url}: {source}")]
    BadBlock {
        /// The URL the block was read from.
        url: String,
        /// The check that failed, naming the block (boxed: the model's error is large).
        source: Box<MoeError>,
    },
    /// The node's chain holds no model.
    #[error("{url}: the node's chain holds no model")]
    NoModel {
        /// The node.
        url: String,
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

    /// The model the node's chain names now: its meta block, that block's header and its
    /// document (header and payload checked against the hash).
    fn fetch_model(&self) -> Result<Option<(BlockHash, BlockHeader, ModelDocument)>, MoeError> {
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
        Ok(Some((block, header, document)))
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
        Ok(self
            .fetch_model()?
            .map(|(block, _, document)| (block, document)))
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

/// The model a node serves from its chain, located (meta block and document read and checked)
/// but not yet downloaded: enough to check a training run's arguments against its
/// configuration before anything is fetched or written.
pub(crate) struct NodeModel {
    target: NodeTarget,
    meta_block: BlockHash,
    meta_header: BlockHeader,
    document: ModelDocument,
    config: Config,
}

/// What [`NodeModel::download`] records beside a checkpoint it wrote: the blocks it came from.
/// A later download of the same node state finds it and reuses the checkpoint.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct FetchedFrom {
    meta_block: BlockHash,
    experts: Vec<(ExpertName, BlockHash)>,
}

/// The file [`FetchedFrom`] is written to, last, inside the checkpoint directory.
const FETCHED_FROM_FILE: &str = "fetched-from.json";
/// Largest [`FETCHED_FROM_FILE`] read, in bytes.
const FETCHED_FROM_BYTES_MAX: u64 = 16 << 20;

impl NodeModel {
    /// Reads the current model's meta block and document from the node at `url`.
    pub(crate) fn locate(url: &str) -> Result<Self, NodeError> {
        let target = NodeTarget::connect(url)?;
        let located = target.fetch_model().map_err(|source| match source {
            MoeError::Target(inner) => match inner.downcast::<NodeError>() {
                Ok(node) => *node,
                Err(other) => NodeError::BadBlock {
                    url: target.url("/model"),
                    source: Box::new(MoeError::Target(other)),
                },
            },
            other => NodeError::BadBlock {
                url: target.url("/model"),
                source: Box::new(other),
            },
        })?;
        let Some((meta_block, meta_header, document)) = located else {
            return Err(NodeError::NoModel {
                url: target.base.clone(),
            });
        };
        let config = Config::from_json(document.config_json.as_bytes()).map_err(|source| {
            NodeError::BadBlock {
                url: target.url(&format!("/blocks/{meta_block}/payload")),
                source: Box::new(source),
            }
        })?;
        Ok(Self {
            target,
            meta_block,
            meta_header,
            document,
            config,
        })
    }

    /// The model's configuration.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The meta block the model was read from.
    pub(crate) fn meta_block(&self) -> BlockHash {
        self.meta_block
    }

    /// Fetches every block of the model (each header checked against its hash, each payload
    /// against its header, each block against its place in the model) and writes it into `dir`
    /// as a Hugging Face checkpoint. A checkpoint that an earlier download of the same blocks
    /// left in `dir` is reused as it is.
    pub(crate) fn download(&self, dir: &Path) -> anyhow::Result<Checkpoint> {
        let mut experts = Vec::new();
        for id in experts_of(&self.config) {
            let version = self
                .target
                .expert_current(id)?
                .ok_or_else(|| NodeError::BadAnswer {
                    url: self.target.url(&format!("/chain/experts/{id}")),
                    reason: format!("the node has no block of expert {id}"),
                })?;
            experts.push((id, version.hash));
        }
        let fetched_from = FetchedFrom {
            meta_block: self.meta_block,
            experts,
        };
        let marker = dir.join(FETCHED_FROM_FILE);
        if read_marker(&marker).as_ref() == Some(&fetched_from)
            && let Ok(checkpoint) = Checkpoint::open(dir)
        {
            tracing::info!(dir = %dir.display(), meta_block = %self.meta_block, "reusing the fetched model");
            return Ok(checkpoint);
        }
        // Whatever was there no longer says where it came from until the new one is complete.
        if marker.exists() {
            std::fs::remove_file(&marker)
                .with_context(|| format!("removing {}", marker.display()))?;
        }
        let mut shared = Vec::with_capacity(self.document.shared.len());
        for block in self.document.shared.values() {
            shared.push(self.fetch_block(*block)?);
        }
        let mut experts = Vec::with_capacity(fetched_from.experts.len());
        for (id, block) in &fetched_from.experts {
            experts.push((*id, self.fetch_block(*block)?));
        }
        let source = PayloadSource::new(
            self.meta_block,
            &self.meta_header,
            self.document.clone(),
            shared,
            experts,
        )
        .map_err(|source| NodeError::BadBlock {
            url: self.target.base.clone(),
            source: Box::new(source),
        })?;
        export_checkpoint(
            dir,
            source.config(),
            source.files(),
            &source,
            EXPORT_SHARD_BYTES_DEFAULT,
        )
        .with_context(|| format!("writing the fetched model into {}", dir.display()))?;
        let checkpoint = Checkpoint::open(dir)
            .with_context(|| format!("reading back the fetched model in {}", dir.display()))?;
        let mut bytes = serde_json::to_vec_pretty(&fetched_from)?;
        bytes.push(b'\n');
        std::fs::write(&marker, bytes).with_context(|| format!("writing {}", marker.display()))?;
        Ok(checkpoint)
    }

    /// Block `block`'s header and payload from the node, checked ([`VerifiedBlock`]).
    fn fetch_block(&self, block: BlockHash) -> Result<VerifiedBlock, NodeError> {
        let header_url = self.target.url(&format!("/blocks/{block}"));
        let header = self
            .target
            .fetch_header(&block)?
            .ok_or_else(|| NodeError::BadAnswer {
                url: header_url.clone(),
                reason: "the model names this block, and the node does not have it".to_owned(),
            })?;
        let path = format!("/blocks/{block}/payload");
        let url = self.target.url(&path);
        let bytes_max = self.target.payload_bytes_max;
        if header.payload_bytes > bytes_max {
            return Err(NodeError::BadAnswer {
                url: header_url,
                reason: format!(
                    "the payload is {} bytes; the node's chains take at most {bytes_max}",
                    header.payload_bytes
                ),
            });
        }
        let response = self
            .target
            .get(&path)?
            .ok_or_else(|| NodeError::BadAnswer {
                url: url.clone(),
                reason: "the block has no payload".to_owned(),
            })?;
        // At most one byte more than the header promises: enough to see a longer body.
        let mut payload = Vec::with_capacity(header.payload_bytes as usize);
        response
            .take(header.payload_bytes + 1)
            .read_to_end(&mut payload)
            .map_err(|error| NodeError::BadAnswer {
                url: url.clone(),
                reason: format!("reading the payload: {error}"),
            })?;
        VerifiedBlock::new(block, header, payload).map_err(|source| NodeError::BadBlock {
            url,
            source: Box::new(source),
        })
    }
}

/// The [`FetchedFrom`] record in `path`, if there is a readable one.
fn read_marker(path: &Path) -> Option<FetchedFrom> {
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(FETCHED_FROM_BYTES_MAX)
        .read_to_end(&mut bytes)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}
