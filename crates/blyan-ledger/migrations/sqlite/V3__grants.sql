-- blyan-ledger schema V3, SQLite: grants from the treasury. The same change as
-- postgres/V3__grants.sql, in SQLite's dialect.
--
-- SQLite cannot alter a CHECK, so `transactions` (whose kinds widen by 'grant') is rebuilt
-- with its data inside the migration's one transaction, as V2 did: foreign keys are deferred
-- to COMMIT, the table is dropped and recreated with the same ids (adopting the rows that
-- reference it again), and its index and triggers are recreated as V2 had them.

PRAGMA defer_foreign_keys = ON;

-- Child-key indexes for the duration of the rebuild (see V2).
CREATE INDEX v3_holds_by_authorize_tx ON holds (authorize_tx);
CREATE INDEX v3_holds_by_settle_tx ON holds (settle_tx);

CREATE TABLE v3_transactions_copy AS
    SELECT id, kind, idempotency_key, memo, created_at_ms FROM transactions;
DROP TABLE transactions;
CREATE TABLE transactions (
    id              INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('genesis', 'transfer', 'mint', 'burn', 'reward',
                        'authorize', 'capture', 'release', 'expiry', 'bond_lock',
                        'bond_refund', 'bond_burn', 'grant')),
    idempotency_key TEXT,
    memo            TEXT NOT NULL CHECK (length(CAST(memo AS BLOB)) <= 256),
    created_at_ms   INTEGER NOT NULL
) STRICT;
INSERT INTO transactions (id, kind, idempotency_key, memo, created_at_ms)
    SELECT id, kind, idempotency_key, memo, created_at_ms FROM v3_transactions_copy;
DROP TABLE v3_transactions_copy;
CREATE UNIQUE INDEX transactions_one_genesis ON transactions (kind) WHERE kind = 'genesis';

-- Invariant: a transaction is recorded only when its entries sum to zero (at least two).
CREATE TRIGGER transactions_balanced BEFORE INSERT ON transactions
BEGIN
    SELECT RAISE(ABORT, 'transaction is unbalanced')
    WHERE (SELECT COALESCE(SUM(amount), 0) FROM entries WHERE tx_id = NEW.id) <> 0
       OR (SELECT COUNT(*) FROM entries WHERE tx_id = NEW.id) < 2;
END;
CREATE TRIGGER transactions_no_update BEFORE UPDATE ON transactions
BEGIN SELECT RAISE(ABORT, 'transactions are append-only'); END;
CREATE TRIGGER transactions_no_delete BEFORE DELETE ON transactions
BEGIN SELECT RAISE(ABORT, 'transactions are append-only'); END;

DROP INDEX v3_holds_by_authorize_tx;
DROP INDEX v3_holds_by_settle_tx;

CREATE TABLE grants (
    tx_id         INTEGER PRIMARY KEY REFERENCES transactions (id),
    recipient     TEXT NOT NULL REFERENCES accounts (account)
                      CHECK (length(recipient) = 42 AND recipient GLOB '0x*'
                             AND substr(recipient, 3) NOT GLOB '*[^0-9a-f]*'),
    amount        INTEGER NOT NULL CHECK (amount > 0),
    source        TEXT NOT NULL CHECK (source IN ('operator', 'faucet')),
    created_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX grants_by_source ON grants (source, created_at_ms);
CREATE INDEX grants_by_recipient ON grants (recipient, source, created_at_ms);

CREATE TRIGGER grants_no_update BEFORE UPDATE ON grants
BEGIN SELECT RAISE(ABORT, 'grants are append-only'); END;
CREATE TRIGGER grants_no_delete BEFORE DELETE ON grants
BEGIN SELECT RAISE(ABORT, 'grants are append-only'); END;
