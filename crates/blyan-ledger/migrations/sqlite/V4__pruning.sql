-- blyan-ledger schema V4, SQLite: indexes for pruning.
--
-- `Ledger::prune` deletes the idempotency keys older than the retention (except those naming a
-- bond) and the quotes that expired before it without ever being authorized; these indexes let
-- it find them without scanning either table.

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at_ms);
CREATE INDEX quotes_by_expiry ON quotes (expires_at_ms);
