//! Prometheus metrics of the API: requests, latencies, tokens, ledger operations, expert cache,
//! and the background learner.
//!
//! Each [`AppState`] owns its own registry (no process-global recorder), so several nodes in one
//! test process do not mix their counts.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder as _, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use blyan_node_core::{ChatObserver, LedgerOutcome};

use crate::server::AppState;

/// Upper bounds, in seconds, of the request and first-token latency buckets.
const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The node's metric families.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    registry: Registry,
    /// HTTP requests by matched route, method and status.
    pub requests: IntCounterVec,
    /// Time to the response head, by route and method.
    pub request_seconds: HistogramVec,
    /// Tokens processed, by `kind` (prompt, completion) and `tier` (free, paid).
    pub tokens: IntCounterVec,
    /// Time from a chat request to its first generated token.
    pub first_token_seconds: Histogram,
    /// Chat generations running now.
    pub chats_active: IntGauge,
    /// Ledger calls by operation (quote, authorize, capture, release) and outcome.
    pub ledger_operations: IntCounterVec,
    /// Expert cache lookups that found the expert loaded, as last reported by the model.
    pub expert_cache_hits: IntGauge,
    /// Expert cache lookups that had to load the expert, as last reported by the model.
    pub expert_cache_misses: IntGauge,
    /// hits / (hits + misses), 0 before any lookup.
    pub expert_cache_hit_ratio: Gauge,
    /// Decoding steps the served model ran (one token of one request each).
    pub decode_steps: IntGauge,
    /// Forward passes those steps took (steps / passes is the mean batch size).
    pub decode_batches: IntGauge,
    /// Requests refused by a rate limit or the free-tier quota.
    pub rate_limited: IntCounter,
    /// The learner's optimizer steps (across restarts).
    pub learning_steps: IntGauge,
    /// The learner's training tokens (across restarts).
    pub learning_tokens: IntGauge,
    /// The learner's last training loss, nats per token.
    pub learning_train_loss: Gauge,
    /// The learner's last held-out loss, nats per token.
    pub learning_eval_loss: Gauge,
    /// Candidates the learner made.
    pub learning_candidates: IntGauge,
    /// Peers connected now (0 without a network).
    pub p2p_peers_connected: IntGauge,
    /// The network's counters since it started, by `counter` (bytes_in, blocks_synced, …).
    pub p2p_totals: IntGaugeVec,
    /// Remote experts since the network started, by `counter` (layer_calls, calls, failures,
    /// failovers, hedges, refused, served_experts, replicated).
    pub p2p_expert_totals: IntGaugeVec,
    /// Seconds spent in answered remote expert calls, in total.
    pub p2p_expert_call_seconds: Gauge,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are distinct constants: registering cannot collide");
    metric
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let registry = Registry::new_custom(Some("blyan".to_owned()), None)
            .expect("the prefix is a valid metric name");
        let latency = |name: &str, help: &str| {
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS_SECONDS.to_vec())
        };
        // Every constructor below gets constant, valid names and labels: they cannot fail.
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let request_seconds = HistogramVec::new(
            latency("http_request_duration_seconds", "Time to the response head"),
            &["route", "method"],
        )
        .expect("valid metric");
        let tokens = IntCounterVec::new(
            Opts::new("chat_tokens_total", "Tokens processed by kind and tier"),
            &["kind", "tier"],
        )
        .expect("valid metric");
        let first_token_seconds = Histogram::with_opts(latency(
            "chat_first_token_seconds",
            "Time from a chat request to its first token",
        ))
        .expect("valid metric");
        let chats_active =
            IntGauge::new("chats_active", "Chat generations running now").expect("valid metric");
        let ledger_operations = IntCounterVec::new(
            Opts::new(
                "ledger_operations_total",
                "Ledger calls by operation and outcome",
            ),
            &["operation", "outcome"],
        )
        .expect("valid metric");
        let expert_cache_hits = IntGauge::new(
            "expert_cache_hits",
            "Expert cache hits reported by the model",
        )
        .expect("valid metric");
        let expert_cache_misses = IntGauge::new(
            "expert_cache_misses",
            "Expert cache misses reported by the model",
        )
        .expect("valid metric");
        let expert_cache_hit_ratio =
            Gauge::new("expert_cache_hit_ratio", "Expert cache hits / lookups")
                .expect("valid metric");
        let decode_steps = IntGauge::new(
            "decode_steps",
            "Decoding steps run by the served model (one token of one request each)",
        )
        .expect("valid metric");
        let decode_batches = IntGauge::new(
            "decode_batches",
            "Forward passes the served model's decoding steps took (batched steps share one)",
        )
        .expect("valid metric");
        let rate_limited = IntCounter::new(
            "rate_limited_total",
            "Requests refused by a rate limit or the free-tier quota",
        )
        .expect("valid metric");
        let learning_steps = IntGauge::new(
            "learning_steps",
            "Optimizer steps of the node's learner (across restarts)",
        )
        .expect("valid metric");
        let learning_tokens = IntGauge::new(
            "learning_tokens",
            "Training tokens of the node's learner (across restarts)",
        )
        .expect("valid metric");
        let learning_train_loss = Gauge::new(
            "learning_train_loss",
            "The learner's last training loss, nats per token",
        )
        .expect("valid metric");
        let learning_eval_loss = Gauge::new(
            "learning_eval_loss",
            "The learner's last held-out loss, nats per token",
        )
        .expect("valid metric");
        let learning_candidates = IntGauge::new(
            "learning_candidates",
            "Candidate expert versions the learner made",
        )
        .expect("valid metric");
        let p2p_peers_connected =
            IntGauge::new("p2p_peers_connected", "Peers connected now").expect("valid metric");
        let p2p_totals = IntGaugeVec::new(
            Opts::new(
                "p2p_totals",
                "The network's counters since it started (bytes in and out, headers announced, accepted and rejected, blocks synced and refused, payload bytes fetched, bad ranges, failed requests)",
            ),
            &["counter"],
        )
        .expect("valid metric");
        let p2p_expert_totals = IntGaugeVec::new(
            Opts::new(
                "p2p_expert_totals",
                "Remote experts since the network started: layer calls, expert calls answered, failures, failovers, hedged requests, calls refused, experts served, experts replicated",
            ),
            &["counter"],
        )
        .expect("valid metric");
        let p2p_expert_call_seconds = Gauge::new(
            "p2p_expert_call_seconds",
            "Seconds spent in answered remote expert calls, in total",
        )
        .expect("valid metric");
        Self {
            requests: register(&registry, requests),
            request_seconds: register(&registry, request_seconds),
            tokens: register(&registry, tokens),
            first_token_seconds: register(&registry, first_token_seconds),
            chats_active: register(&registry, chats_active),
            ledger_operations: register(&registry, ledger_operations),
            expert_cache_hits: register(&registry, expert_cache_hits),
            expert_cache_misses: register(&registry, expert_cache_misses),
            expert_cache_hit_ratio: register(&registry, expert_cache_hit_ratio),
            decode_steps: register(&registry, decode_steps),
            decode_batches: register(&registry, decode_batches),
            rate_limited: register(&registry, rate_limited),
            learning_steps: register(&registry, learning_steps),
            learning_tokens: register(&registry, learning_tokens),
            learning_train_loss: register(&registry, learning_train_loss),
            learning_eval_loss: register(&registry, learning_eval_loss),
            learning_candidates: register(&registry, learning_candidates),
            p2p_peers_connected: register(&registry, p2p_peers_connected),
            p2p_totals: register(&registry, p2p_totals),
            p2p_expert_totals: register(&registry, p2p_expert_totals),
            p2p_expert_call_seconds: register(&registry, p2p_expert_call_seconds),
            registry,
        }
    }

    /// Records the expert cache's counters as the model reports them.
    pub(crate) fn set_expert_cache(&self, hits: u64, misses: u64) {
        let clamp = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.expert_cache_hits.set(clamp(hits));
        self.expert_cache_misses.set(clamp(misses));
        let lookups = hits.saturating_add(misses);
        // Precision loss above 2^53 lookups is irrelevant for a ratio.
        #[allow(clippy::cast_precision_loss)]
        let ratio = if lookups == 0 {
            0.0
        } else {
            hits as f64 / lookups as f64
        };
        self.expert_cache_hit_ratio.set(ratio);
    }

    /// Records the served model's decoding-step counters.
    pub(crate) fn set_decode(&self, steps: u64, batches: u64) {
        let clamp = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.decode_steps.set(clamp(steps));
        self.decode_batches.set(clamp(batches));
    }

    /// Records the learner's figures as its status reports them (losses stay 0 until known).
    pub(crate) fn set_learning(&self, status: &blyan_api_types::LearningStatus) {
        let clamp = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.learning_steps.set(clamp(status.steps));
        self.learning_tokens.set(clamp(status.tokens));
        self.learning_train_loss
            .set(status.last_train_loss.unwrap_or(0.0));
        self.learning_eval_loss
            .set(status.last_eval_loss.unwrap_or(0.0));
        self.learning_candidates.set(clamp(status.candidates_made));
    }

    /// Records the network's connected peers and counters.
    pub(crate) fn set_network(
        &self,
        connected: usize,
        counters: &blyan_api_types::NetworkCounters,
    ) {
        let clamp = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.p2p_peers_connected.set(clamp(connected as u64));
        for (name, value) in [
            ("bytes_in", counters.bytes_in),
            ("bytes_out", counters.bytes_out),
            ("headers_announced", counters.headers_announced),
            ("headers_accepted", counters.headers_accepted),
            ("headers_rejected", counters.headers_rejected),
            ("blocks_synced", counters.blocks_synced),
            ("blocks_refused", counters.blocks_refused),
            ("payload_bytes_fetched", counters.payload_bytes_fetched),
            ("bad_ranges", counters.bad_ranges),
            ("requests_failed", counters.requests_failed),
        ] {
            self.p2p_totals.with_label_values(&[name]).set(clamp(value));
        }
    }

    /// Records the remote experts' counters.
    pub(crate) fn set_experts(&self, experts: &blyan_node_core::ExpertsSnapshot) {
        let clamp = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        for (name, value) in [
            ("layer_calls", experts.layer_calls),
            ("calls", experts.calls),
            ("failures", experts.failures),
            ("failovers", experts.failovers),
            ("hedges", experts.hedges),
            ("refused", experts.refused),
            ("served_experts", experts.serving.len() as u64),
            ("replicated", experts.replicated.len() as u64),
        ] {
            self.p2p_expert_totals
                .with_label_values(&[name])
                .set(clamp(value));
        }
        self.p2p_expert_call_seconds
            .set(experts.latency_seconds_total);
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "cannot encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// What the node's chat session reports lands in these metrics.
impl ChatObserver for Metrics {
    fn ledger_operation(&self, operation: &'static str, outcome: LedgerOutcome) {
        self.ledger_operations
            .with_label_values(&[operation, outcome.name()])
            .inc();
    }

    fn first_token(&self, elapsed: Duration) {
        self.first_token_seconds.observe(elapsed.as_secs_f64());
    }

    fn generating(&self, running: bool) {
        if running {
            self.chats_active.inc();
        } else {
            self.chats_active.dec();
        }
    }

    fn tokens(&self, tier: &'static str, prompt: u64, completion: u64) {
        self.tokens
            .with_label_values(&["prompt", tier])
            .inc_by(prompt);
        self.tokens
            .with_label_values(&["completion", tier])
            .inc_by(completion);
    }
}

/// Middleware counting and timing every request by its matched route.
pub(crate) async fn track(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    if status == axum::http::StatusCode::TOO_MANY_REQUESTS {
        state.metrics.rate_limited.inc();
    }
    state
        .metrics
        .requests
        .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
        .inc();
    state
        .metrics
        .request_seconds
        .with_label_values(&[route.as_str(), method.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "node",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.refresh_model_metrics();
    if let Some(network) = state.node().network() {
        let connected = network.stats().connected_peers.load(Ordering::Relaxed) as usize;
        state.metrics.set_network(
            connected,
            &blyan_node_core::network_counters(network.stats()),
        );
    }
    if let Some(experts) = state.node().network_experts() {
        state.metrics.set_experts(&experts);
    }
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_family() {
        let metrics = Metrics::new();
        metrics
            .requests
            .with_label_values(&["/health", "GET", "200"])
            .inc();
        metrics
            .request_seconds
            .with_label_values(&["/health", "GET"])
            .observe(0.002);
        metrics
            .tokens
            .with_label_values(&["completion", "free"])
            .inc_by(5);
        metrics
            .ledger_operations
            .with_label_values(&["capture", "ok"])
            .inc();
        metrics.first_token_seconds.observe(0.1);
        metrics.set_expert_cache(3, 1);
        metrics.set_learning(&blyan_api_types::LearningStatus {
            enabled: true,
            steps: 40,
            tokens: 5120,
            last_train_loss: Some(2.5),
            last_eval_loss: Some(2.75),
            candidates_made: 2,
            ..Default::default()
        });
        let text = metrics.render();
        for family in [
            "blyan_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 1",
            "blyan_http_request_duration_seconds_bucket",
            "blyan_chat_tokens_total{kind=\"completion\",tier=\"free\"} 5",
            "blyan_ledger_operations_total{operation=\"capture\",outcome=\"ok\"} 1",
            "blyan_chat_first_token_seconds_count 1",
            "blyan_expert_cache_hit_ratio 0.75",
            "blyan_learning_steps 40",
            "blyan_learning_tokens 5120",
            "blyan_learning_train_loss 2.5",
            "blyan_learning_eval_loss 2.75",
            "blyan_learning_candidates 2",
        ] {
            assert!(text.contains(family), "missing {family} in\n{text}");
        }
    }
}
