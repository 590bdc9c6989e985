-- blyan-ledger schema V5, SQLite: accounts are never deleted.
--
-- Entries name their account; the foreign key already refuses deleting an account that has
-- entries. PostgreSQL's V5 replaces its per-row foreign keys on entries with a statement check
-- and refuses every account deletion by trigger; the same rule here keeps the two stores'
-- invariants, and their schema versions, in step.

CREATE TRIGGER accounts_no_delete BEFORE DELETE ON accounts
BEGIN SELECT RAISE(ABORT, 'accounts are never deleted'); END;
