package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/bus"
	"github.com/evict-dev/evict/internal/db"
	"github.com/evict-dev/evict/internal/evictd"
	"github.com/evict-dev/evict/pkg/client"
	"github.com/evict-dev/evict/pkg/guard"
)

// env is what every scenario runs against: evictd (admin API, relay,
// registry, embedded NATS) in a process of its own or in this one, on a
// database of its own, the guards, and a second, bare NATS server for the
// floor.
type env struct {
	cfg     Config
	log     *slog.Logger
	dir     string
	dbName  string
	d       *daemon
	api     *client.Client
	pool    *pgxpool.Pool
	svc     *nats.Conn // evictd's credentials: publishes state directly
	js      jetstream.JetStream
	floorNS *server.Server

	// fleet are the guards running now, in start order.
	fleet []*benchGuard
	// track receives every revocation the guards apply; nil ignores them.
	track atomic.Pointer[tracker]
	// issued is when every session the scenarios create was issued: before
	// any watermark, so a revocation must refuse them.
	issued time.Time
	// runs counts the open-loop runs, to name their files in OpsDir.
	runs int
}

// adminURL is the maintenance database the bench creates its own from.
func adminURL() string {
	return evictd.Env("EVICT_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
}

func startEnv(ctx context.Context, cfg Config) (_ *env, err error) {
	e := &env{cfg: cfg, log: cfg.Logger, dbName: fmt.Sprintf("evict_bench_%d", os.Getpid()),
		issued: time.Now().Add(-time.Hour).Truncate(time.Microsecond)}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if e.dir, err = os.MkdirTemp("", "evict-bench-"); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if err := e.execAdmin(ctx, "DROP DATABASE IF EXISTS "+e.dbName+" WITH (FORCE)"); err != nil {
		return nil, err
	}
	pc, err := pgx.ParseConfig(adminURL())
	if err != nil {
		return nil, fmt.Errorf("bench: EVICT_BENCH_DATABASE_URL: %w", err)
	}
	dbURL := fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable&pool_max_conns=32", pc.User, pc.Host, pc.Port, e.dbName)
	token := make([]byte, 24)
	_, _ = rand.Read(token)
	spec := daemonSpec{DataDir: filepath.Join(e.dir, "evictd"), DatabaseURL: dbURL, AdminToken: "evt_" + hex.EncodeToString(token),
		LogLevel: cfg.LogLevel, CPUProfile: cfg.EvictdCPUProfile, MemProfile: cfg.EvictdMemProfile}
	if e.d, err = startDaemon(ctx, cfg, spec); err != nil {
		return nil, err
	}
	// One HTTP connection per command in flight, kept alive: the default
	// transport keeps two idle connections, and a burst would then measure
	// TCP handshakes.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 4096, 4096
	e.api = client.New("http://"+e.d.HTTPAddr, e.d.AdminToken, &http.Client{Transport: tr, Timeout: 5 * time.Minute})
	pcfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	pcfg.MaxConns = 16
	if e.pool, err = db.NewPool(ctx, pcfg); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if e.svc, err = nats.Connect(e.d.ServiceNATSURL, nats.Name("evict-bench")); err != nil {
		return nil, fmt.Errorf("bench: connect to NATS: %w", err)
	}
	if e.js, err = jetstream.New(e.svc, jetstream.WithPublishAsyncMaxPending(8192)); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	// The floor's server is started by the same code as evictd's embedded
	// one, without credentials: the bench needs a stream and a KV bucket
	// of its own, which neither of evictd's NATS users may create.
	if e.floorNS, err = bus.StartEmbedded(bus.EmbeddedConfig{Listen: "127.0.0.1:0", StoreDir: filepath.Join(e.dir, "floor"), Name: "floor"}); err != nil {
		return nil, err
	}
	return e, nil
}

// close stops everything and drops the database.
func (e *env) close() {
	e.stopFleet(0)
	if e.svc != nil {
		e.svc.Close()
	}
	if e.pool != nil {
		e.pool.Close()
	}
	if e.d != nil {
		if err := e.d.stop(); err != nil {
			e.log.Warn("evictd shutdown", "err", err)
		}
	}
	if e.floorNS != nil {
		e.floorNS.Shutdown()
		e.floorNS.WaitForShutdown()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.execAdmin(ctx, "DROP DATABASE IF EXISTS "+e.dbName+" WITH (FORCE)"); err != nil {
		e.log.Warn("drop bench database", "err", err)
	}
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
}

func (e *env) execAdmin(ctx context.Context, sql string) error {
	c, err := pgx.Connect(ctx, adminURL())
	if err != nil {
		return fmt.Errorf("bench: PostgreSQL at %s: %w", evictd.RedactURL(adminURL()), err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql); err != nil {
		return fmt.Errorf("bench: %s: %w", sql, err)
	}
	return nil
}

// benchGuard is a guard instance with its own NATS connection.
type benchGuard struct {
	*guard.Guard
	e      *env
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
	cursor cursor // in the current tracker, for its OnRevocation hook
}

// startGuard starts a guard on url (evictd's NATS, or a proxy to it) and
// waits until it is ready. Of cfg, only Tenants and NoSnapshot are used.
func (e *env) startGuard(ctx context.Context, name, url string, cfg guard.Config) (*benchGuard, time.Duration, error) {
	start := time.Now()
	nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.ReconnectJitter(0, 0))
	if err != nil {
		return nil, 0, fmt.Errorf("bench: guard %s: connect: %w", name, err)
	}
	bg := &benchGuard{e: e, nc: nc, done: make(chan error, 1)}
	g, err := guard.New(guard.Config{Conn: nc, Instance: name, Tenants: cfg.Tenants, NoSnapshot: cfg.NoSnapshot,
		Logger: e.log, OnRevocation: bg.applied})
	if err != nil {
		nc.Close()
		return nil, 0, err
	}
	bg.Guard = g
	gctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	bg.cancel = cancel
	go func() { bg.done <- g.Run(gctx) }()
	select {
	case <-g.Ready():
		return bg, time.Since(start), nil
	case err := <-bg.done:
		cancel()
		nc.Close()
		return nil, 0, fmt.Errorf("bench: guard %s stopped before ready: %w", name, err)
	case <-time.After(5 * time.Minute):
		bg.stop()
		return nil, 0, fmt.Errorf("bench: guard %s not ready after 5m", name)
	case <-ctx.Done():
		bg.stop()
		return nil, 0, ctx.Err()
	}
}

func (bg *benchGuard) stop() {
	bg.cancel()
	if err := <-bg.done; err != nil {
		bg.e.log.Warn("guard stopped", "guard", bg.Instance(), "err", err)
	}
	bg.nc.Close()
}

// applied is every bench guard's OnRevocation hook.
func (bg *benchGuard) applied(r events.Revocation) {
	if t := bg.e.track.Load(); t != nil {
		t.arrive(bg, r)
	}
}

// growFleet starts guards until n run.
func (e *env) growFleet(ctx context.Context, n int) error {
	for len(e.fleet) < n {
		bg, _, err := e.startGuard(ctx, fmt.Sprintf("bench-guard-%02d", len(e.fleet)), e.d.NATSURL, guard.Config{})
		if err != nil {
			return err
		}
		e.fleet = append(e.fleet, bg)
	}
	return nil
}

// stopFleet stops guards until n run.
func (e *env) stopFleet(n int) {
	for len(e.fleet) > n {
		last := e.fleet[len(e.fleet)-1]
		e.fleet = e.fleet[:len(e.fleet)-1]
		last.stop()
	}
}

// holders returns the instance names of the fleet, to register sessions with.
func (e *env) holders() []string {
	out := make([]string, len(e.fleet))
	for i, g := range e.fleet {
		out[i] = g.Instance()
	}
	return out
}

// addSessions inserts sessions straight into PostgreSQL, as registration
// would leave them (registration through the API runs at about a thousand
// a second; a million would take a quarter of an hour): perUser sessions
// for each of users users, numbered from first in steps of step (user
// prefix<first>, prefix<first+step>, …), held by the fleet in turn.
func (e *env) addSessions(ctx context.Context, tenant, prefix string, users, perUser, first, step int) error {
	if _, err := e.api.CreateTenant(ctx, tenant); err != nil {
		return fmt.Errorf("bench: create tenant %s: %w", tenant, err)
	}
	if users == 0 {
		return nil
	}
	holders := e.holders()
	if len(holders) == 0 {
		holders = []string{"nobody"}
	}
	_, err := e.pool.Exec(ctx, `INSERT INTO sessions (tenant_id, session_id, user_id, client, issued_at, last_seen_at, holder)
		SELECT $1, $2 || ($7 + u * $8) || '-' || k, $2 || ($7 + u * $8), 'web', $3, $3,
		       ($4::text[])[1 + (u * $5 + k) % cardinality($4::text[])]
		FROM generate_series(0, $6 - 1) AS u, generate_series(0, $5 - 1) AS k`,
		tenant, prefix, e.issued, holders, perUser, users, first, step)
	if err != nil {
		return fmt.Errorf("bench: insert sessions of %s: %w", tenant, err)
	}
	if _, err := e.pool.Exec(ctx, "ANALYZE sessions"); err != nil {
		return fmt.Errorf("bench: analyze: %w", err)
	}
	return nil
}

var errIncomplete = errors.New("bench: not every operation completed")
