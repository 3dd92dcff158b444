package client

import (
	"context"
	"net/http"
	"time"
)

// Key is an API key or guard key, as the operator's key API lists it.
type Key struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	Tenants    []string   `json:"tenants"`
	AllTenants bool       `json:"all_tenants"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

// NewKey is a key to create: role admin, sync, viewer or guard, for
// tenants or all of them.
type NewKey struct {
	Name       string   `json:"name,omitempty"`
	Role       string   `json:"role"`
	Tenants    []string `json:"tenants,omitempty"`
	AllTenants bool     `json:"all_tenants,omitempty"`
	// ExpiresIn is a Go duration such as "720h"; empty: no expiry.
	ExpiresIn string `json:"expires_in,omitempty"`
}

// CreatedKey is a new key with its token, which is shown only this once.
type CreatedKey struct {
	Key
	Token string `json:"token"`
}

// CreateKey creates a key (operator credentials only).
func (c *Client) CreateKey(ctx context.Context, k NewKey) (CreatedKey, error) {
	var out CreatedKey
	err := c.Do(ctx, http.MethodPost, "/v1/keys", k, &out)
	return out, err
}

// Keys lists every key, newest first.
func (c *Client) Keys(ctx context.Context) ([]Key, error) {
	var out struct {
		Keys []Key `json:"keys"`
	}
	err := c.Do(ctx, http.MethodGet, "/v1/keys", nil, &out)
	return out.Keys, err
}

// RevokeKey revokes the key with id.
func (c *Client) RevokeKey(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/keys/"+esc(id), nil, nil)
}
