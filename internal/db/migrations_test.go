package db_test

import (
	"context"
	"slices"
	"testing"

	"github.com/evict-dev/evict/internal/testenv"
)

// TestOperationsVacuumSoon checks that the migrations leave operations
// with its own autovacuum threshold (migration 0011): the completer reads
// the entries its vacuum removes.
func TestOperationsVacuumSoon(t *testing.T) {
	pool := testenv.Pool(t, testenv.Database(t))
	var opts []string
	if err := pool.QueryRow(context.Background(), "SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = 'operations'::regclass").Scan(&opts); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(opts, "autovacuum_vacuum_scale_factor=0.01") {
		t.Errorf("operations has reloptions %q, want autovacuum_vacuum_scale_factor=0.01", opts)
	}
}
