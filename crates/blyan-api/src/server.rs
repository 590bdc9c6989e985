//! The HTTP server: the state handlers share, routing, binding, graceful shutdown, and the
//! node service that runs it ([`HttpService`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::Uri;
use axum::middleware::{from_fn, from_fn_with_state};
use blyan_api_types::Health;
use blyan_ledger::Ledger as _;
use blyan_node_core::{BoxError, ChatObserver, Node, NodeConfig, Service, Shutdown, model_label};
use blyan_primitives::Address;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use crate::auth::{self, Auth};
use crate::chain_routes;
use crate::chat_routes;
use crate::client_addr::{ClientBucket, TrustedProxies};
use crate::metrics::{self, Metrics};
use crate::node_routes;
use crate::openapi;
use crate::page;
use crate::rate_limit::RateLimiter;
use crate::request_id;
use crate::routes::ApiRoutes;
use crate::uploads::UploadLimits;
use crate::{Error, Result};

/// Rate-limit buckets of the expensive endpoints, and who the clients are.
#[derive(Debug)]
pub(crate) struct Limits {
    /// Requests per client bucket (an IPv4 address or an IPv6 /64).
    pub per_client: RateLimiter<ClientBucket>,
    pub per_wallet: RateLimiter<Address>,
    /// Free chats per client bucket.
    pub free_tier: RateLimiter<ClientBucket>,
    /// Free-tier tokens per hour, all clients together (one key).
    pub free_tier_tokens: RateLimiter<()>,
    /// Whose forwarding headers name the client.
    pub proxies: TrustedProxies,
}

/// What every handler shares: the node (its state and chat session), and what only HTTP needs:
/// sign-in, rate limits and metrics.
pub struct AppState {
    node: Arc<Node>,
    pub(crate) auth: Auth,
    pub(crate) limits: Limits,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) uploads: UploadLimits,
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
        let hour = Duration::from_secs(3600);
        let limits = Limits {
            per_client: RateLimiter::new(
                u64::from(config.api.rate_limit.per_ip_per_minute),
                minute,
            ),
            per_wallet: RateLimiter::new(
                u64::from(config.api.rate_limit.per_wallet_per_minute),
                minute,
            ),
            free_tier: RateLimiter::new(
                u64::from(config.api.free_tier.requests_per_hour_per_ip),
                hour,
            ),
            free_tier_tokens: RateLimiter::new(config.api.free_tier.tokens_per_hour, hour),
            proxies: TrustedProxies::new(
                config.api.trusted_proxies.clone(),
                config.api.forwarded_header,
            ),
        };
        let uploads = UploadLimits::new(&config.api.uploads);
        Ok(Self {
            node,
            auth,
            limits,
            metrics: Arc::new(Metrics::new()),
            uploads,
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
        .post("/blocks", chain_routes::submit)
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
        .post("/datasets", crate::datasets_routes::submit)
        .get("/datasets", crate::datasets_routes::list)
        .get("/datasets/progress", crate::datasets_routes::progress)
        .get("/datasets/{hash}", crate::datasets_routes::sample)
        .post("/datasets/{hash}/commit", crate::datasets_routes::commit)
        .post("/datasets/reveal", crate::datasets_routes::reveal)
}

async fn not_found(uri: Uri) -> Error {
    Error::NotFound {
        path: uri.path().chars().take(256).collect(),
    }
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

/// Prunes at once and then every [`auth::AUTH_PRUNE_PERIOD`], until dropped: the sign-in
/// store, then the ledger's idempotency keys and unauthorized quotes older than
/// `ledger.idempotency_retention_hours` (a request retried within it is still recognised). A
/// failed prune is logged and retried at the next period.
async fn prune_periodically(state: &AppState) {
    let mut ticks = tokio::time::interval(auth::AUTH_PRUNE_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = state.auth.prune().await {
            tracing::warn!(%error, "sign-in store prune failed");
        }
        let Some(ledger) = state.node().ledger() else {
            continue;
        };
        let retention = state.config().ledger.idempotency_retention();
        match ledger.prune(retention).await {
            Ok(pruned) => tracing::debug!(
                idempotency_keys = pruned.idempotency_keys,
                quotes = pruned.quotes,
                before_ms = pruned.before_ms,
                "ledger pruned"
            ),
            Err(error) => tracing::warn!(%error, "ledger prune failed"),
        }
    }
}

/// All routes of the node, ready to serve. Every request runs in a `http_request` span carrying
/// its request id (taken from `x-request-id` or generated, and echoed back); a request body that
/// sends nothing for `api.server.body_idle_timeout_seconds` fails with a timeout.
pub fn router(state: Arc<AppState>) -> Router {
    let (routes, _) = api_routes().into_parts();
    let body_bytes_max = usize::try_from(state.config().api.body_bytes_max).unwrap_or(usize::MAX);
    let body_idle_timeout =
        Duration::from_secs(state.config().api.server.body_idle_timeout_seconds);
    routes
        .route_layer(from_fn_with_state(state.clone(), metrics::track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_bytes_max))
        // A body that sends nothing for this long is cut: a slow-loris upload ends.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_idle_timeout,
        ))
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

    /// Serves until `shutdown` completes, then drains open connections: each finishes the
    /// request it is serving and closes. Meanwhile the sign-in store and the ledger (its
    /// idempotency keys and unauthorized quotes older than `ledger.idempotency_retention_hours`)
    /// are pruned at start and every [`crate::AUTH_PRUNE_PERIOD`].
    ///
    /// Each connection speaks HTTP/1.1 with `api.server.header_read_timeout_seconds` to send a
    /// request's headers; at most `api.server.connections_max` are served at once (the next
    /// waits in the listen backlog), and a request body idle for
    /// `api.server.body_idle_timeout_seconds` is cut ([`router`]).
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, "serving HTTP");
        let settings = self.state.config().api.server.clone();
        let connections_max = settings.connections_max;
        let connections = Arc::new(Semaphore::new(connections_max as usize));
        let header_read_timeout = Duration::from_secs(settings.header_read_timeout_seconds);
        let auth_state = Arc::clone(&self.state);
        let app = router(self.state);
        let (stopping, stop_requested) = tokio::sync::watch::channel(false);
        let mut shutdown = std::pin::pin!(shutdown);
        // Pruning never ends by itself; it stops when accepting does.
        let mut pruning = std::pin::pin!(prune_periodically(&auth_state));
        loop {
            let permit = tokio::select! {
                () = &mut shutdown => break,
                () = &mut pruning => continue,
                permit = Arc::clone(&connections).acquire_owned() => {
                    permit.map_err(|error| Error::Internal { reason: error.to_string() })?
                }
            };
            let (stream, remote) = tokio::select! {
                () = &mut shutdown => break,
                () = &mut pruning => continue,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait, as hyper's examples do.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let app = app.clone();
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(remote));
                    app.clone().oneshot(request.map(axum::body::Body::new))
                });
            let mut stop_requested = stop_requested.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read_timeout);
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                let mut connection = std::pin::pin!(connection.with_upgrades());
                tokio::select! {
                    served = connection.as_mut() => {
                        if let Err(error) = served {
                            tracing::debug!(%remote, %error, "connection ended with an error");
                        }
                        return;
                    }
                    _ = stop_requested.changed() => connection.as_mut().graceful_shutdown(),
                }
                if let Err(error) = connection.await {
                    tracing::debug!(%remote, %error, "connection ended with an error");
                }
            });
        }
        let _ = stopping.send(true);
        // Every connection holds a permit until it closed: all of them back means drained.
        let _drained = connections
            .acquire_many(connections_max)
            .await
            .map_err(|error| Error::Internal {
                reason: error.to_string(),
            })?;
        Ok(())
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
