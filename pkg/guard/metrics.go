package guard

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	applied     prometheus.Counter
	staleChecks stripedCounter // read by evict_guard_stale_checks_total
	rejected    *prometheus.CounterVec
	propagation prometheus.Histogram
	snapshot    prometheus.Gauge
}

func newMetrics(g *Guard, reg prometheus.Registerer) *metrics {
	m := &metrics{
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "evict_guard_applied_total", Help: "State messages applied (revocations and heartbeats)."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evict_guard_rejected_total", Help: "Requests refused by the middleware, by reason (revoked, stale)."}, []string{"reason"}),
		propagation: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "evict_guard_propagation_seconds",
			Help:    "Time from a revocation's commit in evict to its application in this guard.",
			Buckets: []float64{.0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 5},
		}),
		snapshot: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "evict_guard_snapshot_entries",
			Help: "Entries loaded from evict's snapshot at start; 0 when the guard read the whole stream."}),
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.applied, m.rejected, m.propagation, m.snapshot,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "evict_guard_stale_checks_total", Help: "Checks let through on a stale state under FailOpen.",
		}, func() float64 { return float64(m.staleChecks.load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "evict_guard_state_age_seconds",
			Help: "Time since the last relay heartbeat applied: revocations committed before it are enforced.",
		}, func() float64 { return g.StateAge().Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "evict_guard_entries", Help: "Revocation entries held in memory.",
		}, func() float64 { return float64(g.Entries()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "evict_guard_applied_sequence", Help: "EVICT_STATE stream sequence of the last message applied.",
		}, func() float64 { return float64(g.AppliedSequence()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "evict_guard_stale", Help: "1 while the state is stale (not loaded, or no heartbeat within MaxStaleness).",
		}, func() float64 {
			if g.stale.Load() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "evict_guard_ready", Help: "1 once the initial state is loaded.",
		}, func() float64 {
			if g.isReady.Load() {
				return 1
			}
			return 0
		}),
	)
	return m
}
