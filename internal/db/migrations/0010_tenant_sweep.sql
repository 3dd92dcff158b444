-- Whether the sessions a tenant's latest tenant-wide logout covered have
-- all been marked revoked by the janitor's sweep (services/registry). The
-- sweep looked for such sessions among every session of every tenant, each
-- second, forever once any tenant had been logged out: it read the whole
-- table through the rows it had already marked. It now looks only at the
-- tenants not swept yet, through the index of their live sessions.
ALTER TABLE tenants ADD COLUMN not_before_swept boolean NOT NULL DEFAULT false;
