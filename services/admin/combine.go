package admin

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// maxCombined bounds the commands of one combined commit.
const maxCombined = 64

// combiner commits, as one transaction, the commands that come to their
// commit while another commit is under way: one round trip, one COMMIT
// and one WAL flush for all of them. A command that finds no commit under
// way commits at once, alone, as before; one that finds one waits for it,
// and no longer, and the commands that gathered meanwhile go together in
// the next. On a loaded machine the commits are what queue: each is a
// round trip and a wake-up of a PostgreSQL backend, and flushes the WAL
// while the others wait for its lock; a command's latency is its place in
// that queue (docs/benchmarks.md, item 49).
//
// Only commands that sent nothing before their commit can be combined, and
// only those that say which rows they lock (cmdTx.key). A combined commit
// takes its commands' row locks in the order of their keys, the order in
// which a bulk logout locks its users' watermarks, so the two cannot
// deadlock over them. A deadlock that PostgreSQL still finds (over
// sessions that a sweep marks in another order, say) fails the combined
// commit like any other error: each command runs again alone.
type combiner struct {
	size prometheus.Histogram

	mu    sync.Mutex
	busy  bool // a commit is under way
	queue []*job
}

// job is one command's commit.
type job struct {
	t *cmdTx
	b *pgx.Batch
	// next hands a queued job the batch it is to commit, itself first in
	// it; done hands it the outcome of the batch another job committed.
	// Each is sent at most once and buffered, so the sender never waits.
	next chan []*job
	done chan error
}

// errAlone is what each command of a combined commit that failed gets: one
// of them failed it, and each is run again alone (inCmdTx), so that the one
// that failed gets its own error and the others commit.
var errAlone = errors.New("admin: combined commit failed; committing alone")

// commit commits t's statements, b's and COMMIT, alone or with others'.
func (c *combiner) commit(ctx context.Context, t *cmdTx, b *pgx.Batch) error {
	j := &job{t: t, b: b}
	c.mu.Lock()
	if !c.busy {
		c.busy = true
		c.mu.Unlock()
		return c.lead(ctx, []*job{j})
	}
	j.next, j.done = make(chan []*job, 1), make(chan error, 1)
	c.queue = append(c.queue, j)
	c.mu.Unlock()
	// The wait does not end with ctx: the job may be handed the next
	// batch, which others wait for. It lasts one commit at most.
	select {
	case err := <-j.done:
		return err
	case batch := <-j.next:
		return c.lead(ctx, batch)
	}
}

// lead commits batch, whose first job is the caller's, tells the others
// the outcome, and hands what queued meanwhile to the first of it.
func (c *combiner) lead(ctx context.Context, batch []*job) (err error) {
	// Deferred, so that a panic, which net/http recovers from, cannot leave
	// the queue waiting; the others then run again alone, as after a
	// failed commit.
	err = errAlone
	defer func() {
		for _, j := range batch[1:] {
			j.done <- err
		}
		c.handOver()
	}()
	c.size.Observe(float64(len(batch)))
	own := batch[0]
	if len(batch) == 1 {
		return own.t.commitAlone(ctx, own.b)
	}
	// The others' requests do not end with this one's.
	if err := own.t.commitAll(context.WithoutCancel(ctx), batch); err != nil {
		return errors.Join(errAlone, err)
	}
	return nil
}

// handOver ends a commit: it hands the commands that queued meanwhile to
// the first of them to commit.
func (c *combiner) handOver() {
	c.mu.Lock()
	if len(c.queue) == 0 {
		c.busy = false
		c.mu.Unlock()
		return
	}
	n := min(len(c.queue), maxCombined)
	next := slices.Clone(c.queue[:n])
	c.queue = slices.Delete(c.queue, 0, n)
	c.mu.Unlock()
	next[0].next <- next
}

// commitAll sends BEGIN, the statements of every job of batch in the order
// of their keys, and COMMIT, in one round trip on t's connection, and
// reads each job's results. Every job of batch sent nothing yet, so its
// first pending statement is its BEGIN.
//
// It builds its batch itself rather than through send, which would queue
// every job's statements once more: in 6 pairs alone, that way was slower
// in 5 (docs/benchmarks.md, item 49).
func (t *cmdTx) commitAll(ctx context.Context, batch []*job) error {
	conn, err := t.acquire(ctx)
	if err != nil {
		return err
	}
	jobs := slices.SortedStableFunc(slices.Values(batch), func(a, b *job) int { return cmp.Compare(a.t.key, b.t.key) })
	n := 2
	for _, j := range jobs {
		n += len(j.t.pending) - 1 + j.b.Len()
	}
	all := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, n)}
	all.Queue("begin")
	for _, j := range jobs {
		for _, p := range j.t.pending[1:] {
			all.Queue(p.sql, p.args...)
		}
		all.QueuedQueries = append(all.QueuedQueries, j.b.QueuedQueries...)
	}
	all.Queue("commit")
	br := conn.SendBatch(ctx, all)
	err = readAll(br, jobs)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	// inCmdTx rolls back an open transaction of t's connection.
	return err
}

// readAll reads the results of commitAll's batch, job by job.
func readAll(br pgx.BatchResults, jobs []*job) error {
	if err := execResult(br); err != nil {
		return err
	}
	for _, j := range jobs {
		for _, p := range j.t.pending[1:] {
			if err := p.result(br); err != nil {
				return err
			}
		}
		if err := readQueued(br, j.b); err != nil {
			return err
		}
	}
	return commitResult(br)
}
