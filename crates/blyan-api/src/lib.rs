//! The node's HTTP API: Sign-In with Ethereum, paid streaming chat, the chain explorer and block
//! submission, metrics, the OpenAPI document and the web page.
//!
//! `blyan-api` is transport only. The node itself (configuration, state, the chat and billing
//! session, the services a node runs) is `blyan-node-core`; this crate puts routes, extractors,
//! sign-in (SIWE, JWT, API keys), rate limits, Prometheus exposition and error codes in front
//! of it, and runs as one of the node's services ([`HttpService`]). The request and response
//! bodies are `blyan-api-types`, shared with clients. It is the only crate that speaks HTTP; no
//! lower crate may depend on it.
//!
//! Invariants:
//! - Every refusal is JSON `{"error": {"code", "message"}}` with a stable [`Error::code`].
//! - Every request runs in an `http_request` span carrying its request id (`x-request-id`,
//!   kept when a client sends a plausible one, else generated), echoed in the response.
//! - A sign-in nonce is spent at most once, under the lock that checks it: one signed message
//!   yields at most one session. Tokens are HS256 only, with issuer, audience and expiry checked.
//! - Secrets (refresh tokens, API keys) are stored only as blake3 hashes; the sign-in store's
//!   schema is versioned by migrations (`migrations/sign_in/`).
//! - Every route is in the OpenAPI document and every documented route is served (a test
//!   compares [`api_routes`] with [`openapi_document`]).
//! - Every per-key table (nonces, rate-limit buckets) has a fixed upper bound.
//!
//! Start reading at [`AppState`], then [`api_routes`] and [`Server`]; the design is summarised
//! in `docs/api.md`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use blyan_api::{AppState, HttpService, Server};
//! use blyan_node_core::{HoldExpiry, Node, NodeConfig, Services};
//!
//! let config = NodeConfig::load(std::path::Path::new("config/node.yaml"))?;
//! // Chain store and ledger under `data_dir`; then the newest model on the chain.
//! let node = Arc::new(Node::open(config).await?.load_model().await?);
//! let server = Server::bind(AppState::new(Arc::clone(&node))?).await?;
//! let mut services = Services::new(node);
//! services.spawn(HoldExpiry::default());
//! services.spawn(HttpService::new(server));
//! services.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![forbid(unsafe_code)]

// A dependency only so its build script's `DEP_TCH_LIBTORCH_LIB` reaches ours, which embeds
// libtorch's directory as an rpath (build/torch_rpath.rs).
use torch_sys as _;

mod auth;
mod auth_store;
mod chain_routes;
mod chat_routes;
mod error;
mod extract;
mod faucet;
mod jwt;
mod metrics;
mod node_routes;
mod nonce;
mod openapi;
mod page;
mod rate_limit;
mod request_id;
mod routes;
mod server;
mod signin;

pub use auth_store::{
    API_KEY_NAME_CHARS_MAX, API_KEY_PREFIX, API_KEYS_PER_WALLET_MAX, REFRESH_TOKEN_PREFIX,
};
pub use chain_routes::{BLOCK_SUBMIT_BYTES_MAX, BLOCKS_PAGE_COUNT_DEFAULT};
pub use error::{Error, Result};
pub use extract::{ApiBytes, ApiJson, ApiQuery, Caller, Credential, SignedIn};
pub use jwt::{AccessClaims, JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET_BYTES};
pub use nonce::{NONCE_HELD_COUNT_MAX, NONCE_RANDOM_BYTES};
pub use openapi::{ApiDoc, openapi_document};
pub use rate_limit::RATE_LIMIT_KEYS_MAX;
pub use request_id::{REQUEST_ID_CHARS_MAX, REQUEST_ID_HEADER, RequestId};
pub use routes::{ApiRoutes, RouteEntry};
pub use server::{AppState, HttpService, Server, api_routes, router};
pub use signin::{SIWE_CLOCK_SKEW_SECONDS, SIWE_MESSAGE_BYTES_MAX};
