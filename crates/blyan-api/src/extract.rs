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

use crate::auth_store::{API_KEY_PREFIX, REFRESH_TOKEN_PREFIX, SessionState};
use crate::client_addr::ClientBucket;
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

/// Who is calling: every handler that meters or charges takes one. Its address is the
/// client's: the TCP peer, or under a trusted proxy the address it forwarded
/// (`api.trusted_proxies`, see [`crate::ClientBucket`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Caller {
    /// No credentials (or a bearer value not shaped like one of this node's credentials, see
    /// [`bearer_shape`]): the free tier, limited per client bucket.
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
    /// The client's IP address: the connection's peer, unless that is one of
    /// `api.trusted_proxies`, whose forwarding header then names the client (any other peer's
    /// forwarding headers are ignored: anyone can write them).
    pub fn ip(&self) -> IpAddr {
        match self {
            Self::Anonymous { ip } | Self::Wallet { ip, .. } => *ip,
        }
    }

    /// What limits count this client by: its IPv4 address or its IPv6 /64.
    pub fn bucket(&self) -> ClientBucket {
        ClientBucket::of(self.ip())
    }

    /// The signed-in wallet, if any.
    pub fn wallet(&self) -> Option<&Address> {
        match self {
            Self::Anonymous { .. } => None,
            Self::Wallet { wallet, .. } => Some(wallet),
        }
    }
}

fn client_ip(parts: &Parts, state: &AppState) -> IpAddr {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    state.limits.proxies.client(peer, &parts.headers)
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

/// What a bearer value is, judged by its shape alone (nothing is looked up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BearerShape {
    /// `bly_…`: one of this node's API keys, or an attempt at one.
    ApiKey,
    /// `blyr_…`: a refresh token, which is not an access credential.
    RefreshToken,
    /// Three base64url parts joined by dots: an access token, or an attempt at one.
    Jwt,
    /// Anything else: a placeholder an OpenAI client sends (`none`, `sk-…`), served as the
    /// anonymous free tier.
    Foreign,
}

fn is_base64url(part: &str) -> bool {
    part.bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// The shape of `token`. Servers in the OpenAI-compatible role (llama.cpp, vLLM) accept any
/// key, and the official clients refuse to start without one; so a value that cannot be a
/// Blyan credential is no credential at all. One that looks like a Blyan credential but fails
/// is refused, never downgraded.
pub(crate) fn bearer_shape(token: &str) -> BearerShape {
    if token.starts_with(API_KEY_PREFIX) {
        return BearerShape::ApiKey;
    }
    if token.starts_with(REFRESH_TOKEN_PREFIX) {
        return BearerShape::RefreshToken;
    }
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return BearerShape::Foreign;
    };
    // The signature may be empty (`alg: none`): still an attempt at a token, to be refused.
    if !header.is_empty()
        && !claims.is_empty()
        && [header, claims, signature]
            .iter()
            .all(|part| is_base64url(part))
    {
        BearerShape::Jwt
    } else {
        BearerShape::Foreign
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self> {
        let ip = client_ip(parts, state);
        let Some(token) = bearer(parts)? else {
            return Ok(Self::Anonymous { ip });
        };
        // A credential that fails is refused, never downgraded to anonymous.
        let token = match bearer_shape(token) {
            BearerShape::Foreign => return Ok(Self::Anonymous { ip }),
            BearerShape::RefreshToken => {
                return Err(Error::TokenInvalid {
                    reason: "a refresh token is not an access token: exchange it at /auth/refresh"
                        .to_owned(),
                });
            }
            BearerShape::ApiKey => {
                let wallet = state.auth.api_key_wallet(token).await?;
                return Ok(Self::Wallet {
                    wallet,
                    ip,
                    credential: Credential::ApiKey,
                });
            }
            BearerShape::Jwt => token,
        };
        let (claims, wallet) = state.auth.jwt.verify(token)?;
        let sid = claims.sid.clone();
        match state.auth.store(move |store| store.session(&sid)).await? {
            SessionState::Ended => return Err(Error::TokenRevoked),
            // A session is its wallet's: a token naming another wallet's session is refused
            // (only a leaked signing secret could make one).
            SessionState::Live(owner) if owner != wallet => {
                return Err(Error::TokenInvalid {
                    reason: "the token's session belongs to another wallet".to_owned(),
                });
            }
            SessionState::Live(_) => {}
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

/// Takes one request from the caller's rate-limit buckets: its client bucket always, its
/// wallet when signed in.
pub(crate) fn rate_limit(state: &AppState, caller: &Caller) -> Result<()> {
    let now = Instant::now();
    state
        .limits
        .per_client
        .check(&caller.bucket(), now)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values_are_told_apart_by_shape() {
        let check = |token: &str, expected: BearerShape| {
            assert_eq!(bearer_shape(token), expected, "{token:?}");
        };
        check("bly_00ff", BearerShape::ApiKey);
        check("bly_", BearerShape::ApiKey);
        check("blyr_00ff", BearerShape::RefreshToken);
        check(
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_",
            BearerShape::Jwt,
        );
        check("a.b.c", BearerShape::Jwt);
        check("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", BearerShape::Jwt);
        // What OpenAI clients are given as placeholders, and other foreign keys.
        check("none", BearerShape::Foreign);
        check("", BearerShape::Foreign);
        check("sk-proj-abc123", BearerShape::Foreign);
        check("EMPTY", BearerShape::Foreign);
        check("a.b", BearerShape::Foreign);
        check("a.b.c.d", BearerShape::Foreign);
        check(".b.c", BearerShape::Foreign);
        check("a..c", BearerShape::Foreign);
        check("a+b.c.d", BearerShape::Foreign);
        check("a.b.c=", BearerShape::Foreign);
    }
}
