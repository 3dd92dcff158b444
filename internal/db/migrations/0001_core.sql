-- Core schema: tenants, group membership, sessions, revocation watermarks,
-- operations (with idempotency), the append-only audit log and the outbox.

CREATE TABLE tenants (
    id           text PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Sessions of the tenant issued at or before not_before are revoked.
    not_before   timestamptz,
    not_before_operation uuid,
    not_before_cause     text,
    not_before_reason    text
);

CREATE TABLE group_members (
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    group_id   text NOT NULL,
    user_id    text NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (tenant_id, user_id);

CREATE TABLE user_watermarks (
    tenant_id    text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id      text NOT NULL,
    not_before   timestamptz NOT NULL,
    operation_id uuid NOT NULL,
    cause        text NOT NULL,
    reason       text,
    PRIMARY KEY (tenant_id, user_id)
);

CREATE TABLE sessions (
    tenant_id      text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    session_id     text NOT NULL,
    user_id        text NOT NULL,
    client         text NOT NULL,
    issued_at      timestamptz NOT NULL,
    registered_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at     timestamptz,
    ended_at       timestamptz,
    revoked_at     timestamptz,
    revoke_cause   text,
    revoke_reason  text,
    revoke_operation uuid,
    attributes     jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, session_id)
);
CREATE INDEX sessions_user ON sessions (tenant_id, user_id);

CREATE TABLE operations (
    id               uuid PRIMARY KEY,
    tenant_id        text NOT NULL,
    kind             text NOT NULL,
    actor            text NOT NULL,
    source_ip        text,
    reason           text,
    idempotency_key  text,
    request_hash     bytea,
    response_status  int NOT NULL,
    response         jsonb NOT NULL,
    targets          jsonb NOT NULL DEFAULT '{}',
    event_count      int NOT NULL DEFAULT 0,
    accepted_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX operations_idempotency ON operations (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE audit_log (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    tenant_id     text NOT NULL,
    actor         text NOT NULL,
    source_ip     text,
    action        text NOT NULL,
    operation_id  uuid,
    detail        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id);

-- The transactional outbox. A row is written in the transaction of the
-- command that caused it and deleted by the relay once JetStream acknowledged
-- it. Rows that change the same state entry are ordered by the entry's row
-- lock, so seq order is commit order where it matters.
CREATE TABLE outbox (
    seq           bigserial PRIMARY KEY,
    event_id      uuid NOT NULL,
    subject       text NOT NULL,
    payload       bytea NOT NULL,
    operation_id  uuid,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX outbox_operation ON outbox (operation_id);
