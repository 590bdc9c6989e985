-- The sign-in store as it was created before it had migrations. `IF NOT EXISTS` throughout:
-- on a store created by that code this migration changes nothing and only records the baseline.
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
