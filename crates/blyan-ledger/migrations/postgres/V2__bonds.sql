-- blyan-ledger schema V2, PostgreSQL: Proof-of-Learning candidate bonds.
--
-- A candidate's author locks a bond into the reserved account system:bond_escrow; it is
-- refunded when the candidate is accepted and burned when it is rejected or expires. This
-- migration admits the new account and the three new transaction kinds, and records bonds.
--
-- Invariants enforced here, not only in Rust:
--   * a bond's owner is a wallet, its amount positive, its lock and settlement transactions
--     exist and are used by no other bond;
--   * a bond is settled (refunded or burned) exactly when it has a settlement transaction and
--     time, and once settled it never changes again; bonds are never deleted.

ALTER TABLE accounts DROP CONSTRAINT account_key_format;
ALTER TABLE accounts ADD CONSTRAINT account_key_format CHECK (
    account ~ '^0x[0-9a-f]{40}$'
    OR account IN ('system:mint', 'system:burn', 'system:fee_escrow', 'system:bond_escrow',
                   'system:treasury', 'system:reward_pool', 'system:team', 'system:foundation')
);
INSERT INTO accounts (account, created_at_ms) VALUES ('system:bond_escrow', 0);

ALTER TABLE transactions DROP CONSTRAINT transactions_kind_check;
ALTER TABLE transactions ADD CONSTRAINT transactions_kind_check CHECK (
    kind IN ('genesis', 'transfer', 'mint', 'burn', 'reward', 'authorize', 'capture', 'release',
             'expiry', 'bond_lock', 'bond_refund', 'bond_burn')
);

CREATE TABLE bonds (
    -- The idempotency key of the request that locked it.
    key           TEXT COLLATE "C" PRIMARY KEY,
    owner         TEXT COLLATE "C" NOT NULL REFERENCES accounts (account)
                      CHECK (owner ~ '^0x[0-9a-f]{40}$'),
    amount        BIGINT NOT NULL CHECK (amount > 0),
    state         TEXT NOT NULL CHECK (state IN ('locked', 'refunded', 'burned')),
    locked_at_ms  BIGINT NOT NULL,
    lock_tx       BIGINT NOT NULL UNIQUE REFERENCES transactions (id),
    settled_at_ms BIGINT,
    settle_tx     BIGINT UNIQUE REFERENCES transactions (id),
    CONSTRAINT bond_settled_iff_not_locked CHECK ((state = 'locked') = (settle_tx IS NULL)),
    CONSTRAINT bond_settled_at_iff_settle_tx CHECK ((settled_at_ms IS NULL) = (settle_tx IS NULL))
);
CREATE INDEX bonds_locked_by_owner ON bonds (owner) WHERE state = 'locked';

-- A bond settles once: only a locked bond changes, and only its settlement columns.
CREATE FUNCTION ledger_bond_settles_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state <> 'locked' OR NEW.key <> OLD.key OR NEW.owner <> OLD.owner
       OR NEW.amount <> OLD.amount OR NEW.locked_at_ms <> OLD.locked_at_ms
       OR NEW.lock_tx <> OLD.lock_tx THEN
        RAISE EXCEPTION 'bond % settles once', OLD.key
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER bonds_settle_once BEFORE UPDATE ON bonds
    FOR EACH ROW EXECUTE FUNCTION ledger_bond_settles_once();
CREATE TRIGGER bonds_append_only BEFORE DELETE ON bonds
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
