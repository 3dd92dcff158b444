-- Admin API keys: a role and a tenant scope each, stored as a SHA-256 hash.
CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    name          text NOT NULL,
    hash          bytea NOT NULL UNIQUE,
    -- admin: every command; sync: membership changes only; viewer: read only.
    role          text NOT NULL CHECK (role IN ('admin', 'sync', 'viewer')),
    -- The tenants the key may act on; all_tenants for operators.
    tenants       text[] NOT NULL DEFAULT '{}',
    all_tenants   boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
