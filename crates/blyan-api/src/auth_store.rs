//! Sign-in sessions, refresh tokens and API keys, in a SQLite file under the data directory.
//!
//! Secrets are never stored: a refresh token or API key is kept as its blake3 hash and shown to
//! its owner once. Refresh tokens rotate: each use spends the token and returns a new one; using
//! a spent token again means it was stolen, so the whole session is signed out.
//!
//! The file is created owner-only (0600). Every method blocks on SQLite: the HTTP layer calls
//! them on blocking threads ([`crate::auth::Auth::store`]), except a look-up of an API key
//! found in the short-lived cache ([`AuthStore::cached_api_key_wallet`]), which is emptied
//! whenever a key is revoked. [`AuthStore::prune`] removes rows that can no longer matter.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use blyan_api_types::ApiKeyInfo;
use blyan_primitives::Address;
use rand::RngCore as _;
use rusqlite::{Connection, OptionalExtension as _, params};

use crate::jwt::unix_seconds;
use crate::{Error, Result};

/// File under the data directory.
pub(crate) const AUTH_STORE_FILE: &str = "api-auth.sqlite";

/// Most live API keys one wallet may hold.
pub const API_KEYS_PER_WALLET_MAX: u32 = 32;

/// Longest API key name, in characters.
pub const API_KEY_NAME_CHARS_MAX: usize = 64;

/// Prefix of every API key, so a leaked one is recognisable (and told apart from a JWT).
pub const API_KEY_PREFIX: &str = "bly_";

/// Prefix of every refresh token.
pub const REFRESH_TOKEN_PREFIX: &str = "blyr_";

/// Random bytes in an API key or refresh token.
const SECRET_RANDOM_BYTES: usize = 32;

/// How long a looked-up API key is answered from memory (revoking a key empties the cache at
/// once; this bounds only how stale a cached wallet can be).
pub const API_KEY_CACHE_SECONDS: u64 = 30;

/// Most API keys cached at once; a full cache is emptied (only valid keys are cached, so this
/// is reached by many real keys, never by guesses).
pub const API_KEY_CACHE_COUNT_MAX: usize = 4096;

/// Per-connection settings, applied before the migrations (SQLite refuses to change the journal
/// mode inside the transaction a migration runs in).
const CONNECTION_PRAGMAS: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA foreign_keys = ON;
";

/// The store's schema, one versioned SQL file per change under `migrations/sign_in/`, applied
/// by refinery (the migration library the ledger uses too) and recorded in the file's
/// `refinery_schema_history` table. V1 is the schema stores had before migrations existed,
/// written so that applying it to such a store changes nothing: it becomes their baseline.
mod embedded {
    refinery::embed_migrations!("migrations/sign_in");
}

/// A refresh token joined with its session: sid, expires_at, used_at, wallet, revoked_at.
type RefreshRow = (String, i64, Option<i64>, String, Option<i64>);

/// The durable half of sign-in state.
#[derive(Debug)]
pub(crate) struct AuthStore {
    connection: Mutex<Connection>,
    /// Live API keys by their hash: the wallet, and when it was read.
    api_key_cache: Mutex<HashMap<String, (Address, Instant)>>,
}

/// What a session id stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionState {
    /// Signed in, as this wallet.
    Live(Address),
    /// Signed out, or unknown (pruned, or never issued here).
    Ended,
}

/// Rows [`AuthStore::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pruned {
    pub sessions: usize,
    pub refresh_tokens: usize,
    pub api_keys: usize,
}

fn random_secret(prefix: &str) -> String {
    let mut bytes = [0_u8; SECRET_RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

fn random_id() -> String {
    let mut bytes = [0_u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn hash_secret(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

fn seconds_i64(time: SystemTime) -> i64 {
    i64::try_from(unix_seconds(time)).unwrap_or(i64::MAX)
}

impl AuthStore {
    /// Opens (creating) the store under `data_dir`.
    pub(crate) fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|source| Error::DataFile {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(AUTH_STORE_FILE);
        blyan_primitives::create_owner_only(&path).map_err(|source| Error::DataFile {
            path: path.clone(),
            source,
        })?;
        let mut connection = Connection::open(&path)?;
        connection.execute_batch(CONNECTION_PRAGMAS)?;
        let report = embedded::migrations::runner().run(&mut connection)?;
        for migration in report.applied_migrations() {
            tracing::info!(migration = %migration, "sign-in store migrated");
        }
        Ok(Self {
            connection: Mutex::new(connection),
            api_key_cache: Mutex::new(HashMap::new()),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Address, Instant)>> {
        // Entries are inserted and removed whole: a poisoned cache is consistent.
        self.api_key_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // SQLite rolls back an unfinished transaction of a panicked holder: the file stays
        // consistent, so a poisoned lock is still usable.
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session for `wallet`: its id and its first refresh token.
    pub(crate) fn create_session(
        &self,
        wallet: &Address,
        refresh_expires_at: SystemTime,
        now: SystemTime,
    ) -> Result<(String, String)> {
        let sid = random_id();
        let refresh = random_secret(REFRESH_TOKEN_PREFIX);
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        transaction.execute(
            "DELETE FROM refresh_tokens WHERE expires_at < ?1",
            params![seconds_i64(now)],
        )?;
        transaction.execute(
            "INSERT INTO sessions (sid, wallet, created_at) VALUES (?1, ?2, ?3)",
            params![sid, wallet.to_string(), seconds_i64(now)],
        )?;
        transaction.execute(
            "INSERT INTO refresh_tokens (token_hash, sid, expires_at) VALUES (?1, ?2, ?3)",
            params![hash_secret(&refresh), sid, seconds_i64(refresh_expires_at)],
        )?;
        transaction.commit()?;
        Ok((sid, refresh))
    }

    /// Whether session `sid` is live, and whose it is (an unknown session counts as ended).
    pub(crate) fn session(&self, sid: &str) -> Result<SessionState> {
        let found: Option<(String, Option<i64>)> = self
            .lock()
            .query_row(
                "SELECT wallet, revoked_at FROM sessions WHERE sid = ?1",
                params![sid],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        Ok(match found {
            Some((wallet, None)) => wallet
                .parse()
                .map_or(SessionState::Ended, SessionState::Live),
            _ => SessionState::Ended,
        })
    }

    /// Whether session `sid` is signed out (an unknown session counts as signed out).
    #[cfg(test)]
    pub(crate) fn session_revoked(&self, sid: &str) -> Result<bool> {
        Ok(self.session(sid)? == SessionState::Ended)
    }

    /// Signs session `sid` out: its access and refresh tokens stop working.
    pub(crate) fn revoke_session(&self, sid: &str, now: SystemTime) -> Result<()> {
        self.lock().execute(
            "UPDATE sessions SET revoked_at = ?2 WHERE sid = ?1 AND revoked_at IS NULL",
            params![sid, seconds_i64(now)],
        )?;
        Ok(())
    }

    /// Spends `refresh` and returns its session, wallet and the next refresh token.
    pub(crate) fn rotate_refresh(
        &self,
        refresh: &str,
        next_expires_at: SystemTime,
        now: SystemTime,
    ) -> Result<(String, Address, String)> {
        let now_seconds = seconds_i64(now);
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let found: Option<RefreshRow> = transaction
            .query_row(
                "SELECT r.sid, r.expires_at, r.used_at, s.wallet, s.revoked_at
                 FROM refresh_tokens r JOIN sessions s ON s.sid = r.sid
                 WHERE r.token_hash = ?1",
                params![hash_secret(refresh)],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                },
            )
            .optional()?;
        let Some((sid, expires_at, used_at, wallet, revoked_at)) = found else {
            return Err(Error::RefreshInvalid);
        };
        if used_at.is_some() {
            // A spent token came back: someone else holds a copy. End the session for both.
            transaction.execute(
                "UPDATE sessions SET revoked_at = ?2 WHERE sid = ?1 AND revoked_at IS NULL",
                params![sid, now_seconds],
            )?;
            transaction.commit()?;
            tracing::warn!(%sid, "refresh token reused: session signed out");
            return Err(Error::RefreshInvalid);
        }
        if revoked_at.is_some() || expires_at <= now_seconds {
            return Err(Error::RefreshInvalid);
        }
        let wallet: Address = wallet.parse().map_err(|_| Error::RefreshInvalid)?;
        let next = random_secret(REFRESH_TOKEN_PREFIX);
        transaction.execute(
            "UPDATE refresh_tokens SET used_at = ?2 WHERE token_hash = ?1",
            params![hash_secret(refresh), now_seconds],
        )?;
        transaction.execute(
            "INSERT INTO refresh_tokens (token_hash, sid, expires_at) VALUES (?1, ?2, ?3)",
            params![hash_secret(&next), sid, seconds_i64(next_expires_at)],
        )?;
        transaction.commit()?;
        Ok((sid, wallet, next))
    }

    /// Creates an API key for `wallet`: its listing and the key, which is never shown again.
    pub(crate) fn create_api_key(
        &self,
        wallet: &Address,
        name: &str,
        now: SystemTime,
    ) -> Result<(ApiKeyInfo, String)> {
        if name.chars().count() > API_KEY_NAME_CHARS_MAX || name.chars().any(char::is_control) {
            return Err(Error::InvalidRequest {
                field: "name".to_owned(),
                reason: format!("at most {API_KEY_NAME_CHARS_MAX} printable characters"),
            });
        }
        let key = random_secret(API_KEY_PREFIX);
        let info = ApiKeyInfo {
            id: random_id(),
            name: name.to_owned(),
            prefix: key.chars().take(API_KEY_PREFIX.len() + 6).collect(),
            created_at: unix_seconds(now),
        };
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let live: u32 = transaction.query_row(
            "SELECT COUNT(*) FROM api_keys WHERE wallet = ?1 AND revoked_at IS NULL",
            params![wallet.to_string()],
            |row| row.get(0),
        )?;
        if live >= API_KEYS_PER_WALLET_MAX {
            return Err(Error::InvalidRequest {
                field: "name".to_owned(),
                reason: format!(
                    "this wallet already holds {API_KEYS_PER_WALLET_MAX} API keys; revoke one first"
                ),
            });
        }
        transaction.execute(
            "INSERT INTO api_keys (id, key_hash, wallet, name, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                info.id,
                hash_secret(&key),
                wallet.to_string(),
                info.name,
                seconds_i64(now)
            ],
        )?;
        transaction.commit()?;
        Ok((info, key))
    }

    /// The live API keys of `wallet`, oldest first.
    pub(crate) fn list_api_keys(&self, wallet: &Address) -> Result<Vec<ApiKeyInfo>> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "SELECT id, name, created_at FROM api_keys
             WHERE wallet = ?1 AND revoked_at IS NULL ORDER BY created_at, id",
        )?;
        let rows = statement.query_map(params![wallet.to_string()], |row| {
            let created_at: i64 = row.get(2)?;
            Ok(ApiKeyInfo {
                id: row.get(0)?,
                name: row.get(1)?,
                prefix: API_KEY_PREFIX.to_owned(),
                created_at: u64::try_from(created_at).unwrap_or(0),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Revokes key `id` of `wallet`; false when it has no such live key.
    pub(crate) fn revoke_api_key(
        &self,
        wallet: &Address,
        id: &str,
        now: SystemTime,
    ) -> Result<bool> {
        let changed = self.lock().execute(
            "UPDATE api_keys SET revoked_at = ?3 WHERE id = ?1 AND wallet = ?2 AND revoked_at IS NULL",
            params![id, wallet.to_string(), seconds_i64(now)],
        )?;
        // The cache is keyed by the key's hash, which the id does not give: forget them all
        // (revoking is rare), so the revoked key is refused from its next use on.
        self.cache().clear();
        Ok(changed == 1)
    }

    /// The wallet owning live API key `key`, when it was looked up less than
    /// [`API_KEY_CACHE_SECONDS`] ago and not revoked since. Touches no file.
    pub(crate) fn cached_api_key_wallet(&self, key: &str, now: Instant) -> Option<Address> {
        let hash = hash_secret(key);
        let mut cache = self.cache();
        match cache.get(&hash) {
            Some((wallet, read_at))
                if now.saturating_duration_since(*read_at)
                    < Duration::from_secs(API_KEY_CACHE_SECONDS) =>
            {
                Some(*wallet)
            }
            Some(_) => {
                cache.remove(&hash);
                None
            }
            None => None,
        }
    }

    /// The wallet owning live API key `key`, read from the file (and cached).
    pub(crate) fn api_key_wallet(&self, key: &str) -> Result<Address> {
        let hash = hash_secret(key);
        let wallet: Option<String> = self
            .lock()
            .query_row(
                "SELECT wallet FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL",
                params![hash],
                |row| row.get(0),
            )
            .optional()?;
        let wallet: Address = wallet
            .and_then(|wallet| wallet.parse().ok())
            .ok_or(Error::ApiKeyInvalid)?;
        let mut cache = self.cache();
        if cache.len() >= API_KEY_CACHE_COUNT_MAX {
            cache.clear();
        }
        cache.insert(hash, (wallet, Instant::now()));
        Ok(wallet)
    }

    /// Removes what can no longer be used at `now`: refresh tokens past their expiry or of
    /// ended sessions, ended sessions and sessions left without a live refresh token (their
    /// access tokens then count as signed out, which only ever ends a session sooner), and
    /// revoked API keys (a removed key is refused like a revoked one).
    pub(crate) fn prune(&self, now: SystemTime) -> Result<Pruned> {
        let now = seconds_i64(now);
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let refresh_tokens = transaction.execute(
            "DELETE FROM refresh_tokens WHERE expires_at <= ?1
                OR sid IN (SELECT sid FROM sessions WHERE revoked_at IS NOT NULL)",
            params![now],
        )?;
        let sessions = transaction.execute(
            "DELETE FROM sessions WHERE revoked_at IS NOT NULL
                OR NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.sid = sessions.sid)",
            [],
        )?;
        let api_keys =
            transaction.execute("DELETE FROM api_keys WHERE revoked_at IS NOT NULL", [])?;
        transaction.commit()?;
        Ok(Pruned {
            sessions,
            refresh_tokens,
            api_keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn wallet() -> Address {
        "0x6Da01670d8fc844e736095918bbE11fE8D564163"
            .parse()
            .unwrap()
    }

    #[test]
    fn refresh_tokens_rotate_and_a_reuse_signs_the_session_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        let now = SystemTime::now();
        let later = now + Duration::from_secs(3600);
        let (sid, first) = store.create_session(&wallet(), later, now).unwrap();
        assert!(!store.session_revoked(&sid).unwrap());
        let (same_sid, got_wallet, second) = store.rotate_refresh(&first, later, now).unwrap();
        assert_eq!((same_sid.as_str(), got_wallet), (sid.as_str(), wallet()));
        let error = store.rotate_refresh(&first, later, now).unwrap_err();
        assert_eq!(error.code(), "refresh_invalid");
        assert!(store.session_revoked(&sid).unwrap(), "reuse must sign out");
        assert_eq!(
            store
                .rotate_refresh(&second, later, now)
                .unwrap_err()
                .code(),
            "refresh_invalid"
        );
    }

    #[test]
    fn expired_or_signed_out_refresh_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        let now = SystemTime::now();
        let (_, token) = store
            .create_session(&wallet(), now + Duration::from_secs(10), now)
            .unwrap();
        let error = store
            .rotate_refresh(&token, now, now + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(error.code(), "refresh_invalid");
        let (sid, token) = store
            .create_session(&wallet(), now + Duration::from_secs(10), now)
            .unwrap();
        store.revoke_session(&sid, now).unwrap();
        assert!(store.session_revoked(&sid).unwrap());
        assert_eq!(
            store.rotate_refresh(&token, now, now).unwrap_err().code(),
            "refresh_invalid"
        );
        assert!(store.session_revoked("no-such-session").unwrap());
    }

    #[test]
    fn api_keys_are_hashed_listed_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        let now = SystemTime::now();
        let (info, key) = store.create_api_key(&wallet(), "bot", now).unwrap();
        assert!(key.starts_with(API_KEY_PREFIX));
        assert!(info.prefix.len() < key.len());
        assert_eq!(store.api_key_wallet(&key).unwrap(), wallet());
        assert_eq!(store.list_api_keys(&wallet()).unwrap().len(), 1);
        // The key itself is nowhere in the file.
        drop(store);
        let bytes = std::fs::read(dir.path().join(AUTH_STORE_FILE)).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&key[API_KEY_PREFIX.len()..]));
        let store = AuthStore::open(dir.path()).unwrap();
        assert!(store.revoke_api_key(&wallet(), &info.id, now).unwrap());
        assert!(!store.revoke_api_key(&wallet(), &info.id, now).unwrap());
        assert_eq!(
            store.api_key_wallet(&key).unwrap_err().code(),
            "api_key_invalid"
        );
    }

    fn count(store: &AuthStore, table: &str) -> i64 {
        store
            .lock()
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .unwrap()
    }

    #[test]
    fn a_session_knows_its_wallet() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        let now = SystemTime::now();
        let (sid, _) = store
            .create_session(&wallet(), now + Duration::from_secs(60), now)
            .unwrap();
        assert_eq!(store.session(&sid).unwrap(), SessionState::Live(wallet()));
        store.revoke_session(&sid, now).unwrap();
        assert_eq!(store.session(&sid).unwrap(), SessionState::Ended);
        assert_eq!(store.session("unknown").unwrap(), SessionState::Ended);
    }

    #[test]
    fn prune_removes_expired_and_ended_rows_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        // A live session, one whose refresh token expires, one signed out.
        let (live, live_refresh) = store.create_session(&wallet(), now + hour, now).unwrap();
        let (expiring, _) = store
            .create_session(&wallet(), now + Duration::from_secs(10), now)
            .unwrap();
        let (ended, _) = store.create_session(&wallet(), now + hour, now).unwrap();
        store.revoke_session(&ended, now).unwrap();
        // A spent refresh token of the live session is kept for reuse detection.
        let (_, _, next_refresh) = store
            .rotate_refresh(&live_refresh, now + hour, now)
            .unwrap();
        // A live API key and a revoked one.
        let (_, live_key) = store.create_api_key(&wallet(), "live", now).unwrap();
        let (revoked_info, _) = store.create_api_key(&wallet(), "revoked", now).unwrap();
        store
            .revoke_api_key(&wallet(), &revoked_info.id, now)
            .unwrap();

        let pruned = store.prune(now + Duration::from_secs(10)).unwrap();
        assert_eq!(
            pruned,
            Pruned {
                sessions: 2,
                refresh_tokens: 2,
                api_keys: 1
            }
        );
        assert_eq!(store.session(&live).unwrap(), SessionState::Live(wallet()));
        assert_eq!(store.session(&expiring).unwrap(), SessionState::Ended);
        assert_eq!(
            (count(&store, "sessions"), count(&store, "refresh_tokens")),
            (1, 2)
        );
        assert_eq!(count(&store, "api_keys"), 1);
        assert_eq!(store.api_key_wallet(&live_key).unwrap(), wallet());
        // The spent token still signs the session out when it comes back.
        let later = now + Duration::from_secs(20);
        assert!(
            store
                .rotate_refresh(&live_refresh, now + hour, later)
                .is_err()
        );
        assert!(
            store
                .rotate_refresh(&next_refresh, now + hour, later)
                .is_err()
        );
        assert_eq!(store.session(&live).unwrap(), SessionState::Ended);
        // Nothing left to prune is pruned twice.
        store.prune(later).unwrap();
        assert_eq!(store.prune(later).unwrap(), Pruned::default());
    }

    #[test]
    fn a_revoked_key_is_refused_at_once_although_cached() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        let now = SystemTime::now();
        let (info, key) = store.create_api_key(&wallet(), "cached", now).unwrap();
        assert_eq!(store.cached_api_key_wallet(&key, Instant::now()), None);
        assert_eq!(store.api_key_wallet(&key).unwrap(), wallet());
        assert_eq!(
            store.cached_api_key_wallet(&key, Instant::now()),
            Some(wallet())
        );
        let stale = Instant::now() + Duration::from_secs(API_KEY_CACHE_SECONDS);
        assert_eq!(store.cached_api_key_wallet(&key, stale), None);
        store.api_key_wallet(&key).unwrap();
        store.revoke_api_key(&wallet(), &info.id, now).unwrap();
        assert_eq!(store.cached_api_key_wallet(&key, Instant::now()), None);
        assert_eq!(
            store.api_key_wallet(&key).unwrap_err().code(),
            "api_key_invalid"
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_store_file_is_created_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        store
            .create_session(&wallet(), SystemTime::now(), SystemTime::now())
            .unwrap();
        for name in [AUTH_STORE_FILE.to_owned(), format!("{AUTH_STORE_FILE}-wal")] {
            let mode = std::fs::metadata(dir.path().join(&name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}: {mode:o}");
        }
    }

    #[test]
    fn api_keys_per_wallet_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        let now = SystemTime::now();
        for index in 0..API_KEYS_PER_WALLET_MAX {
            store
                .create_api_key(&wallet(), &format!("k{index}"), now)
                .unwrap();
        }
        let error = store
            .create_api_key(&wallet(), "one-too-many", now)
            .unwrap_err();
        assert_eq!(error.code(), "invalid_request");
        let name_at_bound = "n".repeat(API_KEY_NAME_CHARS_MAX);
        let other: Address = "0x0000000000000000000000000000000000000001"
            .parse()
            .unwrap();
        store.create_api_key(&other, &name_at_bound, now).unwrap();
        let name_past_bound = "n".repeat(API_KEY_NAME_CHARS_MAX + 1);
        assert!(store.create_api_key(&other, &name_past_bound, now).is_err());
    }

    /// The schema the sign-in store wrote before it had migrations, exactly as it was executed
    /// at every open.
    const SCHEMA_BEFORE_MIGRATIONS: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA foreign_keys = ON;
CREATE TABLE IF NOT EXISTS sessions (
    sid TEXT PRIMARY KEY,
    wallet TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    sid TEXT NOT NULL REFERENCES sessions(sid),
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    wallet TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX IF NOT EXISTS api_keys_by_wallet ON api_keys(wallet);
";

    fn applied_versions(path: &Path) -> Vec<i64> {
        let connection = Connection::open(path).unwrap();
        let mut statement = connection
            .prepare("SELECT version FROM refinery_schema_history ORDER BY version")
            .unwrap();
        statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<Vec<i64>>>()
            .unwrap()
    }

    #[test]
    fn a_store_created_before_migrations_opens_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUTH_STORE_FILE);
        let now = SystemTime::now();
        let later = now + Duration::from_secs(3600);
        // A store as the code before migrations left it: its schema, a session with a refresh
        // token and an API key, written with the same statements that code used.
        let key = "bly_0123456789abcdef";
        let refresh = "blyr_0123456789abcdef";
        {
            let connection = Connection::open(&path).unwrap();
            connection.execute_batch(SCHEMA_BEFORE_MIGRATIONS).unwrap();
            connection
                .execute(
                    "INSERT INTO sessions (sid, wallet, created_at) VALUES (?1, ?2, ?3)",
                    params!["s1", wallet().to_string(), seconds_i64(now)],
                )
                .unwrap();
            connection
                .execute(
                    "INSERT INTO refresh_tokens (token_hash, sid, expires_at) VALUES (?1, ?2, ?3)",
                    params![hash_secret(refresh), "s1", seconds_i64(later)],
                )
                .unwrap();
            connection
                .execute(
                    "INSERT INTO api_keys (id, key_hash, wallet, name, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params!["k1", hash_secret(key), wallet().to_string(), "old", seconds_i64(now)],
                )
                .unwrap();
        }
        let store = AuthStore::open(dir.path()).unwrap();
        assert_eq!(
            applied_versions(&path),
            vec![1],
            "V1 recorded as the baseline"
        );
        assert_eq!(store.api_key_wallet(key).unwrap(), wallet());
        assert!(!store.session_revoked("s1").unwrap());
        let (sid, got_wallet, _) = store.rotate_refresh(refresh, later, now).unwrap();
        assert_eq!((sid.as_str(), got_wallet), ("s1", wallet()));
        let listed = store.list_api_keys(&wallet()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].id.as_str(), listed[0].name.as_str()),
            ("k1", "old")
        );
        // Opening again applies nothing new.
        drop(store);
        AuthStore::open(dir.path()).unwrap();
        assert_eq!(applied_versions(&path), vec![1]);
    }

    #[test]
    fn a_new_store_is_created_by_the_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        assert_eq!(applied_versions(&dir.path().join(AUTH_STORE_FILE)), vec![1]);
        let now = SystemTime::now();
        store.create_api_key(&wallet(), "fresh", now).unwrap();
        assert_eq!(store.list_api_keys(&wallet()).unwrap().len(), 1);
    }
}
