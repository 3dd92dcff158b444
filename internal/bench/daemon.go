package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/evict-dev/evict/internal/evictd"
)

// Where evictd runs, the values of Config.Evictd.
const (
	// EvictdInProcess runs evictd in the bench's own process, as every
	// round of docs/benchmarks.md did: one heap and one scheduler for
	// evictd, its embedded NATS server, the guards and the load.
	EvictdInProcess = "in-process"
	// EvictdProcess runs evictd in a process of its own, as it is
	// deployed: its garbage collections do not stop the guards and the
	// load, and its profiles are its own (docs/benchmarks.md, item 40).
	EvictdProcess = "process"
)

// ChildEnv names the environment variable that makes evict-bench (or a
// test binary of this package) serve as the evictd process of a parent
// bench instead of running one: see ServeDaemon.
const ChildEnv = "EVICT_BENCH_EVICTD"

// daemonSpec is what a bench asks of its evictd, in both modes. It crosses
// to the child process as JSON on its standard input.
type daemonSpec struct {
	DataDir     string
	DatabaseURL string
	AdminToken  string
	LogLevel    slog.Level
	// CPUProfile and MemProfile, when set, receive the child's profiles
	// when it stops (in-process, the bench's own profiles cover evictd).
	CPUProfile, MemProfile string
}

// config is evictd's configuration for the bench: the one place its
// settings are written, whichever process runs it.
func (s daemonSpec) config(log *slog.Logger) evictd.Config {
	return evictd.Config{
		DataDir: s.DataDir, NATSListen: "127.0.0.1:0", DatabaseURL: s.DatabaseURL, HTTPAddr: "127.0.0.1:0",
		AdminToken: s.AdminToken, SessionMaxAge: 720 * time.Hour, Replicas: 1, RelayBatch: 1000,
		HeartbeatInterval: time.Second, GuardLiveness: 15 * time.Second, Retention: 720 * time.Hour,
		// The bench is one credential sending thousands of commands a
		// second; the per-credential limit would measure itself.
		RateLimit: 1e9, RateBurst: 1 << 30,
		Logger: log,
	}
}

// daemonAddrs are the addresses of a running evictd, as the bench uses them.
type daemonAddrs struct {
	HTTPAddr       string
	NATSURL        string // the guard user's
	ServiceNATSURL string // evictd's own user's
	AdminToken     string
}

// addrsOf is what the bench uses of d.
func addrsOf(d *evictd.Daemon) daemonAddrs {
	return daemonAddrs{HTTPAddr: d.HTTPAddr, NATSURL: d.NATSURL, ServiceNATSURL: d.ServiceNATSURL, AdminToken: d.AdminToken}
}

// daemon is a running evictd in either mode.
type daemon struct {
	daemonAddrs
	pid  int // evictd's process, 0 when it runs in the bench's
	stop func() error
}

// startDaemon starts evictd in the mode cfg.Evictd names.
func startDaemon(ctx context.Context, cfg Config, spec daemonSpec) (*daemon, error) {
	switch cfg.Evictd {
	case EvictdInProcess:
		dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		d, err := evictd.Start(dctx, spec.config(cfg.Logger))
		if err != nil {
			cancel()
			return nil, fmt.Errorf("bench: start evictd: %w", err)
		}
		return &daemon{
			daemonAddrs: addrsOf(d),
			stop:        func() error { cancel(); return d.Wait() },
		}, nil
	case EvictdProcess:
		return startChild(ctx, spec)
	default:
		return nil, fmt.Errorf("bench: evictd mode %q: want %q or %q", cfg.Evictd, EvictdProcess, EvictdInProcess)
	}
}

// startChild runs this executable again as evictd (ServeDaemon) and reads
// its addresses. The child stops when its standard input closes, so it
// does not outlive a bench that is killed.
func startChild(ctx context.Context, spec daemonSpec) (*daemon, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench: find own executable to run evictd: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), ChildEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start evictd process: %w", err)
	}
	exited := make(chan error, 1)
	stop := func() error {
		in.Close()
		select {
		case err := <-exited:
			return err
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			return fmt.Errorf("bench: evictd process still running 30s after its input closed; killed: %w", <-exited)
		}
	}
	if err := json.NewEncoder(in).Encode(spec); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("bench: send evictd its settings: %w", err)
	}
	addrs := make(chan daemonAddrs, 1)
	go func() {
		var a daemonAddrs
		if err := json.NewDecoder(out).Decode(&a); err == nil {
			addrs <- a
		}
		_, _ = io.Copy(io.Discard, out) // Wait must not race the read
		exited <- cmd.Wait()
	}()
	select {
	case a := <-addrs:
		return &daemon{daemonAddrs: a, pid: cmd.Process.Pid, stop: stop}, nil
	case err := <-exited:
		return nil, fmt.Errorf("bench: evictd process exited before it was ready: %w", err)
	case <-ctx.Done():
		_ = stop()
		return nil, ctx.Err()
	}
}

// ServeDaemon is the child side of startChild: it reads a daemonSpec on
// standard input, starts evictd, writes its addresses as one JSON line on
// standard output, and stops evictd when standard input closes or on
// SIGTERM or SIGINT. cmd/evict-bench calls it when ChildEnv is set.
func ServeDaemon() error {
	var spec daemonSpec
	if err := json.NewDecoder(os.Stdin).Decode(&spec); err != nil {
		return fmt.Errorf("read settings from the bench: %w", err)
	}
	if spec.CPUProfile != "" {
		stopProfile, err := StartCPUProfile(spec.CPUProfile)
		if err != nil {
			return err
		}
		defer stopProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: spec.LogLevel})).With("process", "evictd")
	d, err := evictd.Start(ctx, spec.config(log))
	if err != nil {
		return err
	}
	// The bench writes nothing after the spec: what is left of standard
	// input is its end, when the bench stops evictd or dies.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	if err := json.NewEncoder(os.Stdout).Encode(addrsOf(d)); err != nil {
		stop()
		return errors.Join(fmt.Errorf("tell the bench the addresses: %w", err), d.Wait())
	}
	err = d.Wait()
	if spec.MemProfile != "" {
		err = errors.Join(err, WriteAllocs(spec.MemProfile))
	}
	return err
}

// StartCPUProfile profiles the process's CPU into the file name until stop.
func StartCPUProfile(name string) (stop func(), err error) {
	f, err := os.Create(name)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// WriteAllocs writes the allocation profile, whose alloc_space and
// alloc_objects samples count every allocation of the process.
func WriteAllocs(name string) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
