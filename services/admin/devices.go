package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/evict-dev/evict/events"
)

// trustedDevice is a device that may skip the second factor.
type trustedDevice struct {
	DeviceID  string     `json:"device_id"`
	Label     *string    `json:"label,omitempty"`
	TrustedAt time.Time  `json:"trusted_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Trusted   bool       `json:"trusted"`
}

type trustRequest struct {
	DeviceID string `json:"device_id"`
	Label    string `json:"label"`
}

// trustDevice records that the user chose "remember this device". The
// answer's trusted_at is what the holder passes to guard.DeviceTrusted.
func (s *Server) trustDevice(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant", "user")
	if err != nil {
		return err
	}
	var req trustRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	if err := events.CheckID("device_id", req.DeviceID); err != nil {
		return err
	}
	if len(req.Label) > maxAttribute {
		return errorf(http.StatusBadRequest, CodeBadRequest, "label is longer than %d bytes", maxAttribute)
	}
	var d trustedDevice
	err = s.inTx(r.Context(), func(ctx context.Context, tx pgx.Tx) error {
		if err := lockTenant(ctx, tx, ids[0]); err != nil {
			return err
		}
		var owner string
		err := tx.QueryRow(ctx, "SELECT user_id FROM trusted_devices WHERE tenant_id = $1 AND device_id = $2", ids[0], req.DeviceID).Scan(&owner)
		if err == nil && owner != ids[1] {
			return errorf(http.StatusConflict, CodeConflict, "device %q is registered to another user of the tenant", req.DeviceID)
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		err = tx.QueryRow(ctx, `INSERT INTO trusted_devices (tenant_id, user_id, device_id, label) VALUES ($1, $2, $3, nullif($4, ''))
			ON CONFLICT (tenant_id, user_id, device_id) DO UPDATE
			SET trusted_at = clock_timestamp(), revoked_at = NULL, revoke_operation = NULL, label = excluded.label
			RETURNING device_id, label, trusted_at, revoked_at`, ids[0], ids[1], req.DeviceID, req.Label).
			Scan(&d.DeviceID, &d.Label, &d.TrustedAt, &d.RevokedAt)
		if err != nil {
			return err
		}
		detail, _ := json.Marshal(map[string]any{"users": []string{ids[1]}, "devices": []string{req.DeviceID}})
		_, err = tx.Exec(ctx, `INSERT INTO audit_log (tenant_id, actor, source_ip, action, detail) VALUES ($1, $2, $3, 'trust.add', $4)`,
			ids[0], principalFrom(ctx).name, clientIP(r), detail)
		return err
	})
	if err != nil {
		return err
	}
	d.Trusted = true
	writeJSON(w, http.StatusCreated, d)
	return nil
}

func (s *Server) listTrustedDevices(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant", "user")
	if err != nil {
		return err
	}
	if err := s.tenantExists(r.Context(), ids[0]); err != nil {
		return err
	}
	rows, err := s.pool.Query(r.Context(), `SELECT device_id, label, trusted_at, revoked_at FROM trusted_devices
		WHERE tenant_id = $1 AND user_id = $2 ORDER BY trusted_at DESC, device_id`, ids[0], ids[1])
	if err != nil {
		return err
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (d trustedDevice, err error) {
		err = row.Scan(&d.DeviceID, &d.Label, &d.TrustedAt, &d.RevokedAt)
		d.Trusted = d.RevokedAt == nil
		return d, err
	})
	if err != nil {
		return err
	}
	if list == nil {
		list = []trustedDevice{}
	}
	return writeCacheable(w, r, map[string]any{"tenant": ids[0], "user": ids[1], "devices": list})
}

type revokeTrustBody struct {
	// Logout also ends the sessions (all of the user's, or the device's).
	Logout bool   `json:"logout"`
	Reason string `json:"reason"`
}

// revokeAllTrust withdraws the trust of every device of the user: one
// watermark, so that the next login asks for the second factor.
func (s *Server) revokeAllTrust(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant", "user")
	if err != nil {
		return err
	}
	var body revokeTrustBody
	if err := s.decodeOptional(w, r, &body); err != nil {
		return err
	}
	tenant, user := ids[0], ids[1]
	return s.run(w, r, command{kind: "trust.revoke_all", tenant: tenant, reason: body.Reason, request: []any{ids, body.Logout},
		exec: func(ctx context.Context, tx cmdQuerier, o *op) (map[string]any, error) {
			var nb time.Time
			if err := tx.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&nb); err != nil {
				return nil, err
			}
			devices, err := collect(ctx, tx, `UPDATE trusted_devices SET revoked_at = $3, revoke_operation = $4
				WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING device_id`, tenant, user, nb, o.id)
			if err != nil {
				return nil, err
			}
			subject, err := events.TrustStateSubject(tenant, user)
			if err != nil {
				return nil, err
			}
			o.targets.Devices = devices
			if !body.Logout {
				o.addUsers([]string{user})
			}
			if err := emit(o, subject, events.TypeTrustRevoked, "users/"+user, nb, events.TrustRevoked{
				Tenant: tenant, User: user, NotBefore: nb, OperationID: o.id.String(), Reason: o.reason}); err != nil {
				return nil, err
			}
			if body.Logout {
				if err := revokeUsers(ctx, tx, o, []string{user}, events.CauseLogout, ""); err != nil {
					return nil, err
				}
			}
			return map[string]any{"devices_revoked": nonNil(devices)}, nil
		}})
}

// revokeDeviceTrust withdraws the trust of one device.
func (s *Server) revokeDeviceTrust(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant", "user", "device")
	if err != nil {
		return err
	}
	var body revokeTrustBody
	if err := s.decodeOptional(w, r, &body); err != nil {
		return err
	}
	tenant, user, device := ids[0], ids[1], ids[2]
	return s.run(w, r, command{kind: "trust.revoke", tenant: tenant, reason: body.Reason, request: []any{ids, body.Logout},
		exec: func(ctx context.Context, tx cmdQuerier, o *op) (map[string]any, error) {
			var at time.Time
			err := tx.QueryRow(ctx, `UPDATE trusted_devices SET revoked_at = clock_timestamp(), revoke_operation = $4
				WHERE tenant_id = $1 AND user_id = $2 AND device_id = $3 AND revoked_at IS NULL RETURNING revoked_at`,
				tenant, user, device, o.id).Scan(&at)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil, errorf(http.StatusNotFound, CodeNotFound, "device %q is not a trusted device of user %q", device, user)
			}
			if err != nil {
				return nil, err
			}
			subject, err := events.DeviceStateSubject(tenant, device)
			if err != nil {
				return nil, err
			}
			o.targets.Devices = []string{device}
			o.addUsers([]string{user})
			if err := emit(o, subject, events.TypeDeviceRevoked, "devices/"+device, at, events.DeviceRevoked{
				Tenant: tenant, User: user, Device: device, RevokedAt: at, OperationID: o.id.String(), Reason: o.reason}); err != nil {
				return nil, err
			}
			var ended []string
			if body.Logout {
				sessions, err := collect(ctx, tx, `SELECT session_id FROM sessions WHERE tenant_id = $1 AND user_id = $2
					AND device_id = $3 AND revoked_at IS NULL AND ended_at IS NULL ORDER BY session_id`, tenant, user, device)
				if err != nil {
					return nil, err
				}
				for _, sid := range sessions {
					if _, err := revokeSession(ctx, tx, o, sid, events.CauseLogout, false); err != nil {
						return nil, err
					}
					ended = append(ended, sid)
				}
			}
			return map[string]any{"sessions_revoked": nonNil(ended)}, nil
		}})
}
