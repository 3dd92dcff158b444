package evictd_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/evict-dev/evict/internal/evictd"
	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/pkg/client"
)

// issuer is a local OpenID Connect provider: discovery document and JWKS
// over HTTP, keys it can rotate, and tokens signed with go-jose.
type issuer struct {
	srv  *httptest.Server
	mu   sync.Mutex
	keys []jose.JSONWebKey // public keys served in the JWKS
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	is := &issuer{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": is.srv.URL, "jwks_uri": is.srv.URL + "/jwks",
			"id_token_signing_alg_values_supported": []string{"RS256"}})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		is.mu.Lock()
		defer is.mu.Unlock()
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: is.keys})
	})
	is.srv = httptest.NewServer(mux)
	t.Cleanup(is.srv.Close)
	return is
}

// signer makes a key; published puts its public half in the JWKS.
func (is *issuer) signer(t *testing.T, kid string, alg jose.SignatureAlgorithm, published bool) jose.Signer {
	t.Helper()
	var priv, pub any
	switch alg {
	case jose.ES256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		priv, pub = k, &k.PublicKey
	default:
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		priv, pub = k, &k.PublicKey
	}
	if published {
		is.mu.Lock()
		is.keys = append(is.keys, jose.JSONWebKey{Key: pub, KeyID: kid, Algorithm: string(alg), Use: "sig"})
		is.mu.Unlock()
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: priv, KeyID: kid}}, (&jose.SignerOptions{}).WithType("at+jwt"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sign(t *testing.T, s jose.Signer, claims map[string]any) string {
	t.Helper()
	b, _ := json.Marshal(claims)
	jws, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestOIDCAccessTokens: with EVICT_OIDC_ISSUER, a portal calls the API with
// its identity provider's access tokens; role and tenants come from claims.
// Every way a token can be wrong is refused with 401, and a key rotation at
// the issuer needs nothing from evict.
func TestOIDCAccessTokens(t *testing.T) {
	is := newIssuer(t)
	const audience = "evict-api"
	b := setup(t, 0, func(c *evictd.Config) {
		c.OIDCIssuer, c.OIDCAudience = is.srv.URL, audience
	})
	ctx := context.Background()
	for _, tn := range []string{"acme", "globex"} {
		if _, err := b.api.CreateTenant(ctx, tn); err != nil {
			t.Fatal(err)
		}
	}
	rs := is.signer(t, "k1", jose.RS256, true)
	es := is.signer(t, "k2", jose.ES256, true)
	stranger := is.signer(t, "k1", jose.RS256, false) // same kid, key not published
	now := time.Now()
	claims := func(role string, tenants any, edit ...func(map[string]any)) map[string]any {
		c := map[string]any{"iss": is.srv.URL, "aud": audience, "sub": "alice@portal", "iat": now.Unix(),
			"exp": now.Add(time.Hour).Unix(), "evict_role": role, "evict_tenants": tenants}
		for _, e := range edit {
			e(c)
		}
		return c
	}
	none := func(c map[string]any) string { // an unsigned token, "alg": "none"
		b, _ := json.Marshal(c)
		return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + base64.RawURLEncoding.EncodeToString(b) + "."
	}
	hmac, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("a shared secret that evict never agreed to use")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	valid := sign(t, rs, claims("admin", []string{"acme"}))
	parts := strings.Split(valid, ".")
	forgedBody, _ := json.Marshal(claims("admin", "*"))
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(forgedBody) + "." + parts[2]

	tests := []struct {
		name, method, path, token string
		want                      int
	}{
		{"admin command in its tenant", "POST", "/v1/tenants/acme/users/u1/logout", valid, 202},
		{"ES256 key", "POST", "/v1/tenants/acme/users/u2/logout", sign(t, es, claims("admin", "acme")), 202},
		{"admin in another tenant", "POST", "/v1/tenants/globex/users/u1/logout", valid, 403},
		{"viewer reads", "GET", "/v1/tenants/acme/sessions", sign(t, rs, claims("viewer", []string{"acme"})), 200},
		{"viewer command", "POST", "/v1/tenants/acme/users/u1/logout", sign(t, rs, claims("viewer", []string{"acme"})), 403},
		{"sync changes membership", "PUT", "/v1/tenants/acme/groups/g/members/u1", sign(t, rs, claims("sync", []string{"acme", "globex"})), 202},
		{"operator creates a tenant", "PUT", "/v1/tenants/initech", sign(t, rs, claims("admin", "*")), 201},
		{"tenant admin creates a tenant", "PUT", "/v1/tenants/hooli", valid, 403},
		{"expired", "GET", "/v1/tenants/acme/sessions", sign(t, rs, claims("admin", "acme", func(c map[string]any) { c["exp"] = now.Add(-time.Minute).Unix() })), 401},
		{"not yet valid", "GET", "/v1/tenants/acme/sessions", sign(t, rs, claims("admin", "acme", func(c map[string]any) { c["nbf"] = now.Add(time.Hour).Unix() })), 401},
		{"another audience", "GET", "/v1/tenants/acme/sessions", sign(t, rs, claims("admin", "acme", func(c map[string]any) { c["aud"] = "payroll" })), 401},
		{"another issuer", "GET", "/v1/tenants/acme/sessions", sign(t, rs, claims("admin", "acme", func(c map[string]any) { c["iss"] = "https://evil.example" })), 401},
		{"key not in the JWKS", "GET", "/v1/tenants/acme/sessions", sign(t, stranger, claims("admin", "acme")), 401},
		{"unsigned", "GET", "/v1/tenants/acme/sessions", none(claims("admin", "*")), 401},
		{"HMAC", "GET", "/v1/tenants/acme/sessions", sign(t, hmac, claims("admin", "*")), 401},
		{"tampered claims", "PUT", "/v1/tenants/umbrella", tampered, 401},
		{"no role", "GET", "/v1/tenants/acme/sessions", sign(t, rs, claims("", "acme")), 401},
		{"guard role", "GET", "/v1/tenants/acme/sessions", sign(t, rs, claims("guard", "acme")), 401},
		{"no tenants", "GET", "/v1/tenants/acme/sessions", sign(t, rs, claims("admin", []string{})), 401},
		{"tenant with a wildcard", "GET", "/v1/tenants/acme/sessions", sign(t, rs, claims("admin", []string{"acme", "acme.>"})), 401},
		{"tenants of the wrong type", "GET", "/v1/tenants/acme/sessions", sign(t, rs, claims("admin", 42)), 401},
		{"no subject", "GET", "/v1/tenants/acme/sessions", sign(t, rs, claims("admin", "acme", func(c map[string]any) { delete(c, "sub") })), 401},
		{"not a JWT", "GET", "/v1/tenants/acme/sessions", "hello", 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, "http://"+b.d.HTTPAddr+tc.path, nil)
			req.Header.Set("Authorization", "Bearer "+tc.token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("got %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}

	// The issuer rotates to a new key: evict fetches the JWKS again.
	rotated := is.signer(t, "k3", jose.RS256, true)
	portal := client.New("http://"+b.d.HTTPAddr, sign(t, rotated, claims("admin", "acme")), nil)
	acc, err := portal.LogoutUser(ctx, "acme", "u9", "rotated key")
	if err != nil {
		t.Fatalf("token of a rotated-in key: %v", err)
	}
	var actor string
	if err := testenv.Pool(t, b.dbURL).QueryRow(ctx, "SELECT actor FROM audit_log WHERE operation_id = $1", acc.OperationID).Scan(&actor); err != nil {
		t.Fatal(err)
	}
	if actor != "oidc:alice@portal" {
		t.Errorf("audited actor %q, want oidc:alice@portal", actor)
	}
}

// TestOIDCConfigErrors: a misconfigured issuer stops evictd at start with
// an error naming the variable, rather than refusing every token later.
func TestOIDCConfigErrors(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	for name, c := range map[string][2]string{
		"no audience":          {"http://127.0.0.1:1", ""},
		"unreachable issuer":   {dead.URL, "evict-api"},
		"issuer is not an URL": {"::", "evict-api"},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := evictd.Start(ctx, evictd.Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", DatabaseURL: testenv.Database(t),
				HTTPAddr: "127.0.0.1:0", AdminToken: token, Logger: testenv.Quiet, OIDCIssuer: c[0], OIDCAudience: c[1]})
			if err == nil || !strings.Contains(err.Error(), "EVICT_OIDC_") {
				t.Fatalf("Start = %v, want an error naming EVICT_OIDC_…", err)
			}
		})
	}
}
