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
			res, err := e.logoutLoad(ctx, tenant, mode.n, mode.rate, mode.warmup, len(e.fleet), nil)
			if err != nil {
				return fmt.Errorf("bench: end to end, %d guards, %s: %w", n, mode.name, err)
			}
			name := fmt.Sprintf("API → %d guards refuse, %s", n, mode.name)
			if mode.rate > 0 {
				name = steadyName(n, mode.rate)
			}
			rep.Add(report.Row{Scenario: "end to end", Name: name, Summary: res.sum, Floor: floorChain(n)})
			if mode.rate > 0 {
				rep.Curves = append(rep.Curves, curve(fmt.Sprintf("evict: API → %d guards refuse, %s", n, mode.name), res))
			}
		}
	}
	return nil
}

// logoutLoad creates tenant with users u0 … u(n-1), one session each, and
// logs them out one command each, open loop at rate (0: a burst), until
// want guards refuse each (only that guard, when only is set).
func (e *env) logoutLoad(ctx context.Context, tenant string, n int, rate float64, warmup time.Duration, want int, only *benchGuard) (result, error) {
	if err := e.addSessions(ctx, tenant, "u", n, 1); err != nil {
		return result{}, err
	}
	t := newTracker(tenant, want, e.issued)
	t.only = only
	return e.run(ctx, load{t: t, n: n, rate: rate, warmup: warmup, key: func(i int) string { return "u" + itoa(i) },
		send: func(ctx context.Context, i int, _ time.Time) error {
			_, err := e.api.LogoutUser(ctx, tenant, "u"+itoa(i), "")
			return err
		}})
}

// steadyName names the end-to-end row of n guards at rate.
func steadyName(n int, rate float64) string {
	return fmt.Sprintf("API → %d guards refuse, steady %s/s", n, report.Num(rate))
}

func curve(name string, res result) report.Curve {
	return report.Curve{Name: name, Points: stats.CDF(res.lat, 200)}
}
