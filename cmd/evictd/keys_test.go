package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/evict-dev/evict/internal/keys"
	"github.com/evict-dev/evict/internal/testenv"
)

func TestKeysCommand(t *testing.T) {
	dbURL := testenv.Database(t)
	t.Setenv("DATABASE_URL", dbURL)
	ctx := context.Background()
	pool := testenv.Pool(t, dbURL)
	var out bytes.Buffer
	// A key for a tenant that does not exist would never work: refused.
	if err := runKeys(ctx, []string{"create", "--tenant", "acme", "--role", "sync"}, &out); !errors.Is(err, keys.ErrUnknownTenant) {
		t.Fatalf("a key for a missing tenant: %v, want ErrUnknownTenant", err)
	}
	if _, err := pool.Exec(ctx, "INSERT INTO tenants (id) VALUES ('acme')"); err != nil {
		t.Fatal(err)
	}
	if err := runKeys(ctx, []string{"create", "--tenant", "acme", "--role", "sync", "--name", "okta-sync"}, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	token := lines[len(lines)-1]
	if !strings.HasPrefix(token, keys.TokenPrefix) || strings.ContainsAny(token, " \t") {
		t.Fatalf("last line %q is not the token alone", token)
	}
	k, err := keys.Lookup(ctx, pool, token)
	if err != nil || k.Role != keys.RoleSync || !k.Allows("acme") || k.Allows("other") || k.Name != "okta-sync" {
		t.Fatalf("lookup: %+v, %v", k, err)
	}
	out.Reset()
	if err := runKeys(ctx, []string{"list"}, &out); err != nil || !strings.Contains(out.String(), k.ID.String()) || strings.Contains(out.String(), token) {
		t.Fatalf("list: %v\n%s", err, out.String())
	}
	if err := runKeys(ctx, []string{"revoke", k.ID.String()}, &out); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Lookup(ctx, pool, token); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("revoked key still found: %v", err)
	}
	for _, args := range [][]string{
		{},
		{"create", "--role", "admin"}, // no scope
		{"create", "--tenant", "a", "--all-tenants", "--role", "admin"}, // both
		{"create", "--tenant", "a.b", "--role", "admin"},                // bad tenant
		{"create", "--tenant", "a", "--role", "root"},                   // bad role
		{"revoke", "not-a-uuid"},
	} {
		if err := runKeys(ctx, args, &bytes.Buffer{}); err == nil {
			t.Errorf("keys %v: accepted", args)
		}
	}
}
