package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/keys"
)

// OIDC lets portals that already have an identity provider call the API
// with its access tokens: a JWT whose signature is checked against the
// issuer's JWKS (fetched again when a token names an unknown key, so that
// key rotation needs nothing here), whose issuer, audience, expiry and
// not-before are checked, and whose claims name the role and the tenants.
type OIDC struct {
	// Verifier checks signature, issuer, audience and times.
	Verifier *oidc.IDTokenVerifier
	// RoleClaim holds "admin", "sync" or "viewer".
	RoleClaim string
	// TenantsClaim holds a tenant or a list of them; "*" is every tenant.
	TenantsClaim string
}

// SigningAlgs are the algorithms accepted in tokens: asymmetric only (an
// HMAC secret would have to be shared with evict; "none" is no signature).
var SigningAlgs = []string{oidc.RS256, oidc.RS384, oidc.RS512, oidc.ES256, oidc.ES384, oidc.ES512, oidc.PS256, oidc.PS384, oidc.PS512, oidc.EdDSA}

var errOIDCClaims = errors.New("token claims")

func (o *OIDC) principal(ctx context.Context, raw string) (principal, error) {
	tok, err := o.Verifier.Verify(ctx, raw)
	if err != nil {
		return principal{}, &apiError{status: http.StatusUnauthorized, code: CodeUnauthorized, message: "access token refused: " + err.Error(), cause: err}
	}
	var claims map[string]json.RawMessage
	if err := tok.Claims(&claims); err != nil {
		return principal{}, err
	}
	refuse := func(format string, args ...any) (principal, error) {
		msg := fmt.Sprintf(format, args...)
		return principal{}, &apiError{status: http.StatusUnauthorized, code: CodeUnauthorized, message: "access token refused: " + msg, cause: errOIDCClaims}
	}
	var role string
	if err := json.Unmarshal(claims[o.RoleClaim], &role); err != nil || !slices.Contains([]string{keys.RoleAdmin, keys.RoleSync, keys.RoleViewer}, role) {
		return refuse("claim %q must be admin, sync or viewer", o.RoleClaim)
	}
	var tenants []string
	if err := json.Unmarshal(claims[o.TenantsClaim], &tenants); err != nil {
		var one string
		if err := json.Unmarshal(claims[o.TenantsClaim], &one); err != nil {
			return refuse("claim %q must be a tenant or a list of tenants", o.TenantsClaim)
		}
		tenants = []string{one}
	}
	p := principal{name: "oidc:" + tok.Subject, role: role}
	for _, t := range tenants {
		switch {
		case t == "*":
			p.allTenants = true
		case events.ValidID(t):
			p.tenants = append(p.tenants, t)
		default:
			return refuse("claim %q holds %q, which is not a tenant identifier", o.TenantsClaim, t)
		}
	}
	if !p.allTenants && len(p.tenants) == 0 {
		return refuse("claim %q names no tenant", o.TenantsClaim)
	}
	if tok.Subject == "" || len(tok.Subject) > 256 {
		return refuse("the subject must be 1 to 256 bytes") // it names the actor in the audit log
	}
	return p, nil
}
