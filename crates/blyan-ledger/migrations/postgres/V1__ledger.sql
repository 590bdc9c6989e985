-- blyan-ledger schema, PostgreSQL. Applied once, through refinery (recorded in
-- ledger_schema_history; migrators take an advisory lock). Amounts are BIGINT units of 10^-6 BLY.
--
-- Invariants enforced here, not only in Rust:
--   * entries of a transaction sum to zero and a transaction has at least two entries
--     (deferred constraint triggers, checked at COMMIT);
--   * every entry belongs to a transaction (foreign key);
--   * entries and transactions are append-only (triggers refuse UPDATE and DELETE);
--   * balances are maintained from entries by a trigger in the same transaction;
--   * no balance is negative except the mint's, which is never positive (CHECK);
--   * one genesis transaction at most (partial unique index); a quote is held at most once.

CREATE TABLE ledger_meta (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE accounts (
    account       TEXT COLLATE "C" PRIMARY KEY,
    balance       BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    CONSTRAINT account_key_format CHECK (
        account ~ '^0x[0-9a-f]{40}$'
        OR account IN ('system:mint', 'system:burn', 'system:fee_escrow', 'system:treasury',
                       'system:reward_pool', 'system:team', 'system:foundation')
    ),
    CONSTRAINT balance_not_negative CHECK (balance >= 0 OR account = 'system:mint'),
    CONSTRAINT mint_not_positive CHECK (account <> 'system:mint' OR balance <= 0)
);

INSERT INTO accounts (account, created_at_ms)
SELECT a, 0 FROM unnest(ARRAY['system:mint', 'system:burn', 'system:fee_escrow',
    'system:treasury', 'system:reward_pool', 'system:team', 'system:foundation']) AS a;

CREATE TABLE idempotency_keys (
    key           TEXT COLLATE "C" PRIMARY KEY,
    request       TEXT NOT NULL,
    -- NULL only inside the transaction that claimed the key; set before it commits.
    outcome       TEXT,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE transactions (
    id              BIGSERIAL PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('genesis', 'transfer', 'mint', 'burn', 'reward',
                        'authorize', 'capture', 'release', 'expiry')),
    idempotency_key TEXT COLLATE "C",
    memo            TEXT NOT NULL CHECK (octet_length(memo) <= 256),
    created_at_ms   BIGINT NOT NULL
);
CREATE UNIQUE INDEX transactions_one_genesis ON transactions (kind) WHERE kind = 'genesis';

CREATE TABLE entries (
    id      BIGSERIAL PRIMARY KEY,
    tx_id   BIGINT NOT NULL REFERENCES transactions (id),
    account TEXT COLLATE "C" NOT NULL REFERENCES accounts (account),
    amount  BIGINT NOT NULL CHECK (amount <> 0)
);
CREATE INDEX entries_by_tx ON entries (tx_id);
CREATE INDEX entries_by_account ON entries (account, id DESC);

CREATE TABLE quotes (
    id               BIGSERIAL PRIMARY KEY,
    payer            TEXT COLLATE "C" NOT NULL CHECK (payer ~ '^0x[0-9a-f]{40}$'),
    estimated_tokens BIGINT NOT NULL CHECK (estimated_tokens > 0),
    amount           BIGINT NOT NULL CHECK (amount > 0),
    hold_amount      BIGINT NOT NULL CHECK (hold_amount >= amount),
    created_at_ms    BIGINT NOT NULL,
    expires_at_ms    BIGINT NOT NULL CHECK (expires_at_ms > created_at_ms)
);

CREATE TABLE holds (
    id            BIGSERIAL PRIMARY KEY,
    quote_id      BIGINT NOT NULL UNIQUE REFERENCES quotes (id),
    payer         TEXT COLLATE "C" NOT NULL REFERENCES accounts (account),
    quoted        BIGINT NOT NULL CHECK (quoted > 0),
    amount        BIGINT NOT NULL CHECK (amount >= quoted),
    status        TEXT NOT NULL CHECK (status IN ('authorized', 'captured', 'released', 'expired')),
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL CHECK (expires_at_ms > created_at_ms),
    authorize_tx  BIGINT NOT NULL REFERENCES transactions (id),
    settle_tx     BIGINT REFERENCES transactions (id),
    CONSTRAINT settled_iff_not_authorized CHECK ((status = 'authorized') = (settle_tx IS NULL))
);
CREATE INDEX holds_stale ON holds (expires_at_ms, id) WHERE status = 'authorized';
CREATE INDEX holds_by_payer ON holds (payer) WHERE status = 'authorized';

CREATE TABLE inflation_years (
    year        BIGINT PRIMARY KEY CHECK (year >= 0),
    base_supply BIGINT NOT NULL CHECK (base_supply >= 0),
    minted      BIGINT NOT NULL CHECK (minted >= 0)
);

-- Balances follow entries in the same transaction.
CREATE FUNCTION ledger_apply_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE accounts SET balance = balance + NEW.amount WHERE account = NEW.account;
    RETURN NULL;
END $$;
CREATE TRIGGER entries_apply AFTER INSERT ON entries
    FOR EACH ROW EXECUTE FUNCTION ledger_apply_entry();

-- Invariant: the entries of a transaction sum to zero, and there are at least two. Checked at
-- COMMIT, once per inserted transaction and once per inserted entry (so entries added to an
-- old transaction are checked too).
CREATE FUNCTION ledger_check_balanced(tx BIGINT) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    total NUMERIC;
    lines BIGINT;
BEGIN
    SELECT COALESCE(SUM(amount), 0), COUNT(*) INTO total, lines FROM entries WHERE tx_id = tx;
    IF total <> 0 OR lines < 2 THEN
        RAISE EXCEPTION 'transaction % is unbalanced: % entries summing to %', tx, lines, total
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
END $$;
CREATE FUNCTION ledger_check_transaction() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_check_balanced(NEW.id);
    RETURN NULL;
END $$;
CREATE FUNCTION ledger_check_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_check_balanced(NEW.tx_id);
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER transactions_balanced AFTER INSERT ON transactions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_transaction();
CREATE CONSTRAINT TRIGGER entries_balanced AFTER INSERT ON entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_entry();

-- The record is append-only.
CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER transactions_append_only BEFORE UPDATE OR DELETE ON transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
