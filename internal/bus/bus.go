// Package bus runs evict's embedded NATS server and declares the JetStream
// streams that carry evict's events. The streams' shape is part of the
// public contract described in package events.
package bus

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/snapshot"
	"github.com/evict-dev/evict/internal/wake"
)

// EmbeddedConfig configures the embedded NATS server.
type EmbeddedConfig struct {
	// Listen is the host:port NATS clients connect to. Port 0 picks a free port.
	Listen string
	// StoreDir holds the JetStream file store.
	StoreDir string
	// Name is the server name; default "evictd".
	Name string
	// EvictdPassword and GuardPassword, when set, make the server require
	// them: user "evictd" (evict's own services) and user "guard" (session
	// holders of every tenant), with the permissions of
	// deploy/nats/accounts.conf.
	EvictdPassword, GuardPassword string
	// NotifierPassword, when set with them, admits user "notifier": a
	// standalone push notifier (cmd/evict-push), with NotifierPermissions.
	NotifierPassword string
	// GuardKeys, when set with the passwords, also admits session holders
	// that present a guard key (`evictd keys create --role guard`) as their
	// connection token, with the permissions of TenantGuardPermissions for
	// the key's tenants.
	GuardKeys func(ctx context.Context, token string) (GuardKey, error)
	// TLS, when set, makes the server require TLS from every client.
	TLS *tls.Config
}

// Users of the embedded server.
const (
	EvictdUser   = "evictd"
	GuardUser    = "guard"
	NotifierUser = "notifier"
)

// NotifierDurable names the push notifiers' shared durable consumer on
// EVICT_STATE; the notifier user's permissions name it.
const NotifierDurable = "evict-push"

// NotifierInbox is the reply-subject prefix of the push notifier: the only
// subjects the notifier user may subscribe to (below it). cmd/evict-push
// connects with nats.CustomInboxPrefix(NotifierInbox).
const NotifierInbox = "_INBOX.evict-push"

// NotifierPermissions are those of a standalone push notifier whose shared
// durable consumer on EVICT_STATE is named durable: it creates and reads
// that consumer and acknowledges its messages, nothing else; it can neither
// publish state nor read anyone else's deliveries.
func NotifierPermissions(durable string) *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{
			Allow: []string{"$JS.API.INFO", "$JS.API.STREAM.INFO.EVICT_STATE",
				"$JS.API.CONSUMER.CREATE.EVICT_STATE." + durable, "$JS.API.CONSUMER.INFO.EVICT_STATE." + durable,
				"$JS.API.CONSUMER.MSG.NEXT.EVICT_STATE." + durable, "$JS.ACK.EVICT_STATE." + durable + ".>"},
			Deny: []string{"evict.state.>", "evict.events.>"},
		},
		Subscribe: &server.SubjectPermission{Allow: []string{NotifierInbox + ".>"}},
	}
}

// Permissions the embedded server gives its users; deploy/nats/accounts.conf
// carries the same for an external NATS.
var (
	// EvictdPermissions: publish revocations and history, manage the
	// streams, answer guards' session requests; hear guards' reports;
	// send and hear the hints between evictd processes.
	EvictdPermissions = &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{"evict.state.>", "evict.events.>", "$JS.API.>", "$JS.ACK.>", "_INBOX.>",
			"$O." + snapshot.Bucket + ".>", snapshot.TenantPrefix + ">", wake.Prefix + ">"}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>", "evict.report.>", "evict.rpc.sessions.>", wake.Prefix + ">"}},
	}
	// GuardPermissions: read EVICT_STATE through ordered consumers, and its
	// last heartbeat; read the snapshot (an object of internal/snapshot's
	// bucket: stream info, direct get of its metadata, an ordered push
	// consumer of its chunks and its flow control), and the tenant
	// snapshots, for a guard of this user limited to some tenants; report,
	// register sessions; never publish state, history or snapshots.
	GuardPermissions = &server.Permissions{
		Publish: &server.SubjectPermission{
			Allow: []string{"$JS.API.INFO", "$JS.API.STREAM.INFO.EVICT_STATE",
				"$JS.API.CONSUMER.CREATE.EVICT_STATE.>", "$JS.API.CONSUMER.INFO.EVICT_STATE.>",
				"$JS.API.CONSUMER.DELETE.EVICT_STATE.>", "$JS.API.CONSUMER.MSG.NEXT.EVICT_STATE.>",
				"$JS.API.DIRECT.GET.EVICT_STATE.>", "$JS.API.STREAM.MSG.GET.EVICT_STATE",
				"$JS.API.STREAM.INFO." + snapshot.Stream, "$JS.API.DIRECT.GET." + snapshot.Stream + ".>",
				"$JS.API.STREAM.MSG.GET." + snapshot.Stream, "$JS.API.CONSUMER.CREATE." + snapshot.Stream,
				"$JS.API.CONSUMER.CREATE." + snapshot.Stream + ".>", "$JS.API.CONSUMER.DELETE." + snapshot.Stream + ".>",
				"$JS.FC." + snapshot.Stream + ".>",
				"$JS.API.STREAM.INFO." + snapshot.TenantStream, "$JS.API.DIRECT.GET." + snapshot.TenantStream + ".>",
				"$JS.API.CONSUMER.CREATE." + snapshot.TenantStream + ".>", "$JS.API.CONSUMER.INFO." + snapshot.TenantStream + ".>",
				"$JS.API.CONSUMER.DELETE." + snapshot.TenantStream + ".>", "$JS.API.CONSUMER.MSG.NEXT." + snapshot.TenantStream + ".>",
				"evict.report.>", "evict.rpc.sessions.>"},
			Deny: guardDeny,
		},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}
)

// guardDeny is what no guard may publish: state, history, snapshots,
// evictd's hints, and any request that names the notifiers' durable
// consumer. Guards read through ordered consumers with random names; the
// durable's name is well known, and pulling from it would read every
// tenant's revocations (and take them from the notifiers), deleting or
// re-creating it would stop the pushes.
var guardDeny = []string{"evict.state.>", "evict.events.>", snapshot.TenantPrefix + ">", wake.Prefix + ">",
	"$JS.API.CONSUMER.CREATE.EVICT_STATE." + NotifierDurable, "$JS.API.CONSUMER.CREATE.EVICT_STATE." + NotifierDurable + ".>",
	"$JS.API.CONSUMER.INFO.EVICT_STATE." + NotifierDurable, "$JS.API.CONSUMER.DELETE.EVICT_STATE." + NotifierDurable,
	"$JS.API.CONSUMER.MSG.NEXT.EVICT_STATE." + NotifierDurable}

// TenantGuardPermissions are those of a guard limited to tenants: it may
// create ordered consumers filtered on one of its tenants' state or on the
// heartbeat, and nothing wider (NATS checks the filter named in the create
// subject against the consumer's configuration, and a multi-filter or
// unfiltered create has no such subject, so it is refused); it may read
// its tenants' snapshots the same way (the head by a direct get, the
// chunks by an ordered consumer); it reports and registers sessions on
// subjects that name its tenants; it receives on its own inbox prefix
// only, so it cannot read another guard's deliveries.
func TenantGuardPermissions(tenants []string, inbox string) *server.Permissions {
	ts := snapshot.TenantStream
	pub := []string{"$JS.API.INFO", "$JS.API.STREAM.INFO.EVICT_STATE",
		"$JS.API.CONSUMER.CREATE.EVICT_STATE.*." + events.HeartbeatSubject,
		"$JS.API.CONSUMER.INFO.EVICT_STATE.*", "$JS.API.CONSUMER.DELETE.EVICT_STATE.*",
		"$JS.API.CONSUMER.MSG.NEXT.EVICT_STATE.*",
		"$JS.API.STREAM.INFO." + ts, "$JS.API.CONSUMER.INFO." + ts + ".*",
		"$JS.API.CONSUMER.DELETE." + ts + ".*", "$JS.API.CONSUMER.MSG.NEXT." + ts + ".*"}
	for _, t := range tenants {
		pub = append(pub, "$JS.API.CONSUMER.CREATE.EVICT_STATE.*."+events.StatePrefix+t+".>",
			"$JS.API.DIRECT.GET."+ts+"."+snapshot.TenantHeadSubject(t),
			"$JS.API.CONSUMER.CREATE."+ts+".*."+snapshot.TenantSubjects(t),
			events.ReportPrefix+t+".*.*", events.RPCPrefix+t+".*")
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub, Deny: guardDeny},
		Subscribe: &server.SubjectPermission{Allow: []string{inbox + ".>"}},
	}
}

// GuardKey is what the embedded server needs to know of a guard key.
type GuardKey struct {
	ID         string
	Tenants    []string
	AllTenants bool
	ExpiresAt  time.Time // zero: no expiry
}

// authenticator admits evictd, the all-tenant guard user and guard keys.
type authenticator struct {
	evictdPW, guardPW, notifierPW string
	keys                          func(ctx context.Context, token string) (GuardKey, error)
}

func (a *authenticator) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	same := func(got, want string) bool {
		return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
	}
	switch {
	case o.Username == EvictdUser && same(o.Password, a.evictdPW):
		c.RegisterUser(&server.User{Username: EvictdUser, Permissions: EvictdPermissions})
		return true
	case o.Username == NotifierUser && same(o.Password, a.notifierPW):
		c.RegisterUser(&server.User{Username: NotifierUser, Permissions: NotifierPermissions(NotifierDurable)})
		return true
	case o.Username == GuardUser && same(o.Password, a.guardPW):
		c.RegisterUser(&server.User{Username: GuardUser, Permissions: GuardPermissions})
		return true
	case o.Username == "" && o.Token != "" && a.keys != nil:
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		k, err := a.keys(ctx, o.Token)
		if err != nil {
			return false
		}
		perms := GuardPermissions
		if !k.AllTenants {
			perms = TenantGuardPermissions(k.Tenants, events.GuardInbox(o.Token))
		}
		// An expiring key's connection ends when the key does.
		c.RegisterUser(&server.User{Username: "key:" + k.ID, Permissions: perms, ConnectionDeadline: k.ExpiresAt})
		return true
	}
	return false
}

// StartEmbedded starts a NATS server with JetStream and waits until it accepts
// connections. Call Shutdown and WaitForShutdown on the result to stop it.
func StartEmbedded(cfg EmbeddedConfig) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("bus: listen address %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("bus: listen port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	name := cfg.Name
	if name == "" {
		name = "evictd"
	}
	opts := &server.Options{
		ServerName: name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		// Revocation batches are published asynchronously in large bursts.
		MaxPayload: 1 << 20,
	}
	if cfg.TLS != nil {
		opts.TLSConfig = cfg.TLS
		opts.TLS = true
		opts.TLSTimeout = 2
	}
	if cfg.EvictdPassword != "" && cfg.GuardPassword != "" {
		opts.CustomClientAuthentication = &authenticator{evictdPW: cfg.EvictdPassword, guardPW: cfg.GuardPassword,
			notifierPW: cfg.NotifierPassword, keys: cfg.GuardKeys}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("bus: embedded server: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("bus: embedded server on %s not ready after 10s", cfg.Listen)
	}
	return ns, nil
}

// StreamConfig sets the retention of evict's streams.
type StreamConfig struct {
	// SessionMaxAge is the longest lifetime of any session evict guards. State
	// entries older than that can no longer revoke anything and expire.
	// Default 720h (30 days).
	SessionMaxAge time.Duration
	// EventsMaxAge is how long the history stream keeps events. Default 168h.
	EventsMaxAge time.Duration
	// Duplicates is the JetStream de-duplication window: a relay that crashes
	// and republishes within it stores nothing twice. Default 10m.
	Duplicates time.Duration
	// Replicas of each stream; 1 for a single server, 3 in a cluster.
	Replicas int
}

func (c StreamConfig) withDefaults() StreamConfig {
	if c.SessionMaxAge <= 0 {
		c.SessionMaxAge = 720 * time.Hour
	}
	if c.EventsMaxAge <= 0 {
		c.EventsMaxAge = 168 * time.Hour
	}
	if c.Duplicates <= 0 {
		c.Duplicates = 10 * time.Minute
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	return c
}

// EnsureStreams creates or updates EVICT_STATE, EVICT_EVENTS, the
// snapshot bucket and the stream of tenant snapshots.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) error {
	cfg = cfg.withDefaults()
	streams := []jetstream.StreamConfig{{
		Name:        events.StateStream,
		Description: "evict revocation state: last message per subject",
		Subjects:    []string{events.StatePrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		// One message per subject makes the stream a snapshot of the current
		// state: a new guard reads it from the start without replaying history.
		MaxMsgsPerSubject: 1,
		MaxAge:            cfg.SessionMaxAge,
		Duplicates:        min(cfg.Duplicates, cfg.SessionMaxAge),
		Discard:           jetstream.DiscardOld,
		Replicas:          cfg.Replicas,
		AllowDirect:       true,
		DenyDelete:        true,
		DenyPurge:         true,
	}, {
		Name:        events.EventsStream,
		Description: "evict command history",
		Subjects:    []string{events.EventsPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      cfg.EventsMaxAge,
		Duplicates:  min(cfg.Duplicates, cfg.EventsMaxAge),
		Discard:     jetstream.DiscardOld,
		Replicas:    cfg.Replicas,
		DenyDelete:  true,
	}}
	for _, sc := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("bus: stream %s: %w", sc.Name, err)
		}
	}
	if _, err := js.CreateOrUpdateObjectStore(ctx, snapshot.BucketConfig(cfg.Replicas)); err != nil {
		return fmt.Errorf("bus: object store %s: %w", snapshot.Bucket, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, snapshot.TenantStreamConfig(cfg.Replicas)); err != nil {
		return fmt.Errorf("bus: stream %s: %w", snapshot.TenantStream, err)
	}
	return nil
}

// LogAsyncErrors makes a connection report its asynchronous errors to log.
// nats.go's default prints them as plain text on stderr, in the middle of
// evict's JSON logs, where nobody parsing those would see them. They
// matter: a slow consumer means messages dropped, a permissions violation
// a subject the user may not use.
func LogAsyncErrors(log *slog.Logger) nats.Option {
	return nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
		attrs := []any{"err", err, "conn", nc.Opts.Name}
		if sub != nil {
			attrs = append(attrs, "subject", sub.Subject)
		}
		log.Error("NATS asynchronous error", attrs...)
	})
}
