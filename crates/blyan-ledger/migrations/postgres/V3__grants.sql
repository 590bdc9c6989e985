-- blyan-ledger schema V3, PostgreSQL: grants from the treasury.
--
-- An operator's grant (`blyan-node ledger grant`) and a test network's faucet claim move BLY
-- from system:treasury to a wallet as a transaction of kind 'grant'; each is also recorded in
-- `grants`, which is what bounds them: the sum of all grants never passes the treasury's
-- genesis allocation, and the faucet's per-wallet and daily limits count its rows.
--
-- Invariants enforced here, not only in Rust:
--   * a grant names its own transaction (one grant per transaction), a wallet recipient and a
--     positive amount, and comes from the operator or the faucet;
--   * grants are append-only.

ALTER TABLE transactions DROP CONSTRAINT transactions_kind_check;
ALTER TABLE transactions ADD CONSTRAINT transactions_kind_check CHECK (
    kind IN ('genesis', 'transfer', 'mint', 'burn', 'reward', 'authorize', 'capture', 'release',
             'expiry', 'bond_lock', 'bond_refund', 'bond_burn', 'grant')
);

CREATE TABLE grants (
    tx_id         BIGINT PRIMARY KEY REFERENCES transactions (id),
    recipient     TEXT COLLATE "C" NOT NULL REFERENCES accounts (account)
                      CHECK (recipient ~ '^0x[0-9a-f]{40}$'),
    amount        BIGINT NOT NULL CHECK (amount > 0),
    source        TEXT NOT NULL CHECK (source IN ('operator', 'faucet')),
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX grants_by_source ON grants (source, created_at_ms);
CREATE INDEX grants_by_recipient ON grants (recipient, source, created_at_ms);

CREATE TRIGGER grants_append_only BEFORE UPDATE OR DELETE ON grants
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
