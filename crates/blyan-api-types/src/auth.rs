//! Sign-in: `GET /auth/nonce`, `POST /auth/verify`, `POST /auth/refresh`, `GET /auth/session`
//! and the API key routes.

use blyan_primitives::Address;
use serde::{Deserialize, Serialize};

/// Body of `GET /auth/nonce`: what the sign-in message must contain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NonceResponse {
    /// The nonce to put in the message (single use).
    pub nonce: String,
    /// The domain the message must name.
    pub domain: String,
    /// The chain id the message must name.
    pub chain_id: u64,
    /// When the nonce was issued (RFC 3339); a good `Issued At` for the message.
    pub issued_at: String,
    /// When the nonce stops being accepted (RFC 3339).
    pub expires_at: String,
    /// The `address` asked about, EIP-55 checksummed as the message must write it.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub address: Option<Address>,
}

/// Body of `POST /auth/verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifyRequest {
    /// The EIP-4361 message, exactly as signed.
    pub message: String,
    /// The `personal_sign` signature, hex.
    pub signature: String,
}

/// Tokens issued by sign-in and refresh.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    /// The signed-in wallet (EIP-55).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub wallet: Address,
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
    /// Exchange at `POST /auth/refresh` for new tokens; single use.
    pub refresh_token: String,
    /// Seconds the refresh token lives.
    pub refresh_expires_in: u64,
}

/// Body of `POST /auth/refresh`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshRequest {
    /// The refresh token from the last sign-in or refresh.
    pub refresh_token: String,
}

/// Body of `GET /auth/session`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionResponse {
    /// The signed-in wallet.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub wallet: Address,
    /// `access_token` or `api_key`.
    pub credential: String,
}

/// Body of `POST /auth/api-keys`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateApiKeyRequest {
    /// A label for the key.
    pub name: String,
}

/// A new API key: `key` is shown only in this answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedApiKey {
    /// Identifier, for revoking.
    pub id: String,
    /// The label.
    pub name: String,
    /// The key; send as `Authorization: Bearer <key>`. Not stored by the node.
    pub key: String,
}

/// An API key as listed to its owner (never the key itself): `GET /auth/api-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeyInfo {
    /// Identifier, for revoking.
    pub id: String,
    /// The owner's label.
    pub name: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
}
