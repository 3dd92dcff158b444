-- The foreign keys of user_watermarks (to tenants) and operation_targets
-- (to operations) checked every inserted row on its own: a trigger call and
-- a row lock a row. A bulk logout of 100,000 users spent 360 of the 880 ms
-- of its watermarks' insert in the tenant check (EXPLAIN ANALYZE), and
-- every logout locked its own operation's row again for each target
-- (docs/benchmarks.md, item 42). What they checked holds where the rows
-- are written: a command locks its tenant's row (lockTenantSQL in
-- services/admin) before it writes a watermark, and writes its targets
-- with its operation, or later from pending_targets, for an operation the
-- same command wrote. The deletes they cascaded stay, as triggers.
ALTER TABLE user_watermarks DROP CONSTRAINT user_watermarks_tenant_id_fkey;
ALTER TABLE operation_targets DROP CONSTRAINT operation_targets_operation_id_fkey;

-- delete_referencing(table, column) deletes the rows of table whose
-- column holds the deleted row's id.
CREATE FUNCTION delete_referencing() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DELETE FROM %I WHERE %I = $1', TG_ARGV[0], TG_ARGV[1]) USING OLD.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER tenants_delete_watermarks AFTER DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION delete_referencing('user_watermarks', 'tenant_id');
CREATE TRIGGER operations_delete_targets AFTER DELETE ON operations
    FOR EACH ROW EXECUTE FUNCTION delete_referencing('operation_targets', 'operation_id');
