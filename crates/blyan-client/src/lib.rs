//! A running node's HTTP API as a client: what `blyan-miner` (publishing, `train --from-node`)
//! and `blyan-validator run` (claims, votes) speak.
//!
//! Reads go through the node's chain endpoints (`GET /chain/{chain}`, `GET /blocks/{hash}`,
//! `GET /blocks/{hash}/payload`, `GET /chain/experts/{id}`, `GET /model`, `GET /pol/…`); blocks
//! are signed by the caller and sent in their wire form to `POST /blocks`. Nothing the node
//! answers is taken on faith where it can be checked: a header must hash to the hash asked
//! for, a payload must hash to its header's commitment, a parameter block must match its header
//! ([`VerifiedBlock`]). The answers' shapes are the server's own (`blyan-api-types`), so a field
//! the node renames breaks this client at compile time. A block's payload is streamed to the
//! node from any reader ([`NodeClient::post_block_from`], [`NodeClient::post_block_file`]),
//! so publishing a payload of hundreds of megabytes holds a few buffers, never the payload;
//! [`hash_payload_reader`] hashes such a payload for its header the same way. [`NodeClient`] is also a
//! [`PublishTarget`], so `blyan_moe::publish_model` publishes to a node as to a local store.
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![forbid(unsafe_code)]

// A dependency only so its build script's `DEP_TCH_LIBTORCH_LIB` reaches ours, which embeds
// libtorch's directory as an rpath (build.rs).
use torch_sys as _;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use blyan_api_types::{ChainSummary, ErrorBody, ExpertVersionInfo, ModelStatus, SubmittedBlock};
use blyan_chain::{
    AuthorKey, BLOCK_PREFIX_BYTES, BlockHash, BlockHeader, ChainId, ChainTip, ExpertName,
    ExpertVersion, PayloadHash, hash_payload,
};
use blyan_moe::{MODEL_DOCUMENT_BYTES_MAX, ModelDocument, MoeError, PublishTarget, VerifiedBlock};
use blyan_pol::{BlockSource, PolRecord, record_block};
use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};

/// How long one request may take; a block upload of a few hundred megabytes fits well within.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// How long connecting to the node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request to the node failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
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
    /// A payload file to upload could not be opened or read.
    #[error("{}: {source}", path.display())]
    PayloadFile {
        /// The file.
        path: PathBuf,
        /// What the file system reported.
        source: std::io::Error,
    },
    /// A payload to upload is not as long as its header says.
    #[error("the payload is {got} bytes; its header says {expected}")]
    PayloadLength {
        /// Bytes the payload has.
        got: u64,
        /// Bytes its header commits to.
        expected: u64,
    },
}

/// The blake3 of a payload read from `reader` to its end, as a header commits to it
/// (`blyan_chain::hash_payload` without holding the payload), and its length in bytes.
pub fn hash_payload_reader(mut reader: impl Read) -> std::io::Result<(PayloadHash, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0_u8; UPLOAD_READ_BYTES];
    let mut length = 0_u64;
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..read]);
        length += read as u64;
    }
    Ok((PayloadHash(*hasher.finalize().as_bytes()), length))
}

/// Bytes read from a payload at a time, by [`hash_payload_reader`] and by an upload's body.
const UPLOAD_READ_BYTES: usize = 1 << 16;

/// A block's wire form (`blyan_chain::encode_block`) read in order: the prefix and header from
/// memory, then exactly `payload_bytes` from the payload reader. A reader that ends early is an
/// error (the node would refuse the body as truncated anyway).
struct WireBody<R> {
    head: std::io::Cursor<Vec<u8>>,
    payload: R,
    payload_left: u64,
}

impl<R: Read> Read for WireBody<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.head.read(buffer)?;
        if read > 0 || buffer.is_empty() || self.payload_left == 0 {
            return Ok(read);
        }
        let wanted = buffer
            .len()
            .min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
        let read = self.payload.read(&mut buffer[..wanted])?;
        if read == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the payload ended {} bytes early", self.payload_left),
            ));
        }
        self.payload_left -= read as u64;
        Ok(read)
    }
}

impl From<ClientError> for MoeError {
    fn from(error: ClientError) -> Self {
        MoeError::Target(Box::new(error))
    }
}

/// A node's HTTP API.
#[derive(Debug)]
pub struct NodeClient {
    base: String,
    http: Client,
    pow_difficulty_bits: u32,
    payload_bytes_max: u64,
}

impl NodeClient {
    /// Connects to the node at `url` (`http://host:port`) and reads what its chains demand of a
    /// block.
    pub fn connect(url: &str) -> Result<Self, ClientError> {
        let base = url.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base).map_err(|error| ClientError::BadAnswer {
            url: base.clone(),
            reason: format!("not a node URL: {error}"),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ClientError::BadAnswer {
                url: base,
                reason: "a node URL starts with http:// or https://".to_owned(),
            });
        }
        let built = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("blyan-client/", env!("CARGO_PKG_VERSION")))
            .build();
        let http = built.map_err(|source| ClientError::Http {
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

    /// The full URL of `path` on the node.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path`: `Ok(None)` on 404, the response on success, [`ClientError::Refused`] otherwise.
    pub fn get(&self, path: &str) -> Result<Option<Response>, ClientError> {
        let url = self.url(path);
        let response = self
            .http
            .get(&url)
            .send()
            .map_err(|source| ClientError::Http {
                url: url.clone(),
                source,
            })?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(checked(url, response)?))
    }

    /// `GET path` as JSON: `Ok(None)` on 404.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, ClientError> {
        let Some(response) = self.get(path)? else {
            return Ok(None);
        };
        let url = self.url(path);
        response
            .json::<T>()
            .map(Some)
            .map_err(|error| ClientError::BadAnswer {
                url,
                reason: format!("unexpected JSON: {error}"),
            })
    }

    /// `GET /chain/{chain}`: the chain's tip and rules.
    pub fn chain(&self, chain: ChainId) -> Result<ChainSummary, ClientError> {
        let path = format!("/chain/{chain}");
        self.get_json(&path)?.ok_or_else(|| ClientError::BadAnswer {
            url: self.url(&path),
            reason: "no such route: is this a Blyan node?".to_owned(),
        })
    }

    /// `GET /blocks/{hash}`: the header, checked to hash to `block`; `None` when unknown.
    pub fn fetch_header(&self, block: &BlockHash) -> Result<Option<BlockHeader>, ClientError> {
        let path = format!("/blocks/{block}");
        let Some(header) = self.get_json::<BlockHeader>(&path)? else {
            return Ok(None);
        };
        if header.hash() != *block {
            return Err(ClientError::BadAnswer {
                url: self.url(&path),
                reason: format!("the header hashes to {}, not {block}", header.hash()),
            });
        }
        Ok(Some(header))
    }

    /// The model the node's chain names now: its meta block, that block's header and its
    /// document (header and payload checked against the hash).
    pub fn fetch_model(&self) -> Result<Option<(BlockHash, BlockHeader, ModelDocument)>, MoeError> {
        let Some(status) = self.get_json::<ModelStatus>("/model")? else {
            return Err(ClientError::BadAnswer {
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
        let bad = |reason: String| ClientError::BadAnswer {
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
        let payload = response.bytes().map_err(|source| ClientError::Http {
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

/// The response if its status is a success, else the node's error as [`ClientError::Refused`].
fn checked(url: String, response: Response) -> Result<Response, ClientError> {
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
    Err(ClientError::Refused {
        url,
        status: status.as_u16(),
        code,
        message,
    })
}

impl PublishTarget for NodeClient {
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
            return Err(ClientError::BadAnswer {
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
        match self.post_block(header, payload) {
            Err(ClientError::Refused { code, .. }) if code == "block_fork" => {
                Err(MoeError::TipMoved {
                    chain: header.chain,
                })
            }
            other => Ok(other?),
        }
    }
}

impl NodeClient {
    /// The node's base URL (`http://host:port`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The largest payload the node's chains take.
    pub fn payload_bytes_max(&self) -> u64 {
        self.payload_bytes_max
    }

    /// Sends a signed block held in memory to `POST /blocks`; the node's refusal is
    /// [`ClientError::Refused`] with its code (`block_fork` when the chain's tip moved). A
    /// payload read from a file or a reader is better sent by [`NodeClient::post_block_file`]
    /// or [`NodeClient::post_block_from`], which never hold it whole.
    pub fn post_block(
        &self,
        header: &BlockHeader,
        payload: &[u8],
    ) -> Result<BlockHash, ClientError> {
        let got = payload.len() as u64;
        if got != header.payload_bytes {
            return Err(ClientError::PayloadLength {
                got,
                expected: header.payload_bytes,
            });
        }
        self.post_block_from(header, std::io::Cursor::new(payload.to_vec()))
    }

    /// Sends a signed block whose payload is the file at `path` to `POST /blocks`, streamed
    /// ([`NodeClient::post_block_from`]). A file whose length is not the header's
    /// `payload_bytes` is [`ClientError::PayloadLength`], checked before anything is sent.
    pub fn post_block_file(
        &self,
        header: &BlockHeader,
        path: &Path,
    ) -> Result<BlockHash, ClientError> {
        let file_error = |source| ClientError::PayloadFile {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(file_error)?;
        let got = file.metadata().map_err(file_error)?.len();
        if got != header.payload_bytes {
            return Err(ClientError::PayloadLength {
                got,
                expected: header.payload_bytes,
            });
        }
        self.post_block_from(
            header,
            std::io::BufReader::with_capacity(UPLOAD_READ_BYTES, file),
        )
    }

    /// Sends a signed block to `POST /blocks`, its payload read from `payload` (its first
    /// `header.payload_bytes` bytes) while the body is sent: the request has a
    /// `Content-Length` and the client holds a few buffers of it at a time, whatever the
    /// payload's size. A reader that ends early fails the request ([`ClientError::Http`]); the
    /// node stores nothing of it. The node's refusal is [`ClientError::Refused`].
    pub fn post_block_from(
        &self,
        header: &BlockHeader,
        payload: impl Read + Send + 'static,
    ) -> Result<BlockHash, ClientError> {
        let url = self.url("/blocks");
        let header_bytes = header.encode();
        let mut head = Vec::with_capacity(BLOCK_PREFIX_BYTES + header_bytes.len());
        head.extend_from_slice(header.hash().as_bytes());
        let header_len = u32::try_from(header_bytes.len()).map_err(|_| ClientError::BadAnswer {
            url: url.clone(),
            reason: format!("a header of {} bytes cannot be sent", header_bytes.len()),
        })?;
        head.extend_from_slice(&header_len.to_le_bytes());
        head.extend_from_slice(&header_bytes);
        let body_bytes = head.len() as u64 + header.payload_bytes;
        let body = WireBody {
            head: std::io::Cursor::new(head),
            payload,
            payload_left: header.payload_bytes,
        };
        let response = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::blocking::Body::sized(body, body_bytes))
            .send()
            .map_err(|source| ClientError::Http {
                url: url.clone(),
                source,
            })?;
        let response = checked(url.clone(), response)?;
        let submitted: SubmittedBlock =
            response.json().map_err(|error| ClientError::BadAnswer {
                url: url.clone(),
                reason: format!("unexpected JSON: {error}"),
            })?;
        if submitted.hash != header.hash() {
            return Err(ClientError::BadAnswer {
                url,
                reason: format!(
                    "the node stored {} for block {}",
                    submitted.hash,
                    header.hash()
                ),
            });
        }
        Ok(submitted.hash)
    }

    /// Block `block`'s header and payload, the header hashing to `block` and the payload to the
    /// header's commitment.
    pub fn raw_block(&self, block: BlockHash) -> Result<(BlockHeader, Vec<u8>), ClientError> {
        let header_url = self.url(&format!("/blocks/{block}"));
        let header = self
            .fetch_header(&block)?
            .ok_or_else(|| ClientError::BadAnswer {
                url: header_url.clone(),
                reason: "the node does not have this block".to_owned(),
            })?;
        let path = format!("/blocks/{block}/payload");
        let url = self.url(&path);
        let bytes_max = self.payload_bytes_max;
        if header.payload_bytes > bytes_max {
            return Err(ClientError::BadAnswer {
                url: header_url,
                reason: format!(
                    "the payload is {} bytes; the node's chains take at most {bytes_max}",
                    header.payload_bytes
                ),
            });
        }
        let response = self.get(&path)?.ok_or_else(|| ClientError::BadAnswer {
            url: url.clone(),
            reason: "the block has no payload".to_owned(),
        })?;
        // At most one byte more than the header promises: enough to see a longer body.
        let mut payload = Vec::with_capacity(header.payload_bytes as usize);
        response
            .take(header.payload_bytes + 1)
            .read_to_end(&mut payload)
            .map_err(|error| ClientError::BadAnswer {
                url: url.clone(),
                reason: format!("reading the payload: {error}"),
            })?;
        if payload.len() as u64 != header.payload_bytes
            || hash_payload(&payload) != header.payload_hash
        {
            return Err(ClientError::BadAnswer {
                url,
                reason: "the payload does not match its header".to_owned(),
            });
        }
        Ok((header, payload))
    }

    /// Tensor block `block` from the node, checked ([`VerifiedBlock`]).
    pub fn tensor_block(&self, block: BlockHash) -> Result<VerifiedBlock, ClientError> {
        let (header, payload) = self.raw_block(block)?;
        VerifiedBlock::new(block, header, payload).map_err(|source| ClientError::BadBlock {
            url: self.url(&format!("/blocks/{block}/payload")),
            source: Box::new(source),
        })
    }
}

/// A node's blocks as a Proof-of-Learning [`BlockSource`] (what a remote validator or an author
/// evaluates with), each fetched once and kept. Every block is checked by the caller
/// ([`blyan_pol::verified_raw`], [`blyan_pol::verified_tensors`]) as well as by
/// [`NodeClient::raw_block`].
#[derive(Debug)]
pub struct NodeBlocks<'a> {
    client: &'a NodeClient,
    cache: std::sync::Mutex<std::collections::HashMap<BlockHash, (BlockHeader, Vec<u8>)>>,
}

impl<'a> NodeBlocks<'a> {
    /// No block fetched yet.
    pub fn new(client: &'a NodeClient) -> Self {
        Self {
            client,
            cache: std::sync::Mutex::default(),
        }
    }

    /// Forgets the blocks kept so far.
    pub fn clear(&self) {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Blocks kept.
    pub fn len(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether no block is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl BlockSource for NodeBlocks<'_> {
    fn fetch(&self, hash: BlockHash) -> blyan_pol::Result<(BlockHeader, Vec<u8>)> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&hash)
            .cloned();
        if let Some(found) = cached {
            return Ok(found);
        }
        let fetched = self
            .client
            .raw_block(hash)
            .map_err(|error| blyan_pol::PolError::Fetch {
                block: hash,
                reason: error.to_string(),
            })?;
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(hash, fetched.clone());
        Ok(fetched)
    }
}

impl NodeClient {
    /// Writes `record` in a block signed by `key` on chain D's tip of the node and sends it,
    /// rebuilding it on the new tip when the tip moved meanwhile (up to 8 times).
    pub fn post_record(
        &self,
        record: &PolRecord,
        key: &AuthorKey,
    ) -> Result<BlockHash, ClientError> {
        for _ in 0..8 {
            let summary = self.chain(ChainId::Dataset)?;
            let parent = ChainTip {
                chain: ChainId::Dataset,
                height: summary.tip_height,
                hash: summary.tip_hash,
            };
            let mut not_before = 0;
            for block in record
                .required_dependencies()
                .into_iter()
                .chain(std::iter::once(summary.tip_hash))
            {
                if let Some(header) = self.fetch_header(&block)? {
                    not_before = not_before.max(header.timestamp_ms);
                }
            }
            let (header, payload) = record_block(
                &parent,
                not_before,
                record,
                key,
                summary.pow_difficulty_bits,
            );
            match self.post_block(&header, &payload) {
                Err(ClientError::Refused { code, .. }) if code == "block_fork" => continue,
                other => return other,
            }
        }
        Err(ClientError::BadAnswer {
            url: self.url("/blocks"),
            reason: "chain D's tip kept moving".to_owned(),
        })
    }
}
