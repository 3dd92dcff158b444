-- Guard keys: NATS credentials of session holders (pkg/guard), limited to
-- tenants like admin keys; the embedded NATS server admits them.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check CHECK (role IN ('admin', 'sync', 'viewer', 'guard'));

-- A guard limited to tenants reports per tenant, on a subject naming the
-- tenant; its applied sequence counts for that tenant only. scope is '' for
-- a guard of every tenant.
ALTER TABLE guard_instances ADD COLUMN scope text NOT NULL DEFAULT '';
ALTER TABLE guard_instances DROP CONSTRAINT guard_instances_pkey;
ALTER TABLE guard_instances ADD PRIMARY KEY (instance, scope);
