// Package keys manages admin API keys and guard keys: each has a role
// (admin, sync, viewer; guard for NATS) and a tenant scope, is shown once at creation and stored only as
// a SHA-256 hash, and can expire and be revoked.
package keys

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/evict-dev/evict/events"
)

// Roles.
const (
	RoleAdmin  = "admin"  // every command and read in its tenants
	RoleSync   = "sync"   // membership changes (directory sync) and membership reads
	RoleViewer = "viewer" // reads only
	// RoleGuard is not an API role: a guard key is the NATS credential of
	// session holders (pkg/guard) on evictd's embedded NATS, limited to the
	// key's tenants. The admin API refuses it.
	RoleGuard = "guard"
)

// TokenPrefix starts every key, so that a leaked one is easy to recognize
// (and to scan for).
const TokenPrefix = "evk_"

// Errors; branch on them with errors.Is.
var (
	// ErrNotFound is returned for an unknown, revoked or expired key.
	ErrNotFound = errors.New("keys: no such active key")
	// ErrInvalid is returned for a key spec that cannot be created.
	ErrInvalid = errors.New("keys: invalid key")
	// ErrUnknownTenant is returned for a key scoped to a tenant that does
	// not exist (most likely a typo: the key would never work).
	ErrUnknownTenant = errors.New("keys: unknown tenant")
)

// Key is an API key's metadata; the token itself is never stored.
type Key struct {
	ID         uuid.UUID  `json:"id"`
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	Tenants    []string   `json:"tenants"`
	AllTenants bool       `json:"all_tenants"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

// Allows reports whether the key may act on tenant.
func (k Key) Allows(tenant string) bool {
	if k.AllTenants {
		return true
	}
	for _, t := range k.Tenants {
		if t == tenant {
			return true
		}
	}
	return false
}

// DB is what the functions here need of a pool or a transaction: run them
// in the caller's transaction to audit in the same commit.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Spec is a key to create.
type Spec struct {
	Name       string
	Role       string
	Tenants    []string
	AllTenants bool
	// TTL, if positive, makes the key expire.
	TTL time.Duration
}

// Create stores a new key and returns its token, which is shown once.
func Create(ctx context.Context, pool DB, s Spec) (Key, string, error) {
	switch s.Role {
	case RoleAdmin, RoleSync, RoleViewer, RoleGuard:
	default:
		return Key{}, "", fmt.Errorf("%w: role %q: want admin, sync, viewer or guard", ErrInvalid, s.Role)
	}
	if s.AllTenants == (len(s.Tenants) > 0) {
		return Key{}, "", fmt.Errorf("%w: give tenants, or all tenants (an operator key), not both or neither", ErrInvalid)
	}
	for _, t := range s.Tenants {
		if err := events.CheckID("tenant", t); err != nil {
			return Key{}, "", fmt.Errorf("keys: %w", err)
		}
	}
	if len(s.Name) > 200 {
		return Key{}, "", fmt.Errorf("%w: name longer than 200 bytes", ErrInvalid)
	}
	if s.Name == "" {
		s.Name = s.Role
	}
	if s.TTL < 0 {
		return Key{}, "", fmt.Errorf("%w: negative lifetime", ErrInvalid)
	}
	if len(s.Tenants) > 0 {
		var missing []string
		if err := pool.QueryRow(ctx, `SELECT coalesce(array_agg(t ORDER BY t), '{}') FROM unnest($1::text[]) AS t
			WHERE NOT EXISTS (SELECT 1 FROM tenants WHERE id = t)`, s.Tenants).Scan(&missing); err != nil {
			return Key{}, "", fmt.Errorf("keys: %w", err)
		}
		if len(missing) > 0 {
			return Key{}, "", fmt.Errorf("%w: %s", ErrUnknownTenant, strings.Join(missing, ", "))
		}
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return Key{}, "", fmt.Errorf("keys: %w", err)
	}
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(secret)
	id, err := uuid.NewV7()
	if err != nil {
		return Key{}, "", err
	}
	var expires *time.Time
	if s.TTL > 0 {
		e := time.Now().Add(s.TTL)
		expires = &e
	}
	k := Key{ID: id, Name: s.Name, Role: s.Role, Tenants: s.Tenants, AllTenants: s.AllTenants, ExpiresAt: expires}
	if k.Tenants == nil {
		k.Tenants = []string{}
	}
	err = pool.QueryRow(ctx, `INSERT INTO api_keys (id, name, hash, role, tenants, all_tenants, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING created_at`,
		id, k.Name, Hash(token), k.Role, k.Tenants, k.AllTenants, expires).Scan(&k.CreatedAt)
	if err != nil {
		return Key{}, "", fmt.Errorf("keys: create: %w", err)
	}
	return k, token, nil
}

// Hash is what is stored of a token.
func Hash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// Lookup finds the active key of token and records its use, to the
// minute. The comparison is by hash, in the database: the secret is never
// compared byte by byte.
//
// Writing last_used_at on every request made each request wait for a WAL
// flush, and made all requests of one key wait for each other on its row
// lock. It is written when it is a minute old, so that most lookups write
// nothing: an UPDATE that matches no row takes no lock and flushes nothing.
func Lookup(ctx context.Context, pool DB, token string) (Key, error) {
	if !strings.HasPrefix(token, TokenPrefix) {
		return Key{}, ErrNotFound
	}
	var k Key
	err := pool.QueryRow(ctx, `WITH k AS (
			SELECT id, name, role, tenants, all_tenants, created_at, expires_at, revoked_at, last_used_at FROM api_keys
			WHERE hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > clock_timestamp())),
		used AS (
			UPDATE api_keys a SET last_used_at = clock_timestamp() FROM k
			WHERE a.id = k.id AND (k.last_used_at IS NULL OR k.last_used_at < clock_timestamp() - interval '1 minute')
			RETURNING a.last_used_at)
		SELECT id, name, role, tenants, all_tenants, created_at, expires_at, revoked_at,
			coalesce((SELECT last_used_at FROM used), last_used_at)
		FROM k`, Hash(token)).
		Scan(&k.ID, &k.Name, &k.Role, &k.Tenants, &k.AllTenants, &k.CreatedAt, &k.ExpiresAt, &k.RevokedAt, &k.LastUsedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Key{}, ErrNotFound
	}
	return k, err
}

// List returns every key, newest first.
func List(ctx context.Context, pool DB) ([]Key, error) {
	rows, err := pool.Query(ctx, `SELECT id, name, role, tenants, all_tenants, created_at, expires_at, revoked_at, last_used_at
		FROM api_keys ORDER BY created_at DESC`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (k Key, err error) {
		err = row.Scan(&k.ID, &k.Name, &k.Role, &k.Tenants, &k.AllTenants, &k.CreatedAt, &k.ExpiresAt, &k.RevokedAt, &k.LastUsedAt)
		return k, err
	})
}

// Revoke revokes a key; it is refused from the next lookup on.
func Revoke(ctx context.Context, pool DB, id uuid.UUID) error {
	tag, err := pool.Exec(ctx, "UPDATE api_keys SET revoked_at = clock_timestamp() WHERE id = $1 AND revoked_at IS NULL", id)
	if err != nil {
		return fmt.Errorf("keys: revoke: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}
