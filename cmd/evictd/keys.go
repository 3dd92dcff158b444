package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/evict-dev/evict/internal/db"
	"github.com/evict-dev/evict/internal/keys"
)

const keysUsage = `usage:
  evictd keys create (--tenant T [--tenant T2 ...] | --all-tenants) --role admin|sync|viewer|guard [--name N] [--expires 720h]
  evictd keys list
  evictd keys revoke KEY-ID

create prints the new token alone on its last line; it is shown only once.`

// errKeysUsage is returned, after the usage is printed, for wrong arguments.
var errKeysUsage = errors.New("wrong arguments to evictd keys")

// runKeys manages admin API keys in the database of DATABASE_URL.
func runKeys(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(out, keysUsage)
		return errKeysUsage
	}
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		url = db.DefaultURL
	}
	switch args[0] {
	case "create":
		fs := flag.NewFlagSet("keys create", flag.ContinueOnError)
		var tenants multi
		fs.Var(&tenants, "tenant", "tenant the key may act on (repeatable)")
		all := fs.Bool("all-tenants", false, "an operator key: every tenant, and creating tenants (with role admin)")
		role := fs.String("role", "", "admin (every command), sync (membership changes), viewer (read only); guard: a NATS credential for session holders (pkg/guard), limited to the tenants")
		name := fs.String("name", "", "a name to recognize the key by")
		expires := fs.Duration("expires", 0, "lifetime, e.g. 720h; 0 never expires")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		pool, err := db.Open(ctx, url)
		if err != nil {
			return err
		}
		defer pool.Close()
		k, token, err := keys.Create(ctx, pool, keys.Spec{Name: *name, Role: *role, Tenants: tenants, AllTenants: *all, TTL: *expires})
		if err != nil {
			return err
		}
		scope := strings.Join(k.Tenants, ",")
		if k.AllTenants {
			scope = "all tenants"
		}
		fmt.Fprintf(out, "created key %s (%s), role %s, scope %s", k.ID, k.Name, k.Role, scope)
		if k.ExpiresAt != nil {
			fmt.Fprintf(out, ", expires %s", k.ExpiresAt.UTC().Format(time.RFC3339))
		}
		fmt.Fprintf(out, "\nthe token is shown only now; store it in a secret manager:\n%s\n", token)
		return nil
	case "list":
		pool, err := db.Open(ctx, url)
		if err != nil {
			return err
		}
		defer pool.Close()
		list, err := keys.List(ctx, pool)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tROLE\tTENANTS\tCREATED\tEXPIRES\tREVOKED\tLAST USED")
		for _, k := range list {
			scope := strings.Join(k.Tenants, ",")
			if k.AllTenants {
				scope = "*"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Role, scope, stamp(&k.CreatedAt), stamp(k.ExpiresAt), stamp(k.RevokedAt), stamp(k.LastUsedAt))
		}
		return tw.Flush()
	case "revoke":
		if len(args) != 2 {
			fmt.Fprintln(out, keysUsage)
			return errKeysUsage
		}
		id, err := uuid.Parse(args[1])
		if err != nil {
			return fmt.Errorf("key id %q: %w", args[1], err)
		}
		pool, err := db.Open(ctx, url)
		if err != nil {
			return err
		}
		defer pool.Close()
		if err := keys.Revoke(ctx, pool, id); err != nil {
			return err
		}
		fmt.Fprintf(out, "revoked key %s\n", id)
		return nil
	}
	fmt.Fprintln(out, keysUsage)
	return errKeysUsage
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func stamp(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
