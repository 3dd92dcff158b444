package bench

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/evict-dev/evict/internal/bench/report"
	"github.com/evict-dev/evict/internal/db"
)

// describe reads the machine and the versions of what runs on it.
func describe(ctx context.Context, e *env) (report.Machine, report.Versions, error) {
	m := report.Machine{Cores: runtime.NumCPU(), CPU: procField("/proc/cpuinfo", "model name"), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if rel, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.OS += ", Linux " + strings.TrimSpace(string(rel))
	}
	if kb, err := strconv.ParseInt(strings.TrimSuffix(procField("/proc/meminfo", "MemTotal"), " kB"), 10, 64); err == nil {
		m.MemoryBytes = kb << 10
	}
	v := report.Versions{Go: runtime.Version(), NATSServer: server.VERSION, NATSClient: nats.Version, Commit: commit()}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == "github.com/jackc/pgx/v5" {
				v.PGX = d.Version
			}
		}
	}
	if err := e.pool.QueryRow(ctx, "SHOW server_version").Scan(&v.PostgreSQL); err != nil {
		return m, v, fmt.Errorf("bench: PostgreSQL version: %w", err)
	}
	// Without autovacuum, the tables the scenarios churn are never
	// vacuumed nor analyzed during the run, and the later scenarios pay.
	settings, err := db.Settings(ctx, e.pool, "autovacuum", "fsync", "shared_buffers", "synchronous_commit")
	if err != nil {
		return m, v, fmt.Errorf("bench: PostgreSQL settings: %w", err)
	}
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(settings)) {
		parts = append(parts, name+" "+settings[name])
	}
	v.PostgreSQLSettings = strings.Join(parts, ", ")
	return m, v, nil
}

// procField returns the value of the first "name: value" line of a /proc file.
func procField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// commit is the source revision: stamped by go build, or asked of git
// (go run does not stamp it).
func commit() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		var rev, dirty string
		for _, s := range info.Settings {
			switch {
			case s.Key == "vcs.revision":
				rev = s.Value
			case s.Key == "vcs.modified" && s.Value == "true":
				dirty = "+dirty"
			}
		}
		if rev != "" {
			return rev[:min(12, len(rev))] + dirty
		}
	}
	out, err := exec.Command("git", "describe", "--always", "--dirty", "--abbrev=12").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
