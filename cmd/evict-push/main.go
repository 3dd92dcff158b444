// Command evict-push runs the mobile push notifier on its own, to scale
// pushes out beyond the notifier evictd runs. Replicas share one durable
// JetStream consumer and claim deliveries from PostgreSQL, so any number
// can run at once.
//
// SIGTERM or SIGINT stops it cleanly: it claims nothing more, finishes and
// records the pushes it is sending, releases the rest of what it claimed to
// the other replicas, and exits 0. A replica stopped this way causes no push
// to be sent twice; one killed (SIGKILL) may cause the pushes it had in
// flight, at most one per worker, to be sent again (docs/push.md).
//
// Environment:
//
//	EVICT_NATS_URL       NATS of evictd (required): with evictd's embedded NATS,
//	                     nats://notifier:<password in EVICT_DATA_DIR/nats-notifier-password>@host:4322
//	DATABASE_URL         evictd's PostgreSQL; default postgres://postgres@127.0.0.1:5432/evict
//	EVICT_HTTP_ADDR      /metrics, /healthz; default 127.0.0.1:7422
//	EVICT_INSTANCE       replica name in leases; default host-pid
//	EVICT_PUSH_WORKERS   concurrent sends; default 32
//	EVICT_PUSH_LEASE     how long a claimed delivery is this replica's (a send gets a third); default 30s
//	EVICT_APNS_*, EVICT_FCM_*, EVICT_WEBHOOK_*  providers, as for evictd (docs/push.md)
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/evict-dev/evict/internal/bus"
	"github.com/evict-dev/evict/internal/db"
	"github.com/evict-dev/evict/internal/evictd"
	"github.com/evict-dev/evict/services/notifier"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "evict-push:", err)
		os.Exit(1)
	}
}

func run() error {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	natsURL := os.Getenv("EVICT_NATS_URL")
	if natsURL == "" {
		return errors.New("EVICT_NATS_URL is required: the NATS server or cluster evictd uses")
	}
	workers, err := strconv.Atoi(evictd.Env("EVICT_PUSH_WORKERS", "32"))
	if err != nil || workers < 1 {
		return fmt.Errorf("EVICT_PUSH_WORKERS: want a positive number, got %q", os.Getenv("EVICT_PUSH_WORKERS"))
	}
	lease, err := time.ParseDuration(evictd.Env("EVICT_PUSH_LEASE", "30s"))
	if err != nil || lease <= 0 {
		return fmt.Errorf("EVICT_PUSH_LEASE: want a positive duration, got %q", os.Getenv("EVICT_PUSH_LEASE"))
	}
	senders, err := evictd.PushSendersFromEnv(log)
	if err != nil {
		return err
	}
	if len(senders) == 0 {
		return errors.New("no push provider configured: set EVICT_APNS_*, EVICT_FCM_* or EVICT_WEBHOOK_* (docs/push.md)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	pool, err := db.Open(ctx, evictd.Env("DATABASE_URL", db.DefaultURL))
	if err != nil {
		return err
	}
	defer pool.Close()
	// Replies on the notifier's own inbox prefix: the only one the notifier
	// user of evictd's NATS (and deploy/nats/accounts.conf) may read.
	nc, err := nats.Connect(natsURL, nats.Name("evict-push"), nats.MaxReconnects(-1), nats.CustomInboxPrefix(bus.NotifierInbox),
		bus.LogAsyncErrors(log))
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", evictd.RedactURL(natsURL), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	n, err := notifier.New(notifier.Config{Pool: pool, JetStream: js, Senders: senders, Instance: os.Getenv("EVICT_INSTANCE"),
		Workers: workers, Lease: lease, Registerer: reg, Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", evictd.Env("EVICT_HTTP_ADDR", "127.0.0.1:7422"))
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, `{"status":"ok"}`) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	fmt.Fprintf(os.Stderr, "evict-push: notifier running (metrics http://%s/metrics, NATS %s)\n", ln.Addr(), evictd.RedactURL(natsURL))
	return n.Run(ctx)
}
