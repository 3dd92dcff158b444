package evictd_test

// Tests that keep deploy/ honest: the alert rules and the dashboard query
// metrics evict really exports, and the NATS permissions of
// deploy/nats/accounts.conf let evictd and pkg/guard do their work, and a
// guard credential nothing more.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/bus"
	"github.com/evict-dev/evict/internal/evictd"
	"github.com/evict-dev/evict/internal/snapshot"
	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/pkg/client"
	"github.com/evict-dev/evict/pkg/guard"
)

// deployDir is the repository's deploy/ directory; tests run in the
// package's directory.
var deployDir = filepath.Join("..", "..", "deploy")

// metricRef finds the evict metric names a PromQL expression refers to.
var metricRef = regexp.MustCompile(`\bevict_[A-Za-z0-9_]+`)

func TestDeployMetricNames(t *testing.T) {
	t.Parallel()
	known := exportedSeriesNames(t)
	tests := []struct {
		name  string
		file  string
		exprs func(t *testing.T, path string) []string
	}{
		{name: "alert rules", file: "prometheus/alerts.yml", exprs: alertExprs},
		{name: "grafana dashboard", file: "grafana/evict-dashboard.json", exprs: dashboardExprs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exprs := tt.exprs(t, filepath.Join(deployDir, tt.file))
			if len(exprs) == 0 {
				t.Fatalf("%s: no expressions found", tt.file)
			}
			for _, e := range exprs {
				refs := metricRef.FindAllString(e, -1)
				// EvictdDown watches Prometheus' own up series; anything
				// else naming no evict metric is a typo.
				if len(refs) == 0 && !strings.Contains(e, "up{") {
					t.Errorf("%s: %q refers to no evict metric", tt.file, e)
				}
				for _, name := range refs {
					if !known[name] {
						t.Errorf("%s: %q uses %s, a series neither evictd nor pkg/guard exports", tt.file, e, name)
					}
				}
			}
		})
	}
}

// exportedSeriesNames returns every series name evictd's /metrics and a
// guard's registry expose: counters and gauges by name, histograms as
// _bucket, _sum and _count (their bare name selects nothing).
func exportedSeriesNames(t *testing.T) map[string]bool {
	t.Helper()
	// Snapshots on, as evictd's default is: their metrics exist from the
	// start, built or not.
	b := setup(t, 0, func(c *evictd.Config) { c.SnapshotEvery = 100_000 })
	reg := prometheus.NewRegistry()
	g := testenv.Guard(t, b.d.NATSURL, guard.Config{Registerer: reg})

	// Vectors export nothing until a child exists: a command creates
	// evict_commands_total{kind} and, once relayed,
	// evict_events_published_total{stream}; a refused request creates
	// evict_guard_rejected_total{reason}.
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	s := guard.Session{Tenant: "acme", User: "alice", ID: "s1", IssuedAt: time.Now().Add(-time.Minute)}
	acc, err := b.api.LogoutUser(ctx, "acme", "alice", "deploy test")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "operation published", func() bool {
		op, err := b.api.Operation(ctx, acc.OperationID)
		return err == nil && op.Status == "published"
	})
	testenv.Eventually(t, "guard to revoke alice", func() bool { return errors.Is(g.Check(s), guard.ErrSessionRevoked) })
	h := g.Middleware(func(*http.Request) (guard.Session, bool) { return s, true })(http.NotFoundHandler())
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("middleware answered %d for a revoked session, want 401", rec.Code)
	}

	types := map[string]dto.MetricType{}
	resp, err := http.Get("http://" + b.d.HTTPAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// "# TYPE evict_outbox_backlog gauge"
		f := strings.Fields(sc.Text())
		if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			types[f[2]] = dto.MetricType(dto.MetricType_value[strings.ToUpper(f[3])])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		types[mf.GetName()] = mf.GetType()
	}

	known := map[string]bool{}
	for name, typ := range types {
		switch typ {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			known[name+"_bucket"], known[name+"_sum"], known[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			known[name], known[name+"_sum"], known[name+"_count"] = true, true, true
		default:
			known[name] = true
		}
	}
	// The test is only as good as this list: make sure both sources answered.
	for _, name := range []string{"evict_commands_total", "evict_events_published_total", "evict_guard_rejected_total", "evict_guard_ready"} {
		if !known[name] {
			t.Fatalf("%s not exported; exported: %v", name, types)
		}
	}
	return known
}

// alertExprs returns the expr of every rule in alerts.yml. The file keeps
// one rule per "- alert:" item and each expr on one line, which is what lets
// a regexp read it; a rule that breaks that layout, or lacks the labels and
// annotations an on-call engineer needs, fails here.
func alertExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var exprs []string
	rules := strings.Split(string(b), "- alert:")[1:]
	if len(rules) == 0 {
		t.Fatalf("%s: no rules", path)
	}
	line := func(rule, key string) (string, bool) {
		m := regexp.MustCompile(`(?m)^\s+` + key + `:[ \t]*(.*?)[ \t]*$`).FindStringSubmatch(rule)
		if m == nil {
			return "", false
		}
		return m[1], true
	}
	for _, rule := range rules {
		name := strings.TrimSpace(strings.SplitN(rule, "\n", 2)[0])
		expr, ok := line(rule, "expr")
		switch {
		case !ok:
			t.Errorf("%s: rule %s has no expr", path, name)
		case expr == "" || strings.HasPrefix(expr, "|") || strings.HasPrefix(expr, ">"):
			t.Errorf("%s: rule %s: keep the expr on the expr: line, got %q", path, name, expr)
		default:
			exprs = append(exprs, expr)
		}
		if sev, _ := line(rule, "severity"); sev != "warning" && sev != "critical" {
			t.Errorf("%s: rule %s: severity %q, want warning or critical", path, name, sev)
		}
		for _, key := range []string{"for", "summary", "description", "runbook"} {
			if v, ok := line(rule, key); !ok || v == "" {
				t.Errorf("%s: rule %s has no %s", path, name, key)
			}
		}
	}
	return exprs
}

// dashboardExprs returns every "expr" of the Grafana dashboard, and checks
// what Grafana would otherwise only show as broken panels: the schema
// version, unique panel ids, and datasources that exist.
func dashboardExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		SchemaVersion int `json:"schemaVersion"`
		Templating    struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query string `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if dash.SchemaVersion != 39 {
		t.Errorf("%s: schemaVersion %d, want 39", path, dash.SchemaVersion)
	}
	dsVars := map[string]bool{}
	for _, v := range dash.Templating.List {
		if v.Type == "datasource" && v.Query == "prometheus" {
			dsVars["${"+v.Name+"}"] = true
		}
	}

	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var exprs []string
	ids := map[float64]string{}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if e, ok := v["expr"].(string); ok {
				exprs = append(exprs, e)
			}
			if id, ok := v["id"].(float64); ok {
				title, _ := v["title"].(string)
				if prev, dup := ids[id]; dup {
					t.Errorf("%s: panels %q and %q share id %v", path, prev, title, id)
				}
				ids[id] = title
			}
			if ds, ok := v["datasource"].(map[string]any); ok && ds["type"] == "prometheus" {
				if uid, _ := ds["uid"].(string); !dsVars[uid] {
					t.Errorf("%s: datasource uid %q is not a Prometheus datasource variable of the dashboard", path, uid)
				}
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(doc)
	return exprs
}

// natsPasswords are the variables deploy/nats/accounts.conf reads from the
// environment. Letters and digits: NATS parses them as config values.
var natsPasswords = map[string]string{
	"EVICTD_NATS_PASSWORD":     "evictdSecret7",
	"GUARD_NATS_PASSWORD":      "guardSecret7",
	"GUARD_ACME_NATS_PASSWORD": "guardAcmeSecret7",
	"NOTIFIER_NATS_PASSWORD":   "notifierSecret7",
	"NATS_SYS_PASSWORD":        "sysSecret7",
}

func setNATSPasswords(t *testing.T) {
	t.Helper()
	for k, v := range natsPasswords {
		t.Setenv(k, v)
	}
}

// natsURL is srv's client URL with user's credentials, the form
// EVICT_NATS_URL takes in deploy/.
func natsURL(srv *server.Server, user string) string {
	pw := natsPasswords[map[string]string{"evictd": "EVICTD_NATS_PASSWORD", "guard": "GUARD_NATS_PASSWORD", "guard-acme": "GUARD_ACME_NATS_PASSWORD",
		"notifier": "NOTIFIER_NATS_PASSWORD", "sys": "NATS_SYS_PASSWORD"}[user]]
	return strings.Replace(srv.ClientURL(), "nats://", "nats://"+user+":"+pw+"@", 1)
}

// startNATSWithDeployAccounts starts a single JetStream server from a
// wrapper config that includes deploy/nats/accounts.conf.
func startNATSWithDeployAccounts(t *testing.T) *server.Server {
	t.Helper()
	return startNATS(t, deployAccountsOptions(t))
}

// deployAccountsOptions reads a wrapper config that includes
// deploy/nats/accounts.conf.
func deployAccountsOptions(t *testing.T) *server.Options {
	t.Helper()
	dir := t.TempDir()
	accounts, err := filepath.Abs(filepath.Join(deployDir, "nats", "accounts.conf"))
	if err != nil {
		t.Fatal(err)
	}
	// include paths are relative to the including file.
	rel, err := filepath.Rel(dir, accounts)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nats.conf")
	body := fmt.Sprintf("host: 127.0.0.1\nport: -1\njetstream {\n  store_dir: %q\n}\ninclude %q\n", filepath.Join(dir, "js"), rel)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("deploy/nats/accounts.conf: %v", err)
	}
	return opts
}

func startNATS(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	opts.NoLog, opts.NoSigs = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	return ns
}

// startEvictdOn starts evictd against an external NATS, as deploy/ runs it.
func startEvictdOn(t *testing.T, natsURL string, replicas int) *evictd.Daemon {
	t.Helper()
	dbURL := testenv.Database(t)
	ctx, cancel := context.WithCancel(context.Background())
	d, err := evictd.Start(ctx, evictd.Config{
		DataDir: t.TempDir(), NATSURL: natsURL, DatabaseURL: dbURL, HTTPAddr: "127.0.0.1:0",
		AdminToken: token, SessionMaxAge: 24 * time.Hour, Replicas: replicas, RelayBatch: 1000,
		HeartbeatInterval: 50 * time.Millisecond, Logger: testenv.Quiet,
	})
	if err != nil {
		cancel()
		t.Fatalf("start evictd on %s: %v", natsURL, err)
	}
	t.Cleanup(func() {
		cancel()
		if err := d.Wait(); err != nil {
			t.Errorf("evictd shutdown: %v", err)
		}
	})
	return d
}

// logoutReachesGuard runs a logout through d's admin API and waits until g
// enforces it and holds a fresh state (relay heartbeats arrive).
func logoutReachesGuard(t *testing.T, d *evictd.Daemon, g *guard.Guard, user string) {
	t.Helper()
	api := client.New("http://"+d.HTTPAddr, token, nil)
	ctx := context.Background()
	if _, err := api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	s := guard.Session{Tenant: "acme", User: user, ID: "s-" + user, IssuedAt: time.Now().Add(-time.Minute)}
	if _, err := api.LogoutUser(ctx, "acme", user, "deploy test"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "guard to revoke "+user, func() bool { return errors.Is(g.Check(s), guard.ErrSessionRevoked) })
	testenv.Eventually(t, "guard state to be fresh", func() bool { return g.Healthy() == nil })
}

func TestDeployNATSPermissions(t *testing.T) {
	setNATSPasswords(t)
	ns := startNATSWithDeployAccounts(t)

	// evictd, as the evictd user, creates the streams (bus.EnsureStreams at
	// start) and relays; a guard, as the guard user, loads and follows
	// EVICT_STATE.
	d := startEvictdOn(t, natsURL(ns, "evictd"), 1)
	g := testenv.Guard(t, natsURL(ns, "guard"), guard.Config{})
	logoutReachesGuard(t, d, g, "alice")

	// What a guard credential must not do. A refused publish is reported
	// asynchronously; the server answers in order, so after Flush the error
	// is on its way to the handler.
	errs := make(chan error, 16)
	nc, err := nats.Connect(natsURL(ns, "guard"), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	forged := "evict.state.acme.user.x"
	tests := []struct {
		name    string
		subject string
	}{
		{name: "forge a revocation", subject: forged},
		{name: "forge a history event", subject: "evict.events.acme.member.removed"},
		{name: "forge a heartbeat", subject: events.HeartbeatSubject},
		{name: "delete the state stream", subject: "$JS.API.STREAM.DELETE." + events.StateStream},
		{name: "read the history stream", subject: "$JS.API.CONSUMER.CREATE." + events.EventsStream + ".spy"},
		{name: "forge a JetStream acknowledgement to evictd", subject: "_INBOX.forged"},
		{name: "forge a snapshot", subject: "$O." + snapshot.Bucket + ".M.c3RhdGU="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := nc.Publish(tt.subject, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-errs:
				if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), `"`+tt.subject+`"`) {
					t.Errorf("publish to %s: got %v, want a permissions violation for it", tt.subject, err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("publish to %s as guard: no permissions violation", tt.subject)
			}
		})
	}

	// And nothing of it reached the stream.
	js := testenv.JetStream(t, natsURL(ns, "evictd"))
	ctx := context.Background()
	st, err := js.Stream(ctx, events.StateStream)
	if err != nil {
		t.Fatalf("state stream after the guard's attempts: %v", err)
	}
	if _, err := st.GetLastMsgForSubject(ctx, forged); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("last message on %s: got %v, want not found", forged, err)
	}

	// evictd stores a snapshot; a new guard, as the guard user, starts from it.
	if _, err := snapshot.Build(ctx, js, 1); err != nil {
		t.Fatalf("snapshot as the evictd user: %v", err)
	}
	reg := prometheus.NewRegistry()
	g2 := testenv.Guard(t, natsURL(ns, "guard"), guard.Config{Registerer: reg})
	if got := testenv.Metric(t, reg, "evict_guard_snapshot_entries"); got != 1 {
		t.Errorf("guard user loaded %v entries from the snapshot, want alice's", got)
	}
	if s := (guard.Session{Tenant: "acme", User: "alice", ID: "s2", IssuedAt: time.Now().Add(-time.Minute)}); !errors.Is(g2.Check(s), guard.ErrSessionRevoked) {
		t.Error("guard started from the snapshot lets alice through")
	}
}

// TestDeployNATSTenantGuard: the tenant-scoped guard user and the notifier
// user of accounts.conf have exactly the permissions the embedded server
// gives a guard key of that tenant and its notifier user (TestTenantGuardKey
// and TestNotifierCredential show what they allow and refuse), and a guard
// on guard-acme follows its tenant against a server configured from deploy/.
func TestDeployNATSTenantGuard(t *testing.T) {
	setNATSPasswords(t)
	opts := deployAccountsOptions(t)
	for user, want := range map[string]*server.Permissions{
		"guard":      bus.GuardPermissions,
		"guard-acme": bus.TenantGuardPermissions([]string{"acme"}, "_INBOX.guard-acme"),
		"notifier":   bus.NotifierPermissions(bus.NotifierDurable),
	} {
		var got *server.Permissions
		for _, u := range opts.Users {
			if u.Username == user {
				got = u.Permissions
			}
		}
		if got == nil || got.Publish == nil || got.Subscribe == nil {
			t.Fatalf("accounts.conf has no %s user with publish and subscribe permissions", user)
		}
		for _, c := range []struct {
			name      string
			got, want []string
		}{
			{"publish allow", got.Publish.Allow, want.Publish.Allow},
			{"publish deny", got.Publish.Deny, want.Publish.Deny},
			{"subscribe allow", got.Subscribe.Allow, want.Subscribe.Allow},
			{"subscribe deny", got.Subscribe.Deny, want.Subscribe.Deny},
		} {
			if !slices.Equal(slices.Sorted(slices.Values(c.got)), slices.Sorted(slices.Values(c.want))) {
				t.Errorf("accounts.conf %s %s = %q; internal/bus gives %q", user, c.name, c.got, c.want)
			}
		}
	}
	ns := startNATS(t, opts)
	d := startEvictdOn(t, natsURL(ns, "evictd"), 1)
	g := testenv.Guard(t, natsURL(ns, "guard-acme"), guard.Config{Tenants: []string{"acme"}}, nats.CustomInboxPrefix("_INBOX.guard-acme"))
	logoutReachesGuard(t, d, g, "alice")

	// evictd stores acme's snapshot; a new guard on guard-acme starts from it.
	if _, err := snapshot.Build(context.Background(), testenv.JetStream(t, natsURL(ns, "evictd")), 1); err != nil {
		t.Fatalf("snapshots as the evictd user: %v", err)
	}
	reg := prometheus.NewRegistry()
	g2 := testenv.Guard(t, natsURL(ns, "guard-acme"), guard.Config{Tenants: []string{"acme"}, Registerer: reg}, nats.CustomInboxPrefix("_INBOX.guard-acme"))
	if got := testenv.Metric(t, reg, "evict_guard_snapshot_entries"); got != 1 {
		t.Errorf("guard-acme loaded %v entries from acme's snapshot, want alice's", got)
	}
	if s := (guard.Session{Tenant: "acme", User: "alice", ID: "s2", IssuedAt: time.Now().Add(-time.Minute)}); !errors.Is(g2.Check(s), guard.ErrSessionRevoked) {
		t.Error("guard-acme started from acme's snapshot lets alice through")
	}
}

// TestDeployNATSCluster runs evictd with three stream replicas and a guard
// on a cluster started from deploy/nats/nats-1.conf .. nats-3.conf, as
// deploy/compose does. Only addresses and the store move to the test.
func TestDeployNATSCluster(t *testing.T) {
	setNATSPasswords(t)
	// Routes need addresses before the servers start: take three free ports.
	var clusterPorts []int
	var routes []string
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		clusterPorts = append(clusterPorts, ln.Addr().(*net.TCPAddr).Port)
		routes = append(routes, "nats://"+ln.Addr().String())
		ln.Close()
	}
	var nodes []*server.Server
	for i := 1; i <= 3; i++ {
		path := filepath.Join(deployDir, "nats", fmt.Sprintf("nats-%d.conf", i))
		opts, err := server.ProcessConfigFile(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if want := fmt.Sprintf("nats-%d", i); opts.ServerName != want {
			t.Errorf("%s: server_name %q, want %q", path, opts.ServerName, want)
		}
		if !opts.JetStream || opts.Cluster.Name != "evict" || len(opts.Routes) != 3 {
			t.Fatalf("%s: jetstream %v, cluster %q with %d routes; want jetstream in cluster evict with 3 routes",
				path, opts.JetStream, opts.Cluster.Name, len(opts.Routes))
		}
		opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", server.RANDOM_PORT, 0
		opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", clusterPorts[i-1]
		opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		opts.StoreDir = t.TempDir()
		nodes = append(nodes, startNATS(t, opts))
	}
	// Ready when the meta leader sees all three peers and every server has
	// caught up with it: R3 streams can be placed.
	testenv.Eventually(t, "JetStream cluster of three", func() bool {
		leaders, peers := 0, 0
		for _, n := range nodes {
			if !n.JetStreamIsCurrent() {
				return false
			}
			if n.JetStreamIsLeader() {
				leaders++
				peers = len(n.JetStreamClusterPeers())
			}
		}
		return leaders == 1 && peers == 3
	})

	var urls []string
	for _, n := range nodes {
		urls = append(urls, natsURL(n, "evictd"))
	}
	d := startEvictdOn(t, strings.Join(urls, ","), 3)
	g := testenv.Guard(t, natsURL(nodes[2], "guard"), guard.Config{})
	logoutReachesGuard(t, d, g, "bob")

	js := testenv.JetStream(t, urls[1])
	for _, name := range []string{events.StateStream, events.EventsStream} {
		st, err := js.Stream(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("stream %s: %d replicas, want 3", name, r)
		}
	}
}
