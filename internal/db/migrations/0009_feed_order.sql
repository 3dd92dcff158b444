-- The session change feed is read in the order of the transactions that
-- wrote it: by transaction id, then id. A stream sends a change only once
-- every transaction with a smaller id has ended (pg_snapshot_xmin), so a
-- change that commits late cannot land behind a position a stream already
-- passed. Writers used to take a per-tenant lock held through their
-- commit for the same guarantee, which made a tenant's commands commit one
-- at a time.
--
-- The rows already there all take this migration's transaction id, so
-- that they keep their order, by id.
ALTER TABLE session_changes ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id();
DROP INDEX session_changes_tenant;
CREATE INDEX session_changes_tenant ON session_changes (tenant_id, tx, id);
