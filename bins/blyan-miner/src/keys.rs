//! Key files: the plain one (`0x` + 64 hex digits, [`AuthorKey::write_file`]) or an encrypted
//! Ethereum JSON keystore (Web3 Secret Storage version 3: scrypt or PBKDF2-SHA256, AES-128-CTR,
//! a Keccak-256 MAC), the format geth, Foundry and most wallets export, so their keys import as
//! they are. The keystore's password comes from [`PASSWORD_ENV`] or a file
//! (`--password-file`), never from the command line, where other users of the machine could
//! read it.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use blyan_chain::AuthorKey;
use clap::Args;

/// The environment variable holding a keystore's password.
pub(crate) const PASSWORD_ENV: &str = "BLYAN_KEYSTORE_PASSWORD";
/// Largest key file read, in bytes (a keystore is about 500).
const KEY_FILE_BYTES_MAX: u64 = 64 << 10;
/// Largest password file read, in bytes.
const PASSWORD_FILE_BYTES_MAX: u64 = 4 << 10;
/// Keystore version this reads and writes (Web3 Secret Storage).
const KEYSTORE_VERSION: u64 = 3;

/// Where a keystore's password comes from.
#[derive(Debug, Default, Args)]
pub(crate) struct PasswordArgs {
    /// A file whose first line is the keystore password (default: the `BLYAN_KEYSTORE_PASSWORD`
    /// environment variable).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

impl PasswordArgs {
    /// The password: the file's first line (its line ending removed), else [`PASSWORD_ENV`]'s
    /// value, else an error saying how to give one.
    pub(crate) fn password(&self) -> anyhow::Result<String> {
        if let Some(path) = &self.password_file {
            let mut bytes = Vec::new();
            std::fs::File::open(path)
                .with_context(|| format!("opening the password file {}", path.display()))?
                .take(PASSWORD_FILE_BYTES_MAX)
                .read_to_end(&mut bytes)
                .with_context(|| format!("reading the password file {}", path.display()))?;
            let text = String::from_utf8(bytes).with_context(|| {
                format!("the password file {} is not UTF-8 text", path.display())
            })?;
            let line = text.lines().next().unwrap_or_default();
            return Ok(line.to_owned());
        }
        match std::env::var(PASSWORD_ENV) {
            Ok(password) => Ok(password),
            Err(_) => anyhow::bail!(
                "the keystore needs its password: set {PASSWORD_ENV} or pass --password-file FILE"
            ),
        }
    }
}

/// Whether `bytes` (a key file's content) is a JSON keystore rather than a hex key.
fn is_keystore(bytes: &[u8]) -> bool {
    bytes.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'{')
}

/// Reads the key in `path`: a plain hex key file, or a JSON keystore decrypted with the
/// password `passwords` gives.
pub(crate) fn read_key(path: &Path, passwords: &PasswordArgs) -> anyhow::Result<AuthorKey> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("opening the key file {}", path.display()))?
        .take(KEY_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading the key file {}", path.display()))?;
    anyhow::ensure!(
        bytes.len() as u64 <= KEY_FILE_BYTES_MAX,
        "the key file {} is larger than {KEY_FILE_BYTES_MAX} bytes",
        path.display()
    );
    if !is_keystore(&bytes) {
        return Ok(AuthorKey::read_file(path)?);
    }
    let password = passwords.password()?;
    decrypt_keystore(path, &bytes, &password)
}

/// Decrypts keystore `bytes` (read from `path`) with `password`, and checks the address it
/// names, if it names one, is the key's.
fn decrypt_keystore(path: &Path, bytes: &[u8], password: &str) -> anyhow::Result<AuthorKey> {
    let document: serde_json::Value = serde_json::from_slice(bytes)
        .with_context(|| format!("the keystore {} is not JSON", path.display()))?;
    let version = document.get("version").and_then(serde_json::Value::as_u64);
    anyhow::ensure!(
        version == Some(KEYSTORE_VERSION),
        "the keystore {} is version {}; only version {KEYSTORE_VERSION} (Web3 Secret Storage) \
         is read",
        path.display(),
        version.map_or("(none)".to_owned(), |version| version.to_string())
    );
    let secret = eth_keystore::decrypt_key(path, password).map_err(|error| match error {
        eth_keystore::KeystoreError::MacMismatch => anyhow::anyhow!(
            "the keystore {}: wrong password (its MAC does not match)",
            path.display()
        ),
        other => anyhow::anyhow!("the keystore {}: {other}", path.display()),
    })?;
    let secret: [u8; 32] = secret.as_slice().try_into().map_err(|_| {
        anyhow::anyhow!(
            "the keystore {} holds a {}-byte secret; a secp256k1 key is 32 bytes",
            path.display(),
            secret.len()
        )
    })?;
    let key = AuthorKey::from_bytes(&secret)
        .with_context(|| format!("the key in the keystore {}", path.display()))?;
    if let Some(named) = document.get("address").and_then(serde_json::Value::as_str) {
        let named = named.trim_start_matches("0x").to_ascii_lowercase();
        let actual = key.address().to_string();
        let actual = actual.trim_start_matches("0x").to_ascii_lowercase();
        anyhow::ensure!(
            named == actual,
            "the keystore {} names address 0x{named} but its key is 0x{actual}",
            path.display()
        );
    }
    Ok(key)
}

/// Writes `key` to a new keystore file `path` (mode 0600, never over an existing file),
/// encrypted with `password` (scrypt, AES-128-CTR), naming the key's address as geth does.
pub(crate) fn write_keystore(key: &AuthorKey, path: &Path, password: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !password.is_empty(),
        "refusing to encrypt a keystore with an empty password"
    );
    // eth-keystore writes into a directory: a private one beside the target, removed after.
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let scratch = tempfile::Builder::new()
        .prefix(".blyan-keystore-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a scratch directory in {}", parent.display()))?;
    let name = "keystore.json";
    eth_keystore::encrypt_key(
        scratch.path(),
        &mut rand::rngs::OsRng,
        key.secret_bytes(),
        password,
        Some(name),
    )
    .map_err(|error| anyhow::anyhow!("encrypting the keystore: {error}"))?;
    let written = std::fs::read(scratch.path().join(name)).context("reading the keystore back")?;
    let mut document: serde_json::Value =
        serde_json::from_slice(&written).context("the keystore eth-keystore wrote")?;
    let address = key.address().to_string();
    document["address"] =
        serde_json::Value::String(address.trim_start_matches("0x").to_ascii_lowercase());
    let mut bytes = serde_json::to_vec_pretty(&document)?;
    bytes.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating the keystore {}", path.display()))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing the keystore {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The private key of the Web3 Secret Storage test vectors (password `testpassword`).
    const VECTOR_SECRET: &str =
        "0x7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d";
    const VECTOR_PASSWORD: &str = "testpassword";

    /// The specification's PBKDF2-SHA-256 test vector.
    const PBKDF2_VECTOR: &str = r#"{
        "crypto": {
            "cipher": "aes-128-ctr",
            "cipherparams": {"iv": "6087dab2f9fdbbfaddc31a909735c1e6"},
            "ciphertext": "5318b4d5bcd28de64ee5559e671353e16f075ecae9f99c7a79a38af5f869aa46",
            "kdf": "pbkdf2",
            "kdfparams": {
                "c": 262144,
                "dklen": 32,
                "prf": "hmac-sha256",
                "salt": "ae3cd4e7013836a3df6bd7241b12db061dbe2c6785853cce422d148a624ce0bd"
            },
            "mac": "517ead924a9d0dc3124507e3393d175ce3ff7c1e96529c6c555ce9e51205e9b2"
        },
        "id": "3198bc9c-6672-5ab3-d995-4942343ae5b6",
        "version": 3
    }"#;

    /// A scrypt keystore written by geth (its `accounts/keystore/testdata`, password `foobar`),
    /// naming its address. (The specification's own scrypt vector has r = 1 with n = 2^18, which
    /// RFC 7914 does not allow and the `scrypt` crate refuses; wallets write r = 8.)
    const GETH_SCRYPT_KEYSTORE: &str = r#"{"address":"7ef5a6135f1fd6a02593eedc869c6d41d934aef8","crypto":{"cipher":"aes-128-ctr","ciphertext":"1d0839166e7a15b9c1333fc865d69858b22df26815ccf601b28219b6192974e1","cipherparams":{"iv":"8df6caa7ff1b00c4e871f002cb7921ed"},"kdf":"scrypt","kdfparams":{"dklen":32,"n":8,"p":16,"r":8,"salt":"e5e6ef3f4ea695f496b643ebd3f75c0aa58ef4070e90c80c5d3fb0241bf1595c"},"mac":"6d16dfde774845e4585357f24bce530528bc69f4f84e1e22880d34fa45c273e5"},"id":"950077c7-71e3-4c44-a4a1-143919141ed4","version":3}"#;

    fn open(vector: &str, password: &str) -> anyhow::Result<AuthorKey> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.json");
        std::fs::write(&path, vector).unwrap();
        decrypt_keystore(&path, vector.as_bytes(), password)
    }

    #[test]
    fn the_specification_pbkdf2_vector_opens_to_its_key() {
        let expected = AuthorKey::parse_hex(VECTOR_SECRET).unwrap().address();
        assert_eq!(
            open(PBKDF2_VECTOR, VECTOR_PASSWORD).unwrap().address(),
            expected
        );
        let wrong = open(PBKDF2_VECTOR, "wrongpassword")
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("wrong password"), "{wrong}");
    }

    #[test]
    fn a_geth_scrypt_keystore_opens_to_the_address_it_names() {
        let key = open(GETH_SCRYPT_KEYSTORE, "foobar").unwrap();
        assert_eq!(
            key.address().to_string().to_ascii_lowercase(),
            "0x7ef5a6135f1fd6a02593eedc869c6d41d934aef8"
        );
        let wrong = open(GETH_SCRYPT_KEYSTORE, "foobaz")
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("wrong password"), "{wrong}");
    }

    #[test]
    fn a_keystore_naming_another_address_is_refused() {
        let mut document: serde_json::Value = serde_json::from_str(PBKDF2_VECTOR).unwrap();
        document["address"] = "008aeeda4d805471df9b2a5b0f38a0c3bcba786c".into();
        let error = open(&document.to_string(), VECTOR_PASSWORD)
            .unwrap_err()
            .to_string();
        assert!(error.contains("names address"), "{error}");
        // The address the specification gives for the vector's key is the key's.
        document["address"] = "008aeeda4d805471df9b2a5b0f38a0c3bcba786b".into();
        assert!(open(&document.to_string(), VECTOR_PASSWORD).is_ok());
    }

    #[test]
    fn other_versions_are_refused_naming_the_version() {
        let document = PBKDF2_VECTOR.replace("\"version\": 3", "\"version\": 1");
        let error = open(&document, VECTOR_PASSWORD).unwrap_err().to_string();
        assert!(error.contains("is version 1"), "{error}");
    }

    #[test]
    fn a_written_keystore_reads_back_and_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("miner.json");
        let key = AuthorKey::generate();
        write_keystore(&key, &path, "a password").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let bytes = std::fs::read(&path).unwrap();
        assert!(is_keystore(&bytes));
        let read = decrypt_keystore(&path, &bytes, "a password").unwrap();
        assert_eq!(read.address(), key.address());
        // Never over an existing file, and nothing left beside it.
        assert!(write_keystore(&key, &path, "a password").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(write_keystore(&key, &dir.path().join("other.json"), "").is_err());
    }
}
