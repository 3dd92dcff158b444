package bench

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/evict-dev/evict/internal/bench/report"
	"github.com/evict-dev/evict/internal/bench/stats"
	"github.com/evict-dev/evict/pkg/client"
)

// bulk logs out BulkUsers users of 3 sessions each in one command and
// measures, per user, the time from sending the command until every guard
// refuses the user's sessions; the last of them is when the bulk is fully
// enforced. The operation's own timestamps give the outbox's throughput;
// the time until its targets are recorded (after the commit) is reported
// too.
func (e *env) bulk(ctx context.Context, rep *report.Report) error {
	const tenant = "bulk"
	n := e.cfg.BulkUsers
	if err := e.addSessions(ctx, tenant, "b", n, 3, 0, 1); err != nil {
		return err
	}
	users := make([]string, n)
	for i := range users {
		users[i] = "b" + itoa(i)
	}
	t := newTracker(tenant, len(e.fleet), e.issued, tenant)
	e.track.Store(t)
	defer e.track.Store(nil)
	start := time.Now()
	// In the order the events carry them (evict sorts a command's users),
	// which the guards' cursors then follow; another order would only
	// cost the bench map lookups.
	for _, u := range slices.Sorted(slices.Values(users)) {
		t.expect(u, start)
	}
	acc, err := e.api.LogoutUsers(ctx, tenant, users, "bench")
	if err != nil {
		return fmt.Errorf("bench: bulk logout: %w", err)
	}
	accepted := time.Since(start)
	if err := t.wait(ctx, n, 5*time.Minute); err != nil {
		return fmt.Errorf("bench: bulk: %w", err)
	}
	if p := t.problems(); p != "" {
		return fmt.Errorf("bench: bulk: %s", p)
	}
	lat, last := t.latencies(start)
	enforced := last.Sub(start)
	// The guards may enforce before the relay has recorded the operation
	// as published.
	var op client.Operation
	for deadline := time.Now().Add(time.Minute); op.PublishedAt == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if op, err = e.api.Operation(ctx, acc.OperationID); err != nil {
			return fmt.Errorf("bench: bulk operation: %w", err)
		}
	}
	// The sessions are marked revoked and recorded as the operation's
	// targets after the commit (internal/targets); the next scenario starts
	// once that is done, and the time it took is reported.
	for deadline := time.Now().Add(10 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		var pending bool
		if err := e.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pending_targets WHERE operation_id = $1)", acc.OperationID).Scan(&pending); err != nil {
			return fmt.Errorf("bench: bulk targets: %w", err)
		}
		if !pending {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: bulk: targets still pending after 10 minutes")
		}
	}
	recorded := time.Since(start)
	row := report.Row{Scenario: "bulk", Name: fmt.Sprintf("%s users × 3 sessions → %d guards refuse all", report.Num(float64(n)), len(e.fleet)),
		Summary: stats.Summarize(lat, enforced), Floor: floorChain(len(e.fleet)),
		Extra: []report.Metric{
			{Name: "command accepted (202) after", Value: ms(accepted), Unit: "ms"},
			{Name: "fully enforced by every guard after", Value: ms(enforced), Unit: "ms"},
			{Name: "users enforced per second", Value: float64(n) / enforced.Seconds(), Unit: "users/s"},
			{Name: "sessions marked revoked, targets recorded, after", Value: ms(recorded), Unit: "ms"},
		}}
	if op.PublishedAt != nil {
		// Both times are PostgreSQL's clock: commit to the relay's last acknowledgement.
		pub := op.PublishedAt.Sub(op.AcceptedAt)
		row.Extra = append(row.Extra,
			report.Metric{Name: "outbox: commit → all events in JetStream", Value: ms(pub), Unit: "ms"},
			report.Metric{Name: "outbox: events per second", Value: float64(op.Events.Total) / pub.Seconds(), Unit: "events/s"})
	}
	rep.Add(row)
	return nil
}

// tenantWide logs out, again and again, a small tenant and a tenant of
// TenantSessions sessions, and measures the time until every guard refuses
// their sessions: one watermark, whatever the size.
func (e *env) tenantWide(ctx context.Context, rep *report.Report) error {
	// Each size is a tenant of its own: a big tenant of 1,000 sessions is
	// the small one, run once.
	for _, size := range slices.Compact([]int{1000, e.cfg.TenantSessions}) {
		tenant := fmt.Sprintf("tenant-%d", size)
		// 4 sessions per user, as in the listing benchmark's tenant.
		if err := e.addSessions(ctx, tenant, "t", size/4, 4, 0, 1); err != nil {
			return err
		}
		t := newTracker(tenant, len(e.fleet), e.issued, tenant)
		// Commands 100 ms apart: each is one event on one subject, and
		// two in one relay batch would publish only the newer.
		res, err := e.run(ctx, load{t: t, n: e.cfg.TenantLogouts, rate: 10, key: func(int) string { return "" },
			send: func(ctx context.Context, i int, due time.Time) error {
				acc, err := e.api.LogoutTenant(ctx, tenant, "")
				if err == nil {
					t.expect(acc.OperationID, due)
				}
				return err
			}})
		if err != nil {
			return fmt.Errorf("bench: tenant-wide, %d sessions: %w", size, err)
		}
		rep.Add(report.Row{Scenario: "tenant-wide",
			Name:    fmt.Sprintf("tenant of %s sessions → %d guards refuse", report.Num(float64(size)), len(e.fleet)),
			Summary: res.sum, Floor: floorChain(len(e.fleet))})
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
