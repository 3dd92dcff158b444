package evictd_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/pkg/client"
	"github.com/evict-dev/evict/pkg/guard"
)

type device struct {
	DeviceID  string    `json:"device_id"`
	TrustedAt time.Time `json:"trusted_at"`
	Trusted   bool      `json:"trusted"`
}

// TestTrustedDevices: revoking one device's trust, then all of a user's,
// makes the guard ask for the second factor again; sessions end only when
// asked to; a device trusted again afterwards is trusted.
func TestTrustedDevices(t *testing.T) {
	b := setup(t, 1)
	g := b.guards[0]
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	trust := func(dev string) device {
		t.Helper()
		d, err := b.api.TrustDevice(ctx, "acme", "alice", dev, "phone")
		if err != nil {
			t.Fatal(err)
		}
		return device{DeviceID: d.DeviceID, TrustedAt: d.TrustedAt, Trusted: d.Trusted}
	}
	phone, laptop := trust("phone-1"), trust("laptop-1")
	sess := b.register(t, "acme", "alice", "alice-s1")
	trusted := func(d device) bool { return g.DeviceTrusted("acme", "alice", d.DeviceID, d.TrustedAt) }
	if !trusted(phone) || !trusted(laptop) {
		t.Fatal("freshly trusted devices are not trusted")
	}

	if _, err := b.api.RevokeDevice(ctx, "acme", "alice", "phone-1", false, "lost"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "phone untrusted", func() bool { return !trusted(phone) })
	b.waitSynced(t)
	if !trusted(laptop) {
		t.Error("revoking the phone untrusted the laptop")
	}
	if err := g.Check(sess); err != nil {
		t.Errorf("revoking trust without logout ended the session: %v", err)
	}

	if _, err := b.api.RevokeAllDevices(ctx, "acme", "alice", true, ""); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "laptop untrusted and session revoked", func() bool {
		return !trusted(laptop) && errors.Is(g.Check(sess), guard.ErrSessionRevoked)
	})

	again := trust("phone-1")
	b.waitSynced(t)
	if !trusted(again) {
		t.Error("a device trusted again after the revocation is not trusted")
	}
	list, err := b.api.TrustedDevices(ctx, "acme", "alice")
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]bool{}
	for _, d := range list {
		states[d.DeviceID] = d.Trusted
	}
	if len(states) != 2 || !states["phone-1"] || states["laptop-1"] {
		t.Errorf("devices: %v; want phone-1 trusted, laptop-1 not", states)
	}
	_, err = b.api.TrustDevice(ctx, "acme", "bob", "phone-1", "")
	if !client.IsCode(err, "conflict") {
		t.Errorf("another user claiming alice's device id: %v, want conflict", err)
	}
	if err := b.api.Do(ctx, http.MethodDelete, "/v1/tenants/acme/users/alice/trusted-devices/laptop-1", nil, nil); !client.IsCode(err, "not_found") {
		t.Errorf("revoking an untrusted device: %v, want not_found", err)
	}
}

// TestAuditLog: every command is in the audit log with its actor, source,
// reason, targets and outcome; filters and pagination work.
func TestAuditLog(t *testing.T) {
	b := setup(t, 0)
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.api.AddMember(ctx, "acme", "site-1", "alice"); err != nil {
		t.Fatal(err)
	}
	removed, err := b.api.RemoveMember(ctx, "acme", "site-1", "alice", "moved")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.api.LogoutUsers(ctx, "acme", []string{"bob", "carol"}, "incident 42"); err != nil {
		t.Fatal(err)
	}
	type entry struct {
		ID          int64  `json:"id"`
		Actor       string `json:"actor"`
		SourceIP    string `json:"source_ip"`
		Action      string `json:"action"`
		Reason      string `json:"reason"`
		OperationID string `json:"operation_id"`
		Outcome     string `json:"outcome"`
		Targets     struct {
			UserCount int      `json:"user_count"`
			Users     []string `json:"users"`
		} `json:"targets"`
	}
	var page struct {
		Entries    []entry `json:"entries"`
		NextBefore int64   `json:"next_before"`
	}
	get := func(path string) {
		t.Helper()
		page.Entries, page.NextBefore = nil, 0
		if err := b.api.Do(ctx, http.MethodGet, path, nil, &page); err != nil {
			t.Fatal(err)
		}
	}
	get("/v1/tenants/acme/audit")
	var actions []string
	for _, e := range page.Entries {
		actions = append(actions, e.Action)
		if e.Actor != "bootstrap" || e.SourceIP != "127.0.0.1" {
			t.Errorf("entry %d: actor %q source %q", e.ID, e.Actor, e.SourceIP)
		}
	}
	if want := "users.logout member.remove member.add tenant.create"; join(actions) != want {
		t.Errorf("actions %q, want %q (newest first)", join(actions), want)
	}
	get("/v1/tenants/acme/audit?action=member.remove")
	if len(page.Entries) != 1 || page.Entries[0].Reason != "moved" || page.Entries[0].OperationID != removed.OperationID ||
		page.Entries[0].Targets.UserCount != 1 {
		t.Fatalf("member.remove entry: %+v", page.Entries)
	}
	testenv.Eventually(t, "outcome completed", func() bool {
		get("/v1/tenants/acme/audit?operation_id=" + removed.OperationID)
		return len(page.Entries) == 1 && page.Entries[0].Outcome == "completed"
	})
	get("/v1/tenants/acme/audit?limit=2")
	if len(page.Entries) != 2 || page.NextBefore == 0 {
		t.Fatalf("first page: %d entries, next %d", len(page.Entries), page.NextBefore)
	}
	var rest []string
	for path := "/v1/tenants/acme/audit?limit=2&before="; page.NextBefore != 0; {
		get(path + itoa(page.NextBefore))
		for _, e := range page.Entries {
			rest = append(rest, e.Action)
		}
	}
	if join(rest) != "member.add tenant.create" {
		t.Errorf("second page: %q", join(rest))
	}
}

func join(s []string) string { return strings.Join(s, " ") }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
