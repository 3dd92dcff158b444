// Command evictd runs evict: the admin API, the outbox relay and, unless
// EVICT_NATS_URL points elsewhere, an embedded NATS server with JetStream.
// See internal/evictd.ConfigFromEnv for its environment variables.
//
// "evictd keys create|list|revoke" manages admin API keys instead (run
// "evictd keys" for the usage).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/evict-dev/evict/internal/evictd"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "evictd:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) > 1 && os.Args[1] == "keys" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return runKeys(ctx, os.Args[2:], os.Stdout)
	}
	cfg, err := evictd.ConfigFromEnv()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d, err := evictd.Start(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "evictd: admin API  %s://%s  (OpenAPI at /v1/openapi.json, metrics at /metrics)\n", d.HTTPScheme, d.HTTPAddr)
	fmt.Fprintf(os.Stderr, "evictd: NATS       %s\n", evictd.RedactURL(d.NATSURL))
	if d.GuardPasswordFile != "" {
		fmt.Fprintf(os.Stderr, "evictd: NATS users guard (session holders; password in %s), notifier (evict-push) and evictd; tenant-scoped guards: evictd keys create --role guard\n", d.GuardPasswordFile)
	}
	if d.TokenFile != "" {
		fmt.Fprintf(os.Stderr, "evictd: admin token %s  (stored in %s)\n", d.AdminToken, d.TokenFile)
	}
	return d.Wait()
}
