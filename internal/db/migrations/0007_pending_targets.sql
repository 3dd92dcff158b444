-- A command that logs out more users than it marks inline (see
-- internal/targets) commits the watermarks and events first, and leaves
-- the marking of the users' sessions, its targets and their feed entries
-- here, done after the commit a slice at a time. The row is deleted when
-- done; while it exists the operation's status is pending.
CREATE TABLE pending_targets (
    operation_id uuid PRIMARY KEY,
    tenant_id    text NOT NULL,
    users        text[] NOT NULL,
    done         integer NOT NULL DEFAULT 0,
    not_before   timestamptz NOT NULL,
    cause        text NOT NULL,
    reason       text,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
