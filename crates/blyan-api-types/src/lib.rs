//! # blyan-api-types: the wire of a Blyan node's HTTP API
//!
//! The JSON bodies the node's routes take and answer, declared once and shared by the server
//! (`blyan-api`, which serves them) and its clients (`blyan-miner`'s `node.rs`, which publishes
//! blocks to a running node). A field renamed here is renamed for both, so a client can never
//! silently read a shape the server stopped writing.
//!
//! ## Invariants
//! - Only data: serde derives, no behaviour beyond constructors of the error body. Hashes,
//!   addresses and expert names are the `blyan-primitives` types, so a client parses them at
//!   the boundary (a malformed hash in an answer fails deserialization).
//! - Every refusal the node gives has the shape [`ErrorBody`]; its `code` is stable.
//!
//! ## Must not depend on
//! axum, tokio, RocksDB, libtorch or any blyan crate but `blyan-primitives`: a client links
//! this crate without the server. The optional `openapi` feature adds `utoipa::ToSchema`
//! derives for the server's OpenAPI document.
//!
//! ## Where to start
//! [`ChatRequest`] and [`ChatDone`] (chat), [`ChainSummary`] and [`SubmittedBlock`] (publishing
//! blocks), [`ErrorBody`] (every refusal).
//!
//! ```
//! use blyan_api_types::{ChainSummary, ErrorBody};
//!
//! let answer = r#"{"error": {"code": "block_fork", "message": "the tip moved"}}"#;
//! let body: ErrorBody = serde_json::from_str(answer).unwrap();
//! assert_eq!(body.error.code, "block_fork");
//! # let _ = std::marker::PhantomData::<ChainSummary>;
//! ```
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![forbid(unsafe_code)]

mod auth;
mod chain;
mod chat;
mod datasets;
mod error;
mod learning;
mod node;
mod p2p;
mod pol;

pub use auth::{
    ApiKeyInfo, CreateApiKeyRequest, CreatedApiKey, NonceResponse, RefreshRequest, SessionResponse,
    TokenResponse, VerifyRequest,
};
pub use chain::{BlocksPage, ChainSummary, ExpertVersionInfo, SubmittedBlock};
pub use chat::{
    CacheDelta, ChatDone, ChatMessage, ChatRequest, CompletionRequest, Cost, LayerExperts,
    MODEL_ID, STOP_SEQUENCE_BYTES_MAX, STOP_SEQUENCES_MAX, StreamOptions, Usage,
};
pub use datasets::{
    DatasetEvent, DatasetList, DatasetProgressInfo, DatasetSample, DatasetSubmit, DatasetVote,
    DatasetVoteCommit, DatasetVoteReveal, DatasetWritten,
};
pub use error::{ErrorBody, ErrorDetail};
pub use learning::{LearningCandidate, LearningEval, LearningPoint, LearningStatus};
pub use node::{
    BalanceResponse, CacheInfo, ChatLimits, ExpertInfo, ExpertsResponse, FaucetResponse, Health,
    HistoryEntry, HistoryResponse, ModelStatus, ModelSummary,
};
pub use p2p::{NetworkCounters, NetworkPeers, PeerView};
pub use pol::{
    PolCandidate, PolCertificateInfo, PolClaimDetail, PolClaimInfo, PolEvalInfo, PolHiddenInfo,
    PolLosses, PolModelBlocks, PolPaymentInfo, PolQaInfo, PolStatus, PolValidatorInfo, PolVoteInfo,
};
