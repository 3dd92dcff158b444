package main_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/pkg/client"
	"github.com/evict-dev/evict/pkg/guard"
)

// buildEvictd compiles this command once per test.
func buildEvictd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "evictd")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

var apiLine = regexp.MustCompile(`admin API\s+http://(\S+)`)

// startEvictd runs the binary and returns the process and its API address.
func startEvictd(t *testing.T, bin string, env []string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := apiLine.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	select {
	case a := <-addr:
		return cmd, a
	case <-time.After(60 * time.Second):
		t.Fatal("evictd did not print its API address")
		return nil, ""
	}
}

// TestKillDuringBulkLogout kills evictd with SIGKILL while its relay is
// halfway through publishing a 100,000-user logout (100 users.revoked
// events), restarts it, and checks that every event reached the stream
// exactly once and every revocation every guard.
func TestKillDuringBulkLogout(t *testing.T) {
	bin := buildEvictd(t)
	ns := testenv.NATS(t)
	dbURL := testenv.Database(t)
	pool := testenv.Pool(t, dbURL)
	ctx := context.Background()
	env := []string{
		"DATABASE_URL=" + dbURL,
		"EVICT_NATS_URL=" + ns.ClientURL(),
		"EVICT_HTTP_ADDR=127.0.0.1:0",
		"EVICT_ADMIN_TOKEN=crash-token",
		"EVICT_DATA_DIR=" + t.TempDir(),
		"EVICT_LOG_LEVEL=error",
		// One event per round stretches the publication over 100 rounds,
		// so the kill lands in the middle of it.
		"EVICT_RELAY_BATCH_SIZE=1",
	}
	proc, addr := startEvictd(t, bin, env)
	api := client.New("http://"+addr, "crash-token", nil)
	if _, err := api.CreateTenant(ctx, "crash"); err != nil {
		t.Fatal(err)
	}

	// An audit stream sourcing EVICT_STATE keeps every message the state
	// stream ever stored for the tenant's batches of users, duplicates
	// included, while EVICT_STATE itself keeps only the last per subject.
	js := testenv.JetStream(t, ns.ClientURL())
	audit, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:    "CRASH_AUDIT",
		Sources: []*jetstream.StreamSource{{Name: events.StateStream, FilterSubject: "evict.state.crash.users.>"}},
	})
	if err != nil {
		t.Fatal(err)
	}

	guards := make([]*guard.Guard, 3)
	for i := range guards {
		guards[i] = testenv.Guard(t, ns.ClientURL(), guard.Config{Tenants: []string{"crash"}})
	}

	users := make([]string, 100_000)
	batches := len(users) / events.MaxUsersPerEvent
	for i := range users {
		users[i] = fmt.Sprintf("u%05d", i)
	}
	issued := time.Now().Add(-time.Minute)
	if _, err := api.LogoutUsers(ctx, "crash", users, "crash test"); err != nil {
		t.Fatal(err)
	}
	var pending int
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&pending); err != nil {
			t.Fatal(err)
		}
		if pending < batches {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("relay never started publishing")
		}
		time.Sleep(time.Millisecond)
	}
	if err := proc.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = proc.Wait()
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&pending); err != nil {
		t.Fatal(err)
	}
	if pending == 0 || pending >= batches {
		t.Fatalf("killed with %d of %d rows unpublished; the kill must land mid-publication", pending, batches)
	}
	t.Logf("killed evictd with %d of %d events unpublished", pending, batches)

	startEvictd(t, bin, env)
	for gi, g := range guards {
		testenv.Eventually(t, fmt.Sprintf("guard %d to enforce all 100,000 logouts", gi), func() bool {
			for _, u := range users {
				if !errors.Is(g.Check(guard.Session{Tenant: "crash", User: u, ID: "s", IssuedAt: issued}), guard.ErrSessionRevoked) {
					return false
				}
			}
			return true
		})
	}
	testenv.Eventually(t, "outbox drained", func() bool {
		_ = pool.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&pending)
		return pending == 0
	})
	var info *jetstream.StreamInfo
	testenv.Eventually(t, "audit stream to source everything", func() bool {
		info, err = audit.Info(ctx, jetstream.WithSubjectFilter("evict.state.crash.users.>"))
		return err == nil && info.State.Msgs >= uint64(batches)
	})
	time.Sleep(200 * time.Millisecond) // let a late duplicate, if any, arrive
	info, err = audit.Info(ctx, jetstream.WithSubjectFilter("evict.state.crash.users.>"))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(batches) || len(info.State.Subjects) != batches {
		t.Fatalf("stream stored %d messages on %d subjects, want exactly %d each once", info.State.Msgs, len(info.State.Subjects), batches)
	}
	for subj, n := range info.State.Subjects {
		if n != 1 || !strings.HasPrefix(subj, "evict.state.crash.users.") {
			t.Fatalf("subject %s stored %d times", subj, n)
		}
	}
}

// TestSIGTERMLosesNoAcceptedCommand stops evictd with SIGTERM while commands
// stream in: every command answered 202 is committed, and its revocation
// reaches the guards once evictd is back.
func TestSIGTERMLosesNoAcceptedCommand(t *testing.T) {
	bin := buildEvictd(t)
	ns := testenv.NATS(t)
	dbURL := testenv.Database(t)
	pool := testenv.Pool(t, dbURL)
	ctx := context.Background()
	env := []string{
		"DATABASE_URL=" + dbURL, "EVICT_NATS_URL=" + ns.ClientURL(), "EVICT_HTTP_ADDR=127.0.0.1:0",
		"EVICT_ADMIN_TOKEN=term-token", "EVICT_DATA_DIR=" + t.TempDir(), "EVICT_LOG_LEVEL=error",
	}
	proc, addr := startEvictd(t, bin, env)
	api := client.New("http://"+addr, "term-token", nil)
	if _, err := api.CreateTenant(ctx, "crash"); err != nil {
		t.Fatal(err)
	}
	g := testenv.Guard(t, ns.ClientURL(), guard.Config{Tenants: []string{"crash"}})

	type result struct {
		user string
		op   string
		err  error
	}
	results := make(chan result, 400)
	accepted := make(chan struct{}, 400)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				user := fmt.Sprintf("w%d-u%d", w, i)
				a, err := api.LogoutUser(ctx, "crash", user, "")
				results <- result{user, a.OperationID, err}
				if err != nil {
					return // evictd is gone
				}
				accepted <- struct{}{}
			}
		}()
	}
	for i := 0; i < 40; i++ {
		<-accepted
	}
	if err := proc.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := proc.Wait(); err != nil {
		t.Errorf("evictd exited with %v after SIGTERM, want a clean exit", err)
	}
	wg.Wait()
	close(results)
	var ok []result
	for r := range results {
		if r.err == nil {
			ok = append(ok, r)
		}
	}
	t.Logf("%d commands accepted before shutdown", len(ok))
	for _, r := range ok {
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM operations WHERE id = $1", r.op).Scan(&n); err != nil || n != 1 {
			t.Fatalf("accepted operation %s for %s is not committed (%d rows, %v)", r.op, r.user, n, err)
		}
	}
	startEvictd(t, bin, env)
	issued := time.Now().Add(-time.Hour)
	testenv.Eventually(t, "every accepted logout enforced", func() bool {
		for _, r := range ok {
			if !errors.Is(g.Check(guard.Session{Tenant: "crash", User: r.user, ID: "s", IssuedAt: issued}), guard.ErrSessionRevoked) {
				return false
			}
		}
		return true
	})
}
