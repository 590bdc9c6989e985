-- blyan-ledger schema, SQLite (the embedded store). The same tables and invariants as the
-- PostgreSQL migration postgres/V1__ledger.sql, in SQLite's dialect. SQLite has no deferred constraint
-- triggers, so "entries sum to zero" is enforced by ordering: entries are written first (their
-- foreign key to the transaction is deferred to COMMIT), and the transaction row can only be
-- inserted when its entries already balance; entries cannot be added to an existing
-- transaction. A COMMIT with entries but no transaction row fails the deferred foreign key.

CREATE TABLE ledger_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE accounts (
    account       TEXT PRIMARY KEY,
    balance       INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    CONSTRAINT account_key_format CHECK (
        (length(account) = 42 AND account GLOB '0x*' AND substr(account, 3) NOT GLOB '*[^0-9a-f]*')
        OR account IN ('system:mint', 'system:burn', 'system:fee_escrow', 'system:treasury',
                       'system:reward_pool', 'system:team', 'system:foundation')
    ),
    CONSTRAINT balance_not_negative CHECK (balance >= 0 OR account = 'system:mint'),
    CONSTRAINT mint_not_positive CHECK (account <> 'system:mint' OR balance <= 0)
) STRICT;

INSERT INTO accounts (account, created_at_ms) VALUES
    ('system:mint', 0), ('system:burn', 0), ('system:fee_escrow', 0), ('system:treasury', 0),
    ('system:reward_pool', 0), ('system:team', 0), ('system:foundation', 0);

CREATE TABLE idempotency_keys (
    key           TEXT PRIMARY KEY,
    request       TEXT NOT NULL,
    outcome       TEXT,
    created_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE transactions (
    id              INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('genesis', 'transfer', 'mint', 'burn', 'reward',
                        'authorize', 'capture', 'release', 'expiry')),
    idempotency_key TEXT,
    memo            TEXT NOT NULL CHECK (length(CAST(memo AS BLOB)) <= 256),
    created_at_ms   INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX transactions_one_genesis ON transactions (kind) WHERE kind = 'genesis';

CREATE TABLE entries (
    id      INTEGER PRIMARY KEY,
    tx_id   INTEGER NOT NULL REFERENCES transactions (id) DEFERRABLE INITIALLY DEFERRED,
    account TEXT NOT NULL REFERENCES accounts (account),
    amount  INTEGER NOT NULL CHECK (amount <> 0)
) STRICT;
CREATE INDEX entries_by_tx ON entries (tx_id);
CREATE INDEX entries_by_account ON entries (account, id DESC);

CREATE TABLE quotes (
    id               INTEGER PRIMARY KEY,
    payer            TEXT NOT NULL CHECK (length(payer) = 42 AND payer GLOB '0x*'
                         AND substr(payer, 3) NOT GLOB '*[^0-9a-f]*'),
    estimated_tokens INTEGER NOT NULL CHECK (estimated_tokens > 0),
    amount           INTEGER NOT NULL CHECK (amount > 0),
    hold_amount      INTEGER NOT NULL CHECK (hold_amount >= amount),
    created_at_ms    INTEGER NOT NULL,
    expires_at_ms    INTEGER NOT NULL CHECK (expires_at_ms > created_at_ms)
) STRICT;

CREATE TABLE holds (
    id            INTEGER PRIMARY KEY,
    quote_id      INTEGER NOT NULL UNIQUE REFERENCES quotes (id),
    payer         TEXT NOT NULL REFERENCES accounts (account),
    quoted        INTEGER NOT NULL CHECK (quoted > 0),
    amount        INTEGER NOT NULL CHECK (amount >= quoted),
    status        TEXT NOT NULL CHECK (status IN ('authorized', 'captured', 'released', 'expired')),
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL CHECK (expires_at_ms > created_at_ms),
    authorize_tx  INTEGER NOT NULL REFERENCES transactions (id),
    settle_tx     INTEGER REFERENCES transactions (id),
    CONSTRAINT settled_iff_not_authorized CHECK ((status = 'authorized') = (settle_tx IS NULL))
) STRICT;
CREATE INDEX holds_stale ON holds (expires_at_ms, id) WHERE status = 'authorized';
CREATE INDEX holds_by_payer ON holds (payer) WHERE status = 'authorized';

CREATE TABLE inflation_years (
    year        INTEGER PRIMARY KEY CHECK (year >= 0),
    base_supply INTEGER NOT NULL CHECK (base_supply >= 0),
    minted      INTEGER NOT NULL CHECK (minted >= 0)
) STRICT;

-- Entries cannot join a transaction that is already recorded.
CREATE TRIGGER entries_before_transaction BEFORE INSERT ON entries
BEGIN
    SELECT RAISE(ABORT, 'entries cannot be added to a recorded transaction')
    WHERE EXISTS (SELECT 1 FROM transactions WHERE id = NEW.tx_id);
END;

-- Balances follow entries in the same transaction (the CHECKs above refuse a negative one).
CREATE TRIGGER entries_apply AFTER INSERT ON entries
BEGIN
    UPDATE accounts SET balance = balance + NEW.amount WHERE account = NEW.account;
END;

-- Invariant: a transaction is recorded only when its entries sum to zero (at least two).
CREATE TRIGGER transactions_balanced BEFORE INSERT ON transactions
BEGIN
    SELECT RAISE(ABORT, 'transaction is unbalanced')
    WHERE (SELECT COALESCE(SUM(amount), 0) FROM entries WHERE tx_id = NEW.id) <> 0
       OR (SELECT COUNT(*) FROM entries WHERE tx_id = NEW.id) < 2;
END;

-- The record is append-only.
CREATE TRIGGER transactions_no_update BEFORE UPDATE ON transactions
BEGIN SELECT RAISE(ABORT, 'transactions are append-only'); END;
CREATE TRIGGER transactions_no_delete BEFORE DELETE ON transactions
BEGIN SELECT RAISE(ABORT, 'transactions are append-only'); END;
CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'entries are append-only'); END;
CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'entries are append-only'); END;
