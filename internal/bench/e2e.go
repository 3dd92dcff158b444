package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/evict-dev/evict/internal/bench/report"
	"github.com/evict-dev/evict/internal/bench/stats"
)

// endToEnd measures, for each fleet size, the time from an admin command
// (POST …/users/{u}/logout) to the moment every guard refuses the user's
// session: at a steady rate, then in a burst of commands all due at once.
// Each user has one registered session, held by one of the guards.
func (e *env) endToEnd(ctx context.Context, rep *report.Report) error {
	for _, n := range e.cfg.Guards {
		if err := e.growFleet(ctx, n); err != nil {
			return err
		}
		e.stopFleet(n)
		steady, warmup := e.cfg.steadyOps()
		for _, mode := range []struct {
			name   string
			n      int
			rate   float64
			warmup time.Duration
		}{
			{fmt.Sprintf("steady %s/s", report.Num(e.cfg.Rate)), steady, e.cfg.Rate, warmup},
			{fmt.Sprintf("burst of %s", report.Num(float64(e.cfg.Burst))), e.cfg.Burst, 0, 0},
		} {
			tenant := fmt.Sprintf("e2e-%d-%d", n, mode.n)
			if mode.rate == 0 {
				tenant += "-burst"
			}
			res, err := e.logoutLoad(ctx, tenant, mode.n, mode.rate, mode.warmup, len(e.fleet), nil, nil)
			if err != nil {
				return fmt.Errorf("bench: end to end, %d guards, %s: %w", n, mode.name, err)
			}
			name := fmt.Sprintf("API → %d guards refuse, %s", n, mode.name)
			if mode.rate > 0 {
				name = steadyName(n, mode.rate)
			}
			rep.Add(report.Row{Scenario: "end to end", Name: name, Summary: res.sum, Floor: floorChain(n), Extra: stages(res)})
			if mode.rate > 0 {
				rep.Curves = append(rep.Curves, curve(fmt.Sprintf("evict: API → %d guards refuse, %s", n, mode.name), res))
			}
		}
	}
	return nil
}

// logoutLoad logs out users u0 … u(n-1), one session each, one command
// each, open loop at rate (0: a burst), until want guards refuse each (only
// that guard, when only is set); sent, when set, runs once every command
// has been answered (see load.sent). The users are spread round-robin over
// Tenants tenants named base-0, base-1, ….
func (e *env) logoutLoad(ctx context.Context, base string, n int, rate float64, warmup time.Duration, want int, only *benchGuard,
	sent func()) (result, error) {
	tenants := e.spread(base, n)
	tn := len(tenants)
	for k := range tenants {
		if err := e.addSessions(ctx, tenants[k], "u", (n-k+tn-1)/tn, 1, k, tn); err != nil {
			return result{}, err
		}
	}
	t := newTracker(base, want, e.issued, tenants...)
	t.only = only
	return e.run(ctx, load{t: t, n: n, rate: rate, warmup: warmup, key: func(i int) string { return "u" + itoa(i) },
		send: func(ctx context.Context, i int, _ time.Time) error {
			_, err := e.api.LogoutUser(ctx, tenants[i%tn], "u"+itoa(i), "")
			return err
		},
		sent: sent})
}

// spread names the tenants that n commands of logoutLoad(base) go to.
func (e *env) spread(base string, n int) []string {
	tenants := make([]string, max(1, min(e.cfg.Tenants, n)))
	for k := range tenants {
		tenants[k] = base + "-" + itoa(k)
	}
	return tenants
}

// steadyName names the end-to-end row of n guards at rate.
func steadyName(n int, rate float64) string {
	return fmt.Sprintf("API → %d guards refuse, steady %s/s", n, report.Num(rate))
}

func curve(name string, res result) report.Curve {
	return report.Curve{Name: name, Points: stats.CDF(res.lat, 200)}
}

// stages tells where an end-to-end latency went: the part until the API
// answered (the command committed), and how late the load started each
// command, a part of every figure that the system did not cause (it is
// the cores being busy, or the pacing thread's wake-up).
func stages(res result) []report.Metric {
	return append([]report.Metric{
		{Name: "API answered (202) p50", Value: us(res.answered.P50), Unit: "µs"},
		{Name: "API answered (202) p99", Value: us(res.answered.P99), Unit: "µs"},
		{Name: "command started late p50", Value: us(res.late.P50), Unit: "µs"},
		{Name: "command started late p99", Value: us(res.late.P99), Unit: "µs"},
	}, res.cpu.metrics(res.cpuOps, res.cpuFor)...)
}

func us(d time.Duration) float64 {
	return float64(d.Round(time.Microsecond)) / float64(time.Microsecond)
}
