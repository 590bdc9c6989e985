-- blyan-ledger schema V5, PostgreSQL: the invariants on entries checked once per statement.
--
-- V1 checked each inserted entry three times: its two foreign keys (its transaction and its
-- account exist) and, at COMMIT, that its transaction balances. A batch of 100 transfers
-- inserts 200 entries in one statement, so that was 600 lookups, each through the trigger
-- machinery. This statement trigger checks the same for every entry a statement inserts, set by
-- set, at the end of that statement (so earlier than COMMIT: entries are always inserted with
-- their transaction, in one statement):
--   * every entry's account exists;
--   * every transaction an entry belongs to exists, has at least two entries, and they sum to
--     zero.
-- What the foreign keys also guaranteed, that a referenced row is never removed, holds by
-- triggers: transactions and entries are append-only (V1) and accounts are never deleted
-- (below). The deferred per-transaction check of V1 stays: a transaction inserted with no
-- entries is still refused at COMMIT.

ALTER TABLE entries DROP CONSTRAINT entries_tx_id_fkey;
ALTER TABLE entries DROP CONSTRAINT entries_account_fkey;
DROP TRIGGER entries_balanced ON entries;
DROP FUNCTION ledger_check_entry();

CREATE FUNCTION ledger_check_entries() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad RECORD;
BEGIN
    SELECT n.account INTO bad FROM new_entries n
    WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.account = n.account)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'an entry names account %, which does not exist', bad.account
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT d.tx_id, t.id IS NULL AS missing, s.total, s.lines INTO bad
    FROM (SELECT DISTINCT tx_id FROM new_entries) d
    LEFT JOIN transactions t ON t.id = d.tx_id
    CROSS JOIN LATERAL (SELECT COALESCE(SUM(e.amount), 0) AS total, COUNT(*) AS lines
                        FROM entries e WHERE e.tx_id = d.tx_id) s
    WHERE t.id IS NULL OR s.total <> 0 OR s.lines < 2
    LIMIT 1;
    IF FOUND THEN
        IF bad.missing THEN
            RAISE EXCEPTION 'entries name transaction %, which does not exist', bad.tx_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        RAISE EXCEPTION 'transaction % is unbalanced: % entries summing to %', bad.tx_id,
            bad.lines, bad.total
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER entries_checked AFTER INSERT ON entries REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_entries();

CREATE FUNCTION ledger_refuse_account_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'accounts are never deleted (account %)', OLD.account
        USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER accounts_never_deleted BEFORE DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_account_delete();
CREATE FUNCTION ledger_refuse_account_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'accounts are never deleted' USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER accounts_never_truncated BEFORE TRUNCATE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_account_truncate();
