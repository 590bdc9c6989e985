//! The sign-in routes: nonce → EIP-4361 message → signature → access + refresh tokens; refresh,
//! sign-out, API keys.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use blyan_api_types::{
    ApiKeyInfo, CreateApiKeyRequest, CreatedApiKey, NonceResponse, RefreshRequest, SessionResponse,
    TokenResponse, VerifyRequest,
};
use blyan_node_core::AuthConfig;
use blyan_primitives::Address;
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::auth_store::AuthStore;
use crate::extract::{ApiJson, ApiQuery, Caller, Credential, SignedIn, rate_limit};
use crate::jwt::{JwtKeys, unix_seconds};
use crate::server::AppState;
use crate::signin::SignIn;
use crate::{Error, Result};

/// Most sign-in store calls running on blocking threads at once; SQLite serializes them on one
/// connection anyway, so more would only park threads. Callers beyond it wait asynchronously.
pub const AUTH_STORE_TASKS_MAX: usize = 4;

/// How often expired sessions, refresh tokens and revoked API keys are removed.
pub const AUTH_PRUNE_PERIOD: Duration = Duration::from_secs(3600);

/// Everything sign-in needs, held by [`AppState`].
#[derive(Debug)]
pub(crate) struct Auth {
    pub signin: SignIn,
    pub jwt: JwtKeys,
    store: Arc<AuthStore>,
    store_tasks: Arc<Semaphore>,
    pub refresh_ttl: Duration,
}

impl Auth {
    pub(crate) fn open(data_dir: &Path, config: &AuthConfig) -> Result<Self> {
        Ok(Self {
            signin: SignIn::new(
                config.domains.clone(),
                config.chain_id,
                Duration::from_secs(config.nonce_ttl_seconds),
            ),
            jwt: JwtKeys::load_or_create(
                data_dir,
                Duration::from_secs(config.access_token_ttl_seconds),
            )?,
            store: Arc::new(AuthStore::open(data_dir)?),
            store_tasks: Arc::new(Semaphore::new(AUTH_STORE_TASKS_MAX)),
            refresh_ttl: Duration::from_secs(config.refresh_token_ttl_seconds),
        })
    }

    /// Runs `work` on the sign-in store on a blocking thread (SQLite calls block), at most
    /// [`AUTH_STORE_TASKS_MAX`] at once.
    pub(crate) async fn store<T: Send + 'static>(
        &self,
        work: impl FnOnce(&AuthStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let task_failed = |error: &dyn std::fmt::Display| Error::Internal {
            reason: format!("sign-in store task failed: {error}"),
        };
        let permit = Arc::clone(&self.store_tasks)
            .acquire_owned()
            .await
            .map_err(|error| task_failed(&error))?;
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&store)
        })
        .await
        .map_err(|error| task_failed(&error))?
    }

    /// The wallet of a live API key: from the cache when it was looked up lately, else from
    /// the store on a blocking thread.
    pub(crate) async fn api_key_wallet(&self, key: &str) -> Result<Address> {
        if let Some(wallet) = self.store.cached_api_key_wallet(key, Instant::now()) {
            return Ok(wallet);
        }
        let key = key.to_owned();
        self.store(move |store| store.api_key_wallet(&key)).await
    }

    /// Removes expired and ended sign-in rows now (see [`AuthStore::prune`]).
    pub(crate) async fn prune(&self) -> Result<()> {
        let pruned = self.store(|store| store.prune(SystemTime::now())).await?;
        tracing::debug!(
            sessions = pruned.sessions,
            refresh_tokens = pruned.refresh_tokens,
            api_keys = pruned.api_keys,
            "sign-in store pruned"
        );
        Ok(())
    }
}

/// Refuses an operation that only a wallet's sign-in session may do: an API key is a
/// credential for using the API, and a key that could mint keys would outlive its own
/// revocation through the keys it made.
fn require_session(caller: &SignedIn, action: &'static str) -> Result<()> {
    match caller.credential {
        Credential::AccessToken { .. } => Ok(()),
        Credential::ApiKey => Err(Error::SessionRequired { action }),
    }
}

fn rfc3339(time: SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Query of `GET /auth/nonce`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct NonceQuery {
    /// A wallet address in any case; answered back checksummed (wallets often report lower case,
    /// while a sign-in message must carry the EIP-55 form).
    address: Option<String>,
}

fn tokens(
    state: &AppState,
    wallet: Address,
    sid: &str,
    refresh_token: String,
    now: SystemTime,
) -> Result<TokenResponse> {
    let (access_token, _) = state.auth.jwt.issue(&wallet, sid, now)?;
    Ok(TokenResponse {
        wallet,
        access_token,
        token_type: "Bearer".to_owned(),
        expires_in: state.auth.jwt.ttl().as_secs(),
        refresh_token,
        refresh_expires_in: state.auth.refresh_ttl.as_secs(),
    })
}

/// A fresh single-use nonce for a sign-in message.
#[utoipa::path(get, path = "/auth/nonce", tag = "auth", params(NonceQuery),
    responses((status = 200, body = NonceResponse), (status = 429, description = "rate_limited")))]
pub(crate) async fn nonce(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<NonceQuery>,
) -> Result<axum::Json<NonceResponse>> {
    rate_limit(&state, &caller)?;
    let address = query
        .address
        .map(|text| {
            text.to_ascii_lowercase()
                .parse::<Address>()
                .map_err(|error| Error::InvalidRequest {
                    field: "address".to_owned(),
                    reason: error.to_string(),
                })
        })
        .transpose()?;
    let challenge = state
        .auth
        .signin
        .challenge(caller.bucket(), SystemTime::now());
    Ok(axum::Json(NonceResponse {
        nonce: challenge.nonce.nonce,
        domain: challenge.domain,
        chain_id: challenge.chain_id,
        issued_at: rfc3339(challenge.nonce.issued_at),
        expires_at: rfc3339(challenge.nonce.expires_at),
        address,
    }))
}

/// Signs in with an EIP-4361 message and its signature; spends the message's nonce.
#[utoipa::path(post, path = "/auth/verify", tag = "auth", request_body = VerifyRequest,
    responses((status = 200, body = TokenResponse),
        (status = 401, description = "nonce_unknown, nonce_expired, nonce_replayed, siwe_domain_mismatch, siwe_uri_mismatch, siwe_chain_id_mismatch, siwe_issued_at_invalid, siwe_expired, siwe_not_yet_valid, bad_signature, contract_wallet_unsupported"),
        (status = 400, description = "siwe_malformed, malformed_json")))]
pub(crate) async fn verify(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(request): ApiJson<VerifyRequest>,
) -> Result<axum::Json<TokenResponse>> {
    rate_limit(&state, &caller)?;
    let now = SystemTime::now();
    let wallet = state
        .auth
        .signin
        .verify(&request.message, &request.signature, now)?;
    let refresh_expires_at = now + state.auth.refresh_ttl;
    let (sid, refresh) = state
        .auth
        .store(move |store| store.create_session(&wallet, refresh_expires_at, now))
        .await?;
    tracing::info!(%wallet, %sid, "signed in");
    Ok(axum::Json(tokens(&state, wallet, &sid, refresh, now)?))
}

/// Exchanges a refresh token for new tokens (the old refresh token is spent).
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, description = "refresh_invalid")))]
pub(crate) async fn refresh(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> Result<axum::Json<TokenResponse>> {
    rate_limit(&state, &caller)?;
    let now = SystemTime::now();
    let next_expires_at = now + state.auth.refresh_ttl;
    let (sid, wallet, next) = state
        .auth
        .store(move |store| store.rotate_refresh(&request.refresh_token, next_expires_at, now))
        .await?;
    Ok(axum::Json(tokens(&state, wallet, &sid, next, now)?))
}

/// Signs the session of the presented access token out: its access and refresh tokens stop
/// working. The wallet's API keys are left working: they are credentials of their own (for
/// programs, not this browser), listed and revoked one by one at `/auth/api-keys`; only a
/// sign-in session can make or revoke them, so no key outlives its revocation through keys it
/// made.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 401, description = "token_missing, token_invalid, token_expired, token_revoked")))]
pub(crate) async fn logout(
    State(state): State<Arc<AppState>>,
    caller: SignedIn,
) -> Result<StatusCode> {
    let Credential::AccessToken { sid } = &caller.credential else {
        return Err(Error::InvalidRequest {
            field: "Authorization".to_owned(),
            reason: "an API key has no session to sign out; revoke it instead".to_owned(),
        });
    };
    let revoked = sid.clone();
    state
        .auth
        .store(move |store| store.revoke_session(&revoked, SystemTime::now()))
        .await?;
    tracing::info!(wallet = %caller.wallet, %sid, "signed out");
    Ok(StatusCode::NO_CONTENT)
}

/// Who the presented credentials belong to.
#[utoipa::path(get, path = "/auth/session", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = SessionResponse), (status = 401, description = "token_missing, token_invalid, token_expired, token_revoked, api_key_invalid")))]
pub(crate) async fn session(caller: SignedIn) -> axum::Json<SessionResponse> {
    axum::Json(SessionResponse {
        wallet: caller.wallet,
        credential: match caller.credential {
            Credential::AccessToken { .. } => "access_token",
            Credential::ApiKey => "api_key",
        }
        .to_owned(),
    })
}

/// Creates an API key for the signed-in wallet; the key is shown once. Only a sign-in session
/// (an access token) may: an API key is refused with 403 `session_required`.
#[utoipa::path(post, path = "/auth/api-keys", tag = "auth", security(("bearer" = [])),
    request_body = CreateApiKeyRequest,
    responses((status = 201, body = CreatedApiKey), (status = 401, description = "token_missing"),
        (status = 403, description = "session_required")))]
pub(crate) async fn create_api_key(
    State(state): State<Arc<AppState>>,
    caller: SignedIn,
    ApiJson(request): ApiJson<CreateApiKeyRequest>,
) -> Result<(StatusCode, axum::Json<CreatedApiKey>)> {
    require_session(&caller, "creating an API key")?;
    let wallet = caller.wallet;
    let (info, key) = state
        .auth
        .store(move |store| store.create_api_key(&wallet, &request.name, SystemTime::now()))
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedApiKey {
            id: info.id,
            name: info.name,
            key,
        }),
    ))
}

/// The signed-in wallet's live API keys (without the keys themselves).
#[utoipa::path(get, path = "/auth/api-keys", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Vec<ApiKeyInfo>)))]
pub(crate) async fn list_api_keys(
    State(state): State<Arc<AppState>>,
    caller: SignedIn,
) -> Result<axum::Json<Vec<ApiKeyInfo>>> {
    let wallet = caller.wallet;
    Ok(axum::Json(
        state
            .auth
            .store(move |store| store.list_api_keys(&wallet))
            .await?,
    ))
}

/// Revokes one of the signed-in wallet's API keys. Only a sign-in session (an access token)
/// may: an API key is refused with 403 `session_required`.
#[utoipa::path(delete, path = "/auth/api-keys/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 204), (status = 403, description = "session_required"),
        (status = 404, description = "not_found")))]
pub(crate) async fn revoke_api_key(
    State(state): State<Arc<AppState>>,
    caller: SignedIn,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode> {
    require_session(&caller, "revoking an API key")?;
    let wallet = caller.wallet;
    let revoked_id = id.clone();
    if state
        .auth
        .store(move |store| store.revoke_api_key(&wallet, &revoked_id, SystemTime::now()))
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound {
            path: format!("/auth/api-keys/{id}"),
        })
    }
}

/// Seconds since the Unix epoch, for responses.
pub(crate) fn now_unix_seconds() -> u64 {
    unix_seconds(SystemTime::now())
}
