package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/bench/report"
)

// Names of the floor rows other rows refer to.
const (
	floorCommit = "PostgreSQL commit (one INSERT)"
	floorJS     = "JetStream publish → 1 ordered consumer"
	floorKV     = "KV put → watch"
)

// floorChain names the floor of n guards: what evict's design cannot go
// below, one commit then one publish that n consumers receive.
func floorChain(n int) string {
	return fmt.Sprintf("commit + publish → %d ordered consumers", n)
}

// floor measures the physical floor in the same run, at the same rate as
// the end-to-end load: a PostgreSQL commit on the bench's database, a
// JetStream publish to an ordered consumer and a KV put to a watcher on a
// NATS server started like evictd's, and the chain of a commit and a
// publish to as many consumers as each end-to-end run has guards.
func (e *env) floor(ctx context.Context, rep *report.Report) error {
	pub, err := nats.Connect(e.floorNS.ClientURL(), nats.Name("floor-publisher"))
	if err != nil {
		return fmt.Errorf("bench: floor: %w", err)
	}
	defer pub.Close()
	js, err := jetstream.New(pub)
	if err != nil {
		return fmt.Errorf("bench: floor: %w", err)
	}
	// The stream is shaped like EVICT_STATE: file store, one message per subject.
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FLOOR", Subjects: []string{"floor.>"},
		Storage: jetstream.FileStorage, MaxMsgsPerSubject: 1, AllowDirect: true})
	if err != nil {
		return fmt.Errorf("bench: floor stream: %w", err)
	}
	if _, err := e.pool.Exec(ctx, "CREATE TABLE bench_floor (run text, i int, at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (run, i))"); err != nil {
		return fmt.Errorf("bench: floor table: %w", err)
	}
	payload, err := revocationPayload()
	if err != nil {
		return err
	}
	n, warmup := e.cfg.steadyOps()

	t := newTracker("floor-commit", 1, e.issued)
	res, err := e.run(ctx, load{t: t, n: n, rate: e.cfg.Rate, warmup: warmup, key: itoa,
		send: func(ctx context.Context, i int, _ time.Time) error {
			if _, err := e.pool.Exec(ctx, "INSERT INTO bench_floor (run, i) VALUES ('commit', $1)", i); err != nil {
				return err
			}
			t.count(itoa(i), time.Now())
			return nil
		}})
	if err != nil {
		return err
	}
	rep.Add(report.Row{Scenario: "floor", Name: floorCommit, Summary: res.sum})
	rep.Curves = append(rep.Curves, curve("floor: "+floorCommit, res))

	if err := e.floorPublish(ctx, rep, js, stream, payload, 1, false); err != nil {
		return err
	}
	if err := e.floorKV(ctx, rep, js, payload); err != nil {
		return err
	}
	for _, g := range e.cfg.Guards {
		if err := e.floorPublish(ctx, rep, js, stream, payload, g, true); err != nil {
			return err
		}
	}
	return nil
}

// floorPublish publishes to consumers ordered consumers, each on its own
// connection and reading as the guard does, after a commit when commit is set.
func (e *env) floorPublish(ctx context.Context, rep *report.Report, js jetstream.JetStream, stream jetstream.Stream,
	payload []byte, consumers int, commit bool) error {
	run := fmt.Sprintf("js%d", consumers)
	name := floorJS
	if commit {
		run, name = fmt.Sprintf("chain%d", consumers), floorChain(consumers)
	}
	t := newTracker(run, consumers, e.issued)
	prefix := "floor." + run + "."
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop, err := e.floorConsumers(cctx, stream, prefix, consumers, t)
	defer stop()
	if err != nil {
		return err
	}
	n, warmup := e.cfg.steadyOps()
	res, err := e.run(ctx, load{t: t, n: n, rate: e.cfg.Rate, warmup: warmup, key: itoa,
		send: func(ctx context.Context, i int, _ time.Time) error {
			if commit {
				if _, err := e.pool.Exec(ctx, "INSERT INTO bench_floor (run, i) VALUES ($1, $2)", run, i); err != nil {
					return err
				}
			}
			_, err := js.Publish(ctx, prefix+itoa(i), payload)
			return err
		}})
	if err != nil {
		return err
	}
	rep.Add(report.Row{Scenario: "floor", Name: name, Summary: res.sum})
	if commit && consumers == e.cfg.Guards[len(e.cfg.Guards)/2] || !commit {
		rep.Curves = append(rep.Curves, curve("floor: "+name, res))
	}
	return nil
}

// floorConsumers starts n ordered consumers of prefix>, each on its own
// connection, that count every message in t. stop closes them.
func (e *env) floorConsumers(ctx context.Context, stream jetstream.Stream, prefix string, n int, t *tracker) (stop func(), err error) {
	var conns []*nats.Conn
	var iters []jetstream.MessagesContext
	done := make(chan struct{}, n)
	stop = func() {
		for _, it := range iters {
			it.Stop()
		}
		for range iters {
			<-done
		}
		for _, c := range conns {
			c.Close()
		}
	}
	for range n {
		nc, err := nats.Connect(e.floorNS.ClientURL(), nats.Name("floor-consumer"))
		if err != nil {
			return stop, fmt.Errorf("bench: floor consumer: %w", err)
		}
		conns = append(conns, nc)
		cjs, err := jetstream.New(nc)
		if err != nil {
			return stop, fmt.Errorf("bench: floor consumer: %w", err)
		}
		s, err := cjs.Stream(ctx, stream.CachedInfo().Config.Name)
		if err != nil {
			return stop, fmt.Errorf("bench: floor consumer: %w", err)
		}
		cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{prefix + ">"},
			DeliverPolicy: jetstream.DeliverNewPolicy})
		if err != nil {
			return stop, fmt.Errorf("bench: floor consumer: %w", err)
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(4096))
		if err != nil {
			return stop, fmt.Errorf("bench: floor consumer: %w", err)
		}
		iters = append(iters, it)
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				msg, err := it.Next()
				if err != nil {
					return
				}
				t.count(strings.TrimPrefix(msg.Subject(), prefix), time.Now())
			}
		}()
	}
	return stop, nil
}

// floorKV puts keys into a KV bucket that a watcher on another connection follows.
func (e *env) floorKV(ctx context.Context, rep *report.Report, js jetstream.JetStream, payload []byte) error {
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "floor", Storage: jetstream.FileStorage})
	if err != nil {
		return fmt.Errorf("bench: floor bucket: %w", err)
	}
	wc, err := nats.Connect(e.floorNS.ClientURL(), nats.Name("floor-watcher"))
	if err != nil {
		return fmt.Errorf("bench: floor watcher: %w", err)
	}
	defer wc.Close()
	wjs, err := jetstream.New(wc)
	if err != nil {
		return fmt.Errorf("bench: floor watcher: %w", err)
	}
	wkv, err := wjs.KeyValue(ctx, "floor")
	if err != nil {
		return fmt.Errorf("bench: floor watcher: %w", err)
	}
	w, err := wkv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("bench: floor watcher: %w", err)
	}
	defer w.Stop() //nolint:errcheck // nothing to do about it at the end
	t := newTracker("kv", 1, e.issued)
	go func() {
		for entry := range w.Updates() {
			if entry != nil {
				t.count(strings.TrimPrefix(entry.Key(), "k"), time.Now())
			}
		}
	}()
	n, warmup := e.cfg.steadyOps()
	res, err := e.run(ctx, load{t: t, n: n, rate: e.cfg.Rate, warmup: warmup, key: itoa,
		send: func(ctx context.Context, i int, _ time.Time) error {
			_, err := kv.Put(ctx, "k"+itoa(i), payload)
			return err
		}})
	if err != nil {
		return err
	}
	rep.Add(report.Row{Scenario: "floor", Name: floorKV, Summary: res.sum})
	return nil
}

// revocationPayload is a user revocation as the relay publishes it, so that
// the floor moves messages of the real size.
func revocationPayload() ([]byte, error) {
	nb := time.Now()
	b, err := json.Marshal(events.New("0192f0c4-7d1e-7c3a-9b2e-5f1d2a3b4c5d", events.TypeUserRevoked, "tenant-01", "users/user-0000001", nb,
		events.UserRevoked{Tenant: "tenant-01", User: "user-0000001", NotBefore: nb, OperationID: "0192f0c4-7d1e-7c3a-9b2e-5f1d2a3b4c5e",
			Cause: events.CauseLogout}))
	if err != nil {
		return nil, fmt.Errorf("bench: payload: %w", err)
	}
	return b, nil
}
