package evictd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/evict-dev/evict/internal/evictd"
	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/pkg/client"
	"github.com/evict-dev/evict/services/push/provider"
)

// BenchmarkTenantListing lists the live sessions of a tenant holding
// 1,000,000 of them (inserted directly, then ANALYZEd) through the HTTP API:
// the first page, a page deep in the cursor walk, a user-prefix search and
// a client filter, each with its capped total.
func BenchmarkTenantListing(b *testing.B) {
	// One credential sends every request, thousands a second: the
	// per-credential limit (50 a second by default) would measure itself.
	bb := setupTB(b, 0, func(c *evictd.Config) { c.RateLimit, c.RateBurst = 1e9, 1<<30 })
	ctx := context.Background()
	if _, err := bb.api.CreateTenant(ctx, "big"); err != nil {
		b.Fatal(err)
	}
	pool := testenv.Pool(b, bb.dbURL)
	const n = 1_000_000
	if _, err := pool.Exec(ctx, `INSERT INTO sessions (tenant_id, session_id, user_id, client, issued_at, last_seen_at, holder)
		SELECT 'big', 's' || i, 'user-' || (i % 250000), (ARRAY['web','mobile','workflow'])[1 + i % 3],
		       now() - interval '1 hour', now() - (i || ' milliseconds')::interval, 'holder-' || (i % 20)
		FROM generate_series(1, $1) AS i`, n); err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "ANALYZE sessions"); err != nil {
		b.Fatal(err)
	}
	var cursor struct {
		NextCursor string `json:"next_cursor"`
	}
	deep := "/v1/tenants/big/sessions?limit=500"
	for i := 0; i < 20; i++ { // 10,000 sessions in
		if err := bb.api.Do(ctx, http.MethodGet, deep, nil, &cursor); err != nil {
			b.Fatal(err)
		}
		deep = "/v1/tenants/big/sessions?limit=500&cursor=" + cursor.NextCursor
	}
	for _, c := range []struct{ name, path string }{
		{"first-page", "/v1/tenants/big/sessions?limit=50"},
		{"deep-page", strings.Replace(deep, "limit=500", "limit=50", 1)},
		{"user-prefix", "/v1/tenants/big/sessions?q=user-1234&limit=50"},
		{"client-filter", "/v1/tenants/big/sessions?client=mobile&limit=50"},
		{"one-user", "/v1/tenants/big/users/user-77/sessions"},
	} {
		b.Run(c.name, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				start := time.Now()
				var page struct {
					Items []json.RawMessage `json:"items"`
				}
				if err := bb.api.Do(ctx, http.MethodGet, c.path, nil, &page); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
				if len(page.Items) == 0 {
					b.Fatal("empty page")
				}
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// BenchmarkTenantPush logs out a tenant of 5,000 mobile devices and waits
// until every push is accepted by a local HTTP/2 APNs server (in-process
// notifier, 32 workers). It reports pushes per second and the latency from
// the revocation's commit to the provider's acceptance (p50, p99), as
// recorded per delivery.
func BenchmarkTenantPush(b *testing.B) {
	const devices = 5000
	apnsSrv := newFakeAPNs(b, "")
	dbURL := testenv.Database(b)
	d, _ := startDaemon(b, dbURL, "", func(c *evictd.Config) {
		c.PushSenders = map[string]provider.Sender{"apns": apnsSrv.sender(b)}
	})
	api := client.New("http://"+d.HTTPAddr, token, nil)
	ctx := context.Background()
	pool := testenv.Pool(b, dbURL)
	var rates, p50s, p99s []float64
	for i := 0; b.Loop(); i++ {
		tenant := fmt.Sprintf("field%d", i)
		if _, err := api.CreateTenant(ctx, tenant); err != nil {
			b.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `INSERT INTO sessions (tenant_id, session_id, user_id, client, issued_at, push_provider, push_token)
			SELECT $1, 'm' || i, 'tech-' || i, 'mobile', now() - interval '1 minute', 'apns', $1 || '-token-' || i
			FROM generate_series(1, $2) AS i`, tenant, devices); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		acc, err := api.LogoutTenant(ctx, tenant, "")
		if err != nil {
			b.Fatal(err)
		}
		testenv.Eventually(b, "all pushed", func() bool {
			var n int
			_ = pool.QueryRow(ctx, "SELECT count(*) FROM push_deliveries WHERE operation_id = $1 AND status = 'pushed'", acc.OperationID).Scan(&n)
			return n == devices
		})
		var last time.Time
		var p50, p99 float64
		if err := pool.QueryRow(ctx, `SELECT max(pushed_at),
				percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM pushed_at - event_time)),
				percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM pushed_at - event_time))
			FROM push_deliveries WHERE operation_id = $1`, acc.OperationID).Scan(&last, &p50, &p99); err != nil {
			b.Fatal(err)
		}
		rates = append(rates, devices/last.Sub(start).Seconds())
		p50s, p99s = append(p50s, p50*1000), append(p99s, p99*1000)
	}
	slices.Sort(rates)
	slices.Sort(p50s)
	slices.Sort(p99s)
	b.ReportMetric(rates[len(rates)/2], "pushes/s")
	b.ReportMetric(p50s[len(p50s)/2], "event-to-push-p50-ms")
	b.ReportMetric(p99s[len(p99s)/2], "event-to-push-p99-ms")
}
