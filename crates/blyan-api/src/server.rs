//! The HTTP server: the state handlers share, routing, binding, graceful shutdown, and the
//! node service that runs it ([`HttpService`]).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::Uri;
use axum::middleware::{from_fn, from_fn_with_state};
use blyan_api_types::Health;
use blyan_node_core::{BoxError, ChatObserver, Node, NodeConfig, Service, Shutdown, model_label};
use blyan_primitives::Address;
use tokio::net::TcpListener;

use crate::auth::{self, Auth};
use crate::chain_routes::{self, BLOCK_SUBMIT_BYTES_MAX};
use crate::chat_routes;
use crate::metrics::{self, Metrics};
use crate::node_routes;
use crate::openapi;
use crate::page;
use crate::rate_limit::RateLimiter;
use crate::request_id;
use crate::routes::ApiRoutes;
use crate::{Error, Result};

/// Rate-limit buckets of the expensive endpoints.
#[derive(Debug)]
pub(crate) struct Limits {
    pub per_ip: RateLimiter<IpAddr>,
    pub per_wallet: RateLimiter<Address>,
    pub free_tier: RateLimiter<IpAddr>,
}

/// What every handler shares: the node (its state and chat session), and what only HTTP needs:
/// sign-in, rate limits and metrics.
pub struct AppState {
    node: Arc<Node>,
    pub(crate) auth: Auth,
    pub(crate) limits: Limits,
    pub(crate) metrics: Arc<Metrics>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// HTTP state for `node`: opens the sign-in store and the token secret under the node's
    /// `data_dir` (creating them on first start).
    pub fn new(node: Arc<Node>) -> Result<Self> {
        let config = node.config();
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
            node,
            auth,
            limits,
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// The node served.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        self.node.config()
    }

    /// Where chats report tokens, latencies and ledger calls: the metrics.
    pub(crate) fn chat_observer(&self) -> Arc<dyn ChatObserver> {
        Arc::clone(&self.metrics) as Arc<dyn ChatObserver>
    }

    /// Copies the model's cache counters into the metrics (called before each scrape).
    pub(crate) fn refresh_model_metrics(&self) {
        if let Some(generator) = self.node.generator() {
            let stats = generator.cache_stats();
            self.metrics.set_expert_cache(stats.hits, stats.misses);
            let decode = generator.decode_stats();
            self.metrics.set_decode(decode.steps, decode.batches);
        }
        self.metrics.set_learning(&self.node.learning_status());
    }
}

/// Liveness and version.
#[utoipa::path(get, path = "/health", tag = "node", responses((status = 200, body = Health)))]
pub(crate) async fn health(State(state): State<Arc<AppState>>) -> axum::Json<Health> {
    let generator = state.node.generator();
    let info = generator.as_ref().map(|generator| generator.info());
    axum::Json(Health {
        status: "ok".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: state.node.uptime().as_secs(),
        model: info.map(|info| model_label(info.untrained).to_owned()),
        model_description: info.map(|info| info.description.clone()),
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
        .get("/pol/claims/{hash}", node_routes::pol_claim)
        .get("/learning", node_routes::learning)
        .get("/p2p/peers", node_routes::p2p_peers)
        .get("/p2p/experts", node_routes::p2p_experts)
        .get("/wallet/balance", node_routes::balance)
        .get("/wallet/history", node_routes::history)
        .post("/faucet", crate::faucet::claim)
}

async fn not_found(uri: Uri) -> Error {
    Error::NotFound {
        path: uri.path().chars().take(256).collect(),
    }
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

/// All routes of the node, ready to serve. Every request runs in a `http_request` span carrying
/// its request id (taken from `x-request-id` or generated, and echoed back).
pub fn router(state: Arc<AppState>) -> Router {
    let (routes, _) = api_routes().into_parts();
    let body_bytes_max = usize::try_from(state.config().api.body_bytes_max).unwrap_or(usize::MAX);
    routes
        .route_layer(from_fn_with_state(state.clone(), metrics::track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        // Outermost, so every other layer's events (the trace layer's included) carry the id.
        .layer(from_fn(request_id::request_span))
        .with_state(state)
}

/// A bound, not yet serving, HTTP server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
}

impl Server {
    /// Binds `state.config().listen`. When the config names no sign-in domain, the bound address
    /// becomes the one sign-in messages must name.
    pub async fn bind(state: AppState) -> Result<Self> {
        let addr = state.config().listen;
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
        let service = router(self.state).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, service)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(Error::Serve)
    }
}

/// The HTTP API as one of the node's services (`blyan_node_core::Services::spawn`): serves a
/// bound [`Server`] until the node stops.
#[derive(Debug)]
pub struct HttpService {
    server: Server,
}

impl HttpService {
    /// The service serving `server`.
    pub fn new(server: Server) -> Self {
        Self { server }
    }
}

impl Service for HttpService {
    fn name(&self) -> &'static str {
        "http"
    }

    async fn run(self, _node: Arc<Node>, shutdown: Shutdown) -> std::result::Result<(), BoxError> {
        self.server
            .serve(shutdown.requested())
            .await
            .map_err(BoxError::from)
    }
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
        let state = AppState::new(Arc::new(Node::new(config))).unwrap();
        let server = Server::bind(state).await.unwrap();
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
