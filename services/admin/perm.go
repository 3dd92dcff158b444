package admin

import "github.com/evict-dev/evict/internal/keys"

// perm is what a route needs of the caller's role.
type perm int

const (
	permRead         perm = iota // admin, viewer
	permMembersRead              // admin, viewer, sync
	permMembersWrite             // admin, sync
	permCommand                  // admin
	permOperator                 // an admin for every tenant (bootstrap, operator keys)
	permKeys                     // the same: manage API and guard keys
)

func (p perm) String() string {
	return [...]string{"read", "read memberships", "change memberships", "run commands", "create tenants", "manage keys"}[p]
}

// allowedFor reports whether the principal's role grants p. Tenant scope is
// checked separately.
func (p perm) allowedFor(pr principal) bool {
	switch p {
	case permRead:
		return pr.role == keys.RoleAdmin || pr.role == keys.RoleViewer
	case permMembersRead:
		return pr.role == keys.RoleAdmin || pr.role == keys.RoleViewer || pr.role == keys.RoleSync
	case permMembersWrite:
		return pr.role == keys.RoleAdmin || pr.role == keys.RoleSync
	case permCommand:
		return pr.role == keys.RoleAdmin
	case permOperator, permKeys:
		return pr.role == keys.RoleAdmin && pr.allTenants
	}
	return false
}
