package admin

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/evict-dev/evict/internal/keys"
)

// Key management for operators: the same keys as `evictd keys`, over the
// API, so that an operator's tooling can provision a tenant's portal, sync
// job and guards without shell access to evictd.

// keyRequest is the body of POST /v1/keys.
type keyRequest struct {
	Name       string   `json:"name"`
	Role       string   `json:"role"`
	Tenants    []string `json:"tenants"`
	AllTenants bool     `json:"all_tenants"`
	// ExpiresIn is a Go duration such as "720h"; empty: no expiry.
	ExpiresIn string `json:"expires_in"`
}

// createdKey is the answer to POST /v1/keys: the token is shown this once.
type createdKey struct {
	keys.Key
	Token string `json:"token"`
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request) error {
	var req keyRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	var ttl time.Duration
	if req.ExpiresIn != "" {
		var err error
		if ttl, err = time.ParseDuration(req.ExpiresIn); err != nil || ttl <= 0 {
			return errorf(http.StatusBadRequest, CodeBadRequest, "expires_in %q: want a positive duration such as 720h", req.ExpiresIn)
		}
	}
	var out createdKey
	err := s.inTx(r.Context(), func(ctx context.Context, tx pgx.Tx) error {
		k, token, err := keys.Create(ctx, tx, keys.Spec{Name: req.Name, Role: req.Role, Tenants: req.Tenants, AllTenants: req.AllTenants, TTL: ttl})
		if err != nil {
			return err
		}
		out = createdKey{Key: k, Token: token}
		return s.auditKey(ctx, tx, r, "key.create", k)
	})
	switch {
	case errors.Is(err, keys.ErrInvalid):
		return &apiError{status: http.StatusBadRequest, code: CodeBadRequest, message: err.Error(), cause: err}
	case errors.Is(err, keys.ErrUnknownTenant):
		return &apiError{status: http.StatusNotFound, code: CodeTenantNotFound, message: err.Error(), cause: err}
	case err != nil:
		return err
	}
	w.Header().Set("Cache-Control", "no-store") // the token must not linger in a cache
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) error {
	ks, err := keys.List(r.Context(), s.pool)
	if err != nil {
		return err
	}
	if ks == nil {
		ks = []keys.Key{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": ks})
	return nil
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) error {
	id, err := uuid.Parse(r.PathValue("key"))
	if err != nil {
		return errorf(http.StatusBadRequest, CodeBadRequest, "key id %q is not a UUID", r.PathValue("key"))
	}
	err = s.inTx(r.Context(), func(ctx context.Context, tx pgx.Tx) error {
		if err := keys.Revoke(ctx, tx, id); err != nil {
			return err
		}
		return s.auditKey(ctx, tx, r, "key.revoke", keys.Key{ID: id})
	})
	if errors.Is(err, keys.ErrNotFound) {
		return errorf(http.StatusNotFound, CodeKeyNotFound, "no active key %s", id)
	}
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// auditKey records a key's creation or revocation; keys belong to no
// tenant, so the audit row's tenant is "-", like a refused request's.
func (s *Server) auditKey(ctx context.Context, tx pgx.Tx, r *http.Request, action string, k keys.Key) error {
	detail := map[string]any{"key_id": k.ID}
	if k.Role != "" {
		detail["role"], detail["tenants"], detail["all_tenants"], detail["name"] = k.Role, k.Tenants, k.AllTenants, k.Name
	}
	_, err := tx.Exec(ctx, `INSERT INTO audit_log (tenant_id, actor, source_ip, action, detail) VALUES ('-', $1, $2, $3, $4)`,
		principalFrom(ctx).name, clientIP(r), action, detail)
	return err
}
