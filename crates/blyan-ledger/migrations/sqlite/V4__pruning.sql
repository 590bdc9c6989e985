-- blyan-ledger schema V4, SQLite: indexes for pruning.
--
-- `Ledger::prune` deletes the idempotency keys older than the retention (except the ledger's own
-- and those naming a bond) and the quotes that expired before it without ever being authorized;
-- the two indexes let it find them without scanning either table. (PostgreSQL's V4 also applies
-- balances once per statement; SQLite has no statement triggers and keeps its row trigger.)

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at_ms);
CREATE INDEX quotes_by_expiry ON quotes (expires_at_ms);
