//! Request extractors: JSON bodies that fail with this API's error codes, and the caller (an
//! anonymous IP address, or a wallet signed in by access token or API key).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use blyan_primitives::Address;
use serde::de::DeserializeOwned;

use crate::auth_store::API_KEY_PREFIX;
use crate::server::AppState;
use crate::{Error, Result};

/// A JSON body; a malformed or oversized one is refused with `malformed_json` or
/// `body_too_large` in this API's error shape.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(
                &rejection,
                state.config().api.body_bytes_max,
            )),
        }
    }
}

/// A query string; a malformed one is refused with `invalid_request` in this API's error shape.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(Error::InvalidRequest {
                field: "query".to_owned(),
                reason: rejection.body_text(),
            }),
        }
    }
}

fn json_rejection(rejection: &JsonRejection, limit_bytes: u64) -> Error {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return Error::BodyTooLarge { limit_bytes };
    }
    Error::MalformedJson {
        reason: rejection.body_text(),
    }
}

/// How a signed-in caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An access token of session `sid`.
    AccessToken {
        /// The sign-in session.
        sid: String,
    },
    /// An API key.
    ApiKey,
}

/// Who is calling: every handler that meters or charges takes one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Caller {
    /// No credentials: the free tier, limited per IP address.
    Anonymous {
        /// The peer's address.
        ip: IpAddr,
    },
    /// A signed-in wallet.
    Wallet {
        /// The wallet.
        wallet: Address,
        /// The peer's address.
        ip: IpAddr,
        /// How it signed in.
        credential: Credential,
    },
}

impl Caller {
    /// The peer's IP address. Taken from the connection only: a node behind a proxy sees the
    /// proxy (forwarding headers can be forged, so they are not trusted).
    pub fn ip(&self) -> IpAddr {
        match self {
            Self::Anonymous { ip } | Self::Wallet { ip, .. } => *ip,
        }
    }

    /// The signed-in wallet, if any.
    pub fn wallet(&self) -> Option<&Address> {
        match self {
            Self::Anonymous { .. } => None,
            Self::Wallet { wallet, .. } => Some(wallet),
        }
    }
}

fn peer_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
}

fn bearer(parts: &Parts) -> Result<Option<&str>> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| Error::TokenInvalid {
        reason: "Authorization header is not text".to_owned(),
    })?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| Error::TokenInvalid {
            reason: "Authorization is not a Bearer token".to_owned(),
        })?;
    Ok(Some(token.trim()))
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self> {
        let ip = peer_ip(parts);
        let Some(token) = bearer(parts)? else {
            return Ok(Self::Anonymous { ip });
        };
        // A credential that fails is refused, never downgraded to anonymous.
        if token.starts_with(API_KEY_PREFIX) {
            let wallet = state.auth.store.api_key_wallet(token)?;
            return Ok(Self::Wallet {
                wallet,
                ip,
                credential: Credential::ApiKey,
            });
        }
        let (claims, wallet) = state.auth.jwt.verify(token)?;
        if state.auth.store.session_revoked(&claims.sid)? {
            return Err(Error::TokenRevoked);
        }
        Ok(Self::Wallet {
            wallet,
            ip,
            credential: Credential::AccessToken { sid: claims.sid },
        })
    }
}

/// A caller that must be signed in (`token_missing` otherwise).
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The wallet.
    pub wallet: Address,
    /// How it signed in.
    pub credential: Credential,
    /// The peer's address.
    pub ip: IpAddr,
}

impl FromRequestParts<Arc<AppState>> for SignedIn {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Anonymous { .. } => Err(Error::TokenMissing),
            Caller::Wallet {
                wallet,
                ip,
                credential,
            } => Ok(Self {
                wallet,
                credential,
                ip,
            }),
        }
    }
}

/// Takes one request from the caller's rate-limit buckets: its IP always, its wallet when
/// signed in.
pub(crate) fn rate_limit(state: &AppState, caller: &Caller) -> Result<()> {
    let now = Instant::now();
    state
        .limits
        .per_ip
        .check(&caller.ip(), now)
        .map_err(|retry_after_seconds| Error::RateLimited {
            scope: "ip",
            retry_after_seconds,
        })?;
    if let Some(wallet) = caller.wallet() {
        state
            .limits
            .per_wallet
            .check(wallet, now)
            .map_err(|retry_after_seconds| Error::RateLimited {
                scope: "wallet",
                retry_after_seconds,
            })?;
    }
    Ok(())
}
