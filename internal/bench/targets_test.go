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

// TestTenantWideP99SaysWhenItIsTheSlowest: below 100 logouts the nearest
// rank p99 is the slowest one, and the target says so.
func TestTenantWideP99SaysWhenItIsTheSlowest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		n    int
		want string
	}{
		{30, "p99 12.0 ms (the slowest of 30: too few for a p99)"},
		{99, "p99 12.0 ms (the slowest of 99: too few for a p99)"},
		{100, "p99 12.0 ms"},
		{200, "p99 12.0 ms"},
	} {
		name := "tenant of 1,000 sessions → 10 guards refuse"
		got := targetOf(Config{}, name, report.Row{Scenario: "tenant-wide", Name: name,
			Summary: stats.Summary{N: tc.n, P50: 2 * time.Millisecond, P99: 12 * time.Millisecond, Max: 12 * time.Millisecond}})
		if got == nil || got.Got != tc.want || got.Met {
			t.Errorf("%d logouts: target %+v, want got %q, not met", tc.n, got, tc.want)
		}
	}
}

// TestMemoryTargetSaysASmallerRun: memory per entry measured on fewer
// entries than the target's 1,000,000 is marked as such, as the other
// size-bound targets are.
func TestMemoryTargetSaysASmallerRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		entries int
		want    string
	}{
		{10_000, "176.1 B (a smaller run: 10,000)"},
		{1_000_000, "176.1 B"},
	} {
		got := targetOf(Config{ColdEntries: tc.entries}, "memory per revocation entry", report.Row{Scenario: "cold start",
			Name:    "new guard loads " + report.Num(float64(tc.entries)) + " entries → ready, from its tenant's snapshot",
			Summary: stats.Summary{N: 1, P50: time.Millisecond, P99: time.Millisecond, Max: time.Millisecond},
			Extra:   []report.Metric{{Name: "heap per revocation entry (whole guard)", Value: 176.1, Unit: "B"}}})
		if got == nil || got.Got != tc.want || got.Met {
			t.Errorf("%d entries: target %+v, want got %q, not met", tc.entries, got, tc.want)
		}
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
