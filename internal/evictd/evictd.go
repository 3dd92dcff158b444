// Package evictd assembles evict's daemon: the admin API, the outbox relay,
// PostgreSQL, and NATS JetStream (embedded by default). cmd/evictd wires it
// to the environment and signals; tests start it in-process.
package evictd

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/evict-dev/evict/internal/bus"
	"github.com/evict-dev/evict/internal/db"
	"github.com/evict-dev/evict/internal/keys"
	"github.com/evict-dev/evict/internal/snapshot"
	"github.com/evict-dev/evict/internal/wake"
	"github.com/evict-dev/evict/services/admin"
	"github.com/evict-dev/evict/services/notifier"
	"github.com/evict-dev/evict/services/registry"
	"github.com/evict-dev/evict/services/relay"
)

// Daemon is a running evictd.
type Daemon struct {
	// HTTPAddr is the address the admin API listens on.
	HTTPAddr string
	// HTTPScheme is "https" when the admin API serves TLS, else "http".
	HTTPScheme string
	// NATSURL is the NATS URL session holders (guards) use: the embedded
	// server's with the guard user's credentials, or EVICT_NATS_URL.
	NATSURL string
	// ServiceNATSURL is the NATS URL of evict's own services (evict-push,
	// tools): the embedded server's with the evictd user, or EVICT_NATS_URL.
	ServiceNATSURL string
	// NotifierNATSURL is the NATS URL of a standalone push notifier
	// (cmd/evict-push): the embedded server's with the notifier user, or
	// EVICT_NATS_URL.
	NotifierNATSURL string
	// GuardPasswordFile holds the embedded server's guard password ("" with
	// an external NATS).
	GuardPasswordFile string
	// AdminToken is the bootstrap bearer token.
	AdminToken string
	// TokenFile is where a generated token is stored ("" when it came from the environment).
	TokenFile string

	log      *slog.Logger
	natsOpts []nats.Option
	pool     *pgxpool.Pool
	ns       *server.Server
	nc       *nats.Conn
	hintNC   *nats.Conn // the wake hub's: NoEcho, so this process does not hear its own hints
	http     *http.Server
	done     chan struct{}
	err      error
	wg       sync.WaitGroup
	stopOnce sync.Once
}

// newOIDC discovers the issuer of cfg.OIDCIssuer, if set. ctx bounds the
// discovery and the later fetches of the issuer's keys: the daemon's.
func newOIDC(ctx context.Context, cfg Config) (*admin.OIDC, error) {
	if cfg.OIDCIssuer == "" {
		return nil, nil
	}
	if cfg.OIDCAudience == "" {
		// Without an audience, a token the issuer minted for any other
		// application would be accepted here.
		return nil, errors.New("evictd: EVICT_OIDC_AUDIENCE is required with EVICT_OIDC_ISSUER")
	}
	p, err := oidc.NewProvider(ctx, cfg.OIDCIssuer)
	if err != nil {
		return nil, fmt.Errorf("evictd: EVICT_OIDC_ISSUER %s: discovery: %w", cfg.OIDCIssuer, err)
	}
	return &admin.OIDC{
		Verifier:     p.Verifier(&oidc.Config{ClientID: cfg.OIDCAudience, SupportedSigningAlgs: admin.SigningAlgs}),
		RoleClaim:    cmp.Or(cfg.OIDCRoleClaim, "evict_role"),
		TenantsClaim: cmp.Or(cfg.OIDCTenantsClaim, "evict_tenants"),
	}, nil
}

// guardKey admits a guard key (role guard) on the embedded NATS server.
func (d *Daemon) guardKey(ctx context.Context, token string) (bus.GuardKey, error) {
	k, err := keys.Lookup(ctx, d.pool, token)
	if err != nil {
		return bus.GuardKey{}, err
	}
	if k.Role != keys.RoleGuard {
		// An admin API key is not a NATS credential, whatever its role.
		return bus.GuardKey{}, fmt.Errorf("evictd: key %s has role %s, not guard", k.ID, k.Role)
	}
	gk := bus.GuardKey{ID: k.ID.String(), Tenants: k.Tenants, AllTenants: k.AllTenants}
	if k.ExpiresAt != nil {
		gk.ExpiresAt = *k.ExpiresAt
	}
	return gk, nil
}

// cutRevokedGuardKeys closes, every 2 seconds, the embedded server's
// connections of guard keys that were revoked or expired since they
// connected: the server checks a key only at connect, and a revoked
// credential must not keep reading.
func (d *Daemon) cutRevokedGuardKeys(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		connz, err := d.ns.Connz(&server.ConnzOptions{Username: true, Limit: 1 << 20})
		if err != nil {
			continue
		}
		byKey := map[string][]uint64{}
		for _, c := range connz.Conns {
			if id, ok := strings.CutPrefix(c.AuthorizedUser, "key:"); ok {
				byKey[id] = append(byKey[id], c.Cid)
			}
		}
		if len(byKey) == 0 {
			continue
		}
		ids := slices.Collect(maps.Keys(byKey))
		rows, err := d.pool.Query(ctx, `SELECT id::text FROM api_keys WHERE id = ANY($1::uuid[])
			AND (revoked_at IS NOT NULL OR expires_at <= clock_timestamp())`, ids)
		if err != nil {
			continue
		}
		gone, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			continue
		}
		for _, id := range gone {
			for _, cid := range byKey[id] {
				if err := d.ns.DisconnectClientByID(cid); err == nil {
					d.log.Info("closed the NATS connection of a revoked guard key", "key", id, "cid", cid)
				}
			}
		}
	}
}

// Start starts evictd and returns once it serves. It stops when ctx ends;
// Wait returns after a clean shutdown.
func Start(ctx context.Context, cfg Config) (*Daemon, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	d := &Daemon{log: log, done: make(chan struct{}), HTTPScheme: "http"}
	ok := false
	defer func() {
		if !ok {
			d.close()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("evictd: data dir: %w", err)
	}
	if err := d.loadToken(cfg); err != nil {
		return nil, err
	}

	var err error
	if d.pool, err = db.Open(ctx, cfg.DatabaseURL); err != nil {
		return nil, err
	}
	warnings, err := db.Warnings(ctx, d.pool)
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		log.WarnContext(ctx, "PostgreSQL is set against evict", "detail", w)
	}

	d.NATSURL, d.ServiceNATSURL, d.NotifierNATSURL = cfg.NATSURL, cfg.NATSURL, cfg.NATSURL
	if d.NATSURL == "" {
		// The embedded server requires credentials: evict's services and
		// session holders get different permissions (a guard may never
		// publish a revocation).
		evictdPW, err := d.secret(cfg.DataDir, "nats-evictd-password", "")
		if err != nil {
			return nil, err
		}
		guardPW, err := d.secret(cfg.DataDir, "nats-guard-password", os.Getenv("EVICT_NATS_GUARD_PASSWORD"))
		if err != nil {
			return nil, err
		}
		notifierPW, err := d.secret(cfg.DataDir, "nats-notifier-password", "")
		if err != nil {
			return nil, err
		}
		d.GuardPasswordFile = filepath.Join(cfg.DataDir, "nats-guard-password")
		ec := bus.EmbeddedConfig{
			Listen:           cfg.NATSListen,
			StoreDir:         filepath.Join(cfg.DataDir, "jetstream"),
			Name:             "evictd",
			EvictdPassword:   evictdPW,
			GuardPassword:    guardPW,
			NotifierPassword: notifierPW,
			GuardKeys:        d.guardKey,
		}
		var natsOpts []nats.Option
		if cfg.NATSTLSCertFile != "" || cfg.NATSTLSKeyFile != "" {
			if ec.TLS, err = loadTLS("EVICT_NATS_TLS_CERT_FILE", cfg.NATSTLSCertFile, "EVICT_NATS_TLS_KEY_FILE", cfg.NATSTLSKeyFile); err != nil {
				return nil, err
			}
			// evictd's own connection trusts the server's certificate.
			roots := x509.NewCertPool()
			roots.AddCert(ec.TLS.Certificates[0].Leaf)
			natsOpts = append(natsOpts, nats.Secure(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}))
		}
		if d.ns, err = bus.StartEmbedded(ec); err != nil {
			return nil, err
		}
		d.natsOpts = natsOpts
		d.NATSURL = withUser(d.ns.ClientURL(), bus.GuardUser, guardPW)
		d.ServiceNATSURL = withUser(d.ns.ClientURL(), bus.EvictdUser, evictdPW)
		d.NotifierNATSURL = withUser(d.ns.ClientURL(), bus.NotifierUser, notifierPW)
	}
	// evictd's connections, as its NATS user: each reconnects for ever
	// and logs what happens to it under its name.
	connect := func(name string, opts ...nats.Option) (*nats.Conn, error) {
		nc, err := nats.Connect(d.ServiceNATSURL, slices.Concat(d.natsOpts, []nats.Option{nats.Name(name), nats.MaxReconnects(-1),
			nats.ReconnectWait(250 * time.Millisecond),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				// nats.go calls it with no error when the connection is
				// closed on purpose, on every shutdown: not a warning.
				if err == nil {
					log.Debug("NATS connection closed", "conn", name)
					return
				}
				log.Warn("NATS disconnected", "conn", name, "err", err)
			}),
			nats.ReconnectHandler(func(nc *nats.Conn) {
				log.Info("NATS reconnected", "conn", name, "url", nc.ConnectedUrlRedacted())
			}),
			bus.LogAsyncErrors(log)}, opts)...)
		if err != nil {
			return nil, fmt.Errorf("evictd: connect to NATS at %s: %w", RedactURL(d.ServiceNATSURL), err)
		}
		return nc, nil
	}
	if d.nc, err = connect("evictd"); err != nil {
		return nil, err
	}
	if d.hintNC, err = connect("evictd-wake", nats.NoEcho()); err != nil {
		return nil, err
	}
	hub := wake.New(log)
	if err := hub.Connect(d.hintNC); err != nil {
		return nil, fmt.Errorf("evictd: %w", err)
	}
	js, err := jetstream.New(d.nc, jetstream.WithPublishAsyncMaxPending(max(4*cfg.RelayBatch, 4096)))
	if err != nil {
		return nil, fmt.Errorf("evictd: %w", err)
	}
	if err := bus.EnsureStreams(ctx, js, bus.StreamConfig{SessionMaxAge: cfg.SessionMaxAge, Replicas: cfg.Replicas}); err != nil {
		return nil, err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rl, err := relay.New(relay.Config{Pool: d.pool, JetStream: js, Instance: cfg.Instance, BatchSize: cfg.RelayBatch,
		HeartbeatInterval: cfg.HeartbeatInterval, Wake: hub,
		Registerer: reg, Logger: log})
	if err != nil {
		return nil, err
	}
	registrySvc, err := registry.New(registry.Config{Pool: d.pool, Conn: d.nc, Liveness: cfg.GuardLiveness, SeenChangeEvery: cfg.SeenChangeEvery,
		Retention: cfg.Retention, TidyInterval: cfg.TidyInterval, Registerer: reg, Logger: log, Wake: hub})
	if err != nil {
		return nil, err
	}
	oidcCfg, err := newOIDC(ctx, cfg)
	if err != nil {
		return nil, err
	}
	api, err := admin.New(admin.Config{OIDC: oidcCfg, Pool: d.pool, AdminToken: d.AdminToken, Registerer: reg, Logger: log, Registry: registrySvc, Wake: hub,
		RateLimit: cfg.RateLimit, Burst: cfg.RateBurst, AuthFailureBurst: cfg.AuthFailureBurst,
		Ready: func(r *http.Request) error {
			if err := d.pool.Ping(r.Context()); err != nil {
				return fmt.Errorf("database: %w", err)
			}
			if !d.nc.IsConnected() {
				return errors.New("NATS: not connected")
			}
			return nil
		}})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("/", api)
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("evictd: listen on %s: %w", cfg.HTTPAddr, err)
	}
	if cfg.TLSCertFile != "" || cfg.TLSKeyFile != "" {
		tc, err := loadTLS("EVICT_TLS_CERT_FILE", cfg.TLSCertFile, "EVICT_TLS_KEY_FILE", cfg.TLSKeyFile)
		if err != nil {
			ln.Close()
			return nil, err
		}
		ln = tls.NewListener(ln, tc)
		d.HTTPScheme = "https"
	}
	d.HTTPAddr = ln.Addr().String()
	d.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: cmp.Or(cfg.ReadHeaderTimeout, 5*time.Second),
		ReadTimeout:       cmp.Or(cfg.ReadTimeout, 30*time.Second),
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	if len(cfg.PushSenders) > 0 {
		nt, err := notifier.New(notifier.Config{Pool: d.pool, JetStream: js, Senders: cfg.PushSenders,
			MaxAttempts: cfg.PushMaxAttempts, RetryBackoff: cfg.PushRetryBackoff,
			Instance: cfg.Instance, Registerer: reg, Logger: log})
		if err != nil {
			stopRelay()
			return nil, err
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if err := nt.Run(relayCtx); err != nil {
				log.Error("push notifier stopped", "err", err)
			}
		}()
	}
	d.wg.Add(5)
	go func() {
		defer d.wg.Done()
		if err := api.ServeNATS(relayCtx, d.nc); err != nil {
			log.Error("session RPC stopped", "err", err)
		}
	}()
	go func() {
		defer d.wg.Done()
		if err := api.Run(relayCtx); err != nil {
			log.Error("session change listener stopped", "err", err)
		}
	}()
	go func() {
		defer d.wg.Done()
		if err := rl.Run(relayCtx); err != nil {
			log.Error("relay stopped", "err", err)
		}
	}()
	go func() {
		defer d.wg.Done()
		if err := registrySvc.Run(relayCtx); err != nil {
			log.Error("registry stopped", "err", err)
		}
	}()
	go func() {
		defer d.wg.Done()
		if err := d.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin API stopped", "err", err)
		}
	}()
	if d.ns != nil {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.cutRevokedGuardKeys(relayCtx)
		}()
	}
	if cfg.SnapshotEvery > 0 {
		sb := &snapshot.Builder{JetStream: js, Every: cfg.SnapshotEvery, Interval: cfg.SnapshotInterval, Logger: log}
		sb.Register(reg)
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if err := sb.Run(relayCtx); err != nil {
				log.Error("snapshot builder stopped", "err", err)
			}
		}()
	}
	go func() {
		<-ctx.Done()
		d.shutdown(stopRelay)
	}()
	ok = true
	log.Info("evictd started", "http", "http://"+d.HTTPAddr, "nats", RedactURL(d.NATSURL), "embedded_nats", d.ns != nil,
		"data_dir", cfg.DataDir)
	return d, nil
}

// shutdown stops taking requests, lets in-flight commands commit, stops the
// relay, and closes NATS and the database. Whatever the relay had not yet
// published stays in the outbox for the next leader.
func (d *Daemon) shutdown(stopRelay context.CancelFunc) {
	d.stopOnce.Do(func() {
		d.log.Info("evictd shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := d.http.Shutdown(sctx); err != nil {
			d.err = fmt.Errorf("evictd: admin API shutdown: %w", err)
		}
		stopRelay()
		d.wg.Wait()
		d.close()
		close(d.done)
	})
}

func (d *Daemon) close() {
	if d.nc != nil {
		// The relay has stopped and waited for its acknowledgements; flush
		// whatever else is buffered and close.
		_ = d.nc.FlushTimeout(2 * time.Second)
		d.nc.Close()
	}
	if d.hintNC != nil {
		d.hintNC.Close()
	}
	if d.ns != nil {
		d.ns.Shutdown()
		d.ns.WaitForShutdown()
	}
	if d.pool != nil {
		d.pool.Close()
	}
}

// Wait blocks until the daemon has shut down.
func (d *Daemon) Wait() error {
	<-d.done
	return d.err
}

// RedactURL hides the password of each URL in a comma-separated list, for
// logs and messages.
func RedactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

// loadTLS reads a certificate and key, naming the variables in its errors
// so that a bad file is easy to trace.
func loadTLS(certVar, certFile, keyVar, keyFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("evictd: set both %s and %s", certVar, keyVar)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("evictd: %s=%s, %s=%s: %w", certVar, certFile, keyVar, keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("evictd: %s: %w", certVar, err)
		}
	}
	if time.Now().After(cert.Leaf.NotAfter) {
		return nil, fmt.Errorf("evictd: %s: certificate expired on %s", certVar, cert.Leaf.NotAfter.Format(time.RFC3339))
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// withUser puts credentials into a nats:// URL.
func withUser(raw, user, password string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	u.User = url.UserPassword(user, password)
	return u.String()
}

// secret returns value, or the secret stored in the data dir under name,
// or a new one stored there (mode 0600).
func (d *Daemon) secret(dir, name, value string) (string, error) {
	if value != "" {
		return value, nil
	}
	path := filepath.Join(dir, name)
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("evictd: read %s: %w", path, err)
	}
	buf := make([]byte, 24)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("evictd: generate %s: %w", name, err)
	}
	s := base64.RawURLEncoding.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("evictd: store %s: %w", name, err)
	}
	return s, nil
}

// loadToken takes the token from the configuration, or from the data dir,
// or generates one there.
func (d *Daemon) loadToken(cfg Config) error {
	if cfg.AdminToken != "" {
		d.AdminToken = cfg.AdminToken
		return nil
	}
	d.TokenFile = filepath.Join(cfg.DataDir, "admin-token")
	b, err := os.ReadFile(d.TokenFile)
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		d.AdminToken = strings.TrimSpace(string(b))
		return nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("evictd: read %s: %w", d.TokenFile, err)
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return fmt.Errorf("evictd: generate token: %w", err)
	}
	d.AdminToken = "evt_" + base64.RawURLEncoding.EncodeToString(buf)
	if err := os.WriteFile(d.TokenFile, []byte(d.AdminToken+"\n"), 0o600); err != nil {
		return fmt.Errorf("evictd: store token: %w", err)
	}
	return nil
}
