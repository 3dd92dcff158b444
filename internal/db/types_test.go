package db_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/evict-dev/evict/internal/db"
	"github.com/evict-dev/evict/internal/testenv"
)

// TestRegisterTypesRoundTrip sends every UUID shape evict passes as an
// argument through PostgreSQL and reads it back.
func TestRegisterTypesRoundTrip(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testenv.PostgresURL())
	if err != nil {
		t.Fatalf("PostgreSQL at %s is required: %v", testenv.PostgresURL(), err)
	}
	defer conn.Close(ctx)
	db.RegisterTypes(conn.TypeMap())

	a, b := uuid.New(), uuid.New()
	for _, tc := range []struct {
		name string
		arg  any
		want string // PostgreSQL's text of the argument; "" for NULL
	}{
		{"uuid", a, a.String()},
		{"pointer to uuid", &b, b.String()},
		{"valid NullUUID", uuid.NullUUID{UUID: a, Valid: true}, a.String()},
		{"null NullUUID", uuid.NullUUID{}, ""},
		{"array", []uuid.UUID{a, b}, "{" + a.String() + "," + b.String() + "}"},
		{"array of NullUUID", []uuid.NullUUID{{UUID: b, Valid: true}, {}}, "{" + b.String() + ",NULL}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sql := "SELECT $1::uuid::text"
			if tc.want != "" && tc.want[0] == '{' {
				sql = "SELECT $1::uuid[]::text"
			}
			var got pgtype.Text
			if err := conn.QueryRow(ctx, sql, tc.arg).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got.String != tc.want || got.Valid != (tc.want != "") {
				t.Errorf("got %q (valid %v), want %q", got.String, got.Valid, tc.want)
			}
		})
	}
}

// TestRegisterTypesEncodesWithoutDetour holds the reason RegisterTypes
// exists: a UUID is encoded as its bytes, not through text, an error and a
// parse (19 allocations with pgx 5.12 without it; 2 with it, the boxing of
// the argument and of its bytes).
func TestRegisterTypesEncodesWithoutDetour(t *testing.T) {
	m := pgtype.NewMap()
	db.RegisterTypes(m)
	id := uuid.New()
	var arg any = id
	buf := make([]byte, 0, 64)
	allocs := testing.AllocsPerRun(100, func() {
		out, err := m.Encode(pgtype.UUIDOID, pgtype.BinaryFormatCode, arg, buf[:0])
		if err != nil || len(out) != 16 || [16]byte(out) != id {
			t.Fatalf("Encode = %x, %v; want the 16 bytes of %s", out, err, id)
		}
	})
	if allocs > 2 {
		t.Errorf("encoding a uuid.UUID made %.0f allocations, want at most 2", allocs)
	}
}
