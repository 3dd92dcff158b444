// Package testenv gives tests real dependencies: an embedded NATS server on
// a random port, a fresh PostgreSQL database cloned from a migrated
// template, and a TCP proxy that can cut a client off. A missing PostgreSQL
// fails the test; nothing is skipped.
package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evict-dev/evict/internal/db"
)

// PostgresURL returns the server tests use: $EVICT_TEST_DATABASE_URL or the
// local server. The database part is ignored.
func PostgresURL() string {
	if u := os.Getenv("EVICT_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// NATS starts an embedded NATS server with JetStream on a random port and
// returns it; it is shut down when the test ends.
func NATS(t testing.TB) *server.Server {
	t.Helper()
	return NATSWith(t, t.TempDir(), server.RANDOM_PORT)
}

// NATSWith starts an embedded server on port with its store in dir, so a
// test can stop it and start it again on the same port and store.
func NATSWith(t testing.TB, dir string, port int) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true,
	})
	if err != nil {
		t.Fatalf("testenv: nats server: %v", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("testenv: nats server not ready")
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

var (
	templateOnce sync.Once
	templateName string
	templateErr  error
)

// Database creates a fresh database with evict's schema and returns its URL.
// It is dropped when the test ends.
func Database(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	templateOnce.Do(func() { templateName, templateErr = ensureTemplate(ctx) })
	if templateErr != nil {
		t.Fatalf("testenv: PostgreSQL at %s is required: %v", PostgresURL(), templateErr)
	}
	admin := connect(t, ctx)
	defer admin.Close(ctx)
	name := fmt.Sprintf("evict_test_%d_%d", os.Getpid(), time.Now().UnixNano())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE "+templateName); err != nil {
		t.Fatalf("testenv: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c := connect(t, ctx)
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("testenv: drop database %s: %v", name, err)
		}
	})
	cfg, _ := pgx.ParseConfig(PostgresURL())
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, name)
}

// Pool opens a pool on url, closed when the test ends.
func Pool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("testenv: pool: %v", err)
	}
	pool, err := db.NewPool(context.Background(), cfg)
	if err != nil {
		t.Fatalf("testenv: pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func connect(t testing.TB, ctx context.Context) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctx, PostgresURL())
	if err != nil {
		t.Fatalf("testenv: PostgreSQL at %s is required: %v", PostgresURL(), err)
	}
	return c
}

// ensureTemplate creates, once per schema version, a migrated template
// database named after a hash of the migrations, under an advisory lock
// shared by every test process.
func ensureTemplate(ctx context.Context) (string, error) {
	h := sha256.New()
	err := fs.WalkDir(db.Migrations, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := db.Migrations.ReadFile(path)
		h.Write([]byte(path))
		h.Write(b)
		return err
	})
	if err != nil {
		return "", err
	}
	name := "evict_tpl_" + hex.EncodeToString(h.Sum(nil))[:12]
	conn, err := pgx.Connect(ctx, PostgresURL())
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(4242)"); err != nil {
		return "", err
	}
	defer conn.Exec(ctx, "SELECT pg_advisory_unlock(4242)") //nolint:errcheck
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}
	tmp := name + "_build"
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+tmp+" WITH (FORCE)"); err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+tmp); err != nil {
		return "", err
	}
	cfg, _ := pgx.ParseConfig(PostgresURL())
	url := fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, tmp)
	pool, err := db.Open(ctx, url)
	if err != nil {
		return "", err
	}
	pool.Close()
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+tmp+" RENAME TO "+name); err != nil {
		return "", err
	}
	return name, nil
}

// JetStream connects to the NATS server at url, with opts, and returns its
// JetStream; the connection is closed when the test ends.
func JetStream(t testing.TB, url string, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("testenv: connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("testenv: JetStream: %v", err)
	}
	return js
}

// Metric is the value of the counter or gauge name in reg, summed over its
// series; the test fails when reg has no such metric.
func Metric(t testing.TB, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("testenv: gather metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var v float64
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return v
	}
	t.Fatalf("testenv: no metric %s", name)
	return 0
}
