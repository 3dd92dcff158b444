package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/evict-dev/evict/internal/bench/report"
	"github.com/evict-dev/evict/internal/bench/stats"
)

// TestFloorTargetNeedsTheFloor: a run without the floor (-only e2e) has no
// ratio to the floor, so the "within 3× the floor" target is left out
// rather than reported met; with the floor, it is judged.
func TestFloorTargetNeedsTheFloor(t *testing.T) {
	t.Parallel()
	cfg := Config{Rate: 1000}
	e2e := report.Row{Scenario: "end to end", Name: steadyName(10, cfg.Rate), Floor: floorChain(10),
		Summary: stats.Summary{N: 1, P50: 9 * time.Millisecond, P99: 30 * time.Millisecond}}
	floor := report.Row{Scenario: "floor", Name: floorChain(10),
		Summary: stats.Summary{N: 1, P50: time.Millisecond, P99: 2 * time.Millisecond}}
	for _, tc := range []struct {
		name string
		rows []report.Row
		want string // "" when the target must be absent
	}{
		{"without the floor", []report.Row{e2e}, ""},
		{"with the floor", []report.Row{floor, e2e}, "p50 9.00×, p99 15.00×"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := targetOf(cfg, "3× the floor", tc.rows...)
			switch {
			case tc.want == "" && got != nil:
				t.Errorf("target %+v reported without a floor", *got)
			case tc.want != "" && (got == nil || got.Got != tc.want || got.Met):
				t.Errorf("target %+v, want got %q, not met", got, tc.want)
			}
		})
	}
}

// TestTargetSaysWhatItWasMeasuredOn: a tenant-wide p99 of fewer than 100
// logouts is their slowest (nearest rank), and memory per entry measured
// on fewer than the target's 1,000,000 entries is a smaller run; each
// target's text says so, and neither is met at these values.
func TestTargetSaysWhatItWasMeasuredOn(t *testing.T) {
	t.Parallel()
	tenantWide := func(n int) report.Row {
		return report.Row{Scenario: "tenant-wide", Name: "tenant of 1,000 sessions → 10 guards refuse",
			Summary: stats.Summary{N: n, P50: 2 * time.Millisecond, P99: 12 * time.Millisecond, Max: 12 * time.Millisecond}}
	}
	cold := func(entries int) report.Row {
		return report.Row{Scenario: "cold start",
			Name:    "new guard loads " + report.Num(float64(entries)) + " entries → ready, from its tenant's snapshot",
			Summary: stats.Summary{N: 1, P50: time.Millisecond, P99: time.Millisecond, Max: time.Millisecond},
			Extra:   []report.Metric{{Name: "heap per revocation entry (whole guard)", Value: 176.1, Unit: "B"}}}
	}
	for _, tc := range []struct {
		name   string
		cfg    Config
		row    report.Row
		target string
		want   string
	}{
		{"30 logouts", Config{}, tenantWide(30), "tenant of 1,000", "p99 12.0 ms (the slowest of 30: too few for a p99)"},
		{"99 logouts", Config{}, tenantWide(99), "tenant of 1,000", "p99 12.0 ms (the slowest of 99: too few for a p99)"},
		{"100 logouts", Config{}, tenantWide(100), "tenant of 1,000", "p99 12.0 ms"},
		{"200 logouts", Config{}, tenantWide(200), "tenant of 1,000", "p99 12.0 ms"},
		{"10,000 entries", Config{ColdEntries: 10_000}, cold(10_000), "memory per revocation entry", "176.1 B (a smaller run: 10,000)"},
		{"1,000,000 entries", Config{ColdEntries: 1_000_000}, cold(1_000_000), "memory per revocation entry", "176.1 B"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := targetOf(tc.cfg, tc.target, tc.row)
			if got == nil || got.Got != tc.want || got.Met {
				t.Errorf("target %+v, want got %q, not met", got, tc.want)
			}
		})
	}
}

// targetOf judges a report of rows and returns the target whose name holds
// name, or nil.
func targetOf(cfg Config, name string, rows ...report.Row) *report.Target {
	rep := &report.Report{}
	for _, r := range rows {
		rep.Add(r)
	}
	for _, tg := range targets(rep, cfg) {
		if strings.Contains(tg.Name, name) {
			return &tg
		}
	}
	return nil
}
