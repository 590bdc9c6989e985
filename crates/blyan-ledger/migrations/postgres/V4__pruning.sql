-- blyan-ledger schema V4, PostgreSQL: indexes for pruning, balances applied once per statement.
--
-- `Ledger::prune` deletes the idempotency keys older than the retention (except the ledger's own
-- and those naming a bond) and the quotes that expired before it without ever being authorized;
-- the two indexes let it find them without scanning either table.
--
-- A batch of transfers records all its entries in one statement. V1's row trigger updated an
-- account once per entry; this statement trigger updates each account touched by the statement
-- once, by the sum of its new entries, in the same statement, so balances still follow entries
-- and the CHECKs on accounts still refuse a negative balance. Every ledger operation has
-- locked the accounts it posts to (in ascending order) before it inserts entries, so this
-- update takes no new lock.

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at_ms);
CREATE INDEX quotes_by_expiry ON quotes (expires_at_ms);

DROP TRIGGER entries_apply ON entries;
DROP FUNCTION ledger_apply_entry();
CREATE FUNCTION ledger_apply_entries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE accounts a SET balance = a.balance + d.total
    FROM (SELECT account, SUM(amount)::BIGINT AS total FROM new_entries GROUP BY account) d
    WHERE a.account = d.account;
    RETURN NULL;
END $$;
CREATE TRIGGER entries_apply AFTER INSERT ON entries REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_apply_entries();
