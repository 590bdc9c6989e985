//! Access tokens: short-lived JWTs signed with HS256 under a per-node secret.
//!
//! The algorithm is pinned: a token whose header names anything but HS256 (`none`, HS384, an
//! asymmetric algorithm) is refused before its signature is looked at. Issuer and audience are
//! checked, `exp` is required, and there is no clock leeway. (ES256K, the wallet curve, is not a
//! JWT algorithm `jsonwebtoken` offers; the node signs its own tokens, so a symmetric key it
//! never shares is the simpler, equally strong choice.)

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blyan_primitives::Address;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The `iss` claim of every token this node issues.
pub const JWT_ISSUER: &str = "blyan-node";

/// The `aud` claim: tokens are for this node's API.
pub const JWT_AUDIENCE: &str = "blyan-api";

/// Bytes of the HS256 secret (its full security level).
pub const JWT_SECRET_BYTES: usize = 32;

/// File under the data directory holding the secret.
const JWT_SECRET_FILE: &str = "api-jwt-secret";

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer, [`JWT_ISSUER`].
    pub iss: String,
    /// Audience, [`JWT_AUDIENCE`].
    pub aud: String,
    /// The signed-in wallet, EIP-55.
    pub sub: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
    /// The sign-in session; signing out revokes every token of it.
    pub sid: String,
}

/// The node's token signer and checker.
pub(crate) struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

pub(crate) fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl JwtKeys {
    /// Keys from a secret; tokens live `ttl`.
    pub(crate) fn from_secret(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_audience(&[JWT_AUDIENCE]);
        validation.set_issuer(&[JWT_ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "aud", "iss"]);
        validation.leeway = 0;
        validation.validate_exp = true;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    /// Loads the node's secret from `data_dir`, creating it (owner-only) on first start. A
    /// secret file others may read or write (mode wider than 0600) is refused with
    /// [`Error::SecretFileExposed`]: it may have leaked, and anyone holding it can sign in as
    /// any wallet.
    pub(crate) fn load_or_create(data_dir: &Path, ttl: Duration) -> Result<Self> {
        let path = data_dir.join(JWT_SECRET_FILE);
        let data_error = |source| Error::DataFile {
            path: path.clone(),
            source,
        };
        check_owner_only(&path)?;
        match std::fs::read(&path) {
            Ok(secret) if secret.len() == JWT_SECRET_BYTES => {
                return Ok(Self::from_secret(&secret, ttl));
            }
            Ok(secret) => {
                return Err(data_error(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("holds {} bytes, expected {JWT_SECRET_BYTES}", secret.len()),
                )));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(data_error(error)),
        }
        std::fs::create_dir_all(data_dir).map_err(|source| Error::DataFile {
            path: data_dir.to_owned(),
            source,
        })?;
        let mut secret = [0_u8; JWT_SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        write_owner_only(&path, &secret).map_err(data_error)?;
        Ok(Self::from_secret(&secret, ttl))
    }

    /// Lifetime of an access token.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for `wallet` in session `sid`, valid from `now` for the key's lifetime.
    pub(crate) fn issue(
        &self,
        wallet: &Address,
        sid: &str,
        now: SystemTime,
    ) -> Result<(String, AccessClaims)> {
        let iat = unix_seconds(now);
        let claims = AccessClaims {
            iss: JWT_ISSUER.to_owned(),
            aud: JWT_AUDIENCE.to_owned(),
            sub: wallet.to_string(),
            iat,
            exp: iat + self.ttl.as_secs(),
            sid: sid.to_owned(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|error| Error::TokenInvalid {
            reason: format!("cannot sign: {error}"),
        })?;
        Ok((token, claims))
    }

    /// The claims of a token this node issued, if it is genuine, unexpired and for this API.
    pub(crate) fn verify(&self, token: &str) -> Result<(AccessClaims, Address)> {
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => Error::TokenExpired,
                kind => Error::TokenInvalid {
                    reason: describe(kind),
                },
            })?;
        let wallet = data
            .claims
            .sub
            .parse::<Address>()
            .map_err(|_| Error::TokenInvalid {
                reason: "subject is not a wallet address".to_owned(),
            })?;
        Ok((data.claims, wallet))
    }
}

fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "signature does not match".to_owned(),
        ErrorKind::InvalidAlgorithm => "algorithm is not HS256".to_owned(),
        ErrorKind::InvalidAudience => "wrong audience".to_owned(),
        ErrorKind::InvalidIssuer => "wrong issuer".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim `{claim}`"),
        ErrorKind::InvalidToken => "not a JWT".to_owned(),
        other => format!("{other:?}"),
    }
}

/// Refuses an existing file whose permissions let others than its owner read or write it.
#[cfg(unix)]
fn check_owner_only(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = match std::fs::metadata(path) {
        Ok(metadata) => metadata.permissions().mode() & 0o777,
        // A missing file is created owner-only; other failures surface when it is read.
        Err(_) => return Ok(()),
    };
    if mode & 0o077 != 0 {
        return Err(Error::SecretFileExposed {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner_only(_path: &Path) -> Result<()> {
    Ok(())
}

#[cfg(unix)]
fn write_owner_only(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_owner_only(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WALLET: &str = "0x6Da01670d8fc844e736095918bbE11fE8D564163";

    fn keys() -> JwtKeys {
        JwtKeys::from_secret(&[7; JWT_SECRET_BYTES], Duration::from_secs(600))
    }

    fn check_refused(keys: &JwtKeys, token: &str, code: &str) {
        let error = keys.verify(token).expect_err("token must be refused");
        assert_eq!(error.code(), code, "{error}");
    }

    fn b64(bytes: &[u8]) -> String {
        // Unpadded URL-safe base64, as JWTs use, written out to keep the test self-contained.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0_u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }

    fn claims_json(aud: &str, exp_offset_seconds: i64) -> String {
        let now = unix_seconds(SystemTime::now());
        let exp = now.saturating_add_signed(exp_offset_seconds);
        format!(
            r#"{{"iss":"{JWT_ISSUER}","aud":"{aud}","sub":"{WALLET}","iat":{now},"exp":{exp},"sid":"s1"}}"#
        )
    }

    #[test]
    fn an_issued_token_verifies() {
        let keys = keys();
        let wallet: Address = WALLET.parse().unwrap();
        let (token, claims) = keys.issue(&wallet, "s1", SystemTime::now()).unwrap();
        let (verified, verified_wallet) = keys.verify(&token).unwrap();
        assert_eq!(verified, claims);
        assert_eq!(verified_wallet, wallet);
        assert_eq!(claims.exp - claims.iat, 600);
    }

    #[test]
    fn alg_none_is_refused() {
        let keys = keys();
        let token = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(claims_json(JWT_AUDIENCE, 600).as_bytes())
        );
        check_refused(&keys, &token, "token_invalid");
    }

    #[test]
    fn another_algorithm_with_the_same_secret_is_refused() {
        let keys = keys();
        let claims: AccessClaims = serde_json::from_str(&claims_json(JWT_AUDIENCE, 600)).unwrap();
        for algorithm in [Algorithm::HS384, Algorithm::HS512] {
            let token = jsonwebtoken::encode(
                &Header::new(algorithm),
                &claims,
                &EncodingKey::from_secret(&[7; JWT_SECRET_BYTES]),
            )
            .unwrap();
            check_refused(&keys, &token, "token_invalid");
        }
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let keys = keys();
        let wallet: Address = WALLET.parse().unwrap();
        let (token, _) = keys.issue(&wallet, "s1", SystemTime::now()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let other = claims_json(JWT_AUDIENCE, 600).replace("s1", "s2");
        let forged = format!("{}.{}.{}", parts[0], b64(other.as_bytes()), parts[2]);
        check_refused(&keys, &forged, "token_invalid");
        // Signed with another node's secret.
        let foreign = JwtKeys::from_secret(&[8; JWT_SECRET_BYTES], Duration::from_secs(600));
        let (foreign_token, _) = foreign.issue(&wallet, "s1", SystemTime::now()).unwrap();
        check_refused(&keys, &foreign_token, "token_invalid");
        check_refused(&keys, "not-a-jwt", "token_invalid");
    }

    #[test]
    fn an_expired_token_is_refused() {
        let keys = keys();
        let wallet: Address = WALLET.parse().unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        let (token, _) = keys.issue(&wallet, "s1", long_ago).unwrap();
        check_refused(&keys, &token, "token_expired");
        // One second past `exp` is already too late: there is no leeway.
        let claims: AccessClaims = serde_json::from_str(&claims_json(JWT_AUDIENCE, -1)).unwrap();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&[7; JWT_SECRET_BYTES]),
        )
        .unwrap();
        check_refused(&keys, &token, "token_expired");
    }

    #[test]
    fn a_token_for_another_audience_or_issuer_is_refused() {
        let keys = keys();
        let secret = EncodingKey::from_secret(&[7; JWT_SECRET_BYTES]);
        let header = Header::new(Algorithm::HS256);
        let wrong_aud: AccessClaims =
            serde_json::from_str(&claims_json("another-api", 600)).unwrap();
        let token = jsonwebtoken::encode(&header, &wrong_aud, &secret).unwrap();
        check_refused(&keys, &token, "token_invalid");
        let mut wrong_iss: AccessClaims =
            serde_json::from_str(&claims_json(JWT_AUDIENCE, 600)).unwrap();
        wrong_iss.iss = "someone-else".to_owned();
        let token = jsonwebtoken::encode(&header, &wrong_iss, &secret).unwrap();
        check_refused(&keys, &token, "token_invalid");
    }

    #[test]
    fn the_secret_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let wallet: Address = WALLET.parse().unwrap();
        let first = JwtKeys::load_or_create(dir.path(), Duration::from_secs(60)).unwrap();
        let (token, _) = first.issue(&wallet, "s", SystemTime::now()).unwrap();
        let again = JwtKeys::load_or_create(dir.path(), Duration::from_secs(60)).unwrap();
        again.verify(&token).unwrap();
        std::fs::write(dir.path().join(JWT_SECRET_FILE), b"short").unwrap();
        let error = JwtKeys::load_or_create(dir.path(), Duration::from_secs(60)).unwrap_err();
        assert!(matches!(error, Error::DataFile { .. }), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        JwtKeys::load_or_create(dir.path(), Duration::from_secs(60)).unwrap();
        let path = dir.path().join(JWT_SECRET_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "created owner-only: {mode:o}");
        for wide in [0o644, 0o640, 0o606, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wide)).unwrap();
            let error = JwtKeys::load_or_create(dir.path(), Duration::from_secs(60)).unwrap_err();
            match &error {
                Error::SecretFileExposed { path: got, mode } => {
                    assert_eq!((got, *mode), (&path, wide));
                }
                other => panic!("expected SecretFileExposed, got {other:?}"),
            }
            let message = error.to_string();
            assert!(
                message.contains(&path.display().to_string())
                    && message.contains(&format!("{wide:o}")),
                "the error names the file and its mode: {message}"
            );
        }
        // Owner-only again (0400 too): accepted.
        for narrow in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(narrow)).unwrap();
            JwtKeys::load_or_create(dir.path(), Duration::from_secs(60)).unwrap();
        }
    }
}
