// Command evict-demo is a small web backend protected by pkg/guard. Run it
// against evictd to watch a session flip from 200 to 401 when its user is
// removed from a group.
//
// Environment (flags of the same meaning override):
//
//	EVICT_NATS_URL     NATS of evictd; default nats://guard:<password in ./evict-data/nats-guard-password>@127.0.0.1:4322
//	EVICT_API_URL      evictd's admin API; default http://127.0.0.1:7420
//	EVICT_ADMIN_TOKEN  bearer token for the admin API; default: read from ./evict-data/admin-token
//	EVICT_DEMO_ADDR    listen address; default 127.0.0.1:7421
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/evict-dev/evict/internal/bus"
	"github.com/evict-dev/evict/internal/demo"
	"github.com/evict-dev/evict/internal/evictd"
	"github.com/evict-dev/evict/pkg/client"
	"github.com/evict-dev/evict/pkg/guard"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "evict-demo:", err)
		os.Exit(1)
	}
}

func run() error {
	natsURL := flag.String("nats", os.Getenv("EVICT_NATS_URL"), "NATS URL of evictd (default: its embedded server, as user guard with the password in ./evict-data/nats-guard-password)")
	apiURL := flag.String("api", evictd.Env("EVICT_API_URL", "http://"+evictd.DefaultHTTPAddr), "evictd admin API URL")
	token := flag.String("token", os.Getenv("EVICT_ADMIN_TOKEN"), "admin API bearer token (default: ./evict-data/admin-token)")
	addr := flag.String("addr", evictd.Env("EVICT_DEMO_ADDR", "127.0.0.1:7421"), "listen address")
	flag.Parse()
	if *token == "" {
		b, err := os.ReadFile(filepath.Join(evictd.DefaultDataDir, "admin-token"))
		if err != nil {
			return fmt.Errorf("no EVICT_ADMIN_TOKEN and no token file: %w", err)
		}
		*token = strings.TrimSpace(string(b))
	}
	if *natsURL == "" {
		b, err := os.ReadFile(filepath.Join(evictd.DefaultDataDir, "nats-guard-password"))
		if err != nil {
			return fmt.Errorf("no EVICT_NATS_URL and no guard password file: %w", err)
		}
		*natsURL = "nats://guard:" + strings.TrimSpace(string(b)) + "@" + evictd.DefaultNATSListen
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	nc, err := nats.Connect(*natsURL, nats.Name("evict-demo"), nats.MaxReconnects(-1), bus.LogAsyncErrors(log))
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", evictd.RedactURL(*natsURL), err)
	}
	defer nc.Close()
	reg := prometheus.NewRegistry()
	g, err := guard.New(guard.Config{Conn: nc, Registerer: reg, Logger: log})
	if err != nil {
		return err
	}
	guardDone := make(chan error, 1)
	go func() { guardDone <- g.Run(ctx) }()

	app := demo.New(client.New(*apiURL, *token, nil), g, log)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", app.Handler())
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Fprintf(os.Stderr, "evict-demo: listening on http://%s (evict API %s, NATS %s)\n", *addr, *apiURL, evictd.RedactURL(*natsURL))
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return <-guardDone
}
