package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiter is a token bucket per credential, so that one runaway script
// cannot starve the portals of other tenants.
type limiter struct {
	mu      sync.Mutex
	every   rate.Limit
	burst   int
	buckets map[string]*rate.Limiter
}

func newLimiter(perSecond float64, burst int) limiter {
	if perSecond <= 0 {
		perSecond = 50
	}
	if burst <= 0 {
		burst = 200
	}
	return limiter{every: rate.Limit(perSecond), burst: burst, buckets: map[string]*rate.Limiter{}}
}

// maxBuckets bounds the memory of a limiter keyed by something a client
// chooses (its address): past it the buckets start over, full.
const maxBuckets = 100_000

func (l *limiter) bucket(key string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= maxBuckets {
			clear(l.buckets)
		}
		b = rate.NewLimiter(l.every, l.burst)
		l.buckets[key] = b
	}
	return b
}

// allow takes a token for the key (a credential, or a client address), or
// says how long to wait.
func (l *limiter) allow(key string) (time.Duration, bool) {
	r := l.bucket(key).Reserve()
	if d := r.Delay(); d > 0 {
		r.Cancel()
		return d, false
	}
	return 0, true
}

// suppressedFailures counts, per client address, the failed
// authentications answered 429 without an audit row of their own.
type suppressedFailures struct {
	mu sync.Mutex
	n  map[string]int
}

func (f *suppressedFailures) add(addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == nil {
		f.n = map[string]int{}
	}
	f.n[addr]++
}

func (f *suppressedFailures) take() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.n
	f.n = nil
	return n
}

// auditSuppressed writes, every second and once more when ctx ends, one
// "denied" audit row per address whose failures were rate-limited, with
// their count: every refused request is in the audit log, a flood as a few
// rows instead of one per request.
func (s *Server) auditSuppressed(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.flushSuppressed(ctx)
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			s.flushSuppressed(fctx)
			return
		}
	}
}

func (s *Server) flushSuppressed(ctx context.Context) {
	for addr, n := range s.suppressed.take() {
		detail, _ := json.Marshal(map[string]any{"status": http.StatusTooManyRequests, "count": n,
			"why": "failed authentications from this address beyond its burst (EVICT_AUTH_FAILURE_BURST), counted"})
		if _, err := s.pool.Exec(ctx, `INSERT INTO audit_log (tenant_id, actor, source_ip, action, detail) VALUES ('-', 'anonymous', $1, 'denied', $2)`,
			addr, detail); err != nil {
			s.log.WarnContext(ctx, "audit of rate-limited failures failed", "address", addr, "count", n, "err", err)
		}
	}
}
