//! The node's face to the world: its configuration (`node.yaml`), logging set-up and HTTP API —
//! Sign-In with Ethereum, paid streaming chat, the chain explorer, metrics and the web page.
//!
//! `blyan-api` composes the library crates (chain, ledger, model) behind HTTP so that the
//! binaries stay thin: `blyan-node` parses arguments, loads a [`NodeConfig`], calls
//! [`init_logging`] and runs a [`Server`]. It is the only crate that speaks HTTP; no lower crate
//! may depend on it.
//!
//! Invariants:
//! - A config is either fully valid or refused with the dotted path of the offending field
//!   ([`Error::ConfigInvalid`]); a missing file means the shipped defaults.
//! - Every refusal is JSON `{"error": {"code", "message"}}` with a stable [`Error::code`].
//! - A sign-in nonce is spent at most once, under the lock that checks it: one signed message
//!   yields at most one session. Tokens are HS256 only, with issuer, audience and expiry checked.
//! - Secrets (refresh tokens, API keys) are stored only as blake3 hashes.
//! - Every route is in the OpenAPI document and every documented route is served (a test
//!   compares [`api_routes`] with [`openapi_document`]).
//! - Every per-key table (nonces, rate-limit buckets) has a fixed upper bound.
//! - Logs go to stderr, so commands can stream their output on stdout.
//!
//! Start reading at [`NodeConfig`], then [`AppState`], [`api_routes`] and [`Server`]; the
//! design is summarised in `docs/api.md`.
//!
//! ```no_run
//! # async fn run() -> blyan_api::Result<()> {
//! use blyan_api::{AppState, NodeConfig, Server};
//! let config = NodeConfig::load(std::path::Path::new("config/node.yaml"))?;
//! // Chain store and ledger under `data_dir`; then the newest model on the chain.
//! let state = AppState::open(config).await?.load_model().await?;
//! let server = Server::bind(state).await?;
//! server.serve(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
#![forbid(unsafe_code)]

mod auth;
mod auth_store;
mod chain_routes;
mod chat;
mod chat_routes;
mod config;
mod error;
mod extract;
mod jwt;
mod logging;
mod metrics;
mod node_routes;
mod nonce;
mod openapi;
mod page;
mod rate_limit;
mod routes;
mod server;
mod signin;

pub use auth::{
    CreateApiKeyRequest, CreatedApiKey, NonceResponse, RefreshRequest, SessionResponse,
    TokenResponse, VerifyRequest,
};
pub use auth_store::{
    API_KEY_NAME_CHARS_MAX, API_KEY_PREFIX, API_KEYS_PER_WALLET_MAX, ApiKeyInfo,
    REFRESH_TOKEN_PREFIX,
};
pub use chain_routes::{
    BLOCK_SUBMIT_BYTES_MAX, BLOCKS_PAGE_COUNT_DEFAULT, BlocksPage, ChainSummary, ExpertVersionInfo,
    SubmittedBlock,
};
pub use chat::{
    CHAT_COMPLETION_TOKENS_DEFAULT, CHAT_COMPLETION_TOKENS_MAX, CHAT_MESSAGE_BYTES_MAX,
    CHAT_MESSAGES_MAX, CacheDelta, ChatDone, ChatMessage, ChatRequest, Cost, LayerExperts,
    MODEL_ID, PROMPT_TOKENS_MAX, Usage,
};
pub use chat_routes::{CompletionRequest, StreamOptions};
pub use config::{
    API_BODY_BYTES_MAX, API_BODY_BYTES_MIN, AUTH_TTL_SECONDS_MAX, ApiConfig, AuthConfig,
    CACHE_EXPERT_BYTES_MIN, CacheConfig, ChainConfig, Durability, FreeTierConfig, LedgerBackend,
    LedgerConfig, LogConfig, LogFormat, NODE_CONFIG_DEFAULT_YAML, NodeConfig,
    POW_DIFFICULTY_BITS_MAX, PolConfig, RateLimitConfig,
};
pub use error::{Error, Result};
pub use extract::{ApiBytes, ApiJson, ApiQuery, Caller, Credential, SignedIn};
pub use jwt::{AccessClaims, JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET_BYTES};
pub use logging::init_logging;
pub use node_routes::{
    BalanceResponse, CacheInfo, ExpertInfo, ExpertsResponse, HistoryEntry, HistoryResponse,
    ModelStatus, ModelSummary, PolStatus,
};
pub use nonce::{NONCE_HELD_COUNT_MAX, NONCE_RANDOM_BYTES};
pub use openapi::{ApiDoc, openapi_document};
pub use rate_limit::RATE_LIMIT_KEYS_MAX;
pub use routes::{ApiRoutes, RouteEntry};
pub use server::{
    AppState, CHAIN_DIR_NAME, Health, LEDGER_FILE_NAME, Server, api_routes, open_chain,
    open_ledger, router, serve, store_config,
};
pub use signin::{
    SIWE_CLOCK_SKEW_SECONDS, SIWE_MESSAGE_BYTES_MAX, WalletAddress, WalletAddressParseError,
};
