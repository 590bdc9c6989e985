//! Author keys and signatures, Ethereum style, so a wallet can sign blocks.
//!
//! What is signed: the EIP-191 "personal_sign" envelope of the 32 raw bytes of the block hash,
//! `keccak256("\x19Ethereum Signed Message:\n32" ++ block_hash)`. MetaMask's
//! `personal_sign(["0x<block hash hex>", account])` signs exactly these bytes (a `0x` hex
//! argument is taken as raw bytes), and returns the 65-byte `r ‖ s ‖ v` that [`Signature`] holds.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::str::FromStr;

use k256::ecdsa::{RecoveryId, SigningKey, VerifyingKey};

use blyan_primitives::{Address, keccak256};

use crate::error::{Error, Result};

/// Length of an Ethereum signature: `r` (32) ‖ `s` (32) ‖ `v` (1).
pub const SIGNATURE_BYTES: usize = 65;

/// Length of a secp256k1 private key.
pub const SECRET_KEY_BYTES: usize = 32;

/// A recoverable secp256k1 signature as Ethereum writes it: `r ‖ s ‖ v`, `v` ∈ {27, 28}.
///
/// The bytes are kept exactly as decoded so that the canonical encoding round-trips;
/// [`Signature::recover_eip191`] rejects a `v` outside {27, 28} and a high `s` (EIP-2), so
/// every accepted block has exactly one valid signature encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, bincode::Encode, bincode::Decode)]
pub struct Signature(pub [u8; SIGNATURE_BYTES]);

/// Why a signature does not verify. Carried by [`Error::BadSignature`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureFault {
    /// Not 65 bytes.
    #[error("signature is not {SIGNATURE_BYTES} bytes")]
    Length,
    /// `v` is not 27 or 28.
    #[error("recovery byte v is not 27 or 28")]
    RecoveryByte,
    /// `r` or `s` is zero or not below the curve order.
    #[error("r or s is out of range")]
    Malformed,
    /// `s` is in the upper half of the order; EIP-2 allows only the lower one.
    #[error("s is not normalized to the lower half of the curve order (EIP-2)")]
    HighS,
    /// No public key recovers from this signature and message.
    #[error("no public key recovers from the signature")]
    Unrecoverable,
}

/// The EIP-191 version-0x45 ("personal_sign") digest of `message`:
/// `keccak256("\x19Ethereum Signed Message:\n" ++ decimal(len) ++ message)`.
pub fn eip191_hash(message: &[u8]) -> [u8; 32] {
    let mut envelope = format!("\x19Ethereum Signed Message:\n{}", message.len()).into_bytes();
    envelope.extend_from_slice(message);
    keccak256(&envelope)
}

impl Signature {
    /// Takes 65 bytes `r ‖ s ‖ v` with `v` in {0, 1, 27, 28}; `v` is stored as 27 or 28.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, SignatureFault> {
        let bytes: [u8; SIGNATURE_BYTES] = bytes.try_into().map_err(|_| SignatureFault::Length)?;
        let mut signature = Self(bytes);
        signature.0[64] = match bytes[64] {
            0 | 27 => 27,
            1 | 28 => 28,
            _ => return Err(SignatureFault::RecoveryByte),
        };
        Ok(signature)
    }

    /// Parses `0x` + 130 hex digits, as wallets return signatures.
    pub fn parse(input: &str) -> Result<Self> {
        let digits = input.strip_prefix("0x").unwrap_or(input);
        let bytes = hex::decode(digits).map_err(|_| Error::InvalidSignatureText {
            input: input.chars().take(160).collect(),
            fault: None,
        })?;
        Self::from_bytes(&bytes).map_err(|fault| Error::InvalidSignatureText {
            input: input.chars().take(160).collect(),
            fault: Some(fault),
        })
    }

    /// The address whose key made this signature over the EIP-191 envelope of `message`.
    pub fn recover_eip191(&self, message: &[u8]) -> std::result::Result<Address, SignatureFault> {
        let recovery_id = match self.0[64] {
            27 => RecoveryId::from_byte(0),
            28 => RecoveryId::from_byte(1),
            _ => None,
        }
        .ok_or(SignatureFault::RecoveryByte)?;
        let signature = k256::ecdsa::Signature::from_slice(&self.0[..64])
            .map_err(|_| SignatureFault::Malformed)?;
        if signature.normalize_s().is_some() {
            return Err(SignatureFault::HighS);
        }
        let digest = eip191_hash(message);
        let key = VerifyingKey::recover_from_prehash(&digest, &signature, recovery_id)
            .map_err(|_| SignatureFault::Unrecoverable)?;
        Ok(address_of(&key))
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

impl FromStr for Signature {
    type Err = Error;
    fn from_str(input: &str) -> Result<Self> {
        Self::parse(input)
    }
}

impl serde::Serialize for Signature {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// JSON carries the 65 bytes verbatim (as stored, whatever `v` is), so a header read back from
/// JSON has the same hash and the same validity; [`Signature::parse`] is for wallet output.
impl<'de> serde::Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let digits = text.strip_prefix("0x").unwrap_or(&text);
        let mut bytes = [0u8; SIGNATURE_BYTES];
        hex::decode_to_slice(digits, &mut bytes)
            .map_err(|_| serde::de::Error::custom("signature is not 65 hex-encoded bytes"))?;
        Ok(Self(bytes))
    }
}

fn address_of(key: &VerifyingKey) -> Address {
    let point = key.to_encoded_point(false);
    let bytes: &[u8; 65] = point
        .as_bytes()
        .try_into()
        .expect("an uncompressed SEC1 secp256k1 point is 65 bytes");
    Address::from_uncompressed_public_key(bytes)
}

/// A block author's secp256k1 private key, with its Ethereum address.
///
/// `Debug` prints only the address. The key file format is one line, `0x` + 64 hex digits
/// (the form wallets export), written with mode 0600 and never over an existing file.
#[derive(Clone)]
pub struct AuthorKey {
    key: SigningKey,
    address: Address,
}

impl AuthorKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        Self::from_signing_key(SigningKey::random(&mut rand::rngs::OsRng))
    }

    /// A key from its 32 secret bytes; fails for zero or a value not below the curve order.
    pub fn from_bytes(secret: &[u8; SECRET_KEY_BYTES]) -> Result<Self> {
        let key = SigningKey::from_slice(secret).map_err(|_| Error::InvalidKey {
            reason: "secret is zero or not below the secp256k1 order",
        })?;
        Ok(Self::from_signing_key(key))
    }

    /// Parses `0x` + 64 hex digits (or bare digits).
    pub fn parse_hex(input: &str) -> Result<Self> {
        let digits = input.trim();
        let digits = digits.strip_prefix("0x").unwrap_or(digits);
        let mut secret = [0u8; SECRET_KEY_BYTES];
        if digits.len() != 2 * SECRET_KEY_BYTES {
            return Err(Error::InvalidKey {
                reason: "expected 64 hex digits",
            });
        }
        hex::decode_to_slice(digits, &mut secret).map_err(|_| Error::InvalidKey {
            reason: "not hexadecimal",
        })?;
        Self::from_bytes(&secret)
    }

    fn from_signing_key(key: SigningKey) -> Self {
        let address = address_of(key.verifying_key());
        Self { key, address }
    }

    /// The Ethereum address of this key; the `author` of the blocks it signs.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The 32 secret bytes. Sensitive: for deriving the node's network identity from the same
    /// key (`blyan-p2p`), never for logs or the wire.
    pub fn secret_bytes(&self) -> [u8; SECRET_KEY_BYTES] {
        self.key.to_bytes().into()
    }

    /// Signs `message` the way `personal_sign` does (EIP-191); RFC 6979 deterministic, low-s.
    pub fn sign_eip191(&self, message: &[u8]) -> Signature {
        let digest = eip191_hash(message);
        let (signature, recovery_id) = self
            .key
            .sign_prehash_recoverable(&digest)
            .expect("RFC 6979 signing of a 32-byte digest with a valid key does not fail");
        let mut bytes = [0u8; SIGNATURE_BYTES];
        bytes[..64].copy_from_slice(&signature.to_bytes());
        bytes[64] = 27 + u8::from(recovery_id.is_y_odd());
        Signature(bytes)
    }

    /// Reads a key file written by [`AuthorKey::write_file`] (or any file holding the hex key).
    pub fn read_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_hex(&text).map_err(|error| Error::KeyFile {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })
    }

    /// Writes the key to a new file readable only by its owner; refuses to replace a file.
    pub fn write_file(&self, path: &Path) -> Result<()> {
        let io_error = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io_error)?;
        let line = format!("0x{}\n", hex::encode(self.key.to_bytes()));
        file.write_all(line.as_bytes()).map_err(io_error)?;
        file.sync_all().map_err(io_error)
    }
}

impl fmt::Debug for AuthorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorKey")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The private key used in the web3.js documentation and many Ethereum test suites.
    const WEB3_SECRET: &str = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
    const WEB3_ADDRESS: &str = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23";

    #[test]
    fn known_private_key_gives_known_address() {
        let key = AuthorKey::parse_hex(WEB3_SECRET).unwrap();
        assert_eq!(key.address().to_string(), WEB3_ADDRESS);
    }

    #[test]
    fn personal_sign_matches_web3_accounts_sign_vector() {
        // web3.eth.accounts.sign('Some data', WEB3_SECRET) from the web3.js documentation.
        let key = AuthorKey::parse_hex(WEB3_SECRET).unwrap();
        assert_eq!(
            hex::encode(eip191_hash(b"Some data")),
            "1da44b586eb0729ff70a73c326926f6ed5a25f5b056e7f47fbc6e58d86871655"
        );
        let signature = key.sign_eip191(b"Some data");
        assert_eq!(
            signature.to_string(),
            "0xb91467e570a6466aa9e9876cbcd013baba02900b8979d43fe208a4a4f339f5fd\
             6007e74cd82e037b800186422fc2da167c747ef045e5d18a5f5d4300f8e1a0291c"
        );
        assert_eq!(
            signature.recover_eip191(b"Some data").unwrap(),
            key.address()
        );
    }

    #[test]
    fn recovery_rejects_tampering() {
        let key = AuthorKey::generate();
        let signature = key.sign_eip191(b"message");
        assert_ne!(
            signature.recover_eip191(b"other message").ok(),
            Some(key.address())
        );

        let mut bad_v = signature;
        bad_v.0[64] = 29;
        assert_eq!(
            bad_v.recover_eip191(b"message"),
            Err(SignatureFault::RecoveryByte)
        );

        let mut zero = signature;
        zero.0[..64].fill(0);
        assert_eq!(
            zero.recover_eip191(b"message"),
            Err(SignatureFault::Malformed)
        );
    }

    #[test]
    fn high_s_twin_is_rejected() {
        let key = AuthorKey::generate();
        let signature = key.sign_eip191(b"message");
        let parsed = k256::ecdsa::Signature::from_slice(&signature.0[..64]).unwrap();
        let (r, s) = parsed.split_scalars();
        let high = k256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        let mut twin = signature;
        twin.0[..64].copy_from_slice(&high.to_bytes());
        twin.0[64] = if signature.0[64] == 27 { 28 } else { 27 };
        assert_eq!(twin.recover_eip191(b"message"), Err(SignatureFault::HighS));
    }

    #[test]
    fn from_bytes_normalizes_v() {
        let mut raw = [1u8; 65];
        raw[64] = 0;
        assert_eq!(Signature::from_bytes(&raw).unwrap().0[64], 27);
        raw[64] = 1;
        assert_eq!(Signature::from_bytes(&raw).unwrap().0[64], 28);
        raw[64] = 2;
        assert_eq!(
            Signature::from_bytes(&raw),
            Err(SignatureFault::RecoveryByte)
        );
        assert_eq!(
            Signature::from_bytes(&raw[..64]),
            Err(SignatureFault::Length)
        );
    }

    #[test]
    fn key_file_round_trips_and_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("author.key");
        let key = AuthorKey::generate();
        key.write_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            AuthorKey::read_file(&path).unwrap().address(),
            key.address()
        );
        assert!(matches!(key.write_file(&path), Err(Error::Io { .. })));
        std::fs::write(&path, "0x1234\n").unwrap();
        assert!(matches!(
            AuthorKey::read_file(&path),
            Err(Error::KeyFile { .. })
        ));
    }

    #[test]
    fn invalid_secrets_are_rejected() {
        assert!(matches!(
            AuthorKey::from_bytes(&[0; 32]),
            Err(Error::InvalidKey { .. })
        ));
        assert!(matches!(
            AuthorKey::from_bytes(&[0xff; 32]),
            Err(Error::InvalidKey { .. })
        ));
        assert!(matches!(
            AuthorKey::parse_hex("0x12"),
            Err(Error::InvalidKey { .. })
        ));
    }
}
