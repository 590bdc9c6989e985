//! # blyan-node-core: the Blyan node as a library
//!
//! The node's composition root, free of any transport: its configuration ([`NodeConfig`],
//! `node.yaml` over compiled-in defaults), logging ([`init_logging`]), its state ([`Node`]: the
//! chain store, the ledger, the model served and swapped when a new one lands, expert use
//! counts), the chat and billing session ([`Node::plan_chat`] → [`ChatPlan::start`] →
//! [`ChatRun`]: quote → authorize → generate/stream → capture or release), the background
//! [`Learner`] that fine-tunes experts between chats, and the services a node runs
//! ([`Service`], [`Services`]), and block uploads streamed into the chain store after their
//! header is checked ([`Node::begin_upload`] → [`BlockUpload`] → [`Node::finish_upload`]). The binary `blyan-node` loads a config, opens a [`Node`], and
//! starts services on it: the HTTP API (`blyan-api`), [`HoldExpiry`], the [`Learner`],
//! [`PolService`] (Proof-of-Learning, `docs/pol.md`), [`DatasetService`] (the dataset gates' L1
//! worker, `docs/datasets.md`) and [`NetworkService`] (peers, gossip,
//! chain sync and payload transfer over `blyan-p2p`, `docs/network.md`), each testable without
//! the others.
//!
//! ## Invariants
//! - A config is either fully valid or refused with the dotted path of the offending field
//!   ([`Error::ConfigInvalid`]); a missing file means the shipped defaults. A setting the node
//!   cannot honour (`pol.mode: hybrid` without proof of work) is refused there, not at start.
//! - With Proof-of-Learning on, what the node serves changes only through the chain's gate: a
//!   candidate is never served, and a claim's bond is locked before the claim is appended.
//! - A chat is charged what it delivered: its prompt and the completion tokens its receiver
//!   took, each at its rate in the tokenomics, once; a refusal, a generation error or a chat
//!   that delivered nothing is charged nothing (the hold is released). A paid generation stops
//!   `ledger.settle_margin_ms` before its hold expires, so the capture lands on a live hold.
//!   Every ledger call has an idempotency key derived from the chat's random id, so a retried
//!   call never charges twice.
//! - Requests already generating finish on the model they started with when a new model is
//!   swapped in; reloads are serialized, so the newest model is the one left serving.
//! - The learner never takes the served model's lock (it trains its own model instance over the
//!   chain) and starts no slice while a chat is generating ([`InferenceGate`]); without
//!   `learning.publish` nothing it makes reaches the chain. See `docs/learning.md`.
//! - An upload holds at most two [`UPLOAD_CHUNK_BYTES`] chunks in memory whatever its size, takes
//!   no payload byte before its header passed every check that needs no payload, and leaves
//!   nothing staged unless it is appended.
//! - Logs go to stderr, so commands can stream their output on stdout.
//!
//! ## Must not depend on
//! HTTP (axum, hyper), the sign-in machinery (SIWE, JWT) or Prometheus: those are `blyan-api`'s.
//! Dependency direction: `blyan-api` → `blyan-node-core` → chain, ledger, moe.
//!
//! ## Where to start
//! [`NodeConfig`], then [`Node`], [`Node::plan_chat`] and [`Services`].
//!
//! ```no_run
//! # async fn run() -> blyan_node_core::Result<()> {
//! use std::sync::Arc;
//! use blyan_api_types::{ChatMessage, ChatRequest};
//! use blyan_node_core::{HoldExpiry, Node, NodeConfig, NoObserver, Payer, Services};
//!
//! let config = NodeConfig::load(std::path::Path::new("config/node.yaml"))?;
//! // Chain store and ledger under `data_dir`; then the newest model on the chain.
//! let node = Arc::new(Node::open(config).await?.load_model().await?);
//! let request = ChatRequest {
//!     messages: vec![ChatMessage { role: "user".into(), content: "hi".into() }],
//!     max_tokens: Some(8), temperature: Some(0.0), top_p: None, seed: None, model: None,
//!     stop: None,
//! };
//! let plan = node.plan_chat(Payer::Free, &request).expect("a valid chat");
//! let done = plan.start(Arc::clone(&node), Arc::new(NoObserver)).await.expect("starts")
//!     .finish().await.expect("generates");
//! println!("{}", done.text);
//! let mut services = Services::new(node);
//! services.spawn(HoldExpiry::default());
//! services.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![forbid(unsafe_code)]

// A dependency only so its build script's `DEP_TCH_LIBTORCH_LIB` reaches ours, which embeds
// libtorch's directory as an rpath (build.rs).
use torch_sys as _;

mod chat;
mod cidr;
mod config;
mod datasets;
mod error;
mod gate_cache;
mod learner;
mod logging;
mod network;
mod node;
mod pol;
mod pol_status;
mod read_cache;
mod service;
mod stop;
mod upload;

pub use blyan_p2p::ExpertsSnapshot;
pub use chat::{
    CHAT_COMPLETION_TOKENS_DEFAULT, CHAT_DELTAS_DEPTH, CHAT_MESSAGE_BYTES_MAX, CHAT_MESSAGES_MAX,
    ChatEvent, ChatObserver, ChatPlan, ChatRun, LedgerOutcome, NoObserver, Payer, chat_prompt,
    chat_prompt_in,
};
pub use cidr::{IpCidr, IpCidrError};
pub use config::{
    API_BODY_BYTES_MAX, API_BODY_BYTES_MIN, API_CONTEXT_TOKENS_MAX, API_GENERATIONS_CONCURRENT_MAX,
    API_TRUSTED_PROXIES_COUNT_MAX, AUTH_TTL_SECONDS_MAX, ApiConfig, AuthConfig,
    CACHE_EXPERT_BYTES_MIN, CacheConfig, ChainConfig, DATASET_L1_BATCH_MAX, DATASET_WINDOW_MS_MAX,
    DatasetsConfig, ENV_OVERRIDE_PREFIX, FREE_TIER_GENERATION_SECONDS_MAX, FaucetConfig,
    ForwardedHeader, FreeTierConfig, HTTP_CONNECTIONS_MAX, HTTP_TIMEOUT_SECONDS_MAX,
    HttpServerConfig, IDEMPOTENCY_RETENTION_HOURS_MAX, IDEMPOTENCY_RETENTION_HOURS_MIN,
    LEARNING_BATCH_SIZE_MAX, LEARNING_EVAL_TOKENS_MAX, LEARNING_EXPERTS_MAX,
    LEARNING_POSITIONS_MAX, LEARNING_SLICE_MS_MAX, LearningConfig, LedgerBackend, LedgerConfig,
    LogConfig, LogFormat, ModelConfig, NODE_CONFIG_DEFAULT_YAML, NodeConfig, P2pConfig, PolConfig,
    PolEvalConfig, PolQaConfig, QA_SET_BYTES_RANGE, RateLimitConfig, SETTLE_MARGIN_MS_MAX,
    SETTLE_MARGIN_MS_MIN, SeedChoice, UPLOADS_CONCURRENT_MAX, UploadsConfig,
};
pub use datasets::{
    DATASET_PAGE_MAX, DatasetContext, DatasetProgress, DatasetService, Refusal, SampleInput,
    ServedTeacher, Teacher, UsableSamples, ValidatorHistory, dataset_tick, gate_params, gate_view,
    screen_l0, usable_dataset, vote_bond_key,
};
pub use error::{BoxError, ChatError, Error, Result};
pub use gate_cache::GateState;
pub use learner::{
    InferenceGate, InferenceGuard, LEARNING_CANDIDATES_KEPT, LEARNING_DIR_NAME,
    LEARNING_HISTORY_POINTS_MAX, LEARNING_SCHEDULE_STEPS, LEARNING_WARMUP_STEPS, Learner,
};
pub use logging::init_logging;
pub use network::{NetworkService, P2P_ADDRESSES_FILE, counters as network_counters};
pub use node::{
    CHAIN_DIR_NAME, LEDGER_FILE_NAME, Node, load_tokenomics, model_label, open_chain,
    open_chain_at, open_ledger, store_config,
};
pub use pol::{
    NODE_KEY_FILE, PolContext, PolService, PolTick, QA_DIR, SHIPPED_EVAL_DIR, apply_settlement,
    claim_candidates, eval_pool, node_key, pol_params, qa_keeper, tick as pol_tick,
};
pub use read_cache::ModelOnChain;
pub use service::{HOLD_EXPIRY_PERIOD, HoldExpiry, Service, Services, Shutdown};
pub use upload::{BlockUpload, UPLOAD_CHUNK_BYTES, UPLOAD_MEMORY_BYTES_MAX, WireHeaderReader};
