-- Trusted devices: the devices a user may sign in from without the second
-- factor. Revoking trust makes the next login ask for full 2FA.
CREATE TABLE trusted_devices (
    tenant_id        text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id          text NOT NULL,
    device_id        text NOT NULL,
    label            text,
    trusted_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    revoked_at       timestamptz,
    revoke_operation uuid,
    PRIMARY KEY (tenant_id, user_id, device_id)
);

ALTER TABLE audit_log ADD COLUMN reason text;
CREATE INDEX audit_log_tenant_action ON audit_log (tenant_id, action, id);

-- A device id belongs to one user within a tenant: revocations travel on
-- evict.state.<tenant>.device.<device>, keyed by the device alone.
CREATE UNIQUE INDEX trusted_devices_device ON trusted_devices (tenant_id, device_id);
