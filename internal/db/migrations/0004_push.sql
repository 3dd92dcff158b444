-- Mobile push: a session's push target, and one delivery per logout event
-- and device. The primary key is the de-duplication: a redelivered event or
-- two sessions on one device still make one push.
ALTER TABLE sessions
    ADD COLUMN push_provider text,
    ADD COLUMN push_token    text,
    ADD COLUMN push_topic    text;
CREATE INDEX sessions_push ON sessions (tenant_id, user_id) WHERE push_token IS NOT NULL;

CREATE TABLE push_deliveries (
    event_id        uuid NOT NULL,
    provider        text NOT NULL,
    token           text NOT NULL,
    tenant_id       text NOT NULL,
    user_id         text NOT NULL,
    session_id      text NOT NULL,
    topic           text,
    operation_id    uuid,
    event_time      timestamptz NOT NULL,
    -- pending, sending, pushed, token_removed, failed (permanent), dead (retries exhausted)
    status          text NOT NULL DEFAULT 'pending',
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    claimed_until   timestamptz,
    claimed_by      text,
    provider_id     text,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    pushed_at       timestamptz,
    PRIMARY KEY (event_id, provider, token)
);
CREATE INDEX push_deliveries_due ON push_deliveries (next_attempt_at) WHERE status IN ('pending', 'sending');
CREATE INDEX push_deliveries_operation ON push_deliveries (operation_id);
CREATE INDEX push_deliveries_dead ON push_deliveries (tenant_id, created_at) WHERE status IN ('failed', 'dead');
