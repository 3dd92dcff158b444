package admin

import (
	"bytes"
	"cmp"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/internal/wake"
	"github.com/evict-dev/evict/services/registry"
)

// TestCommandsHandOverTheirRows: the rows a command hands to the relay of
// its process are the outbox rows as committed, seq and payload included,
// the watermark the transaction stored too; a command with rows of the
// history stream hands over none, and leaves them to the relay's reads.
func TestCommandsHandOverTheirRows(t *testing.T) {
	pool := testenv.Pool(t, testenv.Database(t))
	var mu sync.Mutex
	var got [][]wake.Row
	hub := wake.New(testenv.Quiet)
	hub.OnOutbox(func(rows []wake.Row) bool {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, rows)
		return true
	})
	reg, err := registry.New(registry.Config{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Pool: pool, AdminToken: "t", Registry: reg, Wake: hub, Logger: testenv.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	do := func(t *testing.T, method, path, body string) {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer t")
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		if w.Code >= 300 {
			t.Fatalf("%s %s: %d %s", method, path, w.Code, w.Body)
		}
	}
	do(t, "PUT", "/v1/tenants/acme", `{}`)

	tests := []struct {
		name, method, path, body string
		handed                   bool
	}{
		{"a user's logout, with the watermark it stored", "POST", "/v1/tenants/acme/users/alice/logout", `{"reason":"test"}`, true},
		{"the same user again", "POST", "/v1/tenants/acme/users/alice/logout", `{}`, true},
		{"a tenant's logout", "POST", "/v1/tenants/acme/logout", `{"all":true}`, true},
		{"a bulk logout", "POST", "/v1/tenants/acme/logout", `{"users":["carol","dave","erin"]}`, true},
		{"a member's addition: history only", "PUT", "/v1/tenants/acme/groups/g1/members/bob", `{}`, false},
		{"a member's removal: a logout and history", "DELETE", "/v1/tenants/acme/groups/g1/members/bob", ``, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := pool.Exec(t.Context(), "DELETE FROM outbox"); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			got = nil
			mu.Unlock()
			do(t, tc.method, tc.path, tc.body)

			rows, err := pool.Query(t.Context(), "SELECT seq, event_id, subject, payload FROM outbox ORDER BY seq")
			if err != nil {
				t.Fatal(err)
			}
			var stored []wake.Row
			for rows.Next() {
				var r wake.Row
				if err := rows.Scan(&r.Seq, &r.EventID, &r.Subject, &r.Payload); err != nil {
					t.Fatal(err)
				}
				stored = append(stored, r)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if len(stored) == 0 {
				t.Fatal("the command wrote no outbox row")
			}
			mu.Lock()
			defer mu.Unlock()
			if len(got) != 1 {
				t.Fatalf("%d outbox hints, want 1", len(got))
			}
			if !tc.handed {
				if len(got[0]) != 0 {
					t.Fatalf("handed over %d rows, want none", len(got[0]))
				}
				return
			}
			handed := slices.Clone(got[0])
			slices.SortFunc(handed, func(a, b wake.Row) int { return cmp.Compare(a.Seq, b.Seq) })
			if len(handed) != len(stored) {
				t.Fatalf("handed over %d rows, the outbox holds %d", len(handed), len(stored))
			}
			for i, h := range handed {
				w := stored[i]
				if h.Seq != w.Seq || h.EventID != w.EventID || h.Subject != w.Subject || !bytes.Equal(h.Payload, w.Payload) {
					t.Errorf("row %d handed over as %d %s %s %s, stored as %d %s %s %s", i,
						h.Seq, h.EventID, h.Subject, h.Payload, w.Seq, w.EventID, w.Subject, w.Payload)
				}
				if !h.Operation.Valid || h.Operation.UUID == uuid.Nil {
					t.Errorf("row %d handed over without its operation", i)
				}
				if h.Before.IsZero() || h.After.Before(h.Before) {
					t.Errorf("row %d: commit between %v and %v", i, h.Before, h.After)
				}
			}
			if bytes.Contains(handed[0].Payload, []byte(storedWatermarkJSON)) {
				t.Errorf("handed over with the placeholder of the stored watermark: %s", handed[0].Payload)
			}
		})
	}
}
