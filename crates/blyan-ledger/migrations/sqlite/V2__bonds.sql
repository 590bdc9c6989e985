-- blyan-ledger schema V2, SQLite: Proof-of-Learning candidate bonds. The same change as
-- postgres/V2__bonds.sql, in SQLite's dialect.
--
-- SQLite cannot alter a CHECK, so the two tables whose CHECKs widen (accounts: the new
-- system:bond_escrow; transactions: the kinds bond_lock, bond_refund, bond_burn) are rebuilt
-- with their data, inside the migration's one transaction. Foreign keys stay on (a PRAGMA
-- cannot turn them off inside a transaction); deferring them to COMMIT lets each table be
-- dropped and recreated: the drop orphans the rows that reference it, re-inserting the same
-- keys adopts them again, and COMMIT fails if any row were left without its parent. Dropping
-- a table drops its indexes and triggers, which are recreated as V1 had them.

PRAGMA defer_foreign_keys = ON;

-- Child-key indexes for the duration of the rebuild: dropping and refilling a parent looks up
-- each parent row's children. Dropped at the end (the ledger never deletes a parent row).
CREATE INDEX v2_holds_by_payer ON holds (payer);
CREATE INDEX v2_holds_by_authorize_tx ON holds (authorize_tx);
CREATE INDEX v2_holds_by_settle_tx ON holds (settle_tx);

-- accounts: admit system:bond_escrow.
CREATE TABLE v2_accounts_copy AS SELECT account, balance, created_at_ms FROM accounts;
DROP TABLE accounts;
CREATE TABLE accounts (
    account       TEXT PRIMARY KEY,
    balance       INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    CONSTRAINT account_key_format CHECK (
        (length(account) = 42 AND account GLOB '0x*' AND substr(account, 3) NOT GLOB '*[^0-9a-f]*')
        OR account IN ('system:mint', 'system:burn', 'system:fee_escrow', 'system:bond_escrow',
                       'system:treasury', 'system:reward_pool', 'system:team',
                       'system:foundation')
    ),
    CONSTRAINT balance_not_negative CHECK (balance >= 0 OR account = 'system:mint'),
    CONSTRAINT mint_not_positive CHECK (account <> 'system:mint' OR balance <= 0)
) STRICT;
INSERT INTO accounts (account, balance, created_at_ms)
    SELECT account, balance, created_at_ms FROM v2_accounts_copy;
DROP TABLE v2_accounts_copy;
INSERT INTO accounts (account, created_at_ms) VALUES ('system:bond_escrow', 0);

-- transactions: admit the bond kinds. Its triggers are recreated after the copy (the rows were
-- balanced when first recorded, and entries are not rewritten).
CREATE TABLE v2_transactions_copy AS
    SELECT id, kind, idempotency_key, memo, created_at_ms FROM transactions;
DROP TABLE transactions;
CREATE TABLE transactions (
    id              INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('genesis', 'transfer', 'mint', 'burn', 'reward',
                        'authorize', 'capture', 'release', 'expiry', 'bond_lock',
                        'bond_refund', 'bond_burn')),
    idempotency_key TEXT,
    memo            TEXT NOT NULL CHECK (length(CAST(memo AS BLOB)) <= 256),
    created_at_ms   INTEGER NOT NULL
) STRICT;
INSERT INTO transactions (id, kind, idempotency_key, memo, created_at_ms)
    SELECT id, kind, idempotency_key, memo, created_at_ms FROM v2_transactions_copy;
DROP TABLE v2_transactions_copy;
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

DROP INDEX v2_holds_by_payer;
DROP INDEX v2_holds_by_authorize_tx;
DROP INDEX v2_holds_by_settle_tx;

CREATE TABLE bonds (
    -- The idempotency key of the request that locked it.
    key           TEXT PRIMARY KEY,
    owner         TEXT NOT NULL REFERENCES accounts (account)
                      CHECK (length(owner) = 42 AND owner GLOB '0x*'
                             AND substr(owner, 3) NOT GLOB '*[^0-9a-f]*'),
    amount        INTEGER NOT NULL CHECK (amount > 0),
    state         TEXT NOT NULL CHECK (state IN ('locked', 'refunded', 'burned')),
    locked_at_ms  INTEGER NOT NULL,
    lock_tx       INTEGER NOT NULL UNIQUE REFERENCES transactions (id),
    settled_at_ms INTEGER,
    settle_tx     INTEGER UNIQUE REFERENCES transactions (id),
    CONSTRAINT bond_settled_iff_not_locked CHECK ((state = 'locked') = (settle_tx IS NULL)),
    CONSTRAINT bond_settled_at_iff_settle_tx CHECK ((settled_at_ms IS NULL) = (settle_tx IS NULL))
) STRICT;
CREATE INDEX bonds_locked_by_owner ON bonds (owner) WHERE state = 'locked';

-- A bond settles once: only a locked bond changes, and only its settlement columns.
CREATE TRIGGER bonds_settle_once BEFORE UPDATE ON bonds
WHEN OLD.state <> 'locked' OR NEW.key IS NOT OLD.key OR NEW.owner IS NOT OLD.owner
  OR NEW.amount IS NOT OLD.amount OR NEW.locked_at_ms IS NOT OLD.locked_at_ms
  OR NEW.lock_tx IS NOT OLD.lock_tx
BEGIN SELECT RAISE(ABORT, 'a bond settles once'); END;
CREATE TRIGGER bonds_no_delete BEFORE DELETE ON bonds
BEGIN SELECT RAISE(ABORT, 'bonds are append-only'); END;
