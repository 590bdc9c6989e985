//! The OpenAPI 3.1 document of the node's API, served at `GET /openapi.json`.
//!
//! Each handler carries its `#[utoipa::path]`; [`ApiDoc`] lists them. A test checks that the
//! document's operations and the router's table ([`crate::ApiRoutes`]) are the same set.

use std::sync::Arc;

use axum::extract::State;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::server::AppState;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An access token from POST /auth/verify or an API key (bly_…)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document's static part: every route handler of this crate.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Blyan node API",
        description = "Chat with the on-chain mixture-of-experts model, pay in BLY, explore the chain. \
Errors are always `{\"error\": {\"code\": \"...\", \"message\": \"...\"}}` with a stable code."
    ),
    modifiers(&BearerAuth),
    paths(
        crate::server::health,
        crate::metrics::metrics,
        openapi_json,
        crate::page::index,
        crate::page::asset,
        crate::auth::nonce,
        crate::auth::verify,
        crate::auth::refresh,
        crate::auth::logout,
        crate::auth::session,
        crate::auth::create_api_key,
        crate::auth::list_api_keys,
        crate::auth::revoke_api_key,
        crate::chat_routes::chat,
        crate::chat_routes::chat_stream,
        crate::chat_routes::completions,
        crate::chat_routes::models,
        crate::node_routes::model,
        crate::chain_routes::chain_summary,
        crate::chain_routes::expert_version,
        crate::chain_routes::blocks,
        crate::chain_routes::block,
        crate::chain_routes::payload,
        crate::chain_routes::submit,
        crate::node_routes::experts,
        crate::node_routes::expert,
        crate::node_routes::pol_status,
        crate::node_routes::pol_claim,
        crate::datasets_routes::submit,
        crate::datasets_routes::list,
        crate::datasets_routes::progress,
        crate::datasets_routes::sample,
        crate::datasets_routes::commit,
        crate::datasets_routes::reveal,
        crate::node_routes::learning,
        crate::node_routes::p2p_peers,
        crate::node_routes::p2p_experts,
        crate::node_routes::balance,
        crate::node_routes::history,
        crate::faucet::claim,
    ),
    tags(
        (name = "node", description = "Health, metrics, this document"),
        (name = "page", description = "The web page"),
        (name = "auth", description = "Sign-In with Ethereum, tokens, API keys"),
        (name = "chat", description = "Chat with the on-chain model (free tier or paid)"),
        (name = "openai", description = "OpenAI-compatible endpoints"),
        (name = "chain", description = "Chain explorer and block submission"),
        (name = "experts", description = "Experts, their versions and cache; the learner; Proof-of-Learning"),
        (name = "wallet", description = "The signed-in wallet's balance and history; the test-network faucet"),
        (name = "network", description = "Peers, gossip, chain sync and payload transfer"),
        (name = "datasets", description = "Dataset samples, their gates (L1 teacher, L2 votes, L3 reviews) and history"),
    )
)]
pub struct ApiDoc;

/// The full OpenAPI document of the node.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "node",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub(crate) async fn openapi_json(
    State(_state): State<Arc<AppState>>,
) -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(openapi_document())
}
