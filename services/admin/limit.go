package admin

import (
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

// allow takes a token for the credential, or says how long to wait.
func (l *limiter) allow(credential string) (time.Duration, bool) {
	l.mu.Lock()
	b := l.buckets[credential]
	if b == nil {
		b = rate.NewLimiter(l.every, l.burst)
		l.buckets[credential] = b
	}
	l.mu.Unlock()
	r := b.Reserve()
	if d := r.Delay(); d > 0 {
		r.Cancel()
		return d, false
	}
	return 0, true
}
