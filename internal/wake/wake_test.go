package wake_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/internal/wake"
)

// process is one evictd process's hub with its listeners: a relay that
// leads or not, and live views that record the tenants hinted.
type process struct {
	hub      *wake.Hub
	outbox   chan []wake.Row // the rows of each hint
	sessions chan string
}

func newProcess(t *testing.T, url string, relay, leads bool) *process {
	t.Helper()
	nc, err := nats.Connect(url, nats.NoEcho())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	p := &process{hub: wake.New(testenv.Quiet), outbox: make(chan []wake.Row, 10), sessions: make(chan string, 10)}
	if relay {
		p.hub.OnOutbox(func(rows []wake.Row) bool {
			p.outbox <- rows
			return leads
		})
	}
	p.hub.OnSessions(func(tenant string) { p.sessions <- tenant })
	if err := p.hub.Connect(nc); err != nil {
		t.Fatal(err)
	}
	return p
}

func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10s", what)
	}
	var zero T
	return zero
}

// barrier sends a sessions hint "marker" from one process and waits until
// the other hears it, after every hint sent before it (NATS keeps one
// connection's order), and until the sender itself had it: what is left
// in the channels then is all that was delivered.
func barrier(t *testing.T, from, to *process) {
	t.Helper()
	from.hub.Sessions("marker")
	if got := receive(t, from.sessions, "local marker"); got != "marker" {
		t.Fatalf("local sessions hint %q before the marker", got)
	}
	if got := receive(t, to.sessions, "remote marker"); got != "marker" {
		t.Fatalf("remote sessions hint %q before the marker", got)
	}
}

// TestOutboxHint: an outbox hint goes to this process's relay when it
// leads, and to the other processes when it does not or there is none.
// The rows it hands over reach this process's relay only: the others'
// read the outbox.
func TestOutboxHint(t *testing.T) {
	tests := []struct {
		name        string
		relay       bool // the sending process runs a relay
		leads       bool // … which leads
		localCalls  int
		remoteCalls int
	}{
		{"the local relay leads", true, true, 1, 0},
		{"the local relay stands by", true, false, 1, 1},
		{"no local relay", false, false, 0, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url := testenv.NATS(t).ClientURL()
			a := newProcess(t, url, tc.relay, tc.leads)
			b := newProcess(t, url, true, true)
			row := wake.Row{Seq: 7, Subject: "evict.state.t1.user.alice", Payload: []byte("{}")}
			a.hub.Outbox(row)
			barrier(t, a, b)
			if got := len(a.outbox); got != tc.localCalls {
				t.Errorf("local relay hinted %d times, want %d", got, tc.localCalls)
			}
			if tc.localCalls > 0 {
				if rows := <-a.outbox; len(rows) != 1 || rows[0].Seq != 7 {
					t.Errorf("local relay handed %v, want the row", rows)
				}
			}
			if got := len(b.outbox); got != tc.remoteCalls {
				t.Errorf("remote relay hinted %d times, want %d", got, tc.remoteCalls)
			}
			if tc.remoteCalls > 0 {
				if rows := <-b.outbox; len(rows) != 0 {
					t.Errorf("remote relay handed %d rows, want a hint without any", len(rows))
				}
			}
		})
	}
}

// TestSessionsHint: a sessions hint reaches the live views of this process
// once (not again through NATS) and those of every other process.
func TestSessionsHint(t *testing.T) {
	url := testenv.NATS(t).ClientURL()
	a, b, c := newProcess(t, url, false, false), newProcess(t, url, false, false), newProcess(t, url, false, false)
	a.hub.Sessions("acme", "globex")
	for _, p := range []*process{a, b, c} {
		for _, want := range []string{"acme", "globex"} {
			if got := receive(t, p.sessions, want); got != want {
				t.Errorf("hinted %q, want %q", got, want)
			}
		}
	}
	barrier(t, a, b)
	if n := len(a.sessions); n != 0 {
		t.Errorf("the sending process heard %d hints of its own again", n)
	}
}

// TestConnectNeedsNoEcho: with echo, a process would hear each of its own
// hints twice.
func TestConnectNeedsNoEcho(t *testing.T) {
	nc, err := nats.Connect(testenv.NATS(t).ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	err = wake.New(nil).Connect(nc)
	if err == nil || !errors.Is(err, wake.ErrEcho) {
		t.Fatalf("Connect with echo: %v, want ErrEcho", err)
	}
}

// TestConnectRefused: a user that may not hear the hints is refused at
// Connect, not left to its polls.
func TestConnectRefused(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Users: []*server.User{{Username: "u", Password: "p", Permissions: &server.Permissions{
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS not ready")
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo("u", "p"), nats.NoEcho(), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := wake.New(testenv.Quiet).Connect(nc); !errors.Is(err, nats.ErrPermissionViolation) {
		t.Fatalf("Connect without the permission: %v, want a permissions violation", err)
	}
}

// TestNilHub: a nil hub carries nothing, and does not panic.
func TestNilHub(t *testing.T) {
	var h *wake.Hub
	h.Outbox()
	h.Sessions("acme")
}
