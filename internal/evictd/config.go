package evictd

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/evict-dev/evict/internal/db"
	"github.com/evict-dev/evict/services/push/provider"
)

// Config is evictd's configuration. ConfigFromEnv documents each variable.
type Config struct {
	DataDir       string
	NATSListen    string
	NATSURL       string
	DatabaseURL   string
	HTTPAddr      string
	AdminToken    string
	SessionMaxAge time.Duration
	Replicas      int
	RelayBatch    int
	// GuardLiveness is how long a guard instance counts as live after its
	// last report.
	GuardLiveness time.Duration
	// Retention keeps ended, revoked and expired sessions and the session
	// change feed this long.
	Retention time.Duration
	// TidyInterval is how often housekeeping runs; zero means 30s.
	TidyInterval time.Duration
	// RateLimit and RateBurst bound each credential's admin API requests
	// (per second, and at once); zero means the API's defaults (50, 200).
	RateLimit float64
	RateBurst int
	// ReadHeaderTimeout and ReadTimeout bound how long a client may take to
	// send a request's headers, and the whole request: a slow client
	// cannot hold a connection (or a half-read command) open. Zero means
	// 5s and 30s.
	ReadHeaderTimeout, ReadTimeout time.Duration
	// OIDCIssuer, when set, makes the admin API also accept access tokens
	// (JWTs) of that OpenID Connect issuer, found by discovery; they must
	// carry OIDCAudience in "aud" and name the role and tenants in
	// OIDCRoleClaim and OIDCTenantsClaim (defaults "evict_role" and
	// "evict_tenants").
	OIDCIssuer, OIDCAudience, OIDCRoleClaim, OIDCTenantsClaim string
	// AuthFailureBurst bounds the failed authentications of one client
	// address (then one per second); zero means 20.
	AuthFailureBurst int
	// TLSCertFile and TLSKeyFile, when set, make the admin API serve HTTPS
	// only; NATSTLSCertFile and NATSTLSKeyFile make the embedded NATS
	// server require TLS. PEM files.
	TLSCertFile, TLSKeyFile         string
	NATSTLSCertFile, NATSTLSKeyFile string
	// PushSenders are the mobile push providers by name; none disables the
	// notifier. ConfigFromEnv fills it with PushSendersFromEnv.
	PushSenders map[string]provider.Sender
	// PushMaxAttempts and PushRetryBackoff bound the notifier's retries;
	// zero means its defaults (8 attempts, 2s doubling).
	PushMaxAttempts  int
	PushRetryBackoff time.Duration
	// SeenChangeEvery spaces the "seen" changes of a session in the live
	// feed; zero means the registry's default (60s).
	SeenChangeEvery time.Duration
	// HeartbeatInterval is how often the relay leader confirms an empty outbox.
	HeartbeatInterval time.Duration
	// SnapshotEvery is how many messages EVICT_STATE may go past its
	// latest snapshot before a new one is built (see internal/snapshot);
	// zero builds none. SnapshotInterval is how often that is looked at;
	// zero means 30s.
	SnapshotEvery    uint64
	SnapshotInterval time.Duration
	Instance         string
	Logger           *slog.Logger
}

// Defaults.
const (
	DefaultDataDir    = "evict-data"
	DefaultNATSListen = "127.0.0.1:4322"
	DefaultHTTPAddr   = "127.0.0.1:7420"
)

// ConfigFromEnv reads the configuration from the environment:
//
//	EVICT_DATA_DIR          data directory (JetStream store, generated token); default ./evict-data
//	EVICT_NATS_LISTEN       embedded NATS listen address; default 127.0.0.1:4322
//	EVICT_NATS_URL          use this external NATS (or cluster, comma-separated) instead of the embedded one
//	DATABASE_URL            PostgreSQL; default postgres://postgres@127.0.0.1:5432/evict (created if missing)
//	EVICT_HTTP_ADDR         admin API, /metrics, /healthz, /readyz; default 127.0.0.1:7420
//	EVICT_ADMIN_TOKEN       bootstrap bearer token; default: generated once, stored in the data dir
//	EVICT_SESSION_MAX_AGE   longest session lifetime (revocation entries expire after it); default 720h
//	EVICT_STREAM_REPLICAS   JetStream replicas per stream; default 1
//	EVICT_RELAY_BATCH_SIZE  outbox rows published per round; default 1000
//	EVICT_HEARTBEAT_INTERVAL relay heartbeat period (guards' freshness signal); default 1s
//	EVICT_SNAPSHOT_EVERY    state messages past the snapshot that make a new one; default 100000, 0 for none
//	EVICT_GUARD_LIVENESS    a guard silent for longer counts as down (operations go "partial"); default 15s
//	EVICT_SESSION_RETENTION ended, revoked and expired sessions and the change feed are kept this long; default 720h
//	EVICT_RATE_LIMIT        requests per second per credential; default 50 (EVICT_RATE_BURST at once: 200)
//	EVICT_TLS_CERT_FILE, EVICT_TLS_KEY_FILE            serve the admin API over HTTPS only (PEM)
//	EVICT_NATS_TLS_CERT_FILE, EVICT_NATS_TLS_KEY_FILE  embedded NATS requires TLS (PEM)
//	EVICT_INSTANCE          name of this replica; default host-pid
//	EVICT_LOG_LEVEL         debug, info, warn or error; default info
func ConfigFromEnv() (Config, error) {
	c := Config{
		DataDir:     Env("EVICT_DATA_DIR", DefaultDataDir),
		NATSListen:  Env("EVICT_NATS_LISTEN", DefaultNATSListen),
		NATSURL:     os.Getenv("EVICT_NATS_URL"),
		DatabaseURL: Env("DATABASE_URL", db.DefaultURL),
		HTTPAddr:    Env("EVICT_HTTP_ADDR", DefaultHTTPAddr),
		AdminToken:  os.Getenv("EVICT_ADMIN_TOKEN"),
		Instance:    os.Getenv("EVICT_INSTANCE"),

		TLSCertFile:     os.Getenv("EVICT_TLS_CERT_FILE"),
		TLSKeyFile:      os.Getenv("EVICT_TLS_KEY_FILE"),
		NATSTLSCertFile: os.Getenv("EVICT_NATS_TLS_CERT_FILE"),
		NATSTLSKeyFile:  os.Getenv("EVICT_NATS_TLS_KEY_FILE"),
	}
	var err error
	if c.SessionMaxAge, err = time.ParseDuration(Env("EVICT_SESSION_MAX_AGE", "720h")); err != nil || c.SessionMaxAge <= 0 {
		return c, fmt.Errorf("EVICT_SESSION_MAX_AGE: want a positive duration such as 720h, got %q", os.Getenv("EVICT_SESSION_MAX_AGE"))
	}
	if c.Replicas, err = strconv.Atoi(Env("EVICT_STREAM_REPLICAS", "1")); err != nil || c.Replicas < 1 || c.Replicas > 5 {
		return c, fmt.Errorf("EVICT_STREAM_REPLICAS: want 1 to 5, got %q", os.Getenv("EVICT_STREAM_REPLICAS"))
	}
	if c.RelayBatch, err = strconv.Atoi(Env("EVICT_RELAY_BATCH_SIZE", "1000")); err != nil || c.RelayBatch < 1 {
		return c, fmt.Errorf("EVICT_RELAY_BATCH_SIZE: want a positive number, got %q", os.Getenv("EVICT_RELAY_BATCH_SIZE"))
	}
	if c.HeartbeatInterval, err = time.ParseDuration(Env("EVICT_HEARTBEAT_INTERVAL", "1s")); err != nil || c.HeartbeatInterval <= 0 {
		return c, fmt.Errorf("EVICT_HEARTBEAT_INTERVAL: want a positive duration such as 1s, got %q", os.Getenv("EVICT_HEARTBEAT_INTERVAL"))
	}
	if c.SnapshotEvery, err = strconv.ParseUint(Env("EVICT_SNAPSHOT_EVERY", "100000"), 10, 64); err != nil {
		return c, fmt.Errorf("EVICT_SNAPSHOT_EVERY: want a number of messages, 0 for no snapshots, got %q", os.Getenv("EVICT_SNAPSHOT_EVERY"))
	}
	if c.GuardLiveness, err = time.ParseDuration(Env("EVICT_GUARD_LIVENESS", "15s")); err != nil || c.GuardLiveness <= 0 {
		return c, fmt.Errorf("EVICT_GUARD_LIVENESS: want a positive duration such as 15s, got %q", os.Getenv("EVICT_GUARD_LIVENESS"))
	}
	if c.Retention, err = time.ParseDuration(Env("EVICT_SESSION_RETENTION", "720h")); err != nil || c.Retention <= 0 {
		return c, fmt.Errorf("EVICT_SESSION_RETENTION: want a positive duration such as 720h, got %q", os.Getenv("EVICT_SESSION_RETENTION"))
	}
	if c.RateLimit, err = strconv.ParseFloat(Env("EVICT_RATE_LIMIT", "50"), 64); err != nil || c.RateLimit <= 0 {
		return c, fmt.Errorf("EVICT_RATE_LIMIT: want a positive number, got %q", os.Getenv("EVICT_RATE_LIMIT"))
	}
	if c.RateBurst, err = strconv.Atoi(Env("EVICT_RATE_BURST", "200")); err != nil || c.RateBurst < 1 {
		return c, fmt.Errorf("EVICT_RATE_BURST: want a positive number, got %q", os.Getenv("EVICT_RATE_BURST"))
	}
	if c.AuthFailureBurst, err = strconv.Atoi(Env("EVICT_AUTH_FAILURE_BURST", "20")); err != nil || c.AuthFailureBurst < 1 {
		return c, fmt.Errorf("EVICT_AUTH_FAILURE_BURST: want a positive number, got %q", os.Getenv("EVICT_AUTH_FAILURE_BURST"))
	}
	c.OIDCIssuer, c.OIDCAudience = os.Getenv("EVICT_OIDC_ISSUER"), os.Getenv("EVICT_OIDC_AUDIENCE")
	c.OIDCRoleClaim, c.OIDCTenantsClaim = Env("EVICT_OIDC_ROLE_CLAIM", "evict_role"), Env("EVICT_OIDC_TENANTS_CLAIM", "evict_tenants")
	var level slog.Level
	if err := level.UnmarshalText([]byte(Env("EVICT_LOG_LEVEL", "info"))); err != nil {
		return c, fmt.Errorf("EVICT_LOG_LEVEL: %w", err)
	}
	c.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if c.PushSenders, err = PushSendersFromEnv(c.Logger); err != nil {
		return c, fmt.Errorf("push: %w", err)
	}
	return c, nil
}

// Env returns the environment variable name, or def when it is unset or
// empty. The commands use it too, so that every default reads the same way.
func Env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
