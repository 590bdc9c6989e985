//! The crate's one error type, and how each variant answers over HTTP.
//!
//! Every refusal the API gives is a variant here; [`Error::code`] is its stable machine-readable
//! name (clients branch on it, so a code is never renamed) and the body is always
//! `{"error": {"code": "...", "message": "..."}}` ([`blyan_api_types::ErrorBody`]). The node
//! library's errors come in through `From`: a chat refusal ([`ChatError`]) becomes the variant
//! with its code, a refused block becomes [`Error::BlockRefused`] with the `block_*` code of the
//! rule it breaks, and a start-up or state failure ([`NodeError`]) answers `internal`.

use std::path::PathBuf;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use blyan_api_types::ErrorBody;
use blyan_node_core::{ChatError, Error as NodeError};

/// Errors of the node's HTTP API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The node library failed: at start (config, stores, model) or reading its state.
    #[error(transparent)]
    Node(NodeError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP server stopped with an I/O error.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    /// A file of the API's own under the data directory (the sign-in store, the token
    /// secret) could not be read or written.
    #[error("data file {path}: {source}")]
    DataFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The API's own store (sessions, API keys) failed.
    #[error("auth store: {0}")]
    AuthStore(#[from] rusqlite::Error),
    /// The sign-in store's schema could not be brought up to date.
    #[error("auth store migration: {0}")]
    AuthStoreMigration(#[from] refinery::Error),
    /// A JSON body that does not parse or does not match the request's schema.
    #[error("malformed JSON body: {reason}")]
    MalformedJson {
        /// The parser's explanation.
        reason: String,
    },
    /// A request body above `api.body_bytes_max`.
    #[error("request body exceeds {limit_bytes} bytes")]
    BodyTooLarge {
        /// The limit.
        limit_bytes: u64,
    },
    /// A request that parses but asks for something impossible.
    #[error("invalid request: {field}: {reason}")]
    InvalidRequest {
        /// The offending field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// No route has this path.
    #[error("no route {path}")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The sign-in nonce was never issued by this node (or was forgotten after expiring).
    #[error("unknown sign-in nonce")]
    NonceUnknown,
    /// The sign-in nonce was issued but its lifetime has passed.
    #[error("sign-in nonce expired")]
    NonceExpired,
    /// The sign-in nonce was already used: a replayed message or signature.
    #[error("sign-in nonce already used")]
    NonceReplayed,
    /// The sign-in message is not an EIP-4361 message.
    #[error("malformed sign-in message: {reason}")]
    SiweMalformed {
        /// The parser's explanation.
        reason: String,
    },
    /// The message names another site: it was signed for `got`, this node is `expected`.
    #[error("sign-in message is for domain {got}, this node accepts {expected}")]
    SiweDomainMismatch {
        /// The message's domain.
        got: String,
        /// The domains this node accepts.
        expected: String,
    },
    /// The message's URI does not point at its domain.
    #[error("sign-in message URI {uri} does not belong to domain {domain}")]
    SiweUriMismatch {
        /// The message's URI.
        uri: String,
        /// The message's domain.
        domain: String,
    },
    /// The message names another chain id.
    #[error("sign-in message is for chain id {got}, expected {expected}")]
    SiweChainIdMismatch {
        /// The message's chain id.
        got: u64,
        /// The node's.
        expected: u64,
    },
    /// The message's issued-at time is in the future or older than its nonce allows.
    #[error("sign-in message issued-at {issued_at} is not within the nonce's lifetime")]
    SiweIssuedAtInvalid {
        /// The message's issued-at time.
        issued_at: String,
    },
    /// The message's expiration time has passed.
    #[error("sign-in message expired at {expiration}")]
    SiweExpired {
        /// The message's expiration time.
        expiration: String,
    },
    /// The message's not-before time has not come yet.
    #[error("sign-in message is not valid before {not_before}")]
    SiweNotYetValid {
        /// The message's not-before time.
        not_before: String,
    },
    /// The signature does not recover to the message's address.
    #[error("signature does not match the sign-in message's address")]
    BadSignature,
    /// A smart-contract wallet signature (EIP-1271 / EIP-6492): checking it needs an Ethereum RPC
    /// this node does not have, so only externally owned accounts can sign in.
    #[error(
        "contract wallet signatures ({kind}) cannot be verified by this node; sign with an externally owned account"
    )]
    ContractWalletUnsupported {
        /// Which kind was recognised.
        kind: &'static str,
    },
    /// The endpoint needs a signed-in wallet and no credentials came.
    #[error("sign-in required: send `Authorization: Bearer <token or API key>`")]
    TokenMissing,
    /// The access token is malformed, forged, tampered with, or for another audience.
    #[error("invalid access token: {reason}")]
    TokenInvalid {
        /// Why it was refused.
        reason: String,
    },
    /// The access token's lifetime has passed; use the refresh token.
    #[error("access token expired")]
    TokenExpired,
    /// The access token's session was signed out.
    #[error("session signed out")]
    TokenRevoked,
    /// The refresh token is unknown, expired, already used or signed out.
    #[error("invalid refresh token")]
    RefreshInvalid,
    /// The API key is unknown or revoked.
    #[error("invalid API key")]
    ApiKeyInvalid,
    /// Too many requests from this caller; `retry_after_seconds` says when one will be accepted.
    #[error("rate limit of {scope} exceeded; retry after {retry_after_seconds} s")]
    RateLimited {
        /// `ip` or `wallet`.
        scope: &'static str,
        /// Seconds until the next request is accepted.
        retry_after_seconds: u64,
    },
    /// The anonymous free tier's quota is used up: this client's (`scope` `client`: its IPv4
    /// address or IPv6 /64) or the whole node's hourly token budget (`scope` `node`).
    #[error(
        "free tier quota of this {scope} used up; retry after {retry_after_seconds} s or sign in"
    )]
    FreeTierExhausted {
        /// `client` or `node`.
        scope: &'static str,
        /// Seconds until the next free request is accepted.
        retry_after_seconds: u64,
    },
    /// The node is generating as many chats as `api.generations_concurrent_max` allows, or
    /// as many free ones as `api.free_tier.generations_concurrent_max` does.
    #[error(
        "the node is generating {generations} {tier} chats, its most at once; retry after {retry_after_seconds} s"
    )]
    GenerationsBusy {
        /// `free` when the free tier's share of the pool is full, else `paid and free`.
        tier: &'static str,
        /// The configured most.
        generations: u32,
        /// Seconds a client should wait.
        retry_after_seconds: u64,
    },
    /// The operation needs a wallet's sign-in session (an access token); the credential sent
    /// (an API key) may not do it, so that a leaked key cannot mint or revoke keys.
    #[error("{action} needs a wallet sign-in session (an access token), not an API key")]
    SessionRequired {
        /// What was attempted.
        action: &'static str,
    },
    /// A secret file under the data directory is readable or writable by others than its
    /// owner; the node refuses to use a secret that may have leaked.
    #[error(
        "secret file {path} has mode {mode:o}, wider than 600: run `chmod 600` on it (and rotate it if others could read it)"
    )]
    SecretFileExposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The free tier is turned off on this node: sign in to chat.
    #[error("this node has no free tier; sign in with a wallet")]
    FreeTierDisabled,
    /// The prompt leaves no room for a completion in `context_tokens_max` (`GET /model`).
    #[error(
        "prompt is {tokens} tokens, the most accepted is {max} (context_tokens_max {} minus one completion token)",
        max + 1
    )]
    PromptTooLong {
        /// Tokens in the prompt.
        tokens: u64,
        /// The limit.
        max: u64,
    },
    /// A paid request's prompt plus `max_tokens` exceed `context_tokens_max` (`GET /model`).
    #[error(
        "prompt of {prompt_tokens} tokens plus max_tokens {completion_tokens} exceeds context_tokens_max {context_tokens_max}"
    )]
    ContextTooLong {
        /// Tokens in the prompt.
        prompt_tokens: u64,
        /// The completion tokens asked for.
        completion_tokens: u64,
        /// The limit on their sum.
        context_tokens_max: u64,
    },
    /// The request names a model this node does not serve.
    #[error("unknown model `{model}`; this node serves `{served}`")]
    UnknownModel {
        /// The name asked for.
        model: String,
        /// The name served.
        served: &'static str,
    },
    /// No expert with this id in the served model.
    #[error("unknown expert `{id}`")]
    UnknownExpert {
        /// The id asked for.
        id: String,
    },
    /// The wallet cannot pay for the request's quoted tokens; nothing was charged.
    #[error("insufficient balance: {available} BLY available, {required} BLY required")]
    InsufficientBalance {
        /// Spendable balance, BLY.
        available: String,
        /// What the request would hold, BLY.
        required: String,
    },
    /// The ledger refused the payment for another reason; nothing was charged.
    #[error("payment refused: {reason}")]
    PaymentRefused {
        /// The ledger's reason.
        reason: String,
    },
    /// This node was started without a model to serve.
    #[error("no model is loaded on this node")]
    ModelUnavailable,
    /// This node was started without a ledger, or the ledger failed.
    #[error("ledger unavailable: {reason}")]
    LedgerUnavailable {
        /// Why.
        reason: String,
    },
    /// `POST /faucet` on a node whose faucet is off (`faucet.enabled: false`, the default).
    #[error("this node runs no faucet: ask its operator for a grant (blyan-node ledger grant)")]
    FaucetDisabled,
    /// The wallet already made its faucet claims for the day.
    #[error("this wallet made {claims} faucet claims today, at most {max} per day")]
    FaucetWalletLimit {
        /// Claims made today.
        claims: u32,
        /// The limit.
        max: u32,
        /// Seconds until the next UTC day.
        retry_after_seconds: u64,
    },
    /// The faucet handed out its daily total.
    #[error("the faucet handed out its daily total of {cap} BLY")]
    FaucetDailyCap {
        /// The daily total, BLY.
        cap: String,
        /// Seconds until the next UTC day.
        retry_after_seconds: u64,
    },
    /// The treasury has nothing left to grant (its allocation or its balance is spent).
    #[error("the faucet is empty: {reason}")]
    FaucetEmpty {
        /// The ledger's reason.
        reason: String,
    },
    /// This node was started without a chain store.
    #[error("no chain store is open on this node")]
    ChainUnavailable,
    /// This node runs no network (`p2p.enabled` is off).
    #[error("this node runs no network: start it with --p2p-listen or --peer")]
    NetworkUnavailable,
    /// The chain store failed (an I/O or database error, not the request's fault).
    #[error("the chain store failed")]
    ChainFailed,
    /// The chain store's disk is at its free-space floor (`chain.free_bytes_min`) or ran out of
    /// space: new blocks are refused until space is freed, reads go on.
    #[error(
        "the node's disk is full: new blocks are refused until space is freed; reads still work"
    )]
    DiskFull,
    /// No block with this hash is stored.
    #[error("no block {hash}")]
    BlockNotFound {
        /// The hash asked for.
        hash: String,
    },
    /// A submitted block breaks a validation rule; `code` names the rule (`block_unknown_parent`,
    /// `block_bad_signature`, …) and nothing was stored.
    #[error("block refused: {reason}")]
    BlockRefused {
        /// The rule's stable code.
        code: &'static str,
        /// Whether it conflicts with a stored block (409) rather than being invalid (422).
        conflict: bool,
        /// The store's explanation, naming the hashes involved.
        reason: String,
    },
    /// Every upload permit (`api.uploads.concurrent_max`) is taken; retry shortly.
    #[error("{concurrent_max} uploads are in progress already; retry shortly")]
    UploadsBusy {
        /// The limit.
        concurrent_max: u32,
    },
    /// The block's author used up its hourly upload quota; nothing was read of the payload.
    #[error(
        "author {author} may upload {bytes_per_hour} payload bytes per hour; {bytes} more fit \
         in {retry_after_seconds} s"
    )]
    UploadQuotaExceeded {
        /// The block's (verified) author.
        author: String,
        /// The payload bytes the block announced.
        bytes: u64,
        /// The quota (`api.uploads.bytes_per_hour_per_author`).
        bytes_per_hour: u64,
        /// Seconds until they fit.
        retry_after_seconds: u64,
    },
    /// The upload's body sent nothing for `api.uploads.body_idle_timeout_seconds`; it was cut
    /// and nothing was stored.
    #[error("the upload sent nothing for {idle_seconds} s after {received_bytes} bytes")]
    UploadIdle {
        /// The timeout.
        idle_seconds: u64,
        /// Body bytes received before it stalled.
        received_bytes: u64,
    },
    /// The upload's body ended before the payload its header announced; nothing was stored.
    #[error("the upload ended after {received} of {expected} payload bytes")]
    UploadTruncated {
        /// Payload bytes received.
        received: u64,
        /// Payload bytes the header announced.
        expected: u64,
    },
    /// The upload's body carried more than the payload its header announced; nothing was stored.
    #[error("the upload carries more than the {expected} payload bytes its header announced")]
    UploadOverrun {
        /// Payload bytes the header announced.
        expected: u64,
    },
    /// The upload's body failed to arrive (the connection broke); nothing was stored.
    #[error("the upload's body broke off after {received_bytes} bytes: {reason}")]
    UploadInterrupted {
        /// Body bytes received.
        received_bytes: u64,
        /// The transport's report.
        reason: String,
    },
    /// The block's payload is being uploaded (or downloaded from a peer) already.
    #[error("block {block} is being uploaded already")]
    UploadInProgress {
        /// The block.
        block: String,
    },
    /// A Proof-of-Learning claim whose author cannot lock the bond; nothing was stored.
    #[error("the claim's bond cannot be locked: {reason}")]
    BondUnpaid {
        /// The ledger's refusal.
        reason: String,
    },
    /// A dataset request refused by a gate (L0, schema, vote rules, stake); nothing was
    /// appended. `code` is the refusal's (`licence`, `reveal_mismatch`, …).
    #[error("{message}")]
    DatasetRefused {
        /// The refusal's stable code.
        code: &'static str,
        /// Why, in words.
        message: String,
    },
    /// An internal task failed.
    #[error("internal failure: {reason}")]
    Internal {
        /// What failed.
        reason: String,
    },
    /// The model failed while generating.
    #[error("generation failed: {reason}")]
    Generation {
        /// The model's error.
        reason: String,
    },
}

/// Result of the API layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The stable machine-readable code of this error, sent as `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Node(
                NodeError::ConfigRead { .. }
                | NodeError::ConfigInvalid { .. }
                | NodeError::Logging(_),
            ) => "config",
            Self::Node(_)
            | Self::Bind { .. }
            | Self::Serve(_)
            | Self::DataFile { .. }
            | Self::SecretFileExposed { .. }
            | Self::AuthStore(_)
            | Self::AuthStoreMigration(_) => "internal",
            Self::MalformedJson { .. } => "malformed_json",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::NotFound { .. } => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::NonceUnknown => "nonce_unknown",
            Self::NonceExpired => "nonce_expired",
            Self::NonceReplayed => "nonce_replayed",
            Self::SiweMalformed { .. } => "siwe_malformed",
            Self::SiweDomainMismatch { .. } => "siwe_domain_mismatch",
            Self::SiweUriMismatch { .. } => "siwe_uri_mismatch",
            Self::SiweChainIdMismatch { .. } => "siwe_chain_id_mismatch",
            Self::SiweIssuedAtInvalid { .. } => "siwe_issued_at_invalid",
            Self::SiweExpired { .. } => "siwe_expired",
            Self::SiweNotYetValid { .. } => "siwe_not_yet_valid",
            Self::BadSignature => "bad_signature",
            Self::ContractWalletUnsupported { .. } => "contract_wallet_unsupported",
            Self::TokenMissing => "token_missing",
            Self::TokenInvalid { .. } => "token_invalid",
            Self::TokenExpired => "token_expired",
            Self::TokenRevoked => "token_revoked",
            Self::RefreshInvalid => "refresh_invalid",
            Self::ApiKeyInvalid => "api_key_invalid",
            Self::RateLimited { .. } => "rate_limited",
            Self::FreeTierExhausted { .. } => "free_tier_exhausted",
            Self::GenerationsBusy { .. } => "generations_busy",
            Self::SessionRequired { .. } => "session_required",
            Self::FreeTierDisabled => "free_tier_disabled",
            Self::PromptTooLong { .. } => "prompt_too_long",
            // OpenAI's code for the same refusal.
            Self::ContextTooLong { .. } => "context_length_exceeded",
            Self::UnknownModel { .. } => "unknown_model",
            Self::UnknownExpert { .. } => "unknown_expert",
            Self::InsufficientBalance { .. } => "insufficient_balance",
            Self::PaymentRefused { .. } => "payment_refused",
            Self::ModelUnavailable => "model_unavailable",
            Self::LedgerUnavailable { .. } => "ledger_unavailable",
            Self::FaucetDisabled => "faucet_disabled",
            Self::FaucetWalletLimit { .. } => "faucet_wallet_limit",
            Self::FaucetDailyCap { .. } => "faucet_daily_cap",
            Self::FaucetEmpty { .. } => "faucet_empty",
            Self::ChainUnavailable => "chain_unavailable",
            Self::NetworkUnavailable => "network_unavailable",
            Self::Generation { .. } => "generation_failed",
            Self::ChainFailed => "chain_failed",
            Self::DiskFull => "disk_full",
            Self::BlockNotFound { .. } => "block_not_found",
            Self::BlockRefused { code, .. } => code,
            Self::BondUnpaid { .. } => "bond_unpaid",
            Self::DatasetRefused { code, .. } => code,
            Self::UploadsBusy { .. } => "uploads_busy",
            Self::UploadQuotaExceeded { .. } => "upload_quota_exceeded",
            Self::UploadIdle { .. } => "upload_timeout",
            Self::UploadTruncated { .. } => "upload_truncated",
            Self::UploadOverrun { .. } => "upload_overrun",
            Self::UploadInterrupted { .. } => "upload_interrupted",
            Self::UploadInProgress { .. } => "upload_in_progress",
            Self::Internal { .. } => "internal",
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Node(_)
            | Self::Bind { .. }
            | Self::Serve(_)
            | Self::DataFile { .. }
            | Self::SecretFileExposed { .. }
            | Self::AuthStore(_)
            | Self::AuthStoreMigration(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::MalformedJson { .. }
            | Self::InvalidRequest { .. }
            | Self::SiweMalformed { .. }
            | Self::PromptTooLong { .. }
            | Self::ContextTooLong { .. } => StatusCode::BAD_REQUEST,
            Self::UnknownModel { .. } | Self::UnknownExpert { .. } => StatusCode::NOT_FOUND,
            Self::InsufficientBalance { .. }
            | Self::PaymentRefused { .. }
            | Self::BondUnpaid { .. } => StatusCode::PAYMENT_REQUIRED,
            Self::ModelUnavailable
            | Self::LedgerUnavailable { .. }
            | Self::ChainUnavailable
            | Self::NetworkUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Generation { .. } | Self::ChainFailed | Self::Internal { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::DiskFull => StatusCode::INSUFFICIENT_STORAGE,
            Self::FaucetDisabled | Self::FaucetEmpty { .. } => StatusCode::FORBIDDEN,
            Self::FaucetWalletLimit { .. } | Self::FaucetDailyCap { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::BlockNotFound { .. } => StatusCode::NOT_FOUND,
            Self::DatasetRefused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BlockRefused { conflict: true, .. } => StatusCode::CONFLICT,
            Self::BlockRefused {
                conflict: false, ..
            } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NonceUnknown
            | Self::NonceExpired
            | Self::NonceReplayed
            | Self::SiweDomainMismatch { .. }
            | Self::SiweUriMismatch { .. }
            | Self::SiweChainIdMismatch { .. }
            | Self::SiweIssuedAtInvalid { .. }
            | Self::SiweExpired { .. }
            | Self::SiweNotYetValid { .. }
            | Self::BadSignature
            | Self::ContractWalletUnsupported { .. }
            | Self::TokenMissing
            | Self::TokenInvalid { .. }
            | Self::TokenExpired
            | Self::TokenRevoked
            | Self::RefreshInvalid
            | Self::ApiKeyInvalid
            | Self::FreeTierDisabled => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } | Self::FreeTierExhausted { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::GenerationsBusy { .. } | Self::UploadsBusy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::SessionRequired { .. } => StatusCode::FORBIDDEN,
            Self::UploadQuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UploadIdle { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::UploadTruncated { .. }
            | Self::UploadOverrun { .. }
            | Self::UploadInterrupted { .. } => StatusCode::BAD_REQUEST,
            Self::UploadInProgress { .. } => StatusCode::CONFLICT,
        }
    }

    /// Seconds a client should wait before retrying, for the `Retry-After` header.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            Self::RateLimited {
                retry_after_seconds,
                ..
            }
            | Self::FreeTierExhausted {
                retry_after_seconds,
                ..
            }
            | Self::GenerationsBusy {
                retry_after_seconds,
                ..
            }
            | Self::FaucetWalletLimit {
                retry_after_seconds,
                ..
            }
            | Self::FaucetDailyCap {
                retry_after_seconds,
                ..
            }
            | Self::UploadQuotaExceeded {
                retry_after_seconds,
                ..
            } => Some(*retry_after_seconds),
            Self::UploadsBusy { .. } => Some(crate::uploads::UPLOADS_BUSY_RETRY_SECONDS),
            Self::UploadInProgress { .. } => Some(crate::uploads::UPLOADS_BUSY_RETRY_SECONDS),
            _ => None,
        }
    }

    /// The JSON body sent for this error.
    pub fn body(&self) -> ErrorBody {
        // Internal failures are logged in full but answered without details a caller could use.
        let message = if self.status().is_server_error()
            && !matches!(
                self,
                Self::ModelUnavailable
                    | Self::GenerationsBusy { .. }
                    | Self::UploadsBusy { .. }
                    | Self::LedgerUnavailable { .. }
                    | Self::ChainUnavailable
                    | Self::NetworkUnavailable
                    | Self::Generation { .. }
                    | Self::DiskFull
            ) {
            "internal error".to_owned()
        } else {
            self.to_string()
        };
        ErrorBody::new(self.code(), message)
    }
}

impl From<NodeError> for Error {
    fn from(error: NodeError) -> Self {
        match error {
            NodeError::ChainUnavailable => Self::ChainUnavailable,
            NodeError::ChainFailed(error) if error.is_out_of_space() => {
                tracing::warn!(%error, "block refused: the chain's disk is full");
                Self::DiskFull
            }
            NodeError::ChainFailed(error) => {
                tracing::error!(%error, "chain store failed");
                Self::ChainFailed
            }
            NodeError::DatasetRefused(refusal) => Self::DatasetRefused {
                code: refusal.code(),
                message: refusal.to_string(),
            },
            NodeError::BondUnpaid { source, .. } => Self::BondUnpaid {
                reason: source.to_string(),
            },
            NodeError::BlockRefused(error) => {
                let (code, conflict) = refusal_code(&error);
                Self::BlockRefused {
                    code,
                    conflict,
                    reason: error.to_string(),
                }
            }
            NodeError::UploadTruncated {
                received, expected, ..
            } => Self::UploadTruncated { received, expected },
            NodeError::UploadOverrun { expected, .. } => Self::UploadOverrun { expected },
            NodeError::UploadInProgress { block } => Self::UploadInProgress {
                block: block.to_string(),
            },
            error => Self::Node(error),
        }
    }
}

impl From<ChatError> for Error {
    fn from(error: ChatError) -> Self {
        match error {
            ChatError::InvalidRequest { field, reason } => Self::InvalidRequest { field, reason },
            ChatError::PromptTooLong { tokens, max } => Self::PromptTooLong { tokens, max },
            ChatError::ContextTooLong {
                prompt_tokens,
                completion_tokens,
                context_tokens_max,
            } => Self::ContextTooLong {
                prompt_tokens,
                completion_tokens,
                context_tokens_max,
            },
            ChatError::UnknownModel { model, served } => Self::UnknownModel { model, served },
            ChatError::ModelUnavailable => Self::ModelUnavailable,
            ChatError::FreeTierDisabled => Self::FreeTierDisabled,
            ChatError::InsufficientBalance {
                available,
                required,
            } => Self::InsufficientBalance {
                available,
                required,
            },
            ChatError::PaymentRefused { reason } => Self::PaymentRefused { reason },
            ChatError::LedgerUnavailable { reason } => Self::LedgerUnavailable { reason },
            ChatError::Generation { reason } => Self::Generation { reason },
            // `ChatError` is non-exhaustive: a refusal added later answers as a generic failure
            // until it gets its own code here.
            error => Self::Generation {
                reason: error.to_string(),
            },
        }
    }
}

/// The stable code of a block the store refused, and whether it conflicts with a stored one.
fn refusal_code(error: &blyan_chain::Error) -> (&'static str, bool) {
    use blyan_chain::Error as E;
    match error {
        E::Decode { .. } => ("block_malformed", false),
        E::UnsupportedVersion { .. } => ("block_unsupported_version", false),
        E::LimitExceeded { .. } => ("block_limit_exceeded", false),
        E::HeaderHashMismatch { .. } => ("block_hash_mismatch", false),
        E::MissingSignature { .. } => ("block_unsigned", false),
        E::BadSignature { .. } => ("block_bad_signature", false),
        E::WrongSigner { .. } => ("block_wrong_signer", false),
        E::PayloadLengthMismatch { .. } => ("block_payload_length_mismatch", false),
        E::PayloadHashMismatch { .. } => ("block_payload_hash_mismatch", false),
        E::PayloadTooLarge { .. } => ("block_payload_too_large", false),
        E::KindNotAllowed { .. } => ("block_kind_not_allowed", false),
        E::GenesisPlacement { .. } | E::GenesisMismatch { .. } => ("block_genesis", false),
        E::TooManyDependencies { .. } | E::DuplicateDependency { .. } => {
            ("block_bad_dependencies", false)
        }
        E::MetaInvalid { .. } => ("block_meta_invalid", false),
        E::InsufficientWork { .. } => ("block_insufficient_work", false),
        E::AlreadyExists { .. } => ("block_exists", true),
        E::UnknownParent { .. } => ("block_unknown_parent", false),
        E::ParentOnOtherChain { .. } => ("block_parent_on_other_chain", false),
        E::HeightGap { .. } => ("block_height_gap", false),
        E::Fork { .. } => ("block_fork", true),
        E::UnknownDependency { .. } => ("block_unknown_dependency", false),
        E::DependencyLater { .. } => ("block_dependency_later", false),
        E::TimestampBeforeParent { .. } => ("block_timestamp_before_parent", false),
        E::TimestampInFuture { .. } => ("block_timestamp_in_future", false),
        E::ExpertVersionMismatch { .. } => ("block_expert_version_mismatch", true),
        // Proof-of-Learning's own stable codes (`not_a_validator`, `duplicate_vote`, …).
        E::PolRejected { code, .. } => (code, false),
        E::PromotionInvalid { .. } => ("block_promotion_invalid", true),
        _ => ("block_invalid", false),
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, code = self.code(), "request failed");
        } else {
            tracing::debug!(error = %self, code = self.code(), "request refused");
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after_seconds() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_answers_507_and_a_future_block_422() {
        let full = Error::from(NodeError::ChainFailed(blyan_chain::Error::DiskFull {
            path: "/secret/chain".into(),
            free_bytes: 10,
            write_bytes: 20,
            floor_bytes: 1 << 30,
        }));
        assert_eq!(full.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(full.code(), "disk_full");
        assert!(
            !full.body().error.message.contains("/secret"),
            "no path leaks"
        );
        let future = Error::from(NodeError::BlockRefused(
            blyan_chain::Error::TimestampInFuture {
                block: blyan_chain::BlockHash([1; 32]),
                timestamp_ms: 2,
                now_ms: 1,
                skew_seconds_max: 0,
            },
        ));
        assert_eq!(future.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(future.code(), "block_timestamp_in_future");
    }

    #[test]
    fn rate_limits_carry_retry_after() {
        let response = Error::RateLimited {
            scope: "ip",
            retry_after_seconds: 7,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        let busy = Error::GenerationsBusy {
            tier: "free",
            generations: 8,
            retry_after_seconds: 2,
        };
        assert_eq!(busy.code(), "generations_busy");
        let body = serde_json::to_string(&busy.body()).unwrap();
        assert!(
            body.contains("generating 8 free chats"),
            "a busy node says so: {body}"
        );
        let response = busy.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn an_api_key_minting_keys_is_forbidden() {
        let error = Error::SessionRequired {
            action: "creating an API key",
        };
        assert_eq!(
            (error.code(), error.status()),
            ("session_required", StatusCode::FORBIDDEN)
        );
    }

    #[test]
    fn internal_errors_hide_their_details() {
        let error = Error::DataFile {
            path: "/secret/path".into(),
            source: std::io::Error::other("disk on fire"),
        };
        let body = serde_json::to_string(&error.body()).unwrap();
        assert!(!body.contains("secret"), "{body}");
        assert!(body.contains("\"internal\""), "{body}");
    }

    #[test]
    fn chat_refusals_keep_their_codes_and_statuses() {
        let cases = [
            (ChatError::ModelUnavailable, "model_unavailable", 503),
            (ChatError::FreeTierDisabled, "free_tier_disabled", 401),
            (
                ChatError::InsufficientBalance {
                    available: "0".into(),
                    required: "1".into(),
                },
                "insufficient_balance",
                402,
            ),
            (
                ChatError::PaymentRefused {
                    reason: "hold expired".into(),
                },
                "payment_refused",
                402,
            ),
            (
                ChatError::InvalidRequest {
                    field: "max_tokens".into(),
                    reason: "at most 1024".into(),
                },
                "invalid_request",
                400,
            ),
            (
                ChatError::PromptTooLong { tokens: 9, max: 8 },
                "prompt_too_long",
                400,
            ),
            (
                ChatError::ContextTooLong {
                    prompt_tokens: 9,
                    completion_tokens: 8,
                    context_tokens_max: 16,
                },
                "context_length_exceeded",
                400,
            ),
            (
                ChatError::UnknownModel {
                    model: "gpt".into(),
                    served: "blyan-moe",
                },
                "unknown_model",
                404,
            ),
            (
                ChatError::LedgerUnavailable {
                    reason: "down".into(),
                },
                "ledger_unavailable",
                503,
            ),
            (
                ChatError::Generation {
                    reason: "nan".into(),
                },
                "generation_failed",
                500,
            ),
        ];
        for (chat, code, status) in cases {
            let error = Error::from(chat);
            assert_eq!((error.code(), error.status().as_u16()), (code, status));
        }
    }

    #[test]
    fn node_errors_answer_with_their_codes() {
        let config = Error::from(NodeError::ConfigInvalid {
            path: "node.yaml".into(),
            field: "pol.mode".into(),
            reason: "hybrid needs proof of work".into(),
        });
        assert_eq!((config.code(), config.status().as_u16()), ("config", 500));
        let unavailable = Error::from(NodeError::ChainUnavailable);
        assert_eq!(
            (unavailable.code(), unavailable.status().as_u16()),
            ("chain_unavailable", 503)
        );
        let task = Error::from(NodeError::Task {
            what: "loading the model",
            reason: "panicked at /secret/path".into(),
        });
        assert_eq!(task.code(), "internal");
        let body = serde_json::to_string(&task.body()).unwrap();
        assert!(!body.contains("secret"), "{body}");
    }
}
