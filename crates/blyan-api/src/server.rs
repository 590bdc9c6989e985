//! The HTTP server: state, routing, binding, graceful shutdown.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use blyan_chain::{ChainStore, ExpertName, StoreConfig};
use blyan_ledger::{
    Address as LedgerAddress, AnyLedger, EmbeddedLedger, Ledger as _, LedgerOptions, PgLedger,
    Tokenomics,
};
use blyan_moe::{ExpertUsage, Generator, ModelOptions, MoeError};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::Uri;
use axum::middleware::from_fn_with_state;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::auth::{self, Auth};
use crate::chain_routes::{self, BLOCK_SUBMIT_BYTES_MAX};
use crate::chat_routes;
use crate::config::{Durability, LedgerBackend, NodeConfig};
use crate::metrics::{self, Metrics};
use crate::node_routes::{self, model_label};
use crate::openapi;
use crate::page;
use crate::rate_limit::RateLimiter;
use crate::routes::ApiRoutes;
use crate::signin::WalletAddress;
use crate::{Error, Result};

/// Directory of the chain store under `data_dir`.
pub const CHAIN_DIR_NAME: &str = "chain";

/// File of the embedded ledger under `data_dir`.
pub const LEDGER_FILE_NAME: &str = "ledger.sqlite";

/// How often the node releases payment holds whose lifetime has passed (a chat whose capture
/// never came, for instance because the node was killed mid-stream).
const HOLD_EXPIRY_PERIOD: Duration = Duration::from_secs(60);

/// The chain store's settings from the node's configuration.
pub fn store_config(config: &NodeConfig) -> StoreConfig {
    StoreConfig {
        durability: match config.chain.durability {
            Durability::Synced => blyan_chain::Durability::Synced,
            Durability::Unsynced => blyan_chain::Durability::Unsynced,
        },
        pow_difficulty_bits: config.chain.pow_difficulty_bits,
        proof_of_learning: config.pol.enabled,
        ..StoreConfig::default()
    }
}

/// Opens (creating with genesis on first start) the chain store in `data_dir/chain`.
pub fn open_chain(config: &NodeConfig) -> Result<ChainStore> {
    let path = config.data_dir.join(CHAIN_DIR_NAME);
    ChainStore::open(&path, store_config(config)).map_err(Error::ChainOpen)
}

/// Opens the ledger the configuration names: the embedded file `data_dir/ledger.sqlite`, or
/// PostgreSQL at `ledger.postgres_url` (migrations applied), with the shipped tokenomics.
pub async fn open_ledger(config: &NodeConfig) -> Result<AnyLedger> {
    let tokenomics = Tokenomics::shipped().map_err(Error::LedgerOpen)?;
    match config.ledger.backend {
        LedgerBackend::Embedded => {
            std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::DataFile {
                path: config.data_dir.clone(),
                source,
            })?;
            let path = config.data_dir.join(LEDGER_FILE_NAME);
            EmbeddedLedger::open_with(path, tokenomics, LedgerOptions::default())
                .await
                .map(AnyLedger::Embedded)
                .map_err(Error::LedgerOpen)
        }
        LedgerBackend::Postgres => {
            let url =
                config
                    .ledger
                    .postgres_url
                    .as_deref()
                    .ok_or_else(|| Error::ConfigInvalid {
                        path: "node.yaml".into(),
                        field: "ledger.postgres_url".to_owned(),
                        reason: "is required when ledger.backend is postgres".to_owned(),
                    })?;
            PgLedger::connect_with(url, tokenomics, LedgerOptions::default())
                .await
                .map(AnyLedger::Pg)
                .map_err(Error::LedgerOpen)
        }
    }
}

/// Rate-limit buckets of the expensive endpoints.
#[derive(Debug)]
pub(crate) struct Limits {
    pub per_ip: RateLimiter<IpAddr>,
    pub per_wallet: RateLimiter<WalletAddress>,
    pub free_tier: RateLimiter<IpAddr>,
}

/// What every handler shares. Built by [`AppState::new`] (configuration, sign-in store) and
/// the `with_*` methods for the parts a node may run without: the model, the ledger, the chain.
pub struct AppState {
    /// The configuration the node runs with.
    pub config: NodeConfig,
    started: Instant,
    pub(crate) auth: Auth,
    pub(crate) limits: Limits,
    pub(crate) metrics: Metrics,
    /// The model served; replaced when a new model's meta block arrives (`POST /blocks`).
    generator: RwLock<Option<Generator>>,
    /// Serializes reloads, so the last one started (the newest model) is the one left serving.
    reloading: tokio::sync::Mutex<()>,
    pub(crate) ledger: Option<Arc<AnyLedger>>,
    pub(crate) chain: Option<Arc<ChainStore>>,
    pub(crate) server_account: Option<LedgerAddress>,
    /// Token positions per `[layer][expert]` since start, for the expert dashboard.
    expert_uses: Mutex<Vec<Vec<u64>>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State for a node started now: opens the sign-in store and the token secret under
    /// `config.data_dir` (creating them on first start).
    pub fn new(config: NodeConfig) -> Result<Self> {
        let auth = Auth::open(&config.data_dir, &config.api.auth)?;
        let minute = Duration::from_secs(60);
        let limits = Limits {
            per_ip: RateLimiter::new(config.api.rate_limit.per_ip_per_minute, minute),
            per_wallet: RateLimiter::new(config.api.rate_limit.per_wallet_per_minute, minute),
            free_tier: RateLimiter::new(
                config.api.free_tier.requests_per_hour_per_ip,
                Duration::from_secs(3600),
            ),
        };
        Ok(Self {
            config,
            started: Instant::now(),
            auth,
            limits,
            metrics: Metrics::new(),
            generator: RwLock::new(None),
            reloading: tokio::sync::Mutex::new(()),
            ledger: None,
            chain: None,
            server_account: None,
            expert_uses: Mutex::new(Vec::new()),
        })
    }

    /// State for a node with its chain store ([`open_chain`]) and ledger ([`open_ledger`]) open,
    /// but no model yet: add one with [`Self::with_generator`].
    pub async fn open(config: NodeConfig) -> Result<Self> {
        let chain_config = config.clone();
        let chain = tokio::task::spawn_blocking(move || open_chain(&chain_config))
            .await
            .map_err(|error| Error::Internal {
                reason: format!("opening the chain store: {error}"),
            })??;
        let ledger = open_ledger(&config).await?;
        Ok(Self::new(config)?
            .with_chain(Arc::new(chain))
            .with_ledger(Arc::new(ledger)))
    }

    /// On a chain that holds no model yet, publishes the untrained seed model signed by `key`
    /// (`blyan_moe::ensure_model`); on one that holds a model, writes nothing. Needs the chain
    /// store ([`Self::open`]).
    pub async fn ensure_seed_model(&self, key: &blyan_chain::AuthorKey) -> Result<()> {
        let chain = self.chain.clone().ok_or(Error::ChainUnavailable)?;
        let key = key.clone();
        // `ensure_model` itself logs, as a warning, when it writes the untrained seed.
        tokio::task::spawn_blocking(move || blyan_moe::ensure_model(&chain, &key))
            .await
            .map_err(|error| Error::Internal {
                reason: format!("publishing the seed model: {error}"),
            })?
            .map_err(Error::ModelLoad)?;
        Ok(())
    }

    /// Serves the newest model on the chain (`blyan_moe::Generator::from_chain`), with the
    /// expert cache budget of `cache.expert_bytes_max`. A chain that holds no model leaves the
    /// node without one (chat answers `model_unavailable`), with a warning in the log.
    pub async fn load_model(self) -> Result<Self> {
        match self.newest_model().await? {
            Some(generator) => Ok(self.with_generator(generator)),
            None => {
                tracing::warn!("the chain holds no model: chat is unavailable");
                Ok(self)
            }
        }
    }

    /// Loads the newest model on the chain, logging whether it is the untrained seed.
    async fn newest_model(&self) -> Result<Option<Generator>> {
        let chain = self.chain.clone().ok_or(Error::ChainUnavailable)?;
        let options = ModelOptions {
            expert_bytes_max: self.config.cache.expert_bytes_max,
            ..ModelOptions::default()
        };
        let loaded = tokio::task::spawn_blocking(move || Generator::from_chain(chain, options))
            .await
            .map_err(|error| Error::Internal {
                reason: format!("loading the model: {error}"),
            })?;
        match loaded {
            Ok(generator) => {
                let info = generator.info();
                if info.untrained {
                    tracing::warn!(model = %info.description, "serving an UNTRAINED seed model");
                } else {
                    tracing::info!(model = %info.description, "serving the model from the chain");
                }
                Ok(Some(generator))
            }
            Err(MoeError::NoModelOnChain) => Ok(None),
            Err(error) => Err(Error::ModelLoad(error)),
        }
    }

    /// Switches to the newest model on the chain (after a meta block arrived). Requests already
    /// generating finish on the model they started with. If the new model cannot be loaded, the
    /// node keeps serving the old one and logs why.
    pub async fn reload_model(&self) {
        let _one_at_a_time = self.reloading.lock().await;
        match self.newest_model().await {
            Ok(Some(generator)) => {
                *self
                    .generator
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(generator);
            }
            Ok(None) => {}
            Err(error) => {
                tracing::error!(%error, "the chain's newest model does not load: serving the previous one");
            }
        }
    }

    /// Drops `expert` from the served model's cache (after a new version of it arrived), so its
    /// next use loads the current version from the chain.
    pub async fn forget_expert(&self, expert: ExpertName) {
        let Some(generator) = self.generator() else {
            return;
        };
        // Evicting waits for the model between two forward passes.
        let forgotten = tokio::task::spawn_blocking(move || generator.forget_expert(expert)).await;
        match forgotten {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, %expert, "could not evict the expert"),
            Err(error) => tracing::error!(%error, %expert, "evicting the expert failed"),
        }
    }

    /// Serves chat with `generator` (without one, chat answers `model_unavailable`).
    #[must_use]
    pub fn with_generator(self, generator: Generator) -> Self {
        *self
            .generator
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(generator);
        self
    }

    /// Charges signed-in callers through `ledger` (without one, only the free tier chats and
    /// balances answer `ledger_unavailable`).
    #[must_use]
    pub fn with_ledger(mut self, ledger: Arc<AnyLedger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// The chain store, for the explorer and expert versions.
    #[must_use]
    pub fn with_chain(mut self, chain: Arc<ChainStore>) -> Self {
        self.chain = Some(chain);
        self
    }

    /// The account paid the serving share of each captured fee (the ledger's reward pool when
    /// not set).
    #[must_use]
    pub fn with_server_account(mut self, account: LedgerAddress) -> Self {
        self.server_account = Some(account);
        self
    }

    /// The generator serving chat now, if any (a handle: the model may be replaced after).
    pub fn generator(&self) -> Option<Generator> {
        self.generator
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The ledger, if any.
    pub fn ledger(&self) -> Option<&Arc<AnyLedger>> {
        self.ledger.as_ref()
    }

    /// The chain store, if any.
    pub fn chain(&self) -> Option<&Arc<ChainStore>> {
        self.chain.as_ref()
    }

    /// Copies the model's cache counters into the metrics (called before each scrape).
    pub(crate) fn refresh_model_metrics(&self) {
        if let Some(generator) = self.generator() {
            let stats = generator.cache_stats();
            self.metrics.set_expert_cache(stats.hits, stats.misses);
            let decode = generator.decode_stats();
            self.metrics.set_decode(decode.steps, decode.batches);
        }
    }

    /// Adds one request's expert usage to the totals.
    pub(crate) fn record_expert_usage(&self, usage: &ExpertUsage) {
        let mut totals = self
            .expert_uses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (layer, counts) in usage.tokens.iter().enumerate() {
            if totals.len() <= layer {
                totals.resize(layer + 1, Vec::new());
            }
            let row = &mut totals[layer];
            if row.len() < counts.len() {
                row.resize(counts.len(), 0);
            }
            for (slot, count) in row.iter_mut().zip(counts) {
                *slot = slot.saturating_add(u64::from(*count));
            }
        }
    }

    /// Token positions per `[layer][expert]` since start.
    pub(crate) fn expert_uses(&self) -> Vec<Vec<u64>> {
        self.expert_uses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Body of `GET /health`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Health {
    /// `ok` while the node serves.
    pub status: String,
    /// The node's version.
    pub version: String,
    /// Seconds since the node started.
    pub uptime_seconds: u64,
    /// `untrained seed` or `trained`; absent when no model is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Liveness and version.
#[utoipa::path(get, path = "/health", tag = "node", responses((status = 200, body = Health)))]
pub(crate) async fn health(State(state): State<Arc<AppState>>) -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: state.started.elapsed().as_secs(),
        model: state
            .generator()
            .map(|generator| model_label(generator.info().untrained).to_owned()),
    })
}

/// Every route of the node, with its table (see [`ApiRoutes`]).
pub fn api_routes() -> ApiRoutes {
    ApiRoutes::new()
        .get("/health", health)
        .get("/metrics", metrics::metrics)
        .get("/openapi.json", openapi::openapi_json)
        .get("/", page::index)
        .get("/assets/{file}", page::asset)
        .get("/auth/nonce", auth::nonce)
        .post("/auth/verify", auth::verify)
        .post("/auth/refresh", auth::refresh)
        .post("/auth/logout", auth::logout)
        .get("/auth/session", auth::session)
        .post("/auth/api-keys", auth::create_api_key)
        .get("/auth/api-keys", auth::list_api_keys)
        .delete("/auth/api-keys/{id}", auth::revoke_api_key)
        .post("/chat", chat_routes::chat)
        .post("/chat/stream", chat_routes::chat_stream)
        .post("/v1/chat/completions", chat_routes::completions)
        .get("/v1/models", chat_routes::models)
        .get("/model", node_routes::model)
        .get("/chain/{chain}", chain_routes::chain_summary)
        .get("/chain/experts/{id}", chain_routes::expert_version)
        .get("/chain/{chain}/blocks", chain_routes::blocks)
        .get("/blocks/{hash}", chain_routes::block)
        .get("/blocks/{hash}/payload", chain_routes::payload)
        .post_with_body_limit("/blocks", BLOCK_SUBMIT_BYTES_MAX, chain_routes::submit)
        .get("/experts", node_routes::experts)
        .get("/experts/{id}", node_routes::expert)
        .get("/pol/status", node_routes::pol_status)
        .get("/wallet/balance", node_routes::balance)
        .get("/wallet/history", node_routes::history)
}

async fn not_found(uri: Uri) -> Error {
    Error::NotFound {
        path: uri.path().chars().take(256).collect(),
    }
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

/// All routes of the node, ready to serve.
pub fn router(state: Arc<AppState>) -> Router {
    let (routes, _) = api_routes().into_parts();
    let body_bytes_max = usize::try_from(state.config.api.body_bytes_max).unwrap_or(usize::MAX);
    routes
        .route_layer(from_fn_with_state(state.clone(), metrics::track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// A bound, not yet serving, HTTP server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
}

impl Server {
    /// Binds `state.config.listen`. When the config names no sign-in domain, the bound address
    /// becomes the one sign-in messages must name.
    pub async fn bind(state: AppState) -> Result<Self> {
        let addr = state.config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let bound = listener.local_addr().map_err(Error::Serve)?;
        state.auth.signin.accept_bound_address(bound);
        Ok(Self {
            listener,
            state: Arc::new(state),
        })
    }

    /// The address actually bound (differs from the config when it asked for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(Error::Serve)
    }

    /// The state the server's handlers share.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains open connections.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, "serving HTTP");
        let expiry = self
            .state
            .ledger
            .clone()
            .map(|ledger| tokio::spawn(expire_holds(ledger)));
        let service = router(self.state).into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(self.listener, service)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(Error::Serve);
        if let Some(expiry) = expiry {
            expiry.abort();
        }
        served
    }
}

/// Releases expired payment holds every [`HOLD_EXPIRY_PERIOD`], for as long as the server runs.
async fn expire_holds(ledger: Arc<AnyLedger>) {
    let mut ticks = tokio::time::interval(HOLD_EXPIRY_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match ledger.expire_holds().await {
            Ok(expired) if !expired.is_empty() => {
                tracing::info!(count = expired.len(), "released expired payment holds");
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "cannot expire payment holds"),
        }
    }
}

/// What `blyan-node serve` runs: opens the chain store and ledger ([`AppState::open`]),
/// publishes the untrained seed model signed by `seed_key` when given and the chain holds no
/// model ([`AppState::ensure_seed_model`]), loads the chain's model ([`AppState::load_model`]),
/// binds `config.listen` and serves until `shutdown` completes.
pub async fn serve(
    config: NodeConfig,
    seed_key: Option<&blyan_chain::AuthorKey>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let state = AppState::open(config).await?;
    if let Some(key) = seed_key {
        state.ensure_seed_model(key).await?;
    }
    let state = state.load_model().await?;
    Server::bind(state).await?.serve(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn health_answers_over_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = NodeConfig::defaults();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.data_dir = dir.path().to_owned();
        let server = Server::bind(AppState::new(config).unwrap()).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        let health: Health = reqwest::get(format!("http://{addr}/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health.status, "ok");
        assert_eq!(health.version, env!("CARGO_PKG_VERSION"));
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}
