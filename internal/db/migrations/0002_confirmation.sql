-- Session registry details, guard instances and their applied revisions,
-- operation targets, and the changes feed behind live session views.

ALTER TABLE sessions
    ADD COLUMN holder         text,
    ADD COLUMN device_id      text,
    ADD COLUMN platform       text,
    ADD COLUMN app_version    text,
    ADD COLUMN ip             text,
    ADD COLUMN user_agent     text,
    ADD COLUMN trusted_device boolean NOT NULL DEFAULT false,
    ADD COLUMN last_seen_at   timestamptz,
    -- deferred: the holder is finishing in-flight work; terminated: it has.
    ADD COLUMN termination    text,
    ADD COLUMN terminated_at  timestamptz;
UPDATE sessions SET
    holder = nullif(attributes->>'holder', ''),
    device_id = nullif(attributes->>'device_id', ''),
    platform = nullif(attributes->>'platform', ''),
    app_version = nullif(attributes->>'app_version', ''),
    ip = nullif(attributes->>'ip', ''),
    user_agent = nullif(attributes->>'user_agent', ''),
    trusted_device = coalesce((attributes->>'trusted_device')::boolean, false);
ALTER TABLE sessions DROP COLUMN attributes;
UPDATE sessions SET last_seen_at = registered_at WHERE last_seen_at IS NULL;
ALTER TABLE sessions ALTER COLUMN last_seen_at SET NOT NULL,
    ALTER COLUMN last_seen_at SET DEFAULT clock_timestamp();

-- Live sessions in last-seen order: the tenant listing walks this index and
-- stops at the page size.
CREATE INDEX sessions_live_by_seen ON sessions (tenant_id, last_seen_at DESC, session_id)
    WHERE ended_at IS NULL AND revoked_at IS NULL;
CREATE INDEX sessions_live_by_user ON sessions (tenant_id, user_id text_pattern_ops, last_seen_at DESC)
    WHERE ended_at IS NULL AND revoked_at IS NULL;
CREATE INDEX sessions_holder ON sessions (tenant_id, holder) WHERE ended_at IS NULL AND revoked_at IS NULL;

-- Guard instances report the EVICT_STATE sequence they have applied.
CREATE TABLE guard_instances (
    instance        text PRIMARY KEY,
    tenants         text[] NOT NULL DEFAULT '{}',
    applied_seq     bigint NOT NULL DEFAULT 0,
    started_at      timestamptz NOT NULL,
    last_report_at  timestamptz NOT NULL
);

ALTER TABLE operations
    ADD COLUMN state_seq     bigint,          -- last EVICT_STATE sequence of its events
    ADD COLUMN published_at  timestamptz,
    ADD COLUMN completed_at  timestamptz;
CREATE INDEX operations_incomplete ON operations (accepted_at) WHERE completed_at IS NULL;

-- The sessions a command aimed at, as they were when it was accepted.
CREATE TABLE operation_targets (
    -- Deferred: the targets are written before the operation row, in the same transaction.
    operation_id uuid NOT NULL REFERENCES operations (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    tenant_id    text NOT NULL,
    session_id   text NOT NULL,
    user_id      text NOT NULL,
    client       text NOT NULL,
    holder       text,
    device_id    text,
    PRIMARY KEY (operation_id, session_id)
);

-- Every change of a session, in commit order per tenant, for live views
-- (Server-Sent Events with Last-Event-ID resume).
CREATE TABLE session_changes (
    id          bigserial PRIMARY KEY,
    tenant_id   text NOT NULL,
    user_id     text NOT NULL,
    session_id  text NOT NULL,
    kind        text NOT NULL,           -- started, seen, revoked, deferred, terminated, ended
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX session_changes_tenant ON session_changes (tenant_id, id);
CREATE INDEX session_changes_user ON session_changes (tenant_id, user_id, id);
