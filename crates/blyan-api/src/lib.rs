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
//!   schema is versioned by migrations (`migrations/sign_in/`), its file and the token secret
//!   are owner-only (0600), and a token secret others can read is refused.
//! - Only a sign-in session (an access token) creates or revokes API keys; an access token's
//!   session belongs to its wallet. SQLite is never called on an async worker thread.
//! - Every route is in the OpenAPI document and every documented route is served (a test
//!   compares [`api_routes`] with [`openapi_document`]).
//! - Every per-key table (nonces, rate-limit buckets, upload quotas) has a fixed upper bound,
//!   and a full table forgets its oldest entries rather than refusing newcomers.
//! - Limits count clients ([`ClientBucket`]: an IPv4 address or an IPv6 /64); a forwarding
//!   header is believed only from `api.trusted_proxies`.
//! - A bearer value shaped like a Blyan credential that fails is refused, never downgraded to
//!   the free tier; any other value is no credential (OpenAI clients' placeholder keys).
//! - At most `api.generations_concurrent_max` chats generate at once.
//! - No request body is buffered whole beyond `api.body_bytes_max`: `POST /blocks` streams its
//!   payload into the store after the header passed, holding at most two chunks per upload and
//!   `api.uploads.concurrent_max` uploads at once.
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
// libtorch's directory as an rpath (build.rs).
use torch_sys as _;

mod auth;
mod auth_store;
mod chain_routes;
mod chat_routes;
mod client_addr;
mod datasets_routes;
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
mod uploads;

pub use auth::{AUTH_PRUNE_PERIOD, AUTH_STORE_TASKS_MAX};
pub use auth_store::{
    API_KEY_CACHE_COUNT_MAX, API_KEY_CACHE_SECONDS, API_KEY_NAME_CHARS_MAX, API_KEY_PREFIX,
    API_KEYS_PER_WALLET_MAX, REFRESH_TOKEN_PREFIX,
};
pub use chain_routes::{BLOCKS_PAGE_COUNT_DEFAULT, DEPENDENTS_PAGE_COUNT_DEFAULT};
pub use client_addr::{ClientBucket, FORWARDED_HOPS_MAX, IPV6_CLIENT_PREFIX_BITS};
pub use error::{Error, Result};
pub use extract::{ApiJson, ApiQuery, Caller, Credential, SignedIn};
pub use jwt::{AccessClaims, JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET_BYTES};
pub use nonce::{NONCE_HELD_COUNT_MAX, NONCE_PER_SOURCE_MAX, NONCE_RANDOM_BYTES};
pub use openapi::{ApiDoc, openapi_document};
pub use rate_limit::{RATE_LIMIT_KEYS_MAX, RATE_LIMIT_SHARDS};
pub use request_id::{REQUEST_ID_CHARS_MAX, REQUEST_ID_HEADER, RequestId};
pub use routes::{ApiRoutes, RouteEntry};
pub use server::{AppState, HttpService, Server, api_routes, router};
pub use signin::{SIWE_CLOCK_SKEW_SECONDS, SIWE_MESSAGE_BYTES_MAX};
pub use uploads::{UPLOAD_AUTHORS_TRACKED_MAX, UPLOADS_BUSY_RETRY_SECONDS};
